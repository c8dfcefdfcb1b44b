//! Readers of recorded events: NDJSON, Parquet and the RBA data set's CSV layout.
//!
//! Every reader yields [`Batch`]es in input order. A record that is not a valid event is
//! returned as an [`InvalidRecord`] with its position, so a run can count and report it
//! instead of stopping.

mod ndjson;
mod parquet;
mod rba;

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::Serialize;
use stepup_events::Event;

pub use rba::RBA_COLUMNS;

/// Events read per batch by the line-based readers.
const BATCH_EVENTS: usize = 4096;

/// Layouts of input files.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum InputFormat {
    /// One JSON event per line, in the schema of the events topic.
    Ndjson,
    /// Apache Parquet with an `event` column of JSON text, or one column per event field.
    Parquet,
    /// The CSV layout of the RBA data set (Wiefling et al.), one login per row.
    Rba,
}

/// Where a record sits in its input file, for error messages and reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Position {
    /// Line number in a text file, counted from 1.
    Line(u64),
    /// Row number in a Parquet file, counted from 1.
    Row(u64),
}

/// Ground-truth labels that some inputs carry, reported next to the decision.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Labels {
    /// Whether the login came from an address known to attack (RBA `Is Attack IP`).
    pub attack_ip: Option<bool>,
    /// Whether the login was an account takeover (RBA `Is Account Takeover`).
    pub account_takeover: Option<bool>,
}

/// A valid event with its position and labels.
#[derive(Clone, Debug, PartialEq)]
pub struct InputEvent {
    /// The validated event.
    pub event: Event,
    /// Position of the record the event came from.
    pub position: Position,
    /// Labels of the record, if the input has any.
    pub labels: Labels,
}

/// A record that could not be turned into an event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct InvalidRecord {
    /// Position of the record.
    pub position: Position,
    /// Why the record was rejected.
    pub reason: String,
}

/// Records read in one step, in input order.
#[derive(Debug, Default)]
pub struct Batch {
    /// Valid events.
    pub events: Vec<InputEvent>,
    /// Rejected records.
    pub invalid: Vec<InvalidRecord>,
}

/// Reasons an input cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    /// The input file cannot be opened or read.
    #[error("failed to read input `{path}` (check the path given to `--input`)")]
    Io {
        /// Input file.
        path: PathBuf,
        /// I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Polars failed to decode the file.
    #[error("failed to decode {format} input `{path}`")]
    Decode {
        /// Input file.
        path: PathBuf,
        /// Format the file was read as.
        format: &'static str,
        /// Polars' error.
        #[source]
        source: polars::error::PolarsError,
    },
    /// The file's columns match no supported layout.
    #[error("invalid layout of input `{path}`: {message}")]
    Layout {
        /// Input file.
        path: PathBuf,
        /// What is wrong and what is expected.
        message: String,
    },
    /// The extension names no known format.
    #[error(
        "failed to detect the format of input `{path}` from its extension; use .ndjson, \
         .jsonl, .parquet or .csv (RBA), or pass `--input-format ndjson|parquet|rba`"
    )]
    UnknownFormat {
        /// Input file.
        path: PathBuf,
    },
}

// === impl InputFormat ===

impl InputFormat {
    /// Every format, in the order help texts list them.
    pub const ALL: [InputFormat; 3] = [InputFormat::Ndjson, InputFormat::Parquet, InputFormat::Rba];

    /// Returns the format named by the file's extension.
    pub fn from_path(path: &Path) -> Result<Self, InputError> {
        let extension = path
            .extension()
            .and_then(|extension| extension.to_str())
            .map(str::to_ascii_lowercase);
        match extension.as_deref() {
            Some("ndjson" | "jsonl" | "json") => Ok(InputFormat::Ndjson),
            Some("parquet" | "pq") => Ok(InputFormat::Parquet),
            Some("csv") => Ok(InputFormat::Rba),
            _ => Err(InputError::UnknownFormat {
                path: path.to_path_buf(),
            }),
        }
    }

    /// Returns the name used on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            InputFormat::Ndjson => "ndjson",
            InputFormat::Parquet => "parquet",
            InputFormat::Rba => "rba",
        }
    }
}

impl FromStr for InputFormat {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        InputFormat::ALL
            .into_iter()
            .find(|format| format.as_str() == name)
            .ok_or_else(|| format!("invalid input format `{name}`; use ndjson, parquet or rba"))
    }
}

impl fmt::Display for InputFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// === impl Position ===

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Position::Line(line) => write!(f, "line {line}"),
            Position::Row(row) => write!(f, "row {row}"),
        }
    }
}

// === impl Labels ===

impl Labels {
    /// Returns true when the record carries any label.
    pub fn is_labelled(&self) -> bool {
        self.attack_ip.is_some() || self.account_takeover.is_some()
    }
}

/// One input format's reader.
trait Source: Send {
    /// Reads the next records; `None` at the end of the input.
    fn next_batch(&mut self) -> Result<Option<Batch>, InputError>;

    /// Returns progress so far and the total, in the unit of [`Source::progress_unit`].
    fn progress(&self) -> (u64, u64);

    /// Returns the unit of progress: `bytes` or `rows`.
    fn progress_unit(&self) -> &'static str;
}

/// A reader of one input file, in any supported format.
pub struct EventReader {
    source: Box<dyn Source>,
    format: InputFormat,
}

// === impl EventReader ===

impl EventReader {
    /// Opens `path` as `format`.
    pub fn open(path: &Path, format: InputFormat) -> Result<Self, InputError> {
        let source: Box<dyn Source> = match format {
            InputFormat::Ndjson => Box::new(ndjson::NdjsonSource::open(path)?),
            InputFormat::Parquet => Box::new(parquet::ParquetSource::open(path)?),
            InputFormat::Rba => Box::new(rba::RbaSource::open(path)?),
        };
        Ok(Self { source, format })
    }

    /// Returns the format the file is read as.
    pub fn format(&self) -> InputFormat {
        self.format
    }

    /// Reads the next records in input order; `None` at the end of the input.
    pub fn next_batch(&mut self) -> Result<Option<Batch>, InputError> {
        self.source.next_batch()
    }

    /// Reads every remaining record into one batch.
    pub fn read_all(mut self) -> Result<Batch, InputError> {
        let mut all = Batch::default();
        while let Some(batch) = self.next_batch()? {
            all.events.extend(batch.events);
            all.invalid.extend(batch.invalid);
        }
        Ok(all)
    }

    /// Returns how much of the input has been read and its total size.
    pub fn progress(&self) -> (u64, u64) {
        self.source.progress()
    }

    /// Returns the unit of [`EventReader::progress`]: `bytes` or `rows`.
    pub fn progress_unit(&self) -> &'static str {
        self.source.progress_unit()
    }
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> InputError + '_ {
    move |source| InputError::Io {
        path: path.to_path_buf(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_detected_from_extension() {
        let cases = [
            ("events.ndjson", InputFormat::Ndjson),
            ("events.JSONL", InputFormat::Ndjson),
            ("events.parquet", InputFormat::Parquet),
            ("rba-dataset.csv", InputFormat::Rba),
        ];
        for (name, expected) in cases {
            assert_eq!(
                InputFormat::from_path(Path::new(name)).unwrap(),
                expected,
                "{name}"
            );
        }
    }

    #[test]
    fn unknown_extension_names_the_flag() {
        let error = InputFormat::from_path(Path::new("events.txt")).unwrap_err();
        assert!(error.to_string().contains("--input-format"), "{error}");
    }

    #[test]
    fn format_parses_its_own_name() {
        for format in InputFormat::ALL {
            assert_eq!(format.as_str().parse::<InputFormat>().unwrap(), format);
        }
        assert!("xml".parse::<InputFormat>().is_err());
    }
}
