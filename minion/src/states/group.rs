//! Salt's `group` state module: `group.present` (gid, system, members,
//! addusers, delusers) and `group.absent`.
//!
//! The invariant: the group is compared with what was asked first, test
//! mode changes nothing, and after changing the group it is compared
//! again, so what could not be applied fails the state and a second run
//! reports no changes. System work goes through `crate::exec::group`.

use super::user::listing;
use super::{StateCall, StateFunction};
use crate::exec::group::{self as grp, GrEntry};
use crate::exec::user::names;
use crate::state::StateOutcome;
use serde_json::{json, Map, Value};

pub const FUNCTIONS: &[StateFunction] = &[
    StateFunction {
        name: "group.present",
        run: present,
        mod_watch: None,
    },
    StateFunction {
        name: "group.absent",
        run: absent,
        mod_watch: None,
    },
];

struct Want {
    gid: Option<u32>,
    addusers: Option<Vec<String>>,
    delusers: Option<Vec<String>>,
    members: Option<Vec<String>>,
}

/// Salt's `_changes` of the group state.
fn diff(g: &GrEntry, w: &Want) -> Map<String, Value> {
    let mut ch = Map::new();
    if let Some(gid) = w.gid.filter(|gid| *gid != g.gid) {
        ch.insert("gid".into(), json!(gid));
    }
    let is_member = |u: &String| g.members.contains(u);
    if let Some(add) = &w.addusers {
        let missing: Vec<&String> = add.iter().filter(|u| !is_member(u)).collect();
        if !missing.is_empty() {
            ch.insert("addusers".into(), json!(missing));
        }
    }
    if let Some(del) = &w.delusers {
        let present: Vec<&String> = del.iter().filter(|u| is_member(u)).collect();
        if !present.is_empty() {
            ch.insert("delusers".into(), json!(present));
        }
    }
    if let Some(members) = &w.members {
        let (mut a, mut b) = (members.clone(), g.members.clone());
        a.sort();
        a.dedup();
        b.sort();
        if a != b {
            ch.insert("members".into(), json!(members));
        }
    }
    ch
}

fn present(c: &StateCall<'_>) -> StateOutcome {
    present_inner(c).unwrap_or_else(StateOutcome::fail)
}

fn present_inner(c: &StateCall<'_>) -> Result<StateOutcome, String> {
    let name = c.name().to_string();
    let gid = c
        .str_arg("gid")
        .map(|g| {
            g.parse::<u32>()
                .map_err(|_| format!("gid must be a number, not {g:?}"))
        })
        .transpose()?;
    let w = Want {
        gid,
        addusers: names(c.arg("addusers"))?,
        delusers: names(c.arg("delusers"))?,
        members: names(c.arg("members"))?,
    };
    if w.members.is_some() && (w.addusers.is_some() || w.delusers.is_some()) {
        return Ok(StateOutcome::fail(
            "Error: Conflicting options \"members\" with \"addusers\" and/or \"delusers\" \
             can not be used together. ",
        ));
    }
    if let (Some(a), Some(d)) = (&w.addusers, &w.delusers) {
        if a.iter().any(|u| d.contains(u)) {
            return Ok(StateOutcome::fail(
                "Error. Same user(s) can not be added and deleted simultaneously",
            ));
        }
    }
    match grp::lookup(&name)? {
        Some(g) => update(c, &name, &g, &w),
        None => create(c, &name, &w),
    }
}

fn apply_changes(name: &str, ch: &Map<String, Value>) -> Vec<String> {
    let mut errors = Vec::new();
    for (key, val) in ch {
        let users = names(Some(val)).ok().flatten().unwrap_or_default();
        let done = match key.as_str() {
            "gid" => match val.as_u64().and_then(|g| u32::try_from(g).ok()) {
                Some(gid) => grp::chgid(name, gid).map(|_| ()),
                None => Err(format!("bad gid {val}")),
            },
            "addusers" => users.iter().try_for_each(|u| grp::adduser(name, u)),
            "delusers" => users.iter().try_for_each(|u| grp::deluser(name, u)),
            _ => grp::set_members(name, &users),
        };
        if let Err(e) = done {
            errors.push(e);
        }
    }
    errors
}

fn with_errors(mut comment: String, errors: &[String]) -> String {
    for e in errors {
        comment.push('\n');
        comment.push_str(e);
    }
    comment
}

fn update(c: &StateCall<'_>, name: &str, g: &GrEntry, w: &Want) -> Result<StateOutcome, String> {
    let wanted = diff(g, w);
    if wanted.is_empty() {
        return Ok(StateOutcome::ok(format!(
            "Group {name} is present and up to date"
        )));
    }
    let comment = listing(
        "The following group attributes are set to be changed:\n",
        &wanted,
    );
    if c.test() {
        return Ok(StateOutcome::would(comment, Value::Object(wanted)));
    }
    let errors = apply_changes(name, &wanted);
    let after = grp::lookup(name)?.ok_or_else(|| format!("Group {name} vanished"))?;
    let left = diff(&after, w);
    if !left.is_empty() {
        return Ok(StateOutcome::fail_with(
            with_errors(
                format!("{comment}Some changes could not be applied"),
                &errors,
            ),
            json!({ "Failed": left }),
        ));
    }
    Ok(StateOutcome::changed(
        comment,
        json!({"Final": "All changes applied successfully"}),
    ))
}

fn create(c: &StateCall<'_>, name: &str, w: &Want) -> Result<StateOutcome, String> {
    if c.test() {
        let mut asked = Map::new();
        asked.insert("name".into(), json!(name));
        if let Some(gid) = w.gid {
            asked.insert("gid".into(), json!(gid));
        }
        if let Some(m) = w.members.as_ref().or(w.addusers.as_ref()) {
            asked.insert("members".into(), json!(m));
        }
        return Ok(StateOutcome::would(
            format!("Group {name} set to be added"),
            Value::Object(asked),
        ));
    }
    if let Some(gid) = w.gid {
        if let Some(taken) = grp::read_groups()?.into_iter().find(|g| g.gid == gid) {
            return Ok(StateOutcome::fail(format!(
                "Group {name} is not present but gid {gid} is already taken by group {}",
                taken.name
            )));
        }
    }
    let gid = w.gid.map(|g| g.to_string());
    if let Err(e) = grp::add(name, gid.as_deref(), c.bool_arg("system", false)) {
        return Ok(StateOutcome::fail(format!(
            "Failed to create new group {name}: {e}"
        )));
    }
    let mut errors = Vec::new();
    if let Some(m) = w.members.as_ref().or(w.addusers.as_ref()) {
        if let Err(e) = grp::set_members(name, m) {
            errors.push(e);
        }
    }
    let after = grp::lookup(name)?.ok_or_else(|| format!("Group {name} vanished"))?;
    let left = diff(&after, w);
    if !left.is_empty() {
        return Ok(StateOutcome::fail_with(
            with_errors(
                format!("Group {name} has been created but, some changes could not be applied"),
                &errors,
            ),
            json!({ "Failed": left }),
        ));
    }
    Ok(StateOutcome::changed(
        format!("New group {name} created"),
        grp::info_of(&after),
    ))
}

fn absent(c: &StateCall<'_>) -> StateOutcome {
    let name = c.name().to_string();
    match grp::lookup(&name) {
        Err(e) => StateOutcome::fail(e),
        Ok(None) => StateOutcome::ok("Group not present"),
        Ok(Some(_)) if c.test() => StateOutcome::would(
            format!("Group {name} is set for removal"),
            json!({ name.clone(): "" }),
        ),
        Ok(Some(_)) => match grp::delete(&name) {
            Ok(()) => {
                StateOutcome::changed(format!("Removed group {name}"), json!({ name.clone(): "" }))
            }
            Err(e) => StateOutcome::fail(format!("Failed to remove group {name}: {e}")),
        },
    }
}

#[cfg(test)]
mod tests {
    use crate::exec::user::testguard::{unique, Guard};
    use crate::states::testutil::{apply, only};
    use serde_json::json;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn present_members_and_absent() {
        let g = unique("sgr");
        let u = unique("sgu");
        let _guard = Guard {
            users: vec![u.clone()],
            groups: vec![g.clone(), u.clone()],
        };
        let mk = crate::exec::user::add(&crate::exec::user::NewUser {
            name: u.clone(),
            ..Default::default()
        });
        assert!(mk.is_ok(), "{mk:?}");
        let sls = |members: &str| format!("{g}:\n  group.present:\n    - members: [{members}]\n");

        let t = apply(&sls(""), true).await;
        assert_eq!(only(&t).comment, format!("Group {g} set to be added"));
        assert!(crate::exec::group::lookup(&g).expect("read").is_none());

        let r = apply(&sls(""), false).await;
        let r = only(&r);
        assert_eq!(r.result, Some(true), "{r:?}");
        assert_eq!(r.comment, format!("New group {g} created"));
        assert_eq!(r.changes["name"], json!(g));
        assert_eq!(r.changes["members"], json!([]));

        let r = apply(&sls(""), false).await;
        assert_eq!(
            only(&r).comment,
            format!("Group {g} is present and up to date")
        );
        assert_eq!(only(&r).changes, json!({}));

        let t = apply(&sls(&u), true).await;
        assert_eq!(only(&t).result, None);
        assert_eq!(only(&t).changes, json!({"members": [u]}));
        let r = apply(&sls(&u), false).await;
        let r = only(&r);
        assert_eq!(r.result, Some(true), "{r:?}");
        assert_eq!(
            r.changes,
            json!({"Final": "All changes applied successfully"})
        );
        assert_eq!(
            crate::exec::group::info(&g).expect("info")["members"],
            json!([u])
        );
        let del = format!("{g}:\n  group.present:\n    - delusers: [{u}]\n");
        assert_eq!(only(&apply(&del, false).await).result, Some(true));
        assert_eq!(only(&apply(&del, false).await).changes, json!({}));

        let absent = format!("{g}:\n  group.absent: []\n");
        assert_eq!(only(&apply(&absent, true).await).result, None);
        let r = apply(&absent, false).await;
        assert_eq!(only(&r).comment, format!("Removed group {g}"));
        let r = apply(&absent, false).await;
        assert_eq!(only(&r).comment, "Group not present");
    }
}
