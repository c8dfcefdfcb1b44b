//! Timing features of one typed field: hold, down-down and up-down times.

use std::fmt;

use serde::{Deserialize, Serialize};
use stepup_events::KeystrokeCapture;

/// Key names that mark a correction; a corrected entry does not show the usual rhythm.
const CORRECTION_KEYS: [&str; 3] = ["backspace", "delete", "del"];

/// Minimum number of keys that gives at least one down-down and one up-down time.
const MIN_KEYS: usize = 2;

/// Reason why a capture yields no keystroke features.
///
/// The messages name positions and counts only, never key names or times, so they are safe to
/// log and to show in a decision's reasons.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, thiserror::Error)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum NoSignal {
    /// The attempt carries no capture for the field the template belongs to.
    #[error("no keystroke capture for field `{field}`")]
    MissingField {
        /// Field that the template expects, for example `password`.
        field: String,
    },
    /// The capture has too few keys for any interval feature.
    #[error("the capture has {found} keys, fewer than the {MIN_KEYS} needed for timing features")]
    TooShort {
        /// Number of keys in the capture.
        found: usize,
    },
    /// The capture contains Backspace or Delete, so its rhythm is not the usual one.
    #[error("the capture contains a correction key at position {position}")]
    Correction {
        /// 1-based position of the first correction key.
        position: usize,
    },
    /// The capture has a different number of keys than the template.
    #[error("expected {expected} keys as in the template, found {found}")]
    LengthMismatch {
        /// Number of keys in the template.
        expected: usize,
        /// Number of keys in the capture.
        found: usize,
    },
    /// The capture has the template's length but a different key sequence.
    #[error("the key sequence differs from the one the template was learnt from")]
    SequenceMismatch,
    /// A key has a time that cannot come from a real key press.
    #[error("invalid timing of key {position}: {problem}")]
    InvalidTiming {
        /// 1-based position of the key.
        position: usize,
        /// Description of the problem, for example `released before pressed`.
        problem: &'static str,
    },
}

impl NoSignal {
    /// Returns a short snake_case code for the reason, suitable as a bounded metric label.
    pub fn code(&self) -> &'static str {
        match self {
            NoSignal::MissingField { .. } => "missing_field",
            NoSignal::TooShort { .. } => "too_short",
            NoSignal::Correction { .. } => "correction",
            NoSignal::LengthMismatch { .. } => "length_mismatch",
            NoSignal::SequenceMismatch => "sequence_mismatch",
            NoSignal::InvalidTiming { .. } => "invalid_timing",
        }
    }
}

/// Kind of a timing feature.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FeatureKind {
    /// Time a key is held down: its up time minus its down time.
    Hold,
    /// Time from one key going down to the next key going down.
    DownDown,
    /// Time from one key coming up to the next key going down; negative when keys overlap.
    UpDown,
    /// Sum of all hold times, an aggregate that some detectors add.
    TotalHold,
}

/// A 16-bit tag of the key sequence, used to notice that a different sequence was typed.
///
/// The tag keeps only 16 bits of an FNV-1a hash on purpose. The keys of a password field are the
/// password, so a full unsalted hash stored in a profile could be checked against guesses
/// offline. With 16 bits, about one in 65,536 wrong guesses still matches, so the tag cannot
/// confirm a guess. The cost is that one in 65,536 sequence changes goes unnoticed, and the
/// timing features then decide.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SequenceTag(pub u16);

impl SequenceTag {
    /// Computes the tag of a key sequence from its key names in typed order.
    pub fn of_keys<'a>(keys: impl IntoIterator<Item = &'a str>) -> Self {
        const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
        const PRIME: u64 = 0x0100_0000_01b3;
        let mut hash = OFFSET;
        for key in keys {
            // The 0xff separator cannot occur in UTF-8, so `ab`,`c` and `a`,`bc` differ.
            for byte in key.bytes().chain(std::iter::once(0xff)) {
                hash ^= u64::from(byte);
                hash = hash.wrapping_mul(PRIME);
            }
        }
        let folded = (hash >> 48) ^ (hash >> 32) ^ (hash >> 16) ^ hash;
        SequenceTag((folded & 0xffff) as u16)
    }
}

/// Hold, down-down and up-down times of one typed field, in milliseconds and typed order.
///
/// For `n` keys the vector contains `n` hold times, then `n - 1` down-down times, then `n - 1`
/// up-down times. `Debug` prints only the key count, never the times.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct Features {
    key_count: usize,
    sequence: Option<SequenceTag>,
    values: Vec<f64>,
}

// === impl Features ===

impl Features {
    /// Computes the features of a capture and checks it against the template's key count.
    ///
    /// Keys are taken in the order given, which is the typed order. Key names are used only to
    /// reject corrections and to compute the [`SequenceTag`].
    pub fn from_capture(
        capture: &KeystrokeCapture,
        expected_len: Option<usize>,
    ) -> Result<Features, NoSignal> {
        let keys = &capture.keys;
        if let Some(position) = keys.iter().position(|key| is_correction(&key.key)) {
            return Err(NoSignal::Correction {
                position: position + 1,
            });
        }
        if let Some(expected) = expected_len.filter(|&expected| expected != keys.len()) {
            return Err(NoSignal::LengthMismatch {
                expected,
                found: keys.len(),
            });
        }
        if keys.len() < MIN_KEYS {
            return Err(NoSignal::TooShort { found: keys.len() });
        }

        let mut hold = Vec::with_capacity(keys.len());
        for (index, key) in keys.iter().enumerate() {
            check_key_times(index, key.down_ms, key.up_ms)?;
            if index > 0 && key.down_ms < keys[index - 1].down_ms {
                return Err(invalid(index, "pressed before the previous key"));
            }
            hold.push(key.up_ms - key.down_ms);
        }
        let down_down: Vec<f64> = keys
            .windows(2)
            .map(|w| w[1].down_ms - w[0].down_ms)
            .collect();
        let up_down: Vec<f64> = keys.windows(2).map(|w| w[1].down_ms - w[0].up_ms).collect();

        let sequence = SequenceTag::of_keys(keys.iter().map(|key| key.key.as_str()));
        Features::from_row(Some(sequence), &hold, &down_down, &up_down)
    }

    /// Computes the features of the capture for `field`, or [`NoSignal::MissingField`] when the
    /// attempt has no capture or a capture of another field.
    pub fn from_attempt(
        capture: Option<&KeystrokeCapture>,
        field: &str,
        expected_len: Option<usize>,
    ) -> Result<Features, NoSignal> {
        match capture {
            Some(capture) if capture.field == field => {
                Features::from_capture(capture, expected_len)
            }
            _ => Err(NoSignal::MissingField {
                field: field.to_owned(),
            }),
        }
    }

    /// Builds features from precomputed times in milliseconds, as data sets store them.
    ///
    /// `hold` has one entry per key, `down_down` and `up_down` one per consecutive pair. Times
    /// must be finite; hold and down-down times must not be negative.
    pub fn from_row(
        sequence: Option<SequenceTag>,
        hold: &[f64],
        down_down: &[f64],
        up_down: &[f64],
    ) -> Result<Features, NoSignal> {
        let key_count = hold.len();
        if key_count < MIN_KEYS {
            return Err(NoSignal::TooShort { found: key_count });
        }
        for found in [down_down.len() + 1, up_down.len() + 1] {
            if found != key_count {
                return Err(NoSignal::LengthMismatch {
                    expected: key_count,
                    found,
                });
            }
        }
        check_row(hold, down_down, up_down)?;

        let mut values = Vec::with_capacity(3 * key_count - 2);
        values.extend_from_slice(hold);
        values.extend_from_slice(down_down);
        values.extend_from_slice(up_down);
        Ok(Features {
            key_count,
            sequence,
            values,
        })
    }

    /// Returns the number of keys typed.
    pub fn key_count(&self) -> usize {
        self.key_count
    }

    /// Returns the tag of the key sequence, if the source had key names.
    pub fn sequence(&self) -> Option<SequenceTag> {
        self.sequence
    }

    /// Returns all features: hold times, then down-down times, then up-down times.
    pub fn values(&self) -> &[f64] {
        &self.values
    }

    /// Returns the features of one kind; empty for [`FeatureKind::TotalHold`].
    pub fn of_kind(&self, kind: FeatureKind) -> &[f64] {
        let n = self.key_count;
        match kind {
            FeatureKind::Hold => &self.values[..n],
            FeatureKind::DownDown => &self.values[n..2 * n - 1],
            FeatureKind::UpDown => &self.values[2 * n - 1..],
            FeatureKind::TotalHold => &[],
        }
    }
}

impl fmt::Debug for Features {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Timings are never printed, so a `?features` in a log line leaks nothing.
        f.debug_struct("Features")
            .field("key_count", &self.key_count)
            .field("values", &format_args!("<{} redacted>", self.values.len()))
            .finish()
    }
}

/// Returns the number of features for `key_count` keys.
pub fn feature_count(key_count: usize) -> usize {
    (3 * key_count).saturating_sub(2)
}

/// Returns the kind and 0-based index within that kind of feature `index`.
pub fn feature_kind(key_count: usize, index: usize) -> (FeatureKind, usize) {
    let n = key_count;
    if index < n {
        (FeatureKind::Hold, index)
    } else if index < 2 * n - 1 {
        (FeatureKind::DownDown, index - n)
    } else if index < 3 * n - 2 {
        (FeatureKind::UpDown, index - (2 * n - 1))
    } else {
        (FeatureKind::TotalHold, 0)
    }
}

fn is_correction(key: &str) -> bool {
    CORRECTION_KEYS
        .iter()
        .any(|correction| key.eq_ignore_ascii_case(correction))
}

fn invalid(index: usize, problem: &'static str) -> NoSignal {
    NoSignal::InvalidTiming {
        position: index + 1,
        problem,
    }
}

fn check_key_times(index: usize, down_ms: f64, up_ms: f64) -> Result<(), NoSignal> {
    if !down_ms.is_finite() || !up_ms.is_finite() {
        return Err(invalid(index, "time is not a finite number"));
    }
    if up_ms < down_ms {
        return Err(invalid(index, "released before pressed"));
    }
    Ok(())
}

fn check_row(hold: &[f64], down_down: &[f64], up_down: &[f64]) -> Result<(), NoSignal> {
    for (index, &value) in hold.iter().enumerate() {
        if !value.is_finite() || value < 0.0 {
            return Err(invalid(index, "hold time is negative or not finite"));
        }
    }
    for (index, &value) in down_down.iter().enumerate() {
        if !value.is_finite() || value < 0.0 {
            return Err(invalid(
                index + 1,
                "down-down time is negative or not finite",
            ));
        }
    }
    if let Some(index) = up_down.iter().position(|value| !value.is_finite()) {
        return Err(invalid(index + 1, "up-down time is not finite"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use stepup_events::KeyTiming;

    use super::*;

    fn capture(keys: &[(&str, f64, f64)]) -> KeystrokeCapture {
        KeystrokeCapture {
            field: "password".to_owned(),
            keys: keys
                .iter()
                .map(|&(key, down_ms, up_ms)| KeyTiming {
                    key: key.to_owned(),
                    down_ms,
                    up_ms,
                })
                .collect(),
        }
    }

    fn sample() -> KeystrokeCapture {
        // The second key goes down before the first comes up, so its up-down time is negative.
        capture(&[("a", 0.0, 90.0), ("b", 80.0, 150.0), ("c", 400.0, 510.0)])
    }

    #[test]
    fn capture_gives_exact_timings() {
        let features = Features::from_capture(&sample(), None).expect("valid capture");

        assert_eq!(features.key_count(), 3);
        assert_eq!(features.of_kind(FeatureKind::Hold), &[90.0, 70.0, 110.0]);
        assert_eq!(features.of_kind(FeatureKind::DownDown), &[80.0, 320.0]);
        assert_eq!(features.of_kind(FeatureKind::UpDown), &[-10.0, 250.0]);
        assert_eq!(
            features.values(),
            &[90.0, 70.0, 110.0, 80.0, 320.0, -10.0, 250.0]
        );
    }

    #[test]
    fn down_down_is_hold_plus_up_down() {
        let features = Features::from_capture(&sample(), None).expect("valid capture");
        let hold = features.of_kind(FeatureKind::Hold);
        let up_down = features.of_kind(FeatureKind::UpDown);

        for (i, &down_down) in features.of_kind(FeatureKind::DownDown).iter().enumerate() {
            assert_eq!(down_down, hold[i] + up_down[i]);
        }
    }

    #[test]
    fn correction_key_gives_no_signal() {
        for name in ["Backspace", "Delete", "DEL"] {
            let keys = capture(&[("a", 0.0, 90.0), (name, 100.0, 150.0), ("a", 300.0, 380.0)]);

            let result = Features::from_capture(&keys, None);

            assert_eq!(result, Err(NoSignal::Correction { position: 2 }), "{name}");
        }
    }

    #[test]
    fn length_mismatch_names_both_counts() {
        let result = Features::from_capture(&sample(), Some(4));

        let error = result.expect_err("three keys against a four-key template");
        assert_eq!(
            error,
            NoSignal::LengthMismatch {
                expected: 4,
                found: 3
            }
        );
        assert_eq!(error.code(), "length_mismatch");
        assert_eq!(
            error.to_string(),
            "expected 4 keys as in the template, found 3"
        );
    }

    #[test]
    fn missing_field_and_other_field_give_no_signal() {
        let capture = sample();
        let missing = NoSignal::MissingField {
            field: "pin".to_owned(),
        };

        assert_eq!(
            Features::from_attempt(None, "pin", None),
            Err(missing.clone())
        );
        assert_eq!(
            Features::from_attempt(Some(&capture), "pin", None),
            Err(missing)
        );
        assert!(Features::from_attempt(Some(&capture), "password", None).is_ok());
    }

    #[test]
    fn single_key_is_too_short() {
        let result = Features::from_capture(&capture(&[("a", 0.0, 10.0)]), None);

        assert_eq!(result, Err(NoSignal::TooShort { found: 1 }));
    }

    #[test]
    fn impossible_times_give_invalid_timing() {
        let released_early = capture(&[("a", 0.0, 90.0), ("b", 100.0, 50.0)]);
        let out_of_order = capture(&[("a", 100.0, 190.0), ("b", 50.0, 80.0)]);
        let not_finite = capture(&[("a", 0.0, f64::NAN), ("b", 100.0, 150.0)]);

        for (keys, position) in [(released_early, 2), (out_of_order, 2), (not_finite, 1)] {
            let error = Features::from_capture(&keys, None).expect_err("invalid capture");
            assert_eq!(error.code(), "invalid_timing");
            assert!(matches!(error, NoSignal::InvalidTiming { position: p, .. } if p == position));
        }
    }

    #[test]
    fn sequence_tag_depends_on_keys_and_their_boundaries() {
        let abc = SequenceTag::of_keys(["a", "b", "c"]);

        assert_eq!(abc, SequenceTag::of_keys(["a", "b", "c"]));
        assert_ne!(abc, SequenceTag::of_keys(["a", "b", "d"]));
        assert_ne!(abc, SequenceTag::of_keys(["ab", "c"]));
    }

    #[test]
    fn debug_output_hides_timings() {
        let features = Features::from_capture(&sample(), None).expect("valid capture");

        let printed = format!("{features:?}");

        assert!(!printed.contains("320"), "{printed}");
        assert!(printed.contains("key_count: 3"), "{printed}");
    }

    #[test]
    fn row_with_inconsistent_lengths_is_rejected() {
        let result = Features::from_row(None, &[1.0, 2.0, 3.0], &[4.0], &[5.0, 6.0]);

        assert_eq!(
            result,
            Err(NoSignal::LengthMismatch {
                expected: 3,
                found: 2
            })
        );
    }

    #[test]
    fn feature_kind_maps_indices_to_kinds() {
        assert_eq!(feature_count(3), 7);
        assert_eq!(feature_kind(3, 2), (FeatureKind::Hold, 2));
        assert_eq!(feature_kind(3, 3), (FeatureKind::DownDown, 0));
        assert_eq!(feature_kind(3, 6), (FeatureKind::UpDown, 1));
        assert_eq!(feature_kind(3, 7), (FeatureKind::TotalHold, 0));
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_captures_never_panic(
            keys in proptest::collection::vec(
                ("[a-zA-Z]{1,9}", -1e6f64..1e6, 0f64..1e4), 0..30),
            expected in proptest::option::of(0usize..30),
        ) {
            let keys: Vec<(&str, f64, f64)> = keys
                .iter()
                .map(|(key, down, hold)| (key.as_str(), *down, down + hold))
                .collect();

            if let Ok(features) = Features::from_capture(&capture(&keys), expected) {
                proptest::prop_assert_eq!(features.values().len(), 3 * keys.len() - 2);
                proptest::prop_assert!(features.values().iter().all(|v| v.is_finite()));
            }
        }
    }
}
