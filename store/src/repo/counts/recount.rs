//! Recounting: each parent's count set from its children in one UPDATE per
//! group of parents, changing only the counts that are wrong; the full
//! recount walks every chat and application by id range.
use super::*;

/// Sets every `messages_count` and `chats_count` to what the tables hold,
/// walking both tables in id ranges of `batch` parents, and leaves the
/// marks alone (a concurrent incremental run still owns them).
pub async fn recount_all(
    db: &(impl ConnectionTrait + TransactionTrait),
    batch: i64,
) -> Result<RecountReport> {
    let batch = batch.max(1);
    let mut report = RecountReport::default();
    for (table, is_chats) in [("chats", true), ("applications", false)] {
        let Some((lo, hi)) = id_range(db, table).await? else {
            continue;
        };
        let mut start = lo;
        while start <= hi {
            let filter = Filter {
                sql: "id >= ? AND id < ?".into(),
                values: vec![start.into(), (start + batch).into()],
            };
            if is_chats {
                report.chats_repaired += recount_chats(db, &filter).await?;
            } else {
                report.applications_repaired += recount_applications(db, &filter).await?;
            }
            start += batch;
        }
        let checked = count_rows(db, table).await?;
        if is_chats {
            report.chats_checked = checked;
        } else {
            report.applications_checked = checked;
        }
    }
    Ok(report)
}

pub(super) struct Filter {
    pub(super) sql: String,
    pub(super) values: Vec<Value>,
}

/// `(application_id = ? AND number IN (…)) OR …`: one range per
/// application, which both MySQL and SQLite plan as index ranges.
pub(super) fn chat_filter(chats: &[(i64, i64)]) -> Filter {
    let mut groups: Vec<(i64, Vec<i64>)> = Vec::new();
    for &(app, number) in chats {
        match groups.last_mut() {
            Some((a, numbers)) if *a == app => numbers.push(number),
            _ => groups.push((app, vec![number])),
        }
    }
    let mut values = Vec::with_capacity(chats.len() + groups.len());
    let clauses: Vec<String> = groups
        .into_iter()
        .map(|(app, numbers)| {
            let marks = vec!["?"; numbers.len()].join(", ");
            values.push(app.into());
            values.extend(numbers.into_iter().map(Value::from));
            format!("(application_id = ? AND number IN ({marks}))")
        })
        .collect();
    Filter {
        sql: format!("({})", clauses.join(" OR ")),
        values,
    }
}

pub(super) const MESSAGES_OF_CHAT: &str = "(SELECT COUNT(*) FROM messages m \
     WHERE m.application_id = chats.application_id AND m.chat_number = chats.number)";

pub(super) const CHATS_OF_APPLICATION: &str =
    "(SELECT COUNT(*) FROM chats c WHERE c.application_id = applications.id)";

/// Sets `column` of the `table` rows matching `filter` to `count`, where
/// it differs; returns how many counts were wrong (and are now right).
pub(super) async fn recount(
    db: &(impl ConnectionTrait + TransactionTrait),
    table: &str,
    column: &str,
    count: &str,
    filter: &Filter,
) -> Result<u64> {
    let sql = format!(
        "UPDATE {table} SET {column} = {count} WHERE {} AND {column} <> {count}",
        filter.sql
    );
    // In InnoDB's default REPEATABLE READ, the count subquery of an UPDATE
    // is a locking read: it takes shared next-key locks on the messages it
    // counts, and deadlocks with the bulk inserts appending to them (seen
    // at 20k writes/s, where every counts run failed and the marks piled
    // up). Under READ COMMITTED it is a plain consistent read. Locking the
    // parents first makes the count's snapshot newer than any other run
    // that wrote them, so two overlapping runs cannot leave the older
    // count behind.
    let lock = format!("SELECT 1 FROM {table} WHERE {} FOR UPDATE", filter.sql);
    write_read_committed(db, Some(&lock), &sql, &filter.values).await
}

pub(super) async fn recount_chats(
    db: &(impl ConnectionTrait + TransactionTrait),
    filter: &Filter,
) -> Result<u64> {
    recount(db, "chats", "messages_count", MESSAGES_OF_CHAT, filter).await
}

pub(super) async fn recount_applications(
    db: &(impl ConnectionTrait + TransactionTrait),
    filter: &Filter,
) -> Result<u64> {
    recount(
        db,
        "applications",
        "chats_count",
        CHATS_OF_APPLICATION,
        filter,
    )
    .await
}

#[derive(FromQueryResult)]
pub(super) struct Range {
    pub(super) lo: Option<i64>,
    pub(super) hi: Option<i64>,
}

pub(super) async fn id_range(db: &impl ConnectionTrait, table: &str) -> Result<Option<(i64, i64)>> {
    let range = Range::find_by_statement(Statement::from_string(
        db.get_database_backend(),
        format!("SELECT MIN(id) AS lo, MAX(id) AS hi FROM {table}"),
    ))
    .one(db)
    .await?;
    Ok(range.and_then(|r| Some((r.lo?, r.hi?))))
}

#[derive(FromQueryResult)]
pub(super) struct Total {
    pub(super) n: i64,
}

pub(super) async fn count_rows(db: &impl ConnectionTrait, table: &str) -> Result<u64> {
    let total = Total::find_by_statement(Statement::from_string(
        db.get_database_backend(),
        format!("SELECT COUNT(*) AS n FROM {table}"),
    ))
    .one(db)
    .await?;
    Ok(total.map_or(0, |t| t.n.max(0) as u64))
}
