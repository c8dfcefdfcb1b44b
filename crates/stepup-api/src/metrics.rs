//! Prometheus metrics of the gRPC API, all registered in one place.

use prometheus::{IntCounterVec, Opts, Registry};

/// Counters the StepUp service updates per call.
#[derive(Clone)]
pub struct ApiMetrics {
    /// Calls forwarded to another instance, by RPC and outcome (`ok` or the caller's gRPC code).
    pub forwarded: IntCounterVec,
}

// === impl ApiMetrics ===

impl ApiMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let metrics = Self::unregistered()?;
        registry.register(Box::new(metrics.forwarded.clone()))?;
        Ok(metrics)
    }

    /// Creates the metrics without registering them, for a service built without a registry.
    pub(crate) fn unregistered() -> Result<Self, prometheus::Error> {
        Ok(Self {
            forwarded: IntCounterVec::new(
                Opts::new(
                    "stepup_grpc_forwarded_total",
                    "gRPC calls forwarded to another instance, by method and outcome.",
                ),
                &["method", "outcome"],
            )?,
        })
    }
}

impl Default for ApiMetrics {
    fn default() -> Self {
        Self::unregistered().expect("the metric name, help text and labels are valid constants")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registers_forwarded_counter() {
        let registry = Registry::new();
        let metrics = ApiMetrics::register(&registry).unwrap();
        metrics.forwarded.with_label_values(&["Assess", "ok"]).inc();

        let names: Vec<String> = registry
            .gather()
            .iter()
            .map(|family| family.name().to_owned())
            .collect();
        assert_eq!(names, ["stepup_grpc_forwarded_total"]);
    }

    #[test]
    fn second_registration_fails() {
        let registry = Registry::new();
        ApiMetrics::register(&registry).unwrap();
        assert!(ApiMetrics::register(&registry).is_err());
    }
}
