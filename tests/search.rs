//! One behaviour suite for every search backend: tantivy always; the
//! OpenSearch-compatible emulator when `OSMEM_SERVER` names its launcher
//! (CI); a real Elasticsearch when `ELASTICSEARCH_URL` points at one.
mod common;

use std::{sync::Arc, time::Duration};

use chat_search::{ChatKey, SearchIndex, SearchPage, Target, doc_id, maintenance, switch::Switch};
use chat_store::model::MessageRow;
use common::search::{Engine, EngineKind, engines};
use serde_json::Value;

fn row(app: i64, chat: i64, number: i64, version: i64, body: &str) -> MessageRow {
    let t = chrono_now();
    MessageRow {
        application_id: app,
        chat_number: chat,
        number,
        body: body.into(),
        version,
        created_at: t,
        updated_at: t,
    }
}

fn chrono_now() -> chrono::DateTime<chrono::Utc> {
    // Microseconds, as the database keeps them.
    chrono::DateTime::from_timestamp_micros(chrono::Utc::now().timestamp_micros()).unwrap()
}

const CHAT: ChatKey = ChatKey {
    application_id: 1,
    chat_number: 1,
};

async fn numbers(index: &dyn SearchIndex, chat: ChatKey, q: &str) -> Vec<i64> {
    let page: SearchPage = index.search(chat, q, 100, None).await.unwrap();
    let mut n: Vec<i64> = page.hits.iter().map(|h| h.number).collect();
    n.sort_unstable();
    n
}

async fn index_all(engine: &Engine, rows: &[MessageRow]) {
    engine.index.index(&Target::Live, rows).await.unwrap();
    engine.refresh().await;
}

#[tokio::test]
async fn matching_ignores_case_and_diacritics_and_matches_prefixes_and_infixes() {
    for kind in engines() {
        let engine = Engine::start(kind).await;
        index_all(
            &engine,
            &[
                row(1, 1, 1, 1, "Hello world"),
                row(1, 1, 2, 1, "Café au lait"),
                row(1, 1, 3, 1, "yellow submarine"),
                row(1, 1, 4, 1, "say hello to the WORLD tour"),
            ],
        )
        .await;
        let i = engine.index.as_ref();
        let cases: &[(&str, &[i64])] = &[
            ("hello", &[1, 4]),
            ("HELLO", &[1, 4]),
            ("hel", &[1, 4]),
            ("h", &[1, 4]),
            ("ello", &[1, 3, 4]),
            ("llo", &[1, 3, 4]),
            ("el", &[]),
            ("cafe", &[2]),
            ("CAFÉ", &[2]),
            ("café", &[2]),
            ("lait", &[2]),
            ("hello wor", &[1, 4]),
            ("world tour", &[4]),
            ("hello nothing", &[]),
            ("submarines", &[]),
        ];
        for (q, want) in cases {
            assert_eq!(numbers(i, CHAT, q).await, *want, "{kind:?}: {q}");
        }
        let page = i.search(CHAT, "café", 10, None).await.unwrap();
        let hit = &page.hits[0];
        assert_eq!(hit.body, "Café au lait");
        assert_eq!(hit.version, 1);
        engine.cleanup().await;
    }
}

#[tokio::test]
async fn arabic_is_normalised_and_emoji_and_cjk_index_fine() {
    for kind in engines() {
        let engine = Engine::start(kind).await;
        index_all(
            &engine,
            &[
                row(1, 1, 1, 1, "أَحْمَد يقول مرحبا"),
                row(1, 1, 2, 1, "مـــدرسة إسلامية"),
                row(1, 1, 3, 1, "🎉🎉 party time 🎉"),
                row(1, 1, 4, 1, "我爱你好世界"),
                row(1, 1, 5, 1, "🔥"),
            ],
        )
        .await;
        let i = engine.index.as_ref();
        assert_eq!(numbers(i, CHAT, "party").await, [3], "{kind:?}");
        assert_eq!(numbers(i, CHAT, "你好").await, [4], "{kind:?}");
        assert_eq!(numbers(i, CHAT, "مرحبا").await, [1], "{kind:?}");
        // Tashkeel and hamza-seated alef forms.
        assert_eq!(numbers(i, CHAT, "احمد").await, [1], "{kind:?}");
        assert_eq!(numbers(i, CHAT, "أحمد").await, [1], "{kind:?}");
        // Tatweel, and an infix of a normalised word.
        assert_eq!(numbers(i, CHAT, "مدرسه").await, [2], "{kind:?}");
        assert_eq!(numbers(i, CHAT, "اسلام").await, [2], "{kind:?}");
        engine.cleanup().await;
    }
}

#[tokio::test]
async fn search_never_leaves_its_chat() {
    for kind in engines() {
        let engine = Engine::start(kind).await;
        index_all(
            &engine,
            &[
                row(1, 1, 1, 1, "secret plans"),
                row(1, 2, 1, 1, "secret plans"),
                row(2, 1, 1, 1, "secret plans"),
                row(11, 1, 1, 1, "secret plans"),
            ],
        )
        .await;
        let i = engine.index.as_ref();
        for chat in [
            CHAT,
            ChatKey {
                application_id: 1,
                chat_number: 2,
            },
            ChatKey {
                application_id: 2,
                chat_number: 1,
            },
        ] {
            let page = i.search(chat, "secret", 100, None).await.unwrap();
            assert_eq!(page.hits.len(), 1, "{kind:?}: {chat:?}");
            assert_eq!(ChatKey::of(&page.hits[0]), chat);
        }
        let none = ChatKey {
            application_id: 3,
            chat_number: 1,
        };
        assert!(numbers(i, none, "secret").await.is_empty());
        engine.cleanup().await;
    }
}

#[tokio::test]
async fn an_update_reindexes_and_a_stale_redelivery_changes_nothing() {
    for kind in engines() {
        let engine = Engine::start(kind).await;
        let i = engine.index.as_ref();
        index_all(&engine, &[row(1, 1, 1, 1, "apple pie")]).await;
        assert_eq!(numbers(i, CHAT, "apple").await, [1]);
        index_all(&engine, &[row(1, 1, 1, 2, "banana split")]).await;
        assert!(
            numbers(i, CHAT, "apple").await.is_empty(),
            "{kind:?}: old text gone"
        );
        assert_eq!(
            numbers(i, CHAT, "banana").await,
            [1],
            "{kind:?}: new text found"
        );
        // The first job, redelivered late, and the same version again.
        index_all(&engine, &[row(1, 1, 1, 1, "apple pie")]).await;
        index_all(&engine, &[row(1, 1, 1, 2, "banana split")]).await;
        assert!(
            numbers(i, CHAT, "apple").await.is_empty(),
            "{kind:?}: stale job ignored"
        );
        let page = i.search(CHAT, "banana", 10, None).await.unwrap();
        assert_eq!(page.hits.len(), 1);
        assert_eq!(page.hits[0].version, 2);
        // Both states in one batch: the newer one wins whatever the order.
        index_all(
            &engine,
            &[row(1, 1, 2, 9, "cherry tart"), row(1, 1, 2, 8, "plum cake")],
        )
        .await;
        assert_eq!(numbers(i, CHAT, "cherry").await, [2], "{kind:?}");
        assert!(numbers(i, CHAT, "plum").await.is_empty(), "{kind:?}");
        engine.cleanup().await;
    }
}

#[tokio::test]
async fn pages_follow_each_other_best_match_first_without_repeats() {
    for kind in engines() {
        let engine = Engine::start(kind).await;
        if !engine.paginates_by_score_exactly() {
            engine.cleanup().await;
            continue;
        }
        let rows: Vec<MessageRow> = (1..=25)
            .map(|n| row(1, 1, n, 1, &format!("ticket {n} about billing")))
            .chain([row(1, 1, 26, 1, "billing billing billing")])
            .collect();
        index_all(&engine, &rows).await;
        let i = engine.index.as_ref();
        let mut seen = Vec::new();
        let mut after = None;
        let mut pages = 0;
        loop {
            let page = i.search(CHAT, "billing", 10, after).await.unwrap();
            pages += 1;
            seen.extend(page.hits.iter().map(|h| h.number));
            match page.next_after {
                Some(c) => after = Some(c),
                None => break,
            }
            assert!(pages < 10, "{kind:?}: pagination does not end");
        }
        assert_eq!(seen[0], 26, "{kind:?}: the densest match ranks first");
        assert_eq!(pages, 3, "{kind:?}");
        let mut sorted = seen.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted, (1..=26).collect::<Vec<_>>(), "{kind:?}: {seen:?}");
        engine.cleanup().await;
    }
}

/// A database with `rows` persisted, for the maintenance functions.
async fn database_with(rows: &[MessageRow]) -> (sea_orm::DatabaseConnection, std::path::PathBuf) {
    let dir =
        std::env::temp_dir().join(format!("chat-search-db-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let url = chat_links::db::default_sqlite_url(&dir);
    let db = chat_links::db::connect(&url).await.unwrap();
    chat_links::db::migrate(&db).await.unwrap();
    for chunk in rows.chunks(500) {
        chat_store::repo::messages::upsert_all(&db, chunk)
            .await
            .unwrap();
    }
    (db, dir)
}

#[tokio::test]
async fn the_drift_check_finds_and_repairs_chats_that_differ() {
    for kind in engines() {
        let engine = Engine::start(kind).await;
        let rows: Vec<MessageRow> = (1..=30)
            .map(|n| row(1, 1 + n % 3, n, 1, &format!("message {n}")))
            .collect();
        let (db, dir) = database_with(&rows).await;
        // Chat 1:1 fully indexed, 1:2 missing some, 1:3 missing all; and a
        // document the database does not have, in chat 1:1.
        let partial: Vec<MessageRow> = rows
            .iter()
            .filter(|r| r.chat_number == 1 || (r.chat_number == 2 && r.number < 10))
            .cloned()
            .chain([row(1, 1, 999, 1, "ghost")])
            .collect();
        index_all(&engine, &partial).await;
        let i = engine.index.as_ref();
        let report = maintenance::check_drift(&db, i, true, Duration::ZERO)
            .await
            .unwrap();
        assert_eq!(report.chats_checked, 3, "{kind:?}");
        let mut drifted: Vec<(i64, u64, u64)> = report
            .drifted
            .iter()
            .map(|d| (d.chat.chat_number, d.in_database, d.in_index))
            .collect();
        drifted.sort_unstable();
        assert_eq!(drifted, [(1, 10, 11), (2, 10, 3), (3, 10, 0)], "{kind:?}");
        assert_eq!(report.repaired, 3);
        // Only what was missing is sent again, and only the ghost removed.
        assert_eq!((report.resent, report.removed), (7 + 10, 1), "{kind:?}");
        engine.refresh().await;
        let again = maintenance::check_drift(&db, i, false, Duration::ZERO)
            .await
            .unwrap();
        assert!(again.drifted.is_empty(), "{kind:?}: {:?}", again.drifted);
        assert!(numbers(i, CHAT, "ghost").await.is_empty());
        engine.cleanup().await;
        std::fs::remove_dir_all(dir).ok();
    }
}

#[tokio::test]
async fn the_drift_check_never_removes_a_message_written_while_it_runs() {
    use std::sync::atomic::{AtomicBool, Ordering};
    for kind in engines() {
        let engine = Engine::start(kind).await;
        let rows: Vec<MessageRow> = (1..=10)
            .map(|n| row(1, 1, n, 1, &format!("steady {n}")))
            .collect();
        let (db, dir) = database_with(&rows).await;
        index_all(&engine, &rows).await;
        // Messages persisted, then indexed, one after another, as the
        // workers do, all through the checks below.
        let stop = Arc::new(AtomicBool::new(false));
        let writer = tokio::spawn({
            let (db, index, stop) = (db.clone(), engine.index.clone(), stop.clone());
            async move {
                let mut last = 10;
                while !stop.load(Ordering::SeqCst) {
                    last += 1;
                    let r = row(1, 1, last, 1, &format!("live {last}"));
                    chat_store::repo::messages::upsert_all(&db, std::slice::from_ref(&r))
                        .await
                        .unwrap();
                    index.index(&Target::Live, &[r]).await.unwrap();
                }
                last
            }
        });
        for round in 0..10 {
            // Documents the database lacks: every round finds the chat
            // drifted, compares it and removes what it must.
            let ghosts: Vec<MessageRow> = (0..3)
                .map(|k| row(1, 1, 1_000_000 + round * 10 + k, 1, "ghost"))
                .collect();
            index_all(&engine, &ghosts).await;
            let report = maintenance::check_drift(&db, engine.index.as_ref(), true, Duration::ZERO)
                .await
                .unwrap();
            assert!(report.removed >= 3, "{kind:?}: {report:?}");
        }
        stop.store(true, Ordering::SeqCst);
        let last = writer.await.unwrap();
        engine.refresh().await;
        let indexed = engine.index.numbers(CHAT).await.unwrap();
        assert_eq!(
            indexed,
            (1..=last).collect::<Vec<_>>(),
            "{kind:?}: every persisted message stays indexed, and no ghost does"
        );
        engine.cleanup().await;
        std::fs::remove_dir_all(dir).ok();
    }
}

/// The shard a routing value names in the index behind `alias`.
async fn shard_of(client: &reqwest::Client, url: &str, alias: &str, routing: &str) -> u64 {
    let r: Value = client
        .get(format!("{url}/{alias}/_search_shards"))
        .query(&[("routing", routing)])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    r["shards"][0][0]["shard"].as_u64().unwrap()
}

/// On several shards, a message must be stored on its chat's shard, and
/// deleted there: a delete routed elsewhere answers 404, which counts as
/// already gone, and the message stays. The emulator places and looks up
/// documents by routing as Elasticsearch does, but searches every shard
/// whatever the routing, so a search's routing is checked by the unit
/// tests of `chat_search::elastic` instead.
#[tokio::test]
async fn a_chats_messages_are_stored_and_deleted_on_its_own_shard() {
    for kind in engines() {
        if kind == EngineKind::Tantivy {
            continue;
        }
        let engine = Engine::start_sharded(kind, 4).await;
        let (url, alias) = engine.es().unwrap();
        let client = reqwest::Client::new();
        let settings: Value = client
            .get(format!("{url}/{alias}/_settings"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let (_, index) = settings.as_object().unwrap().iter().next().unwrap();
        assert_eq!(
            index["settings"]["index"]["number_of_shards"], "4",
            "{kind:?}: the template's shard count"
        );

        let rows: Vec<MessageRow> = (1..=8).map(|c| row(1, c, 1, 1, "routed")).collect();
        index_all(&engine, &rows).await;
        let mut shards = Vec::new();
        for r in &rows {
            shards.push(shard_of(&client, url, alias, &ChatKey::of(r).term()).await);
        }
        let mut distinct = shards.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert!(distinct.len() > 1, "{kind:?}: the chats span shards");
        for (r, shard) in rows.iter().zip(&shards) {
            let get = |routing: String| {
                client
                    .get(format!("{url}/{alias}/_doc/{}", doc_id(r)))
                    .query(&[("routing", routing)])
                    .send()
            };
            let found: Value = get(ChatKey::of(r).term())
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            assert_eq!(
                found["found"],
                true,
                "{kind:?}: {} on its chat's shard",
                doc_id(r)
            );
            // Another chat's routing, on another shard, does not see it.
            let (elsewhere, _) = rows.iter().zip(&shards).find(|(_, s)| *s != shard).unwrap();
            let missed: Value = get(ChatKey::of(elsewhere).term())
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            assert_eq!(missed["found"], false, "{kind:?}: {}", doc_id(r));
        }

        for r in &rows {
            engine
                .index
                .delete(ChatKey::of(r), &[r.number])
                .await
                .unwrap();
        }
        engine.refresh().await;
        let chats: Vec<ChatKey> = rows.iter().map(ChatKey::of).collect();
        assert_eq!(
            engine.index.counts(&chats).await.unwrap(),
            [0; 8],
            "{kind:?}: every delete found its message"
        );
        engine.cleanup().await;
    }
}

#[tokio::test]
async fn a_rebuild_resumes_after_an_interruption_and_swaps_in_whole() {
    for kind in engines() {
        let engine = Engine::start(kind).await;
        let rows: Vec<MessageRow> = (1..=5_000)
            .map(|n| row(1, 1, n, 1, &format!("note {n}")))
            .collect();
        let (db, dir) = database_with(&rows).await;
        // An old live index with text the database no longer has.
        index_all(&engine, &[row(1, 1, 1, 1, "obsolete")]).await;

        // Interrupt the first run after its first step.
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let first = {
            let (db, index) = (db.clone(), engine.index.clone());
            tokio::spawn(async move {
                maintenance::rebuild(&db, index.as_ref(), false, |p| {
                    let _ = tx.send(p);
                })
                .await
            })
        };
        while let Some(p) = rx.recv().await {
            if p.indexed > 0 {
                first.abort();
                break;
            }
        }
        assert!(first.await.unwrap_err().is_cancelled());
        // Searches still read the old generation.
        assert_eq!(numbers(engine.index.as_ref(), CHAT, "obsolete").await, [1]);

        let mut last = None;
        let report = maintenance::rebuild(&db, engine.index.as_ref(), false, |p| last = Some(p))
            .await
            .unwrap();
        assert!(report.resumed, "{kind:?}");
        assert_eq!(
            report.indexed, 5_000,
            "{kind:?}: nothing indexed twice or skipped"
        );
        assert_eq!(last.unwrap().indexed, 5_000);
        engine.refresh().await;
        let i = engine.index.as_ref();
        assert!(numbers(i, CHAT, "obsolete").await.is_empty(), "{kind:?}");
        assert_eq!(numbers(i, CHAT, "4999").await, [4999], "{kind:?}");
        assert_eq!(i.counts(&[CHAT]).await.unwrap(), [5_000], "{kind:?}");
        engine.cleanup().await;
        std::fs::remove_dir_all(dir).ok();
    }
}

#[tokio::test]
async fn indexing_catches_up_after_search_was_down_and_persistence_never_waited() {
    for kind in engines() {
        let engine = Engine::start(kind).await;
        let switch = Arc::new(Switch::wrap(engine.index.clone()));
        let pipeline = common::search::Pipeline::start(switch.clone()).await;
        switch.set_down(true);
        let n = 40;
        let (app, chat) = pipeline.chat().await;
        for k in 0..n {
            pipeline
                .write(app, chat, &format!("outage report {k}"))
                .await;
        }
        // Every message persists while search is down.
        pipeline
            .wait_persisted(app, chat, n, Duration::from_secs(30))
            .await;
        let key = ChatKey {
            application_id: app,
            chat_number: chat,
        };
        let stats = pipeline.index_queue_stats().await;
        assert!(
            stats.ready + stats.retrying + stats.in_flight > 0,
            "{kind:?}: {stats:?}"
        );

        switch.set_down(false);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            engine.refresh().await;
            let found = numbers(engine.index.as_ref(), key, "outage").await;
            if found.len() == n as usize {
                assert_eq!(found, (1..=n).collect::<Vec<_>>(), "{kind:?}");
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{kind:?}: only {} of {n} indexed",
                found.len()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        pipeline.stop().await;
        engine.cleanup().await;
    }
}
