//! Errors raised while loading and compiling a rule set, reading case files and watching the
//! rules directory.

use std::path::PathBuf;

/// Failure to load, parse or compile the policy; every variant names the file or key and the fix.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// A setting of [`PolicyConfig`](crate::PolicyConfig) is out of range.
    #[error("invalid policy setting `{key}`: {problem}")]
    Config {
        /// Name of the setting, for example `max_operations`.
        key: &'static str,
        /// Problem and fix, for example "must be at least 1".
        problem: String,
    },

    /// The rules directory could not be listed.
    #[error("failed to read rules directory `{}`: {source}; check that `dir` names an existing, \
             readable directory", dir.display())]
    ReadDir {
        /// Directory that was listed.
        dir: PathBuf,
        /// Underlying I/O error.
        #[source]
        source: std::io::Error,
    },

    /// A rule file could not be read as UTF-8 text.
    #[error("failed to read rule file `{}`: {source}", path.display())]
    ReadFile {
        /// File that was read.
        path: PathBuf,
        /// Underlying I/O error.
        #[source]
        source: std::io::Error,
    },

    /// The rules directory contains no `*.rhai` file.
    #[error("no rule files (`*.rhai`) found in `{}`; point `dir` at the rules directory or add \
             a rule file", dir.display())]
    NoRules {
        /// Directory that was listed.
        dir: PathBuf,
    },

    /// Two sources share one file name.
    #[error("duplicate rule file `{file}`; give every rule file its own name")]
    DuplicateFile {
        /// Repeated file name.
        file: String,
    },

    /// The `//!` metadata header of a rule file is missing a key or has an invalid value.
    #[error("invalid metadata `{key}` in rule file `{file}`: {problem}")]
    Metadata {
        /// Rule file, as named to the loader.
        file: String,
        /// Metadata key, for example `id` or `mode`.
        key: String,
        /// Problem and fix, for example "missing; add a line `//! id: <value>` ...".
        problem: String,
    },

    /// Rhai rejected the script.
    #[error("failed to compile rule file `{file}` at line {line}: {message}")]
    Compile {
        /// Rule file, as named to the loader.
        file: String,
        /// Line of the error, counted from 1 at the top of the file (0 when Rhai gives none).
        line: usize,
        /// Rhai's description of the error.
        message: String,
    },

    /// A case file or the case directory could not be read.
    #[error("failed to read case file `{}`: {source}", path.display())]
    ReadCases {
        /// File or directory that was read.
        path: PathBuf,
        /// Underlying I/O error.
        #[source]
        source: std::io::Error,
    },

    /// A case file is not valid YAML or does not follow the case file format.
    #[error("invalid case file `{}`: {message}", path.display())]
    CaseFile {
        /// File that was parsed.
        path: PathBuf,
        /// Line of the error, counted from 1, when it is known.
        line: Option<usize>,
        /// Problem, with its line and column when known, and the fix.
        message: String,
    },

    /// The rules directory could not be watched for changes.
    #[error("failed to watch rules directory `{}`: {source}; check that the directory exists, \
             or set `policy.watch = false`", dir.display())]
    Watch {
        /// Directory that was to be watched.
        dir: PathBuf,
        /// Error of the file watcher.
        #[source]
        source: notify::Error,
    },
}
