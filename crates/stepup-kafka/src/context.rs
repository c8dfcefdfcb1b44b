//! librdkafka callbacks: logs, client errors, statistics and rebalances, turned into tracing
//! events and metrics.

use rdkafka::config::RDKafkaLogLevel;
use std::sync::Arc;

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError as ClientError, KafkaResult};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientContext, Statistics, TopicPartitionList};
use tracing::{debug, error, info, warn};

use crate::metrics::{KafkaMetrics, error_kind};
use crate::partitions::Partitions;
use crate::retry::{LOG_INTERVAL, LogThrottle};

/// Callbacks of the producer client.
pub(crate) struct ProducerClientContext {
    metrics: KafkaMetrics,
    throttle: LogThrottle,
}

/// Callbacks of the consumer client; also keeps the lag and assignment gauges.
pub(crate) struct ConsumerClientContext {
    metrics: KafkaMetrics,
    topic: String,
    throttle: LogThrottle,
    partitions: Option<Arc<Partitions>>,
}

// === impl ProducerClientContext ===

impl ProducerClientContext {
    pub(crate) fn new(metrics: KafkaMetrics) -> Self {
        Self {
            metrics,
            throttle: LogThrottle::new(LOG_INTERVAL),
        }
    }
}

impl ClientContext for ProducerClientContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, line: &str) {
        forward_log("producer", level, facility, line);
    }

    fn error(&self, error: ClientError, reason: &str) {
        report_client_error("producer", &self.metrics, &self.throttle, &error, reason);
    }
}

// === impl ConsumerClientContext ===

impl ConsumerClientContext {
    pub(crate) fn new(metrics: KafkaMetrics, topic: String) -> Self {
        Self {
            metrics,
            topic,
            throttle: LogThrottle::new(LOG_INTERVAL),
            partitions: None,
        }
    }

    /// Tells `partitions` about every assignment and revocation.
    pub(crate) fn with_partitions(mut self, partitions: Arc<Partitions>) -> Self {
        self.partitions = Some(partitions);
        self
    }

    fn set_lag(&self, partition: i32, lag: i64) {
        let partition = partition.to_string();
        self.metrics
            .consumer_lag
            .with_label_values(&[self.topic.as_str(), &partition])
            .set(lag);
    }

    fn remove_lag(&self, partition: i32) {
        let partition = partition.to_string();
        // An error only means that no statistics arrived for the partition yet.
        let _ = self
            .metrics
            .consumer_lag
            .remove_label_values(&[self.topic.as_str(), &partition]);
    }
}

impl ClientContext for ConsumerClientContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, line: &str) {
        forward_log("consumer", level, facility, line);
    }

    fn error(&self, error: ClientError, reason: &str) {
        report_client_error("consumer", &self.metrics, &self.throttle, &error, reason);
    }

    /// Sets the lag gauge of every assigned partition of the events topic.
    fn stats(&self, statistics: Statistics) {
        let Some(topic) = statistics.topics.get(&self.topic) else {
            return;
        };
        // Partition -1 is librdkafka's internal "unassigned" queue; partitions that are not
        // desired are no longer assigned to this consumer.
        let assigned = topic
            .partitions
            .values()
            .filter(|p| p.partition >= 0 && p.desired);
        for partition in assigned {
            // librdkafka reports -1 while an offset is unknown.
            let lag = if partition.consumer_lag_stored >= 0 {
                partition.consumer_lag_stored
            } else {
                partition.consumer_lag
            };
            if lag >= 0 {
                self.set_lag(partition.partition, lag);
            }
        }
    }
}

impl ConsumerContext for ConsumerClientContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(list) => {
                let partitions = partitions_of(list);
                info!(topic = %self.topic, ?partitions, "partitions revoked");
                // Every stored offset belongs to a message whose state change was
                // acknowledged, so committing them now hands the next owner a clean start.
                match consumer.commit_consumer_state(CommitMode::Sync) {
                    Ok(()) | Err(ClientError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
                    Err(error) => {
                        self.metrics.count_error("consumer", &error);
                        warn!(topic = %self.topic, %error, "failed to commit offsets on revoke");
                    }
                }
                if let Some(tracker) = &self.partitions {
                    tracker.revoked(&partitions);
                }
                for partition in partitions {
                    self.remove_lag(partition);
                }
            }
            Rebalance::Assign(list) => {
                let partitions = partitions_of(list);
                debug!(topic = %self.topic, ?partitions, "assigning partitions");
            }
            Rebalance::Error(error) => {
                self.metrics.count_error("consumer", error);
                warn!(topic = %self.topic, %error, "rebalance failed");
            }
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(list) = rebalance {
            let partitions = partitions_of(list);
            info!(topic = %self.topic, ?partitions, "partitions assigned");
            if let Some(tracker) = &self.partitions {
                tracker.assigned(&partitions);
            }
        }
        // The list is dropped at the end of this statement: a list taken from a consumer
        // must not outlive it, or `rd_kafka_destroy` hangs.
        let assigned = consumer.assignment().map(|list| list.count());
        match assigned {
            Ok(count) => {
                let count = i64::try_from(count).unwrap_or(i64::MAX);
                self.metrics.assigned_partitions.set(count);
            }
            Err(error) => warn!(topic = %self.topic, %error, "failed to read partition assignment"),
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, _offsets: &TopicPartitionList) {
        match result {
            Ok(()) => {}
            // Nothing was stored since the last commit.
            Err(ClientError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
            Err(error) => {
                self.metrics.count_error("consumer", &error);
                if let Some(suppressed) = self.throttle.allow() {
                    warn!(topic = %self.topic, %error, suppressed, "failed to commit offsets");
                }
            }
        }
    }
}

/// Callbacks of the consumers that read assigned partitions without a group: changelog
/// restores and exports. They enable partition-end events to find the end of a partition,
/// and librdkafka also reports each of those as a client error, which is not logged here.
pub(crate) struct ReaderClientContext;

impl ClientContext for ReaderClientContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, line: &str) {
        forward_log("reader", level, facility, line);
    }

    fn error(&self, error: ClientError, reason: &str) {
        if matches!(error, ClientError::PartitionEOF(_)) {
            return;
        }
        warn!(client = "reader", kind = error_kind(&error), %error, reason, "kafka client error");
    }
}

impl ConsumerContext for ReaderClientContext {}

/// Copies the partition numbers out of a list, so that nothing keeps the list alive.
fn partitions_of(list: &TopicPartitionList) -> Vec<i32> {
    list.elements()
        .iter()
        .map(|element| element.partition())
        .collect()
}

/// Writes a librdkafka log line as a tracing event. `Error` lines become warnings because
/// librdkafka reconnects and retries by itself after most of them, and `Info` lines are detail.
fn forward_log(client: &'static str, level: RDKafkaLogLevel, facility: &str, line: &str) {
    match level {
        RDKafkaLogLevel::Emerg | RDKafkaLogLevel::Alert | RDKafkaLogLevel::Critical => {
            error!(client, facility, detail = line, "librdkafka log");
        }
        RDKafkaLogLevel::Error | RDKafkaLogLevel::Warning => {
            warn!(client, facility, detail = line, "librdkafka log");
        }
        RDKafkaLogLevel::Notice => info!(client, facility, detail = line, "librdkafka log"),
        RDKafkaLogLevel::Info | RDKafkaLogLevel::Debug => {
            debug!(client, facility, detail = line, "librdkafka log");
        }
    }
}

/// Counts a client-level error and logs it, at most once per [`LOG_INTERVAL`] unless fatal.
fn report_client_error(
    client: &'static str,
    metrics: &KafkaMetrics,
    throttle: &LogThrottle,
    error: &ClientError,
    reason: &str,
) {
    metrics.count_error(client, error);
    let kind = error_kind(error);
    if kind == "fatal" {
        error!(client, kind, %error, reason, "kafka client failed; restart stepup");
        return;
    }
    if let Some(suppressed) = throttle.allow() {
        warn!(client, kind, %error, reason, suppressed, "kafka client error");
    }
}
