//! The stepup pipeline.
//!
//! This crate owns per-user state (profiles in a `DashMap`, attempts awaiting their result),
//! per-IP velocity windows, the risk score, the decision store behind `AwaitDecision` and
//! `StreamDecisions`, and the engine's Prometheus metrics. It turns one validated event into
//! a decision and a state change. It does not talk to Kafka or gRPC: the binary feeds it from
//! the consumer and the API calls it inline.

#![forbid(unsafe_code)]

mod config;
mod context;
mod durable;
mod engine;
mod metrics;
mod partition;
mod snapshot;
mod state;
mod store;

pub use config::{ActionConfig, DecisionConfig, EngineConfig, LearningConfig};
pub use durable::{
    PartitionRestore, RestoreStats, STATE_FORMAT, StateError, decode_state, encode_state,
};
pub use engine::{Engine, EngineError, Outcome, Position, Processed};
pub use metrics::EngineMetrics;
pub use snapshot::{SnapshotError, read_snapshot, write_snapshot};
pub use state::{IpMark, PendingAttempt, UserState};

#[cfg(test)]
mod durable_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_support;
