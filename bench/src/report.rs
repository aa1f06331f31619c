//! The human table and the machine-readable `RESULT` line.
use crate::{run::Report, stats::Summary};

fn row(name: &str, s: &Summary) {
    println!(
        "  {name:<46} {:>9.0} {:>8.2} {:>8.2} {:>8.2} {:>8.2}",
        s.per_sec, s.p50_ms, s.p99_ms, s.p999_ms, s.max_ms
    );
}

pub fn print(profile: &str, concurrency: usize, messages: usize, r: &Report) {
    let post_ratio = r.post.per_sec / r.post_limit.per_sec;
    let persist_ratio = r.persist_rps / r.raw.rows_per_sec();
    let (api_role, counter) = if profile == "embedded" {
        (
            "`chat api`, then `chat serve` (all roles)",
            "one SQLite UPDATE",
        )
    } else {
        (
            "`chat api` + `chat worker`, MariaDB + Redis",
            "one Redis INCR",
        )
    };
    println!();
    println!("profile {profile}: {api_role}; concurrency {concurrency}");
    println!(
        "  {:<46} {:>9} {:>8} {:>8} {:>8} {:>8}",
        "scenario", "per s", "p50 ms", "p99 ms", "p99.9 ms", "max ms"
    );
    row("POST message, many chats, worker stopped", &r.post);
    row("POST message, one hot chat, worker stopped", &r.post_hot);
    row(&format!("limit: bare handler, {counter}"), &r.post_limit);
    row(
        "POST message, many chats, worker running",
        &r.post_with_worker,
    );
    row("GET message, persisted", &r.get);
    println!(
        "  {:<46} {:>9.0}",
        "sustained: POSTs taken in and persisted", r.sustained_rps
    );
    println!(
        "  {:<46} {:>9.0}   {messages} rows in {:.2} s",
        "persist: drain of the queued messages",
        r.persist_rps,
        r.drain.as_secs_f64()
    );
    println!(
        "  {:<46} {:>9.0}   {:.2} ms per batch, p99 {:.2} ms",
        "limit: raw multi-row INSERT, same batch size",
        r.raw.rows_per_sec(),
        r.raw.batch_ms(),
        r.raw.batch_p99_ms()
    );
    println!(
        "  {:<46} {:>9} {:>8.2} {:>8.2} {:>8.2} {:>8.2}",
        format!("lag 201 -> row in table, at {:.0} POST/s", r.lag_rate),
        "",
        r.lag.p50_ms,
        r.lag.p99_ms,
        r.lag.p999_ms,
        r.lag.max_ms
    );
    println!(
        "  lag bound (3 x linger + one bulk write): {:.1} ms; lag p99 {} it; watched every {:.1} ms",
        r.lag_bound_ms,
        if r.lag.p99_ms <= r.lag_bound_ms {
            "within"
        } else {
            "OVER"
        },
        r.lag_lookup.as_secs_f64() * 1e3
    );
    println!(
        "  peak RSS: api {:.1} MiB, worker {:.1} MiB",
        r.api_rss_mb, r.worker_rss_mb
    );
    println!(
        "  CPU: api {:.1} µs per POST, worker {:.1} µs per row drained",
        r.api_cpu_us_per_post, r.worker_cpu_us_per_row
    );
    let per_row = |(secs, _): (f64, f64)| secs * 1e6 / messages as f64;
    println!(
        "  machine CPU per row: drain {:.1} µs ({:.0}% busy), raw INSERT {:.1} µs ({:.0}% busy)",
        per_row(r.drain_cpu),
        r.drain_cpu.1 * 100.0,
        per_row(r.raw_cpu),
        r.raw_cpu.1 * 100.0
    );
    println!("  post_ratio {post_ratio:.2}, persist_ratio {persist_ratio:.2}");
    println!(
        "RESULT profile={profile} post_rps={:.0} post_p99_ms={:.2} post_limit_rps={:.0} post_ratio={post_ratio:.2} \
         persist_rps={:.0} persist_limit_rps={:.0} persist_ratio={persist_ratio:.2} lag_p99_ms={:.2} \
         api_rss_mb={:.1} worker_rss_mb={:.1}",
        r.post.per_sec,
        r.post.p99_ms,
        r.post_limit.per_sec,
        r.persist_rps,
        r.raw.rows_per_sec(),
        r.lag.p99_ms,
        r.api_rss_mb,
        r.worker_rss_mb
    );
}
