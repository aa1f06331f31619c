use chrono::{DateTime, SubsecRound, Utc};

/// Wall-clock time at the microsecond precision the schema stores, so a value
/// read back from the database equals the value that was written.
pub fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

pub fn now_millis() -> i64 {
    Utc::now().timestamp_millis()
}

pub fn now_micros() -> i64 {
    Utc::now().timestamp_micros()
}
