//! `/metrics` counts events, dead letters and decisions in the Prometheus text format.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use stepup_tests::api::await_decision;
use stepup_tests::events::{LONDON_IP, at, login_attempt};
use stepup_tests::metrics::{Sample, parse_samples, scrape, sum, value};
use stepup_tests::{Serve, WAIT, shared_broker, unique_name};

use crate::STEPUP;

const EVENTS: &str = "stepup_events_total";
const DEAD_LETTERS: &str = "stepup_dead_letters_total";
const DECISIONS: &str = "stepup_decisions_total";

#[tokio::test(flavor = "multi_thread")]
async fn metrics_endpoint_reports_events() {
    let serve = Serve::start(STEPUP, &shared_broker()).await;
    let producer = serve.events_producer();
    let mut client = serve.client().await;

    let mut logins = Vec::new();
    for seconds in 0..3 {
        let event_id = unique_name("login");
        let attempt = login_attempt(&event_id, &unique_name("user"), &at(seconds), LONDON_IP);
        producer.send_event(&attempt).await;
        logins.push(event_id);
    }
    let sender = unique_name("sender");
    producer.send(&sender, b"not json").await;
    producer.send(&sender, b"[1, 2, 3]").await;
    for event_id in &logins {
        await_decision(&mut client, event_id).await;
    }

    // Counters are updated after the decision is stored and the dead letter acknowledged.
    let decided = [("type", "login_attempt"), ("outcome", "decided")];
    let (text, samples) = wait_for_samples(&serve, |samples| {
        value(samples, EVENTS, &decided) == Some(3.0) && sum(samples, DEAD_LETTERS) == 2.0
    })
    .await;
    assert_eq!(value(&samples, EVENTS, &decided), Some(3.0));
    let not_json = [("type", "invalid"), ("outcome", "not_json")];
    assert_eq!(value(&samples, EVENTS, &not_json), Some(1.0));
    assert_eq!(
        value(&samples, DEAD_LETTERS, &[("reason", "not_json")]),
        Some(1.0)
    );
    assert_eq!(
        value(&samples, DEAD_LETTERS, &[("reason", "not_object")]),
        Some(1.0)
    );
    assert_eq!(sum(&samples, DEAD_LETTERS), 2.0);
    assert_eq!(sum(&samples, DECISIONS), 3.0);
    assert_eq!(
        value(&samples, DECISIONS, &[("requirement", "allow")]),
        Some(3.0)
    );
    assert!(text.contains(&format!("# TYPE {EVENTS} counter")), "{text}");
    assert!(
        text.contains(&format!("# TYPE {DECISIONS} counter")),
        "{text}"
    );

    check_with_promtool(&text);
}

/// Scrapes until `ready` holds for the samples, and returns the last text and samples.
async fn wait_for_samples(
    serve: &Serve,
    ready: impl Fn(&[Sample]) -> bool,
) -> (String, Vec<Sample>) {
    let deadline = Instant::now() + WAIT;
    loop {
        let text = scrape(serve.metrics_addr()).await;
        let samples = parse_samples(&text);
        if ready(&samples) {
            return (text, samples);
        }
        assert!(
            Instant::now() < deadline,
            "metrics did not reach the expected values:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Runs `promtool check metrics` on the exposition when promtool is on `PATH`
/// (Debian's `prometheus` package has it); without it, prints a note and returns.
fn check_with_promtool(text: &str) {
    let Some(promtool) = find_on_path("promtool") else {
        eprintln!("promtool is not on PATH; skipping `promtool check metrics`");
        return;
    };
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool starts");
    let mut stdin = child.stdin.take().expect("stdin is piped");
    stdin
        .write_all(text.as_bytes())
        .expect("promtool reads the exposition");
    drop(stdin);
    let output = child.wait_with_output().expect("promtool ends");
    assert!(
        output.status.success(),
        "promtool check metrics failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn find_on_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}
