//! Loading and compiling rule files into a [`RuleSet`].

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use rhai::{AST, Engine, Scope};

use crate::context::ContextFilter;
use crate::memo::{ReadPath, RuleMemo, RuleReads};
use crate::meta::RuleMeta;
use crate::policy::Outcome;
use crate::sandbox::{CONTEXT_VARIABLES, build_engine};
use crate::{PolicyConfig, PolicyError};

/// File extension of rule files.
const RULE_EXTENSION: &str = "rhai";

/// Compiled rules, sorted by priority (highest first) and then by id.
///
/// A rule set is immutable; [`Policy::replace`](crate::Policy::replace) swaps in a new one.
#[derive(Debug)]
pub struct RuleSet {
    metas: Vec<RuleMeta>,
    asts: Vec<AST>,
    /// Each rule's earlier outcomes, aligned with `asts`.
    memos: Vec<RuleMemo<Outcome>>,
    /// Distinct context paths that the rules read. The memos refer to them by index.
    read_paths: Vec<ReadPath>,
    /// Context fields that some rule reads, the only ones converted for an evaluation.
    context_filter: ContextFilter,
    version: String,
}

/// One rule file before compilation.
struct Source {
    /// Name used in errors and in the version hash: the bare file name.
    name: String,
    path: PathBuf,
    text: String,
}

// === impl RuleSet ===

impl RuleSet {
    /// Compiles every `*.rhai` file in `config.dir`.
    ///
    /// Fails when the directory cannot be read or contains no rule file. It also fails on the first
    /// file with invalid metadata or a compile error, and the error names the file (and the line,
    /// for Rhai errors).
    pub fn load_dir(config: &PolicyConfig) -> Result<RuleSet, PolicyError> {
        config.validate()?;
        let sources = read_dir_sources(&config.dir)?;
        if sources.is_empty() {
            return Err(PolicyError::NoRules {
                dir: config.dir.clone(),
            });
        }
        compile_sources(sources, config)
    }

    /// Compiles rules from `(file name, text)` pairs, as if they were files of one directory.
    ///
    /// Each rule's [`RuleMeta::path`] is the bare file name. An empty list gives an empty set.
    pub fn from_sources(
        sources: &[(String, String)],
        config: &PolicyConfig,
    ) -> Result<RuleSet, PolicyError> {
        config.validate()?;
        let sources = sources
            .iter()
            .map(|(name, text)| Source {
                name: name.clone(),
                path: PathBuf::from(name),
                text: text.clone(),
            })
            .collect();
        compile_sources(sources, config)
    }

    /// Returns the content hash of all rule files: 12 hex digits of a 64-bit FNV-1a hash over
    /// the file names and texts sorted by name, so the same files give the same version anywhere.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// Returns the rules' metadata in evaluation order.
    pub fn rules(&self) -> &[RuleMeta] {
        &self.metas
    }

    /// Returns each rule's metadata with its compiled script and its memo, in evaluation order.
    pub(crate) fn compiled(&self) -> impl Iterator<Item = (&RuleMeta, &AST, &RuleMemo<Outcome>)> {
        self.metas
            .iter()
            .zip(&self.asts)
            .zip(&self.memos)
            .map(|((meta, ast), memo)| (meta, ast, memo))
    }

    /// Returns the distinct context paths that the rules read.
    pub(crate) fn read_paths(&self) -> &[ReadPath] {
        &self.read_paths
    }

    /// Returns the context fields that some rule reads.
    pub(crate) fn context_filter(&self) -> &ContextFilter {
        &self.context_filter
    }
}

/// Reads every regular `*.rhai` file of `dir`.
fn read_dir_sources(dir: &Path) -> Result<Vec<Source>, PolicyError> {
    let read_dir_error = |source| PolicyError::ReadDir {
        dir: dir.to_path_buf(),
        source,
    };
    let mut sources = Vec::new();

    for entry in std::fs::read_dir(dir).map_err(read_dir_error)? {
        let path = entry.map_err(read_dir_error)?.path();
        let is_rule = path
            .extension()
            .is_some_and(|extension| extension == RULE_EXTENSION);
        if !is_rule || !path.is_file() {
            continue;
        }

        let text = std::fs::read_to_string(&path).map_err(|source| PolicyError::ReadFile {
            path: path.clone(),
            source,
        })?;
        let name = path
            .file_name()
            .map(|name| name.to_string_lossy().into_owned());
        sources.push(Source {
            name: name.unwrap_or_default(),
            path,
            text,
        });
    }
    Ok(sources)
}

fn compile_sources(
    mut sources: Vec<Source>,
    config: &PolicyConfig,
) -> Result<RuleSet, PolicyError> {
    sources.sort_by(|left, right| left.name.cmp(&right.name));
    let mut seen = BTreeSet::new();
    if let Some(repeated) = sources.iter().find(|source| !seen.insert(&source.name)) {
        return Err(PolicyError::DuplicateFile {
            file: repeated.name.clone(),
        });
    }

    let version = content_version(&sources);
    let engine = build_engine(config);
    let mut rules = Vec::with_capacity(sources.len());
    for source in &sources {
        let meta = RuleMeta::parse(&source.name, &source.path, &source.text)?;
        let ast = compile_rule(&engine, source)?;
        rules.push((meta, ast));
    }

    rules.sort_by(|(left, _), (right, _)| {
        right
            .priority
            .cmp(&left.priority)
            .then_with(|| left.id.cmp(&right.id))
    });
    let (metas, asts): (Vec<RuleMeta>, Vec<AST>) = rules.into_iter().unzip();
    let (read_paths, memos) = plan_memos(&asts);
    Ok(RuleSet {
        metas,
        asts,
        memos,
        context_filter: ContextFilter::from_paths(&read_paths),
        read_paths,
        version,
    })
}

/// Finds what each rule reads and builds its memo, with the list of distinct paths that the
/// memos refer to.
fn plan_memos(asts: &[AST]) -> (Vec<ReadPath>, Vec<RuleMemo<Outcome>>) {
    let reads: Vec<RuleReads> = asts.iter().map(RuleReads::of).collect();
    let any_shares = reads.iter().any(|read| read.shares);
    let mut distinct: Vec<ReadPath> = reads
        .iter()
        .flat_map(|read| read.paths.iter().cloned())
        .collect();
    distinct.sort();
    distinct.dedup();

    let memos = reads
        .iter()
        .map(|read| {
            let indices = read
                .paths
                .iter()
                .map(|path| {
                    distinct
                        .binary_search(path)
                        .expect("the distinct paths contain every rule's paths")
                })
                .collect();
            RuleMemo::new(indices, !read.logs && !any_shares)
        })
        .collect();
    (distinct, memos)
}

/// Compiles one rule, with the context variables declared so that strict-variables mode
/// rejects misspelt names (`singals`) at load time rather than on the first event.
fn compile_rule(engine: &Engine, source: &Source) -> Result<AST, PolicyError> {
    let mut scope = Scope::new();
    for name in CONTEXT_VARIABLES {
        // Plain variables, not constants: the optimizer would fold a constant's placeholder
        // value into the script.
        scope.push_dynamic(name, rhai::Dynamic::UNIT);
    }

    let mut ast = engine
        .compile_with_scope(&scope, &source.text)
        .map_err(|error| PolicyError::Compile {
            file: source.name.clone(),
            line: error.position().line().unwrap_or(0),
            message: error.err_type().to_string(),
        })?;
    ast.set_source(source.name.as_str());
    Ok(ast)
}

/// Hashes the sorted sources with 64-bit FNV-1a and returns the first 12 hex digits.
fn content_version(sorted_sources: &[Source]) -> String {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;

    let mut hash = OFFSET_BASIS;
    let mut feed = |bytes: &[u8]| {
        for byte in bytes {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(PRIME);
        }
    };
    for source in sorted_sources {
        // Length prefixes keep ("ab", "c") and ("a", "bc") apart.
        feed(&(source.name.len() as u64).to_le_bytes());
        feed(source.name.as_bytes());
        feed(&(source.text.len() as u64).to_le_bytes());
        feed(source.text.as_bytes());
    }

    let mut version = format!("{hash:016x}");
    version.truncate(12);
    version
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RuleMode;

    fn rule(id: &str, mode: &str, priority: i64, body: &str) -> (String, String) {
        let text = format!(
            "//! id: {id}\n//! version: 1\n//! description: test rule\n\
             //! owner: security@example.com\n//! mode: {mode}\n//! priority: {priority}\n{body}\n"
        );
        (format!("{id}.rhai"), text)
    }

    fn load(sources: &[(String, String)]) -> Result<RuleSet, PolicyError> {
        RuleSet::from_sources(sources, &PolicyConfig::default())
    }

    #[test]
    fn rules_sort_by_priority_then_id() {
        let set = load(&[
            rule("b_rule", "live", 10, "()"),
            rule("a_rule", "live", 10, "()"),
            rule("c_rule", "shadow", 50, "()"),
        ])
        .unwrap();

        let ids: Vec<&str> = set.rules().iter().map(|meta| meta.id.as_str()).collect();
        assert_eq!(ids, ["c_rule", "a_rule", "b_rule"]);
        assert_eq!(set.rules()[0].mode, RuleMode::Shadow);
    }

    #[test]
    fn compile_error_names_file_and_line() {
        let error = load(&[rule("broken", "live", 1, "let x = ;")]).unwrap_err();

        let PolicyError::Compile {
            file,
            line,
            message,
        } = &error
        else {
            panic!("expected a compile error, got {error}");
        };
        assert_eq!(file, "broken.rhai");
        assert_eq!(*line, 7);
        assert!(!message.is_empty());
        assert!(
            error.to_string().contains("`broken.rhai` at line 7"),
            "{error}"
        );
    }

    #[test]
    fn misspelt_context_variable_fails_to_compile() {
        let error = load(&[rule("typo", "live", 1, "if singals.first_login { () }")]).unwrap_err();

        assert!(error.to_string().contains("singals"), "{error}");
    }

    #[test]
    fn import_fails_to_compile() {
        let error = load(&[rule("io", "live", 1, "import \"x\" as x;\n()")]).unwrap_err();

        assert!(
            matches!(error, PolicyError::Compile { line: 7, .. }),
            "{error}"
        );
    }

    #[test]
    fn duplicate_file_names_are_rejected() {
        let error = load(&[
            rule("twice", "live", 1, "()"),
            rule("twice", "live", 2, "()"),
        ])
        .unwrap_err();

        assert!(
            matches!(error, PolicyError::DuplicateFile { .. }),
            "{error}"
        );
    }

    #[test]
    fn invalid_config_is_rejected_before_compiling() {
        let config = PolicyConfig {
            max_operations: 0,
            ..PolicyConfig::default()
        };

        let error = RuleSet::from_sources(&[], &config).unwrap_err();

        assert!(
            matches!(
                error,
                PolicyError::Config {
                    key: "max_operations",
                    ..
                }
            ),
            "{error}"
        );
    }

    #[test]
    fn version_is_stable_and_order_independent() {
        let first = rule("a_rule", "live", 1, "()");
        let second = rule("b_rule", "live", 1, "()");

        let version = load(&[first.clone(), second.clone()])
            .unwrap()
            .version()
            .to_string();

        assert_eq!(version.len(), 12);
        assert!(version.bytes().all(|byte| byte.is_ascii_hexdigit()));
        assert_eq!(load(&[second, first]).unwrap().version(), version);
    }

    #[test]
    fn version_changes_when_a_file_changes() {
        let original = load(&[rule("a_rule", "live", 1, "()")]).unwrap();
        let edited = load(&[rule("a_rule", "live", 1, "();")]).unwrap();

        assert_ne!(original.version(), edited.version());
    }

    #[test]
    fn load_dir_reads_only_rhai_files() {
        let temp = tempfile::tempdir().unwrap();
        let dir = temp.path().to_path_buf();
        let (name, text) = rule("only_rule", "live", 1, "()");
        std::fs::write(dir.join(&name), &text).unwrap();
        std::fs::write(dir.join("README.md"), "not a rule").unwrap();

        let config = PolicyConfig {
            dir: dir.clone(),
            ..PolicyConfig::default()
        };
        let set = RuleSet::load_dir(&config).unwrap();

        assert_eq!(set.rules().len(), 1);
        assert_eq!(set.rules()[0].path, dir.join("only_rule.rhai"));
        assert_eq!(set.version(), load(&[(name, text)]).unwrap().version());
    }

    #[test]
    fn load_dir_without_rules_is_an_error() {
        let temp = tempfile::tempdir().unwrap();
        std::fs::write(temp.path().join("notes.txt"), "not a rule").unwrap();

        let config = PolicyConfig {
            dir: temp.path().to_path_buf(),
            ..PolicyConfig::default()
        };
        let error = RuleSet::load_dir(&config).unwrap_err();

        assert!(matches!(error, PolicyError::NoRules { .. }), "{error}");
    }

    #[test]
    fn load_dir_of_missing_directory_is_an_error() {
        let config = PolicyConfig {
            dir: PathBuf::from("/nonexistent/stepup/rules"),
            ..PolicyConfig::default()
        };

        let error = RuleSet::load_dir(&config).unwrap_err();

        assert!(
            error.to_string().contains("/nonexistent/stepup/rules"),
            "{error}"
        );
    }
}
