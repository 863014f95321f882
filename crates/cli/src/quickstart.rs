//! `vellum quickstart [--data DIR] [--listen ADDR]`: an embedded deployment (SQLite and
//! a blob folder) initialised on first run, then served.
//!
//! ```text
//! DIR/vellum.toml            the configuration `vellum serve --config` reads
//! DIR/vellum.db, DIR/blobs/  the archive
//! DIR/keys/log.skey          the log signing key (signs checkpoints)
//! DIR/keys/jwt.key           the key that signs people's access tokens
//! DIR/keys/totp.key          the key people's TOTP secrets are sealed under
//! DIR/keys/epoch-1.age       the epoch-1 archive identity, sealed to the auditor and escrow
//! DIR/keyring.note           the epoch-1 keyring statement, signed by the organisation
//! DIR/org.vkey, DIR/log.vkey the public keys that verify keyrings and receipts
//! DIR/offline/               what must NOT stay on the gateway host:
//!     org.skey                 the organisation signing key
//!     auditor.key              the auditor's identity
//!     escrow.key               the escrow identity
//!     index.key                the blind-index key (for auditors and new bundles)
//!     demo-device.bundle.json  a one-time enrollment bundle for a demo device
//! ```
//!
//! It also creates the administrator account `admin` with a one-time password that is
//! printed once and stored only as its Argon2id hash.
//!
//! The configuration is written last: a folder without it is an interrupted
//! initialisation and is refused rather than half-reused.

use std::io::IsTerminal as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use vellum_archive::ports::{
    AccountStore as _, DeviceStore as _, Holder, KeyStore as _, NewAccount, PublishedKeyring, Role,
    SecretHash, Wrap,
};
use vellum_archive::sqlite::SqliteStore;
use vellum_gateway::auth::{admin, password};
use vellum_protocol::blind::IndexKey;
use vellum_protocol::bundle::Bundle;
use vellum_protocol::ids::{Custodian, Epoch, RecordId, RetentionClass, UnixMillis};
use vellum_protocol::keyring::KeyringStatement;
use vellum_protocol::keys::generate_note_signer;
use vellum_protocol::seal::{self, Identity, format_identity_file};
use zeroize::Zeroizing;

use crate::error::{CliError, Kind};
use crate::files::write_output;
use crate::keys::now_ms;
use crate::serve::{self, Config};

const DAY_MS: u64 = 86_400_000;
const DEMO_CUSTODIAN: &str = "demo.custodian@agency.example";
const DEMO_RETENTION: &str = "default";
const ADMIN: &str = "admin";
const AUDITOR: &str = "auditor";

fn fail(e: impl std::fmt::Display) -> CliError {
    CliError::new(Kind::Other, format!("quickstart: {e}"))
}

pub(crate) fn run(data: &Path, listen: Option<SocketAddr>) -> Result<(), CliError> {
    // Before any key exists in this process's memory.
    vellum_gateway::server::harden_process().map_err(|e| fail(format!("process hardening: {e}")))?;
    let config_path = data.join("vellum.toml");
    if config_path.exists() {
        eprintln!("vellum: reusing the deployment in {}", data.display());
    } else {
        let listen = listen.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080)));
        // Before anything is created: a deployment whose address is taken would print
        // a bundle naming another gateway.
        if let Err(e) = std::net::TcpListener::bind(listen) {
            return Err(fail(format!(
                "cannot listen on {listen} ({e}): another program (another gateway?) holds it; \
                 pick a free address with --listen; nothing was created"
            )));
        }
        initialise(data, listen)?;
    }
    let mut config = Config::load(&config_path)?;
    if let Some(listen) = listen {
        config.listen = listen;
    }
    serve::run(config)
}

fn initialise(data: &Path, listen: SocketAddr) -> Result<(), CliError> {
    let occupied = std::fs::read_dir(data).is_ok_and(|mut d| d.next().is_some());
    if occupied {
        return Err(fail(format!(
            "{} exists but holds no vellum.toml: an interrupted initialisation or another \
             program's folder; remove it or pick another --data",
            data.display()
        )));
    }
    for dir in [data.to_owned(), data.join("keys"), data.join("offline")] {
        private_dir(&dir)?;
    }
    let now = now_ms();
    let host = "quickstart.vellum.invalid";
    let org = generate_note_signer(&format!("{host}/org")).map_err(fail)?;
    let log = generate_note_signer(&format!("{host}/log")).map_err(fail)?;
    let auditor = Identity::generate();
    let escrow = Identity::generate();
    let epoch_identity = Identity::generate();
    let index_key = IndexKey::generate();

    let offline = data.join("offline");
    write_output(Some(&offline.join("org.skey")), line(&org.to_skey()).as_bytes())?;
    write_output(Some(&data.join("keys/log.skey")), line(&log.to_skey()).as_bytes())?;
    let mut jwt_seed = Zeroizing::new([0u8; 32]);
    getrandom::getrandom(jwt_seed.as_mut()).map_err(fail)?;
    let jwt_text = Zeroizing::new(URL_SAFE_NO_PAD.encode(*jwt_seed));
    write_output(Some(&data.join("keys/jwt.key")), line(&jwt_text).as_bytes())?;
    let mut totp_key = Zeroizing::new([0u8; 32]);
    getrandom::getrandom(totp_key.as_mut()).map_err(fail)?;
    let totp_text = Zeroizing::new(URL_SAFE_NO_PAD.encode(*totp_key));
    write_output(Some(&data.join("keys/totp.key")), line(&totp_text).as_bytes())?;
    // The public halves, for anyone to verify keyrings, checkpoints and receipts.
    write_output(
        Some(&data.join("org.vkey")),
        format!("{}\n", org.verifier()).as_bytes(),
    )?;
    write_output(
        Some(&data.join("log.vkey")),
        format!("{}\n", log.verifier()).as_bytes(),
    )?;
    write_output(
        Some(&offline.join("auditor.key")),
        format_identity_file(&auditor, now).as_bytes(),
    )?;
    write_output(
        Some(&offline.join("escrow.key")),
        format_identity_file(&escrow, now).as_bytes(),
    )?;
    let index_text = Zeroizing::new(URL_SAFE_NO_PAD.encode(*index_key.to_bytes()));
    write_output(Some(&offline.join("index.key")), line(&index_text).as_bytes())?;
    let wrapped = seal::seal(
        &[auditor.to_public(), escrow.to_public()],
        format_identity_file(&epoch_identity, now).as_bytes(),
    )
    .map_err(fail)?;
    write_output(Some(&data.join("keys/epoch-1.age")), wrapped.as_bytes())?;

    let statement = KeyringStatement {
        epoch: Epoch(1),
        archive: epoch_identity.to_public(),
        escrow: escrow.to_public(),
        valid_from: UnixMillis(now - 60_000),
        valid_until: UnixMillis(now + 365 * DAY_MS),
    };
    let note = statement.sign(&org).map_err(fail)?;
    write_output(Some(&data.join("keyring.note")), note.as_bytes())?;

    // The demo device's one-time token, registered as a hash before the bundle exists.
    let mut token = Zeroizing::new([0u8; 32]);
    getrandom::getrandom(token.as_mut()).map_err(fail)?;
    let expires_at = UnixMillis(now + 7 * DAY_MS);
    let custodian = Custodian::new(DEMO_CUSTODIAN).map_err(fail)?;
    let db = data.join("vellum.db");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(fail)?;
    let admin_password = password::one_time_password().map_err(fail)?;
    let admin = NewAccount {
        account_id: *RecordId::new_v7(now).as_bytes(),
        username: ADMIN.into(),
        role: Role::Admin,
        password_phc: password::hash(&admin_password).map_err(fail)?,
        must_change_password: true,
        external_id: None,
    };
    // The auditor whose identity is offline/auditor.key: its recipient registered and
    // its copy of epoch 1 stored, so `vellum keys fetch` gives it epoch 1.
    let auditor_password = password::one_time_password().map_err(fail)?;
    let auditor_account = NewAccount {
        account_id: *RecordId::new_v7(now + 1).as_bytes(),
        username: AUDITOR.into(),
        role: Role::Auditor,
        password_phc: password::hash(&auditor_password).map_err(fail)?,
        must_change_password: true,
        external_id: None,
    };
    let epoch_file = format_identity_file(&epoch_identity, now);
    let wraps = [
        Wrap {
            epoch: 1,
            holder: Holder::Account(auditor_account.account_id),
            wrapped: seal::seal(&[auditor.to_public()], epoch_file.as_bytes())
                .map_err(fail)?
                .as_bytes()
                .to_vec(),
        },
        Wrap {
            epoch: 1,
            holder: Holder::Escrow,
            wrapped: seal::seal(&[escrow.to_public()], epoch_file.as_bytes())
                .map_err(fail)?
                .as_bytes()
                .to_vec(),
        },
    ];
    runtime.block_on(async {
        let store = SqliteStore::open(&format!("sqlite://{}", db.display()))
            .await
            .map_err(fail)?;
        let hash = SecretHash(sha2_256(&*token));
        store
            .add_enrollment(
                &hash,
                &custodian,
                &RetentionClass::new(DEMO_RETENTION).map_err(fail)?,
                expires_at,
            )
            .await
            .map_err(fail)?;
        store
            .create_account(&admin, UnixMillis(now))
            .await
            .map_err(fail)?;
        store
            .create_account(&auditor_account, UnixMillis(now))
            .await
            .map_err(fail)?;
        store
            .set_auditor_key(
                &auditor_account.account_id,
                &auditor.to_public().to_string(),
                None,
                UnixMillis(now),
            )
            .await
            .map_err(fail)?;
        let published = PublishedKeyring {
            epoch: 1,
            note: note.clone(),
            published_at: UnixMillis(now),
            published_by: "quickstart".into(),
        };
        store.publish_keyring(&published, &wraps).await.map_err(fail)?;
        // Each is a leaf of the log, as the gateway would have made it.
        let archive =
            vellum_archive::Archive::open(store, vellum_archive::blob::none::NoBlobs, log_signer(&log)?)
                .await
                .map_err(fail)?;
        let audited = async {
            for account in [&admin, &auditor_account] {
                let detail =
                    serde_json::json!({ "username": account.username, "role": account.role.as_str() });
                admin::audit(
                    &archive,
                    "quickstart",
                    "account.create",
                    &hex::encode(account.account_id),
                    detail,
                )
                .await?;
            }
            let holders = [hex::encode(auditor_account.account_id), "escrow".to_owned()];
            let detail = serde_json::json!({ "epoch": 1, "holders": holders, "from": "quickstart" });
            admin::audit(&archive, "quickstart", "keyring.publish", "1", detail).await
        }
        .await;
        archive.close().await;
        audited.map_err(fail)?;
        Ok::<(), CliError>(())
    })?;
    let auditor_password_file = offline.join("auditor.password");
    write_output(Some(&auditor_password_file), line(&auditor_password).as_bytes())?;
    // A device reaches an unspecified address (0.0.0.0, ::) through loopback here; on
    // another machine, edit the bundle's gateway URL before handing it out.
    let reachable = match listen.ip() {
        ip if ip.is_unspecified() && ip.is_ipv4() => SocketAddr::from(([127, 0, 0, 1], listen.port())),
        ip if ip.is_unspecified() => SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, listen.port())),
        _ => listen,
    };
    let public_url = format!("http://{reachable}");
    let bundle = Bundle {
        gateway: public_url.clone(),
        org_key: org.verifier(),
        log_key: log.verifier(),
        index_key,
        token: Zeroizing::new(URL_SAFE_NO_PAD.encode(*token)),
        custodian,
        retention: RetentionClass::new(DEMO_RETENTION).map_err(fail)?,
        expires_at,
        ca_cert: None,
    };
    let bundle_path = offline.join("demo-device.bundle.json");
    write_output(Some(&bundle_path), bundle.to_json().as_bytes())?;

    let config = format!(
        "# Vellum gateway configuration, written by `vellum quickstart`.\n\
         # Paths are relative to this file. See docs/operations.md for every setting.\n\
         listen = \"{listen}\"\n\
         log_key_file = \"keys/log.skey\"\n\
         keyring_file = \"keyring.note\"\n\
         org_key = \"{org_key}\"\n\
         \n\
         [database]\n\
         url = \"sqlite://vellum.db\"\n\
         \n\
         [blobs]\n\
         folder = \"blobs\"\n\
         \n\
         [auth]\n\
         jwt_key_file = \"keys/jwt.key\"\n\
         totp_key_file = \"keys/totp.key\"\n\
         \n\
         [telemetry]\n\
         format = \"text\"\n",
        org_key = org.verifier(),
    );
    write_output(Some(&data.join("vellum.toml")), config.as_bytes())?;

    let d = data.display();
    println!("Initialised a Vellum deployment in {d}/ (SQLite and a blob folder).");
    println!();
    println!("WARNING: {d}/offline/ holds keys that must not stay on the gateway host:");
    println!("  {d}/offline/auditor.key   the auditor's identity: it belongs on the auditor's machine.");
    println!(
        "                            Move it there and delete it here; whoever holds it can open every record."
    );
    println!(
        "  {d}/offline/escrow.key    the escrow identity: split it among custodians, keep no whole copy."
    );
    println!("  {d}/offline/org.skey      the organisation key that signs keyrings: keep it offline.");
    println!("  {d}/offline/index.key     the blind-index key: for auditors and capture clients only.");
    println!();
    // Written for its owner only, and shown only on a terminal: never into a service's
    // log or journal.
    let password_file = offline.join("admin.password");
    write_output(Some(&password_file), line(&admin_password).as_bytes())?;
    if std::io::stdout().is_terminal() {
        println!(
            "Administrator account {ADMIN:?}, one-time password (to be changed at first sign-in; also in {}):",
            password_file.display()
        );
        println!("  {}", admin_password.as_str());
    } else {
        println!(
            "Administrator account {ADMIN:?}: its one-time password (to be changed at first sign-in) is in {} (mode 0600); delete that file once it is changed.",
            password_file.display()
        );
    }
    println!();
    println!(
        "Auditor account {AUDITOR:?} (identity {d}/offline/auditor.key, one-time password in {}): it holds",
        auditor_password_file.display()
    );
    println!("epoch 1, so after its first sign-in (vellum account password, vellum account totp setup) it");
    println!(
        "fetches the epoch identity with `vellum keys fetch -i {d}/offline/auditor.key --out epochs …`."
    );
    println!();
    println!("Enroll the demo device (custodian {DEMO_CUSTODIAN}; the bundle works once, for 7 days):");
    println!(
        "  vellum capture enroll {} --dir demo-device",
        bundle_path.display()
    );
    println!();
    Ok(())
}

/// Another handle on the log key (the archive that audits takes one of its own).
fn log_signer(log: &vellum_tlog::note::NoteSigner) -> Result<vellum_tlog::note::NoteSigner, CliError> {
    vellum_tlog::note::NoteSigner::from_skey(&log.to_skey()).map_err(fail)
}

fn line(text: &str) -> Zeroizing<String> {
    Zeroizing::new(format!("{text}\n"))
}

fn sha2_256(bytes: &[u8]) -> [u8; 32] {
    use sha2::Digest as _;
    sha2::Sha256::digest(bytes).into()
}

/// Creates `dir` for its owner only (0700), and makes it so when it existed already.
fn private_dir(dir: &PathBuf) -> Result<(), CliError> {
    use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| CliError::io(dir, "create folder", &e))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| CliError::io(dir, "make private", &e))
}
