//! Equal-error rate from genuine and impostor scores.

/// Returns the equal-error rate of a detector whose higher scores mean "impostor".
///
/// The ROC curve has one point per distinct threshold `t`, where samples scoring above `t` are
/// rejected: the false-accept rate is the share of impostor scores at or below `t`, the
/// false-reject rate the share of genuine scores above it. The curve starts at (0, 1) for a
/// threshold below every score. Between consecutive points the curve is the straight segment
/// between them, and the EER is where that curve crosses the line false-accept = false-reject.
/// Returns `None` if either set is empty or contains a NaN.
pub fn equal_error_rate(genuine: &[f64], impostor: &[f64]) -> Option<f64> {
    if genuine.is_empty() || impostor.is_empty() {
        return None;
    }
    if genuine.iter().chain(impostor).any(|score| score.is_nan()) {
        return None;
    }
    let mut genuine = genuine.to_vec();
    let mut impostor = impostor.to_vec();
    genuine.sort_by(f64::total_cmp);
    impostor.sort_by(f64::total_cmp);

    let (genuine_count, impostor_count) = (genuine.len() as f64, impostor.len() as f64);
    let (mut g, mut i) = (0, 0);
    let mut previous = (0.0, 1.0);
    while g < genuine.len() || i < impostor.len() {
        // Next threshold: the smallest score not yet below or at the threshold.
        let threshold = match (genuine.get(g), impostor.get(i)) {
            (Some(&a), Some(&b)) => a.min(b),
            (Some(&a), None) => a,
            (None, Some(&b)) => b,
            (None, None) => break,
        };
        while g < genuine.len() && genuine[g] <= threshold {
            g += 1;
        }
        while i < impostor.len() && impostor[i] <= threshold {
            i += 1;
        }
        let point = (i as f64 / impostor_count, 1.0 - g as f64 / genuine_count);
        if let Some(eer) = crossing(previous, point) {
            return Some(eer);
        }
        previous = point;
    }
    // The last point is (1, 0), where false-accept exceeds false-reject, so a crossing was
    // found above; this is only reached through rounding.
    Some(0.5 * (previous.0 + previous.1))
}

/// Returns where the segment from `a` to `b` (false-accept, false-reject) first meets the
/// diagonal, if it does.
fn crossing(a: (f64, f64), b: (f64, f64)) -> Option<f64> {
    let before = a.0 - a.1;
    let after = b.0 - b.1;
    if before >= 0.0 {
        return Some(a.0);
    }
    if after < 0.0 {
        return None;
    }
    let fraction = before / (before - after);
    Some(a.0 + fraction * (b.0 - a.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eer(genuine: &[f64], impostor: &[f64]) -> f64 {
        equal_error_rate(genuine, impostor).expect("both sets non-empty")
    }

    #[test]
    fn perfect_separation_gives_zero() {
        assert_eq!(eer(&[1.0, 2.0, 3.0], &[4.0, 5.0]), 0.0);
    }

    #[test]
    fn identical_distributions_give_one_half() {
        let scores: Vec<f64> = (0..100).map(f64::from).collect();

        assert!((eer(&scores, &scores) - 0.5).abs() < 0.01);
        assert_eq!(eer(&[1.0, 2.0, 3.0], &[1.0, 2.0, 3.0]), 0.5);
    }

    #[test]
    fn reversed_detector_gives_one() {
        assert_eq!(eer(&[4.0, 5.0], &[1.0, 2.0]), 1.0);
    }

    #[test]
    fn crossing_between_roc_points_is_interpolated() {
        // Thresholds give (FAR, FRR) = (0, 1), (0, 0.5), (0.5, 0.5) then (1, 0): the diagonal
        // is met at the point (0.5, 0.5) itself.
        assert_eq!(eer(&[1.0, 3.0], &[2.0, 4.0]), 0.5);

        // The segment from (0, 0.25) to (0.5, 0.25) crosses the diagonal at 0.25.
        assert!((eer(&[1.0, 2.0, 3.0, 5.0], &[4.0, 6.0]) - 0.25).abs() < 1e-12);
        // The segment from (0, 1/3) to (0.5, 1/3) crosses the diagonal at 1/3.
        assert!((eer(&[1.0, 2.0, 4.0], &[3.0, 5.0]) - 1.0 / 3.0).abs() < 1e-12);
    }

    #[test]
    fn ties_move_both_rates_at_once() {
        // One threshold accepts the tied impostor and the tied genuine sample together: the
        // segment from (0, 0.5) to (0.5, 0) crosses the diagonal at 0.25.
        assert_eq!(eer(&[1.0, 2.0], &[2.0, 3.0]), 0.25);
    }

    #[test]
    fn empty_or_nan_input_has_no_rate() {
        assert_eq!(equal_error_rate(&[], &[1.0]), None);
        assert_eq!(equal_error_rate(&[1.0], &[f64::NAN]), None);
    }
}
