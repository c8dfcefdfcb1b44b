//! Reading database files into memory, with xz or gzip decompression, and opening MaxMind DBs.

use std::io::Read;
use std::path::Path;

use maxminddb::Reader;

use crate::GeoError;

const XZ_MAGIC: &[u8] = &[0xFD, b'7', b'z', b'X', b'Z', 0x00];
const GZIP_MAGIC: &[u8] = &[0x1F, 0x8B];

/// Marker that starts the metadata section of a MaxMind DB file.
const MMDB_METADATA_MARKER: &[u8] = b"\xAB\xCD\xEFMaxMind.com";

/// The MaxMind DB format puts the metadata marker within this many bytes of the end of the file.
const MMDB_METADATA_MAX_BYTES: usize = 128 * 1024;

/// Kind of MaxMind DB a [`crate::GeoPaths`] setting expects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum DbKind {
    City,
    Asn,
    AnonymousIp,
}

impl DbKind {
    /// Returns the name of the [`crate::GeoPaths`] field for this kind.
    pub(crate) fn setting(self) -> &'static str {
        match self {
            DbKind::City => "city",
            DbKind::Asn => "asn",
            DbKind::AnonymousIp => "anonymous_ip",
        }
    }

    fn expected(self) -> &'static str {
        match self {
            DbKind::City => "GeoIP2-City, GeoLite2-City or GeoIP2-Enterprise",
            DbKind::Asn => "GeoLite2-ASN or GeoIP2-ISP",
            DbKind::AnonymousIp => "GeoIP2-Anonymous-IP",
        }
    }

    /// Checks the `database_type` metadata, so that a file given for the wrong setting fails at
    /// startup instead of decoding every record as empty.
    fn accepts(self, database_type: &str) -> bool {
        let database_type = database_type.to_ascii_lowercase();
        match self {
            DbKind::City => database_type.contains("city") || database_type.contains("enterprise"),
            DbKind::Asn => database_type.contains("asn") || database_type.contains("isp"),
            DbKind::AnonymousIp => database_type.contains("anonymous"),
        }
    }
}

/// Reads a whole file, decompressing it when it starts with the xz or gzip magic bytes.
pub(crate) fn read_decompressed(path: &Path) -> Result<Vec<u8>, GeoError> {
    let raw = std::fs::read(path).map_err(|source| GeoError::Read {
        path: path.to_path_buf(),
        source,
    })?;

    let (format, decoded) = if raw.starts_with(XZ_MAGIC) {
        (
            "xz",
            decompress(
                liblzma::bufread::XzDecoder::new_multi_decoder(&raw[..]),
                raw.len(),
            ),
        )
    } else if raw.starts_with(GZIP_MAGIC) {
        (
            "gzip",
            decompress(flate2::bufread::MultiGzDecoder::new(&raw[..]), raw.len()),
        )
    } else {
        return Ok(raw);
    };
    decoded.map_err(|source| GeoError::Decompress {
        path: path.to_path_buf(),
        format,
        source,
    })
}

fn decompress(mut decoder: impl Read, compressed_len: usize) -> std::io::Result<Vec<u8>> {
    // The shipped files decompress to 3.3 (xz City database) and 3.9 (gzip ASN table) times
    // their size.
    let mut out = Vec::with_capacity(compressed_len.saturating_mul(4));
    decoder.read_to_end(&mut out)?;
    Ok(out)
}

/// Returns true when the bytes end with a MaxMind DB metadata section.
pub(crate) fn is_mmdb(bytes: &[u8]) -> bool {
    let tail = &bytes[bytes.len().saturating_sub(MMDB_METADATA_MAX_BYTES)..];
    tail.windows(MMDB_METADATA_MARKER.len())
        .any(|window| window == MMDB_METADATA_MARKER)
}

/// Opens a MaxMind DB from bytes read from `path` and checks that it is of the expected kind.
pub(crate) fn open_mmdb(
    path: &Path,
    bytes: Vec<u8>,
    kind: DbKind,
) -> Result<Reader<Vec<u8>>, GeoError> {
    let reader = Reader::from_source(bytes).map_err(|source| GeoError::Mmdb {
        path: path.to_path_buf(),
        source,
    })?;

    let database_type = &reader.metadata().database_type;
    if !kind.accepts(database_type) {
        return Err(GeoError::WrongDatabaseType {
            path: path.to_path_buf(),
            setting: kind.setting(),
            found: database_type.clone(),
            expected: kind.expected(),
        });
    }
    Ok(reader)
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::path::PathBuf;

    use super::*;

    fn test_db(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../data/geoip/maxmind-test")
            .join(name)
    }

    fn temp_path(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("stepup-geo-load-{}-{name}", std::process::id()))
    }

    #[test]
    fn plain_file_is_returned_unchanged() {
        let path = test_db("GeoLite2-ASN-Test.mmdb");
        let bytes = read_decompressed(&path).unwrap();
        assert_eq!(bytes, std::fs::read(&path).unwrap());
        assert!(is_mmdb(&bytes));
    }

    #[test]
    fn gzip_file_is_decompressed() {
        let path = temp_path("table.csv.gz");
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder
            .write_all(b"1.0.0.0,1.0.0.255,13335,Example\n")
            .unwrap();
        std::fs::write(&path, encoder.finish().unwrap()).unwrap();

        let bytes = read_decompressed(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(bytes, b"1.0.0.0,1.0.0.255,13335,Example\n");
        assert!(!is_mmdb(&bytes));
    }

    #[test]
    fn xz_file_is_decompressed() {
        let original = std::fs::read(test_db("GeoIP2-City-Test.mmdb")).unwrap();
        let mut encoder = liblzma::write::XzEncoder::new(Vec::new(), 1);
        encoder.write_all(&original).unwrap();
        let path = temp_path("city.mmdb.xz");
        std::fs::write(&path, encoder.finish().unwrap()).unwrap();

        let bytes = read_decompressed(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(bytes, original);
    }

    #[test]
    fn truncated_xz_is_rejected_with_path() {
        let original = std::fs::read(test_db("GeoIP2-City-Test.mmdb")).unwrap();
        let mut encoder = liblzma::write::XzEncoder::new(Vec::new(), 1);
        encoder.write_all(&original).unwrap();
        let compressed = encoder.finish().unwrap();
        let path = temp_path("truncated.mmdb.xz");
        std::fs::write(&path, &compressed[..compressed.len() / 2]).unwrap();

        let err = read_decompressed(&path).unwrap_err();
        std::fs::remove_file(&path).unwrap();
        assert!(
            matches!(err, GeoError::Decompress { format: "xz", .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains(&*path.to_string_lossy()), "{err}");
    }

    #[test]
    fn wrong_database_kind_is_rejected() {
        let path = test_db("GeoLite2-ASN-Test.mmdb");
        let bytes = read_decompressed(&path).unwrap();
        let err = open_mmdb(&path, bytes, DbKind::City).unwrap_err();
        let message = err.to_string();
        assert!(message.contains("GeoLite2-ASN"), "{message}");
        assert!(message.contains("`city`"), "{message}");
    }

    #[test]
    fn kinds_accept_their_maxmind_types() {
        assert!(DbKind::City.accepts("GeoIP2-City"));
        assert!(DbKind::City.accepts("GeoLite2-City"));
        assert!(DbKind::City.accepts("GeoIP2-Enterprise"));
        assert!(DbKind::Asn.accepts("GeoLite2-ASN"));
        assert!(DbKind::Asn.accepts("GeoIP2-ISP"));
        assert!(DbKind::AnonymousIp.accepts("GeoIP2-Anonymous-IP"));
        assert!(!DbKind::City.accepts("GeoLite2-Country"));
        assert!(!DbKind::AnonymousIp.accepts("GeoLite2-City"));
    }
}
