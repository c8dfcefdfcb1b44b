//! In-process Kafka cluster for the demo and fast tests, backed by librdkafka's mock cluster.

use rdkafka::ClientConfig;
use rdkafka::bindings;
use rdkafka::client::{Client, DefaultClientContext};
use rdkafka::mocking::MockCluster;
use rdkafka::types::RDKafkaType;

use crate::error::KafkaError;

/// librdkafka mock cluster on random 127.0.0.1 ports, in memory, destroyed on drop.
///
/// librdkafka marks the mock cluster experimental. It serves produce, fetch, consumer groups
/// and offset commits, but not the admin API (use [`EmbeddedKafka::create_topic`], not
/// [`crate::ensure_topics`]) and not log compaction.
pub struct EmbeddedKafka {
    /// Handle that owns the mock cluster: librdkafka creates the cluster for a handle
    /// configured with `test.mock.num.brokers` and destroys it with the handle.
    handle: Client<DefaultClientContext>,
    broker_count: i32,
}

// === impl EmbeddedKafka ===

impl std::fmt::Debug for EmbeddedKafka {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("EmbeddedKafka")
            .field("bootstrap_servers", &self.bootstrap_servers())
            .field("broker_count", &self.broker_count)
            .finish()
    }
}

impl EmbeddedKafka {
    /// Starts a cluster of `brokers` brokers and creates `topics`, given as (name, partition
    /// count) pairs. The first group join completes in about 0.15 s, because the mock's initial
    /// rebalance delay (3 s by default) is set to 0.
    pub fn start(brokers: i32, topics: &[(&str, i32)]) -> Result<Self, KafkaError> {
        if brokers < 1 {
            return Err(embedded_error(
                format!("broker count {brokers} must be at least 1"),
                None,
            ));
        }
        let mut config = ClientConfig::new();
        config.set("test.mock.num.brokers", brokers.to_string());
        let native = config
            .create_native_config()
            .map_err(|source| embedded_error("invalid client config".to_owned(), Some(source)))?;
        let handle = Client::new(
            &config,
            native,
            RDKafkaType::RD_KAFKA_PRODUCER,
            DefaultClientContext,
        )
        .map_err(|source| embedded_error("failed to create the handle".to_owned(), Some(source)))?;
        disable_initial_rebalance_delay(&handle)?;

        let kafka = Self {
            handle,
            broker_count: brokers,
        };
        for (topic, partitions) in topics {
            kafka.create_topic(topic, *partitions)?;
        }
        Ok(kafka)
    }

    /// Returns the `host:port` list of the brokers, for `bootstrap.servers`.
    pub fn bootstrap_servers(&self) -> String {
        self.mock_cluster().bootstrap_servers()
    }

    /// Creates a topic with `partitions` partitions, replicated on up to three brokers.
    pub fn create_topic(&self, topic: &str, partitions: i32) -> Result<(), KafkaError> {
        let replication = self.broker_count.min(3);
        self.mock_cluster()
            .create_topic(topic, partitions, replication)
            .map_err(|source| {
                embedded_error(format!("failed to create topic `{topic}`"), Some(source))
            })
    }

    /// Returns the mock cluster, for fault injection such as `broker_down` in tests.
    pub fn mock_cluster(&self) -> MockCluster<'_, DefaultClientContext> {
        self.handle.mock_cluster().expect(
            "the handle was created with `test.mock.num.brokers`, so it owns a mock cluster",
        )
    }
}

/// Sets the mock cluster's initial rebalance delay to 0. rdkafka 0.39 has no safe wrapper for
/// `rd_kafka_mock_group_initial_rebalance_delay_ms`.
#[allow(unsafe_code)]
fn disable_initial_rebalance_delay(
    handle: &Client<DefaultClientContext>,
) -> Result<(), KafkaError> {
    // SAFETY: `handle.native_ptr()` is a live `rd_kafka_t` for as long as `handle` is borrowed,
    // which covers this whole block. `rd_kafka_handle_mock_cluster` only reads the handle's
    // mock cluster field, which is null or the cluster librdkafka created for
    // `test.mock.num.brokers` and frees only in `rd_kafka_destroy` of the same handle. The
    // setter is called only with a non-null cluster and takes the cluster's own lock, so it is
    // safe while the broker threads run.
    let found = unsafe {
        let cluster = bindings::rd_kafka_handle_mock_cluster(handle.native_ptr());
        if !cluster.is_null() {
            bindings::rd_kafka_mock_group_initial_rebalance_delay_ms(cluster, 0);
        }
        !cluster.is_null()
    };
    if found {
        Ok(())
    } else {
        Err(embedded_error(
            "librdkafka created no mock cluster".to_owned(),
            None,
        ))
    }
}

fn embedded_error(operation: String, source: Option<rdkafka::error::KafkaError>) -> KafkaError {
    KafkaError::Embedded { operation, source }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_one_address_per_broker() {
        let kafka = EmbeddedKafka::start(3, &[("stepup.events", 6)]).expect("mock cluster");

        let servers = kafka.bootstrap_servers();

        assert_eq!(servers.split(',').count(), 3, "{servers}");
        assert!(
            servers.split(',').all(|s| s.starts_with("127.0.0.1:")),
            "{servers}"
        );
    }

    #[test]
    fn rejects_zero_brokers() {
        let result = EmbeddedKafka::start(0, &[]);

        assert!(matches!(result, Err(KafkaError::Embedded { .. })));
    }
}
