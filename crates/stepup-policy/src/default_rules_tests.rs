//! Tests of the rules shipped in the repository's `rules/` directory.
//!
//! Each rule gets a context built to make it fire, derived from one benign login: an
//! established user on a trusted, known device at home, with a low risk score.

use std::path::PathBuf;

use serde_json::{Value, json};
use stepup_events::{Factor, REASON_USER_MESSAGES, Requirement, reason_user_message};

use crate::{
    CASES_DIR, Evaluation, FACTOR_CONFLICT_CODE, Policy, PolicyConfig, RULE_ERROR_CODE, RuleMode,
    RuleSet, load_cases, run_cases,
};

const SHIPPED_RULES: [&str; 10] = [
    "user_failure_velocity",
    "password_spraying",
    "admin_requires_webauthn",
    "impossible_travel",
    "keystroke_mismatch",
    "new_device_from_hosting",
    "new_country",
    "high_risk_score",
    "sensitive_action_recent_mfa",
    "unusual_hour_new_browser",
];

/// The shipped rule that runs in shadow mode, as an example of a candidate rule.
const SHADOW_RULE: &str = "unusual_hour_new_browser";

fn shipped_policy() -> Policy {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../rules");
    let config = PolicyConfig {
        dir,
        ..PolicyConfig::default()
    };
    let rules = RuleSet::load_dir(&config).unwrap();
    Policy::new(config, rules)
}

fn benign() -> Value {
    json!({
        "event": {
            "type": "login_attempt",
            "event_id": "evt-1",
            "user_id": "alice",
            "occurred_at": "2026-03-02T09:15:00Z",
            "ip_class": "residential",
            "user_agent": { "browser": "Firefox", "os": "Linux", "category": "pc" },
            "device_id": "laptop-1",
            "attributes": { "roles": ["staff"], "account_tier": "enterprise", "extra": {} },
        },
        "signals": {
            "geo_known": true,
            "travel": null,
            "novelty": {
                "new_device": false,
                "trusted_device": true,
                "new_country": false,
                "new_city": false,
                "new_asn": false,
                "new_browser": false,
                "new_os": false,
                "unusual_hour": false,
            },
            "user_failures": 0,
            "ip": { "failures": 0, "distinct_users": 1, "distinct_failed_users": 0, "attempts": 1 },
            "network": "residential",
            "first_login": false,
        },
        "risk": { "score": 0.08, "level": "low", "top_factor": "device" },
        "profile": {
            "verified_logins": 140,
            "known_devices": 2,
            "known_countries": 1,
            "days_since_first_seen": 400.0,
            "last_mfa_age_s": 86_400,
            "failures_in_window": 0,
        },
    })
}

/// Returns an action event as the engine builds it: without login signals.
fn action(name: &str) -> Value {
    let mut context = benign();
    context["event"]["type"] = json!("action");
    context["event"]["action"] = json!({ "name": name, "session_id": "s-1", "sensitive": false });
    context["signals"] = Value::Null;
    context
}

fn impossible_travel(confidence: f64) -> Value {
    let mut context = benign();
    context["signals"]["travel"] = json!({
        "from_city": "Berlin",
        "from_country": "DE",
        "to_city": "Sydney",
        "to_country": "AU",
        "distance_km": 16_090.4,
        "min_distance_km": 16_010.0,
        "elapsed_s": 3_600.0,
        "min_speed_kmh": 16_010.0,
        "impossible": true,
        "confidence": confidence,
    });
    context
}

/// Returns the evaluation after checking that no rule failed.
fn evaluate(context: &Value) -> Evaluation {
    let evaluation = shipped_policy().evaluate(context);
    assert!(
        evaluation.rule_errors.is_empty(),
        "rule errors: {:?}",
        evaluation.rule_errors
    );
    evaluation
}

fn assert_decided_by(evaluation: &Evaluation, requirement: Requirement, rule_id: &str) {
    assert_eq!(evaluation.requirement, requirement, "{evaluation:#?}");
    assert_eq!(evaluation.deciding_rules, [rule_id], "{evaluation:#?}");
    assert_eq!(evaluation.reasons[0].rule_id, rule_id);
    assert_eq!(evaluation.reasons[0].rule_version, "1");
}

#[test]
fn shipped_rules_load_with_one_shadow_rule() {
    let policy = shipped_policy();
    let rule_set = policy.rule_set();

    let ids: Vec<&str> = rule_set
        .rules()
        .iter()
        .map(|meta| meta.id.as_str())
        .collect();
    assert_eq!(ids, SHIPPED_RULES);
    for meta in rule_set.rules() {
        let expected = if meta.id == SHADOW_RULE {
            RuleMode::Shadow
        } else {
            RuleMode::Live
        };
        assert_eq!(meta.mode, expected, "mode of `{}`", meta.id);
    }
    assert!(
        rule_set
            .rules()
            .iter()
            .all(|meta| !meta.description.is_empty())
    );
}

#[test]
fn benign_login_is_allowed_without_reasons() {
    let evaluation = evaluate(&benign());

    assert_eq!(evaluation.requirement, Requirement::Allow);
    assert!(evaluation.reasons.is_empty());
    assert!(evaluation.factors.is_empty());
}

#[test]
fn benign_sensitive_action_after_recent_mfa_is_allowed() {
    let mut context = action("change_password");
    context["profile"]["last_mfa_age_s"] = json!(120);

    let evaluation = evaluate(&context);

    assert_eq!(evaluation.requirement, Requirement::Allow);
}

#[test]
fn sparse_context_gives_no_errors() {
    let context = json!({
        "event": { "type": "login_attempt" },
        "signals": {},
        "risk": {},
        "profile": {},
    });

    let evaluation = evaluate(&context);

    assert_eq!(evaluation.requirement, Requirement::Allow);
}

#[test]
fn other_event_types_are_ignored() {
    let mut context = impossible_travel(0.9);
    context["event"]["type"] = json!("mfa_result");
    context["signals"]["user_failures"] = json!(50);
    context["risk"]["score"] = json!(0.99);

    let evaluation = evaluate(&context);

    assert_eq!(evaluation.requirement, Requirement::Allow);
}

#[test]
fn unknown_location_never_denies() {
    let mut context = benign();
    context["signals"]["geo_known"] = json!(false);
    context["signals"]["network"] = json!("private");
    context["signals"]["novelty"]["trusted_device"] = json!(false);
    context["signals"]["novelty"]["new_device"] = json!(true);
    context["signals"]["ip"]["distinct_failed_users"] = json!(40);
    context["risk"] = json!({ "score": 0.99, "level": "critical", "top_factor": "location" });

    let evaluation = evaluate(&context);

    assert_eq!(evaluation.requirement, Requirement::Mfa);
    assert!(
        !evaluation
            .deciding_rules
            .contains(&"new_country".to_string())
    );
}

#[test]
fn user_failure_velocity_asks_for_mfa_then_denies() {
    let mut context = benign();
    context["signals"]["user_failures"] = json!(5);
    let evaluation = evaluate(&context);
    assert_decided_by(&evaluation, Requirement::Mfa, "user_failure_velocity");
    assert_eq!(evaluation.reasons[0].code, "user_failure_velocity");
    assert_eq!(evaluation.reasons[0].signal, "velocity");
    assert_eq!(evaluation.reasons[0].values["failures"], "5");

    context["signals"]["user_failures"] = json!(20);
    context["signals"]["novelty"]["trusted_device"] = json!(false);
    let evaluation = evaluate(&context);
    assert_decided_by(&evaluation, Requirement::Deny, "user_failure_velocity");
    assert_eq!(evaluation.reasons[0].code, "user_failure_velocity_blocked");
}

#[test]
fn user_failure_velocity_spares_trusted_device_from_deny() {
    let mut context = benign();
    context["signals"]["user_failures"] = json!(25);

    let evaluation = evaluate(&context);

    assert_decided_by(&evaluation, Requirement::Mfa, "user_failure_velocity");
}

#[test]
fn password_spraying_asks_for_mfa_then_denies() {
    let mut context = benign();
    context["signals"]["ip"]["distinct_failed_users"] = json!(5);
    let evaluation = evaluate(&context);
    assert_decided_by(&evaluation, Requirement::Mfa, "password_spraying");
    assert_eq!(evaluation.reasons[0].values["failed_accounts"], "5");

    context["signals"]["ip"]["distinct_failed_users"] = json!(20);
    context["signals"]["novelty"]["trusted_device"] = json!(false);
    let evaluation = evaluate(&context);
    assert_decided_by(&evaluation, Requirement::Deny, "password_spraying");
    assert_eq!(evaluation.reasons[0].code, "password_spraying_blocked");
}

#[test]
fn password_spraying_never_denies_shared_networks() {
    for network in ["mobile", "satellite", "private"] {
        let mut context = benign();
        context["signals"]["ip"]["distinct_failed_users"] = json!(200);
        context["signals"]["novelty"]["trusted_device"] = json!(false);
        context["signals"]["network"] = json!(network);

        let evaluation = evaluate(&context);

        assert_eq!(
            evaluation.requirement,
            Requirement::Mfa,
            "on a {network} network"
        );
    }
}

#[test]
fn admin_requires_webauthn_off_trusted_device() {
    let mut context = benign();
    context["event"]["attributes"]["roles"] = json!(["staff", "admin"]);
    assert_eq!(evaluate(&context).requirement, Requirement::Allow);

    context["signals"]["novelty"]["trusted_device"] = json!(false);
    let evaluation = evaluate(&context);

    assert_decided_by(&evaluation, Requirement::Mfa, "admin_requires_webauthn");
    assert_eq!(evaluation.factors, [Factor::Webauthn]);
}

#[test]
fn admin_webauthn_narrows_other_mfa_rules() {
    let mut context = impossible_travel(0.9);
    context["event"]["attributes"]["roles"] = json!(["admin"]);
    context["signals"]["novelty"]["trusted_device"] = json!(false);

    let evaluation = evaluate(&context);

    assert_eq!(evaluation.requirement, Requirement::Mfa);
    assert_eq!(evaluation.factors, [Factor::Webauthn]);
    assert_eq!(
        evaluation.deciding_rules,
        ["admin_requires_webauthn", "impossible_travel"]
    );
}

#[test]
fn impossible_travel_asks_for_mfa_with_values() {
    let evaluation = evaluate(&impossible_travel(0.8));

    assert_decided_by(&evaluation, Requirement::Mfa, "impossible_travel");
    assert_eq!(
        evaluation.factors,
        [Factor::Webauthn, Factor::Totp, Factor::Push]
    );
    let reason = &evaluation.reasons[0];
    assert_eq!(reason.signal, "travel");
    assert_eq!(reason.values["from"], "Berlin, DE");
    assert_eq!(reason.values["to"], "Sydney, AU");
    assert_eq!(reason.values["distance_km"], "16090");
    assert_eq!(reason.values["min_speed_kmh"], "16010");
    assert_eq!(reason.values["elapsed_s"], "3600");
    assert_eq!(reason.values["confidence"], "0.8");
    assert_eq!(
        reason.user_message,
        "We noticed a sign-in from an unexpected location."
    );
    assert!(
        reason.message.contains("60 min earlier"),
        "{}",
        reason.message
    );
}

#[test]
fn impossible_travel_ignores_low_confidence() {
    let evaluation = evaluate(&impossible_travel(0.3));

    assert_eq!(evaluation.requirement, Requirement::Allow);
}

#[test]
fn impossible_travel_names_partial_places() {
    let mut context = impossible_travel(0.9);
    context["signals"]["travel"]["from_city"] = json!(null);
    context["signals"]["travel"]["to_city"] = json!(null);
    context["signals"]["travel"]["to_country"] = json!(null);

    let evaluation = evaluate(&context);

    assert_eq!(evaluation.reasons[0].values["from"], "DE");
    assert_eq!(evaluation.reasons[0].values["to"], "unknown place");
}

#[test]
fn new_device_from_hosting_asks_for_mfa() {
    for network in ["hosting", "anonymous"] {
        let mut context = benign();
        context["signals"]["network"] = json!(network);
        assert_eq!(
            evaluate(&context).requirement,
            Requirement::Allow,
            "known device"
        );

        context["signals"]["novelty"]["new_device"] = json!(true);
        context["signals"]["novelty"]["trusted_device"] = json!(false);
        let evaluation = evaluate(&context);

        assert_decided_by(&evaluation, Requirement::Mfa, "new_device_from_hosting");
        assert_eq!(evaluation.reasons[0].values["network"], network);
    }
}

#[test]
fn first_login_from_hosting_counts_as_new_device() {
    let mut context = benign();
    context["signals"]["network"] = json!("hosting");
    context["signals"]["first_login"] = json!(true);
    context["signals"]["novelty"]["trusted_device"] = json!(false);
    context["profile"]["known_countries"] = json!(0);

    let evaluation = evaluate(&context);

    assert_decided_by(&evaluation, Requirement::Mfa, "new_device_from_hosting");
}

#[test]
fn new_country_asks_for_mfa() {
    let mut context = benign();
    context["signals"]["novelty"]["new_country"] = json!(true);

    let evaluation = evaluate(&context);

    assert_decided_by(&evaluation, Requirement::Mfa, "new_country");
    assert_eq!(evaluation.reasons[0].signal, "geo");
}

#[test]
fn new_country_skips_users_without_history() {
    let mut context = benign();
    context["signals"]["novelty"]["new_country"] = json!(true);
    context["profile"]["known_countries"] = json!(0);

    let evaluation = evaluate(&context);

    assert_eq!(evaluation.requirement, Requirement::Allow);
}

#[test]
fn high_risk_score_asks_only_for_mfa() {
    let mut context = benign();
    context["risk"] = json!({ "score": 0.6, "level": "high", "top_factor": "keystroke" });
    let evaluation = evaluate(&context);
    assert_decided_by(&evaluation, Requirement::Mfa, "high_risk_score");
    assert_eq!(evaluation.reasons[0].values["score"], "0.6");
    assert_eq!(evaluation.reasons[0].values["top_factor"], "keystroke");

    context["risk"] = json!({ "score": 0.999, "level": "critical", "top_factor": null });
    let evaluation = evaluate(&context);
    assert_decided_by(&evaluation, Requirement::Mfa, "high_risk_score");
    assert!(!evaluation.reasons[0].values.contains_key("top_factor"));
}

#[test]
fn sensitive_action_needs_recent_mfa() {
    let mut context = action("add_payee");
    let evaluation = evaluate(&context);
    assert_decided_by(&evaluation, Requirement::Mfa, "sensitive_action_recent_mfa");
    assert_eq!(evaluation.reasons[0].values["last_mfa_age_s"], "86400");

    context["profile"]["last_mfa_age_s"] = json!(null);
    let evaluation = evaluate(&context);
    assert_decided_by(&evaluation, Requirement::Mfa, "sensitive_action_recent_mfa");
    assert_eq!(evaluation.reasons[0].values["last_mfa_age_s"], "never");
}

#[test]
fn sensitive_action_follows_engine_flag() {
    let mut context = action("rotate_signing_key");
    context["event"]["action"]["sensitive"] = json!(true);

    let evaluation = evaluate(&context);

    assert_decided_by(&evaluation, Requirement::Mfa, "sensitive_action_recent_mfa");
}

#[test]
fn sensitive_action_asks_admins_for_webauthn() {
    let mut context = action("create_api_key");
    context["event"]["attributes"]["roles"] = json!(["admin"]);

    let evaluation = evaluate(&context);

    assert_decided_by(&evaluation, Requirement::Mfa, "sensitive_action_recent_mfa");
    assert_eq!(evaluation.factors, [Factor::Webauthn]);
    assert_eq!(evaluation.reasons[0].values["role"], "admin");
}

#[test]
fn ordinary_action_needs_no_mfa() {
    let mut context = action("view_invoice");
    context["event"]["attributes"]["roles"] = json!(["admin"]);

    let evaluation = evaluate(&context);

    assert_eq!(evaluation.requirement, Requirement::Allow);
}

#[test]
fn shadow_rule_is_reported_but_not_enforced() {
    let mut context = benign();
    context["signals"]["novelty"]["unusual_hour"] = json!(true);
    context["signals"]["novelty"]["new_browser"] = json!(true);
    context["signals"]["novelty"]["trusted_device"] = json!(false);

    let evaluation = evaluate(&context);

    assert_eq!(evaluation.requirement, Requirement::Allow);
    assert!(evaluation.reasons.is_empty());
    assert_eq!(evaluation.shadow.len(), 1);
    let shadow = &evaluation.shadow[0];
    assert_eq!(shadow.rule_id, SHADOW_RULE);
    assert_eq!(shadow.requirement, Requirement::Mfa);
    let reason = shadow.reason.as_ref().unwrap();
    assert_eq!(reason.code, SHADOW_RULE);
    assert_eq!(reason.values["browser"], "Firefox");
}

#[test]
fn shipped_reason_codes_have_own_user_message() {
    let blocked = ["user_failure_velocity_blocked", "password_spraying_blocked"];
    let policy_codes = [RULE_ERROR_CODE, FACTOR_CONFLICT_CODE];
    let codes = SHIPPED_RULES.iter().chain(&blocked).chain(&policy_codes);

    for code in codes {
        assert!(
            REASON_USER_MESSAGES.iter().any(|(known, _)| known == code),
            "`{code}` has no entry in REASON_USER_MESSAGES"
        );
    }
}

#[test]
fn shipped_rules_fill_user_message() {
    let mut context = benign();
    context["signals"]["user_failures"] = json!(20);
    context["signals"]["novelty"]["trusted_device"] = json!(false);

    let evaluation = evaluate(&context);

    assert_decided_by(&evaluation, Requirement::Deny, "user_failure_velocity");
    let reason = &evaluation.reasons[0];
    assert_eq!(reason.code, "user_failure_velocity_blocked");
    assert_eq!(
        reason.user_message,
        reason_user_message("user_failure_velocity_blocked")
    );
}

#[test]
fn shipped_case_files_pass() {
    let policy = shipped_policy();
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../rules")
        .join(CASES_DIR);
    let files = load_cases(&dir).unwrap();

    let report = run_cases(&policy, &files);

    assert!(report.is_success(), "{report}");
    let tested: Vec<String> = files
        .iter()
        .filter_map(|file| file.path.file_stem())
        .map(|stem| stem.to_string_lossy().into_owned())
        .collect();
    for rule in SHIPPED_RULES {
        assert!(
            tested.iter().any(|stem| stem == rule),
            "no case file for `{rule}`"
        );
    }
}
