//! `@alova/storage-redis`: a Redis storage adapter and Redlock locker for alova 3.
//!
//! The core (everything but [`binding`]) is plain async Rust over tokio and redis-rs, with no
//! napi in it; `cargo test --no-default-features` builds and tests it against real servers. The
//! `napi` feature adds the thin JavaScript binding.

#[cfg(not(unix))]
compile_error!("the pipelined socket (src/pipe.rs) needs a unix platform: Linux or macOS");

pub mod cluster;
pub mod codec;
pub mod command;
pub mod config;
pub mod connection;
pub mod error;
pub mod lock;
pub mod monitor;
pub mod pipe;
pub mod pubsub;
pub mod resp;
pub mod retry;
pub mod sentinel;
pub mod settings;
pub mod storage;

#[cfg(feature = "napi")]
mod binding;
