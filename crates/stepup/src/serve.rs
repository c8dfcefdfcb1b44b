//! `stepup serve`: consume the events topic of an external Kafka and serve decisions.

use std::time::Duration;

use anyhow::Context;
use clap::Args;
use prometheus::Registry;
use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::config::Config;
use crate::runtime::{self, EngineHandler};

/// Options of `stepup serve`; each overrides the configuration key it names.
#[derive(Args)]
pub struct ServeArgs {
    /// Kafka bootstrap servers (`kafka.brokers`), for example `127.0.0.1:9092`.
    #[arg(long)]
    brokers: Option<String>,
    /// gRPC listen address (`api.listen`).
    #[arg(long)]
    grpc_listen: Option<String>,
    /// Prometheus listen address (`metrics.listen`).
    #[arg(long)]
    metrics_listen: Option<String>,
    /// Create the events and dead-letter topics with this many partitions if they are missing.
    #[arg(long, value_name = "PARTITIONS")]
    create_topics: Option<i32>,
}

/// Runs until SIGINT or SIGTERM.
pub async fn run(mut config: Config, args: ServeArgs) -> anyhow::Result<()> {
    if let Some(brokers) = args.brokers {
        config.kafka.brokers = brokers;
    }
    if let Some(listen) = args.grpc_listen {
        config.api.listen = listen;
    }
    if let Some(listen) = args.metrics_listen {
        config.metrics.listen = listen;
    }
    // A server follows rule edits unless `policy.watch = false`; the demo leaves it off.
    config.policy.watch.get_or_insert(true);
    if let Some(partitions) = args.create_topics {
        stepup_kafka::ensure_topics(&config.kafka, partitions, Duration::from_secs(30))
            .await
            .with_context(|| format!("failed to create topics on `{}`", config.kafka.brokers))?;
    }

    let registry = Registry::new();
    let engine = runtime::build_engine(&config, &registry)?;
    let (stop, shutdown) = watch::channel(false);
    let handler = EngineHandler::new(engine.clone());
    let running = runtime::start(&config, engine, handler, registry, shutdown).await?;
    info!(
        grpc = %running.grpc,
        metrics = %running.metrics,
        brokers = %config.kafka.brokers,
        topic = %config.kafka.events_topic,
        "stepup serving"
    );

    // Runs until a signal, or until a task ends on its own: a server whose consumer or gRPC
    // server has stopped must not keep running half-alive.
    let mut tasks = tokio::task::JoinSet::new();
    for task in running.tasks {
        tasks.spawn(task);
    }
    let failure = tokio::select! {
        () = wait_for_signal() => {
            info!("shutting down");
            None
        }
        Some(ended) = tasks.join_next() => {
            let failure = describe_end(ended);
            error!(error = %failure, "a server task ended; shutting down");
            Some(failure)
        }
    };
    let _ = stop.send(true);
    while let Some(ended) = tasks.join_next().await {
        if let Ok(Ok(Ok(()))) = ended {
            continue;
        }
        warn!(error = %describe_end(ended), "task ended with an error");
    }
    match failure {
        Some(failure) => anyhow::bail!("stepup serve stopped: {failure}"),
        None => Ok(()),
    }
}

type TaskEnd = Result<Result<anyhow::Result<()>, tokio::task::JoinError>, tokio::task::JoinError>;

/// Describes how a server task ended, for the log and the exit error.
fn describe_end(ended: TaskEnd) -> String {
    match ended {
        Ok(Ok(Ok(()))) => "a task stopped without a shutdown request".to_owned(),
        Ok(Ok(Err(err))) => format!("{err:#}"),
        Ok(Err(err)) | Err(err) => format!("a task panicked: {err}"),
    }
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(
            tokio::signal::unix::SignalKind::terminate(),
        ) {
            Ok(term) => term,
            Err(err) => {
                warn!(error = %err, "failed to listen for SIGTERM; only Ctrl-C stops the server");
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
