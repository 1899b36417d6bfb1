//! The behaviour suite of `tests/it`, built again to run on PostgreSQL: the same file, so every
//! test there runs on both backends by construction (`tests/it/main.rs` picks the backend from
//! this target's name).

include!("../it/main.rs");
