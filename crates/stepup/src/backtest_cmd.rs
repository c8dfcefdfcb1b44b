//! `stepup backtest`: replay recorded events through candidate rules, optionally against a
//! baseline, and write decision tables, a diff and a report.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;
use stepup_backtest::{
    Backtest, BacktestOptions, Bucket, GenerateOptions, InputFormat, OutputFormat, Role,
    RuleSetSpec, RuleSetSummary, Summary, generate_events,
};

use crate::config::Config;
use crate::runtime;

/// Options of `stepup backtest`. The engine settings, GeoIP databases and sandbox limits come
/// from the configuration; only the rules directories come from the flags.
#[derive(Args)]
pub struct BacktestArgs {
    /// Directory of the candidate rules (`*.rhai` files).
    #[arg(long, value_name = "DIR", required_unless_present = "generate")]
    rules: Option<PathBuf>,
    /// File of recorded events: NDJSON, Parquet, or the CSV of the RBA data set.
    #[arg(long, value_name = "PATH", required_unless_present = "generate")]
    input: Option<PathBuf>,
    /// Layout of the input: ndjson, parquet or rba. Default: from the extension (.ndjson or
    /// .jsonl, .parquet, .csv).
    #[arg(long, value_name = "FORMAT")]
    input_format: Option<InputFormat>,
    /// Directory of the rules to compare with, usually the live `rules`; writes diff.csv.
    #[arg(long, value_name = "DIR")]
    baseline: Option<PathBuf>,
    /// Output directory for the decision tables, diff.csv, invalid.csv, summary.json and
    /// report.html. With `--generate`, the NDJSON file to write.
    #[arg(long, value_name = "PATH")]
    out: Option<PathBuf>,
    /// File format of the decision tables: csv or parquet.
    #[arg(long, value_name = "FORMAT", default_value = "csv")]
    format: OutputFormat,
    /// Print the summary as JSON on standard output.
    #[arg(long)]
    json: bool,
    /// Width of the buckets of the step-up rate over time: hour or day.
    #[arg(long, value_name = "WIDTH", default_value = "day")]
    bucket: Bucket,
    /// Countries and autonomous systems listed before `(other)`.
    #[arg(long, value_name = "N", default_value_t = 10)]
    top: usize,
    /// Stop at the first invalid record instead of counting and skipping it.
    #[arg(long)]
    strict: bool,
    /// Sort the events by `occurred_at` in memory (stable) instead of requiring time order.
    #[arg(long)]
    sort: bool,
    /// Start from the user states in this snapshot (from `stepup profiles export`) instead of
    /// empty profiles.
    #[arg(long, value_name = "PATH")]
    snapshot: Option<PathBuf>,
    /// Write N synthetic events as NDJSON to `--out` and exit, without replaying anything.
    #[arg(long, value_name = "N", conflicts_with_all = ["rules", "input", "baseline", "snapshot"])]
    generate: Option<u64>,
    /// Seed of `--generate`; the same seed writes the same file.
    #[arg(long, default_value_t = 1, requires = "generate")]
    seed: u64,
}

/// Runs the backtest, or the generator with `--generate`.
pub fn run(config: Config, args: BacktestArgs) -> anyhow::Result<()> {
    if let Some(events) = args.generate {
        return generate(events, &args);
    }
    let (Some(rules), Some(input)) = (&args.rules, &args.input) else {
        anyhow::bail!("`--rules DIR` and `--input PATH` are required unless `--generate` is given");
    };
    let geo = Arc::new(runtime::open_geo(&config)?);
    let candidate = RuleSetSpec::new(Role::Candidate, rules, &config.policy);
    let mut backtest = Backtest::new(config.engine.clone(), geo, candidate);
    if let Some(baseline) = &args.baseline {
        backtest =
            backtest.with_baseline(RuleSetSpec::new(Role::Baseline, baseline, &config.policy));
    }
    if let Some(snapshot) = &args.snapshot {
        backtest = backtest.with_snapshot(snapshot);
    }
    let options = BacktestOptions {
        input_format: args.input_format,
        out_dir: args.out.clone(),
        output_format: args.format,
        bucket: args.bucket,
        top: args.top,
        strict: args.strict,
        sort: args.sort,
        progress: std::io::stderr().is_terminal(),
        ..BacktestOptions::new(input)
    };
    let summary = backtest.run(&options)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        print_summary(&summary, args.out.as_deref());
    }
    Ok(())
}

fn generate(events: u64, args: &BacktestArgs) -> anyhow::Result<()> {
    let Some(path) = &args.out else {
        anyhow::bail!("`--generate` writes to `--out FILE`; add for example `--out events.ndjson`");
    };
    let options = GenerateOptions {
        seed: args.seed,
        ..GenerateOptions::new(events)
    };
    let stats = generate_events(path, &options)?;
    println!(
        "wrote {} events of {} users ({} attack attempts) to {}",
        stats.events,
        stats.users,
        stats.attack_attempts,
        path.display()
    );
    Ok(())
}

fn print_summary(summary: &Summary, out: Option<&std::path::Path>) {
    let input = &summary.input;
    println!(
        "read {} events from {} ({} invalid records skipped)",
        input.events, input.path, input.invalid
    );
    print_rule_set(&summary.candidate);
    if let Some(baseline) = &summary.baseline {
        print_rule_set(baseline);
    }
    if let Some(diff) = &summary.diff {
        println!("changed decisions: {} of {}", diff.changed, diff.compared);
        for transition in &diff.transitions {
            println!(
                "  {} -> {}: {}",
                transition.from.as_str(),
                transition.to.as_str(),
                transition.count
            );
        }
    }
    match out {
        Some(dir) => println!("wrote {} to {}", summary.outputs.join(", "), dir.display()),
        None => println!("no files written; pass `--out DIR` for tables and report.html"),
    }
}

fn print_rule_set(set: &RuleSetSummary) {
    let counts = &set.requirements;
    println!(
        "{} rules {} (version {}): {} decisions, allow {}, mfa {}, deny {}, step-up rate {:.2}%",
        set.name,
        set.rules_dir,
        set.rule_set_version,
        set.decisions,
        counts.allow,
        counts.mfa,
        counts.deny,
        set.step_up_rate * 100.0
    );
}
