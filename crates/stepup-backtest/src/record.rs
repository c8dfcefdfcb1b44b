//! Flattened decisions of a backtest, and the comparison of two decisions on one event.

use std::collections::HashMap;
use std::net::IpAddr;

use serde::Serialize;
use stepup_events::{Decision, Event, EventBody, Factor, Requirement};
use stepup_geo::Geo;

use crate::input::Labels;

/// Reason code of the score breakdown that the engine adds to every login decision. The score
/// has its own column, so the code is left out of `reason_codes`.
const RISK_SCORE_CODE: &str = "risk_score";

/// Label of decisions that no rule and no engine reason gave: allow by default.
pub const NO_RULE: &str = "(none)";

/// Prefix of labels for decisions the engine made without a rule, such as `stale_mfa`.
const ENGINE_PREFIX: &str = "engine:";

/// One decision, flattened for tables and summaries.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DecisionRecord {
    /// Requirement of the decision.
    pub requirement: Requirement,
    /// Factors allowed for `mfa`; empty otherwise.
    pub factors: Vec<Factor>,
    /// Risk score in `[0, 1]`.
    pub risk_score: f64,
    /// Ids of the rules whose verdict decided, in rule order. When no rule decided, one
    /// `engine:<code>` entry per engine reason, or [`NO_RULE`] when there is none.
    pub decided_by: Vec<String>,
    /// Reason codes of the decision in order, without `risk_score`.
    pub reason_codes: Vec<String>,
    /// Shadow rules that would have asked for more than `allow`, as `rule_id=requirement`.
    pub shadow: Vec<String>,
}

/// Facts about a decided event that do not depend on the rules.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct EventFacts {
    /// Country of the event's IP address (ISO 3166-1 alpha-2), when the GeoIP data has one.
    pub country: Option<String>,
    /// Autonomous system number of the event's IP address, when known.
    pub asn: Option<u32>,
    /// Network class of the event's IP address; `None` when the event has no address.
    pub network: Option<&'static str>,
    /// Labels from the input.
    pub labels: Labels,
}

/// Kind of difference between the candidate's and the baseline's decision on an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    /// The requirement differs (for example `allow` to `mfa`).
    Requirement,
    /// Same requirement, different allowed factors.
    Factors,
    /// Same requirement and factors, decided by different rules or reasons.
    Rules,
}

// === impl DecisionRecord ===

impl DecisionRecord {
    /// Flattens a decision.
    pub fn of(decision: &Decision) -> Self {
        let mut decided_by: Vec<String> = Vec::new();
        for reason in &decision.reasons {
            if !reason.rule_id.is_empty() && !decided_by.contains(&reason.rule_id) {
                decided_by.push(reason.rule_id.clone());
            }
        }
        let reason_codes: Vec<String> = decision
            .reasons
            .iter()
            .filter(|reason| reason.code != RISK_SCORE_CODE)
            .map(|reason| reason.code.clone())
            .collect();
        if decided_by.is_empty() {
            decided_by = decision
                .reasons
                .iter()
                .filter(|reason| reason.code != RISK_SCORE_CODE)
                .map(|reason| format!("{ENGINE_PREFIX}{}", reason.code))
                .collect();
        }
        if decided_by.is_empty() {
            decided_by.push(NO_RULE.to_owned());
        }
        let shadow = decision
            .shadow
            .iter()
            .filter(|verdict| verdict.requirement != Requirement::Allow)
            .map(|verdict| format!("{}={}", verdict.rule_id, verdict.requirement.as_str()))
            .collect();
        Self {
            requirement: decision.requirement,
            factors: decision.factors.clone(),
            risk_score: decision.risk_score,
            decided_by,
            reason_codes,
            shadow,
        }
    }

    /// Returns true for `mfa` and `deny`, the requirements that stop a plain login.
    pub fn is_step_up(&self) -> bool {
        self.requirement != Requirement::Allow
    }

    /// Returns how `self`, the candidate's record, differs from `baseline`.
    pub fn change_from(&self, baseline: &DecisionRecord) -> Option<Change> {
        if self.requirement != baseline.requirement {
            Some(Change::Requirement)
        } else if self.factors != baseline.factors {
            Some(Change::Factors)
        } else if self.decided_by != baseline.decided_by {
            Some(Change::Rules)
        } else {
            None
        }
    }
}

/// Joins factor names with `|`.
pub(crate) fn join_factors(factors: &[Factor]) -> String {
    let names: Vec<&str> = factors.iter().map(|factor| factor.as_str()).collect();
    names.join("|")
}

// === impl EventFacts ===

impl EventFacts {
    /// Looks up the event's IP address, if it has one.
    pub fn of(event: &Event, labels: Labels, geo: &Geo) -> Self {
        let Some(ip) = event_ip(event) else {
            return Self {
                labels,
                ..Self::default()
            };
        };
        let (country, asn, network) = lookup(geo, ip);
        Self {
            country,
            asn,
            network: Some(network),
            labels,
        }
    }
}

/// Country, autonomous system and network class of an address.
type IpFacts = (Option<String>, Option<u32>, &'static str);

fn lookup(geo: &Geo, ip: IpAddr) -> IpFacts {
    let info = geo.lookup(ip);
    let country = info.location.and_then(|location| location.country);
    (
        country,
        info.asn.map(|asn| asn.number),
        info.network.as_str(),
    )
}

/// Addresses cached by [`FactsCache`] before it starts over.
const CACHED_ADDRESSES: usize = 200_000;

/// GeoIP facts of recently seen addresses: logins repeat addresses, and a City lookup
/// decodes a whole record.
pub(crate) struct FactsCache<'a> {
    geo: &'a Geo,
    addresses: HashMap<IpAddr, IpFacts>,
}

// === impl FactsCache ===

impl<'a> FactsCache<'a> {
    pub(crate) fn new(geo: &'a Geo) -> Self {
        Self {
            geo,
            addresses: HashMap::new(),
        }
    }

    /// Returns the same as [`EventFacts::of`].
    pub(crate) fn facts(&mut self, event: &Event, labels: Labels) -> EventFacts {
        let Some(ip) = event_ip(event) else {
            return EventFacts {
                labels,
                ..EventFacts::default()
            };
        };
        if self.addresses.len() >= CACHED_ADDRESSES {
            self.addresses.clear();
        }
        let geo = self.geo;
        let (country, asn, network) = self
            .addresses
            .entry(ip)
            .or_insert_with(|| lookup(geo, ip))
            .clone();
        EventFacts {
            country,
            asn,
            network: Some(network),
            labels,
        }
    }
}

fn event_ip(event: &Event) -> Option<IpAddr> {
    match &event.body {
        EventBody::LoginAttempt(attempt) => Some(attempt.ip),
        EventBody::Action(action) => action.ip,
        EventBody::LoginResult(result) => result.ip,
        EventBody::MfaResult(_) | EventBody::Device(_) => None,
    }
}

// === impl Change ===

impl Change {
    /// Returns the snake_case name used in `diff.csv`.
    pub fn as_str(self) -> &'static str {
        match self {
            Change::Requirement => "requirement",
            Change::Factors => "factors",
            Change::Rules => "rules",
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use stepup_events::Reason;

    use super::*;

    fn reason(code: &str, rule_id: &str) -> Reason {
        Reason {
            code: code.into(),
            rule_id: rule_id.into(),
            values: BTreeMap::new(),
            ..Reason::default()
        }
    }

    fn decision(requirement: Requirement, reasons: Vec<Reason>) -> Decision {
        // Built from JSON so fields added to `Decision` later keep their serde defaults.
        serde_json::from_value(serde_json::json!({
            "event_id": "e1",
            "user_id": "u1",
            "requirement": requirement,
            "factors": [],
            "risk_score": 0.1,
            "risk_level": "low",
            "reasons": reasons,
            "user_message": "",
            "remember_device_ttl_s": 0,
            "rule_set_version": "v",
            "decided_at": "2026-03-02T09:00:00Z",
            "expires_at": "2026-03-02T09:05:00Z",
        }))
        .unwrap()
    }

    #[test]
    fn rules_come_from_reasons_in_order() {
        let reasons = vec![
            reason("new_country", "new_country"),
            reason("score", "high_risk_score"),
            reason("risk_score", ""),
        ];
        let record = DecisionRecord::of(&decision(Requirement::Mfa, reasons));

        assert_eq!(record.decided_by, ["new_country", "high_risk_score"]);
        assert_eq!(record.reason_codes, ["new_country", "score"]);
    }

    #[test]
    fn engine_reason_without_rule_is_named() {
        let reasons = vec![reason("stale_mfa", "")];
        let record = DecisionRecord::of(&decision(Requirement::Mfa, reasons));
        assert_eq!(record.decided_by, ["engine:stale_mfa"]);
    }

    #[test]
    fn allow_without_reasons_is_no_rule() {
        let record = DecisionRecord::of(&decision(
            Requirement::Allow,
            vec![reason("risk_score", "")],
        ));
        assert_eq!(record.decided_by, [NO_RULE]);
        assert!(record.reason_codes.is_empty());
    }

    #[test]
    fn change_prefers_requirement_over_rules() {
        let allow = DecisionRecord::of(&decision(Requirement::Allow, Vec::new()));
        let mfa = DecisionRecord::of(&decision(Requirement::Mfa, vec![reason("x", "x")]));
        let other_mfa = DecisionRecord::of(&decision(Requirement::Mfa, vec![reason("y", "y")]));

        assert_eq!(mfa.change_from(&allow), Some(Change::Requirement));
        assert_eq!(other_mfa.change_from(&mfa), Some(Change::Rules));
        assert_eq!(mfa.change_from(&mfa), None);
    }
}
