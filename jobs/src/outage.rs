//! Waiting out a backend outage instead of failing jobs in it.
//!
//! A [`Gate`] stands for one backend the workers write to (the database,
//! the search index). When a write finds it down, the gate closes: the
//! workers that need it stop claiming, the batches that reach it fail at
//! once without trying, and their jobs are handed back without spending an
//! attempt. A closed gate probes the backend with a capped, doubling pause
//! (a circuit breaker), and opens when a probe answers. Workers that start
//! while a backend is down probe it before they claim anything, so a worker
//! restarted in a loop during an outage cannot wear a job's attempts out.
//!
//! The gate reports its state to [`chat_observability::health`], which
//! `/health/ready` and `/metrics` read, and lends its reason to the
//! workers' heartbeats, which the dashboard shows.
use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use chat_links::StoreError;
use chat_observability::health;
use futures::future::BoxFuture;
use tokio::time::Instant;

/// The first pause before probing a backend found down; it doubles up to
/// [`MAX_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_millis(250);
/// Probes are one ping: cheap enough to keep a backend's return from
/// waiting long for its workers.
const MAX_PAUSE: Duration = Duration::from_secs(5);
/// How long a probe may take: a frozen server must fail it, not hang it.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// Asks a backend whether it answers.
pub type Probe = Arc<dyn Fn() -> BoxFuture<'static, Result<(), StoreError>> + Send + Sync>;

pub struct Gate {
    /// As `/metrics` and `/health/ready` name it.
    name: &'static str,
    probe: Probe,
    state: Mutex<State>,
    /// One prober at a time; the others wait for its verdict.
    probing: tokio::sync::Mutex<()>,
}

#[derive(Clone, Debug)]
enum State {
    /// Not yet probed: a worker starting up asks first.
    Unknown,
    Open,
    Closed {
        since_ms: i64,
        probe_at: Instant,
        pause: Duration,
        error: String,
    },
}

impl Gate {
    pub fn new(name: &'static str, probe: Probe) -> Arc<Self> {
        Arc::new(Self {
            name,
            probe,
            state: Mutex::new(State::Unknown),
            probing: tokio::sync::Mutex::new(()),
        })
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    /// A write found the backend down: close the gate, if open.
    pub fn close(&self, error: &str) {
        let mut state = self.state.lock().unwrap();
        if let State::Closed { error: e, .. } = &mut *state {
            *e = error.to_owned();
            return;
        }
        tracing::warn!(backend = self.name, %error, "backend unavailable; pausing its workers");
        let since_ms = chat_links::now_millis();
        health::down(self.name, since_ms, error);
        *state = State::Closed {
            since_ms,
            probe_at: Instant::now() + FIRST_PAUSE,
            pause: FIRST_PAUSE,
            error: error.to_owned(),
        };
    }

    pub fn is_closed(&self) -> bool {
        matches!(*self.state.lock().unwrap(), State::Closed { .. })
    }

    /// How long jobs handed back now should wait before they are claimable
    /// again: until about the next probe.
    pub fn pause(&self) -> Duration {
        match &*self.state.lock().unwrap() {
            State::Closed { pause, .. } => *pause,
            _ => FIRST_PAUSE,
        }
    }

    /// Why the gate is closed, and since when (ms since the epoch).
    pub fn reason(&self) -> Option<(i64, String)> {
        match &*self.state.lock().unwrap() {
            State::Closed {
                since_ms, error, ..
            } => Some((*since_ms, error.clone())),
            _ => None,
        }
    }

    /// Returns once the backend answers: at once while the gate is open,
    /// otherwise after probes with doubling pauses.
    pub async fn wait_open(&self) {
        loop {
            let state = self.state.lock().unwrap().clone();
            match state {
                State::Open => return,
                State::Closed { probe_at, .. } => tokio::time::sleep_until(probe_at).await,
                State::Unknown => {}
            }
            let _probing = self.probing.lock().await;
            let due = match &*self.state.lock().unwrap() {
                State::Open => return,
                State::Closed { probe_at, .. } => *probe_at <= Instant::now(),
                State::Unknown => true,
            };
            if due {
                self.probe_once().await;
            }
        }
    }

    async fn probe_once(&self) {
        let answer = match tokio::time::timeout(PROBE_TIMEOUT, (self.probe)()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer within {PROBE_TIMEOUT:?}")),
        };
        let mut state = self.state.lock().unwrap();
        match answer {
            Ok(()) => {
                if let State::Closed { since_ms, .. } = &*state {
                    let down_ms = chat_links::now_millis() - since_ms;
                    tracing::info!(
                        backend = self.name,
                        down_ms,
                        "backend answers again; resuming"
                    );
                }
                health::up(self.name);
                *state = State::Open;
            }
            Err(error) => {
                let (since_ms, pause) = match &*state {
                    State::Closed {
                        since_ms, pause, ..
                    } => (*since_ms, (*pause * 2).min(MAX_PAUSE)),
                    _ => {
                        tracing::warn!(backend = self.name, %error, "backend unavailable; pausing its workers");
                        (chat_links::now_millis(), FIRST_PAUSE)
                    }
                };
                health::down(self.name, since_ms, &error);
                *state = State::Closed {
                    since_ms,
                    probe_at: Instant::now() + pause,
                    pause,
                    error,
                };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    /// A probe that fails its first `failures` calls.
    fn flaky(failures: u32) -> (Probe, Arc<AtomicU32>) {
        let calls = Arc::new(AtomicU32::new(0));
        let counted = calls.clone();
        let probe: Probe = Arc::new(move || {
            let n = counted.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move {
                if n < failures {
                    Err(StoreError::Unavailable("down".into()))
                } else {
                    Ok(())
                }
            })
        });
        (probe, calls)
    }

    #[tokio::test(start_paused = true)]
    async fn a_closed_gate_opens_once_a_probe_answers() {
        let (probe, calls) = flaky(3);
        let gate = Gate::new("test-gate-a", probe);
        gate.close("refused");
        assert!(gate.is_closed());
        let started = Instant::now();
        gate.wait_open().await;
        assert!(!gate.is_closed());
        assert_eq!(
            calls.load(Ordering::SeqCst),
            4,
            "three failed probes, one that answered"
        );
        // 250 + 500 + 1000 + 2000 ms of pauses before the answering probe.
        assert_eq!(started.elapsed(), Duration::from_millis(3750));
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_gate_probes_before_letting_anyone_through() {
        let (probe, calls) = flaky(1);
        let gate = Gate::new("test-gate-b", probe);
        gate.wait_open().await;
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        gate.wait_open().await;
        assert_eq!(
            calls.load(Ordering::SeqCst),
            2,
            "an open gate costs no probe"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn pauses_stop_doubling_at_the_cap() {
        let (probe, _) = flaky(20);
        let gate = Gate::new("test-gate-c", probe);
        gate.close("refused");
        gate.wait_open().await;
        assert_eq!(gate.pause(), FIRST_PAUSE, "open again");
        let (probe, _) = flaky(u32::MAX);
        let gate = Gate::new("test-gate-d", probe);
        gate.close("refused");
        let _ = tokio::time::timeout(Duration::from_secs(120), gate.wait_open()).await;
        assert_eq!(gate.pause(), MAX_PAUSE);
    }
}
