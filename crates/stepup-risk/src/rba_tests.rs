use std::fs::File;
use std::path::PathBuf;

use super::*;

fn real_sample() -> File {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../data/rba/rba-dataset-head18.csv");
    File::open(&path).unwrap_or_else(|error| panic!("open {}: {error}", path.display()))
}

fn synthetic() -> File {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/rba-synthetic.csv");
    File::open(&path).unwrap_or_else(|error| panic!("open {}: {error}", path.display()))
}

const HEADER: &str = "index,Login Timestamp,User ID,Round-Trip Time [ms],IP Address,Country,\
                      Region,City,ASN,User Agent String,Browser Name and Version,\
                      OS Name and Version,Device Type,Login Successful,Is Attack IP,\
                      Is Account Takeover";

#[test]
fn reads_real_sample() {
    let logins: Vec<RbaLogin> = RbaReader::new(real_sample())
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();

    assert_eq!(logins.len(), 18 + 1, "rows 0 to 18 after the header");
    let first = &logins[0];
    assert_eq!(first.at.to_rfc3339(), "2020-02-03T12:43:30.772+00:00");
    assert_eq!(first.user_id, "-4324475583306591935");
    assert_eq!(first.ip, "10.0.65.171".parse::<IpAddr>().unwrap());
    assert_eq!(first.country.as_deref(), Some("NO"));
    assert_eq!(first.asn, Some(29695));
    assert!(first.user_agent.starts_with("Mozilla/5.0  (iPhone;"));
    assert_eq!(first.browser, "Firefox 20.0.0.1618");
    assert_eq!(first.os, "iOS 13.4");
    assert_eq!(first.device_type, "mobile");
    assert!(!first.success);
    assert!(!first.is_attack_ip);
    assert!(!first.is_account_takeover);

    // A quoted user agent with commas, and the attack flag.
    assert!(
        logins[1]
            .user_agent
            .contains("(KHTML, like Gecko Chrome/46")
    );
    assert!(logins[4].is_attack_ip);
    assert_eq!(logins.iter().filter(|login| login.success).count(), 7);
    assert!(logins.iter().all(|login| !login.is_account_takeover));
}

#[test]
fn replays_real_sample_without_takeovers() {
    let report = evaluate_rba(real_sample()).unwrap();
    assert_eq!(report.rows, 19);
    assert_eq!(report.scored, 7);
    assert_eq!(report.learned, 7);
    assert_eq!(report.positives, 0);
    assert_eq!(report.negatives, 7);
    assert!(report.auc.is_nan(), "no takeovers, so no AUC: {report:?}");
}

#[test]
fn replay_ranks_synthetic_takeovers_first() {
    let report = evaluate_rba(synthetic()).unwrap();

    assert_eq!(report.rows, 18);
    assert_eq!(report.scored, 17, "the failed attack attempt is not scored");
    assert_eq!(report.learned, 15);
    assert_eq!(report.users, 3);
    assert_eq!(report.positives, 2);
    assert_eq!(report.negatives, 15);
    assert_eq!(report.auc, 1.0);
    let at_half = report
        .rates
        .iter()
        .find(|rate| rate.threshold == 0.5)
        .unwrap();
    assert_eq!(at_half.tpr, 1.0, "{report:?}");
    assert_eq!(at_half.fpr, 0.0, "{report:?}");
}

#[test]
fn replay_can_score_failed_logins() {
    let options = RbaOptions {
        successful_only: false,
        ..RbaOptions::default()
    };
    let report = evaluate_rba_with(synthetic(), &options).unwrap();
    assert_eq!(report.scored, 18);
    assert_eq!(report.negatives, 16);
}

#[test]
fn rejects_wrong_header_naming_expected_columns() {
    let renamed = HEADER.replace("Is Account Takeover", "Is ATO");
    let error = RbaReader::new(format!("{renamed}\n").as_bytes()).unwrap_err();

    let message = error.to_string();
    assert!(matches!(error, RbaError::Header { .. }), "{error:?}");
    assert!(
        message.contains(&format!("expected the columns `{HEADER}`")),
        "{message}"
    );
    assert!(message.contains("Is ATO"), "{message}");
}

#[test]
fn accepts_exact_header_with_no_rows() {
    let input = format!("{HEADER}\n");
    let mut reader = RbaReader::new(input.as_bytes()).unwrap();
    assert!(reader.next().is_none());
}

#[test]
fn bad_field_names_column_and_line() {
    let row = "0,2020-02-03 12:43:30.772,7,,198.51.100.1,NO,-,-,AS29695,ua,Chrome 1,\
               Windows 10,desktop,True,False,False";
    let error = RbaReader::new(format!("{HEADER}\n{row}\n").as_bytes())
        .unwrap()
        .next()
        .unwrap()
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "invalid `ASN` value `AS29695` at line 2: expected a number or `-`"
    );
}

#[test]
fn bad_ip_is_not_echoed() {
    let row = "0,2020-02-03 12:43:30.772,7,,198.51.100.300,NO,-,-,1,ua,Chrome 1,\
               Windows 10,desktop,True,False,False";
    let error = RbaReader::new(format!("{HEADER}\n{row}\n").as_bytes())
        .unwrap()
        .next()
        .unwrap()
        .unwrap_err();
    assert!(!error.to_string().contains("198.51"), "{error}");
    assert!(error.to_string().contains("`IP Address`"), "{error}");
}

#[test]
fn short_row_is_a_csv_error() {
    let input = format!("{HEADER}\n0,2020-02-03 12:43:30.772,7\n");
    let error = RbaReader::new(input.as_bytes())
        .unwrap()
        .next()
        .unwrap()
        .unwrap_err();
    assert!(matches!(error, RbaError::Csv { line: 2, .. }), "{error:?}");
}

#[test]
fn family_drops_versions() {
    let cases = [
        ("Chrome Mobile WebView 85.0.4183", "Chrome Mobile WebView"),
        ("Firefox 20.0.0.1618", "Firefox"),
        ("Mac OS X 10.14.6", "Mac OS X"),
        ("Chrome OS 13020.67.3", "Chrome OS"),
        ("Android", "Android"),
        ("1.2.3", "unknown"),
        ("", "unknown"),
    ];
    for (input, expected) in cases {
        assert_eq!(family(input), expected, "{input}");
    }
}

#[test]
fn login_features_use_families_and_device_type() {
    let login = RbaReader::new(real_sample())
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    let features = login.features();
    assert_eq!(features.browser, "Firefox");
    assert_eq!(features.os, "iOS");
    assert_eq!(features.device.as_deref(), Some("mobile"));
    assert_eq!(
        features.ip_prefix,
        ip_prefix_hash("10.0.65.1".parse().unwrap())
    );
}
