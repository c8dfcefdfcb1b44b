//! Receiver operating characteristic of a scorer against labelled attempts.

use std::cmp::Ordering;

use serde::Serialize;

/// True- and false-positive rates when every score at or above `threshold` is flagged.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct RocPoint {
    /// Lowest flagged score.
    pub threshold: f64,
    /// Share of positives flagged, NaN when there are no positives.
    pub tpr: f64,
    /// Share of negatives flagged, NaN when there are no negatives.
    pub fpr: f64,
}

/// The ROC curve of a set of scores with its area.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Roc {
    /// One point per distinct score, highest first, after a first point at threshold +∞
    /// that flags nothing. Tied scores share a point, so ties give a diagonal segment.
    pub points: Vec<RocPoint>,
    /// Area under the curve by the trapezoid rule, which equals the probability that a random
    /// positive scores above a random negative, counting ties as one half. NaN when either
    /// class is empty.
    pub auc: f64,
    /// Number of positive labels.
    pub positives: u64,
    /// Number of negative labels.
    pub negatives: u64,
}

/// Computes the ROC curve of `(score, is_positive)` pairs, where higher scores mean more
/// suspicious.
///
/// Scores are ordered by the IEEE 754 total order, so a NaN score ranks above +∞. It sorts a
/// copy of the input: O(n log n) time and 16 bytes per pair.
pub fn roc(scores_and_labels: &[(f64, bool)]) -> Roc {
    let mut sorted = scores_and_labels.to_vec();
    sorted.sort_by(|a, b| b.0.total_cmp(&a.0));
    let positives = sorted.iter().filter(|(_, label)| *label).count() as u64;
    let negatives = sorted.len() as u64 - positives;
    let point = |threshold, true_positives, false_positives| RocPoint {
        threshold,
        tpr: rate(true_positives, positives),
        fpr: rate(false_positives, negatives),
    };

    let mut points = vec![point(f64::INFINITY, 0, 0)];
    let (mut true_positives, mut false_positives) = (0, 0);
    for group in sorted.chunk_by(|a, b| a.0.total_cmp(&b.0) == Ordering::Equal) {
        let flagged_positives = group.iter().filter(|(_, label)| *label).count() as u64;
        true_positives += flagged_positives;
        false_positives += group.len() as u64 - flagged_positives;
        points.push(point(group[0].0, true_positives, false_positives));
    }
    let auc = if positives == 0 || negatives == 0 {
        f64::NAN
    } else {
        trapezoid_area(&points)
    };
    Roc {
        points,
        auc,
        positives,
        negatives,
    }
}

/// Returns the rates at each threshold, flagging scores at or above it; see [`roc`].
pub fn rates_at(scores_and_labels: &[(f64, bool)], thresholds: &[f64]) -> Vec<RocPoint> {
    roc(scores_and_labels).rates_at(thresholds)
}

fn rate(hits: u64, all: u64) -> f64 {
    if all == 0 {
        return f64::NAN;
    }
    hits as f64 / all as f64
}

fn trapezoid_area(points: &[RocPoint]) -> f64 {
    points
        .windows(2)
        .map(|pair| (pair[1].fpr - pair[0].fpr) * (pair[1].tpr + pair[0].tpr) / 2.0)
        .sum()
}

// === impl Roc ===

impl Roc {
    /// Returns the rates at each threshold, flagging scores at or above it.
    ///
    /// A NaN threshold flags nothing.
    pub fn rates_at(&self, thresholds: &[f64]) -> Vec<RocPoint> {
        let scored = self.points.get(1..).unwrap_or_default();
        thresholds
            .iter()
            .map(|&threshold| {
                // Points after the first have strictly falling thresholds, so the ones at or
                // above `threshold` form a prefix; the last of them has the rates.
                let flagged = scored.partition_point(|point| point.threshold >= threshold);
                let reached = self.points[flagged];
                RocPoint {
                    threshold,
                    ..reached
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perfect_ranking_has_area_one() {
        let data = [(0.9, true), (0.8, true), (0.3, false), (0.1, false)];
        let curve = roc(&data);
        assert_eq!(curve.auc, 1.0);
        assert_eq!(curve.positives, 2);
        assert_eq!(curve.negatives, 2);
        assert_eq!(curve.points.len(), 5);
        let last = curve.points.last().unwrap();
        assert_eq!((last.tpr, last.fpr), (1.0, 1.0));
    }

    #[test]
    fn reversed_ranking_has_area_zero() {
        let data = [(0.9, false), (0.8, false), (0.3, true), (0.1, true)];
        assert_eq!(roc(&data).auc, 0.0);
    }

    #[test]
    fn ties_count_one_half() {
        let all_tied = [(0.5, true), (0.5, false), (0.5, true), (0.5, false)];
        let curve = roc(&all_tied);
        assert_eq!(curve.auc, 0.5);
        assert_eq!(curve.points.len(), 2, "one point for the tied group");

        // Pairs: (0.9, 0.5) = 1, (0.9, 0.1) = 1, (0.5, 0.5) = 1/2, (0.5, 0.1) = 1.
        let partly_tied = [(0.9, true), (0.5, true), (0.5, false), (0.1, false)];
        assert_eq!(roc(&partly_tied).auc, 0.875);
    }

    #[test]
    fn one_class_gives_nan_area() {
        let curve = roc(&[(0.9, true), (0.1, true)]);
        assert!(curve.auc.is_nan());
        assert!(curve.points.iter().all(|point| point.fpr.is_nan()));
        assert!(roc(&[]).auc.is_nan());
    }

    #[test]
    fn rates_at_flags_scores_at_or_above_threshold() {
        let data = [
            (0.95, true),
            (0.7, true),
            (0.7, false),
            (0.4, true),
            (0.2, false),
            (0.1, false),
        ];
        let rates = rates_at(&data, &[1.0, 0.95, 0.7, 0.5, 0.0, f64::NAN]);
        let expected = [
            (1.0, 0.0, 0.0),
            (0.95, 1.0 / 3.0, 0.0),
            (0.7, 2.0 / 3.0, 1.0 / 3.0),
            (0.5, 2.0 / 3.0, 1.0 / 3.0),
            (0.0, 1.0, 1.0),
        ];
        for (rate, (threshold, tpr, fpr)) in rates.iter().zip(expected) {
            assert_eq!(rate.threshold, threshold);
            assert_eq!(rate.tpr, tpr, "tpr at {threshold}");
            assert_eq!(rate.fpr, fpr, "fpr at {threshold}");
        }
        let nan = rates[5];
        assert!(nan.threshold.is_nan());
        assert_eq!((nan.tpr, nan.fpr), (0.0, 0.0));
    }
}
