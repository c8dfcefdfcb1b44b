//! Backtests of stepup rule sets against recorded events.
//!
//! This crate owns `stepup backtest`: it reads historical events (NDJSON, Parquet or the CSV
//! layout of the RBA data set), replays them in time order through a fresh [`Engine`] per rule
//! set, and reports what each rule set decided. Given a baseline rule set it replays the same
//! events through both and lists every event whose decision changed. Outputs are decision
//! tables (CSV or Parquet, written with polars), `diff.csv`, `summary.json` and a
//! self-contained `report.html` with inline SVG charts. The same inputs and options give
//! byte-identical outputs: nothing in them depends on the wall clock.
//!
//! It does not parse command-line flags or configuration files (the `stepup` binary does), and
//! it does not change the engine, the rules or any profile store: every replay starts from
//! empty profiles.
//!
//! [`Engine`]: stepup_engine::Engine

#![forbid(unsafe_code)]

mod collect;
mod generate;
mod input;
mod output;
mod progress;
mod record;
mod report;
mod run;
mod summary;
mod svg;

pub use generate::{GenerateOptions, GenerateStats, generate_events};
pub use input::{
    Batch, EventReader, InputError, InputEvent, InputFormat, InvalidRecord, Labels, Position,
    RBA_COLUMNS,
};
pub use output::{OutputError, OutputFormat};
pub use record::{Change, DecisionRecord, EventFacts, NO_RULE};
pub use run::{Backtest, BacktestError, BacktestOptions, Role, RuleSetSpec};
pub use summary::{
    Bucket, DiffRow, DiffSummary, Group, InputSummary, RequirementCounts, RuleInfo, RuleSetSummary,
    Summary, TimeBucket, Transition,
};
