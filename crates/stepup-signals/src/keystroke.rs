//! The keystroke-dynamics signal: an attempt's key timings against the user's template.

use serde::Serialize;
use stepup_events::KeystrokeCapture;
use stepup_keystroke::{Detector, Features};

use crate::profile::Profile;

/// The `signals.keystroke` value of an attempt that carries key timings.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct KeystrokeSignal {
    /// Input field the timings belong to, for example `password`.
    pub field: String,
    /// Whether the user's template has enough verified samples to score.
    pub enrolled: bool,
    /// Verified samples in the template.
    pub samples: u32,
    /// Calibrated probability-like value in `[0, 1]` that the typist is not the user; absent
    /// before enrolment or when the sample cannot be scored.
    pub score: Option<f64>,
    /// The feature furthest from the user's habit, or why there is no score. Never contains
    /// key names or times.
    pub reason: String,
}

/// The signal, plus the features to learn if the login turns out verified.
#[derive(Clone, Debug)]
pub struct KeystrokeOutcome {
    /// Signal for rules and the risk score.
    pub signal: KeystrokeSignal,
    /// Features of the sample; `None` when the sample has no usable signal.
    pub features: Option<Features>,
}

/// Scores `capture` against the user's template for its field; `None` without a capture.
pub fn assess_keystroke(
    profile: &Profile,
    capture: Option<&KeystrokeCapture>,
    detector: &dyn Detector,
) -> Option<KeystrokeOutcome> {
    let capture = capture?;
    let template = profile.keystroke_template(&capture.field);
    let expected_len = template.and_then(|template| template.key_count());
    let signal = |enrolled, samples, score, reason: String| KeystrokeSignal {
        field: capture.field.clone(),
        enrolled,
        samples,
        score,
        reason,
    };
    let features = match Features::from_capture(capture, expected_len) {
        Ok(features) => features,
        Err(no_signal) => {
            let (enrolled, samples) =
                template.map_or((false, 0), |t| (t.is_enrolled(), t.samples()));
            let reason = format!("no keystroke signal: {no_signal}");
            return Some(KeystrokeOutcome {
                signal: signal(enrolled, samples, None, reason),
                features: None,
            });
        }
    };
    let signal = match template {
        Some(template) => {
            let verdict = template.score(&features, detector);
            signal(
                verdict.enrolled,
                verdict.samples,
                verdict.score,
                verdict.nearest_reason,
            )
        }
        None => signal(false, 0, None, "no template for this field yet".to_owned()),
    };
    Some(KeystrokeOutcome {
        signal,
        features: Some(features),
    })
}

#[cfg(test)]
mod tests {
    use stepup_events::KeyTiming;
    use stepup_keystroke::{ParzenDetector, TemplateConfig};

    use super::*;

    fn capture(jitter: f64, keys: &[&str]) -> KeystrokeCapture {
        let mut down = 0.0;
        let keys = keys
            .iter()
            .enumerate()
            .map(|(n, key)| {
                let hold = 90.0 + jitter * ((n % 3) as f64);
                let timing = KeyTiming {
                    key: (*key).into(),
                    down_ms: down,
                    up_ms: down + hold,
                };
                down += 180.0 + jitter * ((n % 2) as f64);
                timing
            })
            .collect();
        KeystrokeCapture {
            field: "password".into(),
            keys,
        }
    }

    const KEYS: [&str; 8] = ["p", "a", "s", "s", "w", "o", "r", "d"];

    #[test]
    fn no_capture_gives_no_signal() {
        let outcome = assess_keystroke(&Profile::default(), None, &ParzenDetector::default());
        assert!(outcome.is_none());
    }

    #[test]
    fn first_sample_is_not_enrolled() {
        let sample = capture(3.0, &KEYS);
        let outcome = assess_keystroke(
            &Profile::default(),
            Some(&sample),
            &ParzenDetector::default(),
        )
        .unwrap();
        assert!(!outcome.signal.enrolled);
        assert_eq!(outcome.signal.score, None);
        assert!(outcome.features.is_some());
    }

    #[test]
    fn correction_gives_reason_not_error() {
        let sample = capture(3.0, &["p", "a", "Backspace", "a", "s"]);
        let outcome = assess_keystroke(
            &Profile::default(),
            Some(&sample),
            &ParzenDetector::default(),
        )
        .unwrap();
        assert!(outcome.features.is_none());
        assert!(
            outcome.signal.reason.starts_with("no keystroke signal"),
            "{}",
            outcome.signal.reason
        );
    }

    #[test]
    fn enrolled_template_scores_own_rhythm_below_a_stranger() {
        let detector = ParzenDetector::default();
        let config = TemplateConfig::default();
        let mut profile = Profile::default();
        for n in 0..12 {
            let sample = capture(f64::from(n % 4), &KEYS);
            let features = Features::from_capture(&sample, None).unwrap();
            profile.learn_keystroke("password", &features, &config);
        }
        let own = assess_keystroke(&profile, Some(&capture(1.5, &KEYS)), &detector).unwrap();
        let mut stranger = capture(0.0, &KEYS);
        for (n, key) in stranger.keys.iter_mut().enumerate() {
            key.up_ms += 60.0 + 10.0 * n as f64;
        }
        let other = assess_keystroke(&profile, Some(&stranger), &detector).unwrap();
        assert!(own.signal.enrolled);
        assert!(own.signal.score.unwrap() < other.signal.score.unwrap());
    }
}
