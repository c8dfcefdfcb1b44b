//! Sandboxed Rhai policies for stepup.
//!
//! Security teams write one rule per file, `rules/<id>.rhai`. This crate reads each file's
//! `//!` metadata header, compiles the rules once into a [`RuleSet`], and evaluates every rule
//! per event through a [`Policy`], which combines the verdicts into one [`Evaluation`]. It owns
//! the sandbox (no I/O, no wall clock, operation and size limits) and the combining semantics.
//! It does not build the context, compute signals or turn an evaluation into a decision; the
//! engine does.
//!
//! It also owns the rule lifecycle. Case files pin what the rules must decide ([`load_cases`],
//! [`run_cases`]). A safe reload applies a changed rule set only after it compiles and passes
//! its cases ([`RuleReloader`]), and a directory watcher triggers reloads ([`RuleWatcher`]).
//! `docs/rules.md` describes the whole workflow.
//!
//! # Writing a rule
//!
//! ```text
//! //! id: new_country
//! //! version: 1
//! //! description: Ask for MFA on the first login from a country the user never logged in from.
//! //! owner: security@example.com
//! //! mode: live
//! //! priority: 110
//!
//! if signals?.novelty?.new_country == true && profile.known_countries > 0 {
//!     mfa("new_country", "first login from this country", #{ signal: "geo" })
//! }
//! ```
//!
//! All six header keys are required. `id` is snake_case and equals the file stem, `mode` is
//! `live` or `shadow`, and `priority` is an integer: higher runs first, and ties run by id.
//! `version`, `description` and `owner` are free text. An optional `user_message` key sets
//! the sentence shown to the end user for every reason the rule gives. Without it, a reason gets
//! the default message of its code from [`stepup_events::reason_user_message`].
//!
//! The rule reads the constants `event`, `signals`, `risk` and `profile`, and its value is its
//! verdict: `()` for no opinion, or one of
//!
//! - `allow(code, message)`
//! - `mfa(code, message)` for any factor of the configured default set, or
//!   `mfa(code, message, factors)` with an array of `webauthn`, `totp`, `push`, `sms`, `email`
//! - `deny(code, message)`
//!
//! Each also takes a trailing map of values (`#{ speed_kmh: 950.0 }`), recorded as strings in the
//! reason; a `signal` entry names the reason's signal instead. `code` must be snake_case.
//!
//! Reading a missing map key gives `()`, and comparing `()` with a number gives `false`, but
//! reading a field *of* `()` is an error. Test optional parts first (`if signals.travel != ()`)
//! or read them with `?.` (`signals.travel?.impossible == true`). A rule that fails at run time,
//! hits a sandbox limit or returns anything other than `()` or a verdict gives the configured
//! fail mode (default `mfa`) with the reason code `rule_error`.

#![forbid(unsafe_code)]

mod cases;
mod combine;
mod config;
mod context;
mod error;
mod memo;
mod meta;
mod policy;
mod reload;
mod rule_set;
mod sandbox;
mod watch;

#[cfg(test)]
mod default_rules_tests;

pub use cases::{
    CASES_DIR, Case, CaseFile, CaseReport, CaseResult, Expectation, ShadowExpectation,
    load_case_file, load_cases, parse_case_file, run_cases,
};
pub use combine::{Evaluation, FACTOR_CONFLICT_CODE, RuleError, ShadowVerdict};
pub use config::{
    PolicyConfig, default_default_factors, default_dir, default_fail_mode, default_max_array_len,
    default_max_call_depth, default_max_expr_depth, default_max_map_len, default_max_operations,
    default_max_string_bytes, default_watch_debounce_ms,
};
pub use error::PolicyError;
pub use meta::{RuleMeta, RuleMode};
pub use policy::{Policy, RULE_ERROR_CODE};
pub use reload::{
    RELOADS_METRIC, ReloadError, ReloadMetrics, ReloadOutcome, ReloadTrigger, RuleReloader,
};
pub use rule_set::RuleSet;
pub use watch::RuleWatcher;
