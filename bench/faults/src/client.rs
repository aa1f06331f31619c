//! The system's public HTTP API as the scenario uses it: one attempt at a
//! time, each classified; retrying is the caller's business.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

pub(crate) struct Api {
    http: reqwest::Client,
    bases: Vec<String>,
    token: String,
}

/// How one POST ended.
pub(crate) enum Attempt {
    Created(i64),
    /// A final answer the client must not retry: a 4xx other than 409.
    Rejected(u16, String),
    /// 5xx, 409, a timeout or a broken connection: the same request again.
    Retry(String),
}

impl Api {
    pub fn new(bases: Vec<String>, timeout: Duration) -> Result<Api> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(2))
            .build()?;
        Ok(Api {
            http,
            bases,
            token: String::new(),
        })
    }

    pub fn apis(&self) -> usize {
        self.bases.len()
    }

    pub fn base(&self, api: usize) -> &str {
        &self.bases[api % self.bases.len()]
    }

    fn url(&self, api: usize, path: &str) -> String {
        format!("{}/api/v1{path}", self.base(api))
    }

    fn messages(&self, api: usize, chat: i64) -> String {
        self.url(
            api,
            &format!("/applications/{}/chats/{chat}/messages", self.token),
        )
    }

    /// Creates the application and `chats` chats. Nothing is faulted yet,
    /// so any failure here is an error, not a finding.
    pub async fn setup(&mut self, chats: usize) -> Result<Vec<i64>> {
        let app = self
            .post_ok(0, "/applications", json!({ "name": "faults" }))
            .await?;
        self.token = app["token"].as_str().context("no token")?.to_owned();
        let mut numbers = Vec::with_capacity(chats);
        for i in 0..chats {
            let path = format!("/applications/{}/chats", self.token);
            let chat = self
                .post_ok(i, &path, json!({ "name": format!("chat {i}") }))
                .await?;
            numbers.push(chat["number"].as_i64().context("chat without number")?);
        }
        Ok(numbers)
    }

    async fn post_ok(&self, api: usize, path: &str, body: Value) -> Result<Value> {
        let r = self
            .http
            .post(self.url(api, path))
            .json(&body)
            .send()
            .await?;
        let status = r.status();
        if !status.is_success() {
            bail!(
                "POST {path}: {status} {}",
                r.text().await.unwrap_or_default()
            );
        }
        Ok(r.json().await?)
    }

    pub async fn post_message(&self, api: usize, chat: i64, body: &str, key: &str) -> Attempt {
        let sent = self
            .http
            .post(self.messages(api, chat))
            .header("Idempotency-Key", key)
            .json(&json!({ "body": body }))
            .send()
            .await;
        let r = match sent {
            Ok(r) => r,
            Err(e) => return Attempt::Retry(classify(&e)),
        };
        let status = r.status();
        if status.is_server_error() || status == reqwest::StatusCode::CONFLICT {
            return Attempt::Retry(status.as_u16().to_string());
        }
        if status.is_success() {
            // A 2xx whose body never arrived whole tells the client
            // nothing: its outcome is unknown, so it asks again.
            return match r.json::<Value>().await {
                Ok(v) => match v["number"].as_i64() {
                    Some(n) => Attempt::Created(n),
                    None => Attempt::Rejected(status.as_u16(), format!("2xx without number: {v}")),
                },
                Err(e) => Attempt::Retry(classify(&e)),
            };
        }
        let text: String = r
            .text()
            .await
            .unwrap_or_default()
            .chars()
            .take(200)
            .collect();
        Attempt::Rejected(status.as_u16(), text)
    }

    /// A successful GET's JSON body.
    async fn get_json(&self, url: String) -> Result<Value> {
        Ok(self
            .http
            .get(url)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?)
    }

    /// One page of a chat's messages after `after`: (number, body) pairs
    /// and the cursor for the next page.
    pub async fn list_page(
        &self,
        api: usize,
        chat: i64,
        after: i64,
    ) -> Result<(Vec<(i64, String)>, Option<i64>)> {
        let url = format!("{}?limit=200&after={after}", self.messages(api, chat));
        let page = self.get_json(url).await?;
        let items = page["items"]
            .as_array()
            .context("page without items")?
            .iter()
            .map(|i| {
                Ok((
                    i["number"].as_i64().context("item without number")?,
                    i["body"].as_str().context("item without body")?.to_owned(),
                ))
            })
            .collect::<Result<_>>()?;
        Ok((items, page["next_after"].as_i64()))
    }

    /// Every message of a chat after `after`, following `next_after`. A
    /// page that fails is asked again a few times, of either API.
    pub async fn list_from(&self, chat: i64, after: i64) -> Result<Vec<(i64, String)>> {
        let mut out = Vec::new();
        let mut cursor = after;
        let mut attempt = 0usize;
        loop {
            match self.list_page(attempt, chat, cursor).await {
                Ok((items, next)) => {
                    out.extend(items);
                    match next {
                        Some(n) => cursor = n,
                        None => return Ok(out),
                    }
                }
                Err(e) if attempt >= 5 => return Err(e.context(format!("list chat {chat}"))),
                Err(_) => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(200 << attempt.min(3))).await;
                }
            }
        }
    }

    /// Numbers of the messages a search for `q` finds in a chat.
    pub async fn search(&self, api: usize, chat: i64, q: &str) -> Result<Vec<i64>> {
        let url = format!("{}/search?q={q}&limit=100", self.messages(api, chat));
        let page = self.get_json(url).await?;
        Ok(page["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|i| i["number"].as_i64())
            .collect())
    }

    /// Jobs of `queue` not yet settled (ready, in flight, or waiting for a
    /// retry), from the `chat_queue_jobs` gauge, which every process
    /// reads from the queue itself. `None` if no API answers.
    pub async fn backlog(&self, queue: &str) -> Option<u64> {
        for api in 0..self.apis() {
            if let Ok(text) = self.get_text(&format!("{}/metrics", self.base(api))).await {
                return Some(queue_backlog(&text, queue));
            }
        }
        None
    }

    pub async fn get_text(&self, url: &str) -> Result<String> {
        Ok(self
            .http
            .get(url)
            .send()
            .await?
            .error_for_status()?
            .text()
            .await?)
    }
}

fn classify(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connect"
    } else if e.is_body() || e.is_decode() {
        "body"
    } else {
        "io"
    }
    .to_owned()
}

/// Sum of one queue's live states in Prometheus text.
pub(crate) fn queue_backlog(metrics: &str, queue: &str) -> u64 {
    queue_jobs(metrics, queue)
        .filter(|(state, _)| matches!(state.as_str(), "ready" | "in_flight" | "retrying"))
        .map(|(_, n)| n)
        .sum()
}

/// `(state, count)` of every `chat_queue_jobs` sample of one queue.
pub(crate) fn queue_jobs<'a>(
    metrics: &'a str,
    queue: &'a str,
) -> impl Iterator<Item = (String, u64)> + 'a {
    let wanted = format!("queue=\"{queue}\"");
    metrics
        .lines()
        .filter(|l| l.starts_with("chat_queue_jobs{"))
        .filter(move |l| l.contains(&wanted))
        .filter_map(|l| {
            let state = l.split("state=\"").nth(1)?.split('"').next()?.to_owned();
            let value = l.rsplit(' ').next()?.parse::<f64>().ok()?;
            Some((state, value as u64))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backlog_sums_live_states_of_one_queue() {
        let text = "# TYPE chat_queue_jobs gauge\n\
            chat_queue_jobs{queue=\"messages\",state=\"ready\"} 3\n\
            chat_queue_jobs{queue=\"messages\",state=\"retrying\"} 2\n\
            chat_queue_jobs{queue=\"messages\",state=\"done\"} 100\n\
            chat_queue_jobs{queue=\"index\",state=\"ready\"} 7\n";
        assert_eq!(queue_backlog(text, "messages"), 5);
        assert_eq!(queue_backlog(text, "index"), 7);
        assert_eq!(queue_backlog(text, "chats"), 0);
    }
}
