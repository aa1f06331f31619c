//! Dashboard overview benchmark: how long `/admin` takes to render when
//! a queue holds `jobs` finished jobs, all within the done retention (one
//! hour by default), so nothing is trimmed to make it fast.
//!
//! The finished jobs are written straight into the queue's history: rows
//! in `queue_jobs` on the embedded profile (the triggers count them as
//! they go in), entries of the done stream on the distributed one. A full
//! day of per-minute figures (every field of every queue and lag series)
//! is seeded too, so the charts read as much as they ever will.
use std::time::{Duration, Instant};

use sea_orm::{ConnectionTrait, DbBackend, Statement, Value};

use crate::{
    client::ChatApi,
    system::{self, Deployment},
};

const TOKEN: &str = "bench-admin-token";
const ROWS_PER_INSERT: usize = 2_000;

pub struct Report {
    pub profile: &'static str,
    pub jobs: usize,
    pub seed: Duration,
    pub done_shown: u64,
    /// Render times of the overview page, sorted.
    pub renders: Vec<Duration>,
    pub counts: Vec<Duration>,
    /// Times of a search that matches nothing, so it reads its whole
    /// bounded scan, sorted.
    pub searches: Vec<Duration>,
    /// The overview's live fragment, fetched every 2 s by an open page.
    pub live: Vec<Duration>,
    /// The overview with the day's charts.
    pub day: Vec<Duration>,
}

fn payload(i: usize) -> String {
    format!(
        "{{\"application_id\":1,\"chat_number\":{},\"number\":{},\"body\":\"finished job {i}\",\"version\":1}}",
        i % 1_000 + 1,
        i / 1_000 + 1
    )
}

async fn seed_sqlite(d: &Deployment, jobs: usize) -> anyhow::Result<()> {
    let db = chat_links::db::connect_writer(&d.database_url).await?;
    chat_links::db::migrate(&db).await?;
    let now = chat_links::now_millis();
    for start in (0..jobs).step_by(ROWS_PER_INSERT) {
        let end = (start + ROWS_PER_INSERT).min(jobs);
        let marks = vec!["('messages', ?, 1, ?, 2, '[]', ?)"; end - start].join(", ");
        let mut values: Vec<Value> = Vec::with_capacity((end - start) * 3);
        for i in start..end {
            // Spread over the last 30 minutes: inside the retention.
            let at = now - 1_800_000 + (i as i64 * 1_800_000 / jobs as i64);
            values.extend([payload(i).into(), at.into(), (at - 20).into()]);
        }
        db.execute_raw(Statement::from_sql_and_values(
            DbBackend::Sqlite,
            format!(
                "INSERT INTO queue_jobs_with_payload \
                   (queue, payload, attempt, run_at, dead, errors, enqueued_at) \
                 VALUES {marks}"
            ),
            values,
        ))
        .await?;
    }
    Ok(())
}

/// The figures workers would have written over the last 25 hours, for
/// every queue and lag series and every field: one sample in each bucket.
async fn seed_figures(d: &Deployment) -> anyhow::Result<()> {
    const SAMPLES: [u64; pulse::BUCKETS] = {
        let mut ms = [0; pulse::BUCKETS];
        let mut i = 0;
        while i < pulse::BOUNDS_MS.len() {
            ms[i] = pulse::BOUNDS_MS[i];
            i += 1;
        }
        ms[pulse::BOUNDS_MS.len()] = u64::MAX / 2;
        ms
    };
    use chat_ops::pulse::{self, Field, Histogram, Increments, LagStage};
    let db = d.connect().await?;
    let now = pulse::minute_now();
    for hour in 0..25 {
        let mut day = Increments::default();
        for minute in (now - (hour + 1) * 60 + 1)..=(now - hour * 60) {
            for queue in ["chats", "messages", "index"] {
                day.add(queue, minute, Field::DONE, 2_000);
                day.add(queue, minute, Field::FAILED, 3);
                for &ms in &SAMPLES {
                    day.sample(queue, minute, Histogram::Wait, ms);
                    day.sample(queue, minute, Histogram::Run, ms);
                }
            }
            for stage in LagStage::ALL {
                for &ms in &SAMPLES {
                    day.sample(stage.as_str(), minute, Histogram::Lag, ms);
                }
            }
        }
        pulse::add(&db, &day).await?;
    }
    Ok(())
}

async fn seed_redis(d: &Deployment, jobs: usize) -> anyhow::Result<()> {
    let (Some(url), Some(prefix)) = (&d.redis_url, &d.redis_prefix) else {
        anyhow::bail!("no Redis");
    };
    let mut conn = redis::Client::open(url.as_str())?
        .get_multiplexed_async_connection()
        .await?;
    let key = format!("{prefix}{{q:messages}}:done");
    for start in (0..jobs).step_by(10_000) {
        let mut pipe = redis::pipe();
        for i in start..(start + 10_000).min(jobs) {
            pipe.cmd("XADD")
                .arg(&key)
                .arg("*")
                .arg("id")
                .arg(format!("{i}-0"))
                .arg("p")
                .arg(payload(i))
                .arg("a")
                .arg(1)
                .ignore();
        }
        let () = pipe.query_async(&mut conn).await?;
    }
    Ok(())
}

async fn timed_get(http: &reqwest::Client, url: &str) -> anyhow::Result<(Duration, String)> {
    let started = Instant::now();
    let r = http.get(url).bearer_auth(TOKEN).send().await?;
    anyhow::ensure!(r.status().is_success(), "{url}: {}", r.status());
    let body = r.text().await?;
    Ok((started.elapsed(), body))
}

pub async fn run(d: &Deployment, jobs: usize, renders: usize) -> anyhow::Result<Report> {
    let started = Instant::now();
    if d.redis_url.is_some() {
        d.migrate()?;
        seed_redis(d, jobs).await?;
    } else {
        seed_sqlite(d, jobs).await?;
    }
    seed_figures(d).await?;
    let seed = started.elapsed();
    let port = system::free_port()?;
    let mut api = d.command("api", Some(port));
    api.env("ADMIN_TOKEN", TOKEN)
        .env("JOBS_DONE_MAX", (jobs * 2).to_string());
    let _api = system::Process::spawn(&format!("{}-api", d.profile), api, &d.work)?;
    let base = format!("http://127.0.0.1:{port}");
    ChatApi::new(&base, 1)?
        .wait_ready(Duration::from_secs(60))
        .await?;
    let http = reqwest::Client::new();
    let counts = format!("{base}/admin/api/queues");
    let (_, queues) = timed_get(&http, &counts).await?;
    let queues: serde_json::Value = serde_json::from_str(&queues)?;
    let done_shown = queues
        .as_array()
        .and_then(|qs| qs.iter().find(|q| q["queue"] == "messages"))
        .and_then(|q| q["done"].as_u64())
        .unwrap_or(0);
    let overview = format!("{base}/admin");
    // The first requests warm the connection pools.
    for _ in 0..3 {
        timed_get(&http, &overview).await?;
    }
    let search = format!("{base}/admin/search?queue=messages&error=no-such-error");
    let live = format!("{base}/admin/live/overview");
    let day = format!("{base}/admin?range=day");
    let mut times = Vec::with_capacity(renders);
    let mut count_times = Vec::with_capacity(renders);
    let mut search_times = Vec::with_capacity(renders);
    let mut live_times = Vec::with_capacity(renders);
    let mut day_times = Vec::with_capacity(renders);
    for _ in 0..renders {
        times.push(timed_get(&http, &overview).await?.0);
        count_times.push(timed_get(&http, &counts).await?.0);
        search_times.push(timed_get(&http, &search).await?.0);
        live_times.push(timed_get(&http, &live).await?.0);
        day_times.push(timed_get(&http, &day).await?.0);
    }
    for v in [
        &mut times,
        &mut count_times,
        &mut search_times,
        &mut live_times,
        &mut day_times,
    ] {
        v.sort();
    }
    Ok(Report {
        profile: d.profile,
        jobs,
        seed,
        done_shown,
        renders: times,
        counts: count_times,
        searches: search_times,
        live: live_times,
        day: day_times,
    })
}

pub fn print(r: &Report) {
    let at = |v: &[Duration], q: f64| {
        v.get(((v.len() as f64 * q).ceil() as usize).saturating_sub(1))
            .map_or(0.0, |d| d.as_secs_f64() * 1e3)
    };
    println!(
        "[{}] {} finished jobs seeded in {:.1} s; the overview shows done = {}",
        r.profile,
        r.jobs,
        r.seed.as_secs_f64(),
        r.done_shown
    );
    println!(
        "[{}] GET /admin over {} renders: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        r.profile,
        r.renders.len(),
        at(&r.renders, 0.5),
        at(&r.renders, 0.99),
        at(&r.renders, 1.0)
    );
    for (what, times) in [
        ("GET /admin/live/overview (the live refresh)", &r.live),
        ("GET /admin?range=day (a day of figures)", &r.day),
        ("GET /admin/api/queues (the counts' JSON)", &r.counts),
        (
            "GET /admin/search matching nothing (it reads the dashboard's whole scan of each state)",
            &r.searches,
        ),
    ] {
        println!(
            "[{}] {what}: p50 {:.1} ms, p99 {:.1} ms",
            r.profile,
            at(times, 0.5),
            at(times, 0.99)
        );
    }
}
