use stepup_geo::{GeoInfo, NetworkClass};

use super::*;
use crate::test_support::*;

/// Returns a profile with ten verified logins from London on Chrome/Windows and a laptop,
/// every day at 09:00 UTC.
fn regular_profile() -> Profile {
    let mut profile = Profile::default();
    for day in 0..10 {
        learn_at(&mut profile, &geo(LONDON), at_minutes(day * 24 * 60));
    }
    profile
}

#[test]
fn first_login_reports_nothing_new() {
    let profile = Profile::default();
    let (tokyo, ua) = (geo(TOKYO), chrome_windows());

    let signals = signals_for(&profile, &facts(at_minutes(0), &tokyo, &ua, Some("laptop")));

    assert!(signals.first_login);
    assert!(signals.geo_known);
    assert_eq!(signals.novelty, Novelty::default());
    assert_eq!(signals.travel, None);
    assert_eq!(signals.network, NetworkClass::Residential);
}

#[test]
fn same_login_after_learning_is_familiar() {
    let profile = regular_profile();
    let (london, ua) = (geo(LONDON), chrome_windows());
    let at = at_minutes(10 * 24 * 60 + 5);

    let signals = signals_for(&profile, &facts(at, &london, &ua, Some("laptop")));

    assert!(!signals.first_login);
    assert_eq!(signals.novelty, Novelty::default());
    assert!(!signals.travel.expect("a travel signal").impossible);
}

#[test]
fn each_changed_feature_is_new() {
    let profile = regular_profile();
    let at = at_minutes(10 * 24 * 60 + 5);
    let usual_ua = chrome_windows();
    let firefox = UserAgentInfo {
        browser: "Firefox".into(),
        ..chrome_windows()
    };
    let linux = UserAgentInfo {
        os: "Linux".into(),
        ..chrome_windows()
    };
    let other_asn = geo_in(LONDON, 20.0, NetworkClass::Residential, 5089);
    let manchester = GeoInfo {
        location: geo(LONDON).location.map(|location| stepup_geo::Location {
            city: Some("Manchester".into()),
            latitude: 53.4808,
            longitude: -2.2426,
            ..location
        }),
        ..geo(LONDON)
    };
    let paris = geo(PARIS);
    let london = geo(LONDON);

    let cases: [(&str, AttemptFacts<'_>, Novelty); 6] = [
        (
            "new device",
            facts(at, &london, &usual_ua, Some("phone")),
            Novelty {
                new_device: true,
                ..Novelty::default()
            },
        ),
        (
            "new browser",
            facts(at, &london, &firefox, Some("laptop")),
            Novelty {
                new_browser: true,
                ..Novelty::default()
            },
        ),
        (
            "new os",
            facts(at, &london, &linux, Some("laptop")),
            Novelty {
                new_os: true,
                ..Novelty::default()
            },
        ),
        (
            "new asn",
            facts(at, &other_asn, &usual_ua, Some("laptop")),
            Novelty {
                new_asn: true,
                ..Novelty::default()
            },
        ),
        (
            "new city",
            facts(at, &manchester, &usual_ua, Some("laptop")),
            Novelty {
                new_city: true,
                ..Novelty::default()
            },
        ),
        (
            "new country",
            facts(at, &paris, &usual_ua, Some("laptop")),
            Novelty {
                new_country: true,
                new_city: true,
                ..Novelty::default()
            },
        ),
    ];
    for (name, attempt, expected) in cases {
        assert_eq!(signals_for(&profile, &attempt).novelty, expected, "{name}");
    }
}

#[test]
fn missing_device_id_new_for_device_users() {
    let (london, ua) = (geo(LONDON), chrome_windows());
    let at = at_minutes(10 * 24 * 60 + 5);
    let with_devices = regular_profile();
    let mut without_devices = Profile::default();
    without_devices.learn_verified(
        &facts(at_minutes(0), &london, &ua, None),
        &SignalConfig::default(),
    );

    let attempt = facts(at, &london, &ua, None);

    assert!(signals_for(&with_devices, &attempt).novelty.new_device);
    assert!(!signals_for(&without_devices, &attempt).novelty.new_device);
}

#[test]
fn trusted_device_until_expiry() {
    let mut profile = regular_profile();
    let expiry = at_minutes(11 * 24 * 60);
    profile.trust_device("laptop", expiry);
    let (london, ua) = (geo(LONDON), chrome_windows());

    let cases = [
        (expiry - chrono::Duration::seconds(1), true),
        (expiry, false),
    ];
    for (at, expected) in cases {
        let signals = signals_for(&profile, &facts(at, &london, &ua, Some("laptop")));
        assert_eq!(signals.novelty.trusted_device, expected, "at {at}");
    }
    let other = signals_for(&profile, &facts(at_minutes(0), &london, &ua, Some("phone")));
    assert!(!other.novelty.trusted_device);
}

#[test]
fn unusual_hour_needs_enough_history() {
    let (london, ua) = (geo(LONDON), chrome_windows());
    let night = at_minutes(10 * 24 * 60 + 18 * 60);
    let morning = at_minutes(10 * 24 * 60);
    let mut short_history = Profile::default();
    for day in 0..9 {
        learn_at(&mut short_history, &london, at_minutes(day * 24 * 60));
    }

    let cases = [
        (
            "03:00 after 10 logins at 09:00",
            regular_profile(),
            night,
            true,
        ),
        (
            "09:00 after 10 logins at 09:00",
            regular_profile(),
            morning,
            false,
        ),
        ("03:00 after 9 logins", short_history, night, false),
    ];
    for (name, profile, at, expected) in cases {
        let signals = signals_for(&profile, &facts(at, &london, &ua, Some("laptop")));
        assert_eq!(signals.novelty.unusual_hour, expected, "{name}");
    }
}

#[test]
fn private_address_has_no_geo_signals() {
    let profile = regular_profile();
    let ua = chrome_windows();
    let private = GeoInfo::unknown_in(NetworkClass::Private);

    let signals = signals_for(
        &profile,
        &facts(at_minutes(15_000), &private, &ua, Some("laptop")),
    );

    assert!(!signals.geo_known);
    assert_eq!(signals.travel, None);
    assert!(!signals.novelty.new_country);
    assert!(!signals.novelty.new_city);
    assert!(!signals.novelty.new_asn);
    assert_eq!(signals.network, NetworkClass::Private);
}

#[test]
fn counts_user_failures_in_window() {
    let config = SignalConfig::default();
    let mut profile = regular_profile();
    let start = at_minutes(20 * 24 * 60);
    for minutes in [0, 4, 8, 12] {
        profile.record_failure(start + chrono::Duration::minutes(minutes), &config);
    }
    let (london, ua) = (geo(LONDON), chrome_windows());

    let cases = [(12, 4), (16, 3), (30, 0)];
    for (minutes, expected) in cases {
        let at = start + chrono::Duration::minutes(minutes);
        let signals = signals_for(&profile, &facts(at, &london, &ua, Some("laptop")));
        assert_eq!(signals.user_failures, expected, "at +{minutes} min");
    }
}

#[test]
fn passes_ip_velocity_through() {
    let profile = Profile::default();
    let (london, ua) = (geo(LONDON), chrome_windows());
    let velocity = IpVelocity {
        failures: 7,
        distinct_users: 5,
        distinct_failed_users: 4,
        attempts: 9,
    };
    let attempt = facts(at_minutes(0), &london, &ua, None);

    let signals = compute_signals(
        &profile,
        velocity.clone(),
        &attempt,
        &SignalConfig::default(),
    );

    assert_eq!(signals.ip, velocity);
}

#[test]
fn serializes_network_by_name() {
    let profile = regular_profile();
    let ua = chrome_windows();
    let mobile = geo_in(NEW_YORK, 20.0, NetworkClass::Mobile, 21928);
    let attempt = facts(at_minutes(9 * 24 * 60 + 120), &mobile, &ua, Some("laptop"));

    let json = serde_json::to_value(signals_for(&profile, &attempt)).unwrap();

    assert_eq!(json["network"], "mobile");
    assert_eq!(json["travel"]["from_city"], "London");
    assert_eq!(json["travel"]["impossible"], true);
    assert_eq!(json["novelty"]["new_country"], true);
}
