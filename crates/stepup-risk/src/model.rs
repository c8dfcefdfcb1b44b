//! The risk model: a log-likelihood ratio of the attempt's features under the population
//! against the user's history, plus log-odds terms for the other signals.
//!
//! For each feature value v the history term is ln p_pop(v) − ln p_user(v), where
//! p_pop(v) = (C(v) + β) / (N + β·V) comes from [`Population`] and
//! p_user(v) = (c(v) + α·p_pop(v)) / (n + α) from the user's history. This is the ratio
//! p(v | attacker) / p(v | user) of Freeman et al., "Who Are You? A Statistical Approach to
//! Measuring User Authenticity" (NDSS 2016), with the attacker approximated by the population
//! and features treated as independent.

use serde::Serialize;
use stepup_events::RiskLevel;
use stepup_geo::NetworkClass;
use stepup_signals::{Feature, FeatureValue, Signals};

use crate::config::{RiskConfig, RiskConfigError};
use crate::features::{AttemptFeatures, UserHistory};
use crate::population::{Lookup, Population};

/// Scores login attempts with a validated [`RiskConfig`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RiskModel {
    config: RiskConfig,
}

/// A score in `[0, 1]` with the contribution of each term, in log-odds.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RiskAssessment {
    /// Probability-like score in `[0, 1]`: the logistic function of `log_odds`.
    pub score: f64,
    /// Band of the score.
    pub level: RiskLevel,
    /// Total log-odds: the prior plus the sum of `contributions`. Scores round to 1 above
    /// about 37, so rank attempts by this value rather than by `score`.
    pub log_odds: f64,
    /// Non-zero contributions in log-odds, largest first. Negative ones lower the score.
    pub contributions: Vec<Contribution>,
    /// Feature with the largest positive contribution, or `none`.
    pub top_factor: &'static str,
}

/// One term's share of the score.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Contribution {
    /// Term name: a [`Feature`] name such as `country`, or `impossible_travel`,
    /// `user_failures`, `ip_distinct_failed_users`, `network` or `keystroke`.
    pub feature: &'static str,
    /// Added log-odds.
    pub log_odds: f64,
    /// Human-readable evidence, for example
    /// `country DE seen in 0 of 42 logins; 3.1% of population`. Never contains an IP address.
    pub detail: String,
}

/// The engine signals the model reads besides the history, in plain numbers.
#[derive(Clone, Debug, PartialEq)]
pub struct SignalInputs {
    /// Confidence in `[0, 1]` that travel from a recent verified location is impossible; 0
    /// when it is possible or unknown.
    pub travel_confidence: f64,
    /// Lower bound on the travel speed in km/h, for the explanation only.
    pub travel_min_speed_kmh: f64,
    /// Failed logins of the user in the user failure window.
    pub user_failures: u32,
    /// Distinct users with a failed login from the attempt's IP address in the IP window.
    pub ip_distinct_failed_users: u32,
    /// Network class of the attempt's IP address.
    pub network: NetworkClass,
    /// Keystroke score in `[0, 1]` (0 matches the user's template), if the attempt had one.
    pub keystroke: Option<f64>,
}

/// Returns the logistic function 1 / (1 + e^−x), without overflow for large |x|.
pub fn logistic(log_odds: f64) -> f64 {
    if log_odds >= 0.0 {
        1.0 / (1.0 + (-log_odds).exp())
    } else {
        let odds = log_odds.exp();
        odds / (1.0 + odds)
    }
}

// === impl RiskModel ===

impl RiskModel {
    /// Creates a model after checking `config`.
    pub fn new(config: RiskConfig) -> Result<Self, RiskConfigError> {
        config.validate()?;
        Ok(Self { config })
    }

    /// Returns the configuration.
    pub fn config(&self) -> &RiskConfig {
        &self.config
    }

    /// Scores an attempt from its features, the user's history, the population counts, the
    /// engine's signals and an optional keystroke score in `[0, 1]`.
    ///
    /// A user without history gets no history terms, so the first login is neither
    /// suspicious nor safe by history alone. It does no I/O and allocates only the
    /// explanation.
    pub fn assess<H: UserHistory + ?Sized>(
        &self,
        features: &AttemptFeatures,
        history: &H,
        population: &Population,
        signals: &Signals,
        keystroke: Option<f64>,
    ) -> RiskAssessment {
        let inputs = SignalInputs::from_signals(signals, keystroke);
        self.assess_inputs(features, history, population, &inputs)
    }

    /// Scores an attempt like [`RiskModel::assess`], from signals given as plain numbers.
    pub fn assess_inputs<H: UserHistory + ?Sized>(
        &self,
        features: &AttemptFeatures,
        history: &H,
        population: &Population,
        inputs: &SignalInputs,
    ) -> RiskAssessment {
        let mut contributions = Vec::with_capacity(Feature::ALL.len() + 5);
        for value in features.values() {
            if let Some(contribution) = self.history_term(value, history, population) {
                contributions.push(contribution);
            }
        }
        self.signal_terms(inputs, &mut contributions);
        RiskAssessment::from_parts(self.config.prior_log_odds, contributions)
    }

    /// Returns the clamped log-likelihood ratio of one value, or `None` when the user has no
    /// history for its feature or the term is 0.
    fn history_term<H: UserHistory + ?Sized>(
        &self,
        value: FeatureValue<'_>,
        history: &H,
        population: &Population,
    ) -> Option<Contribution> {
        let feature = value.feature();
        let total = history.total(feature);
        if total == 0 {
            return None;
        }
        let count = history.count(value).min(total);
        let lookup = population.lookup(value);
        let log_odds = self.log_ratio(count, total, lookup);
        if log_odds == 0.0 {
            return None;
        }
        let detail = format!(
            "{} seen in {count} of {total} logins; {}",
            subject(value),
            population_share(lookup)
        );
        Some(Contribution {
            feature: feature.as_str(),
            log_odds,
            detail,
        })
    }

    /// Returns ln p_pop − ln p_user, clamped to the configured history term bounds.
    fn log_ratio(&self, count: u64, total: u64, lookup: Lookup) -> f64 {
        let alpha = self.config.alpha;
        let p_pop = lookup.probability(self.config.beta);
        let p_user = (count as f64 + alpha * p_pop) / (total as f64 + alpha);
        let ratio = p_pop.ln() - p_user.ln();
        ratio.clamp(
            self.config.history_term_min_log_odds,
            self.config.history_term_max_log_odds,
        )
    }

    fn signal_terms(&self, inputs: &SignalInputs, contributions: &mut Vec<Contribution>) {
        let config = &self.config;
        // The detail is built only for terms that are kept, to spare the allocation.
        let mut add = |feature: &'static str, log_odds: f64, detail: &dyn Fn() -> String| {
            if log_odds != 0.0 && log_odds.is_finite() {
                contributions.push(Contribution {
                    feature,
                    log_odds,
                    detail: detail(),
                });
            }
        };

        let confidence = unit_or_zero(inputs.travel_confidence);
        add(
            "impossible_travel",
            config.travel_log_odds * confidence,
            &|| {
                let speed = inputs.travel_min_speed_kmh;
                format!("travel at >= {speed:.0} km/h, confidence {confidence:.2}")
            },
        );
        let failures = inputs.user_failures.min(config.max_user_failures);
        add(
            "user_failures",
            config.user_failure_log_odds * f64::from(failures),
            &|| {
                let failures = inputs.user_failures;
                format!("{failures} failed logins in the user failure window")
            },
        );
        let sprayed = inputs
            .ip_distinct_failed_users
            .min(config.spray_max_users)
            .saturating_sub(config.spray_min_users);
        add(
            "ip_distinct_failed_users",
            config.spray_log_odds * f64::from(sprayed),
            &|| {
                let users = inputs.ip_distinct_failed_users;
                format!("{users} users with failed logins from this IP address in the IP window")
            },
        );
        add("network", self.network_log_odds(inputs.network), &|| {
            format!("network class {}", inputs.network.as_str())
        });
        if let Some(score) = inputs.keystroke.filter(|score| score.is_finite()) {
            let score = score.clamp(0.0, 1.0);
            let neutral = config.keystroke_neutral_score;
            add(
                "keystroke",
                config.keystroke_log_odds * (score - neutral),
                &|| format!("keystroke score {score:.2} against neutral {neutral:.2}"),
            );
        }
    }

    fn network_log_odds(&self, network: NetworkClass) -> f64 {
        match network {
            NetworkClass::Hosting => self.config.hosting_log_odds,
            NetworkClass::Anonymous => self.config.anonymous_log_odds,
            NetworkClass::Mobile
            | NetworkClass::Satellite
            | NetworkClass::Residential
            | NetworkClass::Private
            | NetworkClass::Reserved => 0.0,
        }
    }
}

/// Returns how a value is named in explanations; IP prefixes and device ids are not shown.
fn subject(value: FeatureValue<'_>) -> String {
    match value {
        FeatureValue::IpPrefix(_) => "IP prefix".to_owned(),
        FeatureValue::Asn(number) => format!("AS{number}"),
        FeatureValue::Country(country) => format!("country {country}"),
        FeatureValue::Browser(browser) => format!("browser {browser}"),
        FeatureValue::Os(os) => format!("OS {os}"),
        FeatureValue::Device(Some(_)) => "device".to_owned(),
        FeatureValue::Device(None) => "no device id".to_owned(),
    }
}

fn population_share(lookup: Lookup) -> String {
    if lookup.total == 0 {
        return "population has no logins yet".to_owned();
    }
    let percent = lookup.share() * 100.0;
    if lookup.count > 0 && percent < 0.1 {
        "<0.1% of population".to_owned()
    } else {
        format!("{percent:.1}% of population")
    }
}

/// Returns `value` clamped to `[0, 1]`, or 0 when it is NaN.
fn unit_or_zero(value: f64) -> f64 {
    if value.is_nan() {
        0.0
    } else {
        value.clamp(0.0, 1.0)
    }
}

// === impl RiskAssessment ===

impl RiskAssessment {
    /// Builds an assessment from a prior and contributions: drops zero terms, sorts the rest
    /// largest first (ties by name), sums the log-odds and applies the logistic function.
    pub fn from_parts(prior_log_odds: f64, mut contributions: Vec<Contribution>) -> Self {
        contributions.retain(|contribution| contribution.log_odds != 0.0);
        contributions.sort_by(|a, b| {
            b.log_odds
                .total_cmp(&a.log_odds)
                .then(a.feature.cmp(b.feature))
        });
        let log_odds = prior_log_odds + contributions.iter().map(|c| c.log_odds).sum::<f64>();
        let score = logistic(log_odds);
        let top_factor = contributions
            .first()
            .filter(|contribution| contribution.log_odds > 0.0)
            .map_or("none", |contribution| contribution.feature);
        Self {
            score,
            level: RiskLevel::from_score(score),
            log_odds,
            contributions,
            top_factor,
        }
    }
}

// === impl SignalInputs ===

impl SignalInputs {
    /// Takes the model's inputs from the engine's signals and an optional keystroke score.
    pub fn from_signals(signals: &Signals, keystroke: Option<f64>) -> Self {
        let travel = signals.travel.as_ref().filter(|travel| travel.impossible);
        Self {
            travel_confidence: travel.map_or(0.0, |travel| travel.confidence),
            travel_min_speed_kmh: travel.map_or(0.0, |travel| travel.min_speed_kmh),
            user_failures: signals.user_failures,
            ip_distinct_failed_users: signals.ip.distinct_failed_users,
            network: signals.network,
            keystroke,
        }
    }
}

impl Default for SignalInputs {
    /// Returns inputs that add nothing: no travel, failures or keystroke score, residential
    /// network.
    fn default() -> Self {
        Self {
            travel_confidence: 0.0,
            travel_min_speed_kmh: 0.0,
            user_failures: 0,
            ip_distinct_failed_users: 0,
            network: NetworkClass::Residential,
            keystroke: None,
        }
    }
}

#[cfg(test)]
#[path = "model_tests.rs"]
mod tests;
