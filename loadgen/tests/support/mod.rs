//! Shared test fixtures.
pub mod fake_server;
