//! The Kafka broker the tests talk to: the shared one named by `STEPUP_TEST_KAFKA`, or a
//! private tansu process that a test can kill and restart.

use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};

use crate::free_local_addr;
use crate::process::{ChildProcess, ScratchDir};

/// Environment variable with the shared broker's `host:port`.
pub const KAFKA_ENV: &str = "STEPUP_TEST_KAFKA";

/// Broker address used when `STEPUP_TEST_KAFKA` is not set.
pub const DEFAULT_KAFKA: &str = "127.0.0.1:9092";

/// tansu release that `scripts/test.sh` installs and the tests were run against.
pub const TANSU_VERSION: &str = "0.6.0";

/// Cargo features of the tansu install: in-memory storage (`dynostore`) for the shared broker
/// and SQLite storage (`libsql`) for [`Tansu`].
pub const TANSU_FEATURES: &str = "dynostore,libsql";

/// Maximum wait for a tansu process to accept Kafka requests after it starts.
const TANSU_START_WAIT: Duration = Duration::from_secs(20);

/// Returns the shared broker's address after checking that it returns cluster metadata.
///
/// Panics with instructions to start one when no broker responds, so that a test never passes
/// without a broker.
pub fn shared_broker() -> String {
    let address = std::env::var(KAFKA_ENV).unwrap_or_else(|_| DEFAULT_KAFKA.to_owned());
    if let Err(err) = check_broker(&address, Duration::from_secs(10)) {
        panic!(
            "no Kafka broker responds at `{address}` (from {KAFKA_ENV}, default {DEFAULT_KAFKA}): \
             {err}. Run the tests with `scripts/test.sh`, which starts one, or start tansu with \
             `tansu broker --listener-url tcp://{address} --advertised-listener-url \
             tcp://{address} --storage-engine memory://tansu/` and set {KAFKA_ENV}={address}"
        );
    }
    address
}

/// Checks that a Kafka broker at `address` accepts a TCP connection and returns cluster
/// metadata within `timeout`. Blocks the calling thread.
pub fn check_broker(address: &str, timeout: Duration) -> Result<(), String> {
    let socket = address
        .to_socket_addrs()
        .map_err(|err| format!("failed to resolve `{address}`: {err}"))?
        .next()
        .ok_or_else(|| format!("`{address}` resolves to no address"))?;
    TcpStream::connect_timeout(&socket, timeout)
        .map_err(|err| format!("failed to connect to `{socket}`: {err}"))?;

    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", address)
        .set("client.id", "stepup-tests-probe")
        .set("log_level", "3")
        .create()
        .map_err(|err| format!("failed to create a Kafka client: {err}"))?;
    let metadata = consumer
        .fetch_metadata(None, timeout)
        .map_err(|err| format!("failed to fetch cluster metadata from `{address}`: {err}"))?;
    if metadata.brokers().is_empty() {
        return Err(format!("`{address}` returned metadata without brokers"));
    }
    Ok(())
}

/// A private tansu broker on its own loopback port, storing its topics, messages, groups and
/// offsets in SQLite so that they survive a restart.
///
/// Dropping the guard kills the process and removes the database, unless the thread panics.
pub struct Tansu {
    binary: PathBuf,
    address: SocketAddr,
    process: Option<ChildProcess>,
    starts: u32,
    dir: ScratchDir,
}

// === impl Tansu ===

impl Tansu {
    /// Starts tansu on a free loopback port and waits until it returns cluster metadata.
    pub fn start() -> Self {
        let binary = find_tansu();
        let mut last_error = String::new();
        for _ in 0..3 {
            let mut tansu = Self {
                binary: binary.clone(),
                address: free_local_addr(),
                process: None,
                starts: 0,
                dir: ScratchDir::new("stepup-tests-tansu-"),
            };
            match tansu.spawn_and_wait() {
                Ok(()) => return tansu,
                // Most likely another process took the port in between; try a new one.
                Err(err) => last_error = err,
            }
        }
        panic!("failed to start tansu three times; last error: {last_error}");
    }

    /// Returns the bootstrap address, `127.0.0.1:PORT`.
    pub fn bootstrap(&self) -> String {
        self.address.to_string()
    }

    /// Kills the broker process (SIGKILL, like a crash) and waits until it has ended.
    pub fn kill(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.kill();
        }
    }

    /// Kills the broker and starts it again on the same port with the same storage, then waits
    /// until it returns cluster metadata.
    pub fn restart(&mut self) {
        self.kill();
        if let Err(err) = self.spawn_and_wait() {
            panic!("failed to restart tansu on `{}`: {err}", self.address);
        }
    }

    /// Starts the process and waits until it returns metadata, ends, or [`TANSU_START_WAIT`]
    /// passes.
    fn spawn_and_wait(&mut self) -> Result<(), String> {
        self.starts += 1;
        let log = self.dir.file(&format!("tansu-{}.log", self.starts));
        let url = format!("tcp://{}", self.address);
        let mut command = Command::new(&self.binary);
        // tansu opens `sqlite://NAME` relative to its working directory.
        command
            .current_dir(self.dir.path())
            .arg("broker")
            .args(["--listener-url", &url])
            .args(["--advertised-listener-url", &url])
            .args(["--storage-engine", "sqlite://tansu.db"]);
        let mut process = ChildProcess::spawn("tansu", command, &log);

        let deadline = Instant::now() + TANSU_START_WAIT;
        loop {
            if let Some(status) = process.try_exit_status() {
                return Err(format!(
                    "tansu ended with {status}: {}",
                    process.log_tail(20)
                ));
            }
            if check_broker(&self.bootstrap(), Duration::from_secs(1)).is_ok() {
                self.process = Some(process);
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "tansu did not answer within {TANSU_START_WAIT:?}: {}",
                    process.log_tail(20)
                ));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// Returns the path of the tansu binary: under `$STEPUP_CI_CACHE/tansu/bin`, under
/// `~/.cache/stepup-ci/tansu/bin` (where `scripts/test.sh` installs it), or on `PATH`.
pub fn find_tansu() -> PathBuf {
    let mut candidates = Vec::new();
    if let Some(cache) = std::env::var_os("STEPUP_CI_CACHE") {
        candidates.push(PathBuf::from(cache).join("tansu/bin/tansu"));
    }
    if let Some(home) = std::env::var_os("HOME") {
        candidates.push(PathBuf::from(home).join(".cache/stepup-ci/tansu/bin/tansu"));
    }
    if let Some(path) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&path).map(|dir| dir.join("tansu")));
    }
    let install = format!(
        "run `scripts/test.sh`, which installs it, or `cargo install tansu --version \
         {TANSU_VERSION} --locked --features {TANSU_FEATURES}`"
    );
    let binary = candidates
        .into_iter()
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!(
                "tansu was not found under $STEPUP_CI_CACHE/tansu/bin, \
                 ~/.cache/stepup-ci/tansu/bin or on PATH; {install}"
            )
        });
    let help = Command::new(&binary)
        .arg("--help")
        .output()
        .unwrap_or_else(|err| panic!("failed to run `{} --help`: {err}", binary.display()));
    // The help text ends with a line such as `Storage engines: dynostore, libsql`.
    let engines = String::from_utf8_lossy(&help.stdout);
    assert!(
        engines.contains("libsql"),
        "`{}` was built without the `libsql` feature, so it cannot store data across a \
         restart; {install}",
        binary.display()
    );
    binary
}
