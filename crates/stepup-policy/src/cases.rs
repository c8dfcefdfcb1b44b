//! Case files: example contexts, each with the decision the rule set must give.
//!
//! Case files are YAML files (`*.yaml` or `*.yml`) in the `tests` directory inside the rules
//! directory. A file contains a list of cases and, optionally, `defaults` shared by its cases:
//!
//! ```yaml
//! cases:
//!   - name: five_failures_ask_for_mfa
//!     signals: { user_failures: 5 }
//!     expect:
//!       requirement: mfa
//!       reasons: [user_failure_velocity]
//! ```
//!
//! A case's `event`, `signals`, `risk` and `profile` maps are merged key by key into the file's
//! `defaults` and then into a built-in benign context (`cases/default_context.yaml`): the login
//! context, or the action context when `event.type` is `action`. Maps merge recursively; any
//! other value, `null` included, replaces the default. [`run_cases`] evaluates each merged
//! context with a [`Policy`](crate::Policy) and compares the [`Evaluation`](crate::Evaluation)
//! with `expect`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde::{Deserialize, Deserializer};
use serde_json::Value;
use stepup_events::{Factor, Requirement};

use crate::PolicyError;

mod report;

pub use report::{CaseReport, CaseResult, run_cases};

/// Name of the directory, inside the rules directory, that contains the case files.
pub const CASES_DIR: &str = "tests";

/// File extensions of case files.
const CASE_EXTENSIONS: [&str; 2] = ["yaml", "yml"];

/// Keys of the context a case may give, in the order rules see them.
const CONTEXT_KEYS: [&str; 4] = ["event", "signals", "risk", "profile"];

/// The built-in contexts that cases are merged into.
const DEFAULT_CONTEXT_YAML: &str = include_str!("cases/default_context.yaml");

/// One case file after parsing.
#[derive(Clone, Debug, PartialEq)]
pub struct CaseFile {
    /// Path the file was read from.
    pub path: PathBuf,
    /// Cases in file order.
    pub cases: Vec<Case>,
}

/// One case: a full context and the expected outcome.
#[derive(Clone, Debug, PartialEq)]
pub struct Case {
    /// Name, unique within its file.
    pub name: String,
    /// Purpose of the case, for readers; not used by the runner.
    pub description: String,
    /// Context the rules see: a map with the keys `event`, `signals`, `risk` and `profile`,
    /// after merging the case into the defaults.
    pub context: Value,
    /// Expected outcome.
    pub expect: Expectation,
}

/// The outcome a case expects from the rule set.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expectation {
    /// Combined requirement of the live rules.
    pub requirement: Requirement,
    /// Factors an `mfa` requirement allows, compared as a set; not checked when absent.
    #[serde(default)]
    pub factors: Option<Vec<Factor>>,
    /// Reason codes that must appear in the evaluation's reasons.
    #[serde(default)]
    pub reasons: Vec<String>,
    /// Reason codes that must not appear.
    #[serde(default)]
    pub absent_reasons: Vec<String>,
    /// Ids of live rules that must be among the deciding rules (those whose verdict equals the
    /// requirement).
    #[serde(default)]
    pub rule_ids: Vec<String>,
    /// When true, `reasons` and `rule_ids` list every reason code and deciding rule, so any
    /// other one fails the case. Default: false.
    #[serde(default)]
    pub exact: bool,
    /// Verdicts that shadow rules must give; shadow rules not listed are not checked.
    #[serde(default)]
    pub shadow: Vec<ShadowExpectation>,
    /// Whether every rule, live or shadow, must run without error. Default: true.
    #[serde(default = "default_no_rule_errors")]
    pub no_rule_errors: bool,
}

/// The verdict one shadow rule must give.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShadowExpectation {
    /// Id of the shadow rule.
    pub rule_id: String,
    /// Verdict it must give; `allow` also matches a rule with no opinion.
    pub requirement: Requirement,
    /// Reason code it must give; not checked when absent.
    #[serde(default)]
    pub reason: Option<String>,
}

/// A case file as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    defaults: ContextParts,
    cases: Vec<RawCase>,
}

/// A case as written. The context parts sit beside `name` rather than in a flattened struct,
/// because serde ignores `deny_unknown_fields` on a struct with a flattened field.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCase {
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default, deserialize_with = "present")]
    event: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    signals: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    risk: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    profile: Option<Value>,
    expect: Expectation,
}

/// The parts of a context a case or a file's defaults give. `Some(Value::Null)` is an explicit
/// `null`, which differs from a missing key.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ContextParts {
    #[serde(default, deserialize_with = "present")]
    event: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    signals: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    risk: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    profile: Option<Value>,
}

/// The built-in login and action contexts.
#[derive(Deserialize)]
struct DefaultContexts {
    login: Value,
    action: Value,
}

fn default_no_rule_errors() -> bool {
    true
}

/// Reads a value that is present in the file, `null` included.
fn present<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(deserializer).map(Some)
}

/// Loads every case file (`*.yaml`, `*.yml`) of `dir`, sorted by file name.
///
/// A missing `dir` gives no case files. A file that is not valid YAML, has an unknown key or
/// repeats a case name fails the load with an error naming the file and the line.
pub fn load_cases(dir: &Path) -> Result<Vec<CaseFile>, PolicyError> {
    let read_error = |source| PolicyError::ReadCases {
        path: dir.to_path_buf(),
        source,
    };
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(read_error(error)),
    };

    let mut paths = Vec::new();
    for entry in entries {
        let path = entry.map_err(read_error)?.path();
        let is_case_file = path.extension().is_some_and(|extension| {
            CASE_EXTENSIONS
                .iter()
                .any(|allowed| extension == std::ffi::OsStr::new(allowed))
        });
        if is_case_file && path.is_file() {
            paths.push(path);
        }
    }
    paths.sort();
    paths.iter().map(|path| load_case_file(path)).collect()
}

/// Reads and parses one case file.
pub fn load_case_file(path: &Path) -> Result<CaseFile, PolicyError> {
    let text = std::fs::read_to_string(path).map_err(|source| PolicyError::ReadCases {
        path: path.to_path_buf(),
        source,
    })?;
    parse_case_file(path, &text)
}

/// Parses the text of a case file; `path` names the file in errors.
pub fn parse_case_file(path: &Path, text: &str) -> Result<CaseFile, PolicyError> {
    let raw: RawFile = serde_norway::from_str(text).map_err(|error| PolicyError::CaseFile {
        path: path.to_path_buf(),
        line: error.location().map(|location| location.line()),
        message: error.to_string(),
    })?;

    check_parts(path, text, "defaults", &raw.defaults)?;
    let mut names = BTreeSet::new();
    let mut cases = Vec::with_capacity(raw.cases.len());
    for case in raw.cases {
        let parts = ContextParts {
            event: case.event,
            signals: case.signals,
            risk: case.risk,
            profile: case.profile,
        };
        check_case(path, text, &case.name, &parts, &mut names)?;
        cases.push(Case {
            context: merge_context(&raw.defaults, &parts),
            name: case.name,
            description: case.description,
            expect: case.expect,
        });
    }
    Ok(CaseFile {
        path: path.to_path_buf(),
        cases,
    })
}

/// Checks a case's name and context parts; `names` collects the names seen so far.
fn check_case(
    path: &Path,
    text: &str,
    name: &str,
    parts: &ContextParts,
    names: &mut BTreeSet<String>,
) -> Result<(), PolicyError> {
    if name.trim().is_empty() {
        return Err(case_error(
            path,
            None,
            "a case has an empty `name`; give every case a name".to_string(),
        ));
    }
    if !names.insert(name.to_string()) {
        let line = last_line_of(text, name);
        return Err(case_error(
            path,
            line,
            format!(
                "repeated case name `{name}`{}; give every case in a file its own name",
                at_line(line)
            ),
        ));
    }
    check_parts(path, text, name, parts)
}

/// Checks that each given context part is a map or `null`.
fn check_parts(
    path: &Path,
    text: &str,
    owner: &str,
    parts: &ContextParts,
) -> Result<(), PolicyError> {
    for (key, value) in CONTEXT_KEYS.iter().zip(parts.values()) {
        let Some(value) = value else { continue };
        if value.is_object() || value.is_null() {
            continue;
        }
        let line = last_line_of(text, owner);
        return Err(case_error(
            path,
            line,
            format!(
                "`{key}` of `{owner}`{} is not a map; write it as `{key}: {{ field: value }}` \
                 or `{key}: null`",
                at_line(line)
            ),
        ));
    }
    Ok(())
}

/// Builds a case's full context: the built-in default, then the file's defaults, then the case.
fn merge_context(defaults: &ContextParts, case: &ContextParts) -> Value {
    let is_action = [case, defaults]
        .iter()
        .find_map(|parts| parts.event.as_ref()?.get("type")?.as_str())
        .is_some_and(|kind| kind == "action");
    let built_in = default_contexts();
    let mut context = if is_action {
        built_in.action.clone()
    } else {
        built_in.login.clone()
    };

    for parts in [defaults, case] {
        for (key, value) in CONTEXT_KEYS.iter().zip(parts.values()) {
            if let (Some(value), Some(slot)) = (value, context.get_mut(*key)) {
                merge(slot, value);
            }
        }
    }
    context
}

/// Merges `overlay` into `base`: maps key by key, any other value replaces.
fn merge(base: &mut Value, overlay: &Value) {
    match (base, overlay) {
        (Value::Object(base), Value::Object(overlay)) => {
            for (key, value) in overlay {
                match base.get_mut(key) {
                    Some(slot) => merge(slot, value),
                    None => {
                        base.insert(key.clone(), value.clone());
                    }
                }
            }
        }
        (base, overlay) => *base = overlay.clone(),
    }
}

/// Returns the built-in contexts, parsed once.
fn default_contexts() -> &'static DefaultContexts {
    static CONTEXTS: OnceLock<DefaultContexts> = OnceLock::new();
    CONTEXTS.get_or_init(|| {
        serde_norway::from_str(DEFAULT_CONTEXT_YAML)
            .expect("cases/default_context.yaml is compiled in and parsed by a unit test")
    })
}

// === impl ContextParts ===

impl ContextParts {
    fn values(&self) -> [&Option<Value>; 4] {
        [&self.event, &self.signals, &self.risk, &self.profile]
    }
}

/// Returns the last line, counted from 1, that mentions `needle`.
fn last_line_of(text: &str, needle: &str) -> Option<usize> {
    text.lines()
        .enumerate()
        .filter(|(_, line)| line.contains(needle))
        .map(|(index, _)| index + 1)
        .last()
}

fn at_line(line: Option<usize>) -> String {
    line.map(|line| format!(" at line {line}"))
        .unwrap_or_default()
}

fn case_error(path: &Path, line: Option<usize>, message: String) -> PolicyError {
    PolicyError::CaseFile {
        path: path.to_path_buf(),
        line,
        message,
    }
}

#[cfg(test)]
mod tests;
