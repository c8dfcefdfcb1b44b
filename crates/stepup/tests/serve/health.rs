//! The gRPC server serves the standard health check and server reflection.

use stepup_tests::api::{ServingStatus, check_health, reflection_files, reflection_services};
use stepup_tests::serve::STEPUP_SERVICE;
use stepup_tests::{Serve, shared_broker};

use crate::STEPUP;

#[tokio::test(flavor = "multi_thread")]
async fn grpc_health_and_reflection() {
    let serve = Serve::start(STEPUP, &shared_broker()).await;

    let whole_server = check_health(serve.channel().await, "").await;
    assert_eq!(whole_server.ok(), Some(ServingStatus::Serving));
    let stepup = check_health(serve.channel().await, STEPUP_SERVICE).await;
    assert_eq!(stepup.ok(), Some(ServingStatus::Serving));
    let unknown = check_health(serve.channel().await, "no.such.Service").await;
    let status = unknown.expect_err("an unknown service has no health status");
    assert_eq!(status.code(), tonic::Code::NotFound, "{status}");

    let services = reflection_services(serve.channel().await).await;
    assert!(
        services.iter().any(|name| name == STEPUP_SERVICE),
        "{services:?}"
    );
    assert!(
        services.iter().any(|name| name == "grpc.health.v1.Health"),
        "{services:?}"
    );

    let files = reflection_files(serve.channel().await, STEPUP_SERVICE).await;
    // An encoded FileDescriptorProto contains its file name as a plain string field.
    let file_name = b"stepup/v1/stepup.proto";
    let found = files.iter().any(|file| {
        file.windows(file_name.len())
            .any(|window| window == file_name)
    });
    assert!(
        found,
        "no descriptor of `stepup/v1/stepup.proto` among {} files",
        files.len()
    );
}
