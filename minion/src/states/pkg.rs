//! Salt's `pkg` state module for the Debian family: `pkg.installed`,
//! `pkg.latest`, `pkg.removed`, `pkg.purged`, on the functions of
//! `crate::exec::pkg`.
//!
//! The invariant: the installed set is read first and only the packages
//! that are missing or at the wrong version are touched; test mode reads
//! but never installs, removes or fetches; `changes` is the before/after
//! difference of the installed set (`{pkg: {"old": "", "new": "1.0"}}`).

use super::{StateCall, StateFunction};
use crate::exec::pkg::{self as p, InstallRequest};
use crate::state::StateOutcome;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

pub const FUNCTIONS: &[StateFunction] = &[
    StateFunction {
        name: "pkg.installed",
        run: installed,
        mod_watch: None,
    },
    StateFunction {
        name: "pkg.latest",
        run: latest,
        mod_watch: None,
    },
    StateFunction {
        name: "pkg.removed",
        run: removed,
        mod_watch: None,
    },
    StateFunction {
        name: "pkg.purged",
        run: purged,
        mod_watch: None,
    },
];

/// What a state asks for: (name, version spec) pairs, and for `sources`
/// the source of each.
struct Wanted {
    pkgs: Vec<(String, Option<String>)>,
    sources: Vec<(String, String)>,
    /// Only `name` was given (Salt's single-package comments).
    single: bool,
}

fn wanted(c: &StateCall<'_>, allow_sources: bool) -> Result<Wanted, String> {
    let version = c.str_arg("version");
    let has_pkgs = c.arg("pkgs").is_some();
    let has_sources = allow_sources && c.arg("sources").is_some();
    if has_pkgs && has_sources {
        return Err("Only one of \"pkgs\" and \"sources\" is permitted.".into());
    }
    if has_sources {
        let sources = p::parse_sources(c.arg("sources").unwrap_or(&Value::Null))?;
        // Salt ignores `version` with sources; here it pins the one
        // source's version, so a newer .deb upgrades.
        let v = if sources.len() == 1 { version } else { None };
        let pkgs = sources
            .iter()
            .map(|(n, _)| (n.clone(), v.clone()))
            .collect();
        return Ok(Wanted {
            pkgs,
            sources,
            single: false,
        });
    }
    if has_pkgs {
        let pkgs = p::parse_pkgs(c.arg("pkgs").unwrap_or(&Value::Null))?;
        return Ok(Wanted {
            pkgs,
            sources: Vec::new(),
            single: false,
        });
    }
    let name = c.name().to_string();
    p::check_name(&name)?;
    Ok(Wanted {
        pkgs: vec![(name, version)],
        sources: Vec::new(),
        single: true,
    })
}

/// `name` or `name=version` for comments (Salt's `_get_desired_pkg`).
fn desired_label(name: &str, spec: Option<&str>) -> String {
    match spec {
        Some(v) => format!("{name}={}", v.trim_start_matches('=')),
        None => name.to_string(),
    }
}

/// Salt's short list: the names when short, else a count.
fn summary(labels: &[String], verb: &str) -> String {
    let s = labels.join(", ");
    if s.len() < 20 {
        format!("The following packages were {verb}: {s}")
    } else if labels.len() == 1 {
        format!("1 targeted package was {verb}.")
    } else {
        format!("{} targeted packages were {verb}.", labels.len())
    }
}

fn installed(c: &StateCall<'_>) -> StateOutcome {
    let w = match wanted(c, true) {
        Ok(w) => w,
        Err(e) => return StateOutcome::fail(e),
    };
    let cur = match p::installed(false) {
        Ok(m) => m,
        Err(e) => return StateOutcome::fail(e),
    };
    let reinstall = c.bool_arg("reinstall", false);
    let mut targets = Vec::new();
    let mut version_spec = false;
    for (name, spec) in &w.pkgs {
        let have = cur.get(name).cloned().unwrap_or_default();
        let ok = match spec {
            _ if have.is_empty() => false,
            None => true,
            Some(s) => {
                version_spec = true;
                match p::fulfills(&have, s) {
                    Ok(b) => b,
                    Err(e) => return StateOutcome::fail(format!("{e} for package '{name}'.")),
                }
            }
        };
        if !ok || reinstall {
            targets.push((name.clone(), spec.clone()));
        }
    }
    let names: Vec<String> = w.pkgs.iter().map(|(n, _)| n.clone()).collect();
    let hold = c.arg("hold").map(|_| c.bool_arg("hold", false));
    if targets.is_empty() {
        let comment = if w.single {
            let (name, spec) = &w.pkgs[0];
            match spec {
                Some(v) => format!("Version {v} of package '{name}' is already installed"),
                None => format!("Package {name} is already installed"),
            }
        } else {
            format!(
                "All specified packages are already installed{}",
                if version_spec && w.sources.is_empty() {
                    " and are at the desired version"
                } else {
                    ""
                }
            )
        };
        let mut out = StateOutcome::ok(comment);
        if let Some(h) = hold {
            apply_hold(c, &names, h, &mut out, ".\n");
        }
        return out;
    }
    if w.sources.is_empty() {
        if let Err(e) = preflight(&targets, &cur) {
            return StateOutcome::fail(e);
        }
    }
    let labels: Vec<String> = targets
        .iter()
        .map(|(n, s)| {
            if w.sources.is_empty() {
                desired_label(n, s.as_deref())
            } else {
                n.clone()
            }
        })
        .collect();
    if c.test() {
        let changes: Map<String, Value> = targets
            .iter()
            .map(|(n, s)| {
                let old = cur.get(n).map(|v| v.join(",")).unwrap_or_default();
                let new = s.clone().unwrap_or_else(|| "installed".into());
                (n.clone(), json!({"old": old, "new": new}))
            })
            .collect();
        return StateOutcome::would(
            format!(
                "The following packages would be installed/updated: {}",
                labels.join(", ")
            ),
            Value::Object(changes),
        );
    }

    let mut req = InstallRequest {
        refresh: c.bool_arg("refresh", false),
        cancel: Some(c.env.ctx.cancel.clone()),
        fromrepo: c.str_arg("fromrepo"),
        reinstall,
        ..Default::default()
    };
    if w.sources.is_empty() {
        req.repo = targets.clone();
    } else {
        let chosen: Vec<(String, String)> = w
            .sources
            .iter()
            .filter(|(n, _)| targets.iter().any(|(t, _)| t == n))
            .cloned()
            .collect();
        let saltenv = c.saltenv();
        let debs = match c.block_on(p::fetch_sources(&c.env.ctx.files, &saltenv, &chosen)) {
            Ok(d) => d,
            Err(e) => return StateOutcome::fail(e),
        };
        match p::check_debs(&debs) {
            Ok(versions) => {
                for ((name, _), v) in debs.iter().zip(versions) {
                    let spec = targets
                        .iter()
                        .find(|(t, _)| t == name)
                        .and_then(|t| t.1.clone());
                    if let Some(s) = spec {
                        if !p::fulfills(std::slice::from_ref(&v), &s).unwrap_or(false) {
                            return StateOutcome::fail(format!(
                                "Source for package '{name}' has version {v}, which does not match the desired version {s}"
                            ));
                        }
                    }
                }
            }
            Err(e) => return StateOutcome::fail(e),
        }
        req.debs = debs.into_iter().map(|(_, p)| p).collect();
    }
    let applied = match p::install(&req) {
        Ok(a) => a,
        Err(e) => {
            return StateOutcome::fail(format!(
                "An error was encountered while installing package(s): {e}"
            ))
        }
    };
    let new = p::installed(false).unwrap_or_default();
    let (mut modified, mut failed) = (Vec::new(), Vec::new());
    for ((name, spec), label) in targets.iter().zip(&labels) {
        let have = new.get(name).cloned().unwrap_or_default();
        let ok = !have.is_empty()
            && spec
                .as_deref()
                .is_none_or(|s| p::fulfills(&have, s).unwrap_or(false));
        if ok {
            modified.push(label.clone());
        } else {
            failed.push(label.clone());
        }
    }
    let mut comment = Vec::new();
    if !modified.is_empty() {
        comment.push(summary(&modified, "installed/updated"));
    }
    let changes = Value::Object(applied.changes);
    if !failed.is_empty() || !applied.errors.is_empty() {
        if !failed.is_empty() {
            comment.push(format!(
                "The following packages failed to install/update: {}",
                failed.join(", ")
            ));
        }
        comment.extend(applied.errors);
        return StateOutcome::fail_with(comment.join("\n"), changes);
    }
    let mut out = StateOutcome::changed(comment.join("\n"), changes);
    if let Some(h) = hold {
        apply_hold(c, &names, h, &mut out, "\n");
    }
    out
}

/// `hold: True/False` of `pkg.installed`: hold or unhold each package,
/// adding the comments and, for a package whose hold changed, its
/// `old`/`new` selection to `changes` (appended on a new line when the
/// package also changed version, as Salt does).
fn apply_hold(c: &StateCall<'_>, names: &[String], hold: bool, out: &mut StateOutcome, sep: &str) {
    let res = match p::set_hold(names, hold, c.test()) {
        Ok(r) => r,
        Err(e) => {
            out.result = Some(false);
            out.comment.push_str(&format!("{sep}{e}"));
            return;
        }
    };
    let Value::Object(changes) = &mut out.changes else {
        return;
    };
    for (name, r) in res {
        let comment = r["comment"].as_str().unwrap_or_default();
        let ch = r
            .get("changes")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        match r["result"] {
            Value::Bool(false) => out.result = Some(false),
            Value::Null if out.result == Some(true) => out.result = None,
            _ => {}
        }
        if ch.is_empty() && r["result"] == Value::Bool(true) {
            continue;
        }
        out.comment.push_str(&format!("{sep}{comment}"));
        if ch.is_empty() {
            continue;
        }
        let entry = changes
            .entry(name)
            .or_insert_with(|| json!({"old": "", "new": ""}));
        for key in ["old", "new"] {
            let add = ch.get(key).and_then(Value::as_str).unwrap_or_default();
            let before = entry[key].as_str().unwrap_or_default().to_string();
            entry[key] = Value::String(if before.is_empty() {
                add.to_string()
            } else {
                format!("{before}\n{add}")
            });
        }
    }
}

/// Salt's pre-flight check: a package that is neither installed nor
/// known to apt cannot be installed.
fn preflight(
    targets: &[(String, Option<String>)],
    cur: &BTreeMap<String, Vec<String>>,
) -> Result<(), String> {
    let fresh: Vec<String> = targets
        .iter()
        .filter(|(n, _)| !cur.contains_key(n))
        .map(|(n, _)| n.clone())
        .collect();
    if fresh.is_empty() {
        return Ok(());
    }
    let pol = p::policy(&fresh)?;
    let unknown: Vec<&str> = fresh
        .iter()
        .filter(|n| pol.get(*n).is_none_or(|x| x.1.is_none()))
        .map(String::as_str)
        .collect();
    if unknown.is_empty() {
        return Ok(());
    }
    Err(format!(
        "The following package(s) were not found, and no possible matches were found in the package db: {}",
        unknown.join(", ")
    ))
}

fn latest(c: &StateCall<'_>) -> StateOutcome {
    let w = match wanted(c, false) {
        Ok(w) => w,
        Err(e) => return StateOutcome::fail(e),
    };
    let names: Vec<String> = w.pkgs.iter().map(|(n, _)| n.clone()).collect();
    if c.bool_arg("refresh", false) && !c.test() {
        if let Err(e) = p::refresh_db(Some(&c.env.ctx.cancel)) {
            return StateOutcome::fail(e);
        }
    }
    let (pol, cur) = match (p::policy(&names), p::installed(false)) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => return StateOutcome::fail(e),
    };
    let mut targets: Vec<(String, String)> = Vec::new();
    let mut up_to_date: BTreeMap<String, String> = BTreeMap::new();
    let mut problems = Vec::new();
    for n in &names {
        let cand = pol.get(n).and_then(|x| x.1.clone());
        let have = cur.get(n).cloned().unwrap_or_default();
        match cand {
            None if have.is_empty() => problems.push(format!("No information found for '{n}'.")),
            None => {
                up_to_date.insert(n.clone(), have.join(","));
            }
            Some(cv) => {
                let newer = have.is_empty()
                    || have
                        .iter()
                        .all(|v| p::version_cmp(&cv, "gt", v).unwrap_or(false));
                if newer {
                    targets.push((n.clone(), cv));
                } else {
                    up_to_date.insert(n.clone(), have.join(","));
                }
            }
        }
    }
    if !problems.is_empty() {
        return StateOutcome::fail(problems.join(" "));
    }
    if targets.is_empty() {
        if names.len() == 1 {
            return StateOutcome::ok(format!("Package {} is already up-to-date", names[0]));
        }
        return StateOutcome::ok(format!(
            "The following packages are already up-to-date: {}",
            up_to_date
                .iter()
                .map(|(n, v)| format!("{n} ({v})"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let list = targets
        .iter()
        .map(|(n, _)| n.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    if c.test() {
        let changes: Map<String, Value> = targets
            .iter()
            .map(|(n, v)| {
                let old = cur.get(n).map(|x| x.join(",")).unwrap_or_default();
                (n.clone(), json!({"old": old, "new": v}))
            })
            .collect();
        return StateOutcome::would(
            format!("The following packages would be installed/upgraded: {list}"),
            Value::Object(changes),
        );
    }
    let req = InstallRequest {
        repo: targets
            .iter()
            .map(|(n, v)| (n.clone(), Some(v.clone())))
            .collect(),
        fromrepo: c.str_arg("fromrepo"),
        cancel: Some(c.env.ctx.cancel.clone()),
        ..Default::default()
    };
    let applied = match p::install(&req) {
        Ok(a) => a,
        Err(e) => return StateOutcome::fail(e),
    };
    let new = p::installed(false).unwrap_or_default();
    let failed: Vec<&str> = targets
        .iter()
        .filter(|(n, v)| !new.get(n).is_some_and(|have| have.contains(v)))
        .map(|(n, _)| n.as_str())
        .collect();
    let changes = Value::Object(applied.changes);
    if !failed.is_empty() {
        let mut msg = vec![format!(
            "The following packages failed to update: {}",
            failed.join(", ")
        )];
        msg.extend(applied.errors);
        return StateOutcome::fail_with(msg.join("\n"), changes);
    }
    StateOutcome::changed(
        format!("The following packages were successfully installed/upgraded: {list}"),
        changes,
    )
}

fn removed(c: &StateCall<'_>) -> StateOutcome {
    uninstall(c, false)
}

fn purged(c: &StateCall<'_>) -> StateOutcome {
    uninstall(c, true)
}

/// Salt's `_uninstall`: remove (or purge) what is there, matching the
/// version spec when one is given.
fn uninstall(c: &StateCall<'_>, purge: bool) -> StateOutcome {
    let action = if purge { "purge" } else { "remove" };
    let w = match wanted(c, false) {
        Ok(w) => w,
        Err(e) => return StateOutcome::fail(e),
    };
    let (cur, rc) = match (p::installed(false), p::installed(true)) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => return StateOutcome::fail(e),
    };
    let mut targets = Vec::new();
    let mut version_spec = false;
    for (name, spec) in &w.pkgs {
        let have = cur.get(name).cloned().unwrap_or_default();
        if have.is_empty() {
            if purge && rc.contains_key(name) {
                targets.push(name.clone());
            }
            continue;
        }
        match spec {
            None => targets.push(name.clone()),
            Some(s) => {
                version_spec = true;
                match p::fulfills(&have, s) {
                    Ok(true) => targets.push(name.clone()),
                    Ok(false) => {}
                    Err(e) => return StateOutcome::fail(format!("{e} for package '{name}'.")),
                }
            }
        }
    }
    if targets.is_empty() {
        return StateOutcome::ok(format!(
            "All specified packages{} are already absent",
            if version_spec {
                " (matching specified versions)"
            } else {
                ""
            }
        ));
    }
    if c.test() {
        let changes: Map<String, Value> = targets
            .iter()
            .map(|n| {
                let old = cur.get(n).map(|v| v.join(",")).unwrap_or_default();
                (n.clone(), json!({"old": old, "new": format!("{action}d")}))
            })
            .collect();
        return StateOutcome::would(
            format!(
                "The following packages will be {action}d: {}.",
                targets.join(", ")
            ),
            Value::Object(changes),
        );
    }
    let applied = match p::remove(&targets, purge, Some(&c.env.ctx.cancel)) {
        Ok(a) => a,
        Err(e) => return StateOutcome::fail(e),
    };
    let (new, new_rc) = (
        p::installed(false).unwrap_or_default(),
        p::installed(true).unwrap_or_default(),
    );
    let failed: Vec<&str> = targets
        .iter()
        .filter(|n| new.contains_key(*n) || (purge && new_rc.contains_key(*n)))
        .map(String::as_str)
        .collect();
    let changes = Value::Object(applied.changes);
    if !failed.is_empty() {
        let mut msg = vec![format!(
            "The following packages failed to {action}: {}.",
            failed.join(", ")
        )];
        msg.extend(applied.errors);
        return StateOutcome::fail_with(msg.join("\n"), changes);
    }
    let not_installed: Vec<&str> = w
        .pkgs
        .iter()
        .map(|(n, _)| n.as_str())
        .filter(|n| !targets.iter().any(|t| t == n))
        .collect();
    let comment = if not_installed.is_empty() {
        format!("All targeted packages were {action}d.")
    } else {
        format!(
            "The following packages were not installed: {} The following packages were {action}d: {}.",
            not_installed.join(", "),
            targets.join(", ")
        )
    };
    StateOutcome::changed(comment, changes)
}

#[cfg(test)]
mod tests {
    use crate::exec::pkg::testdeb::{build, dpkg_installed, unique, PurgeGuard, DPKG_LOCK};
    use crate::states::testutil::{apply, only};
    use serde_json::json;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn installed_upgraded_and_removed_from_real_debs() {
        let _lock = DPKG_LOCK.lock().await;
        let dir = tempfile::tempdir().expect("tempdir");
        let name = unique("s");
        let _guard = PurgeGuard(name.clone());
        let v1 = build(dir.path(), &name, "1.0");
        let v2 = build(dir.path(), &name, "2.0");
        let sls1 = format!(
            "p:\n  pkg.installed:\n    - sources:\n      - {name}: {}\n",
            v1.display()
        );

        let t = apply(&sls1, true).await;
        let r = only(&t);
        assert_eq!(r.result, None, "{r:?}");
        assert_eq!(
            r.comment,
            format!("The following packages would be installed/updated: {name}")
        );
        assert_eq!(r.changes[&name]["old"], "");
        assert!(!dpkg_installed(&name), "test mode changed nothing");

        let t = apply(&sls1, false).await;
        let r = only(&t);
        assert_eq!(r.result, Some(true), "{r:?}");
        assert_eq!(
            r.changes,
            json!({ name.clone(): {"old": "", "new": "1.0"} })
        );
        assert!(
            r.comment == format!("The following packages were installed/updated: {name}")
                || r.comment == "1 targeted package was installed/updated.",
            "{}",
            r.comment
        );
        assert!(dpkg_installed(&name));
        assert!(std::path::Path::new(&format!("/usr/share/{name}/version")).exists());

        let t = apply(&sls1, false).await;
        let r = only(&t);
        assert_eq!(
            (r.result, r.comment.as_str()),
            (Some(true), "All specified packages are already installed")
        );
        assert_eq!(r.changes, json!({}));

        let by_name = format!("{name}:\n  pkg.installed: []\n");
        let r = apply(&by_name, false).await;
        assert_eq!(
            only(&r).comment,
            format!("Package {name} is already installed")
        );

        let held = format!("{name}:\n  pkg.installed:\n    - hold: True\n");
        let t = apply(&held, true).await;
        assert_eq!(only(&t).result, None, "{:?}", only(&t));
        let t = apply(&held, false).await;
        let r = only(&t);
        assert_eq!(r.result, Some(true), "{r:?}");
        assert_eq!(
            r.comment,
            format!("Package {name} is already installed.\nPackage {name} is now being held.")
        );
        assert_eq!(
            r.changes,
            json!({ name.clone(): {"old": "install", "new": "hold"} })
        );
        let t = apply(&held, false).await;
        assert_eq!(only(&t).changes, json!({}));
        let unheld = format!("{name}:\n  pkg.installed:\n    - hold: False\n");
        let t = apply(&unheld, false).await;
        assert_eq!(
            only(&t).changes,
            json!({ name.clone(): {"old": "hold", "new": "install"} })
        );

        let sls2 = format!(
            "p:\n  pkg.installed:\n    - version: '2.0'\n    - sources:\n      - {name}: {}\n",
            v2.display()
        );
        let t = apply(&sls2, true).await;
        assert_eq!(only(&t).result, None);
        assert_eq!(only(&t).changes[&name], json!({"old": "1.0", "new": "2.0"}));
        let t = apply(&sls2, false).await;
        let r = only(&t);
        assert_eq!(r.result, Some(true), "{r:?}");
        assert_eq!(
            r.changes,
            json!({ name.clone(): {"old": "1.0", "new": "2.0"} })
        );
        let t = apply(&sls2, false).await;
        assert_eq!(only(&t).changes, json!({}));

        let latest = format!("{name}:\n  pkg.latest: []\n");
        let t = apply(&latest, false).await;
        assert_eq!(
            only(&t).comment,
            format!("Package {name} is already up-to-date")
        );

        let rm = format!("{name}:\n  pkg.removed: []\n");
        let t = apply(&rm, true).await;
        assert_eq!(only(&t).result, None);
        assert!(dpkg_installed(&name));
        let t = apply(&rm, false).await;
        let r = only(&t);
        assert_eq!(r.result, Some(true), "{r:?}");
        assert_eq!(r.comment, "All targeted packages were removed.");
        assert_eq!(
            r.changes,
            json!({ name.clone(): {"old": "2.0", "new": ""} })
        );
        assert!(!dpkg_installed(&name));
        let t = apply(&rm, false).await;
        assert_eq!(
            only(&t).comment,
            "All specified packages are already absent"
        );
        let purge = format!("{name}:\n  pkg.purged: []\n");
        let t = apply(&purge, false).await;
        assert_eq!(only(&t).result, Some(true));

        let bad = "p:\n  pkg.installed:\n    - pkgs: [a]\n    - sources: [{a: /x.deb}]\n";
        let t = apply(bad, false).await;
        assert_eq!(only(&t).result, Some(false));
        let missing = format!(
            "p:\n  pkg.installed:\n    - sources:\n      - {name}: {}/none.deb\n",
            dir.path().display()
        );
        let t = apply(&missing, false).await;
        assert_eq!(only(&t).result, Some(false));
        assert!(
            only(&t).comment.contains("not found"),
            "{}",
            only(&t).comment
        );
    }

    /// A flat apt repository in a temp dir, listed in
    /// /etc/apt/sources.list.d while the guard lives; its index files in
    /// /var/lib/apt/lists go with it.
    struct LocalRepo {
        dir: tempfile::TempDir,
        list: std::path::PathBuf,
    }

    impl LocalRepo {
        fn new(name: &str, versions: &[&str]) -> Self {
            use sha2::Digest;
            let dir = tempfile::Builder::new()
                .prefix("brine-test-repo")
                .tempdir_in("/var/tmp")
                .expect("repo dir");
            let mut index = String::new();
            for v in versions {
                let deb = build(dir.path(), name, v);
                let data = std::fs::read(&deb).expect("read deb");
                index.push_str(&format!(
                    "Package: {name}\nVersion: {v}\nArchitecture: all\n\
                     Maintainer: Brine tests <brine@example.invalid>\nSection: misc\n\
                     Priority: optional\nFilename: ./{}\nSize: {}\nSHA256: {}\n\
                     Description: Brine test package\n\n",
                    deb.file_name().expect("file name").to_string_lossy(),
                    data.len(),
                    hex::encode(sha2::Sha256::digest(&data)),
                ));
            }
            std::fs::write(dir.path().join("Packages"), index).expect("Packages");
            let list = std::path::PathBuf::from(format!("/etc/apt/sources.list.d/{name}.list"));
            let repo = LocalRepo { dir, list };
            std::fs::write(
                &repo.list,
                format!("deb [trusted=yes] file:{} ./\n", repo.dir.path().display()),
            )
            .expect("write sources list");
            let o = std::process::Command::new("apt-get")
                .args(["-q", "update", "-o"])
                .arg(format!("Dir::Etc::SourceList={}", repo.list.display()))
                .args([
                    "-o",
                    "Dir::Etc::SourceParts=/nonexistent",
                    "-o",
                    "APT::Get::List-Cleanup=0",
                ])
                .output()
                .expect("apt-get update");
            assert!(o.status.success(), "apt-get update: {o:?}");
            repo
        }
    }

    impl Drop for LocalRepo {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.list);
            if let Ok(rd) = std::fs::read_dir("/var/lib/apt/lists") {
                for e in rd.flatten() {
                    if e.file_name().to_string_lossy().contains("brine-test-repo") {
                        let _ = std::fs::remove_file(e.path());
                    }
                }
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn installed_and_latest_through_apt_from_a_local_repository() {
        let _lock = DPKG_LOCK.lock().await;
        let name = unique("a");
        let _guard = PurgeGuard(name.clone());
        let _repo = LocalRepo::new(&name, &["1.0", "2.0"]);

        let o = crate::exec::testutil::run(
            "pkg.latest_version",
            vec![json!(name)],
            json!({"refresh": false}),
        )
        .await;
        assert_eq!(o.ret, json!("2.0"), "{o:?}");

        let pinned = format!("{name}:\n  pkg.installed:\n    - version: '1.0'\n");
        let t = apply(&pinned, true).await;
        assert_eq!(only(&t).result, None, "{:?}", only(&t));
        assert!(!dpkg_installed(&name));
        let t = apply(&pinned, false).await;
        let r = only(&t);
        assert_eq!(r.result, Some(true), "{r:?}");
        assert_eq!(
            r.changes,
            json!({ name.clone(): {"old": "", "new": "1.0"} })
        );
        let t = apply(&pinned, false).await;
        assert_eq!(
            only(&t).comment,
            format!("Version 1.0 of package '{name}' is already installed")
        );

        let o = crate::exec::testutil::run(
            "pkg.upgrade_available",
            vec![json!(name)],
            json!({"refresh": false}),
        )
        .await;
        assert_eq!(o.ret, json!(true));

        let latest = format!("{name}:\n  pkg.latest: []\n");
        let t = apply(&latest, true).await;
        let r = only(&t);
        assert_eq!(r.result, None, "{r:?}");
        assert_eq!(
            r.comment,
            format!("The following packages would be installed/upgraded: {name}")
        );
        let t = apply(&latest, false).await;
        let r = only(&t);
        assert_eq!(r.result, Some(true), "{r:?}");
        assert_eq!(
            r.changes,
            json!({ name.clone(): {"old": "1.0", "new": "2.0"} })
        );
        let t = apply(&latest, false).await;
        assert_eq!(
            only(&t).comment,
            format!("Package {name} is already up-to-date")
        );

        let many = format!("p:\n  pkg.removed:\n    - pkgs:\n      - {name}\n");
        let t = apply(&many, false).await;
        assert_eq!(
            only(&t).changes,
            json!({ name.clone(): {"old": "2.0", "new": ""} })
        );
        let o = crate::exec::testutil::run(
            "pkg.install",
            vec![],
            json!({"pkgs": [{ name.clone(): "1.0" }]}),
        )
        .await;
        assert_eq!(
            o.ret,
            json!({ name.clone(): {"old": "", "new": "1.0"} }),
            "{o:?}"
        );
    }
}
