//! End-to-end tests of `stepup serve` as a child process against a real Kafka-protocol broker.
//!
//! Each test reads the broker address from `STEPUP_TEST_KAFKA` (default `127.0.0.1:9092`) and
//! fails when no broker accepts connections there. `scripts/test.sh` starts tansu and sets the
//! variable. Each test starts its own `stepup serve` with its own topics and consumer group, so
//! the tests can share one broker and run in parallel. `broker_restart` starts a private tansu.
//! The harness (child processes, Kafka and gRPC helpers) is the `stepup-tests` package in
//! `tests/`.

mod assess;
mod broker_restart;
mod dead_letters;
mod decisions;
mod durability;
mod health;
mod metrics;
mod snapshot;

/// The `stepup` binary that cargo built with these tests.
const STEPUP: &str = env!("CARGO_BIN_EXE_stepup");
