//! `vellum epoch new` and `vellum keyring sign`: the auditor-side half of a key
//! rotation, run away from the gateway.
//!
//! `epoch new` makes a fresh epoch identity on the auditor's machine, wraps it to each
//! authorised auditor's recipient and to the escrow recipient (one file each, as the
//! gateway stores and serves them), and writes the keyring statement that names its
//! recipient. The identity itself is never written unwrapped.
//!
//! `keyring sign` signs a statement with the organisation key: from its file, or
//! rebuilt in memory from M custodians' shares when the key was split at the ceremony.

use std::path::PathBuf;

use clap::Args;
use vellum_key_escrow::SecretKind;
use vellum_protocol::ids::{Epoch, UnixMillis};
use vellum_protocol::keyring::KeyringStatement;
use vellum_protocol::seal::{self, Identity, Recipient};
use vellum_tlog::note::NoteSigner;
use zeroize::Zeroizing;

use crate::error::{CliError, Kind};
use crate::files::{create_new_dir, read_small, write_output};
use crate::keys::now_ms;
use crate::sealing::{parse_recipients, read_identities};

#[derive(Debug, Args)]
pub(crate) struct EpochArgs {
    /// The new epoch's number (one more than the published one).
    #[arg(long, value_name = "N")]
    epoch: u64,
    /// An authorised auditor: NAME=age1… (their personal recipient); repeatable.
    #[arg(long = "auditor", value_name = "NAME=RECIPIENT", required = true)]
    auditors: Vec<String>,
    /// The escrow recipient (age1…), from the ceremony's escrow.recipient.
    #[arg(long, value_name = "RECIPIENT")]
    escrow: String,
    /// Days the statement is valid from now.
    #[arg(long, value_name = "DAYS", default_value_t = 366)]
    valid_days: u64,
    /// The folder to write (must not exist yet).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
}

#[derive(Debug, Args)]
pub(crate) struct SignArgs {
    /// The keyring statement to sign (as `vellum epoch new` wrote it).
    #[arg(long, value_name = "FILE")]
    statement: PathBuf,
    /// The organisation key file (a signed-note signer key).
    #[arg(long, value_name = "FILE", conflicts_with = "org_shares")]
    org_key: Option<PathBuf>,
    /// Shares of the organisation key, when it was split; at least M, repeatable.
    #[arg(long = "org-share", value_name = "FILE")]
    org_shares: Vec<PathBuf>,
    /// Custodians' identity files, to open sealed shares; repeatable.
    #[arg(short = 'i', long = "identity", value_name = "FILE")]
    identities: Vec<PathBuf>,
    /// Where to write the signed keyring note (never overwritten).
    #[arg(short, long, value_name = "FILE")]
    output: PathBuf,
}

fn fail(kind: Kind, e: impl std::fmt::Display) -> CliError {
    CliError::new(kind, format!("epoch: {e}"))
}

/// `vellum epoch new`.
pub(crate) fn new_epoch(args: &EpochArgs) -> Result<(), CliError> {
    if args.epoch == 0 {
        return Err(fail(Kind::Other, "epochs count from 1"));
    }
    if args.valid_days == 0 {
        return Err(fail(Kind::Other, "--valid-days is at least 1"));
    }
    let mut auditors: Vec<(String, Recipient)> = Vec::new();
    for spec in &args.auditors {
        let (name, recipient) = spec
            .split_once('=')
            .ok_or_else(|| fail(Kind::Other, format!("--auditor {spec:?}: NAME=age1…")))?;
        if !vellum_archive::ports::valid_username(name) {
            return Err(fail(
                Kind::Other,
                format!("auditor {name:?}: their username (a-z 0-9 . _ @ -)"),
            ));
        }
        if auditors.iter().any(|(n, _)| n == name) || name == "escrow" {
            return Err(fail(
                Kind::Other,
                format!("auditor {name:?} named twice (or named escrow)"),
            ));
        }
        auditors.push((
            name.to_owned(),
            parse_recipients(&[recipient.to_owned()])?.remove(0),
        ));
    }
    let escrow = parse_recipients(std::slice::from_ref(&args.escrow))?.remove(0);
    let identity = Identity::generate();
    let secret = identity.to_secret_string();
    let now = now_ms();
    let statement = KeyringStatement {
        epoch: Epoch(args.epoch),
        archive: identity.to_public(),
        escrow: escrow.clone(),
        valid_from: UnixMillis(now),
        valid_until: UnixMillis(now + args.valid_days * 86_400_000),
    };
    create_new_dir(&args.out)?;
    let wrapped = args.out.join("wrapped");
    create_new_dir(&wrapped)?;
    for (name, recipient) in auditors
        .iter()
        .chain(std::iter::once(&("escrow".to_owned(), escrow)))
    {
        let sealed = seal::seal(std::slice::from_ref(recipient), secret.as_bytes())
            .map_err(|e| fail(Kind::Other, e))?;
        write_output(Some(&wrapped.join(format!("{name}.age"))), sealed.as_bytes())?;
    }
    write_output(
        Some(&args.out.join("statement.txt")),
        statement.to_text().as_bytes(),
    )?;
    println!("epoch {}: archive recipient {}", args.epoch, statement.archive);
    println!(
        "  wrapped to {} auditor(s) and the escrow recipient in {}",
        auditors.len(),
        wrapped.display()
    );
    println!(
        "  next: vellum keyring sign --statement {} …",
        args.out.join("statement.txt").display()
    );
    Ok(())
}

/// `vellum keyring sign`.
pub(crate) fn sign(args: &SignArgs) -> Result<(), CliError> {
    let text = String::from_utf8(read_small(&args.statement, 64 * 1024)?)
        .map_err(|_| fail(Kind::Malformed, "the statement is not text"))?;
    let statement = KeyringStatement::parse_text(&text).map_err(|e| fail(Kind::Malformed, e))?;
    let skey: Zeroizing<String> = match (&args.org_key, args.org_shares.is_empty()) {
        (Some(path), true) => Zeroizing::new(
            String::from_utf8(read_small(path, 64 * 1024)?)
                .map_err(|_| fail(Kind::Malformed, "the organisation key file is not text"))?,
        ),
        (None, false) => {
            let identities = read_identities(&args.identities)?;
            let shares = crate::escrow::read_shares(&args.org_shares, &identities)?;
            let secret = vellum_key_escrow::recover_kind(&shares, SecretKind::OrgSigningKey)
                .map_err(|e| fail(Kind::VerifyFailed, e))?;
            Zeroizing::new(String::from_utf8_lossy(&secret).into_owned())
        }
        _ => {
            return Err(fail(
                Kind::Other,
                "give the organisation key: --org-key FILE, or --org-share FILE (at least M)",
            ));
        }
    };
    let org = NoteSigner::from_skey(skey.trim())
        .map_err(|e| fail(Kind::Malformed, format!("organisation key: {e}")))?;
    let note = statement.sign(&org).map_err(|e| fail(Kind::Other, e))?;
    write_output(Some(&args.output), note.as_bytes())?;
    println!(
        "signed keyring epoch {} with {} into {}",
        statement.epoch,
        org.name(),
        args.output.display()
    );
    Ok(())
}
