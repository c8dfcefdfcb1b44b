//! Memoized rule outcomes, keyed by the context values that a rule can read.
//!
//! A rule's only inputs are the context constants `event`, `signals`, `risk` and `profile`: the
//! sandbox has no clock, no I/O and no random numbers, nothing survives from one run to the
//! next, and a rule cannot change a constant. So a rule's outcome is a function of the context
//! values it reads, and two events that agree on those values get the same outcome.
//!
//! [`RuleReads::of`] finds those values when the rule compiles. Wherever the rule names a
//! context constant, the chain of plain property reads after the name is a path
//! (`signals?.novelty?.new_device`), and the rule may depend on everything below it. Any other
//! use of the name (`signals["ip"]`, `f(signals)`, `signals.keys()`) ends the path earlier, at
//! worst at the constant itself, so the paths over-approximate what the rule reads.
//! [`RuleMemo`] then keys the rule's earlier outcomes by an exact encoding of the values at
//! those paths, which [`KeyEncoder`] computes once per path and evaluation.
//!
//! Most rules read a few flags and counters that repeat from event to event, so most of their
//! runs become a table lookup. A rule that reads a value that rarely repeats (a risk score, a
//! travel distance) stops memoizing when its recent lookups mostly miss.

use std::collections::HashMap;
use std::fmt;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;
use rhai::{AST, ASTNode, Dynamic, Expr, Scope, Stmt};

use crate::sandbox::CONTEXT_VARIABLES;

/// Maximum number of outcomes in a rule's table, which is emptied and refilled when full.
const MAX_ENTRIES: usize = 4096;

/// Lookups per window over which a rule's hits are counted.
const WINDOW_LOOKUPS: u64 = 4096;

/// A rule stops memoizing after a window in which fewer than half of its lookups hit. Below
/// that, computing and storing keys costs about as much as running the rule.
const MIN_HITS_PER_WINDOW: u64 = WINDOW_LOOKUPS / 2;

/// Functions whose calls write a trace log, an effect that a memoized run would skip.
const LOG_FUNCTIONS: [&str; 2] = ["print", "debug"];

/// Property names read in a chain below one context constant, empty for the whole constant.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct ReadPath {
    /// Index into [`CONTEXT_VARIABLES`].
    pub(crate) variable: usize,
    pub(crate) properties: Vec<String>,
}

/// Context paths and effects of one rule, found by walking its compiled script.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct RuleReads {
    /// Sorted, and no path extends another (the shorter one already covers it).
    pub(crate) paths: Vec<ReadPath>,
    /// True when a run logs through `print` or `debug`, which a memoized rule would skip.
    pub(crate) logs: bool,
    /// True when the rule captures variables in closures. Capturing a context constant turns
    /// it into a shared value for the rules that run after this one, so no rule of the set
    /// may be memoized.
    pub(crate) shares: bool,
}

/// A rule's earlier outcomes by the values it read, bounded and shared by threads.
pub(crate) struct RuleMemo<V> {
    /// The rule's paths, as indices into the rule set's list of distinct paths.
    paths: Vec<usize>,
    enabled: AtomicBool,
    table: Mutex<Table<V>>,
}

struct Table<V> {
    outcomes: HashMap<Vec<u8>, V>,
    window_lookups: u64,
    window_hits: u64,
}

/// Encodes the values at the rule set's distinct paths for one evaluation, each path once.
pub(crate) struct KeyEncoder<'a> {
    paths: &'a [ReadPath],
    bytes: Vec<u8>,
    /// Per path, `None` until encoded, then the range of its bytes, or `Some(None)` when a value
    /// cannot be encoded.
    encoded: Vec<Option<Option<Range<usize>>>>,
}

/// Encoding tags of values and path steps in a key.
mod tag {
    pub const UNIT: u8 = 0;
    pub const BOOL: u8 = 1;
    pub const INT: u8 = 2;
    pub const FLOAT: u8 = 3;
    pub const CHAR: u8 = 4;
    pub const STRING: u8 = 5;
    pub const ARRAY: u8 = 6;
    pub const MAP: u8 = 7;
    pub const BLOB: u8 = 8;
    /// The path continues into a map.
    pub const STEP: u8 = 16;
    /// The path ends here, and the encoded value follows.
    pub const VALUE: u8 = 17;
    /// The map has no entry for the next property, which reads as `()`.
    pub const MISSING: u8 = 18;
}

// === impl RuleReads ===

impl RuleReads {
    /// Lists the context paths that `ast` can read, in its main body and in its functions,
    /// and whether its runs have effects besides their outcome.
    pub(crate) fn of(ast: &AST) -> RuleReads {
        let mut paths = Vec::new();
        let mut logs = false;
        let mut shares = false;
        ast.walk(&mut |nodes: &[ASTNode]| {
            match nodes.last() {
                Some(ASTNode::Stmt(Stmt::Share(..))) => shares = true,
                Some(ASTNode::Stmt(Stmt::FnCall(call, ..)))
                | Some(ASTNode::Expr(Expr::FnCall(call, ..) | Expr::MethodCall(call, ..))) => {
                    logs |= LOG_FUNCTIONS.contains(&call.name.as_str());
                }
                Some(ASTNode::Expr(expr)) => paths.extend(context_path(expr, nodes)),
                _ => {}
            }
            true
        });
        RuleReads {
            paths: without_covered(paths),
            logs,
            shares,
        }
    }
}

/// Sorts `paths` and drops every path that extends another one.
pub(crate) fn without_covered(mut paths: Vec<ReadPath>) -> Vec<ReadPath> {
    paths.sort();
    let mut distinct: Vec<ReadPath> = Vec::with_capacity(paths.len());
    for path in paths {
        // Sorted order puts a path right after any distinct path that is its prefix.
        let covered = distinct.last().is_some_and(|last| last.covers(&path));
        if !covered {
            distinct.push(path);
        }
    }
    distinct
}

/// Returns the path read by `expr` when it names a context constant, given its ancestors.
fn context_path(expr: &Expr, nodes: &[ASTNode]) -> Option<ReadPath> {
    let Expr::Variable(variable, ..) = expr else {
        return None;
    };
    // A qualified name (`global::signals`) is a constant of the script, not of the context.
    if !variable.2.is_empty() {
        return None;
    }
    let index = CONTEXT_VARIABLES
        .iter()
        .position(|name| *name == variable.1.as_str())?;

    let parent = nodes.len().checked_sub(2).and_then(|at| nodes.get(at));
    let properties = match parent {
        Some(ASTNode::Expr(Expr::Dot(dot, ..))) if std::ptr::eq(&dot.lhs, expr) => {
            property_chain(&dot.rhs)
        }
        _ => Vec::new(),
    };
    Some(ReadPath {
        variable: index,
        properties,
    })
}

/// Collects the plain property reads at the start of the right side of a `.` chain.
///
/// Rhai nests `a.b.c` to the right: `Dot(a, Dot(b, c))`. The walk stops at the first step that
/// is not a property read (a method call, an index), so the path ends at the value that step
/// receives.
fn property_chain(mut expr: &Expr) -> Vec<String> {
    let mut names = Vec::new();
    loop {
        match expr {
            Expr::Property(property, ..) => {
                names.push(property.2.to_string());
                return names;
            }
            Expr::Dot(dot, ..) => match &dot.lhs {
                Expr::Property(property, ..) => {
                    names.push(property.2.to_string());
                    expr = &dot.rhs;
                }
                _ => return names,
            },
            _ => return names,
        }
    }
}

// === impl ReadPath ===

impl ReadPath {
    /// Returns true when `other` reads a value inside this path's value (or the same one).
    pub(crate) fn covers(&self, other: &ReadPath) -> bool {
        self.variable == other.variable && other.properties.starts_with(&self.properties)
    }
}

// === impl KeyEncoder ===

impl<'a> KeyEncoder<'a> {
    /// Starts an evaluation over the rule set's distinct `paths`.
    pub(crate) fn new(paths: &'a [ReadPath]) -> Self {
        KeyEncoder {
            paths,
            bytes: Vec::new(),
            encoded: vec![None; paths.len()],
        }
    }

    /// Replaces `key` with the encoded values at `paths`, or returns false when a value has a
    /// type that the encoding does not cover.
    fn key(&mut self, scope: &Scope<'_>, paths: &[usize], key: &mut Vec<u8>) -> bool {
        key.clear();
        for &index in paths {
            let range = match &self.encoded[index] {
                Some(range) => range.clone(),
                None => self.encode(scope, index),
            };
            let Some(range) = range else {
                return false;
            };
            key.extend_from_slice(&self.bytes[range]);
        }
        true
    }

    fn encode(&mut self, scope: &Scope<'_>, index: usize) -> Option<Range<usize>> {
        let path = &self.paths[index];
        let start = self.bytes.len();
        let encodable = match scope.get(CONTEXT_VARIABLES[path.variable]) {
            Some(value) => encode_path(value, &path.properties, &mut self.bytes),
            None => {
                self.bytes.push(tag::MISSING);
                true
            }
        };
        let range = encodable.then_some(start..self.bytes.len());
        self.encoded[index] = Some(range.clone());
        range
    }
}

/// Encodes the value at `properties` below `value`.
///
/// A property of a map reads its entry, and a missing entry reads as `()`. A property of any
/// other value is computed from that value alone (`"abc".len`), so the walk encodes the value
/// itself. The step tags record where the walk stopped, which keeps keys of different shapes
/// apart.
fn encode_path(value: &Dynamic, properties: &[String], key: &mut Vec<u8>) -> bool {
    let Some((first, rest)) = properties.split_first() else {
        key.push(tag::VALUE);
        return encode_value(value, key);
    };
    if value.is_shared() || !value.is_map() {
        key.push(tag::VALUE);
        return encode_value(value, key);
    }
    let Ok(map) = value.as_map_ref() else {
        return false;
    };

    key.push(tag::STEP);
    match map.get(first.as_str()) {
        Some(entry) => encode_path(entry, rest, key),
        None => {
            key.push(tag::MISSING);
            true
        }
    }
}

/// Appends a tagged, length-prefixed encoding of `value`, or returns false for a type that
/// the encoding does not cover.
///
/// The encoding is exact: equal encodings mean equal types and equal values, with floats
/// compared by their bits.
fn encode_value(value: &Dynamic, key: &mut Vec<u8>) -> bool {
    if value.is_shared() {
        return false;
    }
    if value.is_unit() {
        key.push(tag::UNIT);
    } else if let Ok(flag) = value.as_bool() {
        key.extend([tag::BOOL, u8::from(flag)]);
    } else if let Ok(number) = value.as_int() {
        key.push(tag::INT);
        key.extend(number.to_le_bytes());
    } else if let Ok(number) = value.as_float() {
        key.push(tag::FLOAT);
        key.extend(number.to_bits().to_le_bytes());
    } else if let Ok(character) = value.as_char() {
        key.push(tag::CHAR);
        key.extend(u32::from(character).to_le_bytes());
    } else if let Ok(text) = value.as_immutable_string_ref() {
        encode_bytes(tag::STRING, text.as_bytes(), key);
    } else if let Ok(blob) = value.as_blob_ref() {
        encode_bytes(tag::BLOB, &blob, key);
    } else {
        return encode_collection(value, key);
    }
    true
}

fn encode_collection(value: &Dynamic, key: &mut Vec<u8>) -> bool {
    if let Ok(array) = value.as_array_ref() {
        encode_length(tag::ARRAY, array.len(), key);
        return array.iter().all(|item| encode_value(item, key));
    }
    if let Ok(map) = value.as_map_ref() {
        encode_length(tag::MAP, map.len(), key);
        return map.iter().all(|(name, entry)| {
            encode_bytes(tag::STRING, name.as_bytes(), key);
            encode_value(entry, key)
        });
    }
    false
}

fn encode_length(tag: u8, length: usize, key: &mut Vec<u8>) {
    key.push(tag);
    key.extend((length as u64).to_le_bytes());
}

fn encode_bytes(tag: u8, bytes: &[u8], key: &mut Vec<u8>) {
    encode_length(tag, bytes.len(), key);
    key.extend_from_slice(bytes);
}

// === impl RuleMemo ===

impl<V: Clone> RuleMemo<V> {
    /// Builds an empty memo for a rule that reads the distinct paths at `paths`. With
    /// `enabled` false the rule runs every time.
    pub(crate) fn new(paths: Vec<usize>, enabled: bool) -> Self {
        RuleMemo {
            paths,
            enabled: AtomicBool::new(enabled),
            table: Mutex::new(Table {
                outcomes: HashMap::new(),
                window_lookups: 0,
                window_hits: 0,
            }),
        }
    }

    /// Returns the memoized outcome for the context in `scope`, or runs `run` and remembers
    /// its outcome.
    ///
    /// `key` is a buffer that the caller reuses between calls. When another thread has locked
    /// the table, the rule runs without it rather than wait.
    pub(crate) fn get_or_run(
        &self,
        scope: &mut Scope<'_>,
        encoder: &mut KeyEncoder<'_>,
        key: &mut Vec<u8>,
        run: impl FnOnce(&mut Scope<'_>) -> V,
    ) -> V {
        if !self.enabled.load(Ordering::Relaxed) || !encoder.key(scope, &self.paths, key) {
            return run(scope);
        }
        if let Some(outcome) = self.lookup(key) {
            return outcome;
        }

        let outcome = run(scope);
        if let Some(mut table) = self.table.try_lock()
            && self.enabled.load(Ordering::Relaxed)
        {
            if table.outcomes.len() >= MAX_ENTRIES {
                table.outcomes.clear();
            }
            table.outcomes.insert(key.clone(), outcome.clone());
        }
        outcome
    }

    fn lookup(&self, key: &[u8]) -> Option<V> {
        let mut table = self.table.try_lock()?;
        let found = table.outcomes.get(key).cloned();
        table.window_lookups += 1;
        table.window_hits += u64::from(found.is_some());
        if table.window_lookups < WINDOW_LOOKUPS {
            return found;
        }

        if table.window_hits < MIN_HITS_PER_WINDOW {
            // The values this rule reads rarely repeat: stop paying for keys and the table.
            self.enabled.store(false, Ordering::Relaxed);
            table.outcomes = HashMap::new();
        }
        table.window_lookups = 0;
        table.window_hits = 0;
        found
    }
}

impl<V> fmt::Debug for RuleMemo<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RuleMemo")
            .field("paths", &self.paths)
            .field("enabled", &self.enabled.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests;
