//! `vellum seal` and `vellum open`, with the age CLI's flags.

use std::io::IsTerminal as _;
use std::path::PathBuf;

use clap::Args;
use vellum_protocol::seal::{self, Recipient};

use crate::error::{CliError, Kind};
use crate::files::{Output, open_input, read_small};

const KEY_FILE_LIMIT: u64 = 1024 * 1024;

#[derive(Debug, Args)]
pub(crate) struct SealArgs {
    /// Seal to this recipient (age1…); repeatable.
    #[arg(short = 'r', long = "recipient", value_name = "RECIPIENT")]
    recipients: Vec<String>,
    /// Seal to every recipient listed in this file; repeatable.
    #[arg(short = 'R', long = "recipients-file", value_name = "PATH")]
    recipient_files: Vec<PathBuf>,
    /// Write to this file instead of stdout.
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// Read from this file instead of stdin.
    input: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub(crate) struct OpenArgs {
    /// An identity file (AGE-SECRET-KEY-1… lines); repeatable.
    #[arg(short = 'i', long = "identity", value_name = "PATH", required = true)]
    identities: Vec<PathBuf>,
    /// Write to this file instead of stdout (mode 0600, written whole or not at all).
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// Read from this file instead of stdin.
    input: Option<PathBuf>,
}

pub(crate) fn seal(args: &SealArgs) -> Result<(), CliError> {
    let mut recipients = parse_recipients(&args.recipients)?;
    for path in &args.recipient_files {
        let bytes = read_small(path, KEY_FILE_LIMIT)?;
        let text = String::from_utf8_lossy(&bytes);
        let parsed = seal::parse_recipients_file(&text)
            .map_err(|e| CliError::new(Kind::Malformed, format!("{}: {e}", path.display())))?;
        recipients.extend(parsed);
    }
    if recipients.is_empty() {
        return Err(CliError::new(
            Kind::Other,
            "no recipients: give -r RECIPIENT or -R FILE",
        ));
    }
    if args.output.is_none() && std::io::stdout().is_terminal() {
        return Err(CliError::new(
            Kind::Other,
            "refusing to write binary ciphertext to a terminal; use -o FILE",
        ));
    }
    let input = open_input(args.input.as_deref())?;
    let mut output = Output::create(args.output.as_deref())?;
    seal::seal_stream(&recipients, input, output.writer())?;
    output.commit()
}

pub(crate) fn open(args: &OpenArgs) -> Result<(), CliError> {
    let identities = read_identities(&args.identities)?;
    let input = open_input(args.input.as_deref())?;
    let mut output = Output::create(args.output.as_deref())?;
    // On failure the temporary output is dropped, which deletes it: no partial plaintext.
    seal::open_stream(&identities, input, output.writer())?;
    output.commit()
}

/// Reads identity files (`AGE-SECRET-KEY-1…` lines).
pub(crate) fn read_identities(paths: &[PathBuf]) -> Result<Vec<seal::Identity>, CliError> {
    let mut identities = Vec::new();
    for path in paths {
        let bytes = zeroize::Zeroizing::new(read_small(path, KEY_FILE_LIMIT)?);
        let text = std::str::from_utf8(&bytes).map_err(|_| {
            CliError::new(
                Kind::Malformed,
                format!("{}: identity file is not text", path.display()),
            )
        })?;
        let parsed = seal::parse_identity_file(text)
            .map_err(|e| CliError::new(Kind::Malformed, format!("{}: {e}", path.display())))?;
        identities.extend(parsed);
    }
    Ok(identities)
}

/// Parses recipients given as `age1…` strings (by position in errors).
pub(crate) fn parse_recipients(texts: &[String]) -> Result<Vec<Recipient>, CliError> {
    texts
        .iter()
        .enumerate()
        .map(|(n, text)| text.parse().map_err(|_| bad_recipient(n, text)))
        .collect()
}

/// Names the bad argument by position, never by value: a user who pasted a secret key
/// by mistake must not see it echoed into logs.
fn bad_recipient(n: usize, text: &str) -> CliError {
    let hint = if text
        .trim_start()
        .to_ascii_uppercase()
        .starts_with("AGE-SECRET-KEY-")
    {
        " (that is a secret identity, not a recipient: keep it private and pass its age1… public key)"
    } else {
        ""
    };
    CliError::new(
        Kind::Malformed,
        format!(
            "recipient number {} is not an age1… X25519 recipient{hint}",
            n + 1
        ),
    )
}
