//! Grains: facts about this host, collected the way Salt's core grains are.
//!
//! [`collect_with_file`] reads the real system (`/etc/os-release`, `uname`,
//! `/proc/meminfo`, `/proc/cpuinfo`, interface addresses, hostname, machine
//! id) and then deep-merges the minion config's static `grains:` on top, so a
//! value an operator set always wins over a detected one. Collection never
//! fails: a fact that cannot be read is left out (or empty), never invented.
//!
//! Grains set at run time (`grains.setval`) live in the grains file, Salt's
//! `/etc/salt/grains` (`<config dir>/grains`, a YAML mapping): it overlays
//! the detected grains and is overlaid by the config's `grains:` in turn.
//! The file is only rewritten whole (a temporary file renamed over it),
//! under one lock, so concurrent updates never lose each other's keys.

use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, RwLock};

/// Collect real grains, overlay the grains file (when there is one and it
/// reads; a broken one is logged and skipped), then `static_grains`.
pub fn collect_with_file(id: &str, static_grains: &Value, grains_file: Option<&Path>) -> Value {
    let mut grains = detect(id);
    if let Some(path) = grains_file {
        match read_grains_file(path) {
            Ok(m) => deep_merge(&mut grains, &Value::Object(m)),
            Err(e) => tracing::warn!("grains file skipped: {e}"),
        }
    }
    deep_merge(&mut grains, static_grains);
    grains
}

/// The grains file next to the main config file (`/etc/salt/minion` →
/// `/etc/salt/grains`); `None` when no config file path is known.
pub fn grains_file_for(main_file: &Path) -> Option<PathBuf> {
    let dir = main_file.parent()?;
    (!main_file.as_os_str().is_empty()).then(|| dir.join("grains"))
}

/// The grains file's mapping; a missing or empty file is an empty one.
pub fn read_grains_file(path: &Path) -> Result<Map<String, Value>, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Map::new()),
        Err(e) => return Err(format!("Unable to read existing grains file: {e}")),
    };
    match brine_common::render::load_yaml(&text, &path.display().to_string()) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(Value::Null) => Ok(Map::new()),
        Ok(_) => Err(format!("{} is not a mapping", path.display())),
        Err(e) => Err(format!("Unable to read existing grains file: {e}")),
    }
}

/// The grains file's text: one `key: value` line per grain, values in
/// YAML flow style.
pub fn grains_file_text(grains: &Map<String, Value>) -> String {
    grains
        .iter()
        .map(|(k, v)| {
            format!(
                "{}: {}\n",
                brine_common::render::to_flow_yaml(&Value::String(k.clone())),
                brine_common::render::to_flow_yaml(v)
            )
        })
        .collect()
}

/// Serialises read-modify-write of grains files in this process.
static FILE_LOCK: Mutex<()> = Mutex::new(());

/// Salt's `grains.setvals`: write `updates` into the grains file and into
/// `live`; with `destructive`, a null value removes the key instead.
pub fn set_file_grains(
    path: &Path,
    live: &RwLock<Value>,
    updates: &Map<String, Value>,
    destructive: bool,
) -> Result<(), String> {
    let _held = FILE_LOCK
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut file = read_grains_file(path)?;
    for (k, v) in updates {
        if v.is_null() && destructive {
            file.remove(k);
        } else {
            file.insert(k.clone(), v.clone());
        }
    }
    let text = grains_file_text(&file);
    let unwritable = |e: std::io::Error| {
        format!(
            "Unable to write to grains file at {}. Check permissions. ({e})",
            path.display()
        )
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(unwritable)?;
    std::io::Write::write_all(&mut tmp, text.as_bytes()).map_err(unwritable)?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o644))
            .map_err(unwritable)?;
    }
    tmp.persist(path).map_err(|e| unwritable(e.error))?;
    let mut g = brine_common::sync::write(live);
    if !g.is_object() {
        *g = Value::Object(Map::new());
    }
    if let Value::Object(m) = &mut *g {
        for (k, v) in updates {
            if v.is_null() && destructive {
                m.remove(k);
            } else {
                m.insert(k.clone(), v.clone());
            }
        }
    }
    Ok(())
}

/// The grains detected on this host, nothing overlaid.
fn detect(id: &str) -> Value {
    let mut g = Map::new();
    g.insert("id".into(), json!(id));
    g.insert("saltversion".into(), json!(env!("CARGO_PKG_VERSION")));

    let os_release = std::fs::read_to_string("/etc/os-release")
        .or_else(|_| std::fs::read_to_string("/usr/lib/os-release"))
        .unwrap_or_default();
    let debian_version = std::fs::read_to_string("/etc/debian_version").ok();
    for (k, v) in os_grains(&parse_os_release(&os_release), debian_version.as_deref()) {
        g.insert(k.into(), v);
    }

    let uts = nix::sys::utsname::uname().ok();
    let field = |f: fn(&nix::sys::utsname::UtsName) -> &std::ffi::OsStr| {
        uts.as_ref()
            .map(|u| f(u).to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    g.insert("kernel".into(), json!(field(|u| u.sysname())));
    g.insert("kernelrelease".into(), json!(field(|u| u.release())));
    g.insert("kernelversion".into(), json!(field(|u| u.version())));
    g.insert("cpuarch".into(), json!(field(|u| u.machine())));
    let nodename = field(|u| u.nodename());
    g.insert("nodename".into(), json!(nodename));

    let hostname = nix::unistd::gethostname()
        .ok()
        .map(|h| h.to_string_lossy().into_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or(nodename);
    let hosts = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
    let fqdn = fqdn_from_hosts(&hostname, &hosts);
    let host = fqdn.split('.').next().unwrap_or_default().to_string();
    let domain = fqdn
        .split_once('.')
        .map(|(_, d)| d.to_string())
        .unwrap_or_default();
    g.insert("localhost".into(), json!(hostname));
    g.insert("host".into(), json!(host));
    g.insert("fqdn".into(), json!(fqdn));
    g.insert("domain".into(), json!(domain));

    let (ipv4, ipv6) = interface_addresses();
    g.insert("ipv4".into(), json!(ipv4));
    g.insert("ipv6".into(), json!(ipv6));

    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let num_cpus = count_cpus(&cpuinfo).unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    g.insert("num_cpus".into(), json!(num_cpus));
    if let Some(model) = cpu_model(&cpuinfo) {
        g.insert("cpu_model".into(), json!(model));
    }
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    if let Some(mib) = mem_total_mib(&meminfo) {
        g.insert("mem_total".into(), json!(mib));
    }

    let machine_id = ["/etc/machine-id", "/var/lib/dbus/machine-id"]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .map(|s| s.trim().to_string())
        .find(|s| !s.is_empty());
    if let Some(mid) = machine_id {
        g.insert("machine_id".into(), json!(mid));
    }
    Value::Object(g)
}

/// Merge `overlay` into `base`: objects merge key by key (recursively),
/// anything else in the overlay replaces what was there.
pub fn deep_merge(base: &mut Value, overlay: &Value) {
    match (base, overlay) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                match b.get_mut(k) {
                    Some(existing) if existing.is_object() && v.is_object() => {
                        deep_merge(existing, v)
                    }
                    _ => {
                        b.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (b, o) if !o.is_null() => *b = o.clone(),
        _ => {}
    }
}

/// `KEY=value` pairs of an os-release file, quotes removed.
pub fn parse_os_release(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| {
            let v = v.trim();
            let v = v
                .strip_prefix('"')
                .and_then(|s| s.strip_suffix('"'))
                .or_else(|| v.strip_prefix('\'').and_then(|s| s.strip_suffix('\'')))
                .unwrap_or(v);
            (k.trim().to_string(), v.replace("\\\"", "\""))
        })
        .collect()
}

/// Salt's `os` name for an os-release `ID`.
fn os_name(id: &str) -> String {
    let known = [
        ("debian", "Debian"),
        ("ubuntu", "Ubuntu"),
        ("linuxmint", "Mint"),
        ("raspbian", "Raspbian"),
        ("pop", "Pop"),
        ("centos", "CentOS"),
        ("rhel", "RedHat"),
        ("fedora", "Fedora"),
        ("rocky", "Rocky"),
        ("almalinux", "AlmaLinux"),
        ("amzn", "Amazon"),
        ("ol", "OEL"),
        ("opensuse-leap", "Leap"),
        ("opensuse-tumbleweed", "openSUSE Tumbleweed"),
        ("sles", "SUSE"),
        ("arch", "Arch"),
        ("manjaro", "Manjaro"),
        ("alpine", "Alpine"),
        ("gentoo", "Gentoo"),
        ("void", "Void"),
        ("nixos", "NixOS"),
    ];
    known
        .iter()
        .find(|(k, _)| *k == id)
        .map(|(_, v)| v.to_string())
        .unwrap_or_else(|| {
            let mut c = id.chars();
            match c.next() {
                Some(f) => f.to_uppercase().chain(c).collect(),
                None => String::new(),
            }
        })
}

/// Salt's `os_family` for an `os` grain, if it is a known member of one.
fn os_family_of(os: &str) -> Option<&'static str> {
    Some(match os {
        "Debian" | "Ubuntu" | "Mint" | "Raspbian" | "Pop" | "Devuan" | "Kali" => "Debian",
        "CentOS" | "RedHat" | "Fedora" | "Rocky" | "AlmaLinux" | "Amazon" | "OEL" => "RedHat",
        "Leap" | "openSUSE Tumbleweed" | "SUSE" | "Opensuse" => "Suse",
        "Arch" | "Manjaro" => "Arch",
        "Alpine" => "Alpine",
        "Gentoo" => "Gentoo",
        "Void" => "Void",
        "NixOS" => "NixOS",
        _ => return None,
    })
}

/// `os`, `os_family`, `osrelease`, `osmajorrelease`, `osfullname`,
/// `oscodename` from parsed os-release data.
pub fn os_grains(
    osr: &BTreeMap<String, String>,
    debian_version: Option<&str>,
) -> Vec<(&'static str, Value)> {
    let get = |k: &str| osr.get(k).cloned().unwrap_or_default();
    let id = get("ID");
    let os = if id.is_empty() {
        "Linux".to_string()
    } else {
        os_name(&id)
    };
    let family = os_family_of(&os)
        .map(str::to_string)
        .or_else(|| {
            get("ID_LIKE")
                .split_whitespace()
                .find_map(|like| os_family_of(&os_name(like)))
                .map(str::to_string)
        })
        .unwrap_or_else(|| os.clone());
    let mut release = get("VERSION_ID");
    // Debian's os-release carries only the major version; Salt reports the
    // point release from /etc/debian_version.
    if id == "debian" {
        if let Some(dv) = debian_version.map(str::trim) {
            if dv.starts_with(|c: char| c.is_ascii_digit()) {
                release = dv.to_string();
            }
        }
    }
    let codename = match get("VERSION_CODENAME") {
        c if !c.is_empty() => c,
        _ => get("VERSION")
            .split_once('(')
            .and_then(|(_, rest)| rest.split_once(')'))
            .map(|(c, _)| c.trim().to_string())
            .unwrap_or_default(),
    };
    let fullname = match get("NAME") {
        n if !n.is_empty() => n,
        _ => os.clone(),
    };
    let mut out = vec![
        ("os", json!(os)),
        ("os_family", json!(family)),
        ("osrelease", json!(release)),
        ("osfullname", json!(fullname)),
        ("oscodename", json!(codename)),
    ];
    if let Some(major) = release
        .split('.')
        .next()
        .and_then(|m| m.parse::<u64>().ok())
    {
        out.push(("osmajorrelease", json!(major)));
    }
    out
}

/// The fully-qualified name: the hostname if it is dotted, else the first
/// dotted alias `/etc/hosts` gives it, else the hostname itself.
pub fn fqdn_from_hosts(hostname: &str, hosts: &str) -> String {
    if hostname.contains('.') {
        return hostname.to_string();
    }
    let prefix = format!("{hostname}.");
    hosts
        .lines()
        .map(|l| l.split('#').next().unwrap_or_default())
        .filter(|l| {
            l.split_whitespace()
                .skip(1)
                .any(|n| n == hostname || n.starts_with(&prefix))
        })
        .flat_map(|l| l.split_whitespace().skip(1))
        .find(|n| n.starts_with(&prefix))
        .map(str::to_string)
        .unwrap_or_else(|| hostname.to_string())
}

/// `MemTotal` of `/proc/meminfo` in MiB.
pub fn mem_total_mib(meminfo: &str) -> Option<u64> {
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kb| kb.parse::<u64>().ok())
        .map(|kb| kb / 1024)
}

/// Number of `processor` entries in `/proc/cpuinfo` (None if there are none).
pub fn count_cpus(cpuinfo: &str) -> Option<usize> {
    let n = cpuinfo
        .lines()
        .filter(|l| {
            l.split_once(':')
                .is_some_and(|(k, _)| k.trim() == "processor")
        })
        .count();
    (n > 0).then_some(n)
}

fn cpu_model(cpuinfo: &str) -> Option<String> {
    cpuinfo.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        matches!(k.trim(), "model name" | "Model" | "cpu model")
            .then(|| v.trim().to_string())
            .filter(|v| !v.is_empty())
    })
}

/// One IPv4 address of an interface.
#[derive(Debug, Clone, PartialEq)]
pub struct Inet4 {
    pub address: Ipv4Addr,
    pub netmask: Option<Ipv4Addr>,
    pub broadcast: Option<Ipv4Addr>,
    /// The address's label (`eth0`, or an alias such as `eth0:1`).
    pub label: String,
}

/// One IPv6 address of an interface.
#[derive(Debug, Clone, PartialEq)]
pub struct Inet6 {
    pub address: Ipv6Addr,
    pub prefixlen: u32,
}

/// A network interface as `getifaddrs` reports it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Interface {
    pub up: bool,
    /// `aa:bb:cc:dd:ee:ff`, when the interface has a link address.
    pub hwaddr: Option<String>,
    pub inet: Vec<Inet4>,
    pub inet6: Vec<Inet6>,
}

/// Every interface by name (aliases folded into their interface); empty
/// when the system will not say.
pub fn interfaces() -> BTreeMap<String, Interface> {
    let mut out: BTreeMap<String, Interface> = BTreeMap::new();
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return out;
    };
    for ifa in addrs {
        let label = ifa.interface_name.clone();
        let name = label.split(':').next().unwrap_or(&label).to_string();
        let entry = out.entry(name).or_default();
        entry.up |= ifa.flags.contains(nix::net::if_::InterfaceFlags::IFF_UP);
        let Some(addr) = ifa.address else { continue };
        if let Some(sin) = addr.as_sockaddr_in() {
            let v4 = |a: Option<nix::sys::socket::SockaddrStorage>| {
                a.and_then(|a| a.as_sockaddr_in().map(|s| s.ip()))
            };
            entry.inet.push(Inet4 {
                address: sin.ip(),
                netmask: v4(ifa.netmask),
                broadcast: v4(ifa.broadcast),
                label,
            });
        } else if let Some(sin6) = addr.as_sockaddr_in6() {
            let prefixlen = ifa
                .netmask
                .and_then(|m| m.as_sockaddr_in6().map(|s| u128::from(s.ip()).count_ones()))
                .unwrap_or(128);
            entry.inet6.push(Inet6 {
                address: sin6.ip(),
                prefixlen,
            });
        } else if let Some(mac) = addr.as_link_addr().and_then(|l| l.addr()) {
            entry.hwaddr = Some(
                mac.iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<Vec<_>>()
                    .join(":"),
            );
        }
    }
    out
}

/// Every address on every interface, sorted, loopback included (Salt's
/// `ipv4` / `ipv6` grains).
fn interface_addresses() -> (Vec<String>, Vec<String>) {
    let mut v4 = BTreeSet::new();
    let mut v6 = BTreeSet::new();
    for iface in interfaces().into_values() {
        v4.extend(iface.inet.into_iter().map(|a| IpAddr::V4(a.address)));
        v6.extend(iface.inet6.into_iter().map(|a| IpAddr::V6(a.address)));
    }
    let strings = |s: BTreeSet<IpAddr>| s.into_iter().map(|a| a.to_string()).collect();
    (strings(v4), strings(v6))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_grains_have_salt_shape() {
        let g = collect_with_file("web1", &json!({}), None);
        assert_eq!(g["id"], "web1");
        for key in [
            "os",
            "os_family",
            "osrelease",
            "osfullname",
            "oscodename",
            "kernel",
            "kernelrelease",
            "nodename",
            "host",
            "fqdn",
            "domain",
            "cpuarch",
            "saltversion",
        ] {
            assert!(g[key].is_string(), "{key} should be a string: {g}");
        }
        assert_eq!(g["kernel"], "Linux");
        assert!(g["num_cpus"].as_u64().is_some_and(|n| n >= 1));
        assert!(g["mem_total"].as_u64().is_some_and(|n| n > 0));
        let v4 = g["ipv4"].as_array().expect("ipv4 list");
        assert!(
            v4.iter().any(|a| a == "127.0.0.1"),
            "loopback listed: {v4:?}"
        );
        assert!(g["ipv6"].is_array());
        assert_eq!(g["saltversion"], env!("CARGO_PKG_VERSION"));
    }

    #[test]
    fn static_grains_win_and_merge_deeply() {
        let g = collect_with_file(
            "web1",
            &json!({"os": "Custom", "roles": ["web"], "deep": {"a": 1}}),
            None,
        );
        assert_eq!(g["os"], "Custom");
        assert_eq!(g["roles"], json!(["web"]));
        let mut base = json!({"a": {"x": 1, "y": 2}, "l": [1], "s": "keep"});
        deep_merge(&mut base, &json!({"a": {"y": 3, "z": 4}, "l": [2]}));
        assert_eq!(
            base,
            json!({"a": {"x": 1, "y": 3, "z": 4}, "l": [2], "s": "keep"})
        );
    }

    #[test]
    fn grains_file_overlays_and_round_trips() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("grains");
        assert_eq!(
            grains_file_for(&dir.path().join("minion")),
            Some(path.clone())
        );
        assert_eq!(grains_file_for(Path::new("")), None);
        assert_eq!(read_grains_file(&path), Ok(Map::new()));
        let live = RwLock::new(json!({"id": "web1"}));
        let mut up = Map::new();
        up.insert("roles".into(), json!(["web", "a: b"]));
        up.insert("os".into(), json!("FileOS"));
        up.insert("deep".into(), json!({"x": {"y": 1}, "on": "yes"}));
        set_file_grains(&path, &live, &up, false).expect("set");
        let back = read_grains_file(&path).expect("read");
        assert_eq!(Value::Object(back), Value::Object(up.clone()));
        assert_eq!(live.read().expect("lock")["roles"], json!(["web", "a: b"]));
        let g = collect_with_file("web1", &json!({"os": "Config"}), Some(&path));
        assert_eq!(g["roles"], json!(["web", "a: b"]));
        assert_eq!(g["os"], "Config", "config grains win over the file");
        assert_eq!(g["deep"]["on"], "yes");
        let mut del = Map::new();
        del.insert("os".into(), Value::Null);
        set_file_grains(&path, &live, &del, true).expect("delete");
        assert!(!read_grains_file(&path).expect("read").contains_key("os"));
        assert!(live.read().expect("lock").get("os").is_none());
        std::fs::write(&path, "- not a mapping\n").expect("write");
        assert!(read_grains_file(&path).is_err());
        assert_eq!(
            collect_with_file("web1", &json!({}), Some(&path))["id"],
            "web1"
        );
    }

    #[test]
    fn os_release_debian_and_rocky() {
        let deb = parse_os_release(
            "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nNAME=\"Debian GNU/Linux\"\n\
             VERSION_ID=\"12\"\nVERSION=\"12 (bookworm)\"\nVERSION_CODENAME=bookworm\nID=debian\n",
        );
        let g: BTreeMap<_, _> = os_grains(&deb, Some("12.5\n")).into_iter().collect();
        assert_eq!(g["os"], "Debian");
        assert_eq!(g["os_family"], "Debian");
        assert_eq!(g["osrelease"], "12.5");
        assert_eq!(g["osmajorrelease"], 12);
        assert_eq!(g["oscodename"], "bookworm");
        assert_eq!(g["osfullname"], "Debian GNU/Linux");

        let rocky = parse_os_release(
            "NAME=\"Rocky Linux\"\nVERSION=\"9.3 (Blue Onyx)\"\nID=\"rocky\"\n\
             ID_LIKE=\"rhel centos fedora\"\nVERSION_ID=\"9.3\"\n",
        );
        let g: BTreeMap<_, _> = os_grains(&rocky, None).into_iter().collect();
        assert_eq!(g["os"], "Rocky");
        assert_eq!(g["os_family"], "RedHat");
        assert_eq!(g["osrelease"], "9.3");
        assert_eq!(g["oscodename"], "Blue Onyx");

        let odd = parse_os_release("ID=myos\nID_LIKE=ubuntu\n");
        let g: BTreeMap<_, _> = os_grains(&odd, None).into_iter().collect();
        assert_eq!(g["os"], "Myos");
        assert_eq!(g["os_family"], "Debian");
        assert!(!g.contains_key("osmajorrelease"));
    }

    #[test]
    fn fqdn_meminfo_cpuinfo_parsing() {
        let hosts = "127.0.0.1 localhost\n10.0.0.5 web1.example.com web1 # main\n";
        assert_eq!(fqdn_from_hosts("web1", hosts), "web1.example.com");
        assert_eq!(fqdn_from_hosts("db1", hosts), "db1");
        assert_eq!(fqdn_from_hosts("a.b.c", hosts), "a.b.c");
        assert_eq!(
            mem_total_mib("MemTotal:       16314020 kB\nMemFree: 1 kB\n"),
            Some(15931)
        );
        assert_eq!(mem_total_mib("garbage"), None);
        let cpu =
            "processor\t: 0\nmodel name\t: Test CPU\n\nprocessor\t: 1\nmodel name\t: Test CPU\n";
        assert_eq!(count_cpus(cpu), Some(2));
        assert_eq!(count_cpus(""), None);
        assert_eq!(cpu_model(cpu).as_deref(), Some("Test CPU"));
    }
}
