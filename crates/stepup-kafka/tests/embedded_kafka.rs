//! End-to-end tests of the consumer loop and the producer against the embedded mock cluster.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus::{Encoder, Registry, TextEncoder};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientConfig, Message};
use serde_json::json;
use stepup_kafka::{
    EmbeddedKafka, EventHandler, HEADER_REASON, HEADER_REASON_CODE, HEADER_SOURCE_OFFSET,
    HEADER_SOURCE_PARTITION, HEADER_SOURCE_TOPIC, HandleOutcome, InboundMessage, KafkaConfig,
    KafkaMetrics, Membership, Producer, RestoreSink, RestoreTotals, ensure_topics, run_consumer,
};
use tokio::sync::watch;
use tokio::task::JoinHandle;

const EVENTS: &str = "stepup.events";
const DLQ: &str = "stepup.events.dlq";
const DECISIONS: &str = "stepup.decisions";
const CHANGELOG: &str = "stepup.profiles";

/// Maximum wait for a condition; every test stays well under 15 s when it passes.
const WAIT: Duration = Duration::from_secs(10);

/// One message the test handler processed.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Handled {
    user: String,
    seq: u64,
    partition: i32,
    offset: i64,
}

/// Handler that accepts `{"user_id": "...", "seq": n}`, panics on payloads that start with
/// `panic`, and dead-letters everything else.
#[derive(Default)]
struct RecordingHandler {
    handled: Mutex<Vec<Handled>>,
    /// States restored from the changelog: user -> (partition, latest seq).
    restored: Mutex<BTreeMap<String, (i32, String)>>,
}

impl RecordingHandler {
    fn handled(&self) -> Vec<Handled> {
        self.handled.lock().expect("handler lock").clone()
    }

    fn count(&self) -> usize {
        self.handled.lock().expect("handler lock").len()
    }
}

impl EventHandler for RecordingHandler {
    fn handle(&self, message: &InboundMessage<'_>) -> HandleOutcome {
        let payload = message.payload.unwrap_or_default();
        assert!(
            !payload.starts_with(b"panic"),
            "test handler panics on request"
        );
        let Ok(value) = serde_json::from_slice::<serde_json::Value>(payload) else {
            return dead_letter("not_json", "event is not valid JSON");
        };
        let user = value.get("user_id").and_then(|v| v.as_str());
        let seq = value.get("seq").and_then(|v| v.as_u64());
        let (Some(user), Some(seq)) = (user, seq) else {
            return dead_letter("missing_field", "missing field `user_id` or `seq`");
        };

        let handled = Handled {
            user: user.to_owned(),
            seq,
            partition: message.partition,
            offset: message.offset,
        };
        self.handled.lock().expect("handler lock").push(handled);
        let decision = json!({ "user_id": user, "seq": seq, "requirement": "allow" });
        HandleOutcome::Processed {
            decision: Some(decision.to_string().into_bytes()),
            user_id: user.to_owned(),
            state: Some(seq.to_string().into_bytes()),
        }
    }

    fn begin_restore(&self, partition: i32) -> Option<Box<dyn RestoreSink + '_>> {
        Some(Box::new(MapSink {
            partition,
            records: 0,
            states: BTreeMap::new(),
            into: &self.restored,
        }))
    }

    fn release_partition(&self, partition: i32) {
        let mut restored = self.restored.lock().expect("restored lock");
        restored.retain(|_, (owner, _)| *owner != partition);
    }
}

/// Collects a partition's restored states and installs them on finish.
struct MapSink<'a> {
    partition: i32,
    records: u64,
    states: BTreeMap<String, String>,
    into: &'a Mutex<BTreeMap<String, (i32, String)>>,
}

impl RestoreSink for MapSink<'_> {
    fn apply(&mut self, key: &str, value: Option<&[u8]>) {
        self.records += 1;
        match value {
            Some(value) => {
                let value = String::from_utf8_lossy(value).into_owned();
                self.states.insert(key.to_owned(), value);
            }
            None => {
                self.states.remove(key);
            }
        }
    }

    fn finish(self: Box<Self>) -> RestoreTotals {
        let mut into = self.into.lock().expect("restored lock");
        let restored = self.states.len() as u64;
        for (key, value) in self.states {
            into.insert(key, (self.partition, value));
        }
        RestoreTotals {
            records: self.records,
            restored,
            invalid: 0,
        }
    }
}

fn dead_letter(reason_code: &'static str, reason: &str) -> HandleOutcome {
    HandleOutcome::DeadLetter {
        reason_code,
        reason: reason.to_owned(),
    }
}

/// A running `run_consumer` task and the means to stop it.
struct RunningConsumer {
    handler: Arc<RecordingHandler>,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<Result<(), stepup_kafka::KafkaError>>,
}

impl RunningConsumer {
    fn start(config: &KafkaConfig, metrics: &KafkaMetrics) -> Self {
        let handler = Arc::new(RecordingHandler::default());
        let producer = Producer::new(config, metrics.clone()).expect("producer");
        let (shutdown, receiver) = watch::channel(false);
        let task = tokio::spawn({
            let config = config.clone();
            let handler: Arc<dyn EventHandler> = handler.clone();
            let metrics = metrics.clone();
            async move {
                run_consumer(
                    &config,
                    handler,
                    producer,
                    metrics,
                    Membership::new("test", "127.0.0.1:0"),
                    receiver,
                )
                .await
            }
        });
        Self {
            handler,
            shutdown,
            task,
        }
    }

    async fn stop(self) -> Vec<Handled> {
        self.shutdown.send(true).expect("consumer task is running");
        let result = tokio::time::timeout(WAIT, self.task).await;
        let result = result
            .expect("consumer stops within the wait")
            .expect("task joins");
        result.expect("consumer returns Ok on shutdown");
        self.handler.handled()
    }
}

/// Prints the crate's logs when `RUST_LOG` is set, for example `RUST_LOG=debug`.
fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

fn config_for(kafka: &EmbeddedKafka, group: &str) -> KafkaConfig {
    init_logs();
    KafkaConfig {
        brokers: kafka.bootstrap_servers(),
        group_id: group.to_owned(),
        decisions_topic: Some(DECISIONS.to_owned()),
        retry_backoff_max_ms: 500,
        drain_timeout_ms: 500,
        ..KafkaConfig::default()
    }
}

/// Shortens the session timeout for tests that start a second consumer in the group.
///
/// When the last member leaves, librdkafka 2.12.1's mock group waits for the session timeout
/// minus 1 s before it lets a new member in (`rdkafka_mock_cgrp.c`). A real broker empties
/// the group at once. With the default of 45 s, the second consumer would wait 44 s.
fn restartable(config: KafkaConfig) -> KafkaConfig {
    let mut config = KafkaConfig {
        session_timeout_ms: 2_000,
        ..config
    };
    config
        .client
        .insert("heartbeat.interval.ms".to_owned(), "500".to_owned());
    config
}

fn new_metrics() -> (Registry, KafkaMetrics) {
    let registry = Registry::new();
    let metrics = KafkaMetrics::register(&registry).expect("fresh registry");
    (registry, metrics)
}

fn good_event(user: &str, seq: u64) -> Vec<u8> {
    json!({ "user_id": user, "seq": seq })
        .to_string()
        .into_bytes()
}

/// Sends all events without waiting for each acknowledgement, so the batch costs one
/// `linger.ms`; the sends are queued in slice order, which keeps per-key order.
async fn send_all(producer: &Producer, events: &[(String, Vec<u8>)]) -> Vec<(i32, i64)> {
    let sends = events
        .iter()
        .map(|(user, payload)| producer.send_event(user, payload));
    let results = futures::future::join_all(sends).await;
    results
        .into_iter()
        .map(|result| result.expect("event acknowledged"))
        .collect()
}

/// Sends a message with a plain producer, which can send what `Producer::send_event`
/// rejects: no payload, or a payload over `max_event_bytes`.
async fn send_raw(kafka: &EmbeddedKafka, key: &str, payload: Option<&[u8]>) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", kafka.bootstrap_servers())
        .create()
        .expect("plain producer");
    let mut record = FutureRecord::<str, [u8]>::to(EVENTS).key(key);
    if let Some(payload) = payload {
        record = record.payload(payload);
    }
    producer
        .send(record, Duration::from_secs(5))
        .await
        .expect("message acknowledged");
}

/// Reads `expected` messages from the start of `topic` with a fresh group.
async fn read_topic(kafka: &EmbeddedKafka, topic: &str, expected: usize) -> Vec<OwnedMessage> {
    let reader: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", kafka.bootstrap_servers())
        .set("group.id", format!("reader-{topic}"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .expect("reader consumer");
    reader.subscribe(&[topic]).expect("reader subscription");

    let deadline = Instant::now() + WAIT;
    let mut messages = Vec::new();
    while messages.len() < expected && Instant::now() < deadline {
        let received = tokio::time::timeout(Duration::from_millis(500), reader.recv()).await;
        if let Ok(Ok(message)) = received {
            messages.push(message.detach());
        }
    }
    messages
}

async fn wait_until(condition: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        if condition() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    condition()
}

fn header(message: &OwnedMessage, key: &str) -> Option<String> {
    let headers = message.headers()?;
    let header = headers.iter().find(|header| header.key == key)?;
    Some(String::from_utf8_lossy(header.value?).into_owned())
}

fn metrics_text(registry: &Registry) -> String {
    let mut text = Vec::new();
    TextEncoder::new()
        .encode(&registry.gather(), &mut text)
        .expect("text encoding");
    String::from_utf8(text).expect("utf-8 exposition")
}

/// Returns the handled sequence numbers per user, in handling order.
fn seqs_by_user(handled: &[Handled]) -> HashMap<String, Vec<u64>> {
    let mut by_user: HashMap<String, Vec<u64>> = HashMap::new();
    for item in handled {
        by_user.entry(item.user.clone()).or_default().push(item.seq);
    }
    by_user
}

/// Builds 8 users x 25 events, with a malformed message after every 20th event.
fn mixed_batch() -> (Vec<(String, Vec<u8>)>, usize) {
    let mut events = Vec::new();
    let mut malformed = 0;
    for seq in 0..25 {
        for user in 0..8 {
            let user = format!("user-{user}");
            events.push((user.clone(), good_event(&user, seq)));
            if events.len() % 21 == 20 {
                events.push((user, b"{not json".to_vec()));
                malformed += 1;
            }
        }
    }
    events.push(("user-0".to_owned(), br#"{"user_id": "user-0"}"#.to_vec()));
    (events, malformed + 1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_handles_each_event_once_in_order() {
    let kafka = EmbeddedKafka::start(3, &[(EVENTS, 4), (DLQ, 1), (DECISIONS, 4), (CHANGELOG, 4)])
        .expect("cluster");
    let config = config_for(&kafka, "stepup-order");
    let (registry, metrics) = new_metrics();
    let producer = Producer::new(&config, metrics.clone()).expect("producer");
    let (events, malformed) = mixed_batch();
    send_all(&producer, &events).await;
    send_raw(&kafka, "user-3", None).await;
    let good = 8 * 25;

    let consumer = RunningConsumer::start(&config, &metrics);
    let handler = consumer.handler.clone();
    assert!(
        wait_until(|| handler.count() >= good).await,
        "handled {}",
        handler.count()
    );
    let dead_letters = read_topic(&kafka, DLQ, malformed + 1).await;
    let handled = consumer.stop().await;

    assert_eq!(
        handled.len(),
        good,
        "every good event is handled exactly once"
    );
    for (user, seqs) in seqs_by_user(&handled) {
        assert_eq!(
            seqs,
            (0..25).collect::<Vec<u64>>(),
            "events of {user} in order"
        );
    }
    assert_eq!(
        dead_letters.len(),
        malformed + 1,
        "malformed events and the tombstone"
    );
    let decisions = read_topic(&kafka, DECISIONS, good).await;
    assert_eq!(decisions.len(), good, "one decision per good event");
    let text = metrics_text(&registry);
    let not_json = format!(
        "stepup_dead_letters_total{{reason=\"not_json\"}} {}",
        malformed - 1
    );
    assert!(text.contains(&not_json), "{text}");
    assert!(
        text.contains("stepup_dead_letters_total{reason=\"missing_field\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("stepup_dead_letters_total{reason=\"missing_payload\"} 1"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_keep_payload_and_reason_headers() {
    let kafka = EmbeddedKafka::start(1, &[(EVENTS, 2), (DLQ, 1), (DECISIONS, 1), (CHANGELOG, 2)])
        .expect("cluster");
    let config = config_for(&kafka, "stepup-dlq");
    let (_registry, metrics) = new_metrics();
    let producer = Producer::new(&config, metrics.clone()).expect("producer");
    let bad = vec![("user-9".to_owned(), b"{not json".to_vec())];
    let positions = send_all(&producer, &bad).await;

    let consumer = RunningConsumer::start(&config, &metrics);
    let dead_letters = read_topic(&kafka, DLQ, 1).await;
    consumer.stop().await;

    assert_eq!(dead_letters.len(), 1);
    let message = &dead_letters[0];
    let (partition, offset) = positions[0];
    assert_eq!(message.key(), Some(&b"user-9"[..]));
    assert_eq!(message.payload(), Some(&b"{not json"[..]));
    assert_eq!(
        header(message, HEADER_REASON_CODE).as_deref(),
        Some("not_json")
    );
    assert_eq!(
        header(message, HEADER_REASON).as_deref(),
        Some("event is not valid JSON")
    );
    assert_eq!(
        header(message, HEADER_SOURCE_TOPIC).as_deref(),
        Some(EVENTS)
    );
    assert_eq!(
        header(message, HEADER_SOURCE_PARTITION),
        Some(partition.to_string())
    );
    assert_eq!(
        header(message, HEADER_SOURCE_OFFSET),
        Some(offset.to_string())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_consumer_resumes_from_committed_offsets() {
    let kafka = EmbeddedKafka::start(1, &[(EVENTS, 3), (DLQ, 1), (DECISIONS, 1), (CHANGELOG, 3)])
        .expect("cluster");
    // Without a decision to send, the offset is stored in the same poll as the handler call,
    // so a handled event is also a stored one when the test requests shutdown. With a
    // decision, shutdown may interrupt its send, and the next consumer handles the event again.
    let config = KafkaConfig {
        decisions_topic: None,
        ..restartable(config_for(&kafka, "stepup-resume"))
    };
    let (_registry, metrics) = new_metrics();
    let producer = Producer::new(&config, metrics.clone()).expect("producer");
    let first: Vec<_> = (0..30)
        .map(|seq| (format!("user-{}", seq % 5), good_event("a", seq)))
        .collect();
    send_all(&producer, &first).await;

    let consumer = RunningConsumer::start(&config, &metrics);
    let handler = consumer.handler.clone();
    assert!(
        wait_until(|| handler.count() >= 30).await,
        "first run handled {}",
        handler.count()
    );
    let first_run = consumer.stop().await;
    let second: Vec<_> = (30..40)
        .map(|seq| (format!("user-{}", seq % 5), good_event("a", seq)))
        .collect();
    send_all(&producer, &second).await;

    let consumer = RunningConsumer::start(&config, &metrics);
    let handler = consumer.handler.clone();
    assert!(
        wait_until(|| handler.count() >= 10).await,
        "second run handled {}",
        handler.count()
    );
    // Anything re-processed from the first batch would arrive within this pause.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let second_run = consumer.stop().await;

    assert_eq!(first_run.len(), 30);
    let mut seqs: Vec<u64> = second_run.iter().map(|item| item.seq).collect();
    seqs.sort_unstable();
    assert_eq!(
        seqs,
        (30..40).collect::<Vec<u64>>(),
        "only new events are handled again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_event_returns_partition_and_offset() {
    let kafka = EmbeddedKafka::start(1, &[(EVENTS, 4), (CHANGELOG, 4)]).expect("cluster");
    let config = config_for(&kafka, "stepup-send");
    let (_registry, metrics) = new_metrics();
    let producer = Producer::new(&config, metrics).expect("producer");

    let mut positions = Vec::new();
    for seq in 0..3 {
        positions.push(
            producer
                .send_event("user-1", &good_event("user-1", seq))
                .await,
        );
    }

    let positions: Vec<(i32, i64)> = positions
        .into_iter()
        .map(|position| position.expect("acknowledged"))
        .collect();
    let partition = positions[0].0;
    assert!((0..4).contains(&partition), "partition {partition}");
    assert!(
        positions.iter().all(|(p, _)| *p == partition),
        "one key, one partition"
    );
    let offsets: Vec<i64> = positions.iter().map(|(_, offset)| *offset).collect();
    assert_eq!(offsets, [0, 1, 2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lag_and_assignment_gauges_are_exported() {
    let kafka = EmbeddedKafka::start(1, &[(EVENTS, 2), (DLQ, 1), (DECISIONS, 1), (CHANGELOG, 2)])
        .expect("cluster");
    let mut config = config_for(&kafka, "stepup-lag");
    config.client = BTreeMap::from([("statistics.interval.ms".to_owned(), "500".to_owned())]);
    let (registry, metrics) = new_metrics();
    let producer = Producer::new(&config, metrics.clone()).expect("producer");
    let events: Vec<_> = (0..20)
        .map(|seq| (format!("user-{seq}"), good_event("a", seq)))
        .collect();
    send_all(&producer, &events).await;

    let consumer = RunningConsumer::start(&config, &metrics);
    let handler = consumer.handler.clone();
    assert!(
        wait_until(|| handler.count() >= 20).await,
        "handled {}",
        handler.count()
    );
    let lag_zero = |partition: i32| {
        format!(
            "stepup_kafka_consumer_lag_messages{{partition=\"{partition}\",topic=\"{EVENTS}\"}} 0"
        )
    };
    let exported = wait_until(|| {
        let text = metrics_text(&registry);
        text.contains(&lag_zero(0)) && text.contains(&lag_zero(1))
    })
    .await;
    let running = metrics_text(&registry);
    consumer.stop().await;
    let stopped = metrics_text(&registry);

    assert!(exported, "{running}");
    assert!(
        running.contains("stepup_kafka_assigned_partitions 2"),
        "{running}"
    );
    assert!(
        stopped.contains("stepup_kafka_assigned_partitions 0"),
        "{stopped}"
    );
    assert!(
        !stopped.contains("stepup_kafka_consumer_lag_messages{"),
        "{stopped}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_survives_broker_outage() {
    let kafka = EmbeddedKafka::start(1, &[(EVENTS, 1), (DLQ, 1), (DECISIONS, 1), (CHANGELOG, 1)])
        .expect("cluster");
    let mut config = config_for(&kafka, "stepup-outage");
    config.client = BTreeMap::from([("reconnect.backoff.max.ms".to_owned(), "200".to_owned())]);
    let (registry, metrics) = new_metrics();
    let producer = Producer::new(&config, metrics.clone()).expect("producer");
    send_all(&producer, &[("user-1".to_owned(), good_event("user-1", 0))]).await;
    let consumer = RunningConsumer::start(&config, &metrics);
    let handler = consumer.handler.clone();
    assert!(
        wait_until(|| handler.count() >= 1).await,
        "handled before the outage"
    );

    kafka.mock_cluster().broker_down(-1).expect("brokers down");
    let sending = tokio::spawn({
        let producer = producer.clone();
        async move {
            producer
                .send_event("user-1", &good_event("user-1", 1))
                .await
        }
    });
    tokio::time::sleep(Duration::from_secs(2)).await;
    kafka.mock_cluster().broker_up(-1).expect("brokers up");
    let sent = tokio::time::timeout(WAIT, sending).await;

    assert!(
        matches!(sent, Ok(Ok(Ok(_)))),
        "event sent after the outage: {sent:?}"
    );
    assert!(
        wait_until(|| handler.count() >= 2).await,
        "handled {}",
        handler.count()
    );
    let handled = consumer.stop().await;
    assert_eq!(
        handled.iter().map(|item| item.seq).collect::<Vec<_>>(),
        [0, 1]
    );
    let text = metrics_text(&registry);
    assert!(
        text.contains("stepup_kafka_errors_total{"),
        "outage errors are counted: {text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_dead_letter_blocks_commit_until_delivered() {
    let kafka = EmbeddedKafka::start(1, &[(EVENTS, 1), (DLQ, 1), (DECISIONS, 1), (CHANGELOG, 1)])
        .expect("cluster");
    // Without decisions, every produce retry counted below is a dead-letter retry.
    let mut config = KafkaConfig {
        decisions_topic: None,
        ..restartable(config_for(&kafka, "stepup-dlq-down"))
    };
    config
        .client
        .insert("message.timeout.ms".to_owned(), "300".to_owned());
    let (registry, metrics) = new_metrics();
    let producer = Producer::new(&config, metrics.clone()).expect("producer");
    let events = vec![
        ("user-1".to_owned(), good_event("user-1", 0)),
        ("user-1".to_owned(), b"{not json".to_vec()),
        ("user-1".to_owned(), good_event("user-1", 1)),
    ];
    send_all(&producer, &events).await;
    kafka
        .mock_cluster()
        .topic_error(DLQ, RDKafkaRespErr::RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE)
        .expect("topic error set");

    let consumer = RunningConsumer::start(&config, &metrics);
    let handler = consumer.handler.clone();
    assert!(
        wait_until(|| handler.count() >= 1).await,
        "first event handled"
    );
    let retried =
        wait_until(|| metrics_text(&registry).contains("stepup_kafka_produce_retries_total"));
    assert!(retried.await, "dead-letter send is retried");
    let first_run = consumer.stop().await;
    kafka
        .mock_cluster()
        .topic_error(DLQ, RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR)
        .expect("topic error cleared");

    assert_eq!(
        first_run.first().map(|item| item.seq),
        Some(0),
        "first event handled"
    );
    // Offsets are stored only after every send of a batch was acknowledged, so nothing from
    // the failed dead letter on was committed, and the event after it comes again.
    let consumer = RunningConsumer::start(&config, &metrics);
    let handler = consumer.handler.clone();
    let has_last = || handler.handled().iter().any(|item| item.seq == 1);
    assert!(
        wait_until(has_last).await,
        "second run handled the last event"
    );
    let second_run = consumer.stop().await;
    assert!(second_run.iter().any(|item| item.seq == 1));
    assert_eq!(
        read_topic(&kafka, DLQ, 1).await.len(),
        1,
        "dead letter delivered once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_and_panicking_messages_are_dead_lettered() {
    let kafka = EmbeddedKafka::start(1, &[(EVENTS, 1), (DLQ, 1), (DECISIONS, 1), (CHANGELOG, 1)])
        .expect("cluster");
    let config = KafkaConfig {
        max_event_bytes: 64,
        ..config_for(&kafka, "stepup-guards")
    };
    let (_registry, metrics) = new_metrics();
    send_raw(&kafka, "user-1", Some(&[b'x'; 65])).await;
    send_raw(&kafka, "user-1", Some(b"panic")).await;
    send_raw(&kafka, "user-1", Some(&good_event("user-1", 7))).await;

    let consumer = RunningConsumer::start(&config, &metrics);
    let handler = consumer.handler.clone();
    assert!(
        wait_until(|| handler.count() >= 1).await,
        "event after the bad ones handled"
    );
    let dead_letters = read_topic(&kafka, DLQ, 2).await;
    let handled = consumer.stop().await;

    assert_eq!(handled.iter().map(|item| item.seq).collect::<Vec<_>>(), [7]);
    let codes: Vec<Option<String>> = dead_letters
        .iter()
        .map(|message| header(message, HEADER_REASON_CODE))
        .collect();
    assert_eq!(
        codes,
        [
            Some("too_large".to_owned()),
            Some("handler_panic".to_owned())
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_consumer_rejects_invalid_config() {
    let kafka = EmbeddedKafka::start(1, &[(EVENTS, 1), (CHANGELOG, 1)]).expect("cluster");
    let config = config_for(&kafka, "stepup-invalid");
    let (_registry, metrics) = new_metrics();
    let producer = Producer::new(&config, metrics.clone()).expect("producer");
    let invalid = KafkaConfig {
        group_id: String::new(),
        ..config
    };
    let (_shutdown, receiver) = watch::channel(false);

    let handler: Arc<dyn EventHandler> = Arc::new(RecordingHandler::default());
    let result = run_consumer(
        &invalid,
        handler,
        producer,
        metrics,
        Membership::new("test", "127.0.0.1:0"),
        receiver,
    )
    .await;

    let error = result.expect_err("empty group id is rejected").to_string();
    assert!(error.contains("`group_id`"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ensure_topics_fails_on_mock_cluster() {
    let kafka = EmbeddedKafka::start(1, &[]).expect("cluster");
    let config = config_for(&kafka, "stepup-admin");

    let result = ensure_topics(&config, 3, Duration::from_secs(1)).await;

    // librdkafka's mock cluster does not implement CreateTopics, so the request times out.
    assert!(result.is_err(), "{result:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changelog_follows_event_partitions_and_restores_on_restart() {
    let kafka = EmbeddedKafka::start(1, &[(EVENTS, 3), (DLQ, 1), (CHANGELOG, 3)]).expect("cluster");
    let config = restartable(config_for(&kafka, "stepup-changelog"));
    let (_, metrics) = new_metrics();
    let producer = Producer::new(&config, metrics.clone()).expect("producer");
    let mut events = Vec::new();
    for seq in 0..5 {
        for user in 0..6 {
            let user = format!("user-{user}");
            events.push((user.clone(), good_event(&user, seq)));
        }
    }
    send_all(&producer, &events).await;

    let first = RunningConsumer::start(&config, &metrics);
    let handler = first.handler.clone();
    assert!(
        wait_until(|| handler.count() >= 30).await,
        "handled {}",
        handler.count()
    );
    let handled = first.stop().await;
    let partition_of: BTreeMap<String, i32> = handled
        .iter()
        .map(|handled| (handled.user.clone(), handled.partition))
        .collect();

    // A batch writes only the last state of each user, so there are 6 to 30 records.
    let changelog = read_topic(&kafka, CHANGELOG, 6).await;
    let users: BTreeSet<Vec<u8>> = changelog
        .iter()
        .filter_map(|record| record.key().map(<[u8]>::to_vec))
        .collect();
    assert_eq!(users.len(), 6, "every user has a state");
    for record in &changelog {
        let user = String::from_utf8(record.key().expect("key").to_vec()).expect("utf-8 key");
        assert_eq!(
            record.partition(),
            partition_of[&user],
            "partition of {user}"
        );
    }

    let second = RunningConsumer::start(&config, &metrics);
    let handler = second.handler.clone();
    let restored_all = || handler.restored.lock().expect("restored lock").len() == 6;
    assert!(
        wait_until(restored_all).await,
        "restored {:?}",
        handler.restored.lock()
    );
    let restored = handler.restored.lock().expect("restored lock").clone();
    for (user, (partition, seq)) in restored {
        assert_eq!(seq, "4", "latest state of {user}");
        assert_eq!(partition, partition_of[&user], "partition of {user}");
    }
    assert!(
        second.stop().await.is_empty(),
        "committed events are not handled again"
    );
}
