//! The `status` module: this host's load, memory, CPU, disk space, uptime
//! and processes in Salt's shapes (`status.uptime`, `status.loadavg`,
//! `status.meminfo`, `status.cpuinfo`, `status.diskusage`, `status.procs`).
//!
//! Everything is read from `/proc` (and `statvfs`, `/var/run/utmp`); the
//! parsers are pure functions over the file text so they are tested on
//! fixed input as well as on this host. Read-only.

use super::disk::{mounts, statvfs_of};
use super::user::{blocking, handler};
use super::{Call, CallFuture, Function, Outcome};
use serde_json::{json, Map, Value};
use std::collections::BTreeSet;

fn read(path: &str) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("File {path} was not found. ({e})"))
}

/// Python's `datetime.utcfromtimestamp(t).isoformat()`.
pub fn iso_utc(t: f64) -> String {
    let secs = t.floor() as i64;
    let micros = ((t - t.floor()) * 1e6).round() as i64;
    let (secs, micros) = if micros >= 1_000_000 {
        (secs + 1, 0)
    } else {
        (secs, micros)
    };
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let base = format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    );
    if micros == 0 {
        base
    } else {
        format!("{base}.{micros:06}")
    }
}

/// Salt's uptime dict from the seconds since boot and the time now.
pub fn uptime_value(up: u64, now: f64, users: Option<usize>) -> Value {
    let since = now - up as f64;
    let mut m = Map::new();
    m.insert("seconds".into(), json!(up));
    m.insert("since_iso".into(), json!(iso_utc(since)));
    m.insert("since_t".into(), json!(since as i64));
    m.insert("days".into(), json!(up / 86_400));
    let s = up % 86_400;
    m.insert(
        "time".into(),
        json!(format!("{}:{}", s / 3600, s % 3600 / 60)),
    );
    if let Some(u) = users {
        m.insert("users".into(), json!(u));
    }
    Value::Object(m)
}

/// Logged-in users: `USER_PROCESS` records of a utmp file (glibc's
/// 384-byte records on Linux).
pub fn utmp_users(data: &[u8]) -> usize {
    const RECORD: usize = 384;
    const USER_PROCESS: i16 = 7;
    data.chunks_exact(RECORD)
        .filter(|r| i16::from_ne_bytes([r[0], r[1]]) == USER_PROCESS)
        .count()
}

fn uptime() -> Result<Value, String> {
    let text = read("/proc/uptime")?;
    let up = text
        .split_whitespace()
        .next()
        .and_then(|s| s.parse::<f64>().ok())
        .ok_or("/proc/uptime is not readable")?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|e| e.to_string())?
        .as_secs_f64();
    let users = std::fs::read("/var/run/utmp")
        .map(|d| utmp_users(&d))
        .unwrap_or(0);
    Ok(uptime_value(up as u64, now, Some(users)))
}

/// `{'1-min': .., '5-min': .., '15-min': ..}` of `/proc/loadavg`.
pub fn loadavg_value(text: &str) -> Result<Value, String> {
    let v: Vec<f64> = text
        .split_whitespace()
        .take(3)
        .map(|s| {
            s.parse::<f64>()
                .map_err(|e| format!("bad /proc/loadavg: {e}"))
        })
        .collect::<Result<_, _>>()?;
    match v.as_slice() {
        [a, b, c] => Ok(json!({"1-min": a, "5-min": b, "15-min": c})),
        _ => Err("bad /proc/loadavg".into()),
    }
}

/// `{'MemTotal': {'value': '16314020', 'unit': 'kB'}, ...}`.
pub fn meminfo_value(text: &str) -> Value {
    let mut m = Map::new();
    for line in text.lines() {
        let mut f = line.split_whitespace();
        let (Some(k), Some(v)) = (f.next(), f.next()) else {
            continue;
        };
        let mut e = Map::new();
        e.insert("value".into(), json!(v));
        if let Some(u) = f.next() {
            e.insert("unit".into(), json!(u));
        }
        m.insert(k.trim_end_matches(':').to_string(), Value::Object(e));
    }
    Value::Object(m)
}

/// `/proc/cpuinfo` as one flat dict (the last processor's values win;
/// `flags` is a list), as Salt's `status.cpuinfo`.
pub fn cpuinfo_value(text: &str) -> Value {
    let mut m = Map::new();
    for line in text.lines() {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let k = k.trim();
        let v = if k == "flags" {
            json!(v.split_whitespace().collect::<Vec<_>>())
        } else {
            json!(v.trim())
        };
        m.insert(k.to_string(), v);
    }
    Value::Object(m)
}

/// Salt's `status.diskusage`: arguments starting with `/` are paths, the
/// others filesystem-type globs; none means every filesystem.
pub fn diskusage(args: &[String]) -> Result<Value, String> {
    let mut paths: BTreeSet<String> = BTreeSet::new();
    let mut types: Vec<&str> = Vec::new();
    if args.is_empty() {
        types.push("*");
    }
    for a in args {
        if a.starts_with('/') {
            paths.insert(a.clone());
        } else {
            types.push(a);
        }
    }
    let explicit = paths.clone();
    if !types.is_empty() {
        for m in mounts()? {
            if types
                .iter()
                .any(|t| brine_common::glob::fnmatch(t, &m.fstype))
            {
                paths.insert(m.mountpoint);
            }
        }
    }
    let mut out = Map::new();
    for p in paths {
        // A path asked for by name must answer; one found by type that
        // cannot be queried (a stale mount) is left out.
        let s = match statvfs_of(&p) {
            Ok(s) => s,
            Err(e) if explicit.contains(&p) => return Err(e),
            Err(_) => continue,
        };
        out.insert(
            p,
            json!({"available": s.bavail * s.bsize, "total": s.blocks * s.bsize}),
        );
    }
    Ok(Value::Object(out))
}

/// `{pid: {'user': .., 'cmd': ..}}` of every process in `/proc`.
fn procs() -> Result<Value, String> {
    let users = super::user::read_passwd()?;
    let mut out = Map::new();
    let dir = std::fs::read_dir("/proc").map_err(|e| format!("cannot read /proc: {e}"))?;
    for ent in dir.flatten() {
        let pid = ent.file_name().to_string_lossy().into_owned();
        if !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let base = ent.path();
        let Ok(status) = std::fs::read_to_string(base.join("status")) else {
            continue;
        };
        let uid = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|r| r.split_whitespace().next())
            .and_then(|u| u.parse::<u32>().ok());
        let user = uid
            .map(|u| {
                users
                    .iter()
                    .find(|p| p.uid == u)
                    .map(|p| p.name.clone())
                    .unwrap_or_else(|| u.to_string())
            })
            .unwrap_or_default();
        let cmdline = std::fs::read(base.join("cmdline")).unwrap_or_default();
        let mut cmd = cmdline
            .split(|b| *b == 0)
            .filter(|s| !s.is_empty())
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .collect::<Vec<_>>()
            .join(" ");
        if cmd.is_empty() {
            let name = status
                .lines()
                .find_map(|l| l.strip_prefix("Name:"))
                .unwrap_or_default()
                .trim();
            cmd = format!("[{name}]");
        }
        out.insert(pid, json!({"user": user, "cmd": cmd}));
    }
    Ok(Value::Object(out))
}

handler!(uptime_h, |_c| { Ok(Outcome::ok(blocking(uptime).await?)) });
handler!(loadavg_h, |_c| {
    Ok(Outcome::ok(
        blocking(|| loadavg_value(&read("/proc/loadavg")?)).await?,
    ))
});
handler!(meminfo_h, |_c| {
    Ok(Outcome::ok(
        blocking(|| Ok(meminfo_value(&read("/proc/meminfo")?))).await?,
    ))
});
handler!(cpuinfo_h, |_c| {
    Ok(Outcome::ok(
        blocking(|| Ok(cpuinfo_value(&read("/proc/cpuinfo")?))).await?,
    ))
});
handler!(diskusage_h, |c| {
    let args: Vec<String> = c.args.varargs.iter().map(super::grains::val_text).collect();
    Ok(Outcome::ok(blocking(move || diskusage(&args)).await?))
});
handler!(procs_h, |_c| { Ok(Outcome::ok(blocking(procs).await?)) });

pub(super) const FUNCTIONS: &[Function] = &[
    Function {
        name: "status.uptime",
        params: &[],
        varargs: false,
        kwargs: false,
        doc: "Return the uptime for this system: seconds, since_iso, since_t, days,\n\
              time (h:m) and users (logged-in sessions).\n\n\
              CLI Example:\n\n    salt '*' status.uptime\n",
        handler: uptime_h,
    },
    Function {
        name: "status.loadavg",
        params: &[],
        varargs: false,
        kwargs: false,
        doc: "Return the load averages for this minion\n\n\
              CLI Example:\n\n    salt '*' status.loadavg\n",
        handler: loadavg_h,
    },
    Function {
        name: "status.meminfo",
        params: &[],
        varargs: false,
        kwargs: false,
        doc: "Return the memory info for this minion\n\n\
              CLI Example:\n\n    salt '*' status.meminfo\n",
        handler: meminfo_h,
    },
    Function {
        name: "status.cpuinfo",
        params: &[],
        varargs: false,
        kwargs: false,
        doc: "Return the CPU info for this minion\n\n\
              CLI Example:\n\n    salt '*' status.cpuinfo\n",
        handler: cpuinfo_h,
    },
    Function {
        name: "status.diskusage",
        params: &[],
        varargs: true,
        kwargs: false,
        doc: "Return the disk usage for this minion\n\n\
              Usage::\n\n    salt '*' status.diskusage [paths and/or filesystem types]\n\n\
              CLI Example:\n\n    salt '*' status.diskusage         # usage for all filesystems\n    \
              salt '*' status.diskusage / /tmp  # usage for / and /tmp\n    \
              salt '*' status.diskusage ext?    # usage for ext[234] filesystems\n",
        handler: diskusage_h,
    },
    Function {
        name: "status.procs",
        params: &[],
        varargs: false,
        kwargs: false,
        doc: "Return the process data: ``{pid: {'user': ..., 'cmd': ...}}``\n\n\
              CLI Example:\n\n    salt '*' status.procs\n",
        handler: procs_h,
    },
];

#[cfg(test)]
mod tests {
    use super::super::testutil::run;
    use super::*;

    #[test]
    fn parsers() {
        assert_eq!(iso_utc(0.0), "1970-01-01T00:00:00");
        assert_eq!(iso_utc(1_700_000_000.5), "2023-11-14T22:13:20.500000");
        assert_eq!(iso_utc(951_782_400.0), "2000-02-29T00:00:00");
        let u = uptime_value(90_061, 1_000_000.0, Some(2));
        assert_eq!(u["days"], 1);
        assert_eq!(u["time"], "1:1");
        assert_eq!(u["since_t"], 1_000_000 - 90_061);
        assert_eq!(u["users"], 2);
        assert_eq!(
            loadavg_value("0.50 0.25 0.10 1/100 42\n"),
            Ok(json!({"1-min": 0.5, "5-min": 0.25, "15-min": 0.1}))
        );
        assert!(loadavg_value("x").is_err());
        let m = meminfo_value("MemTotal:       16314020 kB\nHugePages_Total:       0\n");
        assert_eq!(m["MemTotal"], json!({"value": "16314020", "unit": "kB"}));
        assert_eq!(m["HugePages_Total"], json!({"value": "0"}));
        let c = cpuinfo_value("processor\t: 0\nflags\t\t: fpu vme\n\nprocessor\t: 1\n");
        assert_eq!(c["processor"], "1");
        assert_eq!(c["flags"], json!(["fpu", "vme"]));
        let mut rec = vec![0u8; 384 * 3];
        rec[384..386].copy_from_slice(&7i16.to_ne_bytes());
        rec[768..770].copy_from_slice(&8i16.to_ne_bytes());
        assert_eq!(utmp_users(&rec), 1);
    }

    #[tokio::test]
    async fn real_status() {
        let o = run("status.uptime", vec![], json!({})).await;
        assert!(o.ret["seconds"].as_u64().is_some(), "{}", o.ret);
        assert!(o.ret["since_iso"].is_string());
        let o = run("status.loadavg", vec![], json!({})).await;
        assert!(o.ret["1-min"].is_number());
        let o = run("status.meminfo", vec![], json!({})).await;
        assert_eq!(o.ret["MemTotal"]["unit"], "kB");
        let o = run("status.cpuinfo", vec![], json!({})).await;
        assert!(o.ret.as_object().is_some_and(|m| !m.is_empty()));
        let o = run("status.diskusage", vec![json!("/")], json!({})).await;
        assert!(
            o.ret["/"]["total"].as_u64().is_some_and(|t| t > 0),
            "{}",
            o.ret
        );
        let o = run("status.diskusage", vec![], json!({})).await;
        assert!(o.ret.get("/").is_some(), "{}", o.ret);
        let o = run("status.procs", vec![], json!({})).await;
        let me = std::process::id().to_string();
        assert_eq!(o.ret[&me]["user"], "root");
    }
}
