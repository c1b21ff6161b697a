//! The newcomer's main job: `redis-orchestrator demo` runs, fails over and cleans up.

mod common;

use std::process::Command;

#[test]
fn demo_fails_over_and_shows_the_old_master_rejoining() {
    // The demo uses ports base+1 ..= base+203; an ephemeral port leaves room above it.
    let base = common::free_port().min(65_000);
    let out = Command::new(common::cluster::binary())
        .args([
            "demo",
            "--kill-master-after",
            "4s",
            "--exit-after",
            "16s",
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
