//! `stepup serve` as a child process, with topics and a consumer group of its own.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use stepup_api::pb::step_up_client::StepUpClient;
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::health_check_response::ServingStatus;

use crate::api::check_health;
use crate::kafka::EventProducer;
use crate::process::{ChildProcess, ScratchDir};
use crate::{PARTITIONS, WAIT, free_local_addr, unique_name, workspace_file, workspace_root};

/// MaxMind's test City database: small, so `serve` starts in milliseconds even in a debug
/// build. It maps 81.2.69.142 to London and 216.160.83.56 to Milton, Washington.
pub const CITY_TEST_DB: &str = "data/geoip/maxmind-test/GeoIP2-City-Test.mmdb";

/// MaxMind's test ASN database.
pub const ASN_TEST_DB: &str = "data/geoip/maxmind-test/GeoLite2-ASN-Test.mmdb";

/// gRPC service name of the StepUp API.
pub const STEPUP_SERVICE: &str = "stepup.v1.StepUp";

/// Topic and consumer group names of one `stepup serve` process, or of several instances
/// in one group.
#[derive(Clone, Debug)]
pub struct Topics {
    /// Events topic (`kafka.events_topic`).
    pub events: String,
    /// Dead-letter topic (`kafka.dead_letter_topic`).
    pub dead_letter: String,
    /// Decisions topic (`kafka.decisions_topic`).
    pub decisions: String,
    /// Profile changelog topic (`kafka.changelog_topic`).
    pub changelog: String,
    /// Instances topic (`kafka.instances_topic`).
    pub instances: String,
    /// Consumer group (`kafka.group_id`).
    pub group: String,
    /// Partitions of the events, dead-letter, decisions and changelog topics.
    pub partitions: i32,
}

impl Topics {
    /// Returns names that no other test uses, with [`PARTITIONS`] partitions.
    pub fn unique() -> Self {
        Self::unique_with(PARTITIONS)
    }

    /// Returns names that no other test uses, with `partitions` partitions.
    pub fn unique_with(partitions: i32) -> Self {
        let base = unique_name("stepup-test");
        Self {
            events: format!("{base}.events"),
            dead_letter: format!("{base}.events.dlq"),
            decisions: format!("{base}.decisions"),
            changelog: format!("{base}.profiles"),
            instances: format!("{base}.instances"),
            group: format!("{base}.group"),
            partitions,
        }
    }
}

/// A running `stepup serve`. Dropping it kills the process.
pub struct Serve {
    process: ChildProcess,
    brokers: String,
    topics: Topics,
    grpc: SocketAddr,
    metrics: SocketAddr,
    _logs: ScratchDir,
}

// === impl Serve ===

impl Serve {
    /// Starts `stepup serve` from the `stepup` binary at `binary` against `brokers`, with new
    /// topics, and waits until its gRPC health check reports SERVING.
    ///
    /// Tests in the `stepup` package pass `env!("CARGO_BIN_EXE_stepup")`, so cargo builds the
    /// binary with the tests.
    pub async fn start(binary: &str, brokers: &str) -> Self {
        Self::start_with_env(binary, brokers, &[]).await
    }

    /// Starts `stepup serve` like [`Serve::start`], with extra `STEPUP_*` variables.
    pub async fn start_with_env(binary: &str, brokers: &str, env: &[(&str, &str)]) -> Self {
        Self::start_on(binary, brokers, &Topics::unique(), env).await
    }

    /// Starts `stepup serve` on the given topics and group, so that several instances (or a
    /// restarted one) share them, and waits until its gRPC health check reports SERVING.
    pub async fn start_on(
        binary: &str,
        brokers: &str,
        topics: &Topics,
        env: &[(&str, &str)],
    ) -> Self {
        let topics = topics.clone();
        let logs = ScratchDir::new("stepup-tests-serve-");
        let mut last_error = String::new();
        for attempt in 1..=3 {
            let (grpc, metrics) = (free_local_addr(), free_local_addr());
            let command = serve_command(Path::new(binary), brokers, &topics, grpc, metrics, env);
            let log = logs.file(&format!("serve-{attempt}.log"));
            let mut process = ChildProcess::spawn("stepup serve", command, &log);
            match wait_until_serving(&mut process, grpc).await {
                Ok(()) => {
                    return Self {
                        process,
                        brokers: brokers.to_owned(),
                        topics,
                        grpc,
                        metrics,
                        _logs: logs,
                    };
                }
                // Another process took one of the ports in between; try new ones.
                Err(err) if err.contains("failed to listen") => last_error = err,
                Err(err) => panic!("stepup serve did not start: {err}"),
            }
        }
        panic!("stepup serve did not start in three attempts; last error: {last_error}");
    }

    /// Returns the bootstrap brokers the process uses.
    pub fn brokers(&self) -> &str {
        &self.brokers
    }

    /// Returns the topic and group names of the process.
    pub fn topics(&self) -> &Topics {
        &self.topics
    }

    /// Returns the gRPC URL, `http://127.0.0.1:PORT`.
    pub fn grpc_url(&self) -> String {
        format!("http://{}", self.grpc)
    }

    /// Returns the address of the metrics HTTP server.
    pub fn metrics_addr(&self) -> SocketAddr {
        self.metrics
    }

    /// Returns the log written so far.
    pub fn log(&self) -> String {
        self.process.log()
    }

    /// Kills the process with SIGKILL, like a crash, and waits until it has ended.
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// Sends SIGTERM and waits up to `timeout` for the process to end; returns its exit
    /// status, or `None` if it still runs.
    pub async fn terminate(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        self.process.signal("TERM");
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.process.try_exit_status() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Returns whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.process.try_exit_status().is_none()
    }

    /// Opens a gRPC channel to the process.
    pub async fn channel(&self) -> Channel {
        connect(&self.grpc_url())
            .await
            .unwrap_or_else(|err| panic!("failed to connect to stepup serve: {err}"))
    }

    /// Opens a StepUp API client.
    pub async fn client(&self) -> StepUpClient<Channel> {
        StepUpClient::new(self.channel().await)
    }

    /// Creates a producer for the events topic of the process.
    pub fn events_producer(&self) -> EventProducer {
        EventProducer::new(&self.brokers, &self.topics.events)
    }
}

/// Builds the `stepup serve` command: the shipped rules, the small MaxMind test databases,
/// and no `STEPUP_*` variable from the caller's environment except those in `env`.
fn serve_command(
    binary: &Path,
    brokers: &str,
    topics: &Topics,
    grpc: SocketAddr,
    metrics: SocketAddr,
    env: &[(&str, &str)],
) -> Command {
    let mut command = Command::new(binary);
    command.current_dir(workspace_root()).args([
        "serve",
        "--brokers",
        brokers,
        "--grpc-listen",
        &grpc.to_string(),
        "--metrics-listen",
        &metrics.to_string(),
        "--create-topics",
        &topics.partitions.to_string(),
    ]);
    // `stepup` rejects unknown `STEPUP_*` variables, and the caller's own settings would make
    // the test depend on the shell it runs in.
    let inherited: Vec<OsString> = std::env::vars_os()
        .map(|(name, _)| name)
        .filter(|name| name.to_string_lossy().starts_with("STEPUP_"))
        .collect();
    for name in inherited {
        command.env_remove(name);
    }
    command
        .env("NO_COLOR", "1")
        .env("STEPUP_LOG", "info")
        .env("STEPUP_KAFKA_EVENTS_TOPIC", &topics.events)
        .env("STEPUP_KAFKA_DEAD_LETTER_TOPIC", &topics.dead_letter)
        .env("STEPUP_KAFKA_GROUP_ID", &topics.group)
        .env("STEPUP_KAFKA_DECISIONS_TOPIC", &topics.decisions)
        .env("STEPUP_KAFKA_CHANGELOG_TOPIC", &topics.changelog)
        .env("STEPUP_KAFKA_INSTANCES_TOPIC", &topics.instances)
        .env("STEPUP_GEO_CITY_DB", workspace_file(CITY_TEST_DB))
        .env("STEPUP_GEO_ASN_DB", workspace_file(ASN_TEST_DB));
    for (name, value) in env {
        command.env(name, value);
    }
    command
}

/// Waits until the health check of the StepUp service reports SERVING, or returns the log
/// tail when the process ends or [`WAIT`] passes.
async fn wait_until_serving(process: &mut ChildProcess, grpc: SocketAddr) -> Result<(), String> {
    let url = format!("http://{grpc}");
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(status) = process.try_exit_status() {
            return Err(format!("it ended with {status}:\n{}", process.log_tail(30)));
        }
        if health_status(&url, STEPUP_SERVICE).await == Ok(ServingStatus::Serving) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "its health check did not report SERVING within {WAIT:?}:\n{}",
                process.log_tail(30)
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Opens a gRPC channel to `url`, giving up after one second.
pub async fn connect(url: &str) -> Result<Channel, String> {
    let endpoint = Endpoint::from_shared(url.to_owned())
        .map_err(|err| format!("invalid gRPC URL `{url}`: {err}"))?
        .connect_timeout(Duration::from_secs(1))
        .timeout(WAIT);
    endpoint
        .connect()
        .await
        .map_err(|err| format!("failed to connect to `{url}`: {err}"))
}

/// Calls `grpc.health.v1.Health/Check` for `service` at `url` and returns the status.
pub async fn health_status(url: &str, service: &str) -> Result<ServingStatus, String> {
    let channel = connect(url).await?;
    check_health(channel, service)
        .await
        .map_err(|status| format!("health check of `{service}` failed: {status}"))
}
