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
        /// User id of the event, the key of the decision message.
        user_id: String,
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
