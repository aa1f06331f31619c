//! The process's Prometheus metrics, named after the OpenTelemetry
//! semantic conventions where one exists (`http.server.request.duration`
//! becomes `http_server_request_duration_seconds`), with units as suffixes.
//!
//! Every instrument lives in one process-wide [`Metrics`]; roles record into
//! it through [`metrics()`], and `GET /metrics` renders it with [`render`].
//! Labels are plain strings chosen by the caller, so this module knows no
//! domain type; callers must keep their values bounded (route templates,
//! queue and task names), never ids or tokens.
use std::sync::{Mutex, OnceLock};

use prometheus_client::{
    encoding::text::encode,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::{Registry, Unit},
};

type Labels<const N: usize> = [(&'static str, String); N];
type Histograms<const N: usize> = Family<Labels<N>, Histogram, fn() -> Histogram>;

/// The `Content-Type` of [`render`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Buckets for request, write and run durations: 0.5 ms to about 33 s.
fn duration_buckets() -> Histogram {
    Histogram::new([
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    ])
}

/// Buckets for lags, which include the batching linger: 5 ms to 10 min.
fn lag_buckets() -> Histogram {
    Histogram::new([
        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 600.0,
    ])
}

/// Buckets for rows per bulk write: 1 to 4096.
fn size_buckets() -> Histogram {
    Histogram::new((0..13).map(|i| f64::from(1u32 << i)))
}

pub struct Metrics {
    registry: Mutex<Registry>,
    http_requests: Histograms<3>,
    queue_jobs: Family<Labels<2>, Gauge>,
    batch_rows: Histograms<1>,
    bulk_write: Histograms<2>,
    lag: Histograms<1>,
    scheduler_runs: Histograms<2>,
    queue_wait: Histograms<1>,
    spans_dropped: Family<Labels<1>, Counter>,
    backend_up: Family<Labels<1>, Gauge>,
    dead_alert: Family<Labels<1>, Gauge>,
}

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::default();
        let http_requests: Histograms<3> = Family::new_with_constructor(duration_buckets);
        registry.register_with_unit(
            "http_server_request_duration",
            "Duration of HTTP requests, by method, route template and status code",
            Unit::Seconds,
            http_requests.clone(),
        );
        let queue_jobs = Family::<Labels<2>, Gauge>::default();
        registry.register(
            "chat_queue_jobs",
            "Jobs per queue and state (ready, in_flight, retrying, dead, done), read at scrape time",
            queue_jobs.clone(),
        );
        let batch_rows: Histograms<1> = Family::new_with_constructor(size_buckets);
        registry.register(
            "chat_batch_rows",
            "Rows per bulk write, by queue",
            batch_rows.clone(),
        );
        let bulk_write: Histograms<2> = Family::new_with_constructor(duration_buckets);
        registry.register_with_unit(
            "chat_bulk_write_duration",
            "Duration of one bulk write, by queue and outcome",
            Unit::Seconds,
            bulk_write.clone(),
        );
        let lag: Histograms<1> = Family::new_with_constructor(lag_buckets);
        registry.register_with_unit(
            "chat_write_lag",
            "Time from a write's acceptance (its 201) until it was persisted or indexed, by stage",
            Unit::Seconds,
            lag.clone(),
        );
        let scheduler_runs: Histograms<2> = Family::new_with_constructor(duration_buckets);
        registry.register_with_unit(
            "chat_scheduler_run_duration",
            "Duration of scheduler runs, by task and outcome",
            Unit::Seconds,
            scheduler_runs.clone(),
        );
        let queue_wait: Histograms<1> = Family::new_with_constructor(lag_buckets);
        registry.register_with_unit(
            "chat_job_queue_wait",
            "Time a job waited in its queue, from ready (enqueued, or due after a backoff) to claimed, by queue",
            Unit::Seconds,
            queue_wait.clone(),
        );
        let spans_dropped = Family::<Labels<1>, Counter>::default();
        registry.register(
            "chat_trace_spans_dropped",
            "Spans that never reached the collector, by reason (queue_full, export_failed)",
            spans_dropped.clone(),
        );
        let backend_up = Family::<Labels<1>, Gauge>::default();
        registry.register(
            "chat_backend_up",
            "1 while a backend this process's workers depend on answers, 0 while they wait for it (database, search, queue)",
            backend_up.clone(),
        );
        let dead_alert = Family::<Labels<1>, Gauge>::default();
        registry.register(
            "chat_queue_dead_alert",
            "1 while a queue whose jobs hold accepted writes has dead jobs: writes a client was told were accepted, not persisted, kept until an operator retries or discards them",
            dead_alert.clone(),
        );
        Self {
            registry: Mutex::new(registry),
            http_requests,
            queue_jobs,
            batch_rows,
            bulk_write,
            lag,
            scheduler_runs,
            queue_wait,
            spans_dropped,
            backend_up,
            dead_alert,
        }
    }

    /// Whether `backend` answers, as this process's workers last found it.
    pub fn backend_up(&self, backend: &str, up: bool) {
        self.backend_up
            .get_or_create(&[("backend", backend.to_owned())])
            .set(i64::from(up));
    }

    /// Whether `queue` holds dead jobs that hold accepted writes.
    pub fn dead_alert(&self, queue: &str, alert: bool) {
        self.dead_alert
            .get_or_create(&[("queue", queue.to_owned())])
            .set(i64::from(alert));
    }

    /// How long a claimed job of `queue` waited since it became ready.
    pub fn queue_wait(&self, queue: &str, seconds: f64) {
        self.queue_wait
            .get_or_create(&[("queue", queue.to_owned())])
            .observe(seconds.max(0.0));
    }

    /// Spans lost before export; `reason` is `queue_full` or `export_failed`.
    pub fn spans_dropped(&self, reason: &str, spans: u64) {
        self.spans_dropped
            .get_or_create(&[("reason", reason.to_owned())])
            .inc_by(spans);
    }

    /// One HTTP request; `route` is the matched template, never the path.
    pub fn http_request(&self, method: &str, route: &str, status: u16, seconds: f64) {
        self.http_requests
            .get_or_create(&[
                ("http_request_method", method.to_owned()),
                ("http_route", route.to_owned()),
                ("http_response_status_code", status.to_string()),
            ])
            .observe(seconds);
    }

    /// The current number of jobs of `queue` in `state`.
    pub fn queue_jobs(&self, queue: &str, state: &str, jobs: u64) {
        self.queue_jobs
            .get_or_create(&[("queue", queue.to_owned()), ("state", state.to_owned())])
            .set(jobs.min(i64::MAX as u64) as i64);
    }

    /// One bulk write of `rows` rows to `queue`'s sink.
    pub fn bulk_write(&self, queue: &str, rows: usize, ok: bool, seconds: f64) {
        self.batch_rows
            .get_or_create(&[("queue", queue.to_owned())])
            .observe(rows as f64);
        let outcome = if ok { "ok" } else { "error" };
        self.bulk_write
            .get_or_create(&[("queue", queue.to_owned()), ("outcome", outcome.to_owned())])
            .observe(seconds);
    }

    /// How long after their acceptance writes reached `stage`
    /// (`persisted` or `indexed`), one value per row.
    pub fn write_lags(&self, stage: &'static str, seconds: impl IntoIterator<Item = f64>) {
        let lag = self.lag.get_or_create(&[("stage", stage.to_owned())]);
        for s in seconds {
            lag.observe(s.max(0.0));
        }
    }

    pub fn scheduler_run(&self, task: &str, outcome: &str, seconds: f64) {
        self.scheduler_runs
            .get_or_create(&[("task", task.to_owned()), ("outcome", outcome.to_owned())])
            .observe(seconds);
    }
}

/// The process's metrics.
pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

/// Every metric in the OpenMetrics text format.
pub fn render() -> String {
    let mut out = String::new();
    let registry = metrics().registry.lock().unwrap_or_else(|e| e.into_inner());
    // Writing into a String cannot fail.
    let _ = encode(&mut out, &registry);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorded_values_are_rendered_with_units_and_labels() {
        let m = metrics();
        m.http_request("GET", "/api/v1/applications/{token}", 200, 0.003);
        m.queue_jobs("messages", "ready", 7);
        m.bulk_write("messages", 300, true, 0.02);
        m.write_lags("persisted", [0.05]);
        let text = render();
        assert!(text.contains(
            "http_server_request_duration_seconds_count{http_request_method=\"GET\",http_route=\"/api/v1/applications/{token}\",http_response_status_code=\"200\"} 1"
        ), "{text}");
        assert!(
            text.contains("chat_queue_jobs{queue=\"messages\",state=\"ready\"} 7"),
            "{text}"
        );
        assert!(
            text.contains("chat_batch_rows_sum{queue=\"messages\"} 300"),
            "{text}"
        );
        assert!(
            text.contains("chat_write_lag_seconds_count{stage=\"persisted\"} 1"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"));
    }
}
