//! Which server binary every test runs: `RORC_REDIS_SERVER` (a path, or a name looked up
//! on PATH), else `redis-server`. `scripts/test.sh` sets it to the cached valkey-server
//! for its Valkey leg. The only place the tests read it; `tests/netns` includes this file.

use std::ffi::OsString;

/// The environment variable naming the server binary.
pub const ENV: &str = "RORC_REDIS_SERVER";

/// The server binary to spawn.
pub fn redis_server() -> OsString {
    std::env::var_os(ENV)
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "redis-server".into())
}

/// Why spawning [`redis_server`] failed, with what to do about a missing binary.
pub fn spawn_failure(e: &std::io::Error) -> String {
    let program = redis_server();
    let program = program.to_string_lossy();
    if e.kind() == std::io::ErrorKind::NotFound {
        format!(
            "{program} not found (set by {ENV}): apt-get install -y redis-server, \
             or scripts/install-deps.sh for valkey-server"
        )
    } else {
        format!("spawn {program}: {e}")
    }
}
