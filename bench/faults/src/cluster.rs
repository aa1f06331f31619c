//! A private Redis Cluster on loopback: three masters, each with a replica,
//! owned by one test and stopped when it is dropped. Never the shared
//! Redis. Synchronous (it runs `redis-cli`): from async code, wait on it
//! in a blocking task when other tasks must keep running.
use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// Nodes per cluster: three masters and their replicas.
const NODES: usize = 6;

pub struct Cluster {
    dir: PathBuf,
    pub ports: Vec<u16>,
    children: Vec<Option<Child>>,
}

/// Whether this machine can start a cluster (`redis-server` and
/// `redis-cli` on PATH).
pub fn available() -> bool {
    ["redis-server", "redis-cli"].iter().all(|b| {
        Command::new(b)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

/// A free port whose cluster-bus port (port + 10000) is free too. Both
/// lie below 32768, where Linux hands out the ephemeral ports of outgoing
/// connections, so no client socket takes one between this check and the
/// node's bind.
fn free_pair() -> u16 {
    loop {
        let port = 10_000 + (uuid::Uuid::new_v4().as_u128() % 12_000) as u16;
        let free = |p: u16| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok();
        if free(port) && free(port + 10_000) {
            return port;
        }
    }
}

fn cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .output()
        .expect("redis-cli");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The port of the node a `CLUSTER NODES` line describes
/// (`<id> <ip>:<port>@<bus port> …`).
fn node_port(line: &str) -> Option<u16> {
    let addr = line.split(' ').nth(1)?;
    addr.split('@').next()?.rsplit(':').next()?.parse().ok()
}

impl Cluster {
    /// Starts six nodes, joins them as three masters with a replica each,
    /// and waits until every slot is served and every master has its
    /// replica in sync.
    pub fn start() -> Cluster {
        let dir =
            std::env::temp_dir().join(format!("chat-cluster-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut ports = Vec::new();
        while ports.len() < NODES {
            let p = free_pair();
            if !ports.contains(&p) {
                ports.push(p);
            }
        }
        let mut cluster = Cluster {
            dir,
            ports: ports.clone(),
            children: Vec::new(),
        };
        for &port in &ports {
            let child = cluster.node(port);
            cluster.children.push(Some(child));
        }
        for &port in &ports {
            let deadline = Instant::now() + Duration::from_secs(10);
            while cli(port, &["ping"]).trim() != "PONG" {
                assert!(
                    Instant::now() < deadline,
                    "cluster node {port} did not start"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        let hosts: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let out = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&hosts)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .output()
            .expect("redis-cli --cluster create");
        assert!(
            out.status.success(),
            "cluster create: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        cluster.wait_healthy(Duration::from_secs(30));
        cluster
    }

    fn node(&self, port: u16) -> Child {
        let dir = self.dir.join(port.to_string());
        std::fs::create_dir_all(&dir).unwrap();
        Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--dir",
                dir.to_str().unwrap(),
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                // A dead master is replaced within about two seconds.
                "--cluster-node-timeout",
                "1000",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server on PATH")
    }

    /// `redis+cluster://` naming every master as a seed.
    pub fn url(&self) -> String {
        let seeds: Vec<String> = self
            .live_ports()
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        format!("redis+cluster://{}", seeds.join(","))
    }

    fn live_ports(&self) -> Vec<u16> {
        self.ports
            .iter()
            .zip(&self.children)
            .filter(|(_, c)| c.is_some())
            .map(|(p, _)| *p)
            .collect()
    }

    /// The ports of the masters serving slots, as a live node sees them.
    pub fn masters(&self) -> Vec<u16> {
        let any = self.live_ports()[0];
        cli(any, &["cluster", "nodes"])
            .lines()
            .filter(|l| {
                // Flags such as `master,nofailover`: only the flags `fail`
                // and `fail?` mark a node that is down.
                let flags: Vec<&str> = l.split(' ').nth(2).unwrap_or("").split(',').collect();
                flags.contains(&"master")
                    && !flags.iter().any(|f| f.starts_with("fail"))
                    && l.split(' ').count() > 8
            })
            .filter_map(node_port)
            .collect()
    }

    /// Waits until every slot is served and every master serving slots
    /// has a replica online, or panics after `within`.
    pub fn wait_healthy(&self, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let ok = self
                .live_ports()
                .iter()
                .all(|&p| cli(p, &["cluster", "info"]).contains("cluster_state:ok"));
            let masters = self.masters();
            let replicated = masters.len() == 3
                && masters.iter().all(|&m| {
                    let info = cli(m, &["info", "replication"]);
                    info.contains("connected_slaves:1") && info.contains("state=online")
                });
            if ok && replicated {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the cluster did not become healthy: {}",
                cli(self.live_ports()[0], &["cluster", "nodes"])
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until a replica has replaced the master on `dead` and every
    /// slot is served again, or panics after `within`; returns how long
    /// it took.
    pub fn wait_replaced(&self, dead: u16, within: Duration) -> Duration {
        let start = Instant::now();
        loop {
            let masters = self.masters();
            let ok = self
                .live_ports()
                .iter()
                .all(|&p| cli(p, &["cluster", "info"]).contains("cluster_state:ok"));
            if ok && masters.len() == 3 && !masters.contains(&dead) {
                return start.elapsed();
            }
            assert!(start.elapsed() < within, "no replica took over from {dead}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILLs the node on `port`.
    pub fn kill(&mut self, port: u16) {
        let i = self.ports.iter().position(|&p| p == port).unwrap();
        if let Some(mut child) = self.children[i].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGKILLs the master on `port` and keeps its replica from taking
    /// over, the other masters serving their slots meanwhile: a master down
    /// for longer than a failover takes. Returns the replica, which
    /// [`Cluster::take_over`] promotes later.
    pub fn kill_for_good(&mut self, port: u16) -> u16 {
        let id = |line: &str| line.split(' ').next().unwrap_or("").to_owned();
        let nodes = cli(self.live_ports()[0], &["cluster", "nodes"]);
        let master = nodes
            .lines()
            .find(|l| l.contains(&format!(":{port}@")))
            .map(id)
            .expect("the master's node");
        let replica: u16 = nodes
            .lines()
            .find(|l| l.split(' ').nth(3) == Some(master.as_str()))
            .and_then(node_port)
            .expect("the master's replica");
        for p in self.live_ports() {
            cli(p, &["config", "set", "cluster-require-full-coverage", "no"]);
        }
        cli(
            replica,
            &["config", "set", "cluster-replica-no-failover", "yes"],
        );
        self.kill(port);
        replica
    }

    /// Hands a dead master's slots to its replica at once.
    pub fn take_over(&self, replica: u16) {
        cli(replica, &["cluster", "failover", "takeover"]);
    }

    /// The port of the master serving `key`'s slot.
    pub fn master_of(&self, key: &str) -> u16 {
        let any = self.live_ports()[0];
        let slot: u16 = cli(any, &["cluster", "keyslot", key])
            .trim()
            .parse()
            .unwrap();
        for line in cli(any, &["cluster", "nodes"]).lines() {
            let fields: Vec<&str> = line.split(' ').collect();
            if !fields.get(2).is_some_and(|f| f.contains("master")) || fields.len() < 9 {
                continue;
            }
            let serves = fields[8..].iter().any(|range| {
                let (lo, hi) = range.split_once('-').unwrap_or((range, range));
                matches!((lo.parse::<u16>(), hi.parse::<u16>()), (Ok(lo), Ok(hi)) if lo <= slot && slot <= hi)
            });
            if serves {
                return node_port(line).expect("a master's address");
            }
        }
        panic!("no master serves slot {slot}");
    }

    /// Moves the slot of `key` to another master while the cluster serves
    /// it, as a resharding does: marks it migrating and importing, moves
    /// its keys in batches with `MIGRATE`, then gives it to the new
    /// master. Returns the new master's port.
    pub fn move_slot_of(&self, key: &str) -> u16 {
        let any = self.live_ports()[0];
        let slot = cli(any, &["cluster", "keyslot", key]).trim().to_owned();
        let from = self.master_of(key);
        let to = *self.masters().iter().find(|&&m| m != from).unwrap();
        let id = |port: u16| cli(port, &["cluster", "myid"]).trim().to_owned();
        let (from_id, to_id) = (id(from), id(to));
        cli(to, &["cluster", "setslot", &slot, "importing", &from_id]);
        cli(from, &["cluster", "setslot", &slot, "migrating", &to_id]);
        loop {
            let listed = cli(from, &["cluster", "getkeysinslot", &slot, "100"]);
            let keys: Vec<&str> = listed.lines().filter(|k| !k.is_empty()).collect();
            if keys.is_empty() {
                break;
            }
            let to_port = to.to_string();
            let mut args = vec!["migrate", "127.0.0.1", &to_port, "", "0", "5000", "keys"];
            args.extend(keys);
            let out = cli(from, &args);
            assert!(!out.contains("ERR"), "MIGRATE: {out}");
        }
        for master in self.masters() {
            cli(master, &["cluster", "setslot", &slot, "node", &to_id]);
        }
        to
    }

    /// `GET key`, following the cluster's redirection.
    pub fn get(&self, key: &str) -> String {
        let any = self.live_ports()[0];
        let out = Command::new("redis-cli")
            .args(["-c", "-p", &any.to_string(), "get", key])
            .output()
            .expect("redis-cli");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Keys per master, summed over the masters: what the cluster holds.
    pub fn keys_per_master(&self) -> Vec<(u16, u64)> {
        self.masters()
            .into_iter()
            .map(|m| (m, cli(m, &["dbsize"]).trim().parse().unwrap_or(0)))
            .collect()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for child in self.children.iter_mut().filter_map(Option::take) {
            let mut child = child;
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
