//! Easel: a self-hosted image-generation API, compatible with Leonardo.ai's REST v1, that calls
//! webhooks when images are ready. `ARCHITECTURE.md` has the map; this crate is everything but the
//! thin `main`.

#![recursion_limit = "256"]

pub mod admin;
pub mod cli;
pub mod clock;
pub mod config;
pub mod generation;
pub mod http;
pub mod ids;
pub mod images;
pub mod inspector;
pub mod metrics;
pub mod models;
pub mod prompts;
pub mod records;
pub mod render;
pub mod secrets;
pub mod server;
pub mod setting;
pub mod store;
pub mod uploads;
pub mod vocabulary;
pub mod webhook;
pub mod wire;
