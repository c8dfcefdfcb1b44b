//! Measures scoring one sample against an enrolled template, for both detectors.
//!
//! The template contains the first 20 repetitions of subject 1 of the MEU-Mobile KSD data set,
//! and the probe is the subject's 31st repetition.

use std::hint::black_box;
use std::path::Path;

use criterion::{Criterion, criterion_group, criterion_main};
use stepup_keystroke::{
    Detector, Features, ParzenDetector, Samples, ScaledManhattan, Template, read_dataset,
};

/// Enrolled template, the same samples as one training buffer, and the probe.
struct Setup {
    template: Template,
    training: Vec<f64>,
    probe: Features,
}

fn setup() -> Setup {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../data/keystroke/meu-mobile-ksd/meu_mobile_ksd.csv");
    let dataset = read_dataset(&path).expect("the shipped MEU file parses");
    let reps = &dataset.subjects[0].reps;

    let mut template = Template::default();
    for rep in &reps[..20] {
        template.learn(rep);
    }
    let training = reps[..20]
        .iter()
        .flat_map(|rep| rep.values().iter().copied())
        .collect();
    Setup {
        template,
        training,
        probe: reps[30].clone(),
    }
}

fn score(c: &mut Criterion) {
    let Setup {
        template,
        training,
        probe,
    } = setup();
    let detectors: [&dyn Detector; 2] = [&ScaledManhattan, &ParzenDetector::default()];

    for detector in detectors {
        // The whole path the engine takes: fit, calibration baseline, score and explanation.
        c.bench_function(&format!("template_score/{}", detector.name()), |b| {
            b.iter(|| template.score(black_box(&probe), detector))
        });

        // Its parts, as a caller that keeps a fitted model would use them.
        let samples = Samples::new(probe.key_count(), &training).expect("whole rows");
        c.bench_function(&format!("fit/{}", detector.name()), |b| {
            b.iter(|| detector.fit(black_box(samples)))
        });
        let model = detector.fit(samples).expect("enough samples");
        c.bench_function(&format!("model_training_scores/{}", detector.name()), |b| {
            b.iter(|| model.training_scores())
        });
        c.bench_function(&format!("model_score/{}", detector.name()), |b| {
            b.iter(|| model.score(black_box(probe.values())))
        });
    }
}

criterion_group!(benches, score);
criterion_main!(benches);
