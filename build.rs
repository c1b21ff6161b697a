//! Link options for the agent binary.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The profile-driven link order of the agent's functions (`scripts/symbol-order.sh`).
const SYMBOL_ORDER: &str = "symbol-order.txt";
/// Set by `scripts/symbol-order.sh`: a release agent with its symbols, to profile.
const KEEP_SYMBOLS: &str = "RORC_KEEP_SYMBOLS";

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed={SYMBOL_ORDER}");
    println!("cargo:rerun-if-env-changed={KEEP_SYMBOLS}");
    let target = std::env::var("TARGET").unwrap_or_default();
    let host = std::env::var("HOST").unwrap_or_default();
    let gnu_linux = std::env::var("CARGO_CFG_TARGET_OS").is_ok_and(|os| os == "linux")
        && std::env::var("CARGO_CFG_TARGET_ENV").is_ok_and(|env| env == "gnu");
    // Packed relative relocations (DT_RELR): the position-independent binary's ~22 000
    // relative relocations take a few KB instead of 520 KB, which the loader reads (and
    // keeps resident) at every start. The loader must know DT_RELR (glibc 2.36 or later),
    // so only when building natively against such a glibc; the binary then needs glibc
    // 2.36 or later where it runs too (our image: Debian 12, like the build stage).
    // Functions the compiler knows to be cold (panics, allocation failures, `#[cold]` error
    // paths) go in their own section, not between the hot ones: the kernel maps a whole
    // 64 KiB window of the binary around each page the agent touches.
    if gnu_linux {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,keep-text-section-prefix");
    }
    if gnu_linux && target == host && host_glibc_at_least(2, 36) {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
    let release = std::env::var("PROFILE").is_ok_and(|p| p == "release");
    if !(gnu_linux && release) {
        return;
    }
    // The linker strips the release agent, not the profile's `strip`: that setting is part of
    // every crate's symbol hashes, so a profiling build with symbols would name other
    // functions than the order file must name.
    if std::env::var_os(KEEP_SYMBOLS).is_none() {
        println!("cargo:rustc-link-arg-bins=-Wl,--strip-all");
    }
    // The functions an agent runs (starting, idle, leading, failing over) placed together:
    // the kernel maps a 64 KiB window around each page touched, so spread-out hot functions
    // keep most of the binary resident. Only where the linker (rustc's default rust-lld)
    // takes an order file; names the file lacks keep their place.
    let order =
        Path::new(&std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default()).join(SYMBOL_ORDER);
    if order.is_file() && linker_takes_symbol_order(&order) {
        println!(
            "cargo:rustc-link-arg-bins=-Wl,--symbol-ordering-file={}",
            order.display()
        );
        println!("cargo:rustc-link-arg-bins=-Wl,--no-warn-symbol-ordering");
    }
}

/// Whether the linker rustc uses for this build accepts `--symbol-ordering-file`: links an
/// empty program with it, with the build's own linker and flags.
fn linker_takes_symbol_order(order: &Path) -> bool {
    let Some(out_dir) = std::env::var_os("OUT_DIR").map(PathBuf::from) else {
        return false;
    };
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let mut cmd = Command::new(rustc);
    cmd.args([
        "--edition=2021",
        "--crate-type=bin",
        "--crate-name=order_probe",
    ])
    .arg("-o")
    .arg(out_dir.join("order-probe"))
    .arg(format!(
        "-Clink-arg=-Wl,--symbol-ordering-file={}",
        order.display()
    ))
    .arg("-Clink-arg=-Wl,--no-warn-symbol-ordering");
    if let Ok(target) = std::env::var("TARGET") {
        cmd.arg(format!("--target={target}"));
    }
    if let Some(linker) = std::env::var_os("RUSTC_LINKER") {
        cmd.arg("-C")
            .arg(format!("linker={}", linker.to_string_lossy()));
    }
    if let Ok(flags) = std::env::var("CARGO_ENCODED_RUSTFLAGS") {
        cmd.args(flags.split('\x1f').filter(|f| !f.is_empty()));
    }
    let source = out_dir.join("order_probe.rs");
    if std::fs::write(&source, "fn main() {}\n").is_err() {
        return false;
    }
    cmd.arg(&source)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// Whether the glibc this build script runs on is at least `major.minor`.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn host_glibc_at_least(major: u32, minor: u32) -> bool {
    use std::ffi::{CStr, c_char};
    unsafe extern "C" {
        fn gnu_get_libc_version() -> *const c_char;
    }
    // SAFETY: glibc returns a pointer to a static NUL-terminated version string.
    let version = unsafe { CStr::from_ptr(gnu_get_libc_version()) };
    let mut parts = version
        .to_str()
        .unwrap_or_default()
        .split('.')
        .map(|part| part.parse::<u32>().unwrap_or(0));
    let found = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    found >= (major, minor)
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn host_glibc_at_least(_major: u32, _minor: u32) -> bool {
    false
}
