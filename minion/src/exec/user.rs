//! The `user` module: local user accounts through the shadow tools
//! (`useradd`, `usermod`, `userdel`), as Salt's `useradd` module
//! (`user.add`, `user.delete`, `user.info`, `user.list_users`,
//! `user.getent`, `user.ch*`, `user.list_groups`, `user.rename`).
//!
//! Reads come straight from `/etc/passwd`, `/etc/group` and `/etc/shadow`
//! (no NSS cache, so a change is seen at once); writes only go through the
//! shadow tools, which keep the files locked and consistent. The logic is
//! plain synchronous functions that the `user` state module calls too; the
//! async handlers only run them on a blocking thread. A failed tool is an
//! error carrying its stderr, never a panic.

use super::group::{self, GrEntry};
use super::{opt, req, Call, CallFuture, ExecError, Function, Outcome};
use serde_json::{json, Map, Value};
use std::process::Command;

/// One line of `/etc/passwd`.
#[derive(Debug, Clone, PartialEq)]
pub struct PwEntry {
    pub name: String,
    pub passwd: String,
    pub uid: u32,
    pub gid: u32,
    pub gecos: String,
    pub home: String,
    pub shell: String,
}

/// The entries of a passwd file; malformed lines are skipped.
pub fn parse_passwd(text: &str) -> Vec<PwEntry> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() < 7 {
                return None;
            }
            Some(PwEntry {
                name: f[0].to_string(),
                passwd: f[1].to_string(),
                uid: f[2].parse().ok()?,
                gid: f[3].parse().ok()?,
                gecos: f[4].to_string(),
                home: f[5].to_string(),
                shell: f[6..].join(":"),
            })
        })
        .collect()
}

/// Every user of `/etc/passwd`.
pub fn read_passwd() -> Result<Vec<PwEntry>, String> {
    std::fs::read_to_string("/etc/passwd")
        .map(|t| parse_passwd(&t))
        .map_err(|e| format!("cannot read /etc/passwd: {e}"))
}

/// The user called `name`, if there is one.
pub fn lookup(name: &str) -> Result<Option<PwEntry>, String> {
    Ok(read_passwd()?.into_iter().find(|u| u.name == name))
}

/// The password hash of `/etc/shadow` for `name` (`None` if no entry).
pub fn shadow_hash(name: &str) -> Result<Option<String>, String> {
    let text = std::fs::read_to_string("/etc/shadow")
        .map_err(|e| format!("cannot read /etc/shadow: {e}"))?;
    Ok(text.lines().find_map(|l| {
        let mut f = l.split(':');
        (f.next() == Some(name)).then(|| f.next().unwrap_or_default().to_string())
    }))
}

/// The five GECOS fields (Salt's fullname, roomnumber, workphone,
/// homephone, other), missing ones empty.
pub fn gecos_fields(gecos: &str) -> [String; 5] {
    let mut parts = gecos.splitn(5, ',');
    std::array::from_fn(|_| parts.next().unwrap_or_default().to_string())
}

/// Salt's GECOS keys, in field order.
pub const GECOS_KEYS: [&str; 5] = ["fullname", "roomnumber", "workphone", "homephone", "other"];

/// A GECOS string from its fields, trailing empty fields dropped.
pub fn build_gecos(fields: &[String; 5]) -> String {
    fields.join(",").trim_end_matches(',').to_string()
}

/// Sorted names of every group `user` is in, its primary group included
/// (Salt's `user.list_groups`).
pub fn groups_of(user: &PwEntry, groups: &[GrEntry]) -> Vec<String> {
    let mut out: Vec<String> = groups
        .iter()
        .filter(|g| g.gid == user.gid || g.members.iter().any(|m| m == &user.name))
        .map(|g| g.name.clone())
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Salt's `user.info` dict of an entry.
pub fn info_of(user: &PwEntry, groups: &[GrEntry]) -> Value {
    let mut m = Map::new();
    m.insert("name".into(), json!(user.name));
    m.insert("passwd".into(), json!(user.passwd));
    m.insert("uid".into(), json!(user.uid));
    m.insert("gid".into(), json!(user.gid));
    m.insert("home".into(), json!(user.home));
    m.insert("shell".into(), json!(user.shell));
    m.insert("groups".into(), json!(groups_of(user, groups)));
    for (k, v) in GECOS_KEYS.iter().zip(gecos_fields(&user.gecos)) {
        m.insert((*k).into(), json!(v));
    }
    Value::Object(m)
}

/// `user.info`: the dict, or `{}` when there is no such user.
pub fn info(name: &str) -> Result<Value, String> {
    let groups = group::read_groups()?;
    Ok(lookup(name)?
        .map(|u| info_of(&u, &groups))
        .unwrap_or_else(|| json!({})))
}

/// Run a shadow tool; an error names it with its exit code and stderr.
pub fn run_tool(prog: &str, args: &[String]) -> Result<(), String> {
    let out = Command::new(prog)
        .args(args)
        .env("LC_ALL", "C")
        .output()
        .map_err(|e| format!("cannot run {prog}: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
    Err(format!(
        "{prog} {} failed ({}): {err}",
        args.join(" "),
        out.status
    ))
}

/// What `useradd` is asked for (Salt's `user.add` arguments).
#[derive(Debug, Clone, Default)]
pub struct NewUser {
    pub name: String,
    pub uid: Option<String>,
    pub gid: Option<String>,
    pub groups: Vec<String>,
    pub home: Option<String>,
    pub createhome: bool,
    pub shell: Option<String>,
    pub unique: bool,
    pub system: bool,
    pub gecos: [String; 5],
    pub nologinit: bool,
    pub usergroup: Option<bool>,
}

/// The `useradd` arguments for `u` (pure, for tests).
pub fn useradd_args(u: &NewUser) -> Vec<String> {
    let mut a: Vec<String> = Vec::new();
    let mut push = |k: &str, v: &str| {
        a.push(k.to_string());
        a.push(v.to_string());
    };
    if let Some(uid) = &u.uid {
        push("-u", uid);
    }
    if let Some(gid) = &u.gid {
        push("-g", gid);
    }
    if !u.groups.is_empty() {
        push("-G", &u.groups.join(","));
    }
    if let Some(home) = &u.home {
        push("-d", home);
    }
    if let Some(shell) = &u.shell {
        push("-s", shell);
    }
    let gecos = build_gecos(&u.gecos);
    if !gecos.is_empty() {
        push("-c", &gecos);
    }
    if u.gid.is_none() {
        match u.usergroup {
            Some(true) => a.push("-U".into()),
            Some(false) => a.push("-N".into()),
            None => {}
        }
    }
    a.push(if u.createhome { "-m" } else { "-M" }.into());
    if u.system {
        a.push("-r".into());
    }
    if !u.unique && u.uid.is_some() {
        a.push("-o".into());
    }
    if u.nologinit {
        a.push("-l".into());
    }
    a.push(u.name.clone());
    a
}

/// `user.add`.
pub fn add(u: &NewUser) -> Result<(), String> {
    check_name(&u.name)?;
    run_tool("useradd", &useradd_args(u))
}

/// `user.delete`: `userdel`, with `-r` (remove home and mail spool) and
/// `-f` (even if logged in). A missing mail spool is not a failure.
pub fn delete(name: &str, remove: bool, force: bool) -> Result<(), String> {
    existing(name)?;
    let mut a = Vec::new();
    if remove {
        a.push("-r".to_string());
    }
    if force {
        a.push("-f".to_string());
    }
    a.push(name.to_string());
    match run_tool("userdel", &a) {
        Err(e) if remove && lookup(name)?.is_none() && e.contains("mail spool") => Ok(()),
        other => other,
    }
}

fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.starts_with('-') || name.contains([':', ',', '\n', '/']) {
        return Err(format!("Invalid user name {name:?}"));
    }
    Ok(())
}

/// The user, or Salt's "User 'x' does not exist" error.
pub fn existing(name: &str) -> Result<PwEntry, String> {
    lookup(name)?.ok_or_else(|| format!("User '{name}' does not exist"))
}

/// `usermod FLAG VALUE name`, checked afterwards with `done`.
fn usermod(name: &str, flag: &str, value: &str) -> Result<(), String> {
    run_tool(
        "usermod",
        &[flag.to_string(), value.to_string(), name.to_string()],
    )
}

/// `user.chshell`, `user.chhome`, `user.chuid`, `user.chgid`: set one
/// passwd field; `true` when it has the value afterwards.
pub fn change_field(name: &str, field: &str, value: &str) -> Result<bool, String> {
    let before = existing(name)?;
    let (flag, current) = match field {
        "shell" => ("-s", before.shell.clone()),
        "home" => ("-d", before.home.clone()),
        "uid" => ("-u", before.uid.to_string()),
        "gid" => ("-g", before.gid.to_string()),
        other => return Err(format!("unknown user field {other}")),
    };
    let wanted = if field == "gid" {
        resolve_gid(value)?.to_string()
    } else {
        value.to_string()
    };
    if current == wanted {
        return Ok(true);
    }
    usermod(name, flag, &wanted)?;
    let after = existing(name)?;
    Ok(match field {
        "shell" => after.shell == wanted,
        "home" => after.home == wanted,
        "uid" => after.uid.to_string() == wanted,
        _ => after.gid.to_string() == wanted,
    })
}

/// `user.chhome`; with `persist` the old home's contents are moved to the
/// new one (`usermod -m`).
pub fn chhome(name: &str, home: &str, persist: bool) -> Result<bool, String> {
    if !persist || existing(name)?.home == home {
        return change_field(name, "home", home);
    }
    run_tool(
        "usermod",
        &["-m".into(), "-d".into(), home.into(), name.into()],
    )?;
    Ok(existing(name)?.home == home)
}

/// A gid given as a number or a group name.
pub fn resolve_gid(gid: &str) -> Result<u32, String> {
    if let Ok(n) = gid.parse::<u32>() {
        return Ok(n);
    }
    group::read_groups()?
        .into_iter()
        .find(|g| g.name == gid)
        .map(|g| g.gid)
        .ok_or_else(|| format!("Group '{gid}' does not exist"))
}

/// `user.chfullname` and friends: set one GECOS field.
pub fn change_gecos(name: &str, key: &str, value: &str) -> Result<bool, String> {
    let u = existing(name)?;
    let idx = GECOS_KEYS
        .iter()
        .position(|k| *k == key)
        .ok_or_else(|| format!("unknown GECOS field {key}"))?;
    let mut fields = gecos_fields(&u.gecos);
    if fields[idx] == value {
        return Ok(true);
    }
    if value.contains([',', ':', '\n']) {
        return Err(format!("{key} may not contain ',', ':' or a newline"));
    }
    fields[idx] = value.to_string();
    usermod(name, "-c", &build_gecos(&fields))?;
    Ok(gecos_fields(&existing(name)?.gecos)[idx] == value)
}

/// `user.chgroups`: make `groups` the supplementary groups (or add them,
/// with `append`); `true` when the user is then in all of them.
pub fn chgroups(name: &str, groups: &[String], append: bool) -> Result<bool, String> {
    let u = existing(name)?;
    let all = group::read_groups()?;
    let current: Vec<String> = groups_of(&u, &all);
    let primary = all.iter().find(|g| g.gid == u.gid).map(|g| g.name.clone());
    let mut wanted: Vec<String> = groups.to_vec();
    wanted.sort();
    wanted.dedup();
    let mut supplementary: Vec<String> = current
        .iter()
        .filter(|g| Some(*g) != primary.as_ref())
        .cloned()
        .collect();
    supplementary.sort();
    let satisfied = if append {
        wanted.iter().all(|g| current.contains(g))
    } else {
        wanted
            .iter()
            .filter(|g| Some(*g) != primary.as_ref())
            .eq(supplementary.iter())
    };
    if satisfied {
        return Ok(true);
    }
    let mut a = vec!["-G".to_string(), wanted.join(",")];
    if append {
        a.insert(0, "-a".into());
    }
    a.push(name.to_string());
    run_tool("usermod", &a)?;
    let after = groups_of(&existing(name)?, &group::read_groups()?);
    Ok(wanted.iter().all(|g| after.contains(g)))
}

/// Set the password hash (`usermod -p`); Salt's `shadow.set_password`.
pub fn set_password(name: &str, hash: &str) -> Result<(), String> {
    existing(name)?;
    usermod(name, "-p", hash)
}

/// `user.rename`.
pub fn rename(name: &str, new_name: &str) -> Result<bool, String> {
    existing(name)?;
    check_name(new_name)?;
    if lookup(new_name)?.is_some() {
        return Err(format!("User '{new_name}' already exists"));
    }
    usermod(name, "-l", new_name)?;
    Ok(lookup(new_name)?.is_some())
}

/// A list of names from a YAML list or a comma-separated string.
pub fn names(v: Option<&Value>) -> Result<Option<Vec<String>>, String> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(
            s.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect(),
        )),
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| match i {
                Value::String(s) => Ok(s.clone()),
                Value::Number(n) => Ok(n.to_string()),
                other => Err(format!("not a name: {other}")),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(other) => Err(format!("expected a list of names, not {other}")),
    }
}

/// Run `f` on a blocking thread; its error becomes an execution error.
pub async fn blocking<T, F>(f: F) -> Result<T, ExecError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, String> + Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ExecError::Execution(format!("task failed: {e}")))?
        .map_err(ExecError::Execution)
}

/// A required, non-empty string argument.
pub fn name_arg(c: &Call<'_>, key: &str) -> Result<String, ExecError> {
    c.str_arg(key)?
        .filter(|s| !s.is_empty())
        .ok_or_else(|| ExecError::InvalidArgs(format!("{key} must be given")))
}

fn list_arg(c: &Call<'_>, key: &str) -> Result<Vec<String>, ExecError> {
    Ok(names(c.arg(key))
        .map_err(ExecError::InvalidArgs)?
        .unwrap_or_default())
}

/// Declares a handler whose body is an async block over `c`.
macro_rules! handler {
    ($fname:ident, |$c:ident| $body:block) => {
        fn $fname<'a>($c: &'a Call<'a>) -> CallFuture<'a> {
            Box::pin(async move { $body })
        }
    };
}
pub(crate) use handler;

handler!(add_h, |c| {
    let name = name_arg(c, "name")?;
    let mut gecos: [String; 5] = Default::default();
    for (slot, k) in gecos.iter_mut().zip(GECOS_KEYS) {
        *slot = c.str_arg(k)?.unwrap_or_default();
    }
    let u = NewUser {
        name,
        uid: c.str_arg("uid")?,
        gid: c.str_arg("gid")?,
        groups: list_arg(c, "groups")?,
        home: c.str_arg("home")?,
        createhome: c.bool_arg("createhome", true)?,
        shell: c.str_arg("shell")?,
        unique: c.bool_arg("unique", true)?,
        system: c.bool_arg("system", false)?,
        gecos,
        nologinit: c.bool_arg("nologinit", false)?,
        usergroup: match c.arg("usergroup") {
            None => None,
            Some(_) => Some(c.bool_arg("usergroup", false)?),
        },
    };
    blocking(move || add(&u)).await?;
    Ok(Outcome::ok(json!(true)))
});

handler!(delete_h, |c| {
    let name = name_arg(c, "name")?;
    let (remove, force) = (c.bool_arg("remove", false)?, c.bool_arg("force", false)?);
    blocking(move || delete(&name, remove, force)).await?;
    Ok(Outcome::ok(json!(true)))
});

handler!(info_h, |c| {
    let name = name_arg(c, "name")?;
    Ok(Outcome::ok(blocking(move || info(&name)).await?))
});

handler!(list_users_h, |_c| {
    let mut names: Vec<String> = blocking(read_passwd)
        .await?
        .into_iter()
        .map(|u| u.name)
        .collect();
    names.sort();
    Ok(Outcome::ok(json!(names)))
});

handler!(getent_h, |_c| {
    let all = blocking(|| {
        let groups = group::read_groups()?;
        Ok(read_passwd()?
            .iter()
            .map(|u| info_of(u, &groups))
            .collect::<Vec<_>>())
    })
    .await?;
    Ok(Outcome::ok(json!(all)))
});

handler!(list_groups_h, |c| {
    let name = name_arg(c, "name")?;
    let groups = blocking(move || {
        let u = existing(&name)?;
        Ok(groups_of(&u, &group::read_groups()?))
    })
    .await?;
    Ok(Outcome::ok(json!(groups)))
});

/// `user.ch<field> name value`: one body for the passwd fields.
async fn change(c: &Call<'_>, field: &'static str) -> Result<Outcome, ExecError> {
    let name = name_arg(c, "name")?;
    let value = name_arg(c, field)?;
    let done = blocking(move || change_field(&name, field, &value)).await?;
    Ok(Outcome::ok(json!(done)))
}

handler!(chshell_h, |c| { change(c, "shell").await });
handler!(chhome_h, |c| {
    let name = name_arg(c, "name")?;
    let home = name_arg(c, "home")?;
    let persist = c.bool_arg("persist", false)?;
    Ok(Outcome::ok(json!(
        blocking(move || chhome(&name, &home, persist)).await?
    )))
});
handler!(chuid_h, |c| { change(c, "uid").await });
handler!(chgid_h, |c| { change(c, "gid").await });

handler!(chfullname_h, |c| {
    let name = name_arg(c, "name")?;
    let value = c.str_arg("fullname")?.unwrap_or_default();
    let done = blocking(move || change_gecos(&name, "fullname", &value)).await?;
    Ok(Outcome::ok(json!(done)))
});

handler!(chgroups_h, |c| {
    let name = name_arg(c, "name")?;
    let groups = list_arg(c, "groups")?;
    let append = c.bool_arg("append", false)?;
    let done = blocking(move || chgroups(&name, &groups, append)).await?;
    Ok(Outcome::ok(json!(done)))
});

handler!(rename_h, |c| {
    let name = name_arg(c, "name")?;
    let new_name = name_arg(c, "new_name")?;
    let done = blocking(move || rename(&name, &new_name)).await?;
    Ok(Outcome::ok(json!(done)))
});

pub(super) const FUNCTIONS: &[Function] = &[
    Function {
        name: "user.add",
        params: &[
            req("name"),
            opt("uid"),
            opt("gid"),
            opt("groups"),
            opt("home"),
            opt("shell"),
            opt("unique"),
            opt("system"),
            opt("fullname"),
            opt("roomnumber"),
            opt("workphone"),
            opt("homephone"),
            opt("other"),
            opt("createhome"),
            opt("nologinit"),
            opt("usergroup"),
        ],
        varargs: false,
        kwargs: false,
        doc: "Add a user to the minion (``useradd``). ``groups`` is a list or a\n\
              comma-separated string of supplementary groups; ``createhome`` (default\n\
              True) creates the home directory; ``system`` makes a system account;\n\
              ``usergroup`` True/False forces or forbids a group named like the user.\n\
              Returns True, or an error with useradd's message.\n\n\
              CLI Example:\n\n    salt '*' user.add name <uid> <gid> <groups> <home> <shell>\n",
        handler: add_h,
    },
    Function {
        name: "user.delete",
        params: &[req("name"), opt("remove"), opt("force")],
        varargs: false,
        kwargs: false,
        doc: "Remove a user from the minion. ``remove=True`` also deletes the home\n\
              directory and mail spool; ``force=True`` removes a logged-in user.\n\n\
              CLI Example:\n\n    salt '*' user.delete name remove=True force=True\n",
        handler: delete_h,
    },
    Function {
        name: "user.info",
        params: &[req("name")],
        varargs: false,
        kwargs: false,
        doc: "Return user information (name, passwd, uid, gid, home, shell, groups and\n\
              the GECOS fields fullname, roomnumber, workphone, homephone, other), or\n\
              an empty dict when there is no such user.\n\n\
              CLI Example:\n\n    salt '*' user.info root\n",
        handler: info_h,
    },
    Function {
        name: "user.list_users",
        params: &[],
        varargs: false,
        kwargs: false,
        doc: "Return a sorted list of all users\n\n\
              CLI Example:\n\n    salt '*' user.list_users\n",
        handler: list_users_h,
    },
    Function {
        name: "user.getent",
        params: &[opt("refresh")],
        varargs: false,
        kwargs: false,
        doc: "Return the list of all info for all users\n\n\
              CLI Example:\n\n    salt '*' user.getent\n",
        handler: getent_h,
    },
    Function {
        name: "user.list_groups",
        params: &[req("name")],
        varargs: false,
        kwargs: false,
        doc: "Return a sorted list of groups the named user belongs to, its primary\n\
              group included\n\n\
              CLI Example:\n\n    salt '*' user.list_groups foo\n",
        handler: list_groups_h,
    },
    Function {
        name: "user.chshell",
        params: &[req("name"), req("shell")],
        varargs: false,
        kwargs: false,
        doc: "Change the default shell of the user\n\n\
              CLI Example:\n\n    salt '*' user.chshell foo /bin/zsh\n",
        handler: chshell_h,
    },
    Function {
        name: "user.chhome",
        params: &[req("name"), req("home"), opt("persist")],
        varargs: false,
        kwargs: false,
        doc: "Change the home directory of the user; ``persist=True`` moves the old\n\
              home's contents to the new one.\n\n\
              CLI Example:\n\n    salt '*' user.chhome foo /home/users/foo\n",
        handler: chhome_h,
    },
    Function {
        name: "user.chuid",
        params: &[req("name"), req("uid")],
        varargs: false,
        kwargs: false,
        doc: "Change the uid for a named user\n\n\
              CLI Example:\n\n    salt '*' user.chuid foo 4376\n",
        handler: chuid_h,
    },
    Function {
        name: "user.chgid",
        params: &[req("name"), req("gid")],
        varargs: false,
        kwargs: false,
        doc: "Change the default group of the user (a gid or a group name)\n\n\
              CLI Example:\n\n    salt '*' user.chgid foo 4376\n",
        handler: chgid_h,
    },
    Function {
        name: "user.chgroups",
        params: &[req("name"), req("groups"), opt("append")],
        varargs: false,
        kwargs: false,
        doc: "Change the groups to which this user belongs. ``groups`` is a list or a\n\
              comma-separated string; ``append=True`` adds them instead of replacing\n\
              the supplementary groups.\n\n\
              CLI Example:\n\n    salt '*' user.chgroups foo wheel,root\n    \
              salt '*' user.chgroups foo wheel,root append=True\n",
        handler: chgroups_h,
    },
    Function {
        name: "user.chfullname",
        params: &[req("name"), req("fullname")],
        varargs: false,
        kwargs: false,
        doc: "Change the user's Full Name\n\n\
              CLI Example:\n\n    salt '*' user.chfullname foo \"Foo Bar\"\n",
        handler: chfullname_h,
    },
    Function {
        name: "user.rename",
        params: &[req("name"), req("new_name")],
        varargs: false,
        kwargs: false,
        doc: "Change the username for a named user\n\n\
              CLI Example:\n\n    salt '*' user.rename name new_name\n",
        handler: rename_h,
    },
];

#[cfg(test)]
pub(crate) mod testguard {
    //! Users and groups made by tests, removed when the guard drops.

    /// A unique `brine-test-<tag>-<pid><n>` name (at most 32 characters).
    pub fn unique(tag: &str) -> String {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        format!(
            "brine-test-{tag}-{}{}",
            std::process::id() % 100_000,
            N.fetch_add(1, Ordering::Relaxed)
        )
    }

    /// Removes the named users and groups (whatever exists) on drop.
    #[derive(Default)]
    pub struct Guard {
        pub users: Vec<String>,
        pub groups: Vec<String>,
    }

    impl Drop for Guard {
        fn drop(&mut self) {
            for u in &self.users {
                let _ = std::process::Command::new("userdel")
                    .args(["-r", "-f", u])
                    .output();
            }
            for g in &self.groups {
                let _ = std::process::Command::new("groupdel").arg(g).output();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::run;
    use super::testguard::{unique, Guard};
    use super::*;

    #[test]
    fn parses_passwd_and_gecos() {
        let p = parse_passwd("root:x:0:0:root:/root:/bin/bash\nbad line\nfoo:x:1000:1000:Foo Bar,12,555,,x:/home/foo:/bin/sh\n");
        assert_eq!(p.len(), 2);
        assert_eq!(p[1].uid, 1000);
        assert_eq!(gecos_fields(&p[1].gecos)[0], "Foo Bar");
        assert_eq!(gecos_fields(&p[1].gecos)[4], "x");
        let g = gecos_fields("Only");
        assert_eq!(build_gecos(&g), "Only");
        let mut g2 = g.clone();
        g2[2] = "5".into();
        assert_eq!(build_gecos(&g2), "Only,,5");
    }

    #[test]
    fn useradd_arguments() {
        let u = NewUser {
            name: "x".into(),
            uid: Some("1234".into()),
            groups: vec!["a".into(), "b".into()],
            shell: Some("/bin/sh".into()),
            createhome: true,
            system: true,
            unique: true,
            usergroup: Some(true),
            ..Default::default()
        };
        assert_eq!(
            useradd_args(&u).join(" "),
            "-u 1234 -G a,b -s /bin/sh -U -m -r x"
        );
        assert!(add(&NewUser {
            name: "-bad".into(),
            ..Default::default()
        })
        .is_err());
    }

    #[tokio::test]
    async fn add_info_change_delete_real_user() {
        let name = unique("u");
        let grp = unique("g");
        let mut guard = Guard::default();
        guard.users.push(name.clone());
        guard.groups.push(name.clone());
        guard.groups.push(grp.clone());
        let o = run("group.add", vec![json!(grp)], json!({})).await;
        assert_eq!(o.ret, json!(true), "{o:?}");
        let o = run(
            "user.add",
            vec![json!(name)],
            json!({"shell": "/bin/sh", "fullname": "Brine Test", "createhome": false, "usergroup": true}),
        )
        .await;
        assert_eq!(o.ret, json!(true), "{o:?}");
        let i = run("user.info", vec![json!(name)], json!({})).await.ret;
        assert_eq!(i["name"], json!(name));
        assert_eq!(i["shell"], "/bin/sh");
        assert_eq!(i["fullname"], "Brine Test");
        assert_eq!(i["passwd"], "x");
        assert_eq!(i["groups"], json!([name]));
        let o = run(
            "user.chshell",
            vec![json!(name), json!("/bin/bash")],
            json!({}),
        )
        .await;
        assert_eq!(o.ret, json!(true));
        let o = run(
            "user.chgroups",
            vec![json!(name), json!(grp)],
            json!({"append": true}),
        )
        .await;
        assert_eq!(o.ret, json!(true));
        let g = run("user.list_groups", vec![json!(name)], json!({}))
            .await
            .ret;
        let mut want = vec![name.clone(), grp.clone()];
        want.sort();
        assert_eq!(g, json!(want));
        let home = format!("/tmp/{name}-moved");
        let o = run(
            "user.chhome",
            vec![json!(name), json!(home)],
            json!({"persist": false}),
        )
        .await;
        assert_eq!(o.ret, json!(true));
        assert_eq!(
            run("user.info", vec![json!(name)], json!({})).await.ret["home"],
            json!(home)
        );
        let o = run(
            "user.chfullname",
            vec![json!(name), json!("New Name")],
            json!({}),
        )
        .await;
        assert_eq!(o.ret, json!(true));
        let users = run("user.list_users", vec![], json!({})).await.ret;
        assert!(users.as_array().is_some_and(|a| a.contains(&json!(name))));
        let o = run("user.delete", vec![json!(name)], json!({"remove": true})).await;
        assert_eq!(o.ret, json!(true), "{o:?}");
        assert_eq!(
            run("user.info", vec![json!(name)], json!({})).await.ret,
            json!({})
        );
        let o = run(
            "user.chshell",
            vec![json!(name), json!("/bin/sh")],
            json!({}),
        )
        .await;
        assert_eq!(o.ret, json!(format!("ERROR: User '{name}' does not exist")));
    }
}
