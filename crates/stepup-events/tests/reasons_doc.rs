//! Keeps the end-user message tables of `docs/reasons.md` equal to the ones in the code.

use std::path::Path;

use stepup_events::{GENERIC_REASON_USER_MESSAGE, REASON_USER_MESSAGES, Requirement, user_message};

fn reasons_doc() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/reasons.md");
    std::fs::read_to_string(&path).expect("docs/reasons.md is readable")
}

/// Returns the rows of the Markdown table whose header line is `header`, as (key, text) pairs
/// with the backticks around the key removed.
fn table_rows(doc: &str, header: &str) -> Vec<(String, String)> {
    doc.lines()
        .skip_while(|line| *line != header)
        .skip(2)
        .take_while(|line| line.starts_with('|'))
        .map(|line| {
            let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
            (cells[0].trim_matches('`').to_string(), cells[1].to_string())
        })
        .collect()
}

#[test]
fn reason_user_message_table_matches_code() {
    let doc = reasons_doc();

    let rows = table_rows(&doc, "| code | default `user_message` |");

    let expected: Vec<(String, String)> = REASON_USER_MESSAGES
        .iter()
        .map(|(code, message)| (code.to_string(), message.to_string()))
        .collect();
    assert_eq!(rows, expected);
}

#[test]
fn requirement_user_message_table_matches_code() {
    let doc = reasons_doc();

    let rows = table_rows(&doc, "| requirement | `user_message` |");

    let expected: Vec<(String, String)> = Requirement::ALL
        .iter()
        .map(|requirement| {
            let text = match user_message(*requirement) {
                "" => "empty",
                text => text,
            };
            (requirement.as_str().to_string(), text.to_string())
        })
        .collect();
    assert_eq!(rows, expected);
}

#[test]
fn generic_user_message_is_documented() {
    let doc = reasons_doc();

    assert!(doc.contains(&format!("`{GENERIC_REASON_USER_MESSAGE}`")));
}

#[test]
fn every_summary_code_has_user_message() {
    let doc = reasons_doc();

    let summary = table_rows(
        &doc,
        "| code | source | requirement | signal | event types |",
    );

    assert!(summary.len() >= 16, "summary table not found: {summary:?}");
    for (cell, _) in summary {
        // Cells look like [`code`](#anchor).
        let code = cell
            .trim_start_matches("[`")
            .split('`')
            .next()
            .unwrap_or_default();
        assert!(
            REASON_USER_MESSAGES.iter().any(|(known, _)| *known == code),
            "`{code}` from the summary table has no entry in REASON_USER_MESSAGES"
        );
    }
}
