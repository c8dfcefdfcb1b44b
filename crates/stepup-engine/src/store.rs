//! Recent decisions by event id, with waiters for `AwaitDecision` and a broadcast feed.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use parking_lot::Mutex;
use stepup_events::Decision;
use tokio::sync::{broadcast, oneshot};

/// Capacity of the broadcast channel behind `StreamDecisions`; a subscriber that falls further
/// behind skips decisions and receives the number skipped.
const FEED_CAPACITY: usize = 4096;

/// A stored decision and whether the engine already applied its event's state change.
#[derive(Clone, Debug)]
pub(crate) struct StoredDecision {
    pub decision: Arc<Decision>,
    /// True once the event went through the consumer path (`Engine::process`); false for
    /// decisions made inline by `Assess` or `CheckAction` whose event is still on its way.
    pub applied: bool,
}

/// Bounded map of recent decisions.
pub(crate) struct DecisionStore {
    by_event: DashMap<String, StoredDecision>,
    order: Mutex<VecDeque<String>>,
    max_stored: usize,
    waiters: DashMap<String, Vec<oneshot::Sender<Arc<Decision>>>>,
    feed: broadcast::Sender<Arc<Decision>>,
}

// === impl DecisionStore ===

impl DecisionStore {
    pub fn new(max_stored: usize) -> Self {
        let (feed, _) = broadcast::channel(FEED_CAPACITY);
        Self {
            by_event: DashMap::new(),
            order: Mutex::new(VecDeque::new()),
            max_stored,
            waiters: DashMap::new(),
            feed,
        }
    }

    pub fn get(&self, event_id: &str) -> Option<StoredDecision> {
        self.by_event.get(event_id).map(|entry| entry.clone())
    }

    pub fn mark_applied(&self, event_id: &str) {
        if let Some(mut entry) = self.by_event.get_mut(event_id) {
            entry.applied = true;
        }
    }

    /// Stores a new decision, wakes its waiters and publishes it to subscribers.
    pub fn insert(&self, decision: Arc<Decision>, applied: bool) {
        let event_id = decision.event_id.clone();
        let stored = StoredDecision {
            decision: decision.clone(),
            applied,
        };
        if self.by_event.insert(event_id.clone(), stored).is_none() {
            self.remember_order(event_id.clone());
        }

        // Waiters register before they read the map, so after this insert either the waiter
        // finds the decision in the map or it is in `waiters` now.
        if let Some((_, senders)) = self.waiters.remove(&event_id) {
            for sender in senders {
                let _ = sender.send(decision.clone());
            }
        }
        // An error here only means that no subscriber exists.
        let _ = self.feed.send(decision);
    }

    fn remember_order(&self, event_id: String) {
        let mut order = self.order.lock();
        order.push_back(event_id);
        while order.len() > self.max_stored {
            if let Some(oldest) = order.pop_front() {
                self.by_event.remove(&oldest);
            }
        }
    }

    /// Waits up to `timeout` for the decision on `event_id`.
    pub async fn wait(&self, event_id: &str, timeout: Duration) -> Option<Arc<Decision>> {
        let (sender, receiver) = oneshot::channel();
        self.waiters
            .entry(event_id.to_owned())
            .or_default()
            .push(sender);
        if let Some(stored) = self.get(event_id) {
            drop(receiver);
            self.drop_closed_waiters(event_id);
            return Some(stored.decision);
        }

        let result = tokio::time::timeout(timeout, receiver).await;
        self.drop_closed_waiters(event_id);
        match result {
            Ok(Ok(decision)) => Some(decision),
            _ => None,
        }
    }

    fn drop_closed_waiters(&self, event_id: &str) {
        self.waiters.remove_if_mut(event_id, |_, senders| {
            senders.retain(|sender| !sender.is_closed());
            senders.is_empty()
        });
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Decision>> {
        self.feed.subscribe()
    }

    pub fn len(&self) -> usize {
        self.by_event.len()
    }
}
