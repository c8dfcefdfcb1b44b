//! Real keystroke timings for the demo: each user types like one subject of the MEU-Mobile
//! keystroke data set, impostors like another.

use std::collections::BTreeMap;

use stepup_events::{KeyTiming, KeystrokeCapture};
use stepup_keystroke::{Dataset, FeatureKind, Features};

use super::plan::Typist;

/// Keys of the MEU-Mobile password `.tie5Roanl`, in typing order, as the data set's columns
/// name them.
const MEU_KEYS: [&str; 14] = [
    ".", "t", "i", "e", "Shift", "5", "Shift", "Caps", "r", "o", "a", "n", "l", "Enter",
];

/// Hands out the repetitions of each subject in file order, wrapping around at the end.
pub struct Typing {
    dataset: Dataset,
    next_rep: BTreeMap<usize, usize>,
}

impl Typing {
    pub fn new(dataset: Dataset) -> Self {
        Self {
            dataset,
            next_rep: BTreeMap::new(),
        }
    }

    /// Returns the next password capture for `typist`, or `None` for scripts.
    pub fn capture(&mut self, typist: Typist) -> Option<KeystrokeCapture> {
        let subjects = self.dataset.subjects.len();
        if subjects < 2 {
            return None;
        }
        let subject = match typist {
            Typist::Owner(user) => user % subjects,
            Typist::Other(user, pick) => {
                let offset = 1 + (pick as usize) % (subjects - 1);
                (user % subjects + offset) % subjects
            }
            Typist::Nobody => return None,
        };
        let reps = &self.dataset.subjects[subject].reps;
        let cursor = self.next_rep.entry(subject).or_insert(0);
        let features = &reps[*cursor % reps.len()];
        *cursor += 1;
        Some(capture_from(features))
    }
}

/// Rebuilds press and release times from hold and down-down intervals.
fn capture_from(features: &Features) -> KeystrokeCapture {
    let hold = features.of_kind(FeatureKind::Hold);
    let down_down = features.of_kind(FeatureKind::DownDown);
    let mut down = 0.0;
    let keys = hold
        .iter()
        .enumerate()
        .map(|(n, hold)| {
            let key = MEU_KEYS.get(n).copied().unwrap_or("Key").to_owned();
            let timing = KeyTiming {
                key,
                down_ms: down,
                up_ms: down + hold.max(0.0),
            };
            down += down_down.get(n).copied().unwrap_or(0.0).max(0.0);
            timing
        })
        .collect();
    KeystrokeCapture {
        field: "password".into(),
        keys,
    }
}
