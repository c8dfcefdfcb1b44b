use proptest::prelude::*;
use stepup_geo::{GeoInfo, NetworkClass};

use super::*;
use crate::profile::Profile;
use crate::test_support::*;

struct TravelCase {
    name: &'static str,
    from: GeoInfo,
    to: GeoInfo,
    minutes: i64,
    impossible: bool,
}

fn travel_after(from: &GeoInfo, to: &GeoInfo, minutes: i64) -> Option<TravelSignal> {
    let mut profile = Profile::default();
    learn_at(&mut profile, from, at_minutes(0));
    let ua = chrome_windows();
    signals_for(
        &profile,
        &facts(at_minutes(minutes), to, &ua, Some("laptop")),
    )
    .travel
}

#[test]
fn flags_only_impossible_trips() {
    let wide = |city| geo_in(city, 1000.0, NetworkClass::Residential, 3320);
    let cases = [
        TravelCase {
            name: "london to new york in 2 h",
            from: geo(LONDON),
            to: geo(NEW_YORK),
            minutes: 120,
            impossible: true,
        },
        TravelCase {
            name: "london to new york in 8 h, a real flight",
            from: geo(LONDON),
            to: geo(NEW_YORK),
            minutes: 8 * 60,
            impossible: false,
        },
        TravelCase {
            name: "london to paris in 3 h",
            from: geo(LONDON),
            to: geo(PARIS),
            minutes: 180,
            impossible: false,
        },
        TravelCase {
            name: "paris to berlin in 20 min",
            from: geo(PARIS),
            to: geo(BERLIN),
            minutes: 20,
            impossible: true,
        },
        TravelCase {
            name: "paris to berlin in 20 min with 1000 km radii",
            from: wide(PARIS),
            to: wide(BERLIN),
            minutes: 20,
            impossible: false,
        },
        TravelCase {
            name: "london to sydney in 10 h",
            from: geo(LONDON),
            to: geo(SYDNEY),
            minutes: 10 * 60,
            impossible: true,
        },
        TravelCase {
            name: "tokyo to tokyo a minute later",
            from: geo(TOKYO),
            to: geo(TOKYO),
            minutes: 1,
            impossible: false,
        },
    ];
    for case in cases {
        let travel = travel_after(&case.from, &case.to, case.minutes).expect(case.name);
        assert_eq!(
            travel.impossible, case.impossible,
            "{}: {travel:?}",
            case.name
        );
        assert_eq!(
            travel.confidence > 0.0,
            case.impossible,
            "{}: {travel:?}",
            case.name
        );
    }
}

#[test]
fn london_to_new_york_has_high_confidence() {
    let travel = travel_after(&geo(LONDON), &geo(NEW_YORK), 120).unwrap();

    assert!(
        (5560.0..5590.0).contains(&travel.distance_km),
        "{}",
        travel.distance_km
    );
    assert!((travel.min_distance_km - (travel.distance_km - 40.0)).abs() < 1e-9);
    assert_eq!(travel.elapsed_s, 7200.0);
    assert!(
        (2750.0..2800.0).contains(&travel.min_speed_kmh),
        "{}",
        travel.min_speed_kmh
    );
    assert!(travel.confidence > 0.85, "{}", travel.confidence);
    assert_eq!(travel.from_city.as_deref(), Some("London"));
    assert_eq!(travel.from_country.as_deref(), Some("GB"));
    assert_eq!(travel.to_city.as_deref(), Some("New York"));
    assert_eq!(travel.to_country.as_deref(), Some("US"));
}

#[test]
fn large_radii_bring_min_distance_to_zero() {
    let wide = |city| geo_in(city, 1000.0, NetworkClass::Residential, 3320);
    let travel = travel_after(&wide(PARIS), &wide(BERLIN), 20).unwrap();
    assert!(travel.distance_km > 800.0, "{}", travel.distance_km);
    assert_eq!(travel.min_distance_km, 0.0);
    assert_eq!(travel.min_speed_kmh, 0.0);
}

#[test]
fn larger_radii_lower_confidence() {
    let precise = travel_after(&geo(LONDON), &geo(NEW_YORK), 120).unwrap();
    let coarse_geo = |city| geo_in(city, 500.0, NetworkClass::Residential, 2856);
    let coarse = travel_after(&coarse_geo(LONDON), &coarse_geo(NEW_YORK), 120).unwrap();
    assert!(coarse.impossible);
    assert!(
        coarse.confidence < precise.confidence,
        "{coarse:?} vs {precise:?}"
    );
}

#[test]
fn faster_trips_raise_confidence() {
    let slow = travel_after(&geo(LONDON), &geo(NEW_YORK), 300).unwrap();
    let fast = travel_after(&geo(LONDON), &geo(NEW_YORK), 60).unwrap();
    assert!(slow.impossible);
    assert!(fast.confidence > slow.confidence, "{fast:?} vs {slow:?}");
}

#[test]
fn uncertain_networks_halve_confidence() {
    let baseline = travel_after(&geo(LONDON), &geo(NEW_YORK), 120).unwrap();
    let on = |city, network| geo_in(city, 20.0, network, 2856);
    let cases = [
        (
            "mobile destination",
            on(LONDON, NetworkClass::Residential),
            on(NEW_YORK, NetworkClass::Mobile),
        ),
        (
            "satellite destination",
            geo(LONDON),
            on(NEW_YORK, NetworkClass::Satellite),
        ),
        (
            "vpn origin",
            on(LONDON, NetworkClass::Anonymous),
            geo(NEW_YORK),
        ),
        (
            "mobile both sides",
            on(LONDON, NetworkClass::Mobile),
            on(NEW_YORK, NetworkClass::Mobile),
        ),
    ];
    for (name, from, to) in cases {
        let travel = travel_after(&from, &to, 120).expect(name);
        assert!(travel.impossible, "{name}");
        assert!(
            (travel.confidence - baseline.confidence / 2.0).abs() < 1e-12,
            "{name}"
        );
    }
}

#[test]
fn hosting_network_keeps_full_confidence() {
    let baseline = travel_after(&geo(LONDON), &geo(NEW_YORK), 120).unwrap();
    let hosted = geo_in(NEW_YORK, 20.0, NetworkClass::Hosting, 16509);
    let travel = travel_after(&geo(LONDON), &hosted, 120).unwrap();
    assert_eq!(travel.confidence, baseline.confidence);
}

#[test]
fn checks_older_location_when_newest_is_near() {
    let mut profile = Profile::default();
    learn_at(&mut profile, &geo(TOKYO), at_minutes(0));
    learn_at(&mut profile, &geo(LONDON), at_minutes(30));
    let ua = chrome_windows();
    let paris = geo(PARIS);

    let signals = signals_for(
        &profile,
        &facts(at_minutes(120), &paris, &ua, Some("laptop")),
    );

    let travel = signals.travel.expect("a travel signal");
    assert!(travel.impossible, "{travel:?}");
    assert_eq!(travel.from_city.as_deref(), Some("Tokyo"));
    assert!(travel.min_speed_kmh > 4000.0, "{}", travel.min_speed_kmh);
}

#[test]
fn picks_newest_location_when_nothing_is_impossible() {
    let mut profile = Profile::default();
    learn_at(&mut profile, &geo(BERLIN), at_minutes(0));
    learn_at(&mut profile, &geo(LONDON), at_minutes(600));
    let ua = chrome_windows();
    let paris = geo(PARIS);

    let travel = signals_for(&profile, &facts(at_minutes(780), &paris, &ua, None))
        .travel
        .unwrap();

    assert!(!travel.impossible);
    // Equal confidence (0), so the higher speed wins: London 3 h ago beats Berlin 13 h ago.
    assert_eq!(travel.from_city.as_deref(), Some("London"));
}

#[test]
fn ignores_locations_past_lookback() {
    let eight_days = 8 * 24 * 60;
    assert_eq!(travel_after(&geo(LONDON), &geo(NEW_YORK), eight_days), None);
    assert!(travel_after(&geo(LONDON), &geo(NEW_YORK), eight_days - 2 * 24 * 60).is_some());
}

#[test]
fn attempt_before_stored_location_uses_absolute_time() {
    let mut profile = Profile::default();
    learn_at(&mut profile, &geo(LONDON), at_minutes(120));
    let ua = chrome_windows();
    let new_york = geo(NEW_YORK);

    let travel = signals_for(&profile, &facts(at_minutes(0), &new_york, &ua, None)).travel;

    let travel = travel.expect("a travel signal");
    assert_eq!(travel.elapsed_s, 7200.0);
    assert!(travel.impossible);
}

#[test]
fn clamps_elapsed_time_to_a_minute() {
    let travel = travel_after(&geo(LONDON), &geo(PARIS), 0).unwrap();
    assert_eq!(travel.elapsed_s, 0.0);
    let expected = travel.min_distance_km * 60.0;
    assert!(
        (travel.min_speed_kmh - expected).abs() < 1e-6,
        "{}",
        travel.min_speed_kmh
    );
}

#[test]
fn no_travel_without_both_locations() {
    let unknown = GeoInfo::unknown();
    let private = GeoInfo::unknown_in(NetworkClass::Private);
    assert_eq!(travel_after(&geo(LONDON), &unknown, 60), None);
    assert_eq!(travel_after(&geo(LONDON), &private, 60), None);
    assert_eq!(travel_after(&unknown, &geo(NEW_YORK), 60), None);

    let profile = Profile::default();
    let ua = chrome_windows();
    let new_york = geo(NEW_YORK);
    assert_eq!(
        signals_for(&profile, &facts(at_minutes(0), &new_york, &ua, None)).travel,
        None
    );
}

fn arbitrary_location() -> impl Strategy<Value = (f64, f64, f64)> {
    (
        -90.0..=90.0f64,
        -180.0..=180.0f64,
        prop_oneof![Just(0.0), 0.0..2000.0f64, Just(f64::NAN)],
    )
}

proptest! {
    #[test]
    fn speed_bound_is_sound(
        (from_lat, from_lon, from_radius) in arbitrary_location(),
        (to_lat, to_lon, to_radius) in arbitrary_location(),
        elapsed_s in -30 * 86_400i64..30 * 86_400,
        max_speed_kmh in 1.0..5000.0f64,
        network in proptest::sample::select(NetworkClass::ALL.to_vec()),
    ) {
        let origin = VerifiedLocation {
            at: at_minutes(0),
            latitude: from_lat,
            longitude: from_lon,
            accuracy_km: from_radius,
            city: None,
            country: None,
            network: network.as_str().to_owned(),
        };
        let location = stepup_geo::Location {
            latitude: to_lat,
            longitude: to_lon,
            accuracy_km: to_radius,
            city: None,
            country: None,
        };
        let at = at_minutes(0) + chrono::Duration::seconds(elapsed_s);
        let destination = Destination { at, location: &location, network };

        let travel = compare(&origin, &destination, max_speed_kmh);

        prop_assert!(travel.min_speed_kmh >= 0.0, "{travel:?}");
        prop_assert!(travel.min_distance_km <= travel.distance_km + 1e-9, "{travel:?}");
        prop_assert!(!travel.impossible || travel.min_speed_kmh > max_speed_kmh, "{travel:?}");
        prop_assert!((0.0..=1.0).contains(&travel.confidence), "{travel:?}");
        prop_assert!(travel.confidence == 0.0 || travel.impossible, "{travel:?}");
    }
}
