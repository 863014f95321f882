//! `vellum admin device-bundle`: an enrollment bundle made on an administrator's
//! machine. The gateway issues the one-time token through its admin API (and keeps
//! only its hash); the blind-index key, which never reaches the gateway, is added
//! here. Before asking for a token the command checks that the gateway serves a
//! keyring signed by the organisation key and a checkpoint signed by the log key it
//! was given, so a bundle never pins keys the administrator did not bring.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use clap::Args;
use reqwest::Method;
use vellum_protocol::blind::IndexKey;
use vellum_protocol::bundle::Bundle;
use vellum_protocol::ids::{Custodian, RetentionClass, UnixMillis};
use vellum_tlog::note::NoteVerifier;
use zeroize::Zeroizing;

use crate::admin_api::{Remote, Session};
use crate::error::{CliError, Kind};
use crate::keys::now_ms;

/// `vellum admin device-bundle` arguments.
#[derive(Debug, Args)]
pub(crate) struct BundleArgs {
    /// The running gateway's URL, for the admin API.
    #[arg(long, value_name = "URL")]
    gateway: String,
    /// The administrator to sign in as.
    #[arg(long = "as", value_name = "NAME", env = "VELLUM_ADMIN_USER")]
    as_user: String,
    /// A file (mode 0600) holding that administrator's password; without it, the
    /// password is read from standard input (a pipe, never a terminal).
    #[arg(long, value_name = "FILE")]
    password_file: Option<PathBuf>,
    /// A current TOTP code, when that administrator has a second factor.
    #[arg(long, value_name = "CODE")]
    totp: Option<String>,
    /// The custodian whose records the device captures.
    #[arg(long)]
    custodian: String,
    /// The retention class of its records.
    #[arg(long, default_value = "permanent")]
    retention: String,
    /// The blind-index key file (base64url of 32 bytes; kept off the gateway).
    #[arg(long, value_name = "FILE")]
    index_key: PathBuf,
    /// The organisation's verifier key (a file, such as org.vkey, or the key itself):
    /// the device pins it.
    #[arg(long, value_name = "KEY")]
    org_key: String,
    /// The log's verifier key (a file, such as log.vkey, or the key itself): the
    /// device pins it.
    #[arg(long, value_name = "KEY")]
    log_key: String,
    /// The gateway URL the device reaches, when it is not --gateway.
    #[arg(long, value_name = "URL")]
    device_url: Option<String>,
    /// A PEM file of the certificate authority that issued the gateway's certificate,
    /// for a gateway whose certificate a private authority issued.
    #[arg(long, value_name = "FILE")]
    ca: Option<PathBuf>,
    /// Days the bundle stays good (1 to 90).
    #[arg(long, default_value_t = 7)]
    days: u64,
    /// Where to write the bundle (mode 0600; never overwritten).
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
}

fn fail(e: impl std::fmt::Display) -> CliError {
    CliError::new(Kind::Other, e.to_string())
}

/// A verifier key given inline or in a file, for the flag `flag`.
fn verifier(flag: &str, arg: &str) -> Result<NoteVerifier, CliError> {
    crate::verify::log_verifier(arg).map_err(|_| {
        CliError::new(
            Kind::Malformed,
            format!("{flag} {arg}: not a verifier key (name+id+key) or a file holding one"),
        )
    })
}

fn index_key(path: &Path) -> Result<IndexKey, CliError> {
    let text = crate::serve::secret_file(path)?;
    let bytes = Zeroizing::new(
        URL_SAFE_NO_PAD
            .decode(text.trim().as_bytes())
            .map_err(|_| fail("--index-key: not an index key (base64url)"))?,
    );
    let bytes: [u8; 32] = bytes
        .as_slice()
        .try_into()
        .map_err(|_| fail("--index-key: an index key is 32 bytes"))?;
    Ok(IndexKey::from_bytes(bytes))
}

pub(crate) fn run(args: &BundleArgs) -> Result<(), CliError> {
    // Everything local is checked before the gateway is asked for anything.
    let custodian = Custodian::new(&args.custodian).map_err(|e| fail(format!("--custodian: {e}")))?;
    let retention = RetentionClass::new(&args.retention).map_err(|e| fail(format!("--retention: {e}")))?;
    if !(1..=90).contains(&args.days) {
        return Err(fail("--days: 1 to 90"));
    }
    let org_key = verifier("--org-key", &args.org_key)?;
    let log_key = verifier("--log-key", &args.log_key)?;
    let index_key = index_key(&args.index_key)?;
    let ca_cert = match &args.ca {
        Some(file) => {
            Some(std::fs::read_to_string(file).map_err(|e| fail(format!("--ca {}: {e}", file.display())))?)
        }
        None => None,
    };
    let device_url = args
        .device_url
        .as_deref()
        .unwrap_or(&args.gateway)
        .trim_end_matches('/')
        .to_owned();
    let mut out = crate::files::Output::create(Some(&args.out))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(fail)?;
    let remote = Remote {
        url: &args.gateway,
        username: &args.as_user,
        password_file: args.password_file.as_deref(),
        totp: args.totp.as_deref(),
        recovery_code: None,
    };
    let request = serde_json::json!({
        "custodian": custodian.as_str(),
        "retention": retention.as_str(),
        "days": args.days,
    });
    let (issued, bundle) = runtime.block_on(async {
        let session = Session::open(&remote).await?;
        let issued = async {
            check_keys(&session, &org_key, &log_key).await?;
            session
                .call(Method::POST, "/v1/admin/enrollments", Some(&request.to_string()))
                .await
        }
        .await;
        session.close().await;
        let issued = issued?;
        let token = issued["token"]
            .as_str()
            .ok_or_else(|| fail("the gateway sent no enrollment token"))?;
        let expires_at = issued["expires_at"]
            .as_u64()
            .ok_or_else(|| fail("the gateway sent no expiry"))?;
        let bundle = Bundle {
            gateway: device_url,
            org_key,
            log_key,
            index_key,
            token: Zeroizing::new(token.to_owned()),
            custodian: custodian.clone(),
            retention,
            expires_at: UnixMillis(expires_at),
            ca_cert,
        };
        Ok::<_, CliError>((expires_at, bundle))
    })?;
    // The device will parse it the same way: a bundle it would refuse is never written.
    let json = bundle.to_json();
    Bundle::from_json(json.as_bytes()).map_err(|e| fail(format!("the bundle would not load: {e}")))?;
    std::io::Write::write_all(&mut out.writer(), json.as_bytes()).map_err(fail)?;
    out.commit()?;
    println!(
        "enrollment bundle for a device of {} written to {} (works once, until {})",
        custodian,
        args.out.display(),
        vellum_protocol::time::rfc3339(issued)
    );
    Ok(())
}

/// Refuses a gateway whose keyring the organisation key did not sign, or whose
/// checkpoint the log key did not sign: the wrong deployment, or wrong keys given.
async fn check_keys(
    session: &Session,
    org_key: &NoteVerifier,
    log_key: &NoteVerifier,
) -> Result<(), CliError> {
    let keyring = session.text("/v1/keyring").await?;
    vellum_protocol::keyring::verify(keyring.as_bytes(), org_key, None, UnixMillis(now_ms())).map_err(|e| {
        CliError::new(
            Kind::Unproven,
            format!("the gateway's keyring does not verify with --org-key ({e}): is this the deployment those keys belong to?"),
        )
    })?;
    let checkpoint = session.text("/v1/log/checkpoint").await?;
    vellum_tlog::checkpoint::open(checkpoint.as_bytes(), log_key).map_err(|e| {
        CliError::new(
            Kind::Unproven,
            format!("the gateway's checkpoint does not verify with --log-key ({e}): is this the deployment those keys belong to?"),
        )
    })?;
    Ok(())
}
