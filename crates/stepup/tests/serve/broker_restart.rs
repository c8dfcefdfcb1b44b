//! `stepup serve` keeps working when its broker crashes and comes back.

use std::time::{Duration, Instant};

use stepup_api::pb::{AssessRequest, Requirement};
use stepup_tests::api::{await_decision, requirement};
use stepup_tests::events::{FIREFOX_LINUX, LONDON_IP, at, login_attempt};
use stepup_tests::kafka::EventProducer;
use stepup_tests::metrics::{parse_samples, scrape, value};
use stepup_tests::{Serve, Tansu, WAIT, unique_name};

use crate::STEPUP;

#[tokio::test(flavor = "multi_thread")]
async fn serve_survives_broker_restart() {
    let mut tansu = Tansu::start();
    let brokers = tansu.bootstrap();
    // Short retry pauses keep the reconnect within the test's waits.
    let retry = [("STEPUP_KAFKA_RETRY_BACKOFF_MAX_MS", "1000")];
    let mut serve = Serve::start_with_env(STEPUP, &brokers, &retry).await;
    let mut client = serve.client().await;
    let user = unique_name("user");

    let before = unique_name("before");
    let producer = serve.events_producer();
    producer
        .send_event(&login_attempt(&before, &user, &at(0), LONDON_IP))
        .await;
    await_decision(&mut client, &before).await;
    drop(producer);

    // The broker keeps its topics, group and offsets in SQLite, like a real broker on disk.
    tansu.restart();

    let after = unique_name("after");
    let producer = EventProducer::new(&brokers, &serve.topics().events);
    producer
        .send_event(&login_attempt(&after, &user, &at(60), LONDON_IP))
        .await;
    let decision = await_decision(&mut client, &after).await;
    assert_eq!(decision.event_id, after);
    assert!(serve.is_running(), "stepup serve ended:\n{}", serve.log());

    // The producer behind Assess reconnected as well.
    let request = AssessRequest {
        event_id: unique_name("assessed"),
        user_id: user.clone(),
        occurred_at: at(120),
        ip: LONDON_IP.to_owned(),
        user_agent: FIREFOX_LINUX.to_owned(),
        ..AssessRequest::default()
    };
    let decision = client
        .assess(request)
        .await
        .expect("Assess succeeds")
        .into_inner();
    assert_eq!(requirement(&decision), Requirement::Allow, "{decision:#?}");

    // Both attempts share a partition, so any replay of `before` after the restart came before
    // `after` was decided. The engine must recognise a replay instead of deciding it again.
    let decided = [("type", "login_attempt"), ("outcome", "decided")];
    let deadline = Instant::now() + WAIT;
    let count = loop {
        let samples = parse_samples(&scrape(serve.metrics_addr()).await);
        let count = value(&samples, "stepup_events_total", &decided).unwrap_or(0.0);
        if count >= 2.0 || Instant::now() >= deadline {
            break count;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(
        count, 2.0,
        "login attempts decided, counting both sides of the restart"
    );
}
