//! Calls to the other instances of the consumer group: forwarding a call to the instance that
//! owns the user's partition, and asking every instance for a decision or a decision stream.
//!
//! Every call this module sends carries the metadata [`FORWARDED_BY_HEADER`], and an instance
//! always handles such a call locally. So a call is forwarded at most once, even
//! while two instances disagree about who owns a partition.

use std::collections::HashMap;
use std::error::Error as _;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::stream::{self, StreamExt};
use parking_lot::Mutex;
use stepup_kafka::{Membership, Peer};
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Response, Status};
use tracing::{trace, warn};

use crate::error::ApiError;
use crate::metrics::ApiMetrics;
use crate::pb;
use crate::pb::step_up_client::StepUpClient;
use crate::service::DecisionStream;

/// Metadata key that marks a call forwarded by another instance; the value is that
/// instance's id. A call that carries it is handled locally and never forwarded again.
pub const FORWARDED_BY_HEADER: &str = "x-stepup-forwarded-by";

/// Shortest time between two warnings about unreachable instances or unready partitions; the
/// counter `stepup_grpc_forwarded_total` still counts every failed call.
const WARN_INTERVAL: Duration = Duration::from_secs(10);

/// This instance's view of the consumer group, and one gRPC channel per other instance.
pub(crate) struct Cluster {
    membership: Membership,
    /// Lazily connected channels, keyed by gRPC address.
    channels: Mutex<HashMap<String, Channel>>,
    connect_timeout: Duration,
    warnings: Arc<WarnThrottle>,
}

/// Lets one warning through per [`WARN_INTERVAL`] and counts the ones it held back.
#[derive(Default)]
pub(crate) struct WarnThrottle {
    state: Mutex<ThrottleState>,
}

#[derive(Default)]
struct ThrottleState {
    last_warned: Option<Instant>,
    suppressed: u64,
}

/// Result of asking one instance for a decision.
pub(crate) enum Lookup {
    /// The instance had the decision.
    Found(Box<pb::Decision>),
    /// The instance had no decision before the deadline.
    NotFound,
    /// The instance could not be asked; the text names it and the cause.
    Failed(String),
}

// === impl Cluster ===

impl Cluster {
    pub(crate) fn new(membership: Membership, connect_timeout: Duration) -> Self {
        Self {
            membership,
            channels: Mutex::new(HashMap::new()),
            connect_timeout,
            warnings: Arc::default(),
        }
    }

    /// Returns the throttle shared by this cluster's warnings.
    pub(crate) fn warnings(&self) -> &WarnThrottle {
        &self.warnings
    }

    pub(crate) fn membership(&self) -> &Membership {
        &self.membership
    }

    /// Sends a unary call to `peer` with the forwarded header and `timeout`, and counts it.
    pub(crate) async fn unary<M, F, Fut>(
        &self,
        metrics: &ApiMetrics,
        method: &'static str,
        peer: &Peer,
        message: M,
        timeout: Duration,
        call: F,
    ) -> Result<pb::Decision, ApiError>
    where
        F: FnOnce(StepUpClient<Channel>, Request<M>) -> Fut,
        Fut: Future<Output = Result<Response<pb::Decision>, Status>>,
    {
        trace!(method, peer = %peer.instance_id, "forwarding call");
        let client = self.client(method, peer)?;
        let mut request = self.request(message);
        // The channel enforces this deadline too, and the peer receives it as `grpc-timeout`.
        request.set_timeout(timeout);
        let result = call(client, request)
            .await
            .map(Response::into_inner)
            .map_err(|status| {
                // tonic 0.14 reports its own deadline as `CANCELLED`, "Timeout expired".
                if status.source().is_some() && status.code() == Code::Cancelled {
                    let cause = format!("no response within {} ms", timeout.as_millis());
                    return self.forward_failed(method, peer, cause);
                }
                self.peer_error(method, peer, status)
            });
        count(metrics, method, result.as_ref().err());
        result
    }

    /// Forwards `AwaitDecision` to `peer`, which waits up to `wait` for the decision.
    pub(crate) async fn await_decision(
        &self,
        metrics: &ApiMetrics,
        peer: &Peer,
        mut message: pb::AwaitDecisionRequest,
        wait: Duration,
    ) -> Result<pb::Decision, ApiError> {
        // Send the wait this instance chose, so a peer with other defaults waits as long.
        message.timeout_ms = u32::try_from(wait.as_millis()).unwrap_or(u32::MAX);
        let timeout = wait + self.connect_timeout;
        let call = |mut client: StepUpClient<Channel>, request| async move {
            client.await_decision(request).await
        };
        self.unary(metrics, "AwaitDecision", peer, message, timeout, call)
            .await
    }

    /// Asks `peer` for the decision on `event_id`, waiting up to `wait` there.
    pub(crate) async fn lookup(
        &self,
        metrics: &ApiMetrics,
        peer: &Peer,
        event_id: &str,
        wait: Duration,
    ) -> Lookup {
        let message = pb::AwaitDecisionRequest {
            event_id: event_id.to_owned(),
            ..Default::default()
        };
        let cause = match self.await_decision(metrics, peer, message, wait).await {
            Ok(decision) => return Lookup::Found(Box::new(decision)),
            Err(ApiError::Peer(status)) if status.code() == Code::DeadlineExceeded => {
                return Lookup::NotFound;
            }
            Err(ApiError::ForwardFailed { cause, .. }) => cause,
            Err(err) => err.to_string(),
        };
        Lookup::Failed(format!(
            "`{}` at `{}` ({cause})",
            peer.instance_id, peer.grpc_address
        ))
    }

    /// Opens `peer`'s decision stream with the forwarded header. The returned stream ends
    /// with `UNAVAILABLE` naming the peer when the peer's stream fails or ends.
    pub(crate) async fn open_stream(
        &self,
        metrics: &ApiMetrics,
        peer: &Peer,
        message: pb::StreamDecisionsRequest,
    ) -> Result<DecisionStream, ApiError> {
        let method = "StreamDecisions";
        let mut client = self.client(method, peer)?;
        let result = client
            .stream_decisions(self.request(message))
            .await
            .map_err(|status| self.peer_error(method, peer, status));
        count(metrics, method, result.as_ref().err());
        let decisions = result?.into_inner();

        let (failed, ended) = (peer.clone(), peer.clone());
        let (failed_warnings, ended_warnings) = (self.warnings.clone(), self.warnings.clone());
        let items = decisions.map(move |item| {
            item.map_err(|status| {
                let cause = status_cause(&status);
                Status::from(stream_ended(&failed_warnings, &failed, cause))
            })
        });
        let end = stream::once(async move {
            let cause = "the instance closed it".to_owned();
            Err(Status::from(stream_ended(&ended_warnings, &ended, cause)))
        });
        // Server streaming ends at the first error, so at most one of the two errors is sent.
        Ok(Box::pin(items.chain(end)))
    }

    /// Returns a client for `peer` over a cached, lazily connected channel.
    fn client(&self, method: &'static str, peer: &Peer) -> Result<StepUpClient<Channel>, ApiError> {
        let mut channels = self.channels.lock();
        if let Some(channel) = channels.get(&peer.grpc_address) {
            return Ok(StepUpClient::new(channel.clone()));
        }
        let endpoint = Endpoint::from_shared(format!("http://{}", peer.grpc_address))
            .map_err(|err| self.forward_failed(method, peer, format!("invalid address: {err}")))?
            .connect_timeout(self.connect_timeout);
        let channel = endpoint.connect_lazy();
        // Drop the channels of instances that left, so the cache stays as large as the group.
        let live: Vec<String> = self
            .membership
            .peers()
            .into_iter()
            .map(|peer| peer.grpc_address)
            .collect();
        channels.retain(|address, _| live.contains(address));
        channels.insert(peer.grpc_address.clone(), channel.clone());
        Ok(StepUpClient::new(channel))
    }

    /// Wraps `message` in a request that carries the forwarded header.
    fn request<M>(&self, message: M) -> Request<M> {
        let mut request = Request::new(message);
        let value = MetadataValue::try_from(self.membership.instance_id())
            .unwrap_or_else(|_| MetadataValue::from_static("unprintable-instance-id"));
        request.metadata_mut().insert(FORWARDED_BY_HEADER, value);
        request
    }

    /// Splits a failed call into a status the peer sent, passed on as is, and a failure to
    /// reach the peer. In tonic 0.14 a status made locally from a transport error or timeout
    /// carries that error as its source, and a status decoded from the peer's response has none.
    fn peer_error(&self, method: &'static str, peer: &Peer, status: Status) -> ApiError {
        if status.source().is_none() {
            return ApiError::Peer(status);
        }
        self.forward_failed(method, peer, status_cause(&status))
    }

    fn forward_failed(&self, method: &'static str, peer: &Peer, cause: String) -> ApiError {
        if let Some(suppressed) = self.warnings.allow() {
            warn!(
                method,
                peer = %peer.instance_id,
                address = %peer.grpc_address,
                error = %cause,
                suppressed,
                "failed to forward call"
            );
        }
        ApiError::ForwardFailed {
            method,
            instance_id: peer.instance_id.clone(),
            address: peer.grpc_address.clone(),
            cause,
        }
    }
}

// === impl WarnThrottle ===

impl WarnThrottle {
    /// Returns how many warnings were held back since the last one if a warning may be logged
    /// now, and `None` (counting this one as held back) otherwise.
    pub(crate) fn allow(&self) -> Option<u64> {
        let mut state = self.state.lock();
        let now = Instant::now();
        if let Some(last) = state.last_warned
            && now.duration_since(last) < WARN_INTERVAL
        {
            state.suppressed += 1;
            return None;
        }
        state.last_warned = Some(now);
        Some(std::mem::take(&mut state.suppressed))
    }
}

/// Returns whether the call was forwarded by another instance.
pub(crate) fn is_forwarded(metadata: &MetadataMap) -> bool {
    metadata.contains_key(FORWARDED_BY_HEADER)
}

fn stream_ended(warnings: &WarnThrottle, peer: &Peer, cause: String) -> ApiError {
    if let Some(suppressed) = warnings.allow() {
        warn!(
            peer = %peer.instance_id,
            address = %peer.grpc_address,
            error = %cause,
            suppressed,
            "decision stream from another instance ended"
        );
    }
    ApiError::PeerStreamEnded {
        instance_id: peer.instance_id.clone(),
        address: peer.grpc_address.clone(),
        cause,
    }
}

/// Returns the status message followed by its error sources, which name the transport cause.
fn status_cause(status: &Status) -> String {
    let mut cause = status.message().to_owned();
    let mut source = status.source();
    while let Some(err) = source {
        let text = err.to_string();
        if !cause.contains(&text) {
            cause.push_str(": ");
            cause.push_str(&text);
        }
        source = err.source();
    }
    cause
}

/// Counts a forwarded call by the status its caller gets: the peer's own status, or
/// `unavailable` when the peer could not be reached.
fn count(metrics: &ApiMetrics, method: &'static str, error: Option<&ApiError>) {
    let outcome = match error {
        None => "ok",
        Some(ApiError::Peer(status)) => code_label(status.code()),
        Some(_) => code_label(Code::Unavailable),
    };
    metrics
        .forwarded
        .with_label_values(&[method, outcome])
        .inc();
}

/// Returns the gRPC status code in snake case, the `outcome` label of forwarded calls.
fn code_label(code: Code) -> &'static str {
    match code {
        Code::Ok => "ok",
        Code::Cancelled => "cancelled",
        Code::Unknown => "unknown",
        Code::InvalidArgument => "invalid_argument",
        Code::DeadlineExceeded => "deadline_exceeded",
        Code::NotFound => "not_found",
        Code::AlreadyExists => "already_exists",
        Code::PermissionDenied => "permission_denied",
        Code::ResourceExhausted => "resource_exhausted",
        Code::FailedPrecondition => "failed_precondition",
        Code::Aborted => "aborted",
        Code::OutOfRange => "out_of_range",
        Code::Unimplemented => "unimplemented",
        Code::Internal => "internal",
        Code::Unavailable => "unavailable",
        Code::DataLoss => "data_loss",
        Code::Unauthenticated => "unauthenticated",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_header_marks_request() {
        let cluster = Cluster::new(Membership::new("a", "127.0.0.1:1"), Duration::from_secs(1));
        let request = cluster.request(());

        assert!(is_forwarded(request.metadata()));
        let value = request.metadata().get(FORWARDED_BY_HEADER).unwrap();
        assert_eq!(value.to_str().unwrap(), "a");
        assert!(!is_forwarded(&MetadataMap::new()));
    }

    #[test]
    fn peer_status_passes_through() {
        let cluster = Cluster::new(Membership::new("a", "127.0.0.1:1"), Duration::from_secs(1));
        let peer = Peer {
            instance_id: "b".into(),
            grpc_address: "127.0.0.1:2".into(),
        };

        let err = cluster.peer_error("Assess", &peer, Status::invalid_argument("bad `ip`"));

        let status = Status::from(err);
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(status.message(), "bad `ip`");
    }

    #[test]
    fn throttle_holds_back_repeated_warnings() {
        let throttle = WarnThrottle::default();

        assert_eq!(throttle.allow(), Some(0));
        assert_eq!(throttle.allow(), None);
        assert_eq!(throttle.allow(), None);

        throttle.state.lock().last_warned = Some(Instant::now() - WARN_INTERVAL);
        assert_eq!(throttle.allow(), Some(2));
    }

    #[test]
    fn code_labels_are_snake_case() {
        assert_eq!(code_label(Code::Unavailable), "unavailable");
        assert_eq!(code_label(Code::DeadlineExceeded), "deadline_exceeded");
    }
}
