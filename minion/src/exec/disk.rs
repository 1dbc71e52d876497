//! The `disk` module: space and inode use per mounted filesystem in the
//! shape of Salt's `df`-based functions (`disk.usage`, `disk.inodeusage`).
//!
//! The mount list is `/proc/mounts` and the numbers are `statvfs`, not
//! `df`'s text; the rules follow `df -P`: 1K blocks, capacity rounded up,
//! filesystems without blocks (proc, sysfs...) left out unless `-a` is
//! asked, values as strings as Salt returns them. Read-only.

use super::user::{blocking, handler};
use super::{opt, Call, CallFuture, Function, Outcome};
use serde_json::{json, Map, Value};

/// One line of `/proc/mounts`.
#[derive(Debug, Clone, PartialEq)]
pub struct Mount {
    pub device: String,
    pub mountpoint: String,
    pub fstype: String,
}

/// `\040`-style octal escapes of `/proc/mounts` decoded.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let oct = b
            .get(i + 1..i + 4)
            .filter(|d| b[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match oct {
            Some(d) => {
                let v = d.iter().fold(0u32, |a, c| a * 8 + u32::from(c - b'0'));
                out.push(u8::try_from(v).unwrap_or(b'?'));
                i += 4;
            }
            None => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The mounts of a `/proc/mounts` text.
pub fn parse_mounts(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            Some(Mount {
                device: unescape(f.next()?),
                mountpoint: unescape(f.next()?),
                fstype: f.next()?.to_string(),
            })
        })
        .collect()
}

/// Every mounted filesystem.
pub fn mounts() -> Result<Vec<Mount>, String> {
    std::fs::read_to_string("/proc/mounts")
        .map(|t| parse_mounts(&t))
        .map_err(|e| format!("cannot read /proc/mounts: {e}"))
}

/// The `statvfs` numbers used here, in bytes per block `bsize` (the
/// fragment size, which is what the block counts are in).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fs {
    pub bsize: u64,
    pub blocks: u64,
    pub bfree: u64,
    pub bavail: u64,
    pub files: u64,
    pub ffree: u64,
}

/// `statvfs(path)`.
pub fn statvfs_of(path: &str) -> Result<Fs, String> {
    let s = nix::sys::statvfs::statvfs(path).map_err(|e| format!("statvfs {path}: {e}"))?;
    #[allow(clippy::useless_conversion)]
    Ok(Fs {
        bsize: u64::from(s.fragment_size()),
        blocks: u64::from(s.blocks()),
        bfree: u64::from(s.blocks_free()),
        bavail: u64::from(s.blocks_available()),
        files: u64::from(s.files()),
        ffree: u64::from(s.files_free()),
    })
}

/// `df`'s percentage: used / (used + available), rounded up; `-` when
/// there is nothing to divide.
pub fn percent(used: u64, avail: u64) -> String {
    let total = used + avail;
    if total == 0 {
        return "-".into();
    }
    format!("{}%", (used * 100).div_ceil(total))
}

/// One `disk.usage` entry.
pub fn usage_entry(m: &Mount, fs: &Fs) -> Value {
    let k = |blocks: u64| (u128::from(blocks) * u128::from(fs.bsize) / 1024).to_string();
    let used = fs.blocks.saturating_sub(fs.bfree);
    json!({
        "filesystem": m.device,
        "1K-blocks": k(fs.blocks),
        "used": k(used),
        "available": k(fs.bavail),
        "capacity": percent(used, fs.bavail),
        "mountpoint": m.mountpoint,
    })
}

/// One `disk.inodeusage` entry.
pub fn inode_entry(m: &Mount, fs: &Fs) -> Value {
    let used = fs.files.saturating_sub(fs.ffree);
    json!({
        "inodes": fs.files.to_string(),
        "used": used.to_string(),
        "free": fs.ffree.to_string(),
        "use": percent(used, fs.ffree),
        "filesystem": m.device,
    })
}

/// `{mountpoint: entry}` for every filesystem (`all`: also those without
/// blocks); one that cannot be queried is left out, as `df` does.
fn per_mount(all: bool, entry: fn(&Mount, &Fs) -> Value) -> Result<Value, String> {
    let mut out = Map::new();
    for m in mounts()? {
        let Ok(fs) = statvfs_of(&m.mountpoint) else {
            continue;
        };
        if fs.blocks == 0 && !all {
            continue;
        }
        out.insert(m.mountpoint.clone(), entry(&m, &fs));
    }
    Ok(Value::Object(out))
}

fn wants_all(c: &Call<'_>) -> bool {
    c.str_arg("args")
        .ok()
        .flatten()
        .is_some_and(|a| a.trim_start_matches('-').contains('a'))
}

handler!(usage_h, |c| {
    let all = wants_all(c);
    Ok(Outcome::ok(
        blocking(move || per_mount(all, usage_entry)).await?,
    ))
});

handler!(inodeusage_h, |c| {
    let all = wants_all(c);
    Ok(Outcome::ok(
        blocking(move || per_mount(all, inode_entry)).await?,
    ))
});

pub(super) const FUNCTIONS: &[Function] = &[
    Function {
        name: "disk.usage",
        params: &[opt("args")],
        varargs: false,
        kwargs: false,
        doc: "Return usage information for volumes mounted on this minion:\n\
              ``{mountpoint: {filesystem, 1K-blocks, used, available, capacity,\n\
              mountpoint}}``. ``args='-a'`` includes filesystems without blocks.\n\n\
              CLI Example:\n\n    salt '*' disk.usage\n",
        handler: usage_h,
    },
    Function {
        name: "disk.inodeusage",
        params: &[opt("args")],
        varargs: false,
        kwargs: false,
        doc: "Return inode usage information for volumes mounted on this minion:\n\
              ``{mountpoint: {inodes, used, free, use, filesystem}}``\n\n\
              CLI Example:\n\n    salt '*' disk.inodeusage\n",
        handler: inodeusage_h,
    },
];

#[cfg(test)]
mod tests {
    use super::super::testutil::run;
    use super::*;

    #[test]
    fn mounts_and_numbers() {
        let m = parse_mounts(
            "/dev/sda1 / ext4 rw 0 0\nproc /proc proc rw 0 0\n/dev/sdb /mnt/my\\040disk xfs rw 0 0\n",
        );
        assert_eq!(m.len(), 3);
        assert_eq!(m[2].mountpoint, "/mnt/my disk");
        let fs = Fs {
            bsize: 4096,
            blocks: 1000,
            bfree: 400,
            bavail: 300,
            files: 100,
            ffree: 75,
        };
        let u = usage_entry(&m[0], &fs);
        assert_eq!(
            u,
            json!({"filesystem": "/dev/sda1", "1K-blocks": "4000", "used": "2400",
                   "available": "1200", "capacity": "67%", "mountpoint": "/"})
        );
        let i = inode_entry(&m[0], &fs);
        assert_eq!(i["use"], "25%");
        assert_eq!(i["inodes"], "100");
        assert_eq!(percent(0, 0), "-");
    }

    #[tokio::test]
    async fn real_usage_has_root() {
        let o = run("disk.usage", vec![], json!({})).await;
        let root = &o.ret["/"];
        assert_eq!(root["mountpoint"], "/", "{}", o.ret);
        assert!(root["capacity"].as_str().is_some_and(|c| c.ends_with('%')));
        assert!(o.ret.get("/proc").is_none());
        let o = run("disk.inodeusage", vec![], json!({})).await;
        assert!(o.ret["/"]["inodes"].is_string(), "{}", o.ret);
    }
}
