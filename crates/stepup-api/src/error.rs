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
    /// The engine rejected the event.
    #[error(transparent)]
    Engine(#[from] EngineError),
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
            ApiError::AppendFailed { .. } => tonic::Status::unavailable(message),
            ApiError::NoDecision(_) => tonic::Status::deadline_exceeded(message),
            ApiError::AdminDisabled => tonic::Status::permission_denied(message),
            ApiError::Unauthenticated => tonic::Status::unauthenticated(message),
            ApiError::ReloadRejected(_) => tonic::Status::failed_precondition(message),
            ApiError::ReloadFailed(_) => tonic::Status::internal(message),
        }
    }
}
