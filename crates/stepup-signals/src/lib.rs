//! Per-user behavioural profiles and the risk signals of a login attempt.
//!
//! This crate owns the [`Profile`] learnt from a user's verified logins, the shared per-IP
//! velocity windows in [`IpActivity`], user-agent family parsing, and [`compute_signals`].
//! The signals are impossible travel against recent verified locations, novelty of device,
//! place, network, browser, OS and hour, and failure velocity. Every result is a pure function of its inputs
//! and event times, never the wall clock, so replays give the same signals.
//!
//! It does no I/O. GeoIP lookups come from `stepup-geo`, and deciding, scoring and storing
//! profiles belong to the engine.

#![forbid(unsafe_code)]

mod config;
mod ip_activity;
mod keystroke;
mod profile;
mod signals;
mod travel;
mod user_agent;

#[cfg(test)]
mod test_support;

pub use config::{ConfigError, SignalConfig};
pub use ip_activity::{IpActivity, IpKey, IpVelocity};
pub use keystroke::{KeystrokeOutcome, KeystrokeSignal, assess_keystroke};
pub use profile::{
    Feature, FeatureCount, FeatureValue, MAX_KEYSTROKE_FIELDS, Profile, ProfileSummary,
    feature_count_changes, ip_prefix_hash, ip_prefix_of,
};
pub use signals::{AttemptFacts, Novelty, Signals, compute_signals};
pub use travel::TravelSignal;
pub use user_agent::{UNKNOWN, UserAgentInfo, parse_user_agent};
