//! The summary of a backtest: counts per rule, requirement, time bucket, country and network,
//! and the difference between two rule sets. It serializes to `summary.json` and `--json`.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use stepup_events::Requirement;

use crate::input::{InputFormat, InvalidRecord};
use crate::record::{Change, DecisionRecord, EventFacts};

/// Label of the group that sums up the groups past the top N.
const OTHER: &str = "(other)";

/// Label of decisions whose country or network is unknown.
const UNKNOWN: &str = "(unknown)";

/// Width of the buckets of the step-up rate over time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Bucket {
    /// One bucket per UTC hour.
    Hour,
    /// One bucket per UTC day.
    Day,
}

/// Decisions counted by requirement.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RequirementCounts {
    /// Decisions that allowed.
    pub allow: u64,
    /// Decisions that asked for MFA.
    pub mfa: u64,
    /// Decisions that denied.
    pub deny: u64,
}

/// Counts of one group (a rule, country, network, event type or label).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Group {
    /// The group's name.
    pub key: String,
    /// Decisions in the group.
    pub decisions: u64,
    /// Decisions by requirement.
    #[serde(flatten)]
    pub counts: RequirementCounts,
    /// Share of decisions that asked for MFA or denied.
    pub step_up_rate: f64,
}

/// Counts of one time bucket.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TimeBucket {
    /// Start of the bucket, RFC 3339 in UTC.
    pub start: String,
    /// Decisions in the bucket.
    pub decisions: u64,
    /// Decisions by requirement.
    #[serde(flatten)]
    pub counts: RequirementCounts,
    /// Share of decisions that asked for MFA or denied.
    pub step_up_rate: f64,
}

/// A rule of a rule set, as loaded.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RuleInfo {
    /// Rule id.
    pub id: String,
    /// Rule version.
    pub version: String,
    /// `live` or `shadow`; shadow rules never decide.
    pub mode: String,
}

/// Decisions of one rule set, counted.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RuleSetSummary {
    /// `candidate` or `baseline`.
    pub name: String,
    /// Directory the rules were loaded from.
    pub rules_dir: String,
    /// Content hash of the rule files.
    pub rule_set_version: String,
    /// The rules, in evaluation order.
    pub rules: Vec<RuleInfo>,
    /// Decided events.
    pub decisions: u64,
    /// Decisions by requirement.
    pub requirements: RequirementCounts,
    /// Share of decisions that asked for MFA or denied.
    pub step_up_rate: f64,
    /// Decisions per event type.
    pub by_event_type: Vec<Group>,
    /// Decisions per deciding rule; a decision with two deciding rules counts for both.
    pub by_rule: Vec<Group>,
    /// Decisions per reason code; a decision counts once per distinct code.
    pub by_reason_code: Vec<Group>,
    /// Decisions per shadow verdict of `mfa` or `deny` (`rule_id=requirement`), counted under
    /// the live requirement. Its `allow` count is the allowed events that promoting the rule
    /// would step up.
    pub by_shadow_rule: Vec<Group>,
    /// Decisions per time bucket, oldest first; buckets without decisions are left out.
    pub over_time: Vec<TimeBucket>,
    /// Top countries by decisions, then `(other)`.
    pub by_country: Vec<Group>,
    /// Decisions per network class.
    pub by_network: Vec<Group>,
    /// Top autonomous systems by decisions, then `(other)`.
    pub by_asn: Vec<Group>,
    /// Decisions per input label value (`is_attack_ip=true`, ...); empty without labels.
    pub by_label: Vec<Group>,
}

/// A requirement transition between baseline and candidate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Transition {
    /// Baseline requirement.
    pub from: Requirement,
    /// Candidate requirement.
    pub to: Requirement,
    /// Events with this transition.
    pub count: u64,
}

/// One event whose decision changed.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DiffRow {
    /// Event id.
    pub event_id: String,
    /// User id.
    pub user_id: String,
    /// Event time, RFC 3339.
    pub occurred_at: String,
    /// Event type.
    pub event_type: String,
    /// What changed.
    pub change: Change,
    /// The baseline's decision.
    pub baseline: DecisionRecord,
    /// The candidate's decision.
    pub candidate: DecisionRecord,
    /// Country, network and labels of the event.
    pub facts: EventFacts,
}

/// The difference between the baseline's and the candidate's decisions.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DiffSummary {
    /// Events both rule sets decided.
    pub compared: u64,
    /// Events whose decision changed in any way.
    pub changed: u64,
    /// Changed events by kind of change.
    pub by_change: BTreeMap<Change, u64>,
    /// Requirement transitions, most frequent first.
    pub transitions: Vec<Transition>,
    /// Rules that decided changed events in the candidate but not in the baseline.
    pub rules_gained: Vec<Group>,
    /// Rules that decided changed events in the baseline but not in the candidate.
    pub rules_lost: Vec<Group>,
    /// The first changed events, in input order; `diff.csv` lists all of them.
    pub samples: Vec<DiffRow>,
}

/// Counts of the input.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct InputSummary {
    /// Input file as given.
    pub path: String,
    /// Format it was read as.
    pub format: InputFormat,
    /// Whether the events were sorted by time before the replay (`--sort`).
    pub sorted: bool,
    /// Valid events.
    pub events: u64,
    /// Valid events per type.
    pub events_by_type: BTreeMap<String, u64>,
    /// Records that were not valid events.
    pub invalid: u64,
    /// The first invalid records, in input order.
    pub invalid_samples: Vec<InvalidRecord>,
    /// Time of the first event.
    pub first_event_at: Option<String>,
    /// Time of the last event.
    pub last_event_at: Option<String>,
}

/// Everything a backtest reports.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Summary {
    /// The input.
    pub input: InputSummary,
    /// Width of the time buckets.
    pub bucket: Bucket,
    /// Number of countries and autonomous systems listed before `(other)`.
    pub top: usize,
    /// The candidate rule set.
    pub candidate: RuleSetSummary,
    /// The baseline rule set, with `--baseline`.
    pub baseline: Option<RuleSetSummary>,
    /// The difference, with `--baseline`.
    pub diff: Option<DiffSummary>,
    /// Files written to the output directory, by name.
    pub outputs: Vec<String>,
}

// === impl Bucket ===

impl Bucket {
    /// Returns the name used on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Bucket::Hour => "hour",
            Bucket::Day => "day",
        }
    }

    /// Returns the bucket width in seconds.
    pub fn seconds(self) -> i64 {
        match self {
            Bucket::Hour => 3600,
            Bucket::Day => 86_400,
        }
    }

    /// Returns the start of the bucket that contains `at`, in Unix seconds.
    pub fn start_of(self, at: DateTime<Utc>) -> i64 {
        at.timestamp().div_euclid(self.seconds()) * self.seconds()
    }
}

impl FromStr for Bucket {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        match name {
            "hour" => Ok(Bucket::Hour),
            "day" => Ok(Bucket::Day),
            other => Err(format!("invalid bucket `{other}`; use hour or day")),
        }
    }
}

impl fmt::Display for Bucket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// === impl RequirementCounts ===

impl RequirementCounts {
    /// Counts one decision.
    pub fn add(&mut self, requirement: Requirement) {
        match requirement {
            Requirement::Allow => self.allow += 1,
            Requirement::Mfa => self.mfa += 1,
            Requirement::Deny => self.deny += 1,
        }
    }

    /// Returns the number of decisions.
    pub fn total(&self) -> u64 {
        self.allow + self.mfa + self.deny
    }

    /// Returns the share of decisions that asked for MFA or denied; 0 without decisions.
    pub fn step_up_rate(&self) -> f64 {
        match self.total() {
            0 => 0.0,
            total => (self.mfa + self.deny) as f64 / total as f64,
        }
    }

    fn merge(&mut self, other: &RequirementCounts) {
        self.allow += other.allow;
        self.mfa += other.mfa;
        self.deny += other.deny;
    }
}

// === impl Group ===

impl Group {
    fn new(key: impl Into<String>, counts: RequirementCounts) -> Self {
        Self {
            key: key.into(),
            decisions: counts.total(),
            counts,
            step_up_rate: counts.step_up_rate(),
        }
    }
}

/// Sorts groups by decisions (most first), then by key, so ties have a stable order.
fn ranked<K: ToString>(counts: impl IntoIterator<Item = (K, RequirementCounts)>) -> Vec<Group> {
    let mut groups: Vec<Group> = counts
        .into_iter()
        .map(|(key, counts)| Group::new(key.to_string(), counts))
        .collect();
    groups.sort_by(|a, b| {
        b.decisions
            .cmp(&a.decisions)
            .then_with(|| a.key.cmp(&b.key))
    });
    groups
}

/// Keeps the top `top` groups and folds the rest into `(other)`.
fn top_groups<K: ToString>(
    counts: impl IntoIterator<Item = (K, RequirementCounts)>,
    top: usize,
) -> Vec<Group> {
    let mut groups = ranked(counts);
    if groups.len() > top {
        let mut rest = RequirementCounts::default();
        for group in &groups[top..] {
            rest.merge(&group.counts);
        }
        groups.truncate(top);
        groups.push(Group::new(OTHER, rest));
    }
    groups
}

/// Formats Unix seconds as RFC 3339 in UTC.
pub(crate) fn rfc3339_seconds(seconds: i64) -> String {
    DateTime::from_timestamp(seconds, 0)
        .map(|at| at.to_rfc3339_opts(SecondsFormat::Secs, true))
        .unwrap_or_else(|| seconds.to_string())
}

/// Running counts of one rule set's decisions.
#[derive(Debug, Default)]
pub(crate) struct RuleSetStats {
    requirements: RequirementCounts,
    by_event_type: BTreeMap<&'static str, RequirementCounts>,
    by_rule: HashMap<String, RequirementCounts>,
    by_reason_code: HashMap<String, RequirementCounts>,
    by_shadow_rule: HashMap<String, RequirementCounts>,
    buckets: BTreeMap<i64, RequirementCounts>,
    by_country: HashMap<String, RequirementCounts>,
    by_network: HashMap<&'static str, RequirementCounts>,
    by_asn: HashMap<String, RequirementCounts>,
    by_label: BTreeMap<String, RequirementCounts>,
}

// === impl RuleSetStats ===

impl RuleSetStats {
    /// Counts one decision.
    pub(crate) fn add(
        &mut self,
        record: &DecisionRecord,
        facts: &EventFacts,
        event_type: &'static str,
        bucket_start: i64,
    ) {
        let requirement = record.requirement;
        self.requirements.add(requirement);
        self.by_event_type
            .entry(event_type)
            .or_default()
            .add(requirement);
        self.buckets
            .entry(bucket_start)
            .or_default()
            .add(requirement);

        self.add_rules(record);
        self.add_facts(facts, requirement);
    }

    fn add_rules(&mut self, record: &DecisionRecord) {
        let requirement = record.requirement;
        for rule in &record.decided_by {
            count(&mut self.by_rule, rule, requirement);
        }
        let mut codes: Vec<&String> = record.reason_codes.iter().collect();
        codes.sort();
        codes.dedup();
        for code in codes {
            count(&mut self.by_reason_code, code, requirement);
        }
        for verdict in &record.shadow {
            count(&mut self.by_shadow_rule, verdict, requirement);
        }
    }

    fn add_facts(&mut self, facts: &EventFacts, requirement: Requirement) {
        let country = facts.country.as_deref().unwrap_or(UNKNOWN);
        count(&mut self.by_country, country, requirement);
        let network = facts.network.unwrap_or(UNKNOWN);
        self.by_network.entry(network).or_default().add(requirement);
        let asn = facts
            .asn
            .map_or_else(|| UNKNOWN.to_owned(), |asn| format!("AS{asn}"));
        self.by_asn.entry(asn).or_default().add(requirement);
        self.add_labels(facts, requirement);
    }

    fn add_labels(&mut self, facts: &EventFacts, requirement: Requirement) {
        let labels = [
            ("is_attack_ip", facts.labels.attack_ip),
            ("is_account_takeover", facts.labels.account_takeover),
        ];
        for (name, value) in labels {
            if let Some(value) = value {
                let key = format!("{name}={value}");
                self.by_label.entry(key).or_default().add(requirement);
            }
        }
    }

    /// Builds the summary of the rule set described by `rule_set`.
    pub(crate) fn finish(self, rule_set: RuleSetHeader, top: usize) -> RuleSetSummary {
        let over_time = self
            .buckets
            .into_iter()
            .map(|(start, counts)| TimeBucket {
                start: rfc3339_seconds(start),
                decisions: counts.total(),
                counts,
                step_up_rate: counts.step_up_rate(),
            })
            .collect();
        RuleSetSummary {
            name: rule_set.name,
            rules_dir: rule_set.rules_dir,
            rule_set_version: rule_set.version,
            rules: rule_set.rules,
            decisions: self.requirements.total(),
            requirements: self.requirements,
            step_up_rate: self.requirements.step_up_rate(),
            by_event_type: ranked(self.by_event_type),
            by_rule: ranked(self.by_rule),
            by_reason_code: ranked(self.by_reason_code),
            by_shadow_rule: ranked(self.by_shadow_rule),
            over_time,
            by_country: top_groups(self.by_country, top),
            by_network: ranked(self.by_network),
            by_asn: top_groups(self.by_asn, top),
            by_label: ranked(self.by_label),
        }
    }
}

fn count(map: &mut HashMap<String, RequirementCounts>, key: &str, requirement: Requirement) {
    match map.get_mut(key) {
        Some(counts) => counts.add(requirement),
        None => {
            let mut counts = RequirementCounts::default();
            counts.add(requirement);
            map.insert(key.to_owned(), counts);
        }
    }
}

/// Identity of a rule set, for its summary.
#[derive(Clone, Debug)]
pub(crate) struct RuleSetHeader {
    pub name: String,
    pub rules_dir: String,
    pub version: String,
    pub rules: Vec<RuleInfo>,
}

/// Running counts of the difference between two rule sets.
#[derive(Debug, Default)]
pub(crate) struct DiffStats {
    compared: u64,
    changed: u64,
    by_change: BTreeMap<Change, u64>,
    transitions: BTreeMap<(Requirement, Requirement), u64>,
    rules_gained: HashMap<String, RequirementCounts>,
    rules_lost: HashMap<String, RequirementCounts>,
    samples: Vec<DiffRow>,
    max_samples: usize,
}

// === impl DiffStats ===

impl DiffStats {
    pub(crate) fn new(max_samples: usize) -> Self {
        Self {
            max_samples,
            ..Self::default()
        }
    }

    /// Counts one compared event.
    pub(crate) fn add_compared(&mut self) {
        self.compared += 1;
    }

    /// Counts one changed event.
    pub(crate) fn add_changed(&mut self, row: &DiffRow) {
        self.changed += 1;
        *self.by_change.entry(row.change).or_default() += 1;
        let key = (row.baseline.requirement, row.candidate.requirement);
        *self.transitions.entry(key).or_default() += 1;
        for rule in &row.candidate.decided_by {
            if !row.baseline.decided_by.contains(rule) {
                count(&mut self.rules_gained, rule, row.candidate.requirement);
            }
        }
        for rule in &row.baseline.decided_by {
            if !row.candidate.decided_by.contains(rule) {
                count(&mut self.rules_lost, rule, row.baseline.requirement);
            }
        }
        if self.samples.len() < self.max_samples {
            self.samples.push(row.clone());
        }
    }

    pub(crate) fn finish(self) -> DiffSummary {
        let mut transitions: Vec<Transition> = self
            .transitions
            .into_iter()
            .map(|((from, to), count)| Transition { from, to, count })
            .collect();
        transitions.sort_by_key(|transition| std::cmp::Reverse(transition.count));
        DiffSummary {
            compared: self.compared,
            changed: self.changed,
            by_change: self.by_change,
            transitions,
            rules_gained: ranked(self.rules_gained),
            rules_lost: ranked(self.rules_lost),
            samples: self.samples,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(allow: u64, mfa: u64, deny: u64) -> RequirementCounts {
        RequirementCounts { allow, mfa, deny }
    }

    #[test]
    fn step_up_rate_counts_mfa_and_deny() {
        assert_eq!(counts(2, 1, 1).step_up_rate(), 0.5);
        assert_eq!(counts(0, 0, 0).step_up_rate(), 0.0);
    }

    #[test]
    fn top_groups_fold_the_rest_into_other() {
        let groups = top_groups(
            [
                ("NO", counts(5, 0, 0)),
                ("US", counts(3, 1, 0)),
                ("ID", counts(1, 0, 0)),
            ],
            1,
        );
        let keys: Vec<&str> = groups.iter().map(|group| group.key.as_str()).collect();
        assert_eq!(keys, ["NO", OTHER]);
        assert_eq!(groups[1].decisions, 5);
    }

    #[test]
    fn ties_rank_by_key() {
        let groups = ranked([("b", counts(1, 0, 0)), ("a", counts(1, 0, 0))]);
        assert_eq!(groups[0].key, "a");
    }

    #[test]
    fn bucket_start_truncates_to_utc_day() {
        let at = DateTime::parse_from_rfc3339("2020-02-03T12:43:30Z")
            .unwrap()
            .to_utc();
        assert_eq!(
            rfc3339_seconds(Bucket::Day.start_of(at)),
            "2020-02-03T00:00:00Z"
        );
        assert_eq!(
            rfc3339_seconds(Bucket::Hour.start_of(at)),
            "2020-02-03T12:00:00Z"
        );
    }
}
