//! Profiles survive crashes, scale-out and broker restarts (issue 5).
//!
//! Each test replays one fixed login history through `stepup serve` processes while something
//! fails, then compares the outcome with a reference run of a single process over the same
//! history on topics of its own:
//!
//! - profiles: the latest changelog record of every user, decoded, must equal the reference
//!   (nothing lost, nothing applied twice; the state includes each user's last applied
//!   offset, so offsets must line up too);
//! - decisions: every login attempt has a decision on the decisions topic, copies of one
//!   decision (republished after a crash) are identical, and each equals the reference.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde_json::Value;
use stepup_api::pb::AssessRequest;
use stepup_engine::{UserState, decode_state};
use stepup_tests::api::await_decision;
use stepup_tests::events::{
    FIREFOX_LINUX, LONDON_IP, MILTON_IP, at, login_attempt, login_result, mfa_result,
};
use stepup_tests::kafka::{EventProducer, read_to_end};
use stepup_tests::metrics::{parse_samples, scrape};
use stepup_tests::serve::Topics;
use stepup_tests::{Serve, Tansu, shared_broker, unique_name};

use crate::STEPUP;

/// Users in the history.
const USERS: usize = 24;

/// Login rounds per user.
const ROUNDS: usize = 10;

/// Partitions of the events and changelog topics: more than one per instance.
const PARTITIONS: i32 = 4;

/// Longest wait for the whole history to be processed.
const DONE_WAIT: Duration = Duration::from_secs(120);

/// Settings that keep rebalances and retries short, so a killed member leaves the group
/// within seconds.
const FAST_GROUP: [(&str, &str); 3] = [
    ("STEPUP_KAFKA_SESSION_TIMEOUT_MS", "6000"),
    ("STEPUP_KAFKA_RETRY_BACKOFF_MAX_MS", "1000"),
    ("STEPUP_KAFKA_DRAIN_TIMEOUT_MS", "5000"),
];

/// The login history: rounds of attempts from London or Milton (some impossible travel),
/// with failed and passed results and MFA results, so profiles, population counts and
/// per-IP activity all change.
fn history() -> Vec<Value> {
    let mut events = Vec::new();
    for round in 0..ROUNDS {
        for user in 0..USERS {
            let user_id = format!("user-{user}");
            let seconds = (round * 3_600 + user * 17) as i64;
            let ip = if (round + user) % 5 == 4 {
                MILTON_IP
            } else {
                LONDON_IP
            };
            let attempt = format!("{user_id}-r{round}-a");
            events.push(login_attempt(&attempt, &user_id, &at(seconds), ip));
            let success = (round * 7 + user) % 6 != 0;
            let result = format!("{user_id}-r{round}-r");
            events.push(login_result(
                &result,
                &user_id,
                &at(seconds + 2),
                &attempt,
                success,
            ));
            if success && (round + user) % 3 == 0 {
                let mfa = format!("{user_id}-r{round}-m");
                events.push(mfa_result(
                    &mfa,
                    &user_id,
                    &at(seconds + 20),
                    Some(&attempt),
                    true,
                ));
            }
        }
    }
    events
}

/// Sends `events` in order, each acknowledged before the next, so every run puts every
/// event at the same partition and offset.
async fn publish(producer: &EventProducer, events: &[Value]) {
    for event in events {
        producer.send_event(event).await;
    }
}

/// Final state of a run: latest state per user and the decisions by event id.
#[derive(Debug)]
struct Outcome {
    states: BTreeMap<String, UserState>,
    decisions: BTreeMap<String, Value>,
}

/// Reads the changelog and decisions topics of `topics`.
fn outcome(brokers: &str, topics: &Topics) -> Outcome {
    let mut states = BTreeMap::new();
    for record in read_to_end(brokers, &topics.changelog) {
        let user = record
            .key
            .clone()
            .expect("changelog records are keyed by user");
        if record.headers.contains_key("tombstone") {
            states.remove(&user);
            continue;
        }
        let state = decode_state(&record.payload)
            .unwrap_or_else(|err| panic!("changelog record of {user} does not decode: {err}"));
        states.insert(user, state);
    }
    let mut copies: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for record in read_to_end(brokers, &topics.decisions) {
        let decision = record.json();
        let id = decision["event_id"].as_str().expect("event_id").to_owned();
        copies.entry(id).or_default().insert(decision.to_string());
    }
    let decisions = copies
        .into_iter()
        .map(|(id, copies)| {
            assert_eq!(
                copies.len(),
                1,
                "republished decisions on {id} differ: {copies:#?}"
            );
            let only = copies.into_iter().next().expect("one copy");
            (id, serde_json::from_str(&only).expect("decision JSON"))
        })
        .collect();
    Outcome { states, decisions }
}

/// Returns whether every user's latest changelog state has applied its last event.
fn done(brokers: &str, topics: &Topics, expected: &BTreeMap<String, UserState>) -> bool {
    let states = outcome(brokers, topics).states;
    expected.iter().all(|(user, want)| {
        states
            .get(user)
            .is_some_and(|state| state.applied_offset == want.applied_offset)
    })
}

/// Waits until [`done`], checking every half second.
async fn wait_done(brokers: &str, topics: &Topics, expected: &BTreeMap<String, UserState>) {
    let deadline = Instant::now() + DONE_WAIT;
    while !done(brokers, topics, expected) {
        assert!(
            Instant::now() < deadline,
            "history not processed within {DONE_WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Waits until at least `count` changelog records exist: processing is under way.
async fn wait_progress(brokers: &str, topics: &Topics, count: usize) {
    let deadline = Instant::now() + DONE_WAIT;
    while read_to_end(brokers, &topics.changelog).len() < count {
        assert!(
            Instant::now() < deadline,
            "fewer than {count} state changes"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs the history through one undisturbed process and returns its outcome.
async fn reference(brokers: &str, events: &[Value]) -> Outcome {
    let topics = Topics::unique_with(PARTITIONS);
    let serve = Serve::start_on(STEPUP, brokers, &topics, &FAST_GROUP).await;
    publish(&serve.events_producer(), events).await;
    // The reference is complete when the changelog stops growing and every user applied
    // its last event; its own offsets are the expectation.
    let mut last = 0;
    let deadline = Instant::now() + DONE_WAIT;
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let outcome = outcome(brokers, &topics);
        let attempts = events
            .iter()
            .filter(|e| e["type"] == "login_attempt")
            .count();
        let changes = read_to_end(brokers, &topics.changelog).len();
        if outcome.decisions.len() == attempts && changes == last && changes >= events.len() {
            return outcome;
        }
        last = changes;
        assert!(
            Instant::now() < deadline,
            "reference run did not finish: {changes} changes"
        );
    }
}

/// Compares a disturbed run with the reference.
fn assert_same(reference: &Outcome, run: &Outcome) {
    assert_eq!(reference.states.len(), USERS);
    for (user, want) in &reference.states {
        let got = run
            .states
            .get(user)
            .unwrap_or_else(|| panic!("{user} was lost"));
        assert_eq!(got, want, "profile of {user}");
    }
    assert_eq!(run.states.len(), reference.states.len(), "users");
    assert_eq!(
        run.decisions.keys().collect::<Vec<_>>(),
        reference.decisions.keys().collect::<Vec<_>>(),
        "decided events"
    );
    for (id, want) in &reference.decisions {
        assert_eq!(&run.decisions[id], want, "decision on {id}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_mid_stream_loses_nothing() {
    let brokers = shared_broker();
    let events = history();
    let expected = reference(&brokers, &events).await;

    let topics = Topics::unique_with(PARTITIONS);
    let mut first = Serve::start_on(STEPUP, &brokers, &topics, &FAST_GROUP).await;
    let producer = first.events_producer();
    let publishing = tokio::spawn(async move { publish(&producer, &events).await });
    wait_progress(&brokers, &topics, 150).await;
    first.kill();
    let restarted = Serve::start_on(STEPUP, &brokers, &topics, &FAST_GROUP).await;
    publishing.await.expect("publishing ends");
    wait_done(&brokers, &topics, &expected.states).await;

    assert_same(&expected, &outcome(&brokers, &topics));
    assert!(
        restarted
            .log()
            .contains("partition restored from the changelog"),
        "the restarted process restored its partitions"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn second_instance_and_sigterm_mid_stream_lose_nothing() {
    let brokers = shared_broker();
    let events = history();
    let expected = reference(&brokers, &events).await;

    let topics = Topics::unique_with(PARTITIONS);
    let mut first = Serve::start_on(STEPUP, &brokers, &topics, &FAST_GROUP).await;
    let producer = first.events_producer();
    let publishing = tokio::spawn(async move { publish(&producer, &events).await });
    wait_progress(&brokers, &topics, 100).await;
    let second = Serve::start_on(STEPUP, &brokers, &topics, &FAST_GROUP).await;
    wait_progress(&brokers, &topics, 250).await;
    let status = first.terminate(Duration::from_secs(30)).await;
    assert!(
        status.is_some_and(|status| status.success()),
        "SIGTERM ends the first instance cleanly: {status:?}\n{}",
        first.log()
    );
    let log = first.log();
    assert!(
        log.contains("consumer stopped"),
        "the first instance left the group:\n{log}"
    );
    assert!(
        log.contains("claim withdrawn"),
        "the first instance withdrew its claim:\n{log}"
    );
    publishing.await.expect("publishing ends");
    wait_done(&brokers, &topics, &expected.states).await;

    assert_same(&expected, &outcome(&brokers, &topics));
    let second_log = second.log();
    assert!(
        second_log.contains("partition restored from the changelog"),
        "the second instance restored the partitions it took over:\n{second_log}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn broker_restart_mid_stream_loses_nothing() {
    let mut tansu = Tansu::start();
    let brokers = tansu.bootstrap();
    let events = history();
    let expected = reference(&brokers, &events).await;

    let topics = Topics::unique_with(PARTITIONS);
    let serve = Serve::start_on(STEPUP, &brokers, &topics, &FAST_GROUP).await;
    let (first_half, second_half) = events.split_at(events.len() / 2);
    publish(&serve.events_producer(), first_half).await;
    wait_progress(&brokers, &topics, 100).await;
    // The broker keeps topics, offsets and the changelog in SQLite across the restart.
    tansu.restart();
    publish(&EventProducer::new(&brokers, &topics.events), second_half).await;
    wait_done(&brokers, &topics, &expected.states).await;

    assert_same(&expected, &outcome(&brokers, &topics));
}

/// Sum of `stepup_grpc_forwarded_total{outcome="ok"}` of one process.
async fn forwarded_ok(serve: &Serve) -> f64 {
    let samples = parse_samples(&scrape(serve.metrics_addr()).await);
    samples
        .iter()
        .filter(|sample| sample.name == "stepup_grpc_forwarded_total")
        .filter(|sample| sample.labels.get("outcome").map(String::as_str) == Some("ok"))
        .map(|sample| sample.value)
        .sum()
}

#[tokio::test(flavor = "multi_thread")]
async fn any_instance_answers_for_any_user() {
    let brokers = shared_broker();
    let topics = Topics::unique_with(PARTITIONS);
    let first = Serve::start_on(STEPUP, &brokers, &topics, &FAST_GROUP).await;
    let second = Serve::start_on(STEPUP, &brokers, &topics, &FAST_GROUP).await;
    let events = history();
    publish(&first.events_producer(), &events).await;
    // Both instances serve partitions once the history is processed by the two of them.
    let deadline = Instant::now() + DONE_WAIT;
    while outcome(&brokers, &topics).states.len() < USERS {
        assert!(Instant::now() < deadline, "history not processed");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // Ask the first instance about every user: the second instance's users are forwarded.
    let mut client = first.client().await;
    let deadline = Instant::now() + DONE_WAIT;
    loop {
        for user in 0..USERS {
            let request = AssessRequest {
                event_id: unique_name("forwarded"),
                user_id: format!("user-{user}"),
                occurred_at: at(100_000),
                ip: LONDON_IP.to_owned(),
                user_agent: FIREFOX_LINUX.to_owned(),
                device_id: format!("device-of-user-{user}"),
                ..AssessRequest::default()
            };
            let decision = client
                .assess(request)
                .await
                .expect("Assess succeeds")
                .into_inner();
            assert_eq!(decision.user_id, format!("user-{user}"));
        }
        if forwarded_ok(&first).await > 0.0 {
            break;
        }
        // Claims travel through Kafka; retry until the first instance has read them.
        assert!(
            Instant::now() < deadline,
            "no call was forwarded:\n{}",
            first.log()
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }

    // A decision made on one instance can be awaited on the other without a user id.
    let decided = outcome(&brokers, &topics).decisions;
    let mut second_client = second.client().await;
    for id in decided.keys().take(10) {
        let decision = await_decision(&mut second_client, id).await;
        assert_eq!(&decision.event_id, id);
    }
}
