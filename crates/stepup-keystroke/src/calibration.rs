//! Mapping of raw detector scores to impostor probabilities.
//!
//! Raw scores have no common scale: a user who types steadily gets smaller distances than one
//! who does not. Each raw score is therefore first normalised against the user's own genuine
//! baseline, the leave-one-out scores of the template's samples:
//! `z = (raw - median) / (1.4826 * MAD)`. A logistic function of `z`, fitted once on a data
//! set with equal weight for genuine and impostor samples, then gives a probability-like value
//! that the sample comes from an impostor, for a prior of one half.

use serde::{Deserialize, Serialize};

use crate::detector::median_in_place;

/// Scale factor that makes the median absolute deviation estimate a normal standard deviation.
const MAD_TO_SD: f64 = 1.4826;

/// Smallest baseline spread, as a fraction of the baseline median, so that a template whose
/// samples all score alike does not turn a small difference into certainty.
const MIN_RELATIVE_SPREAD: f64 = 0.05;

/// Logistic mapping `p = 1 / (1 + exp(-(slope * z + offset)))` of a normalised score `z`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    /// Increase of the log-odds of an impostor per unit of normalised score.
    pub slope: f64,
    /// Log-odds of an impostor at the median genuine score.
    pub offset: f64,
}

// === impl Calibration ===

impl Calibration {
    /// Returns the impostor probability of `raw`, given the genuine baseline scores.
    ///
    /// Returns `None` when the baseline is empty.
    pub fn probability(&self, raw: f64, genuine_scores: &[f64]) -> Option<f64> {
        let z = normalise(raw, genuine_scores)?;
        Some(self.probability_of_normalised(z))
    }

    /// Returns the impostor probability of an already normalised score.
    pub fn probability_of_normalised(&self, z: f64) -> f64 {
        let log_odds = self.slope * z + self.offset;
        1.0 / (1.0 + (-log_odds).exp())
    }

    /// Fits the mapping by logistic regression on normalised scores and impostor labels.
    ///
    /// Genuine and impostor samples get equal total weight, so the result assumes a prior of
    /// one half. Returns `None` unless both classes are present.
    pub fn fit(scores: &[f64], is_impostor: &[bool]) -> Option<Calibration> {
        let impostors = is_impostor.iter().filter(|&&label| label).count();
        let genuine = is_impostor.len() - impostors;
        if impostors == 0 || genuine == 0 || scores.len() != is_impostor.len() {
            return None;
        }
        let weight_of = |label: bool| {
            let count = if label { impostors } else { genuine };
            0.5 / count as f64
        };

        // Newton's method from the flat model, halving steps that do not lower the loss.
        let loss = |slope: f64, offset: f64| {
            negative_log_likelihood(slope, offset, scores, is_impostor, &weight_of)
        };
        let (mut slope, mut offset) = (0.0, 0.0);
        for _ in 0..100 {
            let step = newton_step(slope, offset, scores, is_impostor, &weight_of)?;
            let current = loss(slope, offset);
            let mut scale = 1.0;
            while loss(slope - scale * step.0, offset - scale * step.1) > current && scale > 1e-6 {
                scale /= 2.0;
            }
            slope -= scale * step.0;
            offset -= scale * step.1;
            if scale * step.0.abs().max(step.1.abs()) < 1e-10 {
                break;
            }
        }
        Some(Calibration { slope, offset })
    }
}

/// Returns `(raw - median) / spread` of the baseline, or `None` for an empty baseline.
pub fn normalise(raw: f64, genuine_scores: &[f64]) -> Option<f64> {
    if genuine_scores.is_empty() {
        return None;
    }
    let mut values = genuine_scores.to_vec();
    let median = median_in_place(&mut values);
    for value in &mut values {
        *value = (*value - median).abs();
    }
    let spread = (MAD_TO_SD * median_in_place(&mut values))
        .max(MIN_RELATIVE_SPREAD * median.abs())
        .max(f64::MIN_POSITIVE);
    Some((raw - median) / spread)
}

/// Returns the weighted negative log-likelihood of the labels at `(slope, offset)`.
fn negative_log_likelihood(
    slope: f64,
    offset: f64,
    scores: &[f64],
    is_impostor: &[bool],
    weight_of: &dyn Fn(bool) -> f64,
) -> f64 {
    scores
        .iter()
        .zip(is_impostor)
        .map(|(&z, &label)| {
            let log_odds = slope * z + offset;
            // ln(1 + exp(-t)) for the observed class, written to avoid overflow.
            let t = if label { log_odds } else { -log_odds };
            let loss = t.min(0.0).abs() + (-t.abs()).exp().ln_1p();
            weight_of(label) * loss
        })
        .sum()
}

/// Returns the Newton step for the weighted logistic log-likelihood at `(slope, offset)`.
fn newton_step(
    slope: f64,
    offset: f64,
    scores: &[f64],
    is_impostor: &[bool],
    weight_of: &dyn Fn(bool) -> f64,
) -> Option<(f64, f64)> {
    // Gradient and Hessian of the negative log-likelihood in (slope, offset).
    let (mut g0, mut g1, mut h00, mut h01, mut h11) = (0.0, 0.0, 0.0, 0.0, 0.0);
    for (&z, &label) in scores.iter().zip(is_impostor) {
        let weight = weight_of(label);
        let p = 1.0 / (1.0 + (-(slope * z + offset)).exp());
        let residual = weight * (p - f64::from(u8::from(label)));
        let curvature = weight * p * (1.0 - p);
        g0 += residual * z;
        g1 += residual;
        h00 += curvature * z * z;
        h01 += curvature * z;
        h11 += curvature;
    }
    let determinant = h00 * h11 - h01 * h01;
    if !determinant.is_normal() {
        return None;
    }
    Some((
        (h11 * g0 - h01 * g1) / determinant,
        (h00 * g1 - h01 * g0) / determinant,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalise_centres_on_the_baseline_median() {
        let baseline = [10.0, 11.0, 12.0, 13.0, 14.0];

        let z = normalise(12.0, &baseline).expect("non-empty baseline");
        let far = normalise(12.0 + 4.0 * 1.4826, &baseline).expect("non-empty baseline");

        assert_eq!(z, 0.0);
        assert!((far - 4.0).abs() < 1e-9, "{far}");
        assert_eq!(normalise(1.0, &[]), None);
    }

    #[test]
    fn constant_baseline_keeps_a_finite_spread() {
        let z = normalise(11.0, &[10.0; 5]).expect("non-empty baseline");

        assert!((z - 2.0).abs() < 1e-9, "{z}");
    }

    #[test]
    fn probability_rises_with_the_score() {
        let calibration = Calibration {
            slope: 1.5,
            offset: -3.0,
        };

        let low = calibration.probability_of_normalised(0.0);
        let middle = calibration.probability_of_normalised(2.0);
        let high = calibration.probability_of_normalised(6.0);

        assert!(low < 0.1, "{low}");
        assert!((middle - 0.5).abs() < 1e-12, "{middle}");
        assert!(high > 0.99, "{high}");
    }

    #[test]
    fn fit_recovers_the_threshold_between_classes() {
        // Overlapping classes whose boundary is at z = 2.
        let scores: Vec<f64> = (0..40).map(|i| f64::from(i) / 10.0).collect();
        let labels: Vec<bool> = scores
            .iter()
            .enumerate()
            .map(|(i, &z)| if i % 5 == 0 { z < 2.0 } else { z >= 2.0 })
            .collect();

        let calibration = Calibration::fit(&scores, &labels).expect("both classes present");

        let midpoint = -calibration.offset / calibration.slope;
        assert!(calibration.slope > 0.0, "{calibration:?}");
        assert!((midpoint - 2.0).abs() < 0.2, "{midpoint}");
    }

    #[test]
    fn fit_needs_both_classes() {
        assert_eq!(Calibration::fit(&[1.0, 2.0], &[true, true]), None);
    }
}
