use std::path::Path;

use prometheus::{Encoder, IntGaugeVec, Opts, Registry, TextEncoder};
use serde_json::json;

use super::*;
use crate::PolicyConfig;

const CASES: &str = "\
cases:
  - name: five_failures_ask_for_mfa
    signals: { user_failures: 5 }
    expect: { requirement: mfa, reasons: [too_many_failures] }
  - name: four_failures_pass
    signals: { user_failures: 4 }
    expect: { requirement: allow }
";

fn rule(version: &str, threshold: u32) -> String {
    format!(
        "//! id: failures\n//! version: {version}\n//! description: failure count\n\
         //! owner: security@example.com\n//! mode: live\n//! priority: 1\n\
         if signals?.user_failures >= {threshold} {{ mfa(\"too_many_failures\", \"failures\") }}\n"
    )
}

struct Setup {
    _temp: tempfile::TempDir,
    dir: std::path::PathBuf,
    registry: Registry,
    reloader: RuleReloader,
}

/// Writes a rule set that passes `CASES` and builds a reloader with metrics around it.
fn setup() -> Setup {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().to_path_buf();
    std::fs::write(dir.join("failures.rhai"), rule("1", 5)).unwrap();
    std::fs::create_dir(dir.join(CASES_DIR)).unwrap();
    std::fs::write(dir.join(CASES_DIR).join("failures.yaml"), CASES).unwrap();

    let config = PolicyConfig {
        dir: dir.clone(),
        ..PolicyConfig::default()
    };
    let rules = RuleSet::load_dir(&config).unwrap();
    let version = rules.version().to_string();
    let policy = Arc::new(Policy::new(config.clone(), rules));

    let registry = Registry::new();
    let info = IntGaugeVec::new(
        Opts::new("stepup_rule_set_info", "Active rule set."),
        &["version"],
    )
    .unwrap();
    registry.register(Box::new(info.clone())).unwrap();
    info.with_label_values(&[version.as_str()]).set(1);
    let metrics = ReloadMetrics::register(&registry, info).unwrap();

    let reloader = RuleReloader::new(policy, config).with_metrics(metrics);
    Setup {
        _temp: temp,
        dir,
        registry,
        reloader,
    }
}

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap();
}

fn serving_version(setup: &Setup) -> String {
    setup.reloader.policy().rule_set().version().to_string()
}

fn counts(setup: &Setup) -> [u64; 3] {
    let metrics = setup.reloader.metrics().unwrap();
    ["applied", "unchanged", "rejected"].map(|result| metrics.count(result))
}

fn exposition(registry: &Registry) -> String {
    let mut body = Vec::new();
    TextEncoder::new()
        .encode(&registry.gather(), &mut body)
        .unwrap();
    String::from_utf8(body).unwrap()
}

#[test]
fn good_set_is_applied_and_version_changes() {
    let setup = setup();
    let old_version = serving_version(&setup);
    write(&setup.dir, "failures.rhai", &rule("2", 5));

    let outcome = setup.reloader.reload(ReloadTrigger::Admin).unwrap();

    assert!(outcome.changed);
    assert_eq!(outcome.previous_version, old_version);
    assert_ne!(outcome.version, old_version);
    assert_eq!(serving_version(&setup), outcome.version);
    assert_eq!(outcome.rules[0].version, "2");
    assert_eq!(outcome.report.summary(), "2 passed, 0 failed");
    assert_eq!(counts(&setup), [1, 0, 0]);

    let evaluation = setup
        .reloader
        .policy()
        .evaluate(&json!({ "signals": { "user_failures": 6 } }));
    assert_eq!(evaluation.rule_set_version, outcome.version);
    assert_eq!(evaluation.reasons[0].rule_version, "2");
}

#[test]
fn rule_set_info_shows_only_new_version() {
    let setup = setup();
    let old_version = serving_version(&setup);
    write(&setup.dir, "failures.rhai", &rule("2", 5));

    let outcome = setup.reloader.reload(ReloadTrigger::Admin).unwrap();

    let text = exposition(&setup.registry);
    let new_line = format!("stepup_rule_set_info{{version=\"{}\"}} 1", outcome.version);
    assert!(text.contains(&new_line), "{text}");
    assert!(!text.contains(&old_version), "{text}");
    assert!(
        text.contains("stepup_rule_reloads_total{result=\"applied\"} 1"),
        "{text}"
    );
}

#[test]
fn compile_error_is_rejected_and_old_set_serves() {
    let setup = setup();
    let old_version = serving_version(&setup);
    write(&setup.dir, "failures.rhai", "//! id: failures\nlet x = ;\n");

    let error = setup.reloader.reload(ReloadTrigger::Watch).unwrap_err();

    assert!(matches!(error, ReloadError::Load(_)), "{error}");
    assert!(error.to_string().contains("failures.rhai"), "{error}");
    assert_eq!(serving_version(&setup), old_version);
    assert_eq!(counts(&setup), [0, 0, 1]);
    let text = exposition(&setup.registry);
    assert!(
        text.contains(&format!(
            "stepup_rule_set_info{{version=\"{old_version}\"}} 1"
        )),
        "{text}"
    );
}

#[test]
fn failing_case_is_rejected_and_old_set_serves() {
    let setup = setup();
    let old_version = serving_version(&setup);
    // Threshold 4 makes `four_failures_pass` ask for MFA.
    write(&setup.dir, "failures.rhai", &rule("2", 4));

    let error = setup.reloader.reload(ReloadTrigger::Admin).unwrap_err();

    let ReloadError::CasesFailed { version, report } = &error else {
        panic!("expected failing cases, got {error}");
    };
    assert_ne!(*version, old_version);
    assert_eq!(report.summary(), "1 passed, 1 failed");
    assert!(
        error.to_string().contains("failures/four_failures_pass"),
        "{error}"
    );
    let detailed = error.detailed();
    assert!(detailed.contains("+ requirement: mfa"), "{detailed}");
    assert_eq!(serving_version(&setup), old_version);
    assert_eq!(counts(&setup), [0, 0, 1]);
}

#[test]
fn malformed_case_file_is_rejected() {
    let setup = setup();
    write(&setup.dir, "tests/bad.yaml", "cases: [");

    let error = setup.reloader.reload(ReloadTrigger::Admin).unwrap_err();

    assert!(matches!(error, ReloadError::Cases(_)), "{error}");
    assert!(error.to_string().contains("bad.yaml"), "{error}");
    assert_eq!(counts(&setup), [0, 0, 1]);
}

#[test]
fn unchanged_files_are_counted_as_unchanged() {
    let setup = setup();
    let old_version = serving_version(&setup);

    let outcome = setup.reloader.reload(ReloadTrigger::Admin).unwrap();

    assert!(!outcome.changed);
    assert_eq!(outcome.version, old_version);
    assert_eq!(counts(&setup), [0, 1, 0]);
}

#[test]
fn reload_if_changed_skips_same_files() {
    let setup = setup();

    assert!(
        setup
            .reloader
            .reload_if_changed(ReloadTrigger::Watch)
            .is_none()
    );
    write(&setup.dir, "failures.rhai", &rule("2", 5));
    let first = setup.reloader.reload_if_changed(ReloadTrigger::Watch);
    let second = setup.reloader.reload_if_changed(ReloadTrigger::Watch);

    assert!(first.unwrap().unwrap().changed);
    assert!(second.is_none());
    assert_eq!(counts(&setup), [1, 0, 0]);
}

#[test]
fn case_file_edit_alone_triggers_a_check() {
    let setup = setup();
    let broken = CASES.replace("requirement: allow", "requirement: deny");
    write(&setup.dir, "tests/failures.yaml", &broken);

    let result = setup.reloader.reload_if_changed(ReloadTrigger::Watch);

    assert!(matches!(result, Some(Err(ReloadError::CasesFailed { .. }))));
    assert_eq!(counts(&setup), [0, 0, 1]);
}
