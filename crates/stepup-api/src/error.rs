//! API errors and their gRPC status codes, mapped in one place.

use stepup_engine::EngineError;

/// Reasons a gRPC call fails.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request makes an event that the consumer would reject (for example a user agent
    /// over the size limit); the message names the event field.
    #[error("request makes an invalid event: {0}")]
    InvalidEvent(#[from] stepup_events::ParseError),
    /// A request field is missing or malformed.
    #[error("invalid field `{field}`: {reason}")]
    InvalidArgument {
        /// Request field name.
        field: &'static str,
        /// Description of the problem and the value to send instead.
        reason: String,
    },
    /// The decided event could not be appended to the events topic in time.
    #[error(
        "failed to append event `{event_id}` to the events topic: {cause}; retry with the same event_id"
    )]
    AppendFailed {
        /// Event that was decided but not appended.
        event_id: String,
        /// Producer error.
        cause: String,
    },
    /// No decision arrived before the deadline.
    #[error(
        "no decision for event `{0}` before the deadline; check that the event was published to the events topic"
    )]
    NoDecision(String),
    /// No decision was found here, and some instances could not be asked.
    #[error(
        "no decision for event `{event_id}` before the deadline, and failed to ask {unreachable}; \
         retry when those instances are reachable, or pass `user_id` to ask only the owner"
    )]
    NoDecisionUnreachable {
        /// Event that no reachable instance had decided.
        event_id: String,
        /// The instances that could not be asked, with the cause for each.
        unreachable: String,
    },
    /// The engine rejected the event.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The user's partition has no ready owner: this instance is still restoring it, or no
    /// instance has claimed it yet.
    #[error(
        "partition {partition} of the events topic is not ready after {waited_ms} ms: no instance \
         has restored it yet, for example because the consumer group is rebalancing; retry the \
         call, or raise `api.ready_timeout_ms` if restores take longer"
    )]
    PartitionNotReady {
        /// Partition of the events topic that contains the user's events.
        partition: i32,
        /// How long the call waited, in milliseconds.
        waited_ms: u64,
    },
    /// A call to another instance failed before that instance returned a response.
    #[error(
        "failed to forward `{method}` to instance `{instance_id}` at `{address}`: {cause}; retry \
         the call, and check that the instance is running (a stopped instance's partitions \
         move to the others when the consumer group rebalances)"
    )]
    ForwardFailed {
        /// gRPC method, for example `Assess`.
        method: &'static str,
        /// Id of the instance called.
        instance_id: String,
        /// gRPC address of the instance called.
        address: String,
        /// Transport error or timeout.
        cause: String,
    },
    /// The decision stream of another instance, merged into this call's stream, ended.
    #[error(
        "the decision stream from instance `{instance_id}` at `{address}` ended: {cause}; call \
         `StreamDecisions` again to follow the instances running now, or read the decisions \
         topic for a complete feed"
    )]
    PeerStreamEnded {
        /// Id of the instance whose stream ended.
        instance_id: String,
        /// gRPC address of that instance.
        address: String,
        /// Cause of the end of the stream.
        cause: String,
    },
    /// Status returned by the instance a call was forwarded to, passed on unchanged.
    #[error("{}", .0.message())]
    Peer(tonic::Status),
    /// The admin service has no token, so it rejects every call.
    #[error(
        "the admin API is disabled; set `api.admin_token_file` to a file that contains a token, \
         restart the server, and send `authorization: Bearer <token>`"
    )]
    AdminDisabled,
    /// The call carries no bearer token, or the wrong one.
    #[error(
        "missing or invalid admin token; send the metadata `authorization: Bearer <token>` \
         with the token from the file named by `api.admin_token_file`"
    )]
    Unauthenticated,
    /// The candidate rule set failed to compile or failed its case files.
    #[error("rule reload rejected, the previous rule set still serves: {0}")]
    ReloadRejected(String),
    /// The reload could not run to completion.
    #[error("failed to run the rule reload: {0}")]
    ReloadFailed(String),
}

impl From<ApiError> for tonic::Status {
    fn from(err: ApiError) -> Self {
        let message = err.to_string();
        match err {
            ApiError::InvalidArgument { .. } | ApiError::InvalidEvent(_) | ApiError::Engine(_) => {
                tonic::Status::invalid_argument(message)
            }
            ApiError::AppendFailed { .. }
            | ApiError::NoDecisionUnreachable { .. }
            | ApiError::PartitionNotReady { .. }
            | ApiError::ForwardFailed { .. }
            | ApiError::PeerStreamEnded { .. } => tonic::Status::unavailable(message),
            ApiError::Peer(status) => status,
            ApiError::NoDecision(_) => tonic::Status::deadline_exceeded(message),
            ApiError::AdminDisabled => tonic::Status::permission_denied(message),
            ApiError::Unauthenticated => tonic::Status::unauthenticated(message),
            ApiError::ReloadRejected(_) => tonic::Status::failed_precondition(message),
            ApiError::ReloadFailed(_) => tonic::Status::internal(message),
        }
    }
}
