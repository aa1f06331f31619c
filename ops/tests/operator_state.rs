//! What operators leave in the database for the dashboard: run records
//! whose repairs outlive the quiet runs, queue pauses and revoked
//! sessions. On SQLite, and on MySQL when `TEST_MYSQL_URL` is set.
use chat_links::db;
use chat_ops::{pauses, runs, sessions};
use sea_orm::{ConnectionTrait, Database, DatabaseConnection};

/// A migrated database of each kind this run can reach, and what drops it.
async fn databases() -> Vec<(DatabaseConnection, Option<(String, String)>)> {
    let dir = std::env::temp_dir().join(format!("chat-ops-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let sqlite = db::connect_writer(&db::default_sqlite_url(&dir))
        .await
        .unwrap();
    db::migrate(&sqlite).await.unwrap();
    let mut out = vec![(sqlite, None)];
    if let Ok(mysql) = std::env::var("TEST_MYSQL_URL") {
        let mysql = mysql.trim_end_matches('/').to_owned();
        let name = format!(
            "chat_ops_{}",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        );
        let admin = Database::connect(mysql.clone()).await.unwrap();
        admin
            .execute_unprepared(&format!("CREATE DATABASE `{name}`"))
            .await
            .unwrap();
        let conn = db::connect(&format!("{mysql}/{name}")).await.unwrap();
        db::migrate(&conn).await.unwrap();
        out.push((conn, Some((mysql, name))));
    }
    out
}

async fn drop_db(admin: Option<(String, String)>) {
    if let Some((mysql, name)) = admin {
        let admin = Database::connect(mysql).await.unwrap();
        admin
            .execute_unprepared(&format!("DROP DATABASE `{name}`"))
            .await
            .unwrap();
    }
}

async fn run(db: &DatabaseConnection, task: &str, tick: i64, touched: u64) {
    let id = runs::begin(db, task, tick, "test").await.unwrap().unwrap();
    let end = runs::Finished {
        rows_touched: touched,
        detail: None,
        error: None,
    };
    runs::finish(db, id, end).await.unwrap();
}

#[tokio::test]
async fn a_repair_outlives_the_quiet_runs_that_follow_it() {
    for (db, admin) in databases().await {
        run(&db, "counts_full", 100, 7).await;
        for tick in 101..120 {
            run(&db, "counts_full", tick, 0).await;
        }
        runs::trim(&db, "counts_full", 5).await.unwrap();
        let kept = runs::recent(&db, Some("counts_full"), 100).await.unwrap();
        assert_eq!(kept.len(), 6, "five quiet runs and the repair");
        let repairs = runs::repairs(&db, "counts_full", 10).await.unwrap();
        assert_eq!(repairs.len(), 1);
        assert_eq!(repairs[0].rows_touched, 7);
        // Repairs are bounded too.
        for tick in 200..210 {
            run(&db, "counts_full", tick, 1).await;
        }
        runs::trim(&db, "counts_full", 5).await.unwrap();
        let repairs = runs::repairs(&db, "counts_full", 100).await.unwrap();
        assert_eq!(repairs.len(), 5);
        assert_eq!(repairs[0].tick_at.timestamp(), 209, "newest first");
        drop_db(admin).await;
    }
}

#[tokio::test]
async fn pauses_and_revoked_sessions_are_kept_once() {
    for (db, admin) in databases().await {
        assert!(pauses::pause(&db, "messages", "Ada").await.unwrap());
        assert!(
            !pauses::pause(&db, "messages", "Grace").await.unwrap(),
            "already paused"
        );
        let all = pauses::all(&db).await.unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].paused_by, "Ada", "the first pause stands");
        assert!(pauses::resume(&db, "messages").await.unwrap());
        assert!(!pauses::resume(&db, "messages").await.unwrap());
        assert!(pauses::all(&db).await.unwrap().is_empty());

        let later = chat_links::now_millis() + 60_000;
        assert!(!sessions::is_revoked(&db, "abc").await.unwrap());
        sessions::revoke(&db, "abc", later).await.unwrap();
        sessions::revoke(&db, "abc", later).await.unwrap();
        assert!(sessions::is_revoked(&db, "abc").await.unwrap());
        // A revocation past its cookie's expiry is forgotten at the next.
        sessions::revoke(&db, "old", chat_links::now_millis() - 1)
            .await
            .unwrap();
        sessions::revoke(&db, "new", later).await.unwrap();
        assert!(!sessions::is_revoked(&db, "old").await.unwrap());
        drop_db(admin).await;
    }
}
