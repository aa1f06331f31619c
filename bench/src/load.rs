//! Driving requests at a server: closed loop (fixed concurrency, as fast
//! as it answers) or open loop (a fixed arrival rate).
use std::{
    future::Future,
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use tokio::sync::Semaphore;

use crate::stats::{Samples, Summary};

pub type Call = Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>>;

/// Request number `i` of a run; cheap to clone into every client task.
pub type Request = Arc<dyn Fn(usize) -> Call + Send + Sync>;

/// Up to `total` requests, for at most `max_time`, from `concurrency`
/// clients, each sending its next request as soon as the previous one is
/// answered.
pub async fn closed_loop(
    concurrency: usize,
    total: usize,
    max_time: Duration,
    request: Request,
) -> anyhow::Result<Samples> {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let clients: Vec<_> = (0..concurrency.max(1))
        .map(|_| {
            let (next, request) = (next.clone(), request.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(total / concurrency.max(1) + 1);
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= total || started.elapsed() > max_time {
                        return anyhow::Ok(latencies);
                    }
                    let sent = Instant::now();
                    request(i).await?;
                    latencies.push(sent.elapsed());
                }
            })
        })
        .collect();
    let mut all = Vec::with_capacity(total);
    for client in clients {
        all.extend(client.await??);
    }
    Ok(Samples {
        latencies: all,
        elapsed: started.elapsed(),
    })
}

/// Sends `rate` requests per second for `duration`, whatever the answers'
/// pace, with at most `max_in_flight` outstanding. Latency is measured
/// from each request's scheduled time, so a stalled server cannot hide
/// its stall by slowing the sender down.
pub async fn open_loop(
    rate: f64,
    duration: Duration,
    max_in_flight: usize,
    request: Request,
) -> anyhow::Result<Summary> {
    let total = (rate * duration.as_secs_f64()).round() as usize;
    let slots = Arc::new(Semaphore::new(max_in_flight));
    let latencies = Arc::new(Mutex::new(Vec::with_capacity(total)));
    let failures = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(total);
    for i in 0..total {
        let due = started + Duration::from_secs_f64(i as f64 / rate);
        tokio::time::sleep_until(due.into()).await;
        let slot = slots.clone().acquire_owned().await?;
        let (request, latencies, failures) = (request.clone(), latencies.clone(), failures.clone());
        tasks.push(tokio::spawn(async move {
            match request(i).await {
                Ok(()) => latencies.lock().unwrap().push(due.elapsed()),
                Err(e) => {
                    if failures.fetch_add(1, Ordering::Relaxed) == 0 {
                        eprintln!("open-loop request failed: {e:#}");
                    }
                }
            }
            drop(slot);
        }));
    }
    for task in tasks {
        task.await?;
    }
    let elapsed = started.elapsed();
    let failed = failures.load(Ordering::Relaxed);
    anyhow::ensure!(failed == 0, "{failed} of {total} open-loop requests failed");
    let latencies = std::mem::take(&mut *latencies.lock().unwrap());
    Ok(Summary::of(latencies, elapsed))
}
