//! The `network` module: this host's interfaces and addresses in Salt's
//! shapes (`network.interfaces`, `network.ip_addrs`, `network.ip_addrs6`,
//! `network.hw_addr`, `network.get_hostname`).
//!
//! The interfaces come from [`crate::grains::interfaces`], the same
//! `getifaddrs` walk the `ipv4`/`ipv6` grains use, so the two never
//! disagree. Read-only; nothing here changes the system.

use super::user::{blocking, handler};
use super::{opt, req, Call, CallFuture, ExecError, Function, Outcome};
use crate::grains::{interfaces, Interface};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv6Addr};

/// Salt's scope word for an IPv6 address.
fn scope(a: &Ipv6Addr) -> &'static str {
    if a.is_loopback() {
        "host"
    } else if (a.segments()[0] & 0xffc0) == 0xfe80 {
        "link"
    } else {
        "global"
    }
}

/// Salt's `network.interfaces` dict of one interface.
pub fn interface_value(i: &Interface) -> Value {
    let mut m = Map::new();
    if let Some(hw) = &i.hwaddr {
        m.insert("hwaddr".into(), json!(hw));
    }
    m.insert("up".into(), json!(i.up));
    if !i.inet.is_empty() {
        let inet: Vec<Value> = i
            .inet
            .iter()
            .map(|a| {
                let mut e = Map::new();
                e.insert("address".into(), json!(a.address.to_string()));
                if let Some(n) = a.netmask {
                    e.insert("netmask".into(), json!(n.to_string()));
                }
                if let Some(b) = a.broadcast {
                    e.insert("broadcast".into(), json!(b.to_string()));
                }
                e.insert("label".into(), json!(a.label));
                Value::Object(e)
            })
            .collect();
        m.insert("inet".into(), json!(inet));
    }
    if !i.inet6.is_empty() {
        let inet6: Vec<Value> = i
            .inet6
            .iter()
            .map(|a| {
                json!({
                    "address": a.address.to_string(),
                    "prefixlen": a.prefixlen.to_string(),
                    "scope": scope(&a.address),
                })
            })
            .collect();
        m.insert("inet6".into(), json!(inet6));
    }
    Value::Object(m)
}

/// Does `addr` lie in `cidr` (`10.0.0.0/8`, `fd00::/8`, or one address)?
pub fn in_subnet(cidr: &str, addr: &IpAddr) -> Result<bool, String> {
    let bad = || format!("Invalid CIDR '{cidr}'");
    let (net, len) = match cidr.split_once('/') {
        Some((n, l)) => (n, Some(l.parse::<u32>().map_err(|_| bad())?)),
        None => (cidr, None),
    };
    let net: IpAddr = net.trim().parse().map_err(|_| bad())?;
    let (n, a, bits) = match (net, addr) {
        (IpAddr::V4(n), IpAddr::V4(a)) => (u128::from(u32::from(n)), u128::from(u32::from(*a)), 32),
        (IpAddr::V6(n), IpAddr::V6(a)) => (u128::from(n), u128::from(*a), 128),
        _ => return Ok(false),
    };
    let len = len.unwrap_or(bits);
    if len > bits {
        return Err(bad());
    }
    let shift = bits - len;
    Ok(shift == bits || (n >> shift) == (a >> shift))
}

/// Salt's `ip_addrs`/`ip_addrs6`: sorted addresses of one family, loopback
/// only when asked, optionally of one interface and inside `cidr`.
pub fn ip_addrs(
    ifaces: &BTreeMap<String, Interface>,
    v6: bool,
    interface: Option<&str>,
    include_loopback: bool,
    cidr: Option<&str>,
) -> Result<Vec<String>, String> {
    let mut addrs: Vec<IpAddr> = ifaces
        .iter()
        .filter(|(name, _)| interface.is_none_or(|i| i == name.as_str()))
        .flat_map(|(_, i)| {
            let v: Vec<IpAddr> = if v6 {
                i.inet6.iter().map(|a| IpAddr::V6(a.address)).collect()
            } else {
                i.inet.iter().map(|a| IpAddr::V4(a.address)).collect()
            };
            v
        })
        .filter(|a| include_loopback || !a.is_loopback())
        .collect();
    if let Some(c) = cidr {
        let mut kept = Vec::new();
        for a in addrs {
            if in_subnet(c, &a)? {
                kept.push(a);
            }
        }
        addrs = kept;
    }
    addrs.sort();
    addrs.dedup();
    Ok(addrs.iter().map(IpAddr::to_string).collect())
}

handler!(interfaces_h, |_c| {
    let all = blocking(|| Ok(interfaces())).await?;
    let m: Map<String, Value> = all
        .iter()
        .map(|(k, v)| (k.clone(), interface_value(v)))
        .collect();
    Ok(Outcome::ok(Value::Object(m)))
});

async fn addrs(c: &Call<'_>, v6: bool) -> Result<Outcome, ExecError> {
    let interface = c.str_arg("interface")?;
    let include_loopback = c.bool_arg("include_loopback", false)?;
    let cidr = c.str_arg("cidr")?;
    let all = blocking(|| Ok(interfaces())).await?;
    let list = ip_addrs(
        &all,
        v6,
        interface.as_deref(),
        include_loopback,
        cidr.as_deref(),
    )
    .map_err(ExecError::Execution)?;
    Ok(Outcome::ok(json!(list)))
}

handler!(ip_addrs_h, |c| { addrs(c, false).await });
handler!(ip_addrs6_h, |c| { addrs(c, true).await });

handler!(hw_addr_h, |c| {
    let iface = c.str_arg("iface")?.unwrap_or_default();
    let all = blocking(|| Ok(interfaces())).await?;
    Ok(Outcome::ok(
        match all.get(&iface).and_then(|i| i.hwaddr.clone()) {
            Some(hw) => json!(hw),
            None => json!(format!(
                "Interface \"{iface}\" not in available interfaces: \"{}\"",
                all.keys().cloned().collect::<Vec<_>>().join("\", \"")
            )),
        },
    ))
});

handler!(get_hostname_h, |_c| {
    let h = nix::unistd::gethostname()
        .map_err(|e| ExecError::Execution(format!("gethostname failed: {e}")))?;
    Ok(Outcome::ok(json!(h.to_string_lossy())))
});

pub(super) const FUNCTIONS: &[Function] = &[
    Function {
        name: "network.interfaces",
        params: &[],
        varargs: false,
        kwargs: false,
        doc: "Return a dictionary of information about all the interfaces on the minion\n\n\
              CLI Example:\n\n    salt '*' network.interfaces\n",
        handler: interfaces_h,
    },
    Function {
        name: "network.ip_addrs",
        params: &[
            opt("interface"),
            opt("include_loopback"),
            opt("cidr"),
            opt("type"),
        ],
        varargs: false,
        kwargs: false,
        doc: "Returns a list of IPv4 addresses assigned to the host. 127.0.0.1 is\n\
              ignored, unless 'include_loopback=True' is indicated. If 'interface' is\n\
              provided, then only IP addresses from that interface will be returned.\n\
              Providing a CIDR via 'cidr=\"10.0.0.0/8\"' will return only the addresses\n\
              which are within that subnet.\n\n\
              CLI Example:\n\n    salt '*' network.ip_addrs\n",
        handler: ip_addrs_h,
    },
    Function {
        name: "network.ip_addrs6",
        params: &[opt("interface"), opt("include_loopback"), opt("cidr")],
        varargs: false,
        kwargs: false,
        doc: "Returns a list of IPv6 addresses assigned to the host. ::1 is ignored,\n\
              unless 'include_loopback=True' is indicated. If 'interface' is provided,\n\
              then only IP addresses from that interface will be returned. Providing a\n\
              CIDR via 'cidr=\"2000::/3\"' will return only the addresses which are\n\
              within that subnet.\n\n\
              CLI Example:\n\n    salt '*' network.ip_addrs6\n",
        handler: ip_addrs6_h,
    },
    Function {
        name: "network.hw_addr",
        params: &[req("iface")],
        varargs: false,
        kwargs: false,
        doc: "Return the hardware address (a.k.a. MAC address) for a given interface\n\n\
              CLI Example:\n\n    salt '*' network.hw_addr eth0\n",
        handler: hw_addr_h,
    },
    Function {
        name: "network.get_hostname",
        params: &[],
        varargs: false,
        kwargs: false,
        doc: "Get hostname\n\n\
              CLI Example:\n\n    salt '*' network.get_hostname\n",
        handler: get_hostname_h,
    },
];

#[cfg(test)]
mod tests {
    use super::super::testutil::run;
    use super::*;
    use crate::grains::{Inet4, Inet6};

    fn fake() -> BTreeMap<String, Interface> {
        let mut m = BTreeMap::new();
        m.insert(
            "lo".into(),
            Interface {
                up: true,
                hwaddr: Some("00:00:00:00:00:00".into()),
                inet: vec![Inet4 {
                    address: "127.0.0.1".parse().expect("ip"),
                    netmask: Some("255.0.0.0".parse().expect("ip")),
                    broadcast: None,
                    label: "lo".into(),
                }],
                inet6: vec![Inet6 {
                    address: "::1".parse().expect("ip"),
                    prefixlen: 128,
                }],
            },
        );
        m.insert(
            "eth0".into(),
            Interface {
                up: true,
                hwaddr: Some("02:42:ac:11:00:02".into()),
                inet: vec![
                    Inet4 {
                        address: "10.1.2.3".parse().expect("ip"),
                        netmask: Some("255.255.0.0".parse().expect("ip")),
                        broadcast: Some("10.1.255.255".parse().expect("ip")),
                        label: "eth0".into(),
                    },
                    Inet4 {
                        address: "192.168.1.5".parse().expect("ip"),
                        netmask: None,
                        broadcast: None,
                        label: "eth0:1".into(),
                    },
                ],
                inet6: vec![Inet6 {
                    address: "fe80::1".parse().expect("ip"),
                    prefixlen: 64,
                }],
            },
        );
        m
    }

    #[test]
    fn shapes_and_filters() {
        let f = fake();
        let v = interface_value(&f["eth0"]);
        assert_eq!(v["hwaddr"], "02:42:ac:11:00:02");
        assert_eq!(v["up"], true);
        assert_eq!(
            v["inet"][0],
            json!({"address": "10.1.2.3", "netmask": "255.255.0.0", "broadcast": "10.1.255.255", "label": "eth0"})
        );
        assert_eq!(
            v["inet6"][0],
            json!({"address": "fe80::1", "prefixlen": "64", "scope": "link"})
        );
        assert_eq!(
            ip_addrs(&f, false, None, false, None),
            Ok(vec!["10.1.2.3".to_string(), "192.168.1.5".to_string()])
        );
        assert_eq!(
            ip_addrs(&f, false, None, true, Some("127.0.0.0/8")),
            Ok(vec!["127.0.0.1".to_string()])
        );
        assert_eq!(ip_addrs(&f, false, Some("lo"), false, None), Ok(Vec::new()));
        assert_eq!(
            ip_addrs(&f, true, None, true, None),
            Ok(vec!["::1".to_string(), "fe80::1".to_string()])
        );
        assert!(ip_addrs(&f, false, None, false, Some("10.0.0.0/99")).is_err());
        assert_eq!(
            in_subnet("0.0.0.0/0", &"8.8.8.8".parse().expect("ip")),
            Ok(true)
        );
        assert_eq!(
            in_subnet("10.1.2.3", &"10.1.2.3".parse().expect("ip")),
            Ok(true)
        );
    }

    #[tokio::test]
    async fn real_interfaces_have_loopback() {
        let o = run("network.interfaces", vec![], json!({})).await;
        assert_eq!(o.ret["lo"]["inet"][0]["address"], "127.0.0.1", "{}", o.ret);
        assert_eq!(o.ret["lo"]["up"], true);
        let o = run(
            "network.ip_addrs",
            vec![],
            json!({"include_loopback": true}),
        )
        .await;
        assert!(o
            .ret
            .as_array()
            .is_some_and(|a| a.contains(&json!("127.0.0.1"))));
        let o = run("network.ip_addrs", vec![], json!({})).await;
        assert!(!o
            .ret
            .as_array()
            .is_some_and(|a| a.contains(&json!("127.0.0.1"))));
        let o = run("network.hw_addr", vec![json!("lo")], json!({})).await;
        assert_eq!(o.ret, "00:00:00:00:00:00");
        let o = run("network.hw_addr", vec![json!("nope0")], json!({})).await;
        assert!(o
            .ret
            .as_str()
            .is_some_and(|s| s.starts_with("Interface \"nope0\" not in")));
        let o = run("network.get_hostname", vec![], json!({})).await;
        assert!(o.ret.as_str().is_some_and(|s| !s.is_empty()));
    }
}
