//! Settings, from flags or (12-factor) the environment; `chat --help` lists
//! them all with their variables and defaults.
use std::{net::IpAddr, path::PathBuf, time::Duration};

use chat::backends::BackendsConfig;
use chat_jobs::{WorkerConfig, batcher::BatchConfig, settle::RetryPolicy};
use chat_observability::LogFormat;
use chat_queue::Retention;
use chat_scheduler::SchedulerConfig;
use chat_search::SearchConfig;
use clap::{Args, Parser, Subcommand};

mod roles;

#[derive(Parser, Debug)]
#[command(
    name = "chat",
    version,
    about = "Chat backend: REST API, job workers and scheduler"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub settings: Settings,
}

#[derive(Subcommand, Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Every role in one process (the default).
    Serve,
    /// The HTTP API only.
    Api,
    /// The job workers only.
    Worker,
    /// The periodic work only: count recounts, housekeeping, drift checks.
    Scheduler,
    /// Recount every chats_count and messages_count now, and exit.
    Recount,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Rebuild the search index from the database, or check it for drift.
    Reindex(ReindexArgs),
}

#[derive(Args, Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReindexArgs {
    /// Only compare per-chat counts with the database and repair the chats
    /// that differ, instead of rebuilding everything.
    #[arg(long)]
    pub check: bool,
    /// With --check: report drift without repairing it.
    #[arg(long, requires = "check")]
    pub dry_run: bool,
    /// Start a rebuild over instead of resuming an interrupted one.
    #[arg(long, conflicts_with = "check")]
    pub restart: bool,
}

#[derive(Args, Debug, Clone)]
pub struct Settings {
    /// Port the HTTP API listens on.
    #[arg(long, env = "PORT", default_value_t = 3000, global = true)]
    pub port: u16,
    /// The secret that opens the dashboard at /admin. Unset, the server
    /// makes up one at start and prints the dashboard's login link; set
    /// it when several API processes serve one dashboard.
    /// Known defaults, such as `change-me`, are refused.
    #[arg(long, env = "ADMIN_TOKEN", hide_env_values = true, global = true)]
    pub admin_token: Option<String>,
    /// Wrong admin tokens a client address may present (at the login form
    /// or as a bearer credential) per 15 minutes before it is refused with
    /// 429 until they are over; 0 turns the limit off.
    #[arg(
        long,
        env = "ADMIN_LOGIN_FAILURES",
        default_value_t = 10,
        global = true
    )]
    pub admin_login_failures: u32,
    /// Take the scheme from `X-Forwarded-Proto`, behind a proxy that ends
    /// TLS: the dashboard's session cookie is `Secure` only over HTTPS.
    /// [boolean: 1/0, true/false, yes/no, on/off]
    #[arg(
        long,
        env = "TRUST_FORWARDED_PROTO",
        default_value_t = false,
        action = clap::ArgAction::Set,
        value_parser = clap::builder::BoolishValueParser::new(),
        num_args = 0..=1,
        default_missing_value = "true",
        global = true
    )]
    pub trust_forwarded_proto: bool,
    /// Hides and refuses every dashboard action.
    /// [boolean: 1/0, true/false, yes/no, on/off]
    #[arg(
        long,
        env = "DASHBOARD_READ_ONLY",
        default_value_t = false,
        action = clap::ArgAction::Set,
        value_parser = clap::builder::BoolishValueParser::new(),
        num_args = 0..=1,
        default_missing_value = "true",
        global = true
    )]
    pub dashboard_read_only: bool,
    /// Jaeger's UI (e.g. http://localhost:16686); the dashboard links a
    /// job's trace id there when set.
    #[arg(long, env = "JAEGER_UI_URL", global = true)]
    pub jaeger_ui_url: Option<String>,
    /// `text` (for people) or `json` (one object per line, for collectors).
    #[arg(
        long,
        env = "LOG_FORMAT",
        default_value = "text",
        value_parser = ["text", "json"],
        global = true
    )]
    pub log_format: String,
    /// Port serving `GET /metrics` in a process without the API (`chat
    /// worker`, `chat scheduler`); unset, such a process serves none. The
    /// API serves `/metrics` on PORT.
    #[arg(long, env = "METRICS_PORT", global = true)]
    pub metrics_port: Option<u16>,
    /// Address the HTTP API binds.
    #[arg(long, env = "BIND_ADDR", default_value = "0.0.0.0", global = true)]
    pub bind_addr: IpAddr,
    /// Where embedded files (the SQLite database) live.
    #[arg(long, env = "DATA_DIR", default_value = "./data", global = true)]
    pub data_dir: PathBuf,
    /// mysql://… or sqlite://…; default: SQLite in DATA_DIR.
    #[arg(long, env = "DATABASE_URL", global = true)]
    pub database_url: Option<String>,
    /// When set, numbers and the queue live in Redis; unset, they are
    /// embedded. `redis://host:port` is one node;
    /// `redis+cluster://host:port,host:port` a Redis Cluster, named by any
    /// of its masters.
    #[arg(long, env = "REDIS_URL", global = true)]
    pub redis_url: Option<String>,
    /// On a Redis Cluster, how many shards the queues have, over which new
    /// applications are homed. May change on a running system: existing
    /// applications stay on their shard, and every shard ever configured
    /// keeps being consumed.
    #[arg(long, env = "REDIS_SHARDS", default_value_t = 16, global = true)]
    pub redis_shards: u16,
    /// Prefix of every Redis key, so deployments can share a Redis.
    #[arg(long, env = "REDIS_PREFIX", default_value = "chat:", global = true)]
    pub redis_prefix: String,
    /// Elasticsearch for message search; unset, search is embedded
    /// (tantivy in DATA_DIR/search).
    #[arg(long, env = "ELASTICSEARCH_URL", global = true)]
    pub elasticsearch_url: Option<String>,
    /// The Elasticsearch alias searches and writes go through; its
    /// generations are `<alias>-<name>`.
    #[arg(
        long,
        env = "SEARCH_INDEX",
        default_value = "chat-messages",
        global = true
    )]
    pub search_index: String,
    /// Primary shards of each Elasticsearch index generation; a new count
    /// applies from the next `chat reindex`.
    #[arg(
        long,
        env = "ELASTICSEARCH_SHARDS",
        default_value_t = 1,
        value_parser = clap::value_parser!(u32).range(1..=1024),
        global = true
    )]
    pub elasticsearch_shards: u32,
    /// Largest message body accepted, in bytes.
    #[arg(long, env = "MAX_MESSAGE_BYTES", default_value_t = 64 * 1024, global = true)]
    pub max_message_bytes: usize,
    /// Turns the API's rate limits on or off.
    /// [boolean: 1/0, true/false, yes/no, on/off]
    #[arg(
        long,
        env = "RATE_LIMIT_ENABLED",
        default_value_t = true,
        action = clap::ArgAction::Set,
        value_parser = clap::builder::BoolishValueParser::new(),
        num_args = 0..=1,
        default_missing_value = "true",
        global = true
    )]
    pub rate_limit_enabled: bool,
    /// The window the rate limits count over, in seconds; a whole window's
    /// worth may come in one burst.
    #[arg(
        long,
        env = "RATE_LIMIT_WINDOW_SECS",
        default_value_t = 60,
        global = true
    )]
    pub rate_limit_window_secs: u64,
    /// Writes per window per application token (0: unlimited).
    #[arg(
        long,
        env = "RATE_LIMIT_TOKEN_WRITES",
        default_value_t = 60_000,
        global = true
    )]
    pub rate_limit_token_writes: u32,
    /// Reads per window per application token (0: unlimited).
    #[arg(
        long,
        env = "RATE_LIMIT_TOKEN_READS",
        default_value_t = 300_000,
        global = true
    )]
    pub rate_limit_token_reads: u32,
    /// Writes per window per client address (0: unlimited).
    #[arg(
        long,
        env = "RATE_LIMIT_IP_WRITES",
        default_value_t = 60_000,
        global = true
    )]
    pub rate_limit_ip_writes: u32,
    /// Reads per window per client address (0: unlimited).
    #[arg(
        long,
        env = "RATE_LIMIT_IP_READS",
        default_value_t = 300_000,
        global = true
    )]
    pub rate_limit_ip_reads: u32,
    /// Take the client address from `X-Forwarded-For` (behind a proxy only).
    /// [boolean: 1/0, true/false, yes/no, on/off]
    #[arg(
        long,
        env = "TRUST_FORWARDED_FOR",
        default_value_t = false,
        action = clap::ArgAction::Set,
        value_parser = clap::builder::BoolishValueParser::new(),
        num_args = 0..=1,
        default_missing_value = "true",
        global = true
    )]
    pub trust_forwarded_for: bool,
    /// Origins allowed to call the API from a browser, comma-separated, or
    /// `*`; unset, no CORS header is sent.
    #[arg(
        long,
        env = "CORS_ALLOWED_ORIGINS",
        value_delimiter = ',',
        global = true
    )]
    pub cors_allowed_origins: Vec<String>,
    /// How long a client may take to send a request's headers, in ms.
    #[arg(
        long,
        env = "HEADER_READ_TIMEOUT_MS",
        default_value_t = 10_000,
        global = true
    )]
    pub header_read_timeout_ms: u64,
    /// After SIGTERM or SIGINT, how long in-flight requests and batches may
    /// take before the process exits anyway, in seconds; what is
    /// unfinished is left for another worker.
    #[arg(
        long,
        env = "SHUTDOWN_TIMEOUT_SECS",
        default_value_t = 30,
        global = true
    )]
    pub shutdown_timeout_secs: u64,
    /// API requests handled at once; more are answered 503 at once.
    #[arg(
        long,
        env = "MAX_CONCURRENT_REQUESTS",
        default_value_t = 1024,
        global = true
    )]
    pub max_concurrent_requests: usize,
    /// Longest an API request may take, reading its body included, in ms;
    /// on every other route (the dashboard's forms, say), the longest a
    /// request body may take to arrive.
    #[arg(
        long,
        env = "REQUEST_TIMEOUT_MS",
        default_value_t = 30_000,
        global = true
    )]
    pub request_timeout_ms: u64,
    /// Client connections open at once on the HTTP port; past it, new
    /// ones wait in the listen backlog until one closes.
    #[arg(long, env = "MAX_CONNECTIONS", default_value_t = 10_000, global = true)]
    pub max_connections: usize,
    /// Most jobs written in one bulk write. A power of two: a bulk
    /// statement's rows are rounded up to one of a few sizes, and a full
    /// batch then needs no padding.
    #[arg(long, env = "BATCH_SIZE", default_value_t = 512, global = true)]
    pub batch_size: usize,
    /// Most messages indexed in one bulk call (one tantivy commit).
    #[arg(long, env = "INDEX_BATCH_SIZE", default_value_t = 5_000, global = true)]
    pub index_batch_size: usize,
    /// How long a batch waits to fill, in milliseconds.
    #[arg(long, env = "BATCH_LINGER_MS", default_value_t = 20, global = true)]
    pub batch_linger_ms: u64,
    /// How long an index batch waits to fill, in milliseconds. Longer
    /// than persistence's: each bulk call is a tantivy commit (a segment
    /// written and synced, merged later) or an Elasticsearch `_bulk`,
    /// whose cost barely depends on its size.
    #[arg(long, env = "INDEX_LINGER_MS", default_value_t = 250, global = true)]
    pub index_linger_ms: u64,
    /// Bulk writes in flight per queue (on SQLite, 1 for the queues whose
    /// rows go to the database: it has one writer).
    #[arg(
        long,
        env = "BATCH_WRITES_IN_FLIGHT",
        default_value_t = 2,
        global = true
    )]
    pub batch_writes_in_flight: usize,
    /// Longest one bulk write may take, in milliseconds, before its
    /// backend counts as down: its workers pause, and its jobs are handed
    /// back at no cost in attempts.
    #[arg(
        long,
        env = "WRITE_TIMEOUT_MS",
        default_value_t = 10_000,
        global = true
    )]
    pub write_timeout_ms: u64,
    /// Attempts before a job is dead. Only failures caused by the job's own
    /// data count: an outage of a backend spends none.
    #[arg(long, env = "JOB_MAX_ATTEMPTS", default_value_t = 8, global = true)]
    pub job_max_attempts: u32,
    /// Attempts before an indexing job is dead (outages of search spend none).
    #[arg(long, env = "INDEX_MAX_ATTEMPTS", default_value_t = 40, global = true)]
    pub index_max_attempts: u32,
    /// First retry delay, in milliseconds; doubles per attempt, plus a random 0–100%.
    #[arg(long, env = "RETRY_BASE_MS", default_value_t = 200, global = true)]
    pub retry_base_ms: u64,
    /// Cap on the doubling of retry delays (before jitter), in milliseconds.
    #[arg(long, env = "RETRY_MAX_MS", default_value_t = 60_000, global = true)]
    pub retry_max_ms: u64,
    /// A job unsettled this long (its worker died) is taken over, in ms.
    #[arg(long, env = "CLAIM_IDLE_MS", default_value_t = 15_000, global = true)]
    pub claim_idle_ms: u64,
    /// How long an accepted, not yet persisted write stays readable, in s.
    #[arg(long, env = "PENDING_TTL_SECS", default_value_t = 3600, global = true)]
    pub pending_ttl_secs: u64,
    /// Seconds between incremental recounts of chats_count and
    /// messages_count (only the parents written since the last run).
    #[arg(
        long,
        env = "COUNTS_INTERVAL_SECS",
        default_value_t = 60,
        global = true
    )]
    pub counts_interval_secs: u64,
    /// Seconds between full recounts, which repair any drift.
    #[arg(
        long,
        env = "COUNTS_FULL_INTERVAL_SECS",
        default_value_t = 3600,
        global = true
    )]
    pub counts_full_interval_secs: u64,
    /// Seconds between housekeeping runs (job history trims, expired
    /// pending entries).
    #[arg(
        long,
        env = "HOUSEKEEPING_INTERVAL_SECS",
        default_value_t = 60,
        global = true
    )]
    pub housekeeping_interval_secs: u64,
    /// Seconds between search drift checks (with repair); 0 turns them off.
    #[arg(
        long,
        env = "SEARCH_DRIFT_INTERVAL_SECS",
        default_value_t = 3600,
        global = true
    )]
    pub search_drift_interval_secs: u64,
    /// How long done jobs stay in the queue's history, in seconds.
    #[arg(
        long,
        env = "JOBS_DONE_RETENTION_SECS",
        default_value_t = 3600,
        global = true
    )]
    pub jobs_done_retention_secs: u64,
    /// How long dead index jobs are kept, in seconds (7 days). Dead chat
    /// and message jobs hold accepted writes: they are kept until an
    /// operator retries or discards them.
    #[arg(
        long,
        env = "JOBS_DEAD_RETENTION_SECS",
        default_value_t = 7 * 24 * 3600,
        global = true
    )]
    pub jobs_dead_retention_secs: u64,
    /// How long an `Idempotency-Key` answers with its first response, in
    /// seconds (24 h).
    #[arg(
        long,
        env = "IDEMPOTENCY_RETENTION_SECS",
        default_value_t = 24 * 3600,
        global = true
    )]
    pub idempotency_retention_secs: u64,
    /// Most done jobs kept per queue, whatever their age.
    #[arg(long, env = "JOBS_DONE_MAX", default_value_t = 10_000, global = true)]
    pub jobs_done_max: usize,
    /// Scheduler runs kept per task in the run history.
    #[arg(long, env = "SCHEDULER_HISTORY", default_value_t = 1000, global = true)]
    pub scheduler_history: u64,
}

#[cfg(test)]
mod tests;
