//! The rule workflow of docs/rules.md, run through the `stepup` binary as a security engineer
//! would: write a rule and its case files, run `stepup rules test`, backtest the rule against
//! the shipped rules, run it in shadow mode, and promote it.
//!
//! Every test works on a copy of the shipped `rules/` in a temporary directory. Serving a
//! shadow rule, its metric and the promotion by `stepup.v1.Admin/ReloadRules` are tested
//! in-process in crates/stepup-api/tests/admin.rs, without a Kafka broker.

// Test helpers outside `#[test]` functions unwrap too: a failure there fails the test.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

const RULE_ID: &str = "new_device_new_asn";

/// The rule of the docs/rules.md walkthrough, in live mode.
const LIVE_RULE: &str = r#"//! id: new_device_new_asn
//! version: 1
//! description: Ask for MFA when a new device logs in from a network the user never verified from.
//! owner: security@example.com
//! mode: live
//! priority: 105
//! user_message: We noticed a sign-in from a new device.

if event.type != "login_attempt" || signals?.first_login == true {
    return;
}

let novelty = signals?.novelty;
if novelty?.new_device == true && novelty?.new_asn == true && novelty?.trusted_device != true {
    mfa(
        "new_device_new_asn",
        "new device on a network the user never verified from",
        #{ signal: "device" },
    )
}
"#;

/// Cases where the rule must not fire, shared by the live and the shadow case files.
const QUIET_CASES: &str = "
  - name: new_device_on_known_network_is_allowed
    signals:
      novelty: { new_device: true, trusted_device: false }
    expect: { requirement: allow, exact: true }

  - name: known_device_on_new_network_is_allowed
    signals:
      novelty: { new_asn: true }
    expect: { requirement: allow, exact: true }

  - name: first_login_is_left_to_other_rules
    signals:
      first_login: true
      novelty: { new_device: true, new_asn: true, trusted_device: false }
    expect: { requirement: allow, exact: true }
";

const LIVE_FIRING_CASE: &str = "
  - name: new_device_on_new_network_asks_for_mfa
    signals:
      novelty: { new_device: true, new_asn: true, trusted_device: false }
    expect:
      requirement: mfa
      reasons: [new_device_new_asn]
      rule_ids: [new_device_new_asn]
      exact: true
";

/// The firing case once the rule runs in shadow mode: the live decision stays `allow`.
const SHADOW_FIRING_CASE: &str = "
  - name: new_device_on_new_network_is_shadowed
    signals:
      novelty: { new_device: true, new_asn: true, trusted_device: false }
    expect:
      requirement: allow
      exact: true
      shadow:
        - { rule_id: new_device_new_asn, requirement: mfa, reason: new_device_new_asn }
";

/// Synthetic events per backtest: enough for the rule to fire, few enough for a debug build.
const HISTORY_EVENTS: &str = "3000";

fn shipped_rules() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../rules")
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

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        let target = to.join(path.file_name().unwrap());
        if path.is_dir() {
            copy_dir(&path, &target);
        } else {
            std::fs::copy(&path, target).unwrap();
        }
    }
}

/// Creates `rules/` (the shipped rules, the baseline) and `rules-next/` (the shipped rules plus
/// the new rule in `mode` with `firing_case`) in a new temporary directory.
fn workspace(mode: &str, firing_case: &str) -> tempfile::TempDir {
    let temp = tempfile::tempdir().unwrap();
    copy_dir(&shipped_rules(), &temp.path().join("rules"));
    copy_dir(&shipped_rules(), &temp.path().join("rules-next"));
    write_rule(temp.path(), mode, firing_case);
    temp
}

fn write_rule(dir: &Path, mode: &str, firing_case: &str) {
    let rule = LIVE_RULE.replace("//! mode: live", &format!("//! mode: {mode}"));
    let next = dir.join("rules-next");
    std::fs::write(next.join(format!("{RULE_ID}.rhai")), rule).unwrap();
    let cases = format!("cases:{firing_case}{QUIET_CASES}");
    std::fs::write(next.join(format!("tests/{RULE_ID}.yaml")), cases).unwrap();
}

/// Runs `stepup rules test DIR` and returns its output with the passed and failed counts of
/// its closing line.
fn rules_test(dir: &Path, rules: &str) -> (Output, usize, usize) {
    let output = stepup(dir, &["rules", "test", rules]);
    let stdout = text(&output.stdout);
    let summary = stdout.lines().last().unwrap_or_default();
    let counts: Vec<usize> = summary
        .split(' ')
        .filter_map(|word| word.parse().ok())
        .collect();
    assert_eq!(counts.len(), 2, "no `N passed, M failed` line:\n{stdout}");
    (output, counts[0], counts[1])
}

/// Generates a history in `dir` and backtests `rules-next` against `rules` on it.
fn backtest(dir: &Path) -> Value {
    let generated = stepup(
        dir,
        &[
            "backtest",
            "--generate",
            HISTORY_EVENTS,
            "--out",
            "history.ndjson",
        ],
    );
    assert!(generated.status.success(), "{}", text(&generated.stderr));

    let output = stepup(
        dir,
        &[
            "backtest",
            "--rules",
            "rules-next",
            "--baseline",
            "rules",
            "--input",
            "history.ndjson",
            "--json",
        ],
    );
    assert!(output.status.success(), "{}", text(&output.stderr));
    serde_json::from_slice(&output.stdout).unwrap()
}

/// Returns the breakdown entry with `key` from `entries`, if any.
fn entry<'v>(entries: &'v Value, key: &str) -> Option<&'v Value> {
    entries.as_array().unwrap().iter().find(|e| e["key"] == key)
}

fn rule_mode<'v>(side: &'v Value, rule_id: &str) -> Option<&'v Value> {
    let rules = side["rules"].as_array().unwrap();
    rules
        .iter()
        .find(|rule| rule["id"] == rule_id)
        .map(|rule| &rule["mode"])
}

fn count(value: &Value) -> u64 {
    value.as_u64().unwrap()
}

#[test]
fn new_rule_cases_pass() {
    let temp = workspace("live", LIVE_FIRING_CASE);

    let (_, shipped_passed, _) = rules_test(temp.path(), "rules");
    let (output, passed, failed) = rules_test(temp.path(), "rules-next");

    let stdout = text(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert_eq!(failed, 0, "{stdout}");
    assert_eq!(passed, shipped_passed + 4, "{stdout}");
    for name in [
        "new_device_on_new_network_asks_for_mfa",
        "new_device_on_known_network_is_allowed",
        "known_device_on_new_network_is_allowed",
        "first_login_is_left_to_other_rules",
    ] {
        let line = format!("{RULE_ID}/{name} ... ok\n");
        assert!(stdout.contains(&line), "missing `{line}` in:\n{stdout}");
    }
}

#[test]
fn wrong_case_fails_with_diff() {
    // The default context's device is trusted, so without `trusted_device: false` the rule
    // stays quiet and the case's expectation is wrong.
    let wrong = LIVE_FIRING_CASE.replace(", trusted_device: false }", " }");
    let temp = workspace("live", &wrong);

    let (output, passed, failed) = rules_test(temp.path(), "rules-next");

    let stdout = text(&output.stdout);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert_eq!(failed, 1, "{stdout}");
    assert!(passed > 0, "{stdout}");
    let failure = format!("{RULE_ID}/new_device_on_new_network_asks_for_mfa ... FAILED\n");
    assert!(stdout.contains(&failure), "{stdout}");
    assert!(stdout.contains("    - requirement: mfa\n"), "{stdout}");
    assert!(stdout.contains("    + requirement: allow\n"), "{stdout}");
    assert!(
        stdout.contains(&format!("    - reason: {RULE_ID} (missing)\n")),
        "{stdout}"
    );
    assert!(
        stderr.contains(&format!("error: 1 of {} cases failed", passed + 1)),
        "{stderr}"
    );
}

#[test]
fn backtest_attributes_changes_to_new_rule() {
    let temp = workspace("live", LIVE_FIRING_CASE);

    let summary = backtest(temp.path());

    let diff = &summary["diff"];
    let changed = count(&diff["changed"]);
    assert!(changed > 0, "{diff:#}");
    assert_eq!(
        count(&diff["compared"]),
        count(&summary["candidate"]["decisions"])
    );
    let gained = entry(&diff["rules_gained"], RULE_ID).expect("the new rule gained decisions");
    let gained_decisions = count(&gained["decisions"]);
    assert!(gained_decisions > 0, "{diff:#}");
    assert!(gained_decisions <= changed, "{diff:#}");
    assert_eq!(count(&gained["mfa"]), gained_decisions, "{diff:#}");
    // The new rule explains most changes. The others are later logins of the same users, whose
    // profiles learnt differently.
    assert!(gained_decisions * 2 > changed, "{diff:#}");
    assert_eq!(diff["rules_gained"][0]["key"], RULE_ID, "{diff:#}");

    let candidate = &summary["candidate"];
    let baseline = &summary["baseline"];
    assert_eq!(rule_mode(candidate, RULE_ID), Some(&Value::from("live")));
    assert_eq!(rule_mode(baseline, RULE_ID), None);
    let candidate_mfa = count(&candidate["requirements"]["mfa"]);
    let baseline_mfa = count(&baseline["requirements"]["mfa"]);
    assert!(
        candidate_mfa > baseline_mfa,
        "{candidate_mfa} <= {baseline_mfa}"
    );
    let by_reason = entry(&candidate["by_reason_code"], RULE_ID).expect("reason code counted");
    assert!(count(&by_reason["mfa"]) >= gained_decisions, "{by_reason}");
}

#[test]
fn shadow_rule_counts_without_changing_decisions() {
    let temp = workspace("shadow", SHADOW_FIRING_CASE);

    let (output, _, failed) = rules_test(temp.path(), "rules-next");
    assert!(output.status.success(), "{}", text(&output.stdout));
    assert_eq!(failed, 0);
    let summary = backtest(temp.path());

    let candidate = &summary["candidate"];
    let baseline = &summary["baseline"];
    assert_eq!(
        count(&summary["diff"]["changed"]),
        0,
        "{:#}",
        summary["diff"]
    );
    assert_eq!(candidate["requirements"], baseline["requirements"]);
    assert_eq!(rule_mode(candidate, RULE_ID), Some(&Value::from("shadow")));
    assert!(entry(&candidate["by_rule"], RULE_ID).is_none());
    let shadow_key = format!("{RULE_ID}=mfa");
    let shadow = entry(&candidate["by_shadow_rule"], &shadow_key).expect("shadow verdicts counted");
    assert!(count(&shadow["decisions"]) > 0, "{shadow}");
    assert!(entry(&baseline["by_shadow_rule"], &shadow_key).is_none());

    // Promote: live mode, a new version and the live expectation. The file passes its cases,
    // which a reload also checks before it applies the rule set.
    let promoted = LIVE_RULE.replace("//! version: 1", "//! version: 2");
    let next = temp.path().join("rules-next");
    std::fs::write(next.join(format!("{RULE_ID}.rhai")), promoted).unwrap();
    let cases = format!("cases:{LIVE_FIRING_CASE}{QUIET_CASES}");
    std::fs::write(next.join(format!("tests/{RULE_ID}.yaml")), cases).unwrap();
    let (output, _, failed) = rules_test(temp.path(), "rules-next");
    assert!(output.status.success(), "{}", text(&output.stdout));
    assert_eq!(failed, 0);
    let listed = text(&stepup(temp.path(), &["rules", "list", "rules-next"]).stdout);
    let columns: Vec<&str> = listed
        .lines()
        .map(|line| line.split_whitespace().collect::<Vec<&str>>())
        .find(|columns| columns.first() == Some(&RULE_ID))
        .expect("the rule is listed");
    assert_eq!(columns[1..3], ["2", "live"], "{listed}");
}
