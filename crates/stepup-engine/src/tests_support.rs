//! Fixtures shared by the engine's tests: the MaxMind test City database, the shipped rules
//! and event builders.

use std::path::PathBuf;
use std::sync::Arc;

use chrono::{DateTime, TimeZone, Utc};
use prometheus::{Encoder, Registry};
use stepup_events::{
    Action, Attributes, Event, EventBody, Factor, LoginAttempt, LoginResult, MfaResult,
    Requirement, SCHEMA_VERSION,
};
use stepup_geo::{Geo, GeoPaths};
use stepup_policy::{Policy, PolicyConfig, RuleSet};

pub(crate) use crate::{Engine, EngineConfig, Outcome};

pub(crate) const LONDON: &str = "81.2.69.142";
pub(crate) const MILTON_US: &str = "216.160.83.56";
pub(crate) const CHROME: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";

pub(crate) fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub(crate) fn shipped_policy() -> Policy {
    let config = PolicyConfig {
        dir: workspace().join("rules"),
        ..PolicyConfig::default()
    };
    let rules = RuleSet::load_dir(&config).unwrap();
    Policy::new(config, rules)
}

pub(crate) fn engine_with(policy: Policy) -> (Engine, Registry) {
    let paths = GeoPaths {
        city: Some(workspace().join("data/geoip/maxmind-test/GeoIP2-City-Test.mmdb")),
        ..GeoPaths::default()
    };
    let geo = Arc::new(Geo::open(&paths).unwrap());
    let registry = Registry::new();
    let engine = Engine::new(EngineConfig::default(), geo, Arc::new(policy), &registry).unwrap();
    (engine, registry)
}

pub(crate) fn engine() -> (Engine, Registry) {
    engine_with(shipped_policy())
}

pub(crate) fn at(minutes: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 2, 9, 0, 0).unwrap() + chrono::Duration::minutes(minutes)
}

pub(crate) fn event(id: &str, user: &str, minutes: i64, body: EventBody) -> Event {
    Event {
        event_id: id.into(),
        user_id: user.into(),
        occurred_at: at(minutes),
        version: SCHEMA_VERSION,
        body,
    }
}

pub(crate) fn attempt(id: &str, user: &str, minutes: i64, ip: &str, device: &str) -> Event {
    let body = EventBody::LoginAttempt(LoginAttempt {
        ip: ip.parse().unwrap(),
        user_agent: CHROME.into(),
        device_id: Some(device.into()),
        keystroke: None,
        attributes: Attributes::default(),
    });
    event(id, user, minutes, body)
}

pub(crate) fn result(id: &str, user: &str, minutes: i64, attempt_id: &str, success: bool) -> Event {
    let body = EventBody::LoginResult(LoginResult {
        attempt_id: attempt_id.into(),
        success,
        reason: None,
        ip: None,
    });
    event(id, user, minutes, body)
}

pub(crate) fn mfa(
    id: &str,
    user: &str,
    minutes: i64,
    attempt_id: Option<&str>,
    passed: bool,
) -> Event {
    let body = EventBody::MfaResult(MfaResult {
        attempt_id: attempt_id.map(String::from),
        factor: Factor::Totp,
        passed,
    });
    event(id, user, minutes, body)
}

pub(crate) fn action(id: &str, user: &str, minutes: i64, name: &str) -> Event {
    let body = EventBody::Action(Action {
        name: name.into(),
        session_id: "s1".into(),
        ip: None,
        attributes: Default::default(),
    });
    event(id, user, minutes, body)
}

pub(crate) fn decided(outcome: Outcome) -> Arc<stepup_events::Decision> {
    match outcome {
        Outcome::Decided(decision) => decision,
        other => panic!("expected a decision, got {other:?}"),
    }
}

/// Logs `user` in successfully from London at `minutes`, teaching the profile.
pub(crate) fn verified_login(engine: &Engine, user: &str, minutes: i64, tag: &str) {
    let id = format!("{tag}-a");
    let decision = decided(engine.process(&attempt(&id, user, minutes, LONDON, "laptop")));
    engine.process(&result(&format!("{tag}-r"), user, minutes, &id, true));
    if decision.requirement == Requirement::Mfa {
        engine.process(&mfa(&format!("{tag}-m"), user, minutes, Some(&id), true));
    }
}

pub(crate) fn metric_text(registry: &Registry) -> String {
    let mut buffer = Vec::new();
    prometheus::TextEncoder::new()
        .encode(&registry.gather(), &mut buffer)
        .unwrap();
    String::from_utf8(buffer).unwrap()
}
