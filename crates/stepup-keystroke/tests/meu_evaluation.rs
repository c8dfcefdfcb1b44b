//! Runs the Killourhy–Maxion protocol on the shipped MEU-Mobile KSD file.
//!
//! The Parzen detector's settings and both calibrations were chosen on the odd-numbered subjects
//! (ids 1, 3, ..., 55) only. The even-numbered subjects are reported separately as held out.

use std::path::Path;

use stepup_keystroke::{
    Dataset, Detector, DetectorReport, EvalReport, ParzenDetector, ScaledManhattan, evaluate,
    fit_calibration, read_dataset,
};

fn meu() -> Dataset {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../data/keystroke/meu-mobile-ksd/meu_mobile_ksd.csv");
    read_dataset(&path).expect("the shipped MEU file parses")
}

/// Returns the mean EER over subjects whose numeric id is even (`true`) or odd (`false`).
fn mean_eer_of(report: &DetectorReport, even: bool) -> f64 {
    let rates: Vec<f64> = report
        .per_subject
        .iter()
        .filter(|result| result.subject.parse::<u32>().map(|id| id % 2 == 0) == Ok(even))
        .map(|result| result.eer)
        .collect();
    rates.iter().sum::<f64>() / rates.len() as f64
}

fn print_summary(report: &EvalReport) {
    println!("{report}");
    for detector in &report.detectors {
        println!(
            "{}: odd-numbered (tuning) subjects {:.4}, even-numbered (held-out) subjects {:.4}",
            detector.detector,
            mean_eer_of(detector, false),
            mean_eer_of(detector, true)
        );
    }
}

#[test]
fn parzen_beats_scaled_manhattan_by_a_wide_margin() {
    let dataset = meu();
    let parzen = ParzenDetector::default();

    let report = evaluate(&dataset, &[&ScaledManhattan, &parzen]).expect("MEU evaluates");
    print_summary(&report);

    let (manhattan, parzen) = (&report.detectors[0], &report.detectors[1]);
    let ratio = parzen.mean_eer / manhattan.mean_eer;
    println!("ratio of mean EERs (parzen / scaled-manhattan): {ratio:.3}");
    assert_eq!(manhattan.subjects, 56);
    assert_eq!(parzen.subjects, 56);
    assert!(ratio <= 0.65, "ratio {ratio:.3}");
    let held_out_ratio = mean_eer_of(parzen, true) / mean_eer_of(manhattan, true);
    assert!(held_out_ratio <= 0.65, "held-out ratio {held_out_ratio:.3}");
    for detector in &report.detectors {
        assert!(detector.mean_genuine_score < 0.5, "{}", detector.detector);
        assert!(detector.mean_impostor_score > 0.5, "{}", detector.detector);
    }
}

#[test]
fn default_calibrations_match_tuning_fit() {
    let dataset = meu();
    // Subject ids are 1-based, so odd ids sit at even indices.
    let tuning = |index: usize| index.is_multiple_of(2);
    let detectors: [&dyn Detector; 2] = [&ScaledManhattan, &ParzenDetector::default()];

    for detector in detectors {
        let fitted = fit_calibration(&dataset, detector, &tuning).expect("calibration fits");
        let default = detector.calibration();
        println!(
            "{}: fitted {fitted:?}, default {default:?}",
            detector.name()
        );

        assert!(
            (fitted.slope - default.slope).abs() < 0.01,
            "{}",
            detector.name()
        );
        assert!(
            (fitted.offset - default.offset).abs() < 0.01,
            "{}",
            detector.name()
        );
    }
}
