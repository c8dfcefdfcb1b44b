//! The scaled-Manhattan detector of Killourhy and Maxion.
//!
//! K. S. Killourhy and R. A. Maxion, "Comparing Anomaly-Detection Algorithms for Keystroke
//! Dynamics", DSN 2009: training computes the mean vector and the mean absolute deviation of
//! each feature from that mean, and the score of a sample `x` is
//! `sum_i |x_i - mean_i| / mad_i`. It was the best of the 14 detectors compared there.

use crate::calibration::Calibration;
use crate::detector::{Detector, Deviation, FitError, Model, Samples, largest_by_magnitude};
use crate::features::feature_kind;

/// Mean absolute deviation used when every training value of a feature is equal, so that the
/// score stays finite; in milliseconds.
const MIN_MAD_MS: f64 = 1e-3;

/// Default calibration, fitted with [`crate::fit_calibration`] on the odd-numbered subjects of
/// the MEU-Mobile KSD data set under the Killourhy–Maxion split.
const CALIBRATION: Calibration = Calibration {
    slope: 0.63,
    offset: -1.64,
};

/// The scaled-Manhattan detector, exactly as in Killourhy and Maxion (DSN 2009).
///
/// It uses every training sample it is given, with equal weight.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ScaledManhattan;

impl Detector for ScaledManhattan {
    fn name(&self) -> &'static str {
        "scaled-manhattan"
    }

    fn fit(&self, training: Samples<'_>) -> Result<Box<dyn Model>, FitError> {
        if training.len() < 2 {
            return Err(FitError::TooFewSamples {
                found: training.len(),
                needed: 2,
            });
        }
        Ok(Box::new(ManhattanModel::new(training)))
    }

    fn calibration(&self) -> Calibration {
        CALIBRATION
    }
}

/// A trained scaled-Manhattan model.
struct ManhattanModel {
    key_count: usize,
    samples: usize,
    /// Training values by feature: feature `j` of sample `i` is at `j * samples + i`.
    by_feature: Vec<f64>,
    mean: Vec<f64>,
    mad: Vec<f64>,
}

// === impl ManhattanModel ===

impl ManhattanModel {
    fn new(training: Samples<'_>) -> Self {
        let samples = training.len();
        let mut by_feature = Vec::with_capacity(training.dim() * samples);
        for feature in 0..training.dim() {
            by_feature.extend(training.rows().map(|row| row[feature]));
        }
        let count = samples as f64;
        let mut mean = Vec::with_capacity(training.dim());
        let mut mad = Vec::with_capacity(training.dim());
        for column in by_feature.chunks_exact(samples) {
            let centre = column.iter().sum::<f64>() / count;
            let spread = column.iter().map(|x| (x - centre).abs()).sum::<f64>() / count;
            mean.push(centre);
            mad.push(spread.max(MIN_MAD_MS));
        }
        ManhattanModel {
            key_count: training.key_count(),
            samples,
            by_feature,
            mean,
            mad,
        }
    }
}

impl Model for ManhattanModel {
    fn score(&self, sample: &[f64]) -> f64 {
        sample
            .iter()
            .zip(self.mean.iter().zip(&self.mad))
            .map(|(x, (mean, mad))| (x - mean).abs() / mad)
            .sum()
    }

    fn training_scores(&self) -> Vec<f64> {
        // Exact leave-one-out: the mean and the mean absolute deviation are recomputed without
        // the left-out sample, feature by feature.
        let count = (self.samples - 1) as f64;
        let mut scores = vec![0.0; self.samples];
        for column in self.by_feature.chunks_exact(self.samples) {
            let sum: f64 = column.iter().sum();
            for (score, &left_out) in scores.iter_mut().zip(column) {
                let mean = (sum - left_out) / count;
                let total = sum_abs_deviation(column, mean);
                let own = (left_out - mean).abs();
                let mad = ((total - own) / count).max(MIN_MAD_MS);
                *score += own / mad;
            }
        }
        scores
    }

    fn largest_deviation(&self, sample: &[f64]) -> Deviation {
        let deviations = sample
            .iter()
            .zip(self.mean.iter().zip(&self.mad))
            .map(|(x, (mean, mad))| (x - mean) / mad);
        let (feature, spread_units) = largest_by_magnitude(deviations);
        let (kind, index) = feature_kind(self.key_count, feature);
        Deviation {
            kind,
            index,
            spread_units,
        }
    }
}

/// Returns `sum |x - centre|` over `values`.
fn sum_abs_deviation(values: &[f64], centre: f64) -> f64 {
    // Four independent partial sums let the compiler vectorise the loop, which it may not do
    // for one running sum because that would reorder floating-point additions.
    let mut partial = [0.0; 4];
    let chunks = values.chunks_exact(4);
    let tail: f64 = chunks.remainder().iter().map(|x| (x - centre).abs()).sum();
    for chunk in chunks {
        for (sum, x) in partial.iter_mut().zip(chunk) {
            *sum += (x - centre).abs();
        }
    }
    partial.iter().sum::<f64>() + tail
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::features::FeatureKind;

    /// Four samples of two keys: hold 1, hold 2, down-down, up-down.
    const TRAINING: [f64; 16] = [
        100.0, 80.0, 200.0, 100.0, //
        110.0, 90.0, 220.0, 110.0, //
        90.0, 70.0, 180.0, 90.0, //
        100.0, 80.0, 200.0, 100.0,
    ];

    fn model() -> Box<dyn Model> {
        let samples = Samples::new(2, &TRAINING).expect("whole rows");
        ScaledManhattan.fit(samples).expect("enough samples")
    }

    #[test]
    fn score_sums_scaled_deviations() {
        // Means are 100, 80, 200, 100; mean absolute deviations 5, 5, 10, 5.
        let score = model().score(&[110.0, 80.0, 180.0, 100.0]);

        assert!((score - (2.0 + 0.0 + 2.0 + 0.0)).abs() < 1e-12, "{score}");
    }

    #[test]
    fn mean_sample_scores_zero() {
        assert_eq!(model().score(&[100.0, 80.0, 200.0, 100.0]), 0.0);
    }

    #[test]
    fn training_scores_leave_each_sample_out() {
        let scores = model().training_scores();

        // Leaving out the second sample: means 96.67, 76.67, 193.33, 96.67 and mean absolute
        // deviations 4.44, 4.44, 8.89, 4.44, so each feature of the left-out sample scores 3.
        assert_eq!(scores.len(), 4);
        assert!((scores[1] - 12.0).abs() < 1e-9, "{}", scores[1]);
    }

    #[test]
    fn largest_deviation_reports_kind_position_and_sign() {
        let deviation = model().largest_deviation(&[100.0, 80.0, 150.0, 100.0]);

        assert_eq!(deviation.kind, FeatureKind::DownDown);
        assert_eq!(deviation.index, 0);
        assert!((deviation.spread_units + 5.0).abs() < 1e-12);
    }

    #[test]
    fn fit_needs_two_samples() {
        let samples = Samples::new(2, &TRAINING[..4]).expect("one row");

        assert!(matches!(
            ScaledManhattan.fit(samples),
            Err(FitError::TooFewSamples { found: 1, .. })
        ));
    }
}
