//! The context passed to the policy: event, signals, risk and profile summary.

use serde::Serialize;
use stepup_events::{Attributes, Event, EventBody};
use stepup_signals::{ProfileSummary, Signals, UserAgentInfo};

use stepup_risk::{Contribution, RiskAssessment};

/// Top-level variables of a rule script: `event`, `signals`, `risk`, `profile`.
#[derive(Serialize)]
pub(crate) struct PolicyContext<'a> {
    pub event: EventView<'a>,
    /// `()` in rules for events without login signals (actions).
    pub signals: Option<&'a Signals>,
    pub risk: RiskView<'a>,
    pub profile: &'a ProfileSummary,
}

#[derive(Serialize)]
pub(crate) struct EventView<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub event_id: &'a str,
    pub user_id: &'a str,
    pub occurred_at: String,
    /// Network class of the client IP (`residential`, `hosting`, ...), never the IP itself.
    pub ip_class: &'static str,
    pub user_agent: Option<UserAgentView<'a>>,
    pub device_id: Option<&'a str>,
    pub attributes: Option<&'a Attributes>,
    pub action: Option<ActionView<'a>>,
}

#[derive(Serialize)]
pub(crate) struct UserAgentView<'a> {
    pub browser: &'a str,
    pub os: &'a str,
    pub category: &'a str,
}

#[derive(Serialize)]
pub(crate) struct ActionView<'a> {
    pub name: &'a str,
    pub session_id: &'a str,
    pub sensitive: bool,
    /// `engine.actions.recent_mfa_window_s`, so rules use the configured window.
    pub max_mfa_age_s: i64,
    pub attributes: &'a std::collections::BTreeMap<String, String>,
}

#[derive(Serialize)]
pub(crate) struct RiskView<'a> {
    pub score: f64,
    pub level: &'static str,
    pub top_factor: &'static str,
    pub contributions: &'a [Contribution],
}

// === impl EventView ===

impl<'a> EventView<'a> {
    pub fn new(event: &'a Event, ip_class: &'static str, ua: Option<&'a UserAgentInfo>) -> Self {
        let (device_id, attributes) = match &event.body {
            EventBody::LoginAttempt(attempt) => {
                (attempt.device_id.as_deref(), Some(&attempt.attributes))
            }
            _ => (None, None),
        };
        Self {
            kind: event.kind().as_str(),
            event_id: &event.event_id,
            user_id: &event.user_id,
            occurred_at: event.occurred_at.to_rfc3339(),
            ip_class,
            user_agent: ua.map(|ua| UserAgentView {
                browser: &ua.browser,
                os: &ua.os,
                category: &ua.category,
            }),
            device_id,
            attributes,
            action: None,
        }
    }
}

// === impl RiskView ===

impl<'a> RiskView<'a> {
    pub fn new(risk: &'a RiskAssessment) -> Self {
        Self {
            score: risk.score,
            level: risk.level.as_str(),
            top_factor: risk.top_factor,
            contributions: &risk.contributions,
        }
    }
}
