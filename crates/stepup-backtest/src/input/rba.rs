//! The CSV layout of the RBA data set (Wiefling et al., "Pump Up Password Security! Evaluating
//! and Enhancing Risk-Based Authentication on a Real-World Large-Scale Online Service",
//! CC BY 4.0): one login per row, turned into a `login_attempt` and its `login_result`.
//!
//! The file is read in chunks of whole records and each chunk is parsed with polars, so memory
//! stays bounded on the full data set (31 million rows).

use std::fs::File;
use std::io::{Cursor, Read};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{NaiveDateTime, TimeZone, Utc};
use polars::prelude::*;
use stepup_events::{
    Attributes, Event, EventBody, LoginAttempt, LoginResult, MAX_ID_BYTES, SCHEMA_VERSION,
};

use super::{Batch, InputError, InputEvent, InvalidRecord, Labels, Position, io_error};

/// Header of the RBA data set, in file order; the risk model's importer reads the same layout.
pub use stepup_risk::rba::RBA_COLUMNS;

/// Bytes read from the file per chunk.
const CHUNK_BYTES: u64 = 4 << 20;

/// Longest accepted user agent, as in the event schema.
const MAX_USER_AGENT_BYTES: usize = 2048;

/// Format of `Login Timestamp`, which has no zone and is read as UTC.
const TIMESTAMP_FORMAT: &str = "%Y-%m-%d %H:%M:%S%.f";

/// Reads the RBA CSV in chunks that end on a record boundary.
pub(super) struct RbaSource {
    path: PathBuf,
    file: File,
    schema: SchemaRef,
    /// Bytes read but not yet parsed; always starts at a record boundary.
    pending: Vec<u8>,
    /// Line number of the first record in `pending`.
    next_line: u64,
    bytes_read: u64,
    total_bytes: u64,
    eof: bool,
}

/// One row of the data set, checked.
struct RbaLogin {
    attempt_id: String,
    user_id: String,
    occurred_at: chrono::DateTime<Utc>,
    ip: IpAddr,
    user_agent: String,
    success: bool,
    labels: Labels,
}

/// The columns of one parsed chunk that the conversion reads.
struct RbaColumns<'a> {
    index: &'a StringChunked,
    timestamp: &'a StringChunked,
    user: &'a StringChunked,
    ip: &'a StringChunked,
    user_agent: &'a StringChunked,
    success: &'a StringChunked,
    attack_ip: &'a StringChunked,
    account_takeover: &'a StringChunked,
}

// === impl RbaSource ===

impl RbaSource {
    pub(super) fn open(path: &Path) -> Result<Self, InputError> {
        let file = File::open(path).map_err(io_error(path))?;
        let total_bytes = file.metadata().map_err(io_error(path))?.len();
        let schema: Schema = RBA_COLUMNS
            .iter()
            .map(|name| Field::new((*name).into(), DataType::String))
            .collect();
        let mut source = Self {
            path: path.to_path_buf(),
            file,
            schema: Arc::new(schema),
            pending: Vec::new(),
            next_line: 2,
            bytes_read: 0,
            total_bytes,
            eof: false,
        };
        source.read_header()?;
        Ok(source)
    }

    /// Reads and checks the header line, leaving the rest of the chunk in `pending`.
    fn read_header(&mut self) -> Result<(), InputError> {
        let newline = loop {
            if let Some(at) = self.pending.iter().position(|&byte| byte == b'\n') {
                break at;
            }
            if !self.fill()? {
                break self.pending.len();
            }
        };
        let header = String::from_utf8_lossy(&self.pending[..newline]).into_owned();
        check_header(&self.path, &header)?;
        self.pending.drain(..(newline + 1).min(self.pending.len()));
        Ok(())
    }

    /// Appends up to [`CHUNK_BYTES`] to `pending`; false at the end of the file.
    fn fill(&mut self) -> Result<bool, InputError> {
        if self.eof {
            return Ok(false);
        }
        let read = (&mut self.file)
            .take(CHUNK_BYTES)
            .read_to_end(&mut self.pending)
            .map_err(io_error(&self.path))?;
        self.bytes_read += read as u64;
        self.eof = read == 0;
        Ok(!self.eof)
    }

    /// Returns the next run of whole records, or `None` at the end of the file.
    fn next_chunk(&mut self) -> Result<Option<Vec<u8>>, InputError> {
        loop {
            let more = self.fill()?;
            if !more {
                let rest = std::mem::take(&mut self.pending);
                let blank = rest.iter().all(u8::is_ascii_whitespace);
                return Ok(if blank { None } else { Some(rest) });
            }
            if let Some(end) = last_record_end(&self.pending) {
                let rest = self.pending.split_off(end);
                return Ok(Some(std::mem::replace(&mut self.pending, rest)));
            }
        }
    }

    fn parse_chunk(&self, chunk: Vec<u8>) -> Result<DataFrame, InputError> {
        CsvReadOptions::default()
            .with_has_header(false)
            .with_schema(Some(self.schema.clone()))
            .into_reader_with_file_handle(Cursor::new(chunk))
            .finish()
            .map_err(|source| InputError::Decode {
                path: self.path.clone(),
                format: "rba",
                source,
            })
    }

    fn convert(&self, frame: &DataFrame, first_line: u64) -> Result<Batch, InputError> {
        let columns = RbaColumns::of(frame).map_err(|source| InputError::Decode {
            path: self.path.clone(),
            format: "rba",
            source,
        })?;
        let mut batch = Batch::default();
        for row in 0..frame.height() {
            // NOTE: line numbers assume one record per line, as in the published data set. A
            // quoted field with a line break shifts them until the next chunk.
            let position = Position::Line(first_line + row as u64);
            match columns.events(row, position) {
                Ok(events) => batch.events.extend(events),
                Err(reason) => batch.invalid.push(InvalidRecord { position, reason }),
            }
        }
        Ok(batch)
    }
}

impl super::Source for RbaSource {
    fn next_batch(&mut self) -> Result<Option<Batch>, InputError> {
        let Some(chunk) = self.next_chunk()? else {
            return Ok(None);
        };
        let lines = chunk.iter().filter(|&&byte| byte == b'\n').count() as u64;
        let first_line = self.next_line;
        self.next_line += lines;
        let frame = self.parse_chunk(chunk)?;
        self.convert(&frame, first_line).map(Some)
    }

    fn progress(&self) -> (u64, u64) {
        (self.bytes_read, self.total_bytes)
    }

    fn progress_unit(&self) -> &'static str {
        "bytes"
    }
}

fn check_header(path: &Path, header: &str) -> Result<(), InputError> {
    let header = header.trim_start_matches('\u{feff}').trim_end_matches('\r');
    let found: Vec<&str> = header.split(',').collect();
    if found == RBA_COLUMNS {
        return Ok(());
    }
    let mismatch = RBA_COLUMNS
        .iter()
        .zip(found.iter().chain(std::iter::repeat(&"")))
        .position(|(expected, found)| expected != found)
        .unwrap_or(RBA_COLUMNS.len());
    let message = match RBA_COLUMNS.get(mismatch) {
        Some(expected) => format!(
            "column {} is `{}`, expected `{expected}`",
            mismatch + 1,
            found.get(mismatch).copied().unwrap_or("")
        ),
        None => format!(
            "found {} columns, expected {}",
            found.len(),
            RBA_COLUMNS.len()
        ),
    };
    Err(InputError::Layout {
        path: path.to_path_buf(),
        message: format!(
            "{message}; an RBA file starts with the header `{}` (pass `--input-format` for \
             other layouts)",
            RBA_COLUMNS.join(",")
        ),
    })
}

/// Returns the offset just past the last line break outside quotes, if there is one.
fn last_record_end(bytes: &[u8]) -> Option<usize> {
    let mut in_quotes = false;
    let mut end = None;
    for (offset, &byte) in bytes.iter().enumerate() {
        match byte {
            b'"' => in_quotes = !in_quotes,
            b'\n' if !in_quotes => end = Some(offset + 1),
            _ => {}
        }
    }
    end
}

// === impl RbaColumns ===

impl<'a> RbaColumns<'a> {
    fn of(frame: &'a DataFrame) -> PolarsResult<Self> {
        let column = |name: &str| frame.column(name)?.str();
        Ok(Self {
            index: column("index")?,
            timestamp: column("Login Timestamp")?,
            user: column("User ID")?,
            ip: column("IP Address")?,
            user_agent: column("User Agent String")?,
            success: column("Login Successful")?,
            attack_ip: column("Is Attack IP")?,
            account_takeover: column("Is Account Takeover")?,
        })
    }

    /// Builds the attempt and result events of one row.
    fn events(&self, row: usize, position: Position) -> Result<[InputEvent; 2], String> {
        Ok(self.login(row)?.into_events(position))
    }

    fn login(&self, row: usize) -> Result<RbaLogin, String> {
        let index = required(self.index, row, "index")?;
        let at = required(self.timestamp, row, "Login Timestamp")?;
        let occurred_at = NaiveDateTime::parse_from_str(at, TIMESTAMP_FORMAT)
            .map(|time| Utc.from_utc_datetime(&time))
            .map_err(|err| format!("invalid `Login Timestamp` `{at}` ({err})"))?;
        let user_id = check_id(required(self.user, row, "User ID")?)?;
        let ip_text = required(self.ip, row, "IP Address")?;
        let ip: IpAddr = ip_text
            .parse()
            .map_err(|_| format!("invalid `IP Address` `{ip_text}`"))?;
        let user_agent = self.user_agent.get(row).unwrap_or("");
        if user_agent.len() > MAX_USER_AGENT_BYTES {
            return Err(format!(
                "`User Agent String` is over {MAX_USER_AGENT_BYTES} bytes"
            ));
        }
        Ok(RbaLogin {
            attempt_id: format!("rba-{index}"),
            user_id: user_id.to_owned(),
            occurred_at,
            ip,
            user_agent: user_agent.to_owned(),
            success: flag(self.success, row, "Login Successful")?.unwrap_or(false),
            labels: Labels {
                attack_ip: flag(self.attack_ip, row, "Is Attack IP")?,
                account_takeover: flag(self.account_takeover, row, "Is Account Takeover")?,
            },
        })
    }
}

// === impl RbaLogin ===

impl RbaLogin {
    /// Splits the login into its attempt and its result, both at the login's time.
    fn into_events(self, position: Position) -> [InputEvent; 2] {
        let result = LoginResult {
            attempt_id: self.attempt_id.clone(),
            success: self.success,
            reason: None,
            ip: None,
        };
        let attempt = LoginAttempt {
            ip: self.ip,
            user_agent: self.user_agent,
            device_id: None,
            keystroke: None,
            attributes: Attributes::default(),
        };
        let event = |event_id: String, body: EventBody| InputEvent {
            event: Event {
                event_id,
                user_id: self.user_id.clone(),
                occurred_at: self.occurred_at,
                version: SCHEMA_VERSION,
                body,
            },
            position,
            labels: self.labels,
        };
        let result_id = format!("{}-result", self.attempt_id);
        [
            event(self.attempt_id.clone(), EventBody::LoginAttempt(attempt)),
            event(result_id, EventBody::LoginResult(result)),
        ]
    }
}

fn required<'a>(column: &'a StringChunked, row: usize, name: &str) -> Result<&'a str, String> {
    match column.get(row) {
        Some(value) if !value.is_empty() => Ok(value),
        _ => Err(format!("missing `{name}`")),
    }
}

/// Reads `True`/`False` (the data set's spelling), also accepting `true`/`false` and `1`/`0`.
fn flag(column: &StringChunked, row: usize, name: &str) -> Result<Option<bool>, String> {
    match column.get(row) {
        None | Some("") => Ok(None),
        Some("True" | "true" | "1") => Ok(Some(true)),
        Some("False" | "false" | "0") => Ok(Some(false)),
        Some(other) => Err(format!(
            "invalid `{name}` `{other}`; expected True or False"
        )),
    }
}

/// Applies the event schema's rules for ids.
fn check_id(id: &str) -> Result<&str, String> {
    if id.len() > MAX_ID_BYTES {
        return Err(format!("`User ID` is over {MAX_ID_BYTES} bytes"));
    }
    if id.chars().any(char::is_control) {
        return Err("`User ID` contains control characters".into());
    }
    Ok(id)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use stepup_events::EventKind;

    use crate::input::{EventReader, InputFormat};

    use super::*;

    fn shipped_sample() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../data/rba/rba-dataset-head18.csv")
    }

    fn read(path: &Path) -> Batch {
        EventReader::open(path, InputFormat::Rba)
            .unwrap()
            .read_all()
            .unwrap()
    }

    #[test]
    fn shipped_sample_gives_attempt_and_result_per_row() {
        let batch = read(&shipped_sample());

        assert!(batch.invalid.is_empty(), "{:?}", batch.invalid);
        assert_eq!(batch.events.len(), 2 * 19);
        let kinds: Vec<EventKind> = batch.events.iter().map(|e| e.event.kind()).collect();
        assert!(
            kinds
                .chunks(2)
                .all(|pair| pair == [EventKind::LoginAttempt, EventKind::LoginResult])
        );
    }

    #[test]
    fn shipped_sample_first_row_converts_exactly() {
        let batch = read(&shipped_sample());
        let attempt = &batch.events[0];
        let EventBody::LoginAttempt(body) = &attempt.event.body else {
            panic!("first event is not an attempt");
        };

        assert_eq!(attempt.event.event_id, "rba-0");
        assert_eq!(attempt.event.user_id, "-4324475583306591935");
        assert_eq!(
            attempt.event.occurred_at.to_rfc3339(),
            "2020-02-03T12:43:30.772+00:00"
        );
        assert_eq!(body.ip.to_string(), "10.0.65.171");
        assert!(body.user_agent.starts_with("Mozilla/5.0  (iPhone;"));
        assert_eq!(body.device_id, None);
        assert_eq!(attempt.position, Position::Line(2));
        assert_eq!(attempt.labels.attack_ip, Some(false));
    }

    #[test]
    fn shipped_sample_keeps_results_and_labels() {
        let batch = read(&shipped_sample());
        let results: Vec<&LoginResult> = batch
            .events
            .iter()
            .filter_map(|input| match &input.event.body {
                EventBody::LoginResult(result) => Some(result),
                _ => None,
            })
            .collect();
        let attacks = batch
            .events
            .iter()
            .filter(|input| input.event.kind() == EventKind::LoginAttempt)
            .filter(|input| input.labels.attack_ip == Some(true))
            .count();

        assert_eq!(results.iter().filter(|result| result.success).count(), 7);
        assert_eq!(results[2].attempt_id, "rba-2");
        assert_eq!(attacks, 2);
        assert_eq!(batch.events.last().unwrap().position, Position::Line(20));
    }

    #[test]
    fn bad_row_is_invalid_and_reading_goes_on() {
        let text = std::fs::read_to_string(shipped_sample()).unwrap();
        let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
        lines[3] = lines[3].replace("81.167.144.58", "not-an-ip");
        let mut file = tempfile::NamedTempFile::new().unwrap();
        write!(file, "{}", lines.join("\n")).unwrap();

        let batch = read(file.path());

        assert_eq!(batch.invalid.len(), 1);
        assert_eq!(batch.invalid[0].position, Position::Line(4));
        assert!(batch.invalid[0].reason.contains("not-an-ip"));
        assert_eq!(batch.events.len(), 2 * 18);
    }

    #[test]
    fn wrong_header_names_the_column() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        writeln!(file, "index,Timestamp,User ID").unwrap();
        let error = match EventReader::open(file.path(), InputFormat::Rba) {
            Ok(_) => panic!("accepted a wrong header"),
            Err(error) => error.to_string(),
        };
        assert!(error.contains("column 2 is `Timestamp`"), "{error}");
    }

    #[test]
    fn record_end_skips_quoted_line_breaks() {
        assert_eq!(last_record_end(b"a,\"x\ny\"\nb"), Some(8));
        assert_eq!(last_record_end(b"a,\"x\ny"), None);
        assert_eq!(last_record_end(b"a\nb\n"), Some(4));
    }
}
