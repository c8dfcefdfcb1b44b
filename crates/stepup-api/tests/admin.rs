//! The Admin service over a real gRPC connection: token checks and rule reloads, with the
//! StepUp service showing the rule set version and shadow verdicts on decisions.

// Test helpers outside `#[test]` functions unwrap too: a failure there fails the test.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use prometheus::{Encoder, Registry, TextEncoder};
use stepup_api::pb::admin_client::AdminClient;
use stepup_api::pb::step_up_client::StepUpClient;
use stepup_api::{AdminService, AdminToken, ApiConfig, StepUpService, pb, serve};
use stepup_engine::{Engine, EngineConfig};
use stepup_geo::Geo;
use stepup_policy::{Policy, PolicyConfig, ReloadMetrics, RuleReloader, RuleSet};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tonic::transport::Channel;
use tonic::{Code, Request};

const TOKEN: &str = "4f6c1e0b-admin-test-token";

const CASES: &str = "\
cases:
  - name: five_failures_ask_for_mfa
    signals: { user_failures: 5 }
    expect: { requirement: mfa, reasons: [too_many_failures] }
";

fn rule(id: &str, mode: &str, body: &str) -> String {
    format!(
        "//! id: {id}\n//! version: 1\n//! description: test rule\n\
         //! owner: security@example.com\n//! mode: {mode}\n//! priority: 1\n{body}\n"
    )
}

fn failures_rule() -> String {
    rule(
        "failures",
        "live",
        r#"if signals?.user_failures >= 5 { mfa("too_many_failures", "failures") }"#,
    )
}

/// A server on an ephemeral loopback port; it stops when dropped.
struct Server {
    address: SocketAddr,
    dir: tempfile::TempDir,
    registry: Registry,
    _stop: oneshot::Sender<()>,
}

async fn start(token: Option<&str>) -> Server {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("failures.rhai"), failures_rule()).unwrap();
    std::fs::create_dir(dir.path().join("tests")).unwrap();
    std::fs::write(dir.path().join("tests/failures.yaml"), CASES).unwrap();

    let config = PolicyConfig {
        dir: dir.path().to_path_buf(),
        ..PolicyConfig::default()
    };
    let policy = Policy::new(config.clone(), RuleSet::load_dir(&config).unwrap());
    let registry = Registry::new();
    let engine = Engine::new(
        EngineConfig::default(),
        Arc::new(Geo::empty()),
        Arc::new(policy),
        &registry,
    )
    .unwrap();
    let metrics = ReloadMetrics::register(&registry, engine.metrics().rule_set.clone()).unwrap();
    let reloader = RuleReloader::new(engine.policy().clone(), config).with_metrics(metrics);

    let token = token.map(|token| AdminToken::new(token).unwrap());
    let admin = AdminService::new(Arc::new(reloader), token);
    let service = StepUpService::new(Arc::new(engine), None, ApiConfig::default());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(serve(listener, service, admin, async {
        let _ = stopped.await;
    }));

    Server {
        address,
        dir,
        registry,
        _stop: stop,
    }
}

async fn channel(server: &Server) -> Channel {
    Channel::from_shared(format!("http://{}", server.address))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

fn reload_request(authorization: Option<&str>) -> Request<pb::ReloadRulesRequest> {
    let mut request = Request::new(pb::ReloadRulesRequest {});
    if let Some(value) = authorization {
        request
            .metadata_mut()
            .insert("authorization", value.parse().unwrap());
    }
    request
}

async fn reload(
    server: &Server,
    authorization: Option<&str>,
) -> Result<pb::ReloadRulesResponse, tonic::Status> {
    let mut client = AdminClient::new(channel(server).await);
    client
        .reload_rules(reload_request(authorization))
        .await
        .map(tonic::Response::into_inner)
}

async fn assess(server: &Server, event_id: &str) -> pb::Decision {
    let mut client = StepUpClient::new(channel(server).await);
    let request = pb::AssessRequest {
        event_id: event_id.into(),
        user_id: "alice".into(),
        occurred_at: "2026-03-02T09:15:00Z".into(),
        ip: "10.1.2.3".into(),
        user_agent: "Mozilla/5.0".into(),
        ..Default::default()
    };
    client.assess(request).await.unwrap().into_inner()
}

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap();
}

fn exposition(registry: &Registry) -> String {
    let mut body = Vec::new();
    TextEncoder::new()
        .encode(&registry.gather(), &mut body)
        .unwrap();
    String::from_utf8(body).unwrap()
}

#[tokio::test]
async fn admin_without_token_is_disabled() {
    let server = start(None).await;

    let status = reload(&server, Some(&format!("Bearer {TOKEN}")))
        .await
        .unwrap_err();

    assert_eq!(status.code(), Code::PermissionDenied);
    assert!(
        status.message().contains("api.admin_token_file"),
        "{}",
        status.message()
    );
}

#[tokio::test]
async fn wrong_or_missing_token_is_unauthenticated() {
    let server = start(Some(TOKEN)).await;
    let before = assess(&server, "evt-1").await.rule_set_version;
    write(
        server.dir.path(),
        "extra.rhai",
        &rule("extra", "live", "()"),
    );

    for authorization in [
        None,
        Some("Bearer wrong-token"),
        Some(TOKEN),
        Some("Basic 4f6c1e0b-admin-test-token"),
    ] {
        let status = reload(&server, authorization).await.unwrap_err();

        assert_eq!(status.code(), Code::Unauthenticated, "{authorization:?}");
        assert!(!status.message().contains(TOKEN), "{}", status.message());
    }
    assert_eq!(assess(&server, "evt-2").await.rule_set_version, before);
}

#[tokio::test]
async fn right_token_reloads_and_decisions_follow() {
    let server = start(Some(TOKEN)).await;
    let first = assess(&server, "evt-1").await;
    assert!(first.shadow.is_empty());
    write(
        server.dir.path(),
        "always.rhai",
        &rule("always", "shadow", r#"mfa("always_shadow", "always")"#),
    );

    let response = reload(&server, Some(&format!("bearer {TOKEN}")))
        .await
        .unwrap();

    assert!(response.changed);
    assert_eq!(response.previous_version, first.rule_set_version);
    assert_ne!(response.version, first.rule_set_version);
    let ids: Vec<&str> = response.rules.iter().map(|rule| rule.id.as_str()).collect();
    assert_eq!(ids, ["always", "failures"]);
    assert_eq!(response.rules[0].mode, "shadow");
    let report = response.report.unwrap();
    assert_eq!((report.passed, report.failed), (1, 0));

    let second = assess(&server, "evt-2").await;
    assert_eq!(second.rule_set_version, response.version);
    assert_eq!(second.requirement, pb::Requirement::Allow as i32);
    assert_eq!(second.shadow.len(), 1);
    assert_eq!(second.shadow[0].rule_id, "always");
    assert_eq!(second.shadow[0].requirement, pb::Requirement::Mfa as i32);
    assert_eq!(second.shadow[0].reason_code, "always_shadow");

    let metrics = exposition(&server.registry);
    let info = format!("stepup_rule_set_info{{version=\"{}\"}} 1", response.version);
    assert!(metrics.contains(&info), "{metrics}");
    assert!(!metrics.contains(&first.rule_set_version), "{metrics}");
    assert!(
        metrics.contains("stepup_rule_reloads_total{result=\"applied\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("stepup_shadow_decisions_total{requirement=\"mfa\",rule=\"always\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn shadow_rule_promoted_by_reload_decides() {
    let server = start(Some(TOKEN)).await;
    let authorization = format!("Bearer {TOKEN}");
    let shadow = rule("candidate", "shadow", r#"mfa("candidate_code", "always")"#).replace(
        "//! priority",
        "//! user_message: Please confirm this sign-in.\n//! priority",
    );
    write(server.dir.path(), "candidate.rhai", &shadow);
    reload(&server, Some(&authorization)).await.unwrap();

    let shadowed = assess(&server, "evt-1").await;
    assert_eq!(shadowed.requirement, pb::Requirement::Allow as i32);
    assert_eq!(shadowed.shadow.len(), 1);
    assert_eq!(shadowed.shadow[0].reason_code, "candidate_code");
    let codes: Vec<&str> = shadowed.reasons.iter().map(|r| r.code.as_str()).collect();
    assert_eq!(codes, ["risk_score"]);

    let live = shadow
        .replace("mode: shadow", "mode: live")
        .replace("version: 1", "version: 2");
    write(server.dir.path(), "candidate.rhai", &live);
    let response = reload(&server, Some(&authorization)).await.unwrap();
    assert!(response.changed);
    assert_eq!(response.rules[0].mode, "live");

    let promoted = assess(&server, "evt-2").await;
    assert_eq!(promoted.rule_set_version, response.version);
    assert_eq!(promoted.requirement, pb::Requirement::Mfa as i32);
    assert!(promoted.shadow.is_empty());
    let reason = &promoted.reasons[0];
    assert_eq!(reason.code, "candidate_code");
    assert_eq!(reason.rule_version, "2");
    assert_eq!(reason.user_message, "Please confirm this sign-in.");
    let risk = promoted.reasons.last().unwrap();
    assert_eq!(risk.code, "risk_score");
    assert_eq!(
        risk.user_message,
        stepup_events::reason_user_message("risk_score")
    );

    let metrics = exposition(&server.registry);
    assert!(
        metrics.contains("stepup_shadow_decisions_total{requirement=\"mfa\",rule=\"candidate\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("stepup_decisions_total{requirement=\"mfa\",rule=\"candidate\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn rejected_reload_keeps_serving_version() {
    let server = start(Some(TOKEN)).await;
    let before = assess(&server, "evt-1").await.rule_set_version;
    let authorization = format!("Bearer {TOKEN}");

    write(
        server.dir.path(),
        "broken.rhai",
        &rule("broken", "live", "let x = ;"),
    );
    let status = reload(&server, Some(&authorization)).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(
        status.message().contains("broken.rhai"),
        "{}",
        status.message()
    );

    std::fs::remove_file(server.dir.path().join("broken.rhai")).unwrap();
    let stricter = failures_rule().replace(">= 5", ">= 6");
    write(server.dir.path(), "failures.rhai", &stricter);
    let status = reload(&server, Some(&authorization)).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    let message = status.message();
    assert!(
        message.contains("failures/five_failures_ask_for_mfa ... FAILED"),
        "{message}"
    );
    assert!(message.contains("+ requirement: allow"), "{message}");

    assert_eq!(assess(&server, "evt-2").await.rule_set_version, before);
    let metrics = exposition(&server.registry);
    assert!(
        metrics.contains("stepup_rule_reloads_total{result=\"rejected\"} 2"),
        "{metrics}"
    );
}

#[tokio::test]
async fn reflection_v1_lists_admin_service() {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let server = start(None).await;
    let mut client = ServerReflectionClient::new(channel(&server).await);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };

    let mut responses = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();

    let response = responses.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("expected a service list, got {response:?}");
    };
    let names: Vec<String> = list
        .service
        .into_iter()
        .map(|service| service.name)
        .collect();
    assert!(names.contains(&"stepup.v1.Admin".to_string()), "{names:?}");
    assert!(names.contains(&"stepup.v1.StepUp".to_string()), "{names:?}");
}

#[tokio::test]
async fn reflection_v1alpha_lists_admin_service() {
    use tonic_reflection::pb::v1alpha::ServerReflectionRequest;
    use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse;

    let server = start(None).await;
    let mut client = ServerReflectionClient::new(channel(&server).await);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };

    let mut responses = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();

    let response = responses.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("expected a service list, got {response:?}");
    };
    let names: Vec<String> = list
        .service
        .into_iter()
        .map(|service| service.name)
        .collect();
    assert!(names.contains(&"stepup.v1.Admin".to_string()), "{names:?}");
}
