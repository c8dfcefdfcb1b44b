//! The `stepup.v1.StepUp` service.
//!
//! With a [`Membership`], calls about a user run on the instance that owns the user's partition:
//! `Assess` and `CheckAction` are forwarded there, and `AwaitDecision` and `StreamDecisions`
//! without a user ask every instance. See [`crate::forward`].

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use stepup_engine::Engine;
use stepup_events::{Decision, Event};
use stepup_kafka::{Membership, Peer, Producer, Route};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tokio_stream::{Stream, StreamExt};
use tonic::transport::Channel;
use tonic::{Request, Response, Status};
use tracing::{instrument, trace, warn};

use crate::convert::{action_to_event, assess_to_event, decision_to_proto, requirement_from_proto};
use crate::error::ApiError;
use crate::forward::{Cluster, Lookup, is_forwarded};
use crate::metrics::ApiMetrics;
use crate::pb;
use crate::pb::step_up_client::StepUpClient;
use crate::server::ApiConfig;

/// How often a call waiting for a partition re-reads the other instances' claims, which change
/// without a notification.
const CLAIM_POLL_INTERVAL: Duration = Duration::from_millis(100);

/// Implements `stepup.v1.StepUp` on top of an [`Engine`].
#[derive(Clone)]
pub struct StepUpService {
    engine: Arc<Engine>,
    producer: Option<Producer>,
    config: ApiConfig,
    cluster: Option<Arc<Cluster>>,
    metrics: ApiMetrics,
    /// Shutdown flag of the server; every `StreamDecisions` stream ends when it turns true.
    closed: Option<watch::Receiver<bool>>,
}

/// Response stream of `StreamDecisions`.
pub(crate) type DecisionStream = Pin<Box<dyn Stream<Item = Result<pb::Decision, Status>> + Send>>;

/// Where a call that decides for one user runs.
enum Target<'a> {
    /// On this instance, in the given partition if the partition count is known.
    Local(Option<i32>),
    /// On the instance that owns the user's partition.
    Remote(&'a Cluster, Peer),
}

// === impl StepUpService ===

impl StepUpService {
    /// Creates the service. With a producer, events decided inline are appended to the events
    /// topic and the consumer applies them; without one, the engine applies them at once.
    pub fn new(engine: Arc<Engine>, producer: Option<Producer>, config: ApiConfig) -> Self {
        Self {
            engine,
            producer,
            config,
            cluster: None,
            metrics: ApiMetrics::default(),
            closed: None,
        }
    }

    /// Routes calls by the owner of the user's partition, as `membership` reports it. Without a
    /// membership, every call runs on this instance.
    pub fn with_membership(mut self, membership: Membership) -> Self {
        let connect_timeout = Duration::from_millis(self.config.forward_connect_timeout_ms);
        self.cluster = Some(Arc::new(Cluster::new(membership, connect_timeout)));
        self
    }

    /// Counts calls in `metrics`, for example forwarded calls in
    /// `stepup_grpc_forwarded_total`. Without it the counts go nowhere.
    pub fn with_metrics(mut self, metrics: ApiMetrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// Ends every `StreamDecisions` stream when `closed` turns true or its sender is dropped.
    pub(crate) fn end_streams_on(mut self, closed: watch::Receiver<bool>) -> Self {
        self.closed = Some(closed);
        self
    }

    /// Returns `stream`, cut off when the server shuts down.
    fn until_closed(&self, stream: DecisionStream) -> DecisionStream {
        let Some(mut closed) = self.closed.clone() else {
            return stream;
        };
        let shutdown = async move {
            let _ = closed.wait_for(|closed| *closed).await;
        };
        Box::pin(futures::StreamExt::take_until(stream, shutdown))
    }

    /// Appends an inline-decided event to the log, or applies it directly without Kafka.
    async fn record(&self, event: &Event) -> Result<(), ApiError> {
        let Some(producer) = &self.producer else {
            self.engine.process(event);
            return Ok(());
        };
        let timeout = Duration::from_millis(self.config.append_timeout_ms);
        let payload = event.to_json();
        let send = producer.send_event(&event.user_id, &payload);
        match tokio::time::timeout(timeout, send).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(err)) => Err(append_failed(event, err.to_string())),
            Err(_) => Err(append_failed(event, format!("timed out after {timeout:?}"))),
        }
    }

    fn await_timeout(&self, requested_ms: u32) -> Duration {
        let millis = match requested_ms {
            0 => self.config.await_default_ms,
            ms => u64::from(ms).min(self.config.await_max_ms),
        };
        Duration::from_millis(millis)
    }

    /// Returns the cluster to route by, or `None` when the call must run here: without a
    /// membership, or when another instance forwarded it.
    fn routing_cluster(&self, forwarded: bool) -> Option<&Cluster> {
        self.cluster.as_deref().filter(|_| !forwarded)
    }

    /// Finds where a call that decides for `user_id` runs. While the user's partition has no
    /// ready owner, waits up to `api.ready_timeout_ms` for this instance to restore it or for
    /// another instance to claim it.
    async fn decide_target(&self, user_id: &str, forwarded: bool) -> Result<Target<'_>, ApiError> {
        let Some(cluster) = self.cluster.as_deref() else {
            return Ok(Target::Local(None));
        };
        let membership = cluster.membership();
        if forwarded {
            // NOTE: decides even when this instance no longer serves the partition, from
            // whatever state it still holds, so a call in flight during a rebalance is decided.
            return Ok(Target::Local(membership.partition_for(user_id)));
        }
        let timeout = Duration::from_millis(self.config.ready_timeout_ms);
        let started = Instant::now();
        loop {
            let partition = match membership.route(user_id) {
                Route::Remote { peer, .. } => return Ok(Target::Remote(cluster, peer)),
                Route::Local { partition: None } => return Ok(Target::Local(None)),
                Route::Local {
                    partition: Some(partition),
                } => partition,
            };
            if membership.is_ready(partition) {
                return Ok(Target::Local(Some(partition)));
            }
            let waited = started.elapsed();
            if waited >= timeout {
                return Err(not_ready(cluster, partition, waited));
            }
            trace!(partition, "waiting for partition to become ready");
            let step = (timeout - waited).min(CLAIM_POLL_INTERVAL);
            membership.wait_ready(partition, step).await;
        }
    }

    /// Forwards a decide call to `peer` with `api.forward_timeout_ms` as its deadline.
    async fn forward<M, F, Fut>(
        &self,
        cluster: &Cluster,
        method: &'static str,
        peer: &Peer,
        message: M,
        call: F,
    ) -> Result<pb::Decision, ApiError>
    where
        F: FnOnce(StepUpClient<Channel>, Request<M>) -> Fut,
        Fut: Future<Output = Result<Response<pb::Decision>, Status>>,
    {
        let timeout = Duration::from_millis(self.config.forward_timeout_ms);
        cluster
            .unary(&self.metrics, method, peer, message, timeout, call)
            .await
    }

    async fn await_local(&self, event_id: &str, wait: Duration) -> Result<pb::Decision, ApiError> {
        match self.engine.await_decision(event_id, wait).await {
            Some(decision) => Ok(decision_to_proto(&decision)),
            None => Err(ApiError::NoDecision(event_id.to_owned())),
        }
    }

    /// Looks for the decision in this instance's store, then waits for it here and on every
    /// other instance at once, and returns the first one found.
    async fn await_anywhere(
        &self,
        cluster: &Cluster,
        event_id: &str,
        wait: Duration,
    ) -> Result<pb::Decision, ApiError> {
        if let Some(decision) = self.engine.decision(event_id) {
            return Ok(decision_to_proto(&decision));
        }
        let mut lookups: FuturesUnordered<BoxFuture<'_, Lookup>> = FuturesUnordered::new();
        lookups.push(Box::pin(async move {
            match self.engine.await_decision(event_id, wait).await {
                Some(decision) => Lookup::Found(Box::new(decision_to_proto(&decision))),
                None => Lookup::NotFound,
            }
        }));
        for peer in cluster.membership().peers() {
            let metrics = &self.metrics;
            lookups.push(Box::pin(async move {
                cluster.lookup(metrics, &peer, event_id, wait).await
            }));
        }

        let mut failed = Vec::new();
        while let Some(lookup) = lookups.next().await {
            match lookup {
                Lookup::Found(decision) => return Ok(*decision),
                Lookup::NotFound => {}
                Lookup::Failed(peer) => failed.push(peer),
            }
        }
        if failed.is_empty() {
            return Err(ApiError::NoDecision(event_id.to_owned()));
        }
        Err(ApiError::NoDecisionUnreachable {
            event_id: event_id.to_owned(),
            unreachable: failed.join(", "),
        })
    }

    /// Streams the decisions this instance makes that match `request`.
    fn local_stream(&self, request: &pb::StreamDecisionsRequest) -> DecisionStream {
        let requested: Vec<_> = request
            .requirements
            .iter()
            .filter_map(|value| requirement_from_proto(*value))
            .collect();
        let user_id = request.user_id.clone();
        let matches = move |decision: &Decision| {
            (requested.is_empty() || requested.contains(&decision.requirement))
                && (user_id.is_empty() || decision.user_id == user_id)
        };
        let stream =
            BroadcastStream::new(self.engine.subscribe()).filter_map(move |item| match item {
                Ok(decision) if matches(&decision) => Some(Ok(decision_to_proto(&decision))),
                Ok(_) => None,
                Err(BroadcastStreamRecvError::Lagged(skipped)) => {
                    warn!(skipped, "decision stream subscriber fell behind");
                    None
                }
            });
        Box::pin(stream)
    }

    /// Merges this instance's decisions with those of every instance known now.
    async fn merged_stream(
        &self,
        cluster: &Cluster,
        request: pb::StreamDecisionsRequest,
    ) -> Result<DecisionStream, ApiError> {
        // Subscribe here first, so a decision made while the peer streams open is not missed.
        let local = self.local_stream(&request);
        let peers = cluster.membership().peers();
        let opens = peers
            .iter()
            .map(|peer| cluster.open_stream(&self.metrics, peer, request.clone()));
        let mut streams = futures::future::try_join_all(opens).await?;
        streams.push(local);
        Ok(Box::pin(futures::stream::select_all(streams)))
    }
}

fn not_ready(cluster: &Cluster, partition: i32, waited: Duration) -> ApiError {
    let waited_ms = u64::try_from(waited.as_millis()).unwrap_or(u64::MAX);
    if let Some(suppressed) = cluster.warnings().allow() {
        warn!(
            partition,
            waited_ms, suppressed, "partition not ready, call rejected"
        );
    }
    ApiError::PartitionNotReady {
        partition,
        waited_ms,
    }
}

fn append_failed(event: &Event, cause: String) -> ApiError {
    warn!(event_id = %event.event_id, error = %cause, "failed to append inline event");
    ApiError::AppendFailed {
        event_id: event.event_id.clone(),
        cause,
    }
}

#[tonic::async_trait]
impl pb::step_up_server::StepUp for StepUpService {
    #[instrument(skip_all, fields(event_id))]
    async fn assess(
        &self,
        request: Request<pb::AssessRequest>,
    ) -> Result<Response<pb::Decision>, Status> {
        let forwarded = is_forwarded(request.metadata());
        let message = request.into_inner();
        let event = assess_to_event(message.clone(), Utc::now())?;
        tracing::Span::current().record("event_id", event.event_id.as_str());
        let partition = match self.decide_target(&event.user_id, forwarded).await? {
            Target::Local(partition) => partition,
            Target::Remote(cluster, peer) => {
                let call = |mut client: StepUpClient<Channel>, request| async move {
                    client.assess(request).await
                };
                let decision = self
                    .forward(cluster, "Assess", &peer, message, call)
                    .await?;
                return Ok(Response::new(decision));
            }
        };
        let decision = match partition {
            Some(partition) => self.engine.assess_in(&event, partition),
            None => self.engine.assess(&event),
        };
        let decision = decision.map_err(ApiError::from)?;
        self.record(&event).await?;
        Ok(Response::new(decision_to_proto(&decision)))
    }

    #[instrument(skip_all, fields(event_id))]
    async fn await_decision(
        &self,
        request: Request<pb::AwaitDecisionRequest>,
    ) -> Result<Response<pb::Decision>, Status> {
        let forwarded = is_forwarded(request.metadata());
        let request = request.into_inner();
        if request.event_id.is_empty() {
            let err = ApiError::InvalidArgument {
                field: "event_id",
                reason: "is required".into(),
            };
            return Err(err.into());
        }
        tracing::Span::current().record("event_id", request.event_id.as_str());
        let wait = self.await_timeout(request.timeout_ms);
        let Some(cluster) = self.routing_cluster(forwarded) else {
            return Ok(Response::new(
                self.await_local(&request.event_id, wait).await?,
            ));
        };
        if request.user_id.is_empty() {
            let decision = self
                .await_anywhere(cluster, &request.event_id, wait)
                .await?;
            return Ok(Response::new(decision));
        }
        let decision = match cluster.membership().route(&request.user_id) {
            Route::Remote { peer, .. } => {
                let metrics = &self.metrics;
                cluster
                    .await_decision(metrics, &peer, request, wait)
                    .await?
            }
            Route::Local { .. } => self.await_local(&request.event_id, wait).await?,
        };
        Ok(Response::new(decision))
    }

    type StreamDecisionsStream = DecisionStream;

    #[instrument(skip_all)]
    async fn stream_decisions(
        &self,
        request: Request<pb::StreamDecisionsRequest>,
    ) -> Result<Response<Self::StreamDecisionsStream>, Status> {
        let forwarded = is_forwarded(request.metadata());
        let request = request.into_inner();
        let Some(cluster) = self.routing_cluster(forwarded) else {
            return Ok(Response::new(
                self.until_closed(self.local_stream(&request)),
            ));
        };
        if request.user_id.is_empty() {
            let stream = self.merged_stream(cluster, request).await?;
            return Ok(Response::new(self.until_closed(stream)));
        }
        let stream = match cluster.membership().route(&request.user_id) {
            Route::Remote { peer, .. } => {
                // NOTE: follows the owner at call time. After a rebalance moves the user, that
                // stream gets no more of the user's decisions until the client calls again.
                cluster.open_stream(&self.metrics, &peer, request).await?
            }
            Route::Local { .. } => self.local_stream(&request),
        };
        Ok(Response::new(self.until_closed(stream)))
    }

    #[instrument(skip_all, fields(event_id))]
    async fn check_action(
        &self,
        request: Request<pb::CheckActionRequest>,
    ) -> Result<Response<pb::Decision>, Status> {
        let forwarded = is_forwarded(request.metadata());
        let message = request.into_inner();
        let event = action_to_event(message.clone(), Utc::now())?;
        tracing::Span::current().record("event_id", event.event_id.as_str());
        if let Target::Remote(cluster, peer) = self.decide_target(&event.user_id, forwarded).await?
        {
            let call = |mut client: StepUpClient<Channel>, request| async move {
                client.check_action(request).await
            };
            let decision = self
                .forward(cluster, "CheckAction", &peer, message, call)
                .await?;
            return Ok(Response::new(decision));
        }
        let decision = self.engine.check_action(&event).map_err(ApiError::from)?;
        self.record(&event).await?;
        Ok(Response::new(decision_to_proto(&decision)))
    }
}
