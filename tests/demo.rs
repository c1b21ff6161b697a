//! The newcomer's main job: `redis-orchestrator demo` runs, fails over and cleans up.

mod common;

use std::process::Command;

/// A base port whose eight demo ports (base+1, +2, +101..+103, +201..+203) are free now, below
/// the kernel's ephemeral range so outgoing connections cannot be holding one of them.
fn free_base_port() -> u16 {
    let offsets = [1, 2, 101, 102, 103, 201, 202, 203];
    let start = 20_000 + (std::process::id() % 50) as u16 * 200;
    (0..50u16)
        .map(|i| 20_000 + (start - 20_000 + i * 200) % 10_000)
        .find(|base| {
            offsets
                .iter()
                .all(|o| std::net::TcpListener::bind(("127.0.0.1", base + o)).is_ok())
        })
        .expect("a free range of demo ports between 20000 and 30000")
}

#[test]
fn demo_fails_over_and_shows_the_old_master_rejoining() {
    let base = free_base_port();
    let out = Command::new(common::cluster::binary())
        .args([
            "demo",
            "--kill-master-after",
            "4s",
            "--exit-after",
            "25s",
            "--base-port",
        ])
        .arg(base.to_string())
        .output()
        .expect("run demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("SIGKILLed site-"), "{stdout}");
    assert!(
        stdout.contains("failover: site-"),
        "no failover shown: {stdout}"
    );
    assert!(stdout.contains("rejoin as a replica"), "{stdout}");
    let last_table = stdout.rsplit("NODE ").next().unwrap_or_default();
    assert_eq!(
        last_table.matches("<- master").count(),
        1,
        "exactly one master at the end: {last_table}"
    );
    assert_eq!(
        last_table.matches(" replica ").count(),
        1,
        "the old master rejoined as a replica: {last_table}"
    );
    assert!(stdout.contains("stopped all processes"), "{stdout}");
}
