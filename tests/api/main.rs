//! End-to-end tests: each starts the real service on 127.0.0.1:0 and talks HTTP to it.

#![allow(clippy::unwrap_used, reason = "tests")]

mod auth;
mod bodies;
mod cli;
mod cli_monitoring;
mod concurrency;
mod connections;
mod durability;
mod errors;
mod helpers;
mod import;
mod ingest;
mod limits;
mod metrics;
mod models;
mod monitoring;
mod monitoring_process;
mod npy;
mod openapi;
mod process;
mod project;
mod shutdown;
mod wait;
