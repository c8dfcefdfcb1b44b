//! Watching the rules directory and reloading it after changes.
//!
//! The watcher uses `notify` (inotify on Linux) through `notify-debouncer-mini`, which batches
//! events that arrive within the debounce time. The debouncer may still split one burst into
//! two batches, because it releases each path only after that path has been quiet for the
//! debounce time. So the reload thread also waits until no batch has arrived for the debounce
//! time, and a burst of writes gives one reload. Reloads go through
//! [`RuleReloader::reload_if_changed`], which skips events that changed no rule or case file.

use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::Duration;

use notify::{RecommendedWatcher, RecursiveMode};
use notify_debouncer_mini::{DebounceEventResult, Debouncer, new_debouncer};
use tracing::{info, warn};

use crate::PolicyError;
use crate::reload::{ReloadTrigger, RuleReloader};

/// Watches a rules directory and its `tests` directory until dropped.
pub struct RuleWatcher {
    debouncer: Option<Debouncer<RecommendedWatcher>>,
    thread: Option<JoinHandle<()>>,
}

// === impl RuleWatcher ===

impl RuleWatcher {
    /// Starts watching `reloader`'s directory; a burst of changes that is followed by `debounce`
    /// without changes gives one reload.
    pub fn start(reloader: Arc<RuleReloader>, debounce: Duration) -> Result<Self, PolicyError> {
        let dir = reloader.dir().to_path_buf();
        let watch_error = |source| PolicyError::Watch {
            dir: dir.clone(),
            source,
        };
        let (sender, receiver) = std::sync::mpsc::channel();
        let mut debouncer = new_debouncer(debounce, sender).map_err(watch_error)?;
        debouncer
            .watcher()
            .watch(&dir, RecursiveMode::Recursive)
            .map_err(watch_error)?;

        let thread = std::thread::Builder::new()
            .name("stepup-rule-watch".to_string())
            .spawn(move || run(&reloader, &receiver, debounce))
            .map_err(|source| watch_error(notify::Error::io(source)))?;
        info!(dir = %dir.display(), debounce_ms = debounce.as_millis() as u64,
              "watching rules directory");
        Ok(Self {
            debouncer: Some(debouncer),
            thread: Some(thread),
        })
    }
}

/// Stops the watcher and waits for a reload in progress to finish.
impl Drop for RuleWatcher {
    fn drop(&mut self) {
        // Dropping the debouncer ends its thread, which drops the sender and so ends `run`.
        drop(self.debouncer.take());
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            warn!("rule watch thread panicked");
        }
    }
}

/// Reloads once per burst of batches until the debouncer hangs up.
fn run(reloader: &RuleReloader, batches: &Receiver<DebounceEventResult>, quiet: Duration) {
    while let Ok(batch) = batches.recv() {
        let mut changed = note_batch(reloader.dir(), batch);
        loop {
            match batches.recv_timeout(quiet) {
                Ok(batch) => changed |= note_batch(reloader.dir(), batch),
                Err(RecvTimeoutError::Timeout) => break,
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
        if changed {
            // The reloader logs and counts the outcome.
            let _ = reloader.reload_if_changed(ReloadTrigger::Watch);
        }
    }
}

/// Returns whether the batch reports any change; logs watcher errors.
fn note_batch(dir: &Path, batch: DebounceEventResult) -> bool {
    match batch {
        Ok(events) => !events.is_empty(),
        Err(error) => {
            warn!(dir = %dir.display(), error = %error, "rule directory watcher failed");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Instant;

    use prometheus::{IntGaugeVec, Opts, Registry};

    use super::*;
    use crate::reload::ReloadMetrics;
    use crate::{Policy, PolicyConfig, RuleSet};

    fn rule(id: &str, body: &str) -> String {
        format!(
            "//! id: {id}\n//! version: 1\n//! description: test rule\n\
             //! owner: security@example.com\n//! mode: live\n//! priority: 1\n{body}\n"
        )
    }

    fn write_rule(dir: &Path, id: &str, body: &str) {
        std::fs::write(dir.join(format!("{id}.rhai")), rule(id, body)).unwrap();
    }

    fn start(dir: &Path, debounce: Duration) -> (Arc<RuleReloader>, RuleWatcher) {
        let config = PolicyConfig {
            dir: dir.to_path_buf(),
            ..PolicyConfig::default()
        };
        let policy = Arc::new(Policy::new(
            config.clone(),
            RuleSet::load_dir(&config).unwrap(),
        ));
        let info = IntGaugeVec::new(Opts::new("info", "info"), &["version"]).unwrap();
        let metrics = ReloadMetrics::register(&Registry::new(), info).unwrap();
        let reloader = Arc::new(RuleReloader::new(policy, config).with_metrics(metrics));
        let watcher = RuleWatcher::start(Arc::clone(&reloader), debounce).unwrap();
        (reloader, watcher)
    }

    fn reloads(reloader: &RuleReloader) -> [u64; 3] {
        let metrics = reloader.metrics().unwrap();
        ["applied", "unchanged", "rejected"].map(|result| metrics.count(result))
    }

    /// Polls `condition` every 20 ms for at most 10 s.
    fn wait_until(condition: impl Fn() -> bool) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if condition() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        condition()
    }

    #[test]
    fn burst_of_writes_gives_one_reload() {
        let temp = tempfile::tempdir().unwrap();
        write_rule(temp.path(), "first", "()");
        let debounce = Duration::from_millis(250);
        let (reloader, _watcher) = start(temp.path(), debounce);
        let old_version = reloader.policy().rule_set().version().to_string();

        write_rule(temp.path(), "first", "();");
        write_rule(temp.path(), "second", "()");
        write_rule(temp.path(), "third", "()");
        std::fs::create_dir(temp.path().join("tests")).unwrap();
        std::fs::write(temp.path().join("tests/none.yaml"), "cases: []\n").unwrap();
        write_rule(temp.path(), "second", "();");

        let applied = wait_until(|| reloads(&reloader)[0] >= 1);
        assert!(applied, "no reload within 10 s: {:?}", reloads(&reloader));
        // Events still queued would give a second reload within a few debounce times.
        std::thread::sleep(debounce * 4);
        assert_eq!(reloads(&reloader), [1, 0, 0]);
        let rule_set = reloader.policy().rule_set();
        assert_ne!(rule_set.version(), old_version);
        assert_eq!(rule_set.rules().len(), 3);
    }

    #[test]
    fn broken_edit_is_rejected_then_fix_is_applied() {
        let temp = tempfile::tempdir().unwrap();
        write_rule(temp.path(), "only", "()");
        let (reloader, _watcher) = start(temp.path(), Duration::from_millis(100));
        let old_version = reloader.policy().rule_set().version().to_string();

        write_rule(temp.path(), "only", "let x = ;");
        assert!(wait_until(|| reloads(&reloader)[2] == 1));
        assert_eq!(reloader.policy().rule_set().version(), old_version);

        write_rule(temp.path(), "only", "();");
        assert!(wait_until(|| reloads(&reloader)[0] == 1));
        assert_ne!(reloader.policy().rule_set().version(), old_version);
    }

    #[test]
    fn missing_directory_is_an_error() {
        let temp = tempfile::tempdir().unwrap();
        write_rule(temp.path(), "only", "()");
        let config = PolicyConfig {
            dir: temp.path().to_path_buf(),
            ..PolicyConfig::default()
        };
        let policy = Arc::new(Policy::new(
            config.clone(),
            RuleSet::load_dir(&config).unwrap(),
        ));
        let missing = PolicyConfig {
            dir: temp.path().join("gone"),
            ..config
        };
        let reloader = Arc::new(RuleReloader::new(policy, missing));

        let error = RuleWatcher::start(reloader, Duration::from_millis(100))
            .err()
            .expect("watching a missing directory fails");

        assert!(error.to_string().contains("gone"), "{error}");
    }
}
