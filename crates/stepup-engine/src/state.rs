//! Per-user state held by the engine: the learnt profile plus attempts awaiting their result.

use std::collections::VecDeque;
use std::net::IpAddr;

use chrono::{DateTime, Utc};
use stepup_events::Requirement;
use stepup_geo::GeoInfo;
use stepup_keystroke::Features;
use stepup_signals::{AttemptFacts, Profile, UserAgentInfo};

/// Everything the engine keeps for one user.
#[derive(Clone, Debug, Default)]
pub struct UserState {
    /// Behavioural history learnt from the user's verified logins.
    pub profile: Profile,
    /// Recent login attempts whose outcome is not known yet, oldest first.
    pub pending: VecDeque<PendingAttempt>,
}

/// A login attempt kept until its `login_result` or `mfa_result` arrives, so that a verified
/// login can teach the profile what the attempt looked like.
#[derive(Clone, Debug)]
pub struct PendingAttempt {
    /// `event_id` of the attempt.
    pub event_id: String,
    /// Event time of the attempt.
    pub at: DateTime<Utc>,
    /// Client address; kept only while the attempt is pending, for per-IP failure counts.
    pub ip: IpAddr,
    /// Enrichment of the address.
    pub geo: GeoInfo,
    /// Parsed user agent.
    pub user_agent: UserAgentInfo,
    /// Device id, if the client sent one.
    pub device_id: Option<String>,
    /// Risk score of the attempt.
    pub score: f64,
    /// Requirement the engine decided for the attempt.
    pub requirement: Requirement,
    /// Set when the first factor succeeded and the attempt waits for its MFA result.
    pub first_factor_passed: bool,
    /// Keystroke field and features to learn if the login is verified; held in memory only.
    pub keystroke: Option<(String, Features)>,
}

// === impl PendingAttempt ===

impl PendingAttempt {
    /// Borrows the attempt as the facts the profile learns from.
    pub fn facts(&self) -> AttemptFacts<'_> {
        AttemptFacts {
            at: self.at,
            ip: self.ip,
            geo: &self.geo,
            ua: &self.user_agent,
            device_id: self.device_id.as_deref(),
        }
    }
}

// === impl UserState ===

impl UserState {
    /// Remembers an attempt, dropping the oldest beyond `max_pending`.
    pub fn push_pending(&mut self, attempt: PendingAttempt, max_pending: usize) {
        self.pending
            .retain(|pending| pending.event_id != attempt.event_id);
        self.pending.push_back(attempt);
        while self.pending.len() > max_pending {
            self.pending.pop_front();
        }
    }

    /// Removes and returns the pending attempt with `event_id`.
    pub fn take_pending(&mut self, event_id: &str) -> Option<PendingAttempt> {
        let index = self
            .pending
            .iter()
            .position(|pending| pending.event_id == event_id)?;
        self.pending.remove(index)
    }
}
