//! Where an application's Redis keys live: its number counters, version,
//! pending entries, ceilings and `Idempotency-Key` records.
//!
//! On one node they share the application's hash tag,
//! `<prefix>{app:<id>}:…`. On a Redis Cluster they live under the tag of
//! the application's home shard, `<prefix>{s<k>}:app:<id>:…`, beside that
//! shard's queues, so the accept script reserves a number and enqueues its
//! job in one slot.
//!
//! A home is chosen once, as `id mod shards`, and recorded in Redis
//! (`<prefix>{app:<id>}:home`, `SET NX`): a counter cannot move between
//! slots atomically, and two homes live at once would hand out the same
//! number twice. So changing the number of shards homes new applications
//! over the new count and leaves every existing one where it is; the
//! queues keep consuming every shard ever configured.
use std::{collections::HashMap, sync::Mutex, time::Duration};

use chat_links::{
    error::Result,
    redis_link::{self, RedisConn},
};

/// How long finding a home waits for a Redis that refuses commands.
const HOME_WAIT: Duration = Duration::from_secs(5);
/// Homes remembered per process; past it the memory starts over (a home
/// never changes, so forgetting one costs one read).
const CACHE_MAX: usize = 100_000;

/// How an application's keys are laid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// One Redis node: each application under its own tag.
    Node,
    /// A Redis Cluster with this many shards for new applications.
    Cluster { shards: u16 },
}

/// The keys of one application.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppKeys {
    base: String,
    /// The application's home shard on a cluster.
    pub shard: Option<u16>,
}

impl AppKeys {
    pub fn key(&self, rest: &str) -> String {
        format!("{}:{rest}", self.base)
    }
}

pub struct Homes {
    conn: RedisConn,
    prefix: String,
    layout: Layout,
    known: Mutex<HashMap<i64, u16>>,
}

impl Homes {
    pub fn new(conn: RedisConn, prefix: &str, layout: Layout) -> Self {
        Self {
            conn,
            prefix: prefix.to_owned(),
            layout,
            known: Mutex::new(HashMap::new()),
        }
    }

    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// The keys of application `app_id`, finding its home the first time.
    pub async fn of(&self, app_id: i64) -> Result<AppKeys> {
        let Layout::Cluster { shards } = self.layout else {
            return Ok(AppKeys {
                base: format!("{}{{app:{app_id}}}", self.prefix),
                shard: None,
            });
        };
        let known = self.known.lock().unwrap().get(&app_id).copied();
        let k = match known {
            Some(k) => k,
            None => {
                let k = self.find(app_id, shards).await?;
                let mut known = self.known.lock().unwrap();
                if known.len() >= CACHE_MAX {
                    known.clear();
                }
                known.insert(app_id, k);
                k
            }
        };
        Ok(AppKeys {
            base: format!(
                "{}:app:{app_id}",
                chat_queue::redis_shard_tag(&self.prefix, k)
            ),
            shard: Some(k),
        })
    }

    /// The recorded home, or the one this call records.
    async fn find(&self, app_id: i64, shards: u16) -> Result<u16> {
        let key = format!("{}{{app:{app_id}}}:home", self.prefix);
        let proposed = (app_id.rem_euclid(shards.max(1) as i64)) as u16;
        // Sending it twice finds the home the first one recorded.
        let earlier: Option<u16> = redis_link::until_done_idempotent(HOME_WAIT, || {
            let mut conn = self.conn.clone();
            let key = key.clone();
            async move {
                redis::cmd("SET")
                    .arg(key)
                    .arg(proposed)
                    .arg("NX")
                    .arg("GET")
                    .query_async(&mut conn)
                    .await
            }
        })
        .await?;
        Ok(earlier.unwrap_or(proposed))
    }
}
