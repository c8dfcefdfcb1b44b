//! Errors from opening GeoIP databases.

use std::io;
use std::path::PathBuf;

/// Reasons [`crate::Geo::open`] fails. Each message names the file and what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum GeoError {
    /// The file could not be read.
    #[error(
        "failed to read GeoIP file `{}`; check that the path exists and is readable, \
         or remove it from the configuration",
        path.display()
    )]
    Read {
        /// File that was opened.
        path: PathBuf,
        /// Error from the file system.
        #[source]
        source: io::Error,
    },
    /// The file starts like an xz or gzip stream but does not decompress.
    #[error(
        "failed to decompress {format} file `{}`; the file is truncated or corrupt, \
         download it again",
        path.display()
    )]
    Decompress {
        /// File that was opened.
        path: PathBuf,
        /// Compression format detected from the file's first bytes.
        format: &'static str,
        /// Error from the decompressor.
        #[source]
        source: io::Error,
    },
    /// The file is not a valid MaxMind DB file.
    #[error(
        "failed to open MaxMind DB file `{}`; expected a GeoIP2 or GeoLite2 `.mmdb` file, \
         plain or xz-compressed",
        path.display()
    )]
    Mmdb {
        /// File that was opened.
        path: PathBuf,
        /// Error from the MaxMind DB reader.
        #[source]
        source: maxminddb::MaxMindDbError,
    },
    /// The file is a MaxMind DB of another kind than the setting expects.
    #[error(
        "invalid {setting} database `{}`: its type is `{found}` but a {expected} database is \
         expected; point `{setting}` at the right file",
        path.display()
    )]
    WrongDatabaseType {
        /// File that was opened.
        path: PathBuf,
        /// Setting the path was given for (`city`, `asn` or `anonymous_ip`).
        setting: &'static str,
        /// `database_type` from the file's metadata.
        found: String,
        /// Kinds of database the setting accepts.
        expected: &'static str,
    },
    /// A row of a CSV ASN table is malformed.
    #[error(
        "invalid row in ASN table `{}` line {line}: {reason}; each line must be \
         `start_ip,end_ip,asn,org` without a header, so fix or remove that line",
        path.display()
    )]
    AsnRow {
        /// File that was opened.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// Description of the problem in the row.
        reason: String,
    },
}
