//! Black-box tests: every test starts a real Easel (in-process on port 0, or the `easel` binary)
//! with its own temporary data directory and talks to it over real sockets.

mod api;
mod dns;
mod helpers;
mod isolation;
mod jobs;
mod process;
mod receiver;
mod sdk;
mod security;
mod validation;
mod webhooks;
