use std::path::Path;

use serde_json::json;

use super::*;
use crate::{Policy, PolicyConfig, RuleSet};

fn rule(id: &str, mode: &str, body: &str) -> (String, String) {
    let text = format!(
        "//! id: {id}\n//! version: 2\n//! description: test rule\n\
         //! owner: security@example.com\n//! mode: {mode}\n//! priority: 1\n{body}\n"
    );
    (format!("{id}.rhai"), text)
}

/// Builds a policy with a live rule asking for MFA from 5 failures, a shadow rule asking for
/// MFA on new devices and a live rule asking admins for WebAuthn.
fn policy() -> Policy {
    let sources = [
        rule(
            "failures",
            "live",
            r#"if signals?.user_failures >= 5 { mfa("too_many_failures", "failures") }"#,
        ),
        rule(
            "new_device",
            "shadow",
            r#"if signals?.novelty?.new_device == true { mfa("new_device", "new device") }"#,
        ),
        rule(
            "admin",
            "live",
            r#"if event.attributes?.roles?.contains("admin") == true {
                   mfa("admin", "admin", ["webauthn"])
               }"#,
        ),
    ];
    let config = PolicyConfig::default();
    Policy::new(
        config.clone(),
        RuleSet::from_sources(&sources, &config).unwrap(),
    )
}

fn parse(text: &str) -> Result<CaseFile, PolicyError> {
    parse_case_file(Path::new("tests/sample.yaml"), text)
}

fn run(text: &str) -> CaseReport {
    run_cases(&policy(), &[parse(text).unwrap()])
}

const PASSING: &str = "\
cases:
  - name: quiet_login_is_allowed
    expect:
      requirement: allow
      exact: true
  - name: five_failures_ask_for_mfa
    signals: { user_failures: 5 }
    expect:
      requirement: mfa
      factors: [push, totp, webauthn]
      reasons: [too_many_failures]
      rule_ids: [failures]
  - name: new_device_is_only_shadowed
    signals: { novelty: { new_device: true } }
    expect:
      requirement: allow
      absent_reasons: [new_device]
      shadow:
        - { rule_id: new_device, requirement: mfa, reason: new_device }
";

const FAILING: &str = "\
cases:
  - name: four_failures_expected_to_ask
    signals: { user_failures: 4 }
    expect:
      requirement: mfa
      reasons: [too_many_failures]
  - name: admin_expected_to_get_totp
    event: { attributes: { roles: [admin] } }
    signals: { user_failures: 9 }
    expect:
      requirement: mfa
      factors: [totp]
      rule_ids: [admin]
      exact: true
      reasons: [admin]
";

#[test]
fn built_in_defaults_parse() {
    let contexts = default_contexts();

    assert_eq!(contexts.login["event"]["type"], "login_attempt");
    assert_eq!(contexts.login["signals"]["novelty"]["trusted_device"], true);
    assert_eq!(contexts.action["event"]["type"], "action");
    assert!(contexts.action["signals"].is_null());
    assert_eq!(contexts.action["profile"], contexts.login["profile"]);
}

#[test]
fn case_is_merged_into_login_defaults() {
    let file = parse(
        "cases:\n  - name: partial\n    signals: { novelty: { new_device: true }, travel: null }\n\
         \x20   profile: { last_mfa_age_s: null }\n    expect: { requirement: allow }\n",
    )
    .unwrap();

    let context = &file.cases[0].context;
    assert_eq!(context["signals"]["novelty"]["new_device"], true);
    assert_eq!(context["signals"]["novelty"]["trusted_device"], true);
    assert!(context["signals"]["travel"].is_null());
    assert!(context["profile"]["last_mfa_age_s"].is_null());
    assert_eq!(context["profile"]["verified_logins"], 140);
    assert_eq!(context["event"]["type"], "login_attempt");
}

#[test]
fn action_cases_start_from_action_defaults() {
    let file = parse(
        "defaults:\n  event: { type: action }\ncases:\n  - name: payee\n\
         \x20   event: { action: { name: add_payee } }\n    expect: { requirement: mfa }\n",
    )
    .unwrap();

    let context = &file.cases[0].context;
    assert_eq!(context["event"]["action"]["name"], "add_payee");
    assert_eq!(context["event"]["action"]["sensitive"], false);
    assert!(context["signals"].is_null());
    assert_eq!(context["risk"]["score"], json!(0.0));
}

#[test]
fn passing_file_reports_every_case_ok() {
    let report = run(PASSING);

    assert_eq!(report.cases.len(), 3);
    assert!(report.is_success(), "{report}");
    assert_eq!(report.summary(), "3 passed, 0 failed");
    assert_eq!(report.cases[0].id(), "sample/quiet_login_is_allowed");
    let text = report.to_string();
    assert!(
        text.contains("sample/five_failures_ask_for_mfa ... ok\n"),
        "{text}"
    );
    assert!(text.ends_with("\n3 passed, 0 failed\n"), "{text}");
}

#[test]
fn failing_file_reports_a_diff() {
    let report = run(FAILING);

    assert!(!report.is_success());
    assert_eq!(report.summary(), "0 passed, 2 failed");
    let first = &report.cases[0].diff;
    assert_eq!(first[0], "- requirement: mfa");
    assert_eq!(first[1], "+ requirement: allow");
    assert_eq!(first[2], "- reason: too_many_failures (missing)");
    assert!(first[3].starts_with("  got: allow"), "{first:?}");

    let second = &report.cases[1].diff;
    assert!(
        second.contains(&"- factors: [totp]".to_string()),
        "{second:?}"
    );
    assert!(
        second.contains(&"+ factors: [webauthn]".to_string()),
        "{second:?}"
    );
    assert!(
        second.contains(&"+ reason: too_many_failures (unexpected)".to_string()),
        "{second:?}"
    );
    assert!(
        second.contains(&"+ deciding rule: failures (unexpected)".to_string()),
        "{second:?}"
    );
    let text = report.to_string();
    assert!(
        text.contains("sample/admin_expected_to_get_totp ... FAILED\n    - factors: [totp]\n"),
        "{text}"
    );
}

#[test]
fn shadow_expectation_reports_other_verdict() {
    let report = run("\
cases:
  - name: shadow_wrong
    expect:
      requirement: allow
      shadow:
        - { rule_id: new_device, requirement: mfa }
        - { rule_id: no_such_rule, requirement: allow }
");

    let diff = &report.cases[0].diff;
    assert_eq!(diff[0], "- shadow new_device: mfa");
    assert_eq!(diff[1], "+ shadow new_device: allow");
    assert_eq!(diff[2], "- shadow no_such_rule: allow");
    assert_eq!(
        diff[3],
        "+ shadow no_such_rule: did not run (no shadow rule with this id)"
    );
}

#[test]
fn rule_errors_fail_unless_allowed() {
    let sources = [rule("broken", "live", "signals.nothing.deeper")];
    let config = PolicyConfig::default();
    let policy = Policy::new(
        config.clone(),
        RuleSet::from_sources(&sources, &config).unwrap(),
    );
    let file = parse(
        "cases:\n  - name: strict\n    expect: { requirement: mfa }\n\
         \x20 - name: tolerant\n    expect: { requirement: mfa, no_rule_errors: false }\n",
    )
    .unwrap();

    let report = run_cases(&policy, &[file]);

    assert!(
        report.cases[0].diff[0].starts_with("+ rule error in `broken`:"),
        "{report}"
    );
    assert!(report.cases[1].passed(), "{report}");
}

#[test]
fn load_cases_reads_yaml_files_in_name_order() {
    let temp = tempfile::tempdir().unwrap();
    std::fs::write(temp.path().join("b.yaml"), PASSING).unwrap();
    std::fs::write(temp.path().join("a.yml"), FAILING).unwrap();
    std::fs::write(temp.path().join("README.md"), "not a case file").unwrap();

    let files = load_cases(temp.path()).unwrap();

    assert_eq!(files.len(), 2);
    assert_eq!(files[0].path, temp.path().join("a.yml"));
    assert_eq!(files[1].cases.len(), 3);
    let report = run_cases(&policy(), &files);
    assert_eq!(report.summary(), "3 passed, 2 failed");
}

#[test]
fn missing_case_directory_gives_no_files() {
    let temp = tempfile::tempdir().unwrap();

    let files = load_cases(&temp.path().join("tests")).unwrap();

    assert!(files.is_empty());
}

#[test]
fn malformed_yaml_names_file_and_line() {
    let temp = tempfile::tempdir().unwrap();
    let path = temp.path().join("broken.yaml");
    std::fs::write(
        &path,
        "cases:\n  - name: ok\n    expect: { requirement: allow }\n  - name: second\n\
         \x20   expect: requirement: allow\n",
    )
    .unwrap();

    let error = load_cases(temp.path()).unwrap_err();

    let PolicyError::CaseFile { line, .. } = &error else {
        panic!("expected a case file error, got {error}");
    };
    assert_eq!(*line, Some(5));
    let message = error.to_string();
    assert!(message.contains("broken.yaml"), "{message}");
    assert!(message.contains("line 5"), "{message}");
}

#[test]
fn misspelt_key_names_key_and_line() {
    let error =
        parse("cases:\n  - name: typo\n    expect:\n      requirment: allow\n").unwrap_err();

    let message = error.to_string();
    assert!(message.contains("requirment"), "{message}");
    assert!(message.contains("line 4"), "{message}");
    assert!(message.contains("tests/sample.yaml"), "{message}");
}

#[test]
fn unknown_requirement_is_rejected() {
    let error = parse("cases:\n  - name: bad\n    expect: { requirement: block }\n").unwrap_err();

    assert!(error.to_string().contains("block"), "{error}");
}

#[test]
fn repeated_case_name_is_rejected() {
    let error = parse(
        "cases:\n  - name: twice\n    expect: { requirement: allow }\n\
         \x20 - name: twice\n    expect: { requirement: allow }\n",
    )
    .unwrap_err();

    let message = error.to_string();
    assert!(message.contains("repeated case name `twice`"), "{message}");
    assert!(message.contains("line 4"), "{message}");
}

#[test]
fn context_part_must_be_a_map() {
    let error =
        parse("cases:\n  - name: scalar\n    risk: 0.9\n    expect: { requirement: mfa }\n")
            .unwrap_err();

    let message = error.to_string();
    assert!(message.contains("`risk` of `scalar`"), "{message}");
}
