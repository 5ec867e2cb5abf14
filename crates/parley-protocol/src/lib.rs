//! Wire types of the Parley client protocol, v1 (see `docs/protocol.md`).
//!
//! This crate knows nothing of tokio, axum or any backend: it is the contract shared by
//! chat-node, the load tool and the end-to-end tests.
#![forbid(unsafe_code)]

mod error;
mod id;
pub mod limits;
mod model;
pub mod rest;
#[cfg(feature = "sqlx")]
mod sql;
mod time;
pub mod ws;

pub use error::{ErrorBody, ErrorCode};
pub use id::{Id, ParseIdError};
pub use model::{Attachment, Channel, ChannelKind, Message, Presence, PresenceStatus, User};
pub use time::{ParseTimestampError, Timestamp};
