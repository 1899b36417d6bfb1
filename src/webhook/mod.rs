//! Webhook callbacks: when a generation finishes, the receiver configured on the API key that
//! made it gets the guide's request, signed (Standard Webhooks) and bearer-authenticated, and keeps
//! getting it until it answers 2xx or the retry schedule runs out.
//!
//! - [`outbox`]: builds the delivery that the store inserts in the same transaction that finishes
//!   the generation, and hands it to this node's engine after the commit;
//! - [`payload`]: the body, key for key as the guide's sample;
//! - [`signing`]: the `webhook-signature` header;
//! - [`schedule`]: the one place that decides whether and when to retry;
//! - [`attempt`]: the classes and sentences of failed attempts;
//! - [`guard`]: the SSRF guard (blocked ranges, resolution to checked addresses);
//! - [`tls`]: certificate verification with diagnoses;
//! - [`client`]: the HTTP(S) client and the classification of failures;
//! - [`engine`]: claiming, concurrency caps, sending and recording; the hand-off queue;
//! - [`report`]: deliveries and attempts as REST and the CLI show them;
//! - [`doctor`]: a URL examined step by step (`easel doctor`, `POST /webhook/doctor`).

pub mod attempt;
pub mod client;
pub mod doctor;
pub mod engine;
pub mod guard;
pub mod outbox;
pub mod payload;
pub mod report;
pub mod schedule;
pub mod signing;
pub mod tls;
