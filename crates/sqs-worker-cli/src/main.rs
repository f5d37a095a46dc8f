//! `sqs-worker`: the command line for sqs-worker queues.
//!
//! ```text
//! sqs-worker stats orders --watch
//! sqs-worker send orders --file orders.jsonl
//! sqs-worker peek orders -n 5 --no-body
//! sqs-worker dlq inspect orders-dlq
//! sqs-worker dlq redrive orders-dlq --filter kind=permanent --dry-run
//! ```
//!
//! Configured like the runners (`AWS_REGION`, `AWS_PROFILE`, `AWS_ENDPOINT_URL`
//! ...). Exit codes: see [`error`] (and `sqs-worker --help`).

mod cli;
mod commands;
mod confirm;
mod deadletter;
mod dlq_schema;
mod error;
mod format;
mod queue;
mod scan;
mod sender;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command, DlqCommand};
use crate::error::{CliError, exit};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sqs-worker: could not start the async runtime: {e}");
            return ExitCode::from(exit::SERVICE);
        }
    };
    match runtime.block_on(dispatch(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("sqs-worker: {e}");
            ExitCode::from(e.code)
        }
    }
}

async fn dispatch(cli: Cli) -> Result<u8, CliError> {
    let (client, region) = queue::client().await?;
    let region = region.as_deref();
    match &cli.command {
        Command::Stats(a) => commands::stats::run(&client, region, a).await,
        Command::Send(a) => commands::send::run(&client, region, a).await,
        Command::Peek(a) => commands::peek::run(&client, region, a).await,
        Command::Dlq(DlqCommand::Inspect(a)) => commands::inspect::run(&client, region, a).await,
        Command::Dlq(DlqCommand::Redrive(a)) => commands::redrive::run(&client, region, a).await,
    }
}
