//! Reading inputs and writing outputs safely: outputs appear whole or not at all
//! (temporary file, then rename), secrets and plaintext get mode 0600, and an existing
//! file is never overwritten where the command promises not to.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use crate::error::{CliError, Kind};

/// An input: a file, or stdin for `None` or `-`.
pub(crate) fn open_input(path: Option<&Path>) -> Result<Box<dyn Read>, CliError> {
    match path {
        None => Ok(Box::new(io::stdin().lock())),
        Some(p) if p == Path::new("-") => Ok(Box::new(io::stdin().lock())),
        Some(p) => Ok(Box::new(io::BufReader::new(
            File::open(p).map_err(|e| CliError::io(p, "open", &e))?,
        ))),
    }
}

/// Reads a whole (small) file.
pub(crate) fn read_small(path: &Path, limit: u64) -> Result<Vec<u8>, CliError> {
    let file = File::open(path).map_err(|e| CliError::io(path, "open", &e))?;
    let mut bytes = Vec::new();
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| CliError::io(path, "read", &e))?;
    if bytes.len() as u64 > limit {
        return Err(CliError::new(
            Kind::Malformed,
            format!("{} is larger than {limit} bytes", path.display()),
        ));
    }
    Ok(bytes)
}

/// Creates `path` exclusively with mode 0600 and writes `bytes`, fsynced.
pub(crate) fn write_new_private(path: &Path, bytes: &[u8]) -> Result<(), CliError> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    set_private_mode(&mut options);
    let mut file = options.open(path).map_err(|e| CliError::io(path, "create", &e))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|e| CliError::io(path, "write", &e))
}

#[cfg(unix)]
fn set_private_mode(options: &mut OpenOptions) {
    use std::os::unix::fs::OpenOptionsExt as _;
    options.mode(0o600);
}

#[cfg(not(unix))]
fn set_private_mode(_: &mut OpenOptions) {}

/// Where a command's output goes.
pub(crate) enum Output {
    Stdout,
    /// A temporary file beside the destination, renamed into place on success.
    File {
        temp: tempfile::NamedTempFile,
        dest: PathBuf,
    },
}

impl Output {
    /// Stdout for `None` or `-`, else a temporary file beside `path` (mode 0600).
    pub(crate) fn create(path: Option<&Path>) -> Result<Self, CliError> {
        let Some(dest) = path.filter(|p| *p != Path::new("-")) else {
            return Ok(Output::Stdout);
        };
        let dir = dest
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let temp = tempfile::Builder::new()
            .prefix(".vellum-partial-")
            .tempfile_in(dir)
            .map_err(|e| CliError::io(dir, "write in", &e))?;
        Ok(Output::File {
            temp,
            dest: dest.to_owned(),
        })
    }

    /// The writer to use.
    pub(crate) fn writer(&mut self) -> Box<dyn Write + '_> {
        match self {
            Output::Stdout => Box::new(io::stdout().lock()),
            Output::File { temp, .. } => Box::new(temp.as_file_mut()),
        }
    }

    /// Makes the output visible: fsync and rename a file; flush stdout.
    pub(crate) fn commit(self) -> Result<(), CliError> {
        match self {
            Output::Stdout => io::stdout()
                .flush()
                .map_err(|e| CliError::io(Path::new("stdout"), "write", &e)),
            Output::File { temp, dest } => {
                temp.as_file()
                    .sync_all()
                    .map_err(|e| CliError::io(&dest, "write", &e))?;
                temp.persist(&dest)
                    .map_err(|e| CliError::io(&dest, "write", &e.error))?;
                Ok(())
            }
        }
    }
}

/// Creates a folder that must not exist yet.
pub(crate) fn create_new_dir(path: &Path) -> Result<(), CliError> {
    fs::create_dir(path).map_err(|e| CliError::io(path, "create folder", &e))
}
