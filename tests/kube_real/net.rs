//! The pod network: one network namespace per pod, its `eth0` a veth whose peer is a port of
//! a bridge in a hub namespace, on a private /24 that exists only inside these namespaces.
//! Nothing is added to the root namespace. Inside every pod, 127.0.0.1:<API port> is relayed
//! to the API server on the root namespace's loopback, so the agent's kubeconfig names
//! 127.0.0.1 as for any process on the host.

use std::fs::File;
use std::io;
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;

/// Namespace names start with this and the owner's pid.
const PREFIX: &str = "rorck";
/// The bridge's address in the hub namespace; the observer's source address.
pub const HUB_IP: Ipv4Addr = Ipv4Addr::new(10, 97, 0, 254);

/// The namespaces of one run; dropping it kills what runs inside them and deletes them.
pub struct PodNet {
    id: String,
    pub hub: String,
    /// Namespaces with the name of their veth's bridge port (none for the hub).
    pods: Vec<(String, Option<String>)>,
    next_port: u32,
}

impl PodNet {
    pub fn create() -> Result<PodNet, String> {
        sweep_stale();
        let id = format!(
            "{PREFIX}-{}-{:04x}",
            std::process::id(),
            rand::random::<u16>()
        );
        let mut net = PodNet {
            hub: format!("{id}-hub"),
            id,
            pods: Vec::new(),
            next_port: 0,
        };
        let hub = net.hub.clone();
        ip(&["netns", "add", &hub])?;
        net.pods.push((hub.clone(), None));
        ip(&["-n", &hub, "link", "set", "lo", "up"])?;
        ip(&["-n", &hub, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &hub, "link", "set", "br0", "up"])?;
        ip(&[
            "-n",
            &hub,
            "addr",
            "add",
            &format!("{HUB_IP}/24"),
            "dev",
            "br0",
        ])?;
        Ok(net)
    }

    /// A namespace for one pod with `addr` on its eth0 and `hosts` as its /etc/hosts.
    pub fn add_pod(&mut self, short: &str, addr: Ipv4Addr, hosts: &str) -> Result<String, String> {
        let name = format!("{}-{short}", self.id);
        ip(&["netns", "add", &name])?;
        let port = format!("port{}", self.next_port);
        self.next_port += 1;
        self.pods.push((name.clone(), Some(port.clone())));
        let etc = Path::new("/etc/netns").join(&name);
        std::fs::create_dir_all(&etc).map_err(|e| format!("{}: {e}", etc.display()))?;
        std::fs::write(etc.join("hosts"), hosts).map_err(|e| format!("hosts: {e}"))?;
        let hub = self.hub.clone();
        ip(&["-n", &name, "link", "set", "lo", "up"])?;
        ip(&[
            "-n", &hub, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns",
            &name,
        ])?;
        ip(&["-n", &hub, "link", "set", &port, "master", "br0", "up"])?;
        ip(&[
            "-n",
            &name,
            "addr",
            "add",
            &format!("{addr}/24"),
            "dev",
            "eth0",
        ])?;
        ip(&["-n", &name, "link", "set", "eth0", "up"])?;
        Ok(name)
    }

    /// Relay 127.0.0.1:`port` inside namespace `ns` to 127.0.0.1:`port` of the root
    /// namespace. The listening socket is made by a thread that entered `ns`; accepting and
    /// connecting happen on root-namespace threads, so the far side is the real loopback.
    pub fn relay_loopback(&self, ns: &str, port: u16) -> Result<(), String> {
        let path = ns_path(ns);
        let listener = thread::spawn(move || -> io::Result<TcpListener> {
            enter(&path)?;
            TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
        })
        .join()
        .map_err(|_| "relay thread panicked".to_string())?
        .map_err(|e| format!("relay listen in {ns}: {e}"))?;
        thread::spawn(move || {
            for inbound in listener.incoming().flatten() {
                let Ok(outbound) = TcpStream::connect((Ipv4Addr::LOCALHOST, port)) else {
                    continue;
                };
                pipe(inbound, outbound);
            }
        });
        Ok(())
    }

    /// One more address on a pod's eth0 (a LoadBalancer's ingress IP that forwards to it).
    pub fn add_address(&self, ns: &str, addr: Ipv4Addr) -> Result<(), String> {
        ip(&[
            "-n",
            ns,
            "addr",
            "add",
            &format!("{addr}/32"),
            "dev",
            "eth0",
        ])
        .map(drop)
    }

    /// Kill what runs in a pod's namespace and delete it with its veth pair (the relay's
    /// listener may keep the namespace itself alive, so the pair is deleted explicitly).
    pub fn remove_pod(&mut self, name: &str) {
        if let Some(i) = self.pods.iter().position(|(n, _)| n == name) {
            let (name, port) = self.pods.remove(i);
            self.remove(&name, port.as_deref());
        }
    }

    fn remove(&self, name: &str, port: Option<&str>) {
        if let Ok(pids) = ip(&["netns", "pids", name]) {
            for pid in pids
                .split_whitespace()
                .filter_map(|p| p.parse::<i32>().ok())
            {
                // SAFETY: kill(2) has no memory effects; the pid runs in our namespace.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
            }
        }
        if let Some(port) = port {
            let _ = ip(&["-n", &self.hub, "link", "del", port]);
        }
        let _ = ip(&["netns", "del", name]);
        let _ = std::fs::remove_dir_all(Path::new("/etc/netns").join(name));
    }
}

impl Drop for PodNet {
    fn drop(&mut self) {
        for (name, port) in self.pods.iter().rev() {
            self.remove(name, port.as_deref());
        }
    }
}

/// Delete the namespaces (and their /etc/netns files) of earlier runs whose process is gone:
/// a killed test run cannot clean up after itself. Live runs' namespaces are left alone.
fn sweep_stale() {
    let Ok(list) = ip(&["netns", "list"]) else {
        return;
    };
    for name in list.lines().filter_map(|l| l.split_whitespace().next()) {
        let owner = name
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.strip_prefix('-'))
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok());
        if owner.is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists()) {
            let _ = ip(&["netns", "del", name]);
            let _ = std::fs::remove_dir_all(Path::new("/etc/netns").join(name));
        }
    }
}

/// Copy both ways until either side closes.
fn pipe(a: TcpStream, b: TcpStream) {
    let (Ok(a2), Ok(b2)) = (a.try_clone(), b.try_clone()) else {
        return;
    };
    thread::spawn(move || copy(a, b2));
    thread::spawn(move || copy(b, a2));
}

fn copy(mut from: TcpStream, mut to: TcpStream) {
    let _ = io::copy(&mut from, &mut to);
    let _ = to.shutdown(Shutdown::Write);
    let _ = from.shutdown(Shutdown::Read);
}

pub fn ns_path(name: &str) -> PathBuf {
    Path::new("/run/netns").join(name)
}

/// Move the calling thread into a network namespace (only this thread changes).
pub fn enter(path: &Path) -> io::Result<()> {
    let file = File::open(path)?;
    // SAFETY: setns(2) on a valid descriptor we own; it affects only the calling thread.
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A tokio runtime whose threads all live in namespace `ns`; a thread that cannot enter it
/// aborts, since in the root namespace it would send pod traffic to the real network.
pub fn runtime_in(ns: &str) -> io::Result<tokio::runtime::Runtime> {
    let path = ns_path(ns);
    let label = ns.to_string();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .on_thread_start(move || {
            if let Err(e) = enter(&path) {
                eprintln!("cannot enter network namespace {label}: {e}; aborting");
                std::process::abort();
            }
        })
        .build()
}

/// Why pod namespaces cannot be made here, if they cannot.
pub fn unavailable() -> Option<String> {
    // SAFETY: geteuid(2) cannot fail and touches no memory.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not running as root".into());
    }
    let probe = format!("{PREFIX}-{}-probe", std::process::id());
    if let Err(e) = ip(&["netns", "add", &probe]) {
        return Some(format!("`ip netns add` failed: {e}"));
    }
    let _ = ip(&["netns", "del", &probe]);
    None
}

fn ip(args: &[&str]) -> Result<String, String> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}
