//! Per-user state held by the engine: the learnt profile, attempts awaiting their result, the
//! user's recent per-IP marks and the position of the last applied event.
//!
//! [`UserState`] is what the engine writes to the profile changelog, so everything in it must
//! be restorable with serde. It keeps no raw IP address, only prefixes and [`IpKey`]s. Its only
//! keystroke timings are the templates and the features of attempts still pending.

use std::collections::VecDeque;
use std::net::IpAddr;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use stepup_events::Requirement;
use stepup_geo::GeoInfo;
use stepup_keystroke::Features;
use stepup_signals::{AttemptFacts, IpKey, Profile, UserAgentInfo};

/// Everything the engine keeps for one user.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct UserState {
    /// Behavioural history learnt from the user's verified logins.
    pub profile: Profile,
    /// Recent login attempts whose outcome is not known yet, oldest first.
    pub pending: VecDeque<PendingAttempt>,
    /// Partition of the events topic that carries the user's events.
    pub partition: i32,
    /// Offset in `partition` of the last event applied to this state, if it came from the log.
    /// An event at or below it was applied before and is skipped, which makes redelivery
    /// harmless.
    pub applied_offset: Option<i64>,
    /// The user's attempts and failures per IP key within the IP window, oldest first. The
    /// partition's IP activity is the union of these over its users, so it can be rebuilt on
    /// restore.
    pub ip_marks: VecDeque<IpMark>,
}

/// One attempt or failure of a user from one address, for per-IP velocity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct IpMark {
    /// Event time.
    pub at: DateTime<Utc>,
    /// Key of the address.
    pub ip: IpKey,
    /// `true` for a failed login, `false` for an attempt.
    pub failure: bool,
}

/// A login attempt kept until its `login_result` or `mfa_result` arrives, so that a verified
/// login can teach the profile what the attempt looked like.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PendingAttempt {
    /// `event_id` of the attempt.
    pub event_id: String,
    /// Event time of the attempt.
    pub at: DateTime<Utc>,
    /// Network prefix of the client address (host part zeroed), which is all the profile
    /// learns from it.
    pub ip_prefix: IpAddr,
    /// Key of the full client address, for per-IP failure counts.
    pub ip_key: IpKey,
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
    /// Keystroke field and features to learn if the login is verified.
    pub keystroke: Option<(String, Features)>,
}

// === impl PendingAttempt ===

impl PendingAttempt {
    /// Borrows the attempt as the facts the profile learns from.
    pub fn facts(&self) -> AttemptFacts<'_> {
        AttemptFacts {
            at: self.at,
            ip: self.ip_prefix,
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

    /// Adds an IP mark in time order, then drops marks outside the `window` ending at the
    /// newest one and the oldest beyond `max_marks`.
    pub fn push_ip_mark(&mut self, mark: IpMark, window: Duration, max_marks: usize) {
        let index = self.ip_marks.partition_point(|old| old.at <= mark.at);
        self.ip_marks.insert(index, mark);
        let Some(newest) = self.ip_marks.back().map(|mark| mark.at) else {
            return;
        };
        let cutoff = newest - window;
        while self.ip_marks.front().is_some_and(|mark| mark.at <= cutoff)
            || self.ip_marks.len() > max_marks.max(1)
        {
            self.ip_marks.pop_front();
        }
    }

    /// Returns whether the event at `offset` of `partition` was applied to this state before.
    pub fn has_applied(&self, partition: i32, offset: Option<i64>) -> bool {
        match (offset, self.applied_offset) {
            (Some(offset), Some(applied)) => self.partition == partition && offset <= applied,
            _ => false,
        }
    }
}
