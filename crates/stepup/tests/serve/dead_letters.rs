//! Messages that are not valid events go to the dead-letter topic with their reason, and the
//! consumer goes on with the next message.

use serde_json::json;
use stepup_api::pb::Requirement;
use stepup_kafka::{HEADER_REASON, HEADER_REASON_CODE, HEADER_SOURCE_TOPIC};
use stepup_tests::api::{await_decision, requirement};
use stepup_tests::events::{LONDON_IP, at, login_attempt};
use stepup_tests::kafka::read_topic;
use stepup_tests::{PARTITIONS, Serve, shared_broker, unique_name};

use crate::STEPUP;

#[tokio::test(flavor = "multi_thread")]
async fn malformed_events_go_to_dead_letter_topic() {
    let serve = Serve::start(STEPUP, &shared_broker()).await;
    let producer = serve.events_producer();
    let mut client = serve.client().await;
    let user = unique_name("user");

    let unknown_type = json!({
        "type": "password_reset",
        "version": 1,
        "event_id": unique_name("reset"),
        "user_id": user,
        "occurred_at": at(0),
    });
    let mut missing_user = login_attempt(&unique_name("no-user"), &user, &at(1), LONDON_IP);
    missing_user
        .as_object_mut()
        .expect("an event is an object")
        .remove("user_id");
    let mut missing_ip = login_attempt(&unique_name("no-ip"), &user, &at(2), LONDON_IP);
    missing_ip
        .as_object_mut()
        .expect("an event is an object")
        .remove("ip");
    let bad: [(&str, Vec<u8>); 4] = [
        ("not_json", b"{\"type\": \"login_attempt\", ".to_vec()),
        ("unknown_type", unknown_type.to_string().into_bytes()),
        ("missing_field", missing_user.to_string().into_bytes()),
        ("invalid_field", missing_ip.to_string().into_bytes()),
    ];
    for (_, payload) in &bad {
        producer.send(&user, payload).await;
    }

    // A valid event after the bad ones is still decided: the consumer did not stall.
    let valid = unique_name("valid");
    producer
        .send_event(&login_attempt(&valid, &user, &at(3), LONDON_IP))
        .await;
    let decision = await_decision(&mut client, &valid).await;
    assert_eq!(requirement(&decision), Requirement::Allow, "{decision:#?}");

    let topics = serve.topics();
    let mut letters = read_topic(serve.brokers(), &topics.dead_letter, PARTITIONS, bad.len()).await;
    // One key, so one partition in both topics: the offsets give the publishing order.
    letters.sort_by_key(|letter| letter.offset);
    for ((code, payload), letter) in bad.iter().zip(&letters) {
        assert_eq!(
            letter.headers.get(HEADER_REASON_CODE).map(String::as_str),
            Some(*code)
        );
        let reason = letter
            .headers
            .get(HEADER_REASON)
            .cloned()
            .unwrap_or_default();
        assert!(
            !reason.is_empty(),
            "{code}: no `{HEADER_REASON}` header: {letter:?}"
        );
        let source = letter.headers.get(HEADER_SOURCE_TOPIC);
        assert_eq!(source, Some(&topics.events), "{code}: {letter:?}");
        assert_eq!(
            letter.key.as_deref(),
            Some(user.as_str()),
            "{code}: the key is kept"
        );
        assert_eq!(
            &letter.payload, payload,
            "{code}: the payload is kept byte for byte"
        );
    }
}
