//! Reading inputs and writing outputs safely: an output appears whole or not at all
//! (temporary file, fsync, link into place, fsync the folder), with mode 0600, and never
//! replaces an existing file.

use std::fs::{self, File};
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

/// Where a command's output goes.
pub(crate) enum Output {
    Stdout,
    /// A temporary file beside the destination, linked into place on success and
    /// deleted (by drop) on failure.
    File {
        temp: tempfile::NamedTempFile,
        dest: PathBuf,
    },
}

impl Output {
    /// Stdout for `None` or `-`, else a temporary file (mode 0600) beside `path`,
    /// which must not exist.
    pub(crate) fn create(path: Option<&Path>) -> Result<Self, CliError> {
        let Some(dest) = path.filter(|p| *p != Path::new("-")) else {
            return Ok(Output::Stdout);
        };
        if dest.exists() {
            return Err(exists(dest));
        }
        let temp = tempfile::Builder::new()
            .prefix(".vellum-partial-")
            .tempfile_in(parent(dest))
            .map_err(|e| CliError::io(parent(dest), "write in", &e))?;
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

    /// Makes the output visible: fsync the file, link it into place unless something
    /// appeared there meanwhile, fsync the folder; or flush stdout.
    pub(crate) fn commit(self) -> Result<(), CliError> {
        match self {
            Output::Stdout => io::stdout()
                .flush()
                .map_err(|e| CliError::io(Path::new("stdout"), "write", &e)),
            Output::File { temp, dest } => {
                temp.as_file()
                    .sync_all()
                    .map_err(|e| CliError::io(&dest, "write", &e))?;
                temp.persist_noclobber(&dest).map_err(|e| match e.error.kind() {
                    io::ErrorKind::AlreadyExists => exists(&dest),
                    _ => CliError::io(&dest, "write", &e.error),
                })?;
                let dir = parent(&dest);
                File::open(dir)
                    .and_then(|d| d.sync_all())
                    .map_err(|e| CliError::io(dir, "sync", &e))
            }
        }
    }
}

/// Writes a whole output (a key file, say) with [`Output`]'s guarantees.
pub(crate) fn write_output(path: Option<&Path>, bytes: &[u8]) -> Result<(), CliError> {
    let mut output = Output::create(path)?;
    output
        .writer()
        .write_all(bytes)
        .map_err(|e| CliError::new(Kind::Other, format!("cannot write output: {e}")))?;
    output.commit()
}

fn parent(path: &Path) -> &Path {
    path.parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

fn exists(path: &Path) -> CliError {
    CliError::new(
        Kind::Exists,
        format!("{} exists already; refusing to overwrite it", path.display()),
    )
}

/// Creates a folder that must not exist yet.
pub(crate) fn create_new_dir(path: &Path) -> Result<(), CliError> {
    fs::create_dir(path).map_err(|e| CliError::io(path, "create folder", &e))
}

/// The mode of a folder only its owner may enter (0700): packages, opened records, a
/// benchmark's deployment.
pub(crate) fn private_folder() -> fs::Permissions {
    use std::os::unix::fs::PermissionsExt as _;
    fs::Permissions::from_mode(0o700)
}

/// A temporary folder only its owner may enter.
pub(crate) fn private_tempdir() -> io::Result<tempfile::TempDir> {
    tempfile::Builder::new().permissions(private_folder()).tempdir()
}
