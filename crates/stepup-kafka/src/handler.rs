//! The interface between the consumer loop and the code that processes events.

use rdkafka::Message;
use rdkafka::message::BorrowedMessage;

/// Processes the messages of the events topic; the engine implements it.
pub trait EventHandler: Send + Sync + 'static {
    /// Processes one message; returns what to do with it. Must not block for long.
    ///
    /// The consumer calls it once per delivered message, one message at a time, in partition
    /// order. After a crash or a rebalance, messages since the last commit are delivered again,
    /// so the handler must recognise repeated event ids.
    fn handle(&self, message: &InboundMessage<'_>) -> HandleOutcome;

    /// Starts restoring the state of `partition` after it was assigned. The consumer feeds
    /// the partition's changelog records to the returned sink, in order, before it hands the
    /// handler any event of the partition. `None` (the default) keeps no partition state.
    fn begin_restore(&self, partition: i32) -> Option<Box<dyn RestoreSink + '_>> {
        let _ = partition;
        None
    }

    /// Drops the state of `partition` after it was revoked. Its changelog is complete by then,
    /// because the consumer stores an offset only after the state change was acknowledged.
    fn release_partition(&self, partition: i32) {
        let _ = partition;
    }
}

/// Receives one partition's changelog records during a restore.
pub trait RestoreSink: Send {
    /// Applies one record: a state, or a tombstone (`None`) that deletes the key.
    fn apply(&mut self, key: &str, value: Option<&[u8]>);

    /// Completes the restore (the partition is served only after it) and returns what was
    /// restored.
    fn finish(self: Box<Self>) -> RestoreTotals;
}

/// What one partition restore read and kept.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RestoreTotals {
    /// Changelog records read.
    pub records: u64,
    /// Keys restored.
    pub restored: u64,
    /// Records that could not be read and were skipped.
    pub invalid: u64,
}

/// One message of the events topic, borrowed from the consumer.
#[derive(Clone, Copy, Debug)]
pub struct InboundMessage<'a> {
    /// Message key, the user id for well-formed events.
    pub key: Option<&'a [u8]>,
    /// Message value, a JSON event for well-formed events.
    pub payload: Option<&'a [u8]>,
    /// Topic the message was read from.
    pub topic: &'a str,
    /// Partition the message was read from.
    pub partition: i32,
    /// Offset of the message in its partition.
    pub offset: i64,
}

/// Action the consumer takes on a message after the handler returned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HandleOutcome {
    /// The message was processed. The consumer publishes `decision`, when present and when
    /// `decisions_topic` is set, before it stores the offset.
    Processed {
        /// Decision as JSON, if the event led to one.
        decision: Option<Vec<u8>>,
        /// User id of the event, the key of the decision and changelog messages.
        user_id: String,
        /// The user's new state, written to the changelog partition of the message's
        /// partition before the offset is stored; `None` when nothing changed.
        state: Option<Vec<u8>>,
    },
    /// The message cannot be processed. The consumer sends it to the dead-letter topic and
    /// stores its offset only after the broker acknowledged the dead letter.
    DeadLetter {
        /// Short bounded code for the metric label and the `stepup-reason-code` header.
        reason_code: &'static str,
        /// Explanation for the `stepup-reason` header. It is never logged, but it must not
        /// contain secrets because it is stored in the dead-letter topic.
        reason: String,
    },
}

// === impl InboundMessage ===

impl<'a> InboundMessage<'a> {
    /// Borrows the fields of a message received from librdkafka.
    pub(crate) fn from_borrowed(message: &'a BorrowedMessage<'_>) -> Self {
        Self {
            key: message.key(),
            payload: message.payload(),
            topic: message.topic(),
            partition: message.partition(),
            offset: message.offset(),
        }
    }
}
