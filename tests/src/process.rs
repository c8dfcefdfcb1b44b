//! Child processes that are killed when their guard drops.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};

use tempfile::TempDir;

/// Lines of a child's log printed when a test panics.
const LOG_TAIL_LINES: usize = 60;

/// A temporary directory for the logs and data of child processes, kept after a panic so that
/// the whole logs can be read.
pub struct ScratchDir {
    dir: TempDir,
}

// === impl ScratchDir ===

impl ScratchDir {
    /// Creates an empty directory in the system's temporary directory.
    pub fn new(prefix: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix(prefix)
            .tempdir()
            .unwrap_or_else(|err| panic!("failed to create a log directory: {err}"));
        Self { dir }
    }

    /// Returns the path of the directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Returns the path of `file` inside the directory.
    pub fn file(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.dir.disable_cleanup(true);
            eprintln!("logs and data kept in {}", self.dir.path().display());
        }
    }
}

/// A running child process with its standard output and error in one log file.
///
/// Dropping the guard kills the process and waits for it. When the current thread is
/// panicking, the guard also prints the last lines of the log to standard error, where the
/// test runner shows them next to the failure.
pub struct ChildProcess {
    name: String,
    child: Child,
    log: PathBuf,
}

// === impl ChildProcess ===

impl ChildProcess {
    /// Starts `command` with its output appended to `log`; `name` labels messages about it.
    pub fn spawn(name: &str, mut command: Command, log: &Path) -> Self {
        let stdout = File::options()
            .create(true)
            .append(true)
            .open(log)
            .unwrap_or_else(|err| panic!("failed to open log file `{}`: {err}", log.display()));
        let stderr = stdout
            .try_clone()
            .unwrap_or_else(|err| panic!("failed to share log file `{}`: {err}", log.display()));
        let child = command
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|err| panic!("failed to start {name} ({command:?}): {err}"));
        Self {
            name: name.to_owned(),
            child,
            log: log.to_owned(),
        }
    }

    /// Returns the operating system's id of the process.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Returns the exit status if the process has ended, without waiting.
    pub fn try_exit_status(&mut self) -> Option<ExitStatus> {
        self.child
            .try_wait()
            .unwrap_or_else(|err| panic!("failed to check whether {} runs: {err}", self.name))
    }

    /// Returns the whole log written so far; empty if it cannot be read.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Returns the last `lines` lines of the log.
    pub fn log_tail(&self, lines: usize) -> String {
        let log = self.log();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Sends the signal `name` (for example `TERM`) with the system's `kill` command, without
    /// waiting for the process to end.
    pub fn signal(&mut self, name: &str) {
        if self.try_exit_status().is_some() {
            return;
        }
        let status = Command::new("kill")
            .args([format!("-{name}"), self.child.id().to_string()])
            .status();
        if let Err(err) = status {
            panic!("failed to send SIG{name} to {}: {err}", self.name);
        }
    }

    /// Kills the process (SIGKILL) and waits until it has ended.
    pub fn kill(&mut self) {
        if self.try_exit_status().is_some() {
            return;
        }
        // The process may end between the check and the kill; wait() then reaps it.
        let _ = self.child.kill();
        if let Err(err) = self.child.wait() {
            eprintln!("failed to wait for {} to end: {err}", self.name);
        }
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        let ended = self.try_exit_status();
        self.kill();
        if std::thread::panicking() {
            let state = match ended {
                Some(status) => format!("it had ended with {status}"),
                None => "it was still running".to_owned(),
            };
            eprintln!(
                "--- last {LOG_TAIL_LINES} lines of the {} log ({}; {state}) ---\n{}\n\
                 --- end of log ---",
                self.name,
                self.log.display(),
                self.log_tail(LOG_TAIL_LINES)
            );
        }
    }
}
