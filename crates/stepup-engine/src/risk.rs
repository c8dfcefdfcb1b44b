//! The risk score: a logistic combination of signal contributions, each kept for the
//! explanation.

use serde::Serialize;
use stepup_events::RiskLevel;
use stepup_geo::NetworkClass;
use stepup_signals::Signals;

/// Log-odds of the score before any signal fires: a sigmoid of -3 is about 0.05.
const BASE_LOG_ODDS: f64 = -3.0;

/// A score in `[0, 1]` with the contribution of each signal, in log-odds.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RiskAssessment {
    /// Probability-like score in `[0, 1]`.
    pub score: f64,
    /// Band of the score.
    pub level: RiskLevel,
    /// Contributions in log-odds, largest first; only non-zero ones.
    pub contributions: Vec<Contribution>,
    /// Feature with the largest contribution, or `none`.
    pub top_factor: &'static str,
}

/// One feature's share of the score.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Contribution {
    /// Feature name, for example `new_device`.
    pub feature: &'static str,
    /// Added log-odds.
    pub log_odds: f64,
}

/// Scores a login attempt from its signals.
pub fn assess(signals: &Signals) -> RiskAssessment {
    let mut contributions = Vec::new();
    let mut add = |feature: &'static str, log_odds: f64| {
        if log_odds != 0.0 {
            contributions.push(Contribution { feature, log_odds });
        }
    };

    if let Some(travel) = &signals.travel
        && travel.impossible
    {
        add("impossible_travel", 5.0 * travel.confidence);
    }
    let novelty = &signals.novelty;
    if !signals.first_login {
        add(
            "new_device",
            if novelty.new_device && !novelty.trusted_device {
                1.2
            } else {
                0.0
            },
        );
        add("new_country", if novelty.new_country { 1.5 } else { 0.0 });
        add(
            "new_city",
            if novelty.new_city && !novelty.new_country {
                0.4
            } else {
                0.0
            },
        );
        add("new_asn", if novelty.new_asn { 0.6 } else { 0.0 });
        add("new_browser", if novelty.new_browser { 0.4 } else { 0.0 });
        add("new_os", if novelty.new_os { 0.4 } else { 0.0 });
        add("unusual_hour", if novelty.unusual_hour { 0.3 } else { 0.0 });
    }
    add("network", network_log_odds(signals.network));
    add(
        "user_failures",
        0.4 * f64::from(signals.user_failures.min(5)),
    );
    let sprayed = signals.ip.distinct_failed_users.saturating_sub(2).min(8);
    add("ip_distinct_failed_users", 0.5 * f64::from(sprayed));
    add(
        "ip_failures",
        0.1 * f64::from(signals.ip.failures.saturating_sub(3).min(10)),
    );

    contributions.sort_by(|a, b| {
        b.log_odds
            .total_cmp(&a.log_odds)
            .then(a.feature.cmp(b.feature))
    });
    let total: f64 = BASE_LOG_ODDS + contributions.iter().map(|c| c.log_odds).sum::<f64>();
    let score = 1.0 / (1.0 + (-total).exp());
    let top_factor = contributions.first().map_or("none", |c| c.feature);
    RiskAssessment {
        score,
        level: RiskLevel::from_score(score),
        contributions,
        top_factor,
    }
}

fn network_log_odds(network: NetworkClass) -> f64 {
    match network {
        NetworkClass::Hosting => 1.5,
        NetworkClass::Anonymous => 2.0,
        NetworkClass::Satellite => 0.2,
        NetworkClass::Mobile
        | NetworkClass::Residential
        | NetworkClass::Private
        | NetworkClass::Reserved => 0.0,
    }
}
