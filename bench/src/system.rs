//! Starting the system under test from the release `chat` binary, on fresh
//! data, and taking it down again.
use std::{
    fs::File,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::Context;
use sea_orm::{ConnectionTrait, Database, DatabaseConnection};

/// A running `chat` role (or the limit server), killed if dropped.
pub struct Process {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Process {
    pub fn spawn(name: &str, mut command: Command, logs: &Path) -> anyhow::Result<Self> {
        let log = logs.join(format!("{name}.log"));
        let out = File::create(&log)?;
        let child = command
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        Ok(Self {
            name: name.to_owned(),
            child,
            log,
        })
    }

    /// Peak resident set size so far (`VmHWM`), in MiB.
    pub fn peak_rss_mb(&self) -> anyhow::Result<f64> {
        self.status_mb("VmHWM")
    }

    /// What is resident now: (heap and other anonymous memory, mapped
    /// files such as a search index's segments), in MiB.
    pub fn rss_split_mb(&self) -> anyhow::Result<(f64, f64)> {
        Ok((self.status_mb("RssAnon")?, self.status_mb("RssFile")?))
    }

    fn status_mb(&self, field: &str) -> anyhow::Result<f64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))?;
        let kb: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .with_context(|| format!("no {field}"))?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()?;
        Ok(kb / 1024.0)
    }

    /// CPU time used so far, user and system, over all threads, in seconds.
    /// Unlike rates, it barely moves with what else runs on the machine, so
    /// it compares builds better than throughput on a noisy host.
    pub fn cpu_secs(&self) -> anyhow::Result<f64> {
        proc_cpu_secs(&self.child.id().to_string()).context("no CPU times in /proc")
    }

    pub fn ensure_running(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            anyhow::bail!(
                "{} exited with {status}; see {}",
                self.name,
                self.log.display()
            );
        }
        Ok(())
    }

    /// SIGTERM, then SIGKILL if it has not exited within `grace`.
    pub async fn stop(mut self, grace: Duration) -> anyhow::Result<()> {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = tokio::time::Instant::now() + grace;
        while tokio::time::Instant::now() < deadline {
            if self.child.try_wait()?.is_some() {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        eprintln!("{} ignored SIGTERM for {grace:?}; killing it", self.name);
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Waits (up to 30 s) until the machine is nearly idle, so that one run's
/// leftovers (a database flushing, a process exiting) do not bill the next.
pub async fn quiet() {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut before = cpu_times();
    while tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let after = cpu_times();
        if let (Some((busy0, total0)), Some((busy1, total1))) = (before, after) {
            let total = total1.saturating_sub(total0).max(1);
            if (busy1.saturating_sub(busy0)) * 100 / total < 10 {
                return;
            }
        }
        before = after;
    }
}

/// Busy CPU time of the whole machine since the last call, and the share
/// of the machine it was: where a run is CPU-bound, and how much CPU one
/// row or request costs across every process that served it.
pub struct MachineCpu {
    start: Option<(u64, u64)>,
}

impl MachineCpu {
    pub fn start() -> Self {
        Self { start: cpu_times() }
    }

    /// (busy seconds, busy fraction of all CPUs) since `start`.
    pub fn busy(&self) -> (f64, f64) {
        match (self.start, cpu_times()) {
            (Some((b0, t0)), Some((b1, t1))) => {
                let busy = b1.saturating_sub(b0) as f64;
                let total = t1.saturating_sub(t0).max(1) as f64;
                (busy / clock_ticks(), busy / total)
            }
            _ => (0.0, 0.0),
        }
    }
}

/// CPU seconds used so far by the servers the system runs on (every
/// `redis-server`, every `mariadbd` or `mysqld`) and by the bench itself,
/// the load generator: with the roles' own, where the CPU of a POST or a
/// row goes.
#[derive(Clone, Copy, Default)]
pub struct OtherCpu {
    pub redis: f64,
    pub mysql: f64,
    pub bench: f64,
}

impl OtherCpu {
    pub fn now() -> Self {
        let mut cpu = Self::default();
        let me = std::process::id().to_string();
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return cpu;
        };
        for entry in dir.flatten() {
            let pid = entry.file_name().to_string_lossy().into_owned();
            if !pid.bytes().all(|b| b.is_ascii_digit()) {
                continue;
            }
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            let slot = match comm.trim() {
                "redis-server" => &mut cpu.redis,
                "mariadbd" | "mysqld" => &mut cpu.mysql,
                _ if pid == me => &mut cpu.bench,
                _ => continue,
            };
            *slot += proc_cpu_secs(&pid).unwrap_or(0.0);
        }
        cpu
    }

    /// What each used between `earlier` and now.
    pub fn since(earlier: OtherCpu) -> OtherCpu {
        let now = Self::now();
        OtherCpu {
            redis: now.redis - earlier.redis,
            mysql: now.mysql - earlier.mysql,
            bench: now.bench - earlier.bench,
        }
    }

    pub fn add(self, other: OtherCpu) -> OtherCpu {
        OtherCpu {
            redis: self.redis + other.redis,
            mysql: self.mysql + other.mysql,
            bench: self.bench + other.bench,
        }
    }
}

fn proc_cpu_secs(pid: &str) -> Option<f64> {
    // Fields after the command name, which is in parentheses.
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / clock_ticks())
}

/// (busy, total) jiffies over all CPUs, from `/proc/stat`.
fn cpu_times() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let fields: Vec<u64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    let total: u64 = fields.iter().sum();
    // idle and iowait
    let idle = fields.get(3)? + fields.get(4).copied().unwrap_or(0);
    Some((total - idle, total))
}

fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Builds the release `chat` binary (a no-op when it is current) and
/// returns its path, next to this benchmark's own binary.
pub fn chat_binary(explicit: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    if let Some(path) = explicit {
        return Ok(path);
    }
    // The README's own command, with no package selected: a `-p` list
    // would unify features differently and build (and measure) another
    // binary than the one users run.
    if let Ok(cargo) = std::env::var("CARGO") {
        let built = Command::new(cargo)
            .args(["build", "--release", "--quiet"])
            .status()?;
        anyhow::ensure!(built.success(), "building the chat binary failed");
    }
    let here = std::env::current_exe()?;
    let path = here.with_file_name("chat");
    anyhow::ensure!(
        path.exists(),
        "{} is missing: run `cargo build --release` or pass --chat-bin",
        path.display()
    );
    Ok(path)
}

/// The rate limits: on, as in production, and sized so that the bench is
/// never refused and every request is still checked, unless the bench's
/// own environment sets `RATE_LIMIT_ENABLED` (the limits' sizes then pass
/// through).
fn rate_limits() -> Vec<(String, String)> {
    if let Ok(enabled) = std::env::var("RATE_LIMIT_ENABLED") {
        return vec![("RATE_LIMIT_ENABLED".into(), enabled)];
    }
    let huge = "4000000000".to_string();
    vec![
        ("RATE_LIMIT_ENABLED".into(), "true".into()),
        ("RATE_LIMIT_TOKEN_WRITES".into(), huge.clone()),
        ("RATE_LIMIT_IP_WRITES".into(), huge.clone()),
        ("RATE_LIMIT_TOKEN_READS".into(), huge.clone()),
        ("RATE_LIMIT_IP_READS".into(), huge),
    ]
}

/// Where one profile's system keeps its data, and how to reach it.
pub struct Deployment {
    pub profile: &'static str,
    pub chat: PathBuf,
    pub work: PathBuf,
    /// Environment every role gets.
    pub env: Vec<(String, String)>,
    /// The database, as the benchmark itself connects to it.
    pub database_url: String,
    pub redis_url: Option<String>,
    pub redis_prefix: Option<String>,
    mysql_admin: Option<(String, String)>,
    /// The private Redis Cluster the deployment runs on, stopped with it.
    pub cluster: Option<chat_faults::cluster::Cluster>,
}

impl Deployment {
    pub fn embedded(chat: PathBuf, work: PathBuf) -> anyhow::Result<Self> {
        let data = work.join("data");
        std::fs::create_dir_all(&data)?;
        Ok(Self {
            profile: "embedded",
            chat,
            env: [("DATA_DIR".into(), data.display().to_string())]
                .into_iter()
                .chain(rate_limits())
                .collect(),
            database_url: format!("sqlite://{}?mode=rwc", data.join("chat.db").display()),
            work,
            redis_url: None,
            redis_prefix: None,
            mysql_admin: None,
            cluster: None,
        })
    }

    /// A database and a key prefix of its own on the given servers.
    pub async fn distributed(
        chat: PathBuf,
        work: PathBuf,
        mysql_url: &str,
        redis_url: &str,
    ) -> anyhow::Result<Self> {
        let tag: u32 = rand::random();
        let name = format!("chat_bench_{tag:08x}");
        let admin = Database::connect(mysql_url).await?;
        admin
            .execute_unprepared(&format!("CREATE DATABASE {name} CHARACTER SET utf8mb4"))
            .await?;
        let database_url = format!("{}/{name}", mysql_url.trim_end_matches('/'));
        let prefix = format!("bench{tag:08x}:");
        // The embedded search index lives here, shared by the roles.
        let data = work.join("data");
        std::fs::create_dir_all(&data)?;
        Ok(Self {
            profile: "distributed",
            chat,
            env: [
                ("DATA_DIR".into(), data.display().to_string()),
                ("DATABASE_URL".into(), database_url.clone()),
                ("REDIS_URL".into(), redis_url.into()),
                ("REDIS_PREFIX".into(), prefix.clone()),
            ]
            .into_iter()
            .chain(rate_limits())
            .collect(),
            work,
            database_url,
            redis_url: Some(redis_url.into()),
            redis_prefix: Some(prefix),
            mysql_admin: Some((mysql_url.into(), name)),
            cluster: None,
        })
    }

    pub fn env_value(&self, key: &str) -> &str {
        self.env
            .iter()
            .find(|(k, _)| k == key)
            .map_or("", |(_, v)| v.as_str())
    }

    /// A `chat` subcommand with this deployment's settings.
    pub fn command(&self, role: &str, port: Option<u16>) -> Command {
        let mut c = Command::new(&self.chat);
        // BENCH_ROLE_LOG (a RUST_LOG filter) lets a run be diagnosed from
        // the roles' logs; by default they only log warnings.
        let log = std::env::var("BENCH_ROLE_LOG").unwrap_or_else(|_| "warn".into());
        c.arg(role)
            .env("RUST_LOG", log)
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        if let Some(port) = port {
            c.env("PORT", port.to_string())
                .env("BIND_ADDR", "127.0.0.1");
        }
        c
    }

    pub fn start(&self, role: &str, port: Option<u16>) -> anyhow::Result<Process> {
        self.start_with(role, port, &[])
    }

    /// A role with some settings of its own on top of the deployment's.
    pub fn start_with(
        &self,
        role: &str,
        port: Option<u16>,
        extra: &[(&str, &str)],
    ) -> anyhow::Result<Process> {
        let mut command = self.command(role, port);
        command.envs(extra.iter().copied());
        Process::spawn(&format!("{}-{role}", self.profile), command, &self.work)
    }

    pub fn migrate(&self) -> anyhow::Result<()> {
        let status = self
            .command("migrate", None)
            .stdout(Stdio::null())
            .status()?;
        anyhow::ensure!(status.success(), "chat migrate failed");
        Ok(())
    }

    pub async fn connect(&self) -> anyhow::Result<DatabaseConnection> {
        Ok(chat_links::db::connect(&self.database_url).await?)
    }

    /// Drops the database and the Redis keys, and removes the work dir
    /// unless `keep_logs`.
    pub async fn tear_down(self, keep_logs: bool) -> anyhow::Result<()> {
        if let Some((url, name)) = &self.mysql_admin {
            let admin = Database::connect(url.as_str()).await?;
            admin
                .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name}"))
                .await?;
        }
        // A private cluster goes whole when the deployment is dropped.
        if let (Some(url), Some(prefix), None) =
            (&self.redis_url, &self.redis_prefix, &self.cluster)
        {
            let mut conn = redis::Client::open(url.as_str())?
                .get_multiplexed_async_connection()
                .await?;
            let keys: Vec<String> = {
                let mut iter: redis::AsyncIter<String> =
                    redis::AsyncCommands::scan_match(&mut conn, format!("{prefix}*")).await?;
                let mut keys = Vec::new();
                while let Some(k) = futures::StreamExt::next(&mut iter).await {
                    keys.push(k?);
                }
                keys
            };
            for chunk in keys.chunks(500) {
                let _: () = redis::cmd("UNLINK")
                    .arg(chunk)
                    .query_async(&mut conn)
                    .await?;
            }
        }
        if keep_logs {
            eprintln!("[{}] logs kept in {}", self.profile, self.work.display());
        } else {
            std::fs::remove_dir_all(&self.work)?;
        }
        Ok(())
    }
}
