//! Profiles survive crashes, scale-out and broker restarts.
//!
//! Each test replays one fixed login history through `stepup serve` processes while something
//! fails, then compares the outcome with a reference run of a single process over the same
//! history on topics of its own:
//!
//! - profiles: the latest changelog record of every user, decoded, must equal the reference,
//!   so nothing is lost or applied twice. The state includes each user's last applied offset,
//!   so offsets must line up too.
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
use stepup_tests::kafka::{EventProducer, create_topics, read_to_end};
use stepup_tests::metrics::{parse_samples, scrape};
use stepup_tests::serve::Topics;
use stepup_tests::{Serve, Tansu, shared_broker, unique_name, workspace_root};

use crate::STEPUP;

/// Users in the history.
pub(crate) const USERS: usize = 24;

/// Login rounds per user.
const ROUNDS: usize = 10;

/// Partitions of the events and changelog topics: more than one per instance.
pub(crate) const PARTITIONS: i32 = 4;

/// Maximum wait for the whole history to be processed.
const DONE_WAIT: Duration = Duration::from_secs(120);

/// Settings that keep rebalances and retries short, so a killed member leaves the group
/// within seconds.
pub(crate) const FAST_GROUP: [(&str, &str); 3] = [
    ("STEPUP_KAFKA_SESSION_TIMEOUT_MS", "6000"),
    ("STEPUP_KAFKA_RETRY_BACKOFF_MAX_MS", "1000"),
    ("STEPUP_KAFKA_DRAIN_TIMEOUT_MS", "5000"),
];

/// Returns the login history: rounds of attempts from London or Milton (some impossible travel),
/// with failed and passed results and MFA results, so profiles, population counts and
/// per-IP activity all change.
pub(crate) fn history() -> Vec<Value> {
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
/// event at the same partition and offset. A pause every ten events keeps the stream going
/// for a few seconds, so that failures happen mid-stream.
pub(crate) async fn publish(producer: &EventProducer, events: &[Value]) {
    for (index, event) in events.iter().enumerate() {
        producer.send_event(event).await;
        if index % 10 == 9 {
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    }
}

/// Final state of a run: latest state per user and the decisions by event id.
#[derive(Debug)]
struct Outcome {
    states: BTreeMap<String, UserState>,
    decisions: BTreeMap<String, Value>,
}

/// Reads the latest state of every user from the changelog topic of `topics`.
fn states(brokers: &str, topics: &Topics) -> BTreeMap<String, UserState> {
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
    states
}

/// Reads the changelog and decisions topics of `topics`.
fn outcome(brokers: &str, topics: &Topics) -> Outcome {
    let states = states(brokers, topics);
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

/// Returns the offset of every user's last event on the events topic of `topics`.
fn last_offsets(brokers: &str, topics: &Topics) -> BTreeMap<String, i64> {
    read_to_end(brokers, &topics.events)
        .into_iter()
        .filter_map(|record| Some((record.key?, record.offset)))
        .collect()
}

/// Returns the users whose latest changelog state has not applied their last event yet, with
/// the offset expected and the one applied.
fn behind(
    brokers: &str,
    topics: &Topics,
    last: &BTreeMap<String, i64>,
) -> Vec<(String, i64, Option<i64>)> {
    let states = states(brokers, topics);
    last.iter()
        .map(|(user, offset)| {
            let applied = states.get(user).and_then(|state| state.applied_offset);
            (user.clone(), *offset, applied)
        })
        .filter(|(_, offset, applied)| *applied != Some(*offset))
        .collect()
}

/// Waits until all `events` were published and every user applied its last event.
pub(crate) async fn wait_done(brokers: &str, topics: &Topics, events: usize) {
    let deadline = Instant::now() + DONE_WAIT;
    loop {
        let published = read_to_end(brokers, &topics.events).len();
        let lagging = behind(brokers, topics, &last_offsets(brokers, topics));
        if published >= events && lagging.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "history not processed within {DONE_WAIT:?}: {published} of {events} published, \
             users behind (user, last offset, applied): {lagging:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Waits until at least `count` events were applied: processing is under way. The count is
/// the sum over partitions of the highest applied offset plus one.
async fn wait_progress(brokers: &str, topics: &Topics, count: i64) {
    let deadline = Instant::now() + DONE_WAIT;
    loop {
        let mut highest: BTreeMap<i32, i64> = BTreeMap::new();
        for state in states(brokers, topics).values() {
            if let Some(offset) = state.applied_offset {
                let entry = highest.entry(state.partition).or_insert(offset);
                *entry = (*entry).max(offset);
            }
        }
        let applied: i64 = highest.values().map(|offset| offset + 1).sum();
        if applied >= count {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "fewer than {count} events applied"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs the history through one undisturbed process and returns its outcome.
async fn reference(brokers: &str, events: &[Value]) -> Outcome {
    let topics = Topics::unique_with(PARTITIONS);
    let serve = Serve::start_on(STEPUP, brokers, &topics, &FAST_GROUP).await;
    publish(&serve.events_producer(), events).await;
    wait_done(brokers, &topics, events.len()).await;
    outcome(brokers, &topics)
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
    let (head, tail) = events.split_at(200);
    publish(&first.events_producer(), head).await;
    wait_progress(&brokers, &topics, 80).await;
    let producer = first.events_producer();
    let tail = tail.to_vec();
    let publishing = tokio::spawn(async move { publish(&producer, &tail).await });
    first.kill();
    let restarted = Serve::start_on(STEPUP, &brokers, &topics, &FAST_GROUP).await;
    publishing.await.expect("publishing ends");
    wait_done(&brokers, &topics, events.len()).await;

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
    let (head, tail) = events.split_at(150);
    publish(&first.events_producer(), head).await;
    wait_progress(&brokers, &topics, 60).await;
    let producer = first.events_producer();
    let tail = tail.to_vec();
    let publishing = tokio::spawn(async move { publish(&producer, &tail).await });
    let second = Serve::start_on(STEPUP, &brokers, &topics, &FAST_GROUP).await;
    assert!(
        !publishing.is_finished(),
        "the second instance joins while events still arrive"
    );
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
    wait_done(&brokers, &topics, events.len()).await;

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
    wait_done(&brokers, &topics, history().len()).await;

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

#[tokio::test(flavor = "multi_thread")]
async fn mismatched_changelog_stops_serve() {
    let brokers = shared_broker();
    let topics = Topics::unique_with(2);
    create_topics(&brokers, &[&topics.events], 2).await;
    create_topics(&brokers, &[&topics.changelog], 3).await;

    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(STEPUP)
            .current_dir(workspace_root())
            .args(["serve", "--brokers", &brokers])
            .args([
                "--grpc-listen",
                "127.0.0.1:0",
                "--metrics-listen",
                "127.0.0.1:0",
            ])
            .env("STEPUP_LOG", "warn")
            .env("STEPUP_KAFKA_EVENTS_TOPIC", &topics.events)
            .env("STEPUP_KAFKA_CHANGELOG_TOPIC", &topics.changelog)
            .env("STEPUP_KAFKA_INSTANCES_TOPIC", &topics.instances)
            .env("STEPUP_KAFKA_GROUP_ID", &topics.group)
            .output()
            .expect("stepup serve runs")
    })
    .await
    .expect("process ends");

    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success(),
        "serve exits with an error:\n{stderr}"
    );
    assert!(stderr.contains("has 3 partitions"), "{stderr}");
    assert!(
        stderr.contains("create the changelog with 2 partitions"),
        "{stderr}"
    );
}
