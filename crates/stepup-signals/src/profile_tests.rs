use chrono::Duration;
use stepup_events::Factor;
use stepup_geo::{GeoInfo, NetworkClass};

use super::*;
use crate::test_support::*;
use crate::user_agent::UserAgentInfo;

fn learn_with(
    profile: &mut Profile,
    config: &SignalConfig,
    at: DateTime<Utc>,
    geo: &GeoInfo,
    ua: &UserAgentInfo,
    device_id: Option<&str>,
) {
    profile.learn_verified(&facts(at, geo, ua, device_id), config);
}

#[test]
fn learning_fills_summary() {
    let mut profile = Profile::default();
    learn_at(&mut profile, &geo(LONDON), at_minutes(0));
    learn_at(&mut profile, &geo(PARIS), at_minutes(36 * 60));

    let summary = profile.summary(at_minutes(48 * 60));

    assert_eq!(summary.verified_logins, 2);
    assert_eq!(summary.first_seen, Some(at_minutes(0)));
    assert_eq!(summary.known_devices, 1);
    assert_eq!(summary.known_countries, 2);
    assert_eq!(summary.days_since_first_seen, 2.0);
    assert_eq!(summary.last_mfa_age_s, None);
    assert_eq!(summary.failures_in_window, 0);
}

#[test]
fn empty_profile_summary() {
    let summary = Profile::default().summary(at_minutes(0));
    assert_eq!(summary.verified_logins, 0);
    assert_eq!(summary.first_seen, None);
    assert_eq!(summary.days_since_first_seen, 0.0);
}

#[test]
fn out_of_order_learning_keeps_earliest_first_seen() {
    let mut profile = Profile::default();
    learn_at(&mut profile, &geo(LONDON), at_minutes(60));
    learn_at(&mut profile, &geo(LONDON), at_minutes(0));
    assert_eq!(
        profile.summary(at_minutes(60)).first_seen,
        Some(at_minutes(0))
    );
    assert_eq!(profile.last_verified_at, Some(at_minutes(60)));
}

#[test]
fn failures_slide_out_of_window() {
    let config = SignalConfig::default();
    let mut profile = Profile::default();
    for minutes in [0, 5, 10] {
        profile.record_failure(at_minutes(minutes), &config);
    }

    // The window is 900 s and excludes its start, so a failure exactly 15 min old is gone.
    let cases = [(10, 3), (14, 3), (15, 2), (20, 1), (25, 0), (-1, 0)];
    for (minutes, expected) in cases {
        let summary = profile.summary(at_minutes(minutes));
        assert_eq!(summary.failures_in_window, expected, "at +{minutes} min");
    }
}

#[test]
fn failures_are_pruned_and_capped() {
    let config = SignalConfig::default();
    let mut profile = Profile::default();
    profile.record_failure(at_minutes(0), &config);
    profile.record_failure(at_minutes(60), &config);
    assert_eq!(profile.failures, vec![at_minutes(60)]);

    let start = at_minutes(120);
    for second in 0..2000 {
        profile.record_failure(start + Duration::milliseconds(second * 100), &config);
    }
    assert_eq!(profile.failures.len(), MAX_STORED_FAILURES);
    assert_eq!(
        profile
            .summary(start + Duration::seconds(200))
            .failures_in_window,
        1024
    );
}

#[test]
fn summary_uses_configured_failure_window() {
    let config = SignalConfig {
        user_failure_window_s: 60,
        ..SignalConfig::default()
    };
    let mut profile = Profile::default();
    profile.record_failure(at_minutes(0), &config);
    assert_eq!(profile.summary(at_minutes(0)).failures_in_window, 1);
    assert_eq!(profile.summary(at_minutes(2)).failures_in_window, 0);
}

#[test]
fn records_latest_mfa_pass() {
    let mut profile = Profile::default();
    profile.record_mfa(at_minutes(10), Factor::Totp, false);
    profile.record_mfa(at_minutes(11), Factor::Totp, false);
    assert_eq!(profile.mfa_failures_since_pass(), 2);
    assert_eq!(profile.last_mfa_passed_at(), None);

    profile.record_mfa(at_minutes(12), Factor::Webauthn, true);
    assert_eq!(profile.last_mfa_passed_at(), Some(at_minutes(12)));
    assert_eq!(profile.last_mfa_factor(), Some(Factor::Webauthn));
    assert_eq!(profile.mfa_failures_since_pass(), 0);

    // An older pass or failure that arrives late changes nothing.
    profile.record_mfa(at_minutes(5), Factor::Sms, true);
    profile.record_mfa(at_minutes(6), Factor::Sms, false);
    assert_eq!(profile.last_mfa_factor(), Some(Factor::Webauthn));
    assert_eq!(profile.mfa_failures_since_pass(), 0);
    assert_eq!(profile.summary(at_minutes(22)).last_mfa_age_s, Some(600));
    assert_eq!(profile.summary(at_minutes(0)).last_mfa_age_s, Some(0));
}

#[test]
fn device_trust_expires_and_forget_removes() {
    let mut profile = Profile::default();
    learn_at(&mut profile, &geo(LONDON), at_minutes(0));
    profile.trust_device("laptop", at_minutes(60));

    assert!(profile.is_trusted_device("laptop", at_minutes(59)));
    assert!(!profile.is_trusted_device("laptop", at_minutes(60)));
    assert!(!profile.is_trusted_device("phone", at_minutes(0)));

    profile.forget_device("laptop");
    assert!(!profile.is_trusted_device("laptop", at_minutes(0)));
    assert!(profile.devices.is_empty());
}

#[test]
fn devices_evict_least_recent_untrusted_first() {
    let config = SignalConfig {
        max_devices: 3,
        ..SignalConfig::default()
    };
    let (london, ua) = (geo(LONDON), chrome_windows());
    let mut profile = Profile::default();
    for (minutes, device) in [(0, "old-trusted"), (1, "a"), (2, "b")] {
        learn_with(
            &mut profile,
            &config,
            at_minutes(minutes),
            &london,
            &ua,
            Some(device),
        );
    }
    profile.trust_device("old-trusted", at_minutes(24 * 60));

    learn_with(
        &mut profile,
        &config,
        at_minutes(3),
        &london,
        &ua,
        Some("c"),
    );
    learn_with(
        &mut profile,
        &config,
        at_minutes(4),
        &london,
        &ua,
        Some("d"),
    );

    let remaining: Vec<&str> = profile.devices.keys().map(String::as_str).collect();
    assert_eq!(remaining, ["c", "d", "old-trusted"]);
}

#[test]
fn feature_values_evict_least_recent() {
    let config = SignalConfig {
        max_values_per_feature: 2,
        ..SignalConfig::default()
    };
    let ua = chrome_windows();
    let mut profile = Profile::default();
    let trips = [(0, LONDON), (1, PARIS), (2, LONDON), (3, BERLIN)];
    for (minutes, city) in trips {
        learn_with(
            &mut profile,
            &config,
            at_minutes(minutes * 600),
            &geo(city),
            &ua,
            None,
        );
    }

    let countries: Vec<&str> = profile.countries.keys().map(String::as_str).collect();
    assert_eq!(countries, ["DE", "GB"]);
    let cities: Vec<&str> = profile.cities.keys().map(String::as_str).collect();
    assert_eq!(cities, ["DE/Berlin", "GB/London"]);
    assert_eq!(profile.countries["GB"].count, 2);
}

#[test]
fn locations_keep_recent_distinct_places() {
    let config = SignalConfig {
        travel_history: 3,
        ..SignalConfig::default()
    };
    let ua = chrome_windows();
    let mut profile = Profile::default();
    let trips = [LONDON, LONDON, PARIS, LONDON, BERLIN, TOKYO];
    for (index, city) in trips.into_iter().enumerate() {
        let at = at_minutes(index as i64 * 24 * 60);
        learn_with(&mut profile, &config, at, &geo(city), &ua, None);
    }

    let places: Vec<(&str, DateTime<Utc>)> = profile
        .locations
        .iter()
        .map(|location| (location.city.as_deref().unwrap(), location.at))
        .collect();
    let expected = [
        ("London", at_minutes(3 * 24 * 60)),
        ("Berlin", at_minutes(4 * 24 * 60)),
        ("Tokyo", at_minutes(5 * 24 * 60)),
    ];
    assert_eq!(places, expected);
}

#[test]
fn locations_drop_past_lookback() {
    let ua = chrome_windows();
    let config = SignalConfig::default();
    let mut profile = Profile::default();
    learn_with(&mut profile, &config, at_minutes(0), &geo(PARIS), &ua, None);
    learn_with(
        &mut profile,
        &config,
        at_minutes(8 * 24 * 60),
        &geo(BERLIN),
        &ua,
        None,
    );
    assert_eq!(profile.locations.len(), 1);
    assert_eq!(profile.locations[0].city.as_deref(), Some("Berlin"));
}

#[test]
fn private_and_unknown_addresses_learn_no_place() {
    let ua = chrome_windows();
    let config = SignalConfig::default();
    let mut profile = Profile::default();
    let mut private = geo(LONDON);
    private.network = NetworkClass::Private;
    learn_with(&mut profile, &config, at_minutes(0), &private, &ua, None);
    learn_with(
        &mut profile,
        &config,
        at_minutes(1),
        &GeoInfo::unknown(),
        &ua,
        None,
    );

    assert_eq!(profile.verified_logins, 2);
    assert!(profile.countries.is_empty());
    assert!(profile.cities.is_empty());
    assert!(profile.locations.is_empty());
    assert_eq!(profile.browsers["Chrome"].count, 2);
}

#[test]
fn serialization_is_deterministic_and_round_trips() {
    let mut profile = Profile::default();
    learn_at(&mut profile, &geo(LONDON), at_minutes(0));
    learn_at(&mut profile, &geo(TOKYO), at_minutes(24 * 60));
    profile.trust_device("laptop", at_minutes(48 * 60));
    profile.record_failure(at_minutes(30), &SignalConfig::default());
    profile.record_mfa(at_minutes(31), Factor::Push, true);

    let json = serde_json::to_string(&profile).unwrap();
    assert_eq!(json, serde_json::to_string(&profile.clone()).unwrap());
    let restored: Profile = serde_json::from_str(&json).unwrap();
    assert_eq!(restored, profile);
    assert!(!json.contains(&test_ip().to_string()), "{json}");
}

#[test]
fn deserializes_profile_with_missing_fields() {
    let restored: Profile = serde_json::from_str(r#"{"verified_logins": 3}"#).unwrap();
    assert_eq!(restored.verified_logins(), 3);
    assert!(restored.devices.is_empty());
}

#[test]
fn ip_prefix_hash_groups_by_prefix() {
    let v4 = |d: u8| IpAddr::from([198, 51, 100, d]);
    assert_eq!(ip_prefix_hash(v4(7)), ip_prefix_hash(v4(200)));
    assert_ne!(
        ip_prefix_hash(v4(7)),
        ip_prefix_hash(IpAddr::from([198, 51, 101, 7]))
    );
    let mapped: IpAddr = "::ffff:198.51.100.9".parse().unwrap();
    assert_eq!(ip_prefix_hash(mapped), ip_prefix_hash(v4(7)));

    let v6_a: IpAddr = "2001:db8:1::1".parse().unwrap();
    let v6_b: IpAddr = "2001:db8:1:ffff::2".parse().unwrap();
    let v6_other: IpAddr = "2001:db8:2::1".parse().unwrap();
    assert_eq!(ip_prefix_hash(v6_a), ip_prefix_hash(v6_b));
    assert_ne!(ip_prefix_hash(v6_a), ip_prefix_hash(v6_other));
}

#[test]
fn ip_prefix_hash_is_stable_fnv1a() {
    // FNV-1a 64 of the bytes [4, 198, 51, 100], computed by hand from the specification, so a
    // change of hash function (which would orphan stored prefixes) fails here.
    let mut expected: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in [4u8, 198, 51, 100] {
        expected ^= u64::from(byte);
        expected = expected.wrapping_mul(0x0000_0100_0000_01b3);
    }
    assert_eq!(ip_prefix_hash(test_ip()), expected);
}

#[test]
fn feature_counts_follow_learning() {
    let config = SignalConfig::default();
    let ua = chrome_windows();
    let mut profile = Profile::default();
    let logins = [
        (geo(LONDON), Some("laptop")),
        (geo(LONDON), Some("laptop")),
        (geo(PARIS), None),
        (GeoInfo::unknown(), None),
    ];
    for (minutes, (place, device)) in logins.iter().enumerate() {
        let at = at_minutes(minutes as i64);
        learn_with(&mut profile, &config, at, place, &ua, *device);
    }

    let prefix = ip_prefix_hash(test_ip());
    assert_eq!(profile.feature_count(FeatureValue::IpPrefix(prefix)), 4);
    assert_eq!(profile.feature_count(FeatureValue::IpPrefix(prefix ^ 1)), 0);
    assert_eq!(profile.feature_count(FeatureValue::Country("GB")), 2);
    assert_eq!(profile.feature_count(FeatureValue::Country("FR")), 1);
    assert_eq!(profile.feature_count(FeatureValue::Country("DE")), 0);
    assert_eq!(profile.feature_count(FeatureValue::Asn(2856)), 3);
    assert_eq!(profile.feature_count(FeatureValue::Browser("Chrome")), 4);
    assert_eq!(profile.feature_count(FeatureValue::Os("Windows")), 4);
    assert_eq!(
        profile.feature_count(FeatureValue::Device(Some("laptop"))),
        2
    );
    assert_eq!(
        profile.feature_count(FeatureValue::Device(Some("phone"))),
        0
    );
    assert_eq!(profile.feature_count(FeatureValue::Device(None)), 2);

    assert_eq!(profile.feature_total(Feature::IpPrefix), 4);
    assert_eq!(profile.feature_total(Feature::Country), 3);
    assert_eq!(profile.feature_total(Feature::Asn), 3);
    assert_eq!(profile.feature_total(Feature::Browser), 4);
    assert_eq!(profile.feature_total(Feature::Os), 4);
    assert_eq!(profile.feature_total(Feature::Device), 4);
}

#[test]
fn ip_prefixes_are_bounded() {
    let config = SignalConfig {
        max_values_per_feature: 2,
        ..SignalConfig::default()
    };
    let ua = chrome_windows();
    let city = geo(LONDON);
    let mut profile = Profile::default();
    for last in 0..5u8 {
        let mut attempt = facts(at_minutes(i64::from(last)), &city, &ua, None);
        attempt.ip = IpAddr::from([203, 0, last, 1]);
        profile.learn_verified(&attempt, &config);
    }

    assert_eq!(profile.ip_prefixes.len(), 2);
    let newest = ip_prefix_hash(IpAddr::from([203, 0, 4, 1]));
    assert_eq!(profile.feature_count(FeatureValue::IpPrefix(newest)), 1);
    assert_eq!(profile.feature_total(Feature::IpPrefix), 2);
}

#[test]
fn feature_value_keys_differ_across_features() {
    let keys = [
        FeatureValue::Country("x").key(),
        FeatureValue::Browser("x").key(),
        FeatureValue::Os("x").key(),
        FeatureValue::Device(Some("x")).key(),
        FeatureValue::Device(Some("")).key(),
        FeatureValue::Device(None).key(),
        FeatureValue::Asn(1).key(),
    ];
    let distinct: std::collections::BTreeSet<u64> = keys.iter().copied().collect();
    assert_eq!(distinct.len(), keys.len());
    assert_eq!(FeatureValue::IpPrefix(42).key(), 42);
    assert_eq!(FeatureValue::Os("x").feature(), Feature::Os);
    assert_eq!(Feature::ALL.map(Feature::as_str)[0], "ip_prefix");
}
