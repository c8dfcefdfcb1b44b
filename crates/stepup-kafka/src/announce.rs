//! Publishing this instance's claim to the instances topic and reading everyone else's.

use std::time::Duration;

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaError as ClientError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::watch;
use tracing::{debug, info, instrument, warn};

use crate::cluster::{Claim, Membership};
use crate::config::KafkaConfig;
use crate::error::KafkaError;
use crate::producer::Producer;
use crate::retry::{LOG_INTERVAL, LogThrottle, wait_for_shutdown};

/// Time one claim may take to be acknowledged before the next change replaces it.
const CLAIM_TIMEOUT: Duration = Duration::from_secs(10);

/// Publishes `membership`'s claim whenever the served partitions change, and applies every
/// claim on the instances topic to `membership`, until `shutdown` turns `true`. Then it
/// deletes this instance's claim with a tombstone.
///
/// Returns an error only if the reader cannot be created or assigned.
#[instrument(skip_all, fields(topic = %config.instances_topic, instance = membership.instance_id()))]
pub async fn run_announcer(
    config: &KafkaConfig,
    membership: Membership,
    producer: Producer,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), KafkaError> {
    let reader = create_reader(config)?;
    let mut served = membership.watch_ready();
    let throttle = LogThrottle::new(LOG_INTERVAL);
    publish(&producer, &membership, &throttle).await;
    loop {
        tokio::select! {
            biased;
            () = wait_for_shutdown(&mut shutdown) => break,
            changed = served.changed() => {
                if changed.is_err() {
                    break;
                }
                publish(&producer, &membership, &throttle).await;
            }
            received = reader.recv() => match received {
                Ok(message) => apply(&membership, &message),
                Err(error) => {
                    if let Some(suppressed) = throttle.allow() {
                        warn!(%error, suppressed, "failed to read the instances topic; retrying");
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            },
        }
    }
    let id = membership.instance_id().to_owned();
    match tokio::time::timeout(CLAIM_TIMEOUT, producer.send_claim(&id, None)).await {
        Ok(Ok(())) => info!("claim withdrawn"),
        Ok(Err(error)) => warn!(%error, "failed to withdraw the claim"),
        Err(_) => warn!("timed out withdrawing the claim"),
    }
    Ok(())
}

fn create_reader(config: &KafkaConfig) -> Result<StreamConsumer, KafkaError> {
    let topic = config.instances_topic.as_str();
    let failed = |source: ClientError| KafkaError::Subscribe {
        topic: topic.to_owned(),
        source,
    };
    let mut client = config.reader_client_config("stepup-instances");
    client.set("enable.partition.eof", "false");
    let reader: StreamConsumer = client.create().map_err(|source| KafkaError::CreateClient {
        client: "instances reader",
        brokers: config.brokers.clone(),
        source,
    })?;
    let mut list = TopicPartitionList::new();
    list.add_partition_offset(topic, 0, Offset::Beginning)
        .map_err(failed)?;
    reader.assign(&list).map_err(failed)?;
    Ok(reader)
}

/// Publishes the current claim; a failure is logged, and the next change publishes again.
async fn publish(producer: &Producer, membership: &Membership, throttle: &LogThrottle) {
    let claim = membership.claim();
    let Ok(json) = serde_json::to_vec(&claim) else {
        return;
    };
    let sent = tokio::time::timeout(
        CLAIM_TIMEOUT,
        producer.send_claim(&claim.instance_id, Some(&json)),
    )
    .await;
    match sent {
        Ok(Ok(())) => info!(partitions = ?claim.partitions, "claim published"),
        Ok(Err(error)) => {
            if let Some(suppressed) = throttle.allow() {
                warn!(%error, suppressed, "failed to publish the claim");
            }
        }
        Err(_) => warn!("timed out publishing the claim"),
    }
}

fn apply(membership: &Membership, message: &impl Message) {
    let Some(Ok(instance_id)) = message.key().map(std::str::from_utf8) else {
        return;
    };
    let claim = match message.payload() {
        None => None,
        Some(payload) => match serde_json::from_slice::<Claim>(payload) {
            Ok(claim) => Some(claim),
            Err(error) => {
                warn!(instance_id, %error, "skipped an unreadable claim");
                return;
            }
        },
    };
    debug!(instance_id, offset = message.offset(), "claim read");
    membership.apply_claim(instance_id, message.offset(), claim);
}
