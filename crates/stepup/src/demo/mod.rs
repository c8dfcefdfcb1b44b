//! `stepup demo`: the engine end to end on an embedded Kafka, fed a labelled stream of
//! legitimate logins and attacks built from the shipped GeoIP database.

mod drive;
mod plan;
mod summary;
mod typing;
mod world;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use clap::Args;
use parking_lot::Mutex;
use prometheus::Registry;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use stepup_api::pb::step_up_client::StepUpClient;
use stepup_events::Requirement;
use stepup_kafka::{EmbeddedKafka, KafkaMetrics, Producer};
use tokio::sync::watch;

use self::drive::Driver;
use self::plan::Label;
use self::summary::{Summary, Tally, label_summary};
use crate::config::Config;
use crate::runtime::{self, EngineHandler};

/// Keystroke data set whose subjects type the demo users' passwords.
const KEYSTROKE_DATA: &str = "data/keystroke/meu-mobile-ksd/meu_mobile_ksd.csv";

/// Options of `stepup demo`.
#[derive(Args)]
pub struct DemoArgs {
    /// Legitimate users to simulate.
    #[arg(long, default_value_t = 300)]
    users: usize,
    /// Days of simulated time; attacks start after the first four.
    #[arg(long, default_value_t = 14)]
    days: i64,
    /// Seed of the random generator; the same seed gives the same stream.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Partitions of the embedded events topic.
    #[arg(long, default_value_t = 6)]
    partitions: i32,
    /// Also write the summary as JSON to this file.
    #[arg(long, value_name = "PATH")]
    summary_json: Option<PathBuf>,
    /// gRPC listen address; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:0")]
    grpc_listen: String,
    /// Prometheus listen address; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:0")]
    metrics_listen: String,
    /// Keep serving gRPC and metrics after the stream until Ctrl-C, to explore with grpcurl.
    #[arg(long)]
    keep_running: bool,
}

/// Runs the demo and prints its summary.
pub async fn run(mut config: Config, args: DemoArgs) -> anyhow::Result<()> {
    if args.days < 5 {
        bail!(
            "`--days` is {}; use at least 5 so that users have history before attacks",
            args.days
        );
    }
    let registry = Registry::new();
    let geo = Arc::new(runtime::open_geo(&config)?);
    if !geo.has_city_db() {
        bail!("the demo needs a city database; set `geo.city_db` (STEPUP_GEO_CITY_DB)");
    }
    let engine = runtime::build_engine_with(&config, geo.clone(), &registry)?;

    let topics = [
        (config.kafka.events_topic.as_str(), args.partitions),
        (config.kafka.dead_letter_topic.as_str(), 1),
        (config.kafka.changelog_topic.as_str(), args.partitions),
        (config.kafka.instances_topic.as_str(), 1),
    ];
    let kafka = EmbeddedKafka::start(1, &topics).context("failed to start the embedded Kafka")?;
    config.kafka.brokers = kafka.bootstrap_servers();
    config.kafka.group_id = "stepup-demo".into();
    // The mock broker returns a fetch response only when `fetch.wait.max.ms` runs out, even when
    // messages arrive sooner, so a short wait keeps the demo's decision latency low.
    config.kafka.fetch_wait_max_ms = 5;
    config.api.listen = args.grpc_listen.clone();
    config.metrics.listen = args.metrics_listen.clone();

    let tally = Arc::new(Mutex::new(Tally::new()));
    let processed = Arc::new(AtomicU64::new(0));
    let handler = {
        let (tally, processed) = (tally.clone(), processed.clone());
        EngineHandler::new(engine.clone()).with_observer(move |elapsed| {
            processed.fetch_add(1, Ordering::Relaxed);
            tally.lock().record_processing(elapsed);
        })
    };
    let (stop, shutdown) = watch::channel(false);
    let running =
        runtime::start(&config, engine.clone(), handler, registry.clone(), shutdown).await?;
    eprintln!(
        "embedded Kafka at {}, gRPC at {}, metrics at http://{}/metrics",
        config.kafka.brokers, running.grpc, running.metrics
    );

    let mut rng = ChaCha8Rng::seed_from_u64(args.seed);
    let pools = world::Pools::probe(&geo, &mut rng);
    let users = world::make_users(&pools, args.users, &mut rng);
    let plan = plan::build(&users, &pools, args.days, &mut rng);
    eprintln!(
        "simulating {} users in {} cities ({} hosting addresses) over {} days: {} login attempts",
        users.len(),
        pools.cities.len(),
        pools.hosting.len(),
        args.days,
        plan.len()
    );

    let producer = Producer::new(&config.kafka, KafkaMetrics::register(&Registry::new())?)?;
    let client = StepUpClient::connect(format!("http://{}", running.grpc))
        .await
        .context("failed to connect to the demo's own gRPC server")?;
    let typing = load_typing()?;
    let mut driver = Driver::new(producer, client, tally.clone(), typing);
    let started = Instant::now();
    let mut last_print = Instant::now();
    driver
        .play(&plan, |at, published| {
            if last_print.elapsed() >= Duration::from_secs(1) {
                print_progress(at, published, args.days, &tally.lock());
                last_print = Instant::now();
            }
        })
        .await?;
    let published = driver.published();
    let counter = processed.clone();
    if !drive::wait_processed(
        published,
        move || counter.load(Ordering::Relaxed),
        Duration::from_secs(60),
    )
    .await
    {
        eprintln!("warning: not every published event was processed within 60 s");
    }
    let wall = started.elapsed().as_secs_f64();
    eprintln!();

    let summary = summarize(
        &args,
        &tally.lock(),
        &registry,
        published,
        processed.load(Ordering::Relaxed),
        wall,
        engine.policy().rule_set().version(),
    );
    print!("{}", summary.render());
    if let Some(path) = &args.summary_json {
        let json = serde_json::to_vec_pretty(&summary)?;
        std::fs::write(path, json)
            .with_context(|| format!("failed to write `{}`", path.display()))?;
        eprintln!("summary written to {}", path.display());
    }

    if args.keep_running {
        eprintln!("serving gRPC at {} until Ctrl-C", running.grpc);
        let _ = tokio::signal::ctrl_c().await;
    }
    drop(driver);
    let _ = stop.send(true);
    for task in running.tasks {
        let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
    }
    drop(kafka);
    Ok(())
}

/// Loads the shipped MEU-Mobile keystroke data set for the users' password timings.
fn load_typing() -> anyhow::Result<Option<typing::Typing>> {
    let Some(path) = runtime::resolve_data_path(KEYSTROKE_DATA) else {
        return Ok(None);
    };
    if !path.exists() {
        eprintln!(
            "note: {} not found; logins carry no keystroke timings",
            path.display()
        );
        return Ok(None);
    }
    let dataset = stepup_keystroke::read_dataset(&path)
        .with_context(|| format!("failed to read the keystroke data set `{}`", path.display()))?;
    Ok(Some(typing::Typing::new(dataset)))
}

fn print_progress(at: DateTime<Utc>, published: u64, days: i64, tally: &Tally) {
    let day = (at - plan::start_time()).num_days() + 1;
    let mut counts = [0u64; 3];
    for label in Label::ALL {
        let c = tally.counts(label);
        counts[0] += c.allow;
        counts[1] += c.mfa;
        counts[2] += c.deny;
    }
    eprint!(
        "\r  day {day:>3}/{days}  events published {published:>7}  allow {:>6}  mfa {:>5}  deny {:>4}",
        counts[0], counts[1], counts[2]
    );
}

fn summarize(
    args: &DemoArgs,
    tally: &Tally,
    registry: &Registry,
    published: u64,
    processed: u64,
    wall_seconds: f64,
    rule_set_version: &str,
) -> Summary {
    let mut decisions = BTreeMap::new();
    let mut by_label = BTreeMap::new();
    for label in Label::ALL {
        let counts = tally.counts(label);
        *decisions.entry(Requirement::Allow.as_str()).or_insert(0) += counts.allow;
        *decisions.entry(Requirement::Mfa.as_str()).or_insert(0) += counts.mfa;
        *decisions.entry(Requirement::Deny.as_str()).or_insert(0) += counts.deny;
        by_label.insert(label.as_str(), label_summary(counts));
    }
    let legitimate = label_summary(tally.counts(Label::Legitimate));
    Summary {
        users: args.users,
        days: args.days,
        seed: args.seed,
        events_published: published,
        events_processed: processed,
        dead_letters: counter_sum(registry, "stepup_dead_letters_total"),
        step_ups_by_rule: step_ups_by_rule(registry),
        wall_seconds,
        events_per_second: processed as f64 / wall_seconds.max(1e-9),
        decisions,
        by_label,
        legitimate_stepped_up_rate: legitimate.stepped_up_rate,
        decision_latency_ms: tally.decision_latency_ms(),
        processing_latency_us: tally.processing_latency_us(),
        risk_score_alone: tally.score_evaluation(),
        rule_set_version: rule_set_version.to_owned(),
    }
}

/// Counts MFA and deny decisions (login attempts and actions) by the rule that decided them.
fn step_ups_by_rule(registry: &Registry) -> BTreeMap<String, u64> {
    let mut by_rule = BTreeMap::new();
    let families = registry.gather();
    let decisions = families
        .iter()
        .filter(|family| family.name() == "stepup_decisions_total");
    for metric in decisions.flat_map(|family| family.get_metric()) {
        let label = |name: &str| {
            metric
                .get_label()
                .iter()
                .find(|pair| pair.name() == name)
                .map(|pair| pair.value())
        };
        if label("requirement") == Some("allow") {
            continue;
        }
        let rule = label("rule").unwrap_or("none").to_owned();
        *by_rule.entry(rule).or_insert(0) += metric.get_counter().get_value() as u64;
    }
    by_rule
}

/// Sums every series of a counter in `registry`.
fn counter_sum(registry: &Registry, name: &str) -> u64 {
    registry
        .gather()
        .iter()
        .filter(|family| family.name() == name)
        .flat_map(|family| family.get_metric())
        .map(|metric| metric.get_counter().get_value() as u64)
        .sum()
}
