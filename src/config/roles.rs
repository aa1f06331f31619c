//! What each role and backend is given, read off the settings.
use super::*;

impl Command {
    /// Whether this command may open the embedded search index when no
    /// Elasticsearch is configured: `serve`, the one process that both
    /// writes and reads it, and `reindex`, which refuses to run while a
    /// server holds it. No other role could share its index.
    pub fn embeds_search(&self) -> bool {
        matches!(self, Command::Serve | Command::Reindex(_))
    }
}

fn present(v: &Option<String>) -> Option<String> {
    v.as_ref().filter(|s| !s.trim().is_empty()).cloned()
}

impl Settings {
    pub fn backends(&self, command: &Command) -> anyhow::Result<BackendsConfig> {
        let database_url = match present(&self.database_url) {
            Some(url) => url,
            None => {
                std::fs::create_dir_all(&self.data_dir)?;
                chat_links::db::default_sqlite_url(&self.data_dir)
            }
        };
        Ok(BackendsConfig {
            database_url,
            redis_url: present(&self.redis_url),
            redis_prefix: self.redis_prefix.clone(),
            redis_shards: self.redis_shards.max(1),
            claim_idle: Duration::from_millis(self.claim_idle_ms),
            pending_ttl: Duration::from_secs(self.pending_ttl_secs),
            jobs_done_max: self.jobs_done_max,
            idempotency_retention: Duration::from_secs(self.idempotency_retention_secs.max(1)),
            search: match present(&self.elasticsearch_url) {
                Some(url) => SearchConfig::Elasticsearch {
                    url,
                    alias: self.search_index.clone(),
                    shards: self.elasticsearch_shards,
                },
                None if command.embeds_search() => SearchConfig::Embedded {
                    dir: self.data_dir.join("search"),
                },
                None => SearchConfig::Unconfigured,
            },
        })
    }

    pub fn log_format(&self) -> LogFormat {
        match self.log_format.as_str() {
            "json" => LogFormat::Json,
            _ => LogFormat::Text,
        }
    }

    pub fn scheduler(&self) -> SchedulerConfig {
        let secs = |s: u64| Duration::from_secs(s.max(1));
        SchedulerConfig {
            counts_every: secs(self.counts_interval_secs),
            counts_full_every: secs(self.counts_full_interval_secs),
            housekeeping_every: secs(self.housekeeping_interval_secs),
            search_drift_every: (self.search_drift_interval_secs > 0)
                .then(|| secs(self.search_drift_interval_secs)),
            retention: Retention {
                done: Duration::from_secs(self.jobs_done_retention_secs),
                dead: Duration::from_secs(self.jobs_dead_retention_secs),
            },
            history: self.scheduler_history.max(1),
            owner: chat_scheduler::default_owner(),
        }
    }

    pub fn worker(&self) -> WorkerConfig {
        let retry = RetryPolicy {
            max_attempts: self.job_max_attempts.max(1),
            base: Duration::from_millis(self.retry_base_ms),
            max: Duration::from_millis(self.retry_max_ms.max(self.retry_base_ms)),
        };
        WorkerConfig {
            batch: BatchConfig {
                max_rows: self.batch_size.max(1),
                linger: Duration::from_millis(self.batch_linger_ms),
                writes_in_flight: self.batch_writes_in_flight.max(1),
                write_timeout: Duration::from_millis(self.write_timeout_ms.max(1)),
            },
            retry,
            index_retry: RetryPolicy {
                max_attempts: self.index_max_attempts.max(1),
                ..retry
            },
            lease: Duration::from_millis(self.claim_idle_ms.max(1)),
            index_batch_rows: self.index_batch_size.max(1),
            index_linger: Duration::from_millis(self.index_linger_ms),
        }
    }
}
