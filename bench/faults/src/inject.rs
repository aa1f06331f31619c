//! Carries out the timeline against the servers: each fault at its time,
//! recorded as a window, with a probe once it is over. When the load stops
//! early, a fault still in force is ended at once, so the check after it
//! runs on healthy servers.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Result;

use crate::{
    flag::Flag,
    probe::Prober,
    record::{Tag, Windows},
    servers::Servers,
    timeline::{FaultKind, Planned},
};

enum Step {
    /// A kill whose fault is over once the server answers again.
    Hit,
    Begin,
    End,
}

pub(crate) struct Injector {
    pub servers: Servers,
    pub windows: Arc<Windows>,
    pub prober: Arc<Prober>,
    pub t0: Instant,
    pub stop: Flag,
    /// The workers' `METRICS_PORT` bases, asked during an outage whether
    /// they report it.
    pub workers: Vec<String>,
    pub http: reqwest::Client,
    /// What the workers said during the search outage.
    pub outage_seen: Arc<std::sync::Mutex<Option<String>>>,
}

impl Injector {
    /// Runs the plan until it is done or the load stops; hands the servers
    /// back for the check.
    pub async fn run(self, plan: Vec<Planned>) -> Result<Servers> {
        let outcome = self.inject(plan).await;
        if let Err(e) = &outcome {
            eprintln!("chat-faults: fault injection failed: {e:#}");
        }
        outcome
    }

    async fn inject(mut self, plan: Vec<Planned>) -> Result<Servers> {
        let mut steps: Vec<(Duration, u8, usize, Step)> = Vec::new();
        for (i, p) in plan.iter().enumerate() {
            if p.lasts.is_zero() {
                steps.push((p.at, 1, i, Step::Hit));
            } else {
                steps.push((p.at, 2, i, Step::Begin));
                steps.push((p.at + p.lasts, 0, i, Step::End));
            }
        }
        // At equal times a fault ends before the next begins.
        steps.sort_by_key(|(at, order, i, _)| (*at, *order, *i));

        let mut open: Vec<(usize, usize)> = Vec::new();
        for (at, _, i, step) in steps {
            tokio::select! {
                _ = tokio::time::sleep_until((self.t0 + at).into()) => {}
                _ = self.stop.wait() => {}
            }
            if self.stop.is_set() {
                break;
            }
            let fault = &plan[i];
            match step {
                Step::Hit => self.hit(fault).await?,
                Step::Begin => {
                    let tag = if fault.kind == FaultKind::SearchDown {
                        Tag::Search
                    } else {
                        Tag::Fault
                    };
                    let window = self.windows.open(&fault.name, Instant::now(), tag);
                    self.begin(fault.kind)?;
                    open.push((i, window));
                }
                Step::End => {
                    if let Some(pos) = open.iter().position(|(p, _)| *p == i) {
                        let (_, window) = open.remove(pos);
                        self.end(fault.kind, window, "").await?;
                    }
                }
            }
        }
        for (i, window) in open {
            self.end(plan[i].kind, window, "cut short by the end of the load; ")
                .await?;
        }
        Ok(self.servers)
    }

    async fn hit(&mut self, fault: &Planned) -> Result<()> {
        let started = Instant::now();
        let window = self.windows.open(&fault.name, started, Tag::Fault);
        let note = match fault.kind {
            FaultKind::RedisKill => {
                self.servers.redis.kill_and_restart().await?;
                format!(
                    "answered again after {:.1}s",
                    started.elapsed().as_secs_f64()
                )
            }
            FaultKind::DbKill => {
                self.servers.db.kill_and_restart().await?;
                format!(
                    "answered again after {:.1}s",
                    started.elapsed().as_secs_f64()
                )
            }
            FaultKind::RedisClientKill => {
                let n = self.servers.redis.kill_clients().await?;
                format!("{n} connections closed")
            }
            FaultKind::DbFreeze | FaultKind::SearchDown => unreachable!("faults with a length"),
        };
        let ended = Instant::now();
        self.windows.close(window, ended, note);
        self.prober.spawn(window, ended, false);
        Ok(())
    }

    fn begin(&mut self, kind: FaultKind) -> Result<()> {
        match kind {
            FaultKind::DbFreeze => self.servers.db.freeze(),
            FaultKind::SearchDown => {
                self.servers.search.down()?;
                self.watch_reports("search");
                Ok(())
            }
            _ => unreachable!("instant faults are hits"),
        }
    }

    /// Asks the workers every few seconds, from a while into the outage,
    /// whether they report it, and keeps the first answer that does: a
    /// worker killed and restarted during the outage needs a moment to
    /// find the backend down again.
    fn watch_reports(&self, backend: &'static str) {
        let (http, workers, seen) = (
            self.http.clone(),
            self.workers.clone(),
            self.outage_seen.clone(),
        );
        let stop = self.stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(15)).await;
            while !stop.is_set() && seen.lock().unwrap().is_none() {
                if let Some(said) = workers_report(&http, &workers, backend).await {
                    *seen.lock().unwrap() = Some(said);
                    return;
                }
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        });
    }

    async fn end(&mut self, kind: FaultKind, window: usize, prefix: &str) -> Result<()> {
        let note = match kind {
            FaultKind::DbFreeze => {
                self.servers.db.thaw()?;
                "SIGCONT".to_owned()
            }
            FaultKind::SearchDown => {
                let seen = self.outage_seen.lock().unwrap().clone();
                self.servers.search.up().await?;
                format!(
                    "SIGSTOP, then SIGCONT; workers said: {}",
                    seen.as_deref().unwrap_or("nothing")
                )
            }
            _ => unreachable!("instant faults are hits"),
        };
        let ended = Instant::now();
        self.windows.close(window, ended, format!("{prefix}{note}"));
        self.prober
            .spawn(window, ended, kind == FaultKind::SearchDown);
        Ok(())
    }
}

/// Whether a worker reports `backend` as down, in `/health/ready` (503
/// naming it) and in `/metrics` (`chat_backend_up` 0): what it said, or
/// `None` when no worker did.
async fn workers_report(
    http: &reqwest::Client,
    workers: &[String],
    backend: &str,
) -> Option<String> {
    let gauge = format!("chat_backend_up{{backend=\"{backend}\"}} 0");
    for base in workers {
        let Ok(ready) = http.get(format!("{base}/health/ready")).send().await else {
            continue;
        };
        let status = ready.status().as_u16();
        let body = ready.text().await.unwrap_or_default();
        let metrics = match http.get(format!("{base}/metrics")).send().await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => continue,
        };
        if status == 503 && body.contains(backend) && metrics.contains(&gauge) {
            return Some(format!("/health/ready {status}, {gauge}"));
        }
    }
    None
}
