//! The fault suite: on private Redis (with its AOF), MariaDB and search
//! servers, `chat api` ×2, `chat worker` ×2 and `chat scheduler` take a
//! steady write load from several clients while Redis is SIGKILLed and
//! restarted twice, every client connection is cut from the server side,
//! MariaDB is frozen for 60 s and then SIGKILLed, search is down for two
//! minutes, and a worker is SIGKILLed every few seconds. Nothing is
//! repaired by hand: the processes must heal on their own. Afterwards,
//! every write a client was told was accepted must be listed exactly once,
//! numbered without gaps, with its body, and indexed for search.
//!
//! The clients retry every 5xx, 409 and timeout with the same
//! `Idempotency-Key`. The scenario and its report live in `chat-faults`
//! (bench/faults), which `bench faults` runs at 1,000,000 messages.

#[tokio::test(flavor = "multi_thread")]
async fn every_accepted_write_survives_the_faults_exactly_once() {
    if let Err(missing) = chat_faults::available() {
        eprintln!("fault suite skipped: {missing}");
        return;
    }
    let Some(osmem) = std::env::var_os("OSMEM_SERVER").filter(|v| !v.is_empty()) else {
        eprintln!("fault suite skipped: OSMEM_SERVER unset (see README, Testing)");
        return;
    };
    let config = chat_faults::Config::ci(env!("CARGO_BIN_EXE_chat"), osmem);
    let report = chat_faults::run(config).await.expect("the scenario runs");
    println!("{report}");
    let failures = report.failures();
    assert!(failures.is_empty(), "{report}");
}
