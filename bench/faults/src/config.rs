//! What a scenario runs: which binaries, how much load, which timeline.

use std::{path::PathBuf, time::Duration};

use crate::Timeline;

#[derive(Clone, Debug)]
pub struct Config {
    /// The `chat` binary under test.
    pub chat_bin: PathBuf,
    /// The osmem-server launcher (callers take it from `OSMEM_SERVER`).
    pub osmem_server: PathBuf,
    /// Concurrent writing clients.
    pub clients: usize,
    /// Chats the writes are spread over (one more is made for the probes).
    pub chats: usize,
    pub timeline: Timeline,
    /// Stop the load after this many intended writes, before the timeline
    /// ends.
    pub target_writes: Option<usize>,
    /// Writes per second over all clients; `None` runs them flat out. CI
    /// caps it so the emulator, which indexes a few hundred documents a
    /// second, can catch up within the run.
    pub max_rate: Option<f64>,
    /// A request that takes longer counts as failed and is retried.
    pub request_timeout: Duration,
    /// Keep the work directory (logs, data) instead of removing it.
    pub keep_dir: bool,
    /// Extra environment for every `chat` process, after the scenario's
    /// own (so it can override them).
    pub role_env: Vec<(String, String)>,
}

impl Config {
    /// About three minutes on a two-core machine with a debug binary.
    pub fn ci(chat_bin: impl Into<PathBuf>, osmem_server: impl Into<PathBuf>) -> Config {
        Config {
            chat_bin: chat_bin.into(),
            osmem_server: osmem_server.into(),
            clients: 8,
            chats: 20,
            timeline: Timeline::ci(),
            target_writes: None,
            max_rate: Some(150.0),
            request_timeout: Duration::from_secs(10),
            keep_dir: false,
            role_env: Vec::new(),
        }
    }

    /// `messages` writes, unthrottled, with the faults repeating in cycles
    /// until they are all sent.
    pub fn long(
        chat_bin: impl Into<PathBuf>,
        osmem_server: impl Into<PathBuf>,
        messages: usize,
    ) -> Config {
        Config {
            clients: 64,
            chats: 200,
            timeline: Timeline::long(messages),
            target_writes: Some(messages),
            max_rate: None,
            ..Config::ci(chat_bin, osmem_server)
        }
    }
}
