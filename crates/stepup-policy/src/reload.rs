//! Safe reloads: a changed rule set replaces the serving one only after it compiles and passes
//! its case files.
//!
//! [`RuleReloader::reload`] loads a candidate [`RuleSet`] from the rules directory, runs the
//! case files in its `tests` directory against it, and calls [`Policy::replace`] only when both
//! succeed. A rejected candidate leaves the serving rule set in place. Reloads run one at a
//! time, so a slow reload cannot overwrite a newer one. Each attempt is logged and counted in
//! `stepup_rule_reloads_total{result}`, and an applied change moves `stepup_rule_set_info` to
//! the new version.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::Path;
use std::sync::Arc;

use parking_lot::Mutex;
use prometheus::{IntCounterVec, IntGaugeVec, Opts, Registry};
use tracing::{debug, info, warn};

use crate::cases::{CASES_DIR, CaseReport, load_cases, run_cases};
use crate::meta::RuleMeta;
use crate::{Policy, PolicyConfig, PolicyError, RuleSet};

/// Name of the counter of reload attempts.
pub const RELOADS_METRIC: &str = "stepup_rule_reloads_total";

/// Maximum number of failing cases described in a [`ReloadError::CasesFailed`] message.
const MAX_LISTED_FAILURES: usize = 5;

/// Source of a reload request, used in logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReloadTrigger {
    /// The file watcher saw a change in the rules directory.
    Watch,
    /// An operator called the admin `ReloadRules` RPC.
    Admin,
}

/// A reload whose candidate compiled and passed every case.
#[derive(Clone, Debug)]
pub struct ReloadOutcome {
    /// Version that served before the reload.
    pub previous_version: String,
    /// Version that serves now.
    pub version: String,
    /// Whether the version changed; false when the files compile to the serving rule set.
    pub changed: bool,
    /// Rules of the serving set, in evaluation order.
    pub rules: Vec<RuleMeta>,
    /// Results of the case files against the candidate.
    pub report: CaseReport,
}

/// Reason a candidate rule set was rejected; the previous set keeps serving.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The rule files could not be read or compiled.
    #[error("failed to load the candidate rule set: {0}")]
    Load(#[source] PolicyError),

    /// The case files could not be read or parsed.
    #[error("failed to load the case files: {0}")]
    Cases(#[source] PolicyError),

    /// The candidate compiled but failed at least one case.
    #[error(
        "candidate rule set `{version}` failed {} of {} cases: {}",
        report.failed(),
        report.cases.len(),
        failed_case_ids(report)
    )]
    CasesFailed {
        /// Version of the rejected candidate.
        version: String,
        /// Results of every case, passed and failed.
        report: CaseReport,
    },
}

/// Metrics of rule reloads.
#[derive(Clone)]
pub struct ReloadMetrics {
    /// Reload attempts by result: `applied`, `unchanged` or `rejected`.
    reloads: IntCounterVec,
    /// Serving rule set, a constant 1 labelled with its version. Registered by its owner.
    rule_set_info: IntGaugeVec,
}

/// Serves the rules of a [`Policy`] and replaces them when a reload succeeds.
pub struct RuleReloader {
    policy: Arc<Policy>,
    config: PolicyConfig,
    metrics: Option<ReloadMetrics>,
    /// Fingerprint of the rule and case files at the last reload attempt (or at start). The
    /// lock also runs reloads one at a time.
    last_files: Mutex<Option<u64>>,
}

// === impl ReloadTrigger ===

impl ReloadTrigger {
    /// Returns the name used in logs (`watch` or `admin`).
    pub fn as_str(self) -> &'static str {
        match self {
            ReloadTrigger::Watch => "watch",
            ReloadTrigger::Admin => "admin",
        }
    }
}

// === impl ReloadError ===

impl ReloadError {
    /// Returns the error followed by the diffs of up to five failing cases.
    pub fn detailed(&self) -> String {
        let ReloadError::CasesFailed { report, .. } = self else {
            return self.to_string();
        };
        let mut text = self.to_string();
        for case in report.failures().take(MAX_LISTED_FAILURES) {
            text.push('\n');
            text.push_str(&case.to_string());
        }
        if report.failed() > MAX_LISTED_FAILURES {
            text.push_str("\nrun `stepup rules test` for the other failures");
        }
        text
    }
}

fn failed_case_ids(report: &CaseReport) -> String {
    let ids: Vec<String> = report.failures().map(|case| case.id()).collect();
    ids.join(", ")
}

// === impl ReloadMetrics ===

impl ReloadMetrics {
    /// Registers `stepup_rule_reloads_total` in `registry`.
    ///
    /// `rule_set_info` is the `stepup_rule_set_info{version}` gauge that the owner of the
    /// policy registered, which is the engine in stepup. A reload that changes the version
    /// resets the gauge and sets the new version to 1.
    pub fn register(
        registry: &Registry,
        rule_set_info: IntGaugeVec,
    ) -> Result<Self, prometheus::Error> {
        let reloads = IntCounterVec::new(
            Opts::new(
                RELOADS_METRIC,
                "Rule reload attempts, by result: applied, unchanged or rejected.",
            ),
            &["result"],
        )?;
        registry.register(Box::new(reloads.clone()))?;
        Ok(Self {
            reloads,
            rule_set_info,
        })
    }

    /// Returns the number of reloads counted with `result`.
    pub fn count(&self, result: &str) -> u64 {
        self.reloads.with_label_values(&[result]).get()
    }

    fn record(&self, result: &Result<ReloadOutcome, ReloadError>) {
        let label = match result {
            Ok(outcome) if outcome.changed => "applied",
            Ok(_) => "unchanged",
            Err(_) => "rejected",
        };
        self.reloads.with_label_values(&[label]).inc();

        if let Ok(outcome) = result
            && outcome.changed
        {
            self.rule_set_info.reset();
            self.rule_set_info
                .with_label_values(&[outcome.version.as_str()])
                .set(1);
        }
    }
}

// === impl RuleReloader ===

impl RuleReloader {
    /// Creates a reloader for `policy`, whose rules were loaded from `config.dir` with `config`.
    pub fn new(policy: Arc<Policy>, config: PolicyConfig) -> Self {
        let last_files = files_fingerprint(&config.dir).ok();
        Self {
            policy,
            config,
            metrics: None,
            last_files: Mutex::new(last_files),
        }
    }

    /// Counts reloads and updates the rule set gauge in `metrics`.
    pub fn with_metrics(mut self, metrics: ReloadMetrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Returns the policy whose rules this reloader replaces.
    pub fn policy(&self) -> &Arc<Policy> {
        &self.policy
    }

    /// Returns the rules directory.
    pub fn dir(&self) -> &Path {
        &self.config.dir
    }

    /// Returns the reload metrics, if any were given.
    pub fn metrics(&self) -> Option<&ReloadMetrics> {
        self.metrics.as_ref()
    }

    /// Loads, tests and, when both succeed, applies the rule files of the directory.
    ///
    /// Blocks while it reads files and runs the cases; call it from a blocking thread in async
    /// code.
    pub fn reload(&self, trigger: ReloadTrigger) -> Result<ReloadOutcome, ReloadError> {
        let mut last_files = self.last_files.lock();
        *last_files = files_fingerprint(&self.config.dir).ok();
        self.reload_locked(trigger)
    }

    /// Reloads like [`RuleReloader::reload`], but only when the rule or case files differ from
    /// those of the last attempt; returns `None` without reloading otherwise.
    pub fn reload_if_changed(
        &self,
        trigger: ReloadTrigger,
    ) -> Option<Result<ReloadOutcome, ReloadError>> {
        let mut last_files = self.last_files.lock();
        let current = files_fingerprint(&self.config.dir).ok();
        if current.is_some() && current == *last_files {
            debug!(dir = %self.config.dir.display(), trigger = trigger.as_str(),
                   "rule files unchanged, reload skipped");
            return None;
        }
        *last_files = current;
        Some(self.reload_locked(trigger))
    }

    /// Runs one reload; the caller holds the `last_files` lock.
    fn reload_locked(&self, trigger: ReloadTrigger) -> Result<ReloadOutcome, ReloadError> {
        let result = self.try_reload();
        if let Some(metrics) = &self.metrics {
            metrics.record(&result);
        }
        self.log(trigger, &result);
        result
    }

    fn try_reload(&self) -> Result<ReloadOutcome, ReloadError> {
        let candidate = RuleSet::load_dir(&self.config).map_err(ReloadError::Load)?;
        let files = load_cases(&self.config.dir.join(CASES_DIR)).map_err(ReloadError::Cases)?;

        let candidate = Policy::new(self.config.clone(), candidate);
        let report = run_cases(&candidate, &files);
        let rules = candidate.rule_set();
        if !report.is_success() {
            return Err(ReloadError::CasesFailed {
                version: rules.version().to_string(),
                report,
            });
        }

        let previous = self.policy.rule_set();
        let changed = previous.version() != rules.version();
        if changed {
            self.policy.replace(Arc::clone(&rules));
        }
        Ok(ReloadOutcome {
            previous_version: previous.version().to_string(),
            version: rules.version().to_string(),
            changed,
            rules: rules.rules().to_vec(),
            report,
        })
    }

    fn log(&self, trigger: ReloadTrigger, result: &Result<ReloadOutcome, ReloadError>) {
        let dir = self.config.dir.display();
        match result {
            Ok(outcome) if outcome.changed => info!(
                %dir,
                trigger = trigger.as_str(),
                previous_version = %outcome.previous_version,
                version = %outcome.version,
                rules = outcome.rules.len(),
                cases = outcome.report.cases.len(),
                "rule reload applied"
            ),
            Ok(outcome) => info!(
                %dir,
                trigger = trigger.as_str(),
                version = %outcome.version,
                cases = outcome.report.cases.len(),
                "rule reload found no change"
            ),
            Err(error) => warn!(
                %dir,
                trigger = trigger.as_str(),
                serving_version = self.policy.rule_set().version(),
                error = %error,
                "rule reload rejected, previous rule set still serving"
            ),
        }
    }
}

/// Hashes the names and contents of the rule files and case files of `dir`, so that a watcher
/// can skip events that changed nothing (editor swap files, `touch`, repeated saves).
fn files_fingerprint(dir: &Path) -> std::io::Result<u64> {
    let mut files = Vec::new();
    collect_files(dir, &["rhai"], &mut files)?;
    match collect_files(&dir.join(CASES_DIR), &["yaml", "yml"], &mut files) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => return Err(error),
        _ => {}
    }
    files.sort();

    // Only compared within one process, so the hasher need not be stable across builds.
    let mut hasher = DefaultHasher::new();
    files.hash(&mut hasher);
    Ok(hasher.finish())
}

/// Appends `(path, contents)` of the regular files of `dir` with one of `extensions`.
fn collect_files(
    dir: &Path,
    extensions: &[&str],
    files: &mut Vec<(std::path::PathBuf, Vec<u8>)>,
) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let matches = path
            .extension()
            .and_then(|extension| extension.to_str())
            .is_some_and(|extension| extensions.contains(&extension));
        if matches && path.is_file() {
            let contents = std::fs::read(&path)?;
            files.push((path, contents));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
