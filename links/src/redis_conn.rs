//! Opening connections to Redis: one node (`redis://host:port`) or a
//! Redis Cluster named by any of its nodes
//! (`redis+cluster://host:port,host:port`).
//!
//! Every connection:
//! - speaks RESP3, so a connection the server closed (a restart, a
//!   `CLIENT KILL`) is noticed as soon as its socket reads end-of-file and
//!   replaced in the background, before the next command needs it: over
//!   RESP2 the next command would fail first, with an error that cannot
//!   tell "never sent" from "sent, and the answer lost";
//! - has TCP keepalive and `TCP_USER_TIMEOUT`, so a peer that vanished
//!   without closing the socket is noticed even by an idle connection;
//! - has a response timeout, so a frozen server cannot hang a caller.
//!
//! On a cluster, the client library is told never to send a command again
//! by itself: it would also resend one whose connection dropped after it
//! was sent, and running an accept twice would accept a write twice.
//! [`RedisConn`] instead sends again only what a node refused to run
//! (`MOVED`, `ASK`, `TRYAGAIN`, `CLUSTERDOWN`: a resharding or a
//! failover), for up to [`REDIRECT_WAIT`], while the library refreshes its
//! map of slots; or, for a caller that asks again by itself soon anyway
//! (a worker's claim), hands the refusal back at once
//! ([`RedisConn::impatient`]).
use std::time::Duration;

use redis::{
    Client, Cmd, ConnectionInfo, IntoConnectionInfo, Pipeline, ProtocolVersion, RedisError,
    RedisFuture, Value,
    aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection},
    cluster::{ClusterClient, ClusterClientBuilder},
    cluster_async::ClusterConnection,
    cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr},
    io::tcp::{TcpSettings, socket2::TcpKeepalive},
};

use crate::{error::Result, redis_link::Outcome};

/// How long a command may wait for its answer. Long enough for a large
/// script (an accept group, a housekeeping trim), short enough that a
/// frozen server shows up as an outage within seconds.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long reconnecting may take per attempt.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a cluster command refused as "not here, not now" is sent again
/// before the refusal reaches the caller, which then treats it as an
/// outage (nothing ran).
pub const REDIRECT_WAIT: Duration = Duration::from_secs(2);

const CLUSTER_SCHEMES: [&str; 2] = ["redis+cluster://", "rediss+cluster://"];

/// Where a deployment's Redis is.
#[derive(Clone)]
pub enum Link {
    Node(Client),
    // Boxed: a cluster client is twice a node client's size, and a link is
    // made once per connection pool.
    Cluster(Box<ClusterClient>),
}

impl Link {
    pub fn is_cluster(&self) -> bool {
        matches!(self, Link::Cluster(_))
    }
}

fn tcp_settings() -> TcpSettings {
    let keepalive = TcpKeepalive::new()
        .with_time(Duration::from_secs(10))
        .with_interval(Duration::from_secs(5))
        .with_retries(3);
    // Data sent but not acknowledged for this long fails the connection:
    // the kernel would otherwise retransmit to a vanished host for ~15 min.
    TcpSettings::default()
        .set_nodelay(true)
        .set_keepalive(keepalive)
        .set_user_timeout(Duration::from_secs(15))
}

/// The seed nodes a cluster URL names, each as a one-node URL carrying the
/// URL's credentials; `None` for a one-node URL.
pub fn cluster_seeds(url: &str) -> Option<Vec<String>> {
    let (scheme, rest) = CLUSTER_SCHEMES
        .iter()
        .find_map(|s| url.strip_prefix(s).map(|rest| (s, rest)))?;
    let plain = scheme.replace("+cluster", "");
    let (auth, hosts) = match rest.rsplit_once('@') {
        Some((auth, hosts)) => (format!("{auth}@"), hosts),
        None => (String::new(), rest),
    };
    let hosts = hosts.trim_end_matches('/');
    Some(
        hosts
            .split(',')
            .filter(|h| !h.is_empty())
            .map(|h| format!("{plain}{auth}{h}"))
            .collect(),
    )
}

/// A client whose connections carry the settings above.
pub fn client(url: &str) -> Result<Link> {
    if let Some(seeds) = cluster_seeds(url) {
        if seeds.is_empty() {
            return Err(crate::StoreError::Other(format!(
                "{url}: a cluster URL names at least one node"
            )));
        }
        let cluster = ClusterClientBuilder::new(seeds)
            .use_protocol(ProtocolVersion::RESP3)
            .tcp_settings(tcp_settings())
            .connection_timeout(CONNECT_TIMEOUT)
            .response_timeout(RESPONSE_TIMEOUT)
            .retries(0)
            .build()?;
        return Ok(Link::Cluster(Box::new(cluster)));
    }
    let info: ConnectionInfo = url.into_connection_info()?;
    let redis = info
        .redis_settings()
        .clone()
        .set_protocol(ProtocolVersion::RESP3);
    let info = info
        .set_tcp_settings(tcp_settings())
        .set_redis_settings(redis);
    Ok(Link::Node(Client::open(info)?))
}

/// A shared, self-reconnecting connection for ordinary commands.
pub async fn manager(link: &Link) -> Result<RedisConn> {
    match link {
        Link::Node(client) => {
            let config = ConnectionManagerConfig::new()
                .set_response_timeout(Some(RESPONSE_TIMEOUT))
                .set_connection_timeout(Some(CONNECT_TIMEOUT))
                .set_min_delay(Duration::from_millis(50))
                .set_max_delay(Duration::from_secs(1))
                .set_number_of_retries(2);
            Ok(RedisConn::Managed(
                ConnectionManager::new_with_config(client.clone(), config).await?,
            ))
        }
        Link::Cluster(cluster) => Ok(RedisConn::Cluster(
            cluster.get_async_connection().await?,
            REDIRECT_WAIT,
        )),
    }
}

/// A connection of its own, for a blocking read that would stall every
/// other command sharing it. `block` is how long the read may block; the
/// answer may take that much longer than an ordinary one.
pub async fn dedicated(link: &Link, block: Duration) -> Result<RedisConn> {
    match link {
        Link::Node(client) => {
            let config = redis::AsyncConnectionConfig::new()
                .set_connection_timeout(Some(CONNECT_TIMEOUT))
                .set_response_timeout(Some(block + RESPONSE_TIMEOUT));
            Ok(RedisConn::Direct(
                client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await?,
            ))
        }
        Link::Cluster(cluster) => {
            let config = redis::cluster::ClusterConfig::new()
                .set_connection_timeout(CONNECT_TIMEOUT)
                .set_response_timeout(block + RESPONSE_TIMEOUT);
            Ok(RedisConn::Cluster(
                cluster.get_async_connection_with_config(config).await?,
                REDIRECT_WAIT,
            ))
        }
    }
}

/// A connection to a node or to a cluster, used the same way.
#[derive(Clone)]
pub enum RedisConn {
    Managed(ConnectionManager),
    Direct(MultiplexedConnection),
    /// With how long a command a node refused for now is sent again.
    Cluster(ClusterConnection, Duration),
}

impl RedisConn {
    /// This connection, handing a cluster node's refusal back at once
    /// instead of sending the command again for [`REDIRECT_WAIT`]: for a
    /// caller with other work to do meanwhile, such as a claim that reads
    /// other shards, or one that sends again by itself.
    pub fn impatient(&self) -> RedisConn {
        match self {
            RedisConn::Cluster(c, _) => RedisConn::Cluster(c.clone(), Duration::ZERO),
            other => other.clone(),
        }
    }

    /// Waits up to `timeout` until `replicas` replicas of the node holding
    /// `key` hold every write this connection sent that node, and returns
    /// how many do. A cluster replicates asynchronously: a write its
    /// master acknowledged and died before passing on is lost when a
    /// replica takes over, so what must survive a failover waits for this
    /// first. On one node there is nothing to wait for: `replicas` at once.
    pub async fn replicated(
        &mut self,
        key: &str,
        replicas: u32,
        timeout: Duration,
    ) -> redis::RedisResult<u32> {
        let RedisConn::Cluster(c, _) = self else {
            return Ok(replicas);
        };
        let mut wait = redis::cmd("WAIT");
        wait.arg(replicas).arg(timeout.as_millis() as u64);
        let acked = c.route_command(wait, master_of(key)).await?;
        Ok(redis::from_redis_value(acked)?)
    }

    /// How many replicas the master holding `key` has connected (`ROLE`);
    /// 0 on one node, where nothing replicates that a write waits for.
    pub async fn connected_replicas(&mut self, key: &str) -> redis::RedisResult<u32> {
        let RedisConn::Cluster(c, _) = self else {
            return Ok(0);
        };
        let role = c.route_command(redis::cmd("ROLE"), master_of(key)).await?;
        let Value::Array(parts) = role else {
            return Ok(0);
        };
        let is_master = matches!(parts.first(), Some(Value::BulkString(b)) if b == b"master");
        Ok(match parts.get(2) {
            Some(Value::Array(replicas)) if is_master => replicas.len() as u32,
            _ => 0,
        })
    }
}

fn master_of(key: &str) -> RoutingInfo {
    RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(Route::with_key(
        key,
        SlotAddr::Master,
    )))
}

/// Whether a cluster node refused a command without running it because
/// the slot is elsewhere or unavailable for now.
fn refused_for_now(e: &RedisError) -> bool {
    matches!(
        e.code(),
        Some("MOVED" | "ASK" | "TRYAGAIN" | "CLUSTERDOWN" | "MASTERDOWN")
    ) && Outcome::of(e) == Outcome::NotRun
}

/// Pauses before sending again a command the cluster refused for now
/// (`tries` refusals so far); `None` once `wait` is spent.
fn redirect_pause(e: &RedisError, tries: u32, wait: Duration) -> Option<Duration> {
    if !refused_for_now(e) {
        return None;
    }
    let pause = Duration::from_millis(10 * 2u64.pow(tries.min(4)));
    // 10, 20, 40, 80, then 160 ms: the sum passes REDIRECT_WAIT after ~15.
    let spent: Duration = (0..tries)
        .map(|t| Duration::from_millis(10 * 2u64.pow(t.min(4))))
        .sum();
    (spent + pause < wait).then_some(pause)
}

impl ConnectionLike for RedisConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            RedisConn::Managed(c) => c.req_packed_command(cmd),
            RedisConn::Direct(c) => c.req_packed_command(cmd),
            RedisConn::Cluster(c, wait) => Box::pin(async move {
                let mut tries = 0;
                loop {
                    match c.req_packed_command(cmd).await {
                        Err(e) => match redirect_pause(&e, tries, *wait) {
                            Some(pause) => {
                                tracing::debug!(error = %e, "a cluster node refused a command for now");
                                tokio::time::sleep(pause).await;
                                tries += 1;
                            }
                            None => return Err(e),
                        },
                        ok => return ok,
                    }
                }
            }),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            RedisConn::Managed(c) => c.req_packed_commands(pipeline, offset, count),
            RedisConn::Direct(c) => c.req_packed_commands(pipeline, offset, count),
            RedisConn::Cluster(c, wait) => Box::pin(async move {
                let mut tries = 0;
                loop {
                    match c.req_packed_commands(pipeline, offset, count).await {
                        Err(e) => match redirect_pause(&e, tries, *wait) {
                            Some(pause) => {
                                tokio::time::sleep(pause).await;
                                tries += 1;
                            }
                            None => return Err(e),
                        },
                        ok => return ok,
                    }
                }
            }),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            RedisConn::Managed(c) => c.get_db(),
            RedisConn::Direct(c) => c.get_db(),
            RedisConn::Cluster(c, _) => c.get_db(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_url_names_each_seed_with_its_credentials() {
        assert_eq!(cluster_seeds("redis://a:1"), None);
        assert_eq!(
            cluster_seeds("redis+cluster://a:1,b:2/").unwrap(),
            vec!["redis://a:1", "redis://b:2"]
        );
        assert_eq!(
            cluster_seeds("rediss+cluster://u:p@a:1,b:2").unwrap(),
            vec!["rediss://u:p@a:1", "rediss://u:p@b:2"]
        );
    }
}
