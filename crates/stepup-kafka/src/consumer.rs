//! Consumer-group loop on the events topic with at-least-once processing.
//!
//! librdkafka commits automatically, but only offsets the loop stored, and the loop stores an
//! offset only after the handler returned and any dead letter, decision and state change was
//! acknowledged. Nothing is committed before it is processed, and because the handler skips
//! events its restored state has applied already, redelivery changes nothing.
//!
//! On assignment the loop restores each partition's state from the changelog topic before it
//! hands the handler any event of that partition; see [`crate::partitions`].

use std::collections::BTreeMap;
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

use crate::cluster::Membership;
use crate::config::KafkaConfig;
use crate::context::ConsumerClientContext;
use crate::error::KafkaError;
use crate::handler::{EventHandler, HandleOutcome, InboundMessage};
use crate::metrics::{KafkaMetrics, error_kind};
use crate::partitions::{Partitions, Plan, check_topics};
use crate::producer::Producer;
use crate::retry::{Backoff, LOG_INTERVAL, LogThrottle, sleep_or_shutdown, wait_for_shutdown};

type EventConsumer = StreamConsumer<ConsumerClientContext>;
type RecvResult<'a> = Result<BorrowedMessage<'a>, ClientError>;

/// Maximum pause after a failed receive. librdkafka paces reconnection attempts itself. The
/// pause only guards against an error that repeats at once, and a longer one would delay the
/// first message after an outage.
const RECV_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Maximum wait in one `recv` call before the loop polls again. librdkafka wakes a waiting
/// `StreamConsumer` only when its queue turns from empty to non-empty, so a wakeup can be
/// missed when other events, such as statistics, sit in the queue. Polling again bounds the
/// delay of a missed wakeup.
const RECV_TICK: Duration = Duration::from_millis(250);

/// Errors taken one after the other without a pause before the loop pauses anyway.
const MAX_ERRORS_WITHOUT_PAUSE: u32 = 100;

/// Shutdown interrupted the processing of a message, so its offset was not stored.
struct Stopped;

/// Largest number of messages processed before their sends are awaited together.
const MAX_BATCH: usize = 500;

/// Sends and offsets that one batch of messages produced, in message order.
#[derive(Default)]
struct BatchWork<'b, 'm> {
    /// Every message that was handled, with the reason code if it is dead-lettered.
    processed: Vec<(&'b BorrowedMessage<'m>, Option<&'static str>)>,
    /// Decisions to publish: (user id, decision JSON).
    decisions: Vec<(String, Vec<u8>)>,
    /// Dead letters: (message, reason code, reason).
    dead_letters: Vec<(&'b BorrowedMessage<'m>, &'static str, String)>,
    /// The last state of each user: (partition, user id) to changelog value.
    states: BTreeMap<(i32, String), Vec<u8>>,
}

// === impl BatchWork ===

impl<'b, 'm> BatchWork<'b, 'm> {
    fn add(
        &mut self,
        message: &'b BorrowedMessage<'m>,
        outcome: HandleOutcome,
        producer: &Producer,
    ) {
        match outcome {
            HandleOutcome::Processed {
                decision,
                user_id,
                state,
            } => {
                if let Some(decision) = decision.filter(|_| producer.publishes_decisions()) {
                    self.decisions.push((user_id.clone(), decision));
                }
                if let Some(state) = state {
                    self.states.insert((message.partition(), user_id), state);
                }
                self.processed.push((message, None));
            }
            HandleOutcome::DeadLetter {
                reason_code,
                reason,
            } => {
                self.dead_letters.push((message, reason_code, reason));
                self.processed.push((message, Some(reason_code)));
            }
        }
    }
}

/// Consumes `events_topic` in group `group_id` until `shutdown` turns `true`, then commits the
/// stored offsets, leaves the group and returns.
///
/// Messages are processed one at a time in partition order. Messages without payload, larger
/// than `max_event_bytes` or dead-lettered by the handler go to the dead-letter topic. Broker
/// errors are logged, counted and retried with backoff, and they never end the loop. A dropped
/// `shutdown` sender counts as a shutdown request. A shutdown lets the message in flight finish
/// for up to `drain_timeout_ms`.
///
/// Partitions are restored from the changelog topic when assigned, and `membership` learns
/// which partitions this instance serves and the events topic's partition count.
///
/// Returns an error only for an invalid configuration, a changelog topic that does not match
/// the events topic, a failed subscription or a failed final commit.
#[instrument(skip_all, fields(topic = %config.events_topic, group = %config.group_id))]
pub async fn run_consumer(
    config: &KafkaConfig,
    handler: Arc<dyn EventHandler>,
    producer: Producer,
    metrics: KafkaMetrics,
    membership: Membership,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), KafkaError> {
    config.validate()?;
    let Some(count) = partition_count(config, &mut shutdown).await? else {
        return Ok(());
    };
    membership.set_partition_count(count);
    let partitions = Arc::new(Partitions::new(handler.clone(), membership));
    let consumer = create_consumer(config, &metrics, partitions.clone())?;
    info!(brokers = %config.brokers, partitions = count, "consumer started");

    let worker = Worker {
        config,
        handler: handler.as_ref(),
        producer: &producer,
        metrics: &metrics,
        consumer: &consumer,
        partitions: &partitions,
        recv_throttle: LogThrottle::new(LOG_INTERVAL),
        dead_letter_throttle: LogThrottle::new(LOG_INTERVAL),
        store_throttle: LogThrottle::new(LOG_INTERVAL),
    };
    worker.run(&mut shutdown).await;

    info!("consumer stopping");
    partitions.release_all();
    close_consumer(consumer, &config.group_id).await
}

/// Reads the events topic's partition count and checks the changelog topic against it,
/// retrying while the brokers are unreachable. Returns `None` on shutdown.
async fn partition_count(
    config: &KafkaConfig,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<Option<i32>, KafkaError> {
    let mut backoff = Backoff::new(config.retry_backoff_max());
    loop {
        let checking = config.clone();
        let checked = tokio::task::spawn_blocking(move || check_topics(&checking)).await;
        match checked {
            Ok(Ok(count)) => return Ok(Some(count)),
            Ok(Err(error @ KafkaError::ChangelogPartitions { .. })) => return Err(error),
            Ok(Err(error)) => warn!(%error, "failed to read topic metadata; retrying"),
            Err(join_error) => std::panic::resume_unwind(join_error.into_panic()),
        }
        if sleep_or_shutdown(backoff.next_delay(), shutdown).await {
            return Ok(None);
        }
    }
}

fn create_consumer(
    config: &KafkaConfig,
    metrics: &KafkaMetrics,
    partitions: Arc<Partitions>,
) -> Result<EventConsumer, KafkaError> {
    let context = ConsumerClientContext::new(metrics.clone(), config.events_topic.clone())
        .with_partitions(partitions);
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
    partitions: &'a Arc<Partitions>,
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
            while let Some((partition, plan)) = self.partitions.next_pending() {
                if self.restore(partition, plan, shutdown).await.is_err() {
                    return;
                }
            }
            let received = match ready.take() {
                Some(_) if *shutdown.borrow() => return,
                Some(received) => received,
                None => tokio::select! {
                    biased;
                    () = wait_for_shutdown(shutdown) => return,
                    () = self.partitions.assigned.notified() => continue,
                    received = tokio::time::timeout(RECV_TICK, self.consumer.recv()) => {
                        match received {
                            Ok(received) => received,
                            // Polls again: see `RECV_TICK`.
                            Err(_) => continue,
                        }
                    }
                },
            };
            match received {
                Ok(message) => {
                    backoff.reset();
                    errors_without_pause = 0;
                    let mut batch = vec![message];
                    while batch.len() < MAX_BATCH {
                        // `recv` is cancel safe: dropping it when it is not ready loses nothing.
                        match self.consumer.recv().now_or_never() {
                            Some(Ok(next)) => batch.push(next),
                            Some(Err(error)) => {
                                ready = Some(Err(error));
                                break;
                            }
                            None => break,
                        }
                    }
                    if self.process_batch(&batch, shutdown).await.is_err() {
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

    /// Restores `partition` from the changelog, or keeps its state if no other instance
    /// changed it since it was revoked, retrying while the brokers are unreachable.
    async fn restore(
        &self,
        partition: i32,
        plan: Plan,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<(), Stopped> {
        let mut backoff = Backoff::new(self.config.retry_backoff_max());
        loop {
            let config = self.config.clone();
            let partitions = self.partitions.clone();
            let keep_if = match plan {
                Plan::KeepIfEnd(end) => Some(end),
                Plan::Restore => None,
            };
            let restoring = tokio::task::spawn_blocking(move || {
                if let Some(kept_end) = keep_if {
                    let end = Partitions::changelog_end(&config, partition)?;
                    if end == kept_end {
                        return Ok(end);
                    }
                    partitions.drop_retained(partition);
                }
                partitions.restore(&config, partition).map(|(_, end)| end)
            });
            let result = tokio::select! {
                biased;
                () = wait_for_shutdown(shutdown) => return Err(Stopped),
                result = restoring => result,
            };
            match result {
                Ok(Ok(end)) => {
                    self.partitions.ready(partition, end);
                    return Ok(());
                }
                Ok(Err(error)) => {
                    self.metrics.count_error_kind("consumer", "restore");
                    warn!(partition, %error, "failed to restore partition; retrying");
                }
                Err(join_error) => std::panic::resume_unwind(join_error.into_panic()),
            }
            if sleep_or_shutdown(backoff.next_delay(), shutdown).await {
                return Err(Stopped);
            }
        }
    }

    /// Handles a batch of messages in order, then sends their dead letters, decisions and
    /// state changes concurrently, and stores their offsets once all are acknowledged.
    ///
    /// Only the last state of each user in the batch is written. It records the offset of the
    /// user's last event, so the earlier ones add nothing. Two writes of one key in flight at
    /// once could also land in the wrong order after a retry.
    async fn process_batch(
        &self,
        batch: &[BorrowedMessage<'_>],
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<(), Stopped> {
        let mut work = BatchWork::default();
        for message in batch {
            let inbound = InboundMessage::from_borrowed(message);
            let partition = inbound.partition;
            if self.partitions.is_pending(partition) {
                self.restore(partition, Plan::Restore, shutdown).await?;
            }
            if !self.partitions.membership().is_ready(partition) {
                // Fetched before the partition was revoked; its next owner processes it.
                trace!(
                    partition,
                    offset = inbound.offset,
                    "skipped message of a revoked partition"
                );
                continue;
            }
            work.add(message, self.outcome(&inbound), self.producer);
        }
        self.send_batch(&work, shutdown).await?;

        for (message, dead_letter) in &work.processed {
            if let Some(reason_code) = dead_letter {
                self.record_dead_letter(&InboundMessage::from_borrowed(message), reason_code);
            }
            self.store_offset(message);
        }
        trace!(messages = work.processed.len(), "batch processed");
        Ok(())
    }

    /// Sends everything a batch produced and waits until the broker acknowledged all of it.
    async fn send_batch(
        &self,
        work: &BatchWork<'_, '_>,
        shutdown: &watch::Receiver<bool>,
    ) -> Result<(), Stopped> {
        let producer = self.producer;
        let decisions = work.decisions.iter().map(|(user_id, decision)| {
            let send = move || producer.send_decision(user_id, decision);
            self.send_until_acked(shutdown.clone(), send)
        });
        let inbounds: Vec<InboundMessage<'_>> = work
            .dead_letters
            .iter()
            .map(|(message, _, _)| InboundMessage::from_borrowed(message))
            .collect();
        let dead_letters =
            work.dead_letters
                .iter()
                .zip(&inbounds)
                .map(|((_, reason_code, reason), inbound)| {
                    let send = move || producer.send_dead_letter(inbound, reason_code, reason);
                    self.send_until_acked(shutdown.clone(), send)
                });
        let states = work.states.iter().map(|((partition, user_id), state)| {
            let partition = *partition;
            let send = move || producer.send_state(partition, user_id, state);
            async move {
                let offset = self.send_until_acked(shutdown.clone(), send).await?;
                self.partitions.wrote(partition, offset);
                Ok::<(), Stopped>(())
            }
        });
        let (decisions, dead_letters, states) = futures::join!(
            futures::future::try_join_all(decisions),
            futures::future::try_join_all(dead_letters),
            futures::future::try_join_all(states),
        );
        decisions?;
        dead_letters?;
        states?;
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
    /// Never gives up on its own, because skipping the message would lose it. After a
    /// shutdown request it keeps trying for `drain_timeout_ms`.
    ///
    /// The loop does not poll the consumer meanwhile. After `max.poll.interval.ms` (librdkafka
    /// default 300 s) the consumer leaves the group, storing the offset then fails, and the
    /// partition's next owner receives the message again.
    async fn send_until_acked<F, Fut, T>(
        &self,
        mut shutdown: watch::Receiver<bool>,
        mut send: F,
    ) -> Result<T, Stopped>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, KafkaError>>,
    {
        let mut backoff = Backoff::new(self.config.retry_backoff_max());
        let drain = self.config.drain_timeout();
        let drained = async {
            wait_for_shutdown(&mut shutdown).await;
            tokio::time::sleep(drain).await;
        };
        tokio::pin!(drained);
        loop {
            let result = tokio::select! {
                biased;
                () = &mut drained => return Err(Stopped),
                result = send() => result,
            };
            match result {
                Ok(value) => return Ok(value),
                Err(failure) => self.producer.record_retry(&failure),
            }
            tokio::select! {
                biased;
                () = &mut drained => return Err(Stopped),
                () = tokio::time::sleep(backoff.next_delay()) => {}
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
