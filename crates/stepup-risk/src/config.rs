//! Tunables of the risk model: smoothing, prior, signal weights and the population bound.

use serde::{Deserialize, Serialize};

/// Errors from [`RiskConfig::validate`].
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum RiskConfigError {
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

/// Settings of the risk model.
///
/// All weights are in natural-log odds. A weight of 0 turns its term off.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RiskConfig {
    /// Pseudo-count α of the user model: the user's distribution of a feature is smoothed as
    /// if the user had α extra logins spread like the population. A value the user never used
    /// then adds ln((n + α) / α) after n logins: ln 11 ≈ 2.4 at n = 10, ln 101 ≈ 4.6 at
    /// n = 100. Larger values trust short histories less. Must be positive. Default: 1.
    #[serde(default = "default_alpha")]
    pub alpha: f64,
    /// Pseudo-count β added to every population count (add-β smoothing), so a value never seen
    /// in the population keeps a small non-zero probability. Must be positive. Default: 1.
    #[serde(default = "default_beta")]
    pub beta: f64,
    /// Log-odds of an attack before any evidence. Default: ln(1/1000) ≈ -6.91.
    #[serde(default = "default_prior_log_odds")]
    pub prior_log_odds: f64,
    /// Lower bound on each history term in log-odds. The client chooses its browser, OS and
    /// device id, so an attacker can copy them. The bound stops one familiar value from
    /// outweighing everything else. Must be at most 0. Default: -4.
    #[serde(default = "default_history_term_min_log_odds")]
    pub history_term_min_log_odds: f64,
    /// Upper bound on each history term in log-odds. Must be at least 0. Default: 6.
    #[serde(default = "default_history_term_max_log_odds")]
    pub history_term_max_log_odds: f64,
    /// Log-odds added for impossible travel at confidence 1; the term is this weight times
    /// the travel confidence. Default: 6.
    #[serde(default = "default_travel_log_odds")]
    pub travel_log_odds: f64,
    /// Log-odds added per failed login of the user in the user failure window. Default: 0.5.
    #[serde(default = "default_user_failure_log_odds")]
    pub user_failure_log_odds: f64,
    /// Number of user failures beyond which the failure term stops growing. Default: 5.
    #[serde(default = "default_max_user_failures")]
    pub max_user_failures: u32,
    /// Log-odds added per distinct user with a failed login from the attempt's IP address in
    /// the IP window, above `spray_min_users` (password spraying, credential stuffing).
    /// Default: 0.5.
    #[serde(default = "default_spray_log_odds")]
    pub spray_log_odds: f64,
    /// Distinct failed users per IP address that add nothing: shared addresses (offices,
    /// carrier NAT) see a few failures from different users. Default: 2.
    #[serde(default = "default_spray_min_users")]
    pub spray_min_users: u32,
    /// Distinct failed users per IP address beyond which the spraying term stops growing.
    /// Must be at least `spray_min_users`. Default: 12.
    #[serde(default = "default_spray_max_users")]
    pub spray_max_users: u32,
    /// Log-odds added when the IP address belongs to a hosting or data-centre network.
    /// Default: 1.5.
    #[serde(default = "default_hosting_log_odds")]
    pub hosting_log_odds: f64,
    /// Log-odds added when the IP address is a VPN, proxy or Tor exit. Default: 2.
    #[serde(default = "default_anonymous_log_odds")]
    pub anonymous_log_odds: f64,
    /// Log-odds per unit of keystroke score above `keystroke_neutral_score`; a score below it
    /// subtracts. The keystroke score is in `[0, 1]`, 0 when the typing matches the user's
    /// template and 1 when it is far from it. Default: 4, so the term spans -2 to +2.
    #[serde(default = "default_keystroke_log_odds")]
    pub keystroke_log_odds: f64,
    /// Keystroke score that adds nothing, in `[0, 1]`. Default: 0.5.
    #[serde(default = "default_keystroke_neutral_score")]
    pub keystroke_neutral_score: f64,
    /// Maximum distinct values the population keeps per feature. When a new value arrives at
    /// the bound, all counts of that feature are halved and values that reach 0 are dropped.
    /// Default: 100000.
    #[serde(default = "default_max_values_per_feature")]
    pub max_values_per_feature: usize,
}

fn default_alpha() -> f64 {
    1.0
}

fn default_beta() -> f64 {
    1.0
}

fn default_prior_log_odds() -> f64 {
    (1.0_f64 / 1000.0).ln()
}

fn default_history_term_min_log_odds() -> f64 {
    -4.0
}

fn default_history_term_max_log_odds() -> f64 {
    6.0
}

fn default_travel_log_odds() -> f64 {
    6.0
}

fn default_user_failure_log_odds() -> f64 {
    0.5
}

fn default_max_user_failures() -> u32 {
    5
}

fn default_spray_log_odds() -> f64 {
    0.5
}

fn default_spray_min_users() -> u32 {
    2
}

fn default_spray_max_users() -> u32 {
    12
}

fn default_hosting_log_odds() -> f64 {
    1.5
}

fn default_anonymous_log_odds() -> f64 {
    2.0
}

fn default_keystroke_log_odds() -> f64 {
    4.0
}

fn default_keystroke_neutral_score() -> f64 {
    0.5
}

fn default_max_values_per_feature() -> usize {
    100_000
}

// === impl RiskConfig ===

impl Default for RiskConfig {
    fn default() -> Self {
        Self {
            alpha: default_alpha(),
            beta: default_beta(),
            prior_log_odds: default_prior_log_odds(),
            history_term_min_log_odds: default_history_term_min_log_odds(),
            history_term_max_log_odds: default_history_term_max_log_odds(),
            travel_log_odds: default_travel_log_odds(),
            user_failure_log_odds: default_user_failure_log_odds(),
            max_user_failures: default_max_user_failures(),
            spray_log_odds: default_spray_log_odds(),
            spray_min_users: default_spray_min_users(),
            spray_max_users: default_spray_max_users(),
            hosting_log_odds: default_hosting_log_odds(),
            anonymous_log_odds: default_anonymous_log_odds(),
            keystroke_log_odds: default_keystroke_log_odds(),
            keystroke_neutral_score: default_keystroke_neutral_score(),
            max_values_per_feature: default_max_values_per_feature(),
        }
    }
}

impl RiskConfig {
    /// Checks that every setting is usable and names the first bad key.
    pub fn validate(&self) -> Result<(), RiskConfigError> {
        for (key, value) in [("alpha", self.alpha), ("beta", self.beta)] {
            if !(value.is_finite() && value > 0.0) {
                return Err(out_of_range(key, value, "set a positive pseudo-count"));
            }
        }
        if !self.prior_log_odds.is_finite() {
            let expected = "set a finite log-odds, e.g. -6.91 for 1 in 1000";
            return Err(out_of_range(
                "prior_log_odds",
                self.prior_log_odds,
                expected,
            ));
        }
        let min = self.history_term_min_log_odds;
        if !(min.is_finite() && min <= 0.0) {
            let expected = "set a finite value of at most 0";
            return Err(out_of_range("history_term_min_log_odds", min, expected));
        }
        let max = self.history_term_max_log_odds;
        if !(max.is_finite() && max >= 0.0) {
            let expected = "set a finite value of at least 0";
            return Err(out_of_range("history_term_max_log_odds", max, expected));
        }
        self.validate_weights()?;
        self.validate_bounds()
    }

    fn validate_weights(&self) -> Result<(), RiskConfigError> {
        let weights = [
            ("travel_log_odds", self.travel_log_odds),
            ("user_failure_log_odds", self.user_failure_log_odds),
            ("spray_log_odds", self.spray_log_odds),
            ("hosting_log_odds", self.hosting_log_odds),
            ("anonymous_log_odds", self.anonymous_log_odds),
            ("keystroke_log_odds", self.keystroke_log_odds),
        ];
        for (key, value) in weights {
            if !(value.is_finite() && value >= 0.0) {
                return Err(out_of_range(
                    key,
                    value,
                    "set a finite weight of at least 0",
                ));
            }
        }
        let neutral = self.keystroke_neutral_score;
        if !(0.0..=1.0).contains(&neutral) {
            let expected = "set a score from 0 to 1";
            return Err(out_of_range("keystroke_neutral_score", neutral, expected));
        }
        Ok(())
    }

    fn validate_bounds(&self) -> Result<(), RiskConfigError> {
        if self.spray_max_users < self.spray_min_users {
            let expected = "set it to at least `spray_min_users`";
            return Err(out_of_range(
                "spray_max_users",
                self.spray_max_users,
                expected,
            ));
        }
        if self.max_values_per_feature == 0 {
            let expected = "set a bound of at least 1";
            return Err(out_of_range("max_values_per_feature", 0, expected));
        }
        Ok(())
    }
}

fn out_of_range(
    key: &'static str,
    value: impl ToString,
    expected: &'static str,
) -> RiskConfigError {
    RiskConfigError::OutOfRange {
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
        assert_eq!(RiskConfig::default().validate(), Ok(()));
    }

    #[test]
    fn empty_document_gives_defaults() {
        let config: RiskConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(config, RiskConfig::default());
    }

    #[test]
    fn default_prior_is_one_in_a_thousand() {
        let prior = RiskConfig::default().prior_log_odds;
        assert!((prior - (-6.907_755)).abs() < 1e-6, "{prior}");
    }

    #[test]
    fn rejects_unknown_key() {
        let error = serde_json::from_str::<RiskConfig>(r#"{"alfa": 2}"#)
            .expect_err("a misspelt key must be rejected");
        assert!(error.to_string().contains("alfa"), "{error}");
    }

    type Mutation = fn(&mut RiskConfig);

    #[test]
    fn validate_names_bad_key() {
        let cases: [(&str, Mutation); 9] = [
            ("alpha", |c| c.alpha = 0.0),
            ("beta", |c| c.beta = f64::NAN),
            ("prior_log_odds", |c| c.prior_log_odds = f64::NEG_INFINITY),
            ("history_term_min_log_odds", |c| {
                c.history_term_min_log_odds = 1.0
            }),
            ("history_term_max_log_odds", |c| {
                c.history_term_max_log_odds = -1.0
            }),
            ("spray_log_odds", |c| c.spray_log_odds = -0.5),
            ("keystroke_neutral_score", |c| {
                c.keystroke_neutral_score = 1.5
            }),
            ("spray_max_users", |c| c.spray_max_users = 1),
            ("max_values_per_feature", |c| c.max_values_per_feature = 0),
        ];
        for (key, mutate) in cases {
            let mut config = RiskConfig::default();
            mutate(&mut config);
            let error = config.validate().expect_err(key);
            assert!(error.to_string().contains(key), "{key}: {error}");
        }
    }
}
