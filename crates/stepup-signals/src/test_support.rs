//! Builders for realistic attempts in unit tests.

use std::net::{IpAddr, Ipv4Addr};

use chrono::{DateTime, Duration, Utc};
use stepup_geo::{Asn, GeoInfo, Location, NetworkClass};

use crate::config::SignalConfig;
use crate::ip_activity::IpVelocity;
use crate::profile::Profile;
use crate::signals::{AttemptFacts, Signals, compute_signals};
use crate::user_agent::UserAgentInfo;

/// A city with its country code and coordinates in degrees.
#[derive(Clone, Copy, Debug)]
pub(crate) struct City {
    pub(crate) name: &'static str,
    pub(crate) country: &'static str,
    pub(crate) latitude: f64,
    pub(crate) longitude: f64,
}

pub(crate) const LONDON: City = City {
    name: "London",
    country: "GB",
    latitude: 51.5074,
    longitude: -0.1278,
};
pub(crate) const NEW_YORK: City = City {
    name: "New York",
    country: "US",
    latitude: 40.7128,
    longitude: -74.0060,
};
pub(crate) const SYDNEY: City = City {
    name: "Sydney",
    country: "AU",
    latitude: -33.8688,
    longitude: 151.2093,
};
pub(crate) const PARIS: City = City {
    name: "Paris",
    country: "FR",
    latitude: 48.8566,
    longitude: 2.3522,
};
pub(crate) const BERLIN: City = City {
    name: "Berlin",
    country: "DE",
    latitude: 52.5200,
    longitude: 13.4050,
};
pub(crate) const TOKYO: City = City {
    name: "Tokyo",
    country: "JP",
    latitude: 35.6762,
    longitude: 139.6503,
};

/// Returns a fixed Monday 2025-06-02 09:00 UTC plus `minutes`.
pub(crate) fn at_minutes(minutes: i64) -> DateTime<Utc> {
    let base = DateTime::from_timestamp(1_748_854_800, 0).expect("a valid timestamp");
    base + Duration::minutes(minutes)
}

/// Returns geo facts for a city with the given accuracy radius, network and ASN.
pub(crate) fn geo_in(city: City, accuracy_km: f64, network: NetworkClass, asn: u32) -> GeoInfo {
    GeoInfo {
        location: Some(Location {
            latitude: city.latitude,
            longitude: city.longitude,
            accuracy_km,
            city: Some(city.name.to_owned()),
            country: Some(city.country.to_owned()),
        }),
        asn: Some(Asn {
            number: asn,
            organization: None,
        }),
        network,
    }
}

/// Returns residential geo facts for a city with a 20 km accuracy radius.
pub(crate) fn geo(city: City) -> GeoInfo {
    geo_in(city, 20.0, NetworkClass::Residential, 2856)
}

/// Returns desktop Chrome on Windows.
pub(crate) fn chrome_windows() -> UserAgentInfo {
    UserAgentInfo {
        browser: "Chrome".into(),
        os: "Windows".into(),
        category: "pc".into(),
    }
}

/// Returns a documentation-range address; the signals never look at its value.
pub(crate) fn test_ip() -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7))
}

/// Returns attempt facts with a test IP.
pub(crate) fn facts<'a>(
    at: DateTime<Utc>,
    geo: &'a GeoInfo,
    ua: &'a UserAgentInfo,
    device_id: Option<&'a str>,
) -> AttemptFacts<'a> {
    AttemptFacts {
        at,
        ip: test_ip(),
        geo,
        ua,
        device_id,
    }
}

/// Learns a verified login from `city` at `at` on the usual device and browser.
pub(crate) fn learn_at(profile: &mut Profile, city_geo: &GeoInfo, at: DateTime<Utc>) {
    let ua = chrome_windows();
    profile.learn_verified(
        &facts(at, city_geo, &ua, Some("laptop")),
        &SignalConfig::default(),
    );
}

/// Computes signals with default configuration and no IP activity.
pub(crate) fn signals_for(profile: &Profile, facts: &AttemptFacts<'_>) -> Signals {
    compute_signals(
        profile,
        IpVelocity::default(),
        facts,
        &SignalConfig::default(),
    )
}
