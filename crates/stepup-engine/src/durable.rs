//! Durable user state: the bytes written to the profile changelog, restore of a partition
//! from them, and the release of a partition an instance no longer owns.
//!
//! A changelog value is one format byte followed by the [`UserState`] in postcard, a compact
//! serde encoding. A tombstone (no value) deletes the user.

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

/// A partition being restored from its changelog. Records are applied in changelog order,
/// straight into the engine's user map, so a later record of a user replaces an earlier one
/// and a tombstone deletes it.
///
/// Until [`PartitionRestore::finish`] the partition's users are incomplete and its population
/// counts and IP activity are missing, so the caller must not serve the partition before then.
/// A restore dropped without `finish` leaves the users applied so far;
/// [`Engine::drop_partition`] removes them.
pub struct PartitionRestore<'a> {
    engine: &'a Engine,
    partition: i32,
    /// Users this restore added to the map, in the order added. A user deleted by a tombstone
    /// and added again appears twice.
    added: Vec<String>,
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

    /// Starts restoring `partition`: drops what the engine holds for the partition, then
    /// takes the restored users as they are applied.
    pub fn restore(&self, partition: i32) -> PartitionRestore<'_> {
        self.drop_partition(partition);
        PartitionRestore {
            engine: self,
            partition,
            added: Vec::new(),
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
        let partition = self.partition;
        let Some(value) = value else {
            self.engine
                .users
                .remove_if(user_id, |_, state| state.partition == partition);
            return Ok(());
        };
        match decode_state(value) {
            Ok(mut state) => {
                state.partition = partition;
                let previous = self.engine.users.insert(user_id.to_owned(), state);
                if previous.is_none() {
                    self.added.push(user_id.to_owned());
                }
                Ok(())
            }
            Err(error) => {
                self.stats.invalid += 1;
                Err(error)
            }
        }
    }

    /// Rebuilds the partition's population counts and IP activity from the restored users,
    /// which completes the partition.
    pub fn finish(mut self) -> RestoreStats {
        let engine = self.engine;
        self.added.sort_unstable();
        self.added.dedup();
        let part = PartitionState::new(
            &engine.config.signals,
            engine.config.risk.max_values_per_feature,
        );
        let users = part.rebuild(&engine.users, self.partition, &self.added);
        engine
            .partitions
            .insert(self.partition, std::sync::Arc::new(part));
        let mut stats = self.stats;
        stats.users = users;
        engine.metrics.profiles.set(gauge_value(engine.users.len()));
        engine
            .metrics
            .tracked_ips
            .set(gauge_value(engine.tracked_ips()));
        stats
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use stepup_events::Decision;

    use crate::tests_support::*;
    use crate::{Engine, Position, decode_state};

    const PARTITIONS: i32 = 3;

    /// Logs each of `users` users in a few times from two cities, user n in partition
    /// n % 3, and returns the engine.
    fn source(users: usize) -> Engine {
        let (engine, _) = engine();
        let mut offsets = [0_i64; PARTITIONS as usize];
        for round in 0..4_i64 {
            for index in 0..users {
                let user = format!("user-{index}");
                let partition = (index % PARTITIONS as usize) as i32;
                let ip = if (round + index as i64) % 3 == 0 {
                    MILTON_US
                } else {
                    LONDON
                };
                let id = format!("{user}-{round}");
                let minutes = round * 90 + index as i64;
                let events = [
                    attempt(&format!("{id}-a"), &user, minutes, ip, "laptop"),
                    result(
                        &format!("{id}-r"),
                        &user,
                        minutes,
                        &format!("{id}-a"),
                        round != 2,
                    ),
                ];
                for event in events {
                    let offset = &mut offsets[partition as usize];
                    *offset += 1;
                    let position = Position {
                        partition,
                        offset: Some(*offset),
                    };
                    engine.process_at(&event, position);
                }
            }
        }
        engine
    }

    /// Returns the changelog values of `engine`'s users in `partition`, by user id.
    fn values_of(engine: &Engine, partition: i32) -> Vec<(String, Vec<u8>)> {
        engine
            .export_states()
            .into_iter()
            .filter(|(_, bytes)| decode_state(bytes).unwrap().partition == partition)
            .collect()
    }

    fn restore_partition(from: &Engine, to: &Engine, partition: i32) -> u64 {
        let mut restore = to.restore(partition);
        for (user, bytes) in values_of(from, partition) {
            restore.apply(&user, Some(&bytes)).unwrap();
        }
        restore.finish().users
    }

    /// Decides one new attempt of a user of each partition, which depends on the partition's
    /// population counts and IP activity.
    fn probe(engine: &Engine) -> BTreeMap<String, Decision> {
        (0..PARTITIONS as usize)
            .map(|index| {
                let user = format!("user-{index}");
                let event = attempt("probe", &user, 600, MILTON_US, "phone");
                let partition = index as i32;
                let decision = engine.assess_in(&event, partition).unwrap();
                (user, (*decision).clone())
            })
            .collect()
    }

    #[test]
    fn restore_replaces_only_its_partition() {
        let from = source(9);
        let (to, _) = engine();
        for (user, partition) in [("stale", 0), ("other", 2)] {
            let event = attempt(&format!("{user}-a"), user, 0, LONDON, "laptop");
            to.process_at(
                &event,
                Position {
                    partition,
                    offset: Some(1),
                },
            );
        }
        let other = to.user_state("other");

        let restored = restore_partition(&from, &to, 0);

        assert_eq!(restored, 3);
        for (user, bytes) in values_of(&from, 0) {
            assert_eq!(to.user_state(&user), Some(decode_state(&bytes).unwrap()));
        }
        assert!(
            to.user_state("stale").is_none(),
            "partition 0 lost its stale user"
        );
        assert!(other.is_some());
        assert_eq!(to.user_state("other"), other, "partition 2 kept its user");
        assert_eq!(to.user_count(), 4);
    }

    #[test]
    fn parallel_restores_match_sequential_ones() {
        let from = source(30);
        let (sequential, _) = engine();
        for partition in 0..PARTITIONS {
            restore_partition(&from, &sequential, partition);
        }
        let (parallel, _) = engine();
        std::thread::scope(|scope| {
            for partition in 0..PARTITIONS {
                let (from, to) = (&from, &parallel);
                scope.spawn(move || restore_partition(from, to, partition));
            }
        });

        assert_eq!(parallel.export_states(), from.export_states());
        assert_eq!(parallel.export_states(), sequential.export_states());
        assert_eq!(parallel.tracked_ips(), sequential.tracked_ips());
        assert_eq!(probe(&parallel), probe(&sequential));
        assert_eq!(probe(&parallel), probe(&from));
    }

    #[test]
    fn user_deleted_and_written_again_counts_once() {
        let from = source(3);
        let value = from.state_record("user-0").unwrap();
        let (to, _) = engine();
        let mut restore = to.restore(0);
        restore.apply("user-0", Some(&value)).unwrap();
        restore.apply("user-0", None).unwrap();
        restore.apply("user-0", Some(&value)).unwrap();
        let stats = restore.finish();

        assert_eq!((stats.records, stats.users, stats.invalid), (3, 1, 0));
        assert_eq!(to.user_state("user-0"), from.user_state("user-0"));
    }
}
