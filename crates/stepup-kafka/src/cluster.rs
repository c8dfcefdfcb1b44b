//! Partition ownership of the events topic, learnt through Kafka, so that
//! any instance can route a gRPC call to the instance that has the user's state.
//!
//! Each instance publishes a [`Claim`] to the single-partition instances topic, keyed by its
//! instance id: its gRPC address and the partitions it has restored and serves. Every
//! instance reads the whole topic and keeps the latest claim per instance. When two claims
//! name one partition (during a rebalance the old owner may not have withdrawn yet), the one
//! at the higher offset wins, which needs no synchronized clocks. A clean shutdown deletes
//! the instance's claim with a tombstone.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

/// Announcement of one instance on the instances topic.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claim {
    /// Id of the instance, the message key.
    pub instance_id: String,
    /// Address other instances reach its gRPC server at, `host:port`.
    pub grpc_address: String,
    /// Partitions of the events topic it owns and has restored, ascending.
    pub partitions: Vec<i32>,
    /// Partition count of the events topic as the instance saw it.
    pub partition_count: i32,
}

/// Another instance, as its claim describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    /// Instance id.
    pub instance_id: String,
    /// gRPC address, `host:port`.
    pub grpc_address: String,
}

/// Destination of a call about one user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// This instance owns the user's partition, or no other instance claims it.
    Local {
        /// The user's partition, if the partition count is known.
        partition: Option<i32>,
    },
    /// Another instance owns the user's partition.
    Remote {
        /// The user's partition.
        partition: i32,
        /// The owner.
        peer: Peer,
    },
}

/// Mapping from a user id to a partition, named like librdkafka's `partitioner`
/// property. Routing a call to the owner of a user must use the same mapping.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KeyPartitioner {
    /// `murmur2` or `murmur2_random`: the Java client's default, and stepup's producer's.
    #[default]
    Murmur2,
    /// `consistent` or `consistent_random`: CRC-32 of the key, librdkafka's default.
    Crc32,
    /// `fnv1a` or `fnv1a_random`: 32-bit FNV-1a of the key.
    Fnv1a,
}

// === impl KeyPartitioner ===

impl KeyPartitioner {
    /// Returns the partitioner of a librdkafka `partitioner` value, or `None` for one that
    /// does not map a key to a fixed partition (`random`) or is unknown.
    pub fn from_librdkafka(name: &str) -> Option<Self> {
        match name {
            "murmur2" | "murmur2_random" => Some(Self::Murmur2),
            "consistent" | "consistent_random" => Some(Self::Crc32),
            "fnv1a" | "fnv1a_random" => Some(Self::Fnv1a),
            _ => None,
        }
    }

    /// Returns the partition of `key` among `count` partitions.
    pub fn partition(self, key: &[u8], count: i32) -> i32 {
        let count = count.max(1) as u32;
        match self {
            Self::Murmur2 => partition_for_key(key, count as i32),
            Self::Crc32 => (crc32fast::hash(key) % count) as i32,
            Self::Fnv1a => (fnv1a_32(key) % count) as i32,
        }
    }
}

/// This instance's view of partition ownership. Cheap to clone; clones share the view.
#[derive(Clone, Debug)]
pub struct Membership {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    instance_id: String,
    grpc_address: String,
    state: RwLock<State>,
    /// Partitions this instance has restored and serves; the publisher watches it.
    ready: watch::Sender<BTreeSet<i32>>,
}

#[derive(Debug, Default)]
struct State {
    partition_count: Option<i32>,
    /// `None` when producers pick partitions at random, so users cannot be routed.
    partitioner: Option<KeyPartitioner>,
    /// Latest claim of every other instance, with the offset it was read at.
    claims: BTreeMap<String, (i64, Claim)>,
}

// === impl Membership ===

impl Membership {
    /// Creates the view of the instance `instance_id`, reachable at `grpc_address`.
    pub fn new(instance_id: impl Into<String>, grpc_address: impl Into<String>) -> Self {
        let (ready, _) = watch::channel(BTreeSet::new());
        Self {
            inner: Arc::new(Inner {
                instance_id: instance_id.into(),
                grpc_address: grpc_address.into(),
                state: RwLock::new(State {
                    partitioner: Some(KeyPartitioner::Murmur2),
                    ..State::default()
                }),
                ready,
            }),
        }
    }

    /// Returns this instance's id.
    pub fn instance_id(&self) -> &str {
        &self.inner.instance_id
    }

    /// Returns this instance's claim as it would be published now.
    pub fn claim(&self) -> Claim {
        Claim {
            instance_id: self.inner.instance_id.clone(),
            grpc_address: self.inner.grpc_address.clone(),
            partitions: self.inner.ready.borrow().iter().copied().collect(),
            partition_count: self.partition_count().unwrap_or(0),
        }
    }

    /// Returns the partition count of the events topic, once known.
    pub fn partition_count(&self) -> Option<i32> {
        self.inner.state.read().partition_count
    }

    /// Sets the partition count of the events topic.
    pub fn set_partition_count(&self, count: i32) {
        self.inner.state.write().partition_count = Some(count).filter(|count| *count > 0);
    }

    /// Sets how producers map user ids to partitions; `None` turns routing off, so every
    /// call is served locally.
    pub fn set_partitioner(&self, partitioner: Option<KeyPartitioner>) {
        self.inner.state.write().partitioner = partitioner;
    }

    /// Returns the partition of the events topic that contains `user_id`'s events, the way the
    /// producers' partitioner (by default `murmur2_random`) picks it.
    pub fn partition_for(&self, user_id: &str) -> Option<i32> {
        let state = self.inner.state.read();
        let (count, partitioner) = (state.partition_count?, state.partitioner?);
        Some(partitioner.partition(user_id.as_bytes(), count))
    }

    /// Returns where a call about `user_id` should run.
    pub fn route(&self, user_id: &str) -> Route {
        let Some(partition) = self.partition_for(user_id) else {
            return Route::Local { partition: None };
        };
        if self.is_ready(partition) {
            return Route::Local {
                partition: Some(partition),
            };
        }
        match self.owner(partition) {
            Some(peer) => Route::Remote { partition, peer },
            None => Route::Local {
                partition: Some(partition),
            },
        }
    }

    /// Returns the other instance that claims `partition`, if any. The claim read last wins.
    pub fn owner(&self, partition: i32) -> Option<Peer> {
        let state = self.inner.state.read();
        state
            .claims
            .values()
            .filter(|(_, claim)| claim.partitions.binary_search(&partition).is_ok())
            .max_by_key(|(offset, _)| *offset)
            .map(|(_, claim)| peer_of(claim))
    }

    /// Returns every other instance with a live claim, ordered by instance id.
    pub fn peers(&self) -> Vec<Peer> {
        let state = self.inner.state.read();
        state
            .claims
            .values()
            .map(|(_, claim)| peer_of(claim))
            .collect()
    }

    /// Returns whether this instance has restored `partition` and serves it.
    pub fn is_ready(&self, partition: i32) -> bool {
        self.inner.ready.borrow().contains(&partition)
    }

    /// Returns the partitions this instance serves.
    pub fn ready_partitions(&self) -> BTreeSet<i32> {
        self.inner.ready.borrow().clone()
    }

    /// Waits until this instance serves `partition`; returns `false` after `timeout`.
    pub async fn wait_ready(&self, partition: i32, timeout: Duration) -> bool {
        let mut ready = self.inner.ready.subscribe();
        let wait = ready.wait_for(|ready| ready.contains(&partition));
        matches!(tokio::time::timeout(timeout, wait).await, Ok(Ok(_)))
    }

    /// Marks `partition` as restored and served by this instance.
    pub fn set_ready(&self, partition: i32) {
        self.inner.ready.send_modify(|ready| {
            ready.insert(partition);
        });
    }

    /// Marks `partition` as no longer served by this instance.
    pub fn set_released(&self, partition: i32) {
        self.inner.ready.send_modify(|ready| {
            ready.remove(&partition);
        });
    }

    /// Subscribes to changes of the served partitions.
    pub(crate) fn watch_ready(&self) -> watch::Receiver<BTreeSet<i32>> {
        self.inner.ready.subscribe()
    }

    /// Applies a message of the instances topic read at `offset`: a claim, or a tombstone
    /// (`None`) that deletes `instance_id`'s claim. This instance's own claims are skipped.
    pub fn apply_claim(&self, instance_id: &str, offset: i64, claim: Option<Claim>) {
        if instance_id == self.inner.instance_id {
            return;
        }
        let mut state = self.inner.state.write();
        match claim {
            Some(claim) => {
                state.claims.insert(instance_id.to_owned(), (offset, claim));
            }
            None => {
                state.claims.remove(instance_id);
            }
        }
    }
}

fn peer_of(claim: &Claim) -> Peer {
    Peer {
        instance_id: claim.instance_id.clone(),
        grpc_address: claim.grpc_address.clone(),
    }
}

/// Returns the partition of a message key among `count` partitions: the positive part of the
/// key's murmur2 hash modulo `count`, as the Java client and librdkafka's `murmur2_random`
/// partitioner compute it.
pub fn partition_for_key(key: &[u8], count: i32) -> i32 {
    let positive = murmur2(key) & 0x7fff_ffff;
    (positive % count.max(1) as u32) as i32
}

/// 32-bit FNV-1a, as librdkafka's `fnv1a` partitioner computes it.
fn fnv1a_32(data: &[u8]) -> u32 {
    data.iter().fold(0x811c_9dc5_u32, |hash, byte| {
        (hash ^ u32::from(*byte)).wrapping_mul(0x0100_0193)
    })
}

/// MurmurHash2 (32 bit) with the seed the Kafka clients use.
fn murmur2(data: &[u8]) -> u32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let mut hash = SEED ^ data.len() as u32;
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        hash = hash.wrapping_mul(M) ^ k;
    }
    let tail = chunks.remainder();
    if !tail.is_empty() {
        for (index, byte) in tail.iter().enumerate().rev() {
            hash ^= u32::from(*byte) << (8 * index);
        }
        hash = hash.wrapping_mul(M);
    }
    hash ^= hash >> 13;
    hash = hash.wrapping_mul(M);
    hash ^ (hash >> 15)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(id: &str, partitions: &[i32]) -> Claim {
        Claim {
            instance_id: id.into(),
            grpc_address: format!("127.0.0.1:{}", 50000 + partitions.len()),
            partitions: partitions.to_vec(),
            partition_count: 4,
        }
    }

    #[test]
    fn murmur2_matches_kafka_reference_values() {
        // Values of org.apache.kafka.common.utils.Utils.murmur2, as published in the Kafka
        // client's unit tests, reinterpreted as unsigned.
        assert_eq!(murmur2(b"21") as i32, -973_932_308);
        assert_eq!(murmur2(b"foobar") as i32, -790_332_482);
        assert_eq!(murmur2(b"a-little-bit-long-string") as i32, -985_981_536);
        assert_eq!(
            murmur2(b"a-little-bit-longer-string") as i32,
            -1_486_304_829
        );
        assert_eq!(
            murmur2(b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8") as i32,
            -58_897_971
        );
        assert_eq!(murmur2(b"abc") as i32, 479_470_107);
    }

    #[test]
    fn routes_to_latest_claim_and_self_first() {
        let membership = Membership::new("me", "127.0.0.1:1");
        membership.set_partition_count(4);
        let user = "alice";
        let partition = membership.partition_for(user).unwrap();
        assert_eq!(
            membership.route(user),
            Route::Local {
                partition: Some(partition)
            }
        );

        membership.apply_claim("old", 3, Some(claim("old", &[0, 1, 2, 3])));
        membership.apply_claim("new", 9, Some(claim("new", &[partition])));
        let Route::Remote { peer, .. } = membership.route(user) else {
            panic!("expected a remote route");
        };
        assert_eq!(peer.instance_id, "new");

        membership.set_ready(partition);
        assert_eq!(
            membership.route(user),
            Route::Local {
                partition: Some(partition)
            }
        );
        membership.set_released(partition);
        membership.apply_claim("new", 10, None);
        assert_eq!(membership.owner(partition).unwrap().instance_id, "old");
        assert_eq!(membership.peers().len(), 1);
    }

    #[test]
    fn routes_by_configured_partitioner() {
        let membership = Membership::new("me", "127.0.0.1:1");
        membership.set_partition_count(7);
        let murmur = membership.partition_for("alice");
        assert_eq!(murmur, Some(partition_for_key(b"alice", 7)));
        membership.set_partitioner(KeyPartitioner::from_librdkafka("consistent_random"));
        let crc = (crc32fast::hash(b"alice") % 7) as i32;
        assert_eq!(membership.partition_for("alice"), Some(crc));
        membership.set_partitioner(KeyPartitioner::from_librdkafka("random"));
        assert_eq!(membership.partition_for("alice"), None);
        assert_eq!(membership.route("alice"), Route::Local { partition: None });
    }

    #[test]
    fn fnv1a_matches_reference_values() {
        // Test vectors of the FNV specification (draft-eastlake-fnv): "" and "a".
        assert_eq!(fnv1a_32(b""), 0x811c_9dc5);
        assert_eq!(fnv1a_32(b"a"), 0xe40c_292c);
    }

    #[test]
    fn ignores_own_claims() {
        let membership = Membership::new("me", "127.0.0.1:1");
        membership.apply_claim("me", 1, Some(claim("me", &[0])));
        assert!(membership.peers().is_empty());
    }
}
