//! The distributed profile on a Redis Cluster this test starts (three
//! masters, each with a replica): two API processes and two workers.
//! Numbering stays exact across shards and processes, every accepted write
//! is persisted once, and a master SIGKILLed mid-load costs nothing
//! accepted once its replica takes over.
mod common;

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use common::{App, Profile, Stack, cluster::Cluster, numbers, profiles_with_cluster};
use futures::future::join_all;
use sea_orm::{ConnectionTrait, Statement};
use serde_json::json;

fn cluster_configured() -> bool {
    let yes = profiles_with_cluster().contains(&Profile::Cluster);
    if !yes {
        eprintln!("no MySQL, or no redis-server to start a cluster with: skipping");
    }
    yes
}

async fn app_id(stack: &Stack, token: &str) -> i64 {
    common::app_id(&stack.db().await, token).await
}

/// How many persisted messages carry each body.
async fn persisted_bodies(stack: &Stack) -> BTreeMap<String, i64> {
    let db = stack.db().await;
    let rows = db
        .query_all_raw(Statement::from_string(
            db.get_database_backend(),
            "SELECT body, COUNT(*) FROM messages GROUP BY body",
        ))
        .await
        .unwrap();
    rows.iter()
        .map(|r| {
            (
                r.try_get_by_index::<String>(0).unwrap(),
                r.try_get_by_index::<i64>(1).unwrap(),
            )
        })
        .collect()
}

/// Waits until `n` messages are persisted, or `within` passed.
async fn wait_rows(stack: &Stack, n: i64, within: Duration) -> i64 {
    let deadline = Instant::now() + within;
    loop {
        let got: i64 = persisted_bodies(stack).await.values().sum();
        if got >= n || Instant::now() > deadline {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test]
async fn two_apis_and_two_workers_number_exactly_across_shards() {
    if !cluster_configured() {
        return;
    }
    let stack = Stack::new(Profile::Cluster).await;
    let apis = [stack.spawn("api", &[]).await, stack.spawn("api", &[]).await];
    let _workers = [
        stack.spawn("worker", &[]).await,
        stack.spawn("worker", &[]).await,
    ];
    // Five applications: homed over several shards, so over several masters.
    let mut tokens = Vec::new();
    for i in 0..5 {
        tokens.push(apis[i % 2].create_app(&format!("app{i}")).await);
    }
    // 16 clients, alternating API processes, create 4 chats per application
    // and then 12 messages in each chat.
    let chat_numbers: Vec<(usize, i64)> = join_all((0..20).map(|c| {
        let (api, token) = (&apis[c % 2], &tokens[c % 5]);
        async move { (c % 5, api.create_chat(token).await) }
    }))
    .await;
    for (i, _) in tokens.iter().enumerate() {
        let got: BTreeSet<i64> = chat_numbers
            .iter()
            .filter(|(a, _)| *a == i)
            .map(|(_, n)| *n)
            .collect();
        assert_eq!(got, (1..=4).collect(), "chat numbers of application {i}");
    }
    let writes = (0..5 * 4 * 12).map(|w| {
        let (app, chat) = (w % 5, (w / 5) % 4 + 1);
        let (api, token) = (&apis[w % 2], &tokens[app]);
        async move {
            let n = api
                .create_message(token, chat as i64, &format!("a{app}c{chat}w{w}"))
                .await;
            (app, chat, n)
        }
    });
    let mut given: BTreeMap<(usize, usize), Vec<i64>> = BTreeMap::new();
    for (app, chat, n) in join_all(writes).await {
        given.entry((app, chat)).or_default().push(n);
    }
    for ((app, chat), mut got) in given {
        got.sort_unstable();
        assert_eq!(got, (1..=12).collect::<Vec<_>>(), "app {app} chat {chat}");
        let listed = apis[0]
            .wait_listed(
                &format!("/applications/{}/chats/{chat}/messages", tokens[app]),
                12,
                Duration::from_secs(30),
            )
            .await;
        assert_eq!(numbers(&listed), (1..=12).collect::<Vec<_>>());
    }
    assert_eq!(wait_rows(&stack, 240, Duration::from_secs(30)).await, 240);
    // The applications' keys are spread over more than one master.
    let cluster = stack.cluster.as_ref().unwrap();
    let mut masters = BTreeSet::new();
    for token in &tokens {
        let id = app_id(&stack, token).await;
        let home = cluster.get(&format!("{}{{app:{id}}}:home", stack.redis_prefix));
        masters.insert(cluster.master_of(&format!("{}{{s{home}}}", stack.redis_prefix)));
    }
    assert!(masters.len() > 1, "every application landed on one master");
    stack.cleanup().await;
}

/// What the writers were told.
#[derive(Default)]
struct Told {
    accepted: Vec<String>,
    /// The application and number each accepted body was given.
    numbered: BTreeMap<String, (String, i64)>,
    unknown: Vec<String>,
    refused: u64,
    /// Each answer other than 201 and how often it came.
    failures: BTreeMap<String, u64>,
    /// When the fault began.
    fault_at: Option<Instant>,
    /// The first 201 to a write sent to the faulted shard after the fault
    /// began: when writes there resumed.
    resumed_at: Option<Instant>,
}

/// Two APIs and two workers on a cluster, and four applications with a
/// chat each; the fault hits the first one's home shard.
struct UnderLoad {
    stack: Stack,
    apis: [App; 2],
    _workers: [App; 2],
    tokens: Vec<String>,
    /// A key in the slot of the first application's home shard.
    shard_key: String,
}

impl UnderLoad {
    async fn start() -> UnderLoad {
        let stack = Stack::new(Profile::Cluster).await;
        let apis = [stack.spawn("api", &[]).await, stack.spawn("api", &[]).await];
        let workers = [
            stack.spawn("worker", &[]).await,
            stack.spawn("worker", &[]).await,
        ];
        let mut tokens = Vec::new();
        for i in 0..4 {
            let token = apis[0].create_app(&format!("load{i}")).await;
            assert_eq!(apis[0].create_chat(&token).await, 1);
            tokens.push(token);
        }
        let id = app_id(&stack, &tokens[0]).await;
        let home = stack
            .cluster
            .as_ref()
            .unwrap()
            .get(&format!("{}{{app:{id}}}:home", stack.redis_prefix));
        let shard_key = format!("{}{{s{home}}}", stack.redis_prefix);
        UnderLoad {
            stack,
            apis,
            _workers: workers,
            tokens,
            shard_key,
        }
    }

    /// Eight clients write for two seconds, `fault` runs on the cluster
    /// (on a thread of its own, the writers going on), and they write on
    /// for `after`. `fault` calls its second argument at the moment the
    /// fault begins. Returns what they were told and what `fault` returned.
    async fn with_fault<T: Send + 'static>(
        &mut self,
        fault: impl FnOnce(&mut Cluster, &dyn Fn()) -> T + Send + 'static,
        after: Duration,
    ) -> (Told, T) {
        let told = Arc::new(Mutex::new(Told::default()));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writers: Vec<_> = (0..8)
            .map(|c| {
                let (api, token) = (self.apis[c % 2].clone(), self.tokens[c % 4].clone());
                let (told, stop) = (told.clone(), stop.clone());
                tokio::spawn(async move { write_until(api, token, c, told, stop).await })
            })
            .collect();
        tokio::time::sleep(Duration::from_secs(2)).await;
        let mut cluster = self.stack.cluster.take().unwrap();
        let marked = told.clone();
        let (cluster, out) = tokio::task::spawn_blocking(move || {
            let begins = || marked.lock().unwrap().fault_at = Some(Instant::now());
            let out = fault(&mut cluster, &begins);
            (cluster, out)
        })
        .await
        .unwrap();
        self.stack.cluster = Some(cluster);
        tokio::time::sleep(after).await;
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        join_all(writers).await;
        let told = std::mem::take(&mut *told.lock().unwrap());
        (told, out)
    }

    /// What the database holds of what the writers were told, once every
    /// accepted write has had time to be persisted.
    async fn compare(&self, told: &Told) -> Compared {
        // Every accepted body, not a count of rows: unknown outcomes that
        // were written would make up the count for an accepted one still
        // on its way (a job whose claim answer was lost comes back only
        // when its lease runs out).
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            let persisted = persisted_bodies(&self.stack).await;
            if told.accepted.iter().all(|b| persisted.contains_key(b)) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        // Let unknown outcomes that were written land too before counting.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let persisted = persisted_bodies(&self.stack).await;
        let mut lost = Vec::new();
        for body in told.accepted.iter().filter(|b| !persisted.contains_key(*b)) {
            lost.push(self.what_holds(body, told).await);
        }
        Compared {
            lost,
            duplicated: (persisted.iter())
                .filter(|(_, n)| **n > 1)
                .map(|(b, _)| b.clone())
                .collect(),
            unknown_persisted: (told.unknown.iter())
                .filter(|b| persisted.contains_key(*b))
                .count(),
            persisted: persisted.values().sum(),
        }
    }

    /// A lost body with the number it was given and what the database
    /// holds at that number: tells a number handed out twice from a job
    /// that never ran.
    async fn what_holds(&self, body: &str, told: &Told) -> String {
        let Some((token, number)) = told.numbered.get(body) else {
            return format!("{body} (number unread)");
        };
        let app = app_id(&self.stack, token).await;
        let db = self.stack.db().await;
        let there = db
            .query_one_raw(Statement::from_sql_and_values(
                db.get_database_backend(),
                "SELECT body FROM messages \
                 WHERE application_id = ? AND chat_number = 1 AND number = ?",
                [app.into(), (*number).into()],
            ))
            .await
            .unwrap()
            .map(|r| r.try_get_by_index::<String>(0).unwrap());
        format!("{body} (number {number} of app {app}; the database holds {there:?} there)")
    }
}

struct Compared {
    lost: Vec<String>,
    duplicated: Vec<String>,
    unknown_persisted: usize,
    persisted: i64,
}

impl Compared {
    /// What the writers were told beside what was persisted, for the log.
    fn report(&self, told: &Told) -> String {
        format!(
            "accepted={} persisted={} lost={} duplicated={} unknown={} \
             (of which persisted {}) refused={} failures={:?}",
            told.accepted.len(),
            self.persisted,
            self.lost.len(),
            self.duplicated.len(),
            told.unknown.len(),
            self.unknown_persisted,
            told.refused,
            told.failures,
        )
    }

    /// Every accepted write was persisted, and none twice.
    fn assert_exactly_once(&self) {
        assert!(
            self.lost.is_empty(),
            "accepted but never persisted: {:?}",
            self.lost
        );
        assert!(
            self.duplicated.is_empty(),
            "persisted twice: {:?}",
            self.duplicated
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_killed_mid_load_loses_and_duplicates_nothing() {
    if !cluster_configured() {
        return;
    }
    let mut load = UnderLoad::start().await;
    let shard_key = load.shard_key.clone();
    let (told, promoted_in) = load
        .with_fault(
            move |cluster, begins| {
                let victim = cluster.master_of(&shard_key);
                begins();
                cluster.kill(victim);
                cluster.wait_replaced(victim, Duration::from_secs(30))
            },
            Duration::from_secs(4),
        )
        .await;
    let resumed = told
        .resumed_at
        .expect("writes to the dead master's shard never resumed")
        .duration_since(told.fault_at.unwrap());
    let found = load.compare(&told).await;
    println!(
        "FAILOVER {} replica_promoted_s={:.1} writes_resumed_s={:.1}",
        found.report(&told),
        promoted_in.as_secs_f64(),
        resumed.as_secs_f64(),
    );
    found.assert_exactly_once();
    assert!(told.accepted.len() > 100, "the load hardly ran");
    load.stack.cleanup().await;
}

/// A master down for longer than a failover takes (its replica held
/// back), then taken over: writes to its shard fail meanwhile, the
/// APIs and workers serve it again after the takeover on the connections
/// they had, and nothing accepted is lost or persisted twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_down_for_long_then_taken_over_serves_again_on_the_same_connections() {
    if !cluster_configured() {
        return;
    }
    let mut load = UnderLoad::start().await;
    let shard_key = load.shard_key.clone();
    let (mut told, _) = load
        .with_fault(
            move |cluster, begins| {
                let victim = cluster.master_of(&shard_key);
                begins();
                let replica = cluster.kill_for_good(victim);
                std::thread::sleep(Duration::from_secs(12));
                cluster.take_over(replica);
                cluster.wait_replaced(victim, Duration::from_secs(30))
            },
            Duration::from_secs(2),
        )
        .await;
    // Each API takes writes on the taken-over shard again within seconds,
    // and the workers persist them.
    for (i, api) in load.apis.iter().enumerate() {
        let deadline = Instant::now() + Duration::from_secs(10);
        for attempt in 0.. {
            // A body of its own per attempt: a failed one may yet be written.
            let body = format!("after the takeover {i}.{attempt}");
            let r = (api.http)
                .post(api.url(&format!(
                    "/applications/{}/chats/1/messages",
                    load.tokens[0]
                )))
                .json(&json!({ "body": body }))
                .timeout(Duration::from_secs(10))
                .send()
                .await;
            let status = r.map(|r| r.status().as_u16());
            if let Ok(201) = status {
                told.accepted.push(body);
                break;
            }
            assert!(
                Instant::now() < deadline,
                "an API still fails writes to the taken-over shard: {status:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let found = load.compare(&told).await;
    println!("LONG OUTAGE {}", found.report(&told));
    found.assert_exactly_once();
    assert!(
        !told.failures.is_empty(),
        "no write failed while a master was down"
    );
    load.stack.cleanup().await;
}

/// A resharding moves the slot of one application's shard to another
/// master under load: writes there pause while it moves, and nothing
/// accepted is lost or persisted twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resharding_under_load_loses_and_duplicates_nothing() {
    if !cluster_configured() {
        return;
    }
    let mut load = UnderLoad::start().await;
    let shard_key = load.shard_key.clone();
    let before = load.stack.cluster.as_ref().unwrap().master_of(&shard_key);
    let (told, (after, took)) = load
        .with_fault(
            move |cluster, begins| {
                let started = Instant::now();
                begins();
                let after = cluster.move_slot_of(&shard_key);
                (after, started.elapsed())
            },
            Duration::from_secs(3),
        )
        .await;
    let found = load.compare(&told).await;
    println!(
        "RESHARD moved_slot_s={:.2} {}",
        took.as_secs_f64(),
        found.report(&told)
    );
    assert_ne!(before, after, "the slot moved");
    found.assert_exactly_once();
    assert!(
        told.resumed_at.is_some(),
        "writes to the moved shard resumed"
    );
    load.stack.cleanup().await;
}

/// Posts messages to chat 1 of `token` until `stop`, each with a body no
/// other write has, and records what each answer said.
async fn write_until(
    api: App,
    token: String,
    client: usize,
    told: Arc<Mutex<Told>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
) {
    let mut i = 0;
    // Clients 0 and 4 write to the first application, whose shard the
    // fault hits.
    let on_victim = client.is_multiple_of(4);
    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
        let sent_after_fault = told.lock().unwrap().fault_at.is_some();
        let body = format!("w{client}-{i}");
        i += 1;
        let r = api
            .http
            .post(api.url(&format!("/applications/{token}/chats/1/messages")))
            .json(&json!({ "body": body }))
            .timeout(Duration::from_secs(10))
            .send()
            .await;
        let (status, number, problem) = match r {
            Ok(r) => {
                let status = r.status().as_u16();
                let answer = r.json::<serde_json::Value>().await.ok();
                let number = match status {
                    201 => answer.as_ref().and_then(|v| v["number"].as_i64()),
                    _ => None,
                };
                let problem = answer.and_then(|v| v["type"].as_str().map(str::to_owned));
                (Ok(status), number, problem)
            }
            Err(e) => (Err(e.to_string()), None, None),
        };
        let mut told = told.lock().unwrap();
        if status != Ok(201) {
            let what = status.clone().map_or_else(|e| e, |s| s.to_string());
            let what = match &problem {
                Some(kind) => format!("{what} {kind}"),
                None => what,
            };
            *told.failures.entry(what).or_default() += 1;
        }
        match status {
            Ok(201) => {
                if let Some(n) = number {
                    told.numbered.insert(body.clone(), (token.clone(), n));
                }
                told.accepted.push(body);
                if on_victim && sent_after_fault && told.resumed_at.is_none() {
                    told.resumed_at = Some(Instant::now());
                }
            }
            // Refused before anything was written (the shard was down).
            Ok(503) | Ok(429) => {
                told.refused += 1;
            }
            // Anything else may or may not have been written.
            _ => {
                told.unknown.push(body);
            }
        }
        drop(told);
        if stop.load(std::sync::atomic::Ordering::SeqCst) {
            break;
        }
    }
}

/// Posts `n` messages to chat 1 of `token` and returns their numbers.
async fn post_messages(api: &App, token: &str, n: usize, tag: &str) -> Vec<i64> {
    let mut got = Vec::new();
    for i in 0..n {
        got.push(api.create_message(token, 1, &format!("{tag}-{i}")).await);
    }
    got
}

/// The shard count changes on a running system: existing applications
/// keep their home, new ones spread over the new count, a running worker
/// starts consuming the new shards, one configured with fewer shards still
/// consumes every shard ever configured, and nothing is lost or numbered
/// twice.
#[tokio::test]
async fn changing_the_shard_count_loses_nothing() {
    if !cluster_configured() {
        return;
    }
    let stack = Stack::new(Profile::Cluster).await;
    let api = stack.spawn("api", &[("REDIS_SHARDS", "2")]).await;
    let old = api.create_app("old").await;
    assert_eq!(api.create_chat(&old).await, 1);
    // A backlog on the old application's shard, with no worker yet.
    assert_eq!(
        post_messages(&api, &old, 50, "before").await,
        (1..=50).collect::<Vec<_>>()
    );
    let _worker = stack.spawn("worker", &[("REDIS_SHARDS", "2")]).await;

    // The count grows to six: a new process records it.
    let grown = stack.spawn("api", &[("REDIS_SHARDS", "6")]).await;
    api.kill9();
    let new = grown.create_app("new").await;
    assert_eq!(grown.create_chat(&new).await, 1);
    assert_eq!(
        post_messages(&grown, &old, 50, "after").await,
        (51..=100).collect::<Vec<_>>()
    );
    assert_eq!(
        post_messages(&grown, &new, 50, "new").await,
        (1..=50).collect::<Vec<_>>()
    );
    // A worker configured with fewer shards still consumes them all.
    let _shrunk = stack.spawn("worker", &[("REDIS_SHARDS", "1")]).await;

    let cluster = stack.cluster.as_ref().unwrap();
    let home = |token: &str| {
        let token = token.to_owned();
        let stack = &stack;
        async move {
            let id = app_id(stack, &token).await;
            let home = cluster.get(&format!("{}{{app:{id}}}:home", stack.redis_prefix));
            (id, home.parse::<i64>().unwrap())
        }
    };
    let (old_id, old_home) = home(&old).await;
    let (new_id, new_home) = home(&new).await;
    assert_eq!(
        old_home,
        old_id % 2,
        "an existing application keeps its home"
    );
    assert_eq!(
        new_home,
        new_id % 6,
        "a new one is homed over the new count"
    );
    assert!(
        new_home >= 2,
        "the new application is on a shard the old count lacked"
    );

    for (token, n) in [(&old, 100), (&new, 50)] {
        let listed = grown
            .wait_listed(
                &format!("/applications/{token}/chats/1/messages"),
                n,
                Duration::from_secs(40),
            )
            .await;
        assert_eq!(numbers(&listed), (1..=n as i64).collect::<Vec<_>>());
    }
    assert_eq!(wait_rows(&stack, 150, Duration::from_secs(20)).await, 150);
    stack.cleanup().await;
}
