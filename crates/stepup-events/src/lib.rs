//! Event and decision types for stepup.
//!
//! This crate owns the wire schema of the events topic (JSON, schema version 1), its
//! validation with error codes for the dead-letter topic, and the decision type the engine
//! returns. It does no I/O and does not depend on Kafka, gRPC or scoring.

#![forbid(unsafe_code)]

mod decision;
mod event;
mod parse;

pub use decision::{
    Decision, GENERIC_REASON_USER_MESSAGE, REASON_USER_MESSAGES, Reason, Requirement, RiskLevel,
    ShadowVerdict, reason_user_message, user_message,
};
pub use event::{
    Action, Attributes, DeviceChange, DeviceOp, Event, EventBody, EventKind, Factor, KeyTiming,
    KeystrokeCapture, LoginAttempt, LoginResult, MfaResult, SCHEMA_VERSION,
};
pub use parse::{
    DEFAULT_MAX_EVENT_BYTES, MAX_ID_BYTES, ParseError, parse_event, parse_event_with_limit,
};
