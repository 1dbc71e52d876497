//! What the beacons read from the system each run: load averages, memory
//! and disk use, the names of running processes and file snapshots, all
//! from `/proc`, `statvfs` and `lstat`. Read-only; a reading that fails is
//! an error for that beacon's run only (logged, nothing fired).

use super::checks::{FileWatch, Snapshot, Stat};
use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;

/// Most paths one `inotify` watch snapshots; beyond this the walk stops
/// (and says so once per run) so a huge tree cannot stall the loop.
pub const MAX_WATCHED_PATHS: usize = 10_000;

/// The 1, 5 and 15 minute load averages of `/proc/loadavg`.
pub fn loadavg() -> Result<[f64; 3], String> {
    let text = std::fs::read_to_string("/proc/loadavg")
        .map_err(|e| format!("cannot read /proc/loadavg: {e}"))?;
    parse_loadavg(&text)
}

pub fn parse_loadavg(text: &str) -> Result<[f64; 3], String> {
    let v: Vec<f64> = text
        .split_whitespace()
        .take(3)
        .filter_map(|s| s.parse().ok())
        .collect();
    match v.as_slice() {
        [a, b, c] => Ok([*a, *b, *c]),
        _ => Err(format!("bad /proc/loadavg: {text:?}")),
    }
}

/// Percent of memory in use as psutil counts it: `(total - available) /
/// total`.
pub fn mem_percent() -> Result<f64, String> {
    let text = std::fs::read_to_string("/proc/meminfo")
        .map_err(|e| format!("cannot read /proc/meminfo: {e}"))?;
    parse_mem_percent(&text)
}

pub fn parse_mem_percent(text: &str) -> Result<f64, String> {
    let field = |name: &str| {
        text.lines().find_map(|l| {
            let rest = l.strip_prefix(name)?.strip_prefix(':')?;
            rest.split_whitespace().next()?.parse::<f64>().ok()
        })
    };
    let total = field("MemTotal").ok_or("no MemTotal in /proc/meminfo")?;
    let avail = field("MemAvailable")
        .or_else(|| Some(field("MemFree")? + field("Buffers")? + field("Cached")?))
        .ok_or("no MemAvailable in /proc/meminfo")?;
    if total <= 0.0 {
        return Err("MemTotal is 0".into());
    }
    Ok((total - avail) / total * 100.0)
}

/// `(mount point, percent used)` of every mounted filesystem with blocks,
/// percent as psutil's `disk_usage`: used / (used + available to users).
pub fn disk_usage() -> Result<Vec<(String, f64)>, String> {
    let mut out = Vec::new();
    for m in crate::exec::disk::mounts()? {
        let Ok(fs) = crate::exec::disk::statvfs_of(&m.mountpoint) else {
            continue;
        };
        let used = fs.blocks.saturating_sub(fs.bfree);
        let total = used + fs.bavail;
        if fs.blocks == 0 || total == 0 {
            continue;
        }
        out.push((m.mountpoint, used as f64 * 100.0 / total as f64));
    }
    Ok(out)
}

/// The names of the running processes: each one's `comm` and the base
/// name of its `argv[0]` (so names longer than `comm`'s 15 bytes match).
pub fn process_names() -> Result<BTreeSet<String>, String> {
    let mut names = BTreeSet::new();
    let dir = std::fs::read_dir("/proc").map_err(|e| format!("cannot read /proc: {e}"))?;
    for ent in dir.flatten() {
        let name = ent.file_name();
        if !name.to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let p = ent.path();
        if let Ok(comm) = std::fs::read_to_string(p.join("comm")) {
            names.insert(comm.trim_end().to_string());
        }
        if let Ok(cmd) = std::fs::read(p.join("cmdline")) {
            if let Some(argv0) = cmd.split(|b| *b == 0).next().filter(|a| !a.is_empty()) {
                let argv0 = String::from_utf8_lossy(argv0);
                let base = argv0.rsplit('/').next().unwrap_or(&argv0);
                // Daemons that rename themselves ("nginx: master process").
                let base = base.split(':').next().unwrap_or(base).trim();
                names.insert(base.to_string());
            }
        }
    }
    Ok(names)
}

fn stat_of(md: &std::fs::Metadata) -> Stat {
    Stat {
        mtime_ns: i128::from(md.mtime()) * 1_000_000_000 + i128::from(md.mtime_nsec()),
        size: md.len(),
        mode: md.mode(),
        uid: md.uid(),
        gid: md.gid(),
        ino: md.ino(),
        is_dir: md.is_dir(),
    }
}

/// The watched path and, for a directory, its entries (all the tree below
/// with `recurse`), at most [`MAX_WATCHED_PATHS`]; symlinks are not
/// followed. A missing path gives an empty snapshot. The `bool` says the
/// walk stopped at the cap.
pub fn snapshot(w: &FileWatch) -> (Snapshot, bool) {
    let mut snap = Snapshot::new();
    let Ok(md) = std::fs::symlink_metadata(&w.path) else {
        return (snap, false);
    };
    snap.insert(w.path.clone(), stat_of(&md));
    if !md.is_dir() {
        return (snap, false);
    }
    let mut todo = vec![std::path::PathBuf::from(&w.path)];
    while let Some(dir) = todo.pop() {
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        for ent in rd.flatten() {
            if snap.len() >= MAX_WATCHED_PATHS {
                return (snap, true);
            }
            let Ok(md) = ent.metadata() else { continue };
            let p = ent.path();
            if md.is_dir() && w.recurse {
                todo.push(p.clone());
            }
            snap.insert(p.to_string_lossy().into_owned(), stat_of(&md));
        }
    }
    (snap, false)
}

/// `status.<fun>` for the `status` beacon: the functions that need no
/// arguments and read only `/proc` and `statvfs`.
pub fn status_fun(fun: &str) -> Option<serde_json::Value> {
    use crate::exec::status;
    let read = |p: &str| std::fs::read_to_string(p).ok();
    match fun {
        "loadavg" => status::loadavg_value(&read("/proc/loadavg")?).ok(),
        "meminfo" => Some(status::meminfo_value(&read("/proc/meminfo")?)),
        "cpuinfo" => Some(status::cpuinfo_value(&read("/proc/cpuinfo")?)),
        "diskusage" => status::diskusage(&[]).ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_texts() {
        assert_eq!(
            parse_loadavg("0.50 0.20 0.10 1/100 42\n").expect("ok"),
            [0.5, 0.2, 0.1]
        );
        assert!(parse_loadavg("x").is_err());
        let mem = "MemTotal:       1000 kB\nMemFree: 100 kB\nMemAvailable:    250 kB\n";
        assert_eq!(parse_mem_percent(mem).expect("ok"), 75.0);
        assert!(parse_mem_percent("MemFree: 1 kB\n").is_err());
    }

    #[test]
    fn real_readings() {
        assert!(loadavg().is_ok());
        let m = mem_percent().expect("meminfo");
        assert!((0.0..=100.0).contains(&m));
        assert!(disk_usage().expect("mounts").iter().any(|(m, _)| m == "/"));
        let names = process_names().expect("proc");
        let me = std::fs::read_to_string("/proc/self/comm").expect("comm");
        assert!(names.contains(me.trim_end()), "{me}");
        assert!(status_fun("loadavg").is_some());
        assert!(status_fun("nosuch").is_none());
    }

    #[test]
    fn snapshot_walks_and_caps() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("sub")).expect("mkdir");
        std::fs::write(dir.path().join("sub/f"), "x").expect("write");
        std::fs::write(dir.path().join("g"), "x").expect("write");
        let root = dir.path().to_string_lossy().into_owned();
        let mut w = FileWatch {
            path: root.clone(),
            mask: Default::default(),
            recurse: false,
            exclude: vec![],
        };
        let (s, capped) = snapshot(&w);
        assert!(!capped);
        assert_eq!(s.len(), 3, "{s:?}");
        w.recurse = true;
        assert_eq!(snapshot(&w).0.len(), 4);
        w.path = format!("{root}/missing");
        assert!(snapshot(&w).0.is_empty());
    }
}
