//! `vellum keys new`.

use std::io::Write as _;
use std::path::Path;

use vellum_protocol::seal::{Identity, format_identity_file};

use crate::error::{CliError, Kind};
use crate::files::write_new_private;

pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Writes a fresh identity file; prints the public key to stderr, as age-keygen does.
pub(crate) fn new(output: Option<&Path>) -> Result<(), CliError> {
    let identity = Identity::generate();
    let file = format_identity_file(&identity, now_ms());
    match output {
        Some(path) => write_new_private(path, file.as_bytes())?,
        None => std::io::stdout()
            .write_all(file.as_bytes())
            .map_err(|e| CliError::new(Kind::Other, format!("cannot write to stdout: {e}")))?,
    }
    eprintln!("Public key: {}", identity.to_public());
    Ok(())
}
