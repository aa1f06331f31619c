//! Many processes at once: `--processes` API processes and as many
//! workers on the distributed profile (one Redis node, or a private
//! cluster with `--redis-cluster`), writing to `--apps` applications so
//! that the writes spread over the cluster's shards.
//!
//! On a 2-core machine more processes cannot add throughput. What this
//! shows is the cost of a POST and of a persisted row in CPU, summed over
//! every process of the role, which is what carries to a larger
//! deployment, and what the cluster and sharding add to it.
use std::{sync::Arc, time::Instant};

use sea_orm::{DatabaseConnection, Statement};

use crate::{
    client::{AppUrls, ChatApi, body},
    load::{Request, closed_loop},
    stats::Summary,
    system::{Deployment, MachineCpu, Process, free_port, quiet},
};

pub struct Options {
    pub processes: usize,
    pub apps: usize,
    pub chats: usize,
    pub requests: usize,
    pub concurrency: usize,
}

pub struct Report {
    pub profile: &'static str,
    pub processes: usize,
    pub apps: usize,
    pub post: Summary,
    /// Taken in and persisted: the POSTs over the time until the last of
    /// them was in the database.
    pub sustained_rps: f64,
    pub api_cpu_us_per_post: f64,
    pub worker_cpu_us_per_row: f64,
    /// Both cores' busy share over the run.
    pub machine_busy: f64,
}

pub async fn run(d: &Deployment, o: &Options) -> anyhow::Result<Report> {
    d.migrate()?;
    let db = d.connect().await?;
    let mut apis = Vec::new();
    let mut clients = Vec::new();
    for _ in 0..o.processes {
        let port = free_port()?;
        apis.push(d.start("api", Some(port))?);
        clients.push(ChatApi::new(
            &format!("http://127.0.0.1:{port}"),
            o.concurrency,
        )?);
    }
    for client in &clients {
        client
            .wait_ready(std::time::Duration::from_secs(60))
            .await?;
    }
    let mut apps = Vec::new();
    for _ in 0..o.apps {
        apps.push(clients[0].create_app(o.chats).await?.1);
    }
    let mut workers = Vec::new();
    for _ in 0..o.processes {
        workers.push(d.start("worker", None)?);
    }
    quiet().await;
    eprintln!(
        "[{}] {} POSTs through {} APIs into {} applications, {} workers running",
        d.profile, o.requests, o.processes, o.apps, o.processes
    );
    let (api_cpu, worker_cpu) = (cpu(&apis)?, cpu(&workers)?);
    let machine = MachineCpu::start();
    let started = Instant::now();
    let request = spread(&clients, &apps, o.chats);
    let post = closed_loop(o.concurrency, o.requests, std::time::Duration::MAX, request)
        .await?
        .summary();
    wait_for_rows(&db, post.count as i64, &mut workers).await?;
    let sustained_rps = post.count as f64 / started.elapsed().as_secs_f64();
    let machine_busy = machine.busy().1;
    let report = Report {
        profile: d.profile,
        processes: o.processes,
        apps: o.apps,
        post,
        sustained_rps,
        api_cpu_us_per_post: (cpu(&apis)? - api_cpu) * 1e6 / post.count as f64,
        worker_cpu_us_per_row: (cpu(&workers)? - worker_cpu) * 1e6 / post.count as f64,
        machine_busy,
    };
    for p in apis.into_iter().chain(workers) {
        p.stop(std::time::Duration::from_secs(30)).await?;
    }
    Ok(report)
}

/// Request `i` goes to API `i mod processes`, then round the applications
/// and their chats.
fn spread(clients: &[ChatApi], apps: &[AppUrls], chats: usize) -> Request {
    let (clients, apps) = (Arc::new(clients.to_vec()), Arc::new(apps.to_vec()));
    Arc::new(move |i| {
        let (clients, apps) = (clients.clone(), apps.clone());
        Box::pin(async move {
            let client = &clients[i % clients.len()];
            let app = &apps[(i / clients.len()) % apps.len()];
            let chat = 1 + (i / (clients.len() * apps.len())) % chats.max(1);
            client.post_message(app, chat, &body(i)).await?;
            Ok(())
        })
    })
}

fn cpu(processes: &[Process]) -> anyhow::Result<f64> {
    processes.iter().map(Process::cpu_secs).sum()
}

async fn wait_for_rows(
    db: &DatabaseConnection,
    want: i64,
    workers: &mut [Process],
) -> anyhow::Result<()> {
    let give_up = Instant::now() + std::time::Duration::from_secs(600);
    loop {
        let have = crate::run::count(
            db,
            Statement::from_string(db.get_database_backend(), "SELECT COUNT(*) FROM messages"),
        )
        .await?;
        if have >= want {
            return Ok(());
        }
        for w in workers.iter_mut() {
            w.ensure_running()?;
        }
        anyhow::ensure!(
            Instant::now() < give_up,
            "only {have} of {want} rows persisted"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

pub fn print(r: &Report) {
    println!(
        "\n{} APIs + {} workers on {}, {} applications: {} POSTs at {:.0}/s (p99 {:.1} ms), \
         sustained {:.0}/s; CPU {:.0} µs per POST (APIs), {:.0} µs per row (workers); \
         machine {:.0}% busy",
        r.processes,
        r.processes,
        r.profile,
        r.apps,
        r.post.count,
        r.post.per_sec,
        r.post.p99_ms,
        r.sustained_rps,
        r.api_cpu_us_per_post,
        r.worker_cpu_us_per_row,
        r.machine_busy * 100.0,
    );
    println!(
        "RESULT mode=scale profile={} processes={} apps={} post_rps={:.0} post_p99_ms={:.2} \
         sustained_rps={:.0} api_cpu_us_per_post={:.1} worker_cpu_us_per_row={:.1}",
        r.profile,
        r.processes,
        r.apps,
        r.post.per_sec,
        r.post.p99_ms,
        r.sustained_rps,
        r.api_cpu_us_per_post,
        r.worker_cpu_us_per_row,
    );
}
