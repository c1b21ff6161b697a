//! The client side of a failover run: a writer that writes a unique key every 2 ms to
//! whatever master discovery names, and a watcher that records what each discovery
//! source names over time.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use tokio::task::JoinHandle;

use crate::discovery::Discovery;
use crate::procs::redis_connect;

/// The writer's period.
pub const WRITE_EVERY: Duration = Duration::from_millis(2);
/// The watcher's period per discovery source.
pub const WATCH_EVERY: Duration = Duration::from_millis(10);

/// One acknowledged write: key `bench:<seq>` on the Redis at `node`.
#[derive(Clone, Debug)]
pub struct Ack {
    pub seq: u64,
    pub node: String,
    pub at: Instant,
}

#[derive(Default)]
pub struct WriteLog {
    pub acks: Vec<Ack>,
    /// Failed writes, connections and discoveries that named no master.
    pub errors: u64,
}

pub fn key(seq: u64) -> String {
    format!("bench:{seq}")
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A running writer. It asks discovery for the master only when it has no connection,
/// i.e. at the start and after any failed write: like most Redis clients, it does not
/// notice a master change that does not fail its writes.
pub struct Writer {
    log: Arc<Mutex<WriteLog>>,
    stop: Arc<AtomicBool>,
    task: Option<JoinHandle<()>>,
}

impl Writer {
    pub fn start(discovery: Discovery, io_timeout: Duration) -> Writer {
        let log = Arc::new(Mutex::new(WriteLog::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn(write_loop(discovery, io_timeout, log.clone(), stop.clone()));
        Writer {
            log,
            stop,
            task: Some(task),
        }
    }

    /// The first acknowledged write after `since` on a node other than `old`.
    pub fn first_ack_elsewhere(&self, since: Instant, old: &str) -> Option<Ack> {
        lock(&self.log)
            .acks
            .iter()
            .find(|a| a.at > since && a.node != old)
            .cloned()
    }

    pub fn last_ack(&self) -> Option<Ack> {
        lock(&self.log).acks.last().cloned()
    }

    pub async fn finish(mut self) -> WriteLog {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(task) = self.task.take() {
            // The loop checks `stop` every tick; a panic in it leaves what was logged so far.
            let _ = task.await;
        }
        std::mem::take(&mut *lock(&self.log))
    }
}

impl Drop for Writer {
    /// A run that fails midway must not leave its writer running.
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

async fn write_loop(
    discovery: Discovery,
    io_timeout: Duration,
    log: Arc<Mutex<WriteLog>>,
    stop: Arc<AtomicBool>,
) {
    let mut tick = tokio::time::interval(WRITE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut conn: Option<(String, MultiplexedConnection)> = None;
    let mut seq = 0u64;
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        if conn.is_none() {
            let Some(addr) = discovery.master().await else {
                lock(&log).errors += 1;
                continue;
            };
            match redis_connect(&addr, io_timeout).await {
                Ok(c) => conn = Some((addr, c)),
                Err(_) => {
                    lock(&log).errors += 1;
                    continue;
                }
            }
        }
        let Some((node, c)) = conn.as_mut() else {
            continue;
        };
        seq += 1;
        let result: redis::RedisResult<()> = redis::cmd("SET")
            .arg(key(seq))
            .arg(seq)
            .query_async(c)
            .await;
        let mut log = lock(&log);
        match result {
            Ok(()) => log.acks.push(Ack {
                seq,
                node: node.clone(),
                at: Instant::now(),
            }),
            Err(_) => {
                log.errors += 1;
                conn = None;
            }
        }
    }
}

/// What one discovery source named, from when.
#[derive(Clone, Debug)]
pub struct Sighting {
    pub source: usize,
    pub at: Instant,
    pub master: Option<String>,
}

/// Polls every discovery source on its own every [`WATCH_EVERY`] and keeps each change.
pub struct Watcher {
    sightings: Arc<Mutex<Vec<Sighting>>>,
    stop: Arc<AtomicBool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Watcher {
    pub fn start(discovery: &Discovery) -> Watcher {
        let sightings = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = (0..discovery.sources())
            .map(|source| {
                let (discovery, sightings, stop) =
                    (discovery.clone(), sightings.clone(), stop.clone());
                tokio::spawn(async move {
                    let mut last: Option<Option<String>> = None;
                    while !stop.load(Ordering::Relaxed) {
                        let master = discovery.ask(source).await;
                        let at = Instant::now();
                        if last.as_ref() != Some(&master) {
                            last = Some(master.clone());
                            lock(&sightings).push(Sighting { source, at, master });
                        }
                        tokio::time::sleep(WATCH_EVERY).await;
                    }
                })
            })
            .collect();
        Watcher {
            sightings,
            stop,
            tasks,
        }
    }

    pub async fn finish(mut self) -> Vec<Sighting> {
        self.stop.store(true, Ordering::Relaxed);
        for task in std::mem::take(&mut self.tasks) {
            // A source that hangs (a stopped agent) is not waited for.
            task.abort();
            let _ = task.await;
        }
        std::mem::take(&mut *lock(&self.sightings))
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// When any source first named a master other than `old` after `since`.
pub fn first_new_master(sightings: &[Sighting], since: Instant, old: &str) -> Option<Instant> {
    sightings
        .iter()
        .filter(|s| s.at > since && s.master.as_deref().is_some_and(|m| m != old))
        .map(|s| s.at)
        .min()
}
