//! gRPC API of stepup.
//!
//! This crate owns the `stepup.v1.StepUp` service (generated from `proto/` at build time with
//! protox, so no `protoc` is needed), the conversions between protobuf messages and engine
//! types, and the server with `grpc.health.v1` and server reflection. Decisions come from
//! `stepup-engine`; events decided inline are appended to Kafka through `stepup-kafka`. With
//! several instances in one consumer group, calls about a user are forwarded to the instance
//! that owns the user's partition, as `stepup-kafka`'s `Membership` reports it. This crate
//! reads that view but does not fill it. The `stepup.v1.Admin` service, behind a bearer
//! token, reloads the rules through `stepup-policy`'s reloader.

#![forbid(unsafe_code)]

mod admin;
mod convert;
mod error;
mod forward;
mod metrics;
mod server;
mod service;

/// Generated protobuf and tonic types of `stepup.v1`.
#[allow(missing_docs, clippy::all)]
pub mod pb {
    tonic::include_proto!("stepup.v1");

    /// Encoded file descriptor set of the protos, served by server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/stepup_descriptor.bin"));
}

pub use admin::{AdminService, AdminToken, AdminTokenError};
pub use convert::decision_to_proto;
pub use error::ApiError;
pub use forward::FORWARDED_BY_HEADER;
pub use metrics::ApiMetrics;
pub use server::{ApiConfig, serve};
pub use service::StepUpService;
