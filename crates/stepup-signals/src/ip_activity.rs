//! Per-IP sliding windows of attempts and failures, for spraying and stuffing detection.

use std::collections::VecDeque;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::net::IpAddr;

use chrono::{DateTime, Duration, Utc};
use dashmap::DashMap;
use serde::{Deserialize, Serialize};

use crate::config::SignalConfig;

/// Activity of one IP address within the IP window.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct IpVelocity {
    /// Failed logins from the address.
    pub failures: u32,
    /// Distinct users that attempted a login from the address.
    pub distinct_users: u32,
    /// Distinct users with a failed login from the address.
    pub distinct_failed_users: u32,
    /// Login attempts from the address.
    pub attempts: u32,
}

/// Pseudonymous key of one IP address: a 64-bit FNV-1a hash of the address bytes.
///
/// The key replaces the address wherever per-address counts are kept or persisted, so
/// that state written to Kafka carries no addresses. FNV output is fixed by its specification,
/// so keys stay valid across builds. The hash is not secret: anyone can hash every IPv4
/// address, so treat keys as pseudonymous, not anonymous.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct IpKey(pub u64);

impl From<IpAddr> for IpKey {
    fn from(ip: IpAddr) -> Self {
        let bytes: Vec<u8> = match ip {
            IpAddr::V4(v4) => v4.octets().to_vec(),
            IpAddr::V6(v6) => v6.octets().to_vec(),
        };
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in b"ip:".iter().chain(bytes.iter()) {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
        Self(hash)
    }
}

/// Recent attempts and failures per IP address, shared by all users of an engine instance.
///
/// Addresses are stored as [`IpKey`]s and users as 64-bit hashes of their ids. Each address keeps at most
/// `max_events_per_ip` events of each kind, so its counts saturate there. The number of
/// addresses is bounded by `max_tracked_ips`: when a new address arrives at the bound, expired
/// addresses are dropped and then the least recently seen tenth. Concurrent inserts may
/// overshoot the bound by the number of threads that race.
#[derive(Debug)]
pub struct IpActivity {
    entries: DashMap<IpKey, IpWindow>,
    window: Duration,
    max_tracked_ips: usize,
    max_events_per_ip: usize,
}

/// Events of one address, each as (event time, user hash), oldest first.
#[derive(Debug)]
struct IpWindow {
    attempts: VecDeque<(DateTime<Utc>, u64)>,
    failures: VecDeque<(DateTime<Utc>, u64)>,
    last_seen: DateTime<Utc>,
}

#[derive(Clone, Copy)]
enum EventKind {
    Attempt,
    Failure,
}

/// Returns the 64-bit hash stored in place of a user id.
///
/// `DefaultHasher::new` uses fixed keys, so the hash is the same for every instance of one
/// build; it is never persisted.
fn hash_user(user_id: &str) -> u64 {
    let mut hasher = DefaultHasher::new();
    user_id.hash(&mut hasher);
    hasher.finish()
}

// === impl IpActivity ===

impl IpActivity {
    /// Creates an empty tracker with the IP window and bounds from `config`.
    pub fn new(config: &SignalConfig) -> Self {
        Self {
            entries: DashMap::new(),
            window: Duration::seconds(config.ip_window_s),
            max_tracked_ips: config.max_tracked_ips.max(1),
            max_events_per_ip: config.max_events_per_ip.max(1),
        }
    }

    /// Records a login attempt by `user_id` from `ip` at event time `at`.
    pub fn record_attempt(&self, ip: impl Into<IpKey>, user_id: &str, at: DateTime<Utc>) {
        self.record(ip.into(), user_id, at, EventKind::Attempt);
    }

    /// Records a failed login by `user_id` from `ip` at event time `at`.
    pub fn record_failure(&self, ip: impl Into<IpKey>, user_id: &str, at: DateTime<Utc>) {
        self.record(ip.into(), user_id, at, EventKind::Failure);
    }

    /// Returns the activity of `ip` in the window ending at `at`, including events at `at`.
    ///
    /// Events recorded with a later time are not counted, so the result does not depend on
    /// whether later events were already recorded.
    pub fn snapshot(&self, ip: impl Into<IpKey>, at: DateTime<Utc>) -> IpVelocity {
        let Some(window) = self.entries.get(&ip.into()) else {
            return IpVelocity::default();
        };
        let cutoff = at - self.window;
        let in_window = |(time, _): &&(DateTime<Utc>, u64)| *time > cutoff && *time <= at;

        let attempts: Vec<u64> = window
            .attempts
            .iter()
            .filter(in_window)
            .map(|e| e.1)
            .collect();
        let failures: Vec<u64> = window
            .failures
            .iter()
            .filter(in_window)
            .map(|e| e.1)
            .collect();
        IpVelocity {
            failures: saturating_u32(failures.len()),
            distinct_users: count_distinct(attempts.clone()),
            distinct_failed_users: count_distinct(failures),
            attempts: saturating_u32(attempts.len()),
        }
    }

    /// Returns the number of tracked IP addresses.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Returns whether no IP address is tracked.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn record(&self, ip: IpKey, user_id: &str, at: DateTime<Utc>, kind: EventKind) {
        let user = hash_user(user_id);
        // The eviction below iterates every shard, so no entry guard may be held here.
        if !self.entries.contains_key(&ip) && self.entries.len() >= self.max_tracked_ips {
            self.evict(at);
        }
        let mut window = self.entries.entry(ip).or_insert_with(|| IpWindow::new(at));
        window.push(kind, at, user, self.window, self.max_events_per_ip);
    }

    /// Drops addresses with no event in the window ending at `at`, then, if still at the
    /// bound, the least recently seen tenth of the addresses.
    fn evict(&self, at: DateTime<Utc>) {
        let cutoff = at - self.window;
        self.entries.retain(|_, window| window.last_seen > cutoff);
        let len = self.entries.len();
        if len < self.max_tracked_ips {
            return;
        }

        let target = self.max_tracked_ips - (self.max_tracked_ips / 10).max(1);
        let mut order: Vec<(DateTime<Utc>, IpKey)> = self
            .entries
            .iter()
            .map(|entry| (entry.last_seen, *entry.key()))
            .collect();
        order.sort_unstable();
        for (last_seen, ip) in order.into_iter().take(len.saturating_sub(target)) {
            // Skip an address that another thread refreshed since the scan.
            self.entries
                .remove_if(&ip, |_, window| window.last_seen == last_seen);
        }
    }
}

// === impl IpWindow ===

impl IpWindow {
    fn new(at: DateTime<Utc>) -> Self {
        Self {
            attempts: VecDeque::new(),
            failures: VecDeque::new(),
            last_seen: at,
        }
    }

    /// Inserts an event in time order, then drops events that fell out of the window ending
    /// at the newest event and the oldest ones beyond `max_events`.
    fn push(
        &mut self,
        kind: EventKind,
        at: DateTime<Utc>,
        user: u64,
        window: Duration,
        max: usize,
    ) {
        self.last_seen = self.last_seen.max(at);
        let events = match kind {
            EventKind::Attempt => &mut self.attempts,
            EventKind::Failure => &mut self.failures,
        };
        let index = events.partition_point(|(time, _)| *time <= at);
        events.insert(index, (at, user));

        let cutoff = self.last_seen - window;
        while events.front().is_some_and(|(time, _)| *time <= cutoff) || events.len() > max {
            events.pop_front();
        }
    }
}

fn count_distinct(mut users: Vec<u64>) -> u32 {
    users.sort_unstable();
    users.dedup();
    saturating_u32(users.len())
}

fn saturating_u32(count: usize) -> u32 {
    u32::try_from(count).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;

    fn t(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_750_000_000 + seconds, 0).unwrap()
    }

    fn ip(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(203, 0, 113, last))
    }

    fn tracker(max_tracked_ips: usize) -> IpActivity {
        IpActivity::new(&SignalConfig {
            max_tracked_ips,
            ..SignalConfig::default()
        })
    }

    #[test]
    fn unknown_ip_has_no_activity() {
        assert_eq!(tracker(10).snapshot(ip(1), t(0)), IpVelocity::default());
    }

    #[test]
    fn counts_distinct_users_and_failures() {
        let activity = tracker(10);
        for (user, failed) in [
            ("alice", true),
            ("bob", true),
            ("bob", true),
            ("carol", false),
        ] {
            activity.record_attempt(ip(1), user, t(10));
            if failed {
                activity.record_failure(ip(1), user, t(11));
            }
        }
        activity.record_attempt(ip(2), "dave", t(12));

        let velocity = activity.snapshot(ip(1), t(20));
        assert_eq!(velocity.attempts, 4);
        assert_eq!(velocity.distinct_users, 3);
        assert_eq!(velocity.failures, 3);
        assert_eq!(velocity.distinct_failed_users, 2);
        assert_eq!(activity.snapshot(ip(2), t(20)).distinct_users, 1);
    }

    #[test]
    fn window_slides_past_old_events() {
        let activity = tracker(10);
        activity.record_failure(ip(1), "alice", t(0));
        activity.record_failure(ip(1), "bob", t(1800));

        let cases = [
            (t(1800), 2),
            (t(3599), 2),
            (t(3600), 1),
            (t(5399), 1),
            (t(5400), 0),
        ];
        for (at, expected) in cases {
            assert_eq!(activity.snapshot(ip(1), at).failures, expected, "at {at}");
        }
    }

    #[test]
    fn snapshot_ignores_later_events() {
        let activity = tracker(10);
        activity.record_attempt(ip(1), "alice", t(100));
        activity.record_attempt(ip(1), "bob", t(50));
        assert_eq!(activity.snapshot(ip(1), t(60)).attempts, 1);
        assert_eq!(activity.snapshot(ip(1), t(100)).attempts, 2);
    }

    #[test]
    fn per_ip_events_saturate_at_bound() {
        let config = SignalConfig {
            max_events_per_ip: 5,
            ..SignalConfig::default()
        };
        let activity = IpActivity::new(&config);
        for index in 0..20 {
            activity.record_attempt(ip(1), &format!("user-{index}"), t(index));
        }
        let velocity = activity.snapshot(ip(1), t(30));
        assert_eq!(velocity.attempts, 5);
        assert_eq!(velocity.distinct_users, 5);
    }

    #[test]
    fn tracked_ips_stay_within_bound() {
        let activity = tracker(100);
        for index in 0..1000u32 {
            let address = IpAddr::V6(Ipv6Addr::from(0x2001_0db8_u128 << 96 | u128::from(index)));
            activity.record_attempt(address, "alice", t(i64::from(index)));
            assert!(
                activity.len() <= 100,
                "{} addresses after {index}",
                activity.len()
            );
        }
        let newest = IpAddr::V6(Ipv6Addr::from(0x2001_0db8_u128 << 96 | 999));
        assert_eq!(activity.snapshot(newest, t(999)).attempts, 1);
        let oldest = IpAddr::V6(Ipv6Addr::from(0x2001_0db8_u128 << 96));
        assert_eq!(activity.snapshot(oldest, t(999)), IpVelocity::default());
    }

    #[test]
    fn eviction_drops_expired_addresses_first() {
        let activity = tracker(3);
        activity.record_attempt(ip(1), "alice", t(0));
        activity.record_attempt(ip(2), "bob", t(4000));
        activity.record_attempt(ip(3), "carol", t(4001));
        activity.record_attempt(ip(4), "dave", t(4002));

        assert_eq!(activity.len(), 3);
        assert_eq!(activity.snapshot(ip(1), t(4002)), IpVelocity::default());
        for address in [ip(2), ip(3), ip(4)] {
            assert_eq!(activity.snapshot(address, t(4002)).attempts, 1, "{address}");
        }
    }
}
