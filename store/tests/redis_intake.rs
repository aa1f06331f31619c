//! The Redis intake's one-script accept, against a real Redis: numbers stay
//! exact when concurrent accepts share script calls, and the job and the
//! pending entry carry the same state the caller got back.
//!
//! Runs against `TEST_REDIS_URL`; skipped (with a message) when unset.
use std::{collections::HashMap, sync::Arc, time::Duration};

use chat_links::db;
use chat_queue::{JobQueue, QueueName, RedisStreamQueue};
use chat_store::homes::{Homes, Layout};
use chat_store::{
    intake::{Intake, RedisIntake},
    model::MessageRow,
};

struct Setup {
    intake: Arc<RedisIntake>,
    queue: Arc<RedisStreamQueue>,
    url: String,
    prefix: String,
    file: std::path::PathBuf,
}

async fn setup() -> Option<Setup> {
    let Ok(url) = std::env::var("TEST_REDIS_URL") else {
        eprintln!("TEST_REDIS_URL unset: skipping Redis intake test");
        return None;
    };
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let prefix = format!("ti{}:", &tag[..12]);
    // Counters are seeded from the database, which must exist.
    let file = std::env::temp_dir().join(format!("chat-intake-{tag}.db"));
    let database = db::connect(&format!("sqlite://{}?mode=rwc", file.display()))
        .await
        .unwrap();
    db::migrate(&database).await.unwrap();
    let queue = RedisStreamQueue::connect(&url, &prefix, Duration::from_secs(30))
        .await
        .unwrap();
    let link = chat_links::redis_link::client(&url).unwrap();
    let homes = Homes::new(
        chat_links::redis_link::manager(&link).await.unwrap(),
        &prefix,
        Layout::Node,
    );
    let intake = RedisIntake::connect(
        &url,
        &prefix,
        database,
        Arc::new(homes),
        Duration::from_secs(60),
    )
    .await
    .unwrap();
    Some(Setup {
        intake: Arc::new(intake),
        queue,
        url,
        prefix,
        file,
    })
}

impl Setup {
    async fn tear_down(self) {
        let client = redis::Client::open(self.url.as_str()).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let _: () = redis::Script::new(
            "for _, k in ipairs(redis.call('KEYS', ARGV[1])) do redis.call('DEL', k) end",
        )
        .arg(format!("{}*", self.prefix))
        .invoke_async(&mut conn)
        .await
        .unwrap();
        // SQLite's WAL and shared-memory files sit beside the database.
        for suffix in ["", "-wal", "-shm"] {
            let mut path = self.file.clone().into_os_string();
            path.push(suffix);
            let _ = std::fs::remove_file(path);
        }
    }
}

#[tokio::test]
async fn concurrent_accepts_number_exactly_and_queue_what_they_answer() {
    let Some(s) = setup().await else { return };
    const CHATS: i64 = 4;
    const PER_CHAT: i64 = 50;
    let accepts = (0..CHATS * PER_CHAT).map(|i| {
        let intake = s.intake.clone();
        tokio::spawn(async move {
            intake
                .create_message(1, 1 + i % CHATS, format!("body {i}"), Default::default())
                .await
        })
    });
    let rows: Vec<MessageRow> = futures_join(accepts).await;

    let mut numbers: HashMap<i64, Vec<i64>> = HashMap::new();
    for r in &rows {
        numbers.entry(r.chat_number).or_default().push(r.number);
    }
    for (chat, mut n) in numbers {
        n.sort_unstable();
        assert_eq!(n, (1..=PER_CHAT).collect::<Vec<_>>(), "chat {chat}");
    }
    let mut versions: Vec<i64> = rows.iter().map(|r| r.version).collect();
    versions.sort_unstable();
    versions.dedup();
    assert_eq!(
        versions.len(),
        rows.len(),
        "every accept gets its own version"
    );

    // The queued job and the pending entry are exactly what the caller got.
    let claimed = s
        .queue
        .claim(QueueName::Messages, "c", 1_000, Duration::from_millis(100))
        .await
        .unwrap();
    assert_eq!(claimed.len(), rows.len());
    let mut queued: Vec<MessageRow> = claimed
        .iter()
        .map(|c| serde_json::from_str(&c.payload).unwrap())
        .collect();
    let mut answered = rows.clone();
    queued.sort_by_key(|r| (r.chat_number, r.number));
    answered.sort_by_key(|r| (r.chat_number, r.number));
    assert_eq!(queued, answered);
    for r in &rows {
        let pending = s
            .intake
            .pending_message(1, r.chat_number, r.number, None)
            .await
            .unwrap();
        assert_eq!(pending.as_ref(), Some(r));
    }

    // An update is queued with a newer version and replaces the pending state.
    let first = answered[0].clone();
    let updated = s
        .intake
        .update_message(&first, "edited".into(), Default::default())
        .await
        .unwrap();
    assert!(updated.version > *versions.last().unwrap());
    let pending = s
        .intake
        .pending_message(1, first.chat_number, first.number, None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(pending.body, "edited");
    assert_eq!(pending.version, updated.version);
    s.tear_down().await;
}

#[tokio::test]
async fn a_pending_entry_left_as_a_hash_by_an_older_version_reads_as_absent() {
    let Some(s) = setup().await else { return };
    let mut conn = redis::Client::open(s.url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let key = format!("{}{{app:1}}:pending:m:1:1:1", s.prefix);
    let _: i64 = redis::cmd("HSET")
        .arg(&key)
        .arg("v")
        .arg(1)
        .arg("s")
        .arg("{}")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(s.intake.pending_message(1, 1, 1, None).await.unwrap(), None);
    // A new accept overwrites it with the current form.
    let row = s
        .intake
        .create_message(1, 1, "hello".into(), Default::default())
        .await
        .unwrap();
    assert_eq!(row.number, 1);
    assert_eq!(
        s.intake.pending_message(1, 1, 1, None).await.unwrap(),
        Some(row)
    );
    s.tear_down().await;
}

async fn futures_join(
    tasks: impl Iterator<Item = tokio::task::JoinHandle<chat_links::error::Result<MessageRow>>>,
) -> Vec<MessageRow> {
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap().unwrap());
    }
    out
}

/// Limits folded into a write are checked in its accept: a refused write
/// writes nothing and spends no number, and the standalone limiter sees
/// the same counts.
#[tokio::test]
async fn folded_limits_are_checked_and_counted_in_the_accept() {
    use chat_links::StoreError;
    use chat_store::{
        intake::WriteMeta,
        ratelimit::{Limit, RateLimiter, RedisRateLimiter, folded::Folded},
    };
    let Some(s) = setup().await else { return };
    assert!(s.intake.folds_rate_limits());
    let limits = vec![Limit {
        key: "w:t:folded".into(),
        limit: 2,
        period: Duration::from_secs(60),
    }];
    let carrying = |folded: &Folded| WriteMeta {
        limits: Some(folded.clone()),
        ..Default::default()
    };
    let mut verdicts = Vec::new();
    for _ in 0..2 {
        let folded = Folded::new(limits.clone());
        s.intake
            .create_chat(7, None, carrying(&folded))
            .await
            .unwrap();
        verdicts.push(folded.verdict().expect("the accept checked the limits"));
    }
    assert!(verdicts.iter().all(|v| v.allowed && v.limit == 2));
    assert_eq!((verdicts[0].remaining, verdicts[1].remaining), (1, 0));

    let folded = Folded::new(limits.clone());
    let refused = s.intake.create_chat(7, None, carrying(&folded)).await;
    let verdict = folded.verdict();
    assert!(
        matches!(refused, Err(StoreError::RateLimited)),
        "{refused:?}"
    );
    let verdict = verdict.unwrap();
    assert!(!verdict.allowed && verdict.retry_after > Duration::ZERO);

    // A write that carries no limits checks none; the refused write spent
    // no number.
    let next = s
        .intake
        .create_chat(7, None, Default::default())
        .await
        .unwrap();
    assert_eq!(next.number, 3);
    let queued = s
        .queue
        .claim(QueueName::Chats, "c", 100, Duration::from_millis(100))
        .await
        .unwrap();
    assert_eq!(queued.len(), 3, "the refused write queued nothing");

    let limiter = RedisRateLimiter::connect(&s.url, &s.prefix).await.unwrap();
    assert!(
        !limiter.check(&limits).await.unwrap().allowed,
        "the limiter reads the counts the accepts kept"
    );
    s.tear_down().await;
}

/// Limits folded into a pending read are checked in the call that reads
/// the entry: an admitted read gets the entry and the verdict, a refused
/// one an error and no entry, and the standalone limiter sees the counts.
#[tokio::test]
async fn folded_limits_are_checked_and_counted_in_a_pending_read() {
    use chat_links::StoreError;
    use chat_store::ratelimit::{Limit, RateLimiter, RedisRateLimiter, folded::Folded};
    let Some(s) = setup().await else { return };
    let chat = s
        .intake
        .create_chat(7, None, Default::default())
        .await
        .unwrap();
    let written = s
        .intake
        .create_message(7, chat.number, "hello".into(), Default::default())
        .await
        .unwrap();
    let limits = vec![Limit {
        key: "r:t:folded".into(),
        limit: 2,
        period: Duration::from_secs(60),
    }];
    let mut remaining = Vec::new();
    for _ in 0..2 {
        let folded = Folded::new(limits.clone());
        let read = s
            .intake
            .pending_message(7, chat.number, written.number, Some(&folded))
            .await
            .unwrap();
        assert_eq!(read.as_ref(), Some(&written), "an admitted read reads");
        let verdict = folded.verdict().expect("the read checked the limits");
        assert!(verdict.allowed && verdict.limit == 2);
        remaining.push(verdict.remaining);
    }
    assert_eq!(remaining, [1, 0]);

    let folded = Folded::new(limits.clone());
    let refused = s.intake.pending_chat(7, chat.number, Some(&folded)).await;
    assert!(
        matches!(refused, Err(StoreError::RateLimited)),
        "{refused:?}"
    );
    let verdict = folded.verdict().expect("the refusal's verdict");
    assert!(!verdict.allowed && verdict.retry_after > Duration::ZERO);

    // A read that carries no limits checks none.
    let unlimited = s.intake.pending_chat(7, chat.number, None).await.unwrap();
    assert_eq!(unlimited.map(|c| c.number), Some(chat.number));
    let limiter = RedisRateLimiter::connect(&s.url, &s.prefix).await.unwrap();
    assert!(
        !limiter.check(&limits).await.unwrap().allowed,
        "the limiter reads the counts the reads kept"
    );
    s.tear_down().await;
}

/// The job the accept script writes (its JSON built in Lua around the
/// intake's serialised state) decodes, field for field, to the row the
/// caller was answered, for every kind of accept: that JSON is what the
/// workers persist.
#[tokio::test]
async fn every_kind_of_accept_queues_exactly_the_row_it_answers() {
    use chat_store::model::ChatRow;
    let Some(s) = setup().await else { return };
    let named = s
        .intake
        .create_chat(
            7,
            Some("Ünïcode \"quoted\" \\ name".into()),
            Default::default(),
        )
        .await
        .unwrap();
    let unnamed = s
        .intake
        .create_chat(7, None, Default::default())
        .await
        .unwrap();
    let renamed = s
        .intake
        .update_chat(&named, Some("renamed".into()), Default::default())
        .await
        .unwrap();
    let message = s
        .intake
        .create_message(
            7,
            named.number,
            "body with\nnewline and \u{1F600}".into(),
            Default::default(),
        )
        .await
        .unwrap();
    let edited = s
        .intake
        .update_message(&message, "edited".into(), Default::default())
        .await
        .unwrap();

    let payloads = |queue| {
        let q = s.queue.clone();
        async move {
            q.claim(queue, "c", 10, Duration::from_millis(100))
                .await
                .unwrap()
                .into_iter()
                .map(|c| c.payload)
                .collect::<Vec<_>>()
        }
    };
    let chats: Vec<ChatRow> = payloads(QueueName::Chats)
        .await
        .iter()
        .map(|p| serde_json::from_str(p).unwrap())
        .collect();
    assert_eq!(chats, [named, unnamed, renamed]);
    let messages: Vec<MessageRow> = payloads(QueueName::Messages)
        .await
        .iter()
        .map(|p| serde_json::from_str(p).unwrap())
        .collect();
    assert_eq!(messages, [message, edited]);
    s.tear_down().await;
}
