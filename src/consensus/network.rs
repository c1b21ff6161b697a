//! Raft RPC client: signed JSON over HTTP to peers.
