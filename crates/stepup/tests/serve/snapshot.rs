//! `stepup profiles export` writes the changelog's profiles to a snapshot, and
//! `stepup backtest --snapshot` replays new events against them.

use std::path::Path;
use std::process::Command;

use serde_json::Value;
use stepup_tests::events::{MILTON_IP, at, login_attempt};
use stepup_tests::process::ScratchDir;
use stepup_tests::serve::Topics;
use stepup_tests::{Serve, shared_broker, workspace_root};

use crate::STEPUP;
use crate::durability::{FAST_GROUP, PARTITIONS, USERS, history, publish, wait_done};

/// Runs the `stepup` binary with `args` in the workspace, with the changelog topic of
/// `topics`, and returns its standard output. Panics with its output if it fails.
fn stepup(args: &[&str], topics: &Topics) -> String {
    let output = Command::new(STEPUP)
        .current_dir(workspace_root())
        .args(args)
        .env("STEPUP_KAFKA_CHANGELOG_TOPIC", &topics.changelog)
        .env("STEPUP_LOG", "warn")
        .output()
        .unwrap_or_else(|err| panic!("failed to run stepup {args:?}: {err}"));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "stepup {args:?} failed:\n{stdout}\n{stderr}"
    );
    stdout
}

/// Returns the number of `mfa` decisions of the candidate in a `--json` summary.
fn mfa_count(summary: &str) -> u64 {
    let summary: Value = serde_json::from_str(summary).expect("summary JSON");
    summary["candidate"]["requirements"]["mfa"]
        .as_u64()
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn backtest_starts_from_exported_profiles() {
    let brokers = shared_broker();
    let topics = Topics::unique_with(PARTITIONS);
    let serve = Serve::start_on(STEPUP, &brokers, &topics, &FAST_GROUP).await;
    let events = history();
    publish(&serve.events_producer(), &events).await;
    wait_done(&brokers, &topics, events.len()).await;

    let dir = ScratchDir::new("stepup-tests-snapshot-");
    let snapshot = dir.file("profiles.snapshot");
    let snapshot_arg = snapshot.to_string_lossy().into_owned();
    stepup(
        &[
            "profiles",
            "export",
            "--brokers",
            &brokers,
            "--out",
            &snapshot_arg,
        ],
        &topics,
    );
    assert!(
        std::fs::metadata(&snapshot)
            .expect("snapshot written")
            .len()
            > 0
    );

    // Every user of the history, who logged in from London so far, now logs in from the US.
    let input = dir.file("next-day.ndjson");
    let lines: Vec<String> = (0..USERS)
        .map(|user| {
            let user_id = format!("user-{user}");
            let id = format!("{user_id}-next");
            login_attempt(&id, &user_id, &at(200_000 + user as i64), MILTON_IP).to_string()
        })
        .collect();
    std::fs::write(&input, lines.join("\n") + "\n").expect("input written");
    let input_arg = input.to_string_lossy().into_owned();

    let backtest = |snapshot: Option<&Path>| {
        let mut args = vec![
            "backtest", "--rules", "rules", "--input", &input_arg, "--json",
        ];
        if snapshot.is_some() {
            args.extend(["--snapshot", &snapshot_arg]);
        }
        stepup(&args, &topics)
    };
    let from_empty = mfa_count(&backtest(None));
    let from_snapshot = mfa_count(&backtest(Some(&snapshot)));
    assert!(
        from_snapshot > from_empty,
        "known users in a new country step up more often from the snapshot \
         ({from_snapshot}) than from empty profiles ({from_empty})"
    );
}
