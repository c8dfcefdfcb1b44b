use std::path::PathBuf;
use std::sync::Arc;

use maxminddb::geoip2::city;

use super::*;
use crate::great_circle_km;

fn data(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../data/geoip")
        .join(relative)
}

/// Opens the MaxMind test databases shipped in `data/geoip/maxmind-test`.
fn test_geo() -> Geo {
    Geo::open(&GeoPaths {
        city: Some(data("maxmind-test/GeoIP2-City-Test.mmdb")),
        asn: Some(data("maxmind-test/GeoLite2-ASN-Test.mmdb")),
        anonymous_ip: Some(data("maxmind-test/GeoIP2-Anonymous-IP-Test.mmdb")),
        hosting_asns: Vec::new(),
    })
    .unwrap()
}

fn lookup(geo: &Geo, address: &str) -> GeoInfo {
    geo.lookup(address.parse().unwrap())
}

fn assert_near(location: &Location, latitude: f64, longitude: f64) {
    assert!((location.latitude - latitude).abs() < 1e-4, "{location:?}");
    assert!(
        (location.longitude - longitude).abs() < 1e-4,
        "{location:?}"
    );
}

#[test]
fn city_test_db_locates_known_addresses() {
    let geo = test_geo();
    // (address, city, country, latitude, longitude, accuracy_radius) from GeoIP2-City-Test.
    let cases = [
        ("81.2.69.142", "London", "GB", 51.5142, -0.0931, 10.0),
        ("216.160.83.56", "Milton", "US", 47.2513, -122.3149, 22.0),
        ("2.125.160.216", "Boxford", "GB", 51.75, -1.25, 100.0),
        ("89.160.20.112", "Linköping", "SE", 58.4167, 15.6167, 76.0),
    ];
    for (address, city, country, latitude, longitude, accuracy_km) in cases {
        let location = lookup(&geo, address).location.unwrap();
        assert_eq!(location.city.as_deref(), Some(city), "{address}");
        assert_eq!(location.country.as_deref(), Some(country), "{address}");
        assert_near(&location, latitude, longitude);
        assert_eq!(location.accuracy_km, accuracy_km, "{address}");
    }
}

#[test]
fn country_only_record_has_no_city() {
    let location = lookup(&test_geo(), "2001:218::1").location.unwrap();
    assert_eq!(location.city, None);
    assert_eq!(location.country.as_deref(), Some("JP"));
}

#[test]
fn asn_test_db_finds_operators() {
    let geo = test_geo();
    let telstra = lookup(&geo, "1.128.0.0").asn.unwrap();
    assert_eq!(telstra.number, 1221);
    assert_eq!(telstra.organization.as_deref(), Some("Telstra Pty Ltd"));
    let att = lookup(&geo, "12.81.92.0").asn.unwrap();
    assert_eq!(att.number, 7018);
    assert_eq!(att.organization.as_deref(), Some("AT&T Services"));
}

#[test]
fn anonymous_ip_flags_set_network_class() {
    let geo = test_geo();
    // Flags per network in GeoIP2-Anonymous-IP-Test.
    let cases = [
        ("81.2.69.0", NetworkClass::Anonymous),    // every flag set
        ("1.2.0.1", NetworkClass::Anonymous),      // anonymous VPN
        ("65.0.0.1", NetworkClass::Anonymous),     // Tor exit node
        ("186.30.236.1", NetworkClass::Anonymous), // public proxy
        ("6.1.0.4", NetworkClass::Anonymous),      // residential proxy
        ("6.1.0.2", NetworkClass::Hosting),        // hosting provider only
        ("71.160.223.1", NetworkClass::Hosting),   // hosting provider only
        ("6.1.0.5", NetworkClass::Residential),    // record without flags
        ("89.160.20.112", NetworkClass::Residential),
    ];
    for (address, expected) in cases {
        assert_eq!(lookup(&geo, address).network, expected, "{address}");
    }
}

#[test]
fn private_and_reserved_addresses_are_unknown() {
    let geo = test_geo();
    let cases = [
        ("10.1.2.3", NetworkClass::Private),
        ("192.168.0.1", NetworkClass::Private),
        ("127.0.0.1", NetworkClass::Private),
        ("100.64.1.1", NetworkClass::Private),
        ("::1", NetworkClass::Private),
        ("fd00::1", NetworkClass::Private),
        ("fe80::1", NetworkClass::Private),
        ("::ffff:10.0.0.1", NetworkClass::Private),
        ("0.0.0.0", NetworkClass::Reserved),
        ("::", NetworkClass::Reserved),
        ("192.0.2.1", NetworkClass::Reserved),
        ("2001:db8::1", NetworkClass::Reserved),
        ("198.18.0.1", NetworkClass::Reserved),
        ("224.0.0.1", NetworkClass::Reserved),
        ("255.255.255.255", NetworkClass::Reserved),
        ("240.0.0.1", NetworkClass::Reserved),
    ];
    for (address, class) in cases {
        assert_eq!(
            lookup(&geo, address),
            GeoInfo::unknown_in(class),
            "{address}"
        );
    }
}

#[test]
fn mapped_ipv4_is_looked_up_as_ipv4() {
    let geo = test_geo();
    assert_eq!(
        lookup(&geo, "::ffff:81.2.69.142"),
        lookup(&geo, "81.2.69.142")
    );
}

#[test]
fn empty_geo_knows_nothing() {
    let geo = Geo::empty();
    assert!(!geo.has_city_db());
    assert!(!geo.has_asn_db());
    assert_eq!(lookup(&geo, "81.2.69.142"), GeoInfo::unknown());
    assert_eq!(lookup(&geo, "2001:4860::1"), GeoInfo::unknown());
    assert_eq!(
        lookup(&geo, "10.0.0.1"),
        GeoInfo::unknown_in(NetworkClass::Private)
    );
}

#[test]
fn open_reports_which_databases_are_present() {
    let geo = test_geo();
    assert!(geo.has_city_db());
    assert!(geo.has_asn_db());
    let asn_only = Geo::open(&GeoPaths {
        asn: Some(data("maxmind-test/GeoLite2-ASN-Test.mmdb")),
        ..GeoPaths::default()
    })
    .unwrap();
    assert!(!asn_only.has_city_db());
    assert_eq!(lookup(&asn_only, "81.2.69.142").location, None);
}

#[test]
fn missing_file_error_names_path() {
    let missing = data("maxmind-test/No-Such-File.mmdb");
    let err = Geo::open(&GeoPaths {
        city: Some(missing.clone()),
        ..GeoPaths::default()
    })
    .unwrap_err();
    assert!(matches!(err, GeoError::Read { .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.contains(&*missing.to_string_lossy()), "{message}");
    assert!(message.contains("check that the path exists"), "{message}");
}

#[test]
fn non_mmdb_city_file_is_rejected() {
    let table = data("asn/asn-ipv4.csv.gz");
    let err = Geo::open(&GeoPaths {
        city: Some(table.clone()),
        ..GeoPaths::default()
    })
    .unwrap_err();
    assert!(matches!(err, GeoError::Mmdb { .. }), "{err:?}");
    assert!(err.to_string().contains(&*table.to_string_lossy()), "{err}");
}

#[test]
fn configured_hosting_asn_sets_hosting() {
    let geo = Geo::open(&GeoPaths {
        asn: Some(data("maxmind-test/GeoLite2-ASN-Test.mmdb")),
        hosting_asns: vec![7018, 1221, 7018],
        ..GeoPaths::default()
    })
    .unwrap();
    assert_eq!(lookup(&geo, "12.81.92.0").network, NetworkClass::Hosting);
    assert_eq!(lookup(&geo, "1.128.0.0").network, NetworkClass::Hosting);
    assert_eq!(
        lookup(&geo, "89.160.20.112").network,
        NetworkClass::Residential
    );
}

#[test]
fn csv_asn_table_classifies_operators() {
    let geo = Geo::open(&GeoPaths {
        asn: Some(data("asn/asn-ipv4.csv.gz")),
        ..GeoPaths::default()
    })
    .unwrap();
    let cloudflare = lookup(&geo, "1.0.0.1");
    assert_eq!(
        cloudflare.asn,
        Some(Asn {
            number: 13335,
            organization: Some("Cloudflare, Inc.".to_owned())
        })
    );
    assert_eq!(cloudflare.network, NetworkClass::Anonymous);
    assert_eq!(lookup(&geo, "8.8.8.8").network, NetworkClass::Hosting);
    assert_eq!(
        lookup(&geo, "1.128.0.1").asn.map(|asn| asn.number),
        Some(1221)
    );
    assert_eq!(lookup(&geo, "1.128.0.1").network, NetworkClass::Residential);
}

#[test]
fn shipped_xz_city_db_locates_well_known_hosts() {
    // Decompressing the 17 MB xz file to 56 MB takes about 1 s in a debug build.
    let started = Instant::now();
    let geo = Geo::open(&GeoPaths {
        city: Some(data("geolite2-2018/GeoLite2-City-2018-07.mmdb.xz")),
        ..GeoPaths::default()
    })
    .unwrap();
    eprintln!(
        "opened the GeoLite2 2018 city database in {:?}",
        started.elapsed()
    );

    // 131.111.150.25 is in the University of Cambridge's network, 193.0.6.139 is
    // www.ripe.net in Amsterdam.
    let cambridge = lookup(&geo, "131.111.150.25").location.unwrap();
    assert_eq!(cambridge.city.as_deref(), Some("Cambridge"));
    assert_eq!(cambridge.country.as_deref(), Some("GB"));
    assert!(great_circle_km((cambridge.latitude, cambridge.longitude), (52.2053, 0.1218)) < 10.0);
    let amsterdam = lookup(&geo, "193.0.6.139").location.unwrap();
    assert_eq!(amsterdam.city.as_deref(), Some("Amsterdam"));
    assert_eq!(amsterdam.country.as_deref(), Some("NL"));
}

#[test]
fn missing_accuracy_uses_city_or_country_default() {
    let mut record = CityRecord {
        location: city::Location {
            latitude: Some(48.0),
            longitude: Some(2.0),
            ..city::Location::default()
        },
        ..CityRecord::default()
    };
    assert_eq!(
        location_from(&record).unwrap().accuracy_km,
        DEFAULT_COUNTRY_ACCURACY_KM
    );

    record.city.geoname_id = Some(2_988_507);
    assert_eq!(
        location_from(&record).unwrap().accuracy_km,
        DEFAULT_CITY_ACCURACY_KM
    );
}

#[test]
fn partial_record_matches_full_city_record() {
    let geo = test_geo();
    let reader = geo.city.as_ref().unwrap();
    let mut compared = 0;
    for item in reader
        .networks(maxminddb::WithinOptions::default())
        .unwrap()
    {
        let item = item.unwrap();
        let (Some(partial), Some(full)) = (
            item.decode::<CityRecord<'_>>().unwrap(),
            item.decode::<geoip2::City<'_>>().unwrap(),
        ) else {
            continue;
        };
        assert_eq!(partial.city, full.city);
        assert_eq!(partial.country, full.country);
        assert_eq!(partial.location, full.location);
        compared += 1;
    }
    assert!(compared > 100, "compared only {compared} records");
}

#[test]
fn record_without_coordinates_has_no_location() {
    let mut record = CityRecord::default();
    record.country.iso_code = Some("FR");
    assert_eq!(location_from(&record), None);
    record.location.latitude = Some(48.0);
    assert_eq!(location_from(&record), None);
    record.location.longitude = Some(f64::NAN);
    assert_eq!(location_from(&record), None);
}

#[test]
fn decode_error_becomes_unknown() {
    let geo = Geo::empty();
    let failed: Result<Option<u32>, MaxMindDbError> = Err(MaxMindDbError::decoding("corrupt"));
    assert_eq!(geo.recover("city", failed), None);
    assert_eq!(geo.recover("city", Ok(Some(7))), Some(7));
    assert_eq!(geo.lookup_errors.load(Ordering::Relaxed), 1);
}

#[test]
fn geo_is_shared_across_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Geo>();

    let geo = Arc::new(test_geo());
    let handles: Vec<_> = (0..2)
        .map(|_| {
            let geo = Arc::clone(&geo);
            std::thread::spawn(move || lookup(&geo, "81.2.69.142").location.unwrap().city)
        })
        .collect();
    for handle in handles {
        assert_eq!(handle.join().unwrap().as_deref(), Some("London"));
    }
}

/// Prints the cost of one lookup with all three test databases, from the databases and from
/// the cache. Timing depends on the machine and build profile, so it asserts nothing. Run it
/// with `--ignored --nocapture`.
#[test]
#[ignore = "timing report, run by hand"]
fn lookup_timing_report() {
    let geo = test_geo();
    let addresses: Vec<IpAddr> = ["81.2.69.142", "89.160.20.112", "1.128.0.1", "12.81.92.1"]
        .iter()
        .map(|address| address.parse().unwrap())
        .collect();
    let rounds = 50_000;
    let started = Instant::now();
    for round in 0..rounds {
        std::hint::black_box(geo.lookup_databases(addresses[round % addresses.len()]));
    }
    eprintln!(
        "{:?} per database lookup",
        started.elapsed() / rounds as u32
    );
    let started = Instant::now();
    for round in 0..rounds {
        std::hint::black_box(geo.lookup(addresses[round % addresses.len()]));
    }
    eprintln!("{:?} per cached lookup", started.elapsed() / rounds as u32);
}

#[test]
fn cached_lookup_equals_database_lookup() {
    let geo = test_geo();
    let addresses = [
        "81.2.69.142",
        "2001:218::1",
        "1.128.0.1",
        "12.81.92.1",
        "::ffff:81.2.69.142",
        "10.0.0.1",
        "203.0.113.9",
    ];
    for address in addresses {
        let ip: IpAddr = address.parse().unwrap();
        let fresh = geo.lookup_databases(canonical(ip));
        let expected = special_purpose(canonical(ip)).map_or(fresh, GeoInfo::unknown_in);

        assert_eq!(geo.lookup(ip), expected, "{address}, first lookup");
        assert_eq!(geo.lookup(ip), expected, "{address}, cached lookup");
    }
}

#[test]
fn geo_without_databases_has_no_cache() {
    assert!(Geo::empty().cache.is_none());
    assert!(test_geo().cache.is_some());
}
