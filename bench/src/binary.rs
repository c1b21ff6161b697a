//! Where the agent binary under test is, and building it when cargo runs the benchmark.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};

pub const AGENT: &str = "redis-orchestrator";

/// The cargo target directory this executable was built into: `<target>/<profile>/bench`
/// for the benchmark, `<target>/<profile>/deps/<test>` for a test.
pub fn target_dir() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("locate the running executable")?;
    let mut dir = exe
        .parent()
        .ok_or_else(|| anyhow!("executable without a directory"))?;
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir = dir
            .parent()
            .ok_or_else(|| anyhow!("deps directory without a parent"))?;
    }
    dir.parent()
        .map(Path::to_path_buf)
        .ok_or_else(|| anyhow!("profile directory without a parent"))
}

/// `<target>/<profile>/redis-orchestrator`, rebuilt first with `cargo build` when cargo
/// started us (it sets `CARGO`), so the binary matches the sources. Without cargo, the
/// binary must exist already.
pub fn agent_binary(profile: &str, build: bool) -> Result<PathBuf> {
    let target = target_dir()?;
    let bin = target.join(profile).join(AGENT);
    if build && let Some(cargo) = std::env::var_os("CARGO") {
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
        let mut cmd = std::process::Command::new(cargo);
        cmd.args(["build", "--quiet", "-p", AGENT, "--bin", AGENT])
            .arg("--manifest-path")
            .arg(&manifest)
            .env("CARGO_TARGET_DIR", &target);
        if profile == "release" {
            cmd.arg("--release");
        }
        eprintln!("building {} ({profile}) ...", bin.display());
        let status = cmd.status().context("run cargo build")?;
        if !status.success() {
            bail!("cargo build of {AGENT} failed: {status}");
        }
    }
    if !bin.is_file() {
        let release = if profile == "release" {
            " --release"
        } else {
            ""
        };
        bail!(
            "{} not found: build it with `cargo build{release} --bin {AGENT}` (or pass --agent-bin)",
            bin.display()
        );
    }
    Ok(bin)
}
