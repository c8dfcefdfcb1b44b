//! Kafka I/O for stepup.
//!
//! This crate owns the consumer-group loop on the events topic, which processes at least
//! once: an offset is committed only after its message was processed. It also owns the
//! producer for accepted events, dead letters and decisions, topic creation, an embedded
//! in-process cluster for the demo and tests, and the Kafka metrics.
//!
//! It does not parse or score events. The consumer passes each message to an
//! [`EventHandler`], which the engine implements.
//!
//! The crate's one `unsafe` block is in [`EmbeddedKafka::start`]. The workspace's
//! `unsafe_code = "deny"` lint checks every other item.

mod admin;
mod announce;
mod cluster;
mod config;
mod consumer;
mod context;
mod embedded;
mod error;
mod handler;
pub mod metrics;
mod partitions;
mod producer;
mod retry;

pub use admin::ensure_topics;
pub use announce::run_announcer;
pub use cluster::{Claim, KeyPartitioner, Membership, Peer, Route, partition_for_key};
pub use config::{
    KafkaConfig, default_brokers, default_changelog_topic, default_dead_letter_topic,
    default_drain_timeout_ms, default_events_topic, default_group_id, default_instances_topic,
    default_max_event_bytes, default_retry_backoff_max_ms, default_session_timeout_ms,
};
pub use consumer::run_consumer;
pub use embedded::EmbeddedKafka;
pub use error::KafkaError;
pub use handler::{EventHandler, HandleOutcome, InboundMessage, RestoreSink, RestoreTotals};
pub use metrics::KafkaMetrics;
pub use partitions::read_changelog;
pub use producer::{
    HEADER_REASON, HEADER_REASON_CODE, HEADER_SOURCE_OFFSET, HEADER_SOURCE_PARTITION,
    HEADER_SOURCE_TOPIC, Producer,
};
