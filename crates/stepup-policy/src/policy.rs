//! Evaluating every rule of the current rule set against one context.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use rhai::{AST, Dynamic, Engine, EvalAltResult, Scope};
use serde::Serialize;
use stepup_events::{Factor, Requirement};

use crate::combine::{Evaluation, RuleError, RuleVerdict, ShadowVerdict, combine, reason};
use crate::context::context_scope;
use crate::memo::KeyEncoder;
use crate::meta::{RuleMeta, RuleMode};
use crate::sandbox::{Verdict, build_engine};
use crate::{PolicyConfig, RuleSet};

/// Reason code of the verdict that replaces a failed rule's.
pub const RULE_ERROR_CODE: &str = "rule_error";

/// Minimum time between two warnings about the same failing rule.
const WARN_INTERVAL: Duration = Duration::from_secs(10);

/// The policy engine: a sandboxed Rhai engine and the current rule set.
///
/// `Policy` is `Send + Sync`; share it behind an `Arc`. [`Policy::replace`] swaps the rule set
/// atomically, so an evaluation in flight finishes with the rules it started with.
pub struct Policy {
    engine: Engine,
    fail_mode: Requirement,
    default_factors: Vec<Factor>,
    rules: RwLock<Arc<RuleSet>>,
    warnings: WarnLimiter,
}

/// Result of running one rule.
#[derive(Clone, Debug)]
pub(crate) enum Outcome {
    /// The rule returned `()`.
    NoOpinion,
    /// The rule returned a verdict.
    Verdict(Verdict),
    /// The rule failed, with the error message.
    Failed(String),
}

/// Per-rule throttle for warnings about failing rules.
struct WarnLimiter {
    interval: Duration,
    rules: Mutex<HashMap<String, WarnState>>,
}

struct WarnState {
    last_logged: Instant,
    suppressed: u64,
}

// === impl Policy ===

impl Policy {
    /// Builds the sandboxed engine from `config` and starts with `rules`.
    ///
    /// Pass the config the rules were loaded with: the limits also bound compilation.
    pub fn new(config: PolicyConfig, rules: RuleSet) -> Policy {
        Policy {
            engine: build_engine(&config),
            fail_mode: config.fail_mode,
            default_factors: config.default_factor_set(),
            rules: RwLock::new(Arc::new(rules)),
            warnings: WarnLimiter::new(WARN_INTERVAL),
        }
    }

    /// Evaluates every rule, live and shadow, against `context` and combines the live verdicts.
    ///
    /// `context` must serialize to a map. Its keys `event`, `signals`, `risk` and `profile`
    /// become constants of the same name in the rules, and a missing key reads as `()`. A rule
    /// that fails gives the fail mode instead of its verdict and is listed in
    /// [`Evaluation::rule_errors`]; the other rules still run. When the context cannot be
    /// converted, every rule counts as failed.
    ///
    /// A rule that already ran on equal values of everything it can read from the context gets
    /// that run's outcome without running again, so repeated values cost a table lookup.
    pub fn evaluate<C: Serialize>(&self, context: &C) -> Evaluation {
        let rules = self.rule_set();
        let outcomes = match context_scope(context, rules.context_filter()) {
            Ok(scope) => self.run_rules(&rules, scope),
            Err(message) => rules
                .compiled()
                .map(|(meta, ..)| (meta, Outcome::Failed(message.clone())))
                .collect(),
        };
        self.assemble(rules.version(), outcomes)
    }

    /// Returns the factors an `mfa` verdict allows when it names none.
    pub fn default_factors(&self) -> &[Factor] {
        &self.default_factors
    }

    /// Returns the current rule set.
    pub fn rule_set(&self) -> Arc<RuleSet> {
        Arc::clone(&self.rules.read())
    }

    /// Replaces the rule set; evaluations that already started keep the old one.
    pub fn replace(&self, rules: impl Into<Arc<RuleSet>>) {
        let rules = rules.into();
        let previous = std::mem::replace(&mut *self.rules.write(), Arc::clone(&rules));
        tracing::info!(
            previous_version = previous.version(),
            version = rules.version(),
            rules = rules.rules().len(),
            "rule set replaced"
        );
    }

    /// Runs every rule in `scope`, or takes its memoized outcome, in evaluation order.
    fn run_rules<'r>(
        &self,
        rules: &'r RuleSet,
        mut scope: Scope<'_>,
    ) -> Vec<(&'r RuleMeta, Outcome)> {
        let mut encoder = KeyEncoder::new(rules.read_paths());
        let mut key = Vec::new();
        rules
            .compiled()
            .map(|(meta, ast, memo)| {
                let run = |scope: &mut Scope<'_>| self.run_rule(scope, ast);
                (
                    meta,
                    memo.get_or_run(&mut scope, &mut encoder, &mut key, run),
                )
            })
            .collect()
    }

    /// Runs one rule in `scope` and leaves the scope as it found it.
    fn run_rule(&self, scope: &mut Scope<'_>, ast: &AST) -> Outcome {
        let depth = scope.len();
        let result = self.engine.eval_ast_with_scope::<Dynamic>(scope, ast);
        scope.rewind(depth);

        match result {
            Ok(value) if value.is_unit() => Outcome::NoOpinion,
            Ok(value) => {
                let type_name = value.type_name();
                match value.try_cast::<Verdict>() {
                    Some(verdict) => Outcome::Verdict(verdict),
                    None => Outcome::Failed(format!(
                        "rule returned a value of type `{type_name}`; end the rule with `()` or \
                         a verdict from `allow`, `mfa` or `deny`"
                    )),
                }
            }
            Err(error) => Outcome::Failed(describe_error(&error)),
        }
    }

    /// Sorts outcomes into live verdicts, shadow verdicts and errors, and combines the live ones.
    fn assemble(&self, version: &str, outcomes: Vec<(&RuleMeta, Outcome)>) -> Evaluation {
        let mut live = Vec::new();
        let mut shadow = Vec::new();
        let mut rule_errors = Vec::new();

        for (meta, outcome) in outcomes {
            let verdict = match outcome {
                Outcome::NoOpinion => None,
                Outcome::Verdict(verdict) => Some(verdict),
                Outcome::Failed(message) => {
                    self.warn_rule_failed(meta, &message);
                    let verdict = self.fail_verdict(&message);
                    rule_errors.push(RuleError {
                        rule_id: meta.id.clone(),
                        mode: meta.mode,
                        message,
                    });
                    Some(verdict)
                }
            };
            match meta.mode {
                RuleMode::Live => live.extend(verdict.map(|verdict| RuleVerdict { meta, verdict })),
                RuleMode::Shadow => shadow.push(self.shadow_verdict(meta, verdict)),
            }
        }

        let combined = combine(&live, &self.default_factors);
        Evaluation {
            requirement: combined.requirement,
            factors: combined.factors,
            reasons: combined.reasons,
            rule_errors,
            shadow,
            rule_set_version: version.to_string(),
            deciding_rules: combined.deciding_rules,
        }
    }

    fn shadow_verdict(&self, meta: &RuleMeta, verdict: Option<Verdict>) -> ShadowVerdict {
        let Some(verdict) = verdict else {
            return ShadowVerdict {
                rule_id: meta.id.clone(),
                rule_version: meta.version.clone(),
                requirement: Requirement::Allow,
                factors: Vec::new(),
                reason: None,
            };
        };

        let factors = crate::combine::verdict_factors(&verdict, &self.default_factors);
        let rule = RuleVerdict { meta, verdict };
        ShadowVerdict {
            rule_id: meta.id.clone(),
            rule_version: meta.version.clone(),
            requirement: rule.verdict.requirement,
            factors,
            reason: Some(reason(&rule)),
        }
    }

    /// Builds the verdict that replaces a failed rule's verdict.
    fn fail_verdict(&self, message: &str) -> Verdict {
        Verdict {
            requirement: self.fail_mode,
            factors: None,
            code: RULE_ERROR_CODE.to_string(),
            message: format!(
                "rule failed, so the fail mode `{}` applies: {message}",
                self.fail_mode.as_str()
            ),
            signal: "policy".to_string(),
            values: Default::default(),
        }
    }

    fn warn_rule_failed(&self, meta: &RuleMeta, message: &str) {
        if let Some(suppressed) = self.warnings.check(&meta.id, Instant::now()) {
            tracing::warn!(
                rule_id = %meta.id,
                rule_version = %meta.version,
                mode = meta.mode.as_str(),
                fail_mode = self.fail_mode.as_str(),
                suppressed,
                error = message,
                "rule failed, fail mode applied"
            );
        }
    }
}

/// Formats a Rhai error, with a hint for the most common mistake: reading a field of `()`.
fn describe_error(error: &EvalAltResult) -> String {
    let message = error.to_string();
    if message.contains("for type '()'") || message.contains("for type ()") {
        return format!(
            "{message}; a value read from the context is `()` (missing), so test it first, for \
             example `if signals.travel != () {{ .. }}`, or read it with `?.`"
        );
    }
    message
}

// === impl WarnLimiter ===

impl WarnLimiter {
    fn new(interval: Duration) -> Self {
        WarnLimiter {
            interval,
            rules: Mutex::new(HashMap::new()),
        }
    }

    /// Returns `Some(suppressed)` when a warning about `rule_id` may be logged at `now`.
    ///
    /// `suppressed` is the number of warnings held back since the last one. Otherwise the
    /// call counts one more held-back warning and returns `None`.
    fn check(&self, rule_id: &str, now: Instant) -> Option<u64> {
        let mut rules = self.rules.lock();
        let Some(state) = rules.get_mut(rule_id) else {
            rules.insert(
                rule_id.to_string(),
                WarnState {
                    last_logged: now,
                    suppressed: 0,
                },
            );
            return Some(0);
        };

        if now.saturating_duration_since(state.last_logged) < self.interval {
            state.suppressed += 1;
            return None;
        }
        let suppressed = std::mem::take(&mut state.suppressed);
        state.last_logged = now;
        Some(suppressed)
    }
}

#[cfg(test)]
mod tests;
