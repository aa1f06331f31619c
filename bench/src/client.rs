//! The chat API as the benchmark calls it.
use std::time::Duration;

use anyhow::Context;
use serde_json::{Value, json};

#[derive(Clone)]
pub struct ChatApi {
    http: reqwest::Client,
    base: String,
}

/// One application the benchmark writes into: the path of its chats,
/// valid on any server of the deployment.
#[derive(Clone)]
pub struct AppUrls {
    chats: String,
}

impl AppUrls {
    /// Chats under an arbitrary path, for the bare limit server.
    pub fn at(chats: &str) -> Self {
        Self {
            chats: chats.to_owned(),
        }
    }
}

impl ChatApi {
    pub fn new(base: &str, concurrency: usize) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(concurrency.max(1) * 2)
            // Under the servers' keep-alive (HEADER_READ_TIMEOUT_MS, 10 s,
            // also bounds an idle connection): a connection the server is
            // closing as a request goes out fails that request.
            .pool_idle_timeout(Duration::from_secs(5))
            .tcp_nodelay(true)
            .timeout(Duration::from_secs(60))
            .build()?;
        Ok(Self {
            http,
            base: base.trim_end_matches('/').to_owned(),
        })
    }

    pub async fn wait_ready(&self, within: Duration) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + within;
        let url = format!("{}/health/ready", self.base);
        loop {
            if let Ok(r) = self.http.get(&url).send().await
                && r.status().is_success()
            {
                return Ok(());
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "{} never became ready",
                self.base
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Creates an application and `chats` chats in it; returns its token.
    pub async fn create_app(&self, chats: usize) -> anyhow::Result<(String, AppUrls)> {
        let app: Value = self
            .http
            .post(format!("{}/api/v1/applications", self.base))
            .json(&json!({ "name": "bench" }))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let token = app["token"].as_str().context("no token")?.to_owned();
        let urls = AppUrls {
            chats: format!("/api/v1/applications/{token}/chats"),
        };
        for _ in 0..chats {
            self.http
                .post(format!("{}{}", self.base, urls.chats))
                .json(&json!({}))
                .send()
                .await?
                .error_for_status()?;
        }
        Ok((token, urls))
    }

    /// Posts a message; returns its number.
    pub async fn post_message(
        &self,
        app: &AppUrls,
        chat: usize,
        body: &str,
    ) -> anyhow::Result<i64> {
        let r = self
            .http
            .post(format!("{}{}/{chat}/messages", self.base, app.chats))
            .json(&json!({ "body": body }))
            .send()
            .await?;
        anyhow::ensure!(r.status() == 201, "POST message answered {}", r.status());
        let created: Value = r.json().await?;
        created["number"].as_i64().context("no number")
    }

    pub async fn get_message(&self, app: &AppUrls, chat: usize, number: i64) -> anyhow::Result<()> {
        let r = self
            .http
            .get(format!(
                "{}{}/{chat}/messages/{number}",
                self.base, app.chats
            ))
            .send()
            .await?;
        anyhow::ensure!(r.status() == 200, "GET message answered {}", r.status());
        r.bytes().await?;
        Ok(())
    }
}

/// The body of message `i`: short, like chat text, and distinct.
pub fn body(i: usize) -> String {
    format!("bench message {i}: the quick brown fox jumps over the lazy dog")
}
