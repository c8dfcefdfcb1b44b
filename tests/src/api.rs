//! Helpers for calling the StepUp API and reading its decisions.

use stepup_api::pb::step_up_client::StepUpClient;
use stepup_api::pb::{AwaitDecisionRequest, Decision, Factor, Reason, Requirement};
use tonic::Status;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

use crate::WAIT;

/// Status values of `grpc.health.v1`, as [`check_health`] returns them.
pub use tonic_health::pb::health_check_response::ServingStatus;

/// Calls `AwaitDecision` for `event_id`, waiting up to [`WAIT`]; panics if no decision comes.
pub async fn await_decision(client: &mut StepUpClient<Channel>, event_id: &str) -> Decision {
    let request = AwaitDecisionRequest {
        event_id: event_id.to_owned(),
        timeout_ms: u32::try_from(WAIT.as_millis()).expect("WAIT fits in u32 milliseconds"),
        user_id: String::new(),
    };
    match client.await_decision(request).await {
        Ok(response) => response.into_inner(),
        Err(status) => panic!("AwaitDecision for `{event_id}` failed: {status}"),
    }
}

/// Returns the requirement of `decision`; panics on a value the proto does not define.
pub fn requirement(decision: &Decision) -> Requirement {
    Requirement::try_from(decision.requirement).unwrap_or_else(|_| {
        panic!(
            "unknown requirement {} in {decision:#?}",
            decision.requirement
        )
    })
}

/// Returns the factors of `decision`; panics on a value the proto does not define.
pub fn factors(decision: &Decision) -> Vec<Factor> {
    decision
        .factors
        .iter()
        .map(|value| {
            Factor::try_from(*value)
                .unwrap_or_else(|_| panic!("unknown factor {value} in {decision:#?}"))
        })
        .collect()
}

/// Returns the reason codes of `decision` in order.
pub fn reason_codes(decision: &Decision) -> Vec<&str> {
    decision
        .reasons
        .iter()
        .map(|reason| reason.code.as_str())
        .collect()
}

/// Returns the reason with `code`; panics, showing the decision, if it has none.
pub fn reason<'a>(decision: &'a Decision, code: &str) -> &'a Reason {
    decision
        .reasons
        .iter()
        .find(|reason| reason.code == code)
        .unwrap_or_else(|| panic!("decision has no `{code}` reason: {decision:#?}"))
}

/// Calls `grpc.health.v1.Health/Check` for `service` (empty for the whole server) and returns
/// the reported status, or the call's error status.
pub async fn check_health(channel: Channel, service: &str) -> Result<ServingStatus, Status> {
    let request = HealthCheckRequest {
        service: service.to_owned(),
    };
    let response = HealthClient::new(channel).check(request).await?;
    let status = response.into_inner().status;
    ServingStatus::try_from(status)
        .map_err(|_| Status::internal(format!("unknown serving status {status}")))
}

/// Lists the services of the server through gRPC server reflection (`grpc.reflection.v1`).
pub async fn reflection_services(channel: Channel) -> Vec<String> {
    match reflect(channel, MessageRequest::ListServices(String::new())).await {
        MessageResponse::ListServicesResponse(list) => list
            .service
            .into_iter()
            .map(|service| service.name)
            .collect(),
        other => panic!("ListServices returned {other:?}"),
    }
}

/// Returns the encoded `FileDescriptorProto`s that server reflection gives for `symbol`, for
/// example a service name.
pub async fn reflection_files(channel: Channel, symbol: &str) -> Vec<Vec<u8>> {
    let request = MessageRequest::FileContainingSymbol(symbol.to_owned());
    match reflect(channel, request).await {
        MessageResponse::FileDescriptorResponse(files) => files.file_descriptor_proto,
        other => panic!("FileContainingSymbol for `{symbol}` returned {other:?}"),
    }
}

/// Sends one reflection request and returns the first response message.
async fn reflect(channel: Channel, request: MessageRequest) -> MessageResponse {
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(request),
    };
    let call = async {
        let mut responses = ServerReflectionClient::new(channel)
            .server_reflection_info(tokio_stream::iter([request]))
            .await?
            .into_inner();
        responses.message().await
    };
    match tokio::time::timeout(WAIT, call).await {
        Ok(Ok(Some(response))) => response
            .message_response
            .expect("a reflection response has a message"),
        Ok(Ok(None)) => panic!("the reflection stream ended without a response"),
        Ok(Err(status)) => panic!("the reflection call failed: {status}"),
        Err(_) => panic!("the reflection call timed out after {WAIT:?}"),
    }
}
