//! The detector interface shared by all anomaly detectors, and their training input.

use std::fmt;

use serde::Serialize;

use crate::calibration::Calibration;
use crate::features::{FeatureKind, feature_count};

/// Errors from [`Detector::fit`] and [`Samples::new`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FitError {
    /// Fewer training samples than the detector needs.
    #[error("failed to fit the detector: {found} training samples, at least {needed} needed")]
    TooFewSamples {
        /// Number of samples given.
        found: usize,
        /// Minimum number of samples.
        needed: usize,
    },
    /// The flat value buffer is not a whole number of samples of the given key count.
    #[error(
        "failed to read training samples: {values} values is not a multiple of {per_sample} \
         features per sample for {key_count} keys"
    )]
    ShapeMismatch {
        /// Number of keys per sample.
        key_count: usize,
        /// Number of features per sample.
        per_sample: usize,
        /// Length of the value buffer.
        values: usize,
    },
}

/// Training samples of one user and field, oldest first, as one row-major buffer.
#[derive(Clone, Copy, Debug)]
pub struct Samples<'a> {
    key_count: usize,
    values: &'a [f64],
}

// === impl Samples ===

impl<'a> Samples<'a> {
    /// Wraps `values`, which contains whole samples of [`feature_count`]`(key_count)` features.
    pub fn new(key_count: usize, values: &'a [f64]) -> Result<Self, FitError> {
        let per_sample = feature_count(key_count);
        if key_count < 2 || !values.len().is_multiple_of(per_sample) {
            return Err(FitError::ShapeMismatch {
                key_count,
                per_sample,
                values: values.len(),
            });
        }
        Ok(Samples { key_count, values })
    }

    /// Returns the number of keys per sample.
    pub fn key_count(&self) -> usize {
        self.key_count
    }

    /// Returns the number of features per sample.
    pub fn dim(&self) -> usize {
        feature_count(self.key_count)
    }

    /// Returns the number of samples.
    pub fn len(&self) -> usize {
        self.values.len() / self.dim()
    }

    /// Returns whether there are no samples.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Returns sample `index`, 0 being the oldest.
    pub fn row(&self, index: usize) -> &'a [f64] {
        let dim = self.dim();
        &self.values[index * dim..(index + 1) * dim]
    }

    /// Iterates over the samples, oldest first.
    pub fn rows(&self) -> impl ExactSizeIterator<Item = &'a [f64]> + Clone + 'a {
        self.values.chunks_exact(self.dim())
    }

    /// Returns the newest `count` samples, or all of them if there are fewer.
    pub fn newest(&self, count: usize) -> Samples<'a> {
        let skip = self.len().saturating_sub(count) * self.dim();
        Samples {
            key_count: self.key_count,
            values: &self.values[skip..],
        }
    }
}

/// A one-class anomaly detector: trained on a user's genuine samples, it scores new samples.
pub trait Detector: Send + Sync {
    /// Returns the detector's stable name, used in reports.
    fn name(&self) -> &'static str;

    /// Trains a model on the user's genuine samples, oldest first.
    fn fit(&self, training: Samples<'_>) -> Result<Box<dyn Model>, FitError>;

    /// Returns the mapping from this detector's normalised scores to impostor probabilities.
    fn calibration(&self) -> Calibration;
}

/// A trained detector for one user and field.
pub trait Model: Send + Sync {
    /// Scores a sample with the training key count; higher means less like the user.
    ///
    /// A sample of another length gives a meaningless score but no panic, so callers check the
    /// length first, as [`crate::Template::score`] does.
    fn score(&self, sample: &[f64]) -> f64;

    /// Returns the leave-one-out score of each training sample, the user's genuine baseline.
    fn training_scores(&self) -> Vec<f64>;

    /// Returns the feature that deviates most from the user's usual value.
    fn largest_deviation(&self, sample: &[f64]) -> Deviation;
}

/// How far one feature of a sample is from the user's usual value.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Deviation {
    /// Kind of the feature.
    pub kind: FeatureKind,
    /// 0-based index within the kind: the key for holds, the first key of the pair otherwise.
    pub index: usize,
    /// Signed distance from the usual value in absolute deviations (mean absolute deviations
    /// for scaled Manhattan, median absolute deviations for Parzen); positive is slower.
    pub spread_units: f64,
}

impl fmt::Display for Deviation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (first, second) = (self.index + 1, self.index + 2);
        match self.kind {
            FeatureKind::Hold => write!(f, "hold time of key {first}")?,
            FeatureKind::DownDown => write!(f, "down-down time from key {first} to key {second}")?,
            FeatureKind::UpDown => write!(f, "up-down time from key {first} to key {second}")?,
            FeatureKind::TotalHold => write!(f, "total hold time")?,
        }
        let direction = if self.spread_units >= 0.0 {
            "longer"
        } else {
            "shorter"
        };
        write!(
            f,
            " is {:.1} MADs {direction} than usual",
            self.spread_units.abs()
        )
    }
}

/// Returns the median of `values`, reordering them; 0 for an empty slice.
pub(crate) fn median_in_place(values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let len = values.len();
    let (below, upper, _) = values.select_nth_unstable_by(len / 2, f64::total_cmp);
    let upper = *upper;
    if len % 2 == 1 {
        return upper;
    }
    let lower = below.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (lower + upper) / 2.0
}

/// Returns the index and signed value of the entry with the largest magnitude.
pub(crate) fn largest_by_magnitude(values: impl Iterator<Item = f64>) -> (usize, f64) {
    values.enumerate().fold((0, 0.0), |best, (index, value)| {
        if value.abs() > best.1.abs() {
            (index, value)
        } else {
            best
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_handles_odd_even_and_empty() {
        assert_eq!(median_in_place(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median_in_place(&mut [4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median_in_place(&mut []), 0.0);
    }

    #[test]
    fn samples_reject_partial_rows() {
        let values = [0.0; 8];

        let error = Samples::new(3, &values).expect_err("8 is not a multiple of 7");

        assert!(matches!(
            error,
            FitError::ShapeMismatch { per_sample: 7, .. }
        ));
    }

    #[test]
    fn newest_keeps_the_latest_rows() {
        let values: Vec<f64> = (0..21).map(f64::from).collect();
        let samples = Samples::new(3, &values).expect("three rows of seven");

        let newest = samples.newest(2);

        assert_eq!(newest.len(), 2);
        assert_eq!(newest.row(0)[0], 7.0);
        assert_eq!(samples.newest(9).len(), 3);
    }

    #[test]
    fn deviation_names_kind_and_position_only() {
        let deviation = Deviation {
            kind: FeatureKind::Hold,
            index: 4,
            spread_units: 3.07,
        };
        let pair = Deviation {
            kind: FeatureKind::UpDown,
            index: 0,
            spread_units: -2.0,
        };

        assert_eq!(
            deviation.to_string(),
            "hold time of key 5 is 3.1 MADs longer than usual"
        );
        assert_eq!(
            pair.to_string(),
            "up-down time from key 1 to key 2 is 2.0 MADs shorter than usual"
        );
    }
}
