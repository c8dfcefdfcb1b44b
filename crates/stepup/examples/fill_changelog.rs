//! Fills a changelog topic with user states, to measure how long a restore takes.
//!
//! The loader runs the engine over a generated event stream (the generator behind
//! `stepup backtest --generate`), and adds password keystroke timings from the shipped
//! MEU-Mobile data set to a third of the users' logins. It leaves every twentieth login result
//! out, so that some users keep attempts pending. The engine's user states that result are then
//! written to the changelog topic under `--users` distinct user ids, cycling through them. Each
//! record goes to the partition that `partition_for_key` gives for its user id, as the engine's
//! own records do. The topics are created first if they are missing (`ensure_topics`).
//!
//! Run it from the repository root, which contains the GeoIP databases, the keystroke data set
//! and the rules:
//!
//! ```sh
//! cargo build --release -p stepup --example fill_changelog
//! target/release/examples/fill_changelog --brokers 127.0.0.1:9092 \
//!     --topic stepup.profiles --partitions 4 --users 1000000
//! ```

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use futures::StreamExt;
use prometheus::Registry;
use stepup_backtest::{GenerateOptions, generate_events};
use stepup_engine::{Engine, EngineConfig, Position, decode_state};
use stepup_events::{Event, EventBody, KeyTiming, KeystrokeCapture, parse_event};
use stepup_geo::{Geo, GeoPaths};
use stepup_kafka::{KafkaConfig, KafkaMetrics, Producer, ensure_topics, partition_for_key};
use stepup_keystroke::{Dataset, FeatureKind, Features, read_dataset};
use stepup_policy::{Policy, PolicyConfig, RuleSet};

/// City database, relative to the repository root.
const CITY_DB: &str = "data/geoip/geolite2-2018/GeoLite2-City-2018-07.mmdb.xz";

/// ASN table, relative to the repository root.
const ASN_DB: &str = "data/geoip/asn/asn-ipv4.csv.gz";

/// Keystroke data set whose subjects type the users' passwords.
const KEYSTROKE_DATA: &str = "data/keystroke/meu-mobile-ksd/meu_mobile_ksd.csv";

/// Keys of the MEU-Mobile password `.tie5Roanl` in typing order.
const MEU_KEYS: [&str; 14] = [
    ".", "t", "i", "e", "Shift", "5", "Shift", "Caps", "r", "o", "a", "n", "l", "Enter",
];

/// One user in this many types with keystroke timings.
const TYPIST_EVERY: u64 = 3;

/// One login result in this many is left out, so that its attempt stays pending.
const MISSING_RESULT_EVERY: u64 = 20;

/// Time `ensure_topics` waits for the broker.
const CREATE_TIMEOUT: Duration = Duration::from_secs(30);

/// Options of the loader.
#[derive(Parser)]
struct Args {
    /// Kafka bootstrap servers.
    #[arg(long, default_value = "127.0.0.1:9092")]
    brokers: String,
    /// Changelog topic to fill.
    #[arg(long, default_value = "stepup.profiles")]
    topic: String,
    /// Events topic created beside the changelog when missing, with as many partitions.
    #[arg(long, default_value = "stepup.events")]
    events_topic: String,
    /// Partitions of the changelog topic.
    #[arg(long, default_value_t = 4)]
    partitions: i32,
    /// User ids to write, one record each.
    #[arg(long, default_value_t = 1_000_000)]
    users: u64,
    /// Distinct user states to build with the engine.
    #[arg(long, default_value_t = 4_000)]
    states: u64,
    /// Generated events per distinct user.
    #[arg(long, default_value_t = 40)]
    events_per_user: u64,
    /// Seed of the event generator.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// librdkafka `compression.type` of the records: none, gzip, snappy, lz4 or zstd.
    #[arg(long, default_value = "none")]
    compression: String,
    /// Records sent and not acknowledged yet, at most.
    #[arg(long, default_value_t = 200_000)]
    in_flight: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.partitions < 1 || args.states == 0 {
        bail!("`--partitions` and `--states` must be at least 1");
    }

    let started = Instant::now();
    let states = build_states(&args)?;
    let total: usize = states.iter().map(|(_, state)| state.len()).sum();
    println!(
        "built {} distinct user states in {:.1} s, average encoded size {:.0} bytes",
        states.len(),
        started.elapsed().as_secs_f64(),
        total as f64 / states.len() as f64
    );
    describe_states(&states)?;

    let config = kafka_config(&args);
    ensure_topics(&config, args.partitions, CREATE_TIMEOUT)
        .await
        .context("failed to create the topics")?;
    write_states(&args, &config, &states).await
}

/// Runs the engine over a generated stream and returns its users' ids and changelog values.
fn build_states(args: &Args) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    let dir = tempfile::tempdir().context("failed to create a scratch directory")?;
    let path = dir.path().join("events.ndjson");
    let options = GenerateOptions {
        users: Some(args.states),
        seed: args.seed,
        ..GenerateOptions::new(args.states * args.events_per_user)
    };
    generate_events(&path, &options).context("failed to generate events")?;

    let engine = build_engine()?;
    let mut typing = Path::new(KEYSTROKE_DATA)
        .exists()
        .then(|| read_dataset(Path::new(KEYSTROKE_DATA)).map(Typing::new))
        .transpose()
        .context("failed to read the keystroke data set")?;
    let file = File::open(&path).context("failed to open the generated events")?;
    let mut offsets = vec![0_i64; args.partitions as usize];
    let mut results = 0_u64;
    for line in BufReader::new(file).lines() {
        let line = line.context("failed to read the generated events")?;
        let mut event = parse_event(line.as_bytes()).context("failed to parse an event")?;
        if matches!(event.body, EventBody::LoginResult(_)) {
            results += 1;
            if results.is_multiple_of(MISSING_RESULT_EVERY) {
                continue;
            }
        }
        if let Some(typing) = typing.as_mut() {
            typing.add_capture(&mut event);
        }
        let partition = partition_for_key(event.user_id.as_bytes(), args.partitions);
        let offset = &mut offsets[partition as usize];
        let position = Position {
            partition,
            offset: Some(*offset),
        };
        *offset += 1;
        engine.process_at(&event, position);
    }
    Ok(engine.export_states())
}

/// Prints what the states contain, to show that they are not empty profiles.
fn describe_states(states: &[(String, Vec<u8>)]) -> anyhow::Result<()> {
    let count = states.len().max(1) as f64;
    let (mut typists, mut with_pending, mut pending, mut marks) = (0, 0, 0, 0);
    let (mut logins, mut values) = (0, 0);
    for (_, value) in states {
        let state = decode_state(value).context("failed to decode a state the engine wrote")?;
        typists += usize::from(state.profile.keystroke_template("password").is_some());
        with_pending += usize::from(!state.pending.is_empty());
        pending += state.pending.len();
        marks += state.ip_marks.len();
        logins += state.profile.verified_logins();
        values += state.profile.feature_counts().len();
    }
    println!(
        "per state: {:.1} verified logins, {:.1} learnt feature values (IP prefixes, ASNs, \
         countries, browsers, OSes, devices), {:.1} IP marks, {:.2} pending attempts; \
         {typists} with a password keystroke template, {with_pending} with pending attempts",
        logins as f64 / count,
        values as f64 / count,
        marks as f64 / count,
        pending as f64 / count,
    );
    Ok(())
}

/// Builds an engine with the shipped GeoIP databases, the default settings and the rules in
/// `rules/`.
fn build_engine() -> anyhow::Result<Engine> {
    let paths = GeoPaths {
        city: Some(CITY_DB.into()),
        asn: Some(ASN_DB.into()),
        ..GeoPaths::default()
    };
    let geo = Geo::open(&paths)
        .context("failed to open the GeoIP databases; run from the repository root")?;
    let policy_config = PolicyConfig::default();
    let rules = RuleSet::load_dir(&policy_config).context("failed to load the rules")?;
    let policy = Arc::new(Policy::new(policy_config, rules));
    Engine::new(
        EngineConfig::default(),
        Arc::new(geo),
        policy,
        &Registry::new(),
    )
    .context("failed to build the engine")
}

/// Returns the producer settings: the stepup producer, with large batches and room for
/// `in_flight` queued records.
fn kafka_config(args: &Args) -> KafkaConfig {
    let client = BTreeMap::from([
        ("compression.type".to_owned(), args.compression.clone()),
        ("linger.ms".to_owned(), "50".to_owned()),
        ("batch.size".to_owned(), "1000000".to_owned()),
        (
            "queue.buffering.max.messages".to_owned(),
            (args.in_flight * 2).to_string(),
        ),
        (
            "queue.buffering.max.kbytes".to_owned(),
            "2097151".to_owned(),
        ),
    ]);
    KafkaConfig {
        brokers: args.brokers.clone(),
        events_topic: args.events_topic.clone(),
        dead_letter_topic: format!("{}.dlq", args.events_topic),
        changelog_topic: args.topic.clone(),
        client,
        ..KafkaConfig::default()
    }
}

/// Writes `users` records, cycling through `states`, with up to `in_flight` unacknowledged.
async fn write_states(
    args: &Args,
    config: &KafkaConfig,
    states: &[(String, Vec<u8>)],
) -> anyhow::Result<()> {
    let metrics = KafkaMetrics::register(&Registry::new()).context("failed to register metrics")?;
    let producer = Producer::new(config, metrics).context("failed to create the producer")?;
    let started = Instant::now();
    let mut per_partition = vec![0_u64; args.partitions as usize];
    let mut bytes = 0_u64;
    let mut sends = futures::stream::iter(0..args.users)
        .map(|number| {
            let user_id = format!("user-{number:08}");
            let state = &states[(number % states.len() as u64) as usize].1;
            let partition = partition_for_key(user_id.as_bytes(), args.partitions);
            let producer = &producer;
            async move {
                let sent = producer.send_state(partition, &user_id, state).await;
                sent.map(|_| (partition, user_id.len() + state.len()))
            }
        })
        .buffer_unordered(args.in_flight);
    let mut written = 0_u64;
    while let Some(sent) = sends.next().await {
        let (partition, size) = sent.context("failed to write a user state")?;
        per_partition[partition as usize] += 1;
        bytes += size as u64;
        written += 1;
        if written.is_multiple_of(100_000) {
            println!("{written} records written");
        }
    }

    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "wrote {written} records ({:.1} MB of keys and values, {:.0} bytes per record) to `{}` \
         in {elapsed:.1} s, {:.0} records/s, per partition {per_partition:?}",
        bytes as f64 / 1e6,
        bytes as f64 / written.max(1) as f64,
        args.topic,
        written as f64 / elapsed
    );
    Ok(())
}

/// Hands out password captures: user n types like data set subject n, repetitions in file
/// order.
struct Typing {
    dataset: Dataset,
    next_rep: BTreeMap<usize, usize>,
}

impl Typing {
    fn new(dataset: Dataset) -> Self {
        Self {
            dataset,
            next_rep: BTreeMap::new(),
        }
    }

    /// Adds the owner's password timings to a login attempt with a device id from a typist.
    fn add_capture(&mut self, event: &mut Event) {
        let EventBody::LoginAttempt(attempt) = &mut event.body else {
            return;
        };
        let number = event
            .user_id
            .rsplit('-')
            .next()
            .and_then(|digits| digits.parse::<u64>().ok());
        let subjects = self.dataset.subjects.len();
        let Some(number) = number.filter(|number| number.is_multiple_of(TYPIST_EVERY)) else {
            return;
        };
        if attempt.device_id.is_none() || subjects == 0 {
            return;
        }
        let subject = (number as usize / TYPIST_EVERY as usize) % subjects;
        let reps = &self.dataset.subjects[subject].reps;
        if reps.is_empty() {
            return;
        }
        let cursor = self.next_rep.entry(subject).or_insert(0);
        let features = &reps[*cursor % reps.len()];
        *cursor += 1;
        attempt.keystroke = Some(capture_from(features));
    }
}

/// Rebuilds press and release times from hold and down-down intervals.
fn capture_from(features: &Features) -> KeystrokeCapture {
    let hold = features.of_kind(FeatureKind::Hold);
    let down_down = features.of_kind(FeatureKind::DownDown);
    let mut down = 0.0;
    let keys = hold
        .iter()
        .enumerate()
        .map(|(index, hold)| {
            let timing = KeyTiming {
                key: MEU_KEYS.get(index).copied().unwrap_or("Key").to_owned(),
                down_ms: down,
                up_ms: down + hold.max(0.0),
            };
            down += down_down.get(index).copied().unwrap_or(0.0).max(0.0);
            timing
        })
        .collect();
    KeystrokeCapture {
        field: "password".into(),
        keys,
    }
}
