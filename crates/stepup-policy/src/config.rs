//! Settings of the policy engine: where the rules live, sandbox limits and the fail mode.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use stepup_events::{Factor, Requirement};

use crate::PolicyError;

/// Settings of the policy engine.
///
/// Every limit must be at least 1, because Rhai reads 0 as "no limit" and a rule without limits
/// could stall the pipeline. [`PolicyConfig::validate`] enforces this; the loaders call it.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// Directory holding one `<id>.rhai` file per rule. Default: `rules`.
    #[serde(default = "default_dir")]
    pub dir: PathBuf,

    /// Maximum number of Rhai operations (expressions and statements) one rule may run per
    /// event; a rule that reaches it fails and the fail mode applies. Default: 100000.
    #[serde(default = "default_max_operations")]
    pub max_operations: u64,

    /// Maximum depth of nested calls to functions a rule defines itself. Default: 16.
    #[serde(default = "default_max_call_depth")]
    pub max_call_depth: usize,

    /// Maximum nesting depth of expressions, checked when a rule compiles. Default: 64.
    #[serde(default = "default_max_expr_depth")]
    pub max_expr_depth: usize,

    /// Maximum length of a string a rule builds, in bytes. Default: 65536 (64 KiB).
    #[serde(default = "default_max_string_bytes")]
    pub max_string_bytes: usize,

    /// Maximum number of elements in an array a rule builds. Default: 10000.
    #[serde(default = "default_max_array_len")]
    pub max_array_len: usize,

    /// Maximum number of entries in an object map a rule builds. Default: 10000.
    #[serde(default = "default_max_map_len")]
    pub max_map_len: usize,

    /// Verdict given in place of a rule that fails at run time (an error, a limit or a return
    /// value that is not a verdict): `allow`, `mfa` or `deny`. Default: `mfa`.
    #[serde(default = "default_fail_mode")]
    pub fail_mode: Requirement,

    /// Factors allowed by `mfa(code, message)` without an explicit list, and by the fail mode
    /// when it is `mfa`. Default: `[webauthn, totp, push]`.
    #[serde(default = "default_default_factors")]
    pub default_factors: Vec<Factor>,

    /// Whether to watch `dir` and reload the rules when a rule file or case file changes. A
    /// changed rule set replaces the serving one only after it compiles and passes its case
    /// files. Default: on for `stepup serve`, off for `stepup demo`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watch: Option<bool>,

    /// Quiet time after the last file change before a watched directory is reloaded, in
    /// milliseconds, so that a burst of writes gives one reload. Default: 500.
    #[serde(default = "default_watch_debounce_ms")]
    pub watch_debounce_ms: u64,
}

/// Returns the default rules directory, `rules`.
pub fn default_dir() -> PathBuf {
    PathBuf::from("rules")
}

/// Returns the default operation limit per rule and event, 100000.
pub fn default_max_operations() -> u64 {
    100_000
}

/// Returns the default call depth limit, 16.
pub fn default_max_call_depth() -> usize {
    16
}

/// Returns the default expression depth limit, 64.
pub fn default_max_expr_depth() -> usize {
    64
}

/// Returns the default string size limit, 65536 bytes.
pub fn default_max_string_bytes() -> usize {
    64 * 1024
}

/// Returns the default array length limit, 10000 elements.
pub fn default_max_array_len() -> usize {
    10_000
}

/// Returns the default object map size limit, 10000 entries.
pub fn default_max_map_len() -> usize {
    10_000
}

/// Returns the default fail mode, `mfa`.
pub fn default_fail_mode() -> Requirement {
    Requirement::Mfa
}

/// Returns the default quiet time before a watched directory is reloaded, 500 ms.
pub fn default_watch_debounce_ms() -> u64 {
    500
}

/// Returns the default factor set, `[webauthn, totp, push]`.
pub fn default_default_factors() -> Vec<Factor> {
    vec![Factor::Webauthn, Factor::Totp, Factor::Push]
}

// === impl PolicyConfig ===

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            dir: default_dir(),
            max_operations: default_max_operations(),
            max_call_depth: default_max_call_depth(),
            max_expr_depth: default_max_expr_depth(),
            max_string_bytes: default_max_string_bytes(),
            max_array_len: default_max_array_len(),
            max_map_len: default_max_map_len(),
            fail_mode: default_fail_mode(),
            default_factors: default_default_factors(),
            watch: None,
            watch_debounce_ms: default_watch_debounce_ms(),
        }
    }
}

impl PolicyConfig {
    /// Checks that every limit and the watch quiet time are at least 1 and the default factor
    /// set is non-empty.
    pub fn validate(&self) -> Result<(), PolicyError> {
        let limits = [
            ("max_operations", self.max_operations == 0),
            ("max_call_depth", self.max_call_depth == 0),
            ("max_expr_depth", self.max_expr_depth == 0),
            ("max_string_bytes", self.max_string_bytes == 0),
            ("max_array_len", self.max_array_len == 0),
            ("max_map_len", self.max_map_len == 0),
        ];
        if let Some((key, _)) = limits.iter().find(|(_, is_zero)| *is_zero) {
            return Err(PolicyError::Config {
                key,
                problem: "must be at least 1 (0 would turn the limit off); remove the key to use \
                          the default"
                    .to_string(),
            });
        }

        if self.watch_debounce_ms == 0 {
            return Err(PolicyError::Config {
                key: "watch_debounce_ms",
                problem: "must be at least 1; remove the key to use the default of 500".to_string(),
            });
        }
        if self.default_factors.is_empty() {
            return Err(PolicyError::Config {
                key: "default_factors",
                problem: "must name at least one factor, for example `[\"webauthn\", \"totp\"]`"
                    .to_string(),
            });
        }
        Ok(())
    }

    /// Returns the default factors without repeats, in the order of [`Factor::ALL`].
    pub(crate) fn default_factor_set(&self) -> Vec<Factor> {
        Factor::ALL
            .into_iter()
            .filter(|factor| self.default_factors.contains(factor))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_json_gives_defaults() {
        let config: PolicyConfig = serde_json::from_str("{}").unwrap();

        assert_eq!(config, PolicyConfig::default());
        assert_eq!(config.max_operations, 100_000);
        assert_eq!(config.fail_mode, Requirement::Mfa);
        assert!(config.validate().is_ok());
    }

    #[test]
    fn unknown_key_is_rejected() {
        let result = serde_json::from_str::<PolicyConfig>(r#"{"max_operation": 5}"#);

        let message = result.unwrap_err().to_string();
        assert!(message.contains("max_operation"), "{message}");
    }

    #[test]
    fn zero_limit_is_rejected() {
        let config = PolicyConfig {
            max_call_depth: 0,
            ..PolicyConfig::default()
        };

        let message = config.validate().unwrap_err().to_string();
        assert!(message.contains("`max_call_depth`"), "{message}");
    }

    #[test]
    fn empty_default_factors_are_rejected() {
        let config = PolicyConfig {
            default_factors: vec![],
            ..PolicyConfig::default()
        };

        let message = config.validate().unwrap_err().to_string();
        assert!(message.contains("`default_factors`"), "{message}");
    }

    #[test]
    fn default_factor_set_follows_strength_order() {
        let config = PolicyConfig {
            default_factors: vec![Factor::Sms, Factor::Webauthn, Factor::Sms],
            ..PolicyConfig::default()
        };

        assert_eq!(
            config.default_factor_set(),
            vec![Factor::Webauthn, Factor::Sms]
        );
    }
}
