//! The per-user, per-field keystroke template and the verdict of scoring against it.
//!
//! A template keeps the newest verified samples, at most `window` of them (20 by default), as
//! whole milliseconds in `i16`. Raw samples rather than running statistics are kept because the
//! detectors need them: the Parzen detector places a kernel on each sample, and every detector
//! scores each stored sample against the others to calibrate. Dropping the oldest sample when
//! the window is full is what adapts the template to slow drift. Storage is bounded:
//! `window * (3 * keys - 2)` values of two bytes, 1,600 bytes for a 14-key field with the
//! default window, and at most [`MAX_TEMPLATE_KEYS`] keys and [`MAX_WINDOW`] samples.

use std::fmt;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::detector::{Detector, Model, Samples};
use crate::features::{Features, NoSignal, SequenceTag, feature_count};

/// Largest accepted `window`.
pub const MAX_WINDOW: u16 = 32;

/// Maximum field length, in keys, that a template learns.
pub const MAX_TEMPLATE_KEYS: usize = 128;

/// Errors from [`TemplateConfig::validate`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TemplateConfigError {
    /// A setting is outside its range.
    #[error("invalid `{key}` value {value}: {expected}")]
    OutOfRange {
        /// Name of the setting.
        key: &'static str,
        /// The value given.
        value: u16,
        /// Accepted range, phrased as advice.
        expected: &'static str,
    },
}

/// Settings of new templates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateConfig {
    /// Verified samples needed before the template scores attempts. Default: 10.
    #[serde(default = "default_min_samples")]
    pub min_samples: u16,
    /// Newest verified samples kept; older ones are dropped. Default: 20, at most 32.
    #[serde(default = "default_window")]
    pub window: u16,
    /// Consecutive verified samples with another key sequence (for example after a password
    /// change) after which the template starts over from that sequence. Default: 3.
    #[serde(default = "default_relearn_after")]
    pub relearn_after: u16,
}

fn default_min_samples() -> u16 {
    10
}

fn default_window() -> u16 {
    20
}

fn default_relearn_after() -> u16 {
    3
}

impl Default for TemplateConfig {
    fn default() -> Self {
        TemplateConfig {
            min_samples: default_min_samples(),
            window: default_window(),
            relearn_after: default_relearn_after(),
        }
    }
}

impl TemplateConfig {
    /// Checks that `2 <= min_samples <= window <= MAX_WINDOW` and `relearn_after >= 1`.
    pub fn validate(&self) -> Result<(), TemplateConfigError> {
        let out_of_range = |key, value, expected| {
            Err(TemplateConfigError::OutOfRange {
                key,
                value,
                expected,
            })
        };
        if !(2..=MAX_WINDOW).contains(&self.window) {
            return out_of_range("window", self.window, "set a value from 2 to 32");
        }
        if !(2..=self.window).contains(&self.min_samples) {
            return out_of_range(
                "min_samples",
                self.min_samples,
                "set a value from 2 to `window`",
            );
        }
        if self.relearn_after == 0 {
            return out_of_range("relearn_after", 0, "set a value of at least 1");
        }
        Ok(())
    }
}

/// Outcome of [`Template::learn`] for one sample.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LearnOutcome {
    /// The sample was added.
    Learnt,
    /// The sample did not match the template and was not added; the mismatch was counted.
    Skipped(NoSignal),
    /// Enough consecutive samples had a new key sequence: the template was cleared and started
    /// over from this sample.
    Restarted,
    /// The field has more than [`MAX_TEMPLATE_KEYS`] keys and is not learnt.
    TooLong,
}

/// Result of scoring one attempt against a template.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KeystrokeVerdict {
    /// Whether the template had enough samples to score.
    pub enrolled: bool,
    /// Verified samples learnt since the template started.
    pub samples: u32,
    /// Calibrated probability-like value in [0, 1] that the typist is not the user, if scored.
    pub score: Option<f64>,
    /// The feature furthest from the user's usual value, or why there is no score. Names the
    /// feature kind and key position only, never key names or times.
    pub nearest_reason: String,
}

/// Keystroke template of one user and one field, learnt from verified logins only.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Template {
    min_samples: u16,
    window: u16,
    relearn_after: u16,
    /// Keys per sample; 0 before the first sample.
    key_count: u16,
    sequence: Option<SequenceTag>,
    /// Samples learnt since the template (re)started, saturating.
    learnt: u32,
    /// Consecutive verified samples that did not match.
    mismatches: u16,
    /// Stored samples, oldest first, in whole milliseconds saturated to the `i16` range.
    timings_ms: Vec<i16>,
    /// Models fitted on `timings_ms`, one per detector that scored, with their calibration
    /// baselines; dropped after every change to the samples and never serialized.
    #[serde(skip)]
    fitted: FitCache,
}

/// A model fitted on a template's samples, kept so that scoring does not refit it.
struct Fitted {
    model: Box<dyn Model>,
    baseline: Vec<f64>,
}

/// Cache of the fitted model. Clones share it, and it takes no part in equality, because it
/// is derived from the samples.
#[derive(Clone, Default)]
struct FitCache(Arc<Mutex<FitsByDetector>>);

/// Fit results by detector name; a failed fit keeps its error message.
type FitsByDetector = Vec<(&'static str, Arc<Result<Fitted, String>>)>;

impl FitCache {
    /// Returns the fit of the detector named `name`, fitting and keeping it on first use.
    fn get_or_fit(
        &self,
        name: &'static str,
        fit: impl FnOnce() -> Result<Fitted, String>,
    ) -> Arc<Result<Fitted, String>> {
        let cached = self
            .lock()
            .iter()
            .find(|(cached, _)| *cached == name)
            .map(|(_, f)| f.clone());
        if let Some(fitted) = cached {
            return fitted;
        }
        let fitted = Arc::new(fit());
        self.lock().push((name, fitted.clone()));
        fitted
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FitsByDetector> {
        // A panic while holding the lock leaves at worst a missing entry, so the data is usable.
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl PartialEq for FitCache {
    fn eq(&self, _other: &Self) -> bool {
        true
    }
}

// === impl Template ===

impl Default for Template {
    fn default() -> Self {
        Template::new(&TemplateConfig::default())
    }
}

impl Template {
    /// Creates an empty template; `config` should have passed [`TemplateConfig::validate`].
    pub fn new(config: &TemplateConfig) -> Self {
        Template {
            min_samples: config.min_samples,
            window: config.window.clamp(2, MAX_WINDOW),
            relearn_after: config.relearn_after.max(1),
            key_count: 0,
            sequence: None,
            learnt: 0,
            mismatches: 0,
            timings_ms: Vec::new(),
            fitted: FitCache::default(),
        }
    }

    /// Returns the number of keys of the learnt field, once a sample was learnt.
    pub fn key_count(&self) -> Option<usize> {
        (self.key_count > 0).then_some(usize::from(self.key_count))
    }

    /// Returns the number of samples learnt since the template started.
    pub fn samples(&self) -> u32 {
        self.learnt
    }

    /// Returns whether the template has the samples it needs to score.
    pub fn is_enrolled(&self) -> bool {
        self.learnt >= u32::from(self.min_samples)
    }

    /// Checks that `features` has the template's key count and key sequence.
    pub fn check(&self, features: &Features) -> Result<(), NoSignal> {
        let Some(expected) = self.key_count() else {
            return Ok(());
        };
        if features.key_count() != expected {
            return Err(NoSignal::LengthMismatch {
                expected,
                found: features.key_count(),
            });
        }
        match (self.sequence, features.sequence()) {
            (Some(stored), Some(found)) if stored != found => Err(NoSignal::SequenceMismatch),
            _ => Ok(()),
        }
    }

    /// Learns a sample from a verified login.
    pub fn learn(&mut self, features: &Features) -> LearnOutcome {
        if features.key_count() > MAX_TEMPLATE_KEYS {
            return LearnOutcome::TooLong;
        }
        if let Err(reason) = self.check(features) {
            self.mismatches = self.mismatches.saturating_add(1);
            if self.mismatches < self.relearn_after {
                return LearnOutcome::Skipped(reason);
            }
            self.clear();
            self.push(features);
            return LearnOutcome::Restarted;
        }
        self.push(features);
        LearnOutcome::Learnt
    }

    /// Scores an attempt's features with `detector` and calibrates the score.
    pub fn score<D: Detector + ?Sized>(
        &self,
        features: &Features,
        detector: &D,
    ) -> KeystrokeVerdict {
        let mut verdict = KeystrokeVerdict {
            enrolled: self.is_enrolled(),
            samples: self.learnt,
            score: None,
            nearest_reason: String::new(),
        };
        if !verdict.enrolled {
            verdict.nearest_reason = format!(
                "enrolling: {} of {} verified samples learnt",
                self.learnt, self.min_samples
            );
            return verdict;
        }
        if let Err(reason) = self.check(features) {
            verdict.nearest_reason = reason.to_string();
            return verdict;
        }

        let fitted = self
            .fitted
            .get_or_fit(detector.name(), || self.fit(detector));
        let fitted = match fitted.as_ref() {
            Ok(fitted) => fitted,
            Err(message) => {
                verdict.nearest_reason = message.clone();
                return verdict;
            }
        };
        let raw = fitted.model.score(features.values());
        verdict.score = detector.calibration().probability(raw, &fitted.baseline);
        verdict.nearest_reason = fitted
            .model
            .largest_deviation(features.values())
            .to_string();
        verdict
    }

    /// Returns a copy that shares no fitted model with `self`, for tests of the cache.
    #[cfg(test)]
    pub(crate) fn clone_without_fit(&self) -> Self {
        Template {
            fitted: FitCache::default(),
            ..self.clone()
        }
    }

    /// Fits `detector` on the stored samples and computes the calibration baseline.
    fn fit<D: Detector + ?Sized>(&self, detector: &D) -> Result<Fitted, String> {
        let values: Vec<f64> = self.timings_ms.iter().map(|&ms| f64::from(ms)).collect();
        let model = Samples::new(usize::from(self.key_count), &values)
            .and_then(|training| detector.fit(training))
            .map_err(|error| error.to_string())?;
        let baseline = model.training_scores();
        Ok(Fitted { model, baseline })
    }

    fn clear(&mut self) {
        self.fitted = FitCache::default();
        self.key_count = 0;
        self.sequence = None;
        self.learnt = 0;
        self.timings_ms.clear();
    }

    fn push(&mut self, features: &Features) {
        if self.key_count == 0 {
            // `learn` rejects fields longer than MAX_TEMPLATE_KEYS, which fits in u16.
            self.key_count = u16::try_from(features.key_count()).unwrap_or(u16::MAX);
            self.sequence = features.sequence();
        }
        self.fitted = FitCache::default();
        self.mismatches = 0;
        self.learnt = self.learnt.saturating_add(1);
        // `as` rounds towards zero after `round` and saturates at the i16 bounds, which only
        // pauses longer than 32.767 s reach.
        self.timings_ms
            .extend(features.values().iter().map(|value| value.round() as i16));

        let dim = feature_count(usize::from(self.key_count));
        let excess = self
            .timings_ms
            .len()
            .saturating_sub(usize::from(self.window) * dim);
        self.timings_ms.drain(..excess);
    }
}

impl fmt::Debug for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Timings are never printed, so a `?profile` in a log line leaks nothing.
        f.debug_struct("Template")
            .field("key_count", &self.key_count)
            .field("learnt", &self.learnt)
            .field("stored", &self.timings_ms.len())
            .field("mismatches", &self.mismatches)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
#[path = "template_tests.rs"]
mod tests;
