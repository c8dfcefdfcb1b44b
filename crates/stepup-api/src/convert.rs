//! Conversions between protobuf messages and engine types.

use std::collections::BTreeMap;
use std::net::IpAddr;

use chrono::{DateTime, Utc};
use stepup_events::{
    Action, Attributes, Decision, Event, EventBody, Factor, KeyTiming, KeystrokeCapture,
    LoginAttempt, MAX_ID_BYTES, Requirement, RiskLevel, SCHEMA_VERSION,
};

use crate::error::ApiError;
use crate::pb;

/// Checks an event built from a request with the consumer's own parser, so that an inline
/// decision is never made for an event the consumer would dead-letter.
pub(crate) fn validate_event(event: Event) -> Result<Event, ApiError> {
    stepup_events::parse_event(&event.to_json())?;
    Ok(event)
}

/// Builds a `login_attempt` event from an `Assess` request.
pub(crate) fn assess_to_event(
    request: pb::AssessRequest,
    now: DateTime<Utc>,
) -> Result<Event, ApiError> {
    let event_id = required_id("event_id", request.event_id)?;
    let user_id = required_id("user_id", request.user_id)?;
    let occurred_at = time_or_now("occurred_at", &request.occurred_at, now)?;
    let ip = parse_ip("ip", &request.ip)?;
    let account_tier = Some(request.account_tier).filter(|tier| !tier.is_empty());
    let attributes = Attributes {
        roles: request.roles,
        account_tier,
        extra: request.attributes.into_iter().collect(),
    };
    let attempt = LoginAttempt {
        ip,
        user_agent: request.user_agent,
        device_id: Some(request.device_id).filter(|id| !id.is_empty()),
        keystroke: request.keystroke.map(keystroke_from_proto).transpose()?,
        attributes,
    };
    validate_event(Event {
        event_id,
        user_id,
        occurred_at,
        version: SCHEMA_VERSION,
        body: EventBody::LoginAttempt(attempt),
    })
}

/// Builds an `action` event from a `CheckAction` request.
pub(crate) fn action_to_event(
    request: pb::CheckActionRequest,
    now: DateTime<Utc>,
) -> Result<Event, ApiError> {
    let event_id = required_id("event_id", request.event_id)?;
    let user_id = required_id("user_id", request.user_id)?;
    let occurred_at = time_or_now("occurred_at", &request.occurred_at, now)?;
    if request.action.is_empty() {
        return Err(invalid(
            "action",
            "is required, for example `change_password`",
        ));
    }
    if request.session_id.is_empty() {
        return Err(invalid("session_id", "is required"));
    }
    let ip = if request.ip.is_empty() {
        None
    } else {
        Some(parse_ip("ip", &request.ip)?)
    };
    let action = Action {
        name: request.action,
        session_id: request.session_id,
        ip,
        attributes: request.attributes.into_iter().collect::<BTreeMap<_, _>>(),
    };
    validate_event(Event {
        event_id,
        user_id,
        occurred_at,
        version: SCHEMA_VERSION,
        body: EventBody::Action(action),
    })
}

fn keystroke_from_proto(keystroke: pb::Keystroke) -> Result<KeystrokeCapture, ApiError> {
    let keys: Vec<KeyTiming> = keystroke
        .keys
        .into_iter()
        .map(|key| KeyTiming {
            key: key.key,
            down_ms: key.down_ms,
            up_ms: key.up_ms,
        })
        .collect();
    let valid = keys
        .iter()
        .all(|key| key.down_ms.is_finite() && key.up_ms.is_finite() && key.up_ms >= key.down_ms);
    if !valid {
        return Err(invalid(
            "keystroke.keys",
            "every key needs finite down_ms <= up_ms",
        ));
    }
    Ok(KeystrokeCapture {
        field: keystroke.field,
        keys,
    })
}

fn required_id(field: &'static str, value: String) -> Result<String, ApiError> {
    if value.is_empty() {
        return Err(invalid(field, "is required"));
    }
    if value.len() > MAX_ID_BYTES {
        return Err(ApiError::InvalidArgument {
            field,
            reason: format!("is {} bytes, over the limit of {MAX_ID_BYTES}", value.len()),
        });
    }
    Ok(value)
}

fn time_or_now(
    field: &'static str,
    value: &str,
    now: DateTime<Utc>,
) -> Result<DateTime<Utc>, ApiError> {
    if value.is_empty() {
        return Ok(now);
    }
    DateTime::parse_from_rfc3339(value)
        .map(|time| time.with_timezone(&Utc))
        .map_err(|err| ApiError::InvalidArgument {
            field,
            reason: format!(
                "`{value}` is not RFC 3339 ({err}); use for example 2026-01-31T09:30:00Z"
            ),
        })
}

fn parse_ip(field: &'static str, value: &str) -> Result<IpAddr, ApiError> {
    if value.is_empty() {
        return Err(invalid(field, "is required"));
    }
    value.parse().map_err(|_| ApiError::InvalidArgument {
        field,
        reason: format!("`{value}` is not an IPv4 or IPv6 address"),
    })
}

fn invalid(field: &'static str, reason: &str) -> ApiError {
    ApiError::InvalidArgument {
        field,
        reason: reason.to_owned(),
    }
}

/// Converts an engine decision to its protobuf form.
pub fn decision_to_proto(decision: &Decision) -> pb::Decision {
    pb::Decision {
        event_id: decision.event_id.clone(),
        user_id: decision.user_id.clone(),
        requirement: requirement_to_proto(decision.requirement) as i32,
        factors: decision
            .factors
            .iter()
            .map(|factor| factor_to_proto(*factor) as i32)
            .collect(),
        risk_score: decision.risk_score,
        risk_level: risk_level_to_proto(decision.risk_level) as i32,
        reasons: decision
            .reasons
            .iter()
            .map(|reason| pb::Reason {
                code: reason.code.clone(),
                signal: reason.signal.clone(),
                rule_id: reason.rule_id.clone(),
                rule_version: reason.rule_version.clone(),
                message: reason.message.clone(),
                values: reason.values.clone().into_iter().collect(),
                user_message: reason.user_message.clone(),
            })
            .collect(),
        user_message: decision.user_message.clone(),
        remember_device_ttl_s: decision.remember_device_ttl_s,
        rule_set_version: decision.rule_set_version.clone(),
        decided_at: decision.decided_at.to_rfc3339(),
        expires_at: decision.expires_at.to_rfc3339(),
        shadow: decision
            .shadow
            .iter()
            .map(|verdict| pb::ShadowVerdict {
                rule_id: verdict.rule_id.clone(),
                rule_version: verdict.rule_version.clone(),
                requirement: requirement_to_proto(verdict.requirement) as i32,
                factors: verdict
                    .factors
                    .iter()
                    .map(|factor| factor_to_proto(*factor) as i32)
                    .collect(),
                reason_code: verdict.reason_code.clone(),
            })
            .collect(),
    }
}

/// Converts a protobuf requirement to the engine's; `UNSPECIFIED` gives `None`.
pub(crate) fn requirement_from_proto(value: i32) -> Option<Requirement> {
    match pb::Requirement::try_from(value).ok()? {
        pb::Requirement::Allow => Some(Requirement::Allow),
        pb::Requirement::Mfa => Some(Requirement::Mfa),
        pb::Requirement::Deny => Some(Requirement::Deny),
        pb::Requirement::Unspecified => None,
    }
}

fn requirement_to_proto(requirement: Requirement) -> pb::Requirement {
    match requirement {
        Requirement::Allow => pb::Requirement::Allow,
        Requirement::Mfa => pb::Requirement::Mfa,
        Requirement::Deny => pb::Requirement::Deny,
    }
}

fn factor_to_proto(factor: Factor) -> pb::Factor {
    match factor {
        Factor::Webauthn => pb::Factor::Webauthn,
        Factor::Totp => pb::Factor::Totp,
        Factor::Push => pb::Factor::Push,
        Factor::Sms => pb::Factor::Sms,
        Factor::Email => pb::Factor::Email,
    }
}

fn risk_level_to_proto(level: RiskLevel) -> pb::RiskLevel {
    match level {
        RiskLevel::Low => pb::RiskLevel::Low,
        RiskLevel::Medium => pb::RiskLevel::Medium,
        RiskLevel::High => pb::RiskLevel::High,
        RiskLevel::Critical => pb::RiskLevel::Critical,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> pb::AssessRequest {
        pb::AssessRequest {
            event_id: "e1".into(),
            user_id: "alice".into(),
            ip: "81.2.69.142".into(),
            user_agent: "Mozilla/5.0".into(),
            ..Default::default()
        }
    }

    #[test]
    fn assess_request_becomes_login_attempt() {
        let now = Utc::now();
        let event = assess_to_event(request(), now).unwrap();
        assert_eq!(event.occurred_at, now);
        let EventBody::LoginAttempt(attempt) = event.body else {
            panic!("wrong body")
        };
        assert_eq!(attempt.device_id, None);
        assert_eq!(attempt.ip.to_string(), "81.2.69.142");
    }

    #[test]
    fn assess_rejects_bad_ip_naming_value() {
        let mut bad = request();
        bad.ip = "81.2.69".into();
        let err = assess_to_event(bad, Utc::now()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid field `ip`: `81.2.69` is not an IPv4 or IPv6 address"
        );
    }

    #[test]
    fn assess_rejects_missing_user() {
        let mut bad = request();
        bad.user_id.clear();
        let status = tonic::Status::from(assess_to_event(bad, Utc::now()).unwrap_err());
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(status.message().contains("`user_id`"));
    }

    #[test]
    fn assess_applies_consumer_limits() {
        let mut long = request();
        long.user_agent = "x".repeat(3000);
        let err = assess_to_event(long, Utc::now()).unwrap_err();
        assert!(err.to_string().contains("`user_agent`"), "{err}");
        let status = tonic::Status::from(err);
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
    }

    #[test]
    fn check_action_needs_action_name() {
        let request = pb::CheckActionRequest {
            event_id: "a1".into(),
            user_id: "alice".into(),
            session_id: "s1".into(),
            ..Default::default()
        };
        let err = action_to_event(request, Utc::now()).unwrap_err();
        assert!(err.to_string().contains("`action`"));
    }

    #[test]
    fn decision_reasons_keep_user_message() {
        let at: DateTime<Utc> = "2026-03-02T09:15:00Z".parse().unwrap();
        let reason = stepup_events::Reason {
            code: "impossible_travel".into(),
            signal: "travel".into(),
            rule_id: "impossible_travel".into(),
            rule_version: "1".into(),
            message: "login from Sydney, AU, 16993 km from London, GB 45 min earlier".into(),
            user_message: "We noticed a sign-in from an unexpected location.".into(),
            values: BTreeMap::from([("distance_km".to_string(), "16993".to_string())]),
        };
        let decision = Decision {
            event_id: "e1".into(),
            user_id: "alice".into(),
            requirement: Requirement::Mfa,
            factors: vec![Factor::Webauthn],
            risk_score: 0.9,
            risk_level: RiskLevel::Critical,
            reasons: vec![reason],
            user_message: stepup_events::user_message(Requirement::Mfa).into(),
            remember_device_ttl_s: 0,
            rule_set_version: "0123456789ab".into(),
            decided_at: at,
            expires_at: at,
            shadow: Vec::new(),
        };

        let proto = decision_to_proto(&decision);

        let reason = &proto.reasons[0];
        assert_eq!(reason.code, "impossible_travel");
        assert_eq!(
            reason.user_message,
            "We noticed a sign-in from an unexpected location."
        );
        assert_eq!(reason.message, decision.reasons[0].message);
        assert_eq!(reason.values["distance_km"], "16993");
    }
}
