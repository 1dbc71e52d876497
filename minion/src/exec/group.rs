//! The `group` module: local groups through the shadow tools (`groupadd`,
//! `groupmod`, `groupdel`, `gpasswd`), as Salt's `groupadd` module
//! (`group.add`, `group.delete`, `group.info`, `group.getent`,
//! `group.adduser`, `group.deluser`, `group.members`, `group.chgid`).
//!
//! Reads come from `/etc/group` directly, writes only through the tools;
//! the sync functions here are what the `group` state module calls too.

use super::user::{blocking, handler, name_arg, names, run_tool};
use super::{opt, req, Call, CallFuture, ExecError, Function, Outcome};
use serde_json::{json, Value};

/// One line of `/etc/group`.
#[derive(Debug, Clone, PartialEq)]
pub struct GrEntry {
    pub name: String,
    pub passwd: String,
    pub gid: u32,
    pub members: Vec<String>,
}

/// The entries of a group file; malformed lines are skipped.
pub fn parse_group(text: &str) -> Vec<GrEntry> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() != 4 {
                return None;
            }
            Some(GrEntry {
                name: f[0].to_string(),
                passwd: f[1].to_string(),
                gid: f[2].parse().ok()?,
                members: f[3]
                    .split(',')
                    .filter(|m| !m.is_empty())
                    .map(str::to_string)
                    .collect(),
            })
        })
        .collect()
}

/// Every group of `/etc/group`.
pub fn read_groups() -> Result<Vec<GrEntry>, String> {
    std::fs::read_to_string("/etc/group")
        .map(|t| parse_group(&t))
        .map_err(|e| format!("cannot read /etc/group: {e}"))
}

/// The group called `name`, if there is one.
pub fn lookup(name: &str) -> Result<Option<GrEntry>, String> {
    Ok(read_groups()?.into_iter().find(|g| g.name == name))
}

fn existing(name: &str) -> Result<GrEntry, String> {
    lookup(name)?.ok_or_else(|| format!("Group '{name}' does not exist"))
}

/// Salt's `group.info` dict.
pub fn info_of(g: &GrEntry) -> Value {
    json!({"name": g.name, "passwd": g.passwd, "gid": g.gid, "members": g.members})
}

/// `group.info`: the dict, or `{}` when there is no such group.
pub fn info(name: &str) -> Result<Value, String> {
    Ok(lookup(name)?
        .map(|g| info_of(&g))
        .unwrap_or_else(|| json!({})))
}

/// The `groupadd` arguments (pure, for tests).
pub fn groupadd_args(name: &str, gid: Option<&str>, system: bool) -> Vec<String> {
    let mut a = Vec::new();
    if let Some(g) = gid {
        a.push("-g".to_string());
        a.push(g.to_string());
    }
    if system {
        a.push("-r".to_string());
    }
    a.push(name.to_string());
    a
}

/// `group.add`.
pub fn add(name: &str, gid: Option<&str>, system: bool) -> Result<(), String> {
    if name.is_empty() || name.starts_with('-') || name.contains([':', ',', '\n', '/']) {
        return Err(format!("Invalid group name {name:?}"));
    }
    if let Some(g) = gid {
        g.parse::<u32>()
            .map_err(|_| format!("gid must be a number, not {g:?}"))?;
    }
    run_tool("groupadd", &groupadd_args(name, gid, system))
}

/// `group.delete`.
pub fn delete(name: &str) -> Result<(), String> {
    existing(name)?;
    run_tool("groupdel", &[name.to_string()])
}

/// `group.adduser`: add `user` to the members (nothing to do if it is one).
pub fn adduser(name: &str, user: &str) -> Result<(), String> {
    if existing(name)?.members.iter().any(|m| m == user) {
        return Ok(());
    }
    run_tool(
        "gpasswd",
        &["-a".to_string(), user.to_string(), name.to_string()],
    )
}

/// `group.deluser`: remove `user` from the members (nothing to do if it is
/// not one).
pub fn deluser(name: &str, user: &str) -> Result<(), String> {
    if !existing(name)?.members.iter().any(|m| m == user) {
        return Ok(());
    }
    run_tool(
        "gpasswd",
        &["-d".to_string(), user.to_string(), name.to_string()],
    )
}

/// `group.members`: the members become exactly `users`.
pub fn set_members(name: &str, users: &[String]) -> Result<(), String> {
    existing(name)?;
    run_tool(
        "gpasswd",
        &["-M".to_string(), users.join(","), name.to_string()],
    )
}

/// `group.chgid`: `true` when the group has `gid` afterwards.
pub fn chgid(name: &str, gid: u32) -> Result<bool, String> {
    if existing(name)?.gid == gid {
        return Ok(true);
    }
    run_tool(
        "groupmod",
        &["-g".to_string(), gid.to_string(), name.to_string()],
    )?;
    Ok(existing(name)?.gid == gid)
}

handler!(add_h, |c| {
    let name = name_arg(c, "name")?;
    let gid = c.str_arg("gid")?;
    let system = c.bool_arg("system", false)?;
    blocking(move || add(&name, gid.as_deref(), system)).await?;
    Ok(Outcome::ok(json!(true)))
});

handler!(delete_h, |c| {
    let name = name_arg(c, "name")?;
    blocking(move || delete(&name)).await?;
    Ok(Outcome::ok(json!(true)))
});

handler!(info_h, |c| {
    let name = name_arg(c, "name")?;
    Ok(Outcome::ok(blocking(move || info(&name)).await?))
});

handler!(getent_h, |_c| {
    let all = blocking(read_groups).await?;
    Ok(Outcome::ok(json!(all
        .iter()
        .map(info_of)
        .collect::<Vec<_>>())))
});

handler!(adduser_h, |c| {
    let (name, user) = (name_arg(c, "name")?, name_arg(c, "username")?);
    blocking(move || adduser(&name, &user)).await?;
    Ok(Outcome::ok(json!(true)))
});

handler!(deluser_h, |c| {
    let (name, user) = (name_arg(c, "name")?, name_arg(c, "username")?);
    blocking(move || deluser(&name, &user)).await?;
    Ok(Outcome::ok(json!(true)))
});

handler!(members_h, |c| {
    let name = name_arg(c, "name")?;
    let users = names(c.arg("members_list"))
        .map_err(ExecError::InvalidArgs)?
        .unwrap_or_default();
    blocking(move || set_members(&name, &users)).await?;
    Ok(Outcome::ok(json!(true)))
});

handler!(chgid_h, |c| {
    let name = name_arg(c, "name")?;
    let gid = name_arg(c, "gid")?;
    let gid: u32 = gid
        .parse()
        .map_err(|_| ExecError::InvalidArgs(format!("gid must be a number, not {gid:?}")))?;
    Ok(Outcome::ok(json!(
        blocking(move || chgid(&name, gid)).await?
    )))
});

pub(super) const FUNCTIONS: &[Function] = &[
    Function {
        name: "group.add",
        params: &[req("name"), opt("gid"), opt("system")],
        varargs: false,
        kwargs: false,
        doc: "Add the specified group (``system=True`` for a system group)\n\n\
              CLI Example:\n\n    salt '*' group.add foo 3456\n",
        handler: add_h,
    },
    Function {
        name: "group.delete",
        params: &[req("name")],
        varargs: false,
        kwargs: false,
        doc: "Remove the named group\n\n\
              CLI Example:\n\n    salt '*' group.delete foo\n",
        handler: delete_h,
    },
    Function {
        name: "group.info",
        params: &[req("name")],
        varargs: false,
        kwargs: false,
        doc: "Return information about a group (name, passwd, gid, members), or an\n\
              empty dict when there is no such group\n\n\
              CLI Example:\n\n    salt '*' group.info foo\n",
        handler: info_h,
    },
    Function {
        name: "group.getent",
        params: &[opt("refresh")],
        varargs: false,
        kwargs: false,
        doc: "Return info on all groups\n\n\
              CLI Example:\n\n    salt '*' group.getent\n",
        handler: getent_h,
    },
    Function {
        name: "group.adduser",
        params: &[req("name"), req("username")],
        varargs: false,
        kwargs: false,
        doc: "Add a user in the group.\n\n\
              CLI Example:\n\n    salt '*' group.adduser foo bar\n",
        handler: adduser_h,
    },
    Function {
        name: "group.deluser",
        params: &[req("name"), req("username")],
        varargs: false,
        kwargs: false,
        doc: "Remove a user from the group.\n\n\
              CLI Example:\n\n    salt '*' group.deluser foo bar\n",
        handler: deluser_h,
    },
    Function {
        name: "group.members",
        params: &[req("name"), req("members_list")],
        varargs: false,
        kwargs: false,
        doc: "Replaces members of the group with a provided list (comma-separated\n\
              string or list).\n\n\
              CLI Example:\n\n    salt '*' group.members foo 'user1,user2,user3'\n",
        handler: members_h,
    },
    Function {
        name: "group.chgid",
        params: &[req("name"), req("gid")],
        varargs: false,
        kwargs: false,
        doc: "Change the gid for a named group\n\n\
              CLI Example:\n\n    salt '*' group.chgid foo 4376\n",
        handler: chgid_h,
    },
];

#[cfg(test)]
mod tests {
    use super::super::testutil::run;
    use super::super::user::testguard::{unique, Guard};
    use super::*;

    #[test]
    fn parses_group_lines() {
        let g = parse_group("root:x:0:\nsudo:x:27:a,b\nbroken\n");
        assert_eq!(g.len(), 2);
        assert_eq!(g[1].members, ["a", "b"]);
        assert_eq!(info_of(&g[0])["members"], json!([]));
        assert_eq!(groupadd_args("x", Some("5"), true).join(" "), "-g 5 -r x");
    }

    #[tokio::test]
    async fn real_group_lifecycle() {
        let g = unique("grp");
        let u = unique("mem");
        let _guard = Guard {
            users: vec![u.clone()],
            groups: vec![g.clone(), u.clone()],
        };
        assert_eq!(
            run("group.add", vec![json!(g)], json!({})).await.ret,
            json!(true)
        );
        let o = run("user.add", vec![json!(u)], json!({"createhome": false})).await;
        assert_eq!(o.ret, json!(true));
        let i = run("group.info", vec![json!(g)], json!({})).await.ret;
        assert_eq!(i["name"], json!(g));
        assert_eq!(i["members"], json!([]));
        assert_eq!(i["passwd"], "x");
        let o = run("group.adduser", vec![json!(g), json!(u)], json!({})).await;
        assert_eq!(o.ret, json!(true));
        let i = run("group.info", vec![json!(g)], json!({})).await.ret;
        assert_eq!(i["members"], json!([u]));
        let o = run("group.deluser", vec![json!(g), json!(u)], json!({})).await;
        assert_eq!(o.ret, json!(true));
        let o = run("group.members", vec![json!(g), json!(u)], json!({})).await;
        assert_eq!(o.ret, json!(true));
        assert_eq!(
            run("group.info", vec![json!(g)], json!({})).await.ret["members"],
            json!([u])
        );
        let all = run("group.getent", vec![], json!({})).await.ret;
        assert!(all
            .as_array()
            .is_some_and(|a| a.iter().any(|x| x["name"] == json!(g))));
        assert_eq!(
            run("group.delete", vec![json!(g)], json!({})).await.ret,
            json!(true)
        );
        assert_eq!(
            run("group.info", vec![json!(g)], json!({})).await.ret,
            json!({})
        );
        let o = run("group.delete", vec![json!(g)], json!({})).await;
        assert!(!o.success);
    }
}
