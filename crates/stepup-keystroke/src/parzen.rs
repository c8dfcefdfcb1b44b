//! A recency-weighted Parzen-window detector, this crate's own design.
//!
//! Each feature gets a one-dimensional kernel density estimate over the newest training
//! samples, and a sample scores `sum_j w_j * -ln(p_j(x_j) + floor)`: the less typical each of
//! its times is for the user, the higher the score. Four choices make it beat the
//! scaled-Manhattan detector on the MEU-Mobile KSD data set; each was measured on the
//! odd-numbered subjects only.
//!
//! - Per-feature bandwidths come from the median absolute deviation, so one slow login among
//!   the training samples does not widen every kernel.
//! - The density floor bounds what one feature can add, so a single odd interval (a hesitation)
//!   cannot outvote the rest, as it can in a plain sum of scaled distances.
//! - Newer samples weigh more (exponential decay with a half-life in samples), which follows the
//!   slow speed-up of users who keep typing the same field.
//! - The total hold time is added as one more feature with weight 3. Hold times are
//!   characteristic of a person, and their sum is far less noisy than each of them.

use crate::calibration::Calibration;
use crate::detector::{
    Detector, Deviation, FitError, Model, Samples, largest_by_magnitude, median_in_place,
};
use crate::features::{FeatureKind, feature_kind};

/// Scale factor that makes the median absolute deviation estimate a normal standard deviation.
const MAD_TO_SD: f64 = 1.4826;

/// Smallest density floor accepted from [`ParzenConfig::density_floor`].
const MIN_DENSITY_FLOOR: f64 = 1e-12;

/// Half-width of the biweight kernel, in bandwidths.
const KERNEL_SUPPORT: f64 = 3.0;

/// Default calibration, fitted with [`crate::fit_calibration`] on the odd-numbered subjects of
/// the MEU-Mobile KSD data set under the Killourhy–Maxion split.
const CALIBRATION: Calibration = Calibration {
    slope: 1.41,
    offset: -3.01,
};

/// Settings of [`ParzenDetector`]. The defaults were tuned on the odd-numbered subjects of the
/// MEU-Mobile KSD data set.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ParzenConfig {
    /// Number of newest training samples used. Default: 20.
    pub window: usize,
    /// Age in samples at which a training sample weighs half as much as the newest. Default: 8.
    pub half_life_samples: f64,
    /// Kernel bandwidth as a fraction of the feature's robust standard deviation. Default: 0.3.
    pub bandwidth: f64,
    /// Density added before the logarithm, which caps each feature's share of the score at
    /// `-ln(floor)`. Default: 0.02.
    pub density_floor: f64,
    /// Weight of the total hold time relative to each single feature. Default: 3.
    pub total_hold_weight: f64,
    /// Smallest robust standard deviation as a fraction of the feature's median, so that a
    /// template of near-identical samples still tolerates small changes. Default: 0.1.
    pub min_relative_spread: f64,
    /// Smallest robust standard deviation in milliseconds. Default: 1.
    pub min_spread_ms: f64,
}

impl Default for ParzenConfig {
    fn default() -> Self {
        ParzenConfig {
            window: 20,
            half_life_samples: 8.0,
            bandwidth: 0.3,
            density_floor: 0.02,
            total_hold_weight: 3.0,
            min_relative_spread: 0.1,
            min_spread_ms: 1.0,
        }
    }
}

/// The recency-weighted Parzen-window detector; see the module documentation.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ParzenDetector {
    /// Settings.
    pub config: ParzenConfig,
}

impl Detector for ParzenDetector {
    fn name(&self) -> &'static str {
        "parzen"
    }

    fn fit(&self, training: Samples<'_>) -> Result<Box<dyn Model>, FitError> {
        let training = training.newest(self.config.window.max(2));
        if training.len() < 2 {
            return Err(FitError::TooFewSamples {
                found: training.len(),
                needed: 2,
            });
        }
        Ok(Box::new(ParzenModel::new(&self.config, training)))
    }

    fn calibration(&self) -> Calibration {
        CALIBRATION
    }
}

/// A trained Parzen model. Feature `dim` (the last) is the total hold time.
struct ParzenModel {
    key_count: usize,
    /// Training values by feature: feature `j` of sample `i` is at `j * samples + i`.
    by_feature: Vec<f64>,
    samples: usize,
    /// Recency weight of each sample, summing to 1.
    sample_weights: Vec<f64>,
    /// Inverse kernel half-widths, `1 / (KERNEL_SUPPORT * bandwidth)`, per feature.
    inverse_half_widths: Vec<f64>,
    medians: Vec<f64>,
    /// Floored median absolute deviations, the unit of [`Deviation::spread_units`].
    mads: Vec<f64>,
    /// Weight of the last feature, the total hold time; every other feature weighs 1.
    total_hold_weight: f64,
    density_floor: f64,
}

// === impl ParzenModel ===

impl ParzenModel {
    fn new(config: &ParzenConfig, training: Samples<'_>) -> Self {
        let samples = training.len();
        let features = training.dim() + 1;
        let mut by_feature = Vec::with_capacity(features * samples);
        for feature in 0..training.dim() {
            by_feature.extend(training.rows().map(|row| row[feature]));
        }
        let key_count = training.key_count();
        by_feature.extend(
            training
                .rows()
                .map(|row| row[..key_count].iter().sum::<f64>()),
        );

        let mut medians = Vec::with_capacity(features);
        let mut mads = Vec::with_capacity(features);
        let mut inverse_half_widths = Vec::with_capacity(features);
        let mut scratch = vec![0.0; samples];
        for column in by_feature.chunks_exact(samples) {
            let (median, spread) = robust_spread(config, column, &mut scratch);
            medians.push(median);
            mads.push(spread / MAD_TO_SD);
            inverse_half_widths.push(1.0 / (KERNEL_SUPPORT * config.bandwidth * spread));
        }

        ParzenModel {
            key_count,
            by_feature,
            samples,
            sample_weights: recency_weights(samples, config.half_life_samples),
            inverse_half_widths,
            medians,
            mads,
            total_hold_weight: config.total_hold_weight,
            // A zero floor would make one empty kernel sum an infinite score.
            density_floor: config.density_floor.max(MIN_DENSITY_FLOOR),
        }
    }

    /// Returns the kernel density of feature `feature` at `value`.
    fn density(&self, feature: usize, value: f64) -> f64 {
        let column = &self.by_feature[feature * self.samples..(feature + 1) * self.samples];
        let inverse_half_width = self.inverse_half_widths[feature];
        // Four independent partial sums let the compiler vectorise the loop, which it may not do
        // for one running sum because that would reorder floating-point additions.
        let mut partial = [0.0; 4];
        let mut centres = column.chunks_exact(4);
        let mut weights = self.sample_weights.chunks_exact(4);
        for (centre, weight) in centres.by_ref().zip(weights.by_ref()) {
            for lane in 0..4 {
                partial[lane] +=
                    weight[lane] * biweight((value - centre[lane]) * inverse_half_width);
            }
        }
        let tail: f64 = centres
            .remainder()
            .iter()
            .zip(weights.remainder())
            .map(|(&centre, &weight)| weight * biweight((value - centre) * inverse_half_width))
            .sum();
        partial.iter().sum::<f64>() + tail
    }

    /// Writes into `densities` the density of feature `feature` at each training sample's own
    /// value, leaving that sample out.
    fn left_out_densities(&self, feature: usize, densities: &mut [f64]) {
        let column = &self.by_feature[feature * self.samples..(feature + 1) * self.samples];
        for ((density, &value), &weight) in
            densities.iter_mut().zip(column).zip(&self.sample_weights)
        {
            // The full sum includes the sample's own kernel, which is `weight * biweight(0)`.
            *density = (self.density(feature, value) - weight) / (1.0 - weight);
        }
    }

    /// Returns the score share of the total hold time given its density.
    fn total_hold_score(&self, density: f64) -> f64 {
        self.total_hold_weight * -(density + self.density_floor).ln()
    }
}

impl Model for ParzenModel {
    fn score(&self, sample: &[f64]) -> f64 {
        // `take` keeps a sample of the wrong length from indexing past the model; templates
        // check the length before scoring.
        let last = self.medians.len() - 1;
        let total_hold: f64 = sample.iter().take(self.key_count).sum();
        let mut sum = NegativeLogSum::default();
        for (feature, &value) in sample.iter().take(last).enumerate() {
            sum.add(self.density(feature, value) + self.density_floor);
        }
        sum.total() + self.total_hold_score(self.density(last, total_hold))
    }

    fn training_scores(&self) -> Vec<f64> {
        // Bandwidths and medians stay those of the full window: refitting them per left-out
        // sample would cost one fit per sample, and they change little when one sample goes.
        let last = self.medians.len() - 1;
        let mut densities = vec![0.0; self.samples];
        let mut sums = vec![NegativeLogSum::default(); self.samples];
        for feature in 0..last {
            self.left_out_densities(feature, &mut densities);
            for (sum, density) in sums.iter_mut().zip(&densities) {
                sum.add(density + self.density_floor);
            }
        }
        self.left_out_densities(last, &mut densities);
        sums.iter()
            .zip(&densities)
            .map(|(sum, &density)| sum.total() + self.total_hold_score(density))
            .collect()
    }

    fn largest_deviation(&self, sample: &[f64]) -> Deviation {
        let last = self.medians.len() - 1;
        let total_hold: f64 = sample.iter().take(self.key_count).sum();
        let values = sample
            .iter()
            .take(last)
            .copied()
            .chain(std::iter::once(total_hold));
        let deviations = values
            .zip(self.medians.iter().zip(&self.mads))
            .map(|(value, (median, mad))| (value - median) / mad);
        let (feature, spread_units) = largest_by_magnitude(deviations);
        let (kind, index) = feature_kind(self.key_count, feature);
        Deviation {
            kind,
            index: if kind == FeatureKind::TotalHold {
                0
            } else {
                index
            },
            spread_units,
        }
    }
}

/// Sum of `-ln(x)` over positive factors, computed with one logarithm per ~250 orders of
/// magnitude instead of one per factor.
#[derive(Clone, Copy, Debug)]
struct NegativeLogSum {
    flushed: f64,
    product: f64,
}

impl Default for NegativeLogSum {
    fn default() -> Self {
        NegativeLogSum {
            flushed: 0.0,
            product: 1.0,
        }
    }
}

impl NegativeLogSum {
    fn add(&mut self, factor: f64) {
        self.product *= factor;
        // Flush well before the product can underflow, even for factors near MIN_DENSITY_FLOOR.
        if self.product < 1e-250 {
            self.flushed -= self.product.ln();
            self.product = 1.0;
        }
    }

    fn total(&self) -> f64 {
        self.flushed - self.product.ln()
    }
}

/// Returns the median and the floored robust standard deviation of `column`.
fn robust_spread(config: &ParzenConfig, column: &[f64], scratch: &mut [f64]) -> (f64, f64) {
    scratch.copy_from_slice(column);
    let median = median_in_place(scratch);
    for (deviation, value) in scratch.iter_mut().zip(column) {
        *deviation = (value - median).abs();
    }
    let spread = (MAD_TO_SD * median_in_place(scratch))
        .max(config.min_relative_spread * median.abs())
        .max(config.min_spread_ms);
    (median, spread)
}

/// Returns weights halving every `half_life` samples back from the newest, summing to 1.
fn recency_weights(samples: usize, half_life: f64) -> Vec<f64> {
    let mut weights: Vec<f64> = (0..samples)
        .map(|index| {
            let age = (samples - 1 - index) as f64;
            if half_life > 0.0 {
                0.5f64.powf(age / half_life)
            } else {
                1.0
            }
        })
        .collect();
    let total: f64 = weights.iter().sum();
    weights.iter_mut().for_each(|weight| *weight /= total);
    weights
}

/// Biweight kernel scaled to a peak of 1, of a distance `r` in kernel half-widths.
fn biweight(r: f64) -> f64 {
    // `max` instead of a branch keeps the density loops free of jumps, so they vectorise.
    let t = (1.0 - r * r).max(0.0);
    t * t
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Training samples of three keys (seven features) that alternate around a fixed rhythm.
    fn training(count: usize, hold: f64) -> Vec<f64> {
        (0..count)
            .flat_map(|i| {
                let jitter = if i % 2 == 0 { 5.0 } else { -5.0 } * (1.0 + (i % 3) as f64);
                [
                    hold + jitter,
                    hold - jitter,
                    hold,
                    200.0 + jitter,
                    250.0 - jitter,
                    100.0 + jitter,
                    150.0,
                ]
            })
            .collect()
    }

    fn fit(values: &[f64]) -> Box<dyn Model> {
        let samples = Samples::new(3, values).expect("whole rows");
        ParzenDetector::default()
            .fit(samples)
            .expect("enough samples")
    }

    #[test]
    fn typical_sample_scores_lower_than_a_slow_one() {
        let model = fit(&training(20, 100.0));

        let typical = model.score(&[100.0, 100.0, 100.0, 200.0, 250.0, 100.0, 150.0]);
        let slow = model.score(&[160.0, 150.0, 170.0, 300.0, 350.0, 180.0, 250.0]);

        assert!(typical < slow, "typical {typical}, slow {slow}");
    }

    #[test]
    fn each_feature_adds_at_most_its_capped_share() {
        let model = fit(&training(20, 100.0));
        let cap = -(0.02f64).ln();

        let far = model.score(&[1e4; 7]);

        // Seven features at weight 1 and the total hold at weight 3.
        assert!((far - 10.0 * cap).abs() < 1e-9, "{far}");
    }

    #[test]
    fn wrong_length_sample_does_not_panic() {
        let model = fit(&training(20, 100.0));

        assert!(model.score(&[100.0, 100.0]).is_finite());
        assert!(model.score(&[100.0; 12]).is_finite());
        assert!(model.largest_deviation(&[]).spread_units.is_finite());
    }

    #[test]
    fn newer_samples_weigh_more() {
        let weights = recency_weights(17, 8.0);

        assert!((weights.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        assert!((weights[16] / weights[8] - 2.0).abs() < 1e-12);
        assert!((weights[16] / weights[0] - 4.0).abs() < 1e-12);
    }

    #[test]
    fn fit_uses_only_the_window_of_newest_samples() {
        let mut values = training(10, 300.0);
        values.extend(training(20, 100.0));
        let only_new = fit(&training(20, 100.0));
        let probe = [100.0, 100.0, 100.0, 200.0, 250.0, 100.0, 150.0];

        assert_eq!(fit(&values).score(&probe), only_new.score(&probe));
    }

    #[test]
    fn training_scores_cover_every_sample() {
        let model = fit(&training(12, 100.0));

        let scores = model.training_scores();

        assert_eq!(scores.len(), 12);
        assert!(
            scores
                .iter()
                .all(|score| score.is_finite() && *score >= 0.0)
        );
    }

    #[test]
    fn largest_deviation_can_be_the_total_hold() {
        let model = fit(&training(20, 100.0));

        // The first two hold times vary in opposite directions, so their sum is steadier than either,
        // and three slightly long hold times stand out most in the total.
        let deviation = model.largest_deviation(&[115.0, 115.0, 105.0, 200.0, 250.0, 100.0, 150.0]);

        assert_eq!(deviation.kind, FeatureKind::TotalHold);
        assert!(deviation.spread_units > 0.0);
    }

    #[test]
    fn biweight_kernel_shape() {
        assert_eq!(biweight(0.0), 1.0);
        assert_eq!(biweight(1.0), 0.0);
        assert_eq!(biweight(-1.5), 0.0);
        assert!((biweight(0.5) - 0.5625).abs() < 1e-12);
    }
}
