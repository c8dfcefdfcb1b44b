//! NDJSON input: one JSON event per line, streamed with a fixed-size buffer.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use stepup_events::parse_event;

use super::{
    BATCH_EVENTS, Batch, InputError, InputEvent, InvalidRecord, Labels, Position, io_error,
};

/// Size of the read buffer, in bytes.
const READ_BUFFER_BYTES: usize = 256 * 1024;

/// Reads events line by line; memory use is bounded by the longest line.
pub(super) struct NdjsonSource {
    path: PathBuf,
    reader: BufReader<File>,
    line: Vec<u8>,
    line_number: u64,
    bytes_read: u64,
    total_bytes: u64,
    done: bool,
}

// === impl NdjsonSource ===

impl NdjsonSource {
    pub(super) fn open(path: &Path) -> Result<Self, InputError> {
        let file = File::open(path).map_err(io_error(path))?;
        let total_bytes = file.metadata().map_err(io_error(path))?.len();
        Ok(Self {
            path: path.to_path_buf(),
            reader: BufReader::with_capacity(READ_BUFFER_BYTES, file),
            line: Vec::new(),
            line_number: 0,
            bytes_read: 0,
            total_bytes,
            done: false,
        })
    }

    /// Reads one line into `self.line`, without its line ending; false at the end of the file.
    fn read_line(&mut self) -> Result<bool, InputError> {
        self.line.clear();
        let read = self
            .reader
            .read_until(b'\n', &mut self.line)
            .map_err(io_error(&self.path))?;
        if read == 0 {
            return Ok(false);
        }
        self.line_number += 1;
        self.bytes_read += read as u64;
        while matches!(self.line.last(), Some(b'\n' | b'\r')) {
            self.line.pop();
        }
        Ok(true)
    }
}

impl super::Source for NdjsonSource {
    fn next_batch(&mut self) -> Result<Option<Batch>, InputError> {
        if self.done {
            return Ok(None);
        }
        let mut batch = Batch::default();
        while batch.events.len() + batch.invalid.len() < BATCH_EVENTS {
            if !self.read_line()? {
                self.done = true;
                break;
            }
            if self.line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let position = Position::Line(self.line_number);
            match parse_event(&self.line) {
                Ok(event) => batch.events.push(InputEvent {
                    event,
                    position,
                    labels: Labels::default(),
                }),
                Err(error) => batch.invalid.push(InvalidRecord {
                    position,
                    reason: error.to_string(),
                }),
            }
        }
        let empty = batch.events.is_empty() && batch.invalid.is_empty();
        Ok(if empty && self.done {
            None
        } else {
            Some(batch)
        })
    }

    fn progress(&self) -> (u64, u64) {
        (self.bytes_read, self.total_bytes)
    }

    fn progress_unit(&self) -> &'static str {
        "bytes"
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use crate::input::{EventReader, InputFormat};

    use super::*;

    const ATTEMPT: &str = "{\"type\":\"login_attempt\",\"version\":1,\"event_id\":\"e1\",\
        \"user_id\":\"u1\",\"occurred_at\":\"2026-03-02T09:00:00Z\",\"ip\":\"81.2.69.142\",\
        \"user_agent\":\"curl/8.5.0\"}";
    const RESULT: &str = "{\"type\":\"login_result\",\"version\":1,\"event_id\":\"e2\",\
        \"user_id\":\"u1\",\"occurred_at\":\"2026-03-02T09:00:01Z\",\"attempt_id\":\"e1\",\
        \"success\":true}";

    fn write_lines(lines: &[&str]) -> tempfile::NamedTempFile {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        for line in lines {
            writeln!(file, "{line}").unwrap();
        }
        file
    }

    #[test]
    fn invalid_line_is_reported_with_its_number() {
        let file = write_lines(&[ATTEMPT, "{not json", "", RESULT]);
        let reader = EventReader::open(file.path(), InputFormat::Ndjson).unwrap();
        let batch = reader.read_all().unwrap();

        assert_eq!(batch.events.len(), 2);
        assert_eq!(batch.events[0].event.event_id, "e1");
        assert_eq!(batch.events[1].position, Position::Line(4));
        assert_eq!(batch.invalid.len(), 1);
        assert_eq!(batch.invalid[0].position, Position::Line(2));
        assert!(
            batch.invalid[0].reason.contains("not valid JSON"),
            "{:?}",
            batch.invalid
        );
    }

    #[test]
    fn event_failing_validation_is_invalid() {
        let unknown_type = ATTEMPT.replace("login_attempt", "logout");
        let file = write_lines(&[&unknown_type]);
        let batch = EventReader::open(file.path(), InputFormat::Ndjson)
            .unwrap()
            .read_all()
            .unwrap();

        assert!(batch.events.is_empty());
        assert!(batch.invalid[0].reason.contains("unknown event type"));
    }

    #[test]
    fn crlf_line_endings_are_accepted() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        write!(file, "{ATTEMPT}\r\n{RESULT}").unwrap();
        let batch = EventReader::open(file.path(), InputFormat::Ndjson)
            .unwrap()
            .read_all()
            .unwrap();

        assert_eq!(batch.events.len(), 2);
        assert!(batch.invalid.is_empty());
    }

    #[test]
    fn missing_file_error_names_path_and_flag() {
        let error = match EventReader::open(Path::new("/nonexistent/e.ndjson"), InputFormat::Ndjson)
        {
            Ok(_) => panic!("opened a missing file"),
            Err(error) => error.to_string(),
        };
        assert!(error.contains("/nonexistent/e.ndjson"), "{error}");
        assert!(error.contains("--input"), "{error}");
    }
}
