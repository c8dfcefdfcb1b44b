//! The replay: one reader thread, one engine thread per rule set, and the collector on the
//! calling thread, connected by bounded channels, so only a few batches are in flight.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::{Scope, ScopedJoinHandle};
use std::time::Instant;

use prometheus::Registry;
use stepup_engine::{Engine, EngineConfig, EngineError, Outcome, SnapshotError, read_snapshot};
use stepup_events::Decision;
use stepup_geo::Geo;
use stepup_policy::{Policy, PolicyConfig, PolicyError, RuleSet};
use tracing::info;

use crate::collect::Collector;
use crate::input::{EventReader, InputError, InputEvent, InputFormat, InvalidRecord, Position};
use crate::output::{OutputError, OutputFormat};
use crate::summary::{Bucket, RuleInfo, RuleSetHeader, Summary};

/// Batches in flight per channel; with 4096 events per batch this bounds the events held.
const CHANNEL_BATCHES: usize = 4;

/// Events per batch when the input was sorted in memory.
const SORTED_BATCH_EVENTS: usize = 4096;

/// Side of a comparison that a rule set is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The rules under test (`--rules`).
    Candidate,
    /// The rules to compare against (`--baseline`).
    Baseline,
}

/// A rule set to replay.
#[derive(Clone, Debug)]
pub struct RuleSetSpec {
    /// Candidate or baseline.
    pub role: Role,
    /// Policy settings; `dir` is the rules directory.
    pub policy: PolicyConfig,
}

/// Options of one backtest run.
#[derive(Clone, Debug)]
pub struct BacktestOptions {
    /// File of recorded events.
    pub input: PathBuf,
    /// Layout of the file; `None` detects it from the extension.
    pub input_format: Option<InputFormat>,
    /// Directory for the decision tables, `diff.csv`, `summary.json` and `report.html`; `None`
    /// writes nothing and only returns the summary.
    pub out_dir: Option<PathBuf>,
    /// File format of the decision tables.
    pub output_format: OutputFormat,
    /// Width of the buckets of the step-up rate over time.
    pub bucket: Bucket,
    /// Countries and autonomous systems listed before `(other)`.
    pub top: usize,
    /// Stop at the first invalid record instead of counting it.
    pub strict: bool,
    /// Sort the events by `occurred_at` in memory (stable) instead of requiring time order.
    pub sort: bool,
    /// Draw a progress bar on standard error.
    pub progress: bool,
}

/// Reasons a backtest fails.
#[derive(Debug, thiserror::Error)]
pub enum BacktestError {
    /// The input cannot be read.
    #[error(transparent)]
    Input(#[from] InputError),
    /// An output cannot be written.
    #[error(transparent)]
    Output(#[from] OutputError),
    /// A rules directory does not load.
    #[error("failed to load the {role} rules (check the directory given to `{flag}`)")]
    Rules {
        /// `candidate` or `baseline`.
        role: &'static str,
        /// The flag that names the directory.
        flag: &'static str,
        /// The policy crate's error, naming the file.
        #[source]
        source: PolicyError,
    },
    /// The engine cannot be built, for example from an invalid `[engine]` setting.
    #[error("failed to build the engine for the {role} rules")]
    Engine {
        /// `candidate` or `baseline`.
        role: &'static str,
        /// The engine's error.
        #[source]
        source: EngineError,
    },
    /// The snapshot file cannot be opened or read.
    #[error("failed to load snapshot `{path}` (`--snapshot`)")]
    Snapshot {
        /// Snapshot file.
        path: PathBuf,
        /// What failed.
        #[source]
        source: SnapshotError,
    },
    /// An event is older than the one before it.
    #[error(
        "input `{path}` is not in time order: the event at {position} ({found}) is older than \
         the one at {previous_position} ({previous}); sort the file by `occurred_at` or pass \
         `--sort`"
    )]
    OutOfOrder {
        /// Input file.
        path: PathBuf,
        /// Position of the older event.
        position: Position,
        /// Its time.
        found: String,
        /// Position of the event before it.
        previous_position: Position,
        /// That event's time.
        previous: String,
    },
    /// `--strict` and a record is not a valid event.
    #[error(
        "invalid record at {position} of `{path}`: {reason}; without `--strict` invalid records \
         are counted, listed in invalid.csv and skipped"
    )]
    Strict {
        /// Input file.
        path: PathBuf,
        /// Position of the record.
        position: Position,
        /// Reason the record is invalid.
        reason: String,
    },
    /// A replay thread cannot be started.
    #[error("failed to start the `{name}` thread")]
    Thread {
        /// Thread name.
        name: &'static str,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// A replay thread panicked.
    #[error("the {0} thread panicked; this is a bug in stepup")]
    Panicked(&'static str),
}

/// Events read in one step, shared by the engine threads and the collector.
pub(crate) struct Fed {
    pub events: Vec<InputEvent>,
    pub invalid: Vec<InvalidRecord>,
    /// Progress of the reader after this batch, in its unit.
    pub progress: u64,
}

/// A batch and one rule set's decisions on it, aligned with `fed.events`.
pub(crate) struct Replayed {
    pub fed: Arc<Fed>,
    pub decisions: Vec<Option<Arc<Decision>>>,
}

/// A backtest setup: engine settings, GeoIP data and one or two rule sets.
pub struct Backtest {
    engine_config: EngineConfig,
    geo: Arc<Geo>,
    candidate: RuleSetSpec,
    baseline: Option<RuleSetSpec>,
    snapshot: Option<PathBuf>,
}

/// An engine ready to replay, with the summary header of its rules.
pub(crate) struct Replayer {
    pub engine: Engine,
    pub header: RuleSetHeader,
}

// === impl Role ===

impl Role {
    /// Returns `candidate` or `baseline`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Candidate => "candidate",
            Role::Baseline => "baseline",
        }
    }

    fn flag(self) -> &'static str {
        match self {
            Role::Candidate => "--rules",
            Role::Baseline => "--baseline",
        }
    }
}

// === impl RuleSetSpec ===

impl RuleSetSpec {
    /// Describes the rules in `dir`, with the sandbox settings of `policy`.
    pub fn new(role: Role, dir: &Path, policy: &PolicyConfig) -> Self {
        let mut policy = policy.clone();
        policy.dir = dir.to_path_buf();
        Self { role, policy }
    }
}

// === impl BacktestOptions ===

impl BacktestOptions {
    /// Returns options that read `input` and write nothing, with daily buckets and a top 10.
    pub fn new(input: impl Into<PathBuf>) -> Self {
        Self {
            input: input.into(),
            input_format: None,
            out_dir: None,
            output_format: OutputFormat::Csv,
            bucket: Bucket::Day,
            top: 10,
            strict: false,
            sort: false,
            progress: false,
        }
    }
}

// === impl Backtest ===

impl Backtest {
    /// Prepares a backtest of `candidate` with the given engine settings and GeoIP data.
    pub fn new(engine_config: EngineConfig, geo: Arc<Geo>, candidate: RuleSetSpec) -> Self {
        Self {
            engine_config,
            geo,
            candidate,
            baseline: None,
            snapshot: None,
        }
    }

    /// Starts every rule set from the user states in a snapshot file (written by
    /// `stepup profiles export`) instead of empty profiles.
    pub fn with_snapshot(mut self, path: impl Into<PathBuf>) -> Self {
        self.snapshot = Some(path.into());
        self
    }

    /// Adds a baseline rule set: the same events are replayed through it and compared.
    pub fn with_baseline(mut self, baseline: RuleSetSpec) -> Self {
        self.baseline = Some(baseline);
        self
    }

    /// Replays the input through every rule set, writes the outputs and returns the summary.
    pub fn run(&self, options: &BacktestOptions) -> Result<Summary, BacktestError> {
        let format = match options.input_format {
            Some(format) => format,
            None => InputFormat::from_path(&options.input)?,
        };
        let reader = EventReader::open(&options.input, format)?;
        let candidate = self.replayer(&self.candidate)?;
        let baseline = self
            .baseline
            .as_ref()
            .map(|spec| self.replayer(spec))
            .transpose()?;
        let headers = (
            candidate.header.clone(),
            baseline.as_ref().map(|baseline| baseline.header.clone()),
        );
        let collector = Collector::new(&self.geo, options, format, headers)?;

        let started = Instant::now();
        let summary = replay(reader, options, candidate, baseline, collector)?;
        let seconds = started.elapsed().as_secs_f64();
        info!(
            events = summary.input.events,
            elapsed_s = format!("{seconds:.2}"),
            events_per_s = (summary.input.events as f64 / seconds.max(1e-9)).round() as u64,
            "backtest finished"
        );
        Ok(summary)
    }

    fn replayer(&self, spec: &RuleSetSpec) -> Result<Replayer, BacktestError> {
        let role = spec.role.as_str();
        let rules = RuleSet::load_dir(&spec.policy).map_err(|source| BacktestError::Rules {
            role,
            flag: spec.role.flag(),
            source,
        })?;
        let version = rules.version().to_owned();
        let infos = rules
            .rules()
            .iter()
            .map(|meta| RuleInfo {
                id: meta.id.clone(),
                version: meta.version.clone(),
                mode: meta.mode.as_str().to_owned(),
            })
            .collect();
        let policy = Arc::new(Policy::new(spec.policy.clone(), rules));
        let registry = Registry::new();
        let engine = Engine::new(
            self.engine_config.clone(),
            self.geo.clone(),
            policy,
            &registry,
        )
        .map_err(|source| BacktestError::Engine { role, source })?;
        if let Some(path) = &self.snapshot {
            load_snapshot(&engine, path, role)?;
        }
        info!(role, version = %version, rules_dir = %spec.policy.dir.display(), "rule set loaded");
        let header = RuleSetHeader {
            name: role.to_owned(),
            rules_dir: spec.policy.dir.display().to_string(),
            version,
            rules: infos,
        };
        Ok(Replayer { engine, header })
    }
}

/// Loads the user states of a snapshot file into partition 0, the backtest's only partition.
fn load_snapshot(engine: &Engine, path: &Path, role: &str) -> Result<(), BacktestError> {
    let failed = |source: SnapshotError| BacktestError::Snapshot {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(|error| failed(SnapshotError::Io(error)))?;
    let mut reader = std::io::BufReader::new(file);
    let stats = read_snapshot(&mut reader, engine.restore(0)).map_err(failed)?;
    info!(role, users = stats.users, path = %path.display(), "snapshot loaded");
    Ok(())
}

/// Runs the reader, the engines and the collector until the input ends or one of them fails.
fn replay(
    reader: EventReader,
    options: &BacktestOptions,
    candidate: Replayer,
    baseline: Option<Replayer>,
    mut collector: Collector<'_>,
) -> Result<Summary, BacktestError> {
    std::thread::scope(|scope| {
        let mut feeds = Vec::new();
        let (candidate_thread, candidate_done) =
            spawn_engine(scope, "backtest-candidate", candidate.engine, &mut feeds)?;
        let mut engines = vec![candidate_thread];
        let baseline_done = match baseline {
            Some(baseline) => {
                let (thread, done) =
                    spawn_engine(scope, "backtest-baseline", baseline.engine, &mut feeds)?;
                engines.push(thread);
                Some(done)
            }
            None => None,
        };

        let progress = (reader.progress().1, reader.progress_unit());
        let reader_thread = spawn(scope, "backtest-reader", move || {
            feed(reader, options, feeds)
        })?;
        let collected = collect_all(
            &mut collector,
            options,
            progress,
            &candidate_done,
            baseline_done.as_ref(),
        );
        // Dropping the receivers stops the engines and the reader if the collector failed.
        drop(candidate_done);
        drop(baseline_done);
        let fed = reader_thread
            .join()
            .map_err(|_| BacktestError::Panicked("reader"))?;
        fed?;
        collected?;
        // The engine threads free their profiles and stored decisions meanwhile. In a profile
        // of 100,000 events that took 8% of the engine thread's time.
        let summary = collector.finish()?;
        for engine in engines {
            engine
                .join()
                .map_err(|_| BacktestError::Panicked("engine"))?;
        }
        Ok(summary)
    })
}

/// Starts a thread that replays the batches sent to the new entry of `feeds` through `engine`.
fn spawn_engine<'scope>(
    scope: &'scope Scope<'scope, '_>,
    name: &'static str,
    engine: Engine,
    feeds: &mut Vec<SyncSender<Arc<Fed>>>,
) -> Result<(ScopedJoinHandle<'scope, ()>, Receiver<Replayed>), BacktestError> {
    let (feed_in, feed_out) = sync_channel(CHANNEL_BATCHES);
    let (done_in, done_out) = sync_channel(CHANNEL_BATCHES);
    feeds.push(feed_in);
    let thread = spawn(scope, name, move || run_engine(&engine, feed_out, done_in))?;
    Ok((thread, done_out))
}

/// Starts a named thread, so profilers and `top -H` show which part of the replay it runs.
fn spawn<'scope, T: Send + 'scope>(
    scope: &'scope Scope<'scope, '_>,
    name: &'static str,
    work: impl FnOnce() -> T + Send + 'scope,
) -> Result<ScopedJoinHandle<'scope, T>, BacktestError> {
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn_scoped(scope, work)
        .map_err(|source| BacktestError::Thread { name, source })
}

fn collect_all(
    collector: &mut Collector<'_>,
    options: &BacktestOptions,
    (total, unit): (u64, &'static str),
    candidate: &Receiver<Replayed>,
    baseline: Option<&Receiver<Replayed>>,
) -> Result<(), BacktestError> {
    let bar = crate::progress::bar(options.progress, total, unit);
    while let Ok(replayed) = candidate.recv() {
        let baseline = match baseline {
            Some(receiver) => match receiver.recv() {
                Ok(replayed) => Some(replayed),
                Err(_) => return Err(BacktestError::Panicked("baseline engine")),
            },
            None => None,
        };
        let baseline_decisions = baseline.as_ref().map(|b| b.decisions.as_slice());
        collector.add(&replayed.fed, &replayed.decisions, baseline_decisions)?;
        bar.set_position(replayed.fed.progress);
    }
    bar.finish_and_clear();
    Ok(())
}

fn run_engine(engine: &Engine, feed: Receiver<Arc<Fed>>, done: SyncSender<Replayed>) {
    for fed in feed {
        let decisions = fed
            .events
            .iter()
            .map(|input| match engine.process(&input.event) {
                Outcome::Decided(decision) => Some(decision),
                Outcome::Applied | Outcome::Duplicate => None,
            })
            .collect();
        if done.send(Replayed { fed, decisions }).is_err() {
            return;
        }
    }
}

/// Reads the input and sends each batch to every engine.
fn feed(
    mut reader: EventReader,
    options: &BacktestOptions,
    feeds: Vec<SyncSender<Arc<Fed>>>,
) -> Result<(), BacktestError> {
    if options.sort {
        return feed_sorted(reader, options, &feeds);
    }
    let mut order = OrderCheck::default();
    while let Some(batch) = reader.next_batch()? {
        check_strict(options, &batch.invalid)?;
        order.check(&options.input, &batch.events)?;
        let fed = Arc::new(Fed {
            events: batch.events,
            invalid: batch.invalid,
            progress: reader.progress().0,
        });
        if !send_all(&feeds, &fed) {
            break;
        }
    }
    Ok(())
}

/// Reads the whole input, sorts the events by time (stable) and sends them in batches.
fn feed_sorted(
    reader: EventReader,
    options: &BacktestOptions,
    feeds: &[SyncSender<Arc<Fed>>],
) -> Result<(), BacktestError> {
    let total = reader.progress().1;
    let mut all = reader.read_all()?;
    check_strict(options, &all.invalid)?;
    all.events.sort_by_key(|input| input.event.occurred_at);

    let mut invalid = std::mem::take(&mut all.invalid);
    let mut events = all.events.into_iter().peekable();
    while events.peek().is_some() || !invalid.is_empty() {
        let fed = Arc::new(Fed {
            events: events.by_ref().take(SORTED_BATCH_EVENTS).collect(),
            invalid: std::mem::take(&mut invalid),
            progress: total,
        });
        if !send_all(feeds, &fed) {
            break;
        }
    }
    Ok(())
}

/// Sends `fed` to every engine; false when a receiver is gone because the run is stopping.
fn send_all(feeds: &[SyncSender<Arc<Fed>>], fed: &Arc<Fed>) -> bool {
    feeds.iter().all(|feed| feed.send(Arc::clone(fed)).is_ok())
}

fn check_strict(options: &BacktestOptions, invalid: &[InvalidRecord]) -> Result<(), BacktestError> {
    match invalid.first() {
        Some(record) if options.strict => Err(BacktestError::Strict {
            path: options.input.clone(),
            position: record.position,
            reason: record.reason.clone(),
        }),
        _ => Ok(()),
    }
}

/// The time and position of the last event seen.
#[derive(Default)]
struct OrderCheck {
    last: Option<(chrono::DateTime<chrono::Utc>, Position)>,
}

// === impl OrderCheck ===

impl OrderCheck {
    fn check(&mut self, path: &Path, events: &[InputEvent]) -> Result<(), BacktestError> {
        for input in events {
            let at = input.event.occurred_at;
            if let Some((previous, previous_position)) = self.last
                && at < previous
            {
                return Err(BacktestError::OutOfOrder {
                    path: path.to_path_buf(),
                    position: input.position,
                    found: at.to_rfc3339(),
                    previous_position,
                    previous: previous.to_rfc3339(),
                });
            }
            self.last = Some((at, input.position));
        }
        Ok(())
    }
}
