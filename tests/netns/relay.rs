//! A delaying TCP relay: WAN latency without `netem`.
//!
//! Each site has a WAN address held by the hub namespace. Peers name each other only by
//! WAN address (`--raft-peers`, `--redis-announce`), so every byte between sites passes
//! through here. The relay accepts on `wan:port`, waits one delay (the SYN's trip), connects
//! to `lan:port` and then copies both directions, holding every chunk until `delay` after it
//! was read. Order is kept, so the stream is the original one, only later.
//!
//! The outgoing connection is bound to the *sender's* WAN address, so the receiving site
//! sees which site it talks to and one iptables rule per peer address cuts a link in both
//! directions (see `faults`).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// Bound on reaching the target; a cut link makes the connection fail like a timed-out SYN.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Bytes read per chunk; each chunk carries its own due time.
const CHUNK: usize = 16 * 1024;
/// Chunks in flight per direction before the reader waits (about 4 MiB).
const IN_FLIGHT: usize = 256;

/// One forwarded port.
#[derive(Clone, Debug)]
pub struct Route {
    pub listen: SocketAddr,
    pub target: SocketAddr,
}

/// Handle to a running relay: change its one-way delay at any time.
#[derive(Clone)]
pub struct Relay {
    delay_us: Arc<AtomicU64>,
}

impl Relay {
    /// Bind every route and serve until `stop` turns true. Must run on a runtime inside the
    /// namespace that owns the WAN addresses. `source_of` maps a connecting peer's address to
    /// the address the forwarded connection is sent from.
    pub async fn start(
        routes: Vec<Route>,
        source_of: Arc<dyn Fn(IpAddr) -> IpAddr + Send + Sync>,
        stop: watch::Receiver<bool>,
    ) -> std::io::Result<Relay> {
        let relay = Relay {
            delay_us: Arc::new(AtomicU64::new(0)),
        };
        let mut listeners = Vec::new();
        for route in routes {
            let listener = TcpListener::bind(route.listen).await?;
            listeners.push((listener, route));
        }
        for (listener, route) in listeners {
            tokio::spawn(accept_loop(
                listener,
                route.target,
                source_of.clone(),
                relay.delay_us.clone(),
                stop.clone(),
            ));
        }
        Ok(relay)
    }

    /// One-way delay added to every chunk read from now on and to every new connection.
    pub fn set_delay(&self, delay: Duration) {
        let us = u64::try_from(delay.as_micros()).unwrap_or(u64::MAX);
        self.delay_us.store(us, Ordering::Relaxed);
    }

    pub fn delay(&self) -> Duration {
        Duration::from_micros(self.delay_us.load(Ordering::Relaxed))
    }
}

async fn accept_loop(
    listener: TcpListener,
    target: SocketAddr,
    source_of: Arc<dyn Fn(IpAddr) -> IpAddr + Send + Sync>,
    delay_us: Arc<AtomicU64>,
    mut stop: watch::Receiver<bool>,
) {
    let connection_stop = stop.clone();
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            accepted = listener.accept() => {
                // An accept error (e.g. out of descriptors) concerns one connection only.
                let Ok((inbound, peer)) = accepted else { continue };
                let source = source_of(peer.ip());
                let delay_us = delay_us.clone();
                let stop = connection_stop.clone();
                tokio::spawn(async move {
                    // Errors end this one connection, which is what the peers see anyway.
                    let _ = forward(inbound, source, target, delay_us, stop).await;
                });
            }
        }
    }
}

async fn forward(
    inbound: TcpStream,
    source: IpAddr,
    target: SocketAddr,
    delay_us: Arc<AtomicU64>,
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    tokio::time::sleep(current(&delay_us)).await;
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(source, 0))?;
    let outbound = tokio::time::timeout(CONNECT_TIMEOUT, socket.connect(target))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))??;
    inbound.set_nodelay(true)?;
    outbound.set_nodelay(true)?;
    let (in_read, in_write) = inbound.into_split();
    let (out_read, out_write) = outbound.into_split();
    let both = async {
        tokio::try_join!(
            pump(in_read, out_write, delay_us.clone()),
            pump(out_read, in_write, delay_us)
        )
    };
    tokio::select! {
        result = both => result.map(drop),
        _ = stop.wait_for(|s| *s) => Ok(()),
    }
}

fn current(delay_us: &AtomicU64) -> Duration {
    Duration::from_micros(delay_us.load(Ordering::Relaxed))
}

/// Copy one direction, each chunk held until its due time. End of stream is forwarded as
/// a half-close, so request/response protocols that shut down one side still work.
async fn pump(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    delay_us: Arc<AtomicU64>,
) -> std::io::Result<()> {
    let (tx, mut rx) = mpsc::channel::<(Instant, Option<Vec<u8>>)>(IN_FLIGHT);
    let reader = async move {
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = from.read(&mut buf).await?;
            let due = Instant::now() + current(&delay_us);
            let chunk = (n > 0).then(|| buf[..n].to_vec());
            let done = chunk.is_none();
            if tx.send((due, chunk)).await.is_err() || done {
                return Ok::<(), std::io::Error>(());
            }
        }
    };
    let writer = async move {
        while let Some((due, chunk)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            match chunk {
                Some(bytes) => to.write_all(&bytes).await?,
                None => {
                    to.shutdown().await?;
                    break;
                }
            }
        }
        Ok::<(), std::io::Error>(())
    };
    tokio::try_join!(reader, writer).map(drop)
}
