//! One real control plane (etcd, kube-apiserver, kube-controller-manager) per test binary,
//! started by `scripts/k8s-control-plane.sh up` and stopped by `down` when dropped.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use tempfile::TempDir;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/k8s-control-plane.sh");

pub struct ControlPlane {
    dir: TempDir,
    /// `https://127.0.0.1:PORT`.
    pub server: String,
    pub port: u16,
}

/// Why the control plane cannot be had here (the binaries are neither cached nor buildable).
pub fn unavailable() -> Option<String> {
    let out = Command::new("bash")
        .args([SCRIPT, "build"])
        .stdin(Stdio::null())
        .output();
    match out {
        Ok(o) if o.status.success() => None,
        Ok(o) => Some(format!(
            "`k8s-control-plane.sh build` failed: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => Some(format!("cannot run {SCRIPT}: {e}")),
    }
}

impl ControlPlane {
    pub fn up() -> Result<ControlPlane, String> {
        let dir = tempfile::Builder::new()
            .prefix("rorc-k8s-")
            .tempdir()
            .map_err(|e| format!("temp dir: {e}"))?;
        let out = Command::new("bash")
            .arg(SCRIPT)
            .arg("up")
            .arg(dir.path())
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run {SCRIPT}: {e}"))?;
        // From here on Drop runs `down`, also when `up` failed half-way.
        let mut plane = ControlPlane {
            dir,
            server: String::new(),
            port: 0,
        };
        if !out.status.success() {
            return Err(format!(
                "control plane did not come up: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        plane.server = String::from_utf8_lossy(&out.stdout).trim().to_string();
        plane.port = plane
            .server
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .ok_or_else(|| format!("no port in the server URL {:?}", plane.server))?;
        Ok(plane)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn kubeconfig(&self) -> PathBuf {
        self.dir().join("kubeconfig")
    }

    pub fn ca(&self) -> PathBuf {
        self.dir().join("pki/ca.crt")
    }

    /// `kubectl` as cluster admin; its stdout, or its stderr as the error.
    pub fn kubectl(&self, args: &[&str]) -> Result<String, String> {
        let out = Command::new(self.dir().join("bin/kubectl"))
            .arg("--kubeconfig")
            .arg(self.kubeconfig())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("kubectl: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!(
                "kubectl {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }

    /// A kubeconfig for `user` with a bearer `token`, against this server and its CA.
    pub fn write_kubeconfig(&self, file: &Path, user: &str, token: &str) -> Result<(), String> {
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: rorc\n  cluster:\n    server: {}\n    certificate-authority: {}\nusers:\n- name: {user}\n  user:\n    token: {token}\ncontexts:\n- name: rorc\n  context:\n    cluster: rorc\n    user: {user}\ncurrent-context: rorc\n",
            self.server,
            self.ca().display(),
        );
        std::fs::write(file, text).map_err(|e| format!("write {}: {e}", file.display()))
    }

    pub fn log_tail(&self, component: &str, lines: usize) -> String {
        let text = std::fs::read_to_string(self.dir().join(format!("logs/{component}.log")))
            .unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(SCRIPT)
            .arg("down")
            .arg(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .status();
    }
}
