//! Retry pauses, log throttling and shutdown waits shared by the producer and the consumer.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::watch;

/// First pause after a failure.
const INITIAL_BACKOFF: Duration = Duration::from_millis(100);

/// Minimum time between two log lines of one [`LogThrottle`].
pub(crate) const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Capped exponential backoff: 100 ms, doubled after every failure, up to a maximum.
#[derive(Debug)]
pub(crate) struct Backoff {
    next: Duration,
    max: Duration,
}

// === impl Backoff ===

impl Backoff {
    pub(crate) fn new(max: Duration) -> Self {
        Self {
            next: INITIAL_BACKOFF.min(max),
            max,
        }
    }

    /// Returns the pause before the next attempt and doubles the one after it.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(self.max);
        delay
    }

    pub(crate) fn reset(&mut self) {
        self.next = INITIAL_BACKOFF.min(self.max);
    }
}

/// Lets one log line through per interval and counts the lines it held back.
#[derive(Debug)]
pub(crate) struct LogThrottle {
    start: Instant,
    interval_ms: u64,
    next_allowed_ms: AtomicU64,
    suppressed: AtomicU64,
}

// === impl LogThrottle ===

impl LogThrottle {
    pub(crate) fn new(interval: Duration) -> Self {
        Self {
            start: Instant::now(),
            interval_ms: saturating_millis(interval),
            next_allowed_ms: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// Returns the number of lines held back since the last one if a line may be logged now,
    /// and `None` (counting the line as held back) otherwise.
    pub(crate) fn allow(&self) -> Option<u64> {
        let now = saturating_millis(self.start.elapsed());
        let next_allowed = self.next_allowed_ms.load(Ordering::Relaxed);
        let due = now >= next_allowed;
        let claimed = due
            && self
                .next_allowed_ms
                .compare_exchange(
                    next_allowed,
                    now.saturating_add(self.interval_ms),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok();
        if claimed {
            Some(self.suppressed.swap(0, Ordering::Relaxed))
        } else {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

fn saturating_millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// Completes when shutdown is requested. A dropped sender can never request it, so it counts
/// as a request too. Cancel safe.
pub(crate) async fn wait_for_shutdown(shutdown: &mut watch::Receiver<bool>) {
    // `wait_for` fails only when the sender is gone; both cases end the wait.
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// Sleeps for `delay` and returns `true` if shutdown was requested first.
pub(crate) async fn sleep_or_shutdown(
    delay: Duration,
    shutdown: &mut watch::Receiver<bool>,
) -> bool {
    tokio::select! {
        biased;
        () = wait_for_shutdown(shutdown) => true,
        () = tokio::time::sleep(delay) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_max() {
        let mut backoff = Backoff::new(Duration::from_millis(500));

        let delays: Vec<u128> = (0..5).map(|_| backoff.next_delay().as_millis()).collect();

        assert_eq!(delays, [100, 200, 400, 500, 500]);
    }

    #[test]
    fn backoff_reset_starts_over() {
        let mut backoff = Backoff::new(Duration::from_secs(30));
        backoff.next_delay();
        backoff.next_delay();

        backoff.reset();

        assert_eq!(backoff.next_delay(), Duration::from_millis(100));
    }

    #[test]
    fn throttle_counts_suppressed_lines() {
        let throttle = LogThrottle::new(Duration::from_secs(3600));

        assert_eq!(throttle.allow(), Some(0));
        assert_eq!(throttle.allow(), None);
        assert_eq!(throttle.allow(), None);
        assert_eq!(throttle.suppressed.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn throttle_with_zero_interval_allows_every_line() {
        let throttle = LogThrottle::new(Duration::ZERO);

        assert_eq!(throttle.allow(), Some(0));
        assert_eq!(throttle.allow(), Some(0));
    }

    #[tokio::test]
    async fn dropped_sender_counts_as_shutdown() {
        let (sender, mut receiver) = watch::channel(false);
        drop(sender);

        let stopped = sleep_or_shutdown(Duration::from_secs(60), &mut receiver).await;

        assert!(stopped);
    }

    #[tokio::test]
    async fn sleep_ends_without_shutdown() {
        let (_sender, mut receiver) = watch::channel(false);

        let stopped = sleep_or_shutdown(Duration::from_millis(1), &mut receiver).await;

        assert!(!stopped);
    }
}
