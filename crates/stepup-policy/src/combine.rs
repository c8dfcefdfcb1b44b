//! The result of one evaluation and how live verdicts combine into it.
//!
//! The strictest live verdict wins (`deny` over `mfa` over `allow`); without any live opinion
//! the result is `allow` with no reasons. For `mfa`, the allowed factors are those every live
//! `mfa` verdict allows, in the order of [`Factor::ALL`]. When no factor is common to all of
//! them, only [`Factor::Webauthn`] (the strongest) is allowed, and a `factor_conflict` reason
//! records the conflict.

use serde::Serialize;
use stepup_events::{Factor, Reason, Requirement, reason_user_message};

use crate::meta::{RuleMeta, RuleMode};
use crate::policy::RULE_ERROR_CODE;
use crate::sandbox::Verdict;

/// Reason code added when the live `mfa` verdicts share no factor.
pub const FACTOR_CONFLICT_CODE: &str = "factor_conflict";

/// Factor allowed when the live `mfa` verdicts share none.
const CONFLICT_FALLBACK: Factor = Factor::Webauthn;

/// Outcome of evaluating every rule for one event.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Evaluation {
    /// Strictest live verdict, or `allow` when no live rule gave one.
    pub requirement: Requirement,
    /// Factors that satisfy an `mfa` requirement, strongest first; empty otherwise.
    pub factors: Vec<Factor>,
    /// One reason per live rule whose verdict equals `requirement`, in rule order, plus a
    /// `factor_conflict` reason when the factor sets had nothing in common.
    pub reasons: Vec<Reason>,
    /// Rules, live or shadow, that failed at run time or hit a sandbox limit.
    pub rule_errors: Vec<RuleError>,
    /// Verdicts of shadow rules, one per shadow rule in rule order; never enforced.
    pub shadow: Vec<ShadowVerdict>,
    /// [`RuleSet::version`](crate::RuleSet::version) of the rules that ran.
    pub rule_set_version: String,
    /// Ids of the live rules whose verdict equals `requirement`, in rule order.
    pub deciding_rules: Vec<String>,
}

/// A rule that failed during one evaluation; its verdict was replaced by the fail mode.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RuleError {
    /// Id of the rule.
    pub rule_id: String,
    /// Whether the rule is live or shadow.
    pub mode: RuleMode,
    /// Rhai's error message with the line, or why the return value was rejected.
    pub message: String,
}

/// Verdict a shadow rule would have given, reported but never enforced.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ShadowVerdict {
    /// Id of the rule.
    pub rule_id: String,
    /// Version of the rule.
    pub rule_version: String,
    /// Verdict of the rule; `allow` both for an explicit `allow` and for no opinion.
    pub requirement: Requirement,
    /// Factors an `mfa` verdict allows; empty for other verdicts.
    pub factors: Vec<Factor>,
    /// Reason of the verdict; `None` when the rule returned `()`.
    pub reason: Option<Reason>,
}

/// Converts to the decision's form: the reason shrinks to its code.
impl From<&ShadowVerdict> for stepup_events::ShadowVerdict {
    fn from(verdict: &ShadowVerdict) -> Self {
        stepup_events::ShadowVerdict {
            rule_id: verdict.rule_id.clone(),
            rule_version: verdict.rule_version.clone(),
            requirement: verdict.requirement,
            factors: verdict.factors.clone(),
            reason_code: verdict
                .reason
                .as_ref()
                .map(|reason| reason.code.clone())
                .unwrap_or_default(),
        }
    }
}

/// Verdict of one rule that gave an opinion.
pub(crate) struct RuleVerdict<'a> {
    pub(crate) meta: &'a RuleMeta,
    pub(crate) verdict: Verdict,
}

/// The live part of an [`Evaluation`].
#[derive(Debug, PartialEq)]
pub(crate) struct Combined {
    pub(crate) requirement: Requirement,
    pub(crate) factors: Vec<Factor>,
    pub(crate) reasons: Vec<Reason>,
    pub(crate) deciding_rules: Vec<String>,
}

/// Combines live verdicts, given in rule order.
pub(crate) fn combine(live: &[RuleVerdict<'_>], default_factors: &[Factor]) -> Combined {
    let requirement = live
        .iter()
        .map(|rule| rule.verdict.requirement)
        .max()
        .unwrap_or(Requirement::Allow);
    let deciding: Vec<&RuleVerdict<'_>> = live
        .iter()
        .filter(|rule| rule.verdict.requirement == requirement)
        .collect();

    let mut reasons: Vec<Reason> = deciding.iter().map(|rule| reason(rule)).collect();
    let mut factors = Vec::new();
    if requirement == Requirement::Mfa {
        factors = common_factors(&deciding, default_factors);
        if factors.is_empty() {
            factors = vec![CONFLICT_FALLBACK];
            reasons.push(conflict_reason(&deciding, default_factors));
        }
    }

    Combined {
        requirement,
        factors,
        reasons,
        deciding_rules: deciding.iter().map(|rule| rule.meta.id.clone()).collect(),
    }
}

/// Builds the reason a rule's verdict gives, with the rule's id and version.
///
/// The end-user message is the rule's `user_message` header, or the default message of the
/// code when the rule has none. A `rule_error` reason always gets the default message, because
/// the rule's own text describes a verdict the rule did not reach.
pub(crate) fn reason(rule: &RuleVerdict<'_>) -> Reason {
    let code = &rule.verdict.code;
    let user_message = match &rule.meta.user_message {
        Some(message) if code != RULE_ERROR_CODE => message.as_str(),
        _ => reason_user_message(code),
    };
    Reason {
        code: code.clone(),
        signal: rule.verdict.signal.clone(),
        rule_id: rule.meta.id.clone(),
        rule_version: rule.meta.version.clone(),
        message: rule.verdict.message.clone(),
        user_message: user_message.to_string(),
        values: rule.verdict.values.clone(),
    }
}

/// Returns the factors an `mfa` verdict allows, in the order of [`Factor::ALL`].
pub(crate) fn verdict_factors(verdict: &Verdict, default_factors: &[Factor]) -> Vec<Factor> {
    if verdict.requirement != Requirement::Mfa {
        return Vec::new();
    }
    let allowed = verdict.factors.as_deref().unwrap_or(default_factors);
    Factor::ALL
        .into_iter()
        .filter(|factor| allowed.contains(factor))
        .collect()
}

fn common_factors(mfa_rules: &[&RuleVerdict<'_>], default_factors: &[Factor]) -> Vec<Factor> {
    let sets: Vec<Vec<Factor>> = mfa_rules
        .iter()
        .map(|rule| verdict_factors(&rule.verdict, default_factors))
        .collect();
    Factor::ALL
        .into_iter()
        .filter(|factor| sets.iter().all(|set| set.contains(factor)))
        .collect()
}

fn conflict_reason(mfa_rules: &[&RuleVerdict<'_>], default_factors: &[Factor]) -> Reason {
    let values = mfa_rules
        .iter()
        .map(|rule| {
            let names: Vec<&str> = verdict_factors(&rule.verdict, default_factors)
                .into_iter()
                .map(Factor::as_str)
                .collect();
            (rule.meta.id.clone(), names.join(","))
        })
        .collect();

    Reason {
        code: FACTOR_CONFLICT_CODE.to_string(),
        signal: "policy".to_string(),
        message: format!(
            "the mfa rules allow no factor in common, so only {} (the strongest) is allowed",
            CONFLICT_FALLBACK.as_str()
        ),
        user_message: reason_user_message(FACTOR_CONFLICT_CODE).to_string(),
        values,
        ..Reason::default()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::PathBuf;

    use proptest::prelude::*;

    use super::*;

    const DEFAULT: [Factor; 3] = [Factor::Webauthn, Factor::Totp, Factor::Push];

    fn meta(id: &str) -> RuleMeta {
        RuleMeta {
            id: id.to_string(),
            version: "7".to_string(),
            description: String::new(),
            owner: String::new(),
            mode: RuleMode::Live,
            priority: 0,
            user_message: None,
            path: PathBuf::from(format!("{id}.rhai")),
        }
    }

    fn verdict(requirement: Requirement, factors: Option<Vec<Factor>>) -> Verdict {
        Verdict {
            requirement,
            factors,
            code: format!("{}_code", requirement.as_str()),
            message: "message".to_string(),
            signal: String::new(),
            values: BTreeMap::new(),
        }
    }

    fn combine_all(verdicts: Vec<(&str, Verdict)>) -> Combined {
        let metas: Vec<RuleMeta> = verdicts.iter().map(|(id, _)| meta(id)).collect();
        let live: Vec<RuleVerdict<'_>> = metas
            .iter()
            .zip(verdicts)
            .map(|(meta, (_, verdict))| RuleVerdict { meta, verdict })
            .collect();
        combine(&live, &DEFAULT)
    }

    #[test]
    fn no_opinion_allows_without_reasons() {
        let combined = combine_all(vec![]);

        assert_eq!(combined.requirement, Requirement::Allow);
        assert!(combined.factors.is_empty());
        assert!(combined.reasons.is_empty());
        assert!(combined.deciding_rules.is_empty());
    }

    #[test]
    fn strictest_verdict_wins() {
        let combined = combine_all(vec![
            ("a", verdict(Requirement::Allow, None)),
            ("b", verdict(Requirement::Mfa, None)),
            ("c", verdict(Requirement::Deny, None)),
            ("d", verdict(Requirement::Deny, None)),
        ]);

        assert_eq!(combined.requirement, Requirement::Deny);
        assert!(combined.factors.is_empty());
        assert_eq!(combined.deciding_rules, ["c", "d"]);
        let codes: Vec<&str> = combined.reasons.iter().map(|r| r.code.as_str()).collect();
        assert_eq!(codes, ["deny_code", "deny_code"]);
        assert_eq!(combined.reasons[0].rule_id, "c");
        assert_eq!(combined.reasons[0].rule_version, "7");
    }

    #[test]
    fn mfa_factors_are_intersected() {
        let combined = combine_all(vec![
            (
                "a",
                verdict(
                    Requirement::Mfa,
                    Some(vec![Factor::Totp, Factor::Push, Factor::Sms]),
                ),
            ),
            ("b", verdict(Requirement::Mfa, None)),
            ("c", verdict(Requirement::Allow, None)),
        ]);

        assert_eq!(combined.requirement, Requirement::Mfa);
        assert_eq!(combined.factors, [Factor::Totp, Factor::Push]);
        assert_eq!(combined.deciding_rules, ["a", "b"]);
        assert_eq!(combined.reasons.len(), 2);
    }

    #[test]
    fn disjoint_factors_fall_back_to_webauthn() {
        let combined = combine_all(vec![
            ("a", verdict(Requirement::Mfa, Some(vec![Factor::Sms]))),
            ("b", verdict(Requirement::Mfa, Some(vec![Factor::Totp]))),
        ]);

        assert_eq!(combined.factors, [Factor::Webauthn]);
        let conflict = combined.reasons.last().unwrap();
        assert_eq!(conflict.code, FACTOR_CONFLICT_CODE);
        assert_eq!(conflict.rule_id, "");
        assert_eq!(conflict.values["a"], "sms");
        assert_eq!(conflict.values["b"], "totp");
        assert_eq!(combined.reasons.len(), 3);
    }

    #[test]
    fn reason_gets_default_user_message_of_code() {
        let mut new_country = verdict(Requirement::Mfa, None);
        new_country.code = "new_country".to_string();

        let combined = combine_all(vec![
            ("new_country", new_country),
            ("custom", verdict(Requirement::Mfa, None)),
        ]);

        assert_eq!(
            combined.reasons[0].user_message,
            reason_user_message("new_country")
        );
        assert_eq!(
            combined.reasons[1].user_message,
            stepup_events::GENERIC_REASON_USER_MESSAGE
        );
    }

    #[test]
    fn rule_user_message_overrides_default() {
        let mut rule = meta("new_country");
        rule.user_message = Some("Please confirm this sign-in.".to_string());
        let mut new_country = verdict(Requirement::Mfa, None);
        new_country.code = "new_country".to_string();
        let mut failed = verdict(Requirement::Mfa, None);
        failed.code = RULE_ERROR_CODE.to_string();

        let given = reason(&RuleVerdict {
            meta: &rule,
            verdict: new_country,
        });
        let error = reason(&RuleVerdict {
            meta: &rule,
            verdict: failed,
        });

        assert_eq!(given.user_message, "Please confirm this sign-in.");
        assert_eq!(error.user_message, reason_user_message(RULE_ERROR_CODE));
    }

    #[test]
    fn factor_conflict_has_user_message() {
        let combined = combine_all(vec![
            ("a", verdict(Requirement::Mfa, Some(vec![Factor::Sms]))),
            ("b", verdict(Requirement::Mfa, Some(vec![Factor::Totp]))),
        ]);

        let conflict = combined.reasons.last().unwrap();
        assert_eq!(
            conflict.user_message,
            reason_user_message(FACTOR_CONFLICT_CODE)
        );
        assert!(!conflict.user_message.is_empty());
    }

    fn requirement_strategy() -> impl Strategy<Value = Requirement> {
        prop::sample::select(Requirement::ALL.to_vec())
    }

    fn factors_strategy() -> impl Strategy<Value = Option<Vec<Factor>>> {
        prop::option::of(prop::sample::subsequence(
            Factor::ALL.to_vec(),
            1..=Factor::ALL.len(),
        ))
    }

    proptest! {
        #[test]
        fn requirement_is_max_of_live_verdicts(
            verdicts in prop::collection::vec((requirement_strategy(), factors_strategy()), 0..8),
        ) {
            let expected = verdicts
                .iter()
                .map(|(requirement, _)| *requirement)
                .max()
                .unwrap_or(Requirement::Allow);
            let ids: Vec<String> = (0..verdicts.len()).map(|index| format!("r{index}")).collect();
            let input = ids
                .iter()
                .zip(&verdicts)
                .map(|(id, (requirement, factors))| {
                    (id.as_str(), verdict(*requirement, factors.clone()))
                })
                .collect();

            let combined = combine_all(input);

            prop_assert_eq!(combined.requirement, expected);
            prop_assert_eq!(combined.factors.is_empty(), expected != Requirement::Mfa);
            let deciding = verdicts.iter().filter(|(requirement, _)| *requirement == expected);
            prop_assert_eq!(combined.deciding_rules.len(), deciding.count());
        }
    }
}
