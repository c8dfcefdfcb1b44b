//! Rule metadata, read from the `//!` header at the top of each rule file.
//!
//! A header is the run of lines starting with `//!` at the top of the file (blank lines before
//! it are skipped). Each non-empty header line is `key: value`. Required keys: `id` (equal to
//! the file stem, snake_case), `version`, `description`, `owner`, `mode` (`live` or `shadow`)
//! and `priority` (an integer, higher runs first). Optional key: `user_message`, the sentence
//! shown to the end user for every reason the rule gives.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::PolicyError;

/// Keys a header must contain, in the order the docs list them.
const KEYS: [&str; 6] = ["id", "version", "description", "owner", "mode", "priority"];

/// Keys a header may contain.
const OPTIONAL_KEYS: [&str; 1] = ["user_message"];

/// Maximum length of a `user_message`, in characters: one or two short sentences.
const MAX_USER_MESSAGE_CHARS: usize = 200;

/// Whether a rule's verdict is enforced.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleMode {
    /// The verdict takes part in the decision.
    Live,
    /// The verdict is only reported in [`Evaluation::shadow`](crate::Evaluation::shadow).
    Shadow,
}

/// Metadata of one rule, from its file header.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RuleMeta {
    /// Rule id, equal to the file stem; used in reasons, logs and metric labels.
    pub id: String,
    /// Rule version as written by its owner, copied into every reason the rule gives.
    pub version: String,
    /// Summary of the rule for analysts.
    pub description: String,
    /// Team or person to contact about the rule.
    pub owner: String,
    /// Whether the verdict is enforced.
    pub mode: RuleMode,
    /// Evaluation and reason order: higher first, ties broken by id.
    pub priority: i64,
    /// End-user message for every reason the rule gives, from the optional `user_message` key.
    /// Without it, a reason gets the default message of its code
    /// ([`stepup_events::reason_user_message`]).
    pub user_message: Option<String>,
    /// File the rule was loaded from (the bare file name for in-memory sources).
    pub path: PathBuf,
}

// === impl RuleMode ===

impl RuleMode {
    /// Returns the header spelling (`live` or `shadow`).
    pub fn as_str(self) -> &'static str {
        match self {
            RuleMode::Live => "live",
            RuleMode::Shadow => "shadow",
        }
    }
}

// === impl RuleMeta ===

impl RuleMeta {
    /// Parses the header of `text`, loaded from `path` and named `file` in errors.
    pub(crate) fn parse(file: &str, path: &Path, text: &str) -> Result<RuleMeta, PolicyError> {
        let fields = header_fields(file, text)?;
        let field = |key: &str| required(file, &fields, key);

        let id = field("id")?;
        check_id(file, path, id)?;

        Ok(RuleMeta {
            id: id.to_string(),
            version: field("version")?.to_string(),
            description: field("description")?.to_string(),
            owner: field("owner")?.to_string(),
            mode: parse_mode(file, field("mode")?)?,
            priority: parse_priority(file, field("priority")?)?,
            user_message: parse_user_message(file, fields.get("user_message").copied())?,
            path: path.to_path_buf(),
        })
    }
}

/// Collects the `key: value` pairs of the header, rejecting unknown and repeated keys.
fn header_fields<'t>(file: &str, text: &'t str) -> Result<BTreeMap<&'t str, &'t str>, PolicyError> {
    let mut fields = BTreeMap::new();
    let header = text
        .lines()
        .enumerate()
        .skip_while(|(_, line)| line.trim().is_empty())
        .take_while(|(_, line)| line.trim_start().starts_with("//!"));

    for (index, line) in header {
        let content = line.trim_start().trim_start_matches("//!").trim();
        if content.is_empty() {
            continue;
        }
        let line_number = index + 1;
        let Some((key, value)) = content.split_once(':') else {
            return Err(metadata_error(
                file,
                content,
                format!("line {line_number} is not `key: value`; write it as `//! key: value`"),
            ));
        };

        let key = key.trim();
        if !KEYS.contains(&key) && !OPTIONAL_KEYS.contains(&key) {
            return Err(metadata_error(
                file,
                key,
                format!(
                    "unknown key on line {line_number}; use one of {}, {}",
                    KEYS.join(", "),
                    OPTIONAL_KEYS.join(", ")
                ),
            ));
        }
        if fields.insert(key, value.trim()).is_some() {
            return Err(metadata_error(
                file,
                key,
                format!("repeated on line {line_number}; keep one line per key"),
            ));
        }
    }
    Ok(fields)
}

/// Returns a required, non-empty value.
fn required<'t>(
    file: &str,
    fields: &BTreeMap<&str, &'t str>,
    key: &str,
) -> Result<&'t str, PolicyError> {
    match fields.get(key) {
        Some(value) if !value.is_empty() => Ok(value),
        Some(_) => Err(metadata_error(
            file,
            key,
            format!("empty; write `//! {key}: <value>`"),
        )),
        None => Err(metadata_error(
            file,
            key,
            format!(
                "missing; add a line `//! {key}: <value>` to the header at the top of the file"
            ),
        )),
    }
}

fn check_id(file: &str, path: &Path, id: &str) -> Result<(), PolicyError> {
    if !is_snake_case(id) {
        return Err(metadata_error(
            file,
            "id",
            format!("`{id}` is not snake_case; use only a-z, 0-9 and `_`"),
        ));
    }
    let stem = path
        .file_stem()
        .and_then(|stem| stem.to_str())
        .unwrap_or_default();
    if id != stem {
        return Err(metadata_error(
            file,
            "id",
            format!(
                "`{id}` differs from the file stem `{stem}`; rename the file to `{id}.rhai` \
                     or set `//! id: {stem}`"
            ),
        ));
    }
    Ok(())
}

fn parse_mode(file: &str, value: &str) -> Result<RuleMode, PolicyError> {
    match value {
        "live" => Ok(RuleMode::Live),
        "shadow" => Ok(RuleMode::Shadow),
        other => Err(metadata_error(
            file,
            "mode",
            format!("`{other}` is not a mode; use `live` or `shadow`"),
        )),
    }
}

fn parse_priority(file: &str, value: &str) -> Result<i64, PolicyError> {
    value.parse().map_err(|_| {
        metadata_error(
            file,
            "priority",
            format!("`{value}` is not an integer; use a whole number such as `100`"),
        )
    })
}

/// Checks the optional `user_message`: when present it must be non-empty and short.
fn parse_user_message(file: &str, value: Option<&str>) -> Result<Option<String>, PolicyError> {
    let Some(value) = value else {
        return Ok(None);
    };
    if value.is_empty() {
        return Err(metadata_error(
            file,
            "user_message",
            "empty; write a sentence for the end user or remove the line to use the default \
             message of the reason code"
                .to_string(),
        ));
    }
    let length = value.chars().count();
    if length > MAX_USER_MESSAGE_CHARS {
        return Err(metadata_error(
            file,
            "user_message",
            format!("{length} characters long; shorten it to at most {MAX_USER_MESSAGE_CHARS}"),
        ));
    }
    Ok(Some(value.to_string()))
}

/// Returns whether `text` is non-empty and made of `a-z`, `0-9` and `_` only.
pub(crate) fn is_snake_case(text: &str) -> bool {
    !text.is_empty()
        && text
            .bytes()
            .all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'_')
}

fn metadata_error(file: &str, key: &str, problem: String) -> PolicyError {
    PolicyError::Metadata {
        file: file.to_string(),
        key: key.to_string(),
        problem,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "//! id: new_country\n\
                          //! version: 3\n\
                          //! description: Ask for MFA from a new country.\n\
                          //! owner: security@example.com\n\
                          //! mode: shadow\n\
                          //! priority: -5\n";

    fn parse(file: &str, text: &str) -> Result<RuleMeta, PolicyError> {
        RuleMeta::parse(file, Path::new(file), text)
    }

    fn metadata_key(error: PolicyError) -> String {
        match error {
            PolicyError::Metadata { key, .. } => key,
            other => panic!("expected a metadata error, got {other}"),
        }
    }

    #[test]
    fn header_parses_every_key() {
        let meta = parse("new_country.rhai", &format!("\n{HEADER}//! \n()")).unwrap();

        assert_eq!(meta.id, "new_country");
        assert_eq!(meta.version, "3");
        assert_eq!(meta.description, "Ask for MFA from a new country.");
        assert_eq!(meta.owner, "security@example.com");
        assert_eq!(meta.mode, RuleMode::Shadow);
        assert_eq!(meta.priority, -5);
        assert_eq!(meta.user_message, None);
        assert_eq!(meta.path, PathBuf::from("new_country.rhai"));
    }

    #[test]
    fn user_message_is_optional_and_read() {
        let text = format!("{HEADER}//! user_message: We noticed a sign-in from a new place.\n");

        let meta = parse("new_country.rhai", &text).unwrap();

        assert_eq!(
            meta.user_message.as_deref(),
            Some("We noticed a sign-in from a new place.")
        );
    }

    #[test]
    fn empty_user_message_is_rejected() {
        let text = format!("{HEADER}//! user_message:\n");

        let error = parse("new_country.rhai", &text).unwrap_err();

        assert!(error.to_string().contains("remove the line"), "{error}");
        assert_eq!(metadata_key(error), "user_message");
    }

    #[test]
    fn long_user_message_is_rejected() {
        let text = format!("{HEADER}//! user_message: {}\n", "a".repeat(201));

        let error = parse("new_country.rhai", &text).unwrap_err();

        assert!(error.to_string().contains("201 characters long"), "{error}");
        assert_eq!(metadata_key(error), "user_message");
    }

    #[test]
    fn missing_id_names_file_and_key() {
        let text = HEADER.replace("//! id: new_country\n", "");

        let error = parse("new_country.rhai", &text).unwrap_err();

        let message = error.to_string();
        assert!(message.contains("`new_country.rhai`"), "{message}");
        assert!(
            message.contains("add a line `//! id: <value>`"),
            "{message}"
        );
        assert_eq!(metadata_key(error), "id");
    }

    #[test]
    fn id_must_equal_file_stem() {
        let error = parse("other_name.rhai", HEADER).unwrap_err();

        let message = error.to_string();
        assert!(
            message.contains("rename the file to `new_country.rhai`"),
            "{message}"
        );
        assert_eq!(metadata_key(error), "id");
    }

    #[test]
    fn id_must_be_snake_case() {
        let text = HEADER.replace("id: new_country", "id: New-Country");

        let error = parse("New-Country.rhai", &text).unwrap_err();

        assert!(error.to_string().contains("not snake_case"), "{error}");
    }

    #[test]
    fn bad_mode_is_rejected() {
        let text = HEADER.replace("mode: shadow", "mode: enforce");

        let error = parse("new_country.rhai", &text).unwrap_err();

        let message = error.to_string();
        assert!(message.contains("use `live` or `shadow`"), "{message}");
        assert_eq!(metadata_key(error), "mode");
    }

    #[test]
    fn bad_priority_is_rejected() {
        let text = HEADER.replace("priority: -5", "priority: high");

        let error = parse("new_country.rhai", &text).unwrap_err();

        assert_eq!(metadata_key(error), "priority");
    }

    #[test]
    fn unknown_key_is_rejected() {
        let text = HEADER.replace("priority: -5", "prority: -5");

        let error = parse("new_country.rhai", &text).unwrap_err();

        let message = error.to_string();
        assert!(message.contains("unknown key on line 6"), "{message}");
        assert_eq!(metadata_key(error), "prority");
    }

    #[test]
    fn repeated_key_is_rejected() {
        let text = format!("{HEADER}//! owner: someone@example.com\n");

        let error = parse("new_country.rhai", &text).unwrap_err();

        assert!(error.to_string().contains("repeated on line 7"), "{error}");
    }

    #[test]
    fn empty_value_is_rejected() {
        let text = HEADER.replace("owner: security@example.com", "owner:");

        let error = parse("new_country.rhai", &text).unwrap_err();

        assert_eq!(metadata_key(error), "owner");
    }

    #[test]
    fn header_ends_at_first_other_line() {
        let text = HEADER.replace("//! priority: -5\n", "// priority: -5\n");

        let error = parse("new_country.rhai", &text).unwrap_err();

        assert_eq!(metadata_key(error), "priority");
    }
}
