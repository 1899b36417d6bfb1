//! The behaviour suite of `tests/it` again, on PostgreSQL: one suite, two backends. Each test gets
//! a database of its own on the server at `EASEL_TEST_POSTGRES_URL` (default: the local server,
//! trust authentication). Without a reachable server the suite says loudly that it was skipped
//! (and fails under CI). `multinode.rs` adds what only a shared database allows: several nodes.

// Helpers shared with `tests/it` that only the SQLite suite's own tests use.
#![allow(dead_code)]

#[path = "../it/api.rs"]
mod api;
#[path = "../it/child.rs"]
mod child;
#[path = "../it/dns.rs"]
mod dns;
#[path = "../it/hardening.rs"]
mod hardening;
#[path = "../it/helpers.rs"]
mod helpers;
#[path = "../it/isolation.rs"]
mod isolation;
#[path = "../it/jobs.rs"]
mod jobs;
mod multinode;
#[path = "../it/receiver.rs"]
mod receiver;
#[path = "../it/sdk.rs"]
mod sdk;
#[path = "../it/security.rs"]
mod security;
#[path = "../it/storage.rs"]
mod storage;
#[path = "../it/validation.rs"]
mod validation;
#[path = "../it/webhooks.rs"]
mod webhooks;

pub const BACKEND: helpers::Backend = helpers::Backend::Postgres;
