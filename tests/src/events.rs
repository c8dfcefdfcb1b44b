//! Event JSON as an auth service publishes it, with event times on a fixed clock.
//!
//! Decisions depend on event time only, so every test uses times relative to [`BASE_TIME`]
//! and gets the same decisions whenever it runs.

use chrono::{DateTime, Duration, SecondsFormat, Utc};
use serde_json::{Value, json};

/// Event time that test offsets count from.
pub const BASE_TIME: &str = "2026-01-31T09:00:00Z";

/// An IP address that MaxMind's test City database places in London (accuracy 10 km).
pub const LONDON_IP: &str = "81.2.69.142";

/// An IP address that MaxMind's test City database places in Milton, Washington, US
/// (accuracy 22 km), about 7,700 km from [`LONDON_IP`].
pub const MILTON_IP: &str = "216.160.83.56";

/// User agent of a desktop Firefox on Linux.
pub const FIREFOX_LINUX: &str =
    "Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0";

/// Returns [`BASE_TIME`] plus `seconds` in RFC 3339.
pub fn at(seconds: i64) -> String {
    let base: DateTime<Utc> = BASE_TIME
        .parse()
        .expect("BASE_TIME is a valid RFC 3339 time");
    (base + Duration::seconds(seconds)).to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Parses an RFC 3339 time, as found in decisions; panics if it is not one.
pub fn parse_time(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .unwrap_or_else(|err| panic!("`{text}` is not an RFC 3339 time: {err}"))
        .with_timezone(&Utc)
}

/// Returns a `login_attempt` from `ip` with a Firefox user agent and a fixed device id.
pub fn login_attempt(event_id: &str, user_id: &str, occurred_at: &str, ip: &str) -> Value {
    json!({
        "type": "login_attempt",
        "version": 1,
        "event_id": event_id,
        "user_id": user_id,
        "occurred_at": occurred_at,
        "ip": ip,
        "user_agent": FIREFOX_LINUX,
        "device_id": format!("device-of-{user_id}"),
    })
}

/// Returns a `login_result` for the attempt `attempt_id`.
pub fn login_result(
    event_id: &str,
    user_id: &str,
    occurred_at: &str,
    attempt_id: &str,
    success: bool,
) -> Value {
    json!({
        "type": "login_result",
        "version": 1,
        "event_id": event_id,
        "user_id": user_id,
        "occurred_at": occurred_at,
        "attempt_id": attempt_id,
        "success": success,
    })
}

/// Returns an `mfa_result` with the TOTP factor, for the attempt `attempt_id` if given.
pub fn mfa_result(
    event_id: &str,
    user_id: &str,
    occurred_at: &str,
    attempt_id: Option<&str>,
    passed: bool,
) -> Value {
    let mut event = json!({
        "type": "mfa_result",
        "version": 1,
        "event_id": event_id,
        "user_id": user_id,
        "occurred_at": occurred_at,
        "factor": "totp",
        "passed": passed,
    });
    if let Some(attempt_id) = attempt_id {
        event["attempt_id"] = json!(attempt_id);
    }
    event
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_adds_seconds_to_base_time() {
        assert_eq!(at(0), "2026-01-31T09:00:00Z");
        assert_eq!(at(1800), "2026-01-31T09:30:00Z");
    }

    #[test]
    fn parse_time_accepts_any_offset_notation() {
        assert_eq!(parse_time("2026-01-31T09:00:00+00:00"), parse_time(&at(0)));
    }

    #[test]
    fn mfa_result_omits_missing_attempt_id() {
        let event = mfa_result("m1", "u1", &at(0), None, true);
        assert!(event.get("attempt_id").is_none());
    }
}
