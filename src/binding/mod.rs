//! The JavaScript binding: converts arguments and results, nothing else. Everything that
//! decides anything lives in the core.

mod adapter;
mod bridge;
mod client;
mod error;
mod fast;
mod locker;
mod poll;
mod retry;
