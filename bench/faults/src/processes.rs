//! Child processes that can be killed, signalled and started again with
//! the same command, each logging to its own file.

use std::{
    fs::OpenOptions,
    io::Write,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    time::Duration,
};

use anyhow::{Context, Result};

/// One long-running process and the recipe to start it again. Dropping it
/// kills it, so nothing outlives the scenario, whatever path it leaves by.
pub(crate) struct Proc {
    pub name: String,
    program: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    log: PathBuf,
    child: Option<Child>,
    starts: u32,
}

impl Proc {
    pub fn new(
        name: impl Into<String>,
        program: impl Into<PathBuf>,
        args: &[String],
        env: &[(String, String)],
        log: PathBuf,
    ) -> Proc {
        Proc {
            name: name.into(),
            program: program.into(),
            args: args.to_vec(),
            env: env.to_vec(),
            log,
            child: None,
            starts: 0,
        }
    }

    /// Starts the process. The log is appended to, with a marker line, so
    /// one file tells the whole story of a process killed many times.
    pub fn start(&mut self) -> Result<()> {
        self.kill();
        let mut out = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("open {}", self.log.display()))?;
        self.starts += 1;
        writeln!(out, "==== {} start #{} ====", self.name, self.starts)?;
        let err = out.try_clone()?;
        let child = Command::new(&self.program)
            .args(&self.args)
            .env_clear()
            .env("PATH", search_path())
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("start {} ({})", self.name, self.program.display()))?;
        self.child = Some(child);
        Ok(())
    }

    /// SIGKILL, and reaps it so its port and pid are free for a restart.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends a signal by name (`STOP`, `CONT`). Through kill(1), to keep
    /// the crate free of libc.
    pub fn signal(&self, name: &str) -> Result<()> {
        let pid = self
            .pid()
            .with_context(|| format!("{} is not running", self.name))?;
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(pid.to_string())
            .status()?;
        anyhow::ensure!(status.success(), "kill -{name} {pid} failed");
        Ok(())
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The exit status, once, if the process ended without being killed
    /// by us: a crash the supervisor has to answer.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        let status = self.child.as_mut()?.try_wait().ok()??;
        self.child = None;
        Some(status)
    }

    pub fn is_running(&mut self) -> bool {
        self.child.is_some() && self.exited().is_none()
    }

    /// The end of the log, for an error message.
    pub fn log_tail(&self) -> String {
        log_tail(&self.log, 15)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

pub(crate) fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// PATH plus the sbin directories: Debian installs mariadbd in /usr/sbin,
/// which a non-root PATH lacks.
pub(crate) fn search_path() -> String {
    let mut path = std::env::var("PATH").unwrap_or_default();
    for extra in ["/usr/sbin", "/usr/local/sbin", "/sbin"] {
        if !path.split(':').any(|p| p == extra) {
            if !path.is_empty() {
                path.push(':');
            }
            path.push_str(extra);
        }
    }
    path
}

pub(crate) fn find_program(name: &str) -> Option<PathBuf> {
    search_path()
        .split(':')
        .filter(|dir| !dir.is_empty())
        .map(|dir| Path::new(dir).join(name))
        .find(|p| p.is_file())
}

/// A port the kernel just had free. Racy by nature; every server here
/// binds within a second of this, on loopback.
pub(crate) fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Runs a short command to its end with a time limit, returning stdout;
/// a failure carries stderr.
pub(crate) async fn output(
    program: &Path,
    args: &[String],
    env: &[(String, String)],
    within: Duration,
) -> Result<String> {
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .env_clear()
        .env("PATH", search_path())
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let out = tokio::time::timeout(within, cmd.output())
        .await
        .with_context(|| format!("{} timed out", program.display()))?
        .with_context(|| format!("run {}", program.display()))?;
    anyhow::ensure!(
        out.status.success(),
        "{} {:?}: {}\n{}",
        program.display(),
        args,
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The scenario's temporary directory, removed on drop unless kept.
pub(crate) struct WorkDir {
    pub path: PathBuf,
    pub keep: bool,
}

impl WorkDir {
    pub fn create(run_id: &str, keep: bool) -> Result<WorkDir> {
        let path = std::env::temp_dir().join(format!("chat-faults-{run_id}"));
        std::fs::create_dir_all(&path)?;
        Ok(WorkDir { path, keep })
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}
