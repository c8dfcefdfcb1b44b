//! Signals for one login attempt, computed from the attempt and the user's profile.

use std::net::IpAddr;

use chrono::{DateTime, Timelike, Utc};
use serde::Serialize;
use stepup_geo::{GeoInfo, NetworkClass};

use crate::config::SignalConfig;
use crate::ip_activity::IpVelocity;
use crate::keystroke::KeystrokeSignal;
use crate::profile::{Profile, city_key};
use crate::travel::{Destination, TravelSignal, strongest_travel};
use crate::user_agent::UserAgentInfo;

/// The enriched facts of one login attempt that signals and learning read.
#[derive(Clone, Copy, Debug)]
pub struct AttemptFacts<'a> {
    /// Event time of the attempt.
    pub at: DateTime<Utc>,
    /// Client IP address; used for velocity only and never stored in a profile.
    pub ip: IpAddr,
    /// Geo lookup result for `ip`.
    pub geo: &'a GeoInfo,
    /// Parsed user agent.
    pub ua: &'a UserAgentInfo,
    /// Device id the client sent, if any.
    pub device_id: Option<&'a str>,
}

/// Everything the risk model and policies learn about one attempt.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Signals {
    /// Whether the attempt has a usable location: false for private, reserved and unknown
    /// addresses.
    pub geo_known: bool,
    /// The strongest travel evidence against the user's recent verified locations; `None`
    /// when either side has no location.
    pub travel: Option<TravelSignal>,
    /// Features of the attempt that the profile has not seen.
    pub novelty: Novelty,
    /// Failed logins for the user in the user failure window.
    pub user_failures: u32,
    /// Activity of the attempt's IP address in the IP window.
    pub ip: IpVelocity,
    /// Network class of the attempt's IP address, serialized as its `as_str` name.
    pub network: NetworkClass,
    /// Whether the user has no verified login yet.
    pub first_login: bool,
    /// Key timings against the user's template; `None` when the attempt carries no timings.
    /// [`compute_signals`] leaves it empty; the engine fills it with [`assess_keystroke`].
    ///
    /// [`assess_keystroke`]: crate::assess_keystroke
    pub keystroke: Option<KeystrokeSignal>,
}

/// Features of the attempt that are new for the user; all false without verified history.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Novelty {
    /// The device id is unknown, or missing while most verified logins carried one.
    pub new_device: bool,
    /// The device is trusted and its trust has not expired at the attempt time.
    pub trusted_device: bool,
    /// The country has not been seen in verified logins.
    pub new_country: bool,
    /// The city has not been seen in verified logins.
    pub new_city: bool,
    /// The autonomous system has not been seen in verified logins.
    pub new_asn: bool,
    /// The browser family has not been seen in verified logins.
    pub new_browser: bool,
    /// The OS family has not been seen in verified logins.
    pub new_os: bool,
    /// No verified login happened in this UTC hour of day, after enough logins to tell.
    pub unusual_hour: bool,
}

/// Returns whether the geo lookup gives a location that signals may use.
pub(crate) fn is_geo_known(geo: &GeoInfo) -> bool {
    let routable = !matches!(geo.network, NetworkClass::Private | NetworkClass::Reserved);
    routable && geo.location.is_some()
}

/// Computes the signals for an attempt from the user's profile and the IP's activity.
///
/// The result depends only on the arguments, so replays give the same signals.
pub fn compute_signals(
    profile: &Profile,
    ip: IpVelocity,
    facts: &AttemptFacts<'_>,
    config: &SignalConfig,
) -> Signals {
    let geo_known = is_geo_known(facts.geo);
    let travel = facts
        .geo
        .location
        .as_ref()
        .filter(|_| geo_known)
        .and_then(|location| {
            let destination = Destination {
                at: facts.at,
                location,
                network: facts.geo.network,
            };
            strongest_travel(&profile.locations, &destination, config)
        });
    Signals {
        geo_known,
        travel,
        novelty: novelty(profile, facts, config),
        user_failures: profile.failures_in_window(facts.at, config.user_failure_window_s),
        ip,
        network: facts.geo.network,
        first_login: profile.verified_logins == 0,
        keystroke: None,
    }
}

/// Compares the attempt's features with the profile.
fn novelty(profile: &Profile, facts: &AttemptFacts<'_>, config: &SignalConfig) -> Novelty {
    let trusted_device = facts
        .device_id
        .is_some_and(|device_id| profile.is_trusted_device(device_id, facts.at));
    if profile.verified_logins == 0 {
        return Novelty {
            trusted_device,
            ..Novelty::default()
        };
    }

    let new_device = match facts.device_id {
        Some(device_id) => !profile.devices.contains_key(device_id),
        None => profile.usually_has_device(),
    };
    let location = facts
        .geo
        .location
        .as_ref()
        .filter(|_| is_geo_known(facts.geo));
    let country = location.and_then(|location| location.country.as_ref());
    let city = location.and_then(city_key);
    let hour = facts.at.hour() as usize;

    Novelty {
        new_device,
        trusted_device,
        new_country: country.is_some_and(|country| !profile.countries.contains_key(country)),
        new_city: city.is_some_and(|city| !profile.cities.contains_key(&city)),
        new_asn: facts
            .geo
            .asn
            .as_ref()
            .is_some_and(|asn| !profile.asns.contains_key(&asn.number)),
        new_browser: !profile.browsers.contains_key(&facts.ua.browser),
        new_os: !profile.oses.contains_key(&facts.ua.os),
        unusual_hour: profile.verified_logins >= config.unusual_hour_min_logins
            && profile.hours[hour] == 0,
    }
}

#[cfg(test)]
#[path = "signals_tests.rs"]
mod tests;
