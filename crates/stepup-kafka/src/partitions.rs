//! Partition state across rebalances: which assigned partitions still need a restore, which
//! revoked ones are kept in memory in case they come back, and the restore itself.
//!
//! The consumer uses the eager rebalance protocol, where every rebalance revokes all
//! partitions and assigns them again. Dropping and restoring every partition each time would
//! make any rebalance as slow as a full restore, so a revoked partition's state is kept until
//! the next assignment. If the partition comes back and its changelog's end offset is still
//! the one this instance last wrote or read, no other instance touched it and the kept state
//! is current. Otherwise it is restored from the changelog.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError as ClientError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::Notify;
use tracing::{info, warn};

use crate::cluster::Membership;
use crate::config::KafkaConfig;
use crate::error::KafkaError;
use crate::handler::{EventHandler, RestoreTotals};

/// Timeout of one metadata or watermark request.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Timeout of one poll while reading a changelog partition.
const POLL_TIMEOUT: Duration = Duration::from_millis(500);

/// Polls in a row without a message after which a restore stops waiting for the end of the
/// partition.
const MAX_IDLE_POLLS: u32 = 60;

/// Shared by the consumer's rebalance callbacks and its loop.
pub(crate) struct Partitions {
    handler: Arc<dyn EventHandler>,
    membership: Membership,
    state: Mutex<State>,
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
        for partition in partitions {
            self.membership.set_released(partition);
        }
    }

    /// Reads partition `partition` of the changelog topic into the handler. Blocking: run it
    /// on a blocking thread. Returns the totals and the end offset read up to.
    pub(crate) fn restore(
        &self,
        config: &KafkaConfig,
        partition: i32,
    ) -> Result<(RestoreTotals, i64), KafkaError> {
        let started = Instant::now();
        let topic = config.changelog_topic.as_str();
        let failed = |source: ClientError| KafkaError::Restore {
            topic: topic.to_owned(),
            partition,
            source,
        };
        let reader: BaseConsumer = config
            .reader_client_config("stepup-restore")
            .create()
            .map_err(failed)?;
        let (low, high) = reader
            .fetch_watermarks(topic, partition, REQUEST_TIMEOUT)
            .map_err(failed)?;
        let Some(mut sink) = self.handler.begin_restore(partition) else {
            return Ok((RestoreTotals::default(), high));
        };
        if high > low {
            let mut list = TopicPartitionList::new();
            list.add_partition_offset(topic, partition, Offset::Beginning)
                .map_err(failed)?;
            reader.assign(&list).map_err(failed)?;
            read_until(&reader, high, |key, value| sink.apply(key, value)).map_err(failed)?;
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

    /// Returns the current end offset of partition `partition` of the changelog. Blocking.
    pub(crate) fn changelog_end(config: &KafkaConfig, partition: i32) -> Result<i64, KafkaError> {
        let topic = config.changelog_topic.as_str();
        let failed = |source: ClientError| KafkaError::Restore {
            topic: topic.to_owned(),
            partition,
            source,
        };
        let reader: BaseConsumer = config
            .reader_client_config("stepup-restore")
            .create()
            .map_err(failed)?;
        let (_, high) = reader
            .fetch_watermarks(topic, partition, REQUEST_TIMEOUT)
            .map_err(failed)?;
        Ok(high)
    }
}

/// Polls `reader` until the end of its partition, calling `apply` with each record's key and
/// value. Records without a UTF-8 key are skipped.
///
/// The end is the partition-end event librdkafka raises after the last record the broker
/// returned, not the end offset read before. A broker may report an end offset that stops
/// short of the last record batch (tansu 0.6 does), and stopping there would restore stale
/// states. The end offset only tells whether there is anything to read.
fn read_until(
    reader: &BaseConsumer,
    end: i64,
    mut apply: impl FnMut(&str, Option<&[u8]>),
) -> Result<(), ClientError> {
    let mut idle = 0;
    let mut last = None;
    loop {
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
}

/// Reads the partition counts of the events and changelog topics and checks that they match.
/// Blocking. Returns the events topic's partition count.
pub(crate) fn check_topics(config: &KafkaConfig) -> Result<i32, KafkaError> {
    let failed = |source: ClientError| KafkaError::Restore {
        topic: config.changelog_topic.clone(),
        partition: -1,
        source,
    };
    let reader: BaseConsumer = config
        .reader_client_config("stepup-metadata")
        .create()
        .map_err(failed)?;
    let count = |topic: &str| -> Result<i32, KafkaError> {
        let metadata = reader
            .fetch_metadata(Some(topic), REQUEST_TIMEOUT)
            .map_err(failed)?;
        Ok(metadata
            .topics()
            .iter()
            .find(|found| found.name() == topic && found.error().is_none())
            .map_or(0, |found| found.partitions().len() as i32))
    };
    let events = count(&config.events_topic)?;
    let changelog = count(&config.changelog_topic)?;
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
    let failed = |partition: i32| {
        move |source: ClientError| KafkaError::Restore {
            topic: topic.to_owned(),
            partition,
            source,
        }
    };
    let reader: BaseConsumer = config
        .reader_client_config("stepup-export")
        .create()
        .map_err(failed(-1))?;
    let metadata = reader
        .fetch_metadata(Some(topic), REQUEST_TIMEOUT)
        .map_err(failed(-1))?;
    let partitions = metadata
        .topics()
        .iter()
        .find(|found| found.name() == topic && found.error().is_none())
        .map_or(0, |found| found.partitions().len() as i32);
    let mut records = 0;
    for partition in 0..partitions {
        let (low, high) = reader
            .fetch_watermarks(topic, partition, REQUEST_TIMEOUT)
            .map_err(failed(partition))?;
        if high <= low {
            continue;
        }
        let mut list = TopicPartitionList::new();
        list.add_partition_offset(topic, partition, Offset::Beginning)
            .map_err(failed(partition))?;
        reader.assign(&list).map_err(failed(partition))?;
        read_until(&reader, high, |key, value| {
            records += 1;
            apply(partition, key, value);
        })
        .map_err(failed(partition))?;
    }
    Ok(records)
}
