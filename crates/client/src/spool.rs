//! The device's folder: its state, the keyring it accepted, the spool of sealed
//! records not yet acknowledged, and the receipts of those that were.
//!
//! ```text
//! device.json             the device state (key seed, credential, pinned keys), 0600
//! keyring.note            the newest keyring statement accepted (the rollback floor)
//! spool/<id>.vrec         a capture frame, exactly as it will be posted
//! spool/<id>.refused      why the gateway refused that frame (the frame stays)
//! receipts/<id>.proof     the verified receipt of an acknowledged record
//! ```
//!
//! Every file is written whole or not at all (a temporary file, synced, renamed, and
//! the folder synced), with mode 0600 in folders of mode 0700. The spool holds only
//! sealed records; a frame is deleted only after its receipt verified and was saved.

use std::fs;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

use vellum_protocol::ids::RecordId;

/// The spool folder of a device folder.
pub(crate) fn spool_dir(dir: &Path) -> PathBuf {
    dir.join("spool")
}

/// The receipts folder of a device folder.
pub(crate) fn receipts_dir(dir: &Path) -> PathBuf {
    dir.join("receipts")
}

/// Creates `dir` with mode 0700 if it does not exist (refusing a symlink).
pub(crate) fn private_dir(dir: &Path) -> io::Result<()> {
    match fs::symlink_metadata(dir) {
        Ok(meta) if meta.is_dir() => Ok(()),
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{} exists and is not a folder", dir.display()),
        )),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            use std::os::unix::fs::DirBuilderExt as _;
            fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)
        }
        Err(e) => Err(e),
    }
}

/// Writes `bytes` to `path` atomically and durably, mode 0600.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut file = tempfile::NamedTempFile::new_in(dir)?;
    file.write_all(bytes)?;
    file.as_file().sync_all()?;
    file.persist(path).map_err(|e| e.error)?;
    fs::File::open(dir)?.sync_all()
}

/// Removes `path`; a file already gone is fine (another run removed it).
pub(crate) fn remove(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// The frame file of a record.
pub(crate) fn frame_path(dir: &Path, id: &RecordId) -> PathBuf {
    spool_dir(dir).join(format!("{id}.vrec"))
}

/// The refusal note of a record.
pub(crate) fn refusal_path(dir: &Path, id: &RecordId) -> PathBuf {
    spool_dir(dir).join(format!("{id}.refused"))
}

/// The receipt file of a record.
pub(crate) fn receipt_path(dir: &Path, id: &RecordId) -> PathBuf {
    receipts_dir(dir).join(format!("{id}.proof"))
}

/// The records in the spool, oldest first (record ids are UUIDv7, so by name).
pub(crate) fn spooled(dir: &Path) -> io::Result<Vec<RecordId>> {
    let mut ids = Vec::new();
    for entry in fs::read_dir(spool_dir(dir))? {
        let name = entry?.file_name();
        let Some(id) = name.to_str().and_then(|n| n.strip_suffix(".vrec")) else {
            continue;
        };
        if let Ok(id) = RecordId::parse(id) {
            ids.push(id);
        }
    }
    ids.sort();
    Ok(ids)
}

/// A capture frame: the header's length as a big-endian `u32`, the header, the body.
pub(crate) fn frame(header: &[u8], body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + header.len() + body.len());
    out.extend_from_slice(&(header.len() as u32).to_be_bytes());
    out.extend_from_slice(header);
    out.extend_from_slice(body);
    out
}

/// The header bytes of a frame.
pub(crate) fn frame_header(frame: &[u8]) -> Option<&[u8]> {
    let len = u32::from_be_bytes(frame.get(..4)?.try_into().ok()?) as usize;
    frame.get(4..4 + len)
}
