use std::collections::BTreeMap;

use serde_json::json;

use super::*;

#[derive(Serialize)]
enum Shape {
    Unit,
    Newtype(u32),
    Tuple(u8, String),
    Struct { side: f64 },
}

#[derive(Serialize)]
struct Context {
    event: Event,
    signals: Option<BTreeMap<String, u64>>,
    risk: (f32, char),
    profile: Vec<Shape>,
}

#[derive(Serialize)]
struct Event {
    #[serde(rename = "type")]
    kind: &'static str,
    id: String,
    bytes: serde_bytes_like::Bytes,
    shape: Shape,
}

/// A byte string that serializes through `serialize_bytes`, as `serde_bytes` does.
mod serde_bytes_like {
    pub struct Bytes(pub Vec<u8>);

    impl serde::Serialize for Bytes {
        fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            serializer.serialize_bytes(&self.0)
        }
    }
}

fn context() -> Context {
    Context {
        event: Event {
            kind: "login_attempt",
            id: "evt-1".into(),
            bytes: serde_bytes_like::Bytes(vec![1, 2]),
            shape: Shape::Struct { side: 2.5 },
        },
        signals: Some(BTreeMap::from([("a".into(), 1), ("b".into(), u64::MAX)])),
        risk: (0.5, 'x'),
        profile: vec![Shape::Unit, Shape::Newtype(7), Shape::Tuple(1, "t".into())],
    }
}

fn filter(paths: &[(&str, &[&str])]) -> ContextFilter {
    let paths: Vec<ReadPath> = paths
        .iter()
        .map(|(variable, properties)| ReadPath {
            variable: CONTEXT_VARIABLES
                .iter()
                .position(|name| name == variable)
                .unwrap(),
            properties: properties.iter().map(|name| (*name).to_owned()).collect(),
        })
        .collect();
    ContextFilter::from_paths(&paths)
}

/// Returns the scope's constants as text, `()` for the ones left empty.
fn constants(scope: &Scope<'_>) -> Vec<String> {
    CONTEXT_VARIABLES
        .iter()
        .map(|name| format!("{:?}", scope.get(name).unwrap()))
        .collect()
}

fn full_constants<C: Serialize>(context: &C) -> Vec<String> {
    let all = filter(&[
        ("event", &[]),
        ("signals", &[]),
        ("risk", &[]),
        ("profile", &[]),
    ]);
    constants(&context_scope(context, &all).unwrap())
}

#[test]
fn whole_constants_equal_to_dynamic() {
    let context = context();
    let expected = to_dynamic(&context).unwrap().cast::<Map>();

    let converted = full_constants(&context);

    for (name, text) in CONTEXT_VARIABLES.iter().zip(&converted) {
        assert_eq!(*text, format!("{:?}", expected[*name]), "{name}");
    }
}

#[test]
fn filter_keeps_only_read_fields() {
    let context = context();
    let filter = filter(&[("event", &["type"]), ("signals", &["b"])]);

    let scope = context_scope(&context, &filter).unwrap();

    let event = scope.get("event").unwrap().clone().cast::<Map>();
    assert_eq!(event.len(), 1);
    assert_eq!(event["type"].to_string(), "login_attempt");
    let signals = scope.get("signals").unwrap().clone().cast::<Map>();
    assert_eq!(signals.len(), 1);
    assert_eq!(
        format!("{:?}", signals["b"]),
        format!("{:?}", to_dynamic(u64::MAX).unwrap())
    );
    assert!(scope.get("risk").unwrap().is_unit());
    assert!(scope.get("profile").unwrap().is_unit());
}

#[test]
fn filtered_field_equals_to_dynamic() {
    let context = context();
    let expected = to_dynamic(&context.event).unwrap().cast::<Map>();
    let filter = filter(&[("event", &["bytes"]), ("event", &["shape", "side"])]);

    let scope = context_scope(&context, &filter).unwrap();

    let event = scope.get("event").unwrap().clone().cast::<Map>();
    assert!(event["bytes"].is_blob());
    assert_eq!(
        format!("{:?}", event["bytes"]),
        format!("{:?}", expected["bytes"])
    );
    // The path continues below a struct variant, which is converted whole.
    assert_eq!(
        format!("{:?}", event["shape"]),
        format!("{:?}", expected["shape"])
    );
}

#[test]
fn path_below_scalar_keeps_scalar() {
    let context = context();
    let filter = filter(&[("event", &["type", "len"]), ("risk", &["score"])]);

    let scope = context_scope(&context, &filter).unwrap();

    let event = scope.get("event").unwrap().clone().cast::<Map>();
    assert_eq!(event["type"].to_string(), "login_attempt");
    let expected_risk = format!("{:?}", to_dynamic(context.risk).unwrap());
    assert_eq!(format!("{:?}", scope.get("risk").unwrap()), expected_risk);
}

#[test]
fn json_context_converts_like_to_dynamic() {
    let context = json!({
        "event": { "type": "action", "action": { "name": "add_payee", "sensitive": true } },
        "signals": null,
        "risk": { "score": 0.25, "contributions": [{ "feature": "asn", "log_odds": 1.5 }] },
        "profile": { "last_mfa_age_s": 42 },
    });
    let expected = to_dynamic(&context).unwrap().cast::<Map>();

    let converted = full_constants(&context);

    for (name, text) in CONTEXT_VARIABLES.iter().zip(&converted) {
        assert_eq!(*text, format!("{:?}", expected[*name]), "{name}");
    }
}

#[test]
fn conversion_error_is_to_dynamic_error() {
    let context = json!({ "event": { "type": "x" } });
    let mut bad = BTreeMap::new();
    bad.insert((1, 2), "tuple keys are not strings");
    let context = (context, bad);
    let filter = filter(&[("event", &["type"])]);

    let error = context_scope(&context, &filter).unwrap_err();

    let expected = to_dynamic(&context).unwrap_err();
    assert_eq!(
        error,
        format!("failed to convert the evaluation context: {expected}")
    );
}

#[test]
fn non_map_context_is_rejected() {
    let error = context_scope(&"text", &filter(&[("event", &[])])).unwrap_err();

    assert!(error.contains("expected a map"), "{error}");
}
