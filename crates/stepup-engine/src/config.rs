//! Engine settings that are not owned by a lower crate.

use serde::{Deserialize, Serialize};
use stepup_keystroke::TemplateConfig;
use stepup_risk::RiskConfig;
use stepup_signals::SignalConfig;

/// Settings of the pipeline: signals, decisions, learning and sensitive actions.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EngineConfig {
    /// Signal thresholds and windows.
    #[serde(default)]
    pub signals: SignalConfig,
    /// Decision storage and lifetime.
    #[serde(default)]
    pub decisions: DecisionConfig,
    /// When a login teaches the profile.
    #[serde(default)]
    pub learning: LearningConfig,
    /// Step-up for sensitive actions (`CheckAction`).
    #[serde(default)]
    pub actions: ActionConfig,
    /// Weights and smoothing of the risk score.
    #[serde(default)]
    pub risk: RiskConfig,
    /// Keystroke templates: enrolment threshold and window.
    #[serde(default)]
    pub keystroke: TemplateConfig,
}

/// How long decisions live and how many are kept for `AwaitDecision`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DecisionConfig {
    /// Lifetime of a decision after the event time, in seconds. Default 300.
    #[serde(default = "default_decision_ttl_s")]
    pub ttl_s: u64,
    /// Decisions kept in memory for `AwaitDecision` and duplicate detection; the oldest are
    /// dropped first. Default 200000.
    #[serde(default = "default_max_stored")]
    pub max_stored: usize,
    /// How long a device may be remembered after a passed MFA, in seconds. Default 2592000
    /// (30 days).
    #[serde(default = "default_remember_device_ttl_s")]
    pub remember_device_ttl_s: u64,
}

impl Default for DecisionConfig {
    fn default() -> Self {
        Self {
            ttl_s: default_decision_ttl_s(),
            max_stored: default_max_stored(),
            remember_device_ttl_s: default_remember_device_ttl_s(),
        }
    }
}

fn default_decision_ttl_s() -> u64 {
    300
}

fn default_max_stored() -> usize {
    200_000
}

fn default_remember_device_ttl_s() -> u64 {
    30 * 24 * 3600
}

/// When a successful login counts as verified without MFA.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LearningConfig {
    /// A successful login that was allowed without MFA teaches the profile only when its risk
    /// score was below this value. Logins that passed MFA always teach. Default 0.3.
    #[serde(default = "default_max_learn_score")]
    pub max_score_without_mfa: f64,
    /// Login attempts remembered per user while their result is pending. Default 8.
    #[serde(default = "default_max_pending")]
    pub max_pending_attempts: usize,
}

impl Default for LearningConfig {
    fn default() -> Self {
        Self {
            max_score_without_mfa: default_max_learn_score(),
            max_pending_attempts: default_max_pending(),
        }
    }
}

fn default_max_learn_score() -> f64 {
    0.3
}

fn default_max_pending() -> usize {
    8
}

/// Sensitive actions and how recent an MFA must be for them.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ActionConfig {
    /// An action is allowed without a new challenge when the user passed MFA at most this many
    /// seconds before it. Default 900.
    #[serde(default = "default_recent_mfa_window_s")]
    pub recent_mfa_window_s: i64,
    /// Action names that need a recent MFA; other actions are allowed unless a rule objects.
    /// Default: change_password, change_email, change_phone, add_payee, disable_mfa,
    /// create_api_key, export_data.
    #[serde(default = "default_sensitive_actions")]
    pub sensitive: Vec<String>,
}

impl Default for ActionConfig {
    fn default() -> Self {
        Self {
            recent_mfa_window_s: default_recent_mfa_window_s(),
            sensitive: default_sensitive_actions(),
        }
    }
}

fn default_recent_mfa_window_s() -> i64 {
    900
}

fn default_sensitive_actions() -> Vec<String> {
    [
        "change_password",
        "change_email",
        "change_phone",
        "add_payee",
        "disable_mfa",
        "create_api_key",
        "export_data",
    ]
    .map(String::from)
    .to_vec()
}

impl EngineConfig {
    /// Checks values that serde cannot, naming the key and the fix.
    pub fn validate(&self) -> Result<(), String> {
        self.signals
            .validate()
            .map_err(|err| format!("`engine.signals`: {err}"))?;
        self.risk
            .validate()
            .map_err(|err| format!("`engine.risk`: {err}"))?;
        let learn = self.learning.max_score_without_mfa;
        if !(0.0..=1.0).contains(&learn) {
            return Err(format!(
                "`engine.learning.max_score_without_mfa` is {learn}; use a value from 0 to 1"
            ));
        }
        if self.decisions.max_stored == 0 {
            return Err("`engine.decisions.max_stored` is 0; use at least 1".into());
        }
        if self.actions.recent_mfa_window_s <= 0 {
            return Err("`engine.actions.recent_mfa_window_s` must be positive".into());
        }
        Ok(())
    }
}
