//! Impossible-travel check against a user's recent verified locations.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use stepup_geo::{Location, NetworkClass, great_circle_km};

use crate::config::SignalConfig;

/// Shortest elapsed time used for speed, so that near-simultaneous logins do not divide by ~0.
const MIN_ELAPSED_S: f64 = 60.0;

/// Rate at which confidence approaches 1 as the speed bound rises above the limit. At twice
/// the limit the speed part of the confidence is 1 - e^-1.5, about 0.78.
const SPEED_CONFIDENCE_RATE: f64 = 1.5;

/// Multiplier on confidence when either side is on a network whose egress point is often far
/// from the user (mobile carrier, satellite, VPN or proxy).
const UNCERTAIN_NETWORK_FACTOR: f64 = 0.5;

/// Evidence that an attempt is too far from a recent verified login to be the same person.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct TravelSignal {
    /// City of the earlier verified login.
    pub from_city: Option<String>,
    /// Country of the earlier verified login.
    pub from_country: Option<String>,
    /// City of this attempt.
    pub to_city: Option<String>,
    /// Country of this attempt.
    pub to_country: Option<String>,
    /// Great-circle distance between the two locations in km.
    pub distance_km: f64,
    /// Distance minus both accuracy radii in km, never negative.
    pub min_distance_km: f64,
    /// Seconds between the two events, as an absolute value.
    pub elapsed_s: f64,
    /// Lower bound on the travel speed in km/h: `min_distance_km` over `elapsed_s`, with
    /// elapsed time clamped to at least 60 s.
    pub min_speed_kmh: f64,
    /// Whether `min_speed_kmh` exceeds the configured maximum speed.
    pub impossible: bool,
    /// Confidence in `[0, 1]` that the travel is really impossible, or 0 when it is not.
    pub confidence: f64,
}

/// A verified login location as stored in a profile, without the IP address.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct VerifiedLocation {
    pub(crate) at: DateTime<Utc>,
    pub(crate) latitude: f64,
    pub(crate) longitude: f64,
    pub(crate) accuracy_km: f64,
    pub(crate) city: Option<String>,
    pub(crate) country: Option<String>,
    /// Network class name as returned by `NetworkClass::as_str`.
    pub(crate) network: String,
}

/// The attempt side of a travel comparison.
pub(crate) struct Destination<'a> {
    pub(crate) at: DateTime<Utc>,
    pub(crate) location: &'a Location,
    pub(crate) network: NetworkClass,
}

/// Returns whether a network's egress point is often far from the user.
pub(crate) fn is_uncertain_egress(network: NetworkClass) -> bool {
    matches!(
        network,
        NetworkClass::Mobile | NetworkClass::Satellite | NetworkClass::Anonymous
    )
}

fn is_uncertain_egress_name(name: &str) -> bool {
    NetworkClass::ALL
        .into_iter()
        .any(|class| is_uncertain_egress(class) && class.as_str() == name)
}

/// Compares the attempt with every verified location within the lookback window and returns
/// the comparison with the highest confidence.
///
/// Ties go to the higher speed, then to the newer location. Returns `None` when no location
/// is recent enough.
pub(crate) fn strongest_travel(
    history: &[VerifiedLocation],
    destination: &Destination<'_>,
    config: &SignalConfig,
) -> Option<TravelSignal> {
    let mut best: Option<TravelSignal> = None;
    // History is oldest first; walking it newest first lets strict comparison prefer the newer.
    for origin in history.iter().rev() {
        let age_s = (destination.at - origin.at).num_seconds().abs();
        if age_s > config.travel_lookback_s {
            continue;
        }
        let candidate = compare(origin, destination, config.max_speed_kmh);
        if best
            .as_ref()
            .is_none_or(|current| is_stronger(&candidate, current))
        {
            best = Some(candidate);
        }
    }
    best
}

fn is_stronger(candidate: &TravelSignal, current: &TravelSignal) -> bool {
    let by_confidence = candidate.confidence.total_cmp(&current.confidence);
    by_confidence
        .then(candidate.min_speed_kmh.total_cmp(&current.min_speed_kmh))
        .is_gt()
}

/// Computes the travel evidence between one verified location and the attempt.
pub(crate) fn compare(
    origin: &VerifiedLocation,
    destination: &Destination<'_>,
    max_speed_kmh: f64,
) -> TravelSignal {
    let to = destination.location;
    let distance_km = great_circle_km(
        (origin.latitude, origin.longitude),
        (to.latitude, to.longitude),
    );
    let radii_km = radius_km(origin.accuracy_km) + radius_km(to.accuracy_km);
    // `f64::max` returns the other operand for NaN, so a NaN distance also ends up as 0.
    let min_distance_km = (distance_km - radii_km).max(0.0);
    let elapsed_s = (destination.at - origin.at).num_milliseconds().abs() as f64 / 1000.0;
    let min_speed_kmh = min_distance_km / (elapsed_s.max(MIN_ELAPSED_S) / 3600.0);
    let impossible = min_speed_kmh > max_speed_kmh;

    let uncertain =
        is_uncertain_egress_name(&origin.network) || is_uncertain_egress(destination.network);
    let confidence = if impossible {
        travel_confidence(
            min_speed_kmh / max_speed_kmh,
            min_distance_km / distance_km,
            uncertain,
        )
    } else {
        0.0
    };

    TravelSignal {
        from_city: origin.city.clone(),
        from_country: origin.country.clone(),
        to_city: to.city.clone(),
        to_country: to.country.clone(),
        distance_km,
        min_distance_km,
        elapsed_s,
        min_speed_kmh,
        impossible,
        confidence,
    }
}

/// Treats a missing, negative or non-finite accuracy radius as 0 km.
fn radius_km(accuracy_km: f64) -> f64 {
    if accuracy_km.is_finite() {
        accuracy_km.max(0.0)
    } else {
        0.0
    }
}

/// Combines how far the speed bound exceeds the limit (`speed_ratio` > 1) with how much of the
/// distance survives the accuracy radii (`precision` in `[0, 1]`).
fn travel_confidence(speed_ratio: f64, precision: f64, uncertain_network: bool) -> f64 {
    let speed_part = 1.0 - (-SPEED_CONFIDENCE_RATE * (speed_ratio - 1.0)).exp();
    let network_part = if uncertain_network {
        UNCERTAIN_NETWORK_FACTOR
    } else {
        1.0
    };
    (speed_part * precision * network_part).clamp(0.0, 1.0)
}

#[cfg(test)]
#[path = "travel_tests.rs"]
mod tests;
