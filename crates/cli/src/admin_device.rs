//! `vellum admin device …`: capture devices on a deployment's database, audited as
//! `local-admin`.

use std::path::PathBuf;

use clap::Subcommand;
use vellum_archive::Archive;
use vellum_archive::blob::none::NoBlobs;
use vellum_archive::ports::{DeviceStore, LogStore};
use vellum_protocol::ids::{DeviceId, RetentionClass};
use vellum_tlog::note::NoteSigner;

use crate::error::{CliError, Kind};
use crate::serve::{Config, OpenedStore, open_store};

#[derive(Debug, Subcommand)]
pub(crate) enum DeviceCommand {
    /// Bind a capture device to the retention classes it may archive under (replacing
    /// its binding): a capture naming another class is refused and stores nothing.
    /// Audited as `device.retention`.
    SetRetention {
        /// The device id (as `vellum capture status` prints it).
        device: String,
        /// A retention class (repeatable).
        #[arg(long = "class", value_name = "CLASS", required = true)]
        classes: Vec<String>,
        /// The gateway's configuration file.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
}

fn fail(kind: Kind, e: impl std::fmt::Display) -> CliError {
    CliError::new(kind, format!("admin: {e}"))
}

pub(crate) fn run(command: &DeviceCommand) -> Result<(), CliError> {
    let DeviceCommand::SetRetention {
        device,
        classes,
        config,
    } = command;
    let device_id =
        DeviceId::parse(device).map_err(|e| fail(Kind::Other, format!("device {device:?}: {e}")))?;
    let mut bound = classes
        .iter()
        .map(|c| RetentionClass::new(c).map_err(|e| fail(Kind::Other, format!("--class {c:?}: {e}"))))
        .collect::<Result<Vec<_>, _>>()?;
    bound.sort();
    bound.dedup();
    let config = Config::load(config)?;
    let log_key = config.log_signer()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| fail(Kind::Other, e))?;
    runtime.block_on(async {
        match open_store(&config.database).await? {
            OpenedStore::Sqlite(store) => bind(store, log_key, &device_id, &bound).await,
            OpenedStore::Postgres(store) => bind(store, log_key, &device_id, &bound).await,
        }
    })?;
    let names: Vec<&str> = bound.iter().map(RetentionClass::as_str).collect();
    println!("device {device_id} now archives under {}", names.join(", "));
    Ok(())
}

async fn bind<L: LogStore + DeviceStore>(
    store: L,
    log_key: NoteSigner,
    device: &DeviceId,
    classes: &[RetentionClass],
) -> Result<(), CliError> {
    if !store
        .bind_retention(device, classes)
        .await
        .map_err(|e| fail(Kind::Other, e))?
    {
        return Err(fail(Kind::NotFound, format!("no device {device}")));
    }
    let archive = Archive::open(store, NoBlobs, log_key)
        .await
        .map_err(|e| fail(Kind::Other, e))?;
    let names: Vec<&str> = classes.iter().map(RetentionClass::as_str).collect();
    let detail = serde_json::json!({ "retention": names, "by": "local-admin" });
    let subject = device.to_string();
    let done =
        vellum_gateway::auth::admin::audit(&archive, "local-admin", "device.retention", &subject, detail)
            .await;
    archive.close().await;
    done.map_err(|e| fail(Kind::Other, e))
}
