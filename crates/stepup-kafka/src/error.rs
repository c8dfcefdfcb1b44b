//! Errors of the Kafka clients.

use rdkafka::error::KafkaError as ClientError;
use rdkafka::types::RDKafkaErrorCode;

/// Errors returned by the producer, the consumer loop, topic creation and the embedded cluster.
#[derive(Debug, thiserror::Error)]
pub enum KafkaError {
    /// A setting of the `kafka` configuration is invalid.
    #[error("invalid kafka config `{key}`: {reason}")]
    InvalidConfig {
        /// Key of the invalid setting.
        key: String,
        /// Explanation of the problem and its fix.
        reason: String,
    },

    /// librdkafka rejected the client configuration.
    #[error("failed to create kafka {client} for brokers `{brokers}`; check the `kafka` settings")]
    CreateClient {
        /// Kind of client: `consumer`, `producer` or `admin client`.
        client: &'static str,
        /// Bootstrap brokers of the client.
        brokers: String,
        /// Error from librdkafka.
        #[source]
        source: ClientError,
    },

    /// The consumer could not subscribe to the events topic.
    #[error("failed to subscribe to topic `{topic}`")]
    Subscribe {
        /// Topic of the subscription.
        topic: String,
        /// Error from librdkafka.
        #[source]
        source: ClientError,
    },

    /// The event is larger than `max_event_bytes`, so the consumer would dead-letter it.
    #[error(
        "event of {size} bytes exceeds `kafka.max_event_bytes` ({max}); send a smaller event \
         or raise the limit"
    )]
    EventTooLarge {
        /// Size of the payload in bytes.
        size: usize,
        /// Configured limit in bytes.
        max: usize,
    },

    /// A message was not delivered: the broker rejected it, or no broker acknowledged it in
    /// time. `Producer::send_event` returns it only for errors that a retry cannot fix.
    #[error("failed to send message to topic `{topic}`")]
    Send {
        /// Destination topic.
        topic: String,
        /// Error from librdkafka.
        #[source]
        source: ClientError,
    },

    /// The final offset commit on shutdown failed; the next owner of the partitions
    /// processes the messages since the last successful commit again.
    #[error("failed to commit offsets of group `{group}` on shutdown")]
    Commit {
        /// Consumer group.
        group: String,
        /// Error from librdkafka.
        #[source]
        source: ClientError,
    },

    /// The CreateTopics request failed as a whole.
    #[error("failed to create topics on brokers `{brokers}`")]
    CreateTopics {
        /// Bootstrap brokers.
        brokers: String,
        /// Error from librdkafka.
        #[source]
        source: ClientError,
    },

    /// The broker rejected the creation of one topic.
    #[error("failed to create topic `{topic}`: {code}")]
    CreateTopic {
        /// Topic that was not created.
        topic: String,
        /// Error code returned by the broker.
        code: RDKafkaErrorCode,
    },

    /// Topic creation took longer than the given timeout.
    #[error(
        "timed out after {timeout_ms} ms creating topics on `{brokers}`; check that the \
             brokers are reachable"
    )]
    CreateTopicsTimeout {
        /// Bootstrap brokers.
        brokers: String,
        /// Timeout in milliseconds.
        timeout_ms: u128,
    },

    /// The embedded mock cluster could not be started or configured.
    #[error("failed to start the embedded kafka cluster: {operation}")]
    Embedded {
        /// Operation that failed.
        operation: String,
        /// Error from librdkafka, when it returned one.
        #[source]
        source: Option<ClientError>,
    },
    /// Reading a partition of the changelog topic failed.
    #[error(
        "failed to read partition {partition} of changelog topic `{topic}`; check that the topic exists"
    )]
    Restore {
        /// Changelog topic.
        topic: String,
        /// Partition being restored.
        partition: i32,
        /// Client error.
        #[source]
        source: ClientError,
    },
    /// The changelog topic does not match the events topic.
    #[error(
        "changelog topic `{changelog}` has {changelog_partitions} partitions but events topic \
         `{events}` has {events_partitions}; create the changelog with {events_partitions} \
         partitions (and `cleanup.policy=compact`), or use `--create-topics` on a new cluster"
    )]
    ChangelogPartitions {
        /// Changelog topic.
        changelog: String,
        /// Its partition count, 0 if it does not exist.
        changelog_partitions: i32,
        /// Events topic.
        events: String,
        /// Its partition count.
        events_partitions: i32,
    },
}
