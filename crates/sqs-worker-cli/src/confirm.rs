//! Confirmation for destructive commands.

use std::io::{BufRead, IsTerminal, Write};

use crate::error::CliError;

/// Asks `question` on the terminal unless `yes`; refuses without a terminal.
pub(crate) fn confirm(question: &str, yes: bool) -> Result<(), CliError> {
    if yes {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        return Err(CliError::usage(
            "This command changes queues and there is no terminal to confirm on: \
             pass --yes to proceed (or --dry-run to look first).",
        ));
    }
    eprint!("{question} [y/N] ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .map_err(|e| CliError::usage(format!("Could not read the answer: {e}.")))?;
    if matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes") {
        Ok(())
    } else {
        Err(CliError::usage("Not confirmed: nothing was changed."))
    }
}
