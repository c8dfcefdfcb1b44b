//! Prometheus metrics of the Kafka clients, and the bounded error kinds used as labels.
//!
//! The engine counts events by type and outcome, so this module has no per-message counter.

use prometheus::{IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};
use rdkafka::error::KafkaError as ClientError;
use rdkafka::types::RDKafkaErrorCode;

/// Name of the consumer lag gauge.
pub const CONSUMER_LAG: &str = "stepup_kafka_consumer_lag_messages";
/// Name of the client error counter.
pub const ERRORS: &str = "stepup_kafka_errors_total";
/// Name of the dead-letter counter.
pub const DEAD_LETTERS: &str = "stepup_dead_letters_total";
/// Name of the produce retry counter.
pub const PRODUCE_RETRIES: &str = "stepup_kafka_produce_retries_total";
/// Name of the assigned-partitions gauge.
pub const ASSIGNED_PARTITIONS: &str = "stepup_kafka_assigned_partitions";

/// Kafka metrics, registered once per registry and shared by clones.
#[derive(Clone, Debug)]
pub struct KafkaMetrics {
    pub(crate) consumer_lag: IntGaugeVec,
    pub(crate) errors: IntCounterVec,
    pub(crate) dead_letters: IntCounterVec,
    pub(crate) produce_retries: IntCounterVec,
    pub(crate) assigned_partitions: IntGauge,
}

// === impl KafkaMetrics ===

impl KafkaMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let metrics = Self::new()?;
        registry.register(Box::new(metrics.consumer_lag.clone()))?;
        registry.register(Box::new(metrics.errors.clone()))?;
        registry.register(Box::new(metrics.dead_letters.clone()))?;
        registry.register(Box::new(metrics.produce_retries.clone()))?;
        registry.register(Box::new(metrics.assigned_partitions.clone()))?;
        Ok(metrics)
    }

    fn new() -> Result<Self, prometheus::Error> {
        let consumer_lag = IntGaugeVec::new(
            Opts::new(
                CONSUMER_LAG,
                "Messages between the partition's high watermark and the consumer's stored \
                 offset (the committed offset before the first store), from librdkafka \
                 statistics.",
            ),
            &["topic", "partition"],
        )?;
        let errors = IntCounterVec::new(
            Opts::new(
                ERRORS,
                "Errors reported by the Kafka clients, by client and kind.",
            ),
            &["client", "kind"],
        )?;
        let dead_letters = IntCounterVec::new(
            Opts::new(
                DEAD_LETTERS,
                "Messages sent to the dead-letter topic, by reason code.",
            ),
            &["reason"],
        )?;
        let produce_retries = IntCounterVec::new(
            Opts::new(
                PRODUCE_RETRIES,
                "Messages sent again after a failed delivery, by topic.",
            ),
            &["topic"],
        )?;
        let assigned_partitions = IntGauge::new(
            ASSIGNED_PARTITIONS,
            "Partitions of the events topic assigned to this consumer.",
        )?;
        Ok(Self {
            consumer_lag,
            errors,
            dead_letters,
            produce_retries,
            assigned_partitions,
        })
    }

    /// Counts one client error of the given client (`consumer` or `producer`).
    pub(crate) fn count_error(&self, client: &str, error: &ClientError) {
        self.count_error_kind(client, error_kind(error));
    }

    /// Counts an error of a kind that is not a client error, such as a failed restore.
    pub(crate) fn count_error_kind(&self, client: &str, kind: &str) {
        self.errors.with_label_values(&[client, kind]).inc();
    }
}

/// Maps an error to a bounded label value for [`ERRORS`].
pub(crate) fn error_kind(error: &ClientError) -> &'static str {
    use RDKafkaErrorCode as Code;

    let Some(code) = error.rdkafka_error_code() else {
        return "other";
    };
    match code {
        Code::BrokerTransportFailure
        | Code::AllBrokersDown
        | Code::NetworkException
        | Code::Resolve
        | Code::BrokerNotAvailable => "transport",
        Code::MessageTimedOut
        | Code::OperationTimedOut
        | Code::RequestTimedOut
        | Code::TimedOutQueue => "timeout",
        Code::QueueFull => "queue_full",
        Code::LeaderNotAvailable
        | Code::NotLeaderForPartition
        | Code::NotCoordinator
        | Code::CoordinatorNotAvailable
        | Code::CoordinatorLoadInProgress
        | Code::FencedLeaderEpoch
        | Code::UnknownLeaderEpoch => "leadership",
        Code::UnknownTopic | Code::UnknownTopicOrPartition | Code::UnknownPartition => {
            "unknown_topic"
        }
        Code::RebalanceInProgress
        | Code::IllegalGeneration
        | Code::UnknownMemberId
        | Code::AssignmentLost
        | Code::State => "rebalance",
        Code::TopicAuthorizationFailed
        | Code::GroupAuthorizationFailed
        | Code::ClusterAuthorizationFailed => "authorization",
        Code::Authentication | Code::SaslAuthenticationFailed | Code::SSL => "authentication",
        Code::MessageSizeTooLarge | Code::InvalidMessageSize | Code::MessageBatchTooLarge => {
            "message_too_large"
        }
        Code::Fatal => "fatal",
        _ => "other",
    }
}

/// Tells whether sending the same message again cannot succeed without an operator's change.
pub(crate) fn is_permanent_send_error(error: &ClientError) -> bool {
    use RDKafkaErrorCode as Code;

    matches!(
        error.rdkafka_error_code(),
        Some(
            Code::MessageSizeTooLarge
                | Code::InvalidMessageSize
                | Code::MessageBatchTooLarge
                | Code::InvalidMessage
                | Code::InvalidRecord
                | Code::InvalidTopic
                | Code::InvalidRequiredAcks
                | Code::TopicAuthorizationFailed
                | Code::ClusterAuthorizationFailed
                | Code::Fatal
        )
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::Encoder;

    #[test]
    fn registers_all_metrics_with_help() {
        let registry = Registry::new();
        let metrics = KafkaMetrics::register(&registry).expect("fresh registry");
        metrics
            .consumer_lag
            .with_label_values(&["stepup.events", "0"])
            .set(3);
        metrics
            .errors
            .with_label_values(&["consumer", "transport"])
            .inc();
        metrics.dead_letters.with_label_values(&["not_json"]).inc();
        metrics
            .produce_retries
            .with_label_values(&["stepup.events"])
            .inc();

        let mut text = Vec::new();
        let encoder = prometheus::TextEncoder::new();
        encoder
            .encode(&registry.gather(), &mut text)
            .expect("text encoding");
        let text = String::from_utf8(text).expect("utf-8 exposition");

        for name in [
            CONSUMER_LAG,
            ERRORS,
            DEAD_LETTERS,
            PRODUCE_RETRIES,
            ASSIGNED_PARTITIONS,
        ] {
            assert!(
                text.contains(&format!("# HELP {name} ")),
                "missing help for {name}"
            );
        }
    }

    #[test]
    fn second_registration_fails() {
        let registry = Registry::new();
        KafkaMetrics::register(&registry).expect("fresh registry");

        assert!(KafkaMetrics::register(&registry).is_err());
    }

    #[test]
    fn classifies_error_kinds() {
        let cases = [
            (RDKafkaErrorCode::AllBrokersDown, "transport"),
            (RDKafkaErrorCode::MessageTimedOut, "timeout"),
            (RDKafkaErrorCode::UnknownTopicOrPartition, "unknown_topic"),
            (RDKafkaErrorCode::MessageSizeTooLarge, "message_too_large"),
            (RDKafkaErrorCode::InvalidTimestamp, "other"),
        ];
        for (code, kind) in cases {
            assert_eq!(
                error_kind(&ClientError::MessageProduction(code)),
                kind,
                "{code:?}"
            );
        }
    }

    #[test]
    fn only_unfixable_send_errors_are_permanent() {
        let too_large = ClientError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge);
        let timed_out = ClientError::MessageProduction(RDKafkaErrorCode::MessageTimedOut);

        assert!(is_permanent_send_error(&too_large));
        assert!(!is_permanent_send_error(&timed_out));
    }
}
