//! Sockets: one task per client, so a slow or idle client only ever holds up itself.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tracing::{debug, info, warn};

use super::command::{self, SWITCH_MASTER_CHANNEL, Session, switch_master_payload};
use super::decode::RequestDecoder;
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

/// Serves the Sentinel protocol on `listener` until the sender of `view` is dropped.
pub async fn serve(
    listener: TcpListener,
    config: SentinelConfig,
    mut view: watch::Receiver<SentinelView>,
) {
    let config = Arc::new(config);
    let slots = Arc::new(Semaphore::new(MAX_CLIENTS));
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
                            let config = Arc::clone(&config);
                            let view = view.clone();
                            tokio::spawn(async move {
                                let _slot = slot;
                                match connection(stream, id, &config, view).await {
                                    Ok(()) => debug!(id, %peer, "sentinel client left"),
                                    Err(e) => debug!(id, %peer, error = %e, "sentinel client dropped"),
                                }
                            });
                        }
                        Err(_) => {
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
                if let Some(payload) = switch_master_payload(&config.master_name, &last, &new) {
                    let name = |v: &SentinelView| v.master.as_ref().map(|m| m.name.clone()).unwrap_or_default();
                    info!(
                        %payload,
                        epoch = new.epoch,
                        from = %name(&last),
                        to = %name(&new),
                        "sentinel endpoint: publishing +switch-master"
                    );
                }
                last = new;
            }
        }
    }
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

async fn connection(
    stream: TcpStream,
    id: u64,
    config: &SentinelConfig,
    mut view: watch::Receiver<SentinelView>,
) -> Result<(), SentinelError> {
    // Replies are small and latency matters more than packet count.
    stream.set_nodelay(true)?;
    let (mut reader, mut writer) = stream.into_split();
    let mut session = Session::new(id, config);
    let mut decoder = RequestDecoder::new(MAX_REQUEST_BYTES);
    let mut last = view.borrow_and_update().clone();
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
            let outcome = {
                let current = view.borrow();
                command::handle(&mut session, config, &current, &args)
            };
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
            changed = view.changed() => {
                if changed.is_err() {
                    return Ok(());
                }
                let new = view.borrow_and_update().clone();
                if let Some(payload) = switch_master_payload(&config.master_name, &last, &new) {
                    for message in session.deliver(SWITCH_MASTER_CHANNEL, &payload) {
                        encode(&message, session.protocol, &mut out);
                    }
                }
                last = new;
            }
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
