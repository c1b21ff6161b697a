//! The seed's three sites as three hosts: network namespaces joined by a bridge.
//!
//! Every run creates its own namespaces (named `rorc-<pid>-<random>-<role>`) and one
//! private /24 that exists only inside them, so nothing in the root namespace changes and
//! two runs never share a name or a wire:
//!
//! ```text
//!  hub   : br0 10.98.0.254, WAN addresses .101 (A) .102 (B) .103 (C) served by the relay
//!  site-a: eth0 10.98.0.1   site-b: eth0 10.98.0.2   site-c: eth0 10.98.0.3
//!  client: eth0 10.98.0.10  (observer; never cut off)
//! ```
//!
//! Each host's `eth0` is one end of a veth pair whose other end is a port of `br0`; the
//! pairs are created directly inside the namespaces, so no interface ever appears in the
//! root namespace. Dropping a [`Topology`] kills whatever still runs inside its namespaces
//! and deletes them; [`sweep_stale`] does the same for namespaces left by killed runs.

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Every namespace this harness creates starts with this, followed by the owner's pid.
pub const PREFIX: &str = "rorc";

/// The bridge's own address in the hub namespace.
pub const HUB_IP: Ipv4Addr = Ipv4Addr::new(10, 98, 0, 254);
/// The client (observer) namespace's address; no fault ever cuts it off.
pub const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(10, 98, 0, 10);
const PREFIX_LEN: u8 = 24;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Site {
    A,
    B,
    C,
}

impl Site {
    pub const ALL: [Site; 3] = [Site::A, Site::B, Site::C];
    pub const DATA: [Site; 2] = [Site::A, Site::B];

    pub fn index(self) -> usize {
        match self {
            Site::A => 0,
            Site::B => 1,
            Site::C => 2,
        }
    }

    /// Site and node name, as the agents report it in `/state`.
    pub fn name(self) -> &'static str {
        match self {
            Site::A => "site-a",
            Site::B => "site-b",
            Site::C => "site-c",
        }
    }

    pub fn from_name(name: &str) -> Option<Site> {
        Site::ALL.into_iter().find(|s| s.name() == name)
    }

    pub fn is_data(self) -> bool {
        self != Site::C
    }

    /// The other data site of a data site (A ↔ B); the witness has none.
    pub fn other_data(self) -> Option<Site> {
        match self {
            Site::A => Some(Site::B),
            Site::B => Some(Site::A),
            Site::C => None,
        }
    }

    /// The host's own address on the bridge.
    pub fn lan(self) -> Ipv4Addr {
        Ipv4Addr::new(10, 98, 0, 1 + self.index() as u8)
    }

    /// The address peers use: served by the relay in the hub, which forwards to [`lan`](Self::lan).
    pub fn wan(self) -> Ipv4Addr {
        Ipv4Addr::new(10, 98, 0, 101 + self.index() as u8)
    }

    /// Which site an address belongs to, LAN or WAN.
    pub fn of_ip(ip: Ipv4Addr) -> Option<Site> {
        Site::ALL
            .into_iter()
            .find(|s| s.lan() == ip || s.wan() == ip)
    }
}

/// One named network namespace (a name only: [`Topology`] owns the namespace itself).
#[derive(Clone, Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The bind mount `ip netns` keeps for the namespace; `setns` opens it.
    pub fn path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.name)
    }

    /// `ip netns exec <ns> <program>`: `ip` execs the program in place, so the child's pid
    /// is the program's own and signals reach it directly.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).arg(program);
        cmd
    }

    /// Run a short command inside the namespace; its stderr on failure.
    pub fn run(&self, args: &[&str]) -> Result<(), String> {
        let (program, rest) = args.split_first().ok_or("empty command")?;
        let mut cmd = self.command(program);
        cmd.args(rest);
        output(cmd).map(drop)
    }
}

/// The namespaces of one run. Dropping it tears everything down.
pub struct Topology {
    /// `rorc-<pid>-<random>`: the common part of every namespace name of this run.
    pub id: String,
    pub hub: Netns,
    pub sites: [Netns; 3],
    pub client: Netns,
}

impl Topology {
    /// Create the namespaces, the bridge and the veth pairs. On any failure the namespaces
    /// already created are deleted again.
    pub fn create() -> Result<Topology, String> {
        let id = format!(
            "{PREFIX}-{}-{:04x}",
            std::process::id(),
            rand::random::<u16>()
        );
        let ns = |role: &str| Netns {
            name: format!("{id}-{role}"),
        };
        let topo = Topology {
            hub: ns("hub"),
            sites: [ns("a"), ns("b"), ns("c")],
            client: ns("cl"),
            id,
        };
        topo.build()?;
        Ok(topo)
    }

    pub fn site(&self, site: Site) -> &Netns {
        &self.sites[site.index()]
    }

    fn all(&self) -> impl Iterator<Item = &Netns> {
        std::iter::once(&self.hub)
            .chain(self.sites.iter())
            .chain(std::iter::once(&self.client))
    }

    fn build(&self) -> Result<(), String> {
        for ns in self.all() {
            ip(&["netns", "add", ns.name()])?;
            ip(&["-n", ns.name(), "link", "set", "lo", "up"])?;
        }
        let hub = self.hub.name();
        ip(&["-n", hub, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", hub, "link", "set", "br0", "up"])?;
        let mut hub_addrs = vec![HUB_IP];
        hub_addrs.extend(Site::ALL.map(Site::wan));
        for addr in hub_addrs {
            ip(&[
                "-n",
                hub,
                "addr",
                "add",
                &format!("{addr}/{PREFIX_LEN}"),
                "dev",
                "br0",
            ])?;
        }
        let hosts = Site::ALL
            .iter()
            .map(|&s| (self.site(s), s.lan()))
            .chain(std::iter::once((&self.client, CLIENT_IP)));
        for (i, (host, addr)) in hosts.enumerate() {
            let port = format!("port{i}");
            ip(&[
                "-n",
                hub,
                "link",
                "add",
                &port,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                host.name(),
            ])?;
            ip(&["-n", hub, "link", "set", &port, "master", "br0", "up"])?;
            ip(&[
                "-n",
                host.name(),
                "addr",
                "add",
                &format!("{addr}/{PREFIX_LEN}"),
                "dev",
                "eth0",
            ])?;
            ip(&["-n", host.name(), "link", "set", "eth0", "up"])?;
        }
        Ok(())
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        for ns in self.all() {
            remove_namespace(ns.name());
        }
    }
}

/// Kill what still runs inside a namespace of ours and delete it.
fn remove_namespace(name: &str) {
    if let Ok(pids) = ip(&["netns", "pids", name]) {
        for pid in pids
            .split_whitespace()
            .filter_map(|p| p.parse::<i32>().ok())
        {
            // SAFETY: kill(2) has no memory effects; the pid lives in our own namespace.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
    }
    // Fails only if it is already gone.
    let _ = ip(&["netns", "del", name]);
}

/// Delete namespaces of earlier runs whose process no longer exists (killed test runs
/// cannot clean up after themselves). Only names with our prefix are touched, and never
/// those of a live process, so concurrent runs are safe. Returns the names removed.
pub fn sweep_stale() -> Vec<String> {
    let Ok(list) = ip(&["netns", "list"]) else {
        return Vec::new();
    };
    let mut removed = Vec::new();
    for name in list.lines().filter_map(|l| l.split_whitespace().next()) {
        let Some(owner) = name
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.strip_prefix('-'))
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{owner}")).exists() {
            remove_namespace(name);
            removed.push(name.to_string());
        }
    }
    removed
}

/// Why network namespaces cannot be used here, if they cannot.
pub fn unavailable() -> Option<String> {
    // SAFETY: geteuid(2) cannot fail and touches no memory.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not running as root".into());
    }
    let probe = format!(
        "{PREFIX}-{}-{:04x}-probe",
        std::process::id(),
        rand::random::<u16>()
    );
    if let Err(e) = ip(&["netns", "add", &probe]) {
        return Some(format!("`ip netns add` failed: {e}"));
    }
    let _ = ip(&["netns", "del", &probe]);
    None
}

/// Move the calling thread into a namespace. Only this thread changes; sockets it creates
/// from then on live in that namespace.
pub fn enter(path: &Path) -> io::Result<()> {
    let file = File::open(path)?;
    // SAFETY: setns(2) on a valid descriptor we own; it affects only the calling thread.
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A tokio runtime whose every thread (workers and blocking pool) lives in `ns`. A thread
/// that cannot enter aborts the process: left in the root namespace it would send test
/// traffic for 10.98.0.0/24 to the machine's real network.
pub fn runtime(ns: &Netns, workers: usize) -> io::Result<tokio::runtime::Runtime> {
    let path = ns.path();
    let label = ns.name().to_string();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .thread_name(ns.name())
        .enable_all()
        .on_thread_start(move || {
            if let Err(e) = enter(&path) {
                eprintln!("cannot enter network namespace {label}: {e}; aborting");
                std::process::abort();
            }
        })
        .build()
}

fn ip(args: &[&str]) -> Result<String, String> {
    let mut cmd = Command::new("ip");
    cmd.args(args);
    output(cmd)
}

fn output(mut cmd: Command) -> Result<String, String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{cmd:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}
