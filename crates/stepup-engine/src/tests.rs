//! Pipeline tests against MaxMind's test City database and the shipped rules.

use std::sync::Arc;
use std::time::Duration;

use stepup_events::{DeviceChange, DeviceOp, Event, EventBody, Requirement};

use stepup_policy::{Policy, PolicyConfig, RuleSet};

use super::tests_support::*;

#[test]
fn learns_from_verified_login_only() {
    let (engine, _) = engine();
    engine.process(&attempt("a1", "alice", 0, LONDON, "laptop"));
    engine.process(&result("r1", "alice", 0, "a1", false));
    assert_eq!(engine.profile("alice").unwrap().verified_logins(), 0);

    engine.process(&attempt("a2", "alice", 1, LONDON, "laptop"));
    engine.process(&result("r2", "alice", 1, "a2", true));
    let profile = engine.profile("alice").unwrap();
    assert_eq!(profile.verified_logins(), 1);
    assert_eq!(profile.failures_in_window(at(1), 900), 1);
}

#[test]
fn impossible_travel_requires_mfa_with_reason() {
    let (engine, _) = engine();
    for day in 0..3 {
        verified_login(&engine, "bob", day * 24 * 60, &format!("d{day}"));
    }
    let far = attempt("far", "bob", 2 * 24 * 60 + 30, MILTON_US, "laptop");
    let decision = decided(engine.process(&far));

    assert_eq!(decision.requirement, Requirement::Mfa);
    let reason = decision
        .reasons
        .iter()
        .find(|r| r.code == "impossible_travel")
        .unwrap();
    assert_eq!(reason.signal, "travel");
    assert_eq!(reason.rule_id, "impossible_travel");
    assert!(
        !reason.values.is_empty(),
        "travel reason carries its inputs"
    );
    assert!(decision.reasons.iter().any(|r| r.code == "risk_score"));
}

#[test]
fn familiar_login_is_allowed() {
    let (engine, _) = engine();
    for day in 0..3 {
        verified_login(&engine, "carol", day * 24 * 60, &format!("d{day}"));
    }
    let decision =
        decided(engine.process(&attempt("next", "carol", 4 * 24 * 60, LONDON, "laptop")));
    assert_eq!(decision.requirement, Requirement::Allow);
    assert!(decision.factors.is_empty());
    assert_eq!(decision.decided_at, at(4 * 24 * 60));
}

#[test]
fn assess_then_consume_decides_once() {
    let (engine, registry) = engine();
    let login = attempt("inline", "dave", 0, LONDON, "laptop");
    let first = engine.assess(&login).unwrap();
    let again = engine.assess(&login).unwrap();
    assert_eq!(first, again);

    assert!(matches!(engine.process(&login), Outcome::Applied));
    assert!(matches!(engine.process(&login), Outcome::Duplicate));
    let text = metric_text(&registry);
    let decisions: f64 = text
        .lines()
        .filter(|line| line.starts_with("stepup_decisions_total{"))
        .map(|line| line.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum();
    assert_eq!(decisions, 1.0, "{text}");
}

#[test]
fn assess_rejects_other_event_types() {
    let (engine, _) = engine();
    let err = engine
        .assess(&action("x", "erin", 0, "change_password"))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "expected a `login_attempt` event, got `action`"
    );
}

#[test]
fn sensitive_action_needs_recent_mfa() {
    let (engine, _) = engine();
    let stale = engine
        .check_action(&action("x1", "frank", 0, "change_password"))
        .unwrap();
    assert_eq!(stale.requirement, Requirement::Mfa);
    assert_eq!(
        stale.reasons[0].code, "sensitive_action_recent_mfa",
        "{:?}",
        stale.reasons
    );

    engine.process(&mfa("m1", "frank", 10, None, true));
    let fresh = engine
        .check_action(&action("x2", "frank", 11, "change_password"))
        .unwrap();
    assert_eq!(fresh.requirement, Requirement::Allow, "{:?}", fresh.reasons);

    let later = engine
        .check_action(&action("x3", "frank", 10 + 60, "change_password"))
        .unwrap();
    assert_eq!(later.requirement, Requirement::Mfa);
}

#[test]
fn engine_floor_covers_actions_without_rules() {
    let config = PolicyConfig::default();
    let rules = RuleSet::from_sources(&[], &config).unwrap();
    let (engine, _) = engine_with(Policy::new(config, rules));
    let decision = engine
        .check_action(&action("x1", "fay", 0, "change_password"))
        .unwrap();
    assert_eq!(decision.requirement, Requirement::Mfa);
    assert_eq!(decision.reasons[0].code, "stale_mfa");
    assert_eq!(decision.reasons[0].values["window_s"], "900");
}

#[test]
fn ordinary_action_is_allowed() {
    let (engine, _) = engine();
    let decision = engine
        .check_action(&action("x1", "gina", 0, "view_invoice"))
        .unwrap();
    assert_eq!(
        decision.requirement,
        Requirement::Allow,
        "{:?}",
        decision.reasons
    );
}

#[test]
fn private_address_never_denies() {
    let (engine, _) = engine();
    verified_login(&engine, "hank", 0, "d0");
    let decision = decided(engine.process(&attempt("lan", "hank", 60, "10.1.2.3", "laptop")));
    assert_ne!(decision.requirement, Requirement::Deny);
}

#[test]
fn trusted_device_is_remembered() {
    let (engine, _) = engine();
    let trust = EventBody::Device(DeviceChange {
        device_id: "phone".into(),
        op: DeviceOp::Trust,
        trusted_until: Some(at(60 * 24)),
    });
    engine.process(&event("t1", "ivy", 0, trust));
    assert!(
        engine
            .profile("ivy")
            .unwrap()
            .is_trusted_device("phone", at(5))
    );
}

#[test]
fn same_events_give_same_decisions() {
    let stream = scripted_stream();
    let run = || {
        let (engine, _) = engine();
        stream
            .iter()
            .filter_map(|event| match engine.process(event) {
                Outcome::Decided(decision) => Some(serde_json::to_string(&*decision).unwrap()),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    let first = run();
    assert!(first.len() > 10);
    assert_eq!(first, run());
}

fn scripted_stream() -> Vec<Event> {
    let mut events = Vec::new();
    for n in 0..20 {
        let user = format!("user{}", n % 4);
        let ip = if n % 7 == 6 { MILTON_US } else { LONDON };
        let id = format!("a{n}");
        events.push(attempt(&id, &user, n * 45, ip, "laptop"));
        events.push(result(&format!("r{n}"), &user, n * 45 + 1, &id, n % 5 != 4));
    }
    events
}

#[test]
fn invalid_bytes_are_counted_with_code() {
    let (engine, registry) = engine();
    let err = engine.process_bytes(b"{not json").unwrap_err();
    assert_eq!(err.code(), "not_json");
    let text = metric_text(&registry);
    assert!(
        text.contains(r#"stepup_events_total{outcome="not_json",type="invalid"} 1"#),
        "{text}"
    );
}

#[test]
fn failing_rule_yields_fail_mode_and_is_counted() {
    let source = "//! id: broken\n//! version: 1\n//! description: always fails\n\
                  //! owner: test\n//! mode: live\n//! priority: 1\nthrow \"boom\";\n";
    let config = PolicyConfig::default();
    let rules = RuleSet::from_sources(&[("broken.rhai".into(), source.into())], &config).unwrap();
    let (engine, registry) = engine_with(Policy::new(config, rules));

    let decision = decided(engine.process(&attempt("a1", "jack", 0, LONDON, "laptop")));
    assert_eq!(decision.requirement, Requirement::Mfa);
    assert!(decision.reasons.iter().any(|r| r.code == "rule_error"));
    assert!(metric_text(&registry).contains(r#"stepup_rule_errors_total{rule="broken"} 1"#));
}

#[tokio::test]
async fn await_decision_wakes_when_event_is_processed() {
    let (engine, _) = engine();
    let engine = Arc::new(engine);
    let waiter = {
        let engine = engine.clone();
        tokio::spawn(async move { engine.await_decision("late", Duration::from_secs(5)).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    engine.process(&attempt("late", "kim", 0, LONDON, "laptop"));
    let decision = waiter
        .await
        .unwrap()
        .expect("decision arrives before the deadline");
    assert_eq!(decision.event_id, "late");

    let missing = engine
        .await_decision("never", Duration::from_millis(20))
        .await;
    assert!(missing.is_none());
}

#[tokio::test]
async fn subscribers_receive_new_decisions() {
    let (engine, _) = engine();
    let mut feed = engine.subscribe();
    engine.process(&attempt("s1", "lee", 0, LONDON, "laptop"));
    let decision = feed.recv().await.unwrap();
    assert_eq!(decision.event_id, "s1");
}
