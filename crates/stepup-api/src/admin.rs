//! The `stepup.v1.Admin` service: operator calls guarded by a bearer token.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use stepup_policy::{CaseReport, ReloadOutcome, ReloadTrigger, RuleReloader};
use subtle::ConstantTimeEq;
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status};
use tracing::{instrument, warn};

use crate::error::ApiError;
use crate::pb;

/// Maximum length of a rejection message, in bytes. The message travels in the `grpc-message`
/// header, and HTTP/2 peers limit header sizes (16 KiB by default in hyper).
const MAX_REJECTION_BYTES: usize = 4096;

/// Minimum time between two warnings about rejected admin calls.
const REJECTION_WARN_INTERVAL: Duration = Duration::from_secs(10);

/// The admin bearer token. Its `Debug` output hides the value.
#[derive(Clone)]
pub struct AdminToken(Arc<[u8]>);

/// Reasons the admin token cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum AdminTokenError {
    /// The token file could not be read.
    #[error("failed to read admin token file `{}`: {source}; check `api.admin_token_file`", path.display())]
    Read {
        /// Path from `api.admin_token_file`.
        path: PathBuf,
        /// Underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The token is empty after trimming whitespace.
    #[error("admin token file `{}` is empty; write a long random token into it", path.display())]
    Empty {
        /// Path from `api.admin_token_file`, or `<inline>` for [`AdminToken::new`].
        path: PathBuf,
    },
}

/// Implements `stepup.v1.Admin`.
#[derive(Clone)]
pub struct AdminService {
    reloader: Arc<RuleReloader>,
    token: Option<AdminToken>,
    rejections: Arc<Mutex<RejectionLog>>,
}

/// Throttle for warnings about rejected calls.
#[derive(Default)]
struct RejectionLog {
    last_warned: Option<Instant>,
    suppressed: u64,
}

// === impl AdminToken ===

impl AdminToken {
    /// Reads the token from `path`; surrounding whitespace, such as a final newline, is dropped.
    pub fn from_file(path: &Path) -> Result<Self, AdminTokenError> {
        let text = std::fs::read_to_string(path).map_err(|source| AdminTokenError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Builds a token from its text; surrounding whitespace is dropped.
    pub fn new(token: &str) -> Result<Self, AdminTokenError> {
        Self::parse(token, Path::new("<inline>"))
    }

    fn parse(text: &str, path: &Path) -> Result<Self, AdminTokenError> {
        let token = text.trim();
        if token.is_empty() {
            return Err(AdminTokenError::Empty {
                path: path.to_path_buf(),
            });
        }
        Ok(Self(Arc::from(token.as_bytes())))
    }

    /// Compares in time independent of where the tokens differ. Only a difference in length
    /// returns early, which reveals the length but no content.
    fn matches(&self, presented: &[u8]) -> bool {
        self.0.as_ref().ct_eq(presented).into()
    }
}

impl fmt::Debug for AdminToken {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("AdminToken(<redacted>)")
    }
}

// === impl AdminService ===

impl AdminService {
    /// Creates the service. Without a token every call fails with `PERMISSION_DENIED`.
    pub fn new(reloader: Arc<RuleReloader>, token: Option<AdminToken>) -> Self {
        Self {
            reloader,
            token,
            rejections: Arc::default(),
        }
    }

    /// Checks the `authorization: Bearer <token>` metadata.
    fn authorize(&self, metadata: &MetadataMap) -> Result<(), ApiError> {
        let Some(token) = &self.token else {
            return Err(ApiError::AdminDisabled);
        };
        let presented = metadata
            .get("authorization")
            .and_then(|value| value.to_str().ok())
            .and_then(bearer_token);
        match presented {
            Some(presented) if token.matches(presented.as_bytes()) => Ok(()),
            _ => {
                self.warn_rejected();
                Err(ApiError::Unauthenticated)
            }
        }
    }

    fn warn_rejected(&self) {
        let mut log = self.rejections.lock();
        let now = Instant::now();
        let due = log
            .last_warned
            .is_none_or(|last| now.duration_since(last) >= REJECTION_WARN_INTERVAL);
        if !due {
            log.suppressed += 1;
            return;
        }
        let suppressed = std::mem::take(&mut log.suppressed);
        log.last_warned = Some(now);
        warn!(
            suppressed,
            "admin call rejected: missing or invalid bearer token"
        );
    }
}

/// Returns the token of an `Authorization` value with the `Bearer` scheme, which RFC 6750
/// matches case-insensitively.
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|token| !token.is_empty())
}

#[tonic::async_trait]
impl pb::admin_server::Admin for AdminService {
    #[instrument(skip_all)]
    async fn reload_rules(
        &self,
        request: Request<pb::ReloadRulesRequest>,
    ) -> Result<Response<pb::ReloadRulesResponse>, Status> {
        self.authorize(request.metadata())?;

        let reloader = Arc::clone(&self.reloader);
        let result = tokio::task::spawn_blocking(move || reloader.reload(ReloadTrigger::Admin))
            .await
            .map_err(|error| ApiError::ReloadFailed(error.to_string()))?;
        match result {
            Ok(outcome) => Ok(Response::new(outcome_to_proto(&outcome))),
            Err(error) => Err(ApiError::ReloadRejected(truncate(error.detailed())).into()),
        }
    }
}

fn outcome_to_proto(outcome: &ReloadOutcome) -> pb::ReloadRulesResponse {
    let rules = outcome
        .rules
        .iter()
        .map(|meta| pb::RuleInfo {
            id: meta.id.clone(),
            version: meta.version.clone(),
            description: meta.description.clone(),
            owner: meta.owner.clone(),
            mode: meta.mode.as_str().to_string(),
            priority: meta.priority,
        })
        .collect();
    pb::ReloadRulesResponse {
        version: outcome.version.clone(),
        previous_version: outcome.previous_version.clone(),
        changed: outcome.changed,
        rules,
        report: Some(report_to_proto(&outcome.report)),
    }
}

fn report_to_proto(report: &CaseReport) -> pb::CaseReport {
    let count = |count: usize| u32::try_from(count).unwrap_or(u32::MAX);
    pb::CaseReport {
        passed: count(report.passed()),
        failed: count(report.failed()),
        cases: report
            .cases
            .iter()
            .map(|case| pb::CaseResult {
                file: case.file.clone(),
                name: case.name.clone(),
                passed: case.passed(),
                diff: case.diff.clone(),
            })
            .collect(),
    }
}

/// Cuts `text` to at most [`MAX_REJECTION_BYTES`] on a character boundary.
fn truncate(mut text: String) -> String {
    const NOTE: &str = "\n(truncated; run `stepup rules test` for the full report)";
    if text.len() <= MAX_REJECTION_BYTES {
        return text;
    }
    let mut end = MAX_REJECTION_BYTES - NOTE.len();
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text.push_str(NOTE);
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        assert_eq!(bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(bearer_token("bearer  abc "), Some("abc"));
        assert_eq!(bearer_token("Basic abc"), None);
        assert_eq!(bearer_token("Bearer "), None);
        assert_eq!(bearer_token("abc"), None);
    }

    #[test]
    fn token_matches_only_itself() {
        let token = AdminToken::new("s3cret-token\n").unwrap();

        assert!(token.matches(b"s3cret-token"));
        assert!(!token.matches(b"s3cret-tokem"));
        assert!(!token.matches(b"s3cret"));
        assert!(!token.matches(b""));
    }

    #[test]
    fn empty_token_is_rejected() {
        let error = AdminToken::new(" \n").unwrap_err();

        assert!(error.to_string().contains("empty"), "{error}");
    }

    #[test]
    fn debug_hides_token() {
        let token = AdminToken::new("s3cret-token").unwrap();

        assert_eq!(format!("{token:?}"), "AdminToken(<redacted>)");
    }

    #[test]
    fn long_rejection_is_truncated_on_char_boundary() {
        let text = "é".repeat(MAX_REJECTION_BYTES);

        let cut = truncate(text);

        assert!(cut.len() <= MAX_REJECTION_BYTES);
        assert!(cut.ends_with("for the full report)"));
    }
}
