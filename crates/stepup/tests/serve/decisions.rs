//! Events published to Kafka are decided, and `AwaitDecision` returns the decisions.

use stepup_api::pb::{AwaitDecisionRequest, Factor, Requirement};
use stepup_tests::api::{await_decision, factors, reason, reason_codes, requirement};
use stepup_tests::events::{LONDON_IP, MILTON_IP, at, login_attempt, login_result, parse_time};
use stepup_tests::{Serve, shared_broker, unique_name};

use crate::STEPUP;

#[tokio::test(flavor = "multi_thread")]
async fn decisions_arrive_over_grpc() {
    let serve = Serve::start(STEPUP, &shared_broker()).await;
    let producer = serve.events_producer();
    let mut client = serve.client().await;
    let user = unique_name("traveller");

    // A first login from London: nothing about it is unusual.
    let london = unique_name("london");
    let attempt = login_attempt(&london, &user, &at(0), LONDON_IP);
    producer.send_event(&attempt).await;
    let decision = await_decision(&mut client, &london).await;
    assert_eq!(decision.event_id, london);
    assert_eq!(decision.user_id, user);
    assert_eq!(requirement(&decision), Requirement::Allow, "{decision:#?}");
    assert!(
        reason_codes(&decision).contains(&"risk_score"),
        "{decision:#?}"
    );
    let decided_at = parse_time(&decision.decided_at);
    assert_eq!(
        decided_at,
        parse_time(&at(0)),
        "decisions carry the event time"
    );

    // The password was right, so London becomes a verified location of the user.
    let result = login_result(&unique_name("result"), &user, &at(5), &london, true);
    producer.send_event(&result).await;

    // Milton, Washington 30 minutes later: about 7,700 km, so over 15,000 km/h.
    let milton = unique_name("milton");
    producer
        .send_event(&login_attempt(&milton, &user, &at(1800), MILTON_IP))
        .await;
    let decision = await_decision(&mut client, &milton).await;
    assert_eq!(requirement(&decision), Requirement::Mfa, "{decision:#?}");
    assert!(!decision.factors.is_empty(), "{decision:#?}");
    let travel = reason(&decision, "impossible_travel");
    assert_eq!(travel.signal, "travel");
    assert_eq!(travel.rule_id, "impossible_travel");
    let from = travel
        .values
        .get("from")
        .map(String::as_str)
        .unwrap_or_default();
    let to = travel
        .values
        .get("to")
        .map(String::as_str)
        .unwrap_or_default();
    assert!(from.contains("London"), "{travel:#?}");
    assert!(to.contains("Milton"), "{travel:#?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_login_requires_webauthn() {
    let serve = Serve::start(STEPUP, &shared_broker()).await;
    let producer = serve.events_producer();
    let mut client = serve.client().await;

    let event_id = unique_name("admin-login");
    let mut attempt = login_attempt(&event_id, &unique_name("admin"), &at(0), LONDON_IP);
    attempt["attributes"] = serde_json::json!({ "roles": ["admin"] });
    producer.send_event(&attempt).await;

    let decision = await_decision(&mut client, &event_id).await;
    assert_eq!(requirement(&decision), Requirement::Mfa, "{decision:#?}");
    assert_eq!(factors(&decision), [Factor::Webauthn], "{decision:#?}");
    assert!(
        reason_codes(&decision).contains(&"admin_requires_webauthn"),
        "{decision:#?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn await_decision_times_out_for_unpublished_event() {
    let serve = Serve::start(STEPUP, &shared_broker()).await;
    let mut client = serve.client().await;

    let request = AwaitDecisionRequest {
        event_id: unique_name("never-published"),
        timeout_ms: 300,
        user_id: String::new(),
    };
    let status = client
        .await_decision(request)
        .await
        .expect_err("no decision exists for an event nobody published");
    assert_eq!(status.code(), tonic::Code::DeadlineExceeded, "{status}");
}
