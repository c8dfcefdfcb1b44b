//! Producer for accepted events, dead letters and decisions.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::error::KafkaError as ClientError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use tracing::{error, instrument, warn};

use crate::config::KafkaConfig;
use crate::context::ProducerClientContext;
use crate::error::KafkaError;
use crate::handler::InboundMessage;
use crate::metrics::{KafkaMetrics, error_kind, is_permanent_send_error};
use crate::retry::{Backoff, LOG_INTERVAL, LogThrottle};

/// Dead-letter header with the bounded reason code, for example `not_json`.
pub const HEADER_REASON_CODE: &str = "stepup-reason-code";
/// Dead-letter header with the explanation of the reason.
pub const HEADER_REASON: &str = "stepup-reason";
/// Dead-letter header with the topic the message was read from.
pub const HEADER_SOURCE_TOPIC: &str = "stepup-source-topic";
/// Dead-letter header with the partition the message was read from, in decimal.
pub const HEADER_SOURCE_PARTITION: &str = "stepup-source-partition";
/// Dead-letter header with the offset of the message in its partition, in decimal.
pub const HEADER_SOURCE_OFFSET: &str = "stepup-source-offset";

/// Sends messages to the events, dead-letter and decisions topics. Cheap to clone, because
/// clones share one idempotent librdkafka producer that waits for all in-sync replicas.
#[derive(Clone)]
pub struct Producer {
    inner: FutureProducer<ProducerClientContext>,
    settings: Arc<Settings>,
    metrics: KafkaMetrics,
}

/// The parts of [`KafkaConfig`] the producer uses, and its retry log throttle.
struct Settings {
    events_topic: String,
    changelog_topic: String,
    instances_topic: String,
    dead_letter_topic: String,
    decisions_topic: Option<String>,
    max_event_bytes: usize,
    retry_backoff_max: Duration,
    retry_throttle: LogThrottle,
}

// === impl Producer ===

impl std::fmt::Debug for Producer {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Producer")
            .field("events_topic", &self.settings.events_topic)
            .field("dead_letter_topic", &self.settings.dead_letter_topic)
            .field("decisions_topic", &self.settings.decisions_topic)
            .finish_non_exhaustive()
    }
}

impl Producer {
    /// Creates the producer. It connects to the brokers in the background, so this succeeds
    /// while they are unreachable.
    pub fn new(config: &KafkaConfig, metrics: KafkaMetrics) -> Result<Self, KafkaError> {
        config.validate()?;
        let context = ProducerClientContext::new(metrics.clone());
        let inner = config
            .producer_client_config()
            .create_with_context(context)
            .map_err(|source| KafkaError::CreateClient {
                client: "producer",
                brokers: config.brokers.clone(),
                source,
            })?;
        let settings = Settings {
            events_topic: config.events_topic.clone(),
            changelog_topic: config.changelog_topic.clone(),
            instances_topic: config.instances_topic.clone(),
            dead_letter_topic: config.dead_letter_topic.clone(),
            decisions_topic: config.decisions_topic.clone(),
            max_event_bytes: config.max_event_bytes,
            retry_backoff_max: config.retry_backoff_max(),
            retry_throttle: LogThrottle::new(LOG_INTERVAL),
        };
        Ok(Self {
            inner,
            settings: Arc::new(settings),
            metrics,
        })
    }

    /// Appends an event to the events topic with the user id as key, and returns the
    /// partition and offset the broker acknowledged.
    ///
    /// Retries with capped exponential backoff until the broker acknowledges the event. It
    /// therefore waits as long as the brokers are unreachable, so bound it with a timeout
    /// where needed.
    /// Returns an error without retrying for payloads over `max_event_bytes` and for errors a
    /// retry cannot fix, such as a missing authorization.
    #[instrument(skip_all, fields(topic = %self.settings.events_topic))]
    pub async fn send_event(
        &self,
        user_id: &str,
        payload: &[u8],
    ) -> Result<(i32, i64), KafkaError> {
        let max = self.settings.max_event_bytes;
        if payload.len() > max {
            return Err(KafkaError::EventTooLarge {
                size: payload.len(),
                max,
            });
        }

        let topic = &self.settings.events_topic;
        let mut backoff = Backoff::new(self.settings.retry_backoff_max);
        loop {
            match self
                .send_once(topic, Some(user_id.as_bytes()), payload, None)
                .await
            {
                Ok(position) => return Ok(position),
                Err(source) if is_permanent_send_error(&source) => {
                    return Err(KafkaError::Send {
                        topic: topic.clone(),
                        source,
                    });
                }
                Err(source) => {
                    self.record_retry(&KafkaError::Send {
                        topic: topic.clone(),
                        source,
                    });
                    tokio::time::sleep(backoff.next_delay()).await;
                }
            }
        }
    }

    /// Sends a message to the dead-letter topic with its original key and payload, and the
    /// reason and source position in `stepup-*` headers.
    ///
    /// Makes one attempt, in which librdkafka retries for up to 30 s; the consumer loop
    /// calls it again with backoff until it succeeds.
    #[instrument(skip_all, fields(topic = %self.settings.dead_letter_topic))]
    pub async fn send_dead_letter(
        &self,
        message: &InboundMessage<'_>,
        reason_code: &str,
        reason: &str,
    ) -> Result<(), KafkaError> {
        let topic = &self.settings.dead_letter_topic;
        let headers = dead_letter_headers(message, reason_code, reason);
        let payload = message.payload.unwrap_or_default();
        match self
            .send_once(topic, message.key, payload, Some(headers))
            .await
        {
            Ok(_) => Ok(()),
            Err(source) => Err(KafkaError::Send {
                topic: topic.clone(),
                source,
            }),
        }
    }

    /// Sends a decision, as JSON keyed by user id, to `decisions_topic`. Does nothing when
    /// that topic is not set. Makes one attempt, like [`Producer::send_dead_letter`].
    #[instrument(skip_all, fields(topic = ?self.settings.decisions_topic))]
    pub async fn send_decision(
        &self,
        user_id: &str,
        decision_json: &[u8],
    ) -> Result<(), KafkaError> {
        let Some(topic) = &self.settings.decisions_topic else {
            return Ok(());
        };
        match self
            .send_once(topic, Some(user_id.as_bytes()), decision_json, None)
            .await
        {
            Ok(_) => Ok(()),
            Err(source) => Err(KafkaError::Send {
                topic: topic.clone(),
                source,
            }),
        }
    }

    /// Writes a user's state to partition `partition` of the changelog topic, keyed by user
    /// id, and returns its offset. Makes one attempt, like [`Producer::send_dead_letter`].
    pub async fn send_state(
        &self,
        partition: i32,
        user_id: &str,
        state: &[u8],
    ) -> Result<i64, KafkaError> {
        let topic = &self.settings.changelog_topic;
        let record = FutureRecord::<[u8], [u8]>::to(topic)
            .partition(partition)
            .key(user_id.as_bytes())
            .payload(state);
        self.deliver(topic, record).await.map(|(_, offset)| offset)
    }

    /// Publishes this instance's claim (JSON) to the instances topic keyed by instance id,
    /// or deletes it with a tombstone when `claim` is `None`. Makes one attempt.
    pub async fn send_claim(
        &self,
        instance_id: &str,
        claim: Option<&[u8]>,
    ) -> Result<(), KafkaError> {
        let topic = &self.settings.instances_topic;
        let mut record = FutureRecord::<[u8], [u8]>::to(topic).key(instance_id.as_bytes());
        if let Some(claim) = claim {
            record = record.payload(claim);
        }
        self.deliver(topic, record).await.map(|_| ())
    }

    /// Sends a prepared record and waits for the acknowledgement.
    async fn deliver(
        &self,
        topic: &str,
        record: FutureRecord<'_, [u8], [u8]>,
    ) -> Result<(i32, i64), KafkaError> {
        match self.inner.send(record, Timeout::Never).await {
            Ok(delivery) => Ok((delivery.partition, delivery.offset)),
            Err((source, _message)) => {
                self.metrics.count_error("producer", &source);
                Err(KafkaError::Send {
                    topic: topic.to_owned(),
                    source,
                })
            }
        }
    }

    /// Returns whether decisions are published, that is whether `decisions_topic` is set.
    pub fn publishes_decisions(&self) -> bool {
        self.settings.decisions_topic.is_some()
    }

    /// Counts a failed send that will be retried, and logs it at most once per interval:
    /// as an error when only an operator can fix the cause, as a warning otherwise.
    pub(crate) fn record_retry(&self, failure: &KafkaError) {
        let KafkaError::Send { topic, source } = failure else {
            return;
        };
        self.metrics
            .produce_retries
            .with_label_values(&[topic.as_str()])
            .inc();
        let Some(suppressed) = self.settings.retry_throttle.allow() else {
            return;
        };
        let kind = error_kind(source);
        if is_permanent_send_error(source) {
            error!(
                topic,
                kind,
                error = %source,
                suppressed,
                "broker rejects the message; fix the topic or its size limits"
            );
        } else {
            warn!(topic, kind, error = %source, suppressed, "failed to send message; retrying");
        }
    }

    /// Sends one message and waits for the acknowledgement, counting a failure as an error.
    async fn send_once(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        payload: &[u8],
        headers: Option<OwnedHeaders>,
    ) -> Result<(i32, i64), ClientError> {
        let mut record = FutureRecord::<[u8], [u8]>::to(topic).payload(payload);
        if let Some(key) = key {
            record = record.key(key);
        }
        if let Some(headers) = headers {
            record = record.headers(headers);
        }
        // `Never` waits while the local queue is full; queued messages leave it when they are
        // delivered or after `message.timeout.ms`, so the wait ends.
        match self.inner.send(record, Timeout::Never).await {
            Ok(delivery) => Ok((delivery.partition, delivery.offset)),
            Err((error, _message)) => {
                self.metrics.count_error("producer", &error);
                Err(error)
            }
        }
    }
}

fn dead_letter_headers(
    message: &InboundMessage<'_>,
    reason_code: &str,
    reason: &str,
) -> OwnedHeaders {
    let partition = message.partition.to_string();
    let offset = message.offset.to_string();
    OwnedHeaders::new_with_capacity(5)
        .insert(Header {
            key: HEADER_REASON_CODE,
            value: Some(reason_code),
        })
        .insert(Header {
            key: HEADER_REASON,
            value: Some(reason),
        })
        .insert(Header {
            key: HEADER_SOURCE_TOPIC,
            value: Some(message.topic),
        })
        .insert(Header {
            key: HEADER_SOURCE_PARTITION,
            value: Some(partition.as_str()),
        })
        .insert(Header {
            key: HEADER_SOURCE_OFFSET,
            value: Some(offset.as_str()),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::embedded::EmbeddedKafka;
    use rdkafka::message::Headers;

    #[test]
    fn dead_letter_headers_carry_reason_and_source() {
        let message = InboundMessage {
            key: Some(b"user-1"),
            payload: Some(b"{"),
            topic: "stepup.events",
            partition: 3,
            offset: 42,
        };

        let headers = dead_letter_headers(&message, "not_json", "event is not valid JSON");

        let pairs: Vec<(String, String)> = headers
            .iter()
            .map(|h| {
                (
                    h.key.to_owned(),
                    String::from_utf8_lossy(h.value.unwrap_or_default()).into(),
                )
            })
            .collect();
        let expected = [
            (HEADER_REASON_CODE, "not_json"),
            (HEADER_REASON, "event is not valid JSON"),
            (HEADER_SOURCE_TOPIC, "stepup.events"),
            (HEADER_SOURCE_PARTITION, "3"),
            (HEADER_SOURCE_OFFSET, "42"),
        ];
        let expected: Vec<(String, String)> = expected
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        assert_eq!(pairs, expected);
    }

    fn embedded_config(kafka: &EmbeddedKafka) -> KafkaConfig {
        KafkaConfig {
            brokers: kafka.bootstrap_servers(),
            ..KafkaConfig::default()
        }
    }

    #[tokio::test]
    async fn rejects_oversized_event_without_sending() {
        let kafka = EmbeddedKafka::start(1, &[("stepup.events", 1)]).expect("mock cluster");
        let config = KafkaConfig {
            max_event_bytes: 4,
            ..embedded_config(&kafka)
        };
        let metrics = KafkaMetrics::register(&prometheus::Registry::new()).expect("registry");
        let producer = Producer::new(&config, metrics).expect("producer");

        let result = producer.send_event("user-1", b"12345").await;

        assert!(matches!(
            result,
            Err(KafkaError::EventTooLarge { size: 5, max: 4 })
        ));
    }

    #[tokio::test]
    async fn send_decision_without_topic_does_nothing() {
        let metrics = KafkaMetrics::register(&prometheus::Registry::new()).expect("registry");
        let kafka = EmbeddedKafka::start(1, &[]).expect("mock cluster");
        let producer = Producer::new(&embedded_config(&kafka), metrics).expect("producer");

        assert!(!producer.publishes_decisions());
        assert!(producer.send_decision("user-1", b"{}").await.is_ok());
    }
}
