//! Plays the schedule as an auth service would: publish each attempt to Kafka, wait for its
//! decision over gRPC, then publish the login and MFA results the decision leads to.

use std::sync::Arc;
use std::time::{Duration as StdDuration, Instant};

use anyhow::Context;
use chrono::{DateTime, Duration, Utc};
use futures::future::join_all;
use parking_lot::Mutex;
use stepup_api::pb;
use stepup_api::pb::step_up_client::StepUpClient;
use stepup_events::{
    Attributes, DeviceChange, DeviceOp, Event, EventBody, Factor, LoginAttempt, LoginResult,
    MfaResult, Requirement, SCHEMA_VERSION,
};
use stepup_kafka::Producer;
use tonic::transport::Channel;

use super::plan::{Credential, PlannedAttempt};
use super::summary::Tally;
use super::typing::Typing;

/// Simulated time covered by one round of publish, await and follow up.
const TICK: Duration = Duration::minutes(30);

/// Every how many attempts a malformed message is published, to show the dead-letter path.
const MALFORMED_EVERY: usize = 250;

/// Publishes events and counts what it published.
pub struct Driver {
    producer: Producer,
    client: StepUpClient<Channel>,
    tally: Arc<Mutex<Tally>>,
    typing: Option<Typing>,
    published: u64,
    next_id: u64,
}

// === impl Driver ===

impl Driver {
    pub fn new(
        producer: Producer,
        client: StepUpClient<Channel>,
        tally: Arc<Mutex<Tally>>,
        typing: Option<Typing>,
    ) -> Self {
        Self {
            producer,
            client,
            tally,
            typing,
            published: 0,
            next_id: 0,
        }
    }

    /// Returns how many messages were published, malformed ones included.
    pub fn published(&self) -> u64 {
        self.published
    }

    /// Plays the whole plan, calling `progress` after each tick.
    pub async fn play(
        &mut self,
        plan: &[PlannedAttempt],
        mut progress: impl FnMut(DateTime<Utc>, u64),
    ) -> anyhow::Result<()> {
        let mut index = 0;
        while index < plan.len() {
            let tick_end = plan[index].at + TICK;
            let end = plan[index..]
                .iter()
                .position(|a| a.at >= tick_end)
                .map_or(plan.len(), |n| index + n);
            self.play_tick(&plan[index..end], index).await?;
            progress(plan[end - 1].at, self.published);
            index = end;
        }
        Ok(())
    }

    async fn play_tick(
        &mut self,
        attempts: &[PlannedAttempt],
        first_index: usize,
    ) -> anyhow::Result<()> {
        let events: Vec<Event> = attempts
            .iter()
            .map(|attempt| self.attempt_event(attempt))
            .collect();
        let sent_at = Instant::now();
        self.send_all(&events)
            .await
            .context("failed to publish a login attempt")?;
        self.published += events.len() as u64;
        self.publish_malformed(attempts, first_index).await?;

        let awaits = events.iter().map(|event| {
            let mut client = self.client.clone();
            let request = pb::AwaitDecisionRequest {
                event_id: event.event_id.clone(),
                timeout_ms: 30_000,
                user_id: event.user_id.clone(),
            };
            async move {
                let response = client.await_decision(request).await;
                (response, sent_at.elapsed())
            }
        });
        let decisions = join_all(awaits).await;

        let mut follow_ups = Vec::new();
        for ((attempt, event), (decision, waited)) in attempts.iter().zip(&events).zip(decisions) {
            let decision = decision
                .context("failed to await a decision over gRPC")?
                .into_inner();
            let requirement = requirement_of(&decision);
            let score = decision.risk_score;
            self.tally
                .lock()
                .record(attempt.label, requirement, score, waited);
            follow_ups.extend(self.follow_ups(attempt, event, requirement, &decision));
        }
        self.send_all(&follow_ups)
            .await
            .context("failed to publish a login or MFA result")?;
        self.published += follow_ups.len() as u64;
        Ok(())
    }

    /// Sends every event before awaiting any acknowledgement, so one round trip covers all.
    async fn send_all(&self, events: &[Event]) -> Result<(), stepup_kafka::KafkaError> {
        let payloads: Vec<Vec<u8>> = events.iter().map(Event::to_json).collect();
        let sends = events
            .iter()
            .zip(&payloads)
            .map(|(event, payload)| self.producer.send_event(&event.user_id, payload));
        for result in join_all(sends).await {
            result?;
        }
        Ok(())
    }

    fn attempt_event(&mut self, attempt: &PlannedAttempt) -> Event {
        let roles = if attempt.admin {
            vec!["admin".to_owned()]
        } else {
            Vec::new()
        };
        let body = EventBody::LoginAttempt(LoginAttempt {
            ip: attempt.place.ip,
            user_agent: attempt.user_agent.to_owned(),
            device_id: attempt.device_id.clone(),
            keystroke: self
                .typing
                .as_mut()
                .and_then(|typing| typing.capture(attempt.typist)),
            attributes: Attributes {
                roles,
                ..Attributes::default()
            },
        });
        self.event(&attempt.user_id, attempt.at, body)
    }

    fn event(&mut self, user_id: &str, at: DateTime<Utc>, body: EventBody) -> Event {
        self.next_id += 1;
        Event {
            event_id: format!("demo-{:07}", self.next_id),
            user_id: user_id.to_owned(),
            occurred_at: at,
            version: SCHEMA_VERSION,
            body,
        }
    }

    /// Builds the results an auth service publishes after the decision.
    fn follow_ups(
        &mut self,
        attempt: &PlannedAttempt,
        event: &Event,
        requirement: Requirement,
        decision: &pb::Decision,
    ) -> Vec<Event> {
        if requirement == Requirement::Deny {
            return Vec::new();
        }
        let password_ok = matches!(attempt.credential, Credential::Owner | Credential::Stolen);
        let result = EventBody::LoginResult(LoginResult {
            attempt_id: event.event_id.clone(),
            success: password_ok,
            reason: (!password_ok).then(|| "bad_password".to_owned()),
            ip: None,
        });
        let mut events =
            vec![self.event(&attempt.user_id, attempt.at + Duration::seconds(2), result)];
        if password_ok && requirement == Requirement::Mfa {
            let factor = decision
                .factors
                .first()
                .and_then(|f| pb::Factor::try_from(*f).ok())
                .and_then(|f| Factor::from_name(&f.as_str_name()["FACTOR_".len()..].to_lowercase()))
                .unwrap_or(Factor::Totp);
            let mfa = EventBody::MfaResult(MfaResult {
                attempt_id: Some(event.event_id.clone()),
                factor,
                passed: attempt.credential == Credential::Owner,
            });
            events.push(self.event(&attempt.user_id, attempt.at + Duration::seconds(25), mfa));
            if let (Credential::Owner, Some(device_id)) = (attempt.credential, &attempt.device_id) {
                // The owner ticks "remember this device" after passing MFA.
                let ttl = i64::try_from(decision.remember_device_ttl_s).unwrap_or(0);
                let trust = EventBody::Device(DeviceChange {
                    device_id: device_id.clone(),
                    op: DeviceOp::Trust,
                    trusted_until: Some(attempt.at + Duration::seconds(ttl)),
                });
                events.push(self.event(
                    &attempt.user_id,
                    attempt.at + Duration::seconds(26),
                    trust,
                ));
            }
        }
        events
    }

    /// Publishes one broken message every `MALFORMED_EVERY` attempts.
    async fn publish_malformed(
        &mut self,
        attempts: &[PlannedAttempt],
        first_index: usize,
    ) -> anyhow::Result<()> {
        let samples: [&[u8]; 3] = [
            br#"{"type":"login_attempt","version":1,"event_id":"broken""#,
            br#"{"type":"logout","version":1,"event_id":"x","user_id":"u","occurred_at":"2026-11-02T00:00:00Z"}"#,
            br#"{"type":"login_attempt","version":1,"event_id":"x","user_id":"u","occurred_at":"2026-11-02T00:00:00Z","user_agent":"curl/8"}"#,
        ];
        for (offset, attempt) in attempts.iter().enumerate() {
            let index = first_index + offset;
            if index % MALFORMED_EVERY != MALFORMED_EVERY - 1 {
                continue;
            }
            let payload = samples[(index / MALFORMED_EVERY) % samples.len()];
            self.producer.send_event(&attempt.user_id, payload).await?;
            self.published += 1;
        }
        Ok(())
    }
}

fn requirement_of(decision: &pb::Decision) -> Requirement {
    match pb::Requirement::try_from(decision.requirement) {
        Ok(pb::Requirement::Mfa) => Requirement::Mfa,
        Ok(pb::Requirement::Deny) => Requirement::Deny,
        _ => Requirement::Allow,
    }
}

/// Waits until `processed()` reaches `target` or `timeout` passes; returns whether it did.
pub async fn wait_processed(
    target: u64,
    processed: impl Fn() -> u64,
    timeout: StdDuration,
) -> bool {
    let deadline = Instant::now() + timeout;
    while processed() < target {
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(StdDuration::from_millis(50)).await;
    }
    true
}
