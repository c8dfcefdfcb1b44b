//! `stepup eval`: measure the detectors on labelled public data sets.

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, Subcommand};
use stepup_keystroke::{Detector, ParzenDetector, ScaledManhattan};

/// Options of `stepup eval`.
#[derive(Args)]
pub struct EvalArgs {
    #[command(subcommand)]
    target: EvalTarget,
}

#[derive(Subcommand)]
enum EvalTarget {
    /// Equal-error rates of the keystroke detectors under the Killourhy–Maxion protocol, on a
    /// file in the MEU-Mobile KSD or the CMU DSL-StrongPasswordData layout.
    Keystroke {
        /// Data set file (CSV); the layout is detected from the header.
        #[arg(long)]
        data: PathBuf,
        /// Print the results as JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// ROC of the history risk score on a file in the RBA data set layout of Wiefling et al.,
    /// with account takeovers as positives.
    Rba {
        /// Data set file (CSV with the data set's header).
        #[arg(long)]
        data: PathBuf,
        /// Print the results as JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// Runs the evaluation and prints its report.
pub fn run(args: EvalArgs) -> anyhow::Result<()> {
    match args.target {
        EvalTarget::Keystroke { data, json } => keystroke(&data, json),
        EvalTarget::Rba { data, json } => rba(&data, json),
    }
}

fn keystroke(path: &Path, json: bool) -> anyhow::Result<()> {
    let dataset = stepup_keystroke::read_dataset(path)
        .with_context(|| format!("failed to read keystroke data `{}`", path.display()))?;
    let baseline = ScaledManhattan;
    let ours = ParzenDetector::default();
    let detectors: [&dyn Detector; 2] = [&baseline, &ours];
    let report = stepup_keystroke::evaluate(&dataset, &detectors)
        .with_context(|| format!("failed to evaluate `{}`", path.display()))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{report}");
    }
    Ok(())
}

fn rba(path: &Path, json: bool) -> anyhow::Result<()> {
    let file = File::open(path)
        .with_context(|| format!("failed to open RBA data `{}`", path.display()))?;
    let report = stepup_risk::rba::evaluate_rba(BufReader::new(file))
        .with_context(|| format!("failed to evaluate `{}`", path.display()))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!(
        "rows {}, scored {}, learnt {}, users {}, takeovers {}, other logins {}",
        report.rows,
        report.scored,
        report.learned,
        report.users,
        report.positives,
        report.negatives
    );
    println!("ROC AUC of the log-odds: {:.4}", report.auc);
    for point in &report.rates {
        println!(
            "  score >= {:<6} takeovers flagged {:>6.2}%  other logins flagged {:>6.2}%",
            point.threshold,
            point.tpr * 100.0,
            point.fpr * 100.0
        );
    }
    Ok(())
}
