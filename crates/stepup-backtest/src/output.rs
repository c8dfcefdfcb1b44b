//! Output tables, written with polars in batches: decisions per rule set, `diff.csv` and
//! `invalid.csv`.

use std::fmt;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use chrono::SecondsFormat;
use polars::io::csv::write::BatchedWriter as CsvBatchedWriter;
use polars::io::parquet::write::BatchedWriter as ParquetBatchedWriter;
use polars::prelude::*;
use serde::Serialize;
use stepup_events::Event;

use crate::input::InvalidRecord;
use crate::record::{Change, DecisionRecord, EventFacts, join_factors};

/// Rows buffered before a batch is written.
const ROWS_PER_BATCH: usize = 64 * 1024;

/// File format of the decision tables.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OutputFormat {
    /// Comma-separated values with a header row.
    #[default]
    Csv,
    /// Apache Parquet, zstd-compressed.
    Parquet,
}

/// Reasons an output cannot be written.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    /// The output directory cannot be created.
    #[error("failed to create output directory `{path}` (check the path given to `--out`)")]
    CreateDir {
        /// Directory.
        path: PathBuf,
        /// I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A file cannot be created or written.
    #[error("failed to write `{path}`")]
    Io {
        /// File.
        path: PathBuf,
        /// I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Polars failed to encode a table.
    #[error("failed to encode `{path}`")]
    Encode {
        /// File.
        path: PathBuf,
        /// Polars' error.
        #[source]
        source: PolarsError,
    },
}

// === impl OutputFormat ===

impl OutputFormat {
    /// Returns the name used on the command line, which is also the file extension.
    pub fn as_str(self) -> &'static str {
        match self {
            OutputFormat::Csv => "csv",
            OutputFormat::Parquet => "parquet",
        }
    }
}

impl FromStr for OutputFormat {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        match name {
            "csv" => Ok(OutputFormat::Csv),
            "parquet" => Ok(OutputFormat::Parquet),
            other => Err(format!(
                "invalid output format `{other}`; use csv or parquet"
            )),
        }
    }
}

impl fmt::Display for OutputFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Creates `dir` and its parents.
pub(crate) fn create_dir(dir: &Path) -> Result<(), OutputError> {
    std::fs::create_dir_all(dir).map_err(|source| OutputError::CreateDir {
        path: dir.to_path_buf(),
        source,
    })
}

/// Writes `bytes` to `path`.
pub(crate) fn write_file(path: &Path, bytes: &[u8]) -> Result<(), OutputError> {
    std::fs::write(path, bytes).map_err(|source| OutputError::Io {
        path: path.to_path_buf(),
        source,
    })
}

enum Sink {
    Csv(CsvBatchedWriter<File>),
    Parquet(Box<ParquetBatchedWriter<File>>),
}

/// A table file written one batch at a time.
struct TableWriter {
    path: PathBuf,
    sink: Sink,
}

// === impl TableWriter ===

impl TableWriter {
    fn create(path: PathBuf, format: OutputFormat, schema: &Schema) -> Result<Self, OutputError> {
        let file = File::create(&path).map_err(|source| OutputError::Io {
            path: path.clone(),
            source,
        })?;
        let sink = match format {
            OutputFormat::Csv => CsvWriter::new(file).batched(schema).map(Sink::Csv),
            OutputFormat::Parquet => ParquetWriter::new(file)
                .batched(schema)
                .map(|writer| Sink::Parquet(Box::new(writer))),
        };
        let sink = sink.map_err(|source| OutputError::Encode {
            path: path.clone(),
            source,
        })?;
        Ok(Self { path, sink })
    }

    fn write(&mut self, frame: &DataFrame) -> Result<(), OutputError> {
        let result = match &mut self.sink {
            Sink::Csv(writer) => writer.write_batch(frame),
            Sink::Parquet(writer) => writer.write_batch(frame),
        };
        result.map_err(|source| self.encode_error(source))
    }

    fn finish(mut self) -> Result<(), OutputError> {
        let result = match &mut self.sink {
            Sink::Csv(writer) => writer.finish(),
            Sink::Parquet(writer) => writer.finish().map(|_| ()),
        };
        result.map_err(|source| self.encode_error(source))
    }

    fn encode_error(&self, source: PolarsError) -> OutputError {
        OutputError::Encode {
            path: self.path.clone(),
            source,
        }
    }
}

/// Columns shared by the decision and diff tables: the event and its facts.
#[derive(Default)]
struct EventColumns {
    event_id: Vec<String>,
    user_id: Vec<String>,
    occurred_at: Vec<String>,
    event_type: Vec<&'static str>,
    country: Vec<Option<String>>,
    asn: Vec<Option<u32>>,
    network: Vec<Option<&'static str>>,
    attack_ip: Vec<Option<bool>>,
    account_takeover: Vec<Option<bool>>,
}

// === impl EventColumns ===

impl EventColumns {
    fn push(&mut self, event: &Event, facts: &EventFacts) {
        self.event_id.push(event.event_id.clone());
        self.user_id.push(event.user_id.clone());
        self.occurred_at.push(format_time(event));
        self.event_type.push(event.kind().as_str());
        self.country.push(facts.country.clone());
        self.asn.push(facts.asn);
        self.network.push(facts.network);
        self.attack_ip.push(facts.labels.attack_ip);
        self.account_takeover.push(facts.labels.account_takeover);
    }

    fn len(&self) -> usize {
        self.event_id.len()
    }

    fn event_columns(&mut self) -> Vec<Column> {
        vec![
            Column::new("event_id".into(), std::mem::take(&mut self.event_id)),
            Column::new("user_id".into(), std::mem::take(&mut self.user_id)),
            Column::new("occurred_at".into(), std::mem::take(&mut self.occurred_at)),
            Column::new("event_type".into(), std::mem::take(&mut self.event_type)),
        ]
    }

    fn fact_columns(&mut self) -> Vec<Column> {
        vec![
            Column::new("country".into(), std::mem::take(&mut self.country)),
            Column::new("asn".into(), std::mem::take(&mut self.asn)),
            Column::new("network".into(), std::mem::take(&mut self.network)),
            Column::new("is_attack_ip".into(), std::mem::take(&mut self.attack_ip)),
            Column::new(
                "is_account_takeover".into(),
                std::mem::take(&mut self.account_takeover),
            ),
        ]
    }
}

/// Formats an event time as RFC 3339 in UTC, with as many fraction digits as it has.
pub(crate) fn format_time(event: &Event) -> String {
    event
        .occurred_at
        .to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// The columns of one decision record, under a name prefix.
#[derive(Default)]
struct RecordColumns {
    requirement: Vec<&'static str>,
    factors: Vec<String>,
    risk_score: Vec<f64>,
    decided_by: Vec<String>,
    reason_codes: Vec<String>,
    shadow: Vec<String>,
}

// === impl RecordColumns ===

impl RecordColumns {
    fn push(&mut self, record: &DecisionRecord) {
        self.requirement.push(record.requirement.as_str());
        self.factors.push(join_factors(&record.factors));
        self.risk_score.push(record.risk_score);
        self.decided_by.push(record.decided_by.join("|"));
        self.reason_codes.push(record.reason_codes.join("|"));
        self.shadow.push(record.shadow.join("|"));
    }

    fn columns(&mut self, prefix: &str) -> Vec<Column> {
        let name = |field: &str| PlSmallStr::from(format!("{prefix}{field}"));
        vec![
            Column::new(name("requirement"), std::mem::take(&mut self.requirement)),
            Column::new(name("factors"), std::mem::take(&mut self.factors)),
            Column::new(name("risk_score"), std::mem::take(&mut self.risk_score)),
            Column::new(name("decided_by"), std::mem::take(&mut self.decided_by)),
            Column::new(name("reason_codes"), std::mem::take(&mut self.reason_codes)),
            Column::new(name("shadow"), std::mem::take(&mut self.shadow)),
        ]
    }
}

/// Rows buffered for a table, turned into a polars frame when a batch is written.
pub(crate) trait Rows: Default {
    fn len(&self) -> usize;

    /// Moves the buffered rows into a frame, leaving the buffer empty.
    fn take_frame(&mut self) -> DataFrame;
}

/// A table file with its buffered rows.
pub(crate) struct Table<R: Rows> {
    writer: TableWriter,
    rows: R,
}

// === impl Table ===

impl<R: Rows> Table<R> {
    pub(crate) fn create(path: PathBuf, format: OutputFormat) -> Result<Self, OutputError> {
        let empty = R::default().take_frame();
        let writer = TableWriter::create(path, format, empty.schema())?;
        Ok(Self {
            writer,
            rows: R::default(),
        })
    }

    /// Returns the file's name without its directory.
    pub(crate) fn file_name(&self) -> String {
        self.writer
            .path
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    fn flush_if_full(&mut self) -> Result<(), OutputError> {
        if self.rows.len() >= ROWS_PER_BATCH {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), OutputError> {
        if self.rows.len() == 0 {
            return Ok(());
        }
        let frame = self.rows.take_frame();
        self.writer.write(&frame)
    }

    pub(crate) fn finish(mut self) -> Result<(), OutputError> {
        self.flush()?;
        self.writer.finish()
    }
}

/// One rule set's decisions: one row per decided event.
#[derive(Default)]
pub(crate) struct DecisionRows {
    event: EventColumns,
    record: RecordColumns,
}

impl Rows for DecisionRows {
    fn len(&self) -> usize {
        self.event.len()
    }

    fn take_frame(&mut self) -> DataFrame {
        let height = self.event.len();
        let mut columns = self.event.event_columns();
        columns.extend(self.record.columns(""));
        columns.extend(self.event.fact_columns());
        DataFrame::new(height, columns).expect("every column has one value per pushed row")
    }
}

impl Table<DecisionRows> {
    /// Adds the decision on `event`.
    pub(crate) fn push(
        &mut self,
        event: &Event,
        facts: &EventFacts,
        record: &DecisionRecord,
    ) -> Result<(), OutputError> {
        self.rows.event.push(event, facts);
        self.rows.record.push(record);
        self.flush_if_full()
    }
}

/// Rows of `diff.csv`: one per event whose decision changed.
#[derive(Default)]
pub(crate) struct DiffRows {
    event: EventColumns,
    change: Vec<&'static str>,
    baseline: RecordColumns,
    candidate: RecordColumns,
}

impl Rows for DiffRows {
    fn len(&self) -> usize {
        self.event.len()
    }

    fn take_frame(&mut self) -> DataFrame {
        let height = self.event.len();
        let mut columns = self.event.event_columns();
        columns.push(Column::new(
            "change".into(),
            std::mem::take(&mut self.change),
        ));
        columns.extend(self.baseline.columns("baseline_"));
        columns.extend(self.candidate.columns("candidate_"));
        columns.extend(self.event.fact_columns());
        DataFrame::new(height, columns).expect("every column has one value per pushed row")
    }
}

impl Table<DiffRows> {
    /// Adds a changed event.
    pub(crate) fn push(
        &mut self,
        event: &Event,
        facts: &EventFacts,
        change: Change,
        baseline: &DecisionRecord,
        candidate: &DecisionRecord,
    ) -> Result<(), OutputError> {
        self.rows.event.push(event, facts);
        self.rows.change.push(change.as_str());
        self.rows.baseline.push(baseline);
        self.rows.candidate.push(candidate);
        self.flush_if_full()
    }
}

/// Writes `invalid.csv`: position and reason of each rejected record.
pub(crate) fn write_invalid(path: PathBuf, invalid: &[InvalidRecord]) -> Result<(), OutputError> {
    let positions: Vec<String> = invalid
        .iter()
        .map(|record| record.position.to_string())
        .collect();
    let reasons: Vec<&str> = invalid
        .iter()
        .map(|record| record.reason.as_str())
        .collect();
    let frame = DataFrame::new(
        invalid.len(),
        vec![
            Column::new("position".into(), positions),
            Column::new("reason".into(), reasons),
        ],
    )
    .expect("both columns have one value per record");
    let mut writer = TableWriter::create(path, OutputFormat::Csv, frame.schema())?;
    writer.write(&frame)?;
    writer.finish()
}
