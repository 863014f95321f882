//! `vellum capture enroll|send|status`: a capture client on the command line.
//!
//! The device lives in a folder (`--dir`, default `./vellum-device`): its key, its
//! credential, the keyring it accepted, the spool and the receipts.

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use vellum_client::{ClientError, Device};
use vellum_protocol::bundle::Bundle;
use vellum_protocol::document::MessageDocument;

use crate::error::{CliError, Kind};
use crate::files::read_small;

/// The largest message document read from a file.
const MAX_DOCUMENT: u64 = 64 << 20;

#[derive(Debug, Subcommand)]
pub(crate) enum CaptureCommand {
    /// Enroll this device with a bundle from an administrator (the bundle works once).
    Enroll {
        /// The enrollment bundle (JSON).
        bundle: PathBuf,
        /// The certificate authority (PEM) of the gateway's TLS certificate, for a
        /// private PKI (replaces one the bundle names). The device keeps it.
        #[arg(long, value_name = "FILE")]
        ca: Option<PathBuf>,
        #[command(flatten)]
        device: DeviceDir,
    },
    /// Seal, sign and spool message documents, then submit the spool and verify each
    /// receipt. A gateway that is down loses nothing: run it again later.
    Send {
        /// Message documents (JSON, docs/formats.md); none to only submit the spool.
        messages: Vec<PathBuf>,
        #[command(flatten)]
        device: DeviceDir,
    },
    /// Replace the device credential with a fresh one (the old one stops working).
    RotateCredential {
        #[command(flatten)]
        device: DeviceDir,
    },
    /// Show the device and what waits in its spool.
    Status {
        #[command(flatten)]
        device: DeviceDir,
    },
}

#[derive(Debug, Args)]
pub(crate) struct DeviceDir {
    /// The device's folder.
    #[arg(long = "dir", default_value = "vellum-device")]
    dir: PathBuf,
}

fn client_error(e: ClientError) -> CliError {
    let kind = match &e {
        ClientError::Keyring(_) | ClientError::BadReceipt { .. } => Kind::VerifyFailed,
        ClientError::Invalid(_) => Kind::Malformed,
        _ => Kind::Other,
    };
    CliError::new(kind, format!("capture: {e}"))
}

pub(crate) fn run(command: &CaptureCommand) -> Result<(), CliError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::new(Kind::Other, e.to_string()))?;
    runtime.block_on(async {
        match command {
            CaptureCommand::Enroll { bundle, ca, device } => enroll(bundle, ca.as_deref(), &device.dir).await,
            CaptureCommand::Send { messages, device } => send(messages, &device.dir).await,
            CaptureCommand::Status { device } => status(&device.dir),
            CaptureCommand::RotateCredential { device } => rotate(&device.dir).await,
        }
    })
}

async fn enroll(bundle: &Path, ca: Option<&Path>, dir: &Path) -> Result<(), CliError> {
    let bytes = zeroize::Zeroizing::new(read_small(bundle, 64 * 1024)?);
    let mut bundle = Bundle::from_json(&bytes).map_err(|e| CliError::new(Kind::Malformed, e.to_string()))?;
    if let Some(ca) = ca {
        let pem = String::from_utf8(read_small(ca, 1 << 20)?)
            .map_err(|_| CliError::new(Kind::Malformed, format!("{}: not a PEM file", ca.display())))?;
        bundle.ca_cert = Some(pem);
    }
    let device = Device::enroll(&bundle, dir).await.map_err(client_error)?;
    let keyring = device.refresh_keyring().await.map_err(client_error)?;
    println!(
        "enrolled device {} for {} at {}; keyring epoch {} verified against the pinned organisation key",
        device.device_id(),
        bundle.custodian,
        bundle.gateway,
        keyring.statement().epoch
    );
    println!(
        "the bundle is spent; the device's key and credential are in {}",
        dir.display()
    );
    Ok(())
}

async fn send(messages: &[PathBuf], dir: &Path) -> Result<(), CliError> {
    let mut device = Device::open(dir).map_err(client_error)?;
    if !messages.is_empty() {
        // Read and check every document before sealing any, so a typo spools nothing.
        let mut documents = Vec::with_capacity(messages.len());
        for path in messages {
            let bytes = zeroize::Zeroizing::new(read_small(path, MAX_DOCUMENT)?);
            let document = MessageDocument::from_json_normalising(&bytes)
                .map_err(|e| CliError::new(Kind::Malformed, format!("{}: {e}", path.display())))?;
            documents.push(document);
        }
        let (keyring, fresh) = device.keyring_for_capture().await.map_err(client_error)?;
        if !fresh {
            eprintln!(
                "vellum: gateway unavailable; sealing to the keyring accepted before (epoch {})",
                keyring.statement().epoch
            );
        }
        for (path, document) in messages.iter().zip(&documents) {
            let record = device.capture(&keyring, document).map_err(client_error)?;
            println!("spooled {} as record {record}", path.display());
        }
    }
    let flushed = device.flush().await.map_err(client_error)?;
    for (record, receipt) in &flushed.acknowledged {
        println!(
            "archived record {record}: leaf {} of a log of {}, receipt verified ({}/receipts/{record}.proof)",
            receipt.index,
            receipt.checkpoint.size(),
            dir.display()
        );
    }
    for (record, reason) in &flushed.refused {
        eprintln!("vellum: record {record} refused by the gateway ({reason}); it stays in the spool");
    }
    if let Some(why) = &flushed.stopped {
        eprintln!(
            "vellum: {} record(s) wait in the spool ({why}); run `vellum capture send` again later",
            flushed.waiting
        );
    }
    let earlier = device
        .status()
        .map_err(client_error)?
        .spool
        .iter()
        .filter(|s| s.refused.is_some())
        .count()
        - flushed.refused.len();
    if earlier > 0 {
        eprintln!(
            "vellum: {earlier} record(s) refused in earlier runs stay in the spool (see `vellum capture status`)"
        );
    }
    if flushed.stopped.is_some() || !flushed.refused.is_empty() {
        return Err(CliError::new(
            Kind::Other,
            "capture: not every record was archived",
        ));
    }
    Ok(())
}

async fn rotate(dir: &Path) -> Result<(), CliError> {
    let mut device = Device::open(dir).map_err(client_error)?;
    device.rotate_credential().await.map_err(client_error)?;
    println!(
        "device {}: credential rotated; the old one no longer works",
        device.device_id()
    );
    Ok(())
}

fn status(dir: &Path) -> Result<(), CliError> {
    let device = Device::open(dir).map_err(client_error)?;
    let status = device.status().map_err(client_error)?;
    println!("device     {}", status.device_id);
    println!("custodian  {}", status.custodian);
    println!("gateway    {}", status.gateway);
    match status.epoch {
        Some(epoch) => println!("keyring    epoch {epoch}"),
        None => println!("keyring    none accepted yet"),
    }
    println!("receipts   {}", status.receipts);
    let refused = status.spool.iter().filter(|s| s.refused.is_some()).count();
    println!(
        "spool      {} waiting, {} refused",
        status.spool.len() - refused,
        refused
    );
    for spooled in &status.spool {
        match &spooled.refused {
            None => println!("  {}  {} bytes  waiting", spooled.record, spooled.bytes),
            Some(why) => println!("  {}  {} bytes  refused: {why}", spooled.record, spooled.bytes),
        }
    }
    Ok(())
}
