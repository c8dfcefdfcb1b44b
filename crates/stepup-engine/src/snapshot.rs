//! Snapshot files: user states written to disk, to start a backtest from live profiles.
//!
//! A snapshot starts with the line `stepup-snapshot 1`, followed by one record per user:
//! the user id's length (u32, little endian), the user id in UTF-8, the state's length (u32,
//! little endian) and the state as a changelog value ([`crate::encode_state`]). Records are
//! sorted by user id, so the same states give the same file.

use std::io::{self, BufRead, Read, Write};

use crate::durable::{PartitionRestore, RestoreStats};

/// First line of a snapshot file.
const MAGIC: &[u8] = b"stepup-snapshot 1\n";

/// A snapshot file that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// Reading failed.
    #[error("failed to read the snapshot: {0}")]
    Io(#[from] io::Error),
    /// The file does not start with the snapshot header.
    #[error(
        "not a stepup snapshot (the first line is not `stepup-snapshot 1`); \
         create one with `stepup profiles export`"
    )]
    NotSnapshot,
    /// A user id is not UTF-8.
    #[error("record {index} has a user id that is not UTF-8; the file is damaged")]
    BadUserId {
        /// Zero-based record number.
        index: u64,
    },
    /// A state could not be decoded.
    #[error("record {index} (user `{user_id}`) has an unreadable state: {source}")]
    BadState {
        /// Zero-based record number.
        index: u64,
        /// User of the record.
        user_id: String,
        /// Decoding error.
        source: crate::StateError,
    },
}

/// Writes `states` (user id, changelog value), sorted by user id, as a snapshot.
pub fn write_snapshot<W: Write>(
    writer: &mut W,
    states: &mut [(String, Vec<u8>)],
) -> io::Result<()> {
    states.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    writer.write_all(MAGIC)?;
    for (user_id, state) in states.iter() {
        write_field(writer, user_id.as_bytes())?;
        write_field(writer, state)?;
    }
    writer.flush()
}

/// Reads a snapshot into a partition restore, checking that every state decodes. Returns
/// the restore's counts once it finished.
pub fn read_snapshot<R: BufRead>(
    reader: &mut R,
    mut restore: PartitionRestore<'_>,
) -> Result<RestoreStats, SnapshotError> {
    let mut magic = vec![0; MAGIC.len()];
    if reader.read_exact(&mut magic).is_err() || magic != MAGIC {
        return Err(SnapshotError::NotSnapshot);
    }
    let mut index = 0;
    while let Some(key) = read_field(reader)? {
        let user_id = String::from_utf8(key).map_err(|_| SnapshotError::BadUserId { index })?;
        let state = read_field(reader)?.ok_or_else(|| {
            SnapshotError::Io(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("record {index} ends after its user id"),
            ))
        })?;
        if let Err(source) = restore.apply(&user_id, Some(&state)) {
            return Err(SnapshotError::BadState {
                index,
                user_id,
                source,
            });
        }
        index += 1;
    }
    Ok(restore.finish())
}

fn write_field<W: Write>(writer: &mut W, bytes: &[u8]) -> io::Result<()> {
    let len = u32::try_from(bytes.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "field over 4 GiB"))?;
    writer.write_all(&len.to_le_bytes())?;
    writer.write_all(bytes)
}

/// Reads one length-prefixed field; `None` at a clean end of file.
fn read_field<R: Read>(reader: &mut R) -> io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 4];
    match reader.read_exact(&mut len) {
        Ok(()) => {}
        Err(error) if error.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(error) => return Err(error),
    }
    let mut field = vec![0; u32::from_le_bytes(len) as usize];
    reader.read_exact(&mut field)?;
    Ok(Some(field))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::durable_tests::{run_stream, states_of};
    use crate::tests_support::engine;

    #[test]
    fn snapshot_round_trips_every_user() {
        let (source, _) = engine();
        run_stream(&source, 6, 3);
        let mut states = source.export_states();
        let mut file = Vec::new();
        write_snapshot(&mut file, &mut states).unwrap();

        let (target, _) = engine();
        let stats = read_snapshot(&mut file.as_slice(), target.restore(0)).unwrap();
        assert_eq!(stats.users, 6);
        let mut expected = states_of(&source);
        for state in expected.values_mut() {
            state.partition = 0;
        }
        assert_eq!(states_of(&target), expected);
    }

    #[test]
    fn rejects_other_files() {
        let (engine, _) = engine();
        let error = read_snapshot(&mut &b"user_id,state\n"[..], engine.restore(0)).unwrap_err();
        assert!(
            error.to_string().contains("stepup profiles export"),
            "{error}"
        );
    }

    #[test]
    fn reports_truncated_record() {
        let (source, _) = engine();
        run_stream(&source, 2, 1);
        let mut file = Vec::new();
        write_snapshot(&mut file, &mut source.export_states()).unwrap();
        file.truncate(file.len() - 3);
        let (engine, _) = engine();
        assert!(read_snapshot(&mut file.as_slice(), engine.restore(0)).is_err());
    }
}
