//! The command line: every command, its options and its help.

use clap::{Args, Parser, Subcommand};

/// Operate sqs-worker queues: stats, send, peek, and dead letters.
#[derive(Debug, Parser)]
#[command(
    name = "sqs-worker",
    version,
    about = "Operate sqs-worker queues: stats, send, peek, and dead-letter inspect and redrive.",
    long_about = "Operate sqs-worker queues: stats, send, peek, and dead-letter inspect and redrive.\n\n\
Configured like the runners: AWS_REGION, AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, \
and AWS_ENDPOINT_URL for a local server. A QUEUE is a queue URL, a queue name, or a queue ARN.",
    after_help = "Example:\n  sqs-worker stats orders\n  sqs-worker dlq inspect orders-dlq",
    after_long_help = concat!(
        "Examples:\n  sqs-worker stats orders --watch\n  sqs-worker dlq inspect orders-dlq\n  \
         sqs-worker dlq redrive orders-dlq --filter kind=permanent --dry-run\n\n",
        crate::error::exit_codes_help!()
    )
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Queue depth, in flight, delayed, and the dead-letter queue's depth.
    #[command(after_help = "Example:\n  sqs-worker stats orders --watch\n\n\
The age of the oldest message (CloudWatch ApproximateAgeOfOldestMessage) is not shown: \
this build has no CloudWatch client.")]
    Stats(StatsArgs),
    /// Send messages: one per line, or a JSON array (from a file or stdin).
    #[command(
        after_help = "Examples:\n  printf '%s\\n' '{\"id\":1}' '{\"id\":2}' | sqs-worker send orders\n  \
sqs-worker send orders.fifo --file orders.json --group customer-7 --attr source=backfill\n\n\
A file whose whole content is a JSON array sends one message per element (strings as they \
are, other values as compact JSON); anything else sends one message per non-empty line."
    )]
    Send(SendArgs),
    /// Show messages without consuming them.
    #[command(after_help = "Example:\n  sqs-worker peek orders -n 5 --no-body\n\n\
Peeking receives the messages and releases them at once (visibility 0): it raises their \
receive counts, which counts towards the queue's maxReceiveCount.")]
    Peek(PeekArgs),
    /// Dead-letter queues: inspect and redrive.
    #[command(subcommand)]
    Dlq(DlqCommand),
}

/// `stats`.
#[derive(Debug, Args)]
pub(crate) struct StatsArgs {
    /// The queue (URL, name or ARN).
    pub(crate) queue: String,
    /// Refresh in place until Ctrl-C.
    #[arg(long)]
    pub(crate) watch: bool,
    /// Seconds between refreshes with --watch.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) interval: u64,
    /// Print JSON instead of a table.
    #[arg(long, conflicts_with = "watch")]
    pub(crate) json: bool,
}

/// `send`.
#[derive(Debug, Args)]
pub(crate) struct SendArgs {
    /// The queue (URL, name or ARN).
    pub(crate) queue: String,
    /// Read the messages from this file; `-` (the default) reads stdin.
    #[arg(long, short = 'f', value_name = "FILE", default_value = "-")]
    pub(crate) file: String,
    /// Message group id (required for a FIFO queue).
    #[arg(long, value_name = "GROUP")]
    pub(crate) group: Option<String>,
    /// A string message attribute for every message (repeatable, at most 10).
    #[arg(long = "attr", value_name = "KEY=VALUE")]
    pub(crate) attrs: Vec<String>,
}

/// `peek`.
#[derive(Debug, Args)]
pub(crate) struct PeekArgs {
    /// The queue (URL, name or ARN).
    pub(crate) queue: String,
    /// How many messages to show.
    #[arg(short = 'n', long = "count", default_value_t = 10)]
    pub(crate) count: usize,
    /// Do not print bodies (for shared terminals).
    #[arg(long)]
    pub(crate) no_body: bool,
    /// Print JSON (full bodies) instead of a table.
    #[arg(long)]
    pub(crate) json: bool,
}

/// `dlq ...`.
#[derive(Debug, Subcommand)]
pub(crate) enum DlqCommand {
    /// Group dead letters by error kind and error text.
    #[command(after_help = "Examples:\n  sqs-worker dlq inspect orders-dlq\n  \
sqs-worker dlq inspect orders-dlq --json | jq '.groups[0]'\n\n\
Inspecting receives every message: each is held for --visibility-timeout seconds during the \
scan and released when it ends. This raises their receive counts.")]
    Inspect(InspectArgs),
    /// Move dead letters back to their source queue (or --to).
    #[command(
        after_help = "Examples:\n  sqs-worker dlq redrive orders-dlq --filter kind=permanent --dry-run\n  \
sqs-worker dlq redrive orders-dlq --filter 'error~timeout' --rate 50 --yes\n\n\
Each message goes back to the queue named by its SqsWorker.SourceQueueUrl attribute (or to \
--to), without the SqsWorker.* attributes, with its body, its other attributes, its FIFO group \
and a fresh deduplication id. It is deleted from the dead-letter queue only after the send \
succeeded: a redrive never loses a message, but one interrupted (crash, Ctrl-C) between a send \
and its delete leaves that message in both queues, so it may be delivered twice.\n\n\
Messages SQS dead-lettered itself (after maxReceiveCount, no SqsWorker.* attributes) are moved \
with SQS's StartMessageMoveTask when no --filter and no --to is given; with --to they are \
re-sent like the others; with a --filter they are left.\n\n\
Asks for confirmation unless --yes or --dry-run; without a terminal, --yes is required."
    )]
    Redrive(RedriveArgs),
}

/// `dlq inspect`.
#[derive(Debug, Args)]
pub(crate) struct InspectArgs {
    /// The dead-letter queue (URL, name or ARN).
    pub(crate) queue: String,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub(crate) json: bool,
    /// Characters of the error text that group messages together.
    #[arg(long, default_value_t = 40)]
    pub(crate) prefix: usize,
    /// Seconds each message stays hidden during the scan (it reappears after
    /// this if the command is killed).
    #[arg(long, default_value_t = 30)]
    pub(crate) visibility_timeout: u32,
}

/// `dlq redrive`.
#[derive(Debug, Args)]
pub(crate) struct RedriveArgs {
    /// The dead-letter queue (URL, name or ARN).
    pub(crate) queue: String,
    /// Send every moved message to this queue instead of its source.
    #[arg(long, value_name = "QUEUE")]
    pub(crate) to: Option<String>,
    /// Move only matching messages: kind=KIND or error~TEXT (repeatable: all must match).
    #[arg(long = "filter", value_name = "FILTER")]
    pub(crate) filters: Vec<String>,
    /// At most this many messages per second (`50` or `50/s`).
    #[arg(long, value_name = "N/s", value_parser = parse_rate)]
    pub(crate) rate: Option<u32>,
    /// Show what would move where; change nothing.
    #[arg(long)]
    pub(crate) dry_run: bool,
    /// Do not ask for confirmation.
    #[arg(long, short = 'y')]
    pub(crate) yes: bool,
    /// Seconds each received message stays hidden while the redrive runs (it
    /// reappears after this if the command is killed).
    #[arg(long, default_value_t = 60)]
    pub(crate) visibility_timeout: u32,
}

/// `N` or `N/s`, N ≥ 1.
fn parse_rate(s: &str) -> Result<u32, String> {
    let n = s.trim().trim_end_matches("/s").trim();
    match n.parse::<u32>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!("{s:?} is not a rate: use N or N/s with N >= 1")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse() {
        assert_eq!(parse_rate("50"), Ok(50));
        assert_eq!(parse_rate("50/s"), Ok(50));
        assert!(parse_rate("0").is_err());
        assert!(parse_rate("fast").is_err());
    }
}
