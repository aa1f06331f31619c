//! `Idempotency-Key` on writes, on both profiles: a request sent again
//! under its key answers its first response and writes nothing new; a run
//! whose answer was lost after its write is answered exactly when sent
//! again; a different request under the same key is refused.
mod common;

use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue, Method, header};
use chat::backends::Backends;
use chat_store::{
    idempotency::{Begin, Key, Link, Scope},
    intake::WriteMeta,
};
use common::{App, Stack, profiles};
use serde_json::{Value, json};

/// Storage handles of the stack, and the id of the application `token`.
async fn storage(stack: &Stack, token: &str) -> (Backends, i64) {
    let b = stack.backends(Duration::from_secs(15)).await;
    let id = chat_store::repo::applications::find_by_token(&b.db, token)
        .await
        .unwrap()
        .unwrap()
        .id;
    (b, id)
}

/// The fingerprint the API computes for a JSON POST of `body` to `path`.
fn print_of(path: &str, body: &Value) -> String {
    let bytes = serde_json::to_vec(body).unwrap();
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    chat_api::idempotency::fingerprint(&Method::POST, &format!("/api/v1{path}"), &headers, &bytes)
}

async fn post(app: &App, path: &str, key: &str, body: &Value) -> reqwest::Response {
    app.http
        .post(app.url(path))
        .header("idempotency-key", key)
        .json(body)
        .send()
        .await
        .unwrap()
}

/// The field names, sorted, of the one idempotency record of application
/// `app_id` in Redis.
async fn completed_record_fields(redis: &redis::Client, prefix: &str, app_id: i64) -> Vec<String> {
    let mut conn = redis.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}{{app:{app_id}}}:idem:*"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(keys.len(), 1, "{keys:?}");
    let mut fields: Vec<String> = redis::cmd("HKEYS")
        .arg(&keys[0])
        .query_async(&mut conn)
        .await
        .unwrap();
    fields.sort();
    fields
}

/// Status, Location and JSON body of a response.
async fn answer(r: reqwest::Response) -> (u16, Option<String>, Value) {
    let status = r.status().as_u16();
    let location = r
        .headers()
        .get("location")
        .map(|v| v.to_str().unwrap().to_owned());
    (status, location, r.json().await.unwrap())
}

#[tokio::test]
async fn a_write_sent_again_under_its_key_answers_the_first_response() {
    for profile in profiles() {
        let stack = Stack::new(profile).await;
        let app = stack.spawn("serve", &[]).await;
        let token = app.create_app("idem").await;
        let chat = app.create_chat(&token).await;
        let path = format!("/applications/{token}/chats/{chat}/messages");
        let body = json!({ "body": "once" });

        let first = answer(post(&app, &path, "\"k-1\"", &body).await).await;
        assert_eq!(first.0, 201, "{profile:?}: {first:?}");
        // The bare form of the same key is the same key.
        let again = answer(post(&app, &path, "k-1", &body).await).await;
        assert_eq!(again, first, "{profile:?}");
        // A new key is a new message.
        let other = answer(post(&app, &path, "k-2", &body).await).await;
        assert_eq!(other.0, 201);
        assert_ne!(other.2["number"], first.2["number"]);

        let differs = post(&app, &path, "k-1", &json!({ "body": "twice" })).await;
        assert_eq!(differs.status(), 422, "{profile:?}");
        // A key names one request: used on another path, it is refused.
        let on_other_path = post(
            &app,
            &format!("/applications/{token}/chats"),
            "k-1",
            &json!({}),
        )
        .await;
        assert_eq!(on_other_path.status(), 422, "{profile:?}");

        let listed = app.wait_listed(&path, 2, Duration::from_secs(20)).await;
        assert_eq!(listed.len(), 2, "{profile:?}: {listed:?}");
        stack.cleanup().await;
    }
}

#[tokio::test]
async fn a_key_in_use_answers_409_and_a_bad_key_400() {
    for profile in profiles() {
        let stack = Stack::new(profile).await;
        let app = stack.spawn("serve", &[]).await;
        let token = app.create_app("busy").await;
        let chat = app.create_chat(&token).await;
        let path = format!("/applications/{token}/chats/{chat}/messages");
        let body = json!({ "body": "held" });
        let print = print_of(&path, &body);
        let (b, app_id) = storage(&stack, &token).await;
        // Another process's run holds the key.
        let key = Key::new(Scope::Application(app_id), "held-key");
        let held = b
            .idempotency
            .begin(&key, &print, Duration::from_secs(60))
            .await
            .unwrap();
        assert!(matches!(held, Begin::Run(_)));

        let busy = post(&app, &path, "held-key", &body).await;
        assert_eq!(busy.status(), 409, "{profile:?}");
        assert_eq!(busy.headers()["retry-after"], "1");
        let bad = post(&app, &path, "\"unterminated", &body).await;
        assert_eq!(bad.status(), 400);
        // A method the path does not serve is a 405, key or not.
        let put = app
            .http
            .put(app.url(&path))
            .header("idempotency-key", "held-key")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(put.status(), 405, "{profile:?}");
        let long = post(&app, &path, &"k".repeat(256), &body).await;
        assert_eq!(long.status(), 400);
        stack.cleanup().await;
    }
}

/// The first run wrote the message and was lost before answering (its
/// process died): the key's lease runs out, and the request sent again
/// answers with that message, number included, instead of writing another.
#[tokio::test]
async fn a_write_whose_answer_was_lost_is_not_made_twice() {
    for profile in profiles() {
        let stack = Stack::new(profile).await;
        let app = stack.spawn("serve", &[]).await;
        let token = app.create_app("lost").await;
        let chat = app.create_chat(&token).await;
        let path = format!("/applications/{token}/chats/{chat}/messages");
        let body = json!({ "body": "written once" });
        let print = print_of(&path, &body);
        let (b, app_id) = storage(&stack, &token).await;
        let key = Key::new(Scope::Application(app_id), "lost-answer");
        let Begin::Run(link) = b
            .idempotency
            .begin(&key, &print, Duration::ZERO)
            .await
            .unwrap()
        else {
            panic!("a fresh key runs");
        };
        let write_under = |link: Link| {
            b.intake.create_message(
                app_id,
                chat,
                "written once".into(),
                WriteMeta {
                    idempotency: Some(link),
                    ..Default::default()
                },
            )
        };
        let first = write_under(link.clone()).await.unwrap();

        let (status, location, json) = answer(post(&app, &path, "lost-answer", &body).await).await;
        assert_eq!(status, 201, "{profile:?}: {json}");
        assert_eq!(json["number"], first.number, "{profile:?}");
        assert_eq!(
            location.as_deref(),
            Some(format!("/api/v1{path}/{}", first.number).as_str())
        );
        // And from now on the stored response is replayed.
        let replay = answer(post(&app, &path, "lost-answer", &body).await).await;
        assert_eq!(replay.2, json);

        // The first run, had it only stalled, writes nothing when it wakes:
        // it learns the first number, or (where the completed record no
        // longer holds the run's state) that the outcome is not its own.
        let stale = write_under(link).await;
        match stale {
            Ok(state) => assert_eq!(state.number, first.number, "{profile:?}"),
            Err(e) => assert!(
                matches!(e, chat_links::error::StoreError::OutcomeUnknown(_)),
                "{profile:?}: {e}"
            ),
        }
        if let Some(redis) = stack.redis() {
            let fields = completed_record_fields(&redis, &stack.redis_prefix, app_id).await;
            assert_eq!(
                fields,
                ["b", "f", "h", "s"],
                "a completed record keeps what a replay reads"
            );
        }

        let listed = app.wait_listed(&path, 1, Duration::from_secs(20)).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let listed_later = app.list_all(&path).await;
        assert_eq!(listed.len(), 1, "{profile:?}: {listed:?}");
        assert_eq!(listed_later.len(), 1, "{profile:?}: {listed_later:?}");
        stack.cleanup().await;
    }
}

#[tokio::test]
async fn an_application_created_again_under_its_key_is_the_same_application() {
    for profile in profiles() {
        let stack = Stack::new(profile).await;
        let app = stack.spawn("serve", &[]).await;
        let body = json!({ "name": "once" });
        let first = answer(post(&app, "/applications", "app-key", &body).await).await;
        assert_eq!(first.0, 201);
        let again = answer(post(&app, "/applications", "app-key", &body).await).await;
        assert_eq!(again, first, "{profile:?}");
        let db = stack.db().await;
        use sea_orm::ConnectionTrait;
        let n: i64 = db
            .query_one_raw(sea_orm::Statement::from_string(
                db.get_database_backend(),
                "SELECT COUNT(*) FROM applications WHERE name = 'once'",
            ))
            .await
            .unwrap()
            .unwrap()
            .try_get_by_index(0)
            .unwrap();
        assert_eq!(n, 1, "{profile:?}");
        stack.cleanup().await;
    }
}
