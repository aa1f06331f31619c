//! Built only for the end-to-end tests (the `test-switches` feature, which
//! the `chat` package turns on for its tests alone): while the file named
//! by `CHAT_TEST_FAIL_SWITCH` exists, a message whose body contains
//! `fail-while-switched-on` fails, for tests of retries and dead jobs.
use std::{path::PathBuf, sync::OnceLock};

const MARKER: &str = "fail-while-switched-on";

pub(crate) fn failing(body: &str) -> bool {
    static SWITCH: OnceLock<Option<PathBuf>> = OnceLock::new();
    let switch =
        SWITCH.get_or_init(|| std::env::var_os("CHAT_TEST_FAIL_SWITCH").map(PathBuf::from));
    switch
        .as_ref()
        .is_some_and(|path| body.contains(MARKER) && path.exists())
}
