//! The requests that clients of the system this replaces send, as the
//! README's walkthrough shows them with `curl --form`: multipart bodies,
//! and a PUT of an application with no body at all, which answers 200
//! with the application unchanged.
mod common;

use common::{App, Stack, profiles};
use reqwest::{StatusCode, multipart::Form};
use serde_json::Value;

async fn send(
    app: &App,
    method: reqwest::Method,
    path: &str,
    form: Option<Form>,
) -> (StatusCode, Value) {
    let mut request = app.http.request(method, app.url(path));
    if let Some(form) = form {
        request = request.multipart(form);
    }
    let r = request.send().await.unwrap();
    let status = r.status();
    (status, r.json().await.unwrap())
}

fn form(field: &str, value: &str) -> Option<Form> {
    Some(Form::new().text(field.to_owned(), value.to_owned()))
}

#[tokio::test(flavor = "multi_thread")]
async fn the_old_clients_walkthrough_passes() {
    use reqwest::Method;
    for profile in profiles() {
        let stack = Stack::new(profile).await;
        let app = stack.spawn("serve", &[]).await;

        let (status, created) = send(
            &app,
            Method::POST,
            "/applications",
            form("name", "Old client"),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{profile:?}: {created}");
        let token = created["token"].as_str().unwrap().to_owned();
        let path = format!("/applications/{token}");
        let (status, shown) = send(&app, Method::GET, &path, None).await;
        assert_eq!(
            (status, &shown["name"]),
            (StatusCode::OK, &Value::from("Old client"))
        );
        let (status, put) = send(&app, Method::PUT, &path, None).await;
        assert_eq!(
            status,
            StatusCode::OK,
            "{profile:?}: a PUT with no body: {put}"
        );
        assert_eq!(put, shown, "unchanged");
        // A body that names nothing is still refused.
        let (status, _) = send(
            &app,
            Method::PUT,
            &path,
            Some(Form::new().text("other", "x")),
        )
        .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);

        let chats = format!("{path}/chats");
        let (status, chat) = send(&app, Method::POST, &chats, form("name", "first")).await;
        assert_eq!(status, StatusCode::CREATED, "{chat}");
        let chat_path = format!("{chats}/{}", chat["number"]);
        let (status, shown) = send(&app, Method::GET, &chat_path, None).await;
        assert_eq!(
            (status, &shown["name"]),
            (StatusCode::OK, &Value::from("first"))
        );
        let (status, renamed) = send(&app, Method::PUT, &chat_path, form("name", "renamed")).await;
        assert_eq!(
            (status, &renamed["name"]),
            (StatusCode::OK, &Value::from("renamed"))
        );
        let (_, shown) = send(&app, Method::GET, &chat_path, None).await;
        assert_eq!(shown["name"], "renamed");

        let messages = format!("{chat_path}/messages");
        let (status, message) = send(&app, Method::POST, &messages, form("body", "hello")).await;
        assert_eq!(status, StatusCode::CREATED, "{message}");
        let message_path = format!("{messages}/{}", message["number"]);
        let (status, shown) = send(&app, Method::GET, &message_path, None).await;
        assert_eq!(
            (status, &shown["body"]),
            (StatusCode::OK, &Value::from("hello"))
        );
        let (status, edited) = send(&app, Method::PUT, &message_path, form("body", "edited")).await;
        assert_eq!(
            (status, &edited["body"]),
            (StatusCode::OK, &Value::from("edited"))
        );
        let (_, shown) = send(&app, Method::GET, &message_path, None).await;
        assert_eq!(shown["body"], "edited");
        stack.cleanup().await;
    }
}
