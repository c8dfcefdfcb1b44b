//! Tests of the durable state: changelog values, redelivery, restore and partition release.

use std::collections::BTreeMap;

use stepup_events::{Decision, Event, EventBody, LoginResult};

use super::tests_support::*;
use crate::{Engine, Outcome, Position, UserState, decode_state, encode_state};

const PARTITIONS: i32 = 3;

/// Returns a reproducible stream of logins for `users` users over `rounds` rounds, each with its
/// position in a three-partition topic. Users log in from a few cities with a few devices,
/// some attempts fail and some pass MFA, so profiles, population counts and IP activity all
/// change.
fn stream(users: usize, rounds: usize) -> Vec<(Event, Position)> {
    let ips = [
        LONDON,
        MILTON_US,
        "2.125.160.216",
        "89.160.20.112",
        "81.2.69.160",
    ];
    let mut next_offset = [0i64; PARTITIONS as usize];
    let mut seed: u64 = 0x5eed;
    let mut random = move |bound: u64| {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (seed >> 33) % bound
    };
    let mut events = Vec::new();
    for round in 0..rounds {
        for user_index in 0..users {
            let user = format!("user-{user_index}");
            let partition = (user_index % PARTITIONS as usize) as i32;
            let minutes = (round * 37 + user_index) as i64;
            let ip = ips[random(ips.len() as u64) as usize];
            let device = format!("device-{}", random(3));
            let id = format!("{user}-{round}");
            let success = random(10) > 1;
            let mut push = |event: Event| {
                let offset = next_offset[partition as usize];
                next_offset[partition as usize] += 1;
                events.push((
                    event,
                    Position {
                        partition,
                        offset: Some(offset),
                    },
                ));
            };
            push(attempt(&format!("{id}-a"), &user, minutes, ip, &device));
            push(result(
                &format!("{id}-r"),
                &user,
                minutes,
                &format!("{id}-a"),
                success,
            ));
            if success && random(3) == 0 {
                push(mfa(
                    &format!("{id}-m"),
                    &user,
                    minutes,
                    Some(&format!("{id}-a")),
                    true,
                ));
            }
        }
    }
    events
}

/// Processes `events` and returns the decisions by event id.
fn run(engine: &Engine, events: &[(Event, Position)]) -> BTreeMap<String, String> {
    let mut decisions = BTreeMap::new();
    for (event, position) in events {
        if let Outcome::Decided(decision) = engine.process_at(event, *position) {
            decisions.insert(event.event_id.clone(), decision_json(&decision));
        }
    }
    decisions
}

fn decision_json(decision: &Decision) -> String {
    serde_json::to_string(decision).unwrap()
}

pub(crate) fn states_of(engine: &Engine) -> BTreeMap<String, UserState> {
    engine
        .export_states()
        .into_iter()
        .map(|(user, bytes)| (user, decode_state(&bytes).unwrap()))
        .collect()
}

/// Restores every partition of `to` from the changelog values of `from`, in user order.
fn restore_all(from: &Engine, to: &Engine) {
    for partition in 0..PARTITIONS {
        let mut restore = to.restore(partition);
        for (user, bytes) in from.export_states() {
            if decode_state(&bytes).unwrap().partition == partition {
                restore.apply(&user, Some(&bytes)).unwrap();
            }
        }
        restore.finish();
    }
}

#[test]
fn state_round_trips_through_changelog_value() {
    let (engine, _) = engine();
    run(&engine, &stream(6, 4));
    for (user, bytes) in engine.export_states() {
        let state = decode_state(&bytes).unwrap();
        assert_eq!(Some(&state), engine.user_state(&user).as_ref());
        assert_eq!(encode_state(&state), bytes);
    }
}

#[test]
fn rejects_unknown_format_and_empty_value() {
    assert!(
        decode_state(&[])
            .unwrap_err()
            .to_string()
            .contains("tombstone")
    );
    let error = decode_state(&[9, 1, 2]).unwrap_err().to_string();
    assert!(error.contains("format 9"), "{error}");
}

#[test]
fn redelivered_events_change_nothing() {
    let events = stream(9, 3);
    let (once, _) = engine();
    run(&once, &events);
    let (twice, _) = engine();
    for (event, position) in &events {
        twice.process_at(event, *position);
        assert!(matches!(
            twice.process_at(event, *position),
            Outcome::Duplicate
        ));
    }
    assert_eq!(states_of(&once), states_of(&twice));
}

#[test]
fn redelivered_failure_is_counted_once() {
    let (engine, _) = engine();
    let failure = Event {
        body: EventBody::LoginResult(LoginResult {
            attempt_id: "a1".into(),
            success: false,
            reason: None,
            ip: Some(LONDON.parse().unwrap()),
        }),
        ..result("r1", "alice", 1, "a1", false)
    };
    let position = Position {
        partition: 1,
        offset: Some(7),
    };
    engine.process_at(&failure, position);
    engine.process_at(&failure, position);
    let profile = engine.profile("alice").unwrap();
    assert_eq!(profile.failures_in_window(at(1), 900), 1);
}

#[test]
fn restored_engine_continues_like_an_uninterrupted_one() {
    let events = stream(30, 8);
    let cut = events.len() / 2;

    let (uninterrupted, _) = engine();
    let expected = run(&uninterrupted, &events);

    let (before_crash, _) = engine();
    run(&before_crash, &events[..cut]);
    let (restarted, _) = engine();
    restore_all(&before_crash, &restarted);
    // The last committed offset lags: the first events after the restart were applied before.
    let redelivered = cut - 40;
    let mut decisions = run(&restarted, &events[redelivered..]);
    for (event, position) in &events[redelivered..cut] {
        let id = &event.event_id;
        assert!(
            !decisions.contains_key(id),
            "{id} at {position:?} was decided again"
        );
    }
    decisions.extend(
        expected
            .iter()
            .filter(|(id, _)| {
                events[..redelivered]
                    .iter()
                    .any(|(e, _)| &e.event_id == *id)
            })
            .map(|(id, decision)| (id.clone(), decision.clone())),
    );
    assert_eq!(states_of(&uninterrupted), states_of(&restarted));
    let decided_after: Vec<_> = expected
        .keys()
        .filter(|id| events[cut..].iter().any(|(e, _)| &e.event_id == *id))
        .collect();
    assert!(
        decided_after.len() > 50,
        "only {} decisions",
        decided_after.len()
    );
    for id in decided_after {
        assert_eq!(expected[id], decisions[id], "decision on {id}");
    }
}

#[test]
fn partition_state_does_not_depend_on_other_partitions() {
    let events = stream(30, 6);
    let (all, _) = engine();
    let expected = run(&all, &events);
    let (one, _) = engine();
    let only_one: Vec<_> = events
        .iter()
        .filter(|(_, p)| p.partition == 1)
        .cloned()
        .collect();
    let decisions = run(&one, &only_one);
    assert!(!decisions.is_empty());
    for (id, decision) in decisions {
        assert_eq!(expected[&id], decision, "decision on {id}");
    }
}

#[test]
fn dropping_a_partition_keeps_the_others() {
    let (engine, _) = engine();
    run(&engine, &stream(9, 2));
    let before = engine.user_count();
    let dropped = engine.drop_partition(2);
    assert_eq!(dropped, 3);
    assert_eq!(engine.user_count(), before - 3);
    assert!(engine.user_state("user-2").is_none());
    assert!(engine.user_state("user-1").is_some());
}

#[test]
fn tombstone_deletes_and_bad_value_is_skipped() {
    let (source, _) = engine();
    run(&source, &stream(3, 2));
    let (engine, _) = engine();
    let mut restore = engine.restore(0);
    let value = source.state_record("user-0").unwrap();
    restore.apply("user-0", Some(&value)).unwrap();
    restore.apply("user-3", Some(&value)).unwrap();
    restore.apply("user-3", None).unwrap();
    assert!(restore.apply("user-6", Some(&[1, 255, 255])).is_err());
    let stats = restore.finish();
    assert_eq!((stats.records, stats.users, stats.invalid), (4, 1, 1));
    assert_eq!(engine.user_state("user-0"), source.user_state("user-0"));
    assert!(engine.user_state("user-3").is_none());
}

/// Processes the test stream of `users` users over `rounds` rounds.
pub(crate) fn run_stream(engine: &Engine, users: usize, rounds: usize) {
    run(engine, &stream(users, rounds));
}
