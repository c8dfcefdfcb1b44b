//! `stepup rules test` and `stepup rules list`, run as a user would.

// Test helpers outside `#[test]` functions unwrap too: a failure there fails the test.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Runs the binary in `dir` without the caller's environment, so stray `STEPUP_*` variables
/// cannot change the configuration.
fn stepup(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_stepup"))
        .args(args)
        .current_dir(dir)
        .env_clear()
        .output()
        .expect("the stepup binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

const RULE: &str = "\
//! id: failures
//! version: 1
//! description: MFA from 5 failed logins.
//! owner: security@example.com
//! mode: live
//! priority: 10
if signals?.user_failures >= 5 { mfa(\"too_many_failures\", \"failures\") }
";

fn write_rules(dir: &Path, cases: &str) {
    std::fs::write(dir.join("failures.rhai"), RULE).unwrap();
    std::fs::create_dir_all(dir.join("tests")).unwrap();
    std::fs::write(dir.join("tests/failures.yaml"), cases).unwrap();
}

#[test]
fn shipped_rules_pass_their_cases() {
    let output = stepup(&workspace(), &["rules", "test", "rules"]);

    let stdout = text(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        text(&output.stderr)
    );
    assert!(
        stdout.contains("user_failure_velocity/five_failures_ask_for_mfa ... ok\n"),
        "{stdout}"
    );
    let summary = stdout.lines().last().unwrap();
    assert!(summary.ends_with(" passed, 0 failed"), "{stdout}");
    let passed: usize = summary.split(' ').next().unwrap().parse().unwrap();
    assert!(passed >= 50, "{stdout}");
}

#[test]
fn failing_case_exits_non_zero_with_diff() {
    let temp = tempfile::tempdir().unwrap();
    write_rules(
        temp.path(),
        "cases:\n  - name: four_failures_ask\n    signals: { user_failures: 4 }\n\
         \x20   expect: { requirement: mfa, reasons: [too_many_failures] }\n\
         \x20 - name: five_failures_ask\n    signals: { user_failures: 5 }\n\
         \x20   expect: { requirement: mfa }\n",
    );

    let output = stepup(temp.path(), &["rules", "test", "."]);

    let stdout = text(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains(
            "failures/four_failures_ask ... FAILED\n    - requirement: mfa\n    \
             + requirement: allow\n    - reason: too_many_failures (missing)\n"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("failures/five_failures_ask ... ok\n"),
        "{stdout}"
    );
    assert!(stdout.ends_with("\n1 passed, 1 failed\n"), "{stdout}");
    assert!(
        text(&output.stderr).contains("1 of 2 cases failed"),
        "{}",
        text(&output.stderr)
    );
}

#[test]
fn compile_error_exits_non_zero() {
    let temp = tempfile::tempdir().unwrap();
    write_rules(temp.path(), "cases: []\n");
    let broken = RULE.replace("mfa(", "mfa((");
    std::fs::write(temp.path().join("failures.rhai"), broken).unwrap();

    let output = stepup(temp.path(), &["rules", "test", "."]);

    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("failures.rhai"), "{stderr}");
    assert!(stderr.contains("line 7"), "{stderr}");
}

#[test]
fn malformed_case_file_exits_non_zero() {
    let temp = tempfile::tempdir().unwrap();
    write_rules(
        temp.path(),
        "cases:\n  - name: typo\n    expect: { requirment: mfa }\n",
    );

    let output = stepup(temp.path(), &["rules", "test", "."]);

    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("failures.yaml"), "{stderr}");
    assert!(stderr.contains("requirment"), "{stderr}");
}

#[test]
fn list_prints_shipped_rules() {
    let output = stepup(&workspace(), &["rules", "list", "rules"]);

    let stdout = text(&output.stdout);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines[0].starts_with("ID "), "{stdout}");
    assert!(lines[1].starts_with("user_failure_velocity "), "{stdout}");
    assert!(
        lines
            .iter()
            .any(|line| line.starts_with("unusual_hour_new_browser") && line.contains(" shadow ")),
        "{stdout}"
    );
}
