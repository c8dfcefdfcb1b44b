//! Event types as they arrive on the events topic, after validation.

use std::collections::BTreeMap;
use std::net::IpAddr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Schema version this build reads and writes.
pub const SCHEMA_VERSION: u32 = 1;

/// One validated event: the envelope fields shared by every type, plus the typed body.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Unique id chosen by the producer; decisions are stored and awaited under it.
    pub event_id: String,
    /// Account the event belongs to; also the Kafka message key.
    pub user_id: String,
    /// When the auth service saw the event (RFC 3339 on the wire).
    pub occurred_at: DateTime<Utc>,
    /// Schema version of the message.
    pub version: u32,
    /// Type-specific fields, tagged by `type` on the wire.
    #[serde(flatten)]
    pub body: EventBody,
}

impl Event {
    /// Returns the wire name of the event type, as used in metrics labels.
    pub fn kind(&self) -> EventKind {
        self.body.kind()
    }

    /// Serializes the event to its JSON wire form.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("an event contains only JSON-representable values")
    }
}

/// Type-specific part of an event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventBody {
    /// A password (first factor) attempt, scored before the result is known.
    LoginAttempt(LoginAttempt),
    /// The outcome of the first factor for an earlier attempt.
    LoginResult(LoginResult),
    /// The outcome of a second factor challenge.
    MfaResult(MfaResult),
    /// A sensitive action inside a session, such as a password change.
    Action(Action),
    /// A change of device trust: trust with an expiry, or forget.
    Device(DeviceChange),
}

impl EventBody {
    /// Returns the kind of this body.
    pub fn kind(&self) -> EventKind {
        match self {
            EventBody::LoginAttempt(_) => EventKind::LoginAttempt,
            EventBody::LoginResult(_) => EventKind::LoginResult,
            EventBody::MfaResult(_) => EventKind::MfaResult,
            EventBody::Action(_) => EventKind::Action,
            EventBody::Device(_) => EventKind::Device,
        }
    }
}

/// Event type names, in wire spelling.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventKind {
    /// `login_attempt`.
    LoginAttempt,
    /// `login_result`.
    LoginResult,
    /// `mfa_result`.
    MfaResult,
    /// `action`.
    Action,
    /// `device`.
    Device,
}

impl EventKind {
    /// Every kind, in wire order.
    pub const ALL: [EventKind; 5] = [
        EventKind::LoginAttempt,
        EventKind::LoginResult,
        EventKind::MfaResult,
        EventKind::Action,
        EventKind::Device,
    ];

    /// Returns the wire name (`login_attempt`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::LoginAttempt => "login_attempt",
            EventKind::LoginResult => "login_result",
            EventKind::MfaResult => "mfa_result",
            EventKind::Action => "action",
            EventKind::Device => "device",
        }
    }

    /// Parses a wire name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == name)
    }
}

/// Client-supplied attributes of the account or request.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Attributes {
    /// Roles of the account, for example `admin`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
    /// Account tier, for example `free` or `enterprise`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_tier: Option<String>,
    /// Further string attributes that rules may read as `event.attributes.extra`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extra: BTreeMap<String, String>,
}

/// A first-factor attempt.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginAttempt {
    /// Client IP address as the auth service saw it.
    pub ip: IpAddr,
    /// Raw `User-Agent` header.
    pub user_agent: String,
    /// Stable device identifier (cookie or platform id), if the client has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_id: Option<String>,
    /// Key timings for one input field, if the client captured them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keystroke: Option<KeystrokeCapture>,
    /// Account and request attributes.
    #[serde(default)]
    pub attributes: Attributes,
}

/// Press and release times of the keys typed into one field.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeystrokeCapture {
    /// Field name, for example `password`; templates are kept per field.
    pub field: String,
    /// Keys in the order they were pressed.
    pub keys: Vec<KeyTiming>,
}

/// One key press, in milliseconds from any fixed origin chosen by the client.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyTiming {
    /// Key name (`a`, `Shift`, `Backspace`); used only to detect corrections and layout changes.
    pub key: String,
    /// Time the key went down, in milliseconds.
    pub down_ms: f64,
    /// Time the key came up, in milliseconds.
    pub up_ms: f64,
}

/// Outcome of the first factor.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginResult {
    /// `event_id` of the `login_attempt` this result belongs to.
    pub attempt_id: String,
    /// Whether the password (or other first factor) was correct.
    pub success: bool,
    /// Failure reason of a failed attempt, for example `bad_password` or `locked`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Client IP, when the result is published without its attempt; used for per-IP velocity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<IpAddr>,
}

/// Second factors stepup can ask for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Factor {
    /// FIDO2 / WebAuthn authenticator or passkey (phishing resistant).
    Webauthn,
    /// Time-based one-time password app.
    Totp,
    /// Push approval in the organisation's authenticator app.
    Push,
    /// One-time code by SMS.
    Sms,
    /// One-time code or link by e-mail.
    Email,
}

impl Factor {
    /// Every factor, strongest first.
    pub const ALL: [Factor; 5] = [
        Factor::Webauthn,
        Factor::Totp,
        Factor::Push,
        Factor::Sms,
        Factor::Email,
    ];

    /// Returns the wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Factor::Webauthn => "webauthn",
            Factor::Totp => "totp",
            Factor::Push => "push",
            Factor::Sms => "sms",
            Factor::Email => "email",
        }
    }

    /// Parses a wire name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|factor| factor.as_str() == name)
    }
}

/// Outcome of a second-factor challenge.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MfaResult {
    /// `event_id` of the `login_attempt` or `action` that asked for MFA, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt_id: Option<String>,
    /// Factor the user completed or failed.
    pub factor: Factor,
    /// Whether the challenge passed.
    pub passed: bool,
}

/// A sensitive action inside an authenticated session.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Action {
    /// Action name, for example `change_password` or `add_payee`.
    pub name: String,
    /// Session the action happens in.
    pub session_id: String,
    /// Client IP, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<IpAddr>,
    /// Free-form attributes of the action (amount, target).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<String, String>,
}

/// A device trust change.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceChange {
    /// The device the change applies to.
    pub device_id: String,
    /// `trust` or `forget`.
    pub op: DeviceOp,
    /// End of trust for `trust`; required there, ignored for `forget`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trusted_until: Option<DateTime<Utc>>,
}

/// Operation of a device event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceOp {
    /// Remember the device as trusted until `trusted_until`.
    Trust,
    /// Forget the device: it becomes new again.
    Forget,
}
