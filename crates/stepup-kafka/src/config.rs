//! Kafka settings of a stepup instance and the librdkafka client configurations built from them.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use rdkafka::ClientConfig;
use serde::{Deserialize, Serialize};

use crate::error::KafkaError;

/// librdkafka properties that `client` must not set, because a field of [`KafkaConfig`] sets
/// them or because changing them would break at-least-once processing.
const RESERVED_CLIENT_KEYS: &[&str] = &[
    "bootstrap.servers",
    "metadata.broker.list",
    "group.id",
    "session.timeout.ms",
    "enable.auto.commit",
    "enable.auto.offset.store",
    "enable.idempotence",
    "acks",
    "request.required.acks",
];

/// Interval at which the consumer emits librdkafka statistics, the source of the lag gauge.
const STATISTICS_INTERVAL_MS: &str = "5000";

/// Time librdkafka keeps retrying one produce request before it reports the message as failed.
/// The producer then retries the message itself with backoff, and logs and counts the retry.
const MESSAGE_TIMEOUT_MS: &str = "30000";

/// Time the producer waits to batch messages before it sends them.
const LINGER_MS: &str = "5";

/// Parts of librdkafka property names whose values `Debug` hides, because they hold secrets.
const SECRET_KEY_PARTS: &[&str] = &["password", "secret", "token", "pem", "oauthbearer.config"];

/// Kafka settings: brokers, consumer group, topics and limits. `Debug` hides secret values
/// in `client`.
#[derive(Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// Comma-separated `host:port` list of bootstrap brokers. Default: `127.0.0.1:9092`.
    #[serde(default = "default_brokers")]
    pub brokers: String,

    /// Consumer group of the stepup instances. Kafka assigns each partition to one member.
    /// Default: `stepup`.
    #[serde(default = "default_group_id")]
    pub group_id: String,

    /// Topic of the JSON events, keyed by user id. Default: `stepup.events`.
    #[serde(default = "default_events_topic")]
    pub events_topic: String,

    /// Topic that receives messages that could not be processed, with the original key and
    /// payload and the reason in headers. Default: `stepup.events.dlq`.
    #[serde(default = "default_dead_letter_topic")]
    pub dead_letter_topic: String,

    /// Topic that receives every decision as JSON keyed by user id. Default: none, so
    /// decisions are not published to Kafka.
    #[serde(default)]
    pub decisions_topic: Option<String>,

    /// Compacted topic of user states keyed by user id, with as many partitions as
    /// `events_topic`: partition p contains the users of events partition p. An instance
    /// restores a partition's users from it when the partition is assigned. Default:
    /// `stepup.profiles`.
    #[serde(default = "default_changelog_topic")]
    pub changelog_topic: String,

    /// Compacted single-partition topic where instances announce their gRPC address and
    /// the partitions they serve, keyed by instance id. Default: `stepup.instances`.
    #[serde(default = "default_instances_topic")]
    pub instances_topic: String,

    /// Time a shutdown waits for the acknowledgements of the message in flight before it
    /// gives up on them (the message is then processed again after the restart), in
    /// milliseconds. Default: 10000.
    #[serde(default = "default_drain_timeout_ms")]
    pub drain_timeout_ms: u64,

    /// Largest event payload accepted, in bytes. Larger messages go to the dead-letter topic
    /// and `Producer::send_event` rejects them. Default: 65536.
    #[serde(default = "default_max_event_bytes")]
    pub max_event_bytes: usize,

    /// Time after which the group coordinator removes a member that sent no heartbeat, in
    /// milliseconds. Default: 45000.
    #[serde(default = "default_session_timeout_ms")]
    pub session_timeout_ms: u32,

    /// Maximum pause between two attempts to send a message, in milliseconds. Pauses start
    /// at 100 ms and double up to this value; pauses after a failed receive stop at 1 s.
    /// Default: 30000.
    #[serde(default = "default_retry_backoff_max_ms")]
    pub retry_backoff_max_ms: u64,

    /// Maximum time the broker may keep a fetch request open while it waits for new messages,
    /// in milliseconds. Lower values cut decision latency at idle times for more requests.
    /// Default: 100.
    #[serde(default = "default_fetch_wait_max_ms")]
    pub fetch_wait_max_ms: u32,

    /// Extra librdkafka properties passed to every client, for example `security.protocol`
    /// or `statistics.interval.ms`. Properties that other fields set, and the offset and
    /// acknowledgement settings, are rejected. Default: empty.
    #[serde(default)]
    pub client: BTreeMap<String, String>,
}

/// Returns the default changelog topic.
pub fn default_changelog_topic() -> String {
    "stepup.profiles".to_owned()
}

/// Returns the default instances topic.
pub fn default_instances_topic() -> String {
    "stepup.instances".to_owned()
}

/// Returns the default drain timeout.
pub fn default_drain_timeout_ms() -> u64 {
    10_000
}

/// Returns the default bootstrap broker list.
pub fn default_brokers() -> String {
    "127.0.0.1:9092".to_owned()
}

/// Returns the default consumer group id.
pub fn default_group_id() -> String {
    "stepup".to_owned()
}

/// Returns the default events topic.
pub fn default_events_topic() -> String {
    "stepup.events".to_owned()
}

/// Returns the default dead-letter topic.
pub fn default_dead_letter_topic() -> String {
    "stepup.events.dlq".to_owned()
}

/// Returns the default payload limit in bytes, the same as the event parser's.
pub fn default_max_event_bytes() -> usize {
    stepup_events::DEFAULT_MAX_EVENT_BYTES
}

/// Returns the default session timeout in milliseconds.
pub fn default_session_timeout_ms() -> u32 {
    45_000
}

/// Returns the default maximum retry pause in milliseconds.
pub fn default_retry_backoff_max_ms() -> u64 {
    30_000
}

/// Returns the default fetch wait in milliseconds.
pub fn default_fetch_wait_max_ms() -> u32 {
    100
}

// === impl KafkaConfig ===

impl fmt::Debug for KafkaConfig {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let client: BTreeMap<&str, &str> = self
            .client
            .iter()
            .map(|(key, value)| {
                let secret = SECRET_KEY_PARTS.iter().any(|part| key.contains(part));
                (
                    key.as_str(),
                    if secret { "<redacted>" } else { value.as_str() },
                )
            })
            .collect();
        formatter
            .debug_struct("KafkaConfig")
            .field("brokers", &self.brokers)
            .field("group_id", &self.group_id)
            .field("events_topic", &self.events_topic)
            .field("dead_letter_topic", &self.dead_letter_topic)
            .field("decisions_topic", &self.decisions_topic)
            .field("max_event_bytes", &self.max_event_bytes)
            .field("session_timeout_ms", &self.session_timeout_ms)
            .field("changelog_topic", &self.changelog_topic)
            .field("instances_topic", &self.instances_topic)
            .field("drain_timeout_ms", &self.drain_timeout_ms)
            .field("retry_backoff_max_ms", &self.retry_backoff_max_ms)
            .field("fetch_wait_max_ms", &self.fetch_wait_max_ms)
            .field("client", &client)
            .finish()
    }
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            brokers: default_brokers(),
            group_id: default_group_id(),
            events_topic: default_events_topic(),
            dead_letter_topic: default_dead_letter_topic(),
            decisions_topic: None,
            changelog_topic: default_changelog_topic(),
            instances_topic: default_instances_topic(),
            drain_timeout_ms: default_drain_timeout_ms(),
            max_event_bytes: default_max_event_bytes(),
            session_timeout_ms: default_session_timeout_ms(),
            retry_backoff_max_ms: default_retry_backoff_max_ms(),
            fetch_wait_max_ms: default_fetch_wait_max_ms(),
            client: BTreeMap::new(),
        }
    }
}

impl KafkaConfig {
    /// Checks the settings and returns an error that names the first invalid key.
    pub fn validate(&self) -> Result<(), KafkaError> {
        require_non_empty("brokers", &self.brokers)?;
        require_non_empty("group_id", &self.group_id)?;
        require_non_empty("events_topic", &self.events_topic)?;
        require_non_empty("dead_letter_topic", &self.dead_letter_topic)?;
        if let Some(topic) = &self.decisions_topic {
            require_non_empty("decisions_topic", topic)?;
        }
        require_non_empty("changelog_topic", &self.changelog_topic)?;
        require_non_empty("instances_topic", &self.instances_topic)?;
        let topics = [
            ("changelog_topic", &self.changelog_topic),
            ("instances_topic", &self.instances_topic),
        ];
        for (key, topic) in topics {
            let others = [&self.events_topic, &self.dead_letter_topic];
            if others.contains(&topic) || self.decisions_topic.as_ref() == Some(topic) {
                return Err(invalid(
                    key,
                    "must differ from the events, dead-letter and decisions topics",
                ));
            }
        }
        if self.changelog_topic == self.instances_topic {
            return Err(invalid(
                "instances_topic",
                "must differ from `changelog_topic`",
            ));
        }
        if self.dead_letter_topic == self.events_topic {
            return Err(invalid(
                "dead_letter_topic",
                "must differ from `events_topic`, or dead letters would be consumed again",
            ));
        }
        if self.max_event_bytes == 0 {
            return Err(invalid("max_event_bytes", "must be at least 1"));
        }
        if self.retry_backoff_max_ms < 100 {
            return Err(invalid("retry_backoff_max_ms", "must be at least 100"));
        }
        self.validate_client_keys()
    }

    /// Returns the maximum pause between retries.
    pub(crate) fn retry_backoff_max(&self) -> Duration {
        Duration::from_millis(self.retry_backoff_max_ms)
    }

    /// Builds the consumer configuration: manual offset store, automatic commit of the
    /// stored offsets, and statistics for the lag gauge.
    pub(crate) fn consumer_client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.brokers)
            .set("client.id", "stepup-consumer")
            .set("group.id", &self.group_id)
            .set("session.timeout.ms", self.session_timeout_ms.to_string())
            .set("enable.auto.commit", "true")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("enable.partition.eof", "false")
            .set("fetch.wait.max.ms", self.fetch_wait_max_ms.to_string())
            .set("statistics.interval.ms", STATISTICS_INTERVAL_MS);
        self.apply_client_properties(&mut config);
        config
    }

    /// Returns the drain timeout.
    pub(crate) fn drain_timeout(&self) -> Duration {
        Duration::from_millis(self.drain_timeout_ms)
    }

    /// Builds the configuration of a consumer that reads assigned partitions without joining
    /// a group (changelog restore, instances topic). Large fetches make restores fast.
    pub(crate) fn reader_client_config(&self, client_id: &str) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.brokers)
            .set("client.id", client_id)
            // Required by the client although the reader never joins or commits.
            .set("group.id", format!("{}-{client_id}", self.group_id))
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("enable.partition.eof", "true")
            .set("fetch.wait.max.ms", self.fetch_wait_max_ms.to_string())
            .set("max.partition.fetch.bytes", "16777216")
            .set("fetch.max.bytes", "67108864");
        self.apply_client_properties(&mut config);
        config
    }

    /// Builds the producer configuration: idempotent, acknowledged by all in-sync replicas.
    pub(crate) fn producer_client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.brokers)
            .set("client.id", "stepup-producer")
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", LINGER_MS)
            // The Java client's default partitioner, so a user's events keep one partition
            // whether the auth service or stepup's `Assess` publishes them.
            .set("partitioner", "murmur2_random")
            .set("message.timeout.ms", MESSAGE_TIMEOUT_MS);
        self.apply_client_properties(&mut config);
        config
    }

    /// Builds the admin client configuration.
    pub(crate) fn admin_client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.brokers)
            .set("client.id", "stepup-admin");
        self.apply_client_properties(&mut config);
        config
    }

    fn apply_client_properties(&self, config: &mut ClientConfig) {
        for (key, value) in &self.client {
            config.set(key, value);
        }
    }

    fn validate_client_keys(&self) -> Result<(), KafkaError> {
        let reserved = self
            .client
            .keys()
            .find(|key| RESERVED_CLIENT_KEYS.contains(&key.as_str()));
        match reserved {
            Some(key) => Err(invalid(
                &format!("client.{key}"),
                "is set by stepup; use the matching `kafka` field or remove the entry",
            )),
            None => Ok(()),
        }
    }
}

fn require_non_empty(key: &str, value: &str) -> Result<(), KafkaError> {
    if value.trim().is_empty() {
        return Err(invalid(key, "must not be empty"));
    }
    Ok(())
}

fn invalid(key: &str, reason: &str) -> KafkaError {
    KafkaError::InvalidConfig {
        key: key.to_owned(),
        reason: reason.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_toml_gives_defaults() {
        let config: KafkaConfig = toml::from_str("").expect("empty config parses");

        assert_eq!(config, KafkaConfig::default());
        assert_eq!(config.brokers, "127.0.0.1:9092");
        assert_eq!(config.max_event_bytes, 65_536);
        assert_eq!(config.decisions_topic, None);
        assert!(config.validate().is_ok());
    }

    #[test]
    fn rejects_unknown_field() {
        let parsed = toml::from_str::<KafkaConfig>("broker = \"localhost:9092\"");

        let error = parsed
            .expect_err("a misspelt key must be rejected")
            .to_string();
        assert!(error.contains("unknown field `broker`"), "{error}");
    }

    #[test]
    fn parses_client_properties() {
        let text = "decisions_topic = \"stepup.decisions\"\n\
                    [client]\n\"security.protocol\" = \"ssl\"\n";
        let config: KafkaConfig = toml::from_str(text).expect("config parses");

        assert_eq!(config.decisions_topic.as_deref(), Some("stepup.decisions"));
        assert_eq!(
            config.client.get("security.protocol").map(String::as_str),
            Some("ssl")
        );
        assert!(config.validate().is_ok());
    }

    #[test]
    fn rejects_reserved_client_property() {
        let mut config = KafkaConfig::default();
        config
            .client
            .insert("enable.auto.offset.store".to_owned(), "true".to_owned());

        let error = config
            .validate()
            .expect_err("reserved key must be rejected")
            .to_string();
        assert!(
            error.contains("`client.enable.auto.offset.store`"),
            "{error}"
        );
    }

    #[test]
    fn rejects_dead_letter_topic_equal_to_events_topic() {
        let config = KafkaConfig {
            dead_letter_topic: default_events_topic(),
            ..KafkaConfig::default()
        };

        let error = config
            .validate()
            .expect_err("same topic must be rejected")
            .to_string();
        assert!(error.contains("`dead_letter_topic`"), "{error}");
    }

    #[test]
    fn rejects_zero_max_event_bytes() {
        let config = KafkaConfig {
            max_event_bytes: 0,
            ..KafkaConfig::default()
        };

        let error = config
            .validate()
            .expect_err("zero limit must be rejected")
            .to_string();
        assert!(error.contains("`max_event_bytes`"), "{error}");
    }

    #[test]
    fn debug_hides_secret_client_values() {
        let mut config = KafkaConfig::default();
        config
            .client
            .insert("sasl.password".to_owned(), "hunter2".to_owned());
        config
            .client
            .insert("security.protocol".to_owned(), "sasl_ssl".to_owned());

        let text = format!("{config:?}");

        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains("\"sasl.password\": \"<redacted>\""), "{text}");
        assert!(
            text.contains("\"security.protocol\": \"sasl_ssl\""),
            "{text}"
        );
    }

    #[test]
    fn client_properties_override_defaults() {
        let mut config = KafkaConfig::default();
        config
            .client
            .insert("statistics.interval.ms".to_owned(), "1000".to_owned());

        let consumer = config.consumer_client_config();

        assert_eq!(consumer.get("statistics.interval.ms"), Some("1000"));
        assert_eq!(consumer.get("enable.auto.offset.store"), Some("false"));
    }
}
