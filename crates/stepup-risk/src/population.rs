//! Population counts of feature values over all users' verified logins, bounded in memory.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use parking_lot::RwLock;
use stepup_signals::{Feature, FeatureValue};
use tracing::debug;

use crate::config::RiskConfig;
use crate::features::AttemptFeatures;

/// Counts of feature values over verified logins, fed in one of two ways.
///
/// The engine keeps one population per partition and moves it with [`Population::adjust`] by
/// every change of a profile's feature counts, so the counts are the sum of the partition's
/// profiles and can be rebuilt from them. `stepup eval rba` counts logins directly with
/// [`Population::learn`].
///
/// Each feature has its own table behind a read-write lock, so scoring takes read locks and
/// learning takes one write lock per feature. Through `learn`, a table keeps at most
/// `max_values_per_feature` distinct values. When a new value arrives at that bound, every
/// count of the feature is halved (rounding down) and values that reach 0 are dropped,
/// repeatedly until there is room, in the manner of lossy counting. Nothing depends on
/// randomness, the wall clock or iteration order, so the same calls in the same order give the
/// same counts.
#[derive(Debug)]
pub struct Population {
    tables: [RwLock<CountTable>; Feature::ALL.len()],
    max_values_per_feature: usize,
}

/// Size and history of one feature's counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FeatureStats {
    /// Distinct values kept.
    pub distinct: usize,
    /// Sum of the kept counts, which is the number of learnt logins with the feature less the
    /// counts removed by halving.
    pub total: u64,
    /// Number of halvings so far.
    pub halvings: u64,
}

/// One value's count together with its feature's totals, read under one lock.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Lookup {
    pub(crate) count: u64,
    pub(crate) total: u64,
    pub(crate) distinct: usize,
}

#[derive(Debug, Default)]
struct CountTable {
    counts: HashMap<u64, u64, BuildHasherDefault<KeyHasher>>,
    total: u64,
    halvings: u64,
}

/// Hasher for keys that are already 64-bit hashes: applies the splitmix64 finalizer so
/// small keys spread over the table, with no random seed.
#[derive(Debug, Default)]
struct KeyHasher(u64);

// === impl Population ===

impl Population {
    /// Creates empty counts that keep at most `max_values_per_feature` values per feature
    /// (at least 1).
    pub fn new(max_values_per_feature: usize) -> Self {
        Self {
            tables: Default::default(),
            max_values_per_feature: max_values_per_feature.max(1),
        }
    }

    /// Creates empty counts with the bound from `config`.
    pub fn from_config(config: &RiskConfig) -> Self {
        Self::new(config.max_values_per_feature)
    }

    /// Counts the values of one verified login.
    ///
    /// Call it only for verified logins, as the profile does, so that attackers cannot make
    /// their values look common.
    pub fn learn(&self, features: &AttemptFeatures) {
        for value in features.values() {
            self.learn_value(value);
        }
    }

    /// Counts one value of a verified login.
    pub fn learn_value(&self, value: FeatureValue<'_>) {
        let feature = value.feature();
        let mut table = self.table(feature).write();
        if table.add(value.key(), self.max_values_per_feature) {
            debug!(
                feature = feature.as_str(),
                distinct = table.counts.len(),
                halvings = table.halvings,
                "halved population counts"
            );
        }
    }

    /// Adds `change` (which may be negative) to the count of the value with `key` under
    /// `feature`, and drops the value when its count reaches 0.
    ///
    /// This is the path for counts kept as the sum of user profiles (see the engine's
    /// partition state), so it never halves: the profiles' own bounds bound the table.
    pub fn adjust(&self, feature: Feature, key: u64, change: i64) {
        if change == 0 {
            return;
        }
        let mut table = self.table(feature).write();
        let magnitude = change.unsigned_abs();
        let count = table.counts.entry(key).or_insert(0);
        let applied = if change > 0 {
            *count = count.saturating_add(magnitude);
            magnitude
        } else {
            let removed = magnitude.min(*count);
            *count -= removed;
            removed
        };
        if *count == 0 {
            table.counts.remove(&key);
        }
        table.total = if change > 0 {
            table.total.saturating_add(applied)
        } else {
            table.total.saturating_sub(applied)
        };
    }

    /// Returns the population count of `value`.
    pub fn count(&self, value: FeatureValue<'_>) -> u64 {
        self.lookup(value).count
    }

    /// Returns the size of one feature's counts.
    pub fn stats(&self, feature: Feature) -> FeatureStats {
        let table = self.table(feature).read();
        FeatureStats {
            distinct: table.counts.len(),
            total: table.total,
            halvings: table.halvings,
        }
    }

    /// Returns every kept (value key, count) pair of `feature`, sorted by key, for checks and
    /// checkpoints. Keys are [`FeatureValue::key`] values.
    pub fn sorted_counts(&self, feature: Feature) -> Vec<(u64, u64)> {
        let table = self.table(feature).read();
        let mut counts: Vec<(u64, u64)> = table.counts.iter().map(|(k, c)| (*k, *c)).collect();
        counts.sort_unstable();
        counts
    }

    /// Returns the smoothed population probability of `value`:
    /// (C(v) + β) / (N + β·V), with N the feature's total and V the number of kept values plus
    /// one that stands for all values not kept.
    pub fn probability(&self, value: FeatureValue<'_>, beta: f64) -> f64 {
        self.lookup(value).probability(beta)
    }

    pub(crate) fn lookup(&self, value: FeatureValue<'_>) -> Lookup {
        let table = self.table(value.feature()).read();
        Lookup {
            count: table.counts.get(&value.key()).copied().unwrap_or(0),
            total: table.total,
            distinct: table.counts.len(),
        }
    }

    fn table(&self, feature: Feature) -> &RwLock<CountTable> {
        // Feature is a fieldless enum whose variants are all in `Feature::ALL`, so its
        // discriminant is below the table count.
        &self.tables[feature as usize]
    }
}

// === impl Lookup ===

impl Lookup {
    pub(crate) fn probability(&self, beta: f64) -> f64 {
        let values = self.distinct as f64 + 1.0;
        (self.count as f64 + beta) / (self.total as f64 + beta * values)
    }

    /// Returns the unsmoothed share of the population, 0 for an empty population.
    pub(crate) fn share(&self) -> f64 {
        if self.total == 0 {
            return 0.0;
        }
        self.count as f64 / self.total as f64
    }
}

// === impl CountTable ===

impl CountTable {
    /// Adds one to `key`, halving first if a new key arrives at the bound. Returns whether it
    /// halved.
    fn add(&mut self, key: u64, max_values: usize) -> bool {
        if let Some(count) = self.counts.get_mut(&key) {
            *count = count.saturating_add(1);
            self.total = self.total.saturating_add(1);
            return false;
        }
        let mut halved = false;
        // Each round at least halves every count, so after at most 64 rounds every count is 0
        // and the table is empty.
        while self.counts.len() >= max_values {
            self.halve();
            halved = true;
        }
        self.counts.insert(key, 1);
        self.total = self.total.saturating_add(1);
        halved
    }

    fn halve(&mut self) {
        self.counts.retain(|_, count| {
            *count /= 2;
            *count > 0
        });
        self.total = self.counts.values().sum();
        self.halvings += 1;
    }
}

// === impl KeyHasher ===

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        let mut x = self.0;
        x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        x ^ (x >> 31)
    }

    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*byte);
        }
    }

    fn write_u64(&mut self, value: u64) {
        self.0 ^= value;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn features(ip_prefix: u64, country: &str) -> AttemptFeatures {
        AttemptFeatures {
            ip_prefix,
            asn: Some(3320),
            country: Some(country.to_owned()),
            browser: "Chrome".into(),
            os: "Windows".into(),
            device: None,
        }
    }

    #[test]
    fn population_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Population>();
    }

    #[test]
    fn learn_counts_every_feature() {
        let population = Population::new(100);
        population.learn(&features(1, "DE"));
        population.learn(&features(2, "DE"));
        population.learn(&features(2, "FR"));

        assert_eq!(population.count(FeatureValue::Country("DE")), 2);
        assert_eq!(population.count(FeatureValue::Country("FR")), 1);
        assert_eq!(population.count(FeatureValue::Country("US")), 0);
        assert_eq!(population.count(FeatureValue::IpPrefix(2)), 2);
        assert_eq!(population.count(FeatureValue::Device(None)), 3);
        let stats = population.stats(Feature::Country);
        assert_eq!(stats.distinct, 2);
        assert_eq!(stats.total, 3);
        assert_eq!(stats.halvings, 0);
    }

    #[test]
    fn probability_is_add_beta_smoothed() {
        let population = Population::new(100);
        for country in ["DE", "DE", "DE", "FR"] {
            population.learn_value(FeatureValue::Country(country));
        }
        // N = 4, V = 2 kept + 1, beta = 1.
        let de = population.probability(FeatureValue::Country("DE"), 1.0);
        let unseen = population.probability(FeatureValue::Country("US"), 1.0);
        assert!((de - 4.0 / 7.0).abs() < 1e-12, "{de}");
        assert!((unseen - 1.0 / 7.0).abs() < 1e-12, "{unseen}");
        let empty = Population::new(100).probability(FeatureValue::Country("US"), 1.0);
        assert_eq!(empty, 1.0);
    }

    #[test]
    fn halving_keeps_frequent_values() {
        let population = Population::new(3);
        for _ in 0..5 {
            population.learn_value(FeatureValue::Country("DE"));
        }
        population.learn_value(FeatureValue::Country("FR"));
        population.learn_value(FeatureValue::Country("NL"));
        population.learn_value(FeatureValue::Country("US"));

        // DE 5 -> 2, FR and NL 1 -> 0 and dropped, then US is added.
        assert_eq!(population.count(FeatureValue::Country("DE")), 2);
        assert_eq!(population.count(FeatureValue::Country("FR")), 0);
        assert_eq!(population.count(FeatureValue::Country("US")), 1);
        let stats = population.stats(Feature::Country);
        assert_eq!(stats.distinct, 2);
        assert_eq!(stats.total, 3);
        assert_eq!(stats.halvings, 1);
    }

    #[test]
    fn cap_holds_under_million_values() {
        let cap = 100_000;
        let first = Population::new(cap);
        let second = Population::new(cap);
        for population in [&first, &second] {
            for index in 0..1_000_000u64 {
                // Every tenth login comes from one of 100 busy prefixes.
                let prefix = if index % 10 == 0 {
                    index % 1000
                } else {
                    index << 20
                };
                population.learn_value(FeatureValue::IpPrefix(prefix));
                let stats = population.stats(Feature::IpPrefix);
                assert!(stats.distinct <= cap, "{stats:?} at {index}");
            }
        }

        let stats = first.stats(Feature::IpPrefix);
        assert!(stats.halvings >= 9, "{stats:?}");
        assert_eq!(stats, second.stats(Feature::IpPrefix));
        assert_eq!(
            first.sorted_counts(Feature::IpPrefix),
            second.sorted_counts(Feature::IpPrefix)
        );
        let busy = first.count(FeatureValue::IpPrefix(0));
        let single = first.count(FeatureValue::IpPrefix(999_999 << 20));
        assert!(busy > 10, "busy prefixes survive halving: {busy}");
        assert_eq!(single, 1, "the latest value is kept");
    }
}
