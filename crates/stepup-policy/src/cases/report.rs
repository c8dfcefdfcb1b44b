//! Running cases against a policy and reporting the differences.

use std::collections::BTreeSet;
use std::fmt;

use serde::Serialize;
use stepup_events::{Factor, Requirement};

use super::{Case, CaseFile, Expectation};
use crate::{Evaluation, Policy, ShadowVerdict};

/// Outcome of running case files against one rule set.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CaseReport {
    /// Version of the rule set the cases ran against.
    pub rule_set_version: String,
    /// One result per case, in file order and then case order.
    pub cases: Vec<CaseResult>,
}

/// Outcome of one case.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CaseResult {
    /// Stem of the case file, for example `new_country` for `tests/new_country.yaml`.
    pub file: String,
    /// Name of the case.
    pub name: String,
    /// Differences between the expectation and the evaluation, one per line: `- ` lines give
    /// the expected side, `+ ` lines what the rules gave. Empty when the case passed.
    pub diff: Vec<String>,
}

/// Runs every case of `files` against `policy`.
pub fn run_cases(policy: &Policy, files: &[CaseFile]) -> CaseReport {
    let rule_set_version = policy.rule_set().version().to_string();
    let cases = files
        .iter()
        .flat_map(|file| {
            let stem = file_stem(file);
            file.cases.iter().map(move |case| CaseResult {
                file: stem.clone(),
                name: case.name.clone(),
                diff: run_case(policy, case),
            })
        })
        .collect();
    CaseReport {
        rule_set_version,
        cases,
    }
}

fn file_stem(file: &CaseFile) -> String {
    file.path
        .file_stem()
        .map(|stem| stem.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Evaluates one case and returns its diff lines.
fn run_case(policy: &Policy, case: &Case) -> Vec<String> {
    let evaluation = policy.evaluate(&case.context);
    let expect = &case.expect;
    let mut diff = Vec::new();

    if evaluation.requirement != expect.requirement {
        diff.push(format!("- requirement: {}", expect.requirement.as_str()));
        diff.push(format!(
            "+ requirement: {}",
            evaluation.requirement.as_str()
        ));
    }
    diff_factors(expect, &evaluation, &mut diff);
    diff_reasons(expect, &evaluation, &mut diff);
    diff_rule_ids(expect, &evaluation, &mut diff);
    diff_shadow(expect, &evaluation.shadow, &mut diff);
    if expect.no_rule_errors {
        for error in &evaluation.rule_errors {
            diff.push(format!(
                "+ rule error in `{}`: {}",
                error.rule_id, error.message
            ));
        }
    }

    if !diff.is_empty() {
        diff.push(format!("  got: {}", describe(&evaluation)));
    }
    diff
}

fn diff_factors(expect: &Expectation, evaluation: &Evaluation, diff: &mut Vec<String>) {
    let Some(expected) = &expect.factors else {
        return;
    };
    let expected: BTreeSet<Factor> = expected.iter().copied().collect();
    let got: BTreeSet<Factor> = evaluation.factors.iter().copied().collect();
    if expected != got {
        diff.push(format!("- factors: {}", factor_list(expected.iter())));
        diff.push(format!("+ factors: {}", factor_list(got.iter())));
    }
}

fn diff_reasons(expect: &Expectation, evaluation: &Evaluation, diff: &mut Vec<String>) {
    let got: BTreeSet<&str> = evaluation
        .reasons
        .iter()
        .map(|reason| reason.code.as_str())
        .collect();
    for code in &expect.reasons {
        if !got.contains(code.as_str()) {
            diff.push(format!("- reason: {code} (missing)"));
        }
    }
    for code in &expect.absent_reasons {
        if got.contains(code.as_str()) {
            diff.push(format!("+ reason: {code} (listed in absent_reasons)"));
        }
    }
    if expect.exact {
        for code in got
            .iter()
            .filter(|code| !expect.reasons.iter().any(|c| c == *code))
        {
            diff.push(format!("+ reason: {code} (unexpected)"));
        }
    }
}

fn diff_rule_ids(expect: &Expectation, evaluation: &Evaluation, diff: &mut Vec<String>) {
    let deciding = &evaluation.deciding_rules;
    for rule_id in &expect.rule_ids {
        if !deciding.contains(rule_id) {
            diff.push(format!("- deciding rule: {rule_id} (missing)"));
        }
    }
    if expect.exact {
        for rule_id in deciding.iter().filter(|id| !expect.rule_ids.contains(id)) {
            diff.push(format!("+ deciding rule: {rule_id} (unexpected)"));
        }
    }
}

fn diff_shadow(expect: &Expectation, shadow: &[ShadowVerdict], diff: &mut Vec<String>) {
    for expected in &expect.shadow {
        let want = shadow_text(expected.requirement, expected.reason.as_deref());
        let Some(got) = shadow
            .iter()
            .find(|verdict| verdict.rule_id == expected.rule_id)
        else {
            diff.push(format!("- shadow {}: {want}", expected.rule_id));
            diff.push(format!(
                "+ shadow {}: did not run (no shadow rule with this id)",
                expected.rule_id
            ));
            continue;
        };

        let got_code = got.reason.as_ref().map(|reason| reason.code.as_str());
        let code_matches = expected.reason.is_none() || expected.reason.as_deref() == got_code;
        if got.requirement != expected.requirement || !code_matches {
            diff.push(format!("- shadow {}: {want}", expected.rule_id));
            let have = shadow_text(got.requirement, got_code);
            diff.push(format!("+ shadow {}: {have}", expected.rule_id));
        }
    }
}

fn shadow_text(requirement: Requirement, code: Option<&str>) -> String {
    match code {
        Some(code) => format!("{} ({code})", requirement.as_str()),
        None => requirement.as_str().to_string(),
    }
}

/// Summarises an evaluation on one line, for failed cases.
fn describe(evaluation: &Evaluation) -> String {
    let mut text = evaluation.requirement.as_str().to_string();
    if !evaluation.factors.is_empty() {
        text.push(' ');
        text.push_str(&factor_list(evaluation.factors.iter()));
    }
    let codes: Vec<&str> = evaluation
        .reasons
        .iter()
        .map(|reason| reason.code.as_str())
        .collect();
    text.push_str(&format!(
        ", reasons [{}], deciding rules [{}]",
        codes.join(", "),
        evaluation.deciding_rules.join(", ")
    ));
    text
}

fn factor_list<'a>(factors: impl Iterator<Item = &'a Factor>) -> String {
    let names: Vec<&str> = factors.map(|factor| factor.as_str()).collect();
    format!("[{}]", names.join(", "))
}

// === impl CaseReport ===

impl CaseReport {
    /// Returns the number of cases that passed.
    pub fn passed(&self) -> usize {
        self.cases.iter().filter(|case| case.passed()).count()
    }

    /// Returns the number of cases that failed.
    pub fn failed(&self) -> usize {
        self.cases.len() - self.passed()
    }

    /// Returns whether every case passed; true when there are no cases.
    pub fn is_success(&self) -> bool {
        self.cases.iter().all(CaseResult::passed)
    }

    /// Returns the cases that failed.
    pub fn failures(&self) -> impl Iterator<Item = &CaseResult> {
        self.cases.iter().filter(|case| !case.passed())
    }

    /// Returns the closing line, `N passed, M failed`.
    pub fn summary(&self) -> String {
        format!("{} passed, {} failed", self.passed(), self.failed())
    }
}

/// Writes one line per case (`<file>/<name> ... ok` or `... FAILED` followed by the indented
/// diff), then a blank line and the summary.
impl fmt::Display for CaseReport {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        for case in &self.cases {
            writeln!(formatter, "{case}")?;
        }
        writeln!(formatter)?;
        writeln!(formatter, "{}", self.summary())
    }
}

// === impl CaseResult ===

impl CaseResult {
    /// Returns whether the case passed.
    pub fn passed(&self) -> bool {
        self.diff.is_empty()
    }

    /// Returns the case's id, `<file>/<name>`.
    pub fn id(&self) -> String {
        format!("{}/{}", self.file, self.name)
    }
}

/// Writes `<file>/<name> ... ok`, or `... FAILED` followed by the diff indented by four spaces.
impl fmt::Display for CaseResult {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.passed() {
            return write!(formatter, "{} ... ok", self.id());
        }
        write!(formatter, "{} ... FAILED", self.id())?;
        for line in &self.diff {
            write!(formatter, "\n    {line}")?;
        }
        Ok(())
    }
}
