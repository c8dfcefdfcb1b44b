//! `Assess` and `CheckAction` decide inline and append their events to the events topic;
//! `StreamDecisions` delivers the decisions on events read from Kafka.

use stepup_api::pb::step_up_client::StepUpClient;
use stepup_api::pb::{
    AssessRequest, CheckActionRequest, Decision, Requirement, StreamDecisionsRequest,
};
use stepup_tests::api::{await_decision, reason, reason_codes, requirement};
use stepup_tests::events::{FIREFOX_LINUX, LONDON_IP, at, login_attempt, mfa_result};
use stepup_tests::kafka::read_topic;
use stepup_tests::{PARTITIONS, Serve, WAIT, shared_broker, unique_name};
use tonic::Streaming;
use tonic::transport::Channel;

use crate::STEPUP;

#[tokio::test(flavor = "multi_thread")]
async fn assess_appends_to_events_topic() {
    let serve = Serve::start(STEPUP, &shared_broker()).await;
    let mut client = serve.client().await;
    let user = unique_name("user");

    let assessed = unique_name("assessed");
    let request = AssessRequest {
        event_id: assessed.clone(),
        user_id: user.clone(),
        occurred_at: at(0),
        ip: LONDON_IP.to_owned(),
        user_agent: FIREFOX_LINUX.to_owned(),
        device_id: format!("device-of-{user}"),
        ..AssessRequest::default()
    };
    let decision = client
        .assess(request)
        .await
        .expect("Assess succeeds")
        .into_inner();
    assert_eq!(decision.event_id, assessed);
    assert_eq!(requirement(&decision), Requirement::Allow, "{decision:#?}");

    let records = read_topic(serve.brokers(), &serve.topics().events, PARTITIONS, 1).await;
    let event = records[0].json();
    assert_eq!(
        records[0].key.as_deref(),
        Some(user.as_str()),
        "keyed by user id"
    );
    assert_eq!(event["type"], "login_attempt");
    assert_eq!(event["event_id"], assessed.as_str());
    assert_eq!(event["ip"], LONDON_IP);
}

#[tokio::test(flavor = "multi_thread")]
async fn stream_decisions_delivers_new_decisions() {
    let serve = Serve::start(STEPUP, &shared_broker()).await;
    let producer = serve.events_producer();
    let mut client = serve.client().await;
    let user = unique_name("user");
    let other_user = unique_name("other");

    let request = StreamDecisionsRequest {
        user_id: user.clone(),
        ..StreamDecisionsRequest::default()
    };
    let mut stream = client
        .stream_decisions(request)
        .await
        .expect("StreamDecisions starts")
        .into_inner();

    // The filter drops the other user's decision; the stream keeps the log order.
    let other = unique_name("other-login");
    producer
        .send_event(&login_attempt(&other, &other_user, &at(0), LONDON_IP))
        .await;
    let first = unique_name("first");
    let second = unique_name("second");
    producer
        .send_event(&login_attempt(&first, &user, &at(10), LONDON_IP))
        .await;
    producer
        .send_event(&login_attempt(&second, &user, &at(20), LONDON_IP))
        .await;

    let received = [
        next_decision(&mut stream).await,
        next_decision(&mut stream).await,
    ];
    let ids: Vec<&str> = received.iter().map(|d| d.event_id.as_str()).collect();
    assert_eq!(ids, [first.as_str(), second.as_str()]);
    assert!(received.iter().all(|decision| decision.user_id == user));
}

#[tokio::test(flavor = "multi_thread")]
async fn check_action_requires_recent_mfa() {
    let serve = Serve::start(STEPUP, &shared_broker()).await;
    let producer = serve.events_producer();
    let mut client = serve.client().await;
    let user = unique_name("user");
    let session = unique_name("session");

    // With the shipped rules, `sensitive_action_recent_mfa` gives the reason. The engine adds
    // its own `stale_mfa` reason only when no rule requires MFA.
    let decision = check_action(&mut client, &user, &session, 120).await;
    assert_eq!(requirement(&decision), Requirement::Mfa, "{decision:#?}");
    let recency = reason(&decision, "sensitive_action_recent_mfa");
    let age = recency.values.get("last_mfa_age_s").map(String::as_str);
    assert_eq!(age, Some("never"), "{recency:#?}");

    producer
        .send_event(&mfa_result(
            &unique_name("mfa"),
            &user,
            &at(180),
            None,
            true,
        ))
        .await;
    // Messages of one user are processed in order, so once a later login is decided the MFA
    // result has been applied.
    let barrier = unique_name("barrier");
    producer
        .send_event(&login_attempt(&barrier, &user, &at(190), LONDON_IP))
        .await;
    await_decision(&mut client, &barrier).await;

    let decision = check_action(&mut client, &user, &session, 240).await;
    assert_eq!(requirement(&decision), Requirement::Allow, "{decision:#?}");
    assert!(
        !reason_codes(&decision).contains(&"sensitive_action_recent_mfa"),
        "{decision:#?}"
    );
}

/// Calls `CheckAction` for `change_password` at `seconds` after the base time.
async fn check_action(
    client: &mut StepUpClient<Channel>,
    user: &str,
    session: &str,
    seconds: i64,
) -> Decision {
    let request = CheckActionRequest {
        event_id: unique_name("change-password"),
        user_id: user.to_owned(),
        action: "change_password".to_owned(),
        session_id: session.to_owned(),
        ip: LONDON_IP.to_owned(),
        occurred_at: at(seconds),
        ..CheckActionRequest::default()
    };
    client
        .check_action(request)
        .await
        .expect("CheckAction succeeds")
        .into_inner()
}

async fn next_decision(stream: &mut Streaming<Decision>) -> Decision {
    match tokio::time::timeout(WAIT, stream.message()).await {
        Ok(Ok(Some(decision))) => decision,
        Ok(Ok(None)) => panic!("the decision stream ended"),
        Ok(Err(status)) => panic!("the decision stream failed: {status}"),
        Err(_) => panic!("no decision arrived on the stream within {WAIT:?}"),
    }
}
