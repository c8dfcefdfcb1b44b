//! A statistical login risk score in the style of Freeman et al., "Who Are You? A Statistical
//! Approach to Measuring User Authenticity" (NDSS 2016).
//!
//! This crate owns the model ([`RiskModel`]), the population counts it compares users with
//! ([`Population`]), the features of an attempt ([`AttemptFeatures`]), ROC helpers for
//! evaluation ([`roc`], [`rates_at`]) and a replay of the RBA login data set ([`rba`]). It
//! does not own profiles or signals (`stepup-signals`), and it does not decide or store
//! anything: the engine calls [`RiskModel::assess`] per attempt and [`Population::learn`] per
//! verified login.

#![forbid(unsafe_code)]

mod config;
mod features;
mod model;
mod population;
pub mod rba;
mod roc;

pub use config::{RiskConfig, RiskConfigError};
pub use features::{AttemptFeatures, CountHistory, UserHistory};
pub use model::{Contribution, RiskAssessment, RiskModel, SignalInputs, logistic};
pub use population::{FeatureStats, Population};
pub use roc::{Roc, RocPoint, rates_at, roc};
pub use stepup_signals::{Feature, FeatureValue};
