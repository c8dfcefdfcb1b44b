//! Import and replay of the RBA login data set of Wiefling et al., "Pump Up Password Security!
//! Evaluating and Enhancing Risk-Based Authentication on a Real-World Large-Scale Online
//! Service", ACM TOPS 2022, doi:10.1145/3546069 (data set under CC BY 4.0).
//!
//! The data set is one large CSV file (about 9 GB). [`RbaReader`] streams it row by row, and
//! [`evaluate_rba`] replays it through the model with account takeover as the positive
//! label.

use std::collections::HashMap;
use std::io::Read;
use std::net::IpAddr;

use chrono::{DateTime, NaiveDateTime, Utc};
use serde::Serialize;
use stepup_signals::ip_prefix_hash;
use tracing::debug;

use crate::config::{RiskConfig, RiskConfigError};
use crate::features::{AttemptFeatures, CountHistory};
use crate::model::{RiskModel, SignalInputs};
use crate::roc::{RocPoint, roc};

/// The data set's columns, in order.
pub const RBA_COLUMNS: [&str; 16] = [
    "index",
    "Login Timestamp",
    "User ID",
    "Round-Trip Time [ms]",
    "IP Address",
    "Country",
    "Region",
    "City",
    "ASN",
    "User Agent String",
    "Browser Name and Version",
    "OS Name and Version",
    "Device Type",
    "Login Successful",
    "Is Attack IP",
    "Is Account Takeover",
];

/// Format of `Login Timestamp`, for example `2020-02-03 12:43:30.772`, read as UTC.
const TIMESTAMP_FORMAT: &str = "%Y-%m-%d %H:%M:%S%.f";

/// Rows between progress log lines during a replay.
const PROGRESS_ROWS: u64 = 1_000_000;

/// Errors from reading or replaying the RBA data set.
#[derive(Debug, thiserror::Error)]
pub enum RbaError {
    /// The first line is not the data set's header.
    #[error(
        "invalid RBA header: expected the columns `{expected}`, found `{found}`; \
         pass the data set's CSV file with its header line"
    )]
    Header {
        /// The expected header, comma-separated.
        expected: String,
        /// The header found, comma-separated.
        found: String,
    },
    /// The CSV layer failed: an I/O error, bad UTF-8 or a row with the wrong column count.
    #[error("failed to read RBA CSV at line {line}")]
    Csv {
        /// Line of the failing record, 0 when unknown.
        line: u64,
        /// The cause.
        #[source]
        source: csv::Error,
    },
    /// A field does not parse.
    #[error("invalid `{column}` value `{value}` at line {line}: expected {expected}")]
    Field {
        /// Line of the record.
        line: u64,
        /// Column name.
        column: &'static str,
        /// The value as found; withheld for `IP Address`.
        value: String,
        /// Expected form of the column's values.
        expected: &'static str,
    },
    /// The replay options hold an invalid model configuration.
    #[error("failed to replay RBA logins: invalid model configuration")]
    Config(#[from] RiskConfigError),
}

/// One login of the data set. The round-trip time, region and city columns are not kept.
#[derive(Clone, Debug, PartialEq)]
pub struct RbaLogin {
    /// Login time, read as UTC.
    pub at: DateTime<Utc>,
    /// Pseudonymous user id as in the file.
    pub user_id: String,
    /// Client IP address.
    pub ip: IpAddr,
    /// Country code, `None` for `-` or empty.
    pub country: Option<String>,
    /// Autonomous system number, `None` for `-` or empty.
    pub asn: Option<u32>,
    /// Raw user-agent string.
    pub user_agent: String,
    /// Browser name and version, for example `Chrome Mobile 46.0.2490`.
    pub browser: String,
    /// OS name and version, for example `Android 4.1`.
    pub os: String,
    /// Device type, for example `mobile` or `desktop`.
    pub device_type: String,
    /// Whether the login succeeded.
    pub success: bool,
    /// Whether the IP address is on the data set's list of attack addresses.
    pub is_attack_ip: bool,
    /// Whether the login is an account takeover.
    pub is_account_takeover: bool,
}

/// Streams [`RbaLogin`]s from a CSV reader after checking the header.
#[derive(Debug)]
pub struct RbaReader<R> {
    csv: csv::Reader<R>,
    record: csv::StringRecord,
}

/// Settings of an RBA replay.
#[derive(Clone, Debug, PartialEq)]
pub struct RbaOptions {
    /// Model configuration. Default: [`RiskConfig::default`].
    pub config: RiskConfig,
    /// Score thresholds in `[0, 1]` to report rates at. Default: 0.1, 0.3, 0.5, 0.6, 0.85,
    /// 0.9 and 0.99.
    pub thresholds: Vec<f64>,
    /// Whether to score only successful logins. An account takeover is a successful login,
    /// so this measures how many takeovers the model would have stepped up and how many
    /// legitimate successful logins it would have stepped up with them. Failed logins are
    /// still replayed. Default: true.
    pub successful_only: bool,
    /// Maximum distinct values kept per user and feature. Default: 64, as the engine's
    /// profiles keep.
    pub max_values_per_user_feature: usize,
}

/// Outcome of an RBA replay.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RbaReport {
    /// Rows read.
    pub rows: u64,
    /// Logins scored.
    pub scored: u64,
    /// Logins learnt: successful logins that are not account takeovers.
    pub learned: u64,
    /// Distinct users with a learnt login.
    pub users: u64,
    /// Scored account takeovers.
    pub positives: u64,
    /// Scored logins that are not account takeovers.
    pub negatives: u64,
    /// ROC AUC of the log-odds with account takeover as the positive label; NaN without
    /// positives or negatives.
    pub auc: f64,
    /// Rates at the requested score thresholds.
    pub rates: Vec<RocPoint>,
}

/// Replays the data set with [`RbaOptions::default`]; see [`evaluate_rba_with`].
pub fn evaluate_rba<R: Read>(reader: R) -> Result<RbaReport, RbaError> {
    evaluate_rba_with(reader, &RbaOptions::default())
}

/// Replays the data set in file order: each login is scored before it is learnt, and only
/// successful logins that are not account takeovers are learnt, into the user's
/// [`CountHistory`] and the population.
///
/// The data set has no device id, so the device type is used in its place, and browser and
/// OS are reduced to their families (the name without the version). Only the history terms
/// score: the data set has no coordinates for travel, and velocity and network signals are
/// not derived from it. Memory grows with the users (one bounded history each) and the
/// scored logins (16 bytes each).
pub fn evaluate_rba_with<R: Read>(reader: R, options: &RbaOptions) -> Result<RbaReport, RbaError> {
    let model = RiskModel::new(options.config.clone())?;
    let population = crate::Population::from_config(&options.config);
    let mut histories: HashMap<String, CountHistory> = HashMap::new();
    let empty = CountHistory::default();
    let inputs = SignalInputs::default();
    let mut scores = Vec::new();
    let (mut rows, mut learned) = (0u64, 0u64);

    for login in RbaReader::new(reader)? {
        let login = login?;
        rows += 1;
        let features = login.features();
        if login.success || !options.successful_only {
            let history = histories.get(&login.user_id).unwrap_or(&empty);
            let assessment = model.assess_inputs(&features, history, &population, &inputs);
            scores.push((assessment.log_odds, login.is_account_takeover));
        }
        if login.success && !login.is_account_takeover {
            let history = histories.entry(login.user_id).or_default();
            history.learn(&features, options.max_values_per_user_feature);
            population.learn(&features);
            learned += 1;
        }
        if rows % PROGRESS_ROWS == 0 {
            debug!(rows, learned, users = histories.len(), "replayed RBA rows");
        }
    }
    Ok(report(
        rows,
        learned,
        histories.len(),
        &scores,
        &options.thresholds,
    ))
}

fn report(
    rows: u64,
    learned: u64,
    users: usize,
    scores: &[(f64, bool)],
    thresholds: &[f64],
) -> RbaReport {
    let curve = roc(scores);
    // The curve ranks log-odds, because scores near 1 round to equal values.
    let log_thresholds: Vec<f64> = thresholds.iter().map(|t| (t / (1.0 - t)).ln()).collect();
    let rates = curve
        .rates_at(&log_thresholds)
        .into_iter()
        .zip(thresholds)
        .map(|(point, threshold)| RocPoint {
            threshold: *threshold,
            ..point
        })
        .collect();
    RbaReport {
        rows,
        scored: scores.len() as u64,
        learned,
        users: users as u64,
        positives: curve.positives,
        negatives: curve.negatives,
        auc: curve.auc,
        rates,
    }
}

/// Returns a browser or OS name without its version: the words before the first one that
/// starts with a digit, or `unknown` when there are none.
pub fn family(name_and_version: &str) -> String {
    let words: Vec<&str> = name_and_version
        .split_whitespace()
        .take_while(|word| !word.starts_with(|c: char| c.is_ascii_digit()))
        .collect();
    if words.is_empty() {
        return stepup_signals::UNKNOWN.to_owned();
    }
    words.join(" ")
}

// === impl RbaLogin ===

impl RbaLogin {
    /// Returns the model features: IP prefix, ASN, country, browser and OS families, and the
    /// device type in place of a device id.
    pub fn features(&self) -> AttemptFeatures {
        AttemptFeatures {
            ip_prefix: ip_prefix_hash(self.ip),
            asn: self.asn,
            country: self.country.clone(),
            browser: family(&self.browser),
            os: family(&self.os),
            device: Some(self.device_type.clone()),
        }
    }
}

// === impl RbaReader ===

impl<R: Read> RbaReader<R> {
    /// Wraps `reader` and checks that its first line is exactly the data set's header.
    pub fn new(reader: R) -> Result<Self, RbaError> {
        let mut csv = csv::ReaderBuilder::new()
            .has_headers(true)
            .from_reader(reader);
        let headers = csv
            .headers()
            .map_err(|source| RbaError::Csv { line: 1, source })?;
        if headers.iter().ne(RBA_COLUMNS) {
            return Err(RbaError::Header {
                expected: RBA_COLUMNS.join(","),
                found: headers.iter().collect::<Vec<_>>().join(","),
            });
        }
        Ok(Self {
            csv,
            record: csv::StringRecord::new(),
        })
    }

    fn read_login(&mut self) -> Result<Option<RbaLogin>, RbaError> {
        let more = self.csv.read_record(&mut self.record).map_err(|source| {
            let line = source.position().map_or(0, |position| position.line());
            RbaError::Csv { line, source }
        })?;
        if !more {
            return Ok(None);
        }
        let line = self.record.position().map_or(0, |position| position.line());
        parse_login(&self.record, line).map(Some)
    }
}

impl<R: Read> Iterator for RbaReader<R> {
    type Item = Result<RbaLogin, RbaError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.read_login().transpose()
    }
}

/// Parses one record whose column count the CSV reader has already checked.
fn parse_login(record: &csv::StringRecord, line: u64) -> Result<RbaLogin, RbaError> {
    let field = |index: usize| record.get(index).unwrap_or_default();
    let invalid = |index: usize, expected: &'static str| RbaError::Field {
        line,
        column: RBA_COLUMNS[index],
        value: field(index).to_owned(),
        expected,
    };

    let at = NaiveDateTime::parse_from_str(field(1), TIMESTAMP_FORMAT)
        .map_err(|_| invalid(1, "a time like `2020-02-03 12:43:30.772`"))?
        .and_utc();
    let ip = field(4).parse().map_err(|_| RbaError::Field {
        line,
        column: RBA_COLUMNS[4],
        value: "(withheld)".to_owned(),
        expected: "an IPv4 or IPv6 address",
    })?;
    let asn = match optional(field(8)) {
        None => None,
        Some(asn) => Some(asn.parse().map_err(|_| invalid(8, "a number or `-`"))?),
    };
    Ok(RbaLogin {
        at,
        user_id: field(2).to_owned(),
        ip,
        country: optional(field(5)).map(str::to_owned),
        asn,
        user_agent: field(9).to_owned(),
        browser: field(10).to_owned(),
        os: field(11).to_owned(),
        device_type: field(12).to_owned(),
        success: parse_bool(field(13)).ok_or_else(|| invalid(13, "`True` or `False`"))?,
        is_attack_ip: parse_bool(field(14)).ok_or_else(|| invalid(14, "`True` or `False`"))?,
        is_account_takeover: parse_bool(field(15))
            .ok_or_else(|| invalid(15, "`True` or `False`"))?,
    })
}

/// Returns `None` for the data set's placeholders of a missing value, `-` and empty.
fn optional(value: &str) -> Option<&str> {
    match value.trim() {
        "" | "-" => None,
        value => Some(value),
    }
}

fn parse_bool(value: &str) -> Option<bool> {
    match value {
        "True" | "true" => Some(true),
        "False" | "false" => Some(false),
        _ => None,
    }
}

// === impl RbaOptions ===

impl Default for RbaOptions {
    fn default() -> Self {
        Self {
            config: RiskConfig::default(),
            thresholds: vec![0.1, 0.3, 0.5, 0.6, 0.85, 0.9, 0.99],
            successful_only: true,
            max_values_per_user_feature: 64,
        }
    }
}

#[cfg(test)]
#[path = "rba_tests.rs"]
mod tests;
