//! Keystroke dynamics for one fixed field, such as a password: timing features, per-user
//! templates, anomaly detectors, calibrated scores, and their evaluation on public data sets.
//!
//! - [`Features`] turns a [`stepup_events::KeystrokeCapture`] into hold, down-down and
//!   up-down times, or gives a [`NoSignal`] reason (correction keys, another length or key
//!   sequence, impossible times).
//! - [`Template`] learns from verified logins only, keeps the newest 20 samples as `i16`
//!   milliseconds, and starts scoring after 10. Its module documentation explains the storage.
//! - [`Detector`] is implemented by [`ScaledManhattan`], the reference detector of Killourhy
//!   and Maxion (DSN 2009), and by [`ParzenDetector`], a recency-weighted kernel density
//!   detector designed here. [`Template::score`] returns a [`KeystrokeVerdict`] whose score is
//!   calibrated to [0, 1] against the user's own leave-one-out scores.
//! - [`evaluate`] runs the Killourhy–Maxion protocol on a [`Dataset`] read by [`read_dataset`]
//!   from the MEU-Mobile KSD or CMU DSL-StrongPasswordData layout.
//!
//! This crate does no logging and no I/O beyond reading data set files. `Debug` output of
//! features and templates omits the timings. Storing templates in profiles and deciding on the
//! score belong to other crates.

#![forbid(unsafe_code)]

mod calibration;
mod dataset;
mod detector;
mod eval;
mod features;
mod manhattan;
mod parzen;
mod roc;
mod template;

pub use calibration::{Calibration, normalise};
pub use dataset::{Dataset, DatasetError, Layout, Subject, parse_dataset, read_dataset};
pub use detector::{Detector, Deviation, FitError, Model, Samples};
pub use eval::{
    DetectorReport, EvalError, EvalReport, IMPOSTOR_REPS, SubjectResult, evaluate, fit_calibration,
};
pub use features::{FeatureKind, Features, NoSignal, SequenceTag, feature_count, feature_kind};
pub use manhattan::ScaledManhattan;
pub use parzen::{ParzenConfig, ParzenDetector};
pub use roc::equal_error_rate;
pub use template::{
    KeystrokeVerdict, LearnOutcome, MAX_TEMPLATE_KEYS, MAX_WINDOW, Template, TemplateConfig,
    TemplateConfigError,
};
