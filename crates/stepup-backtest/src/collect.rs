//! The collector: turns each batch's decisions into table rows, counts and diff rows.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use chrono::{DateTime, SecondsFormat, Utc};
use stepup_events::{Decision, Event};
use stepup_geo::Geo;

use crate::input::{InputEvent, InputFormat, InvalidRecord};
use crate::output::{self, DecisionRows, DiffRows, OutputError, OutputFormat, Table};
use crate::record::{DecisionRecord, EventFacts, FactsCache};
use crate::report;
use crate::run::{BacktestError, BacktestOptions, Fed};
use crate::summary::{
    DiffRow, DiffStats, InputSummary, RuleSetHeader, RuleSetStats, RuleSetSummary, Summary,
};

/// Invalid records listed in the summary.
const INVALID_SAMPLES: usize = 20;

/// Invalid records retained for `invalid.csv`; the rest are only counted.
const INVALID_RETAINED: usize = 100_000;

/// Changed events listed in the summary and the HTML report.
const DIFF_SAMPLES: usize = 200;

/// One rule set's running counts and decision table.
struct Side {
    header: RuleSetHeader,
    stats: RuleSetStats,
    table: Option<Table<DecisionRows>>,
}

/// Running counts of the input.
#[derive(Default)]
struct InputStats {
    events: u64,
    by_type: BTreeMap<String, u64>,
    invalid: u64,
    retained: Vec<InvalidRecord>,
    first: Option<DateTime<Utc>>,
    last: Option<DateTime<Utc>>,
}

/// Collects the decisions of one run.
pub(crate) struct Collector<'a> {
    facts: FactsCache<'a>,
    options: &'a BacktestOptions,
    format: InputFormat,
    input: InputStats,
    candidate: Side,
    baseline: Option<Side>,
    diff: Option<(DiffStats, Option<Table<DiffRows>>)>,
}

// === impl Collector ===

impl<'a> Collector<'a> {
    /// Creates the collector and, with an output directory, its table files.
    pub(crate) fn new(
        geo: &'a Geo,
        options: &'a BacktestOptions,
        format: InputFormat,
        (candidate, baseline): (RuleSetHeader, Option<RuleSetHeader>),
    ) -> Result<Self, OutputError> {
        if let Some(dir) = &options.out_dir {
            output::create_dir(dir)?;
        }
        let candidate = Side::new(candidate, options, "decisions")?;
        let baseline = baseline
            .map(|header| Side::new(header, options, "baseline_decisions"))
            .transpose()?;
        let diff = match (&baseline, &options.out_dir) {
            (None, _) => None,
            (Some(_), None) => Some((DiffStats::new(DIFF_SAMPLES), None)),
            (Some(_), Some(dir)) => {
                let table = Table::create(dir.join("diff.csv"), OutputFormat::Csv)?;
                Some((DiffStats::new(DIFF_SAMPLES), Some(table)))
            }
        };
        Ok(Self {
            facts: FactsCache::new(geo),
            options,
            format,
            input: InputStats::default(),
            candidate,
            baseline,
            diff,
        })
    }

    /// Adds one batch with each rule set's decisions, aligned with `fed.events`.
    pub(crate) fn add(
        &mut self,
        fed: &Fed,
        candidate: &[Option<Arc<Decision>>],
        baseline: Option<&[Option<Arc<Decision>>]>,
    ) -> Result<(), OutputError> {
        self.input.add_invalid(&fed.invalid);
        for (index, input) in fed.events.iter().enumerate() {
            self.input.add_event(&input.event);
            let candidate = candidate.get(index).and_then(Option::as_ref);
            let baseline = baseline.and_then(|b| b.get(index)).and_then(Option::as_ref);
            if candidate.is_none() && baseline.is_none() {
                continue;
            }
            self.add_decided(input, candidate, baseline)?;
        }
        Ok(())
    }

    fn add_decided(
        &mut self,
        input: &InputEvent,
        candidate: Option<&Arc<Decision>>,
        baseline: Option<&Arc<Decision>>,
    ) -> Result<(), OutputError> {
        let event = &input.event;
        let facts = self.facts.facts(event, input.labels);
        let bucket = self.options.bucket.start_of(event.occurred_at);
        let candidate = candidate.map(|decision| DecisionRecord::of(decision));
        let baseline = baseline.map(|decision| DecisionRecord::of(decision));

        if let Some(record) = &candidate {
            self.candidate.add(event, &facts, record, bucket)?;
        }
        if let (Some(side), Some(record)) = (&mut self.baseline, &baseline) {
            side.add(event, &facts, record, bucket)?;
        }
        if let (Some(diff), Some(candidate), Some(baseline)) = (&mut self.diff, candidate, baseline)
        {
            compare(diff, event, facts, candidate, baseline)?;
        }
        Ok(())
    }

    /// Closes the tables, writes `summary.json`, `report.html` and `invalid.csv`, and returns
    /// the summary.
    pub(crate) fn finish(self) -> Result<Summary, BacktestError> {
        let top = self.options.top;
        let mut outputs = Vec::new();
        let candidate = self.candidate.finish(top, &mut outputs)?;
        let baseline = match self.baseline {
            Some(side) => Some(side.finish(top, &mut outputs)?),
            None => None,
        };
        let diff = match self.diff {
            Some((stats, table)) => {
                if let Some(table) = table {
                    table.finish()?;
                    outputs.push("diff.csv".to_owned());
                }
                Some(stats.finish())
            }
            None => None,
        };
        let mut summary = Summary {
            input: self.input.finish(self.options, self.format),
            bucket: self.options.bucket,
            top,
            candidate,
            baseline,
            diff,
            outputs,
        };
        if let Some(dir) = &self.options.out_dir {
            write_reports(dir, &mut summary, &self.input.retained)?;
        }
        Ok(summary)
    }
}

/// Writes `invalid.csv`, `report.html` and `summary.json` into `dir`.
fn write_reports(
    dir: &std::path::Path,
    summary: &mut Summary,
    invalid: &[InvalidRecord],
) -> Result<(), OutputError> {
    output::write_invalid(dir.join("invalid.csv"), invalid)?;
    summary.outputs.push("invalid.csv".to_owned());
    summary.outputs.push("report.html".to_owned());
    summary.outputs.push("summary.json".to_owned());
    output::write_file(&dir.join("report.html"), report::render(summary).as_bytes())?;
    let mut json = serde_json::to_vec_pretty(summary).expect("the summary is plain data");
    json.push(b'\n');
    output::write_file(&dir.join("summary.json"), &json)
}

fn compare(
    (stats, table): &mut (DiffStats, Option<Table<DiffRows>>),
    event: &Event,
    facts: EventFacts,
    candidate: DecisionRecord,
    baseline: DecisionRecord,
) -> Result<(), OutputError> {
    stats.add_compared();
    let Some(change) = candidate.change_from(&baseline) else {
        return Ok(());
    };
    if let Some(table) = table {
        table.push(event, &facts, change, &baseline, &candidate)?;
    }
    let row = DiffRow {
        event_id: event.event_id.clone(),
        user_id: event.user_id.clone(),
        occurred_at: output::format_time(event),
        event_type: event.kind().as_str().to_owned(),
        change,
        baseline,
        candidate,
        facts,
    };
    stats.add_changed(&row);
    Ok(())
}

// === impl Side ===

impl Side {
    fn new(
        header: RuleSetHeader,
        options: &BacktestOptions,
        stem: &str,
    ) -> Result<Self, OutputError> {
        let table = match &options.out_dir {
            Some(dir) => {
                let path: PathBuf = dir.join(format!("{stem}.{}", options.output_format));
                Some(Table::create(path, options.output_format)?)
            }
            None => None,
        };
        Ok(Self {
            header,
            stats: RuleSetStats::default(),
            table,
        })
    }

    fn add(
        &mut self,
        event: &Event,
        facts: &EventFacts,
        record: &DecisionRecord,
        bucket: i64,
    ) -> Result<(), OutputError> {
        self.stats.add(record, facts, event.kind().as_str(), bucket);
        match &mut self.table {
            Some(table) => table.push(event, facts, record),
            None => Ok(()),
        }
    }

    fn finish(self, top: usize, outputs: &mut Vec<String>) -> Result<RuleSetSummary, OutputError> {
        if let Some(table) = self.table {
            outputs.push(table.file_name());
            table.finish()?;
        }
        Ok(self.stats.finish(self.header, top))
    }
}

// === impl InputStats ===

impl InputStats {
    fn add_event(&mut self, event: &Event) {
        self.events += 1;
        let kind = event.kind().as_str();
        match self.by_type.get_mut(kind) {
            Some(count) => *count += 1,
            None => {
                self.by_type.insert(kind.to_owned(), 1);
            }
        }
        // Events arrive in time order, so the first and last seen are the oldest and newest.
        if self.first.is_none() {
            self.first = Some(event.occurred_at);
        }
        self.last = Some(event.occurred_at);
    }

    fn add_invalid(&mut self, invalid: &[InvalidRecord]) {
        self.invalid += invalid.len() as u64;
        let room = INVALID_RETAINED.saturating_sub(self.retained.len());
        self.retained.extend(invalid.iter().take(room).cloned());
    }

    fn finish(&self, options: &BacktestOptions, format: InputFormat) -> InputSummary {
        InputSummary {
            path: options.input.display().to_string(),
            format,
            sorted: options.sort,
            events: self.events,
            events_by_type: self.by_type.clone(),
            invalid: self.invalid,
            invalid_samples: self
                .retained
                .iter()
                .take(INVALID_SAMPLES)
                .cloned()
                .collect(),
            first_event_at: self.first.map(format_utc),
            last_event_at: self.last.map(format_utc),
        }
    }
}

fn format_utc(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}
