//! Publishing events and reading topics back, with librdkafka like a real auth service.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Headers;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::util::Timeout;
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

use crate::{WAIT, unique_name};

/// A producer for one events topic; each message is keyed by user id.
pub struct EventProducer {
    inner: FutureProducer,
    topic: String,
}

// === impl EventProducer ===

impl EventProducer {
    /// Creates a producer for `topic` on `brokers`.
    pub fn new(brokers: &str, topic: &str) -> Self {
        let inner = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("client.id", "stepup-tests-producer")
            .set("message.timeout.ms", "20000")
            .set("linger.ms", "0")
            .create()
            .unwrap_or_else(|err| panic!("failed to create a producer for `{brokers}`: {err}"));
        Self {
            inner,
            topic: topic.to_owned(),
        }
    }

    /// Sends `payload` with key `user_id` and waits until the broker acknowledges it, so
    /// messages sent one after another keep their order.
    pub async fn send(&self, user_id: &str, payload: &[u8]) {
        let record = FutureRecord::to(&self.topic).key(user_id).payload(payload);
        let delivery = tokio::time::timeout(WAIT, self.inner.send(record, Timeout::After(WAIT)));
        match delivery.await {
            Ok(Ok(_)) => {}
            Ok(Err((err, _))) => panic!("failed to send a message to `{}`: {err}", self.topic),
            Err(_) => panic!(
                "sending a message to `{}` timed out after {WAIT:?}",
                self.topic
            ),
        }
    }

    /// Sends `event` as JSON, keyed by its `user_id` field.
    pub async fn send_event(&self, event: &serde_json::Value) {
        let user_id = event["user_id"]
            .as_str()
            .expect("a test event has a string `user_id`");
        self.send(user_id, event.to_string().as_bytes()).await;
    }
}

/// One message read back from a topic.
#[derive(Clone, Debug)]
pub struct Record {
    /// Message key as text, if it had one.
    pub key: Option<String>,
    /// Message payload, empty if it had none.
    pub payload: Vec<u8>,
    /// Headers whose values are text, by name.
    pub headers: BTreeMap<String, String>,
    /// Partition the message was read from.
    pub partition: i32,
    /// Offset of the message in its partition.
    pub offset: i64,
}

impl Record {
    /// Returns the payload parsed as JSON; panics if it is not JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.payload).unwrap_or_else(|err| {
            let text = String::from_utf8_lossy(&self.payload);
            panic!("message payload is not JSON ({err}): {text}")
        })
    }
}

/// Reads every partition of `topic` from the beginning until `count` messages arrived.
///
/// Panics, listing what it read, when fewer arrive within [`WAIT`]. Uses no consumer group,
/// so it reads the same messages however often it is called.
pub async fn read_topic(brokers: &str, topic: &str, partitions: i32, count: usize) -> Vec<Record> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", unique_name("stepup-tests-reader"))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .create()
        .unwrap_or_else(|err| panic!("failed to create a consumer for `{brokers}`: {err}"));
    let mut assignment = TopicPartitionList::new();
    for partition in 0..partitions {
        assignment
            .add_partition_offset(topic, partition, Offset::Beginning)
            .unwrap_or_else(|err| panic!("failed to add partition {partition}: {err}"));
    }
    consumer
        .assign(&assignment)
        .unwrap_or_else(|err| panic!("failed to assign the partitions of `{topic}`: {err}"));

    let mut records = Vec::new();
    let deadline = Instant::now() + WAIT;
    while records.len() < count {
        let left = deadline.saturating_duration_since(Instant::now());
        let received = match tokio::time::timeout(left, consumer.recv()).await {
            Ok(received) => received,
            Err(_) => panic!(
                "read {} of {count} messages from `{topic}` within {WAIT:?}: {records:#?}",
                records.len()
            ),
        };
        match received {
            Ok(message) => records.push(record_of(&message)),
            // Transient: the partition leader may not be known yet right after creation.
            Err(err) => {
                eprintln!("failed to receive from `{topic}`; retrying: {err}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    records
}

/// Reads every partition of `topic` from the beginning to its end at the time of the call,
/// tombstones included (with an empty payload and `tombstone` set in `headers`).
///
/// The end is librdkafka's partition-end event, because tansu 0.6 may report an end offset
/// that stops short of the last record batch.
pub fn read_to_end(brokers: &str, topic: &str) -> Vec<Record> {
    use rdkafka::consumer::BaseConsumer;
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", unique_name("stepup-tests-reader"))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .create()
        .unwrap_or_else(|err| panic!("failed to create a consumer for `{brokers}`: {err}"));
    let metadata = consumer
        .fetch_metadata(Some(topic), WAIT)
        .unwrap_or_else(|err| panic!("failed to read the metadata of `{topic}`: {err}"));
    let partitions = metadata
        .topics()
        .first()
        .map_or(0, |found| found.partitions().len() as i32);
    let mut records = Vec::new();
    for partition in 0..partitions {
        let (low, high) = consumer
            .fetch_watermarks(topic, partition, WAIT)
            .unwrap_or_else(|err| panic!("failed to read the offsets of `{topic}`: {err}"));
        if high <= low {
            continue;
        }
        let mut assignment = TopicPartitionList::new();
        assignment
            .add_partition_offset(topic, partition, Offset::Beginning)
            .unwrap_or_else(|err| panic!("failed to add partition {partition}: {err}"));
        consumer
            .assign(&assignment)
            .unwrap_or_else(|err| panic!("failed to assign `{topic}`/{partition}: {err}"));
        let deadline = Instant::now() + WAIT;
        loop {
            assert!(
                Instant::now() < deadline,
                "read `{topic}`/{partition} only up to {:?} (end offset {high}) within {WAIT:?}",
                records.last().map(|record: &Record| record.offset)
            );
            match consumer.poll(Duration::from_millis(200)) {
                Some(Ok(message)) => {
                    let mut record = record_of(&message);
                    if message.payload().is_none() {
                        record.headers.insert("tombstone".into(), "true".into());
                    }
                    records.push(record);
                }
                Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => break,
                Some(Err(err)) => eprintln!("failed to read `{topic}`; retrying: {err}"),
                None => {}
            }
        }
    }
    records
}

fn record_of(message: &rdkafka::message::BorrowedMessage<'_>) -> Record {
    let mut headers = BTreeMap::new();
    if let Some(all) = message.headers() {
        for header in all.iter() {
            let value = header
                .value
                .map(String::from_utf8_lossy)
                .unwrap_or_default();
            headers.insert(header.key.to_owned(), value.into_owned());
        }
    }
    Record {
        key: message
            .key()
            .map(|key| String::from_utf8_lossy(key).into_owned()),
        payload: message.payload().unwrap_or_default().to_vec(),
        headers,
        partition: message.partition(),
        offset: message.offset(),
    }
}

/// Creates `topics` with `partitions` partitions each; topics that exist are left alone.
pub async fn create_topics(brokers: &str, topics: &[&str], partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap_or_else(|err| panic!("failed to create an admin client for `{brokers}`: {err}"));
    let new_topics: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|name| NewTopic::new(name, partitions, TopicReplication::Fixed(1)))
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(WAIT));
    let results = tokio::time::timeout(WAIT, admin.create_topics(&new_topics, &options))
        .await
        .unwrap_or_else(|_| panic!("creating topics on `{brokers}` timed out after {WAIT:?}"))
        .unwrap_or_else(|err| panic!("failed to create topics on `{brokers}`: {err}"));
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => panic!("failed to create topic `{topic}`: {code}"),
        }
    }
}
