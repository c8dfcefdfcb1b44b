//! Harness for the end-to-end tests of `stepup serve`.
//!
//! The tests in `crates/stepup/tests/serve/` run the real `stepup` binary as a child process
//! against a real Kafka-protocol broker, call it over gRPC and scrape its metrics over HTTP.
//! They live in the `stepup` package so that cargo builds the binary with them and passes its
//! path in `CARGO_BIN_EXE_stepup`. This library owns what they share: finding the broker named
//! by `STEPUP_TEST_KAFKA`, starting `stepup serve` with topics of its own, starting a private
//! tansu broker, publishing and reading Kafka messages, building event JSON and parsing the
//! Prometheus text format. It contains no product logic.
//!
//! Every helper panics with a message that names the fix when a step fails, because it runs
//! only inside tests. Child processes are killed when their guard drops, and their log tail is
//! printed when the test panicked.

#![forbid(unsafe_code)]

pub mod api;
pub mod broker;
pub mod events;
pub mod kafka;
pub mod metrics;
pub mod process;
pub mod serve;

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use broker::{Tansu, shared_broker};
pub use serve::Serve;

/// Maximum wait for one step of a test: a decision, a message, a restart.
pub const WAIT: Duration = Duration::from_secs(30);

/// Partitions of the topics each test creates.
pub const PARTITIONS: i32 = 2;

/// Returns a name unique to this test process and call, for topics, groups, users and ids.
///
/// The name is `prefix` followed by the process id, the clock's nanoseconds and a counter, so
/// tests sharing one broker never read each other's messages.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.subsec_nanos());
    format!("{prefix}-{}-{nanos}-{count}", std::process::id())
}

/// Returns a loopback address whose port was free when this function returned.
///
/// Another process may take the port before the caller binds it. Callers that start a server on
/// it therefore retry with a new address when the bind fails.
pub fn free_local_addr() -> SocketAddr {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap_or_else(|err| panic!("failed to bind a loopback port: {err}"));
    listener
        .local_addr()
        .unwrap_or_else(|err| panic!("failed to read the bound loopback address: {err}"))
}

/// Returns the workspace root, the directory with the root `Cargo.toml`, `rules/` and `data/`.
pub fn workspace_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests package lives one level below the workspace root")
}

/// Returns the path of a file shipped in the workspace, for example `data/geoip/...`.
pub fn workspace_file(relative: &str) -> PathBuf {
    workspace_root().join(relative)
}
