//! The part of the `chat` binary that its end-to-end tests share: opening
//! the backends of a profile and handing each role what it uses.
//!
//! This is the one place that knows every crate; the roles themselves
//! (`chat_api`, `chat_jobs`, `chat_scheduler`, `chat_dashboard`) each
//! declare their own dependencies and never see the others'.
pub mod backends;
