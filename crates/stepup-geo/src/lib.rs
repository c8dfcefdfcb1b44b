//! GeoIP enrichment of login IP addresses for stepup.
//!
//! This crate owns the lookup of an IP address in standard MaxMind DB files (GeoIP2 or GeoLite2
//! City, ASN and Anonymous-IP, plain or xz-compressed) or in a CSV ASN table. It also classifies
//! the address's network (private, reserved, hosting, anonymizer, mobile, satellite,
//! residential) and provides the great-circle distance used by the travel signals. It does not
//! decide anything from these facts, keeps no per-user state and never downloads or updates
//! databases.
//!
//! A lookup never fails: a private, reserved or unknown address yields "location unknown".

#![forbid(unsafe_code)]

mod asn_table;
mod distance;
mod error;
mod geo;
mod load;
mod network;

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use distance::{EARTH_MEAN_RADIUS_KM, great_circle_km};
pub use error::GeoError;
pub use geo::Geo;

/// Accuracy radius assumed for a city-level record that has none, in kilometres.
pub const DEFAULT_CITY_ACCURACY_KM: f64 = 100.0;

/// Accuracy radius assumed for a country-level record that has none, in kilometres.
pub const DEFAULT_COUNTRY_ACCURACY_KM: f64 = 1000.0;

/// Paths of the databases to open and operator-supplied network facts.
///
/// Every database is optional. Files may be xz- or gzip-compressed, which is detected from
/// their first bytes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GeoPaths {
    /// GeoIP2 or GeoLite2 City database (`.mmdb` or `.mmdb.xz`).
    pub city: Option<PathBuf>,
    /// GeoLite2-ASN database (`.mmdb`) or a CSV table of `start_ip,end_ip,asn,org` rows without
    /// a header (`.csv` or `.csv.gz`).
    pub asn: Option<PathBuf>,
    /// GeoIP2 Anonymous-IP database (`.mmdb`).
    pub anonymous_ip: Option<PathBuf>,
    /// Autonomous system numbers to classify as [`NetworkClass::Hosting`], on top of the
    /// built-in list.
    pub hosting_asns: Vec<u32>,
}

/// Facts about one IP address.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GeoInfo {
    /// Estimated location, or `None` when it is unknown.
    pub location: Option<Location>,
    /// Autonomous system that announces the address, or `None` when it is unknown.
    pub asn: Option<Asn>,
    /// Kind of network the address belongs to.
    pub network: NetworkClass,
}

/// Estimated location of an IP address.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Location {
    /// Latitude in degrees, positive north.
    pub latitude: f64,
    /// Longitude in degrees, positive east.
    pub longitude: f64,
    /// Radius around the coordinates that contains the address with about 67% confidence, in
    /// km (MaxMind's definition of `accuracy_radius`).
    pub accuracy_km: f64,
    /// City name in English, when the record is city-level.
    pub city: Option<String>,
    /// Country as an ISO 3166-1 alpha-2 code.
    pub country: Option<String>,
}

/// Autonomous system of an IP address.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Asn {
    /// Autonomous system number.
    pub number: u32,
    /// Organization that registered the number.
    pub organization: Option<String>,
}

/// Kind of network an IP address belongs to.
///
/// Apart from `Private` and `Reserved`, which come from the IANA special-purpose registries,
/// the class is a heuristic. It comes from the Anonymous-IP database when one is configured,
/// else from the configured hosting ASNs and a built-in table of well-known operators.
/// `Residential` means only that no other class matched.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NetworkClass {
    /// Private-use, loopback, link-local or carrier-grade NAT address.
    Private,
    /// Unspecified, documentation, benchmarking, multicast, broadcast or reserved address.
    Reserved,
    /// Cloud, hosting or data-centre network.
    Hosting,
    /// VPN, public proxy, Tor exit node or other anonymizer.
    Anonymous,
    /// Mobile carrier network.
    Mobile,
    /// Satellite internet provider.
    Satellite,
    /// Any other public network, typically a home or office ISP.
    Residential,
}

// === impl GeoInfo ===

impl GeoInfo {
    /// Returns the facts for an address about which nothing is known.
    ///
    /// This equals what [`Geo::empty`] returns for a public address: no location, no ASN and
    /// [`NetworkClass::Residential`].
    pub fn unknown() -> GeoInfo {
        GeoInfo::unknown_in(NetworkClass::Residential)
    }

    /// Returns the facts for an address with no location and no ASN in the given network class.
    pub fn unknown_in(network: NetworkClass) -> GeoInfo {
        GeoInfo {
            location: None,
            asn: None,
            network,
        }
    }
}

/// Returns [`GeoInfo::unknown`], the facts for an address about which nothing is known.
pub fn geoinfo_unknown() -> GeoInfo {
    GeoInfo::unknown()
}

// === impl NetworkClass ===

impl NetworkClass {
    /// Every class, in declaration order.
    pub const ALL: [NetworkClass; 7] = [
        NetworkClass::Private,
        NetworkClass::Reserved,
        NetworkClass::Hosting,
        NetworkClass::Anonymous,
        NetworkClass::Mobile,
        NetworkClass::Satellite,
        NetworkClass::Residential,
    ];

    /// Returns the snake_case name, the same as the serialized form.
    pub fn as_str(self) -> &'static str {
        match self {
            NetworkClass::Private => "private",
            NetworkClass::Reserved => "reserved",
            NetworkClass::Hosting => "hosting",
            NetworkClass::Anonymous => "anonymous",
            NetworkClass::Mobile => "mobile",
            NetworkClass::Satellite => "satellite",
            NetworkClass::Residential => "residential",
        }
    }
}

impl fmt::Display for NetworkClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_class_name_matches_serde() {
        for class in NetworkClass::ALL {
            let json = serde_json::to_string(&class).unwrap();
            assert_eq!(json, format!("\"{}\"", class.as_str()));
        }
    }

    #[test]
    fn unknown_has_no_location_or_asn() {
        let info = geoinfo_unknown();
        assert_eq!(info.location, None);
        assert_eq!(info.asn, None);
        assert_eq!(info.network, NetworkClass::Residential);
        assert_eq!(
            GeoInfo::unknown_in(NetworkClass::Private).network,
            NetworkClass::Private
        );
    }

    #[test]
    fn geo_info_serializes_snake_case_class() {
        let info = GeoInfo {
            location: None,
            asn: Some(Asn {
                number: 64_512,
                organization: None,
            }),
            network: NetworkClass::Hosting,
        };
        let json = serde_json::to_string(&info).unwrap();
        assert_eq!(
            json,
            r#"{"location":null,"asn":{"number":64512,"organization":null},"network":"hosting"}"#
        );
    }
}
