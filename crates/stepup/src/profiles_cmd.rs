//! `stepup profiles export`: write the latest user states of the changelog topic to a snapshot
//! file, for `stepup backtest --snapshot`.

use std::collections::BTreeMap;
use std::io::{BufWriter, Write};
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use stepup_engine::{decode_state, write_snapshot};

use crate::config::Config;

/// Options of `stepup profiles`.
#[derive(Args)]
pub struct ProfilesArgs {
    #[command(subcommand)]
    command: ProfilesCommand,
}

#[derive(Subcommand)]
enum ProfilesCommand {
    /// Read the changelog topic (`kafka.changelog_topic`) to its end and write the latest
    /// state of every user to a snapshot file.
    Export(ExportArgs),
}

#[derive(Args)]
struct ExportArgs {
    /// Kafka bootstrap servers (`kafka.brokers`).
    #[arg(long)]
    brokers: Option<String>,
    /// Snapshot file to write.
    #[arg(long, value_name = "PATH")]
    out: PathBuf,
}

/// Runs a `stepup profiles` command.
pub async fn run(mut config: Config, args: ProfilesArgs) -> anyhow::Result<()> {
    let ProfilesCommand::Export(args) = args.command;
    if let Some(brokers) = args.brokers {
        config.kafka.brokers = brokers;
    }
    let kafka = config.kafka.clone();
    let topic = kafka.changelog_topic.clone();
    let (latest, records) = tokio::task::spawn_blocking(move || {
        let mut latest: BTreeMap<String, Option<Vec<u8>>> = BTreeMap::new();
        let records = stepup_kafka::read_changelog(&kafka, |_, user_id, value| {
            latest.insert(user_id.to_owned(), value.map(<[u8]>::to_vec));
        })
        .with_context(|| format!("failed to read changelog topic `{}`", kafka.changelog_topic))?;
        Ok::<_, anyhow::Error>((latest, records))
    })
    .await
    .context("changelog reader stopped")??;

    let mut states = Vec::with_capacity(latest.len());
    let mut unreadable = 0;
    for (user_id, value) in latest {
        let Some(value) = value else { continue };
        if decode_state(&value).is_err() {
            unreadable += 1;
            continue;
        }
        states.push((user_id, value));
    }
    let file = std::fs::File::create(&args.out)
        .with_context(|| format!("failed to create `{}`", args.out.display()))?;
    let mut writer = BufWriter::new(file);
    write_snapshot(&mut writer, &mut states)
        .and_then(|()| writer.flush())
        .with_context(|| format!("failed to write `{}`", args.out.display()))?;
    eprintln!(
        "read {records} changelog records from `{topic}`; wrote {} users to `{}`{}",
        states.len(),
        args.out.display(),
        if unreadable > 0 {
            format!(" ({unreadable} unreadable states skipped)")
        } else {
            String::new()
        }
    );
    Ok(())
}
