//! `ssh-bench`: Brine's `salt-ssh` against Ansible on the same hosts in the
//! same run. sshd listens on N loopback addresses (N "hosts", root login
//! with a key, host keys checked by both tools against one known_hosts
//! file; one sshd per 16 addresses, OpenSSH's MAX_LISTEN_SOCKS); each tool runs a ping and `uptime` on all of them,
//! first contact (Brine: thin dirs wiped; Ansible: fresh ANSIBLE_HOME and
//! temp dirs; both: no shared connection) and warm (the shared
//! connections of a previous run still up). Ansible is installed with pip
//! in a virtualenv under the cache dir (never system-wide); without PyPI
//! Brine is measured alone. Invariant: each sshd is stopped by its PID and
//! every shared ssh connection is closed at the end, also on error (one
//! Drop guard); a run that does not answer for every host is an error,
//! not a number.
//!
//! `ssh-bench [HOSTS] [RUNS]` (defaults 20 and 5). Run the release build:
//! `cargo build --release -p brine-ssh -p brine-minion -p brine-deploy
//! --bins && target/release/ssh-bench`.

brine_common::global_allocator!();

use anyhow::{bail, Context, Result};
use brine_deploy::launch::{self, Net};
use brine_deploy::sshd::{self, Sshd};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The sshds (each closes the shared connections under `dir/c` and
/// stops by PID when dropped).
struct Rig {
    dir: PathBuf,
    sshd: Vec<Sshd>,
    hosts: Vec<String>,
    port: u16,
}

impl Rig {
    fn ctl(&self, name: &str) -> PathBuf {
        self.dir.join("c").join(name)
    }
}

fn must(cmd: &mut Command, what: &str) -> Result<()> {
    let o = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| what.to_string())?;
    if !o.status.success() {
        bail!(
            "{what} failed: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
    }
    Ok(())
}

fn keygen(path: &Path) -> Result<String> {
    let line = sshd::keygen(path).map_err(anyhow::Error::msg)?;
    Ok(sshd::key_of(&line))
}

/// Start sshd on `n` addresses of a fresh loopback block.
fn start(dir: &Path, n: u32) -> Result<Rig> {
    let net = Net::fresh()?;
    let hosts: Vec<String> = (1..=n).map(|i| net.host(i)).collect::<Result<_, _>>()?;
    let port = std::net::TcpListener::bind((hosts[0].as_str(), 0))?
        .local_addr()?
        .port();
    let host_pub = keygen(&dir.join("ssh_host_key"))?;
    let client_pub = keygen(&dir.join("id_bench"))?;
    std::fs::write(dir.join("authorized_keys"), format!("{client_pub}\n"))?;
    let mut known = String::new();
    let auth = format!(
        "HostKey {}\nAuthorizedKeysFile {}\nPermitRootLogin prohibit-password\n\
         PasswordAuthentication no\n",
        dir.join("ssh_host_key").display(),
        dir.join("authorized_keys").display()
    );
    for h in &hosts {
        known.push_str(&format!("[{h}]:{port} {host_pub}\n"));
    }
    std::fs::write(dir.join("known_hosts"), known)?;
    let mut rig = Rig {
        dir: dir.to_path_buf(),
        sshd: Vec::new(),
        hosts: hosts.clone(),
        port,
    };
    for (i, group) in hosts.chunks(sshd::LISTEN_MAX).enumerate() {
        let s = Sshd::start_named(dir, &format!("sshd{i}"), port, group, dir.join("c"), &auth)
            .map_err(anyhow::Error::msg)
            .context("start /usr/sbin/sshd (package openssh-server)")?;
        rig.sshd.push(s);
    }
    Ok(rig)
}

/// One measured command: its wall time, or why its answer was wrong.
fn timed(cmd: &mut Command, check: impl Fn(&str) -> Result<()>) -> Result<Duration> {
    let t0 = Instant::now();
    let o = cmd.stdin(Stdio::null()).output()?;
    let t = t0.elapsed();
    let out = String::from_utf8_lossy(&o.stdout);
    if !o.status.success() {
        bail!(
            "{:?} exited {}: {out}{}",
            cmd.get_program(),
            o.status,
            String::from_utf8_lossy(&o.stderr)
        );
    }
    check(&out)?;
    Ok(t)
}

/// Median and minimum.
fn stats(mut v: Vec<Duration>) -> (Duration, Duration) {
    v.sort();
    let med = if v.is_empty() {
        Duration::ZERO
    } else if v.len() % 2 == 1 {
        v[v.len() / 2]
    } else {
        (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2
    };
    (med, v.first().copied().unwrap_or_default())
}

/// The four measured cases, in table order.
const CASES: [(&str, bool, bool); 4] = [
    ("ping, first contact", false, true),
    ("ping, warm", false, false),
    ("uptime, first contact", true, true),
    ("uptime, warm", true, false),
];

struct Brine {
    bin: PathBuf,
    etc: PathBuf,
}

impl Brine {
    fn setup(rig: &Rig, bin: PathBuf) -> Result<Brine> {
        let etc = rig.dir.join("etc");
        std::fs::create_dir_all(&etc)?;
        std::fs::write(
            etc.join("master"),
            format!("cachedir: {}\n", rig.dir.join("mcache").display()),
        )?;
        let mut roster = String::new();
        for (i, h) in rig.hosts.iter().enumerate() {
            roster.push_str(&format!(
                "h{i:02}:\n  host: {h}\n  port: {}\n  user: root\n  root_dir: {}\n",
                rig.port,
                rig.dir.join("hosts").join(format!("h{i:02}")).display()
            ));
        }
        std::fs::write(etc.join("roster"), roster)?;
        Ok(Brine { bin, etc })
    }

    fn run(&self, rig: &Rig, ctl: &Path, uptime: bool) -> Result<Duration> {
        let mut c = Command::new(self.bin.join("salt-ssh"));
        c.arg("-c")
            .arg(&self.etc)
            .arg("--priv")
            .arg(rig.dir.join("id_bench"))
            .arg("--known-hosts-file")
            .arg(rig.dir.join("known_hosts"))
            .args(["--out", "json", "--static", "*"])
            .env("BRINE_SSH_CONTROL_DIR", ctl);
        if uptime {
            c.args(["cmd.run", "uptime"]);
        } else {
            c.arg("test.ping");
        }
        let n = rig.hosts.len();
        timed(&mut c, |out| {
            let v: serde_json::Value = serde_json::from_str(out).context("salt-ssh output")?;
            let good = v
                .as_object()
                .map(|m| {
                    m.values()
                        .filter(|r| {
                            if uptime {
                                r.as_str().is_some_and(|s| s.contains("load average"))
                            } else {
                                r.as_bool() == Some(true)
                            }
                        })
                        .count()
                })
                .unwrap_or(0);
            if good != n {
                bail!("salt-ssh: {good} of {n} hosts answered: {out}");
            }
            Ok(())
        })
    }

    fn measure(&self, rig: &Rig, runs: usize, uptime: bool, first: bool) -> Result<Vec<Duration>> {
        let mut times = Vec::new();
        let warm = rig.ctl("bw");
        if !first {
            self.run(rig, &warm, uptime)?;
        }
        for i in 0..runs {
            if first {
                let _ = std::fs::remove_dir_all(rig.dir.join("hosts"));
                let ctl = rig.ctl(&format!("b{}{i}", u8::from(uptime)));
                let t = self.run(rig, &ctl, uptime);
                sshd::close_shared(&ctl);
                times.push(t?);
            } else {
                times.push(self.run(rig, &warm, uptime)?);
            }
        }
        Ok(times)
    }
}

struct Ansible {
    exe: PathBuf,
    inventory: PathBuf,
    pipelining: bool,
}

/// Where the bench keeps its virtualenv.
fn cache_dir() -> PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/tmp"))
        .join("brine-ssh-bench")
}

/// `ansible` from the bench's virtualenv, installing it the first time.
fn install_ansible() -> Result<PathBuf> {
    let venv = cache_dir().join("venv");
    let exe = venv.join("bin/ansible");
    if exe.is_file() {
        return Ok(exe);
    }
    std::fs::create_dir_all(cache_dir())?;
    let python = ["/usr/bin/python3", "python3"]
        .into_iter()
        .find(|p| !p.starts_with('/') || Path::new(p).is_file())
        .unwrap_or("python3");
    eprintln!(
        "ssh-bench: creating {} and installing ansible-core",
        venv.display()
    );
    must(
        Command::new(python).args(["-m", "venv"]).arg(&venv),
        "python3 -m venv",
    )?;
    must(
        Command::new(venv.join("bin/pip")).args([
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "ansible-core",
        ]),
        "pip install ansible-core",
    )?;
    if !exe.is_file() {
        bail!("{} missing after pip install", exe.display());
    }
    Ok(exe)
}

impl Ansible {
    fn setup(rig: &Rig, exe: PathBuf, pipelining: bool) -> Result<Ansible> {
        let inventory = rig.dir.join("inventory.ini");
        let mut inv = String::from("[bench]\n");
        for (i, h) in rig.hosts.iter().enumerate() {
            inv.push_str(&format!(
                "h{i:02} ansible_host={h} ansible_port={} ansible_user=root \
                 ansible_ssh_private_key_file={} ansible_python_interpreter=/usr/bin/python3\n",
                rig.port,
                rig.dir.join("id_bench").display()
            ));
        }
        inv.push_str(&format!(
            "[all:vars]\nansible_ssh_common_args='-o UserKnownHostsFile={} -o StrictHostKeyChecking=yes'\n",
            rig.dir.join("known_hosts").display()
        ));
        std::fs::write(&inventory, inv)?;
        std::fs::write(rig.dir.join("ansible.cfg"), "[defaults]\n")?;
        Ok(Ansible {
            exe,
            inventory,
            pipelining,
        })
    }

    /// One run; `state` names the ANSIBLE_HOME, temp and control dirs.
    fn run(&self, rig: &Rig, state: &Path, uptime: bool) -> Result<Duration> {
        let mut c = Command::new(&self.exe);
        c.arg("all")
            .arg("-i")
            .arg(&self.inventory)
            .args(["-f", "25"])
            .env("ANSIBLE_CONFIG", rig.dir.join("ansible.cfg"))
            .env("ANSIBLE_HOME", state.join("home"))
            .env("ANSIBLE_LOCAL_TEMP", state.join("local-tmp"))
            .env("ANSIBLE_REMOTE_TEMP", state.join("remote-tmp"))
            .env("ANSIBLE_SSH_CONTROL_PATH_DIR", state.join("cp"))
            .env("ANSIBLE_HOST_KEY_CHECKING", "True")
            .env(
                "ANSIBLE_PIPELINING",
                if self.pipelining { "True" } else { "False" },
            )
            .env("ANSIBLE_NOCOLOR", "1");
        if uptime {
            c.args(["-m", "command", "-a", "uptime"]);
        } else {
            c.args(["-m", "ping"]);
        }
        let n = rig.hosts.len();
        timed(&mut c, |out| {
            let good = out
                .lines()
                .filter(|l| l.contains("| SUCCESS") || l.contains("| CHANGED"))
                .count();
            if good != n {
                bail!("ansible: {good} of {n} hosts answered: {out}");
            }
            Ok(())
        })
    }

    fn measure(&self, rig: &Rig, runs: usize, uptime: bool, first: bool) -> Result<Vec<Duration>> {
        let tag = if self.pipelining { "p" } else { "a" };
        let warm = rig.ctl(&format!("{tag}w"));
        let mut times = Vec::new();
        if !first {
            self.run(rig, &warm, uptime)?;
        }
        for i in 0..runs {
            if first {
                let state = rig.ctl(&format!("{tag}{}{i}", u8::from(uptime)));
                let t = self.run(rig, &state, uptime);
                sshd::close_shared(&state);
                times.push(t?);
            } else {
                times.push(self.run(rig, &warm, uptime)?);
            }
        }
        Ok(times)
    }
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

fn main() -> Result<()> {
    let mut argv = std::env::args().skip(1);
    let hosts: u32 = argv.next().map(|s| s.parse()).transpose()?.unwrap_or(20);
    let runs: usize = argv.next().map(|s| s.parse()).transpose()?.unwrap_or(5);
    if !(1..=250).contains(&hosts) || !(1..=100).contains(&runs) {
        bail!("usage: ssh-bench [HOSTS 1-250] [RUNS 1-100]");
    }
    launch::ensure_built()?;
    let bin = launch::bin_dir();
    launch::require_binaries(&bin, &["salt-ssh", "salt-call"])?;
    let tmp = tempfile::Builder::new()
        .prefix("ssh-bench")
        .tempdir_in("/tmp")?;
    let rig = start(tmp.path(), hosts)?;
    if std::env::var_os("SSH_BENCH_KEEP").is_some() {
        eprintln!("ssh-bench: keeping {}", tmp.path().display());
        std::mem::forget(tmp);
    }
    let brine = Brine::setup(&rig, bin.clone())?;
    let ansibles = match install_ansible() {
        Ok(exe) => vec![
            Ansible::setup(&rig, exe.clone(), false)?,
            Ansible::setup(&rig, exe, true)?,
        ],
        Err(e) => {
            println!("Ansible not available ({e:#}): measuring Brine alone.");
            Vec::new()
        }
    };
    let thin = std::fs::metadata(bin.join("salt-call"))?.len();
    println!(
        "{hosts} hosts ({} sshd, {hosts} loopback addresses), {runs} runs per row, \
         runner {:.1} MB from {}",
        rig.sshd.len(),
        thin as f64 / 1e6,
        bin.display()
    );
    let mut rows = Vec::new();
    for (name, uptime, first) in CASES {
        let b = stats(brine.measure(&rig, runs, uptime, first)?);
        let mut a = Vec::new();
        for an in &ansibles {
            a.push(stats(an.measure(&rig, runs, uptime, first)?));
        }
        eprintln!("ssh-bench: {name} done");
        rows.push((name, b, a));
    }
    let mut head = String::from("| case | Brine median (min) |");
    let mut rule = String::from("|---|---|");
    if !ansibles.is_empty() {
        head.push_str(" Ansible median (min) | Brine/Ansible | Ansible+pipelining median (min) | Brine/Ansible+pipelining |");
        rule.push_str("---|---|---|---|");
    }
    println!("{head}\n{rule}");
    for (name, (bm, bmin), a) in rows {
        let mut line = format!("| {name} | {} ({}) |", ms(bm), ms(bmin));
        for (am, amin) in a {
            line.push_str(&format!(
                " {} ({}) | {:.2} |",
                ms(am),
                ms(amin),
                bm.as_secs_f64() / am.as_secs_f64().max(1e-9)
            ));
        }
        println!("{line}");
    }
    drop(rig);
    Ok(())
}
