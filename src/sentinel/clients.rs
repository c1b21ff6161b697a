//! The endpoint's connections, for `CLIENT LIST/INFO/KILL` and `INFO`'s counters.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use tokio::sync::Notify;

/// What `CLIENT LIST` shows of one connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientInfo {
    pub id: u64,
    pub addr: String,
    pub laddr: String,
    pub fd: i64,
    pub created: Instant,
    pub last_active: Instant,
    pub name: String,
    pub lib_name: String,
    pub lib_ver: String,
    pub channels: usize,
    pub patterns: usize,
    pub resp: u8,
    /// Last command, as `CLIENT LIST` writes it (`client|list`).
    pub cmd: String,
}

impl ClientInfo {
    pub fn new(id: u64, addr: String, laddr: String, fd: i64, now: Instant) -> Self {
        ClientInfo {
            id,
            addr,
            laddr,
            fd,
            created: now,
            last_active: now,
            name: String::new(),
            lib_name: String::new(),
            lib_ver: String::new(),
            channels: 0,
            patterns: 0,
            resp: 2,
            cmd: "NULL".to_string(),
        }
    }

    pub fn is_pubsub(&self) -> bool {
        self.channels + self.patterns > 0
    }

    /// One `CLIENT LIST` line, with the fields this endpoint knows.
    pub fn line(&self, now: Instant) -> String {
        format!(
            "id={} addr={} laddr={} fd={} name={} age={} idle={} flags={} db=0 sub={} psub={} ssub=0 multi=-1 cmd={} user=default redir=-1 resp={} lib-name={} lib-ver={}",
            self.id,
            self.addr,
            self.laddr,
            self.fd,
            self.name,
            now.saturating_duration_since(self.created).as_secs(),
            now.saturating_duration_since(self.last_active).as_secs(),
            if self.is_pubsub() { "P" } else { "N" },
            self.channels,
            self.patterns,
            self.cmd,
            self.resp,
            self.lib_name,
            self.lib_ver,
        )
    }
}

struct Entry {
    info: ClientInfo,
    kill: Arc<Notify>,
}

/// Shared by every connection of one endpoint.
pub struct Clients {
    pub started: Instant,
    /// Port the endpoint listens on (`INFO`'s `tcp_port`).
    pub port: u16,
    pub max_clients: usize,
    entries: Mutex<BTreeMap<u64, Entry>>,
    pub total_connections: AtomicU64,
    pub total_commands: AtomicU64,
    pub rejected_connections: AtomicU64,
}

impl Clients {
    pub fn new(port: u16, max_clients: usize) -> Self {
        Clients {
            started: Instant::now(),
            port,
            max_clients,
            entries: Mutex::new(BTreeMap::new()),
            total_connections: AtomicU64::new(0),
            total_commands: AtomicU64::new(0),
            rejected_connections: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<u64, Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a connection; the returned handle is notified when it is killed.
    pub fn register(&self, info: ClientInfo) -> Arc<Notify> {
        self.total_connections.fetch_add(1, Ordering::Relaxed);
        let kill = Arc::new(Notify::new());
        self.lock().insert(
            info.id,
            Entry {
                info,
                kill: Arc::clone(&kill),
            },
        );
        kill
    }

    pub fn update(&self, info: &ClientInfo) {
        if let Some(entry) = self.lock().get_mut(&info.id) {
            entry.info.clone_from(info);
        }
    }

    pub fn remove(&self, id: u64) {
        self.lock().remove(&id);
    }

    pub fn count(&self) -> usize {
        self.lock().len()
    }

    /// Every connection, `me` as given rather than as last stored.
    pub fn list(&self, me: &ClientInfo) -> Vec<ClientInfo> {
        let mut all: Vec<ClientInfo> = self
            .lock()
            .values()
            .filter(|e| e.info.id != me.id)
            .map(|e| e.info.clone())
            .collect();
        all.push(me.clone());
        all.sort_by_key(|c| c.id);
        all
    }

    /// Closes the matching connections other than `me`; returns their ids.
    pub fn kill(&self, me: u64, matches: impl Fn(&ClientInfo) -> bool) -> Vec<u64> {
        let entries = self.lock();
        entries
            .values()
            .filter(|e| e.info.id != me && matches(&e.info))
            .map(|e| {
                // notify_one keeps a permit, so a connection busy writing still sees it.
                e.kill.notify_one();
                e.info.id
            })
            .collect()
    }
}
