//! Black-box tests: every test starts a real Easel (in-process on port 0, or the `easel` binary)
//! with its own temporary data directory and talks to it over real sockets.

mod api;
mod child;
mod dns;
mod hardening;
mod helpers;
mod isolation;
mod jobs;
mod memory;
mod process;
mod receiver;
mod sdk;
mod security;
mod storage;
mod validation;
mod webhooks;

/// This binary runs the suite on SQLite, the embedded default (`tests/it_postgres` runs it on
/// PostgreSQL).
pub const BACKEND: helpers::Backend = helpers::Backend::Sqlite;
