//! The sandboxed Rhai engine and the verdict functions rules call.
//!
//! The engine starts from [`Engine::new_raw`] and adds only pure packages: arithmetic, logic,
//! strings, arrays, maps, math and iterators. It leaves out Rhai's time package (`timestamp()`
//! reads the wall clock, so decisions would not replay) and its language-core package
//! (`sleep()` would block the pipeline without counting operations). Modules cannot be loaded,
//! `eval` is disabled, and `print` / `debug` go to trace-level logs.

use std::collections::BTreeMap;

use rhai::module_resolvers::DummyModuleResolver;
use rhai::packages::{
    ArithmeticPackage, BasicArrayPackage, BasicFnPackage, BasicIteratorPackage, BasicMapPackage,
    BasicMathPackage, BasicStringPackage, LogicPackage, MoreStringPackage, Package,
};
use rhai::{Array, Dynamic, Engine, EvalAltResult, ImmutableString, Map};
use stepup_events::{Factor, Requirement};

use crate::PolicyConfig;
use crate::meta::is_snake_case;

/// Names under which the top-level keys of the context are visible to rules.
pub(crate) const CONTEXT_VARIABLES: [&str; 4] = ["event", "signals", "risk", "profile"];

/// Key of a verdict's `values` map that sets the reason's `signal` instead of a value.
const SIGNAL_KEY: &str = "signal";

type FnResult<T> = Result<T, Box<EvalAltResult>>;

/// Verdict of one rule, as built by `allow`, `mfa` or `deny`.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Verdict {
    /// Requirement the rule requests.
    pub(crate) requirement: Requirement,
    /// Factors an `mfa` verdict allows; `None` means the configured default set.
    pub(crate) factors: Option<Vec<Factor>>,
    /// Reason code, snake_case.
    pub(crate) code: String,
    /// Message for analysts.
    pub(crate) message: String,
    /// Signal named by the rule's `signal` value; empty when the rule gave none.
    pub(crate) signal: String,
    /// Remaining values, as display strings.
    pub(crate) values: BTreeMap<String, String>,
}

/// Builds the sandboxed engine used both to compile and to run rules.
pub(crate) fn build_engine(config: &PolicyConfig) -> Engine {
    let mut engine = Engine::new_raw();
    register_packages(&mut engine);

    // Rhai reads 0 as "no limit". `PolicyConfig::validate` rejects 0, and the clamp keeps the
    // sandbox closed for a config given to `Policy::new` without validation.
    let expr_depth = config.max_expr_depth.max(1);
    engine
        .set_max_operations(config.max_operations.max(1))
        .set_max_call_levels(config.max_call_depth.max(1))
        .set_max_expr_depths(expr_depth, expr_depth)
        .set_max_string_size(config.max_string_bytes.max(1))
        .set_max_array_size(config.max_array_len.max(1))
        .set_max_map_size(config.max_map_len.max(1));

    // The resolver is a second wall: `import` is already a syntax error once disabled.
    engine
        .set_module_resolver(DummyModuleResolver::new())
        .disable_symbol("import")
        .disable_symbol("eval")
        .set_strict_variables(true);

    engine.on_print(|text| tracing::trace!(output = text, "rule print"));
    engine.on_debug(|text, source, position| {
        tracing::trace!(output = text, rule = source, %position, "rule debug");
    });

    register_verdict_fns(&mut engine);
    engine
}

fn register_packages(engine: &mut Engine) {
    engine
        .register_global_module(ArithmeticPackage::new().as_shared_module())
        .register_global_module(LogicPackage::new().as_shared_module())
        .register_global_module(BasicStringPackage::new().as_shared_module())
        .register_global_module(MoreStringPackage::new().as_shared_module())
        .register_global_module(BasicIteratorPackage::new().as_shared_module())
        .register_global_module(BasicFnPackage::new().as_shared_module())
        .register_global_module(BasicMathPackage::new().as_shared_module())
        .register_global_module(BasicArrayPackage::new().as_shared_module())
        .register_global_module(BasicMapPackage::new().as_shared_module());
}

/// Registers `allow`, `mfa` and `deny` with every argument form rules may use.
fn register_verdict_fns(engine: &mut Engine) {
    use Requirement::{Allow, Deny, Mfa};
    type Text = ImmutableString;

    engine.register_type_with_name::<Verdict>("Verdict");

    engine
        .register_fn("allow", |code: Text, message: Text| {
            verdict(Allow, &code, &message, None, None)
        })
        .register_fn("allow", |code: Text, message: Text, values: Map| {
            verdict(Allow, &code, &message, None, Some(values))
        })
        .register_fn("deny", |code: Text, message: Text| {
            verdict(Deny, &code, &message, None, None)
        })
        .register_fn("deny", |code: Text, message: Text, values: Map| {
            verdict(Deny, &code, &message, None, Some(values))
        })
        .register_fn("mfa", |code: Text, message: Text| {
            verdict(Mfa, &code, &message, None, None)
        })
        .register_fn("mfa", |code: Text, message: Text, factors: Array| {
            verdict(Mfa, &code, &message, Some(factors), None)
        })
        .register_fn("mfa", |code: Text, message: Text, values: Map| {
            verdict(Mfa, &code, &message, None, Some(values))
        })
        .register_fn(
            "mfa",
            |code: Text, message: Text, factors: Array, values: Map| {
                verdict(Mfa, &code, &message, Some(factors), Some(values))
            },
        );
}

/// Builds a verdict, checking the code and factor names.
fn verdict(
    requirement: Requirement,
    code: &str,
    message: &str,
    factors: Option<Array>,
    values: Option<Map>,
) -> FnResult<Verdict> {
    let function = requirement.as_str();
    if !is_snake_case(code) {
        return Err(format!(
            "invalid reason code `{code}` in `{function}()`; use snake_case (a-z, 0-9 and `_`)"
        )
        .into());
    }
    let factors = factors.map(|list| parse_factors(&list)).transpose()?;

    let mut values: BTreeMap<String, String> = values
        .unwrap_or_default()
        .into_iter()
        .map(|(key, value)| (key.to_string(), display_value(&value)))
        .collect();
    let signal = values.remove(SIGNAL_KEY).unwrap_or_default();

    Ok(Verdict {
        requirement,
        factors,
        code: code.to_string(),
        message: message.to_string(),
        signal,
        values,
    })
}

/// Parses an array of factor names into a set ordered by [`Factor::ALL`].
fn parse_factors(list: &Array) -> FnResult<Vec<Factor>> {
    let mut factors = Vec::with_capacity(list.len());
    for item in list {
        let name = item.clone().into_immutable_string().map_err(|type_name| {
            format!("invalid factor of type `{type_name}` in `mfa()`; use factor names as strings")
        })?;
        let factor = Factor::from_name(&name).ok_or_else(|| {
            format!(
                "unknown factor `{name}` in `mfa()`; use one of webauthn, totp, push, sms, email"
            )
        })?;
        factors.push(factor);
    }

    if factors.is_empty() {
        return Err(
            "empty factor list in `mfa()`; name at least one factor, or call \
                    `mfa(code, message)` for the default set"
                .into(),
        );
    }
    Ok(Factor::ALL
        .into_iter()
        .filter(|factor| factors.contains(factor))
        .collect())
}

/// Formats a Rhai value for a reason's `values`: strings as they are, the rest as Rhai prints it.
fn display_value(value: &Dynamic) -> String {
    if value.is_unit() {
        return String::new();
    }
    value.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(script: &str) -> FnResult<Dynamic> {
        build_engine(&PolicyConfig::default()).eval::<Dynamic>(script)
    }

    fn run_verdict(script: &str) -> Verdict {
        run(script)
            .unwrap()
            .try_cast::<Verdict>()
            .expect("the script returns a verdict")
    }

    #[test]
    fn mfa_without_factors_uses_default_set() {
        let verdict = run_verdict(r#"mfa("new_country", "first login from a new country")"#);

        assert_eq!(verdict.requirement, Requirement::Mfa);
        assert_eq!(verdict.factors, None);
        assert_eq!(verdict.code, "new_country");
        assert_eq!(verdict.message, "first login from a new country");
    }

    #[test]
    fn mfa_factors_are_ordered_by_strength() {
        let verdict = run_verdict(r#"mfa("admin", "admin", ["push", "webauthn", "push"])"#);

        assert_eq!(verdict.factors, Some(vec![Factor::Webauthn, Factor::Push]));
    }

    #[test]
    fn values_become_strings_and_signal_moves_out() {
        let verdict = run_verdict(
            r#"deny("spray", "many users", #{ users: 21, speed_kmh: 950.5, city: "Oslo",
                 flag: true, signal: "velocity" })"#,
        );

        assert_eq!(verdict.requirement, Requirement::Deny);
        assert_eq!(verdict.signal, "velocity");
        assert_eq!(verdict.values["users"], "21");
        assert_eq!(verdict.values["speed_kmh"], "950.5");
        assert_eq!(verdict.values["city"], "Oslo");
        assert_eq!(verdict.values["flag"], "true");
        assert!(!verdict.values.contains_key("signal"));
    }

    #[test]
    fn mfa_accepts_factors_and_values() {
        let verdict = run_verdict(r#"mfa("admin", "admin", ["webauthn"], #{ role: "admin" })"#);

        assert_eq!(verdict.factors, Some(vec![Factor::Webauthn]));
        assert_eq!(verdict.values["role"], "admin");
    }

    #[test]
    fn unknown_factor_is_named_in_error() {
        let error = run(r#"mfa("admin", "admin", ["webauthn", "carrier_pigeon"])"#).unwrap_err();

        assert!(
            error
                .to_string()
                .contains("unknown factor `carrier_pigeon`"),
            "{error}"
        );
    }

    #[test]
    fn empty_factor_list_is_an_error() {
        let error = run(r#"mfa("admin", "admin", [])"#).unwrap_err();

        assert!(error.to_string().contains("empty factor list"), "{error}");
    }

    #[test]
    fn code_must_be_snake_case() {
        let error = run(r#"allow("Known-Device", "fine")"#).unwrap_err();

        assert!(
            error
                .to_string()
                .contains("invalid reason code `Known-Device`"),
            "{error}"
        );
    }

    #[test]
    fn wall_clock_and_sleep_are_unavailable() {
        assert!(run("timestamp()").is_err());
        assert!(run("sleep(1)").is_err());
    }

    #[test]
    fn eval_and_import_are_syntax_errors() {
        let engine = build_engine(&PolicyConfig::default());

        assert!(engine.compile(r#"eval("1 + 1")"#).is_err());
        assert!(engine.compile(r#"import "x" as x; 1"#).is_err());
    }

    #[test]
    fn print_writes_nothing_to_stdout() {
        assert!(run(r#"print("hello"); debug("hello"); 1"#).is_ok());
    }
}
