//! The [`Geo`] handle: opened databases and the per-login lookup.

use std::fmt;
use std::net::IpAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use maxminddb::{MaxMindDbError, Reader, geoip2};
use quick_cache::sync::Cache;

use crate::asn_table::{AsnHit, AsnTable};
use crate::load::{DbKind, is_mmdb, open_mmdb, read_decompressed};
use crate::network::{canonical, classify_asn, special_purpose};
use crate::{
    Asn, DEFAULT_CITY_ACCURACY_KM, DEFAULT_COUNTRY_ACCURACY_KM, GeoError, GeoInfo, GeoPaths,
    Location, NetworkClass,
};

/// Maximum number of addresses whose lookup results a [`Geo`] keeps.
///
/// Full, the cache takes about 16 MB (an estimate, at about 250 bytes per result). Users log in
/// again from addresses they used before: in the backtest generator's stream of 1,000,000
/// events, 86% of the lookups repeat an earlier address.
const LOOKUP_CACHE_ENTRIES: usize = 65_536;

/// Opened GeoIP databases, held in memory and read-only.
///
/// `Geo` is `Send + Sync`, so one instance can be shared in an `Arc`. Opening reads every file
/// into memory, so a later change to the files has no effect until the next [`Geo::open`].
pub struct Geo {
    city: Option<Reader<Vec<u8>>>,
    asn: Option<AsnSource>,
    anonymous_ip: Option<Reader<Vec<u8>>>,
    /// Operator-supplied hosting ASNs, sorted and deduplicated.
    hosting_asns: Vec<u32>,
    /// Lookups that failed on a corrupt record, for rate-limited warnings.
    lookup_errors: AtomicU64,
    /// Bounded cache of recent results by canonical address, `None` when no database is open.
    /// A result depends only on the address and the opened files, so a cached result equals a
    /// fresh one.
    cache: Option<Cache<IpAddr, GeoInfo>>,
}

/// Source of ASN lookups.
enum AsnSource {
    Mmdb(Reader<Vec<u8>>),
    Table(AsnTable),
}

// === impl Geo ===

impl Geo {
    /// Opens the configured databases. Databases without a path are skipped.
    ///
    /// Fails when a file is missing, unreadable, corrupt, of the wrong kind for its setting,
    /// or (for a CSV ASN table) has a malformed row. The error names the file and the fix.
    pub fn open(paths: &GeoPaths) -> Result<Geo, GeoError> {
        let city = paths
            .city
            .as_deref()
            .map(|path| open_db(path, DbKind::City))
            .transpose()?;
        let asn = paths.asn.as_deref().map(open_asn).transpose()?;
        let anonymous_ip = (paths.anonymous_ip.as_deref())
            .map(|path| open_db(path, DbKind::AnonymousIp))
            .transpose()?;

        let mut hosting_asns = paths.hosting_asns.clone();
        hosting_asns.sort_unstable();
        hosting_asns.dedup();
        let has_database = city.is_some() || asn.is_some() || anonymous_ip.is_some();
        Ok(Geo {
            city,
            asn,
            anonymous_ip,
            hosting_asns,
            lookup_errors: AtomicU64::new(0),
            cache: has_database.then(|| Cache::new(LOOKUP_CACHE_ENTRIES)),
        })
    }

    /// Returns a `Geo` without databases, for which every public address has an unknown
    /// location and ASN and is classed [`NetworkClass::Residential`].
    pub fn empty() -> Geo {
        Geo {
            city: None,
            asn: None,
            anonymous_ip: None,
            hosting_asns: Vec::new(),
            lookup_errors: AtomicU64::new(0),
            cache: None,
        }
    }

    /// Returns what the databases contain about `ip`.
    ///
    /// Never fails: an address in a private or reserved block, one that no database covers and
    /// one whose record is corrupt all yield `location: None`. Private and reserved addresses
    /// are answered without touching the databases. IPv4-mapped and NAT64 IPv6 addresses are
    /// looked up as the IPv4 address they carry.
    ///
    /// Results of recent addresses come from a bounded cache, so a corrupt record is decoded,
    /// and its warning counted, again only after its address has left the cache.
    pub fn lookup(&self, ip: IpAddr) -> GeoInfo {
        let ip = canonical(ip);
        if let Some(class) = special_purpose(ip) {
            return GeoInfo::unknown_in(class);
        }
        let Some(cache) = &self.cache else {
            return self.lookup_databases(ip);
        };
        if let Some(info) = cache.get(&ip) {
            return info;
        }
        let info = self.lookup_databases(ip);
        cache.insert(ip, info.clone());
        info
    }

    /// Looks up a canonical, public `ip` in the databases, without the cache.
    fn lookup_databases(&self, ip: IpAddr) -> GeoInfo {
        let location = self
            .city
            .as_ref()
            .and_then(|db| self.recover("city", city_location(db, ip)));
        let asn = self
            .asn
            .as_ref()
            .and_then(|source| self.lookup_asn(source, ip));
        let network = self.classify(ip, asn.as_ref());
        let asn = asn.map(|hit| Asn {
            number: hit.number,
            organization: hit.organization.map(str::to_owned),
        });
        GeoInfo {
            location,
            asn,
            network,
        }
    }

    /// Returns true when a City database is open.
    pub fn has_city_db(&self) -> bool {
        self.city.is_some()
    }

    /// Returns true when an ASN database or table is open.
    pub fn has_asn_db(&self) -> bool {
        self.asn.is_some()
    }

    fn lookup_asn<'a>(&'a self, source: &'a AsnSource, ip: IpAddr) -> Option<AsnHit<'a>> {
        match source {
            AsnSource::Table(table) => table.lookup(ip),
            AsnSource::Mmdb(reader) => {
                let record = self.recover("asn", decode::<geoip2::Asn<'_>>(reader, ip))?;
                let number = record.autonomous_system_number?;
                let organization = record.autonomous_system_organization;
                Some(AsnHit {
                    number,
                    organization,
                    class: classify_asn(number, organization),
                })
            }
        }
    }

    /// Picks the network class: Anonymous-IP database flags first, then the configured hosting
    /// ASNs, then the built-in operator table, else `Residential`.
    fn classify(&self, ip: IpAddr, asn: Option<&AsnHit<'_>>) -> NetworkClass {
        if let Some(class) = self.anonymous_class(ip) {
            return class;
        }
        let Some(asn) = asn else {
            return NetworkClass::Residential;
        };
        if self.hosting_asns.binary_search(&asn.number).is_ok() {
            return NetworkClass::Hosting;
        }
        asn.class.unwrap_or(NetworkClass::Residential)
    }

    fn anonymous_class(&self, ip: IpAddr) -> Option<NetworkClass> {
        let db = self.anonymous_ip.as_ref()?;
        let record = self.recover("anonymous_ip", decode::<geoip2::AnonymousIp>(db, ip))?;
        let set = |flag: Option<bool>| flag == Some(true);

        let anonymizer = set(record.is_anonymous_vpn)
            || set(record.is_public_proxy)
            || set(record.is_tor_exit_node)
            || set(record.is_residential_proxy);
        if anonymizer {
            Some(NetworkClass::Anonymous)
        } else if set(record.is_hosting_provider) {
            Some(NetworkClass::Hosting)
        } else {
            None
        }
    }

    /// Turns a failed lookup into `None`, with a warning whose rate halves as failures repeat.
    fn recover<T>(
        &self,
        database: &'static str,
        result: Result<Option<T>, MaxMindDbError>,
    ) -> Option<T> {
        result.unwrap_or_else(|error| {
            let failures = self.lookup_errors.fetch_add(1, Ordering::Relaxed) + 1;
            if failures.is_power_of_two() {
                tracing::warn!(
                    database,
                    %error,
                    failures_total = failures,
                    "failed to decode GeoIP record, treating the address as unknown"
                );
            }
            None
        })
    }
}

impl fmt::Debug for Geo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let database_type = |reader: &Reader<Vec<u8>>| reader.metadata().database_type.clone();
        f.debug_struct("Geo")
            .field("city", &self.city.as_ref().map(database_type))
            .field("asn", &self.asn)
            .field(
                "anonymous_ip",
                &self.anonymous_ip.as_ref().map(database_type),
            )
            .field("hosting_asns", &self.hosting_asns.len())
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for AsnSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AsnSource::Mmdb(reader) => write!(f, "Mmdb({})", reader.metadata().database_type),
            AsnSource::Table(table) => table.fmt(f),
        }
    }
}

/// Reads a MaxMind DB file and checks its kind, logging what was opened.
fn open_db(path: &Path, kind: DbKind) -> Result<Reader<Vec<u8>>, GeoError> {
    let started = Instant::now();
    let bytes = read_decompressed(path)?;
    open_and_log_mmdb(path, bytes, kind, started)
}

/// Opens an ASN source: a MaxMind DB when the file has MaxMind DB metadata, else a CSV table.
fn open_asn(path: &Path) -> Result<AsnSource, GeoError> {
    let started = Instant::now();
    let bytes = read_decompressed(path)?;
    if is_mmdb(&bytes) {
        return open_and_log_mmdb(path, bytes, DbKind::Asn, started).map(AsnSource::Mmdb);
    }

    let table = AsnTable::parse(path, &bytes)?;
    let stats = table.stats();
    tracing::info!(
        path = %path.display(),
        rows = stats.rows,
        unrouted_rows = stats.unrouted,
        overlapping_rows = stats.overlapping,
        ranges = table.len(),
        organizations = table.organization_count(),
        load_ms = started.elapsed().as_millis() as u64,
        "loaded ASN table"
    );
    Ok(AsnSource::Table(table))
}

fn open_and_log_mmdb(
    path: &Path,
    bytes: Vec<u8>,
    kind: DbKind,
    started: Instant,
) -> Result<Reader<Vec<u8>>, GeoError> {
    let size_bytes = bytes.len();
    let reader = open_mmdb(path, bytes, kind)?;

    let metadata = reader.metadata();
    tracing::info!(
        setting = kind.setting(),
        path = %path.display(),
        database_type = %metadata.database_type,
        build_epoch = metadata.build_epoch,
        size_bytes,
        load_ms = started.elapsed().as_millis() as u64,
        "opened GeoIP database"
    );
    Ok(reader)
}

fn decode<'a, T: serde::Deserialize<'a>>(
    reader: &'a Reader<Vec<u8>>,
    ip: IpAddr,
) -> Result<Option<T>, MaxMindDbError> {
    reader.lookup(ip)?.decode::<T>()
}

/// The parts of a GeoIP2 City record that [`Location`] needs.
///
/// Decoding this instead of the whole [`geoip2::City`] skips the continent, postal code,
/// subdivisions and registered and represented countries, with their names in eight languages,
/// which about halves the decode time of a City-Test lookup in a debug build.
#[derive(Debug, Default, serde::Deserialize)]
struct CityRecord<'a> {
    #[serde(borrow, default)]
    city: geoip2::city::City<'a>,
    #[serde(borrow, default)]
    country: geoip2::city::Country<'a>,
    #[serde(borrow, default)]
    location: geoip2::city::Location<'a>,
}

fn city_location(reader: &Reader<Vec<u8>>, ip: IpAddr) -> Result<Option<Location>, MaxMindDbError> {
    Ok(decode::<CityRecord<'_>>(reader, ip)?
        .as_ref()
        .and_then(location_from))
}

/// Builds a location from a City record, or `None` when it has no valid coordinates.
fn location_from(record: &CityRecord<'_>) -> Option<Location> {
    let latitude = record
        .location
        .latitude
        .filter(|lat| lat.is_finite() && lat.abs() <= 90.0)?;
    let longitude = record
        .location
        .longitude
        .filter(|lon| lon.is_finite() && lon.abs() <= 180.0)?;

    let is_city = record.city.geoname_id.is_some() || !record.city.names.is_empty();
    let default_accuracy_km = if is_city {
        DEFAULT_CITY_ACCURACY_KM
    } else {
        DEFAULT_COUNTRY_ACCURACY_KM
    };
    Some(Location {
        latitude,
        longitude,
        accuracy_km: record
            .location
            .accuracy_radius
            .map_or(default_accuracy_km, f64::from),
        city: record.city.names.english.map(str::to_owned),
        country: record.country.iso_code.map(str::to_owned),
    })
}

#[cfg(test)]
mod tests;
