//! Durable user state: the bytes written to the profile changelog, restore of a partition
//! from them, and the release of a partition an instance no longer owns.
//!
//! A changelog value is one format byte followed by the [`UserState`] in postcard, a compact
//! serde encoding. A tombstone (no value) deletes the user.

use std::collections::HashMap;

use crate::engine::{Engine, gauge_value};
use crate::partition::PartitionState;
use crate::state::UserState;

/// Format byte of changelog values written by this version.
pub const STATE_FORMAT: u8 = 1;

/// A changelog value that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The value is empty.
    #[error("the user state is empty; a deleted user needs a tombstone (a message without value)")]
    Empty,
    /// The value was written by a newer or unknown version.
    #[error(
        "the user state has format {found}, this version reads format {STATE_FORMAT}; \
         run a stepup version that writes format {found}"
    )]
    UnknownFormat {
        /// Format byte found.
        found: u8,
    },
    /// The value does not decode.
    #[error("failed to decode the user state: {0}")]
    Decode(#[from] postcard::Error),
}

/// Counts of one partition restore.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RestoreStats {
    /// Changelog records read, tombstones included.
    pub records: u64,
    /// Users restored.
    pub users: u64,
    /// Records that could not be decoded and were skipped.
    pub invalid: u64,
}

/// A partition being restored from its changelog. Records are applied in changelog order, so
/// a later record of a user replaces an earlier one and a tombstone deletes it. Nothing is
/// visible to the engine until [`PartitionRestore::finish`].
pub struct PartitionRestore<'a> {
    engine: &'a Engine,
    partition: i32,
    users: HashMap<String, UserState>,
    stats: RestoreStats,
}

/// Encodes a user state as a changelog value.
pub fn encode_state(state: &UserState) -> Vec<u8> {
    let bytes = vec![STATE_FORMAT];
    match postcard::to_extend(state, bytes) {
        Ok(encoded) => encoded,
        // Postcard fails only on types it cannot represent (maps with unknown length, for
        // example); `UserState` has none, and the round-trip test encodes every field.
        Err(_) => vec![STATE_FORMAT],
    }
}

/// Decodes a changelog value written by [`encode_state`].
pub fn decode_state(bytes: &[u8]) -> Result<UserState, StateError> {
    let (&format, body) = bytes.split_first().ok_or(StateError::Empty)?;
    if format != STATE_FORMAT {
        return Err(StateError::UnknownFormat { found: format });
    }
    Ok(postcard::from_bytes(body)?)
}

// === impl Engine ===

impl Engine {
    /// Returns the changelog value of the user's current state, if the engine has the user.
    pub fn state_record(&self, user_id: &str) -> Option<Vec<u8>> {
        self.users.get(user_id).map(|state| encode_state(&state))
    }

    /// Returns a copy of the user's whole state, if the engine has the user.
    pub fn user_state(&self, user_id: &str) -> Option<UserState> {
        self.users.get(user_id).map(|state| state.clone())
    }

    /// Returns every user's id and changelog value, sorted by user id: a snapshot of the
    /// engine's profiles.
    pub fn export_states(&self) -> Vec<(String, Vec<u8>)> {
        let mut states: Vec<(String, Vec<u8>)> = self
            .users
            .iter()
            .map(|entry| (entry.key().clone(), encode_state(entry.value())))
            .collect();
        states.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        states
    }

    /// Starts restoring `partition`. Restoring replaces what the engine holds for the
    /// partition when it finishes.
    pub fn restore(&self, partition: i32) -> PartitionRestore<'_> {
        PartitionRestore {
            engine: self,
            partition,
            users: HashMap::new(),
            stats: RestoreStats::default(),
        }
    }

    /// Drops the users and shared state of `partition`, after the partition was revoked.
    /// Returns the number of users dropped.
    pub fn drop_partition(&self, partition: i32) -> usize {
        let before = self.users.len();
        self.users.retain(|_, state| state.partition != partition);
        self.partitions.remove(&partition);
        let dropped = before.saturating_sub(self.users.len());
        self.metrics.profiles.set(gauge_value(self.users.len()));
        self.metrics
            .tracked_ips
            .set(gauge_value(self.tracked_ips()));
        dropped
    }
}

// === impl PartitionRestore ===

impl PartitionRestore<'_> {
    /// Applies one changelog record: a value sets the user's state, `None` (a tombstone)
    /// deletes it. An undecodable value is counted and skipped, keeping the user's earlier
    /// state, and its error is returned for logging.
    pub fn apply(&mut self, user_id: &str, value: Option<&[u8]>) -> Result<(), StateError> {
        self.stats.records += 1;
        let Some(value) = value else {
            self.users.remove(user_id);
            return Ok(());
        };
        match decode_state(value) {
            Ok(mut state) => {
                state.partition = self.partition;
                self.users.insert(user_id.to_owned(), state);
                Ok(())
            }
            Err(error) => {
                self.stats.invalid += 1;
                Err(error)
            }
        }
    }

    /// Replaces the engine's state of the partition with the restored users and rebuilds the
    /// partition's population counts and IP activity from them.
    pub fn finish(self) -> RestoreStats {
        let engine = self.engine;
        engine.drop_partition(self.partition);
        let part = PartitionState::new(
            &engine.config.signals,
            engine.config.risk.max_values_per_feature,
        );
        part.rebuild(self.users.iter().map(|(id, state)| (id.as_str(), state)));
        engine
            .partitions
            .insert(self.partition, std::sync::Arc::new(part));
        let mut stats = self.stats;
        stats.users = self.users.len() as u64;
        for (user_id, state) in self.users {
            engine.users.insert(user_id, state);
        }
        engine.metrics.profiles.set(gauge_value(engine.users.len()));
        engine
            .metrics
            .tracked_ips
            .set(gauge_value(engine.tracked_ips()));
        stats
    }
}
