//! The private servers a scenario faults: Redis with an AOF, MariaDB, and
//! the search emulator. Each knows how to start, break and come back.

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{
    processes::{Proc, find_program, output},
    report::RedisStats,
};

/// How long any server gets to answer after a (re)start before the
/// scenario gives up on the machine rather than on the system.
const READY_WITHIN: Duration = Duration::from_secs(60);

pub(crate) struct Servers {
    pub redis: Redis,
    pub db: MariaDb,
    pub search: Search,
}

pub(crate) struct Redis {
    proc: Proc,
    cli: PathBuf,
    pub port: u16,
}

impl Redis {
    /// `appendfsync always`, so a SIGKILL loses nothing it acknowledged:
    /// any loss the check finds is the system's, not the fault's.
    pub async fn start(dir: &Path, port: u16) -> Result<Redis> {
        let data = dir.join("redis");
        std::fs::create_dir_all(&data)?;
        let args: Vec<String> = [
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--dir",
            &data.display().to_string(),
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
            "--save",
            "",
        ]
        .map(str::to_owned)
        .to_vec();
        let program = find_program("redis-server").context("redis-server not installed")?;
        let mut redis = Redis {
            proc: Proc::new("redis", program, &args, &[], dir.join("redis.log")),
            cli: find_program("redis-cli").context("redis-cli not installed")?,
            port,
        };
        redis.proc.start()?;
        redis.wait_ready().await?;
        Ok(redis)
    }

    /// SIGKILL, then the same command again, which replays the AOF.
    pub async fn kill_and_restart(&mut self) -> Result<()> {
        self.proc.kill();
        self.proc.start()?;
        self.wait_ready().await
    }

    /// Closes every client connection from the server side; returns how
    /// many there were.
    pub async fn kill_clients(&self) -> Result<u64> {
        let out = self.cli(&["CLIENT", "KILL", "TYPE", "normal"]).await?;
        Ok(out.trim().parse().unwrap_or(0))
    }

    pub async fn stats(&self) -> Result<RedisStats> {
        let keys = self.cli(&["DBSIZE"]).await?.trim().parse()?;
        let info = self.cli(&["INFO", "memory"]).await?;
        let used_memory = info
            .lines()
            .find_map(|l| l.strip_prefix("used_memory:"))
            .context("INFO memory has no used_memory")?
            .trim()
            .parse()?;
        // The one place this crate looks at key names: to tell the
        // idempotency records, which stay for their retention by design,
        // from the pending entries, which must go once persisted.
        let pending = self.scan("*:pending:*").await?;
        let idempotency = self.scan("*:idem:*").await?;
        let mut sampled = 0u64;
        let sample: Vec<&String> = idempotency.iter().take(200).collect();
        for key in &sample {
            sampled += self
                .cli(&["MEMORY", "USAGE", key])
                .await?
                .trim()
                .parse::<u64>()
                .unwrap_or(0);
        }
        let idempotency_bytes = match sample.len() {
            0 => 0,
            n => sampled * idempotency.len() as u64 / n as u64,
        };
        Ok(RedisStats {
            keys,
            used_memory,
            pending_keys: pending.len() as u64,
            idempotency_keys: idempotency.len() as u64,
            idempotency_bytes,
        })
    }

    async fn scan(&self, pattern: &str) -> Result<Vec<String>> {
        // A million keys take seconds to walk.
        let out = self
            .cli_within(&["--scan", "--pattern", pattern], Duration::from_secs(300))
            .await?;
        Ok(out
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect())
    }

    async fn cli(&self, args: &[&str]) -> Result<String> {
        self.cli_within(args, Duration::from_secs(10)).await
    }

    async fn cli_within(&self, args: &[&str], within: Duration) -> Result<String> {
        let mut all = vec!["-p".to_owned(), self.port.to_string()];
        all.extend(args.iter().map(|a| a.to_string()));
        output(&self.cli, &all, &[], within).await
    }

    /// Until PING answers PONG: while it replays the AOF, Redis accepts
    /// connections but answers LOADING.
    async fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + READY_WITHIN;
        while !ping(self.port).await {
            if !self.proc.is_running() {
                bail!("redis exited at start:\n{}", self.proc.log_tail());
            }
            if Instant::now() > deadline {
                bail!("redis did not answer PING:\n{}", self.proc.log_tail());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }
}

async fn ping(port: u16) -> bool {
    let attempt = async {
        let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        conn.write_all(b"PING\r\n").await?;
        let mut buf = [0u8; 64];
        let n = conn.read(&mut buf).await?;
        Ok::<_, std::io::Error>(buf[..n].starts_with(b"+PONG"))
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(1), attempt).await,
        Ok(Ok(true))
    )
}

pub(crate) struct MariaDb {
    proc: Proc,
    client: PathBuf,
    pub port: u16,
}

impl MariaDb {
    /// Creates the data directory; takes a few seconds, so the scenario
    /// runs it beside the other servers' start.
    pub async fn install(dir: &Path) -> Result<()> {
        let program = find_program("mariadb-install-db").context("mariadb-install-db missing")?;
        let args = vec![
            "--no-defaults".to_owned(),
            format!("--datadir={}", dir.join("mysql").display()),
            "--auth-root-authentication-method=normal".to_owned(),
        ];
        let out = output(&program, &args, &[], READY_WITHIN).await?;
        std::fs::write(dir.join("mariadb-install.log"), out)?;
        Ok(())
    }

    pub async fn start(dir: &Path, port: u16) -> Result<MariaDb> {
        let args = vec![
            "--no-defaults".to_owned(),
            format!("--datadir={}", dir.join("mysql").display()),
            format!("--port={port}"),
            "--bind-address=127.0.0.1".to_owned(),
            format!("--socket={}", dir.join("my.sock").display()),
            "--user=root".to_owned(),
            "--skip-log-error".to_owned(),
        ];
        let program = find_program("mariadbd").context("mariadbd not installed")?;
        let client = find_program("mysql")
            .or_else(|| find_program("mariadb"))
            .context("no mysql client")?;
        let mut db = MariaDb {
            proc: Proc::new("mariadbd", program, &args, &[], dir.join("mariadbd.log")),
            client,
            port,
        };
        db.proc.start()?;
        db.wait_ready().await?;
        Ok(db)
    }

    pub async fn sql(&self, statement: &str) -> Result<String> {
        let args = [
            "--no-defaults",
            "--protocol=TCP",
            "-h127.0.0.1",
            &format!("-P{}", self.port),
            "-uroot",
            "--connect-timeout=2",
            "-e",
            statement,
        ]
        .map(str::to_owned);
        output(&self.client, &args, &[], Duration::from_secs(10)).await
    }

    /// SIGSTOP: the server keeps its connections open and answers nothing,
    /// like a host that stopped responding.
    pub fn freeze(&self) -> Result<()> {
        self.proc.signal("STOP")
    }

    pub fn thaw(&self) -> Result<()> {
        self.proc.signal("CONT")
    }

    /// SIGKILL, then the same datadir again: InnoDB recovers from its redo
    /// log.
    pub async fn kill_and_restart(&mut self) -> Result<()> {
        self.proc.kill();
        self.proc.start()?;
        self.wait_ready().await
    }

    async fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            match self.sql("SELECT 1").await {
                Ok(_) => return Ok(()),
                Err(e) => {
                    if !self.proc.is_running() {
                        bail!("mariadbd exited at start:\n{}", self.proc.log_tail());
                    }
                    if Instant::now() > deadline {
                        bail!("mariadbd did not answer: {e:#}\n{}", self.proc.log_tail());
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The osmem-server emulator. It keeps everything in memory, so a restart
/// comes back empty: no template, no alias, no documents.
pub struct Search {
    proc: Proc,
    http: reqwest::Client,
    pub url: String,
}

impl Search {
    pub async fn start(dir: &Path, program: &Path, port: u16) -> Result<Search> {
        let args = vec![
            "--addr".to_owned(),
            format!("127.0.0.1:{port}"),
            "--no-ja".to_owned(),
            "--no-stdin-watch".to_owned(),
            // If this process dies without unwinding, the emulator follows.
            "--parent-pid".to_owned(),
            std::process::id().to_string(),
        ];
        let mut search = Search {
            proc: Proc::new("osmem-server", program, &args, &[], dir.join("osmem.log")),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()?,
            url: format!("http://127.0.0.1:{port}"),
        };
        search.proc.start()?;
        search.wait_ready().await?;
        Ok(search)
    }

    /// Freezes it: connections stay open and nothing answers, as with a
    /// node gone silent. Killed, the emulator would come back empty, which a
    /// real Elasticsearch node does not.
    pub fn down(&mut self) -> Result<()> {
        self.proc.signal("STOP")
    }

    /// Thaws it and waits until it answers.
    pub async fn up(&mut self) -> Result<()> {
        self.proc.signal("CONT")?;
        self.wait_ready().await
    }

    async fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            if let Ok(r) = self.http.get(&self.url).send().await
                && r.status().is_success()
            {
                return Ok(());
            }
            if !self.proc.is_running() {
                bail!("osmem-server exited at start:\n{}", self.proc.log_tail());
            }
            if Instant::now() > deadline {
                bail!("osmem-server did not answer:\n{}", self.proc.log_tail());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Documents searchable through `alias` (refreshed first, as a search
    /// would see them). 0 when the name does not exist at all.
    pub async fn count(&self, alias: &str) -> Result<u64> {
        let _ = self
            .http
            .post(format!("{}/{alias}/_refresh", self.url))
            .send()
            .await;
        let r = self
            .http
            .get(format!("{}/{alias}/_count", self.url))
            .send()
            .await?;
        if r.status() == 404 {
            return Ok(0);
        }
        let body: serde_json::Value = r.error_for_status()?.json().await?;
        body["count"].as_u64().context("_count without count")
    }

    /// What the emulator holds at the end: whether `alias` is an alias (or
    /// a plain index auto-created by a write to that name), and every
    /// index with its document count.
    pub async fn layout(&self, alias: &str) -> Result<(bool, String)> {
        let is_alias = self
            .http
            .get(format!("{}/_alias/{alias}", self.url))
            .send()
            .await?
            .status()
            .is_success();
        let indices: serde_json::Value = self
            .http
            .get(format!("{}/_cat/indices?format=json", self.url))
            .send()
            .await?
            .json()
            .await?;
        let listed: Vec<String> = indices
            .as_array()
            .into_iter()
            .flatten()
            .map(|i| {
                format!(
                    "{}({})",
                    i["index"].as_str().unwrap_or("?"),
                    i["docs.count"].as_str().unwrap_or("?")
                )
            })
            .collect();
        Ok((is_alias, listed.join(",")))
    }
}
