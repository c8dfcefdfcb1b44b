//! Prometheus metrics of the pipeline, all registered in one place.

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

/// Counters, gauges and histograms the engine updates per event.
#[derive(Clone)]
pub struct EngineMetrics {
    /// Events by type and outcome (`decided`, `applied`, `duplicate`, `invalid`).
    pub events: IntCounterVec,
    /// Decisions by requirement and the deciding rule (`none` when no rule had an opinion).
    pub decisions: IntCounterVec,
    /// Time to process one event, by type.
    pub processing: HistogramVec,
    /// Rule evaluations that errored or hit a sandbox limit, by rule.
    pub rule_errors: IntCounterVec,
    /// Would-be verdicts of shadow rules, by rule and requirement.
    pub shadow_decisions: IntCounterVec,
    /// Profiles held in memory.
    pub profiles: IntGauge,
    /// Per-IP activity windows held in memory.
    pub tracked_ips: IntGauge,
    /// Active rule set, as a constant 1 labelled with its version.
    pub rule_set: IntGaugeVec,
    /// Risk scores of login attempts.
    pub risk_score: Histogram,
}

impl EngineMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let metrics = Self::unregistered()?;
        registry.register(Box::new(metrics.events.clone()))?;
        registry.register(Box::new(metrics.decisions.clone()))?;
        registry.register(Box::new(metrics.processing.clone()))?;
        registry.register(Box::new(metrics.rule_errors.clone()))?;
        registry.register(Box::new(metrics.shadow_decisions.clone()))?;
        registry.register(Box::new(metrics.profiles.clone()))?;
        registry.register(Box::new(metrics.tracked_ips.clone()))?;
        registry.register(Box::new(metrics.rule_set.clone()))?;
        registry.register(Box::new(metrics.risk_score.clone()))?;
        Ok(metrics)
    }

    fn unregistered() -> Result<Self, prometheus::Error> {
        let latency_buckets = vec![
            0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01,
            0.025, 0.05, 0.1,
        ];
        Ok(Self {
            events: IntCounterVec::new(
                Opts::new(
                    "stepup_events_total",
                    "Events processed, by type and outcome.",
                ),
                &["type", "outcome"],
            )?,
            decisions: IntCounterVec::new(
                Opts::new(
                    "stepup_decisions_total",
                    "Decisions made, by requirement and deciding rule.",
                ),
                &["requirement", "rule"],
            )?,
            processing: HistogramVec::new(
                HistogramOpts::new(
                    "stepup_event_processing_seconds",
                    "Time to process one event in the engine, by event type.",
                )
                .buckets(latency_buckets),
                &["type"],
            )?,
            rule_errors: IntCounterVec::new(
                Opts::new(
                    "stepup_rule_errors_total",
                    "Rule evaluations that failed or hit a sandbox limit, by rule.",
                ),
                &["rule"],
            )?,
            shadow_decisions: IntCounterVec::new(
                Opts::new(
                    "stepup_shadow_decisions_total",
                    "Verdicts of shadow rules, never enforced, by rule and requirement.",
                ),
                &["rule", "requirement"],
            )?,
            profiles: IntGauge::new("stepup_profiles", "User profiles held in memory.")?,
            tracked_ips: IntGauge::new(
                "stepup_tracked_ips",
                "IP addresses with activity in the velocity window.",
            )?,
            rule_set: IntGaugeVec::new(
                Opts::new(
                    "stepup_rule_set_info",
                    "Active rule set; the value is always 1.",
                ),
                &["version"],
            )?,
            risk_score: Histogram::with_opts(
                HistogramOpts::new(
                    "stepup_risk_score",
                    "Risk scores of login attempts (0 to 1).",
                )
                .buckets(vec![
                    0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95,
                ]),
            )?,
        })
    }
}
