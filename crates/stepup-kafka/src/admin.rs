//! Topic creation on real brokers.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::types::RDKafkaErrorCode;
use tracing::{info, instrument};

use crate::config::KafkaConfig;
use crate::error::KafkaError;

/// Replication factor -1, which selects the broker's `default.replication.factor`
/// (CreateTopics version 4 and later).
const BROKER_DEFAULT_REPLICATION: i32 = -1;

/// Creates the events, dead-letter and changelog topics, and the decisions topic when set,
/// with `partitions` partitions each, plus the single-partition instances topic. The
/// changelog and instances topics are compacted. Topics that exist already are left as
/// they are.
///
/// For real brokers only: librdkafka's mock cluster does not implement CreateTopics, so with
/// [`crate::EmbeddedKafka`] this times out; create topics with `EmbeddedKafka::create_topic`.
#[instrument(skip_all, fields(topic = %config.events_topic, group = %config.group_id))]
pub async fn ensure_topics(
    config: &KafkaConfig,
    partitions: i32,
    timeout: Duration,
) -> Result<(), KafkaError> {
    config.validate()?;
    let admin: AdminClient<DefaultClientContext> =
        config
            .admin_client_config()
            .create()
            .map_err(|source| KafkaError::CreateClient {
                client: "admin client",
                brokers: config.brokers.clone(),
                source,
            })?;

    let mut names = vec![
        config.events_topic.as_str(),
        config.dead_letter_topic.as_str(),
    ];
    names.extend(config.decisions_topic.as_deref());
    // NOTE: the broker default replication factor (-1) was not tried against tansu.
    let replication = || TopicReplication::Fixed(BROKER_DEFAULT_REPLICATION);
    let mut topics: Vec<NewTopic<'_>> = names
        .iter()
        .map(|name| NewTopic::new(name, partitions, replication()))
        .collect();
    // The changelog keeps the latest state per user, and the instances topic the latest
    // claim per instance; one partition keeps claims in one order.
    topics.push(
        NewTopic::new(&config.changelog_topic, partitions, replication())
            .set("cleanup.policy", "compact"),
    );
    topics.push(
        NewTopic::new(&config.instances_topic, 1, replication()).set("cleanup.policy", "compact"),
    );
    let options = AdminOptions::new()
        .request_timeout(Some(timeout))
        .operation_timeout(Some(timeout));

    let request = admin.create_topics(&topics, &options);
    let results = tokio::time::timeout(timeout, request)
        .await
        .map_err(|_| KafkaError::CreateTopicsTimeout {
            brokers: config.brokers.clone(),
            timeout_ms: timeout.as_millis(),
        })?
        .map_err(|source| KafkaError::CreateTopics {
            brokers: config.brokers.clone(),
            source,
        })?;

    for result in results {
        match result {
            Ok(topic) => {
                let count = if topic == config.instances_topic {
                    1
                } else {
                    partitions
                };
                info!(created = %topic, partitions = count, "topic created");
            }
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => return Err(KafkaError::CreateTopic { topic, code }),
        }
    }
    Ok(())
}
