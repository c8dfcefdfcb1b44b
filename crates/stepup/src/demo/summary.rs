//! Counting what the engine decided for each kind of actor, and the end-of-run report.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;
use stepup_events::Requirement;

use super::plan::Label;

/// Running counts per label and latency histograms, in microseconds.
pub struct Tally {
    by_label: BTreeMap<Label, Counts>,
    /// Risk score of each attempt and whether an attacker made it.
    scores: Vec<(f64, bool)>,
    decision_latency_us: Histogram<u64>,
    processing_latency_us: Histogram<u64>,
}

/// Decisions for one label.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Counts {
    pub attempts: u64,
    pub allow: u64,
    pub mfa: u64,
    pub deny: u64,
}

/// The report printed at the end and written by `--summary-json`.
#[derive(Debug, Serialize)]
pub struct Summary {
    pub users: usize,
    pub days: i64,
    pub seed: u64,
    pub events_published: u64,
    pub events_processed: u64,
    pub dead_letters: u64,
    pub wall_seconds: f64,
    pub events_per_second: f64,
    pub decisions: BTreeMap<&'static str, u64>,
    /// MFA and deny decisions by the highest-priority rule that gave them.
    pub step_ups_by_rule: BTreeMap<String, u64>,
    pub by_label: BTreeMap<&'static str, LabelSummary>,
    pub legitimate_stepped_up_rate: f64,
    /// End to end: publish to Kafka, consume, decide, `AwaitDecision` reply.
    pub decision_latency_ms: Percentiles,
    /// Engine only: parse, enrich, score, policy, state update for one message.
    pub processing_latency_us: Percentiles,
    /// The risk score alone as a detector, before any rule.
    pub risk_score_alone: ScoreEvaluation,
    pub rule_set_version: String,
}

/// Outcome of one label's attempts.
#[derive(Debug, Serialize)]
pub struct LabelSummary {
    #[serde(flatten)]
    pub counts: Counts,
    /// Attempts that got `mfa` or `deny`.
    pub stepped_up: u64,
    /// Attempts that got `allow`.
    pub missed: u64,
    pub stepped_up_rate: f64,
}

/// Score thresholds at which the summary reports true- and false-positive rates.
const SCORE_THRESHOLDS: [f64; 7] = [0.05, 0.1, 0.3, 0.5, 0.6, 0.8, 0.95];

/// The risk score alone, without rules, as a detector: attacks are positives.
#[derive(Debug, Serialize)]
pub struct ScoreEvaluation {
    pub attacks: u64,
    pub legitimate: u64,
    pub roc_auc: f64,
    pub at_thresholds: Vec<ThresholdRates>,
}

/// Shares of attacks (`tpr`) and legitimate logins (`fpr`) with a score at or above `threshold`.
#[derive(Debug, Serialize)]
pub struct ThresholdRates {
    pub threshold: f64,
    pub tpr: f64,
    pub fpr: f64,
}

/// Latency percentiles.
#[derive(Debug, Serialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

// === impl Tally ===

impl Tally {
    pub fn new() -> Self {
        let histogram =
            || Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds");
        Self {
            by_label: BTreeMap::new(),
            scores: Vec::new(),
            decision_latency_us: histogram(),
            processing_latency_us: histogram(),
        }
    }

    pub fn record(
        &mut self,
        label: Label,
        requirement: Requirement,
        score: f64,
        latency: Duration,
    ) {
        self.scores.push((score, label != Label::Legitimate));
        let counts = self.by_label.entry(label).or_default();
        counts.attempts += 1;
        match requirement {
            Requirement::Allow => counts.allow += 1,
            Requirement::Mfa => counts.mfa += 1,
            Requirement::Deny => counts.deny += 1,
        }
        let _ = self.decision_latency_us.record(micros(latency));
    }

    pub fn record_processing(&mut self, elapsed: Duration) {
        let _ = self.processing_latency_us.record(micros(elapsed));
    }

    pub fn counts(&self, label: Label) -> Counts {
        self.by_label.get(&label).copied().unwrap_or_default()
    }

    /// Evaluates the risk score alone as a detector of attacks.
    pub fn score_evaluation(&self) -> ScoreEvaluation {
        let roc = stepup_risk::roc(&self.scores);
        let at_thresholds = roc
            .rates_at(&SCORE_THRESHOLDS)
            .into_iter()
            .map(|point| ThresholdRates {
                threshold: point.threshold,
                tpr: point.tpr,
                fpr: point.fpr,
            })
            .collect();
        ScoreEvaluation {
            attacks: roc.positives,
            legitimate: roc.negatives,
            roc_auc: roc.auc,
            at_thresholds,
        }
    }

    pub fn decision_latency_ms(&self) -> Percentiles {
        percentiles(&self.decision_latency_us, 1000.0)
    }

    pub fn processing_latency_us(&self) -> Percentiles {
        percentiles(&self.processing_latency_us, 1.0)
    }
}

fn micros(elapsed: Duration) -> u64 {
    u64::try_from(elapsed.as_micros())
        .unwrap_or(u64::MAX)
        .max(1)
}

fn percentiles(histogram: &Histogram<u64>, divisor: f64) -> Percentiles {
    let at = |q: f64| histogram.value_at_quantile(q) as f64 / divisor;
    Percentiles {
        p50: at(0.5),
        p90: at(0.9),
        p99: at(0.99),
        max: histogram.max() as f64 / divisor,
    }
}

/// Summarises one label's counts.
pub fn label_summary(counts: Counts) -> LabelSummary {
    let stepped_up = counts.mfa + counts.deny;
    let rate = if counts.attempts == 0 {
        0.0
    } else {
        stepped_up as f64 / counts.attempts as f64
    };
    LabelSummary {
        counts,
        stepped_up,
        missed: counts.allow,
        stepped_up_rate: rate,
    }
}

// === impl Summary ===

impl Summary {
    /// Renders the report as aligned text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "\nstepup demo summary (seed {}, {} users, {} days)",
            self.seed, self.users, self.days
        );
        let _ = writeln!(
            out,
            "  events: {} published, {} processed, {} dead-lettered, {:.1} s, {:.0} events/s",
            self.events_published,
            self.events_processed,
            self.dead_letters,
            self.wall_seconds,
            self.events_per_second
        );
        let decisions: Vec<String> = self
            .decisions
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        let _ = writeln!(
            out,
            "  decisions on login attempts: {}",
            decisions.join(", ")
        );
        let rules: Vec<String> = self
            .step_ups_by_rule
            .iter()
            .map(|(rule, n)| format!("{rule} {n}"))
            .collect();
        let _ = writeln!(out, "  step-ups by deciding rule: {}", rules.join(", "));
        let _ = writeln!(
            out,
            "\n  {:<20} {:>8} {:>8} {:>6} {:>6} {:>11} {:>7}",
            "label", "attempts", "allow", "mfa", "deny", "stepped up", "missed"
        );
        for (label, row) in &self.by_label {
            let _ = writeln!(
                out,
                "  {:<20} {:>8} {:>8} {:>6} {:>6} {:>10.1}% {:>7}",
                label,
                row.counts.attempts,
                row.counts.allow,
                row.counts.mfa,
                row.counts.deny,
                row.stepped_up_rate * 100.0,
                row.missed
            );
        }
        let _ = writeln!(
            out,
            "\n  legitimate logins stepped up: {:.1}%",
            self.legitimate_stepped_up_rate * 100.0
        );
        let d = &self.decision_latency_ms;
        let _ = writeln!(
            out,
            "  decision latency, publish to AwaitDecision reply (ms): p50 {:.2}  p90 {:.2}  p99 {:.2}  max {:.2}",
            d.p50, d.p90, d.p99, d.max
        );
        let p = &self.processing_latency_us;
        let _ = writeln!(
            out,
            "  engine processing per event (us): p50 {:.0}  p90 {:.0}  p99 {:.0}  max {:.0}",
            p.p50, p.p90, p.p99, p.max
        );
        let e = &self.risk_score_alone;
        let _ = writeln!(
            out,
            "  risk score alone ({} attacks, {} legitimate): ROC AUC {:.3}",
            e.attacks, e.legitimate, e.roc_auc
        );
        for rates in &e.at_thresholds {
            let _ = writeln!(
                out,
                "    score >= {:<4}  attacks stepped up {:>5.1}%  legitimate stepped up {:>5.1}%",
                rates.threshold,
                rates.tpr * 100.0,
                rates.fpr * 100.0
            );
        }
        let _ = writeln!(out, "  rule set version: {}", self.rule_set_version);
        out
    }
}
