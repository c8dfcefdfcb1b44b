//! The evaluation protocol of Killourhy and Maxion (DSN 2009) and its report.
//!
//! For each subject, a detector is trained on the first half of the subject's repetitions
//! (rounded down), then scores the second half as genuine samples and the first
//! [`IMPOSTOR_REPS`] repetitions of every other subject as impostor samples. The subject's
//! equal-error rate comes from the ROC of those scores, and each detector is summarised by the
//! mean and sample standard deviation of the per-subject rates. No parameter is fitted on the
//! test samples.

use std::fmt;

use serde::Serialize;

use crate::calibration::{Calibration, normalise};
use crate::dataset::{Dataset, Layout};
use crate::detector::{Detector, FitError, Model, Samples};
use crate::features::Features;
use crate::roc::equal_error_rate;

/// Repetitions of every other subject used as impostor samples.
pub const IMPOSTOR_REPS: usize = 5;

/// Minimum repetitions per subject: two to train on and two to test.
const MIN_REPS: usize = 4;

/// Errors from [`evaluate`] and [`fit_calibration`].
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// The protocol needs genuine and impostor samples, so at least two subjects.
    #[error("failed to evaluate `{source_name}`: {found} subjects, at least 2 needed")]
    TooFewSubjects {
        /// Data set label.
        source_name: String,
        /// Number of subjects found.
        found: usize,
    },
    /// A subject has too few repetitions to split.
    #[error(
        "failed to evaluate subject `{subject}`: {found} repetitions, at least {MIN_REPS} needed"
    )]
    TooFewReps {
        /// Subject id.
        subject: String,
        /// Number of repetitions found.
        found: usize,
    },
    /// A detector could not be trained.
    #[error("failed to train `{detector}` for subject `{subject}`")]
    Fit {
        /// Detector name.
        detector: &'static str,
        /// Subject id.
        subject: String,
        /// Underlying error.
        #[source]
        cause: FitError,
    },
    /// A detector returned NaN scores, so no error rate exists.
    #[error("failed to compute the equal-error rate of `{detector}` for subject `{subject}`")]
    NoRate {
        /// Detector name.
        detector: &'static str,
        /// Subject id.
        subject: String,
    },
    /// The calibration fit had no usable scores.
    #[error("failed to fit a calibration for `{detector}`: no subject was selected")]
    NoCalibration {
        /// Detector name.
        detector: &'static str,
    },
}

/// Results of [`evaluate`] for every detector on one data set.
#[derive(Clone, Debug, Serialize)]
pub struct EvalReport {
    /// Data set label, usually its file name.
    pub dataset: String,
    /// Layout of the data set.
    pub layout: Layout,
    /// Keys per repetition.
    pub key_count: usize,
    /// Impostor repetitions taken from each other subject.
    pub impostor_reps: usize,
    /// One entry per detector, in the order given.
    pub detectors: Vec<DetectorReport>,
}

/// Results of one detector.
#[derive(Clone, Debug, Serialize)]
pub struct DetectorReport {
    /// Detector name.
    pub detector: String,
    /// Number of subjects evaluated.
    pub subjects: usize,
    /// Mean of the per-subject equal-error rates.
    pub mean_eer: f64,
    /// Sample standard deviation of the per-subject equal-error rates.
    pub std_eer: f64,
    /// Mean calibrated score of genuine test samples, averaged per subject first.
    pub mean_genuine_score: f64,
    /// Mean calibrated score of impostor samples, averaged per subject first.
    pub mean_impostor_score: f64,
    /// Per-subject results, in data set order.
    pub per_subject: Vec<SubjectResult>,
}

/// Result of one detector for one subject.
#[derive(Clone, Debug, Serialize)]
pub struct SubjectResult {
    /// Subject id.
    pub subject: String,
    /// Training repetitions.
    pub train: usize,
    /// Genuine test repetitions.
    pub genuine: usize,
    /// Impostor samples.
    pub impostor: usize,
    /// Equal-error rate.
    pub eer: f64,
}

/// Raw scores of one subject under the protocol.
struct SubjectScores {
    train: usize,
    genuine: Vec<f64>,
    impostor: Vec<f64>,
    /// Leave-one-out scores of the training samples, the calibration baseline.
    baseline: Vec<f64>,
}

/// Runs the Killourhy–Maxion protocol for each detector on every subject of `dataset`.
pub fn evaluate(dataset: &Dataset, detectors: &[&dyn Detector]) -> Result<EvalReport, EvalError> {
    check_dataset(dataset)?;
    let detectors = detectors
        .iter()
        .map(|detector| evaluate_detector(dataset, *detector))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(EvalReport {
        dataset: dataset.source.clone(),
        layout: dataset.layout,
        key_count: dataset.key_count,
        impostor_reps: IMPOSTOR_REPS,
        detectors,
    })
}

/// Fits a detector's [`Calibration`] under the same protocol, on the subjects whose 0-based
/// index passes `include`, so that the other subjects stay unseen.
pub fn fit_calibration(
    dataset: &Dataset,
    detector: &dyn Detector,
    include: &dyn Fn(usize) -> bool,
) -> Result<Calibration, EvalError> {
    check_dataset(dataset)?;
    let (mut scores, mut labels) = (Vec::new(), Vec::new());
    for index in (0..dataset.subjects.len()).filter(|&index| include(index)) {
        let subject = subject_scores(dataset, index, detector)?;
        for (raw, is_impostor) in subject
            .genuine
            .iter()
            .map(|&raw| (raw, false))
            .chain(subject.impostor.iter().map(|&raw| (raw, true)))
        {
            if let Some(z) = normalise(raw, &subject.baseline) {
                scores.push(z);
                labels.push(is_impostor);
            }
        }
    }
    Calibration::fit(&scores, &labels).ok_or(EvalError::NoCalibration {
        detector: detector.name(),
    })
}

fn check_dataset(dataset: &Dataset) -> Result<(), EvalError> {
    if dataset.subjects.len() < 2 {
        return Err(EvalError::TooFewSubjects {
            source_name: dataset.source.clone(),
            found: dataset.subjects.len(),
        });
    }
    match dataset
        .subjects
        .iter()
        .find(|subject| subject.reps.len() < MIN_REPS)
    {
        Some(subject) => Err(EvalError::TooFewReps {
            subject: subject.id.clone(),
            found: subject.reps.len(),
        }),
        None => Ok(()),
    }
}

fn evaluate_detector(
    dataset: &Dataset,
    detector: &dyn Detector,
) -> Result<DetectorReport, EvalError> {
    let calibration = detector.calibration();
    let mut per_subject = Vec::with_capacity(dataset.subjects.len());
    let (mut genuine_means, mut impostor_means) = (Vec::new(), Vec::new());
    for (index, subject) in dataset.subjects.iter().enumerate() {
        let scores = subject_scores(dataset, index, detector)?;
        let eer = equal_error_rate(&scores.genuine, &scores.impostor).ok_or_else(|| {
            EvalError::NoRate {
                detector: detector.name(),
                subject: subject.id.clone(),
            }
        })?;
        let mean_probability = |raw: &[f64]| {
            mean(
                raw.iter()
                    .filter_map(|&raw| calibration.probability(raw, &scores.baseline)),
            )
        };
        genuine_means.push(mean_probability(&scores.genuine));
        impostor_means.push(mean_probability(&scores.impostor));
        per_subject.push(SubjectResult {
            subject: subject.id.clone(),
            train: scores.train,
            genuine: scores.genuine.len(),
            impostor: scores.impostor.len(),
            eer,
        });
    }

    let rates: Vec<f64> = per_subject.iter().map(|result| result.eer).collect();
    Ok(DetectorReport {
        detector: detector.name().to_owned(),
        subjects: per_subject.len(),
        mean_eer: mean(rates.iter().copied()),
        std_eer: sample_std(&rates),
        mean_genuine_score: mean(genuine_means.into_iter()),
        mean_impostor_score: mean(impostor_means.into_iter()),
        per_subject,
    })
}

/// Trains on subject `index` and scores its genuine and impostor test samples.
fn subject_scores(
    dataset: &Dataset,
    index: usize,
    detector: &dyn Detector,
) -> Result<SubjectScores, EvalError> {
    let subject = &dataset.subjects[index];
    let train = subject.reps.len() / 2;
    let training: Vec<f64> = subject.reps[..train]
        .iter()
        .flat_map(|rep| rep.values().iter().copied())
        .collect();
    let fit_error = |cause| EvalError::Fit {
        detector: detector.name(),
        subject: subject.id.clone(),
        cause,
    };
    let samples = Samples::new(dataset.key_count, &training).map_err(fit_error)?;
    let model = detector.fit(samples).map_err(fit_error)?;

    let impostor_reps = dataset
        .subjects
        .iter()
        .enumerate()
        .filter(|&(other, _)| other != index)
        .flat_map(|(_, other)| other.reps.iter().take(IMPOSTOR_REPS));
    Ok(SubjectScores {
        train,
        genuine: score_all(model.as_ref(), &subject.reps[train..]),
        impostor: impostor_reps.map(|rep| model.score(rep.values())).collect(),
        baseline: model.training_scores(),
    })
}

fn score_all(model: &dyn Model, reps: &[Features]) -> Vec<f64> {
    reps.iter().map(|rep| model.score(rep.values())).collect()
}

fn mean(values: impl Iterator<Item = f64>) -> f64 {
    let (sum, count) = values.fold((0.0, 0usize), |(sum, count), value| {
        (sum + value, count + 1)
    });
    if count == 0 { 0.0 } else { sum / count as f64 }
}

fn sample_std(values: &[f64]) -> f64 {
    if values.len() < 2 {
        return 0.0;
    }
    let centre = mean(values.iter().copied());
    let squares: f64 = values.iter().map(|value| (value - centre).powi(2)).sum();
    (squares / (values.len() - 1) as f64).sqrt()
}

// === impl EvalReport ===

impl fmt::Display for EvalReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "Killourhy-Maxion evaluation of {} ({} layout, {} keys)",
            self.dataset,
            self.layout.title(),
            self.key_count
        )?;
        writeln!(
            f,
            "per subject: train on the first half of its repetitions; test on the second half \
             (genuine) and on the first {} repetitions of every other subject (impostors)",
            self.impostor_reps
        )?;
        writeln!(f)?;
        writeln!(
            f,
            "{:<20} {:>8} {:>9} {:>8} {:>16} {:>17}",
            "detector", "subjects", "mean EER", "std EER", "mean p genuine", "mean p impostor"
        )?;
        for report in &self.detectors {
            writeln!(
                f,
                "{:<20} {:>8} {:>9.4} {:>8.4} {:>16.3} {:>17.3}",
                report.detector,
                report.subjects,
                report.mean_eer,
                report.std_eer,
                report.mean_genuine_score,
                report.mean_impostor_score
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::dataset::{Subject, read_dataset};
    use crate::{ParzenDetector, ScaledManhattan};

    fn fixture() -> Dataset {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/cmu-layout-synthetic.csv");
        read_dataset(&path).expect("the fixture parses")
    }

    #[test]
    fn fixture_evaluation_follows_the_protocol() {
        let dataset = fixture();

        let report = evaluate(&dataset, &[&ScaledManhattan, &ParzenDetector::default()])
            .expect("the fixture is large enough");

        assert_eq!(report.detectors.len(), 2);
        assert_eq!(report.detectors[0].detector, "scaled-manhattan");
        for detector in &report.detectors {
            assert_eq!(detector.subjects, 3);
            for subject in &detector.per_subject {
                assert_eq!(subject.train, 6);
                assert_eq!(subject.genuine, 6);
                assert_eq!(subject.impostor, 2 * IMPOSTOR_REPS);
                assert!((0.0..=1.0).contains(&subject.eer), "{subject:?}");
            }
            // The synthetic subjects have clearly different base speeds.
            assert!(detector.mean_eer < 0.1, "{detector:?}");
            assert!(detector.mean_genuine_score < detector.mean_impostor_score);
        }
    }

    #[test]
    fn report_renders_a_row_per_detector_and_serializes() {
        let report = evaluate(&fixture(), &[&ScaledManhattan]).expect("evaluates");

        let text = report.to_string();
        let json = serde_json::to_value(&report).expect("serializable");

        assert!(
            text.contains("CMU DSL-StrongPasswordData layout, 11 keys"),
            "{text}"
        );
        assert!(
            text.lines()
                .any(|line| line.starts_with("scaled-manhattan")),
            "{text}"
        );
        assert_eq!(json["layout"], "cmu-strong-password");
        assert_eq!(json["detectors"][0]["per_subject"][0]["subject"], "s901");
    }

    #[test]
    fn single_subject_is_rejected() {
        let mut dataset = fixture();
        dataset.subjects.truncate(1);

        let error = evaluate(&dataset, &[&ScaledManhattan]).expect_err("no impostors");

        assert!(matches!(error, EvalError::TooFewSubjects { found: 1, .. }));
    }

    #[test]
    fn subject_with_three_reps_is_rejected() {
        let mut dataset = fixture();
        let reps = dataset.subjects[1].reps[..3].to_vec();
        dataset.subjects[1] = Subject {
            id: "short".to_owned(),
            reps,
        };

        let error = evaluate(&dataset, &[&ScaledManhattan]).expect_err("too few reps");

        assert_eq!(
            error.to_string(),
            "failed to evaluate subject `short`: 3 repetitions, at least 4 needed"
        );
    }

    #[test]
    fn sample_std_uses_n_minus_one() {
        assert_eq!(sample_std(&[1.0, 3.0]), 2f64.sqrt());
        assert_eq!(sample_std(&[5.0]), 0.0);
    }
}
