//! Parquet input, read with polars in slices of rows so memory stays bounded.
//!
//! Two layouts are read. In the JSON layout a string column `event` contains one event per row in
//! the wire format of the events topic. In the flat layout each top-level event field has its
//! own column (`type`, `event_id`, `user_id`, `occurred_at`, `ip`, `user_agent`, ...): string,
//! boolean and numeric columns become JSON values, nulls are left out, and the string columns
//! `attributes` and `keystroke` hold JSON text. A flat file without a `version` column is read
//! as schema version 1. Either layout may add boolean label columns `is_attack_ip` and
//! `is_account_takeover`. Every row is validated with `parse_event`.

use std::fs::File;
use std::path::{Path, PathBuf};

use polars::prelude::*;
use serde_json::{Map, Value};
use stepup_events::{SCHEMA_VERSION, parse_event};

use super::{Batch, InputError, InputEvent, InvalidRecord, Labels, Position, io_error};

/// Rows read per slice.
const SLICE_ROWS: usize = 64 * 1024;

/// Name of the JSON column of the JSON layout.
const EVENT_COLUMN: &str = "event";

/// Columns the flat layout needs at least.
const FLAT_REQUIRED: [&str; 4] = ["type", "event_id", "user_id", "occurred_at"];

/// String columns of the flat layout that hold JSON text.
const JSON_TEXT_COLUMNS: [&str; 2] = ["attributes", "keystroke"];

/// Optional boolean label columns, in [`Labels`] order.
const LABEL_COLUMNS: [&str; 2] = ["is_attack_ip", "is_account_takeover"];

/// Storage layout of the events in a file.
enum Layout {
    /// One JSON event per row in the `event` column.
    Json,
    /// One column per field; the names of the event columns.
    Flat(Vec<String>),
}

/// Reads a Parquet file slice by slice.
pub(super) struct ParquetSource {
    path: PathBuf,
    metadata: FileMetadataRef,
    layout: Layout,
    labels: Vec<String>,
    next_row: usize,
    total_rows: usize,
}

// === impl ParquetSource ===

impl ParquetSource {
    pub(super) fn open(path: &Path) -> Result<Self, InputError> {
        let file = File::open(path).map_err(io_error(path))?;
        let mut reader = ParquetReader::new(file);
        let decode = |source| InputError::Decode {
            path: path.to_path_buf(),
            format: "parquet",
            source,
        };
        let names: Vec<String> = reader
            .schema()
            .map_err(decode)?
            .iter_names()
            .map(|name| name.to_string())
            .collect();
        let metadata = reader.get_metadata().map_err(decode)?.clone();
        let layout = detect_layout(path, &names)?;
        let labels = LABEL_COLUMNS
            .iter()
            .filter(|label| names.iter().any(|name| name == *label))
            .map(|label| (*label).to_owned())
            .collect();
        Ok(Self {
            path: path.to_path_buf(),
            total_rows: metadata.num_rows,
            metadata,
            layout,
            labels,
            next_row: 0,
        })
    }

    fn read_slice(&self, rows: usize) -> Result<DataFrame, InputError> {
        let file = File::open(&self.path).map_err(io_error(&self.path))?;
        let mut columns = match &self.layout {
            Layout::Json => vec![EVENT_COLUMN.to_owned()],
            Layout::Flat(columns) => columns.clone(),
        };
        columns.extend(self.labels.iter().cloned());
        let mut reader = ParquetReader::new(file)
            .with_slice(Some((self.next_row, rows)))
            .with_columns(Some(columns));
        reader.set_metadata(self.metadata.clone());
        reader.finish().map_err(|source| InputError::Decode {
            path: self.path.clone(),
            format: "parquet",
            source,
        })
    }

    fn convert(&self, frame: &DataFrame, first_row: u64) -> Result<Batch, InputError> {
        let layout_error = |message: String| InputError::Layout {
            path: self.path.clone(),
            message,
        };
        let texts = match &self.layout {
            Layout::Json => json_texts(frame).map_err(layout_error)?,
            Layout::Flat(columns) => flat_texts(frame, columns).map_err(layout_error)?,
        };
        let labels = read_labels(frame, &self.labels).map_err(layout_error)?;

        let mut batch = Batch::default();
        for (offset, (text, labels)) in texts.into_iter().zip(labels).enumerate() {
            let position = Position::Row(first_row + offset as u64 + 1);
            let parsed =
                text.and_then(|text| parse_event(text.as_bytes()).map_err(|e| e.to_string()));
            match parsed {
                Ok(event) => batch.events.push(InputEvent {
                    event,
                    position,
                    labels,
                }),
                Err(reason) => batch.invalid.push(InvalidRecord { position, reason }),
            }
        }
        Ok(batch)
    }
}

impl super::Source for ParquetSource {
    fn next_batch(&mut self) -> Result<Option<Batch>, InputError> {
        if self.next_row >= self.total_rows {
            return Ok(None);
        }
        let rows = SLICE_ROWS.min(self.total_rows - self.next_row);
        let frame = self.read_slice(rows)?;
        let batch = self.convert(&frame, self.next_row as u64)?;
        self.next_row += rows;
        Ok(Some(batch))
    }

    fn progress(&self) -> (u64, u64) {
        (self.next_row as u64, self.total_rows as u64)
    }

    fn progress_unit(&self) -> &'static str {
        "rows"
    }
}

fn detect_layout(path: &Path, names: &[String]) -> Result<Layout, InputError> {
    let has = |wanted: &str| names.iter().any(|name| name == wanted);
    if has(EVENT_COLUMN) {
        return Ok(Layout::Json);
    }
    if FLAT_REQUIRED.iter().all(|column| has(column)) {
        let columns = names
            .iter()
            .filter(|name| !LABEL_COLUMNS.contains(&name.as_str()))
            .cloned()
            .collect();
        return Ok(Layout::Flat(columns));
    }
    Err(InputError::Layout {
        path: path.to_path_buf(),
        message: format!(
            "found the columns [{}]; expected a string column `event` holding JSON events, or \
             the flat columns {} with further event fields",
            names.join(", "),
            FLAT_REQUIRED.join(", ")
        ),
    })
}

/// Returns the JSON text of each row, or why the row has none.
type RowTexts = Vec<Result<String, String>>;

fn json_texts(frame: &DataFrame) -> Result<RowTexts, String> {
    let column = frame.column(EVENT_COLUMN).map_err(|e| e.to_string())?;
    let strings = column.str().map_err(|_| {
        format!(
            "column `{EVENT_COLUMN}` has type {}; store each event's JSON text as a string",
            column.dtype()
        )
    })?;
    Ok(strings
        .iter()
        .map(|text| {
            text.map(str::to_owned)
                .ok_or_else(|| format!("`{EVENT_COLUMN}` is null"))
        })
        .collect())
}

/// Builds each row's JSON object from the flat columns.
fn flat_texts(frame: &DataFrame, columns: &[String]) -> Result<RowTexts, String> {
    let mut values = Vec::with_capacity(columns.len());
    for name in columns {
        let column = frame.column(name).map_err(|e| e.to_string())?;
        values.push(column_values(column)?);
    }
    let has_version = columns.iter().any(|name| name == "version");

    let mut texts = Vec::with_capacity(frame.height());
    for row in 0..frame.height() {
        let mut object = Map::new();
        if !has_version {
            object.insert("version".into(), Value::from(SCHEMA_VERSION));
        }
        let mut failure = None;
        for (name, column) in columns.iter().zip(values.iter_mut()) {
            match column[row].take() {
                Some(Ok(value)) => {
                    object.insert(name.clone(), value);
                }
                Some(Err(reason)) => failure = Some(reason),
                None => {}
            }
        }
        texts.push(match failure {
            Some(reason) => Err(reason),
            None => Ok(Value::Object(object).to_string()),
        });
    }
    Ok(texts)
}

/// Converts a column to JSON values; `None` for nulls, `Err` for JSON text that does not parse.
fn column_values(column: &Column) -> Result<Vec<Option<Result<Value, String>>>, String> {
    let name = column.name().as_str();
    let dtype = column.dtype();
    let cast_error = |e: PolarsError| format!("failed to read column `{name}`: {e}");
    let values = match dtype {
        DataType::String if JSON_TEXT_COLUMNS.contains(&name) => {
            let parse = |text: &str| {
                serde_json::from_str(text).map_err(|e| format!("invalid JSON in `{name}`: {e}"))
            };
            column
                .str()
                .map_err(cast_error)?
                .iter()
                .map(|v| v.map(parse))
                .collect()
        }
        DataType::String => collect(column.str().map_err(cast_error)?.iter()),
        DataType::Boolean => collect(column.bool().map_err(cast_error)?.iter()),
        dtype if dtype.is_integer() => {
            let cast = column.cast(&DataType::Int64).map_err(cast_error)?;
            collect(cast.i64().map_err(cast_error)?.iter())
        }
        dtype if dtype.is_float() => {
            let cast = column.cast(&DataType::Float64).map_err(cast_error)?;
            collect(cast.f64().map_err(cast_error)?.iter())
        }
        other => {
            return Err(format!(
                "column `{name}` has type {other}; store it as a string (RFC 3339 text for \
                 times), a boolean or a number"
            ));
        }
    };
    Ok(values)
}

fn collect<T: Into<Value>>(
    values: impl Iterator<Item = Option<T>>,
) -> Vec<Option<Result<Value, String>>> {
    values.map(|value| value.map(|v| Ok(v.into()))).collect()
}

fn read_labels(frame: &DataFrame, present: &[String]) -> Result<Vec<Labels>, String> {
    let mut labels = vec![Labels::default(); frame.height()];
    for name in present {
        let column = frame.column(name).map_err(|e| e.to_string())?;
        let flags = column.bool().map_err(|_| {
            format!(
                "label column `{name}` has type {}; store it as a boolean",
                column.dtype()
            )
        })?;
        for (label, flag) in labels.iter_mut().zip(flags.iter()) {
            match name.as_str() {
                "is_attack_ip" => label.attack_ip = flag,
                _ => label.account_takeover = flag,
            }
        }
    }
    Ok(labels)
}

#[cfg(test)]
mod tests {
    use stepup_events::{EventBody, EventKind};

    use crate::input::{EventReader, InputFormat};

    use super::*;

    const ATTEMPT: &str = "{\"type\":\"login_attempt\",\"version\":1,\"event_id\":\"e1\",\
        \"user_id\":\"u1\",\"occurred_at\":\"2026-03-02T09:00:00Z\",\"ip\":\"81.2.69.142\",\
        \"user_agent\":\"curl/8.5.0\"}";
    const RESULT: &str = "{\"type\":\"login_result\",\"version\":1,\"event_id\":\"e2\",\
        \"user_id\":\"u1\",\"occurred_at\":\"2026-03-02T09:00:01Z\",\"attempt_id\":\"e1\",\
        \"success\":true}";

    fn write_parquet(columns: Vec<Column>) -> tempfile::NamedTempFile {
        let file = tempfile::Builder::new()
            .suffix(".parquet")
            .tempfile()
            .unwrap();
        let height = columns[0].len();
        let mut frame = DataFrame::new(height, columns).unwrap();
        ParquetWriter::new(File::create(file.path()).unwrap())
            .finish(&mut frame)
            .unwrap();
        file
    }

    fn read(path: &Path) -> Batch {
        EventReader::open(path, InputFormat::Parquet)
            .unwrap()
            .read_all()
            .unwrap()
    }

    #[test]
    fn json_layout_reports_bad_rows() {
        let events = vec![Some(ATTEMPT), None, Some("{}"), Some(RESULT)];
        let file = write_parquet(vec![Column::new("event".into(), events)]);

        let batch = read(file.path());

        assert_eq!(batch.events.len(), 2);
        assert_eq!(batch.events[1].event.event_id, "e2");
        assert_eq!(batch.events[1].position, Position::Row(4));
        let positions: Vec<Position> = batch.invalid.iter().map(|r| r.position).collect();
        assert_eq!(positions, [Position::Row(2), Position::Row(3)]);
        assert!(batch.invalid[0].reason.contains("null"));
    }

    #[test]
    fn flat_layout_builds_events_from_columns() {
        let file = write_parquet(vec![
            Column::new("type".into(), ["login_attempt", "login_result"]),
            Column::new("event_id".into(), ["e1", "e2"]),
            Column::new("user_id".into(), ["u1", "u1"]),
            Column::new(
                "occurred_at".into(),
                ["2026-03-02T09:00:00Z", "2026-03-02T09:00:01Z"],
            ),
            Column::new("ip".into(), [Some("81.2.69.142"), None]),
            Column::new("user_agent".into(), [Some("curl/8.5.0"), None]),
            Column::new("attributes".into(), [Some(r#"{"roles":["admin"]}"#), None]),
            Column::new("attempt_id".into(), [None, Some("e1")]),
            Column::new("success".into(), [None, Some(true)]),
            Column::new("is_attack_ip".into(), [Some(true), Some(true)]),
        ]);

        let batch = read(file.path());

        assert!(batch.invalid.is_empty(), "{:?}", batch.invalid);
        assert_eq!(batch.events.len(), 2);
        let EventBody::LoginAttempt(attempt) = &batch.events[0].event.body else {
            panic!("first event is not an attempt");
        };
        assert_eq!(attempt.attributes.roles, ["admin"]);
        assert_eq!(batch.events[1].event.kind(), EventKind::LoginResult);
        assert_eq!(batch.events[0].labels.attack_ip, Some(true));
        assert_eq!(batch.events[0].labels.account_takeover, None);
    }

    #[test]
    fn unknown_layout_lists_the_columns() {
        let file = write_parquet(vec![Column::new("payload".into(), [ATTEMPT])]);
        let error = match EventReader::open(file.path(), InputFormat::Parquet) {
            Ok(_) => panic!("accepted an unknown layout"),
            Err(error) => error.to_string(),
        };
        assert!(error.contains("[payload]"), "{error}");
        assert!(error.contains("`event`"), "{error}");
    }
}
