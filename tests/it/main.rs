// Black-box tests: every test starts a real Easel (in-process on port 0, or the `easel` binary)
// with its own temporary data directory (and, on PostgreSQL, its own database) and talks to it
// over real sockets. This suite is built twice: as `it` on SQLite, and as `it_postgres`
// (`tests/it_postgres/main.rs` includes this file) on PostgreSQL, so every module listed here
// runs on both backends. A test that cannot apply to one backend says so with
// `helpers::not_applicable`, in its own code.

mod api;
mod autodisable;
mod backend_comfyui;
mod backend_variations;
mod backends;
mod child;
mod comfyui_api;
mod console;
mod dns;
mod doctor;
mod elements;
mod hardening;
mod helpers;
mod init_images;
mod inspector;
mod isolation;
mod jobs;
mod keys;
mod memory;
mod multinode;
mod openapi;
mod operations;
mod process;
// The benches' reader of /proc/<pid>/ numbers (one parser for both).
#[path = "../../benches/support/procfs.rs"]
mod procfs;
mod prompts;
mod receiver;
mod sdk;
mod security;
mod storage;
mod store;
mod validation;
mod variations;
mod webhooks;

/// The backend this build of the suite runs on, from the test target's name.
pub const BACKEND: helpers::Backend = helpers::Backend::of_target(env!("CARGO_CRATE_NAME"));
