//! Wire types of the Parley client protocol, v1 (see `docs/protocol.md`).
//!
//! This crate knows nothing of tokio, axum or any backend: it is the contract shared by
//! chat-node, the load tool and the end-to-end tests.
#![forbid(unsafe_code)]

mod error;

pub use error::{ErrorBody, ErrorCode};
