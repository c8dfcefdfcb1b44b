//! Wiring shared by `serve` and `demo`: engine, Kafka consumer, gRPC and metrics servers.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use prometheus::{Encoder, Registry, TextEncoder};
use stepup_api::{StepUpService, serve as serve_grpc};
use stepup_engine::{Engine, Outcome, PartitionRestore, Position};
use stepup_geo::{Geo, GeoPaths};
use stepup_kafka::{
    EventHandler, HandleOutcome, InboundMessage, KafkaMetrics, Producer, RestoreSink, RestoreTotals,
};
use stepup_policy::{Policy, PolicyConfig, RuleSet};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::info;

use crate::config::Config;

/// Returns `path` if it exists, else the same relative path under the source checkout this
/// binary was built from, so `cargo run` works from any directory of a clone. An empty string
/// means "off" and gives `None`.
pub fn resolve_data_path(path: &str) -> Option<PathBuf> {
    if path.is_empty() {
        return None;
    }
    let direct = PathBuf::from(path);
    if direct.exists() || direct.is_absolute() {
        return Some(direct);
    }
    let in_checkout = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path);
    Some(if in_checkout.exists() {
        in_checkout
    } else {
        direct
    })
}

/// Opens the GeoIP databases named in the configuration.
pub fn open_geo(config: &Config) -> anyhow::Result<Geo> {
    let paths = GeoPaths {
        city: resolve_data_path(&config.geo.city_db),
        asn: resolve_data_path(&config.geo.asn_db),
        anonymous_ip: resolve_data_path(&config.geo.anonymous_ip_db),
        hosting_asns: config.geo.hosting_asns.clone(),
    };
    let started = Instant::now();
    let geo = Geo::open(&paths).context("failed to open the GeoIP databases (see `[geo]`)")?;
    info!(
        elapsed_ms = started.elapsed().as_millis() as u64,
        "geoip databases loaded"
    );
    Ok(geo)
}

/// Returns the policy settings with the rules directory resolved like the data files.
pub fn policy_config(config: &Config) -> PolicyConfig {
    let mut policy_config = config.policy.clone();
    if let Some(dir) = resolve_data_path(&policy_config.dir.to_string_lossy()) {
        policy_config.dir = dir;
    }
    policy_config
}

/// Compiles the rule files named in the configuration.
pub fn load_policy(config: &Config) -> anyhow::Result<Policy> {
    let policy_config = policy_config(config);
    let rules =
        RuleSet::load_dir(&policy_config).context("failed to load the rules (see `[policy]`)")?;
    info!(
        version = rules.version(),
        rules = rules.rules().len(),
        "rule set loaded"
    );
    Ok(Policy::new(policy_config, rules))
}

/// Builds the engine with its GeoIP databases and policy.
pub fn build_engine(config: &Config, registry: &Registry) -> anyhow::Result<Arc<Engine>> {
    build_engine_with(config, Arc::new(open_geo(config)?), registry)
}

/// Builds the engine around databases that are already open.
pub fn build_engine_with(
    config: &Config,
    geo: Arc<Geo>,
    registry: &Registry,
) -> anyhow::Result<Arc<Engine>> {
    let policy = Arc::new(load_policy(config)?);
    let engine = Engine::new(config.engine.clone(), geo, policy, registry)
        .context("failed to register the engine metrics")?
        .with_max_event_bytes(config.kafka.max_event_bytes);
    Ok(Arc::new(engine))
}

/// Feeds messages from the events topic into the engine.
pub struct EngineHandler {
    engine: Arc<Engine>,
    /// Called with each message's processing time, for the demo's latency summary.
    observer: Option<Box<dyn Fn(std::time::Duration) + Send + Sync>>,
}

impl EngineHandler {
    /// Creates a handler for `engine`.
    pub fn new(engine: Arc<Engine>) -> Self {
        Self {
            engine,
            observer: None,
        }
    }

    /// Adds a callback that receives each message's processing time.
    pub fn with_observer(
        mut self,
        observer: impl Fn(std::time::Duration) + Send + Sync + 'static,
    ) -> Self {
        self.observer = Some(Box::new(observer));
        self
    }
}

impl EventHandler for EngineHandler {
    fn handle(&self, message: &InboundMessage<'_>) -> HandleOutcome {
        let Some(payload) = message.payload else {
            return HandleOutcome::DeadLetter {
                reason_code: "empty",
                reason: "message has no payload; send one JSON event per message".into(),
            };
        };
        let started = Instant::now();
        let position = Position {
            partition: message.partition,
            offset: Some(message.offset),
        };
        let result = self.engine.process_bytes_at(payload, position);
        if let Some(observer) = &self.observer {
            observer(started.elapsed());
        }
        let processed = match result {
            Ok(processed) => processed,
            Err(err) => {
                return HandleOutcome::DeadLetter {
                    reason_code: err.code(),
                    reason: err.to_string(),
                };
            }
        };
        let (decision, state) = match &processed.outcome {
            Outcome::Decided(decision) => (
                Some(serde_json::to_vec(&**decision).unwrap_or_default()),
                self.engine.state_record(&processed.user_id),
            ),
            Outcome::Applied => (None, self.engine.state_record(&processed.user_id)),
            Outcome::Duplicate => (None, None),
        };
        HandleOutcome::Processed {
            decision,
            user_id: processed.user_id,
            state,
        }
    }

    fn begin_restore(&self, partition: i32) -> Option<Box<dyn RestoreSink + '_>> {
        Some(Box::new(EngineRestore {
            restore: self.engine.restore(partition),
        }))
    }

    fn release_partition(&self, partition: i32) {
        let dropped = self.engine.drop_partition(partition);
        info!(partition, dropped, "released the users of a partition");
    }
}

/// Feeds changelog records into an engine partition restore.
struct EngineRestore<'a> {
    restore: PartitionRestore<'a>,
}

impl RestoreSink for EngineRestore<'_> {
    fn apply(&mut self, key: &str, value: Option<&[u8]>) {
        // The error is counted in the totals; it names no user and no state content.
        if let Err(error) = self.restore.apply(key, value) {
            tracing::debug!(%error, "skipped a changelog record");
        }
    }

    fn finish(self: Box<Self>) -> RestoreTotals {
        let stats = self.restore.finish();
        RestoreTotals {
            records: stats.records,
            restored: stats.users,
            invalid: stats.invalid,
        }
    }
}

/// Addresses the servers listen on and the tasks that run them.
pub struct Running {
    /// gRPC address.
    pub grpc: SocketAddr,
    /// Metrics address.
    pub metrics: SocketAddr,
    /// Server and consumer tasks; each ends after shutdown.
    pub tasks: Vec<JoinHandle<anyhow::Result<()>>>,
}

/// Starts the consumer, gRPC and metrics servers; all stop when `shutdown` turns true.
pub async fn start(
    config: &Config,
    engine: Arc<Engine>,
    handler: EngineHandler,
    registry: Registry,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<Running> {
    let kafka_metrics =
        KafkaMetrics::register(&registry).context("failed to register Kafka metrics")?;
    let producer = Producer::new(&config.kafka, kafka_metrics.clone())
        .with_context(|| format!("failed to create a producer for `{}`", config.kafka.brokers))?;

    let grpc_listener = bind(&config.api.listen, "api.listen").await?;
    let metrics_listener = bind(&config.metrics.listen, "metrics.listen").await?;
    let grpc = grpc_listener.local_addr()?;
    let metrics = metrics_listener.local_addr()?;
    let membership = config.cluster.membership(grpc);
    // Routing must map users to partitions as the producers do; stepup's own producer uses
    // `kafka.client.partitioner` when set, else `murmur2_random`.
    if let Some(name) = config.kafka.client.get("partitioner") {
        let partitioner = stepup_kafka::KeyPartitioner::from_librdkafka(name);
        if partitioner.is_none() {
            tracing::warn!(
                partitioner = %name,
                "producers pick partitions without the key, so gRPC calls are not forwarded \
                 to the owner of the user; use a key-based partitioner with several instances"
            );
        }
        membership.set_partitioner(partitioner);
    }
    info!(
        instance = membership.instance_id(),
        advertised = %membership.claim().grpc_address,
        "cluster membership"
    );

    let mut tasks = Vec::new();
    let kafka_config = config.kafka.clone();
    let consumer_shutdown = shutdown.clone();
    let consumer_producer = producer.clone();
    let consumer_membership = membership.clone();
    tasks.push(tokio::spawn(async move {
        stepup_kafka::run_consumer(
            &kafka_config,
            Arc::new(handler),
            consumer_producer,
            kafka_metrics,
            consumer_membership,
            consumer_shutdown,
        )
        .await
        .context("events consumer failed")
    }));
    let announcer_config = config.kafka.clone();
    let announcer_membership = membership.clone();
    let announcer_producer = producer.clone();
    let announcer_shutdown = shutdown.clone();
    tasks.push(tokio::spawn(async move {
        stepup_kafka::run_announcer(
            &announcer_config,
            announcer_membership,
            announcer_producer,
            announcer_shutdown,
        )
        .await
        .context("instances announcer failed")
    }));

    let reloads = crate::rules_reload::start(config, &engine, &registry)?;
    if let Some(watcher) = reloads.watcher {
        let watch_shutdown = wait_for(shutdown.clone());
        tasks.push(tokio::spawn(async move {
            watch_shutdown.await;
            // Dropping the watcher joins its thread, which may be in the middle of a reload.
            tokio::task::spawn_blocking(move || drop(watcher))
                .await
                .context("rule watcher failed to stop")
        }));
    }

    let api_metrics =
        stepup_api::ApiMetrics::register(&registry).context("failed to register gRPC metrics")?;
    let service = StepUpService::new(engine, Some(producer), config.api.clone())
        .with_metrics(api_metrics)
        .with_membership(membership);
    let admin = reloads.admin;
    let grpc_shutdown = wait_for(shutdown.clone());
    tasks.push(tokio::spawn(async move {
        serve_grpc(grpc_listener, service, admin, grpc_shutdown)
            .await
            .context("grpc server failed")
    }));
    tasks.push(tokio::spawn(serve_metrics(
        metrics_listener,
        registry,
        wait_for(shutdown),
    )));
    Ok(Running {
        grpc,
        metrics,
        tasks,
    })
}

async fn bind(address: &str, key: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(address)
        .await
        .with_context(|| format!("failed to listen on `{address}` (`{key}`); pick a free port"))
}

/// Resolves when the shutdown flag turns true or its sender is dropped.
pub async fn wait_for(mut shutdown: watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// Serves `/metrics` in the Prometheus text format until `shutdown` resolves.
pub async fn serve_metrics(
    listener: TcpListener,
    registry: Registry,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let address = listener.local_addr()?;
    let render = move || {
        let families = registry.gather();
        async move { encode_metrics(&families) }
    };
    let app = axum::Router::new()
        .route("/metrics", axum::routing::get(render))
        .route("/healthz", axum::routing::get(|| async { "ok" }));
    info!(%address, "metrics server listening");
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .context("metrics server failed")
}

fn encode_metrics(
    families: &[prometheus::proto::MetricFamily],
) -> (
    axum::http::StatusCode,
    [(axum::http::header::HeaderName, &'static str); 1],
    Vec<u8>,
) {
    let mut body = Vec::new();
    match TextEncoder::new().encode(families, &mut body) {
        Ok(()) => (
            axum::http::StatusCode::OK,
            [(axum::http::header::CONTENT_TYPE, prometheus::TEXT_FORMAT)],
            body,
        ),
        Err(err) => (
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            [(axum::http::header::CONTENT_TYPE, "text/plain")],
            format!("failed to encode metrics: {err}").into_bytes(),
        ),
    }
}
