//! `vellum keys new`.

use std::path::Path;

use vellum_protocol::seal::{Identity, format_identity_file};

use crate::error::CliError;
use crate::files::write_output;

pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Writes a fresh identity file (or prints it for `None` and `-`); prints the public key
/// to stderr, as age-keygen does.
pub(crate) fn new(output: Option<&Path>) -> Result<(), CliError> {
    let identity = Identity::generate();
    let file = format_identity_file(&identity, now_ms());
    write_output(output, file.as_bytes())?;
    eprintln!("Public key: {}", identity.to_public());
    Ok(())
}
