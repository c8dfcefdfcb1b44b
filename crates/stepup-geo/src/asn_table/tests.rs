use std::path::PathBuf;
use std::time::Instant;

use super::*;

fn table(csv: &str) -> AsnTable {
    AsnTable::parse(Path::new("inline.csv"), csv.as_bytes()).unwrap()
}

fn parse_error(csv: &str) -> GeoError {
    AsnTable::parse(Path::new("inline.csv"), csv.as_bytes()).unwrap_err()
}

fn asn_of(table: &AsnTable, address: &str) -> Option<u32> {
    table.lookup(address.parse().unwrap()).map(|hit| hit.number)
}

fn shipped_table_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/geoip/asn/asn-ipv4.csv.gz")
}

#[test]
fn range_ends_are_inclusive() {
    let table = table("1.0.0.0,1.0.0.255,13335,Cloudflare\n1.0.4.0,1.0.7.255,38803,Gtelecom\n");
    assert_eq!(asn_of(&table, "1.0.0.0"), Some(13335));
    assert_eq!(asn_of(&table, "1.0.0.255"), Some(13335));
    assert_eq!(asn_of(&table, "1.0.1.0"), None);
    assert_eq!(asn_of(&table, "0.255.255.255"), None);
    assert_eq!(asn_of(&table, "1.0.7.255"), Some(38803));
    assert_eq!(asn_of(&table, "1.0.8.0"), None);
}

#[test]
fn quoted_fields_are_unquoted() {
    let table = table(
        "1.0.0.0,1.0.0.255,13335,\"Cloudflare, Inc.\"\n\
         2.26.200.0,2.26.215.255,201907,\"LLC \"\"SPUTNIK\"\"\"\r\n",
    );
    let cloudflare = table.lookup("1.0.0.1".parse().unwrap()).unwrap();
    assert_eq!(cloudflare.organization, Some("Cloudflare, Inc."));
    let sputnik = table.lookup("2.26.200.1".parse().unwrap()).unwrap();
    assert_eq!(sputnik.organization, Some("LLC \"SPUTNIK\""));
}

#[test]
fn organization_names_are_interned() {
    let table = table("1.0.0.0,1.0.0.255,1,Same\n2.0.0.0,2.0.0.255,1,Same\n3.0.0.0,3.0.0.0,2,\n");
    assert_eq!(table.organizations.len(), 1);
    let first = table
        .lookup("1.0.0.1".parse().unwrap())
        .unwrap()
        .organization
        .unwrap();
    let second = table
        .lookup("2.0.0.1".parse().unwrap())
        .unwrap()
        .organization
        .unwrap();
    assert!(std::ptr::eq(first, second));
    assert_eq!(
        table
            .lookup("3.0.0.0".parse().unwrap())
            .unwrap()
            .organization,
        None
    );
}

#[test]
fn unrouted_rows_are_skipped() {
    let table = table("1.0.0.0,1.0.0.255,0,Not routed\n1.0.1.0,1.0.1.255,7,Seven\n");
    assert_eq!(asn_of(&table, "1.0.0.1"), None);
    assert_eq!(asn_of(&table, "1.0.1.1"), Some(7));
    assert_eq!(table.len(), 1);
    assert_eq!(
        table.stats(),
        LoadStats {
            rows: 2,
            unrouted: 1,
            overlapping: 0
        }
    );
}

#[test]
fn ipv6_rows_are_looked_up() {
    let table = table("2001:200::,2001:200:ffff:ffff:ffff:ffff:ffff:ffff,2500,WIDE\n");
    assert_eq!(asn_of(&table, "2001:200::1"), Some(2500));
    assert_eq!(asn_of(&table, "2001:201::1"), None);
    assert_eq!(asn_of(&table, "1.0.0.1"), None);
}

#[test]
fn partial_overlap_goes_to_later_start() {
    // Same shape as two DoD rows of the shipped table: 214.95.0.0-215.0.255.255 (AS749) and
    // 215.0.0.0-215.1.3.255 (AS721).
    let table = table("10.0.0.0,10.0.2.255,749,A\n10.0.2.0,10.0.4.255,721,B\n");
    assert_eq!(asn_of(&table, "10.0.1.255"), Some(749));
    assert_eq!(asn_of(&table, "10.0.2.0"), Some(721));
    assert_eq!(asn_of(&table, "10.0.4.255"), Some(721));
    assert_eq!(asn_of(&table, "10.0.5.0"), None);
    assert_eq!(table.stats().overlapping, 1);
}

#[test]
fn enclosing_range_resumes_after_nested_one() {
    let table = table(
        "10.0.0.0,10.0.255.255,1,Outer\n\
         10.0.16.0,10.0.31.255,2,Inner\n\
         10.0.20.0,10.0.20.255,3,Innermost\n\
         10.0.16.0,10.0.16.255,4,Same start\n",
    );
    let cases = [
        ("10.0.0.1", 1),
        ("10.0.16.1", 4),
        ("10.0.17.1", 2),
        ("10.0.20.1", 3),
        ("10.0.21.1", 2),
        ("10.0.32.0", 1),
        ("10.0.255.255", 1),
    ];
    for (address, expected) in cases {
        assert_eq!(asn_of(&table, address), Some(expected), "{address}");
    }
    assert!(
        table.v4.windows(2).all(|pair| pair[0].end < pair[1].start),
        "{:?}",
        table.v4
    );
}

#[test]
fn range_at_top_of_address_space() {
    let table = table("255.0.0.0,255.255.255.255,9,Top\n255.255.0.0,255.255.255.255,8,Inner\n");
    assert_eq!(asn_of(&table, "255.255.255.255"), Some(8));
    assert_eq!(asn_of(&table, "255.0.0.0"), Some(9));
}

#[test]
fn operator_class_comes_from_number_then_name() {
    let table = table(
        "1.0.0.0,1.0.0.255,22394,Verizon Business\n\
         2.0.0.0,2.0.0.255,64512,Hetzner Online GmbH\n\
         3.0.0.0,3.0.0.255,64513,Telstra Limited\n",
    );
    let class_of = |address: &str| table.lookup(address.parse().unwrap()).unwrap().class;
    assert_eq!(class_of("1.0.0.1"), Some(NetworkClass::Mobile));
    assert_eq!(class_of("2.0.0.1"), Some(NetworkClass::Hosting));
    assert_eq!(class_of("3.0.0.1"), None);
}

#[test]
fn malformed_rows_name_file_and_line() {
    let cases = [
        ("1.0.0.0,1.0.0.255,13335\n", "expected 4 fields, found 3"),
        (
            "start_ip,end_ip,asn,org\n",
            "invalid start address `start_ip`",
        ),
        ("1.0.0.0,1.0.0.x,1,A\n", "invalid end address `1.0.0.x`"),
        (
            "1.0.0.9,1.0.0.1,1,A\n",
            "start `1.0.0.9` is after end `1.0.0.1`",
        ),
        ("1.0.0.0,::1,1,A\n", "different IP versions"),
        ("1.0.0.0,1.0.0.255,-5,A\n", "invalid AS number `-5`"),
        ("1.0.0.0,1.0.0.255,1,\"Open\n", "no closing quote"),
        (
            "1.0.0.0,1.0.0.255,1,\"A\"B\n",
            "unexpected text after a closing quote",
        ),
    ];
    for (row, reason) in cases {
        let csv = format!("2.0.0.0,2.0.0.255,2,Fine\n\n{row}");
        let message = parse_error(&csv).to_string();
        assert!(
            message.contains("`inline.csv` line 3"),
            "{row:?}: {message}"
        );
        assert!(message.contains(reason), "{row:?}: {message}");
        assert!(
            message.contains("start_ip,end_ip,asn,org"),
            "{row:?}: {message}"
        );
    }
}

#[test]
fn invalid_utf8_row_is_rejected() {
    let err = AsnTable::parse(Path::new("inline.csv"), b"1.0.0.0,1.0.0.255,1,\xff\n").unwrap_err();
    assert!(err.to_string().contains("not valid UTF-8"), "{err}");
}

#[test]
fn shipped_table_loads_and_finds_cloudflare() {
    let path = shipped_table_path();
    let bytes = crate::load::read_decompressed(&path).unwrap();
    let started = Instant::now();
    let table = AsnTable::parse(&path, &bytes).unwrap();
    let elapsed = started.elapsed();

    let hit = table.lookup("1.0.0.1".parse().unwrap()).unwrap();
    assert_eq!(hit.number, 13335);
    assert_eq!(hit.organization, Some("Cloudflare, Inc."));
    assert_eq!(asn_of(&table, "1.1.1.1"), Some(13335));
    assert_eq!(asn_of(&table, "8.8.8.8"), Some(15169));
    // 411,961 rows. One of them partly overlaps the next and is cut short where the next starts.
    assert_eq!(table.len(), 411_961);
    assert_eq!(
        table.stats(),
        LoadStats {
            rows: 411_961,
            unrouted: 0,
            overlapping: 1
        }
    );
    eprintln!("parsed the shipped ASN table in {elapsed:?}");
}
