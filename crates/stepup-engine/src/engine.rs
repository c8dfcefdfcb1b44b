//! The pipeline: enrich, compute signals, score, run the policy, decide, learn.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use dashmap::DashMap;
use dashmap::mapref::one::RefMut;
use prometheus::Registry;
use stepup_events::{
    Action, Decision, DeviceChange, DeviceOp, Event, EventBody, LoginAttempt, LoginResult,
    MfaResult, ParseError, Reason, Requirement, parse_event_with_limit, user_message,
};
use stepup_geo::{Geo, NetworkClass};
use stepup_keystroke::{Features, ParzenDetector};
use stepup_policy::{Evaluation, Policy};
use stepup_risk::{AttemptFeatures, RiskAssessment, RiskModel};
use stepup_signals::{
    AttemptFacts, IpKey, Profile, ProfileSummary, Signals, assess_keystroke, compute_signals,
    ip_prefix_of, parse_user_agent,
};
use tokio::sync::broadcast;
use tracing::trace;

use crate::config::EngineConfig;
use crate::context::{ActionView, EventView, PolicyContext, RiskView};
use crate::metrics::EngineMetrics;
use crate::partition::{PartitionState, ip_window};
use crate::state::{IpMark, PendingAttempt, UserState};
use crate::store::DecisionStore;

/// Reasons an inline call cannot be decided.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The event has the wrong type for the call.
    #[error("expected a `{expected}` event, got `{found}`")]
    WrongEventType {
        /// Type the call needs.
        expected: &'static str,
        /// Type it got.
        found: &'static str,
    },
    /// A configuration value is not usable.
    #[error("invalid engine configuration: {0}")]
    Config(String),
    /// The engine metrics could not be registered.
    #[error("failed to register engine metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

/// Position of an event in the events topic.
///
/// Events without a position (the demo's generator, tests) use partition 0 and no offset, and
/// are never recognised as applied before.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Position {
    /// Partition of the events topic.
    pub partition: i32,
    /// Offset in the partition, if the event came from the log.
    pub offset: Option<i64>,
}

/// An event processed from the log, with the user whose state it concerned.
#[derive(Clone, Debug)]
pub struct Processed {
    /// Outcome of the processing.
    pub outcome: Outcome,
    /// `user_id` of the event.
    pub user_id: String,
}

/// Result of processing one event from the log.
#[derive(Clone, Debug)]
pub enum Outcome {
    /// A new decision was made and stored.
    Decided(Arc<Decision>),
    /// The event changed state only (results, device changes), or it was decided inline
    /// earlier and now had its state change applied.
    Applied,
    /// The event was processed before; nothing changed.
    Duplicate,
}

/// The risk engine. Cheap to share in an `Arc`; every method takes `&self`.
pub struct Engine {
    pub(crate) config: EngineConfig,
    geo: Arc<Geo>,
    policy: Arc<Policy>,
    pub(crate) users: DashMap<String, UserState>,
    pub(crate) partitions: DashMap<i32, Arc<PartitionState>>,
    risk_model: RiskModel,
    keystroke_detector: ParzenDetector,
    decisions: DecisionStore,
    pub(crate) metrics: EngineMetrics,
    max_event_bytes: usize,
}

/// A login attempt after enrichment and scoring, before state is applied.
struct Assessed {
    decision: Arc<Decision>,
    pending: PendingAttempt,
}

// === impl Engine ===

impl Engine {
    /// Builds an engine and registers its metrics in `registry`.
    pub fn new(
        config: EngineConfig,
        geo: Arc<Geo>,
        policy: Arc<Policy>,
        registry: &Registry,
    ) -> Result<Self, EngineError> {
        let metrics = EngineMetrics::register(registry)?;
        let risk_model = RiskModel::new(config.risk.clone())
            .map_err(|err| EngineError::Config(format!("`engine.risk`: {err}")))?;
        let version = policy.rule_set().version().to_owned();
        metrics
            .rule_set
            .with_label_values(&[version.as_str()])
            .set(1);
        Ok(Self {
            partitions: DashMap::new(),
            risk_model,
            keystroke_detector: ParzenDetector::default(),
            decisions: DecisionStore::new(config.decisions.max_stored),
            users: DashMap::new(),
            config,
            geo,
            policy,
            metrics,
            max_event_bytes: stepup_events::DEFAULT_MAX_EVENT_BYTES,
        })
    }

    /// Sets the size limit applied by [`Engine::process_bytes`].
    pub fn with_max_event_bytes(mut self, max_event_bytes: usize) -> Self {
        self.max_event_bytes = max_event_bytes;
        self
    }

    /// Parses and processes one message without a log position; see [`Engine::process`].
    pub fn process_bytes(&self, payload: &[u8]) -> Result<Outcome, ParseError> {
        self.process_bytes_at(payload, Position::default())
            .map(|processed| processed.outcome)
    }

    /// Parses and processes one message from `position` of the events topic.
    pub fn process_bytes_at(
        &self,
        payload: &[u8],
        position: Position,
    ) -> Result<Processed, ParseError> {
        match parse_event_with_limit(payload, self.max_event_bytes) {
            Ok(event) => Ok(Processed {
                outcome: self.process_at(&event, position),
                user_id: event.user_id,
            }),
            Err(err) => {
                self.metrics
                    .events
                    .with_label_values(&["invalid", err.code()])
                    .inc();
                Err(err)
            }
        }
    }

    /// Processes one event without a log position, in partition 0.
    pub fn process(&self, event: &Event) -> Outcome {
        self.process_at(event, Position::default())
    }

    /// Processes one event from `position` of the log: decides it (unless decided before)
    /// and applies its state change. Events of one user must arrive in log order. An event at
    /// or below the user's last applied offset is a duplicate and changes nothing.
    pub fn process_at(&self, event: &Event, position: Position) -> Outcome {
        let started = Instant::now();
        let applied_before = self
            .users
            .get(&event.user_id)
            .is_some_and(|state| state.has_applied(position.partition, position.offset));
        let outcome = if applied_before {
            Outcome::Duplicate
        } else {
            let partition = position.partition;
            let outcome = match &event.body {
                EventBody::LoginAttempt(attempt) => self.process_attempt(event, attempt, partition),
                EventBody::Action(action) => self.process_action(event, action),
                EventBody::LoginResult(result) => self.apply_login_result(event, result, partition),
                EventBody::MfaResult(result) => self.apply_mfa_result(event, result, partition),
                EventBody::Device(change) => self.apply_device(event, change, partition),
            };
            if let Some(offset) = position.offset {
                self.user_entry(&event.user_id, partition).applied_offset = Some(offset);
            }
            outcome
        };

        let kind = event.kind().as_str();
        let label = match &outcome {
            Outcome::Decided(_) => "decided",
            Outcome::Applied => "applied",
            Outcome::Duplicate => "duplicate",
        };
        self.metrics.events.with_label_values(&[kind, label]).inc();
        self.metrics
            .processing
            .with_label_values(&[kind])
            .observe(started.elapsed().as_secs_f64());
        self.metrics.profiles.set(gauge_value(self.users.len()));
        outcome
    }

    /// Decides a login attempt inline (gRPC `Assess`) without changing any state. The caller
    /// appends the event to the log; the consumer then applies it without deciding again.
    /// The attempt is scored in the partition that contains the user, or partition 0 for a user
    /// the engine does not know; see [`Engine::assess_in`].
    pub fn assess(&self, event: &Event) -> Result<Arc<Decision>, EngineError> {
        let partition = self
            .users
            .get(&event.user_id)
            .map_or(0, |state| state.partition);
        self.assess_in(event, partition)
    }

    /// Decides a login attempt inline against the state of `partition`, the partition of the
    /// events topic the user's events go to.
    pub fn assess_in(&self, event: &Event, partition: i32) -> Result<Arc<Decision>, EngineError> {
        let EventBody::LoginAttempt(attempt) = &event.body else {
            return Err(wrong_type("login_attempt", event));
        };
        if let Some(stored) = self.decisions.get(&event.event_id) {
            return Ok(stored.decision);
        }
        let assessed = self.assess_attempt(event, attempt, partition);
        self.decisions.insert(assessed.decision.clone(), false);
        Ok(assessed.decision)
    }

    /// Decides a sensitive action inline (gRPC `CheckAction`).
    pub fn check_action(&self, event: &Event) -> Result<Arc<Decision>, EngineError> {
        let EventBody::Action(action) = &event.body else {
            return Err(wrong_type("action", event));
        };
        if let Some(stored) = self.decisions.get(&event.event_id) {
            return Ok(stored.decision);
        }
        let decision = self.decide_action(event, action);
        self.decisions.insert(decision.clone(), false);
        Ok(decision)
    }

    /// Waits up to `timeout` for the decision on `event_id`.
    pub async fn await_decision(&self, event_id: &str, timeout: Duration) -> Option<Arc<Decision>> {
        self.decisions.wait(event_id, timeout).await
    }

    /// Returns the stored decision on `event_id`, if it is still held.
    pub fn decision(&self, event_id: &str) -> Option<Arc<Decision>> {
        self.decisions.get(event_id).map(|stored| stored.decision)
    }

    /// Subscribes to every new decision.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Decision>> {
        self.decisions.subscribe()
    }

    /// Returns a copy of the user's profile, if the engine has one.
    pub fn profile(&self, user_id: &str) -> Option<Profile> {
        self.users.get(user_id).map(|state| state.profile.clone())
    }

    /// Returns the number of users held.
    pub fn user_count(&self) -> usize {
        self.users.len()
    }

    /// Returns the number of decisions held for `AwaitDecision`.
    pub fn stored_decisions(&self) -> usize {
        self.decisions.len()
    }

    /// Returns the policy the engine evaluates.
    pub fn policy(&self) -> &Arc<Policy> {
        &self.policy
    }

    /// Returns the engine's metrics, for example to move `stepup_rule_set_info` after a reload.
    pub fn metrics(&self) -> &EngineMetrics {
        &self.metrics
    }

    /// Returns the state of `partition`, creating it empty if the engine has none.
    pub(crate) fn partition(&self, partition: i32) -> Arc<PartitionState> {
        if let Some(part) = self.partitions.get(&partition) {
            return part.clone();
        }
        self.partitions
            .entry(partition)
            .or_insert_with(|| Arc::new(self.new_partition()))
            .clone()
    }

    pub(crate) fn new_partition(&self) -> PartitionState {
        PartitionState::new(
            &self.config.signals,
            self.config.risk.max_values_per_feature,
        )
    }

    /// Returns the user's state for a change, creating it in `partition` if it is new. A user
    /// whose events moved to another partition (the topic's partition count changed) moves
    /// with its population counts.
    fn user_entry(&self, user_id: &str, partition: i32) -> RefMut<'_, String, UserState> {
        let mut state = self
            .users
            .entry(user_id.to_owned())
            .or_insert_with(|| UserState {
                partition,
                ..UserState::default()
            });
        if state.partition != partition {
            self.partition(state.partition)
                .count_profile(&state.profile, -1);
            self.partition(partition).count_profile(&state.profile, 1);
            state.partition = partition;
            state.applied_offset = None;
        }
        state
    }

    pub(crate) fn tracked_ips(&self) -> usize {
        self.partitions.iter().map(|part| part.ips.len()).sum()
    }

    fn process_attempt(&self, event: &Event, attempt: &LoginAttempt, partition: i32) -> Outcome {
        match self.decisions.get(&event.event_id) {
            Some(stored) if stored.applied => Outcome::Duplicate,
            Some(stored) => {
                // Decided inline by `Assess`: rebuild the pending attempt without deciding again.
                let pending = self.pending_from(event, attempt, &stored.decision);
                self.apply_attempt(event, pending, partition);
                self.decisions.mark_applied(&event.event_id);
                Outcome::Applied
            }
            None => {
                let assessed = self.assess_attempt(event, attempt, partition);
                self.apply_attempt(event, assessed.pending, partition);
                self.decisions.insert(assessed.decision.clone(), true);
                Outcome::Decided(assessed.decision)
            }
        }
    }

    fn process_action(&self, event: &Event, action: &Action) -> Outcome {
        match self.decisions.get(&event.event_id) {
            Some(stored) if stored.applied => Outcome::Duplicate,
            Some(_) => {
                self.decisions.mark_applied(&event.event_id);
                Outcome::Applied
            }
            None => {
                let decision = self.decide_action(event, action);
                self.decisions.insert(decision.clone(), true);
                Outcome::Decided(decision)
            }
        }
    }

    fn assess_attempt(&self, event: &Event, attempt: &LoginAttempt, partition: i32) -> Assessed {
        let geo = self.geo.lookup(attempt.ip);
        let user_agent = parse_user_agent(&attempt.user_agent);
        let facts = AttemptFacts {
            at: event.occurred_at,
            ip: attempt.ip,
            geo: &geo,
            ua: &user_agent,
            device_id: attempt.device_id.as_deref(),
        };
        let part = self.partition(partition);
        let (signals, summary, risk, keystroke) = self.score_attempt(event, attempt, &facts, &part);
        self.metrics.risk_score.observe(risk.score);

        let mut view = EventView::new(event, geo.network.as_str(), Some(&user_agent));
        view.device_id = attempt.device_id.as_deref();
        let context = PolicyContext {
            event: view,
            signals: Some(&signals),
            risk: RiskView::new(&risk),
            profile: &summary,
        };
        let evaluation = self.policy.evaluate(&context);
        let decision = Arc::new(self.build_decision(event, evaluation, &risk, Some(&signals)));
        trace!(event_id = %event.event_id, requirement = decision.requirement.as_str(), "decided login attempt");

        let pending = PendingAttempt {
            event_id: event.event_id.clone(),
            at: event.occurred_at,
            ip_prefix: ip_prefix_of(attempt.ip),
            ip_key: IpKey::from(attempt.ip),
            geo,
            user_agent,
            device_id: attempt.device_id.clone(),
            score: risk.score,
            requirement: decision.requirement,
            first_factor_passed: false,
            keystroke,
        };
        Assessed { decision, pending }
    }

    /// Computes the signals, profile summary and risk score of an attempt against the user's
    /// profile, plus the keystroke features to learn if the login is verified.
    fn score_attempt(
        &self,
        event: &Event,
        attempt: &LoginAttempt,
        facts: &AttemptFacts<'_>,
        part: &PartitionState,
    ) -> (
        Signals,
        ProfileSummary,
        RiskAssessment,
        Option<(String, Features)>,
    ) {
        let ip_velocity = part.ips.snapshot(attempt.ip, event.occurred_at);
        let features = AttemptFeatures::from_facts(facts);
        let state = self.users.get(&event.user_id);
        let empty = Profile::default();
        let profile = state.as_ref().map_or(&empty, |state| &state.profile);

        let mut signals = compute_signals(profile, ip_velocity, facts, &self.config.signals);
        let capture = attempt.keystroke.as_ref();
        let keystroke = assess_keystroke(profile, capture, &self.keystroke_detector);
        let typing_score = keystroke.as_ref().and_then(|outcome| outcome.signal.score);
        let risk =
            self.risk_model
                .assess(&features, profile, &part.population, &signals, typing_score);
        signals.keystroke = keystroke.as_ref().map(|outcome| outcome.signal.clone());
        let learnable =
            keystroke.and_then(|outcome| Some((outcome.signal.field, outcome.features?)));
        (signals, profile.summary(event.occurred_at), risk, learnable)
    }

    fn pending_from(
        &self,
        event: &Event,
        attempt: &LoginAttempt,
        decision: &Decision,
    ) -> PendingAttempt {
        PendingAttempt {
            event_id: event.event_id.clone(),
            at: event.occurred_at,
            ip_prefix: ip_prefix_of(attempt.ip),
            ip_key: IpKey::from(attempt.ip),
            geo: self.geo.lookup(attempt.ip),
            user_agent: parse_user_agent(&attempt.user_agent),
            device_id: attempt.device_id.clone(),
            score: decision.risk_score,
            requirement: decision.requirement,
            first_factor_passed: false,
            keystroke: attempt.keystroke.as_ref().and_then(|capture| {
                let features = Features::from_capture(capture, None).ok()?;
                Some((capture.field.clone(), features))
            }),
        }
    }

    fn apply_attempt(&self, event: &Event, pending: PendingAttempt, partition: i32) {
        let mark = IpMark {
            at: event.occurred_at,
            ip: pending.ip_key,
            failure: false,
        };
        let max_pending = self.config.learning.max_pending_attempts;
        let mut state = self.user_entry(&event.user_id, partition);
        state.push_pending(pending, max_pending);
        self.record_mark(&mut state, &event.user_id, mark);
    }

    /// Adds an IP mark to the user's state and to the partition's IP activity.
    fn record_mark(&self, state: &mut UserState, user_id: &str, mark: IpMark) {
        let signals = &self.config.signals;
        state.push_ip_mark(mark, ip_window(signals), signals.max_events_per_ip);
        self.partition(state.partition).record_mark(user_id, mark);
        self.metrics
            .tracked_ips
            .set(gauge_value(self.tracked_ips()));
    }

    fn apply_login_result(&self, event: &Event, result: &LoginResult, partition: i32) -> Outcome {
        let mut state = self.user_entry(&event.user_id, partition);
        let signals_config = &self.config.signals;
        if !result.success {
            let pending = state.take_pending(&result.attempt_id);
            state
                .profile
                .record_failure(event.occurred_at, signals_config);
            let ip = result.ip.map(IpKey::from);
            if let Some(ip) = ip.or(pending.as_ref().map(|pending| pending.ip_key)) {
                let mark = IpMark {
                    at: event.occurred_at,
                    ip,
                    failure: true,
                };
                self.record_mark(&mut state, &event.user_id, mark);
            }
            return Outcome::Applied;
        }

        let max_score = self.config.learning.max_score_without_mfa;
        let Some(index) = state
            .pending
            .iter()
            .position(|p| p.event_id == result.attempt_id)
        else {
            return Outcome::Applied;
        };
        let pending = &mut state.pending[index];
        match pending.requirement {
            Requirement::Allow if pending.score < max_score => {
                if let Some(pending) = state.pending.remove(index) {
                    self.learn(&mut state, &pending);
                }
            }
            Requirement::Mfa => pending.first_factor_passed = true,
            // Allowed at a score too high to learn from, or denied yet signed in by the
            // caller: the login happened but teaches nothing.
            Requirement::Allow | Requirement::Deny => {
                state.pending.remove(index);
            }
        }
        Outcome::Applied
    }

    fn apply_mfa_result(&self, event: &Event, result: &MfaResult, partition: i32) -> Outcome {
        let mut state = self.user_entry(&event.user_id, partition);
        state
            .profile
            .record_mfa(event.occurred_at, result.factor, result.passed);
        if !result.passed {
            state
                .profile
                .record_failure(event.occurred_at, &self.config.signals);
            return Outcome::Applied;
        }
        let pending = result
            .attempt_id
            .as_deref()
            .and_then(|id| state.take_pending(id));
        if let Some(pending) = pending {
            self.learn(&mut state, &pending);
        }
        Outcome::Applied
    }

    /// Teaches the user's profile, and through it the partition's population, a verified
    /// login.
    fn learn(&self, state: &mut UserState, pending: &PendingAttempt) {
        let facts = pending.facts();
        let part = self.partition(state.partition);
        part.update_profile(&mut state.profile, |profile| {
            profile.learn_verified(&facts, &self.config.signals);
        });
        if let Some((field, features)) = &pending.keystroke {
            state
                .profile
                .learn_keystroke(field, features, &self.config.keystroke);
        }
    }

    fn apply_device(&self, event: &Event, change: &DeviceChange, partition: i32) -> Outcome {
        let mut state = self.user_entry(&event.user_id, partition);
        let part = self.partition(state.partition);
        part.update_profile(&mut state.profile, |profile| {
            match (change.op, change.trusted_until) {
                (DeviceOp::Trust, Some(until)) => profile.trust_device(&change.device_id, until),
                (DeviceOp::Trust, None) => {}
                (DeviceOp::Forget, _) => profile.forget_device(&change.device_id),
            }
        });
        Outcome::Applied
    }

    fn decide_action(&self, event: &Event, action: &Action) -> Arc<Decision> {
        let at = event.occurred_at;
        let summary = self
            .users
            .get(&event.user_id)
            .map(|state| state.profile.summary(at))
            .unwrap_or_else(|| Profile::default().summary(at));
        let sensitive = self
            .config
            .actions
            .sensitive
            .iter()
            .any(|name| name == &action.name);
        let network = action
            .ip
            .map_or(NetworkClass::Private, |ip| self.geo.lookup(ip).network);
        // Actions are decided on MFA recency and rules; the score is the prior alone.
        let risk = RiskAssessment::from_parts(self.config.risk.prior_log_odds, Vec::new());

        let mut view = EventView::new(event, network.as_str(), None);
        view.action = Some(ActionView {
            name: &action.name,
            session_id: &action.session_id,
            sensitive,
            max_mfa_age_s: self.config.actions.recent_mfa_window_s,
            attributes: &action.attributes,
        });
        let context = PolicyContext {
            event: view,
            signals: None,
            risk: RiskView::new(&risk),
            profile: &summary,
        };
        let mut evaluation = self.policy.evaluate(&context);
        if sensitive {
            self.require_recent_mfa(&mut evaluation, &summary);
        }
        Arc::new(self.build_decision(event, evaluation, &risk, None))
    }

    /// Raises an allowed sensitive action to MFA when the last passed MFA is older than the
    /// window. This is a floor under the rules, so it applies even when no rule covers actions.
    fn require_recent_mfa(&self, evaluation: &mut Evaluation, summary: &ProfileSummary) {
        let window = self.config.actions.recent_mfa_window_s;
        let fresh = summary
            .last_mfa_age_s
            .is_some_and(|age| (0..=window).contains(&age));
        if fresh || evaluation.requirement != Requirement::Allow {
            return;
        }
        let mut values = BTreeMap::new();
        values.insert("window_s".to_owned(), window.to_string());
        let age = summary
            .last_mfa_age_s
            .map_or("never".to_owned(), |age| age.to_string());
        values.insert("last_mfa_age_s".to_owned(), age);
        let reason = Reason {
            code: "stale_mfa".into(),
            signal: "mfa_recency".into(),
            message: format!("sensitive action needs an MFA passed in the last {window} s"),
            values,
            ..Reason::default()
        };
        evaluation.requirement = Requirement::Mfa;
        evaluation.factors = self.policy.default_factors().to_vec();
        evaluation.reasons = vec![reason];
    }

    fn build_decision(
        &self,
        event: &Event,
        evaluation: Evaluation,
        risk: &RiskAssessment,
        signals: Option<&Signals>,
    ) -> Decision {
        self.count_evaluation(&evaluation);
        let shadow = evaluation.shadow.iter().map(Into::into).collect();
        let requirement = evaluation.requirement;
        let mut reasons = evaluation.reasons;
        if signals.is_some() {
            reasons.push(risk_reason(risk));
        }
        // Rules fill their reasons' user messages; `risk_score` and `stale_mfa` come from the
        // engine and get the default message of their code here.
        for reason in &mut reasons {
            if reason.signal.is_empty() {
                reason.signal = signal_of(&reason.code).to_owned();
            }
            if reason.user_message.is_empty() {
                reason.user_message = stepup_events::reason_user_message(&reason.code).to_owned();
            }
        }
        let factors = if requirement == Requirement::Mfa {
            evaluation.factors
        } else {
            Vec::new()
        };
        let remember = if requirement == Requirement::Deny {
            0
        } else {
            self.config.decisions.remember_device_ttl_s
        };
        Decision {
            event_id: event.event_id.clone(),
            user_id: event.user_id.clone(),
            requirement,
            factors,
            risk_score: risk.score,
            risk_level: risk.level,
            reasons,
            user_message: user_message(requirement).to_owned(),
            remember_device_ttl_s: remember,
            rule_set_version: evaluation.rule_set_version,
            decided_at: event.occurred_at,
            expires_at: expiry(event.occurred_at, self.config.decisions.ttl_s),
            shadow,
        }
    }

    fn count_evaluation(&self, evaluation: &Evaluation) {
        let rule = evaluation
            .deciding_rules
            .first()
            .map_or("none", String::as_str);
        let requirement = evaluation.requirement.as_str();
        self.metrics
            .decisions
            .with_label_values(&[requirement, rule])
            .inc();
        for error in &evaluation.rule_errors {
            self.metrics
                .rule_errors
                .with_label_values(&[error.rule_id.as_str()])
                .inc();
        }
        for shadow in &evaluation.shadow {
            let labels = [shadow.rule_id.as_str(), shadow.requirement.as_str()];
            self.metrics
                .shadow_decisions
                .with_label_values(&labels)
                .inc();
        }
    }
}

fn wrong_type(expected: &'static str, event: &Event) -> EngineError {
    EngineError::WrongEventType {
        expected,
        found: event.kind().as_str(),
    }
}

fn expiry(at: DateTime<Utc>, ttl_s: u64) -> DateTime<Utc> {
    let ttl = chrono::Duration::seconds(i64::try_from(ttl_s).unwrap_or(i64::MAX / 1000));
    at.checked_add_signed(ttl).unwrap_or(at)
}

pub(crate) fn gauge_value(len: usize) -> i64 {
    i64::try_from(len).unwrap_or(i64::MAX)
}

/// Returns the signal family of a default reason code, for reasons whose rule set none.
fn signal_of(code: &str) -> &'static str {
    match code {
        c if c.contains("travel") => "travel",
        c if c.contains("spray") || c.contains("velocity") || c.contains("failure") => "velocity",
        c if c.contains("device") => "device",
        c if c.contains("country") || c.contains("city") || c.contains("network") => "network",
        c if c.contains("risk") => "risk",
        c if c.contains("admin") || c.contains("role") => "account",
        _ => "policy",
    }
}

/// Builds the reason that carries the score's breakdown.
fn risk_reason(risk: &RiskAssessment) -> Reason {
    let mut values = BTreeMap::new();
    values.insert("score".to_owned(), format!("{:.3}", risk.score));
    values.insert("log_odds".to_owned(), format!("{:.2}", risk.log_odds));
    for contribution in &risk.contributions {
        let text = format!("{:+.2}: {}", contribution.log_odds, contribution.detail);
        values.insert(contribution.feature.to_owned(), text);
    }
    Reason {
        code: "risk_score".into(),
        signal: "risk".into(),
        message: format!(
            "risk score {:.2} ({}), largest contribution: {}",
            risk.score,
            risk.level.as_str(),
            risk.top_factor
        ),
        values,
        ..Reason::default()
    }
}
