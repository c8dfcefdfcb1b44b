//! The per-user behavioural profile, learnt from verified logins.

use std::collections::BTreeMap;
use std::net::IpAddr;

use chrono::{DateTime, Timelike, Utc};
use serde::{Deserialize, Serialize};
use stepup_events::Factor;
use stepup_geo::{GeoInfo, Location, great_circle_km};
use stepup_keystroke::{Features, Template, TemplateConfig};

use crate::config::SignalConfig;
use crate::signals::{AttemptFacts, is_geo_known};
use crate::travel::VerifiedLocation;

/// Maximum failure timestamps kept per user; the per-user failure count saturates here.
const MAX_STORED_FAILURES: usize = 1024;

/// Maximum devices kept by [`Profile::trust_device`], which has no configuration to read a
/// bound from. [`Profile::learn_verified`] applies `max_devices`.
const MAX_DEVICES_WITHOUT_CONFIG: usize = 1024;

/// Locations closer than this are treated as the same place, so repeated logins from one city
/// do not push other places out of the travel history.
const SAME_PLACE_KM: f64 = 1.0;

/// Behavioural history of one user, built only from verified logins and account events.
///
/// Every collection is bounded by [`SignalConfig`] or a constant, and maps are `BTreeMap`s so
/// the serialized form is deterministic. The profile stores no IP addresses, only hashes of
/// coarse prefixes.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Profile {
    /// Number of verified logins learnt.
    pub(crate) verified_logins: u64,
    /// Number of those verified logins that carried a device id.
    pub(crate) logins_with_device: u64,
    /// Time of the earliest verified login.
    pub(crate) first_seen: Option<DateTime<Utc>>,
    /// Time of the latest verified login.
    pub(crate) last_verified_at: Option<DateTime<Utc>>,
    /// Devices by device id.
    pub(crate) devices: BTreeMap<String, DeviceRecord>,
    /// Countries by code or name as the geo database gives them.
    pub(crate) countries: BTreeMap<String, FeatureStat>,
    /// Cities keyed by `country/city`, because city names repeat across countries.
    pub(crate) cities: BTreeMap<String, FeatureStat>,
    /// Autonomous system numbers.
    pub(crate) asns: BTreeMap<u32, FeatureStat>,
    /// Browser families.
    pub(crate) browsers: BTreeMap<String, FeatureStat>,
    /// OS families.
    pub(crate) oses: BTreeMap<String, FeatureStat>,
    /// Coarse IP prefixes (IPv4 /24, IPv6 /48) as [`ip_prefix_hash`] values, never addresses.
    pub(crate) ip_prefixes: BTreeMap<u64, FeatureStat>,
    /// Verified logins per UTC hour of day.
    pub(crate) hours: [u64; 24],
    /// Recent verified locations, oldest first.
    pub(crate) locations: Vec<VerifiedLocation>,
    /// Failed login times within the failure window, oldest first.
    pub(crate) failures: Vec<DateTime<Utc>>,
    /// Failure window in seconds that `failures` was last pruned with.
    pub(crate) failure_window_s: Option<i64>,
    /// The latest passed MFA challenge.
    pub(crate) last_mfa_passed: Option<MfaPass>,
    /// Failed MFA challenges since the latest passed one.
    pub(crate) mfa_failures_since_pass: u32,
    /// Keystroke templates by input field name, at most [`MAX_KEYSTROKE_FIELDS`].
    pub(crate) keystroke: BTreeMap<String, Template>,
}

/// Input fields with a keystroke template per user; samples of further fields are not learnt.
pub const MAX_KEYSTROKE_FIELDS: usize = 4;

/// Stored history and trust of one device.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub(crate) struct DeviceRecord {
    /// First verified login from the device; `None` if it was trusted before any login.
    pub(crate) first_seen: Option<DateTime<Utc>>,
    /// Latest verified login from the device.
    pub(crate) last_seen: Option<DateTime<Utc>>,
    /// Number of verified logins from the device.
    pub(crate) logins: u64,
    /// End of trust, if the device was ever trusted and not forgotten since.
    pub(crate) trusted_until: Option<DateTime<Utc>>,
}

/// Use count and recency of one feature value, such as a country or a browser family.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub(crate) struct FeatureStat {
    pub(crate) count: u64,
    pub(crate) last_seen: DateTime<Utc>,
}

/// A passed MFA challenge.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq)]
pub(crate) struct MfaPass {
    pub(crate) at: DateTime<Utc>,
    pub(crate) factor: Factor,
}

/// Profile facts that policies read, as of one point in time.
#[derive(Clone, Debug, serde::Serialize, PartialEq)]
pub struct ProfileSummary {
    /// Number of verified logins learnt.
    pub verified_logins: u64,
    /// Time of the earliest verified login.
    pub first_seen: Option<DateTime<Utc>>,
    /// Number of remembered devices.
    pub known_devices: usize,
    /// Number of remembered countries.
    pub known_countries: usize,
    /// Days from the first verified login to the summary time; 0 without history.
    pub days_since_first_seen: f64,
    /// Seconds from the latest passed MFA to the summary time, never negative.
    pub last_mfa_age_s: Option<i64>,
    /// Failed logins in the user failure window ending at the summary time.
    pub failures_in_window: u32,
}

/// A login feature whose per-value counts a profile keeps, for the risk model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Feature {
    /// Coarse IP prefix: IPv4 /24 or IPv6 /48.
    IpPrefix,
    /// Autonomous system number.
    Asn,
    /// Country code.
    Country,
    /// Browser family.
    Browser,
    /// OS family.
    Os,
    /// Device id, where sending none is a value of its own.
    Device,
}

/// The count of one feature value in a profile; see [`Profile::feature_counts`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FeatureCount {
    /// Feature of the value.
    pub feature: Feature,
    /// [`FeatureValue::key`] of the value.
    pub key: u64,
    /// Remembered verified logins with the value.
    pub count: u64,
}

/// Returns the changes that turn the counts `before` into `after`, as (feature, key, change),
/// for two outputs of [`Profile::feature_counts`]. Unchanged values are left out.
pub fn feature_count_changes(
    before: &[FeatureCount],
    after: &[FeatureCount],
) -> Vec<(Feature, u64, i64)> {
    use std::cmp::Ordering;
    let signed = |count: u64| i64::try_from(count).unwrap_or(i64::MAX);
    let mut changes = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < before.len() || j < after.len() {
        let order = match (before.get(i), after.get(j)) {
            (Some(a), Some(b)) => (a.feature, a.key).cmp(&(b.feature, b.key)),
            (Some(_), None) => Ordering::Less,
            (None, _) => Ordering::Greater,
        };
        match order {
            Ordering::Less => {
                let removed = before[i];
                changes.push((removed.feature, removed.key, -signed(removed.count)));
                i += 1;
            }
            Ordering::Greater => {
                let added = after[j];
                changes.push((added.feature, added.key, signed(added.count)));
                j += 1;
            }
            Ordering::Equal => {
                let (a, b) = (before[i], after[j]);
                if a.count != b.count {
                    changes.push((a.feature, a.key, signed(b.count) - signed(a.count)));
                }
                i += 1;
                j += 1;
            }
        }
    }
    changes
}

/// The value of one [`Feature`] in a login, borrowed from the attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FeatureValue<'a> {
    /// An [`ip_prefix_hash`] value.
    IpPrefix(u64),
    /// An autonomous system number.
    Asn(u32),
    /// A country code.
    Country(&'a str),
    /// A browser family.
    Browser(&'a str),
    /// An OS family.
    Os(&'a str),
    /// A device id, or `None` when the client sent none.
    Device(Option<&'a str>),
}

/// FNV-1a 64-bit offset basis and prime. FNV is used because its output is fixed by its
/// specification, so stored prefix hashes stay valid across builds and Rust versions.
const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// Returns the FNV-1a hash of the concatenated byte slices.
fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut hash = FNV_OFFSET;
    for byte in parts.iter().flat_map(|part| part.iter()) {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(FNV_PRIME);
    }
    hash
}

/// Returns the 64-bit hash that stands for the coarse prefix of `ip`: the /24 of an IPv4
/// address (IPv4-mapped IPv6 included) or the /48 of an IPv6 address.
///
/// The hash is stable across builds, so profiles may store it.
///
/// NOTE: the hash has no secret key, so anyone holding it can recover the /24 by hashing all
/// 2^24 IPv4 prefixes. It hides the host part, not the network.
pub fn ip_prefix_hash(ip: IpAddr) -> u64 {
    match ip.to_canonical() {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            fnv1a(&[&[4, a, b, c]])
        }
        IpAddr::V6(v6) => {
            let octets = v6.octets();
            fnv1a(&[&[6], &octets[..6]])
        }
    }
}

/// Returns `ip` with its host part zeroed: the /24 network of an IPv4 address (IPv4-mapped
/// IPv6 included) or the /48 of an IPv6 address. [`ip_prefix_hash`] gives the same hash for
/// the prefix as for the address, so state that keeps only the prefix learns the same.
pub fn ip_prefix_of(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            IpAddr::from([a, b, c, 0])
        }
        IpAddr::V6(v6) => {
            let mut octets = [0u8; 16];
            octets[..6].copy_from_slice(&v6.octets()[..6]);
            IpAddr::from(octets)
        }
    }
}

/// Returns the key under which a city is stored and looked up.
pub(crate) fn city_key(location: &Location) -> Option<String> {
    let city = location.city.as_deref()?;
    Some(format!(
        "{}/{city}",
        location.country.as_deref().unwrap_or("-")
    ))
}

// === impl Feature ===

impl Feature {
    /// Every feature, in declaration order.
    pub const ALL: [Feature; 6] = [
        Feature::IpPrefix,
        Feature::Asn,
        Feature::Country,
        Feature::Browser,
        Feature::Os,
        Feature::Device,
    ];

    /// Returns the snake_case name used in explanations and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Feature::IpPrefix => "ip_prefix",
            Feature::Asn => "asn",
            Feature::Country => "country",
            Feature::Browser => "browser",
            Feature::Os => "os",
            Feature::Device => "device",
        }
    }
}

// === impl FeatureValue ===

impl FeatureValue<'_> {
    /// Returns the feature this value belongs to.
    pub fn feature(&self) -> Feature {
        match self {
            FeatureValue::IpPrefix(_) => Feature::IpPrefix,
            FeatureValue::Asn(_) => Feature::Asn,
            FeatureValue::Country(_) => Feature::Country,
            FeatureValue::Browser(_) => Feature::Browser,
            FeatureValue::Os(_) => Feature::Os,
            FeatureValue::Device(_) => Feature::Device,
        }
    }

    /// Returns a stable 64-bit key for the value, distinct across features.
    ///
    /// IP prefixes are already hashes and keep their value. Other values are FNV-1a hashes of
    /// a feature tag and their bytes, so different values of one feature collide only by
    /// chance (about 2^-64 per pair).
    pub fn key(&self) -> u64 {
        match *self {
            FeatureValue::IpPrefix(hash) => hash,
            FeatureValue::Asn(number) => fnv1a(&[b"A", &number.to_be_bytes()]),
            FeatureValue::Country(country) => fnv1a(&[b"C", country.as_bytes()]),
            FeatureValue::Browser(browser) => fnv1a(&[b"B", browser.as_bytes()]),
            FeatureValue::Os(os) => fnv1a(&[b"O", os.as_bytes()]),
            FeatureValue::Device(Some(id)) => fnv1a(&[b"D+", id.as_bytes()]),
            FeatureValue::Device(None) => fnv1a(&[b"D-"]),
        }
    }
}

// === impl Profile ===

impl Profile {
    /// Learns a verified login: device, IP prefix, place, network, browser, OS, hour and location.
    ///
    /// Call it only for logins that were verified (MFA passed, or low risk and successful).
    pub fn learn_verified(&mut self, facts: &AttemptFacts<'_>, config: &SignalConfig) {
        let at = facts.at;
        self.verified_logins += 1;
        self.first_seen = Some(self.first_seen.map_or(at, |first| first.min(at)));
        self.last_verified_at = Some(self.last_verified_at.map_or(at, |last| last.max(at)));
        self.hours[at.hour() as usize] += 1;

        if let Some(device_id) = facts.device_id {
            self.logins_with_device += 1;
            self.learn_device(device_id, at, config.max_devices);
        }

        let limit = config.max_values_per_feature;
        bump(&mut self.ip_prefixes, ip_prefix_hash(facts.ip), at, limit);
        bump(&mut self.browsers, facts.ua.browser.clone(), at, limit);
        bump(&mut self.oses, facts.ua.os.clone(), at, limit);
        if let Some(asn) = &facts.geo.asn {
            bump(&mut self.asns, asn.number, at, limit);
        }
        if is_geo_known(facts.geo) {
            self.learn_place(facts.geo, at, config);
        }
    }

    /// Records a failed login for the per-user failure window.
    ///
    /// At most 1024 failures are kept, so the count saturates there.
    pub fn record_failure(&mut self, at: DateTime<Utc>, config: &SignalConfig) {
        let window_s = config.user_failure_window_s;
        self.failure_window_s = Some(window_s);
        let index = self.failures.partition_point(|failure| *failure <= at);
        self.failures.insert(index, at);

        let Some(newest) = self.failures.last().copied() else {
            return;
        };
        let cutoff = newest - chrono::Duration::seconds(window_s);
        self.failures.retain(|failure| *failure > cutoff);
        let excess = self.failures.len().saturating_sub(MAX_STORED_FAILURES);
        self.failures.drain(..excess);
    }

    /// Records the outcome of an MFA challenge.
    ///
    /// A pass replaces the latest pass if it is not older and resets the failure count since
    /// the latest pass. A failure older than the latest pass is ignored.
    pub fn record_mfa(&mut self, at: DateTime<Utc>, factor: Factor, passed: bool) {
        let latest_pass = self.last_mfa_passed_at();
        if passed {
            if latest_pass.is_none_or(|latest| at >= latest) {
                self.last_mfa_passed = Some(MfaPass { at, factor });
                self.mfa_failures_since_pass = 0;
            }
        } else if latest_pass.is_none_or(|latest| at >= latest) {
            self.mfa_failures_since_pass = self.mfa_failures_since_pass.saturating_add(1);
        }
    }

    /// Marks a device as trusted until `until`, remembering it if it is new.
    ///
    /// Without a configuration at hand this only caps devices at 1024. The next
    /// [`Profile::learn_verified`] applies `max_devices`.
    pub fn trust_device(&mut self, device_id: &str, until: DateTime<Utc>) {
        self.devices
            .entry(device_id.to_owned())
            .or_default()
            .trusted_until = Some(until);
        let reference = self.last_verified_at.unwrap_or(until);
        self.evict_devices(MAX_DEVICES_WITHOUT_CONFIG, reference, device_id);
    }

    /// Forgets a device entirely, so its next login counts as a new device.
    pub fn forget_device(&mut self, device_id: &str) {
        self.devices.remove(device_id);
    }

    /// Returns the keystroke template of `field`, if the user has one.
    pub fn keystroke_template(&self, field: &str) -> Option<&Template> {
        self.keystroke.get(field)
    }

    /// Teaches the keystroke template of `field` one sample of a verified login.
    pub fn learn_keystroke(&mut self, field: &str, features: &Features, config: &TemplateConfig) {
        if !self.keystroke.contains_key(field) && self.keystroke.len() >= MAX_KEYSTROKE_FIELDS {
            return;
        }
        let template = self
            .keystroke
            .entry(field.to_owned())
            .or_insert_with(|| Template::new(config));
        template.learn(features);
    }

    /// Returns the time of the latest passed MFA challenge.
    pub fn last_mfa_passed_at(&self) -> Option<DateTime<Utc>> {
        self.last_mfa_passed.map(|pass| pass.at)
    }

    /// Returns the factor of the latest passed MFA challenge.
    pub fn last_mfa_factor(&self) -> Option<Factor> {
        self.last_mfa_passed.map(|pass| pass.factor)
    }

    /// Returns the number of failed MFA challenges since the latest passed one.
    pub fn mfa_failures_since_pass(&self) -> u32 {
        self.mfa_failures_since_pass
    }

    /// Returns the number of verified logins learnt.
    pub fn verified_logins(&self) -> u64 {
        self.verified_logins
    }

    /// Returns whether `device_id` is trusted and its trust has not expired at `at`.
    pub fn is_trusted_device(&self, device_id: &str, at: DateTime<Utc>) -> bool {
        self.devices
            .get(device_id)
            .is_some_and(|device| is_trust_active(device, at))
    }

    /// Returns the number of failed logins in the window of `window_s` seconds ending at `at`.
    pub fn failures_in_window(&self, at: DateTime<Utc>, window_s: i64) -> u32 {
        let cutoff = at - chrono::Duration::seconds(window_s);
        let count = self
            .failures
            .iter()
            .filter(|failure| **failure > cutoff && **failure <= at);
        u32::try_from(count.count()).unwrap_or(u32::MAX)
    }

    /// Summarises the profile as of `at` for policies.
    ///
    /// The failure count uses the window the latest failure was recorded with.
    pub fn summary(&self, at: DateTime<Utc>) -> ProfileSummary {
        let window_s = self
            .failure_window_s
            .unwrap_or_else(crate::config::default_user_failure_window_s);
        let days_since_first_seen = self.first_seen.map_or(0.0, |first| {
            ((at - first).num_milliseconds() as f64 / 86_400_000.0).max(0.0)
        });
        ProfileSummary {
            verified_logins: self.verified_logins,
            first_seen: self.first_seen,
            known_devices: self.devices.len(),
            known_countries: self.countries.len(),
            days_since_first_seen,
            last_mfa_age_s: self
                .last_mfa_passed_at()
                .map(|last| (at - last).num_seconds().max(0)),
            failures_in_window: self.failures_in_window(at, window_s),
        }
    }

    /// Returns how many remembered verified logins had `value`.
    ///
    /// Counts cover only values still remembered, so an evicted value counts 0. For
    /// `FeatureValue::Device(None)` it is the number of verified logins without a device id.
    pub fn feature_count(&self, value: FeatureValue<'_>) -> u64 {
        let stat = |stat: Option<&FeatureStat>| stat.map_or(0, |stat| stat.count);
        match value {
            FeatureValue::IpPrefix(hash) => stat(self.ip_prefixes.get(&hash)),
            FeatureValue::Asn(number) => stat(self.asns.get(&number)),
            FeatureValue::Country(country) => stat(self.countries.get(country)),
            FeatureValue::Browser(browser) => stat(self.browsers.get(browser)),
            FeatureValue::Os(os) => stat(self.oses.get(os)),
            FeatureValue::Device(Some(id)) => self.devices.get(id).map_or(0, |d| d.logins),
            FeatureValue::Device(None) => self.logins_without_device(),
        }
    }

    /// Returns the sum of [`Profile::feature_count`] over every remembered value of `feature`.
    ///
    /// This is at most the number of verified logins: logins without the feature (no ASN, no
    /// known location) and evicted values are not counted. It walks the feature's map, which
    /// `max_values_per_feature` (or `max_devices`) bounds.
    pub fn feature_total(&self, feature: Feature) -> u64 {
        fn sum<K>(map: &BTreeMap<K, FeatureStat>) -> u64 {
            map.values().map(|stat| stat.count).sum()
        }
        match feature {
            Feature::IpPrefix => sum(&self.ip_prefixes),
            Feature::Asn => sum(&self.asns),
            Feature::Country => sum(&self.countries),
            Feature::Browser => sum(&self.browsers),
            Feature::Os => sum(&self.oses),
            Feature::Device => {
                let with_device: u64 = self.devices.values().map(|device| device.logins).sum();
                with_device + self.logins_without_device()
            }
        }
    }

    /// Returns every remembered feature value with its count, as (feature, [`FeatureValue::key`],
    /// count), sorted by feature and key. Values with count 0 are left out.
    ///
    /// The engine sums these over the users of a partition to get the population counts, so
    /// that the population is a function of the profiles alone and can be rebuilt from them.
    pub fn feature_counts(&self) -> Vec<FeatureCount> {
        let mut counts = Vec::with_capacity(self.feature_value_capacity());
        let mut push = |value: FeatureValue<'_>, count: u64| {
            if count > 0 {
                counts.push(FeatureCount {
                    feature: value.feature(),
                    key: value.key(),
                    count,
                });
            }
        };
        for (hash, stat) in &self.ip_prefixes {
            push(FeatureValue::IpPrefix(*hash), stat.count);
        }
        for (number, stat) in &self.asns {
            push(FeatureValue::Asn(*number), stat.count);
        }
        for (country, stat) in &self.countries {
            push(FeatureValue::Country(country), stat.count);
        }
        for (browser, stat) in &self.browsers {
            push(FeatureValue::Browser(browser), stat.count);
        }
        for (os, stat) in &self.oses {
            push(FeatureValue::Os(os), stat.count);
        }
        for (id, device) in &self.devices {
            push(FeatureValue::Device(Some(id)), device.logins);
        }
        push(FeatureValue::Device(None), self.logins_without_device());
        counts.sort_unstable_by_key(|count| (count.feature, count.key));
        counts
    }

    fn feature_value_capacity(&self) -> usize {
        self.ip_prefixes.len()
            + self.asns.len()
            + self.countries.len()
            + self.browsers.len()
            + self.oses.len()
            + self.devices.len()
            + 1
    }

    fn logins_without_device(&self) -> u64 {
        self.verified_logins.saturating_sub(self.logins_with_device)
    }

    /// Returns whether a device id is seen on most verified logins.
    pub(crate) fn usually_has_device(&self) -> bool {
        self.logins_with_device * 2 > self.verified_logins
    }

    fn learn_device(&mut self, device_id: &str, at: DateTime<Utc>, max_devices: usize) {
        let device = self.devices.entry(device_id.to_owned()).or_default();
        device.first_seen = Some(device.first_seen.map_or(at, |first| first.min(at)));
        device.last_seen = Some(device.last_seen.map_or(at, |last| last.max(at)));
        device.logins += 1;
        self.evict_devices(max_devices, at, device_id);
    }

    /// Evicts devices other than `keep_id` until at most `keep` remain: untrusted before
    /// trusted (at `at`), then the least recently seen, then by id so the result is
    /// deterministic.
    fn evict_devices(&mut self, keep: usize, at: DateTime<Utc>, keep_id: &str) {
        let excess = self.devices.len().saturating_sub(keep.max(1));
        if excess == 0 {
            return;
        }
        let mut order: Vec<(bool, Option<DateTime<Utc>>, String)> = self
            .devices
            .iter()
            .filter(|(id, _)| id.as_str() != keep_id)
            .map(|(id, device)| (is_trust_active(device, at), device.last_seen, id.clone()))
            .collect();
        order.sort();
        for (_, _, id) in order.into_iter().take(excess) {
            self.devices.remove(&id);
        }
    }

    fn learn_place(&mut self, geo: &GeoInfo, at: DateTime<Utc>, config: &SignalConfig) {
        let Some(location) = &geo.location else {
            return;
        };
        let limit = config.max_values_per_feature;
        if let Some(country) = &location.country {
            bump(&mut self.countries, country.clone(), at, limit);
        }
        if let Some(key) = city_key(location) {
            bump(&mut self.cities, key, at, limit);
        }
        let verified = VerifiedLocation {
            at,
            latitude: location.latitude,
            longitude: location.longitude,
            accuracy_km: location.accuracy_km,
            city: location.city.clone(),
            country: location.country.clone(),
            network: geo.network.as_str().to_owned(),
        };
        self.remember_location(verified, config);
    }

    /// Adds a verified location, replacing an older entry for the same place, dropping entries
    /// past the lookback window and keeping at most `travel_history` entries.
    fn remember_location(&mut self, verified: VerifiedLocation, config: &SignalConfig) {
        let same_place = |other: &VerifiedLocation| {
            let from = (other.latitude, other.longitude);
            great_circle_km(from, (verified.latitude, verified.longitude)) < SAME_PLACE_KM
        };
        if self
            .locations
            .iter()
            .any(|other| same_place(other) && other.at > verified.at)
        {
            return;
        }
        self.locations.retain(|other| !same_place(other));
        let index = self
            .locations
            .partition_point(|other| other.at <= verified.at);
        self.locations.insert(index, verified);

        if let Some(newest) = self.locations.last().map(|newest| newest.at) {
            let cutoff = newest - chrono::Duration::seconds(config.travel_lookback_s);
            self.locations.retain(|other| other.at >= cutoff);
        }
        let excess = self.locations.len().saturating_sub(config.travel_history);
        self.locations.drain(..excess);
    }
}

fn is_trust_active(device: &DeviceRecord, at: DateTime<Utc>) -> bool {
    device.trusted_until.is_some_and(|until| until > at)
}

/// Counts one use of `value`, evicting the least recently seen value when the map is full.
fn bump<K: Ord + Clone>(
    map: &mut BTreeMap<K, FeatureStat>,
    value: K,
    at: DateTime<Utc>,
    limit: usize,
) {
    if let Some(stat) = map.get_mut(&value) {
        stat.count += 1;
        stat.last_seen = stat.last_seen.max(at);
        return;
    }
    while map.len() >= limit.max(1) {
        // Ties on time go to the smallest key, so eviction is deterministic.
        let oldest = map.iter().min_by_key(|(key, stat)| (stat.last_seen, *key));
        let Some(oldest) = oldest.map(|(key, _)| key.clone()) else {
            break;
        };
        map.remove(&oldest);
    }
    map.insert(
        value,
        FeatureStat {
            count: 1,
            last_seen: at,
        },
    );
}

#[cfg(test)]
#[path = "profile_tests.rs"]
mod tests;
