//! Connections to Redis that heal, and what a Redis error means for the
//! request that met it.
//!
//! Every connection this crate opens:
//! - speaks RESP3, so a connection the server closed (a restart, a
//!   `CLIENT KILL`) is noticed as soon as its socket reads end-of-file and
//!   replaced in the background, before the next command needs it: over
//!   RESP2 the next command would fail first, with an error that cannot
//!   tell "never sent" from "sent, and the answer lost";
//! - has TCP keepalive and `TCP_USER_TIMEOUT`, so a peer that vanished
//!   without closing the socket is noticed even by an idle connection;
//! - has a response timeout, so a frozen server cannot hang a caller.
//!
//! [`Outcome`] sorts errors into "nothing ran" (safe to send again),
//! "unknown" (the command may have run) and the rest.
use std::{future::Future, time::Duration};

use redis::{RedisError, ServerErrorKind};

use crate::error::{Result, StoreError};

pub use crate::redis_conn::{Link, RESPONSE_TIMEOUT, RedisConn, client, dedicated, manager};

/// What a failed command did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing ran: the connection could not be made (or a cluster
    /// connection had no node to send it to), or the server refused the
    /// command before running it (loading its data, a replica,
    /// out of memory, busy). Sending it again is safe.
    NotRun,
    /// The command was sent and its answer never came: it may have run.
    Unknown,
    /// The server ran it and answered with an error, or the answer could
    /// not be read: a fault of the command or of this code.
    Failed,
}

impl Outcome {
    pub fn of(e: &RedisError) -> Outcome {
        // A cluster connection that found no node to send to sent nothing.
        if e.is_connection_refusal() || e.kind() == redis::ErrorKind::ClusterConnectionNotFound {
            return Outcome::NotRun;
        }
        if let redis::ErrorKind::Server(kind) = e.kind()
            && refused_before_running(kind)
        {
            return Outcome::NotRun;
        }
        if matches!(e.code(), Some("OOM" | "MISCONF" | "BUSY" | "NOREPLICAS")) {
            return Outcome::NotRun;
        }
        if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() {
            return Outcome::Unknown;
        }
        Outcome::Failed
    }
}

fn refused_before_running(kind: ServerErrorKind) -> bool {
    matches!(
        kind,
        ServerErrorKind::BusyLoading
            | ServerErrorKind::TryAgain
            | ServerErrorKind::MasterDown
            | ServerErrorKind::ClusterDown
            | ServerErrorKind::ReadOnly
            // A cluster node answers these instead of running a command
            // for a slot it does not serve (moved, or moving).
            | ServerErrorKind::Moved
            | ServerErrorKind::Ask
    )
}

/// Whether Redis is out of reach or not serving, as opposed to a fault of
/// the command: the request may be tried again later.
pub fn is_outage(e: &RedisError) -> bool {
    Outcome::of(e) != Outcome::Failed
}

/// Runs `op` until it succeeds, fails with anything but [`Outcome::NotRun`],
/// or `within` has passed: a restart of Redis (refused connections, then
/// `LOADING` while it reads its data back) costs the caller a wait, not an
/// error.
pub async fn until_run<T, F, Fut>(within: Duration, op: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = redis::RedisResult<T>>,
{
    resending(within, op, |outcome| outcome == Outcome::NotRun).await
}

/// Runs an idempotent `op` until it succeeds, fails as a fault of the
/// command ([`Outcome::Failed`]), or `within` has passed. Unlike
/// [`until_run`] it also sends `op` again when its answer was lost
/// ([`Outcome::Unknown`]): running it twice must change nothing.
pub async fn until_done_idempotent<T, F, Fut>(within: Duration, op: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = redis::RedisResult<T>>,
{
    resending(within, op, |outcome| outcome != Outcome::Failed).await
}

/// Sends `op` again, with a doubling pause, while it fails with an outcome
/// `resend` accepts and `within` has not passed.
async fn resending<T, F, Fut>(
    within: Duration,
    mut op: F,
    resend: impl Fn(Outcome) -> bool,
) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = redis::RedisResult<T>>,
{
    let deadline = tokio::time::Instant::now() + within;
    let mut pause = Duration::from_millis(20);
    loop {
        let e = match op().await {
            Ok(v) => return Ok(v),
            Err(e) => e,
        };
        let outcome = Outcome::of(&e);
        if !resend(outcome) {
            return Err(e.into());
        }
        if tokio::time::Instant::now() + pause >= deadline {
            return Err(match outcome {
                Outcome::NotRun => StoreError::Unavailable(format!("redis: {e}")),
                _ => e.into(),
            });
        }
        tracing::debug!(error = %e, ?outcome, ?pause, "sending a redis command again");
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(500));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server_error(code: &str) -> RedisError {
        redis::make_extension_error(code.to_owned(), Some("x".into()))
    }

    #[test]
    fn refusals_before_running_are_safe_to_send_again() {
        let refused: RedisError =
            std::io::Error::from(std::io::ErrorKind::ConnectionRefused).into();
        assert_eq!(Outcome::of(&refused), Outcome::NotRun);
        assert_eq!(Outcome::of(&server_error("OOM")), Outcome::NotRun);
        assert_eq!(Outcome::of(&server_error("MISCONF")), Outcome::NotRun);
        let no_node: RedisError = (
            redis::ErrorKind::ClusterConnectionNotFound,
            "No connections found",
        )
            .into();
        assert_eq!(Outcome::of(&no_node), Outcome::NotRun);
    }

    #[test]
    fn a_lost_answer_is_an_unknown_outcome() {
        let dropped: RedisError = std::io::Error::from(std::io::ErrorKind::BrokenPipe).into();
        assert_eq!(Outcome::of(&dropped), Outcome::Unknown);
        let timeout: RedisError = std::io::Error::from(std::io::ErrorKind::TimedOut).into();
        assert_eq!(Outcome::of(&timeout), Outcome::Unknown);
    }

    #[test]
    fn a_script_error_is_a_failure() {
        assert_eq!(Outcome::of(&server_error("WRONGTYPE")), Outcome::Failed);
    }

    /// Runs `retry` over an op that fails with `errors` in turn, then
    /// succeeds; returns what it ended with and how many calls it made.
    async fn calls_until<Fut>(
        errors: Vec<RedisError>,
        retry: impl FnOnce(Box<dyn FnMut() -> BoxedCall>) -> Fut,
    ) -> (bool, usize)
    where
        Fut: Future<Output = Result<u8>>,
    {
        let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let errors = std::sync::Arc::new(std::sync::Mutex::new(errors));
        let counted = calls.clone();
        let op = Box::new(move || -> BoxedCall {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let next = errors.lock().unwrap().pop();
            Box::pin(async move { next.map_or(Ok(1), Err) })
        });
        let ok = retry(op).await.is_ok();
        (ok, calls.load(std::sync::atomic::Ordering::SeqCst))
    }

    type BoxedCall = std::pin::Pin<Box<dyn Future<Output = redis::RedisResult<u8>> + Send>>;

    fn dropped() -> RedisError {
        std::io::Error::from(std::io::ErrorKind::BrokenPipe).into()
    }

    #[tokio::test]
    async fn only_an_idempotent_command_is_sent_again_after_a_lost_answer() {
        let within = Duration::from_secs(2);
        let (ok, calls) = calls_until(vec![dropped()], |op| until_run(within, op)).await;
        assert_eq!((ok, calls), (false, 1), "a lost answer may have run");
        let (ok, calls) = calls_until(vec![dropped(), dropped()], |op| {
            until_done_idempotent(within, op)
        })
        .await;
        assert_eq!((ok, calls), (true, 3));
        let (ok, calls) = calls_until(vec![server_error("WRONGTYPE")], |op| {
            until_done_idempotent(within, op)
        })
        .await;
        assert_eq!((ok, calls), (false, 1), "a fault of the command is final");
    }
}
