//! The `service` module: start, stop, enable and query services, as
//! Salt's `systemd_service` and `debian_service`.
//!
//! The init system is looked at on every call: systemd when
//! `/run/systemd/system` exists (`systemctl`), otherwise SysV init
//! (`service name action`, `update-rc.d`, and the `/etc/rc?.d` links for
//! the enabled state). The invariant: actions return Salt's booleans (the
//! command's exit status), never a panic; a service name is checked
//! before any command sees it. The sync functions here are shared with
//! the `service` state module.

use super::pkg::{blocking, run_cmd, CmdOut};
use super::{opt, req, Call, CallFuture, ExecError, Function, Outcome};
use brine_common::glob::fnmatch;
use serde_json::{Map, Value};
use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

/// Time limit of one init-system command.
const SERVICE_TIMEOUT: Duration = Duration::from_secs(300);

/// The init system of this host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Init {
    Systemd,
    SysV,
}

/// systemd when it is running (`/run/systemd/system`), else SysV.
pub(crate) fn init() -> Init {
    if Path::new("/run/systemd/system").is_dir() {
        Init::Systemd
    } else {
        Init::SysV
    }
}

/// A service name is a plain word: no path, option or shell text.
pub(crate) fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && !name.starts_with(['-', '.'])
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+-.:_@\\".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!("invalid service name {name:?}"))
    }
}

fn run(argv: &[&str]) -> Result<CmdOut, String> {
    run_cmd(argv, &[], SERVICE_TIMEOUT)
}

/// `start`, `stop`, `restart`, `reload`, `force-reload`: whether the
/// command succeeded.
pub(crate) fn action(name: &str, verb: &str) -> Result<bool, String> {
    check_name(name)?;
    let o = match init() {
        Init::Systemd => run(&["systemctl", verb, name])?,
        Init::SysV => run(&["service", name, verb])?,
    };
    if o.retcode != 0 {
        tracing::info!(service = name, verb, output = %o.said(), "service action failed");
    }
    Ok(o.retcode == 0)
}

/// Is it running? With `sig`, whether a process matches it (`pgrep -f`).
pub(crate) fn status(name: &str, sig: Option<&str>) -> Result<bool, String> {
    if let Some(sig) = sig.filter(|s| !s.is_empty()) {
        return Ok(run(&["pgrep", "-f", "--", sig])?.retcode == 0);
    }
    check_name(name)?;
    let o = match init() {
        Init::Systemd => run(&["systemctl", "is-active", "--quiet", name])?,
        Init::SysV => run(&["service", name, "status"])?,
    };
    Ok(o.retcode == 0)
}

/// Enable at boot.
pub(crate) fn enable(name: &str) -> Result<bool, String> {
    check_name(name)?;
    match init() {
        Init::Systemd => Ok(run(&["systemctl", "enable", name])?.retcode == 0),
        Init::SysV => {
            let d = run(&["update-rc.d", name, "defaults"])?;
            if d.retcode != 0 {
                tracing::info!(service = name, output = %d.said(), "update-rc.d defaults failed");
                return Ok(false);
            }
            Ok(run(&["update-rc.d", name, "enable"])?.retcode == 0)
        }
    }
}

/// Disable at boot.
pub(crate) fn disable(name: &str) -> Result<bool, String> {
    check_name(name)?;
    match init() {
        Init::Systemd => Ok(run(&["systemctl", "disable", name])?.retcode == 0),
        Init::SysV => Ok(run(&["update-rc.d", name, "disable"])?.retcode == 0),
    }
}

/// The SysV runlevel (`runlevel`; Debian's default 2 when unknown, as
/// without a running init).
fn runlevel() -> String {
    run(&["runlevel"])
        .ok()
        .and_then(|o| {
            o.stdout
                .split_whitespace()
                .nth(1)
                .filter(|l| l.len() == 1)
                .map(str::to_string)
        })
        .unwrap_or_else(|| "2".into())
}

/// Services with an `S` link in `/etc/rcS.d` or the runlevel's directory.
fn sysv_enabled_in(etc: &Path, level: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for dir in ["rcS.d".to_string(), format!("rc{level}.d")] {
        let Ok(rd) = std::fs::read_dir(etc.join(dir)) else {
            continue;
        };
        for e in rd.flatten() {
            let f = e.file_name().to_string_lossy().into_owned();
            if let Some(rest) = f.strip_prefix('S') {
                let name = rest.trim_start_matches(|c: char| c.is_ascii_digit());
                if name.len() < rest.len() && !name.is_empty() {
                    out.insert(name.to_string());
                }
            }
        }
    }
    out
}

/// Scripts in `/etc/init.d` (README, skeleton and dotfiles aside).
fn sysv_scripts(etc: &Path) -> BTreeSet<String> {
    let Ok(rd) = std::fs::read_dir(etc.join("init.d")) else {
        return BTreeSet::new();
    };
    rd.flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|f| !f.starts_with('.') && f != "README" && f != "skeleton")
        .collect()
}

/// `systemctl list-unit-files --type=service`: (name without
/// `.service`, state).
fn unit_files() -> Result<Vec<(String, String)>, String> {
    let o = run(&[
        "systemctl",
        "list-unit-files",
        "--type=service",
        "--no-legend",
        "--no-pager",
    ])?;
    if o.retcode != 0 {
        return Err(format!("systemctl list-unit-files failed: {}", o.said()));
    }
    Ok(o.stdout
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let unit = f.next()?;
            let state = f.next().unwrap_or_default();
            let name = unit.strip_suffix(".service")?;
            (!name.ends_with('@')).then(|| (name.to_string(), state.to_string()))
        })
        .collect())
}

/// Every service name this host knows.
pub(crate) fn get_all() -> Result<Vec<String>, String> {
    let etc = Path::new("/etc");
    let mut all = sysv_scripts(etc);
    match init() {
        Init::Systemd => all.extend(unit_files()?.into_iter().map(|(n, _)| n)),
        Init::SysV => all.extend(sysv_enabled_in(etc, &runlevel())),
    }
    Ok(all.into_iter().collect())
}

/// Services enabled at boot.
pub(crate) fn get_enabled() -> Result<Vec<String>, String> {
    Ok(match init() {
        Init::Systemd => unit_files()?
            .into_iter()
            .filter(|(_, s)| s == "enabled")
            .map(|(n, _)| n)
            .collect(),
        Init::SysV => sysv_enabled_in(Path::new("/etc"), &runlevel())
            .into_iter()
            .collect(),
    })
}

/// Services not enabled at boot.
pub(crate) fn get_disabled() -> Result<Vec<String>, String> {
    let enabled: BTreeSet<String> = get_enabled()?.into_iter().collect();
    Ok(get_all()?
        .into_iter()
        .filter(|n| !enabled.contains(n))
        .collect())
}

/// Enabled at boot?
pub(crate) fn enabled(name: &str) -> Result<bool, String> {
    check_name(name)?;
    match init() {
        Init::Systemd => {
            let o = run(&["systemctl", "is-enabled", name])?;
            Ok(o.retcode == 0 && matches!(o.stdout.trim(), "enabled" | "enabled-runtime"))
        }
        Init::SysV => Ok(sysv_enabled_in(Path::new("/etc"), &runlevel()).contains(name)),
    }
}

/// Known to the init system?
pub(crate) fn available(name: &str) -> Result<bool, String> {
    check_name(name)?;
    Ok(get_all()?.iter().any(|n| n == name))
}

// ---- execution functions ------------------------------------------------

macro_rules! doc {
    ($text:expr, $fun:expr) => {
        concat!(
            $text,
            "\n\nCLI Example:\n\n    salt '*' service.",
            $fun,
            " <service name>\n"
        )
    };
}

pub(super) const FUNCTIONS: &[Function] = &[
    Function {
        name: "service.start",
        params: &[req("name")],
        varargs: false,
        kwargs: true,
        doc: doc!(
            "Start the specified service; True when the init system says it started.",
            "start"
        ),
        handler: exec_start,
    },
    Function {
        name: "service.stop",
        params: &[req("name")],
        varargs: false,
        kwargs: true,
        doc: doc!(
            "Stop the specified service; True when the init system says it stopped.",
            "stop"
        ),
        handler: exec_stop,
    },
    Function {
        name: "service.restart",
        params: &[req("name")],
        varargs: false,
        kwargs: true,
        doc: doc!("Restart the named service.", "restart"),
        handler: exec_restart,
    },
    Function {
        name: "service.reload",
        params: &[req("name")],
        varargs: false,
        kwargs: true,
        doc: doc!("Reload the named service.", "reload"),
        handler: exec_reload,
    },
    Function {
        name: "service.force_reload",
        params: &[req("name")],
        varargs: false,
        kwargs: true,
        doc: doc!("Force-reload the named service.", "force_reload"),
        handler: exec_force_reload,
    },
    Function {
        name: "service.status",
        params: &[req("name"), opt("sig")],
        varargs: false,
        kwargs: true,
        doc: "Return the status for a service: True if running. With ``sig``, whether a\n\
              process matches it (``pgrep -f``). A name with glob characters returns a\n\
              dict of every matching service and its status.\n\n\
              CLI Example:\n\n    salt '*' service.status <service name> [service signature]\n",
        handler: exec_status,
    },
    Function {
        name: "service.enable",
        params: &[req("name")],
        varargs: false,
        kwargs: true,
        doc: doc!(
            "Enable the named service to start at boot (``update-rc.d`` or ``systemctl``).",
            "enable"
        ),
        handler: exec_enable,
    },
    Function {
        name: "service.disable",
        params: &[req("name")],
        varargs: false,
        kwargs: true,
        doc: doc!(
            "Disable the named service from starting on boot.",
            "disable"
        ),
        handler: exec_disable,
    },
    Function {
        name: "service.enabled",
        params: &[req("name")],
        varargs: false,
        kwargs: true,
        doc: doc!(
            "Return True if the named service is enabled to start at boot, False otherwise.",
            "enabled"
        ),
        handler: exec_enabled,
    },
    Function {
        name: "service.disabled",
        params: &[req("name")],
        varargs: false,
        kwargs: true,
        doc: doc!(
            "Return True if the named service is disabled at boot, False otherwise.",
            "disabled"
        ),
        handler: exec_disabled,
    },
    Function {
        name: "service.available",
        params: &[req("name")],
        varargs: false,
        kwargs: true,
        doc: doc!(
            "Return True if the named service is available.",
            "available"
        ),
        handler: exec_available,
    },
    Function {
        name: "service.missing",
        params: &[req("name")],
        varargs: false,
        kwargs: true,
        doc: doc!(
            "The inverse of service.available: True if the named service is not available.",
            "missing"
        ),
        handler: exec_missing,
    },
    Function {
        name: "service.get_all",
        params: &[],
        varargs: false,
        kwargs: true,
        doc: "Return a list of all available services.\n\n\
              CLI Example:\n\n    salt '*' service.get_all\n",
        handler: exec_get_all,
    },
    Function {
        name: "service.get_enabled",
        params: &[],
        varargs: false,
        kwargs: true,
        doc: "Return a list of services that are enabled on boot.\n\n\
              CLI Example:\n\n    salt '*' service.get_enabled\n",
        handler: exec_get_enabled,
    },
    Function {
        name: "service.get_disabled",
        params: &[],
        varargs: false,
        kwargs: true,
        doc: "Return a list of services that are not enabled on boot.\n\n\
              CLI Example:\n\n    salt '*' service.get_disabled\n",
        handler: exec_get_disabled,
    },
];

/// Run `f(name)` on the blocking pool and return its boolean.
fn by_name<'a>(c: &'a Call<'a>, f: fn(&str) -> Result<bool, String>) -> CallFuture<'a> {
    Box::pin(async move {
        let name = c
            .str_arg("name")?
            .ok_or_else(|| ExecError::InvalidArgs("name is required".into()))?;
        check_name(&name).map_err(ExecError::InvalidArgs)?;
        let b = blocking(move || f(&name)).await?;
        Ok(Outcome::ok(Value::Bool(b)))
    })
}

fn exec_start<'a>(c: &'a Call<'a>) -> CallFuture<'a> {
    by_name(c, |n| action(n, "start"))
}
fn exec_stop<'a>(c: &'a Call<'a>) -> CallFuture<'a> {
    by_name(c, |n| action(n, "stop"))
}
fn exec_restart<'a>(c: &'a Call<'a>) -> CallFuture<'a> {
    by_name(c, |n| action(n, "restart"))
}
fn exec_reload<'a>(c: &'a Call<'a>) -> CallFuture<'a> {
    by_name(c, |n| action(n, "reload"))
}
fn exec_force_reload<'a>(c: &'a Call<'a>) -> CallFuture<'a> {
    by_name(c, |n| action(n, "force-reload"))
}
fn exec_enable<'a>(c: &'a Call<'a>) -> CallFuture<'a> {
    by_name(c, enable)
}
fn exec_disable<'a>(c: &'a Call<'a>) -> CallFuture<'a> {
    by_name(c, disable)
}
fn exec_enabled<'a>(c: &'a Call<'a>) -> CallFuture<'a> {
    by_name(c, enabled)
}
fn exec_disabled<'a>(c: &'a Call<'a>) -> CallFuture<'a> {
    by_name(c, |n| enabled(n).map(|e| !e))
}
fn exec_available<'a>(c: &'a Call<'a>) -> CallFuture<'a> {
    by_name(c, available)
}
fn exec_missing<'a>(c: &'a Call<'a>) -> CallFuture<'a> {
    by_name(c, |n| available(n).map(|a| !a))
}

fn exec_status<'a>(c: &'a Call<'a>) -> CallFuture<'a> {
    Box::pin(async move {
        let name = c
            .str_arg("name")?
            .ok_or_else(|| ExecError::InvalidArgs("name is required".into()))?;
        let sig = c.str_arg("sig")?;
        if name.contains(['*', '?', '[']) {
            let m = blocking(move || {
                let mut m = Map::new();
                for svc in get_all()?.into_iter().filter(|s| fnmatch(&name, s)) {
                    let up = status(&svc, sig.as_deref())?;
                    m.insert(svc, Value::Bool(up));
                }
                Ok(m)
            })
            .await?;
            return Ok(Outcome::ok(Value::Object(m)));
        }
        check_name(&name).map_err(ExecError::InvalidArgs)?;
        let b = blocking(move || status(&name, sig.as_deref())).await?;
        Ok(Outcome::ok(Value::Bool(b)))
    })
}

fn list_outcome<'a>(c: &'a Call<'a>, f: fn() -> Result<Vec<String>, String>) -> CallFuture<'a> {
    let _ = c;
    Box::pin(async move {
        let v = blocking(f).await?;
        Ok(Outcome::ok(Value::Array(
            v.into_iter().map(Value::String).collect(),
        )))
    })
}

fn exec_get_all<'a>(c: &'a Call<'a>) -> CallFuture<'a> {
    list_outcome(c, get_all)
}
fn exec_get_enabled<'a>(c: &'a Call<'a>) -> CallFuture<'a> {
    list_outcome(c, get_enabled)
}
fn exec_get_disabled<'a>(c: &'a Call<'a>) -> CallFuture<'a> {
    list_outcome(c, get_disabled)
}

#[cfg(test)]
pub(crate) mod testsvc {
    //! A throw-away SysV service `brine-test-<unique>`: an LSB init script
    //! running a `sleep` loop with a pidfile under /run; the guard stops
    //! it and removes the script, its rc links and the pidfile.
    use std::path::PathBuf;
    use std::process::Command;

    /// Tests that touch init scripts and rc links take this.
    pub static SVC_LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

    pub struct TestService {
        pub name: String,
        pub script: PathBuf,
        pub pidfile: PathBuf,
    }

    impl TestService {
        pub fn install(tag: &str) -> Self {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or_default();
            let name = format!("brine-test-{tag}{:x}{:x}", std::process::id(), nanos);
            let script = PathBuf::from("/etc/init.d").join(&name);
            let pidfile = PathBuf::from("/run").join(format!("{name}.pid"));
            let text = format!(
                r#"#!/bin/sh
### BEGIN INIT INFO
# Provides:          {name}
# Required-Start:
# Required-Stop:
# Default-Start:     2 3 4 5
# Default-Stop:      0 1 6
# Short-Description: Brine test daemon
### END INIT INFO
PIDFILE={pid}
running() {{ [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; }}
case "$1" in
  start)
    running && exit 0
    sh -c 'while :; do sleep 1; done' {name}-daemon </dev/null >/dev/null 2>&1 &
    echo $! > "$PIDFILE"
    ;;
  stop)
    if running; then kill "$(cat "$PIDFILE")"; fi
    rm -f "$PIDFILE"
    ;;
  restart|force-reload)
    "$0" stop; "$0" start
    ;;
  reload)
    running || exit 7
    touch "$PIDFILE.reloaded"
    ;;
  status)
    running && {{ echo "{name} is running"; exit 0; }}
    echo "{name} is not running"; exit 3
    ;;
  *)
    echo "Usage: $0 {{start|stop|restart|status}}" >&2; exit 2
    ;;
esac
exit 0
"#,
                pid = pidfile.display()
            );
            let svc = TestService {
                name,
                script,
                pidfile,
            };
            std::fs::write(&svc.script, text).expect("write init script");
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&svc.script, std::fs::Permissions::from_mode(0o755))
                .expect("chmod init script");
            svc
        }

        /// The daemon's pid, from the pidfile.
        pub fn pid(&self) -> Option<i32> {
            std::fs::read_to_string(&self.pidfile)
                .ok()
                .and_then(|s| s.trim().parse().ok())
        }

        /// The file the script's `reload` touches.
        pub fn reloaded(&self) -> PathBuf {
            let mut p = self.pidfile.clone().into_os_string();
            p.push(".reloaded");
            PathBuf::from(p)
        }

        /// rc links pointing at the script.
        pub fn links(&self) -> Vec<PathBuf> {
            let mut out = Vec::new();
            for d in ["0", "1", "2", "3", "4", "5", "6", "S"] {
                let Ok(rd) = std::fs::read_dir(format!("/etc/rc{d}.d")) else {
                    continue;
                };
                for e in rd.flatten() {
                    let f = e.file_name().to_string_lossy().into_owned();
                    if f.len() > 3 && f[3..] == self.name {
                        out.push(e.path());
                    }
                }
            }
            out
        }
    }

    impl Drop for TestService {
        fn drop(&mut self) {
            if let Some(pid) = self.pid().filter(|p| *p > 1) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGTERM,
                );
            }
            let _ = Command::new("update-rc.d")
                .args(["-f", &self.name, "remove"])
                .output();
            for l in self.links() {
                let _ = std::fs::remove_file(l);
            }
            let _ = std::fs::remove_file(&self.script);
            let _ = std::fs::remove_file(&self.pidfile);
            let _ = std::fs::remove_file(self.reloaded());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testsvc::{TestService, SVC_LOCK};
    use super::*;
    use crate::exec::testutil::run;
    use serde_json::json;

    #[test]
    fn names_and_rc_links() {
        assert!(check_name("ssh").is_ok());
        assert!(check_name("getty@tty1").is_ok());
        assert!(check_name("-x").is_err());
        assert!(check_name("../x").is_err());
        assert!(check_name("a b").is_err());
        let etc = tempfile::tempdir().expect("tempdir");
        for d in ["rc2.d", "rcS.d", "rc3.d", "init.d"] {
            std::fs::create_dir(etc.path().join(d)).expect("mkdir");
        }
        for f in [
            "rc2.d/S01ssh",
            "rc2.d/K01cron",
            "rcS.d/S01procps",
            "rc3.d/S01only3",
        ] {
            std::fs::write(etc.path().join(f), "").expect("link");
        }
        for f in [
            "init.d/ssh",
            "init.d/cron",
            "init.d/README",
            "init.d/skeleton",
        ] {
            std::fs::write(etc.path().join(f), "").expect("script");
        }
        let en: Vec<String> = sysv_enabled_in(etc.path(), "2").into_iter().collect();
        assert_eq!(en, ["procps", "ssh"]);
        let all: Vec<String> = sysv_scripts(etc.path()).into_iter().collect();
        assert_eq!(all, ["cron", "ssh"]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn exec_functions_on_a_real_init_script() {
        if init() != Init::SysV {
            eprintln!("systemd host: the SysV test does not apply");
            return;
        }
        let _lock = SVC_LOCK.lock().await;
        let svc = TestService::install("e");
        let n = json!(svc.name);
        assert_eq!(
            run("service.available", vec![n.clone()], json!({}))
                .await
                .ret,
            json!(true)
        );
        assert_eq!(
            run("service.missing", vec![n.clone()], json!({})).await.ret,
            json!(false)
        );
        assert_eq!(
            run("service.status", vec![n.clone()], json!({})).await.ret,
            json!(false)
        );
        assert_eq!(
            run("service.start", vec![n.clone()], json!({})).await.ret,
            json!(true)
        );
        assert_eq!(
            run("service.status", vec![n.clone()], json!({})).await.ret,
            json!(true)
        );
        let sig = format!("{}-daemon", svc.name);
        let o = run(
            "service.status",
            vec![json!("nothing"), json!(sig)],
            json!({}),
        )
        .await;
        assert_eq!(o.ret, json!(true));
        let first = svc.pid();
        assert_eq!(
            run("service.restart", vec![n.clone()], json!({})).await.ret,
            json!(true)
        );
        assert_ne!(svc.pid(), first);
        let o = run(
            "service.status",
            vec![json!(format!("{}*", svc.name))],
            json!({}),
        )
        .await;
        assert_eq!(o.ret, json!({ svc.name.clone(): true }));
        assert_eq!(
            run("service.enabled", vec![n.clone()], json!({})).await.ret,
            json!(false)
        );
        assert_eq!(
            run("service.enable", vec![n.clone()], json!({})).await.ret,
            json!(true)
        );
        assert_eq!(
            run("service.enabled", vec![n.clone()], json!({})).await.ret,
            json!(true)
        );
        let o = run("service.get_enabled", vec![], json!({})).await;
        assert!(o.ret.as_array().is_some_and(|a| a.contains(&n)), "{o:?}");
        assert_eq!(
            run("service.disable", vec![n.clone()], json!({})).await.ret,
            json!(true)
        );
        assert_eq!(
            run("service.disabled", vec![n.clone()], json!({}))
                .await
                .ret,
            json!(true)
        );
        let o = run("service.get_disabled", vec![], json!({})).await;
        assert!(o.ret.as_array().is_some_and(|a| a.contains(&n)), "{o:?}");
        assert_eq!(
            run("service.stop", vec![n.clone()], json!({})).await.ret,
            json!(true)
        );
        assert_eq!(
            run("service.status", vec![n.clone()], json!({})).await.ret,
            json!(false)
        );
        let o = run("service.start", vec![json!("-bad name")], json!({})).await;
        assert!(!o.success);
        let o = run(
            "service.available",
            vec![json!("brine-test-none-such")],
            json!({}),
        )
        .await;
        assert_eq!(o.ret, json!(false));
    }
}
