//! The span exporter for OTLP/HTTP with protobuf, the default protocol:
//! each batch is written by [`crate::otlp_wire`] and posted from the
//! batch processor's own thread.
//!
//! It stands in for the OTLP crate's HTTP exporter, whose conversion of
//! each span into message structs was the larger part of export's cost,
//! and it keeps that exporter's contract: the same variables
//! (`OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT`, `_HEADERS` and `_TIMEOUT`),
//! and the same retries (a failed connection, 429, 502, 503 and 504 are
//! retried three times, from 100 ms doubling to 1.6 s with jitter, waiting
//! at least what a `Retry-After` asks, all within the timeout). Compression is not
//! built in, so asking for it leaves export to that exporter, which
//! refuses it.
use std::{
    borrow::Cow,
    fmt,
    str::FromStr,
    time::{Duration, Instant},
};

use backon::{BackoffBuilder, ExponentialBuilder};

use opentelemetry_sdk::{
    Resource,
    error::{OTelSdkError, OTelSdkResult},
    trace::{SpanData, SpanExporter},
};
use reqwest::{
    StatusCode,
    blocking::Client,
    header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, RETRY_AFTER},
};

use crate::otlp_wire::{self, EncodedResource};

/// Where spans go when no endpoint is configured.
const DEFAULT_ENDPOINT: &str = "http://localhost:4318";
const TRACES_PATH: &str = "/v1/traces";
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

const RETRIES: usize = 3;
const FIRST_DELAY: Duration = Duration::from_millis(100);
const MAX_DELAY: Duration = Duration::from_millis(1600);
/// The longest a `Retry-After` is honoured for.
const MAX_THROTTLE: Duration = Duration::from_secs(30);

/// What the environment configures, read through `var` (which returns a
/// variable's trimmed value, or `None` when it is unset or empty).
#[derive(Debug)]
pub(crate) struct Config {
    endpoint: reqwest::Url,
    headers: HeaderMap,
    timeout: Duration,
}

impl Config {
    pub(crate) fn from_env(var: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        let endpoint = match (
            var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
            var("OTEL_EXPORTER_OTLP_ENDPOINT"),
        ) {
            // The signal's own endpoint is used as given; the general one
            // is a base that the signal's path is appended to.
            (Some(traces), _) => traces,
            (None, Some(base)) => format!("{}{TRACES_PATH}", base.trim_end_matches('/')),
            (None, None) => format!("{DEFAULT_ENDPOINT}{TRACES_PATH}"),
        };
        let endpoint = reqwest::Url::parse(&endpoint)
            .map_err(|e| format!("invalid OTLP endpoint {endpoint:?}: {e}"))?;
        let headers = var("OTEL_EXPORTER_OTLP_TRACES_HEADERS")
            .or_else(|| var("OTEL_EXPORTER_OTLP_HEADERS"))
            .map(|list| headers(&list))
            .unwrap_or_default();
        let timeout = [
            "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
            "OTEL_EXPORTER_OTLP_TIMEOUT",
        ]
        .into_iter()
        .find_map(|name| var(name)?.parse().ok())
        .map_or(DEFAULT_TIMEOUT, Duration::from_millis);
        Ok(Self {
            endpoint,
            headers,
            timeout,
        })
    }
}

/// Headers given as `name=value,name=value`, each value percent-decoded;
/// a pair that is not a valid header is skipped.
fn headers(list: &str) -> HeaderMap {
    list.split(',')
        .filter_map(|pair| {
            let (name, value) = pair.split_once('=')?;
            let (name, value) = (name.trim(), value.trim());
            let value = percent_encoding::percent_decode_str(value)
                .decode_utf8()
                .unwrap_or(Cow::Borrowed(value));
            if name.is_empty() || value.is_empty() {
                return None;
            }
            Some((
                HeaderName::from_str(name).ok()?,
                HeaderValue::from_str(&value).ok()?,
            ))
        })
        .collect()
}

pub(crate) struct ProtobufHttp {
    client: Client,
    config: Config,
    resource: EncodedResource,
}

impl fmt::Debug for ProtobufHttp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProtobufHttp")
            .field("endpoint", &self.config.endpoint.as_str())
            .finish_non_exhaustive()
    }
}

impl ProtobufHttp {
    pub(crate) fn new(config: Config) -> Result<Self, String> {
        let timeout = config.timeout;
        // A blocking client owns a runtime of its own, which may be neither
        // built nor dropped on a Tokio runtime's thread: this may run on
        // one, so it is built on a thread of its own.
        let client = std::thread::spawn(move || Client::builder().timeout(timeout).build())
            .join()
            .map_err(|_| "building the OTLP HTTP client panicked".to_owned())?
            .map_err(|e| format!("could not build the OTLP HTTP client: {e}"))?;
        Ok(Self {
            client,
            config,
            resource: EncodedResource::default(),
        })
    }

    /// Posts `body`, retrying what the OTLP specification says to retry,
    /// until the timeout.
    fn post(&self, body: Vec<u8>) -> Result<(), String> {
        let started = Instant::now();
        let mut backoff = ExponentialBuilder::default()
            .with_min_delay(FIRST_DELAY)
            .with_max_delay(MAX_DELAY)
            .with_jitter()
            .with_max_times(RETRIES)
            .build();
        loop {
            let outcome = self
                .client
                .post(self.config.endpoint.clone())
                .headers(self.config.headers.clone())
                .header(CONTENT_TYPE, "application/x-protobuf")
                .body(body.clone())
                .send();
            let (failure, asked) = match outcome {
                Ok(response) if response.status().is_success() => {
                    // Read to the end, so the connection is kept for the next.
                    let _ = response.bytes();
                    return Ok(());
                }
                Ok(response) => {
                    let status = response.status();
                    if !retryable(status) {
                        return Err(format!("OTLP export failed with status {status}"));
                    }
                    let asked = response
                        .headers()
                        .get(RETRY_AFTER)
                        .and_then(|v| v.to_str().ok()?.trim().parse().ok())
                        .map(Duration::from_secs);
                    (format!("status {status}"), asked)
                }
                Err(e) => (format!("network error: {e}"), None),
            };
            let Some(delay) = backoff.next() else {
                return Err(format!(
                    "OTLP export failed after {RETRIES} retries: {failure}"
                ));
            };
            let wait = asked.map_or(delay, |asked| delay.max(asked.min(MAX_THROTTLE)));
            if wait >= self.config.timeout.saturating_sub(started.elapsed()) {
                return Err(format!("OTLP export timed out: {failure}"));
            }
            std::thread::sleep(wait);
        }
    }
}

/// The statuses OTLP/HTTP says to retry.
fn retryable(status: StatusCode) -> bool {
    matches!(status.as_u16(), 429 | 502 | 503 | 504)
}

impl SpanExporter for ProtobufHttp {
    // Blocking is right here: the batch processor runs each export on its
    // own thread and waits for it.
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let body = otlp_wire::request(&self.resource, &batch);
        drop(batch);
        self.post(body).map_err(OTelSdkError::InternalFailure)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.resource = EncodedResource::new(resource);
    }
}

#[cfg(test)]
mod tests {
    use std::{
        collections::HashMap,
        io::{BufRead, BufReader, Read, Write},
        net::TcpListener,
        sync::mpsc,
    };

    use super::*;

    fn config(vars: &[(&str, &str)]) -> Result<Config, String> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_env(|name| vars.get(name).cloned())
    }

    #[test]
    fn the_endpoint_headers_and_timeout_come_from_the_otlp_variables() {
        let default = config(&[]).unwrap();
        assert_eq!(default.endpoint.as_str(), "http://localhost:4318/v1/traces");
        assert_eq!(default.timeout, Duration::from_secs(10));
        assert!(default.headers.is_empty());

        let base = config(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/")]).unwrap();
        assert_eq!(base.endpoint.as_str(), "http://collector:4318/v1/traces");

        let set = config(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
            (
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "http://traces:9000/custom",
            ),
            ("OTEL_EXPORTER_OTLP_HEADERS", "ignored=yes"),
            (
                "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
                " api-key = a%20b%2Cc ,bad header=x,empty=,=novalue,x-tenant=7",
            ),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "5000"),
            ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "250"),
        ])
        .unwrap();
        assert_eq!(set.endpoint.as_str(), "http://traces:9000/custom");
        assert_eq!(set.timeout, Duration::from_millis(250));
        assert_eq!(set.headers.len(), 2, "{:?}", set.headers);
        assert_eq!(set.headers["api-key"], "a b,c");
        assert_eq!(set.headers["x-tenant"], "7");

        let general = config(&[
            ("OTEL_EXPORTER_OTLP_HEADERS", "authorization=Bearer%20t"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "not a number"),
        ])
        .unwrap();
        assert_eq!(general.headers["authorization"], "Bearer t");
        assert_eq!(general.timeout, Duration::from_secs(10));

        assert!(config(&[("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "not a url")]).is_err());
    }

    /// Serves one canned response per connection, in order, and reports
    /// each request's head and body.
    fn collector(
        responses: &'static [&'static str],
    ) -> (String, mpsc::Receiver<(String, Vec<u8>)>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/v1/traces", listener.local_addr().unwrap());
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for response in responses {
                let (stream, _) = listener.accept().unwrap();
                let mut reader = BufReader::new(stream);
                let mut head = String::new();
                loop {
                    let mut line = String::new();
                    reader.read_line(&mut line).unwrap();
                    if line == "\r\n" {
                        break;
                    }
                    head.push_str(&line.to_ascii_lowercase());
                }
                let length = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .map_or(0, |n| n.trim().parse().unwrap());
                let mut body = vec![0; length];
                reader.read_exact(&mut body).unwrap();
                tx.send((head, body)).unwrap();
                let mut stream = reader.into_inner();
                stream.write_all(response.as_bytes()).unwrap();
            }
        });
        (url, rx)
    }

    const THROTTLED: &str = "HTTP/1.1 503 Service Unavailable\r\nretry-after: 0\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";
    const OK: &str = "HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";
    const REFUSED: &str =
        "HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";

    fn exporter(url: &str) -> ProtobufHttp {
        ProtobufHttp::new(
            config(&[
                ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", url),
                ("OTEL_EXPORTER_OTLP_HEADERS", "x-tenant=7"),
            ])
            .unwrap(),
        )
        .unwrap()
    }

    #[test]
    fn a_throttled_export_is_sent_again_and_a_refused_one_is_not() {
        let (url, requests) = collector(&[THROTTLED, OK]);
        let sent = exporter(&url).post(b"spans".to_vec());
        assert_eq!(sent, Ok(()));
        for _ in 0..2 {
            let (head, body) = requests.recv().unwrap();
            assert!(head.starts_with("post /v1/traces "), "{head}");
            assert!(
                head.contains("content-type: application/x-protobuf"),
                "{head}"
            );
            assert!(head.contains("x-tenant: 7"), "{head}");
            assert_eq!(body, b"spans");
        }

        let (url, requests) = collector(&[REFUSED, OK]);
        let refused = exporter(&url).post(b"spans".to_vec());
        assert!(refused.unwrap_err().contains("400"));
        requests.recv().unwrap();
        assert!(
            requests.recv_timeout(Duration::from_millis(500)).is_err(),
            "a 400 is not retried"
        );
    }
}
