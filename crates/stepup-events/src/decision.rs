//! The decision stepup returns for an event, and its reasons.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::event::Factor;

/// Action the auth service must take before letting the user in or through.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Requirement {
    /// Let the user continue without a second factor.
    Allow,
    /// Ask for one of the allowed factors first.
    Mfa,
    /// Refuse the attempt.
    Deny,
}

impl Requirement {
    /// Every requirement, weakest first.
    pub const ALL: [Requirement; 3] = [Requirement::Allow, Requirement::Mfa, Requirement::Deny];

    /// Returns the wire name (`allow`, `mfa`, `deny`).
    pub fn as_str(self) -> &'static str {
        match self {
            Requirement::Allow => "allow",
            Requirement::Mfa => "mfa",
            Requirement::Deny => "deny",
        }
    }

    /// Parses a wire name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|requirement| requirement.as_str() == name)
    }
}

/// Coarse band of the risk score, for dashboards and simple rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RiskLevel {
    /// Score below 0.3.
    Low,
    /// Score from 0.3 to below 0.6.
    Medium,
    /// Score from 0.6 to below 0.85.
    High,
    /// Score of 0.85 or more.
    Critical,
}

impl RiskLevel {
    /// Returns the band a score in `[0, 1]` falls in.
    pub fn from_score(score: f64) -> Self {
        if score >= 0.85 {
            RiskLevel::Critical
        } else if score >= 0.6 {
            RiskLevel::High
        } else if score >= 0.3 {
            RiskLevel::Medium
        } else {
            RiskLevel::Low
        }
    }

    /// Returns the wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            RiskLevel::Low => "low",
            RiskLevel::Medium => "medium",
            RiskLevel::High => "high",
            RiskLevel::Critical => "critical",
        }
    }
}

/// One reason behind a decision: which signal fired, with what values, in which rule.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Reason {
    /// Stable reason code, for example `impossible_travel`; see docs/reasons.md.
    pub code: String,
    /// Signal the reason is based on, for example `travel` or `velocity`.
    pub signal: String,
    /// Id of the rule that gave the reason; empty for engine reasons.
    pub rule_id: String,
    /// Version of that rule.
    pub rule_version: String,
    /// Message for analysts; may name places and values, never raw IPs or secrets.
    pub message: String,
    /// Sentence safe to show the end user: no scores, rule names, IPs or places finer than
    /// a country. Reasons written before this field existed read as empty.
    #[serde(default)]
    pub user_message: String,
    /// Inputs that triggered the reason, as display strings.
    pub values: BTreeMap<String, String>,
}

/// Verdict one shadow rule would have given, reported for analysis and never enforced.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ShadowVerdict {
    /// Id of the shadow rule.
    pub rule_id: String,
    /// Version of the shadow rule.
    pub rule_version: String,
    /// Requirement the rule would have set; `allow` also when it had no opinion.
    pub requirement: Requirement,
    /// Factors an `mfa` verdict would have allowed; empty otherwise.
    #[serde(default)]
    pub factors: Vec<Factor>,
    /// Reason code the rule gave; empty when it had no opinion.
    #[serde(default)]
    pub reason_code: String,
}

/// The outcome for one event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// Event the decision is for.
    pub event_id: String,
    /// Account the event belongs to.
    pub user_id: String,
    /// Action the caller must take.
    pub requirement: Requirement,
    /// Factors that satisfy an `mfa` requirement; empty for `allow` and `deny`.
    pub factors: Vec<Factor>,
    /// Risk score in `[0, 1]`.
    pub risk_score: f64,
    /// Band of the risk score.
    pub risk_level: RiskLevel,
    /// Why, most important first.
    pub reasons: Vec<Reason>,
    /// Text safe to show the end user: no scores, places or rule names.
    pub user_message: String,
    /// How long the caller may remember the device after a passed MFA, in seconds; 0 for never.
    pub remember_device_ttl_s: u64,
    /// Version of the rule set that decided.
    pub rule_set_version: String,
    /// When the decision was made (the event's own time, so replays give the same value).
    pub decided_at: DateTime<Utc>,
    /// When the decision stops being valid for `AwaitDecision` and caching.
    pub expires_at: DateTime<Utc>,
    /// Verdicts of the shadow rules, one per shadow rule in rule order; never enforced.
    /// Decisions written before this field existed read as empty.
    #[serde(default)]
    pub shadow: Vec<ShadowVerdict>,
}

/// Returns the end-user message for a requirement.
pub fn user_message(requirement: Requirement) -> &'static str {
    match requirement {
        Requirement::Allow => "",
        Requirement::Mfa => "For your security, please confirm it's you with a second factor.",
        Requirement::Deny => "We couldn't sign you in. Please try again later or contact support.",
    }
}

/// End-user message of a reason whose code [`REASON_USER_MESSAGES`] does not list.
pub const GENERIC_REASON_USER_MESSAGE: &str = "We're taking extra steps to protect your account.";

/// End-user message of every reason code the shipped rules, the policy and the engine give,
/// as `(code, message)`.
///
/// Each message names the kind of thing that looked unusual, never by how much or where, so it
/// does not help an attacker tune an attempt. No message contains a score, threshold, count,
/// rule name, IP address, network or place.
pub const REASON_USER_MESSAGES: [(&str, &str); 16] = [
    (
        "user_failure_velocity_blocked",
        "There were too many unsuccessful attempts to sign in to your account.",
    ),
    (
        "user_failure_velocity",
        "There were several unsuccessful attempts to sign in to your account.",
    ),
    (
        "password_spraying_blocked",
        "We noticed unusual sign-in activity.",
    ),
    ("password_spraying", "We noticed unusual sign-in activity."),
    (
        "admin_requires_webauthn",
        "Administrator accounts must confirm sign-ins with a security key or passkey.",
    ),
    (
        "impossible_travel",
        "We noticed a sign-in from an unexpected location.",
    ),
    (
        "keystroke_mismatch",
        "This sign-in looks different from your usual ones.",
    ),
    (
        "new_device_from_hosting",
        "We noticed a sign-in from a new device.",
    ),
    ("new_country", "We noticed a sign-in from a new location."),
    (
        "high_risk_score",
        "This sign-in looks unusual for your account.",
    ),
    (
        "sensitive_action_recent_mfa",
        "For this change, please confirm it's you again.",
    ),
    (
        "unusual_hour_new_browser",
        "We noticed a sign-in from a new browser.",
    ),
    (
        "risk_score",
        "We check every sign-in to keep your account safe.",
    ),
    (
        "stale_mfa",
        "For this change, please confirm it's you again.",
    ),
    ("rule_error", GENERIC_REASON_USER_MESSAGE),
    (
        "factor_conflict",
        "Please confirm it's you with a security key or passkey.",
    ),
];

/// Returns the end-user message of a reason code, or [`GENERIC_REASON_USER_MESSAGE`] for a code
/// that [`REASON_USER_MESSAGES`] does not list.
pub fn reason_user_message(code: &str) -> &'static str {
    REASON_USER_MESSAGES
        .iter()
        .find(|(known, _)| *known == code)
        .map_or(GENERIC_REASON_USER_MESSAGE, |(_, message)| message)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DECISION_WITHOUT_SHADOW: &str = r#"{
        "event_id": "evt-1",
        "user_id": "alice",
        "requirement": "mfa",
        "factors": ["webauthn"],
        "risk_score": 0.7,
        "risk_level": "high",
        "reasons": [],
        "user_message": "",
        "remember_device_ttl_s": 0,
        "rule_set_version": "0123456789ab",
        "decided_at": "2026-03-02T09:15:00Z",
        "expires_at": "2026-03-02T09:20:00Z"
    }"#;

    #[test]
    fn reason_without_user_message_still_parses() {
        let json = r#"{"code": "new_country", "signal": "geo", "rule_id": "new_country",
            "rule_version": "1", "message": "first login from this country", "values": {}}"#;

        let reason: Reason = serde_json::from_str(json).unwrap();

        assert_eq!(reason.code, "new_country");
        assert_eq!(reason.user_message, "");
    }

    #[test]
    fn reason_user_message_round_trips() {
        let reason = Reason {
            code: "new_country".into(),
            user_message: reason_user_message("new_country").into(),
            ..Reason::default()
        };

        let json = serde_json::to_value(&reason).unwrap();
        assert_eq!(
            json["user_message"],
            "We noticed a sign-in from a new location."
        );
        let back: Reason = serde_json::from_value(json).unwrap();
        assert_eq!(back, reason);
    }

    #[test]
    fn known_codes_have_their_own_user_message() {
        for (code, message) in REASON_USER_MESSAGES {
            assert_eq!(reason_user_message(code), message, "{code}");
        }
        assert_eq!(
            reason_user_message("impossible_travel"),
            "We noticed a sign-in from an unexpected location."
        );
    }

    #[test]
    fn unknown_code_gets_generic_user_message() {
        assert_eq!(
            reason_user_message("custom_rule_code"),
            GENERIC_REASON_USER_MESSAGE
        );
        assert_eq!(reason_user_message(""), GENERIC_REASON_USER_MESSAGE);
    }

    #[test]
    fn reason_user_messages_are_short_safe_sentences() {
        let mut codes: Vec<&str> = REASON_USER_MESSAGES.iter().map(|(code, _)| *code).collect();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(
            codes.len(),
            REASON_USER_MESSAGES.len(),
            "a code is listed twice"
        );

        for (code, message) in REASON_USER_MESSAGES {
            assert!(message.ends_with('.'), "{code}: {message}");
            assert!(message.len() <= 100, "{code}: {message}");
            assert!(
                !message.chars().any(|c| c.is_ascii_digit()),
                "{code} names a number: {message}"
            );
            assert!(!message.contains(code), "{code} names its code: {message}");
        }
    }

    #[test]
    fn decision_without_shadow_still_parses() {
        let decision: Decision = serde_json::from_str(DECISION_WITHOUT_SHADOW).unwrap();

        assert!(decision.shadow.is_empty());
        assert_eq!(decision.requirement, Requirement::Mfa);
    }

    #[test]
    fn shadow_verdicts_round_trip() {
        let mut decision: Decision = serde_json::from_str(DECISION_WITHOUT_SHADOW).unwrap();
        decision.shadow.push(ShadowVerdict {
            rule_id: "unusual_hour_new_browser".into(),
            rule_version: "1".into(),
            requirement: Requirement::Mfa,
            factors: vec![Factor::Webauthn, Factor::Totp],
            reason_code: "unusual_hour_new_browser".into(),
        });

        let json = serde_json::to_value(&decision).unwrap();
        assert_eq!(json["shadow"][0]["requirement"], "mfa");
        assert_eq!(json["shadow"][0]["reason_code"], "unusual_hour_new_browser");
        let back: Decision = serde_json::from_value(json).unwrap();
        assert_eq!(back, decision);
    }
}
