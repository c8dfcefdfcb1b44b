//! Tunables for signal computation and the bounds on stored state.

use serde::{Deserialize, Serialize};

/// Errors from [`SignalConfig::validate`].
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ConfigError {
    /// A numeric setting is outside the range it needs to be in.
    #[error("invalid `{key}` value {value}: {expected}")]
    OutOfRange {
        /// Name of the offending key.
        key: &'static str,
        /// The value as given, for display.
        value: String,
        /// Accepted range, phrased as advice to the operator.
        expected: &'static str,
    },
}

/// Settings for signal computation, profile bounds and IP velocity windows.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SignalConfig {
    /// Maximum plausible travel speed in km/h. Attempts whose lower-bound speed from a recent
    /// verified location exceeds it are flagged as impossible travel. Default: 1000, a bit over
    /// airliner cruise speed.
    #[serde(default = "default_max_speed_kmh")]
    pub max_speed_kmh: f64,
    /// Number of recent verified locations kept per user for travel checks. Default: 8.
    #[serde(default = "default_travel_history")]
    pub travel_history: usize,
    /// Maximum age in seconds of a verified location that still counts for travel checks.
    /// Default: 604800 (7 days).
    #[serde(default = "default_travel_lookback_s")]
    pub travel_lookback_s: i64,
    /// Sliding window in seconds for counting a user's failed logins. Default: 900 (15 minutes).
    #[serde(default = "default_user_failure_window_s")]
    pub user_failure_window_s: i64,
    /// Sliding window in seconds for per-IP failures, attempts and distinct users.
    /// Default: 3600 (1 hour).
    #[serde(default = "default_ip_window_s")]
    pub ip_window_s: i64,
    /// Maximum number of IP addresses tracked for velocity. When full, expired entries and then
    /// the least recently seen ones are evicted. Default: 1000000.
    #[serde(default = "default_max_tracked_ips")]
    pub max_tracked_ips: usize,
    /// Maximum events of each kind (attempts, failures) kept per IP address within the window.
    /// Per-IP counts saturate at this value. Default: 256.
    #[serde(default = "default_max_events_per_ip")]
    pub max_events_per_ip: usize,
    /// Maximum devices remembered per user; the least recently seen is evicted first, and
    /// devices with active trust only when no untrusted one is left. Default: 32.
    #[serde(default = "default_max_devices")]
    pub max_devices: usize,
    /// Maximum distinct values remembered per user for each novelty feature (country, city,
    /// ASN, browser, OS); the least recently seen is evicted first. Default: 64.
    #[serde(default = "default_max_values_per_feature")]
    pub max_values_per_feature: usize,
    /// Minimum number of verified logins before the unusual-hour signal can fire. Default: 10.
    #[serde(default = "default_unusual_hour_min_logins")]
    pub unusual_hour_min_logins: u64,
}

fn default_max_speed_kmh() -> f64 {
    1000.0
}

fn default_travel_history() -> usize {
    8
}

fn default_travel_lookback_s() -> i64 {
    7 * 24 * 3600
}

pub(crate) fn default_user_failure_window_s() -> i64 {
    900
}

fn default_ip_window_s() -> i64 {
    3600
}

fn default_max_tracked_ips() -> usize {
    1_000_000
}

fn default_max_events_per_ip() -> usize {
    256
}

fn default_max_devices() -> usize {
    32
}

fn default_max_values_per_feature() -> usize {
    64
}

fn default_unusual_hour_min_logins() -> u64 {
    10
}

// === impl SignalConfig ===

impl Default for SignalConfig {
    fn default() -> Self {
        Self {
            max_speed_kmh: default_max_speed_kmh(),
            travel_history: default_travel_history(),
            travel_lookback_s: default_travel_lookback_s(),
            user_failure_window_s: default_user_failure_window_s(),
            ip_window_s: default_ip_window_s(),
            max_tracked_ips: default_max_tracked_ips(),
            max_events_per_ip: default_max_events_per_ip(),
            max_devices: default_max_devices(),
            max_values_per_feature: default_max_values_per_feature(),
            unusual_hour_min_logins: default_unusual_hour_min_logins(),
        }
    }
}

impl SignalConfig {
    /// Checks that every setting is usable and names the first bad key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(self.max_speed_kmh.is_finite() && self.max_speed_kmh > 0.0) {
            return Err(out_of_range(
                "max_speed_kmh",
                self.max_speed_kmh,
                "set a positive speed",
            ));
        }
        let windows = [
            ("travel_lookback_s", self.travel_lookback_s),
            ("user_failure_window_s", self.user_failure_window_s),
            ("ip_window_s", self.ip_window_s),
        ];
        for (key, value) in windows {
            if value <= 0 {
                return Err(out_of_range(key, value, "set a positive number of seconds"));
            }
        }
        let bounds = [
            ("travel_history", self.travel_history),
            ("max_tracked_ips", self.max_tracked_ips),
            ("max_events_per_ip", self.max_events_per_ip),
            ("max_devices", self.max_devices),
            ("max_values_per_feature", self.max_values_per_feature),
        ];
        for (key, value) in bounds {
            if value == 0 {
                return Err(out_of_range(key, value, "set a bound of at least 1"));
            }
        }
        Ok(())
    }
}

fn out_of_range(key: &'static str, value: impl ToString, expected: &'static str) -> ConfigError {
    ConfigError::OutOfRange {
        key,
        value: value.to_string(),
        expected,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        assert_eq!(SignalConfig::default().validate(), Ok(()));
    }

    #[test]
    fn empty_document_gives_defaults() {
        let config: SignalConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(config, SignalConfig::default());
    }

    #[test]
    fn rejects_unknown_key() {
        let error = serde_json::from_str::<SignalConfig>(r#"{"max_speed_kph": 900}"#)
            .expect_err("a misspelt key must be rejected");
        assert!(error.to_string().contains("max_speed_kph"), "{error}");
    }

    type Mutation = fn(&mut SignalConfig);

    #[test]
    fn validate_names_bad_key() {
        let cases: [(&str, Mutation); 4] = [
            ("max_speed_kmh", |c| c.max_speed_kmh = 0.0),
            ("max_speed_kmh", |c| c.max_speed_kmh = f64::NAN),
            ("ip_window_s", |c| c.ip_window_s = -5),
            ("max_devices", |c| c.max_devices = 0),
        ];
        for (key, mutate) in cases {
            let mut config = SignalConfig::default();
            mutate(&mut config);
            let error = config.validate().expect_err(key);
            assert!(error.to_string().contains(key), "{key}: {error}");
        }
    }
}
