//! The `stepup.v1.StepUp` service.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use stepup_engine::Engine;
use stepup_events::{Decision, Event};
use stepup_kafka::Producer;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status};
use tracing::{instrument, warn};

use crate::convert::{action_to_event, assess_to_event, decision_to_proto, requirement_from_proto};
use crate::error::ApiError;
use crate::pb;
use crate::server::ApiConfig;

/// Implements `stepup.v1.StepUp` on top of an [`Engine`].
#[derive(Clone)]
pub struct StepUpService {
    engine: Arc<Engine>,
    producer: Option<Producer>,
    config: ApiConfig,
}

type DecisionStream = Pin<Box<dyn Stream<Item = Result<pb::Decision, Status>> + Send>>;

// === impl StepUpService ===

impl StepUpService {
    /// Creates the service. With a producer, events decided inline are appended to the events
    /// topic and the consumer applies them; without one, the engine applies them at once.
    pub fn new(engine: Arc<Engine>, producer: Option<Producer>, config: ApiConfig) -> Self {
        Self {
            engine,
            producer,
            config,
        }
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
        let event = assess_to_event(request.into_inner(), Utc::now())?;
        tracing::Span::current().record("event_id", event.event_id.as_str());
        let decision = self.engine.assess(&event).map_err(ApiError::from)?;
        self.record(&event).await?;
        Ok(Response::new(decision_to_proto(&decision)))
    }

    #[instrument(skip_all, fields(event_id))]
    async fn await_decision(
        &self,
        request: Request<pb::AwaitDecisionRequest>,
    ) -> Result<Response<pb::Decision>, Status> {
        let request = request.into_inner();
        if request.event_id.is_empty() {
            let err = ApiError::InvalidArgument {
                field: "event_id",
                reason: "is required".into(),
            };
            return Err(err.into());
        }
        tracing::Span::current().record("event_id", request.event_id.as_str());
        let timeout = self.await_timeout(request.timeout_ms);
        match self.engine.await_decision(&request.event_id, timeout).await {
            Some(decision) => Ok(Response::new(decision_to_proto(&decision))),
            None => Err(ApiError::NoDecision(request.event_id).into()),
        }
    }

    type StreamDecisionsStream = DecisionStream;

    #[instrument(skip_all)]
    async fn stream_decisions(
        &self,
        request: Request<pb::StreamDecisionsRequest>,
    ) -> Result<Response<Self::StreamDecisionsStream>, Status> {
        let request = request.into_inner();
        let requested: Vec<_> = request
            .requirements
            .iter()
            .filter_map(|value| requirement_from_proto(*value))
            .collect();
        let user_id = request.user_id;
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
        Ok(Response::new(Box::pin(stream)))
    }

    #[instrument(skip_all, fields(event_id))]
    async fn check_action(
        &self,
        request: Request<pb::CheckActionRequest>,
    ) -> Result<Response<pb::Decision>, Status> {
        let event = action_to_event(request.into_inner(), Utc::now())?;
        tracing::Span::current().record("event_id", event.event_id.as_str());
        let decision = self.engine.check_action(&event).map_err(ApiError::from)?;
        self.record(&event).await?;
        Ok(Response::new(decision_to_proto(&decision)))
    }
}
