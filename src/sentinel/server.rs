//! Sockets: one task per client, so a slow or idle client only ever holds up itself.
//! Events are derived once per view change and fanned out to every connection.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, broadcast, watch};
use tracing::{debug, info, warn};

use super::clients::{ClientInfo, Clients};
use super::command::{self, Context, Session};
use super::decode::RequestDecoder;
use super::events::{Events, events};
use super::resp::{Reply, encode};
use super::{SentinelConfig, SentinelError, SentinelView};

/// Connections served at once; more are refused the way Redis refuses them.
const MAX_CLIENTS: usize = 1024;
/// Largest command accepted: `HELLO 3 AUTH user password SETNAME name` is the
/// longest a client legitimately sends.
const MAX_REQUEST_BYTES: usize = 64 * 1024;
const READ_CHUNK: usize = 8 * 1024;
/// A client that leaves its replies unread this long is dropped instead of
/// holding its buffers forever. There is no idle timeout: subscribers are idle
/// by nature.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Replies to pipelined commands are flushed once they reach this size.
const FLUSH_AT: usize = 64 * 1024;
/// Pause after a failed accept (e.g. out of file descriptors) before retrying.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// View changes buffered per connection; one a reader falls this far behind on loses
/// the oldest (logged).
const EVENT_BACKLOG: usize = 256;

/// Serves the Sentinel protocol on `listener` until the sender of `view` is dropped.
pub async fn serve(
    listener: TcpListener,
    config: SentinelConfig,
    mut view: watch::Receiver<SentinelView>,
) {
    let config = Arc::new(config);
    let port = listener.local_addr().map_or(0, |a| a.port());
    let clients = Arc::new(Clients::new(port, MAX_CLIENTS));
    let slots = Arc::new(Semaphore::new(MAX_CLIENTS));
    let (events_tx, _) = broadcast::channel::<Arc<Events>>(EVENT_BACKLOG);
    let mut next_id: u64 = 0;
    let mut last = view.borrow_and_update().clone();
    info!(
        addr = ?listener.local_addr().ok(),
        master_name = %config.master_name,
        auth = config.password.is_some(),
        "sentinel endpoint listening"
    );
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    next_id += 1;
                    let id = next_id;
                    match Arc::clone(&slots).try_acquire_owned() {
                        Ok(slot) => {
                            let shared = Shared {
                                config: Arc::clone(&config),
                                clients: Arc::clone(&clients),
                                view: view.clone(),
                                events: events_tx.subscribe(),
                            };
                            tokio::spawn(async move {
                                let _slot = slot;
                                match connection(stream, id, shared).await {
                                    Ok(()) => debug!(id, %peer, "sentinel client left"),
                                    Err(e) => debug!(id, %peer, error = %e, "sentinel client dropped"),
                                }
                            });
                        }
                        Err(_) => {
                            clients.rejected_connections.fetch_add(1, Ordering::Relaxed);
                            warn!(%peer, limit = MAX_CLIENTS, "sentinel endpoint full, refusing a client");
                            tokio::spawn(refuse(stream));
                        }
                    }
                }
                Err(e) => {
                    warn!(error = %e, "sentinel endpoint: accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
            changed = view.changed() => {
                if changed.is_err() {
                    info!("sentinel endpoint stopping: the agent no longer publishes a view");
                    return;
                }
                let new = view.borrow_and_update().clone();
                let published = events(&config.master_name, &last, &new);
                for (channel, payload) in &published {
                    info!(%channel, %payload, epoch = new.epoch, "sentinel event");
                }
                if !published.is_empty() {
                    // No receiver (no client connected) is not an error.
                    let _ = events_tx.send(Arc::new(published));
                }
                last = new;
            }
        }
    }
}

/// What every connection task shares with the endpoint.
struct Shared {
    config: Arc<SentinelConfig>,
    clients: Arc<Clients>,
    view: watch::Receiver<SentinelView>,
    events: broadcast::Receiver<Arc<Events>>,
}

async fn refuse(stream: TcpStream) {
    let (_, mut writer) = stream.into_split();
    let mut out = Vec::new();
    encode(
        &Reply::error("ERR max number of clients reached"),
        Default::default(),
        &mut out,
    );
    // Best effort: the client is turned away whether or not it reads this.
    let _ = flush(&mut writer, &mut out).await;
}

#[cfg(unix)]
fn fd_of(stream: &TcpStream) -> i64 {
    use std::os::fd::AsRawFd;
    i64::from(stream.as_raw_fd())
}

#[cfg(not(unix))]
fn fd_of(_: &TcpStream) -> i64 {
    -1
}

async fn connection(stream: TcpStream, id: u64, shared: Shared) -> Result<(), SentinelError> {
    let info = ClientInfo::new(
        id,
        stream
            .peer_addr()
            .map_or_else(|_| "?".into(), |a| a.to_string()),
        stream
            .local_addr()
            .map_or_else(|_| "?".into(), |a| a.to_string()),
        fd_of(&stream),
        Instant::now(),
    );
    let clients = Arc::clone(&shared.clients);
    let kill = clients.register(info.clone());
    let result = serve_client(stream, info, shared, &kill).await;
    clients.remove(id);
    result
}

async fn serve_client(
    stream: TcpStream,
    info: ClientInfo,
    mut shared: Shared,
    kill: &tokio::sync::Notify,
) -> Result<(), SentinelError> {
    // Replies are small and latency matters more than packet count.
    stream.set_nodelay(true)?;
    let (mut reader, mut writer) = stream.into_split();
    let config = Arc::clone(&shared.config);
    let mut session = Session::new(info, &config);
    let mut decoder = RequestDecoder::new(MAX_REQUEST_BYTES);
    let mut chunk = vec![0u8; READ_CHUNK];
    let mut out = Vec::new();
    loop {
        loop {
            let args = match decoder.next_command() {
                Ok(Some(args)) => args,
                Ok(None) => break,
                Err(e) => {
                    encode(
                        &Reply::error(format!("ERR {e}")),
                        session.protocol,
                        &mut out,
                    );
                    // The connection is closed either way; the error already says why.
                    let _ = flush(&mut writer, &mut out).await;
                    return Err(e);
                }
            };
            shared
                .clients
                .total_commands
                .fetch_add(1, Ordering::Relaxed);
            let outcome = {
                let current = shared.view.borrow();
                let ctx = Context {
                    config: &config,
                    view: &current,
                    clients: &shared.clients,
                    now: Instant::now(),
                };
                command::handle(&mut session, &ctx, &args)
            };
            shared.clients.update(&session.info);
            for reply in &outcome.replies {
                encode(reply, session.protocol, &mut out);
            }
            if outcome.close {
                flush(&mut writer, &mut out).await?;
                return Ok(());
            }
            if out.len() >= FLUSH_AT {
                flush(&mut writer, &mut out).await?;
            }
        }
        flush(&mut writer, &mut out).await?;

        tokio::select! {
            read = reader.read(&mut chunk) => {
                let n = read?;
                if n == 0 {
                    return Ok(());
                }
                decoder.push(&chunk[..n]);
            }
            () = kill.notified() => return Ok(()),
            received = shared.events.recv() => match received {
                Ok(published) => {
                    for (channel, payload) in published.iter() {
                        for message in session.deliver(channel, payload) {
                            encode(&message, session.protocol, &mut out);
                        }
                    }
                }
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    warn!(id = session.info.id, missed, "sentinel client fell behind: events dropped");
                }
                Err(broadcast::error::RecvError::Closed) => return Ok(()),
            },
        }
    }
}

async fn flush(writer: &mut OwnedWriteHalf, out: &mut Vec<u8>) -> Result<(), SentinelError> {
    if out.is_empty() {
        return Ok(());
    }
    tokio::time::timeout(WRITE_TIMEOUT, writer.write_all(out))
        .await
        .map_err(|_| SentinelError::WriteTimeout(WRITE_TIMEOUT))??;
    out.clear();
    Ok(())
}
