use serde_json::{Value, json};

use super::*;

fn rule(id: &str, mode: &str, priority: i64, body: &str) -> (String, String) {
    let text = format!(
        "//! id: {id}\n//! version: 2\n//! description: test rule\n\
         //! owner: security@example.com\n//! mode: {mode}\n//! priority: {priority}\n{body}\n"
    );
    (format!("{id}.rhai"), text)
}

fn policy_with(config: PolicyConfig, sources: &[(String, String)]) -> Policy {
    let rules = RuleSet::from_sources(sources, &config).unwrap();
    Policy::new(config, rules)
}

fn policy(sources: &[(String, String)]) -> Policy {
    policy_with(PolicyConfig::default(), sources)
}

fn context() -> Value {
    json!({
        "event": { "type": "login_attempt", "user_id": "u1", "attributes": { "roles": ["admin"] } },
        "signals": { "travel": null, "user_failures": 3 },
        "risk": { "score": 0.2, "level": "low" },
        "profile": { "verified_logins": 12 },
    })
}

#[test]
fn live_rules_decide_and_fill_reasons() {
    let policy = policy(&[
        rule("quiet", "live", 30, "()"),
        rule(
            "failures",
            "live",
            20,
            r#"if signals.user_failures >= 3 {
                   mfa("failures", "3 failures", #{ count: signals.user_failures, signal: "velocity" })
               }"#,
        ),
        rule("fine", "live", 10, r#"allow("fine", "nothing wrong")"#),
    ]);

    let evaluation = policy.evaluate(&context());

    assert_eq!(evaluation.requirement, Requirement::Mfa);
    assert_eq!(
        evaluation.factors,
        [Factor::Webauthn, Factor::Totp, Factor::Push]
    );
    assert_eq!(evaluation.deciding_rules, ["failures"]);
    assert_eq!(evaluation.reasons.len(), 1);
    let reason = &evaluation.reasons[0];
    assert_eq!(reason.code, "failures");
    assert_eq!(reason.signal, "velocity");
    assert_eq!(reason.rule_id, "failures");
    assert_eq!(reason.rule_version, "2");
    assert_eq!(reason.values["count"], "3");
    assert!(evaluation.rule_errors.is_empty());
    assert_eq!(evaluation.rule_set_version, policy.rule_set().version());
}

#[test]
fn user_message_header_fills_reasons() {
    let header = "//! user_message: Please confirm this sign-in.\n";
    let (file, text) = rule("failures", "live", 20, r#"mfa("failures", "3 failures")"#);
    let (shadow_file, shadow_text) = rule("candidate", "shadow", 10, r#"mfa("candidate", "x")"#);
    let policy = policy(&[
        (
            file,
            text.replacen("//! priority", &format!("{header}//! priority"), 1),
        ),
        (shadow_file, shadow_text),
    ]);

    let evaluation = policy.evaluate(&context());

    assert_eq!(
        evaluation.reasons[0].user_message,
        "Please confirm this sign-in."
    );
    let shadow_reason = evaluation.shadow[0].reason.as_ref().unwrap();
    assert_eq!(
        shadow_reason.user_message,
        stepup_events::GENERIC_REASON_USER_MESSAGE
    );
}

#[test]
fn no_opinion_allows_without_reasons() {
    let policy = policy(&[rule("quiet", "live", 1, "()")]);

    let evaluation = policy.evaluate(&context());

    assert_eq!(evaluation.requirement, Requirement::Allow);
    assert!(evaluation.reasons.is_empty());
    assert!(evaluation.deciding_rules.is_empty());
}

#[test]
fn runtime_error_gives_fail_mode() {
    let policy = policy(&[
        rule("broken", "live", 20, r#"throw "boom""#),
        rule("denier", "live", 10, r#"deny("blocked", "blocked")"#),
        rule(
            "mfa_rule",
            "live",
            5,
            r#"mfa("checked", "checked", ["totp"])"#,
        ),
    ]);

    let evaluation = policy.evaluate(&context());

    assert_eq!(evaluation.requirement, Requirement::Deny);
    assert_eq!(evaluation.deciding_rules, ["denier"]);
    assert_eq!(evaluation.rule_errors.len(), 1);
    assert_eq!(evaluation.rule_errors[0].rule_id, "broken");
    assert_eq!(evaluation.rule_errors[0].mode, RuleMode::Live);
    assert!(evaluation.rule_errors[0].message.contains("boom"));
}

#[test]
fn failed_rule_reason_uses_rule_error_code() {
    let policy = policy(&[rule("broken", "live", 1, r#"throw "boom""#)]);

    let evaluation = policy.evaluate(&context());

    assert_eq!(evaluation.requirement, Requirement::Mfa);
    assert_eq!(
        evaluation.factors,
        [Factor::Webauthn, Factor::Totp, Factor::Push]
    );
    assert_eq!(evaluation.deciding_rules, ["broken"]);
    assert_eq!(evaluation.reasons[0].code, RULE_ERROR_CODE);
    assert_eq!(evaluation.reasons[0].rule_id, "broken");
    assert!(evaluation.reasons[0].message.contains("fail mode `mfa`"));
}

#[test]
fn fail_mode_follows_config() {
    let config = PolicyConfig {
        fail_mode: Requirement::Deny,
        ..PolicyConfig::default()
    };
    let policy = policy_with(config, &[rule("broken", "live", 1, r#"throw "boom""#)]);

    let evaluation = policy.evaluate(&context());

    assert_eq!(evaluation.requirement, Requirement::Deny);
    assert!(evaluation.factors.is_empty());
}

#[test]
fn infinite_loop_hits_operation_limit() {
    let config = PolicyConfig {
        max_operations: 1_000,
        ..PolicyConfig::default()
    };
    let policy = policy_with(
        config,
        &[
            rule("spinner", "live", 20, "loop {}"),
            rule("fine", "live", 10, r#"allow("fine", "fine")"#),
        ],
    );

    let evaluation = policy.evaluate(&context());

    assert_eq!(evaluation.requirement, Requirement::Mfa);
    assert_eq!(evaluation.rule_errors.len(), 1);
    let message = &evaluation.rule_errors[0].message;
    assert!(
        message.to_lowercase().contains("too many operations"),
        "{message}"
    );
}

#[test]
fn deep_recursion_hits_call_depth_limit() {
    let policy = policy(&[rule(
        "recursive",
        "live",
        1,
        "fn down(n) { down(n + 1) }\ndown(0)",
    )]);

    let evaluation = policy.evaluate(&context());

    assert_eq!(evaluation.requirement, Requirement::Mfa);
    assert_eq!(evaluation.rule_errors.len(), 1);
    let message = &evaluation.rule_errors[0].message;
    assert!(
        message.to_lowercase().contains("stack overflow"),
        "{message}"
    );
}

#[test]
fn long_string_hits_size_limit() {
    let config = PolicyConfig {
        max_string_bytes: 64,
        ..PolicyConfig::default()
    };
    let policy = policy_with(
        config,
        &[rule(
            "grower",
            "live",
            1,
            r#"let s = "x"; for i in 0..20 { s += s; } ()"#,
        )],
    );

    let evaluation = policy.evaluate(&context());

    assert_eq!(evaluation.rule_errors.len(), 1);
    let message = &evaluation.rule_errors[0].message;
    assert!(
        message.to_lowercase().contains("length of string"),
        "{message}"
    );
}

#[test]
fn non_verdict_value_is_a_rule_error() {
    let policy = policy(&[rule("number", "live", 1, "42")]);

    let evaluation = policy.evaluate(&context());

    assert_eq!(evaluation.requirement, Requirement::Mfa);
    let message = &evaluation.rule_errors[0].message;
    assert!(message.contains("value of type `i64`"), "{message}");
}

#[test]
fn unknown_factor_is_a_rule_error() {
    let policy = policy(&[rule("pigeon", "live", 1, r#"mfa("x", "x", ["pigeon"])"#)]);

    let evaluation = policy.evaluate(&context());

    let message = &evaluation.rule_errors[0].message;
    assert!(message.contains("unknown factor `pigeon`"), "{message}");
}

#[test]
fn field_of_missing_value_explains_fix() {
    let policy = policy(&[rule(
        "travel",
        "live",
        1,
        "if signals.travel.impossible { () }",
    )]);

    let evaluation = policy.evaluate(&context());

    let message = &evaluation.rule_errors[0].message;
    assert!(message.contains("signals.travel != ()"), "{message}");
}

#[test]
fn safe_navigation_reads_missing_value_as_unit() {
    let body = r#"if signals.travel?.impossible == true { deny("travel", "travel") }
                  else if profile?.missing?.deeper == () { allow("unit", "unit") }"#;
    let policy = policy(&[rule("travel", "live", 1, body)]);

    let evaluation = policy.evaluate(&context());

    assert!(
        evaluation.rule_errors.is_empty(),
        "{:?}",
        evaluation.rule_errors
    );
    assert_eq!(evaluation.requirement, Requirement::Allow);
    assert_eq!(evaluation.reasons[0].code, "unit");
}

#[test]
fn missing_context_key_reads_as_unit() {
    let policy = policy(&[rule(
        "no_profile",
        "live",
        1,
        r#"if profile == () { allow("none", "none") }"#,
    )]);

    let evaluation = policy.evaluate(&json!({ "event": {}, "signals": {}, "risk": {} }));

    assert!(
        evaluation.rule_errors.is_empty(),
        "{:?}",
        evaluation.rule_errors
    );
    assert_eq!(evaluation.reasons[0].code, "none");
}

#[test]
fn non_map_context_fails_every_rule() {
    let policy = policy(&[
        rule("a_rule", "live", 2, "()"),
        rule("b_rule", "shadow", 1, "()"),
    ]);

    let evaluation = policy.evaluate(&42);

    assert_eq!(evaluation.requirement, Requirement::Mfa);
    assert_eq!(evaluation.rule_errors.len(), 2);
    assert!(evaluation.rule_errors[0].message.contains("expected a map"));
}

#[test]
fn rule_cannot_change_context_for_next_rule() {
    let policy = policy(&[
        rule("writer", "live", 20, r#"event.user_id = "mallory"; ()"#),
        rule(
            "pusher",
            "live",
            15,
            r#"event.attributes.roles.push("root"); ()"#,
        ),
        rule(
            "shadower",
            "live",
            12,
            r#"let event = #{ user_id: "eve" }; ()"#,
        ),
        rule(
            "reader",
            "live",
            10,
            r#"if event.user_id == "u1" && !("root" in event.attributes.roles) {
                   deny("unchanged", "context unchanged")
               }"#,
        ),
    ]);

    let evaluation = policy.evaluate(&context());

    let failed: Vec<&str> = evaluation
        .rule_errors
        .iter()
        .map(|e| e.rule_id.as_str())
        .collect();
    assert_eq!(failed, ["writer", "pusher"]);
    assert_eq!(evaluation.deciding_rules, ["reader"]);
}

#[test]
fn top_level_return_ends_rule() {
    let body = r#"if event.type != "action" { return; }
                  deny("action", "action")"#;
    let policy = policy(&[rule("early", "live", 1, body)]);

    let evaluation = policy.evaluate(&context());

    assert!(
        evaluation.rule_errors.is_empty(),
        "{:?}",
        evaluation.rule_errors
    );
    assert_eq!(evaluation.requirement, Requirement::Allow);
}

#[test]
fn shadow_verdicts_are_reported_not_enforced() {
    let policy = policy(&[
        rule(
            "strict",
            "shadow",
            30,
            r#"deny("would_deny", "would deny", #{ signal: "test" })"#,
        ),
        rule(
            "picky",
            "shadow",
            25,
            r#"mfa("would_mfa", "would mfa", ["sms", "totp"])"#,
        ),
        rule("silent", "shadow", 20, "()"),
        rule("broken", "shadow", 15, r#"throw "boom""#),
        rule("fine", "live", 10, r#"allow("fine", "fine")"#),
    ]);

    let evaluation = policy.evaluate(&context());

    assert_eq!(evaluation.requirement, Requirement::Allow);
    assert_eq!(evaluation.deciding_rules, ["fine"]);
    let shadow: Vec<(&str, Requirement)> = evaluation
        .shadow
        .iter()
        .map(|verdict| (verdict.rule_id.as_str(), verdict.requirement))
        .collect();
    assert_eq!(
        shadow,
        [
            ("strict", Requirement::Deny),
            ("picky", Requirement::Mfa),
            ("silent", Requirement::Allow),
            ("broken", Requirement::Mfa),
        ]
    );
    let strict = evaluation.shadow[0].reason.as_ref().unwrap();
    assert_eq!(strict.code, "would_deny");
    assert_eq!(strict.signal, "test");
    assert_eq!(strict.rule_version, "2");
    assert_eq!(evaluation.shadow[1].factors, [Factor::Totp, Factor::Sms]);
    assert_eq!(evaluation.shadow[2].reason, None);
    assert_eq!(
        evaluation.shadow[3].reason.as_ref().unwrap().code,
        RULE_ERROR_CODE
    );
    assert_eq!(evaluation.rule_errors[0].mode, RuleMode::Shadow);
}

#[test]
fn conflicting_factor_sets_fall_back_to_webauthn() {
    let policy = policy(&[
        rule("sms_only", "live", 2, r#"mfa("a", "a", ["sms"])"#),
        rule("totp_only", "live", 1, r#"mfa("b", "b", ["totp"])"#),
    ]);

    let evaluation = policy.evaluate(&context());

    assert_eq!(evaluation.factors, [Factor::Webauthn]);
    assert_eq!(evaluation.deciding_rules, ["sms_only", "totp_only"]);
    assert_eq!(
        evaluation.reasons.last().unwrap().code,
        crate::FACTOR_CONFLICT_CODE
    );
}

#[test]
fn replace_swaps_rule_set() {
    let policy = policy(&[rule("denier", "live", 1, r#"deny("no", "no")"#)]);
    let old_version = policy.rule_set().version().to_string();
    let rules =
        RuleSet::from_sources(&[rule("quiet", "live", 1, "()")], &PolicyConfig::default()).unwrap();

    policy.replace(rules);

    let evaluation = policy.evaluate(&context());
    assert_eq!(evaluation.requirement, Requirement::Allow);
    assert_ne!(evaluation.rule_set_version, old_version);
}

#[test]
fn policy_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Policy>();
}

#[test]
fn warn_limiter_logs_once_per_interval_and_counts() {
    let limiter = WarnLimiter::new(Duration::from_secs(10));
    let start = Instant::now();

    assert_eq!(limiter.check("a", start), Some(0));
    assert_eq!(limiter.check("a", start + Duration::from_secs(1)), None);
    assert_eq!(limiter.check("a", start + Duration::from_secs(9)), None);
    assert_eq!(limiter.check("b", start + Duration::from_secs(9)), Some(0));
    assert_eq!(limiter.check("a", start + Duration::from_secs(10)), Some(2));
    assert_eq!(limiter.check("a", start + Duration::from_secs(11)), None);
}

/// Returns a rule body for a verdict, where `None` is no opinion and `Some(None)` a failure.
fn verdict_body(verdict: Option<Option<Requirement>>) -> &'static str {
    match verdict {
        None => "()",
        Some(None) => r#"throw "boom""#,
        Some(Some(Requirement::Allow)) => r#"allow("ok", "ok")"#,
        Some(Some(Requirement::Mfa)) => r#"mfa("check", "check", ["totp", "sms"])"#,
        Some(Some(Requirement::Deny)) => r#"deny("no", "no")"#,
    }
}

fn verdict_strategy() -> impl proptest::strategy::Strategy<Value = Option<Option<Requirement>>> {
    use proptest::prelude::*;
    prop::option::of(prop::option::of(prop::sample::select(
        Requirement::ALL.to_vec(),
    )))
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

    #[test]
    fn requirement_is_max_of_live_rules(
        rules in proptest::collection::vec((proptest::bool::ANY, verdict_strategy()), 0..6),
        fail_mode in proptest::sample::select(Requirement::ALL.to_vec()),
    ) {
        let sources: Vec<(String, String)> = rules
            .iter()
            .enumerate()
            .map(|(index, (live, verdict))| {
                let mode = if *live { "live" } else { "shadow" };
                rule(&format!("rule_{index}"), mode, index as i64, verdict_body(*verdict))
            })
            .collect();
        let config = PolicyConfig { fail_mode, ..PolicyConfig::default() };
        let policy = policy_with(config, &sources);

        let evaluation = policy.evaluate(&context());

        let expected = rules
            .iter()
            .filter(|(live, _)| *live)
            .filter_map(|(_, verdict)| verdict.map(|verdict| verdict.unwrap_or(fail_mode)))
            .max()
            .unwrap_or(Requirement::Allow);
        let shadow_count = rules.iter().filter(|(live, _)| !*live).count();
        let failed_count = rules.iter().filter(|(_, verdict)| *verdict == Some(None)).count();
        proptest::prop_assert_eq!(evaluation.requirement, expected);
        proptest::prop_assert_eq!(evaluation.shadow.len(), shadow_count);
        proptest::prop_assert_eq!(evaluation.rule_errors.len(), failed_count);
    }
}
