//! Parsing and validation of raw event messages.
//!
//! Every rejection is a [`ParseError`] whose `code()` is a bounded label for metrics and
//! dead letters, and whose message names the offending value and the fix.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use crate::event::{Event, EventBody, EventKind, SCHEMA_VERSION};

/// Default limit on the size of one message, in bytes.
pub const DEFAULT_MAX_EVENT_BYTES: usize = 64 * 1024;

/// Longest accepted `event_id` or `user_id`, in bytes.
pub const MAX_ID_BYTES: usize = 256;

/// Reasons a message is not a valid event.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ParseError {
    /// The message is larger than the configured limit.
    #[error(
        "event is {size} bytes, over the limit of {limit}; send smaller events or raise `kafka.max_event_bytes`"
    )]
    TooLarge {
        /// Size of the message.
        size: usize,
        /// Configured limit.
        limit: usize,
    },
    /// The bytes are not JSON.
    #[error("event is not valid JSON: {0}")]
    NotJson(String),
    /// The JSON is not an object.
    #[error("event must be a JSON object, found {0}")]
    NotObject(&'static str),
    /// A required field is absent.
    #[error("missing field `{0}`")]
    MissingField(&'static str),
    /// `type` names no known event type.
    #[error(
        "unknown event type `{0}`; expected one of login_attempt, login_result, mfa_result, action, device"
    )]
    UnknownType(String),
    /// `version` is not one this build reads.
    #[error("unsupported schema version `{found}`; this build reads version {supported}")]
    UnsupportedVersion {
        /// Version found in the message.
        found: String,
        /// Version this build supports.
        supported: u32,
    },
    /// A field is present but its value is wrong.
    #[error("invalid field `{field}`: {reason}")]
    InvalidField {
        /// Field name (dotted path for nested fields where known).
        field: String,
        /// Description of the problem and the expected value.
        reason: String,
    },
}

impl ParseError {
    /// Returns a short, bounded code for metric labels and dead-letter headers.
    pub fn code(&self) -> &'static str {
        match self {
            ParseError::TooLarge { .. } => "too_large",
            ParseError::NotJson(_) => "not_json",
            ParseError::NotObject(_) => "not_object",
            ParseError::MissingField(_) => "missing_field",
            ParseError::UnknownType(_) => "unknown_type",
            ParseError::UnsupportedVersion { .. } => "unsupported_version",
            ParseError::InvalidField { .. } => "invalid_field",
        }
    }
}

/// Parses and validates one message with the default size limit.
pub fn parse_event(bytes: &[u8]) -> Result<Event, ParseError> {
    parse_event_with_limit(bytes, DEFAULT_MAX_EVENT_BYTES)
}

/// Parses and validates one message, rejecting messages over `max_bytes`.
pub fn parse_event_with_limit(bytes: &[u8], max_bytes: usize) -> Result<Event, ParseError> {
    if bytes.len() > max_bytes {
        return Err(ParseError::TooLarge {
            size: bytes.len(),
            limit: max_bytes,
        });
    }
    let value: Value =
        serde_json::from_slice(bytes).map_err(|err| ParseError::NotJson(err.to_string()))?;
    let Value::Object(mut object) = value else {
        return Err(ParseError::NotObject(json_kind(&value)));
    };

    let kind = take_kind(&object)?;
    let version = take_version(&mut object)?;
    let event_id = take_id(&mut object, "event_id")?;
    let user_id = take_id(&mut object, "user_id")?;
    let occurred_at = take_time(&mut object)?;

    let body: EventBody = serde_json::from_value(Value::Object(object))
        .map_err(|err| body_error(kind, &err.to_string()))?;
    validate_body(&body)?;

    Ok(Event {
        event_id,
        user_id,
        occurred_at,
        version,
        body,
    })
}

fn take_kind(object: &Map<String, Value>) -> Result<EventKind, ParseError> {
    match object.get("type") {
        None => Err(ParseError::MissingField("type")),
        Some(Value::String(name)) => {
            EventKind::from_name(name).ok_or_else(|| ParseError::UnknownType(name.clone()))
        }
        Some(other) => Err(invalid(
            "type",
            format!("expected a string, found {}", json_kind(other)),
        )),
    }
}

fn take_version(object: &mut Map<String, Value>) -> Result<u32, ParseError> {
    let value = object
        .remove("version")
        .ok_or(ParseError::MissingField("version"))?;
    match value.as_u64() {
        Some(found) if found == u64::from(SCHEMA_VERSION) => Ok(SCHEMA_VERSION),
        _ => Err(ParseError::UnsupportedVersion {
            found: value.to_string(),
            supported: SCHEMA_VERSION,
        }),
    }
}

fn take_id(object: &mut Map<String, Value>, field: &'static str) -> Result<String, ParseError> {
    match object.remove(field) {
        None => Err(ParseError::MissingField(field)),
        Some(Value::String(id)) if id.is_empty() => Err(invalid(field, "must not be empty".into())),
        Some(Value::String(id)) if id.len() > MAX_ID_BYTES => Err(invalid(
            field,
            format!("is {} bytes, over the limit of {MAX_ID_BYTES}", id.len()),
        )),
        Some(Value::String(id)) if id.chars().any(char::is_control) => {
            Err(invalid(field, "must not contain control characters".into()))
        }
        Some(Value::String(id)) => Ok(id),
        Some(other) => Err(invalid(
            field,
            format!("expected a string, found {}", json_kind(&other)),
        )),
    }
}

fn take_time(object: &mut Map<String, Value>) -> Result<DateTime<Utc>, ParseError> {
    match object.remove("occurred_at") {
        None => Err(ParseError::MissingField("occurred_at")),
        Some(Value::String(text)) => DateTime::parse_from_rfc3339(&text)
            .map(|time| time.with_timezone(&Utc))
            .map_err(|err| {
                invalid(
                    "occurred_at",
                    format!("`{text}` is not an RFC 3339 timestamp ({err}); use for example 2026-01-31T09:30:00Z"),
                )
            }),
        Some(other) => Err(invalid(
            "occurred_at",
            format!("expected an RFC 3339 string, found {}", json_kind(&other)),
        )),
    }
}

/// Maps a serde error on the body to a field-level error where serde names the field.
fn body_error(kind: EventKind, message: &str) -> ParseError {
    if let Some(field) = between(message, "missing field `", "`") {
        return ParseError::InvalidField {
            field: field.to_owned(),
            reason: format!("required for `{}` events", kind.as_str()),
        };
    }
    if let Some(field) = between(message, "unknown field `", "`") {
        return ParseError::InvalidField {
            field: field.to_owned(),
            reason: format!(
                "not part of `{}` version {SCHEMA_VERSION}; remove it or put it under `attributes.extra`",
                kind.as_str()
            ),
        };
    }
    ParseError::InvalidField {
        field: kind.as_str().to_owned(),
        reason: message.to_owned(),
    }
}

fn validate_body(body: &EventBody) -> Result<(), ParseError> {
    match body {
        EventBody::LoginAttempt(attempt) => {
            if attempt.user_agent.len() > 2048 {
                return Err(invalid("user_agent", "is over 2048 bytes".into()));
            }
            if let Some(capture) = &attempt.keystroke {
                if capture.keys.len() > 256 {
                    return Err(invalid("keystroke.keys", "has more than 256 keys".into()));
                }
                let bad_time = capture.keys.iter().any(|key| {
                    !key.down_ms.is_finite() || !key.up_ms.is_finite() || key.up_ms < key.down_ms
                });
                if bad_time {
                    return Err(invalid(
                        "keystroke.keys",
                        "every key needs finite `down_ms` <= `up_ms`".into(),
                    ));
                }
            }
            Ok(())
        }
        EventBody::LoginResult(result) if result.attempt_id.is_empty() => {
            Err(invalid("attempt_id", "must not be empty".into()))
        }
        EventBody::Action(action) if action.name.is_empty() => {
            Err(invalid("name", "must not be empty".into()))
        }
        EventBody::Device(change)
            if change.op == crate::event::DeviceOp::Trust && change.trusted_until.is_none() =>
        {
            Err(invalid(
                "trusted_until",
                "required when `op` is `trust`".into(),
            ))
        }
        _ => Ok(()),
    }
}

fn invalid(field: &str, reason: String) -> ParseError {
    ParseError::InvalidField {
        field: field.to_owned(),
        reason,
    }
}

fn between<'a>(text: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let from = text.find(start)? + start.len();
    let len = text[from..].find(end)?;
    Some(&text[from..from + len])
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{DeviceOp, Factor};

    const ATTEMPT: &str = r#"{"type":"login_attempt","version":1,"event_id":"e1","user_id":"alice",
        "occurred_at":"2026-01-31T09:30:00Z","ip":"81.2.69.142",
        "user_agent":"Mozilla/5.0","device_id":"d1","attributes":{"roles":["admin"]}}"#;

    #[test]
    fn parses_login_attempt() {
        let event = parse_event(ATTEMPT.as_bytes()).unwrap();
        assert_eq!(event.event_id, "e1");
        assert_eq!(event.user_id, "alice");
        let EventBody::LoginAttempt(attempt) = event.body else {
            panic!("wrong body")
        };
        assert_eq!(attempt.ip.to_string(), "81.2.69.142");
        assert_eq!(attempt.attributes.roles, vec!["admin".to_owned()]);
    }

    #[test]
    fn round_trips_through_json() {
        let event = parse_event(ATTEMPT.as_bytes()).unwrap();
        let again = parse_event(&event.to_json()).unwrap();
        assert_eq!(event, again);
    }

    #[test]
    fn parses_every_other_type() {
        let cases = [
            r#"{"type":"login_result","attempt_id":"e1","success":false,"reason":"bad_password"}"#,
            r#"{"type":"mfa_result","attempt_id":"e1","factor":"totp","passed":true}"#,
            r#"{"type":"action","name":"change_password","session_id":"s1"}"#,
            r#"{"type":"device","device_id":"d1","op":"trust","trusted_until":"2026-03-01T00:00:00Z"}"#,
            r#"{"type":"device","device_id":"d1","op":"forget"}"#,
        ];
        for body in cases {
            let mut object: Map<String, Value> = serde_json::from_str(body).unwrap();
            object.insert("version".into(), 1.into());
            object.insert("event_id".into(), "x".into());
            object.insert("user_id".into(), "u".into());
            object.insert("occurred_at".into(), "2026-01-31T09:30:00+01:00".into());
            let bytes = serde_json::to_vec(&object).unwrap();
            let event = parse_event(&bytes).unwrap_or_else(|err| panic!("{body}: {err}"));
            assert_eq!(event.kind().as_str(), object["type"].as_str().unwrap());
        }
    }

    #[test]
    fn converts_offsets_to_utc() {
        let text = ATTEMPT.replace("2026-01-31T09:30:00Z", "2026-01-31T10:30:00+01:00");
        let event = parse_event(text.as_bytes()).unwrap();
        assert_eq!(event.occurred_at.to_rfc3339(), "2026-01-31T09:30:00+00:00");
    }

    #[test]
    fn rejects_bad_messages_with_codes() {
        let cases: [(&str, &str); 9] = [
            ("not json", "not_json"),
            ("[1,2]", "not_object"),
            (r#"{"version":1}"#, "missing_field"),
            (&ATTEMPT.replace("login_attempt", "logout"), "unknown_type"),
            (
                &ATTEMPT.replace("\"version\":1", "\"version\":2"),
                "unsupported_version",
            ),
            (
                &ATTEMPT.replace("\"event_id\":\"e1\"", "\"event_id\":\"\""),
                "invalid_field",
            ),
            (
                &ATTEMPT.replace("81.2.69.142", "999.1.1.1"),
                "invalid_field",
            ),
            (
                &ATTEMPT.replace("\"device_id\"", "\"colour\""),
                "invalid_field",
            ),
            (
                &ATTEMPT.replace("2026-01-31T09:30:00Z", "yesterday"),
                "invalid_field",
            ),
        ];
        for (text, code) in cases {
            let err = parse_event(text.as_bytes()).unwrap_err();
            assert_eq!(err.code(), code, "{text}: {err}");
        }
    }

    #[test]
    fn names_missing_body_field() {
        let text = ATTEMPT.replace("\"ip\":\"81.2.69.142\",", "");
        let err = parse_event(text.as_bytes()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid field `ip`: required for `login_attempt` events"
        );
    }

    #[test]
    fn names_unknown_field_and_fix() {
        let text = ATTEMPT.replace("\"device_id\"", "\"colour\"");
        let message = parse_event(text.as_bytes()).unwrap_err().to_string();
        assert!(message.contains("`colour`"), "{message}");
        assert!(message.contains("attributes.extra"), "{message}");
    }

    #[test]
    fn rejects_oversized_message() {
        let err = parse_event_with_limit(ATTEMPT.as_bytes(), 10).unwrap_err();
        assert_eq!(err.code(), "too_large");
        assert!(err.to_string().contains("kafka.max_event_bytes"));
    }

    #[test]
    fn rejects_trust_without_expiry() {
        let text = r#"{"type":"device","version":1,"event_id":"x","user_id":"u",
            "occurred_at":"2026-01-31T09:30:00Z","device_id":"d1","op":"trust"}"#;
        let err = parse_event(text.as_bytes()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid field `trusted_until`: required when `op` is `trust`"
        );
    }

    #[test]
    fn rejects_key_released_before_press() {
        let text = ATTEMPT.replace(
            "\"device_id\":\"d1\"",
            r#""keystroke":{"field":"password","keys":[{"key":"a","down_ms":10,"up_ms":5}]}"#,
        );
        let err = parse_event(text.as_bytes()).unwrap_err();
        assert_eq!(err.code(), "invalid_field");
    }

    #[test]
    fn factor_and_device_op_names() {
        assert_eq!(Factor::from_name("webauthn"), Some(Factor::Webauthn));
        assert_eq!(Factor::from_name("carrier_pigeon"), None);
        let op: DeviceOp = serde_json::from_str("\"forget\"").unwrap();
        assert_eq!(op, DeviceOp::Forget);
    }
}
