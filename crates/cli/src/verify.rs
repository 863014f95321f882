//! `vellum verify checkpoint|inclusion|consistency`: offline checks anyone can run
//! with nothing but the log's public key.

use std::path::{Path, PathBuf};

use clap::Subcommand;
use vellum_tlog::checkpoint::{self, CheckpointError, VerifiedCheckpoint};
use vellum_tlog::hash::leaf_hash;
use vellum_tlog::note::{MAX_NOTE_LEN, NoteError, NoteVerifier};
use vellum_tlog::proof::{ConsistencyProof, MAX_PROOF_TEXT_LEN, ProofError, TlogProof};

use crate::error::{CliError, Kind};
use crate::files::read_small;

#[derive(Debug, Subcommand)]
pub(crate) enum VerifyCommand {
    /// Check a signed checkpoint against the log's public key.
    Checkpoint {
        /// The log's verifier key (`name+id+key`), or a file holding it.
        #[arg(long, value_name = "VKEY|PATH")]
        log_key: String,
        /// The checkpoint file (a signed note).
        checkpoint: PathBuf,
    },
    /// Check a `c2sp.org/tlog-proof@v1` file (a capture receipt is one).
    Inclusion {
        /// The log's verifier key (`name+id+key`), or a file holding it.
        #[arg(long, value_name = "VKEY|PATH")]
        log_key: String,
        /// The proof file.
        proof: PathBuf,
        /// The log entry's bytes; by default the proof's own `extra` data.
        #[arg(long, value_name = "PATH")]
        entry: Option<PathBuf>,
    },
    /// Check that an older checkpoint is a prefix of a newer one.
    Consistency {
        /// The log's verifier key (`name+id+key`), or a file holding it.
        #[arg(long, value_name = "VKEY|PATH")]
        log_key: String,
        /// The older checkpoint.
        old: PathBuf,
        /// The newer checkpoint.
        new: PathBuf,
        /// The consistency proof (`vellum/consistency-proof/v1`).
        proof: PathBuf,
    },
    /// Check an export package (`vellum auditor fetch`) offline: every record and
    /// every step of its case proven in the log, each body the one its header names,
    /// an approval by a second person, and every record within the approved scope.
    Package {
        /// The log's verifier key (`name+id+key`), or a file holding it.
        #[arg(long, value_name = "VKEY|PATH")]
        log_key: String,
        /// The package folder.
        dir: PathBuf,
    },
}

pub(crate) fn run(command: &VerifyCommand) -> Result<(), CliError> {
    match command {
        VerifyCommand::Checkpoint { log_key, checkpoint } => {
            let key = log_verifier(log_key)?;
            let cp = open_checkpoint(checkpoint, &key)?;
            println!(
                "checkpoint OK: {} size {} root {}",
                key.name(),
                cp.size(),
                cp.root().to_base64()
            );
        }
        VerifyCommand::Inclusion {
            log_key,
            proof,
            entry,
        } => {
            let key = log_verifier(log_key)?;
            let parsed = TlogProof::parse(&read_small(proof, MAX_PROOF_TEXT_LEN as u64)?)
                .map_err(|e| proof_error(proof, e))?;
            let entry_bytes = match entry {
                Some(path) => read_small(path, MAX_PROOF_TEXT_LEN as u64)?,
                None => parsed.extra.clone().ok_or_else(|| {
                    CliError::new(
                        Kind::Malformed,
                        format!("{}: no extra data; give --entry FILE", proof.display()),
                    )
                })?,
            };
            let cp = parsed
                .verify(&key, &leaf_hash(&entry_bytes))
                .map_err(|e| proof_error(proof, e))?;
            println!(
                "inclusion OK: entry {} is in {} at size {}",
                parsed.index,
                key.name(),
                cp.size()
            );
        }
        VerifyCommand::Consistency {
            log_key,
            old,
            new,
            proof,
        } => {
            let key = log_verifier(log_key)?;
            let (old_cp, new_cp) = (open_checkpoint(old, &key)?, open_checkpoint(new, &key)?);
            let parsed = ConsistencyProof::parse(&read_small(proof, MAX_PROOF_TEXT_LEN as u64)?)
                .map_err(|e| proof_error(proof, e))?;
            parsed
                .verify(&old_cp, &new_cp)
                .map_err(|e| proof_error(proof, e))?;
            println!(
                "consistency OK: {} size {} extends size {}",
                key.name(),
                new_cp.size(),
                old_cp.size()
            );
        }
        VerifyCommand::Package { log_key, dir } => {
            let key = log_verifier(log_key)?;
            let checked = crate::package::verify(dir, &key)?;
            let shown = crate::case_view::shown;
            println!(
                "package OK: {} records of case {}, each in {} at size {}; {} case steps proven; approved by {}",
                checked.manifest.records.len(),
                shown(&checked.manifest.case.id),
                shown(key.name()),
                checked.checkpoint.size(),
                checked.manifest.case_events.len(),
                shown(&checked.approved_by),
            );
            println!("scope: {}", shown(&checked.manifest.case.scope.to_json()));
            println!("scope digest: {}", shown(&checked.manifest.case.scope_sha256));
            println!("reason (as written): {}", shown(&checked.manifest.case.reason));
            if !checked.complete {
                return Err(CliError::new(
                    Kind::Unproven,
                    "completeness not proven (older package): it holds no listing, so records may have been left out; fetch the case again for a package that proves it",
                ));
            }
            println!("complete: every record of the case's listing is in the package");
        }
    }
    Ok(())
}

/// A verifier key given inline, or read from a file.
pub(crate) fn log_verifier(arg: &str) -> Result<NoteVerifier, CliError> {
    if let Ok(key) = NoteVerifier::from_vkey(arg) {
        return Ok(key);
    }
    let path = Path::new(arg);
    let bytes = read_small(path, 4096)?;
    NoteVerifier::from_vkey(String::from_utf8_lossy(&bytes).trim()).map_err(|_| {
        CliError::new(
            Kind::Malformed,
            format!("{arg}: not a log verifier key (name+id+key)"),
        )
    })
}

fn open_checkpoint(path: &Path, key: &NoteVerifier) -> Result<VerifiedCheckpoint, CliError> {
    checkpoint::open(&read_small(path, MAX_NOTE_LEN as u64)?, key).map_err(|e| checkpoint_error(path, e))
}

fn checkpoint_kind(err: &CheckpointError) -> Kind {
    match err {
        CheckpointError::Note(NoteError::NoTrustedSignature | NoteError::InvalidSignature(_))
        | CheckpointError::WrongOrigin { .. } => Kind::VerifyFailed,
        _ => Kind::Malformed,
    }
}

fn checkpoint_error(path: &Path, err: CheckpointError) -> CliError {
    CliError::new(checkpoint_kind(&err), format!("{}: {err}", path.display()))
}

fn proof_error(path: &Path, err: ProofError) -> CliError {
    let kind = match &err {
        ProofError::Verify(_) => Kind::VerifyFailed,
        ProofError::Checkpoint(inner) => checkpoint_kind(inner),
        _ => Kind::Malformed,
    };
    CliError::new(kind, format!("{}: {err}", path.display()))
}
