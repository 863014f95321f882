//! One error type for the binary, with one exit code per kind of failure so scripts
//! can tell a wrong key from a damaged file.

use std::fmt;
use std::io;
use std::path::Path;

use vellum_protocol::seal::SealError;

/// What went wrong, as the exit code tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Anything else (1).
    Other = 1,
    /// An input file does not exist (3).
    NotFound = 3,
    /// No identity opens the file (4).
    WrongKey = 4,
    /// Corrupted, truncated or malformed input (5).
    Malformed = 5,
    /// A signature or proof does not verify (6).
    VerifyFailed = 6,
    /// The output file exists already (7).
    Exists = 7,
    /// An export package verifies, but cannot prove it holds every record of its case
    /// (one made before listings) (8).
    Unproven = 8,
    /// Standard output was closed by its reader (`| head`): the command stops quietly
    /// with the status of a process ended by SIGPIPE (141).
    Closed = 141,
}

/// A failure with a one-line message.
#[derive(Debug)]
pub(crate) struct CliError {
    kind: Kind,
    message: String,
}

impl CliError {
    pub(crate) fn new(kind: Kind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    pub(crate) fn kind(&self) -> Kind {
        self.kind
    }

    pub(crate) fn exit_code(&self) -> u8 {
        self.kind as u8
    }

    /// An I/O failure on `path`, classified.
    pub(crate) fn io(path: &Path, action: &str, err: &io::Error) -> Self {
        let kind = match err.kind() {
            io::ErrorKind::NotFound => Kind::NotFound,
            io::ErrorKind::AlreadyExists => Kind::Exists,
            io::ErrorKind::BrokenPipe => Kind::Closed,
            _ => Kind::Other,
        };
        Self::new(
            kind,
            format!("cannot {action} {}: {}", path.display(), plain_io(err)),
        )
    }
}

/// The OS message without the "(os error N)" suffix.
fn plain_io(err: &io::Error) -> String {
    let text = err.to_string();
    match text.find(" (os error") {
        Some(at) => text[..at].to_owned(),
        None => text,
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<SealError> for CliError {
    fn from(err: SealError) -> Self {
        let kind = match &err {
            SealError::NoMatchingKey => Kind::WrongKey,
            SealError::Corrupt | SealError::NotAgeFile(_) | SealError::UnsupportedStanza => Kind::Malformed,
            SealError::InvalidIdentity | SealError::InvalidRecipient => Kind::Malformed,
            SealError::Io(io) if io.kind() == io::ErrorKind::NotFound => Kind::NotFound,
            // The age library reports a failed header write as an error of its own
            // whose text names the cause: a closed pipe is found there too.
            SealError::Io(io)
                if io.kind() == io::ErrorKind::BrokenPipe || io.to_string().contains("BrokenPipe") =>
            {
                Kind::Closed
            }
            _ => Kind::Other,
        };
        Self::new(kind, err.to_string())
    }
}
