//! Chooses the profile from the configuration, opens its backends, and
//! hands each role the part of them it uses.
//!
//! - `REDIS_URL` set: numbers, pending entries and the queue live in Redis;
//!   on a Redis Cluster (`redis+cluster://…`) the queue is a
//!   `ShardedQueue` and each application's keys live on its home shard.
//! - unset: they live in the relational database, which must then be
//!   SQLite (the embedded profile keeps the intake in one transaction).
use std::{sync::Arc, time::Duration};

use sea_orm::DatabaseConnection;

use chat_api::ApiDeps;
use chat_dashboard::DashboardDeps;
use chat_jobs::WorkerDeps;
use chat_links::{
    Result, StoreError, db,
    redis_durability::{Durability, Inspector},
    redis_link,
};
use chat_queue::{JobQueue, RedisStreamQueue, ShardedQueue, SqliteQueue, record_shard_count};
use chat_scheduler::SchedulerDeps;
use chat_search::{self as search, SearchConfig, SearchIndex};
use chat_store::{
    homes::{Homes, Layout},
    idempotency::{IdempotencyStore, RedisIdempotency, SqliteIdempotency},
    intake::{Intake, RedisIntake, SqliteIntake},
    ratelimit::{MemoryRateLimiter, RateLimiter, RedisRateLimiter},
};

#[derive(Clone, Debug)]
pub struct BackendsConfig {
    pub database_url: String,
    pub redis_url: Option<String>,
    /// Prepended to every Redis key, so several deployments (or test runs)
    /// can share one Redis.
    pub redis_prefix: String,
    /// The queues' shards on a Redis Cluster, over which new applications
    /// are homed (`chat_store::homes`).
    pub redis_shards: u16,
    /// How long a claimed job may stay unsettled before another consumer
    /// takes it over.
    pub claim_idle: Duration,
    /// How long a pending (not yet persisted) write stays readable.
    pub pending_ttl: Duration,
    /// Most done-job records kept per queue, for the dashboard's history.
    pub jobs_done_max: usize,
    /// How long an `Idempotency-Key` answers with its first response.
    pub idempotency_retention: Duration,
    pub search: SearchConfig,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Profile {
    Embedded,
    Distributed,
}

#[derive(Clone)]
pub struct Backends {
    /// For reads.
    pub db: DatabaseConnection,
    /// For writes: on SQLite a single connection, so writers queue in
    /// order instead of sleeping on the file lock; on MySQL the same pool
    /// as `db`.
    pub writer: DatabaseConnection,
    pub intake: Arc<dyn Intake>,
    pub queue: Arc<dyn JobQueue>,
    pub search: Arc<dyn SearchIndex>,
    /// The API's rate limits: in Redis when there is one, so every API
    /// process shares them.
    pub limiter: Arc<dyn RateLimiter>,
    /// `Idempotency-Key` records: in Redis beside the intake, or in SQLite.
    pub idempotency: Arc<dyn IdempotencyStore>,
    /// Reads what Redis keeps across a crash (distributed profile only).
    pub redis: Option<Inspector>,
    pub profile: Profile,
}

impl Backends {
    /// Connects and applies pending migrations: every role does this at
    /// start, so a fresh deployment needs no separate step.
    pub async fn open(config: &BackendsConfig) -> Result<Self> {
        let db = db::connect(&config.database_url).await?;
        let writer = if db::is_sqlite(&db) {
            db::connect_writer(&config.database_url).await?
        } else {
            db.clone()
        };
        db::migrate(&writer).await?;
        let search = search::open(&config.search).await?;
        match &config.redis_url {
            Some(url) => {
                let link = redis_link::client(url)?;
                let conn = redis_link::manager(&link).await?;
                let inspector = Inspector::new(conn.clone());
                check_durability(&inspector.durability().await?)?;
                let prefix = config.redis_prefix.as_str();
                let layout = match link.is_cluster() {
                    true => Layout::Cluster {
                        shards: config.redis_shards,
                    },
                    false => Layout::Node,
                };
                let queue: Arc<dyn JobQueue> = match layout {
                    Layout::Node => RedisStreamQueue::connect(url, prefix, config.claim_idle)
                        .await?
                        .with_done_cap(config.jobs_done_max),
                    Layout::Cluster { shards } => sharded_queue(url, config, shards).await?,
                };
                let homes = Arc::new(Homes::new(conn.clone(), prefix, layout));
                let intake = RedisIntake::connect(
                    url,
                    prefix,
                    db.clone(),
                    homes.clone(),
                    config.pending_ttl,
                )
                .await?;
                let idempotency = RedisIdempotency::new(
                    redis_link::manager(&link).await?,
                    prefix,
                    homes,
                    config.idempotency_retention,
                );
                Ok(Self {
                    db,
                    writer,
                    intake: Arc::new(intake),
                    queue,
                    search,
                    limiter: Arc::new(RedisRateLimiter::connect(url, prefix).await?),
                    idempotency: Arc::new(idempotency),
                    redis: Some(inspector),
                    profile: Profile::Distributed,
                })
            }
            None if db::is_sqlite(&db) => {
                let queue = SqliteQueue::new(db.clone(), writer.clone(), config.claim_idle)
                    .with_done_cap(config.jobs_done_max as u64);
                let intake = SqliteIntake::new(
                    db.clone(),
                    writer.clone(),
                    queue.clone(),
                    config.pending_ttl,
                );
                let idempotency =
                    SqliteIdempotency::new(writer.clone(), config.idempotency_retention);
                Ok(Self {
                    db,
                    writer,
                    intake: Arc::new(intake),
                    queue,
                    search,
                    limiter: Arc::new(MemoryRateLimiter::default()),
                    idempotency: Arc::new(idempotency),
                    redis: None,
                    profile: Profile::Embedded,
                })
            }
            None => Err(StoreError::Other(
                "a MySQL DATABASE_URL needs REDIS_URL: without Redis, numbers and the queue \
                 are embedded in SQLite"
                    .into(),
            )),
        }
    }
}

/// How often a process looks for shards another process configured.
const SHARD_LOOK_EVERY: Duration = Duration::from_secs(10);

/// The queue on a Redis Cluster: every shard any process was configured
/// with, growing when another process records more.
async fn sharded_queue(
    url: &str,
    config: &BackendsConfig,
    shards: u16,
) -> Result<Arc<ShardedQueue<RedisStreamQueue>>> {
    let prefix = config.redis_prefix.clone();
    let first = RedisStreamQueue::connect(url, &prefix, config.claim_idle)
        .await?
        .with_done_cap(config.jobs_done_max);
    let conn = redis_link::manager(&redis_link::client(url)?).await?;
    let recorded = record_shard_count(&conn, &prefix, shards).await?;
    let queue = ShardedQueue::new(
        recorded,
        Box::new(move |k| match k {
            0 => first.clone(),
            k => first.sibling(k),
        }),
    );
    let watched = Arc::downgrade(&queue);
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(SHARD_LOOK_EVERY).await;
            let Some(queue) = watched.upgrade() else {
                return;
            };
            match record_shard_count(&conn, &prefix, 0).await {
                Ok(count) => queue.grow(count),
                Err(e) => tracing::debug!(error = %e, "could not read the shard count"),
            }
        }
    });
    Ok(queue)
}

impl Backends {
    pub fn api(&self) -> ApiDeps {
        ApiDeps {
            db: self.db.clone(),
            writer: self.writer.clone(),
            intake: self.intake.clone(),
            idempotency: self.idempotency.clone(),
            limiter: self.limiter.clone(),
            queue: self.queue.clone(),
            search: self.search.clone(),
        }
    }

    pub fn worker(&self) -> WorkerDeps {
        WorkerDeps {
            db: self.db.clone(),
            writer: self.writer.clone(),
            queue: self.queue.clone(),
            intake: self.intake.clone(),
            search: self.search.clone(),
            single_writer: self.profile == Profile::Embedded,
        }
    }

    pub fn scheduler(&self) -> SchedulerDeps {
        SchedulerDeps {
            db: self.db.clone(),
            writer: self.writer.clone(),
            queue: self.queue.clone(),
            intake: self.intake.clone(),
            idempotency: self.idempotency.clone(),
            search: self.search.clone(),
        }
    }

    pub fn dashboard(&self) -> DashboardDeps {
        DashboardDeps {
            db: self.db.clone(),
            queue: self.queue.clone(),
            intake: self.intake.clone(),
            search: self.search.clone(),
            redis: self.redis.clone(),
        }
    }

    /// What a process's probes and `/metrics` read.
    pub fn observed(&self) -> chat_api::Observed {
        chat_api::Observed {
            db: self.db.clone(),
            queue: self.queue.clone(),
        }
    }
}

/// Refuses a Redis that may evict keys, and says loudly what a Redis
/// without persistence loses.
fn check_durability(durability: &Durability) -> Result<()> {
    if let Some(refusal) = durability.refusal() {
        return Err(StoreError::Other(refusal));
    }
    let loses = durability.what_a_crash_loses();
    if durability.loses_writes_on_restart() {
        tracing::warn!(
            appendonly = durability.aof,
            eviction = %durability.eviction,
            "{loses}"
        );
    } else {
        tracing::info!(
            appendonly = durability.aof,
            appendfsync = durability.fsync.as_deref().unwrap_or("unknown"),
            eviction = %durability.eviction,
            "{loses}"
        );
    }
    Ok(())
}
