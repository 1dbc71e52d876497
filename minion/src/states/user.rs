//! Salt's `user` state module: `user.present` and `user.absent`.
//!
//! The invariant: the state first compares the account with what was
//! asked (the `changes` it would make), makes nothing in test mode, and
//! after making changes compares again, so a second run reports no
//! changes and a change the system refused fails the state. All system
//! work goes through the sync functions of `crate::exec::user` and
//! `crate::exec::group`, the same ones `user.*` execution calls run.

use super::{StateCall, StateFunction};
use crate::exec::grains::val_text;
use crate::exec::group::{self as grp, GrEntry};
use crate::exec::user::{self as usr, PwEntry, GECOS_KEYS};
use crate::state::StateOutcome;
use serde_json::{json, Map, Value};
use std::collections::BTreeSet;

pub const FUNCTIONS: &[StateFunction] = &[
    StateFunction {
        name: "user.present",
        run: present,
        mod_watch: None,
    },
    StateFunction {
        name: "user.absent",
        run: absent,
        mod_watch: None,
    },
];

/// What Salt hides of a password in changes and comments.
const REDACTED: &str = "XXX-REDACTED-XXX";

/// What `user.present` asks for.
struct Want {
    uid: Option<u32>,
    gid: Option<u32>,
    /// `groups` as given (`None`: supplementary groups not managed).
    groups: Option<Vec<String>>,
    /// The `optional_groups` that exist.
    optional: Vec<String>,
    remove_groups: bool,
    home: Option<String>,
    createhome: bool,
    password: Option<String>,
    enforce_password: bool,
    shell: Option<String>,
    gecos: [Option<String>; 5],
}

fn want(c: &StateCall<'_>) -> Result<Want, String> {
    let number = |k: &str| -> Result<Option<u32>, String> {
        c.str_arg(k)
            .map(|v| {
                v.parse::<u32>()
                    .map_err(|_| format!("{k} must be a number, not {v:?}"))
            })
            .transpose()
    };
    let gid = match c.str_arg("gid") {
        None => None,
        Some(g) => Some(usr::resolve_gid(&g)?),
    };
    let groups = usr::names(c.arg("groups"))?;
    let all = grp::read_groups()?;
    if let Some(gs) = &groups {
        let missing: Vec<&str> = gs
            .iter()
            .filter(|g| !all.iter().any(|x| &x.name == *g))
            .map(String::as_str)
            .collect();
        if !missing.is_empty() {
            return Err(format!(
                "The following group(s) are not present: {}",
                missing.join(",")
            ));
        }
    }
    let optional = usr::names(c.arg("optional_groups"))?
        .unwrap_or_default()
        .into_iter()
        .filter(|g| all.iter().any(|x| &x.name == g))
        .collect();
    let mut gecos: [Option<String>; 5] = Default::default();
    for (slot, k) in gecos.iter_mut().zip(GECOS_KEYS) {
        *slot = c.str_arg(k);
    }
    Ok(Want {
        uid: number("uid")?,
        gid,
        groups,
        optional,
        remove_groups: c.bool_arg("remove_groups", true),
        home: c.str_arg("home"),
        createhome: c.bool_arg("createhome", true),
        password: c.str_arg("password"),
        enforce_password: c.bool_arg("enforce_password", true),
        shell: c.str_arg("shell"),
        gecos,
    })
}

fn group_name(all: &[GrEntry], gid: u32) -> Option<String> {
    all.iter().find(|g| g.gid == gid).map(|g| g.name.clone())
}

/// The changes `w` needs on account `u` (Salt's `_changes`), keyed as
/// Salt keys them; `passwd` holds the wanted hash.
fn diff(u: &PwEntry, w: &Want) -> Result<Map<String, Value>, String> {
    let all = grp::read_groups()?;
    let mut ch = Map::new();
    if let Some(uid) = w.uid.filter(|uid| *uid != u.uid) {
        ch.insert("uid".into(), json!(uid));
    }
    if let Some(gid) = w.gid.filter(|gid| *gid != u.gid) {
        ch.insert("gid".into(), json!(gid));
    }
    let primary = group_name(&all, w.gid.unwrap_or(u.gid));
    let not_primary = |g: &String| Some(g) != primary.as_ref();
    let have: Vec<String> = usr::groups_of(u, &all)
        .into_iter()
        .filter(not_primary)
        .collect();
    let wanted: Vec<String> = w
        .groups
        .iter()
        .flatten()
        .chain(&w.optional)
        .filter(|g| not_primary(g))
        .cloned()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    if w.groups.is_some() || !wanted.is_empty() {
        let differs = if w.remove_groups {
            have != wanted
        } else {
            !wanted.iter().all(|g| have.contains(g))
        };
        if differs {
            ch.insert("groups".into(), json!(wanted));
        }
    }
    if let Some(home) = w.home.as_ref().filter(|h| **h != u.home) {
        ch.insert("home".into(), json!(home));
    }
    if w.createhome {
        let home = w.home.clone().unwrap_or_else(|| u.home.clone());
        if !home.is_empty() && !std::path::Path::new(&home).is_dir() {
            ch.insert("homeDoesNotExist".into(), json!(home));
        }
    }
    if let Some(shell) = w.shell.as_ref().filter(|s| **s != u.shell) {
        ch.insert("shell".into(), json!(shell));
    }
    if let Some(pw) = &w.password {
        let current = usr::shadow_hash(&u.name)?.unwrap_or_default();
        let unset = matches!(current.as_str(), "" | "!" | "*" | "!*");
        if current != *pw && (w.enforce_password || unset) {
            ch.insert("passwd".into(), json!(pw));
        }
    }
    let fields = usr::gecos_fields(&u.gecos);
    for ((key, wanted), have) in GECOS_KEYS.iter().zip(&w.gecos).zip(&fields) {
        if let Some(v) = wanted.as_ref().filter(|v| *v != have) {
            ch.insert((*key).into(), json!(v));
        }
    }
    Ok(ch)
}

/// The changes with the password hidden.
fn redacted(ch: &Map<String, Value>) -> Map<String, Value> {
    let mut out = ch.clone();
    if out.contains_key("passwd") {
        out.insert("passwd".into(), json!(REDACTED));
    }
    out
}

/// `key: value` lines, strings bare and everything else as JSON.
pub(crate) fn listing(head: &str, ch: &Map<String, Value>) -> String {
    let mut s = head.to_string();
    for (k, v) in ch {
        let v = val_text(v);
        s.push_str(&format!("{k}: {v}\n"));
    }
    s
}

fn present(c: &StateCall<'_>) -> StateOutcome {
    present_inner(c).unwrap_or_else(StateOutcome::fail)
}

fn present_inner(c: &StateCall<'_>) -> Result<StateOutcome, String> {
    let name = c.name().to_string();
    let w = want(c)?;
    match usr::lookup(&name)? {
        None => create(c, &name, &w),
        Some(u) => update(c, &name, &u, &w),
    }
}

fn create(c: &StateCall<'_>, name: &str, w: &Want) -> Result<StateOutcome, String> {
    if c.test() {
        let mut asked = Map::new();
        asked.insert("name".into(), json!(name));
        for k in ["uid", "gid", "home", "shell"] {
            if let Some(v) = c.arg(k) {
                asked.insert(k.into(), v.clone());
            }
        }
        if let Some(gs) = &w.groups {
            asked.insert("groups".into(), json!(gs));
        }
        if w.password.is_some() {
            asked.insert("password".into(), json!(REDACTED));
        }
        return Ok(StateOutcome::would(
            format!("User {name} set to be added"),
            Value::Object(asked),
        ));
    }
    let mut groups: Vec<String> = w.groups.clone().unwrap_or_default();
    groups.extend(w.optional.iter().cloned());
    groups.sort();
    groups.dedup();
    let gecos = std::array::from_fn(|i| w.gecos[i].clone().unwrap_or_default());
    let new = usr::NewUser {
        name: name.to_string(),
        uid: w.uid.map(|u| u.to_string()),
        gid: w.gid.map(|g| g.to_string()),
        groups,
        home: w.home.clone(),
        createhome: w.createhome,
        shell: w.shell.clone(),
        unique: c.bool_arg("unique", true),
        system: c.bool_arg("system", false),
        gecos,
        nologinit: c.bool_arg("nologinit", false),
        usergroup: c.arg("usergroup").map(|_| c.bool_arg("usergroup", false)),
    };
    if let Err(e) = usr::add(&new) {
        return Ok(StateOutcome::fail(format!(
            "Failed to create new user {name}: {e}"
        )));
    }
    let mut changes = usr::info(name)?;
    if let Some(pw) = &w.password {
        let set = usr::set_password(name, pw);
        if let Value::Object(m) = &mut changes {
            m.insert("password".into(), json!(REDACTED));
        }
        if set.is_err() || usr::shadow_hash(name)?.as_deref() != Some(pw) {
            return Ok(StateOutcome::fail_with(
                format!("User {name} created but failed to set password to {REDACTED}"),
                changes,
            ));
        }
    }
    Ok(StateOutcome::changed(
        format!("New user {name} created"),
        changes,
    ))
}

fn update(c: &StateCall<'_>, name: &str, u: &PwEntry, w: &Want) -> Result<StateOutcome, String> {
    let wanted = diff(u, w)?;
    if wanted.is_empty() {
        return Ok(StateOutcome::ok(format!(
            "User {name} is present and up to date"
        )));
    }
    for (key, allow, old) in [
        ("uid", "allow_uid_change", u.uid),
        ("gid", "allow_gid_change", u.gid),
    ] {
        if let Some(new) = wanted.get(key).filter(|_| !c.bool_arg(allow, false)) {
            return Ok(StateOutcome::fail(format!(
                "Changing {key} ({old} -> {new}) not permitted, set {allow} to True to force \
                 this change. Note that this will not change file ownership."
            )));
        }
    }
    if c.test() {
        let shown = redacted(&wanted);
        return Ok(StateOutcome::would(
            listing(
                "The following user attributes are set to be changed:\n",
                &shown,
            ),
            Value::Object(shown),
        ));
    }
    let pre = usr::info(name)?;
    let pre_hash = usr::shadow_hash(name)?;
    let mut errors = Vec::new();
    for (key, val) in &wanted {
        let text = val_text(val);
        let done = match key.as_str() {
            "uid" | "gid" | "home" | "shell" => usr::change_field(name, key, &text).map(|_| ()),
            "groups" => {
                let gs: Vec<String> = usr::names(Some(val))?.unwrap_or_default();
                usr::chgroups(name, &gs, !w.remove_groups).map(|_| ())
            }
            "passwd" => usr::set_password(name, &text),
            "homeDoesNotExist" => Ok(()),
            gecos => usr::change_gecos(name, gecos, &text).map(|_| ()),
        };
        if let Err(e) = done {
            errors.push(e);
        }
    }
    if let Some(home) = wanted.get("homeDoesNotExist").and_then(Value::as_str) {
        if let Err(e) = make_home(name, home) {
            errors.push(e);
        }
    }
    let post = usr::info(name)?;
    let mut changes = Map::new();
    if let (Value::Object(pre), Value::Object(post)) = (&pre, &post) {
        for (k, v) in post {
            if pre.get(k) != Some(v) {
                changes.insert(k.clone(), v.clone());
            }
        }
    }
    if usr::shadow_hash(name)? != pre_hash {
        changes.insert("passwd".into(), json!(REDACTED));
    }
    if wanted.contains_key("homeDoesNotExist") && errors.is_empty() {
        changes.insert(
            "homeDoesNotExist".into(),
            wanted["homeDoesNotExist"].clone(),
        );
    }
    let after = usr::existing(name)?;
    let left = diff(&after, w)?;
    if !left.is_empty() {
        let mut comment = format!(
            "These values could not be changed: {}",
            Value::Object(redacted(&left))
        );
        for e in errors {
            comment.push('\n');
            comment.push_str(&e);
        }
        return Ok(StateOutcome::fail_with(comment, Value::Object(changes)));
    }
    Ok(StateOutcome::changed(
        format!("Updated user {name}"),
        Value::Object(changes),
    ))
}

/// Create a missing home directory owned by the user (mode 0755).
fn make_home(name: &str, home: &str) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let u = usr::existing(name)?;
    std::fs::create_dir_all(home).map_err(|e| format!("cannot create {home}: {e}"))?;
    std::fs::set_permissions(home, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| format!("cannot chmod {home}: {e}"))?;
    nix::unistd::chown(
        home,
        Some(nix::unistd::Uid::from_raw(u.uid)),
        Some(nix::unistd::Gid::from_raw(u.gid)),
    )
    .map_err(|e| format!("cannot chown {home}: {e}"))
}

fn absent(c: &StateCall<'_>) -> StateOutcome {
    let name = c.name().to_string();
    match usr::lookup(&name) {
        Err(e) => StateOutcome::fail(e),
        Ok(None) => StateOutcome::ok(format!("User {name} is not present")),
        Ok(Some(_)) if c.test() => StateOutcome::would(
            format!("User {name} set for removal"),
            json!({ name.clone(): "removed" }),
        ),
        Ok(Some(_)) => {
            match usr::delete(
                &name,
                c.bool_arg("purge", false),
                c.bool_arg("force", false),
            ) {
                Ok(()) => StateOutcome::changed(
                    format!("Removed user {name}"),
                    json!({ name.clone(): "removed" }),
                ),
                Err(e) => StateOutcome::fail(format!("Failed to remove user {name}: {e}")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::exec::user::testguard::{unique, Guard};
    use crate::states::testutil::{apply, only};
    use serde_json::json;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn present_twice_test_mode_changes_and_absent() {
        let name = unique("st");
        let g1 = unique("sg");
        let home = format!("/tmp/{name}-home");
        let _guard = Guard {
            users: vec![name.clone()],
            groups: vec![g1.clone(), name.clone()],
        };
        let _ = std::fs::remove_dir_all(&home);
        assert!(crate::exec::group::add(&g1, None, false).is_ok());
        let sls = |shell: &str, groups: &str| {
            format!(
                "{name}:\n  user.present:\n    - shell: {shell}\n    - home: {home}\n    \
                 - fullname: Brine Test\n    - groups: [{groups}]\n    - password: '$6$abc$def'\n"
            )
        };
        // test=True makes nothing.
        let t = apply(&sls("/bin/sh", ""), true).await;
        let r = only(&t);
        assert_eq!(r.result, None);
        assert_eq!(r.comment, format!("User {name} set to be added"));
        assert!(crate::exec::user::lookup(&name).expect("read").is_none());

        let r1 = apply(&sls("/bin/sh", ""), false).await;
        let r = only(&r1);
        assert_eq!(r.result, Some(true), "{r:?}");
        assert_eq!(r.comment, format!("New user {name} created"));
        assert_eq!(r.changes["shell"], "/bin/sh");
        assert_eq!(r.changes["fullname"], "Brine Test");
        assert_eq!(r.changes["password"], "XXX-REDACTED-XXX");
        assert!(std::path::Path::new(&home).is_dir());

        let r2 = apply(&sls("/bin/sh", ""), false).await;
        let r = only(&r2);
        assert_eq!(
            (r.result, r.comment.as_str()),
            (
                Some(true),
                format!("User {name} is present and up to date").as_str()
            )
        );
        assert_eq!(r.changes, json!({}));

        // A changed shell and group: test mode reports, changes nothing.
        let t = apply(&sls("/bin/bash", &g1), true).await;
        let r = only(&t);
        assert_eq!(r.result, None);
        assert!(r
            .comment
            .starts_with("The following user attributes are set to be changed:\n"));
        assert_eq!(r.changes, json!({"shell": "/bin/bash", "groups": [g1]}));
        let info = crate::exec::user::info(&name).expect("info");
        assert_eq!(info["shell"], "/bin/sh");

        let r3 = apply(&sls("/bin/bash", &g1), false).await;
        let r = only(&r3);
        assert_eq!(r.result, Some(true), "{r:?}");
        assert_eq!(r.comment, format!("Updated user {name}"));
        assert_eq!(r.changes["shell"], "/bin/bash");
        let mut groups = vec![name.clone(), g1.clone()];
        groups.sort();
        assert_eq!(r.changes["groups"], json!(groups));
        assert_eq!(
            only(&apply(&sls("/bin/bash", &g1), false).await).changes,
            json!({})
        );

        // remove_groups (default True) takes the user out of g1 again.
        let r4 = apply(&sls("/bin/bash", ""), false).await;
        assert_eq!(only(&r4).changes["groups"], json!([name]));

        let absent = format!("{name}:\n  user.absent:\n    - purge: True\n");
        let t = apply(&absent, true).await;
        assert_eq!(only(&t).result, None);
        assert!(crate::exec::user::lookup(&name).expect("read").is_some());
        let r = apply(&absent, false).await;
        let r = only(&r);
        assert_eq!(r.comment, format!("Removed user {name}"));
        assert_eq!(r.changes, json!({name.clone(): "removed"}));
        let r = apply(&absent, false).await;
        assert_eq!(only(&r).comment, format!("User {name} is not present"));
        let _ = std::fs::remove_dir_all(&home);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn missing_group_and_uid_change_refused() {
        let name = unique("st");
        let _guard = Guard {
            users: vec![name.clone()],
            groups: vec![name.clone()],
        };
        let r = apply(
            &format!("{name}:\n  user.present:\n    - groups: [brine-test-no-such-group]\n"),
            false,
        )
        .await;
        let r = only(&r);
        assert_eq!(r.result, Some(false));
        assert_eq!(
            r.comment,
            "The following group(s) are not present: brine-test-no-such-group"
        );
        let r = apply(
            &format!("{name}:\n  user.present:\n    - createhome: False\n"),
            false,
        )
        .await;
        assert_eq!(only(&r).result, Some(true));
        let uid = crate::exec::user::existing(&name).expect("user").uid;
        let r = apply(
            &format!(
                "{name}:\n  user.present:\n    - createhome: False\n    - uid: {}\n",
                uid + 1
            ),
            false,
        )
        .await;
        let r = only(&r);
        assert_eq!(r.result, Some(false));
        assert!(r.comment.contains("allow_uid_change"), "{}", r.comment);
    }
}
