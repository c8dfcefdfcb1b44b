use std::cell::Cell;

use rhai::Map;

use super::*;
use crate::PolicyConfig;
use crate::sandbox::build_engine;

/// Compiles `script` the way rule files compile, with the context names declared.
fn compile(script: &str) -> AST {
    let mut scope = Scope::new();
    for name in CONTEXT_VARIABLES {
        scope.push_dynamic(name, Dynamic::UNIT);
    }
    build_engine(&PolicyConfig::default())
        .compile_with_scope(&scope, script)
        .unwrap()
}

/// Returns the read paths of `script` as dotted strings.
fn paths(script: &str) -> Vec<String> {
    RuleReads::of(&compile(script))
        .paths
        .iter()
        .map(|path| {
            let mut names = vec![CONTEXT_VARIABLES[path.variable].to_owned()];
            names.extend(path.properties.iter().cloned());
            names.join(".")
        })
        .collect()
}

fn map(entries: &[(&str, Dynamic)]) -> Dynamic {
    let map: Map = entries
        .iter()
        .map(|(name, value)| ((*name).into(), value.clone()))
        .collect();
    Dynamic::from_map(map)
}

/// Returns a scope with `signals` set to `value` and the other constants `()`.
fn scope_with_signals(value: Dynamic) -> Scope<'static> {
    let mut scope = Scope::new();
    for name in CONTEXT_VARIABLES {
        let value = if name == "signals" {
            value.clone()
        } else {
            Dynamic::UNIT
        };
        scope.push_constant_dynamic(name, value);
    }
    scope
}

fn read_path(variable: &str, properties: &[&str]) -> ReadPath {
    ReadPath {
        variable: CONTEXT_VARIABLES
            .iter()
            .position(|name| *name == variable)
            .unwrap(),
        properties: properties.iter().map(|name| (*name).to_owned()).collect(),
    }
}

/// Encodes `path` in a scope whose `signals` is `value`.
fn key_of(value: Dynamic, path: &ReadPath) -> Option<Vec<u8>> {
    let paths = [path.clone()];
    let mut encoder = KeyEncoder::new(&paths);
    let mut key = Vec::new();
    encoder
        .key(&scope_with_signals(value), &[0], &mut key)
        .then_some(key)
}

#[test]
fn property_chain_is_one_path() {
    assert_eq!(
        paths("signals?.novelty?.new_device == true"),
        ["signals.novelty.new_device"]
    );
}

#[test]
fn alias_reads_whole_value_below_its_path() {
    let script = "let novelty = signals?.novelty; novelty.new_device && novelty.trusted_device";

    assert_eq!(paths(script), ["signals.novelty"]);
}

#[test]
fn method_call_ends_path() {
    assert_eq!(
        paths(r#"event.attributes?.roles.contains("admin")"#),
        ["event.attributes.roles"]
    );
}

#[test]
fn index_or_bare_use_reads_whole_constant() {
    assert_eq!(paths(r#"signals["ip"]"#), ["signals"]);
    assert_eq!(paths("risk == ()"), ["risk"]);
    assert_eq!(paths("`${profile}`"), ["profile"]);
}

#[test]
fn covered_paths_are_dropped_and_sorted() {
    let script = "signals.novelty.new_device; event.type; signals.novelty; event.type";

    assert_eq!(paths(script), ["event.type", "signals.novelty"]);
}

#[test]
fn function_bodies_are_read_too() {
    // The function's parameter shadows the constant, so the path over-approximates.
    let script = "fn kind(event) { event.type } kind(#{ type: 1 })";

    assert_eq!(paths(script), ["event.type"]);
}

#[test]
fn rule_without_context_reads_nothing() {
    assert!(paths(r#"allow("fine", "nothing read")"#).is_empty());
}

#[test]
fn print_and_closures_are_effects() {
    let plain = RuleReads::of(&compile("signals.user_failures"));
    let printing = RuleReads::of(&compile("print(signals.user_failures); ()"));
    let sharing = RuleReads::of(&compile("let f = || signals.user_failures; f.call()"));

    assert!(!plain.logs);
    assert!(!plain.shares);
    assert!(printing.logs);
    assert!(sharing.shares);
}

#[test]
fn encoding_keeps_types_apart() {
    let path = read_path("signals", &["value"]);
    let values = [
        Dynamic::UNIT,
        Dynamic::from(1_i64),
        Dynamic::from(1.0_f64),
        Dynamic::from(true),
        Dynamic::from('a'),
        Dynamic::from("a"),
        Dynamic::from_array(vec![Dynamic::from("a")]),
        map(&[("a", Dynamic::UNIT)]),
    ];

    let keys: Vec<Vec<u8>> = values
        .iter()
        .map(|value| key_of(map(&[("value", value.clone())]), &path).unwrap())
        .collect();

    for (index, key) in keys.iter().enumerate() {
        for other in &keys[index + 1..] {
            assert_ne!(key, other, "{:?}", values[index]);
        }
    }
}

#[test]
fn encoding_keeps_path_shapes_apart() {
    let path = read_path("signals", &["travel", "to_country"]);
    let nested = map(&[("travel", map(&[("to_country", Dynamic::from("DE"))]))]);
    let flat = map(&[("travel", Dynamic::from("DE"))]);
    let missing = map(&[]);
    let unit = map(&[("travel", map(&[("to_country", Dynamic::UNIT)]))]);

    let keys = [nested, flat, missing, unit].map(|value| key_of(value, &path).unwrap());

    for (index, key) in keys.iter().enumerate() {
        for other in &keys[index + 1..] {
            assert_ne!(key, other);
        }
    }
}

#[test]
fn equal_values_give_equal_keys() {
    let path = read_path("signals", &["novelty"]);
    let novelty = || map(&[("novelty", map(&[("new_device", Dynamic::from(false))]))]);

    assert_eq!(key_of(novelty(), &path), key_of(novelty(), &path));
}

#[test]
fn shared_value_is_not_encoded() {
    let path = read_path("signals", &[]);

    assert_eq!(key_of(Dynamic::from(1_i64).into_shared(), &path), None);
}

#[test]
fn memo_runs_rule_once_per_distinct_key() {
    let paths = [read_path("signals", &["count"])];
    let memo = RuleMemo::new(vec![0], true);
    let runs = Cell::new(0);
    let mut key = Vec::new();

    for count in [1_i64, 2, 1, 1, 2] {
        let mut scope = scope_with_signals(map(&[("count", Dynamic::from(count))]));
        let mut encoder = KeyEncoder::new(&paths);
        let outcome = memo.get_or_run(&mut scope, &mut encoder, &mut key, |_| {
            runs.set(runs.get() + 1);
            count * 10
        });
        assert_eq!(outcome, count * 10);
    }

    assert_eq!(runs.get(), 2);
}

#[test]
fn disabled_memo_runs_rule_every_time() {
    let paths = [read_path("signals", &[])];
    let memo = RuleMemo::new(vec![0], false);
    let runs = Cell::new(0);
    let mut key = Vec::new();

    for _ in 0..3 {
        let mut scope = scope_with_signals(Dynamic::UNIT);
        let mut encoder = KeyEncoder::new(&paths);
        memo.get_or_run(&mut scope, &mut encoder, &mut key, |_| {
            runs.set(runs.get() + 1)
        });
    }

    assert_eq!(runs.get(), 3);
}

#[test]
fn memo_stops_after_a_window_of_misses() {
    let paths = [read_path("signals", &[])];
    let memo = RuleMemo::new(vec![0], true);
    let mut key = Vec::new();

    for count in 0..WINDOW_LOOKUPS as i64 {
        let mut scope = scope_with_signals(Dynamic::from(count));
        let mut encoder = KeyEncoder::new(&paths);
        memo.get_or_run(&mut scope, &mut encoder, &mut key, |_| ());
    }

    assert!(!memo.enabled.load(Ordering::Relaxed));
    assert!(memo.table.lock().outcomes.is_empty());
}

mod shipped_rules {
    use std::path::PathBuf;

    use proptest::prelude::*;
    use serde_json::{Value, json};

    use crate::{Policy, PolicyConfig, RuleSet};

    fn shipped_policy() -> Policy {
        let config = PolicyConfig {
            dir: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../rules"),
            ..PolicyConfig::default()
        };
        let rules = RuleSet::load_dir(&config).unwrap();
        Policy::new(config, rules)
    }

    /// Login and action contexts drawn from small sets of values, so that values repeat.
    fn context() -> impl Strategy<Value = Value> {
        let novelty = (any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>());
        let travel =
            prop_oneof![
            Just(Value::Null),
            (any::<bool>(), prop_oneof![Just(0.3), Just(0.9)]).prop_map(|(impossible, confidence)| {
                json!({ "impossible": impossible, "confidence": confidence, "from_city": "Oslo",
                        "from_country": "NO", "to_city": null, "to_country": "BR",
                        "distance_km": 10_432.6, "min_speed_kmh": 5_100.2, "elapsed_s": 7_300.0 })
            }),
        ];
        let keystroke = prop_oneof![
            Just(Value::Null),
            (any::<bool>(), prop_oneof![Just(0.5), Just(0.95)]).prop_map(|(enrolled, score)| {
                json!({ "field": "password", "enrolled": enrolled, "score": score,
                        "samples": 12, "reason": "hold times" })
            }),
        ];
        let network = prop_oneof![
            Just("residential"),
            Just("hosting"),
            Just("anonymous"),
            Just("mobile")
        ];
        (
            (any::<bool>(), any::<bool>(), novelty, 0..25_u32, 0..25_u32),
            (network, any::<bool>(), any::<bool>(), travel, keystroke),
            (
                prop_oneof![Just(0.1), Just(0.7)],
                0..3_u32,
                prop_oneof![Just(Value::Null), Just(json!(100)), Just(json!(5000))],
            ),
        )
            .prop_map(|(who, place, risk)| {
                let (is_action, admin, novelty, failures, sprayed) = who;
                let (network, first_login, geo_known, travel, keystroke) = place;
                let (score, countries, last_mfa) = risk;
                let roles = if admin {
                    json!(["admin"])
                } else {
                    json!(["staff"])
                };
                json!({
                    "event": {
                        "type": if is_action { "action" } else { "login_attempt" },
                        "user_agent": { "browser": "Firefox", "os": "Linux", "category": "pc" },
                        "attributes": { "roles": roles },
                        "action": if is_action {
                            json!({ "name": "add_payee", "sensitive": false, "max_mfa_age_s": 900 })
                        } else {
                            Value::Null
                        },
                    },
                    "signals": {
                        "geo_known": geo_known,
                        "travel": travel,
                        "novelty": {
                            "new_device": novelty.0, "trusted_device": novelty.1,
                            "new_country": novelty.2, "new_city": false, "new_asn": false,
                            "new_browser": novelty.3, "new_os": false, "unusual_hour": novelty.3,
                        },
                        "user_failures": failures,
                        "ip": { "failures": sprayed * 2, "distinct_failed_users": sprayed },
                        "network": network,
                        "first_login": first_login,
                        "keystroke": keystroke,
                    },
                    "risk": { "score": score, "level": if score > 0.5 { "high" } else { "low" },
                              "top_factor": "country", "contributions": [] },
                    "profile": { "known_countries": countries, "last_mfa_age_s": last_mfa },
                })
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(8))]

        #[test]
        fn memoized_evaluations_equal_fresh_ones(
            contexts in proptest::collection::vec(context(), 200)
        ) {
            let warm = shipped_policy();
            for context in &contexts {
                let memoized = warm.evaluate(context);
                let fresh = shipped_policy().evaluate(context);
                prop_assert_eq!(memoized, fresh, "{}", context);
            }
        }
    }
}
