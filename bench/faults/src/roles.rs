//! The `chat` processes of the distributed profile, and their supervisor:
//! it SIGKILLs a worker every few seconds and restarts it at once, and
//! restarts any role that exits by itself, as an orchestrator would.

use std::{
    collections::BTreeMap,
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Result, bail};

use crate::{
    flag::Flag,
    probe::Prober,
    processes::{Proc, free_port, output},
    record::{Tag, Windows},
};

/// How long a role may take to become ready at the start (a debug build
/// applies migrations and connects to three servers first).
const READY_WITHIN: Duration = Duration::from_secs(90);
/// A role that exited by itself is restarted after this, as an
/// orchestrator's crash-loop backoff would.
const RESTART_AFTER: Duration = Duration::from_secs(1);

pub(crate) struct Role {
    pub proc: Proc,
    /// `PORT` of an API, `METRICS_PORT` of a worker.
    pub port: Option<u16>,
    restart_at: Option<Instant>,
}

pub(crate) struct Roles {
    pub apis: Vec<Role>,
    pub workers: Vec<Role>,
    pub scheduler: Role,
}

/// Runs `chat migrate` to its end.
pub(crate) async fn migrate(bin: &Path, env: &[(String, String)], dir: &Path) -> Result<()> {
    let data = dir.join("migrate");
    std::fs::create_dir_all(&data)?;
    let mut vars = env.to_vec();
    vars.push(("DATA_DIR".into(), data.display().to_string()));
    let out = output(bin, &["migrate".to_owned()], &vars, READY_WITHIN).await?;
    std::fs::write(dir.join("migrate.log"), out)?;
    Ok(())
}

impl Roles {
    /// Two APIs, two workers and a scheduler, each with a data dir and a
    /// log of its own; returns once the APIs are ready and the workers
    /// serve their metrics.
    pub async fn start(
        bin: &Path,
        env: &[(String, String)],
        dir: &Path,
        http: &reqwest::Client,
    ) -> Result<Roles> {
        let role = |name: &str, extra: &[(&str, String)], port| -> Result<Role> {
            let data = dir.join(name);
            std::fs::create_dir_all(&data)?;
            let mut vars = env.to_vec();
            vars.push(("DATA_DIR".into(), data.display().to_string()));
            vars.extend(extra.iter().map(|(k, v)| (k.to_string(), v.clone())));
            let verb = name.split('-').next().unwrap_or(name).to_owned();
            let mut proc = Proc::new(name, bin, &[verb], &vars, dir.join(format!("{name}.log")));
            proc.start()?;
            Ok(Role {
                proc,
                port,
                restart_at: None,
            })
        };
        let mut apis = Vec::new();
        for i in 1..=2 {
            let port = free_port()?;
            apis.push(role(
                &format!("api-{i}"),
                &[
                    ("PORT", port.to_string()),
                    ("BIND_ADDR", "127.0.0.1".into()),
                ],
                Some(port),
            )?);
        }
        let mut workers = Vec::new();
        for i in 1..=2 {
            let port = free_port()?;
            workers.push(role(
                &format!("worker-{i}"),
                &[("METRICS_PORT", port.to_string())],
                Some(port),
            )?);
        }
        let scheduler = role("scheduler", &[], None)?;
        let mut roles = Roles {
            apis,
            workers,
            scheduler,
        };
        for i in 0..roles.apis.len() {
            let url = format!("{}/health/ready", roles.api_bases()[i]);
            wait_http(&mut roles.apis[i].proc, http, &url).await?;
        }
        for w in &mut roles.workers {
            let url = format!(
                "http://127.0.0.1:{}/health/live",
                w.port.unwrap_or_default()
            );
            wait_http(&mut w.proc, http, &url).await?;
        }
        Ok(roles)
    }

    /// Where each worker serves `/metrics` and its health probes.
    pub fn worker_bases(&self) -> Vec<String> {
        self.workers
            .iter()
            .map(|w| format!("http://127.0.0.1:{}", w.port.unwrap_or_default()))
            .collect()
    }

    pub fn api_bases(&self) -> Vec<String> {
        self.apis
            .iter()
            .map(|a| format!("http://127.0.0.1:{}", a.port.unwrap_or_default()))
            .collect()
    }

    fn all(&mut self) -> impl Iterator<Item = &mut Role> {
        self.apis
            .iter_mut()
            .chain(self.workers.iter_mut())
            .chain(std::iter::once(&mut self.scheduler))
    }
}

async fn wait_http(proc: &mut Proc, http: &reqwest::Client, url: &str) -> Result<()> {
    let deadline = Instant::now() + READY_WITHIN;
    loop {
        if let Ok(r) = http.get(url).send().await
            && r.status().is_success()
        {
            return Ok(());
        }
        if !proc.is_running() {
            bail!("{} exited at start:\n{}", proc.name, proc.log_tail());
        }
        if Instant::now() > deadline {
            bail!("{} not ready at {url}:\n{}", proc.name, proc.log_tail());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[derive(Debug, Default)]
pub(crate) struct Supervision {
    pub worker_kills: usize,
    /// Role name → how many times it exited without being killed.
    pub self_exits: BTreeMap<String, usize>,
    pub restart_errors: Vec<String>,
}

pub(crate) struct Supervisor {
    pub roles: Roles,
    pub every: Duration,
    pub windows: Arc<Windows>,
    pub prober: Arc<Prober>,
    pub t0: Instant,
    /// Worker kills stop once set.
    pub stop: Flag,
    /// Supervision ends once set; the roles keep running until dropped.
    pub finish: Flag,
}

impl Supervisor {
    pub async fn run(mut self) -> (Roles, Supervision) {
        let mut out = Supervision::default();
        let mut next_kill = self.t0 + self.every;
        let mut window = None;
        let mut last_kill = self.t0;
        while !self.finish.is_set() {
            let now = Instant::now();
            for role in self.roles.all() {
                if let Some(status) = role.proc.exited() {
                    *out.self_exits.entry(role.proc.name.clone()).or_default() += 1;
                    eprintln!(
                        "chat-faults: {} exited by itself ({status})",
                        role.proc.name
                    );
                    role.restart_at = Some(now + RESTART_AFTER);
                }
                if role.restart_at.is_some_and(|at| at <= now) {
                    role.restart_at = None;
                    if let Err(e) = role.proc.start() {
                        out.restart_errors
                            .push(format!("{}: {e:#}", role.proc.name));
                    }
                }
            }
            if !self.stop.is_set() && now >= next_kill {
                let index = out.worker_kills % self.roles.workers.len();
                let worker = &mut self.roles.workers[index];
                worker.proc.kill();
                if let Err(e) = worker.proc.start() {
                    out.restart_errors
                        .push(format!("{}: {e:#}", worker.proc.name));
                }
                out.worker_kills += 1;
                last_kill = now;
                next_kill += self.every;
                let name = format!("worker SIGKILL every {}s", self.every.as_secs());
                window.get_or_insert_with(|| self.windows.open(&name, now, Tag::Background));
            }
            if self.stop.is_set()
                && let Some(w) = window.take()
            {
                let note = format!("{} kills, the two workers in turn", out.worker_kills);
                self.windows.close(w, last_kill, note);
                self.prober.spawn(w, last_kill, false);
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                _ = self.finish.wait() => {}
            }
        }
        (self.roles, out)
    }
}
