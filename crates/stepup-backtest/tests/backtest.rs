//! End-to-end backtests against MaxMind's test databases and the shipped rules.

// The helpers below set up fixtures; a failure there should fail the test loudly.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use stepup_backtest::{
    Backtest, BacktestOptions, GenerateOptions, InputFormat, OutputFormat, Role, RuleSetSpec,
    Summary, generate_events,
};
use stepup_engine::EngineConfig;
use stepup_geo::{Geo, GeoPaths};
use stepup_policy::PolicyConfig;

/// The rule dropped from the candidate in the diff tests.
const DROPPED_RULE: &str = "password_spraying";

/// Addresses in MaxMind's test City database.
const LONDON: &str = "81.2.69.142";
const LINKOPING: &str = "89.160.20.112";
const MILTON_US: &str = "216.160.83.56";

const CHROME: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 \
                      (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn test_geo() -> Arc<Geo> {
    let data = workspace().join("data/geoip/maxmind-test");
    let paths = GeoPaths {
        city: Some(data.join("GeoIP2-City-Test.mmdb")),
        asn: Some(data.join("GeoLite2-ASN-Test.mmdb")),
        ..GeoPaths::default()
    };
    Arc::new(Geo::open(&paths).unwrap())
}

/// Copies the shipped rules into `dir`, leaving out `skip`.
fn copy_rules(dir: &Path, skip: Option<&str>) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    for entry in std::fs::read_dir(workspace().join("rules")).unwrap() {
        let path = entry.unwrap().path();
        let is_rule = path
            .extension()
            .is_some_and(|extension| extension == "rhai");
        let skipped = skip.is_some_and(|id| path.file_stem().is_some_and(|stem| stem == id));
        if is_rule && !skipped {
            std::fs::copy(&path, dir.join(path.file_name().unwrap())).unwrap();
        }
    }
    dir.to_path_buf()
}

fn backtest(candidate: &Path, baseline: Option<&Path>) -> Backtest {
    let policy = PolicyConfig::default();
    let spec = RuleSetSpec::new(Role::Candidate, candidate, &policy);
    let backtest = Backtest::new(EngineConfig::default(), test_geo(), spec);
    match baseline {
        Some(dir) => backtest.with_baseline(RuleSetSpec::new(Role::Baseline, dir, &policy)),
        None => backtest,
    }
}

fn options(input: &Path, out: Option<&Path>) -> BacktestOptions {
    BacktestOptions {
        out_dir: out.map(Path::to_path_buf),
        ..BacktestOptions::new(input)
    }
}

/// Formats one event as an NDJSON line.
fn line(kind: &str, id: &str, user: &str, second: u32, fields: &str) -> String {
    let minute = second / 60;
    let second = second % 60;
    format!(
        "{{\"type\":\"{kind}\",\"version\":1,\"event_id\":\"{id}\",\"user_id\":\"{user}\",\
         \"occurred_at\":\"2026-03-02T09:{minute:02}:{second:02}Z\",{fields}}}"
    )
}

fn attempt(id: &str, user: &str, second: u32, ip: &str) -> String {
    let fields = format!(r#""ip":"{ip}","user_agent":"{CHROME}","device_id":"d-{user}""#);
    line("login_attempt", id, user, second, &fields)
}

fn result(id: &str, user: &str, second: u32, attempt: &str, success: bool) -> String {
    let fields = format!(r#""attempt_id":"{attempt}","success":{success}"#);
    line("login_result", id, user, second, &fields)
}

/// Regular logins of two users, then one address failing logins for eight accounts: the
/// spraying rule requires MFA once five accounts have failed from it.
fn spraying_events() -> String {
    let mut lines = Vec::new();
    for (index, user) in ["alice", "bob"].into_iter().enumerate() {
        let second = index as u32 * 2;
        lines.push(attempt(&format!("a-{user}"), user, second, LONDON));
        lines.push(result(
            &format!("r-{user}"),
            user,
            second + 1,
            &format!("a-{user}"),
            true,
        ));
    }
    for victim in 0..8 {
        let second = 60 + victim * 2;
        let user = format!("victim-{victim}");
        let id = format!("spray-{victim}");
        lines.push(attempt(&id, &user, second, LINKOPING));
        lines.push(result(&format!("{id}-r"), &user, second + 1, &id, false));
    }
    lines.push(attempt("a-alice-2", "alice", 200, MILTON_US));
    lines.push(result("r-alice-2", "alice", 201, "a-alice-2", true));
    lines.join("\n") + "\n"
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn read_csv_rows(path: &Path) -> Vec<Vec<String>> {
    let text = std::fs::read_to_string(path).unwrap();
    text.lines()
        .map(|line| line.split(',').map(str::to_owned).collect())
        .collect()
}

fn column(rows: &[Vec<String>], name: &str) -> Vec<String> {
    let index = rows[0].iter().position(|header| header == name).unwrap();
    rows[1..].iter().map(|row| row[index].clone()).collect()
}

#[test]
fn replay_decides_every_attempt() {
    let dir = tempfile::tempdir().unwrap();
    let input = write(dir.path(), "events.ndjson", &spraying_events());
    let summary = backtest(&workspace().join("rules"), None)
        .run(&options(&input, None))
        .unwrap();

    assert_eq!(summary.input.events, 22);
    assert_eq!(summary.input.events_by_type["login_attempt"], 11);
    assert_eq!(summary.candidate.decisions, 11);
    assert!(summary.baseline.is_none());
    assert!(summary.diff.is_none());
    let spraying = summary
        .candidate
        .by_rule
        .iter()
        .find(|g| g.key == DROPPED_RULE);
    assert!(
        spraying.is_some_and(|group| group.counts.mfa >= 1),
        "{:?}",
        summary.candidate.by_rule
    );
}

#[test]
fn dropped_rule_changes_exactly_its_events() {
    let dir = tempfile::tempdir().unwrap();
    let input = write(dir.path(), "events.ndjson", &spraying_events());
    let baseline = copy_rules(&dir.path().join("baseline"), None);
    let candidate = copy_rules(&dir.path().join("candidate"), Some(DROPPED_RULE));
    let out = dir.path().join("out");

    let summary = backtest(&candidate, Some(&baseline))
        .run(&options(&input, Some(&out)))
        .unwrap();

    let decisions = read_csv_rows(&out.join("baseline_decisions.csv"));
    let decided_by = column(&decisions, "decided_by");
    let by_rule: BTreeSet<String> = column(&decisions, "event_id")
        .into_iter()
        .zip(decided_by)
        .filter(|(_, rules)| rules.split('|').any(|rule| rule == DROPPED_RULE))
        .map(|(id, _)| id)
        .collect();
    let diff = read_csv_rows(&out.join("diff.csv"));
    let changed: BTreeSet<String> = column(&diff, "event_id").into_iter().collect();

    assert!(
        !by_rule.is_empty(),
        "the baseline never used {DROPPED_RULE}"
    );
    assert_eq!(changed, by_rule);
    for rules in column(&diff, "baseline_decided_by") {
        assert!(rules.contains(DROPPED_RULE), "{rules}");
    }
    for rules in column(&diff, "candidate_decided_by") {
        assert!(!rules.contains(DROPPED_RULE), "{rules}");
    }
    let diff_summary = summary.diff.unwrap();
    assert_eq!(diff_summary.changed, by_rule.len() as u64);
    assert_eq!(diff_summary.rules_lost[0].key, DROPPED_RULE);
}

#[test]
fn dropped_rule_lost_on_generated_stream() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("events.ndjson");
    generate_events(&input, &GenerateOptions::new(4_000)).unwrap();
    let baseline = copy_rules(&dir.path().join("baseline"), None);
    let candidate = copy_rules(&dir.path().join("candidate"), Some(DROPPED_RULE));

    let summary = backtest(&candidate, Some(&baseline))
        .run(&options(&input, None))
        .unwrap();

    let baseline_uses = summary
        .baseline
        .as_ref()
        .unwrap()
        .by_rule
        .iter()
        .find(|group| group.key == DROPPED_RULE)
        .map_or(0, |group| group.decisions);
    let diff = summary.diff.unwrap();
    let lost = diff
        .rules_lost
        .iter()
        .find(|group| group.key == DROPPED_RULE);
    assert!(baseline_uses > 0);
    assert_eq!(lost.map(|group| group.decisions), Some(baseline_uses));
    assert!(diff.changed >= baseline_uses);
    assert!(
        diff.rules_gained
            .iter()
            .all(|group| group.key != DROPPED_RULE)
    );
}

#[test]
fn two_runs_write_identical_files() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("events.ndjson");
    generate_events(&input, &GenerateOptions::new(3_000)).unwrap();
    let baseline = copy_rules(&dir.path().join("baseline"), None);
    let candidate = copy_rules(&dir.path().join("candidate"), Some(DROPPED_RULE));

    for format in [OutputFormat::Csv, OutputFormat::Parquet] {
        let mut outputs = Vec::new();
        for run in 0..2 {
            let out = dir.path().join(format!("out-{format}-{run}"));
            let options = BacktestOptions {
                output_format: format,
                ..options(&input, Some(&out))
            };
            let summary = backtest(&candidate, Some(&baseline)).run(&options).unwrap();
            outputs.push((out, summary));
        }
        let (first, second) = (&outputs[0], &outputs[1]);
        assert_eq!(first.1, second.1);
        for name in &first.1.outputs {
            let a = std::fs::read(first.0.join(name)).unwrap();
            let b = std::fs::read(second.0.join(name)).unwrap();
            assert!(a == b, "{name} differs between runs ({format})");
        }
        assert!(first.1.outputs.contains(&format!("decisions.{format}")));
    }
}

#[test]
fn report_has_charts_and_diff_table() {
    let dir = tempfile::tempdir().unwrap();
    let input = write(dir.path(), "events.ndjson", &spraying_events());
    let baseline = copy_rules(&dir.path().join("baseline"), None);
    let candidate = copy_rules(&dir.path().join("candidate"), Some(DROPPED_RULE));
    let out = dir.path().join("out");

    let summary = backtest(&candidate, Some(&baseline))
        .run(&options(&input, Some(&out)))
        .unwrap();

    for name in [
        "decisions.csv",
        "baseline_decisions.csv",
        "diff.csv",
        "invalid.csv",
    ] {
        assert!(out.join(name).is_file(), "{name} missing");
    }
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert_eq!(html.matches("<svg").count(), 2);
    assert!(html.contains("<polyline"));
    assert!(html.contains("Changed events"));
    assert!(html.contains("spray-5"));
    assert!(!html.contains("<script"));
    assert!(
        !html.contains("src=") && !html.contains("href="),
        "external reference"
    );
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(json["diff"]["changed"], summary.diff.unwrap().changed);
}

#[test]
fn summary_json_parses_back() {
    let dir = tempfile::tempdir().unwrap();
    let input = write(dir.path(), "events.ndjson", &spraying_events());
    let summary: Summary = backtest(&workspace().join("rules"), None)
        .run(&options(&input, None))
        .unwrap();

    let text = serde_json::to_string_pretty(&summary).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();

    assert_eq!(json["input"]["events"], 22);
    assert_eq!(json["candidate"]["decisions"], 11);
    assert!(
        json["candidate"]["over_time"]
            .as_array()
            .is_some_and(|b| b.len() == 1)
    );
    assert_eq!(json["bucket"], "day");
    assert!(json["diff"].is_null());
}

#[test]
fn invalid_line_is_counted_and_strict_stops() {
    let dir = tempfile::tempdir().unwrap();
    let mut text = spraying_events();
    text.insert_str(0, "{\"type\":\"login_attempt\"}\n");
    let input = write(dir.path(), "events.ndjson", &text);
    let rules = workspace().join("rules");

    let summary = backtest(&rules, None).run(&options(&input, None)).unwrap();
    assert_eq!(summary.input.invalid, 1);
    assert_eq!(
        summary.input.invalid_samples[0].position.to_string(),
        "line 1"
    );
    assert_eq!(summary.input.events, 22);

    let strict = BacktestOptions {
        strict: true,
        ..options(&input, None)
    };
    let error = backtest(&rules, None).run(&strict).unwrap_err().to_string();
    assert!(error.contains("line 1"), "{error}");
}

#[test]
fn out_of_order_input_is_rejected_unless_sorted() {
    let dir = tempfile::tempdir().unwrap();
    let mut lines: Vec<String> = spraying_events().lines().map(str::to_owned).collect();
    lines.swap(0, 3);
    let input = write(dir.path(), "events.ndjson", &(lines.join("\n") + "\n"));
    let rules = workspace().join("rules");

    let error = backtest(&rules, None)
        .run(&options(&input, None))
        .unwrap_err()
        .to_string();
    assert!(error.contains("line 2"), "{error}");
    assert!(error.contains("--sort"), "{error}");

    let sorted = BacktestOptions {
        sort: true,
        ..options(&input, None)
    };
    let summary = backtest(&rules, None).run(&sorted).unwrap();
    assert_eq!(summary.candidate.decisions, 11);
    assert!(summary.input.sorted);
}

#[test]
fn rba_sample_replays_with_labels() {
    let input = workspace().join("data/rba/rba-dataset-head18.csv");
    let summary = backtest(&workspace().join("rules"), None)
        .run(&options(&input, None))
        .unwrap();

    assert_eq!(summary.input.format, InputFormat::Rba);
    assert_eq!(summary.input.events, 38);
    assert_eq!(summary.candidate.decisions, 19);
    let attack = summary
        .candidate
        .by_label
        .iter()
        .find(|g| g.key == "is_attack_ip=true");
    assert_eq!(attack.map(|group| group.decisions), Some(2));
}

#[test]
fn missing_rules_dir_names_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let input = write(dir.path(), "events.ndjson", &spraying_events());
    let error = match backtest(&dir.path().join("no-rules"), None).run(&options(&input, None)) {
        Ok(_) => panic!("ran without rules"),
        Err(error) => error.to_string(),
    };
    assert!(error.contains("--rules"), "{error}");
}

#[test]
fn hourly_buckets_split_the_day() {
    let dir = tempfile::tempdir().unwrap();
    let mut text = String::new();
    for hour in 0..3 {
        let fields = format!(r#""ip":"{LONDON}","user_agent":"{CHROME}""#);
        let event = line("login_attempt", &format!("h{hour}"), "u", 0, &fields);
        let _ = writeln!(
            text,
            "{}",
            event.replace("T09:", &format!("T{:02}:", 9 + hour))
        );
    }
    let input = write(dir.path(), "events.ndjson", &text);
    let hourly = BacktestOptions {
        bucket: stepup_backtest::Bucket::Hour,
        ..options(&input, None)
    };
    let summary = backtest(&workspace().join("rules"), None)
        .run(&hourly)
        .unwrap();

    let starts: Vec<&str> = summary
        .candidate
        .over_time
        .iter()
        .map(|b| b.start.as_str())
        .collect();
    assert_eq!(
        starts,
        [
            "2026-03-02T09:00:00Z",
            "2026-03-02T10:00:00Z",
            "2026-03-02T11:00:00Z"
        ]
    );
}
