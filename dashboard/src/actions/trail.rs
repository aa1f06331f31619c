//! The audit rows an action leaves: one per job it touched, and a summary
//! naming the jobs of a bulk action.
use super::*;

/// Records each job the action touched, under the handle it goes on with,
/// then, for many, one summary naming them.
pub(super) async fn record(
    d: &Dashboard,
    op: &Operator,
    action: Action,
    q: QueueName,
    done: &[Touched],
    bulk: Option<&Fields>,
) -> Result<(), DashError> {
    let db = &d.deps.db;
    for t in done {
        let mut detail = Vec::new();
        if t.was != t.now {
            detail.push(format!("was {}", t.was));
        }
        if bulk.is_some() {
            detail.push(format!("one of {} in a bulk {}", done.len(), action.slug()));
        }
        let detail = (!detail.is_empty()).then(|| detail.join("; "));
        audit::record(
            db,
            &op.name,
            action.slug(),
            q.as_str(),
            Some(JobRef {
                id: &t.now,
                key: &t.key,
            }),
            detail.as_deref(),
        )
        .await?;
    }
    if let Some(f) = bulk {
        let mut summary = format!("{} jobs", done.len());
        if let Some(error) = &f.error {
            summary.push_str(&format!(" whose errors contain {error:?}"));
        }
        if !done.is_empty() {
            let shown: Vec<&str> = done
                .iter()
                .take(IDS_IN_SUMMARY)
                .map(|t| t.was.as_str())
                .collect();
            summary.push_str(&format!(": {}", shown.join(", ")));
            if done.len() > IDS_IN_SUMMARY {
                summary.push_str(&format!(" and {} more", done.len() - IDS_IN_SUMMARY));
            }
        }
        audit::record(
            db,
            &op.name,
            &format!("{}_bulk", action.slug()),
            q.as_str(),
            None,
            Some(&summary),
        )
        .await?;
    }
    Ok(())
}
