//! The human table and the machine-readable `RESULT` line.
use crate::{run::Report, stats::Summary};

fn row(name: &str, s: &Summary) {
    println!(
        "  {name:<46} {:>9.0} {:>8.2} {:>8.2} {:>8.2} {:>8.2}",
        s.per_sec, s.p50_ms, s.p99_ms, s.p999_ms, s.max_ms
    );
}

pub fn print(profile: &str, concurrency: usize, messages: usize, r: &Report) {
    let embedded = profile == "embedded";
    let post_ratio = r.post.per_sec / r.post_limit.per_sec;
    let sustained_ratio = r.sustained_rps / r.post_limit.per_sec;
    let persist_ratio = r.persist_rps / r.raw.rows_per_sec();
    let (api_role, limit) = if embedded {
        (
            "`chat api`, then `chat serve` (all roles)",
            "one SQLite INSERT, group-committed",
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
    row(&format!("limit: bare handler, {limit}"), &r.post_limit);
    row(
        "POST message, many chats, worker running",
        &r.post_with_worker,
    );
    row("GET message, persisted", &r.get);
    if let Some(limit) = &r.get_limit {
        row("limit: bare handler, one MySQL point select", limit);
    }
    println!(
        "  {:<46} {:>9.0}",
        "sustained: POSTs taken in and persisted", r.sustained_rps
    );
    println!(
        "  {:<46} {:>9.0}   {messages} rows in {:.2} s",
        if embedded {
            "persist: drain of the queued messages, indexed"
        } else {
            "persist: drain of the queued messages"
        },
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
    if let Some(i) = &r.index {
        println!(
            "  {:<46} {:>9.0}   {} docs; worker {:.1} MiB, {:.1} µs CPU per doc",
            format!("index: worker, into {}", i.server),
            i.worker_dps,
            i.docs,
            i.worker_rss_mb,
            i.worker_cpu_us_per_doc
        );
        println!(
            "  {:<46} {:>9.0}",
            "limit: raw bulk adds, same batch size", i.raw_dps
        );
    }
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
    if let Some(d) = &r.decay {
        let tenths: Vec<String> = d.tenths.iter().map(|t| format!("{t:.0}")).collect();
        println!(
            "  decay over {} writes, POST/s per tenth: {}; last/first {:.2}; {:.0}/s taken in and persisted",
            d.writes,
            tenths.join(" "),
            d.ratio(),
            d.persisted_rps
        );
    }
    println!(
        "  peak RSS: api {:.1} MiB, {} {:.1} MiB (at the end: {:.1} MiB anonymous, {:.1} MiB mapped files)",
        r.api_rss_mb,
        if embedded { "serve" } else { "worker" },
        r.worker_rss_mb,
        r.worker_rss_split_mb.0,
        r.worker_rss_split_mb.1
    );
    let posts = r.post.count.max(1) as f64;
    let per_post = |secs: f64| secs * 1e6 / posts;
    let per_row = |secs: f64| secs * 1e6 / messages as f64;
    println!(
        "  CPU per POST (worker stopped): api {:.1} µs, redis {:.1} µs, mysql {:.1} µs, load generator {:.1} µs",
        r.api_cpu_us_per_post,
        per_post(r.post_other_cpu.redis),
        per_post(r.post_other_cpu.mysql),
        per_post(r.post_other_cpu.bench)
    );
    let gets = r.get.count.max(1) as f64;
    let per_get = |secs: f64| secs * 1e6 / gets;
    println!(
        "  CPU per GET: {} {:.1} µs, redis {:.1} µs, mysql {:.1} µs, load generator {:.1} µs",
        if embedded { "serve" } else { "api" },
        per_get(r.get_cpu.0),
        per_get(r.get_cpu.1.redis),
        per_get(r.get_cpu.1.mysql),
        per_get(r.get_cpu.1.bench)
    );
    println!(
        "  CPU per row drained: {} {:.1} µs, redis {:.1} µs, mysql {:.1} µs",
        if embedded { "serve" } else { "worker" },
        r.worker_cpu_us_per_row,
        per_row(r.drain_other_cpu.redis),
        per_row(r.drain_other_cpu.mysql)
    );
    println!(
        "  machine CPU per row: drain {:.1} µs ({:.0}% busy), raw INSERT {:.1} µs ({:.0}% busy)",
        per_row(r.drain_cpu.0),
        r.drain_cpu.1 * 100.0,
        per_row(r.raw_cpu.0),
        r.raw_cpu.1 * 100.0
    );
    let mut result = format!(
        "RESULT profile={profile} post_rps={:.0} post_p99_ms={:.2} post_limit_rps={:.0} post_ratio={post_ratio:.2} \
         sustained_rps={:.0} sustained_ratio={sustained_ratio:.2} \
         persist_rps={:.0} persist_limit_rps={:.0} persist_ratio={persist_ratio:.2} lag_p99_ms={:.2} lag_bound_ms={:.1}",
        r.post.per_sec,
        r.post.p99_ms,
        r.post_limit.per_sec,
        r.sustained_rps,
        r.persist_rps,
        r.raw.rows_per_sec(),
        r.lag.p99_ms,
        r.lag_bound_ms,
    );
    if let Some(limit) = &r.get_limit {
        result += &format!(
            " get_rps={:.0} get_limit_rps={:.0} get_ratio={:.2}",
            r.get.per_sec,
            limit.per_sec,
            r.get.per_sec / limit.per_sec
        );
    }
    if let Some(i) = &r.index {
        result += &format!(
            " index_dps={:.0} index_limit_dps={:.0} index_ratio={:.2} index_worker_rss_mb={:.1}",
            i.worker_dps,
            i.raw_dps,
            i.ratio(),
            i.worker_rss_mb
        );
    } else if !embedded {
        result += " index_ratio=na";
    }
    if let Some(d) = &r.decay {
        result += &format!(" decay={:.2} decay_writes={}", d.ratio(), d.writes);
    }
    if embedded {
        result += &format!(
            " api_rss_mb={:.1} serve_rss_mb={:.1}",
            r.api_rss_mb, r.worker_rss_mb
        );
    } else {
        result += &format!(
            " api_rss_mb={:.1} worker_rss_mb={:.1}",
            r.api_rss_mb, r.worker_rss_mb
        );
    }
    result += &format!(
        " api_cpu_us_per_post={:.1} worker_cpu_us_per_row={:.1} api_cpu_us_per_get={:.1}",
        r.api_cpu_us_per_post,
        r.worker_cpu_us_per_row,
        r.get_cpu.0 * 1e6 / r.get.count.max(1) as f64
    );
    println!("{result}");
}
