//! Checks the documented examples under `docs/examples/` against the parser and the JSON Schema.
//!
//! Every `docs/examples/*.json` must parse and validate. Every file under
//! `docs/examples/invalid/` must be rejected with the dead-letter code its name starts with
//! (`<code>.json` or `<code>-<case>.json`).

use std::path::{Path, PathBuf};

use serde_json::Value;
use stepup_events::parse_event;

/// Codes of [`stepup_events::ParseError`]. Each needs at least one invalid example.
const PARSE_CODES: [&str; 7] = [
    "too_large",
    "not_json",
    "not_object",
    "missing_field",
    "unknown_type",
    "unsupported_version",
    "invalid_field",
];

/// Invalid examples that the schema accepts, because JSON Schema cannot state their rule.
const SCHEMA_BLIND: [&str; 2] = ["too_large.json", "invalid_field-key-up-before-down.json"];

fn docs_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs")
}

/// Returns the files directly inside `dir`, sorted, optionally only those ending in `.json`.
fn files_in(dir: &Path, json_only: bool) -> Vec<PathBuf> {
    let entries = std::fs::read_dir(dir)
        .unwrap_or_else(|err| panic!("failed to list `{}`: {err}", dir.display()));
    let mut files: Vec<PathBuf> = entries
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| path.is_file())
        .filter(|path| !json_only || path.extension().is_some_and(|ext| ext == "json"))
        .collect();
    files.sort();
    files
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|err| panic!("failed to read `{}`: {err}", path.display()))
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .expect("a listed file has a name")
        .to_string_lossy()
        .into_owned()
}

/// Returns the dead-letter code a file name promises: the stem up to the first `-`.
fn expected_code(path: &Path) -> String {
    let stem = path
        .file_stem()
        .expect("a listed file has a stem")
        .to_string_lossy();
    stem.split('-').next().unwrap_or_default().to_owned()
}

fn schema_validator() -> jsonschema::Validator {
    let path = docs_dir().join("schema/event.v1.schema.json");
    let schema: Value = serde_json::from_slice(&read(&path))
        .unwrap_or_else(|err| panic!("`{}` is not JSON: {err}", path.display()));
    jsonschema::draft202012::options()
        .should_validate_formats(true)
        .build(&schema)
        .unwrap_or_else(|err| panic!("`{}` is not a valid schema: {err}", path.display()))
}

#[test]
fn valid_examples_parse() {
    let files = files_in(&docs_dir().join("examples"), true);
    assert!(files.len() >= 5, "expected one example per event type");

    for path in &files {
        let name = file_name(path);
        let event = parse_event(&read(path))
            .unwrap_or_else(|err| panic!("docs/examples/{name} does not parse: {err}"));
        let kind = event.kind().as_str();
        assert!(
            name.starts_with(kind),
            "docs/examples/{name} holds a `{kind}` event"
        );
    }
}

#[test]
fn valid_examples_cover_every_type() {
    let files = files_in(&docs_dir().join("examples"), true);
    for kind in stepup_events::EventKind::ALL {
        let found = files
            .iter()
            .any(|path| file_name(path).starts_with(kind.as_str()));
        assert!(found, "no docs/examples/{}*.json", kind.as_str());
    }
}

#[test]
fn valid_examples_match_schema() {
    let validator = schema_validator();
    for path in files_in(&docs_dir().join("examples"), true) {
        let name = file_name(&path);
        let value: Value = serde_json::from_slice(&read(&path)).expect("example is JSON");
        let errors: Vec<String> = validator
            .iter_errors(&value)
            .map(|err| format!("{} at `{}`", err, err.instance_path()))
            .collect();
        assert!(
            errors.is_empty(),
            "docs/examples/{name} fails the schema: {errors:#?}"
        );
    }
}

#[test]
fn invalid_examples_get_their_code() {
    for path in files_in(&docs_dir().join("examples/invalid"), false) {
        let name = file_name(&path);
        let expected = expected_code(&path);
        assert!(
            PARSE_CODES.contains(&expected.as_str()),
            "docs/examples/invalid/{name} names no parse error code"
        );
        let err = parse_event(&read(&path))
            .err()
            .unwrap_or_else(|| panic!("docs/examples/invalid/{name} parses, but must not"));
        assert_eq!(err.code(), expected, "docs/examples/invalid/{name}: {err}");
    }
}

#[test]
fn invalid_examples_cover_every_code() {
    let files = files_in(&docs_dir().join("examples/invalid"), false);
    for code in PARSE_CODES {
        let found = files.iter().any(|path| expected_code(path) == code);
        assert!(found, "no docs/examples/invalid/{code}*");
    }
}

#[test]
fn schema_rejects_structural_invalid_examples() {
    let validator = schema_validator();
    for path in files_in(&docs_dir().join("examples/invalid"), true) {
        let name = file_name(&path);
        let value: Value = serde_json::from_slice(&read(&path)).expect("example is JSON");
        let valid = validator.is_valid(&value);
        if SCHEMA_BLIND.contains(&name.as_str()) {
            assert!(
                valid,
                "docs/examples/invalid/{name} is expected to pass the schema"
            );
        } else {
            assert!(
                !valid,
                "docs/examples/invalid/{name} passes the schema, but must not"
            );
        }
    }
}
