//! Every statement the request and write paths send to `chats` or
//! `messages` is scoped by `application_id`: what lets those tables be
//! split across databases by application (ARCHITECTURE.md, "Past one MySQL
//! primary"). A new query that reads or writes them without naming the
//! application fails here.
use std::sync::{Arc, Mutex};

use chat_links::db;
use chat_store::{
    model::{ChatRow, MessageRow},
    repo,
};
use sea_orm::{ConnectionTrait, Database};

/// The tables that shard by application.
const SHARDED: [&str; 2] = ["chats", "messages"];

/// The tables a statement names, as `FROM`, `INTO`, `UPDATE` or `JOIN`
/// targets.
fn tables(sql: &str) -> Vec<String> {
    let words: Vec<String> = sql
        .split(|c: char| c.is_whitespace() || "(),;".contains(c))
        .filter(|w| !w.is_empty())
        .map(|w| w.trim_matches('`').trim_matches('"').to_ascii_lowercase())
        .collect();
    words
        .windows(2)
        .filter(|w| matches!(w[0].as_str(), "from" | "into" | "update" | "join"))
        .map(|w| w[1].clone())
        .collect()
}

/// Whether a statement names the application where it picks rows: an
/// INSERT among its columns, anything else in its WHERE clause (a column
/// list that merely selects `application_id` does not count).
fn scoped(sql: &str) -> bool {
    let sql = sql.to_ascii_lowercase().replace('`', "");
    if sql.trim_start().starts_with("insert") {
        let columns = sql.split(" values").next().unwrap_or("");
        return columns.contains("application_id");
    }
    sql.split_once(" where ")
        .is_some_and(|(_, filter)| filter.contains("application_id"))
}

#[test]
fn a_statement_is_scoped_where_it_picks_rows() {
    assert!(scoped(
        "SELECT * FROM chats WHERE `application_id` = ? AND number = ?"
    ));
    assert!(scoped(
        "INSERT INTO messages (application_id, body) VALUES (?, ?)"
    ));
    assert!(!scoped(
        "SELECT COUNT(*) FROM (SELECT messages.application_id FROM messages) AS s"
    ));
    assert!(!scoped("DELETE FROM chats WHERE number = ?"));
}

#[test]
fn tables_are_read_from_a_statement() {
    assert_eq!(
        tables("SELECT `chats`.`number` FROM `chats` WHERE `application_id` = ?"),
        ["chats"]
    );
    assert_eq!(
        tables("INSERT INTO messages (application_id) VALUES (?)"),
        ["messages"]
    );
    assert_eq!(tables("UPDATE chats c JOIN x ON 1"), ["chats", "x"]);
}

#[tokio::test]
async fn the_data_path_names_the_application_in_every_statement_on_chats_and_messages() {
    let Ok(mysql) = std::env::var("TEST_MYSQL_URL") else {
        eprintln!("TEST_MYSQL_URL unset: skipping");
        return;
    };
    let mysql = mysql.trim_end_matches('/').to_owned();
    let name = format!(
        "chat_scope_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    );
    let admin = Database::connect(mysql.as_str()).await.unwrap();
    admin
        .execute_unprepared(&format!("CREATE DATABASE `{name}` CHARACTER SET utf8mb4"))
        .await
        .unwrap();
    let mut conn = db::connect(&format!("{mysql}/{name}")).await.unwrap();
    db::migrate(&conn).await.unwrap();
    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let record = seen.clone();
    conn.set_metric_callback(move |info| {
        record.lock().unwrap().push(info.statement.sql.clone());
    });

    let app = repo::applications::create(&conn, "scoped").await.unwrap();
    let now = chat_links::now();
    let chat = ChatRow {
        application_id: app.id,
        number: 1,
        name: Some("c".into()),
        version: 1,
        created_at: now,
        updated_at: now,
    };
    let message = MessageRow {
        application_id: app.id,
        chat_number: 1,
        number: 1,
        body: "hello".into(),
        version: 1,
        created_at: now,
        updated_at: now,
    };
    // What an API request and a worker's batch do.
    repo::chats::upsert_all(&conn, std::slice::from_ref(&chat))
        .await
        .unwrap();
    repo::messages::upsert_all(&conn, std::slice::from_ref(&message))
        .await
        .unwrap();
    assert!(repo::chats::find(&conn, app.id, 1).await.unwrap().is_some());
    repo::chats::list(&conn, app.id, 0, 10).await.unwrap();
    repo::chats::max_number(&conn, app.id).await.unwrap();
    assert!(
        repo::messages::find(&conn, app.id, 1, 1)
            .await
            .unwrap()
            .is_some()
    );
    repo::messages::list(&conn, app.id, 1, 0, 10).await.unwrap();
    repo::messages::max_number(&conn, app.id, 1).await.unwrap();
    assert_eq!(repo::messages::count(&conn, app.id, 1).await.unwrap(), 1);
    repo::counts::mark_chats_and_applications(&conn, [(app.id, 1)])
        .await
        .unwrap();
    repo::counts::recount_marked(&conn, 100, None)
        .await
        .unwrap();
    repo::ceilings::raise(&conn, &repo::ceilings::messages(app.id, 1), 64)
        .await
        .unwrap();

    let statements = seen.lock().unwrap().clone();
    let on_sharded: Vec<&String> = statements
        .iter()
        .filter(|sql| tables(sql).iter().any(|t| SHARDED.contains(&t.as_str())))
        .collect();
    assert!(
        on_sharded.len() >= 10,
        "the path was not observed: {statements:#?}"
    );
    let unscoped: Vec<&&String> = on_sharded.iter().filter(|sql| !scoped(sql)).collect();
    admin
        .execute_unprepared(&format!("DROP DATABASE `{name}`"))
        .await
        .unwrap();
    assert!(
        unscoped.is_empty(),
        "statements on chats or messages that do not name the application: {unscoped:#?}"
    );
}
