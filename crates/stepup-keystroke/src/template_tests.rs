use stepup_events::{KeyTiming, KeystrokeCapture};

use super::*;
use crate::{ParzenDetector, ScaledManhattan};

/// Deterministic pseudo-random numbers in [-1, 1] for synthetic typing noise.
struct Noise(u64);

impl Noise {
    fn next(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((self.0 >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
    }
}

/// A typist who holds each key about `hold_ms` and leaves about `gap_ms` between keys.
fn typed(keys: &[&str], hold_ms: f64, gap_ms: f64, noise: &mut Noise) -> Features {
    let mut down = 0.0;
    let mut timings = Vec::new();
    for key in keys {
        let hold = hold_ms * (1.0 + 0.1 * noise.next());
        timings.push(KeyTiming {
            key: (*key).to_owned(),
            down_ms: down,
            up_ms: down + hold,
        });
        down += hold + gap_ms * (1.0 + 0.1 * noise.next());
    }
    let capture = KeystrokeCapture {
        field: "password".to_owned(),
        keys: timings,
    };
    Features::from_capture(&capture, None).expect("synthetic capture is valid")
}

const KEYS: [&str; 6] = ["s", "e", "c", "r", "e", "t"];

fn learn_many(template: &mut Template, count: usize, hold_ms: f64, noise: &mut Noise) {
    for _ in 0..count {
        assert_eq!(
            template.learn(&typed(&KEYS, hold_ms, 150.0, noise)),
            LearnOutcome::Learnt
        );
    }
}

#[test]
fn scores_only_after_min_samples() {
    let mut template = Template::default();
    let mut noise = Noise(1);
    learn_many(&mut template, 9, 100.0, &mut noise);
    let probe = typed(&KEYS, 100.0, 150.0, &mut noise);

    let early = template.score(&probe, &ParzenDetector::default());
    learn_many(&mut template, 1, 100.0, &mut noise);
    let enrolled = template.score(&probe, &ParzenDetector::default());

    assert!(!early.enrolled);
    assert_eq!(early.score, None);
    assert_eq!(early.samples, 9);
    assert_eq!(
        early.nearest_reason,
        "enrolling: 9 of 10 verified samples learnt"
    );
    assert!(enrolled.enrolled);
    assert_eq!(enrolled.samples, 10);
    assert!(enrolled.score.is_some());
}

#[test]
fn separates_genuine_from_impostor() {
    let mut template = Template::default();
    let mut noise = Noise(2);
    learn_many(&mut template, 20, 100.0, &mut noise);
    let genuine = typed(&KEYS, 100.0, 150.0, &mut noise);
    let impostor = typed(&KEYS, 60.0, 300.0, &mut noise);

    for detector in [
        &ScaledManhattan as &dyn Detector,
        &ParzenDetector::default(),
    ] {
        let low = template.score(&genuine, detector).score.expect("enrolled");
        let high = template.score(&impostor, detector).score.expect("enrolled");

        assert!((0.0..=1.0).contains(&low), "{}: {low}", detector.name());
        assert!(low < 0.5, "{}: genuine {low}", detector.name());
        assert!(high > 0.9, "{}: impostor {high}", detector.name());
    }
}

#[test]
fn reason_names_feature_kind_and_position_only() {
    let mut template = Template::default();
    let mut noise = Noise(3);
    learn_many(&mut template, 20, 100.0, &mut noise);
    let mut probe = typed(&KEYS, 100.0, 150.0, &mut noise).values().to_vec();
    // Key 4 is held 400 ms longer, which also lengthens the down-down time after it.
    probe[3] += 400.0;
    probe[6 + 3] += 400.0;
    let probe = Features::from_row(
        typed(&KEYS, 100.0, 150.0, &mut noise).sequence(),
        &probe[..6],
        &probe[6..11],
        &probe[11..],
    )
    .expect("valid row");

    let verdict = template.score(&probe, &ScaledManhattan);

    assert!(
        verdict.nearest_reason.starts_with("hold time of key 4 is "),
        "{}",
        verdict.nearest_reason
    );
    assert!(verdict.nearest_reason.ends_with("MADs longer than usual"));
    assert!(!verdict.nearest_reason.contains("ms"));
}

#[test]
fn window_bounds_stored_samples() {
    let mut template = Template::default();
    let mut noise = Noise(4);

    learn_many(&mut template, 50, 100.0, &mut noise);

    assert_eq!(template.samples(), 50);
    assert_eq!(template.timings_ms.len(), 20 * feature_count(KEYS.len()));
}

#[test]
fn adapts_to_slow_drift() {
    let mut template = Template::default();
    let mut noise = Noise(5);
    learn_many(&mut template, 20, 100.0, &mut noise);
    let old_rhythm = typed(&KEYS, 100.0, 150.0, &mut noise);
    let new_rhythm = typed(&KEYS, 130.0, 150.0, &mut noise);
    let detector = ParzenDetector::default();
    let before = template
        .score(&new_rhythm, &detector)
        .score
        .expect("enrolled");

    // The user's holds lengthen by 3 ms per login over ten logins, then stay.
    for step in 1..=10 {
        learn_many(&mut template, 1, 100.0 + 3.0 * f64::from(step), &mut noise);
    }
    learn_many(&mut template, 10, 130.0, &mut noise);
    let after = template
        .score(&new_rhythm, &detector)
        .score
        .expect("enrolled");
    let old_after = template
        .score(&old_rhythm, &detector)
        .score
        .expect("enrolled");

    assert!(before > 0.9, "new rhythm before drift: {before}");
    assert!(after < 0.5, "new rhythm after drift: {after}");
    assert!(old_after > 0.9, "old rhythm after drift: {old_after}");
}

#[test]
fn mismatched_attempt_is_not_scored() {
    let mut template = Template::default();
    let mut noise = Noise(6);
    learn_many(&mut template, 10, 100.0, &mut noise);
    let shorter = typed(&KEYS[..5], 100.0, 150.0, &mut noise);
    let other_keys = typed(&["p", "a", "s", "s", "w", "d"], 100.0, 150.0, &mut noise);

    let short_verdict = template.score(&shorter, &ScaledManhattan);
    let other_verdict = template.score(&other_keys, &ScaledManhattan);

    assert_eq!(short_verdict.score, None);
    assert_eq!(
        short_verdict.nearest_reason,
        "expected 6 keys as in the template, found 5"
    );
    assert_eq!(other_verdict.score, None);
    assert_eq!(
        other_verdict.nearest_reason,
        NoSignal::SequenceMismatch.to_string()
    );
}

#[test]
fn restarts_after_consecutive_new_sequences() {
    let mut template = Template::default();
    let mut noise = Noise(7);
    learn_many(&mut template, 12, 100.0, &mut noise);
    let new_keys = ["n", "e", "w", "p", "w", "d", "!"];

    let first = template.learn(&typed(&new_keys, 100.0, 150.0, &mut noise));
    let second = template.learn(&typed(&new_keys, 100.0, 150.0, &mut noise));
    let samples_before_restart = template.samples();
    let third = template.learn(&typed(&new_keys, 100.0, 150.0, &mut noise));

    let skipped = LearnOutcome::Skipped(NoSignal::LengthMismatch {
        expected: 6,
        found: 7,
    });
    assert_eq!(first, skipped);
    assert_eq!(second, skipped);
    assert_eq!(samples_before_restart, 12);
    assert_eq!(third, LearnOutcome::Restarted);
    assert_eq!(template.samples(), 1);
    assert_eq!(template.key_count(), Some(7));
}

#[test]
fn matching_sample_resets_the_mismatch_count() {
    let mut template = Template::default();
    let mut noise = Noise(8);
    learn_many(&mut template, 3, 100.0, &mut noise);
    let other = typed(&KEYS[..4], 100.0, 150.0, &mut noise);

    for _ in 0..5 {
        assert!(matches!(template.learn(&other), LearnOutcome::Skipped(_)));
        assert!(matches!(template.learn(&other), LearnOutcome::Skipped(_)));
        learn_many(&mut template, 1, 100.0, &mut noise);
    }

    assert_eq!(template.samples(), 8);
}

#[test]
fn long_pauses_saturate_instead_of_wrapping() {
    let mut template = Template::default();
    let row = Features::from_row(None, &[100.0, 90.0], &[50_000.0], &[-40_000.0]).expect("row");

    template.learn(&row);

    assert_eq!(template.timings_ms, vec![100, 90, i16::MAX, i16::MIN]);
}

#[test]
fn serde_round_trip_keeps_the_template() {
    let mut template = Template::default();
    let mut noise = Noise(9);
    learn_many(&mut template, 11, 100.0, &mut noise);

    let json = serde_json::to_string(&template).expect("serializable");
    let back: Template = serde_json::from_str(&json).expect("deserializable");

    assert_eq!(back, template);
    assert!(json.len() < 1200, "{} bytes", json.len());
}

#[test]
fn debug_output_hides_timings() {
    let mut template = Template::default();
    template.learn(&Features::from_row(None, &[111.0, 97.0], &[333.0], &[222.0]).expect("row"));

    let printed = format!("{template:?}");

    assert!(!printed.contains("333"), "{printed}");
    assert!(!printed.contains("222"), "{printed}");
}

#[test]
fn config_validation_names_the_bad_key() {
    let valid = TemplateConfig::default();
    let small_window = TemplateConfig { window: 1, ..valid };
    let late_enrolment = TemplateConfig {
        min_samples: 25,
        ..valid
    };
    let no_relearn = TemplateConfig {
        relearn_after: 0,
        ..valid
    };

    assert_eq!(valid.validate(), Ok(()));
    for (config, key) in [
        (small_window, "window"),
        (late_enrolment, "min_samples"),
        (no_relearn, "relearn_after"),
    ] {
        let error = config.validate().expect_err("out of range");
        assert!(error.to_string().contains(&format!("`{key}`")), "{error}");
    }
}

#[test]
fn cached_fit_matches_fresh_fit_and_follows_learning() {
    let mut template = Template::default();
    let mut noise = Noise(5);
    learn_many(&mut template, 12, 100.0, &mut noise);
    let sample = typed(&KEYS, 110.0, 160.0, &mut noise);
    let detector = ParzenDetector::default();

    let first = template.score(&sample, &detector);
    let cached = template.score(&sample, &detector);
    let uncached = template.clone_without_fit().score(&sample, &detector);
    assert_eq!(first, cached);
    assert_eq!(first, uncached);

    // Another detector gets its own fit, not the Parzen one.
    let other = template.score(&sample, &ScaledManhattan);
    let other_fresh = template
        .clone_without_fit()
        .score(&sample, &ScaledManhattan);
    assert_eq!(other, other_fresh);

    learn_many(&mut template, 8, 140.0, &mut noise);
    let after = template.score(&sample, &detector);
    let after_fresh = template.clone_without_fit().score(&sample, &detector);
    assert_eq!(after, after_fresh);
    assert_ne!(
        after.score, first.score,
        "learning must invalidate the cached fit"
    );
}
