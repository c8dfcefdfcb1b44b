//! `stepup rules`: test the rule files against their case files, or list them.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use stepup_policy::{CASES_DIR, Policy, PolicyConfig, RuleSet, load_cases, run_cases};

use crate::config::Config;
use crate::runtime;

/// Options of `stepup rules`.
#[derive(Args)]
pub struct RulesArgs {
    #[command(subcommand)]
    command: RulesCommand,
}

#[derive(Subcommand)]
enum RulesCommand {
    /// Compile the rules and run the case files in `DIR/tests`; exit with 1 when a rule fails
    /// to compile or a case fails.
    Test {
        /// Rules directory. Default: `policy.dir` of the configuration.
        dir: Option<PathBuf>,
    },
    /// Print each rule's id, version, mode, priority and owner, in evaluation order.
    List {
        /// Rules directory. Default: `policy.dir` of the configuration.
        dir: Option<PathBuf>,
    },
}

/// Runs `stepup rules test` or `stepup rules list`.
pub fn run(config: Config, args: RulesArgs) -> anyhow::Result<()> {
    match args.command {
        RulesCommand::Test { dir } => test(&policy_config(&config, dir)),
        RulesCommand::List { dir } => list(&policy_config(&config, dir)),
    }
}

/// Returns the policy settings with `dir` in place of the configured directory, when given.
fn policy_config(config: &Config, dir: Option<PathBuf>) -> PolicyConfig {
    let mut policy_config = runtime::policy_config(config);
    if let Some(dir) = dir {
        policy_config.dir = dir;
    }
    policy_config
}

fn load_rules(config: &PolicyConfig) -> anyhow::Result<RuleSet> {
    RuleSet::load_dir(config)
        .with_context(|| format!("failed to load the rules in `{}`", config.dir.display()))
}

fn test(config: &PolicyConfig) -> anyhow::Result<()> {
    let rules = load_rules(config)?;
    let cases_dir = config.dir.join(CASES_DIR);
    let files = load_cases(&cases_dir)?;
    let policy = Policy::new(config.clone(), rules);

    let report = run_cases(&policy, &files);
    println!(
        "rule set {} ({} rules) from {}, {} cases in {}",
        report.rule_set_version,
        policy.rule_set().rules().len(),
        config.dir.display(),
        report.cases.len(),
        cases_dir.display()
    );
    if files.is_empty() {
        eprintln!(
            "warning: no case files (`*.yaml`) in `{}`; see docs/rules.md to write some",
            cases_dir.display()
        );
    }
    print!("{report}");

    if !report.is_success() {
        bail!("{} of {} cases failed", report.failed(), report.cases.len());
    }
    Ok(())
}

fn list(config: &PolicyConfig) -> anyhow::Result<()> {
    let rules = load_rules(config)?;
    print!("{}", render_list(&rules, &config.dir));
    Ok(())
}

/// Formats the rules as a table with a header line, then the rule set version.
fn render_list(rules: &RuleSet, dir: &Path) -> String {
    let header = ["ID", "VERSION", "MODE", "PRIORITY", "OWNER"];
    let rows: Vec<[String; 5]> = rules
        .rules()
        .iter()
        .map(|meta| {
            [
                meta.id.clone(),
                meta.version.clone(),
                meta.mode.as_str().to_string(),
                meta.priority.to_string(),
                meta.owner.clone(),
            ]
        })
        .collect();

    let mut widths = header.map(str::len);
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.len());
        }
    }
    let mut text = String::new();
    let header = header.map(String::from);
    for row in std::iter::once(&header).chain(&rows) {
        let cells: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        text.push_str(cells.join("  ").trim_end());
        text.push('\n');
    }
    text.push_str(&format!(
        "\nrule set {} ({} rules) from {}\n",
        rules.version(),
        rows.len(),
        dir.display()
    ));
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_aligns_columns() {
        let sources = [(
            "new_country.rhai".to_string(),
            "//! id: new_country\n//! version: 3\n//! description: d\n\
             //! owner: security@example.com\n//! mode: shadow\n//! priority: 110\n()\n"
                .to_string(),
        )];
        let rules = RuleSet::from_sources(&sources, &PolicyConfig::default()).unwrap();

        let text = render_list(&rules, Path::new("rules"));

        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "ID           VERSION  MODE    PRIORITY  OWNER");
        assert_eq!(
            lines[1],
            "new_country  3        shadow  110       security@example.com"
        );
        assert!(lines[3].starts_with("rule set "), "{text}");
    }
}
