//! `vellum escrow init` and `vellum escrow recover`: the key ceremony and the
//! recovery, run on an offline machine (neither touches a network or a gateway).
//!
//! `init` makes the escrow identity and splits it M-of-N among custodians: each
//! share sealed to the custodian's age recipient, or written in paper form for one
//! who has none; the identity itself is never written. With `--org-name` it also
//! makes the organisation's signing key, written whole or split the same way.
//!
//! `recover` takes at least M shares (sealed ones opened with the custodians'
//! identity files), rebuilds the escrow identity in memory and re-wraps the chosen
//! wrapped epoch identities to the named recipients (a new auditor, or the officer
//! producing records for a regulator).

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use sha2::{Digest as _, Sha256};
use vellum_key_escrow::{Escrow, SecretKind, Share, shares};
use vellum_protocol::keys::generate_note_signer;
use vellum_protocol::seal::{Identity, Recipient};
use zeroize::Zeroizing;

use crate::error::{CliError, Kind};
use crate::files::{create_new_dir, read_small, write_output};
use crate::sealing::{parse_recipients, read_identities};

#[derive(Debug, Subcommand)]
pub(crate) enum EscrowCommand {
    /// The key ceremony: a new escrow identity split M-of-N among custodians (and,
    /// with --org-name, the organisation's signing key).
    Init(InitArgs),
    /// Rebuild the escrow identity from M shares, in memory, and re-wrap epoch
    /// identities to named recipients.
    Recover(RecoverArgs),
}

#[derive(Debug, Args)]
pub(crate) struct InitArgs {
    /// The folder to write (must not exist yet).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Shares needed to rebuild (M).
    #[arg(long, value_name = "M")]
    threshold: u8,
    /// A custodian: NAME=age1… (their share is sealed to that recipient) or NAME alone
    /// (their share is written in paper form); one per custodian, at least M.
    #[arg(long = "custodian", value_name = "NAME[=RECIPIENT]", required = true)]
    custodians: Vec<String>,
    /// Also make the organisation's signing key, with this key name (such as
    /// `agency.example/org`).
    #[arg(long, value_name = "NAME")]
    org_name: Option<String>,
    /// Split the organisation key among the same custodians, this many needed (else
    /// it is written whole, to be kept offline).
    #[arg(long, value_name = "K", requires = "org_name")]
    org_threshold: Option<u8>,
    /// Split this existing escrow identity (such as a quickstart's
    /// offline/escrow.key) instead of making a new one; its recipient stays the same.
    #[arg(long, value_name = "FILE")]
    from_identity: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub(crate) struct RecoverArgs {
    /// A share: a sealed share file or one in paper form; at least M, repeatable.
    #[arg(long = "share", value_name = "FILE", required = true)]
    shares: Vec<PathBuf>,
    /// A custodian's identity file, to open sealed shares; repeatable.
    #[arg(short = 'i', long = "identity", value_name = "FILE")]
    identities: Vec<PathBuf>,
    /// A wrapped epoch identity (as the gateway stores them) to re-wrap; repeatable.
    #[arg(long = "rewrap", value_name = "FILE", requires = "to")]
    rewrap: Vec<PathBuf>,
    /// Who the re-wrapped epoch identities are sealed to (age1…); repeatable.
    #[arg(long = "to", value_name = "RECIPIENT", requires = "out")]
    to: Vec<String>,
    /// Where to write the re-wrapped files (same names as the inputs; never overwritten).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
}

fn fail(kind: Kind, e: impl std::fmt::Display) -> CliError {
    CliError::new(kind, format!("escrow: {e}"))
}

/// A custodian as named on the command line.
struct Custodian {
    name: String,
    recipient: Option<Recipient>,
}

fn custodians(specs: &[String]) -> Result<Vec<Custodian>, CliError> {
    let mut out: Vec<Custodian> = Vec::new();
    for spec in specs {
        let (name, recipient) = match spec.split_once('=') {
            Some((name, recipient)) => (name, Some(recipient)),
            None => (spec.as_str(), None),
        };
        let valid = !name.is_empty()
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
        if !valid {
            return Err(fail(
                Kind::Other,
                format!("custodian name {name:?}: 1-64 characters of a-z 0-9 . _ -"),
            ));
        }
        if out.iter().any(|c| c.name == name) {
            return Err(fail(Kind::Other, format!("custodian {name:?} named twice")));
        }
        let recipient = match recipient {
            Some(text) => Some(parse_recipients(&[text.to_owned()])?.remove(0)),
            None => None,
        };
        out.push(Custodian {
            name: name.to_owned(),
            recipient,
        });
    }
    Ok(out)
}

/// Writes each custodian's share: sealed to their recipient, or in paper form.
fn deal(dir: &Path, custodians: &[Custodian], shares: &[Share], suffix: &str) -> Result<(), CliError> {
    for (custodian, share) in custodians.iter().zip(shares) {
        match &custodian.recipient {
            Some(recipient) => {
                let sealed =
                    vellum_key_escrow::seal_share(share, recipient).map_err(|e| fail(Kind::Other, e))?;
                let path = dir.join(format!("{}.{suffix}.age", custodian.name));
                write_output(Some(&path), sealed.as_bytes())?;
            }
            None => {
                let path = dir.join(format!("{}.{suffix}.txt", custodian.name));
                write_output(Some(&path), share.to_paper(&custodian.name).as_bytes())?;
            }
        }
    }
    Ok(())
}

/// The fingerprint people compare when they pin a public key: SHA-256 of its text,
/// the first 16 bytes in hex, in groups of four.
fn fingerprint(text: &str) -> String {
    let digest = Sha256::digest(text.trim().as_bytes());
    let hex: Vec<String> = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    hex.chunks(2)
        .map(|pair| pair.concat())
        .collect::<Vec<_>>()
        .join(":")
}

pub(crate) fn run(command: &EscrowCommand) -> Result<(), CliError> {
    match command {
        EscrowCommand::Init(args) => init(args),
        EscrowCommand::Recover(args) => recover(args),
    }
}

fn init(args: &InitArgs) -> Result<(), CliError> {
    let custodians = custodians(&args.custodians)?;
    let total = u8::try_from(custodians.len()).map_err(|_| fail(Kind::Other, "at most 255 custodians"))?;
    let escrow = match &args.from_identity {
        Some(path) => {
            let identities = read_identities(std::slice::from_ref(path))?;
            let [identity] = identities.as_slice() else {
                return Err(fail(
                    Kind::Malformed,
                    format!("{} must hold exactly one identity", path.display()),
                ));
            };
            Escrow::split(identity, args.threshold, total)
        }
        None => Escrow::generate(args.threshold, total),
    }
    .map_err(|e| fail(Kind::Other, e))?;
    let org = match &args.org_name {
        Some(name) => Some(generate_note_signer(name).map_err(|e| fail(Kind::Other, e))?),
        None => None,
    };
    let org_shares = match (&org, args.org_threshold) {
        (Some(org), Some(k)) => Some(
            shares::split(SecretKind::OrgSigningKey, org.to_skey().as_bytes(), k, total)
                .map_err(|e| fail(Kind::Other, e))?,
        ),
        _ => None,
    };
    create_new_dir(&args.out)?;
    let shares_dir = args.out.join("shares");
    create_new_dir(&shares_dir)?;
    deal(&shares_dir, &custodians, escrow.shares(), "escrow-share")?;
    let recipient = escrow.recipient().to_string();
    write_output(
        Some(&args.out.join("escrow.recipient")),
        format!("{recipient}\n").as_bytes(),
    )?;
    println!("escrow recipient: {recipient}");
    println!(
        "  split {} of {total}: shares in {}",
        args.threshold,
        shares_dir.display()
    );
    if let Some(org) = &org {
        let vkey = org.verifier().to_string();
        write_output(Some(&args.out.join("org.vkey")), format!("{vkey}\n").as_bytes())?;
        match &org_shares {
            Some(shares) => {
                deal(&shares_dir, &custodians, shares, "org-share")?;
                println!(
                    "organisation key: split {} of {total}, never written whole",
                    shares[0].threshold()
                );
            }
            None => {
                let skey = Zeroizing::new(format!("{}\n", org.to_skey().as_str()));
                write_output(Some(&args.out.join("org.skey")), skey.as_bytes())?;
                println!(
                    "organisation key: {} (keep it offline)",
                    args.out.join("org.skey").display()
                );
            }
        }
        println!("organisation public key: {vkey}");
        println!("  fingerprint: {}", fingerprint(&vkey));
    }
    println!(
        "Hand each custodian their file in {}; keep no other copy.",
        shares_dir.display()
    );
    if let Some(path) = &args.from_identity {
        println!(
            "Now destroy {}: the escrow identity must not exist whole anywhere.",
            path.display()
        );
    }
    Ok(())
}

/// Reads every share file given, opening sealed ones with `identities`.
pub(crate) fn read_shares(paths: &[PathBuf], identities: &[Identity]) -> Result<Vec<Share>, CliError> {
    paths
        .iter()
        .map(|path| {
            let bytes = Zeroizing::new(read_small(path, 64 * 1024)?);
            vellum_key_escrow::read_share(&bytes, identities, &path.display().to_string())
                .map_err(|e| fail(Kind::WrongKey, format!("{}: {e}", path.display())))
        })
        .collect()
}

fn recover(args: &RecoverArgs) -> Result<(), CliError> {
    let identities = read_identities(&args.identities)?;
    let shares = read_shares(&args.shares, &identities)?;
    let escrow = vellum_key_escrow::recover_escrow(&shares).map_err(|e| fail(Kind::VerifyFailed, e))?;
    println!(
        "rebuilt the escrow identity of {} (in memory only)",
        escrow.to_public()
    );
    if args.rewrap.is_empty() {
        return Ok(());
    }
    let to = parse_recipients(&args.to)?;
    let out = args
        .out
        .as_deref()
        .ok_or_else(|| fail(Kind::Other, "--rewrap needs --out DIR"))?;
    if !out.is_dir() {
        create_new_dir(out)?;
    }
    // Checked first: a second recovery into the same folder must not re-wrap
    // everything and then fail to write its minute.
    if out.join(MINUTE).exists() {
        return Err(fail(
            Kind::Other,
            format!(
                "{} holds a recovery minute already: choose another --out",
                out.display()
            ),
        ));
    }
    let mut copies = Vec::with_capacity(args.rewrap.len());
    for path in &args.rewrap {
        let wrapped = read_small(path, 64 * 1024)?;
        copies.push(hex::encode(Sha256::digest(&wrapped)));
        let name = path
            .file_name()
            .ok_or_else(|| fail(Kind::Other, format!("{} names no file", path.display())))?;
        let rewrapped = vellum_key_escrow::rewrap(&wrapped, &escrow, &to, &path.display().to_string())
            .map_err(|e| fail(Kind::WrongKey, e))?;
        write_output(Some(&out.join(name)), rewrapped.as_bytes())?;
        println!("re-wrapped {} to {}", path.display(), out.join(name).display());
    }
    let mut used: Vec<u8> = shares.iter().map(Share::index).collect();
    used.sort_unstable();
    let minute = serde_json::json!({
        "escrow_recipient": escrow.to_public().to_string(),
        "split_id": shares[0].split_id(),
        "shares": used,
        "copies": copies,
        "to": to.iter().map(ToString::to_string).collect::<Vec<_>>(),
    });
    let path = out.join(MINUTE);
    write_output(Some(&path), format!("{minute:#}\n").as_bytes())?;
    println!(
        "minute of this recovery (no secret in it): {}; record it at the gateway with \
         `vellum keys record-recovery`",
        path.display()
    );
    Ok(())
}

/// The file `recover` writes beside the re-wrapped copies: what was recovered, for
/// the log.
const MINUTE: &str = "recovery-minute.json";
