//! One job's page, in any state: its type, state, payload, every failed
//! attempt (with the operators' retries marked where the attempts start
//! again), its trace, what operators did to it, and the actions its state
//! offers.
use axum::{
    Extension,
    extract::{Path, State},
};
use chat_ops::audit::{self, AuditEntry, JobRef};
use chat_queue::{Failure, JobRecord, JobState, QueueName};
use maud::{Markup, html};
use sha2::{Digest, Sha256};

use crate::{
    Dashboard,
    actions::{Action, urlencoding},
    auth::Operator,
    error::DashError,
    jobs::{at_label, state_label, state_named},
    pages::{audit_table, job_type, layout, previews, trace_id, when},
    payload, queue_named,
};

/// A duration in ms as the page shows it.
fn ms(ms: i64) -> String {
    if ms < 10_000 {
        format!("{ms} ms")
    } else {
        format!("{:.1} s", ms as f64 / 1_000.0)
    }
}

pub(crate) async fn detail(
    State(d): State<Dashboard>,
    Extension(op): Extension<Operator>,
    Path((queue, state, id)): Path<(String, String, String)>,
) -> Result<Markup, DashError> {
    let q = queue_named(&queue)?;
    let state = state_named(&state)?;
    let job = d
        .deps
        .queue
        .job(q, state, &id)
        .await?
        .ok_or(DashError::NotFound(
            "job (it may have moved on to another state)",
        ))?;
    detail_page(&d, &op, q, job).await
}

pub(crate) async fn dead_detail(
    State(d): State<Dashboard>,
    Extension(op): Extension<Operator>,
    Path((queue, id)): Path<(String, String)>,
) -> Result<Markup, DashError> {
    let q = queue_named(&queue)?;
    let job = d
        .deps
        .queue
        .dead_job(q, &id)
        .await?
        .ok_or(DashError::NotFound("dead job"))?;
    detail_page(&d, &op, q, job.into()).await
}

/// A name for a job that holds in every state it goes through, though
/// its handle changes with each retry on Redis: its enqueue time and the
/// start of its payload, which retries and revivals keep (a done record
/// keeps the first 4 KiB of the payload, so only the first 256 bytes
/// count).
pub(crate) fn job_key(job: &JobRecord) -> String {
    let payload = job.payload.as_bytes();
    let mut hash = Sha256::new();
    hash.update(job.enqueued_at.unwrap_or(0).to_le_bytes());
    hash.update(&payload[..payload.len().min(256)]);
    hex::encode(&hash.finalize()[..16])
}

/// What operators did to this job, under any of its handles, newest first.
async fn actions_on(
    d: &Dashboard,
    q: QueueName,
    job: &JobRecord,
) -> Result<Vec<AuditEntry>, DashError> {
    let key = job_key(job);
    let job = JobRef {
        id: &job.id,
        key: &key,
    };
    Ok(audit::for_job(&d.deps.db, q.as_str(), job).await?)
}

/// The row that marks an operator's retry between two runs of attempts:
/// who retried it and when, if the audit trail says (the first retry
/// recorded after the earlier run's last failure; the record may land
/// after the job already ran again).
fn retried_row(entries: &[AuditEntry], after_ms: i64) -> Markup {
    let by = entries
        .iter()
        .filter(|e| e.action == Action::Retry.slug() && e.at >= after_ms)
        .min_by_key(|e| e.at);
    html! {
        tr.retried {
            td colspan="5" {
                "↻ Retried by "
                @match by {
                    Some(e) => { (e.actor) " at " (when(e.at)) }
                    None => "an operator",
                }
                ": the attempts start again from 1."
            }
        }
    }
}

fn attempts_table(job: &JobRecord, entries: &[AuditEntry]) -> Markup {
    let failures: &[Failure] = &job.failures;
    let at = |f: &Failure| f.at.timestamp_millis();
    // A revived job that has not failed since: its attempt is below the
    // last failure's.
    let revived_since = failures
        .last()
        .filter(|last| job.state != JobState::Dead && job.attempt <= last.attempt);
    html! {
        table #attempts {
            thead { tr { th { "attempt" } th { "failed at" } th { "ran for" } th { "worker" } th { "error" } } }
            tbody {
                @for (i, f) in failures.iter().enumerate() {
                    @if let Some(prev) = i.checked_sub(1).map(|p| &failures[p]).filter(|p| f.attempt <= p.attempt) {
                        (retried_row(entries, at(prev)))
                    }
                    tr {
                        td { (f.attempt) }
                        td { (f.at.format("%Y-%m-%d %H:%M:%S%.3f UTC")) }
                        td { (f.ms.map(|m| ms(m as i64)).unwrap_or_default()) }
                        td { (f.worker.as_deref().unwrap_or("")) }
                        td.error { (f.error) }
                    }
                }
                @if let Some(last) = revived_since {
                    (retried_row(entries, at(last)))
                }
            }
        }
    }
}

pub(crate) async fn detail_page(
    d: &Dashboard,
    op: &Operator,
    q: QueueName,
    job: JobRecord,
) -> Result<Markup, DashError> {
    let payload = payload::for_operators(&d.deps, &[&job.payload]).await?;
    let (shown, full) = previews(&payload[0]);
    let trace = job.trace.as_deref().and_then(trace_id);
    let entries = actions_on(d, q, &job).await?;
    let base = format!(
        "/admin/queues/{}/jobs/{}/{}",
        q.as_str(),
        job.state.as_str(),
        urlencoding(&job.id)
    );
    let offered = if d.config.read_only {
        &[][..]
    } else {
        Action::for_state(job.state)
    };
    let title = if job.state == JobState::Dead {
        "Dead job"
    } else {
        "Job"
    };
    Ok(layout(
        title,
        Some(op),
        d.config.read_only,
        html! {
            h1 { (title) " " (job.id) }
            dl {
                dt { "type" } dd { (job_type(q)) }
                dt { "queue" } dd { (q.as_str()) }
                dt { "state" } dd #state { (state_label(job.state)) }
                dt { "job id" } dd { (job.job_id) }
                @if let Some(at) = job.enqueued_at {
                    dt { "enqueued" } dd #enqueued { (when(at)) }
                }
                @if let Some(at) = job.ready_at.filter(|_| job.state != JobState::Retrying) {
                    dt { "ready since" } dd { (when(at)) }
                }
                @if let Some(started) = job.started_at {
                    dt { "started" } dd { (when(started)) }
                    @if let Some(ready) = job.ready_at {
                        dt { "waited" } dd #wait { (ms((started - ready).max(0))) }
                    }
                    @if job.state == JobState::Done {
                        dt { "ran for" } dd #ran { (ms((job.at - started).max(0))) }
                    }
                }
                @if !matches!(job.state, JobState::Pending | JobState::InFlight) {
                    dt { (at_label(job.state)) } dd { (when(job.at)) }
                }
                dt { "attempts" } dd { (job.attempt) }
                @if let Some(worker) = &job.worker {
                    dt { @if job.state == JobState::InFlight { "held by" } @else { "worker" } }
                    dd #worker { (worker) }
                }
                @if let Some(trace) = trace {
                    dt { "trace" }
                    dd {
                        @match &d.config.jaeger_ui_url {
                            Some(jaeger) => a.trace href={ (jaeger.trim_end_matches('/')) "/trace/" (trace) } { (trace) },
                            None => code { (trace) },
                        }
                    }
                }
            }
            @if !offered.is_empty() {
                p.actions {
                    @for a in offered {
                        a.button class=[a.dangerous().then_some("danger")] href={ (base) "/" (a.slug()) } { (a.label()) }
                        " "
                    }
                }
            }
            h2 { "Payload" }
            pre.payload { (shown) }
            @if let Some(full) = &full {
                details { summary { "Show the full payload" } pre.payload { (full) } }
            }
            h2 { "Failed attempts" }
            @if job.failures.is_empty() {
                p { "None." }
            } @else {
                (attempts_table(&job, &entries))
            }
            h2 { "Operator actions" }
            (audit_table("job-audit", &entries))
        },
    ))
}
