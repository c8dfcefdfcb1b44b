//! Partition state across rebalances: which assigned partitions still need a restore, which
//! revoked ones are kept in memory in case they come back, and the restore itself.
//!
//! The consumer uses the eager rebalance protocol, where every rebalance revokes all
//! partitions and assigns them again. Dropping and restoring every partition each time would
//! make any rebalance as slow as a full restore, so a revoked partition's state is kept until
//! the next assignment. If the partition comes back and its changelog's end offset is still
//! the one this instance last wrote or read, no other instance touched it and the kept state
//! is current. Otherwise it is restored from the changelog.
//!
//! Restores run on blocking threads, up to one per core (at most [`MAX_PARALLEL_RESTORES`]).
//! When the consumer loop requests the first full restore of an assignment, the other assigned
//! partitions that need one start in the free slots too, so that several changelog partitions
//! are read and decoded at once. The loop still takes each restore in its own order.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError as ClientError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::Notify;
use tracing::{debug, info, warn};

use crate::cluster::Membership;
use crate::config::KafkaConfig;
use crate::context::ReaderClientContext;

/// A consumer that reads assigned partitions without joining a group.
type Reader = BaseConsumer<ReaderClientContext>;
use crate::error::KafkaError;
use crate::handler::{EventHandler, RestoreTotals};

/// Timeout of one metadata or watermark request.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Timeout of one poll while reading a changelog partition.
const POLL_TIMEOUT: Duration = Duration::from_millis(500);

/// Polls in a row without a message after which a restore stops waiting for the end of the
/// partition.
const MAX_IDLE_POLLS: u32 = 60;

/// Maximum partition restores running at once, whatever the core count. Each one keeps a
/// changelog reader open and grows the engine's memory as fast as it can.
const MAX_PARALLEL_RESTORES: usize = 4;

/// Shared by the consumer's rebalance callbacks and its loop.
pub(crate) struct Partitions {
    handler: Arc<dyn EventHandler>,
    membership: Membership,
    state: Mutex<State>,
    restores: Arc<Restores>,
    /// Woken when partitions were assigned.
    pub(crate) assigned: Notify,
}

#[derive(Default)]
struct State {
    /// Assigned partitions that are not restored yet.
    pending: BTreeSet<i32>,
    /// Revoked partitions whose state is still in memory, with the changelog end offset it
    /// matches.
    retained: BTreeMap<i32, i64>,
    /// Changelog end offset that the in-memory state of each partition matches.
    changelog_end: BTreeMap<i32, i64>,
}

/// Partition restores, each on a blocking thread, started for the consumer loop or ahead of
/// its request.
struct Restores {
    handler: Arc<dyn EventHandler>,
    /// Restores that may run at once.
    slots: usize,
    queue: Mutex<RestoreQueue>,
    /// Notified whenever a restore completes.
    completed: Condvar,
}

#[derive(Default)]
struct RestoreQueue {
    /// Settings of the latest request, used for the restores started ahead.
    config: Option<KafkaConfig>,
    jobs: BTreeMap<i32, Job>,
    /// Set at shutdown, after which no restore starts.
    closed: bool,
}

/// One partition restore.
enum Job {
    /// Waits for a free slot.
    Queued,
    /// Reads the changelog. Setting the flag stops it, and what it restored is dropped.
    Running(Arc<AtomicBool>),
    /// Completed and not yet taken by the consumer loop, with the restore totals and the end
    /// offset read up to.
    Done(Result<(RestoreTotals, i64), KafkaError>),
}

/// Action the loop takes for an assigned partition.
pub(crate) enum Plan {
    /// Read the changelog.
    Restore,
    /// The kept state is current if the changelog still ends at this offset.
    KeepIfEnd(i64),
}

// === impl Partitions ===

impl Partitions {
    pub(crate) fn new(handler: Arc<dyn EventHandler>, membership: Membership) -> Self {
        Self {
            restores: Arc::new(Restores::new(handler.clone())),
            handler,
            membership,
            state: Mutex::new(State::default()),
            assigned: Notify::new(),
        }
    }

    pub(crate) fn membership(&self) -> &Membership {
        &self.membership
    }

    /// Rebalance callback: partitions were revoked. They stop being served at once; their
    /// state stays until the next assignment shows whether they come back.
    pub(crate) fn revoked(&self, partitions: &[i32]) {
        for &partition in partitions {
            self.restores.cancel(partition);
        }
        let mut state = self.state.lock();
        for &partition in partitions {
            self.membership.set_released(partition);
            state.pending.remove(&partition);
            if let Some(end) = state.changelog_end.remove(&partition) {
                state.retained.insert(partition, end);
            }
        }
    }

    /// Rebalance callback: partitions were assigned. Kept partitions that did not come back
    /// are dropped now; the assigned ones wait for [`Partitions::next_pending`].
    pub(crate) fn assigned(&self, partitions: &[i32]) {
        let moved: Vec<i32> = {
            let mut state = self.state.lock();
            state.pending.extend(partitions.iter().copied());
            let moved: Vec<i32> = state
                .retained
                .keys()
                .copied()
                .filter(|partition| !partitions.contains(partition))
                .collect();
            for partition in &moved {
                state.retained.remove(partition);
            }
            moved
        };
        self.restores.reset(partitions);
        for partition in moved {
            self.handler.release_partition(partition);
            info!(
                partition,
                "dropped the state of a partition assigned elsewhere"
            );
        }
        self.assigned.notify_one();
    }

    /// Returns whether `partition` is assigned and still waits for its restore.
    pub(crate) fn is_pending(&self, partition: i32) -> bool {
        self.state.lock().pending.contains(&partition)
    }

    /// Returns the next partition to restore and what to do with it.
    pub(crate) fn next_pending(&self) -> Option<(i32, Plan)> {
        let state = self.state.lock();
        let partition = *state.pending.first()?;
        let plan = match state.retained.get(&partition) {
            Some(end) => Plan::KeepIfEnd(*end),
            None => Plan::Restore,
        };
        Some((partition, plan))
    }

    /// Marks `partition` as restored (or its kept state as current) up to changelog end
    /// offset `end`, and starts serving it.
    pub(crate) fn ready(&self, partition: i32, end: i64) {
        let mut state = self.state.lock();
        state.pending.remove(&partition);
        state.retained.remove(&partition);
        state.changelog_end.insert(partition, end);
        self.membership.set_ready(partition);
    }

    /// Records that the changelog of `partition` now ends after `offset`, written by us.
    pub(crate) fn wrote(&self, partition: i32, offset: i64) {
        let mut state = self.state.lock();
        if let Some(end) = state.changelog_end.get_mut(&partition) {
            *end = (*end).max(offset + 1);
        }
    }

    /// Drops kept state of `partition` before a full restore.
    pub(crate) fn drop_retained(&self, partition: i32) {
        self.state.lock().retained.remove(&partition);
        self.handler.release_partition(partition);
    }

    /// Releases every partition, at shutdown.
    pub(crate) fn release_all(&self) {
        let partitions: Vec<i32> = {
            let mut state = self.state.lock();
            let mut all: BTreeSet<i32> = state.changelog_end.keys().copied().collect();
            all.extend(state.retained.keys().copied());
            *state = State::default();
            all.into_iter().collect()
        };
        self.restores.cancel_all();
        for partition in partitions {
            self.membership.set_released(partition);
        }
    }

    /// Reads partition `partition` of the changelog topic into the handler, and starts the
    /// other assigned partitions that need a full restore in free slots. Blocking: run it on a
    /// blocking thread. Returns the totals and the end offset read up to.
    pub(crate) fn restore(
        &self,
        config: &KafkaConfig,
        partition: i32,
    ) -> Result<(RestoreTotals, i64), KafkaError> {
        let ahead: Vec<i32> = {
            let state = self.state.lock();
            state
                .pending
                .iter()
                .copied()
                .filter(|other| *other != partition && !state.retained.contains_key(other))
                .collect()
        };
        self.restores.take(config, partition, &ahead)
    }

    /// Returns the current end offset of partition `partition` of the changelog. Blocking.
    pub(crate) fn changelog_end(config: &KafkaConfig, partition: i32) -> Result<i64, KafkaError> {
        let failed = changelog_error(config, partition);
        let reader = open_reader(config, "stepup-restore").map_err(&failed)?;
        let (_, high) = reader
            .fetch_watermarks(&config.changelog_topic, partition, REQUEST_TIMEOUT)
            .map_err(failed)?;
        Ok(high)
    }
}

// === impl Restores ===

impl Restores {
    fn new(handler: Arc<dyn EventHandler>) -> Self {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        Self {
            handler,
            slots: cores.clamp(1, MAX_PARALLEL_RESTORES),
            queue: Mutex::new(RestoreQueue::default()),
            completed: Condvar::new(),
        }
    }

    /// Returns the restore of `partition`: the result of a restore started ahead, or of one
    /// run now on the calling thread. Queues `ahead`, the partitions to restore next, and
    /// starts them in free slots. Blocking.
    fn take(
        self: &Arc<Self>,
        config: &KafkaConfig,
        partition: i32,
        ahead: &[i32],
    ) -> Result<(RestoreTotals, i64), KafkaError> {
        let mut queue = self.queue.lock();
        if queue.closed {
            return Err(cancelled(config, partition));
        }
        queue.config = Some(config.clone());
        for &other in ahead {
            queue.jobs.entry(other).or_insert(Job::Queued);
        }
        let mut waited = false;
        loop {
            match queue.jobs.remove(&partition) {
                Some(Job::Done(result)) => {
                    self.start_queued(&mut queue);
                    return result;
                }
                Some(job @ Job::Running(_)) => {
                    queue.jobs.insert(partition, job);
                    self.completed.wait(&mut queue);
                    waited = true;
                }
                // The restore waited for was cancelled, and its result dropped with it.
                None if waited => return Err(cancelled(config, partition)),
                Some(Job::Queued) | None => break,
            }
        }
        drop(queue);
        self.run_here(config, partition)
    }

    /// Restores `partition` on the calling thread, with restores started ahead in the other
    /// slots.
    fn run_here(
        self: &Arc<Self>,
        config: &KafkaConfig,
        partition: i32,
    ) -> Result<(RestoreTotals, i64), KafkaError> {
        let cancel = Arc::new(AtomicBool::new(false));
        {
            let mut queue = self.queue.lock();
            queue.jobs.insert(partition, Job::Running(cancel.clone()));
            self.start_queued(&mut queue);
        }
        let result = restore_partition(self.handler.as_ref(), config, partition, &cancel);
        let mut queue = self.queue.lock();
        queue.jobs.remove(&partition);
        let result = self.settle(config, partition, result, &cancel);
        self.start_queued(&mut queue);
        self.completed.notify_all();
        result
    }

    /// Starts queued restores, lowest partition first, while slots are free. Outside a Tokio
    /// runtime it starts none, and the loop restores those partitions when it requests them.
    fn start_queued(self: &Arc<Self>, queue: &mut RestoreQueue) {
        let (Some(config), Ok(runtime)) = (&queue.config, tokio::runtime::Handle::try_current())
        else {
            return;
        };
        if queue.closed {
            return;
        }
        let config = config.clone();
        let running = |jobs: &BTreeMap<i32, Job>| {
            jobs.values()
                .filter(|job| matches!(job, Job::Running(_)))
                .count()
        };
        while running(&queue.jobs) < self.slots {
            let next = queue
                .jobs
                .iter()
                .find(|(_, job)| matches!(job, Job::Queued))
                .map(|(partition, _)| *partition);
            let Some(partition) = next else {
                return;
            };
            let cancel = Arc::new(AtomicBool::new(false));
            queue.jobs.insert(partition, Job::Running(cancel.clone()));
            debug!(partition, "restoring partition ahead of its turn");
            let restores = Arc::clone(self);
            let config = config.clone();
            runtime.spawn_blocking(move || {
                let result =
                    restore_partition(restores.handler.as_ref(), &config, partition, &cancel);
                restores.complete(&config, partition, result, &cancel);
            });
        }
    }

    /// Stores the result of a restore started ahead, for the loop to take.
    fn complete(
        self: &Arc<Self>,
        config: &KafkaConfig,
        partition: i32,
        result: Result<(RestoreTotals, i64), KafkaError>,
        cancel: &AtomicBool,
    ) {
        let mut queue = self.queue.lock();
        let result = self.settle(config, partition, result, cancel);
        queue.jobs.insert(partition, Job::Done(result));
        self.start_queued(&mut queue);
        self.completed.notify_all();
    }

    /// Returns `result`, or an error if the restore was cancelled meanwhile, after dropping
    /// whatever it restored. Called with the queue locked, so that no new restore of the
    /// partition starts before the drop.
    fn settle(
        &self,
        config: &KafkaConfig,
        partition: i32,
        result: Result<(RestoreTotals, i64), KafkaError>,
        cancel: &AtomicBool,
    ) -> Result<(RestoreTotals, i64), KafkaError> {
        if !cancel.load(Ordering::Acquire) {
            return result;
        }
        self.handler.release_partition(partition);
        Err(cancelled(config, partition))
    }

    /// Cancels the restore of `partition`. A queued restore is dropped, a running one gets its
    /// cancel flag set, and the state of a completed one is released.
    fn cancel(&self, partition: i32) {
        let mut queue = self.queue.lock();
        match queue.jobs.remove(&partition) {
            Some(Job::Running(cancel)) => {
                cancel.store(true, Ordering::Release);
                queue.jobs.insert(partition, Job::Running(cancel));
            }
            Some(Job::Done(_)) => self.handler.release_partition(partition),
            Some(Job::Queued) | None => {}
        }
    }

    /// Cancels the restores of partitions outside `assigned`, and completed restores whose
    /// result the loop did not take, at a new assignment.
    fn reset(&self, assigned: &[i32]) {
        let partitions: Vec<i32> = self.queue.lock().jobs.keys().copied().collect();
        for partition in partitions {
            let done = matches!(self.queue.lock().jobs.get(&partition), Some(Job::Done(_)));
            if done || !assigned.contains(&partition) {
                self.cancel(partition);
            }
        }
    }

    /// Cancels every restore and starts no more, at shutdown.
    fn cancel_all(&self) {
        let partitions: Vec<i32> = {
            let mut queue = self.queue.lock();
            queue.closed = true;
            queue.jobs.keys().copied().collect()
        };
        for partition in partitions {
            self.cancel(partition);
        }
    }
}

/// Returns the error of a restore of `partition` that was cancelled, because the partition
/// was revoked or the consumer stopped, as librdkafka's `Canceled` error.
fn cancelled(config: &KafkaConfig, partition: i32) -> KafkaError {
    changelog_error(config, partition)(ClientError::Canceled)
}

/// Reads partition `partition` of the changelog topic into `handler`. Returns the totals and
/// the end offset read up to. Stops early, without finishing the restore, once `cancel` is
/// set.
fn restore_partition(
    handler: &dyn EventHandler,
    config: &KafkaConfig,
    partition: i32,
    cancel: &AtomicBool,
) -> Result<(RestoreTotals, i64), KafkaError> {
    let started = Instant::now();
    let failed = changelog_error(config, partition);
    let reader = open_reader(config, "stepup-restore").map_err(&failed)?;
    let (high, assigned) =
        assign_from_start(&reader, &config.changelog_topic, partition).map_err(&failed)?;
    let Some(mut sink) = handler.begin_restore(partition) else {
        return Ok((RestoreTotals::default(), high));
    };
    if assigned {
        read_to_end(&reader, high, cancel, |key, value| sink.apply(key, value)).map_err(&failed)?;
    }
    if cancel.load(Ordering::Acquire) {
        return Err(failed(ClientError::Canceled));
    }
    let totals = sink.finish();
    info!(
        partition,
        records = totals.records,
        restored = totals.restored,
        invalid = totals.invalid,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "partition restored from the changelog"
    );
    if totals.invalid > 0 {
        warn!(
            partition,
            invalid = totals.invalid,
            "skipped unreadable changelog records"
        );
    }
    Ok((totals, high))
}

/// Polls `reader` until the end of its partition or until `cancel` is set, calling `apply`
/// with each record's key and value. Records without a UTF-8 key are skipped.
///
/// The end is the partition-end event librdkafka raises after the last record the broker
/// returned, not the end offset read before. A broker may report an end offset that stops
/// short of the last record batch (tansu 0.6 does), and stopping there would restore stale
/// states. The end offset only shows whether there is anything to read.
fn read_to_end(
    reader: &Reader,
    end: i64,
    cancel: &AtomicBool,
    mut apply: impl FnMut(&str, Option<&[u8]>),
) -> Result<(), ClientError> {
    let mut idle = 0;
    let mut last = None;
    while !cancel.load(Ordering::Relaxed) {
        match reader.poll(POLL_TIMEOUT) {
            Some(Ok(message)) => {
                idle = 0;
                last = Some(message.offset());
                if let Some(Ok(key)) = message.key().map(std::str::from_utf8) {
                    apply(key, message.payload());
                }
            }
            Some(Err(ClientError::PartitionEOF(_))) => return Ok(()),
            Some(Err(error)) => return Err(error),
            None => {
                idle += 1;
                if idle >= MAX_IDLE_POLLS {
                    warn!(
                        end,
                        ?last,
                        "no end of partition reported; restored what was read"
                    );
                    return Ok(());
                }
            }
        }
    }
    Ok(())
}

/// Polls `reader` until the end of its partition; see [`read_to_end`].
fn read_until(
    reader: &Reader,
    end: i64,
    apply: impl FnMut(&str, Option<&[u8]>),
) -> Result<(), ClientError> {
    read_to_end(reader, end, &AtomicBool::new(false), apply)
}

/// Returns a function that wraps a client error as a failed read of `partition` of the
/// changelog topic (-1 for the topic as a whole).
fn changelog_error(config: &KafkaConfig, partition: i32) -> impl Fn(ClientError) -> KafkaError {
    let topic = config.changelog_topic.clone();
    move |source| KafkaError::Restore {
        topic: topic.clone(),
        partition,
        source,
    }
}

/// Creates a consumer that reads assigned partitions without joining the group.
fn open_reader(config: &KafkaConfig, client_id: &str) -> Result<Reader, ClientError> {
    config
        .reader_client_config(client_id)
        .create_with_context(ReaderClientContext)
}

/// Returns the partition count of `topic`, 0 if it does not exist.
fn partition_count(reader: &Reader, topic: &str) -> Result<i32, ClientError> {
    let metadata = reader.fetch_metadata(Some(topic), REQUEST_TIMEOUT)?;
    Ok(metadata
        .topics()
        .iter()
        .find(|found| found.name() == topic && found.error().is_none())
        .map_or(0, |found| found.partitions().len() as i32))
}

/// Reads the end offset of `partition` of `topic` and, unless the partition is empty, assigns
/// it to `reader` from the beginning. Returns the end offset and whether it was assigned.
fn assign_from_start(
    reader: &Reader,
    topic: &str,
    partition: i32,
) -> Result<(i64, bool), ClientError> {
    let (low, high) = reader.fetch_watermarks(topic, partition, REQUEST_TIMEOUT)?;
    if high <= low {
        return Ok((high, false));
    }
    let mut list = TopicPartitionList::new();
    list.add_partition_offset(topic, partition, Offset::Beginning)?;
    reader.assign(&list)?;
    Ok((high, true))
}

/// Reads the partition counts of the events and changelog topics and checks that they match.
/// Blocking. Returns the events topic's partition count.
pub(crate) fn check_topics(config: &KafkaConfig) -> Result<i32, KafkaError> {
    let failed = changelog_error(config, -1);
    let reader = open_reader(config, "stepup-metadata").map_err(&failed)?;
    let events = partition_count(&reader, &config.events_topic).map_err(&failed)?;
    let changelog = partition_count(&reader, &config.changelog_topic).map_err(&failed)?;
    if events == 0 || changelog != events {
        return Err(KafkaError::ChangelogPartitions {
            changelog: config.changelog_topic.clone(),
            changelog_partitions: changelog,
            events: config.events_topic.clone(),
            events_partitions: events,
        });
    }
    Ok(events)
}

/// Reads every partition of the changelog topic from the beginning to its end, calling `apply`
/// with each record's partition, key and value (`None` for a tombstone). Blocking. Returns
/// the number of records read.
pub fn read_changelog(
    config: &KafkaConfig,
    mut apply: impl FnMut(i32, &str, Option<&[u8]>),
) -> Result<u64, KafkaError> {
    let topic = config.changelog_topic.as_str();
    let reader = open_reader(config, "stepup-export").map_err(changelog_error(config, -1))?;
    let partitions = partition_count(&reader, topic).map_err(changelog_error(config, -1))?;
    let mut records = 0;
    for partition in 0..partitions {
        let failed = changelog_error(config, partition);
        let (high, assigned) = assign_from_start(&reader, topic, partition).map_err(&failed)?;
        if !assigned {
            continue;
        }
        read_until(&reader, high, |key, value| {
            records += 1;
            apply(partition, key, value);
        })
        .map_err(failed)?;
    }
    Ok(records)
}
