//! State shared by the users of one partition of the events topic: population counts and
//! per-IP activity.
//!
//! Keeping this state per partition, and deriving it from the partition's user states, makes
//! a decision depend only on the events of its own partition. An instance that takes over a
//! partition after a crash or a rebalance rebuilds exactly the state the previous owner had,
//! and the decisions do not depend on how partitions are spread over instances.

use chrono::Duration;
use dashmap::DashMap;
use stepup_risk::Population;
use stepup_signals::{Feature, IpActivity, Profile, SignalConfig, feature_count_changes};

use crate::state::{IpMark, UserState};

/// Population counts and IP activity of one partition.
#[derive(Debug)]
pub(crate) struct PartitionState {
    /// Sum of the feature counts of the partition's user profiles.
    pub(crate) population: Population,
    /// Attempts and failures per IP key, the union of the users' IP marks.
    pub(crate) ips: IpActivity,
}

// === impl PartitionState ===

impl PartitionState {
    pub(crate) fn new(signals: &SignalConfig, max_values_per_feature: usize) -> Self {
        Self {
            population: Population::new(max_values_per_feature),
            ips: IpActivity::new(signals),
        }
    }

    /// Adds (`sign` 1) or removes (`sign` -1) a whole profile's counts.
    pub(crate) fn count_profile(&self, profile: &Profile, sign: i64) {
        for count in profile.feature_counts() {
            let change = i64::try_from(count.count).unwrap_or(i64::MAX);
            self.population
                .adjust(count.feature, count.key, sign * change);
        }
    }

    /// Runs `change` on `profile` and moves the population counts by what it changed.
    pub(crate) fn update_profile<T>(
        &self,
        profile: &mut Profile,
        change: impl FnOnce(&mut Profile) -> T,
    ) -> T {
        let before = profile.feature_counts();
        let result = change(profile);
        let after = profile.feature_counts();
        for (feature, key, delta) in feature_count_changes(&before, &after) {
            self.adjust(feature, key, delta);
        }
        result
    }

    /// Records a user's IP mark in the partition's IP activity.
    pub(crate) fn record_mark(&self, user_id: &str, mark: IpMark) {
        if mark.failure {
            self.ips.record_failure(mark.ip, user_id, mark.at);
        } else {
            self.ips.record_attempt(mark.ip, user_id, mark.at);
        }
    }

    /// Adds the counts and IP marks of the users `user_ids` of `partition` found in `users`,
    /// for a partition rebuilt from stored states, and returns how many were found. Marks are
    /// recorded in time order, as they were when the events arrived.
    pub(crate) fn rebuild(
        &self,
        users: &DashMap<String, UserState>,
        partition: i32,
        user_ids: &[String],
    ) -> u64 {
        let mut marks = Vec::new();
        let mut found = 0;
        for user_id in user_ids {
            let Some(state) = users.get(user_id.as_str()) else {
                continue;
            };
            if state.partition != partition {
                continue;
            }
            found += 1;
            self.count_profile(&state.profile, 1);
            marks.extend(state.ip_marks.iter().map(|mark| (*mark, user_id.as_str())));
        }
        marks.sort_unstable();
        for (mark, user_id) in marks {
            self.record_mark(user_id, mark);
        }
        found
    }

    fn adjust(&self, feature: Feature, key: u64, delta: i64) {
        self.population.adjust(feature, key, delta);
    }
}

/// Returns the IP window of `signals` as a duration.
pub(crate) fn ip_window(signals: &SignalConfig) -> Duration {
    Duration::seconds(signals.ip_window_s)
}
