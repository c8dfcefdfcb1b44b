//! The features of a login attempt and the per-user history they are compared with.

use std::collections::BTreeMap;

use stepup_geo::{GeoInfo, NetworkClass};
use stepup_signals::{AttemptFacts, Feature, FeatureValue, Profile, ip_prefix_hash};

/// The values of one login attempt that the history model compares, with no raw IP address.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct AttemptFeatures {
    /// [`ip_prefix_hash`] of the client address: its IPv4 /24 or IPv6 /48.
    pub ip_prefix: u64,
    /// Autonomous system number, when the geo lookup found one.
    pub asn: Option<u32>,
    /// Country code, when the address has a usable location.
    pub country: Option<String>,
    /// Browser family.
    pub browser: String,
    /// OS family.
    pub os: String,
    /// Device id the client sent, if any.
    pub device: Option<String>,
}

/// Per-user counts of feature values over the user's verified logins.
pub trait UserHistory {
    /// Returns how many of the user's verified logins had `value`.
    fn count(&self, value: FeatureValue<'_>) -> u64;

    /// Returns how many of the user's verified logins had any value of `feature`.
    ///
    /// 0 means no history for the feature, and the model then adds no term for it.
    fn total(&self, feature: Feature) -> u64;
}

/// Per-user history kept as plain counts, for replays outside the engine such as the RBA
/// evaluation.
///
/// Each feature keeps at most the bound given to [`CountHistory::learn`]. At the bound the
/// value with the lowest count is dropped, the smallest key among equal counts, and its
/// count leaves the total too.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CountHistory {
    counts: BTreeMap<(Feature, u64), u64>,
    totals: BTreeMap<Feature, u64>,
}

/// Returns whether a geo lookup gives a country that the profile learns, which is the rule
/// `stepup_signals::Profile::learn_verified` applies: a routable address with a location.
fn has_usable_location(geo: &GeoInfo) -> bool {
    let routable = !matches!(geo.network, NetworkClass::Private | NetworkClass::Reserved);
    routable && geo.location.is_some()
}

// === impl AttemptFeatures ===

impl AttemptFeatures {
    /// Extracts the features of an enriched attempt, in the same form the profile learns them.
    pub fn from_facts(facts: &AttemptFacts<'_>) -> Self {
        let country = facts
            .geo
            .location
            .as_ref()
            .filter(|_| has_usable_location(facts.geo))
            .and_then(|location| location.country.clone());
        Self {
            ip_prefix: ip_prefix_hash(facts.ip),
            asn: facts.geo.asn.as_ref().map(|asn| asn.number),
            country,
            browser: facts.ua.browser.clone(),
            os: facts.ua.os.clone(),
            device: facts.device_id.map(str::to_owned),
        }
    }

    /// Returns the attempt's value of `feature`, or `None` when the attempt lacks it.
    ///
    /// The device always has a value: a missing device id is `FeatureValue::Device(None)`.
    pub fn value(&self, feature: Feature) -> Option<FeatureValue<'_>> {
        match feature {
            Feature::IpPrefix => Some(FeatureValue::IpPrefix(self.ip_prefix)),
            Feature::Asn => self.asn.map(FeatureValue::Asn),
            Feature::Country => self.country.as_deref().map(FeatureValue::Country),
            Feature::Browser => Some(FeatureValue::Browser(&self.browser)),
            Feature::Os => Some(FeatureValue::Os(&self.os)),
            Feature::Device => Some(FeatureValue::Device(self.device.as_deref())),
        }
    }

    /// Returns the values the attempt has, in [`Feature::ALL`] order.
    pub fn values(&self) -> impl Iterator<Item = FeatureValue<'_>> {
        Feature::ALL
            .into_iter()
            .filter_map(|feature| self.value(feature))
    }
}

// === impl Profile ===

impl UserHistory for Profile {
    fn count(&self, value: FeatureValue<'_>) -> u64 {
        self.feature_count(value)
    }

    fn total(&self, feature: Feature) -> u64 {
        self.feature_total(feature)
    }
}

// === impl CountHistory ===

impl CountHistory {
    /// Counts the attempt's values, keeping at most `max_values_per_feature` per feature.
    pub fn learn(&mut self, features: &AttemptFeatures, max_values_per_feature: usize) {
        for value in features.values() {
            self.learn_value(value, max_values_per_feature);
        }
    }

    fn learn_value(&mut self, value: FeatureValue<'_>, max_values: usize) {
        let feature = value.feature();
        let key = (feature, value.key());
        if !self.counts.contains_key(&key) {
            while self.distinct(feature) >= max_values.max(1) {
                self.evict_rarest(feature);
            }
        }
        *self.counts.entry(key).or_insert(0) += 1;
        *self.totals.entry(feature).or_insert(0) += 1;
    }

    /// Returns the number of distinct values kept for `feature`.
    pub fn distinct(&self, feature: Feature) -> usize {
        self.feature_range(feature).count()
    }

    fn feature_range(&self, feature: Feature) -> impl Iterator<Item = (&(Feature, u64), &u64)> {
        self.counts.range((feature, 0)..=(feature, u64::MAX))
    }

    fn evict_rarest(&mut self, feature: Feature) {
        let rarest = self
            .feature_range(feature)
            .min_by_key(|((_, key), count)| (**count, *key))
            .map(|(key, count)| (*key, *count));
        let Some((key, count)) = rarest else {
            return;
        };
        self.counts.remove(&key);
        if let Some(total) = self.totals.get_mut(&feature) {
            *total = total.saturating_sub(count);
        }
    }
}

impl UserHistory for CountHistory {
    fn count(&self, value: FeatureValue<'_>) -> u64 {
        let key = (value.feature(), value.key());
        self.counts.get(&key).copied().unwrap_or(0)
    }

    fn total(&self, feature: Feature) -> u64 {
        self.totals.get(&feature).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use chrono::DateTime;
    use stepup_geo::{Asn, Location};
    use stepup_signals::{SignalConfig, UserAgentInfo};

    use super::*;

    fn berlin(network: NetworkClass) -> GeoInfo {
        GeoInfo {
            location: Some(Location {
                latitude: 52.52,
                longitude: 13.405,
                accuracy_km: 20.0,
                city: Some("Berlin".into()),
                country: Some("DE".into()),
            }),
            asn: Some(Asn {
                number: 3320,
                organization: None,
            }),
            network,
        }
    }

    fn firefox_linux() -> UserAgentInfo {
        UserAgentInfo {
            browser: "Firefox".into(),
            os: "Linux".into(),
            category: "pc".into(),
        }
    }

    fn facts<'a>(geo: &'a GeoInfo, ua: &'a UserAgentInfo) -> AttemptFacts<'a> {
        AttemptFacts {
            at: DateTime::from_timestamp(1_748_854_800, 0).unwrap(),
            ip: IpAddr::from([198, 51, 100, 7]),
            geo,
            ua,
            device_id: Some("laptop-1"),
        }
    }

    fn features(device: Option<&str>) -> AttemptFeatures {
        AttemptFeatures {
            ip_prefix: 7,
            asn: Some(3320),
            country: Some("DE".into()),
            browser: "Firefox".into(),
            os: "Linux".into(),
            device: device.map(str::to_owned),
        }
    }

    #[test]
    fn from_facts_takes_every_feature() {
        let geo = berlin(NetworkClass::Residential);
        let ua = firefox_linux();
        let features = AttemptFeatures::from_facts(&facts(&geo, &ua));

        assert_eq!(
            features.ip_prefix,
            ip_prefix_hash(IpAddr::from([198, 51, 100, 1]))
        );
        assert_eq!(features.asn, Some(3320));
        assert_eq!(features.country.as_deref(), Some("DE"));
        assert_eq!(features.browser, "Firefox");
        assert_eq!(features.os, "Linux");
        assert_eq!(features.device.as_deref(), Some("laptop-1"));
    }

    #[test]
    fn private_address_has_no_country() {
        let geo = berlin(NetworkClass::Private);
        let ua = firefox_linux();
        let features = AttemptFeatures::from_facts(&facts(&geo, &ua));
        assert_eq!(features.country, None);
        assert_eq!(features.value(Feature::Country), None);
    }

    #[test]
    fn missing_device_is_a_value() {
        let features = features(None);
        assert_eq!(
            features.value(Feature::Device),
            Some(FeatureValue::Device(None))
        );
        assert_eq!(features.values().count(), 6);
    }

    #[test]
    fn profile_history_matches_learnt_facts() {
        let geo = berlin(NetworkClass::Residential);
        let ua = firefox_linux();
        let attempt = facts(&geo, &ua);
        let mut profile = Profile::default();
        for _ in 0..3 {
            profile.learn_verified(&attempt, &SignalConfig::default());
        }

        let features = AttemptFeatures::from_facts(&attempt);
        for value in features.values() {
            assert_eq!(profile.count(value), 3, "{value:?}");
            assert_eq!(profile.total(value.feature()), 3, "{value:?}");
        }
    }

    #[test]
    fn count_history_counts_and_evicts_rarest() {
        let mut history = CountHistory::default();
        for device in ["a", "a", "a", "b", "c"] {
            history.learn(&features(Some(device)), 2);
        }

        assert_eq!(history.distinct(Feature::Device), 2);
        assert_eq!(history.count(FeatureValue::Device(Some("a"))), 3);
        assert_eq!(history.count(FeatureValue::Device(Some("b"))), 0);
        assert_eq!(history.count(FeatureValue::Device(Some("c"))), 1);
        assert_eq!(history.total(Feature::Device), 4);
        assert_eq!(history.total(Feature::Browser), 5);
        assert_eq!(history.total(Feature::Country), 5);
    }
}
