//! Two StepUp servers in one consumer group, over real gRPC connections: calls for a user
//! owned by the other instance are forwarded to it, and `AwaitDecision` and `StreamDecisions`
//! without a user reach both. The memberships are wired by hand, as the instances topic would.

// Test helpers outside `#[test]` functions unwrap too: a failure there fails the test.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeZone, Utc};
use prometheus::{Encoder, Registry, TextEncoder};
use stepup_api::pb::step_up_client::StepUpClient;
use stepup_api::{
    AdminService, ApiConfig, ApiMetrics, FORWARDED_BY_HEADER, StepUpService, decision_to_proto, pb,
    serve,
};
use stepup_engine::{Engine, EngineConfig, Outcome, Position};
use stepup_events::{
    Attributes, Event, EventBody, Factor, LoginAttempt, LoginResult, MfaResult, Requirement,
    SCHEMA_VERSION,
};
use stepup_geo::Geo;
use stepup_kafka::{Claim, Membership, partition_for_key};
use stepup_policy::{Policy, PolicyConfig, RuleReloader, RuleSet};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tonic::transport::Channel;
use tonic::{Code, Request};

const PARTITIONS: i32 = 2;
const IP: &str = "81.2.69.142";

/// Asks for MFA once the profile has learnt two logins, so only an instance that has the
/// user's profile gives this reason.
const KNOWN_USER_RULE: &str = "\
//! id: known_user
//! version: 1
//! description: users with a learnt profile confirm with a second factor
//! owner: security@example.com
//! mode: live
//! priority: 1
if profile?.verified_logins >= 2 { mfa(\"known_to_owner\", \"profile\") }
";

/// A server on an ephemeral loopback port; it stops when dropped.
struct Node {
    address: SocketAddr,
    engine: Arc<Engine>,
    membership: Membership,
    registry: Registry,
    _rules: tempfile::TempDir,
    _stop: oneshot::Sender<()>,
}

/// A listener bound before the server starts, so both memberships can name both addresses.
struct Bound {
    listener: TcpListener,
    address: SocketAddr,
}

async fn bind() -> Bound {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    Bound { listener, address }
}

fn membership(id: &str, bound: &Bound, ready: &[i32]) -> Membership {
    let membership = Membership::new(id, bound.address.to_string());
    membership.set_partition_count(PARTITIONS);
    for partition in ready {
        membership.set_ready(*partition);
    }
    membership
}

/// Makes `membership` see `owner`'s claim on `partitions`.
fn claim(membership: &Membership, owner: &str, address: SocketAddr, partitions: &[i32]) {
    let claim = Claim {
        instance_id: owner.into(),
        grpc_address: address.to_string(),
        partitions: partitions.to_vec(),
        partition_count: PARTITIONS,
    };
    membership.apply_claim(owner, 1, Some(claim));
}

fn config() -> ApiConfig {
    ApiConfig {
        ready_timeout_ms: 300,
        forward_connect_timeout_ms: 500,
        forward_timeout_ms: 5000,
        ..ApiConfig::default()
    }
}

fn start(bound: Bound, membership: Membership, config: ApiConfig) -> Node {
    let rules = tempfile::tempdir().unwrap();
    std::fs::write(rules.path().join("known_user.rhai"), KNOWN_USER_RULE).unwrap();
    let policy_config = PolicyConfig {
        dir: rules.path().to_path_buf(),
        ..PolicyConfig::default()
    };
    let rule_set = RuleSet::load_dir(&policy_config).unwrap();
    let policy = Policy::new(policy_config.clone(), rule_set);
    let registry = Registry::new();
    let geo = Arc::new(Geo::empty());
    let engine = Engine::new(EngineConfig::default(), geo, Arc::new(policy), &registry).unwrap();
    let engine = Arc::new(engine);

    let reloader = RuleReloader::new(engine.policy().clone(), policy_config);
    let admin = AdminService::new(Arc::new(reloader), None);
    let metrics = ApiMetrics::register(&registry).unwrap();
    let service = StepUpService::new(engine.clone(), None, config)
        .with_metrics(metrics)
        .with_membership(membership.clone());
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(serve(bound.listener, service, admin, async {
        let _ = stopped.await;
    }));

    Node {
        address: bound.address,
        engine,
        membership,
        registry,
        _rules: rules,
        _stop: stop,
    }
}

/// Starts `a`, ready for partition 0, and `b`, ready for partition 1, each seeing the
/// other's claim.
async fn pair() -> (Node, Node) {
    let (bound_a, bound_b) = (bind().await, bind().await);
    let membership_a = membership("a", &bound_a, &[0]);
    let membership_b = membership("b", &bound_b, &[1]);
    claim(&membership_a, "b", bound_b.address, &[1]);
    claim(&membership_b, "a", bound_a.address, &[0]);
    let a = start(bound_a, membership_a, config());
    let b = start(bound_b, membership_b, config());
    (a, b)
}

/// Returns a user id whose events go to `partition`.
fn user_in(partition: i32) -> String {
    nth_user_in(partition, 0)
}

/// Returns the `nth` user id, counting from 0, whose events go to `partition`.
fn nth_user_in(partition: i32, nth: usize) -> String {
    (0..)
        .map(|index| format!("user-{index}"))
        .filter(|user| partition_for_key(user.as_bytes(), PARTITIONS) == partition)
        .nth(nth)
        .unwrap()
}

fn at(days: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 2, 9, 0, 0).unwrap() + chrono::Duration::days(days)
}

fn event(id: String, user: &str, days: i64, body: EventBody) -> Event {
    Event {
        event_id: id,
        user_id: user.into(),
        occurred_at: at(days),
        version: SCHEMA_VERSION,
        body,
    }
}

/// Teaches `engine` three verified logins of `user`, read from `partition` of the events
/// topic as the consumer would.
fn teach(engine: &Engine, user: &str, partition: i32) {
    let position = Position {
        partition,
        offset: None,
    };
    for day in 0..3 {
        let attempt_id = format!("{user}-learn-{day}");
        let attempt = EventBody::LoginAttempt(LoginAttempt {
            ip: IP.parse().unwrap(),
            user_agent: "Mozilla/5.0".into(),
            device_id: Some("laptop".into()),
            keystroke: None,
            attributes: Attributes::default(),
        });
        let outcome = engine.process_at(&event(attempt_id.clone(), user, day, attempt), position);
        let Outcome::Decided(decision) = outcome else {
            panic!("expected a decision, got {outcome:?}");
        };
        let result = EventBody::LoginResult(LoginResult {
            attempt_id: attempt_id.clone(),
            success: true,
            reason: None,
            ip: None,
        });
        engine.process_at(
            &event(format!("{attempt_id}-r"), user, day, result),
            position,
        );
        if decision.requirement == Requirement::Mfa {
            let mfa = EventBody::MfaResult(MfaResult {
                attempt_id: Some(attempt_id.clone()),
                factor: Factor::Totp,
                passed: true,
            });
            engine.process_at(&event(format!("{attempt_id}-m"), user, day, mfa), position);
        }
    }
    assert_eq!(engine.profile(user).unwrap().verified_logins(), 3);
}

async fn client(node: &Node) -> StepUpClient<Channel> {
    let channel = Channel::from_shared(format!("http://{}", node.address))
        .unwrap()
        .connect()
        .await
        .unwrap();
    StepUpClient::new(channel)
}

fn assess_request(event_id: &str, user: &str) -> pb::AssessRequest {
    pb::AssessRequest {
        event_id: event_id.into(),
        user_id: user.into(),
        occurred_at: "2026-03-06T09:00:00Z".into(),
        ip: IP.into(),
        user_agent: "Mozilla/5.0".into(),
        device_id: "laptop".into(),
        ..Default::default()
    }
}

async fn assess(node: &Node, event_id: &str, user: &str) -> Result<pb::Decision, tonic::Status> {
    let mut client = client(node).await;
    let response = client.assess(assess_request(event_id, user)).await;
    response.map(tonic::Response::into_inner)
}

fn forwarded<M>(message: M, by: &str) -> Request<M> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert(FORWARDED_BY_HEADER, by.parse().unwrap());
    request
}

fn await_request(event_id: &str, user: &str, timeout_ms: u32) -> pb::AwaitDecisionRequest {
    pb::AwaitDecisionRequest {
        event_id: event_id.into(),
        timeout_ms,
        user_id: user.into(),
    }
}

fn reason_codes(decision: &pb::Decision) -> Vec<&str> {
    decision
        .reasons
        .iter()
        .map(|reason| reason.code.as_str())
        .collect()
}

fn exposition(registry: &Registry) -> String {
    let mut body = Vec::new();
    TextEncoder::new()
        .encode(&registry.gather(), &mut body)
        .unwrap();
    String::from_utf8(body).unwrap()
}

fn forwarded_once(method: &str, outcome: &str) -> String {
    format!("stepup_grpc_forwarded_total{{method=\"{method}\",outcome=\"{outcome}\"}} 1")
}

async fn next_decision(
    stream: &mut tonic::Streaming<pb::Decision>,
) -> Result<pb::Decision, tonic::Status> {
    tokio::time::timeout(Duration::from_secs(5), stream.message())
        .await
        .expect("a decision within 5 s")
        .map(|decision| decision.expect("the stream stays open"))
}

#[tokio::test]
async fn assess_for_remote_user_returns_owner_decision() {
    let (a, b) = pair().await;
    let user = user_in(1);
    teach(&b.engine, &user, 1);

    let decision = assess(&a, "via-a", &user).await.unwrap();

    assert_eq!(decision.requirement, pb::Requirement::Mfa as i32);
    assert!(
        reason_codes(&decision).contains(&"known_to_owner"),
        "{decision:?}"
    );
    let stored_on_b = b.engine.decision("via-a").expect("B decided the call");
    assert_eq!(decision, decision_to_proto(&stored_on_b));
    assert!(a.engine.decision("via-a").is_none());
    let metrics = exposition(&a.registry);
    assert!(
        metrics.contains(&forwarded_once("Assess", "ok")),
        "{metrics}"
    );
}

#[tokio::test]
async fn check_action_for_remote_user_runs_on_owner() {
    let (a, b) = pair().await;
    let user = user_in(1);
    let request = pb::CheckActionRequest {
        event_id: "action-via-a".into(),
        user_id: user.clone(),
        action: "change_password".into(),
        session_id: "s1".into(),
        occurred_at: "2026-03-06T09:00:00Z".into(),
        ..Default::default()
    };

    let decision = client(&a).await.check_action(request).await.unwrap();

    assert_eq!(decision.get_ref().user_id, user);
    assert!(b.engine.decision("action-via-a").is_some());
    assert!(a.engine.decision("action-via-a").is_none());
    let metrics = exposition(&a.registry);
    assert!(
        metrics.contains(&forwarded_once("CheckAction", "ok")),
        "{metrics}"
    );
}

#[tokio::test]
async fn local_user_is_decided_locally() {
    let (a, b) = pair().await;
    let user = user_in(0);

    assess(&a, "local", &user).await.unwrap();

    assert!(a.engine.decision("local").is_some());
    assert!(b.engine.decision("local").is_none());
    assert!(!exposition(&a.registry).contains("stepup_grpc_forwarded_total"));
}

#[tokio::test]
async fn forwarded_header_is_answered_locally() {
    let (a, b) = pair().await;
    let user = user_in(1);
    teach(&b.engine, &user, 1);

    let request = forwarded(assess_request("marked", &user), "b");
    let decision = client(&a).await.assess(request).await.unwrap().into_inner();

    assert!(
        !reason_codes(&decision).contains(&"known_to_owner"),
        "{decision:?}"
    );
    assert!(a.engine.decision("marked").is_some());
    assert!(b.engine.decision("marked").is_none());
    assert!(!exposition(&a.registry).contains("stepup_grpc_forwarded_total"));
}

#[tokio::test]
async fn forwarded_header_stops_loops() {
    // Each instance believes the other owns partition 1, as during a rebalance.
    let (bound_a, bound_b) = (bind().await, bind().await);
    let membership_a = membership("a", &bound_a, &[0]);
    let membership_b = membership("b", &bound_b, &[0]);
    claim(&membership_a, "b", bound_b.address, &[1]);
    claim(&membership_b, "a", bound_a.address, &[1]);
    let patient = ApiConfig {
        ready_timeout_ms: 5000,
        ..config()
    };
    let a = start(bound_a, membership_a, patient.clone());
    let b = start(bound_b, membership_b, patient);
    let user = user_in(1);

    let started = Instant::now();
    let decision = assess(&a, "loop", &user).await.unwrap();

    assert_eq!(decision.event_id, "loop");
    assert!(b.engine.decision("loop").is_some());
    assert!(a.engine.decision("loop").is_none());
    assert!(!exposition(&b.registry).contains("stepup_grpc_forwarded_total"));
    // B decided at once instead of waiting 5 s for a partition it does not serve.
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn await_without_user_finds_peer_decision() {
    let (a, b) = pair().await;
    let user = user_in(1);
    assess(&b, "early", &user).await.unwrap();

    let found = client(&a)
        .await
        .await_decision(await_request("early", "", 2000))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(found.event_id, "early");

    let mut waiting = client(&a).await;
    let pending = tokio::spawn(async move {
        waiting
            .await_decision(await_request("late", "", 5000))
            .await
            .map(tonic::Response::into_inner)
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let decided = assess(&b, "late", &user).await.unwrap();

    let found = pending.await.unwrap().unwrap();
    assert_eq!(found, decided);
    assert!(a.engine.decision("late").is_none());
}

#[tokio::test]
async fn await_with_user_asks_owner() {
    let (a, b) = pair().await;
    let user = user_in(1);
    let decided = assess(&b, "owned", &user).await.unwrap();
    let mut client = client(&a).await;

    let found = client
        .await_decision(await_request("owned", &user, 2000))
        .await
        .unwrap()
        .into_inner();
    let status = client
        .await_decision(await_request("never", &user, 200))
        .await
        .unwrap_err();

    assert_eq!(found, decided);
    assert_eq!(status.code(), Code::DeadlineExceeded);
    assert!(status.message().contains("`never`"), "{}", status.message());
    let metrics = exposition(&a.registry);
    assert!(
        metrics.contains(&forwarded_once("AwaitDecision", "ok")),
        "{metrics}"
    );
}

#[tokio::test]
async fn await_without_user_times_out_everywhere() {
    let (a, _b) = pair().await;

    let status = client(&a)
        .await
        .await_decision(await_request("nowhere", "", 200))
        .await
        .unwrap_err();

    assert_eq!(
        status.code(),
        Code::DeadlineExceeded,
        "{}",
        status.message()
    );
}

#[tokio::test]
async fn stream_without_user_delivers_peer_decisions() {
    let (a, b) = pair().await;
    let request = pb::StreamDecisionsRequest::default();
    let mut stream = client(&a)
        .await
        .stream_decisions(request)
        .await
        .unwrap()
        .into_inner();

    let on_b = assess(&b, "streamed-b", &user_in(1)).await.unwrap();
    let received = next_decision(&mut stream).await.unwrap();
    assert_eq!(received, on_b);

    let on_a = assess(&a, "streamed-a", &user_in(0)).await.unwrap();
    let received = next_decision(&mut stream).await.unwrap();
    assert_eq!(received, on_a);
}

#[tokio::test]
async fn stream_for_remote_user_proxies_owner() {
    let (a, b) = pair().await;
    let user = user_in(1);
    let request = pb::StreamDecisionsRequest {
        user_id: user.clone(),
        ..Default::default()
    };
    let mut stream = client(&a)
        .await
        .stream_decisions(request)
        .await
        .unwrap()
        .into_inner();

    assess(&b, "other-user", &nth_user_in(1, 1)).await.unwrap();
    let on_b = assess(&b, "proxied", &user).await.unwrap();

    let received = next_decision(&mut stream).await.unwrap();
    assert_eq!(received, on_b);
}

/// Relays TCP connections from its own loopback port to `target` until dropped, when it
/// closes every relayed connection, as a crashing instance would.
struct Relay {
    address: SocketAddr,
    connections: Arc<parking_lot::Mutex<tokio::task::JoinSet<()>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Relay {
    async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let connections = Arc::new(parking_lot::Mutex::new(tokio::task::JoinSet::new()));
        let spawned = connections.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                spawned.lock().spawn(async move {
                    let mut outbound = tokio::net::TcpStream::connect(target).await.unwrap();
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                });
            }
        });
        Relay {
            address,
            connections,
            accept,
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.accept.abort();
        self.connections.lock().abort_all();
    }
}

#[tokio::test]
async fn stream_reports_peer_that_stops() {
    let (bound_a, bound_b) = (bind().await, bind().await);
    let relay = Relay::start(bound_b.address).await;
    let membership_a = membership("a", &bound_a, &[0]);
    let membership_b = membership("b", &bound_b, &[1]);
    claim(&membership_a, "b", relay.address, &[1]);
    let a = start(bound_a, membership_a, config());
    let _b = start(bound_b, membership_b, config());
    let mut stream = client(&a)
        .await
        .stream_decisions(pb::StreamDecisionsRequest::default())
        .await
        .unwrap()
        .into_inner();

    drop(relay);

    let status = next_decision(&mut stream).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    let message = status.message();
    assert!(
        message.contains("decision stream from instance `b`"),
        "{message}"
    );
}

#[tokio::test]
async fn dead_peer_gives_unavailable_naming_peer() {
    let bound = bind().await;
    let dead = bind().await.address;
    let membership = membership("a", &bound, &[0]);
    claim(&membership, "c", dead, &[1]);
    let a = start(bound, membership, config());
    let mut client = client(&a).await;

    let status = assess(&a, "to-dead", &user_in(1)).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    let message = status.message();
    assert!(message.contains("instance `c`"), "{message}");
    assert!(message.contains(&format!("`{dead}`")), "{message}");
    assert!(message.contains("failed to forward `Assess`"), "{message}");

    let status = client
        .await_decision(await_request("unknown", "", 200))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert!(status.message().contains("`c`"), "{}", status.message());

    let request = pb::StreamDecisionsRequest::default();
    let status = client.stream_decisions(request).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert!(
        status.message().contains("instance `c`"),
        "{}",
        status.message()
    );

    let metrics = exposition(&a.registry);
    let dead_assess = forwarded_once("Assess", "unavailable");
    assert!(metrics.contains(&dead_assess), "{metrics}");
}

#[tokio::test]
async fn silent_peer_times_out_unavailable() {
    // Accepts connections and never responds, like an instance that hangs.
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_address = silent.local_addr().unwrap();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            held.push(socket);
        }
    });
    let bound = bind().await;
    let membership = membership("a", &bound, &[0]);
    claim(&membership, "c", silent_address, &[1]);
    let config = ApiConfig {
        forward_timeout_ms: 300,
        ..config()
    };
    let a = start(bound, membership, config);

    let started = Instant::now();
    let status = assess(&a, "to-silent", &user_in(1)).await.unwrap_err();

    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(status.code(), Code::Unavailable);
    let message = status.message();
    assert!(message.contains("instance `c`"), "{message}");
    assert!(
        message.contains(&format!("`{silent_address}`")),
        "{message}"
    );
    assert!(message.contains("no response within 300 ms"), "{message}");
    let metrics = exposition(&a.registry);
    let timed_out = forwarded_once("Assess", "unavailable");
    assert!(metrics.contains(&timed_out), "{metrics}");
    hold.abort();
}

#[tokio::test]
async fn unready_partition_waits_then_fails() {
    let bound = bind().await;
    let membership = membership("a", &bound, &[0]);
    let a = start(bound, membership, config());

    let started = Instant::now();
    let status = assess(&a, "unready", &user_in(1)).await.unwrap_err();

    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(status.code(), Code::Unavailable);
    let message = status.message();
    assert!(message.contains("partition 1 "), "{message}");
    assert!(message.contains("api.ready_timeout_ms"), "{message}");
    assert!(a.engine.decision("unready").is_none());
}

#[tokio::test]
async fn partition_restored_while_waiting_is_served() {
    let bound = bind().await;
    let membership = membership("a", &bound, &[0]);
    let config = ApiConfig {
        ready_timeout_ms: 5000,
        ..config()
    };
    let a = start(bound, membership, config);
    let restore = a.membership.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(150)).await;
        restore.set_ready(1);
    });

    let started = Instant::now();
    let decision = assess(&a, "restored", &user_in(1)).await.unwrap();

    assert!(
        started.elapsed() >= Duration::from_millis(150),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(decision.event_id, "restored");
    assert!(a.engine.decision("restored").is_some());
}

#[tokio::test]
async fn partition_claimed_while_waiting_is_forwarded() {
    let (bound_a, bound_b) = (bind().await, bind().await);
    let membership_a = membership("a", &bound_a, &[0]);
    let membership_b = membership("b", &bound_b, &[1]);
    let address_b = bound_b.address;
    let config_a = ApiConfig {
        ready_timeout_ms: 5000,
        ..config()
    };
    let a = start(bound_a, membership_a, config_a);
    let b = start(bound_b, membership_b, config());
    let announce = a.membership.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(150)).await;
        claim(&announce, "b", address_b, &[1]);
    });

    let decision = assess(&a, "claimed", &user_in(1)).await.unwrap();

    assert_eq!(decision.event_id, "claimed");
    assert!(b.engine.decision("claimed").is_some());
    assert!(a.engine.decision("claimed").is_none());
}

#[tokio::test]
async fn shutdown_ends_open_streams() {
    let (a, b) = pair().await;
    let request = pb::StreamDecisionsRequest::default();
    let mut on_b = client(&b)
        .await
        .stream_decisions(request.clone())
        .await
        .unwrap()
        .into_inner();
    let mut on_a = client(&a)
        .await
        .stream_decisions(request)
        .await
        .unwrap()
        .into_inner();

    drop(b);

    let end = tokio::time::timeout(Duration::from_secs(5), on_b.message()).await;
    let end = end.expect("B's stream ends within 5 s of its shutdown");
    assert!(end.unwrap().is_none());
    let status = next_decision(&mut on_a).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    let message = status.message();
    assert!(message.contains("from instance `b`"), "{message}");
    assert!(message.contains("the instance closed it"), "{message}");
}
