//! Consumer-group loop on the events topic with at-least-once processing.
//!
//! librdkafka commits automatically, but only offsets the loop stored, and the loop stores an
//! offset only after the handler returned and any dead letter or decision was acknowledged.
//! Nothing is committed before it is processed.

use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;

use rdkafka::Message;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::KafkaError as ClientError;
use rdkafka::message::BorrowedMessage;
use rdkafka::types::RDKafkaErrorCode;
use stepup_events::ParseError;
use tokio::sync::watch;
use tracing::{error, info, instrument, trace, warn};

use crate::config::KafkaConfig;
use crate::context::ConsumerClientContext;
use crate::error::KafkaError;
use crate::handler::{EventHandler, HandleOutcome, InboundMessage};
use crate::metrics::{KafkaMetrics, error_kind};
use crate::producer::Producer;
use crate::retry::{Backoff, LOG_INTERVAL, LogThrottle, sleep_or_shutdown, wait_for_shutdown};

type EventConsumer = StreamConsumer<ConsumerClientContext>;
type RecvResult<'a> = Result<BorrowedMessage<'a>, ClientError>;

/// Maximum pause after a failed receive. librdkafka paces reconnection attempts itself. The
/// pause only guards against an error that repeats at once, and a longer one would delay the
/// first message after an outage.
const RECV_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Errors taken one after the other without a pause before the loop pauses anyway.
const MAX_ERRORS_WITHOUT_PAUSE: u32 = 100;

/// Shutdown interrupted the processing of a message, so its offset was not stored.
struct Stopped;

/// Consumes `events_topic` in group `group_id` until `shutdown` turns `true`, then commits the
/// stored offsets, leaves the group and returns.
///
/// Messages are processed one at a time in partition order. Messages without payload, larger
/// than `max_event_bytes` or dead-lettered by the handler go to the dead-letter topic. Broker
/// errors are logged, counted and retried with backoff, and they never end the loop. A dropped
/// `shutdown` sender counts as a shutdown request.
///
/// Returns an error only for an invalid configuration, a failed subscription or a failed final
/// commit.
#[instrument(skip_all, fields(topic = %config.events_topic, group = %config.group_id))]
pub async fn run_consumer(
    config: &KafkaConfig,
    handler: Arc<dyn EventHandler>,
    producer: Producer,
    metrics: KafkaMetrics,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), KafkaError> {
    config.validate()?;
    let consumer = create_consumer(config, &metrics)?;
    info!(brokers = %config.brokers, "consumer started");

    let worker = Worker {
        config,
        handler: handler.as_ref(),
        producer: &producer,
        metrics: &metrics,
        consumer: &consumer,
        recv_throttle: LogThrottle::new(LOG_INTERVAL),
        dead_letter_throttle: LogThrottle::new(LOG_INTERVAL),
        store_throttle: LogThrottle::new(LOG_INTERVAL),
    };
    worker.run(&mut shutdown).await;

    info!("consumer stopping");
    close_consumer(consumer, &config.group_id).await
}

fn create_consumer(
    config: &KafkaConfig,
    metrics: &KafkaMetrics,
) -> Result<EventConsumer, KafkaError> {
    let context = ConsumerClientContext::new(metrics.clone(), config.events_topic.clone());
    let consumer: EventConsumer = config
        .consumer_client_config()
        .create_with_context(context)
        .map_err(|source| KafkaError::CreateClient {
            client: "consumer",
            brokers: config.brokers.clone(),
            source,
        })?;
    consumer
        .subscribe(&[config.events_topic.as_str()])
        .map_err(|source| KafkaError::Subscribe {
            topic: config.events_topic.clone(),
            source,
        })?;
    Ok(consumer)
}

/// Commits the stored offsets, leaves the group and destroys the consumer.
async fn close_consumer(consumer: EventConsumer, group: &str) -> Result<(), KafkaError> {
    // A synchronous commit and the consumer's drop (which polls until the group is left)
    // block, so they run off the async worker threads.
    let closing = tokio::task::spawn_blocking(move || {
        let committed = consumer.commit_consumer_state(CommitMode::Sync);
        consumer.unsubscribe();
        drop(consumer);
        committed
    });
    let committed = match closing.await {
        Ok(committed) => committed,
        Err(join_error) => match join_error.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            Err(_) => {
                warn!(group, "runtime shut down before the consumer was closed");
                return Ok(());
            }
        },
    };
    match committed {
        // No offset was stored since the last commit.
        Ok(()) | Err(ClientError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {
            info!(group, "consumer stopped");
            Ok(())
        }
        Err(source) => Err(KafkaError::Commit {
            group: group.to_owned(),
            source,
        }),
    }
}

/// State of one run of the consumer loop.
struct Worker<'a> {
    config: &'a KafkaConfig,
    handler: &'a dyn EventHandler,
    producer: &'a Producer,
    metrics: &'a KafkaMetrics,
    consumer: &'a EventConsumer,
    recv_throttle: LogThrottle,
    dead_letter_throttle: LogThrottle,
    store_throttle: LogThrottle,
}

// === impl Worker ===

impl Worker<'_> {
    /// Receives and processes messages until shutdown is requested.
    async fn run(&self, shutdown: &mut watch::Receiver<bool>) {
        let max_pause = RECV_BACKOFF_MAX.min(self.config.retry_backoff_max());
        let mut backoff = Backoff::new(max_pause);
        let mut errors_without_pause = 0;
        let mut ready = None;
        loop {
            let received = match ready.take() {
                Some(_) if *shutdown.borrow() => return,
                Some(received) => received,
                None => tokio::select! {
                    biased;
                    () = wait_for_shutdown(shutdown) => return,
                    received = self.consumer.recv() => received,
                },
            };
            match received {
                Ok(message) => {
                    backoff.reset();
                    errors_without_pause = 0;
                    if self.process(&message, shutdown).await.is_err() {
                        return;
                    }
                }
                Err(error) => {
                    self.record_recv_error(&error);
                    errors_without_pause += 1;
                    ready = self.take_ready(errors_without_pause);
                    if ready.is_none() {
                        errors_without_pause = 0;
                        if sleep_or_shutdown(backoff.next_delay(), shutdown).await {
                            return;
                        }
                    }
                }
            }
        }
    }

    /// Returns the next message or error if librdkafka has one ready, so that a pause after
    /// an error does not delay what is queued behind it. Errors raised during an outage arrive
    /// back to back, with the first messages after the outage queued behind them. Returns
    /// `None` after [`MAX_ERRORS_WITHOUT_PAUSE`] errors, in case the same error repeats at once.
    fn take_ready(&self, errors_without_pause: u32) -> Option<RecvResult<'_>> {
        if errors_without_pause >= MAX_ERRORS_WITHOUT_PAUSE {
            return None;
        }
        // `recv` is cancel safe: dropping it when it is not ready loses nothing.
        self.consumer.recv().now_or_never()
    }

    /// Handles one message, sends its dead letter or decision, then stores its offset.
    async fn process(
        &self,
        message: &BorrowedMessage<'_>,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<(), Stopped> {
        let inbound = InboundMessage::from_borrowed(message);
        match self.outcome(&inbound) {
            HandleOutcome::Processed { decision, user_id } => {
                if let Some(decision) = decision.filter(|_| self.producer.publishes_decisions()) {
                    let send = || self.producer.send_decision(&user_id, &decision);
                    self.send_until_acked(shutdown, send).await?;
                }
            }
            HandleOutcome::DeadLetter {
                reason_code,
                reason,
            } => {
                let send = || {
                    self.producer
                        .send_dead_letter(&inbound, reason_code, &reason)
                };
                self.send_until_acked(shutdown, send).await?;
                self.record_dead_letter(&inbound, reason_code);
            }
        }

        self.store_offset(message);
        trace!(
            partition = inbound.partition,
            offset = inbound.offset,
            "message processed"
        );
        Ok(())
    }

    /// Checks the envelope, then calls the handler. A panicking handler dead-letters the
    /// message instead of stopping the partition.
    fn outcome(&self, message: &InboundMessage<'_>) -> HandleOutcome {
        let Some(payload) = message.payload else {
            return HandleOutcome::DeadLetter {
                reason_code: "missing_payload",
                reason: "message has no payload; an event must be a JSON object".to_owned(),
            };
        };
        let limit = self.config.max_event_bytes;
        if payload.len() > limit {
            let error = ParseError::TooLarge {
                size: payload.len(),
                limit,
            };
            return HandleOutcome::DeadLetter {
                reason_code: error.code(),
                reason: error.to_string(),
            };
        }

        match catch_unwind(AssertUnwindSafe(|| self.handler.handle(message))) {
            Ok(outcome) => outcome,
            Err(_) => {
                error!(
                    partition = message.partition,
                    offset = message.offset,
                    "event handler panicked; sending the message to the dead-letter topic"
                );
                HandleOutcome::DeadLetter {
                    reason_code: "handler_panic",
                    reason: "the event handler panicked on this message".to_owned(),
                }
            }
        }
    }

    /// Calls `send` until it succeeds, with capped exponential backoff between attempts.
    /// Never gives up on its own, because skipping the message would lose it.
    ///
    /// The loop does not poll the consumer meanwhile. After `max.poll.interval.ms` (librdkafka
    /// default 300 s) the consumer leaves the group, storing the offset then fails, and the
    /// partition's next owner receives the message again.
    async fn send_until_acked<F, Fut>(
        &self,
        shutdown: &mut watch::Receiver<bool>,
        mut send: F,
    ) -> Result<(), Stopped>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<(), KafkaError>>,
    {
        let mut backoff = Backoff::new(self.config.retry_backoff_max());
        loop {
            let result = tokio::select! {
                biased;
                () = wait_for_shutdown(shutdown) => return Err(Stopped),
                result = send() => result,
            };
            match result {
                Ok(()) => return Ok(()),
                Err(failure) => self.producer.record_retry(&failure),
            }
            if sleep_or_shutdown(backoff.next_delay(), shutdown).await {
                return Err(Stopped);
            }
        }
    }

    fn store_offset(&self, message: &BorrowedMessage<'_>) {
        let Err(error) = self.consumer.store_offset_from_message(message) else {
            return;
        };
        // Fails when the partition was revoked during processing. Its next owner then
        // receives the message again, because the offset was not committed.
        self.metrics.count_error("consumer", &error);
        if let Some(suppressed) = self.store_throttle.allow() {
            warn!(
                partition = message.partition(),
                offset = message.offset(),
                %error,
                suppressed,
                "failed to store offset; the message will be processed again"
            );
        }
    }

    fn record_dead_letter(&self, message: &InboundMessage<'_>, reason_code: &str) {
        self.metrics
            .dead_letters
            .with_label_values(&[reason_code])
            .inc();
        if let Some(suppressed) = self.dead_letter_throttle.allow() {
            warn!(
                reason_code,
                partition = message.partition,
                offset = message.offset,
                suppressed,
                "message sent to dead-letter topic"
            );
        }
    }

    fn record_recv_error(&self, error: &ClientError) {
        self.metrics.count_error("consumer", error);
        if let Some(suppressed) = self.recv_throttle.allow() {
            let kind = error_kind(error);
            warn!(kind, %error, suppressed, "failed to receive message; retrying");
        }
    }
}
