//! Child processes run inside a namespace: start, SIGKILL, restart, SIGSTOP/SIGCONT.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use super::topology::Netns;

/// What to run: program, arguments and environment, fixed at creation so a restart
/// runs exactly the same command again.
#[derive(Clone, Debug)]
pub struct Spec {
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
}

pub struct Proc {
    label: String,
    ns: Netns,
    spec: Spec,
    log: PathBuf,
    child: Option<Child>,
    stopped: bool,
}

impl Proc {
    pub fn new(label: &str, ns: Netns, spec: Spec, log: PathBuf) -> Proc {
        Proc {
            label: label.to_string(),
            ns,
            spec,
            log,
            child: None,
            stopped: false,
        }
    }

    pub fn label(&self) -> &str {
        &self.label
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    pub fn is_stopped(&self) -> bool {
        self.stopped
    }

    /// Set (or replace) one environment variable for the next start.
    pub fn set_env(&mut self, key: &str, value: &str) {
        self.spec.env.retain(|(k, _)| k != key);
        self.spec.env.push((key.to_string(), value.to_string()));
    }

    /// The exit status when the process ended on its own (it is then reaped and no longer
    /// counts as running); `None` while it runs or when it was never started.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        let status = self.child.as_mut()?.try_wait().ok()??;
        self.child = None;
        self.stopped = false;
        Some(status)
    }

    /// Start the process (output appended to its log).
    pub fn start(&mut self) -> Result<(), String> {
        if self.child.is_some() {
            return Err(format!("{} is already running", self.label));
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|e| format!("open {}: {e}", self.log.display()))?;
        let err_log = log
            .try_clone()
            .map_err(|e| format!("clone log handle: {e}"))?;
        let mut cmd: Command = self.ns.command(&self.spec.program);
        cmd.args(&self.spec.args)
            .envs(self.spec.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err_log);
        let child = cmd.spawn().map_err(|e| {
            format!(
                "spawn {} ({}): {e}",
                self.label,
                self.spec.program.display()
            )
        })?;
        self.child = Some(child);
        self.stopped = false;
        Ok(())
    }

    /// SIGKILL and reap; a stopped process is killed as well.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Fails only if the process already exited, which is what we want anyway.
            let _ = child.kill();
            let _ = child.wait();
        }
        self.stopped = false;
    }

    pub fn restart(&mut self) -> Result<(), String> {
        self.kill();
        self.start()
    }

    /// SIGSTOP: the process keeps its sockets but answers nothing.
    pub fn pause(&mut self) -> Result<(), String> {
        self.signal(libc::SIGSTOP)?;
        self.stopped = true;
        Ok(())
    }

    /// SIGCONT after [`pause`](Self::pause).
    pub fn resume(&mut self) -> Result<(), String> {
        self.signal(libc::SIGCONT)?;
        self.stopped = false;
        Ok(())
    }

    fn signal(&self, signal: i32) -> Result<(), String> {
        let child = self
            .child
            .as_ref()
            .ok_or_else(|| format!("{} is not running", self.label))?;
        let pid = i32::try_from(child.id()).map_err(|e| e.to_string())?;
        // SAFETY: kill(2) has no memory effects; the pid is our own unreaped child.
        if unsafe { libc::kill(pid, signal) } != 0 {
            return Err(format!(
                "signal {signal} to {}: {}",
                self.label,
                std::io::Error::last_os_error()
            ));
        }
        Ok(())
    }

    /// The last `lines` lines of the log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}
