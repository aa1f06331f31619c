//! What happened during the run: what each client was told, every failed
//! attempt, and when each fault began and ended. Shared by the tasks that
//! write it; read once the run is over.

use std::{
    sync::{Mutex, PoisonError},
    time::Instant,
};

/// A write a client got a 2xx for: from then on the system owes it.
#[derive(Clone, Debug)]
pub(crate) struct Told {
    pub chat: i64,
    pub number: i64,
    pub body: String,
    /// Seconds since the load started, when the answer arrived.
    pub at: f64,
}

/// One attempt that has to be retried: its time, its class (`503`,
/// `timeout`, `connect`, …) and which API process it went to.
#[derive(Clone, Debug)]
pub(crate) struct Failure {
    pub at: f64,
    pub class: String,
    pub api: usize,
}

#[derive(Default)]
pub(crate) struct Book {
    pub intended: usize,
    pub told: Vec<Told>,
    pub first_try: usize,
    pub retried_ok: usize,
    /// A final answer that was neither 2xx nor 409: status and body.
    pub rejected: Vec<(u16, String)>,
    /// Bodies of writes still retrying when their time ran out: the
    /// system may or may not have them.
    pub unresolved: Vec<String>,
    pub failures: Vec<Failure>,
}

#[derive(Default)]
pub(crate) struct Ledger(Mutex<Book>);

impl Ledger {
    pub fn with<R>(&self, f: impl FnOnce(&mut Book) -> R) -> R {
        f(&mut self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }

    pub fn into_book(self) -> Book {
        self.0.into_inner().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A fault as it actually ran, in seconds since the load started.
#[derive(Clone, Debug)]
pub(crate) struct Window {
    pub name: String,
    pub started: f64,
    pub ended: Option<f64>,
    pub note: String,
    pub tag: Tag,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Tag {
    Fault,
    /// The search outage: the emulator comes back empty.
    Search,
    /// The worker kills run under every other fault, which take
    /// precedence when a failed attempt is attributed.
    Background,
}

pub(crate) struct Windows {
    t0: Instant,
    list: Mutex<Vec<Window>>,
}

impl Windows {
    pub fn new(t0: Instant) -> Windows {
        Windows {
            t0,
            list: Mutex::default(),
        }
    }

    pub fn secs(&self, at: Instant) -> f64 {
        at.saturating_duration_since(self.t0).as_secs_f64()
    }

    /// Records a fault's start; the index names it to [`Windows::close`]
    /// and to its probe.
    pub fn open(&self, name: &str, at: Instant, tag: Tag) -> usize {
        let started = self.secs(at);
        eprintln!("chat-faults: t={started:.1}s {name} begins");
        let mut list = self.list.lock().unwrap_or_else(PoisonError::into_inner);
        list.push(Window {
            name: name.to_owned(),
            started,
            ended: None,
            note: String::new(),
            tag,
        });
        list.len() - 1
    }

    pub fn close(&self, index: usize, at: Instant, note: String) {
        let secs = self.secs(at);
        let mut list = self.list.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(w) = list.get_mut(index) {
            eprintln!("chat-faults: t={secs:.1}s {} ends: {note}", w.name);
            w.ended = Some(secs);
            w.note = note;
        }
    }

    pub fn snapshot(&self) -> Vec<Window> {
        self.list
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}
