//! Wiring of rule reloads for a running server: the reloader, the admin gRPC service that
//! triggers it, and the optional watcher of the rules directory.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use prometheus::Registry;
use stepup_api::{AdminService, AdminToken};
use stepup_engine::Engine;
use stepup_policy::{ReloadMetrics, RuleReloader, RuleWatcher};
use tracing::info;

use crate::config::Config;
use crate::runtime;

/// Parts a server needs to reload its rules.
pub struct RuleReloads {
    /// The `stepup.v1.Admin` service, with its `ReloadRules` call.
    pub admin: AdminService,
    /// Watcher of the rules directory when `policy.watch` is on; reloads stop when it drops.
    pub watcher: Option<RuleWatcher>,
}

/// Builds the reloader around `engine`'s policy, the admin service and, when `policy.watch` is
/// on, the directory watcher. `policy.watch` unset counts as off; `stepup serve` sets it on.
pub fn start(config: &Config, engine: &Engine, registry: &Registry) -> anyhow::Result<RuleReloads> {
    let metrics = ReloadMetrics::register(registry, engine.metrics().rule_set.clone())
        .context("failed to register the rule reload metrics")?;
    let reloader = Arc::new(
        RuleReloader::new(engine.policy().clone(), runtime::policy_config(config))
            .with_metrics(metrics),
    );

    let token = match &config.api.admin_token_file {
        Some(path) => Some(AdminToken::from_file(path)?),
        None => {
            info!("admin API disabled; set `api.admin_token_file` to enable `ReloadRules`");
            None
        }
    };
    let admin = AdminService::new(Arc::clone(&reloader), token);

    let watcher = if config.policy.watch.unwrap_or(false) {
        let debounce = Duration::from_millis(config.policy.watch_debounce_ms);
        Some(RuleWatcher::start(reloader, debounce)?)
    } else {
        None
    };
    Ok(RuleReloads { admin, watcher })
}
