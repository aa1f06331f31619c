//! sea-orm entities for the tables clients see. Internal ids stay here and
//! in the repositories; nothing above `chat-store` receives them in a view.
pub mod application;
pub mod chat;
pub mod message;
