//! The gateway as an operator runs it: `vellum quickstart` on a fresh folder, the demo
//! device enrolled and capturing with `vellum capture`, receipts checked offline, the
//! spool holding records while the gateway is down, a second run reusing the folder;
//! the process hardened against dumps (I2); TLS; and no client content anywhere the
//! gateway writes (I1).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a failure is a failed test"
)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::gateway::{Collector, Running, free_port, http, quickstart, request};
use common::vellum;

fn bundle(data: &Path) -> PathBuf {
    data.join("offline/demo-device.bundle.json")
}

fn message() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/message.json")
}

fn receipts(device: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(device.join("receipts"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    out.sort();
    out
}

#[test]
fn quickstart_enrolls_the_demo_device_and_captures_with_verified_receipts() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let data = dir.join("vellum-data");
    let port = free_port();
    let gateway = Running::start(quickstart(&data, port), port, dir, "first");
    let shown = gateway.stdout_text();
    assert!(shown.contains("belongs on the auditor's machine"), "{shown}");
    assert!(shown.contains("vellum capture enroll"), "{shown}");

    let device = dir.join("device");
    let enroll = vellum(
        dir,
        &[
            "capture",
            "enroll",
            bundle(&data).to_str().unwrap(),
            "--dir",
            "device",
        ],
        b"",
    );
    assert_eq!(enroll.code, 0, "{}", enroll.stderr);
    // The bundle is spent: a second device cannot use it.
    let again = vellum(
        dir,
        &[
            "capture",
            "enroll",
            bundle(&data).to_str().unwrap(),
            "--dir",
            "other",
        ],
        b"",
    );
    assert_ne!(again.code, 0);
    assert!(again.stderr.contains("used already"), "{}", again.stderr);
    assert!(!dir.join("other").exists(), "a refused enrollment left a folder");

    let send = vellum(
        dir,
        &["capture", "send", message().to_str().unwrap(), "--dir", "device"],
        b"",
    );
    assert_eq!(send.code, 0, "{}", send.stderr);
    assert!(
        send.stdout_text().contains("receipt verified"),
        "{}",
        send.stdout_text()
    );
    let first = receipts(&device);
    assert_eq!(first.len(), 1);
    let log_key = data.join("log.vkey");
    let check = vellum(
        dir,
        &[
            "verify",
            "inclusion",
            "--log-key",
            log_key.to_str().unwrap(),
            first[0].to_str().unwrap(),
        ],
        b"",
    );
    assert_eq!(check.code, 0, "{}", check.stderr);

    // The gateway goes down: the capture is sealed and spooled, nothing is lost.
    gateway.stop();
    admin_password_is_stored_only_as_argon2id(&data, &shown);
    let offline = vellum(
        dir,
        &["capture", "send", message().to_str().unwrap(), "--dir", "device"],
        b"",
    );
    assert_ne!(offline.code, 0);
    assert!(offline.stderr.contains("wait in the spool"), "{}", offline.stderr);
    let status = vellum(dir, &["capture", "status", "--dir", "device"], b"");
    assert!(
        status.stdout_text().contains("1 waiting"),
        "{}",
        status.stdout_text()
    );

    // An administrator binds the device to another class as well, on the database.
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(device.join("device.json")).unwrap()).unwrap();
    let device_id = state["device_id"].as_str().unwrap();
    let config = data.join("vellum.toml");
    let config = config.to_str().unwrap();
    let set = |id: &str| {
        vellum(
            dir,
            &[
                "admin",
                "device",
                "set-retention",
                id,
                "--class",
                "default",
                "--class",
                "permanent",
                "--config",
                config,
            ],
            b"",
        )
    };
    let unknown = set("0192f0c4-6a3b-7cc1-9a51-3f6e8d2b1aff");
    assert_eq!(unknown.code, 3, "{}", unknown.stderr);
    let bound = set(device_id);
    assert_eq!(bound.code, 0, "{}", bound.stderr);
    assert!(
        bound
            .stdout_text()
            .contains("now archives under default, permanent"),
        "{}",
        bound.stdout_text()
    );

    // A second run reuses the folder; the spool drains with a verified receipt.
    let gateway = Running::start(quickstart(&data, port), port, dir, "second");
    assert!(
        gateway.stderr_text().contains("reusing"),
        "{}",
        gateway.stderr_text()
    );
    let drain = vellum(dir, &["capture", "send", "--dir", "device"], b"");
    assert_eq!(drain.code, 0, "{}", drain.stderr);
    assert_eq!(receipts(&device).len(), 2);
    let status = vellum(dir, &["capture", "status", "--dir", "device"], b"");
    assert!(
        status.stdout_text().contains("0 waiting, 0 refused"),
        "{}",
        status.stdout_text()
    );
    credentials_rotate_even_when_an_answer_is_lost(dir, &device, port);
    let (code, checkpoint) = http(port, "GET", "/v1/log/checkpoint").unwrap();
    assert_eq!(code, 200);
    // Twelve leaves: quickstart's two accounts and its epoch-1 keyring, the device's
    // enrollment, four records (two above, two during the credential rotations), the
    // administrator's retention binding, and three rotations.
    assert_eq!(checkpoint.lines().nth(1), Some("12"), "{checkpoint}");

    // The real listener answers probes with 404 too.
    for probe in ["/heapdump", "/actuator/env", "/debug/pprof/", "/metrics", "/.env"] {
        assert_eq!(http(port, "GET", probe).unwrap().0, 404, "{probe}");
    }
    gateway.stop();
}

fn credential_of(device: &Path) -> (String, Option<String>) {
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(device.join("device.json")).unwrap()).unwrap();
    let pending = state["pending_credential"].as_str().map(str::to_owned);
    (state["credential"].as_str().unwrap().to_owned(), pending)
}

/// A rotation of `device`'s credential from `current` to `next`, signed with its key
/// as its client signs one.
fn signed_rotation(device: &Path, current: &str, next: &str) -> String {
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(device.join("device.json")).unwrap()).unwrap();
    let seed: [u8; 32] = URL_SAFE_NO_PAD
        .decode(state["device_seed"].as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap();
    let hash = |text: &str| -> [u8; 32] {
        sha2::Digest::finalize(<sha2::Sha256 as sha2::Digest>::new_with_prefix(
            URL_SAFE_NO_PAD.decode(text).unwrap(),
        ))
        .into()
    };
    let at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let rotation = vellum_protocol::keys::Rotation {
        device_id: vellum_protocol::ids::DeviceId::parse(state["device_id"].as_str().unwrap()).unwrap(),
        current: hash(current),
        next: hash(next),
        at: vellum_protocol::ids::UnixMillis(at),
        nonce: [5; 16],
    };
    let signature = rotation.sign(&vellum_protocol::keys::DeviceKey::from_seed(&seed));
    serde_json::json!({
        "credential": next,
        "at": at,
        "nonce": URL_SAFE_NO_PAD.encode([5u8; 16]),
        "signature": URL_SAFE_NO_PAD.encode(signature),
    })
    .to_string()
}

fn set_pending(device: &Path, pending: &str) {
    let path = device.join("device.json");
    let mut state: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    state["pending_credential"] = pending.into();
    std::fs::write(&path, serde_json::to_vec(&state).unwrap()).unwrap();
}

/// Rotation works, and a rotation whose answer was lost (before or after the gateway
/// acted on it) is settled by the next run without locking the device out.
fn credentials_rotate_even_when_an_answer_is_lost(dir: &Path, device: &Path, port: u16) {
    let send = || {
        vellum(
            dir,
            &["capture", "send", message().to_str().unwrap(), "--dir", "device"],
            b"",
        )
    };
    let (before, _) = credential_of(device);
    let rotated = vellum(dir, &["capture", "rotate-credential", "--dir", "device"], b"");
    assert_eq!(rotated.code, 0, "{}", rotated.stderr);
    let (after, pending) = credential_of(device);
    assert_ne!(after, before);
    assert!(pending.is_none());
    let auth = |credential: &str| {
        format!("Authorization: Bearer {credential}\r\nContent-Type: application/json\r\n")
    };
    let (status, _) = request(
        port,
        "POST",
        "/v1/devices/credential",
        &auth(&before),
        "{\"credential\":\"x\"}",
    )
    .unwrap();
    assert_eq!(status, 401, "the old credential still works");

    // Lost before it arrived: the device holds a pending credential the gateway never saw.
    set_pending(device, "d2Q2d2Q2d2Q2d2Q2d2Q2d2Q2d2Q2d2Q2d2Q2d2Q2d2Q");
    let sent = send();
    assert_eq!(sent.code, 0, "{}", sent.stderr);
    assert_eq!(
        credential_of(device),
        ("d2Q2d2Q2d2Q2d2Q2d2Q2d2Q2d2Q2d2Q2d2Q2d2Q2d2Q".into(), None)
    );

    // Lost after the gateway acted: the current credential is dead, the pending one works.
    let landed = "bGFuZGVkbGFuZGVkbGFuZGVkbGFuZGVkbGFuZGVkbGE";
    let (current, _) = credential_of(device);
    let body = signed_rotation(device, &current, landed);
    let (status, answer) = request(port, "POST", "/v1/devices/credential", &auth(&current), &body).unwrap();
    assert_eq!(status, 204, "{answer}");
    set_pending(device, landed);
    let sent = send();
    assert_eq!(sent.code, 0, "{}", sent.stderr);
    assert_eq!(credential_of(device), (landed.to_owned(), None));
}

/// The administrator's one-time password quickstart wrote, for its owner only.
fn quickstart_password(data: &Path) -> String {
    use std::os::unix::fs::PermissionsExt as _;
    let file = data.join("offline/admin.password");
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{}", file.display());
    std::fs::read_to_string(file).unwrap().trim().to_owned()
}

/// The one-time password quickstart wrote to `offline/admin.password` (0600) verifies
/// against the stored Argon2id hash; with its output not a terminal (a service's
/// journal), quickstart did not print it, and no other file holds it.
fn admin_password_is_stored_only_as_argon2id(data: &Path, shown: &str) {
    use vellum_archive::ports::AccountStore as _;
    let password = quickstart_password(data);
    assert_eq!(password.len(), 24, "{shown}");
    assert!(!shown.contains(&password), "printed into a log: {shown}");
    assert!(shown.contains("offline/admin.password"), "{shown}");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let account = runtime.block_on(async {
        let url = format!("sqlite://{}", data.join("vellum.db").display());
        let store = vellum_archive::sqlite::SqliteStore::open(&url).await.unwrap();
        store.account_by_username("admin").await.unwrap().unwrap()
    });
    assert!(
        account
            .password_phc
            .starts_with("$argon2id$v=19$m=19456,t=2,p=1$")
    );
    assert!(account.must_change_password);
    assert!(vellum_gateway::auth::password::verify(
        &account.password_phc,
        &password
    ));
    for file in files_under(data) {
        if file.ends_with("offline/admin.password") {
            continue;
        }
        let bytes = std::fs::read(&file).unwrap();
        assert!(
            !contains(&bytes, &password),
            "the password is in {}",
            file.display()
        );
    }
}

/// The owner of `/proc/PID/environ`: the process's uid when it is dumpable, root when
/// it is not (proc(5)).
fn proc_owner(pid: u32) -> u32 {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata(format!("/proc/{pid}/environ")).unwrap().uid()
}

fn chown_tree(path: &Path, uid: u32) {
    std::os::unix::fs::chown(path, Some(uid), Some(uid)).unwrap();
    if path.is_dir() {
        for entry in std::fs::read_dir(path).unwrap() {
            chown_tree(&entry.unwrap().path(), uid);
        }
    }
}

#[test]
fn the_running_gateway_cannot_be_dumped_or_traced() {
    const NOBODY: u32 = 65534;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let data = dir.join("data");
    let port = free_port();
    // As root, dumpability shows only for another uid: run the gateway as nobody.
    let as_root = rustix_euid_is_root();
    let wrap = |command: Command| -> Command {
        if !as_root {
            return command;
        }
        let mut wrapped = Command::new("setpriv");
        wrapped.args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--",
            command.get_program().to_str().unwrap(),
        ]);
        wrapped.args(command.get_args());
        wrapped
    };
    if as_root {
        chown_tree(dir, NOBODY);
    }
    let gateway = Running::start(wrap(quickstart(&data, port)), port, dir, "hardened");
    let pid = gateway.child.id();
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let core = limits
        .lines()
        .find(|l| l.starts_with("Max core file size"))
        .unwrap();
    let fields: Vec<&str> = core.split_whitespace().collect();
    assert_eq!(&fields[4..6], ["0", "0"], "{core}");
    assert_eq!(proc_owner(pid), 0, "the gateway is dumpable");

    // The check itself discriminates: a dumpable process of the same user shows its uid.
    let mut control = wrap(Command::new("sleep")).arg("30").spawn().unwrap();
    // Wait until setpriv has exec'd sleep (before, it is a root process mid-switch).
    let comm = format!("/proc/{}/comm", control.id());
    while std::fs::read_to_string(&comm).unwrap().trim() != "sleep" {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let expected = if as_root {
        NOBODY
    } else {
        proc_owner(std::process::id())
    };
    assert_eq!(proc_owner(control.id()), expected);
    control.kill().unwrap();
    control.wait().unwrap();
    gateway.stop();
}

fn rustix_euid_is_root() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let uid = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    uid.split_whitespace().nth(2) == Some("0")
}

/// Every file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    let haystack = String::from_utf8_lossy(haystack).to_lowercase();
    haystack.contains(&needle.to_lowercase())
}

#[test]
fn no_client_side_field_reaches_anything_the_gateway_writes() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let data = dir.join("vellum-data");
    let port = free_port();
    // Initialise with quickstart, then serve with JSON logs and OTLP export.
    let init = Running::start(quickstart(&data, port), port, dir, "init");
    init.stop();
    let collector = Collector::start();
    let config_path = data.join("vellum.toml");
    let config = std::fs::read_to_string(&config_path)
        .unwrap()
        .replace("format = \"text\"", "format = \"json\"\nlevel = \"trace\"")
        + &format!(
            "otlp_endpoint = \"http://127.0.0.1:{}/v1/traces\"\n",
            collector.port
        );
    std::fs::write(&config_path, config).unwrap();
    let mut serve = Command::new(env!("CARGO_BIN_EXE_vellum"));
    serve.args(["serve", "--config", config_path.to_str().unwrap()]);
    let gateway = Running::start(serve, port, dir, "canary");

    // Every field the client fills holds the canary, in each form the client may
    // transform it into (participant ids are normalised, tokens are derived).
    let canary = format!("cnry{:x}", std::process::id() ^ 0x5eed_cafe);
    let message = serde_json::json!({
        "version": 1,
        "channel": "signal",
        "conversation": { "id": format!("conv-{canary}"), "title": format!("Title {canary}") },
        "sender": { "id": format!("mailto:{canary}@sender.example"), "display_name": format!("Sender {canary}") },
        "recipients": [
            { "id": format!("handle:signal:{canary}"), "display_name": format!("Recipient {canary}") }
        ],
        "sent_at_ms": 1_764_150_000_000u64,
        "body": { "content_type": "text/plain", "text": format!("Body {canary} body") },
        "edits": [ { "at_ms": 1_764_150_000_001u64, "text": format!("Edit {canary}") } ],
        "deletions": [ { "at_ms": 1_764_150_000_002u64, "by": format!("mailto:{canary}@sender.example") } ]
    });
    let message_path = dir.join("canary.json");
    std::fs::write(&message_path, serde_json::to_vec(&message).unwrap()).unwrap();
    assert!(contains(&std::fs::read(&message_path).unwrap(), &canary));

    let enroll = vellum(
        dir,
        &[
            "capture",
            "enroll",
            bundle(&data).to_str().unwrap(),
            "--dir",
            "device",
        ],
        b"",
    );
    assert_eq!(enroll.code, 0, "{}", enroll.stderr);
    let send = vellum(
        dir,
        &[
            "capture",
            "send",
            message_path.to_str().unwrap(),
            "--dir",
            "device",
        ],
        b"",
    );
    assert_eq!(send.code, 0, "{}", send.stderr);
    let record = send
        .stdout_text()
        .split_whitespace()
        .skip_while(|w| *w != "record")
        .nth(1)
        .unwrap()
        .trim_end_matches(':')
        .to_owned();

    // What the gateway answers over HTTP.
    let mut answers = Vec::new();
    for path in [
        "/v1/log/checkpoint",
        "/v1/log/proof/inclusion?index=0",
        "/v1/keyring",
        "/readyz",
        "/v1/records",
    ] {
        answers.push(http(port, "GET", path).unwrap().1);
    }
    answers.push(send.stdout_text());
    answers.push(enroll.stdout_text());
    gateway.stop(); // flushes the span exporter

    let logs = std::fs::read(dir.join("canary.stderr")).unwrap();
    let spans = collector.received();
    // The telemetry was captured, and it is about this record.
    assert!(contains(&logs, &record), "the logs do not name the record");
    assert!(contains(&logs, "record archived"));
    assert!(!spans.is_empty(), "no span was exported");
    assert!(
        contains(&spans, &record),
        "the exported spans do not name the record"
    );

    let mut written: Vec<(String, Vec<u8>)> = vec![("logs".into(), logs), ("exported spans".into(), spans)];
    for (i, answer) in answers.into_iter().enumerate() {
        written.push((format!("HTTP answer {i}"), answer.into_bytes()));
    }
    for file in files_under(&data) {
        if file.starts_with(data.join("offline")) {
            continue; // what the administrator hands out, not the gateway's writing
        }
        written.push((file.display().to_string(), std::fs::read(&file).unwrap()));
    }
    assert!(written.iter().any(|(name, _)| name.ends_with("vellum.db")));
    for (place, bytes) in &written {
        assert!(!contains(bytes, &canary), "the canary reached {place}");
    }
}

#[test]
fn tls_is_served_when_configured_and_plain_http_off_loopback_is_flagged() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let data = dir.join("vellum-data");
    let port = free_port();
    Running::start(quickstart(&data, port), port, dir, "init").stop();

    // A private PKI: an authority of the test's own, and the gateway's certificate
    // issued by it.
    let (cert, key) = (data.join("tls.crt"), data.join("tls.key"));
    let ca = dir.join("ca.crt");
    std::fs::write(
        dir.join("leaf.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=critical,CA:FALSE\n",
    )
    .unwrap();
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
    for args in [
        &[
            &["req", "-x509"][..],
            &ec,
            &[
                "-days",
                "1",
                "-subj",
                "/CN=Test Agency CA",
                "-keyout",
                "ca.key",
                "-out",
                "ca.crt",
            ],
        ]
        .concat(),
        &[
            &["req"][..],
            &ec,
            &[
                "-subj",
                "/CN=127.0.0.1",
                "-keyout",
                key.to_str().unwrap(),
                "-out",
                "leaf.csr",
            ],
        ]
        .concat(),
        &[
            "x509",
            "-req",
            "-in",
            "leaf.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            "leaf.ext",
            "-out",
            cert.to_str().unwrap(),
        ][..]
            .to_vec(),
    ] {
        let made = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(
            made.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&made.stderr)
        );
    }
    let config_path = data.join("vellum.toml");
    let plain = std::fs::read_to_string(&config_path).unwrap();
    std::fs::write(
        &config_path,
        format!("{plain}\n[tls]\ncert_file = \"tls.crt\"\nkey_file = \"tls.key\"\n"),
    )
    .unwrap();
    let mut serve = Command::new(env!("CARGO_BIN_EXE_vellum"));
    serve.args(["serve", "--config", config_path.to_str().unwrap()]);
    let gateway = Running::start_with(serve, port, dir, "tls", false);
    assert!(
        gateway.stderr_text().contains("https://"),
        "{}",
        gateway.stderr_text()
    );
    let url = format!("https://127.0.0.1:{port}/healthz");
    let curl = Command::new("curl")
        .args(["-sS", "--cacert", ca.to_str().unwrap(), &url])
        .output()
        .unwrap();
    assert!(curl.status.success(), "{}", String::from_utf8_lossy(&curl.stderr));
    assert_eq!(String::from_utf8_lossy(&curl.stdout), "ok\n");

    // A capture client reaches it only trusting the private authority; plain http://
    // to another machine is refused before anything is sent.
    let demo: serde_json::Value = serde_json::from_slice(&std::fs::read(bundle(&data)).unwrap()).unwrap();
    let with_gateway = |name: &str, gateway: String| {
        let mut b = demo.clone();
        b["gateway"] = serde_json::json!(gateway);
        std::fs::write(dir.join(name), b.to_string()).unwrap();
    };
    with_gateway("plain.json", format!("http://archive.agency.example:{port}"));
    let plain_enroll = vellum(
        dir,
        &["capture", "enroll", "plain.json", "--dir", "plain-device"],
        b"",
    );
    assert_ne!(plain_enroll.code, 0);
    assert!(
        plain_enroll.stderr.contains("plain http:// on another machine"),
        "{}",
        plain_enroll.stderr
    );
    assert!(!dir.join("plain-device").exists());
    with_gateway("tls.json", format!("https://127.0.0.1:{port}"));
    let untrusted = vellum(
        dir,
        &["capture", "enroll", "tls.json", "--dir", "tls-device"],
        b"",
    );
    assert_ne!(untrusted.code, 0, "{}", untrusted.stdout_text());
    assert!(!dir.join("tls-device").exists());
    let enrolled = vellum(
        dir,
        &[
            "capture",
            "enroll",
            "tls.json",
            "--ca",
            "ca.crt",
            "--dir",
            "tls-device",
        ],
        b"",
    );
    assert_eq!(enrolled.code, 0, "{}", enrolled.stderr);
    let sent = vellum(
        dir,
        &[
            "capture",
            "send",
            message().to_str().unwrap(),
            "--dir",
            "tls-device",
        ],
        b"",
    );
    assert_eq!(sent.code, 0, "{}", sent.stderr);
    assert!(
        sent.stdout_text().contains("receipt verified"),
        "{}",
        sent.stdout_text()
    );
    // Plain HTTP on the TLS port gets no answer.
    assert!(http(port, "GET", "/healthz").is_none_or(|(status, _)| status != 200));
    gateway.stop();

    // Plain HTTP on every interface: served, with a loud warning.
    let exposed = plain.replace(&format!("127.0.0.1:{port}"), &format!("0.0.0.0:{port}"));
    std::fs::write(&config_path, exposed).unwrap();
    let mut serve = Command::new(env!("CARGO_BIN_EXE_vellum"));
    serve.args(["serve", "--config", config_path.to_str().unwrap()]);
    let gateway = Running::start(serve, port, dir, "exposed");
    assert!(
        gateway.stderr_text().contains("WARNING: serving plain HTTP"),
        "{}",
        gateway.stderr_text()
    );
    gateway.stop();
}

/// Quickstart checks its address before it creates anything, makes a folder that
/// existed private, and the gateway refuses storage that other users may read, saying
/// which `chmod` fixes it.
#[test]
fn storage_is_private_and_a_taken_address_creates_nothing() {
    use std::os::unix::fs::PermissionsExt as _;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;

    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let out = vellum(
        dir,
        &[
            "quickstart",
            "--data",
            "second",
            "--listen",
            &format!("127.0.0.1:{port}"),
        ],
        b"",
    );
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("nothing was created"), "{}", out.stderr);
    assert!(!dir.join("second").exists());
    drop(taken);

    // A folder made beforehand with the usual mode becomes private.
    let data = dir.join("vellum-data");
    std::fs::create_dir(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    let port = free_port();
    let gateway = Running::start(quickstart(&data, port), port, dir, "private");
    gateway.stop();
    assert_eq!(mode(&data), 0o700);
    assert_eq!(mode(&data.join("vellum.db")), 0o600);
    assert_eq!(mode(&data.join("blobs")), 0o700);

    let config = data.join("vellum.toml");
    let serve = |what: &str| {
        let out = vellum(dir, &["serve", "--config", config.to_str().unwrap()], b"");
        assert_ne!(out.code, 0, "{what}");
        out.stderr
    };
    for (path, loose, fix) in [
        (data.join("vellum.db"), 0o644, "chmod 600"),
        (data.clone(), 0o755, "chmod 700"),
        (data.join("blobs"), 0o750, "chmod 700"),
    ] {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(loose)).unwrap();
        let refused = serve(&path.display().to_string());
        assert!(
            refused.contains(&format!("`{fix} {}`", path.display())),
            "{refused}"
        );
        let strict = if fix == "chmod 600" { 0o600 } else { 0o700 };
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(strict)).unwrap();
    }
    let again = Running::start(quickstart(&data, port), port, dir, "private-again");
    again.stop();
}

fn one_time_password_in(text: &str) -> String {
    text.lines()
        .skip_while(|l| !l.contains("one-time password"))
        .nth(1)
        .unwrap()
        .trim()
        .to_owned()
}

fn login_over_http(port: u16, username: &str, password: &str) -> (u16, serde_json::Value) {
    let body = serde_json::json!({ "username": username, "password": password }).to_string();
    let (status, text) = request(
        port,
        "POST",
        "/v1/auth/login",
        "Content-Type: application/json\r\n",
        &body,
    )
    .unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
    )
}

#[test]
fn the_first_administrator_signs_in_over_http_and_accounts_are_managed_on_the_database() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let data = dir.join("vellum-data");
    let port = free_port();
    let gateway = Running::start(quickstart(&data, port), port, dir, "accounts");
    let one_time = quickstart_password(&data);

    // The one-time password signs in only to be changed.
    assert_eq!(login_over_http(port, "admin", &one_time).0, 403);
    let change = serde_json::json!({ "username": "admin", "password": one_time, "new_password": "a passphrase for the first operator" });
    let (status, text) = request(
        port,
        "POST",
        "/v1/auth/password",
        "Content-Type: application/json\r\n",
        &change.to_string(),
    )
    .unwrap();
    assert_eq!(status, 204, "{text}");
    let (status, tokens) = login_over_http(port, "admin", "a passphrase for the first operator");
    assert_eq!(status, 200, "{tokens}");
    let bearer = format!(
        "Authorization: Bearer {}\r\n",
        tokens["access_token"].as_str().unwrap()
    );
    let (status, listing) = request(port, "GET", "/v1/admin/accounts", &bearer, "").unwrap();
    assert_eq!(status, 200, "{listing}");
    assert!(listing.contains("\"admin\""), "{listing}");
    gateway.stop();

    let config = data.join("vellum.toml");
    let admin = |args: &[&str]| {
        let mut all = vec!["admin", "user"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--config", config.to_str().unwrap()]);
        vellum(dir, &all, b"")
    };
    let added = admin(&["add", "alice", "--role", "auditor"]);
    assert_eq!(added.code, 0, "{}", added.stderr);
    let alice_password = one_time_password_in(&added.stdout_text());
    assert_eq!(
        admin(&["add", "alice", "--role", "auditor"]).code,
        7,
        "a taken name"
    );
    assert_ne!(admin(&["add", "Alice Smith", "--role", "auditor"]).code, 0);
    assert_ne!(admin(&["add", "bob", "--role", "root"]).code, 0);
    assert_eq!(admin(&["set-role", "alice", "approver"]).code, 0);
    let listed = admin(&["list"]).stdout_text();
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with("alice") && l.contains("approver") && l.contains("must-change-password")),
        "{listed}"
    );
    assert_eq!(admin(&["disable", "alice"]).code, 0);
    assert!(
        admin(&["list"])
            .stdout_text()
            .lines()
            .any(|l| l.starts_with("alice") && l.contains("disabled"))
    );
    assert_eq!(admin(&["disable", "nobody"]).code, 3);
    assert_eq!(admin(&["reset-mfa", "alice"]).code, 0);

    // Back online: a disabled account cannot sign in; enabled again, it must change its password.
    // The administrator signs in about ten times within seconds below, and the command
    // retries a busy answer (503, password work rationed), each retry one more attempt
    // against the per-account limit (10 a minute by default): raised here.
    let text = std::fs::read_to_string(&config).unwrap();
    let raised = text.replace("[auth]\n", "[auth]\nlogins_per_minute_per_account = 60\n");
    assert_ne!(text, raised);
    std::fs::write(&config, raised).unwrap();
    let gateway = Running::start(quickstart(&data, port), port, dir, "accounts-again");
    assert_eq!(login_over_http(port, "alice", &alice_password).0, 401);
    assert_eq!(admin(&["enable", "alice"]).code, 0);
    assert_eq!(login_over_http(port, "alice", &alice_password).0, 403);

    // The same commands through the running gateway's API, signed in as the admin
    // (each one signs in: ten a minute per account is the default limit).
    let secret = dir.join("admin-password");
    std::fs::write(&secret, "a passphrase for the first operator\n").unwrap();
    std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let remote = |args: &[&str], stdin: &[u8]| {
        let mut all = vec!["admin", "user"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--gateway", &url, "--as", "admin"]);
        vellum(dir, &all, stdin)
    };
    let with_file = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend_from_slice(&["--password-file", secret.to_str().unwrap()]);
        remote(&all, b"")
    };
    let added = with_file(&["add", "carol", "--role", "approver"]);
    assert_eq!(added.code, 0, "{}", added.stderr);
    let carol_password = one_time_password_in(&added.stdout_text());
    assert_eq!(
        login_over_http(port, "carol", &carol_password).0,
        403,
        "must change it first"
    );
    let taken = with_file(&["add", "carol", "--role", "approver"]);
    assert_eq!(taken.code, 7, "a taken name: {}", taken.stderr);
    // The password may come on standard input instead of a file.
    let listed = remote(&["list"], b"a passphrase for the first operator\n");
    assert_eq!(listed.code, 0, "{}", listed.stderr);
    assert!(
        listed
            .stdout_text()
            .lines()
            .any(|l| l.starts_with("carol") && l.contains("approver")),
        "{}",
        listed.stdout_text()
    );
    assert_eq!(with_file(&["set-role", "carol", "auditor"]).code, 0);
    assert_eq!(with_file(&["disable", "carol"]).code, 0);
    assert_eq!(login_over_http(port, "carol", &carol_password).0, 401);
    assert_eq!(with_file(&["enable", "carol"]).code, 0);
    let reset = with_file(&["reset-password", "carol"]);
    assert_eq!(reset.code, 0, "{}", reset.stderr);
    assert_ne!(one_time_password_in(&reset.stdout_text()), carol_password);
    // The gateway's rules hold: no administrator changes their own account this way,
    // and a wrong password gets nowhere.
    let own = with_file(&["disable", "admin"]);
    assert_ne!(own.code, 0);
    assert!(own.stderr.contains("403"), "{}", own.stderr);
    let wrong = remote(&["list"], b"not the password\n");
    assert_ne!(wrong.code, 0);
    assert!(wrong.stderr.contains("401"), "{}", wrong.stderr);
    gateway.stop();
}

/// RFC 4648 base32 (no padding), as TOTP secrets are shown.
fn base32_decode(text: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let (mut bits, mut value, mut out) = (0u32, 0u64, Vec::new());
    for c in text.bytes().filter(|c| *c != b'=') {
        let v = ALPHABET.iter().position(|a| *a == c).unwrap() as u64;
        value = (value << 5) | v;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((value >> bits) as u8);
        }
    }
    out
}

/// An auditor made with `vellum admin user add`, with a password of their own and a
/// second factor; returns their recovery codes.
/// Adds `name` with `role` (one with a second factor), sets their password and TOTP;
/// returns their recovery codes.
fn enrolled(dir: &Path, config: &Path, port: u16, (name, role): (&str, &str), password: &str) -> Vec<String> {
    let added = vellum(
        dir,
        &[
            "admin",
            "user",
            "add",
            name,
            "--role",
            role,
            "--config",
            config.to_str().unwrap(),
        ],
        b"",
    );
    assert_eq!(added.code, 0, "{}", added.stderr);
    let one_time = one_time_password_in(&added.stdout_text());
    first_day(dir, port, name, &one_time, password)
}

/// A person's first day, with the binary alone: the one-time password replaced, the
/// second factor set up; the recovery codes.
fn first_day(dir: &Path, port: u16, name: &str, one_time: &str, password: &str) -> Vec<String> {
    use std::io::{BufRead as _, Write as _};
    // The one-time password replaced (both on standard input, as from a password
    // manager's pipe) ...
    let url = format!("http://127.0.0.1:{port}");
    let changed = vellum(
        dir,
        &["account", "password", "--gateway", &url, "--as", name],
        format!("{one_time}\n{password}\n").as_bytes(),
    );
    assert_eq!(changed.code, 0, "{}", changed.stderr);
    // ... then the second factor: the URI, a QR code and the secret shown, the first
    // code typed in, the recovery codes printed once.
    let mut setup = Command::new(env!("CARGO_BIN_EXE_vellum"))
        .args(["account", "totp", "setup", "--gateway", &url, "--as", name])
        .current_dir(dir)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = setup.stdin.take().unwrap();
    writeln!(stdin, "{password}").unwrap();
    let mut stdout = std::io::BufReader::new(setup.stdout.take().unwrap());
    let mut shown = String::new();
    let secret = loop {
        let mut line = String::new();
        assert_ne!(
            stdout.read_line(&mut line).unwrap(),
            0,
            "no secret shown: {shown}"
        );
        shown.push_str(&line);
        if let Some(secret) = line.trim_end().strip_prefix("secret: ") {
            break base32_decode(secret);
        }
    };
    assert!(
        shown.contains(&format!("uri: otpauth://totp/Vellum:{name}?secret=")),
        "{shown}"
    );
    assert!(
        shown.contains('\u{2580}') || shown.contains('\u{2584}') || shown.contains('\u{2588}'),
        "no QR code: {shown}"
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    writeln!(stdin, "{}", vellum_gateway::auth::totp::code_at(&secret, now)).unwrap();
    drop(stdin);
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    let status = setup.wait().unwrap();
    assert!(status.success(), "{shown}{rest}");
    let codes: Vec<String> = rest
        .lines()
        .skip_while(|l| !l.contains("recovery codes"))
        .filter_map(|l| l.strip_prefix("  "))
        .map(str::to_owned)
        .collect();
    assert_eq!(codes.len(), 10, "{rest}");
    codes
}

/// The auditor quickstart makes holds epoch 1 from the start: after its first sign-in
/// it fetches the epoch identity with its identity file, no hand-made copy needed.
#[test]
fn the_quickstart_auditor_fetches_epoch_one() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let data = dir.join("vellum-data");
    let port = free_port();
    let gateway = Running::start(quickstart(&data, port), port, dir, "auditor-epoch");
    assert!(
        gateway.stdout_text().contains("Auditor account \"auditor\""),
        "{}",
        gateway.stdout_text()
    );
    let one_time = std::fs::read_to_string(data.join("offline/auditor.password")).unwrap();
    let password = "a long passphrase for the first records reader";
    let codes = first_day(dir, port, "auditor", one_time.trim(), password);
    let file = dir.join("auditor.pw");
    std::fs::write(&file, password).unwrap();
    std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let identity = data.join("offline/auditor.key");
    let fetch = |extra: &[&str]| {
        let mut args = vec![
            "keys",
            "fetch",
            "-i",
            identity.to_str().unwrap(),
            "--out",
            "epochs",
        ];
        args.extend_from_slice(extra);
        vellum(dir, &args, b"")
    };
    // Key commands use the session `vellum auditor login` keeps: one sign-in, one
    // code, for them and the auditor's other commands (E18).
    let none = fetch(&["--session", "auditor.session"]);
    assert_eq!(none.code, 3, "{}", none.stderr);
    assert!(none.stderr.contains("vellum auditor login"), "{}", none.stderr);
    let signed_in = vellum(
        dir,
        &[
            "auditor",
            "login",
            "--gateway",
            &format!("http://127.0.0.1:{port}"),
            "--as",
            "auditor",
            "--password-file",
            "auditor.pw",
            "--recovery-code",
            &codes[0],
            "--session",
            "auditor.session",
        ],
        b"",
    );
    assert_eq!(signed_in.code, 0, "{}", signed_in.stderr);
    let fetched = fetch(&["--session", "auditor.session"]);
    assert_eq!(fetched.code, 0, "{}", fetched.stderr);
    let cases = vellum(
        dir,
        &["auditor", "case", "list", "--session", "auditor.session"],
        b"",
    );
    assert_eq!(cases.code, 0, "{}", cases.stderr);
    let (_, keyring) = http(port, "GET", "/v1/keyring").unwrap();
    let archive = keyring.lines().find_map(|l| l.strip_prefix("archive ")).unwrap();
    assert_eq!(public_of(&dir.join("epochs/epoch-1.key")), archive);
    gateway.stop();
}

/// The public key written in an identity file's comment.
fn public_of(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("# public key: "))
        .unwrap()
        .to_owned()
}

/// A key rotation through the binary, as auditors run it: register recipients, make
/// epoch 2 on an auditor's machine, sign it with the organisation key, publish it, wrap
/// it for a colleague, who fetches and opens it; the capture client seals to it.
#[test]
fn auditors_rotate_the_keyring_and_share_epochs_through_the_cli() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let data = dir.join("vellum-data");
    let port = free_port();
    let gateway = Running::start(quickstart(&data, port), port, dir, "keys");
    let config = data.join("vellum.toml");
    let ann_codes = enrolled(
        dir,
        &config,
        port,
        ("ann", "auditor"),
        "a long passphrase for the first auditor",
    );
    let bo_codes = enrolled(
        dir,
        &config,
        port,
        ("bo", "auditor"),
        "a long passphrase for the second auditor",
    );
    let ro_codes = enrolled(
        dir,
        &config,
        port,
        ("ro", "approver"),
        "a long passphrase for the records officer",
    );
    for (name, password) in [
        ("ann", "a long passphrase for the first auditor"),
        ("bo", "a long passphrase for the second auditor"),
        ("ro", "a long passphrase for the records officer"),
    ] {
        let file = dir.join(format!("{name}.pw"));
        std::fs::write(&file, password).unwrap();
        std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
        assert_eq!(
            vellum(dir, &["keys", "new", "-o", &format!("{name}.key")], b"").code,
            0
        );
    }
    let url = format!("http://127.0.0.1:{port}");
    // A command signed in as `name` with a recovery code; its outcome.
    let signed_in = |name: &str, code: &str, args: &[&str]| {
        let mut all: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        for extra in [
            "--gateway",
            &url,
            "--as",
            name,
            "--password-file",
            &format!("{name}.pw"),
            "--recovery-code",
            code,
        ] {
            all.push(extra.to_owned());
        }
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        vellum(dir, &all, b"")
    };
    let as_auditor = |name: &str, code: &str, args: &[&str]| {
        let run = signed_in(name, code, args);
        assert_eq!(run.code, 0, "{args:?}: {}", run.stderr);
        run.stdout_text()
    };
    as_auditor("ann", &ann_codes[0], &["keys", "register", "-i", "ann.key"]);
    as_auditor("bo", &bo_codes[0], &["keys", "register", "-i", "bo.key"]);

    // Epoch 2, made on Ann's machine, signed with the organisation key, published.
    let escrow = public_of(&data.join("offline/escrow.key"));
    let ann = public_of(&dir.join("ann.key"));
    let made = vellum(
        dir,
        &[
            "epoch",
            "new",
            "--epoch",
            "2",
            "--auditor",
            &format!("ann={ann}"),
            "--escrow",
            &escrow,
            "--out",
            "epoch-2",
        ],
        b"",
    );
    assert_eq!(made.code, 0, "{}", made.stderr);
    let signed = vellum(
        dir,
        &[
            "keyring",
            "sign",
            "--statement",
            "epoch-2/statement.txt",
            "--org-key",
            data.join("offline/org.skey").to_str().unwrap(),
            "-o",
            "keyring-2.note",
        ],
        b"",
    );
    assert_eq!(signed.code, 0, "{}", signed.stderr);
    as_auditor(
        "ann",
        &ann_codes[1],
        &[
            "keyring",
            "publish",
            "--note",
            "keyring-2.note",
            "--wraps",
            "epoch-2/wrapped",
        ],
    );
    let (_, keyring) = http(port, "GET", "/v1/keyring").unwrap();
    assert!(keyring.contains("\nepoch 2\n"), "{keyring}");

    // Bo has nothing to fetch yet: said, and not a success.
    let nothing = signed_in(
        "bo",
        &bo_codes[2],
        &["keys", "fetch", "-i", "bo.key", "--out", "bo-none"],
    );
    assert_eq!(nothing.code, 3, "{}", nothing.stderr);
    assert!(
        nothing.stderr.contains("no epoch copy for bo"),
        "{}",
        nothing.stderr
    );

    // Ann wraps epoch 2 for Bo, only to the recipient Bo gave her himself.
    let bo_recipient = public_of(&dir.join("bo.key"));
    let stranger = public_of(&dir.join("ann.key"));
    let refused = signed_in(
        "ann",
        &ann_codes[2],
        &[
            "keys",
            "share",
            "-i",
            "ann.key",
            "--to",
            "bo",
            "--recipient",
            &stranger,
        ],
    );
    assert_eq!(refused.code, 6, "{}", refused.stderr);
    assert!(
        refused.stderr.contains("nothing was shared"),
        "{}",
        refused.stderr
    );
    let shared = as_auditor(
        "ann",
        &ann_codes[3],
        &[
            "keys",
            "share",
            "-i",
            "ann.key",
            "--to",
            "bo",
            "--recipient",
            &bo_recipient,
        ],
    );
    assert!(shared.contains("1 epoch(s) for bo"), "{shared}");
    as_auditor(
        "bo",
        &bo_codes[1],
        &["keys", "fetch", "-i", "bo.key", "--out", "bo-epochs"],
    );
    let archive_line = keyring.lines().find_map(|l| l.strip_prefix("archive ")).unwrap();
    assert_eq!(public_of(&dir.join("bo-epochs/epoch-2.key")), archive_line);

    // The capture client takes up epoch 2 and the gateway accepts what it seals.
    let enroll = vellum(
        dir,
        &[
            "capture",
            "enroll",
            bundle(&data).to_str().unwrap(),
            "--dir",
            "device",
        ],
        b"",
    );
    assert_eq!(enroll.code, 0, "{}", enroll.stderr);
    let send = vellum(
        dir,
        &["capture", "send", message().to_str().unwrap(), "--dir", "device"],
        b"",
    );
    assert_eq!(send.code, 0, "{}", send.stderr);
    let status = vellum(dir, &["capture", "status", "--dir", "device"], b"");
    assert!(
        status.stdout_text().contains("epoch 2"),
        "{}",
        status.stdout_text()
    );

    // The regulator path: the quickstart's escrow identity split 2 of 3; the records
    // officer fetches the escrow copies, two custodians rebuild the escrow identity
    // and re-wrap epoch 2 to the officer, who records the recovery at the gateway.
    let split = vellum(
        dir,
        &[
            "escrow",
            "init",
            "--from-identity",
            data.join("offline/escrow.key").to_str().unwrap(),
            "--threshold",
            "2",
            "--custodian",
            "a",
            "--custodian",
            "b",
            "--custodian",
            "c",
            "--out",
            "ceremony",
        ],
        b"",
    );
    assert_eq!(split.code, 0, "{}", split.stderr);
    as_auditor(
        "ro",
        &ro_codes[0],
        &["keys", "escrow-copies", "--out", "escrow-copies"],
    );
    let recovered = vellum(
        dir,
        &[
            "escrow",
            "recover",
            "--share",
            "ceremony/shares/a.escrow-share.txt",
            "--share",
            "ceremony/shares/c.escrow-share.txt",
            "--rewrap",
            "escrow-copies/epoch-2.age",
            "--to",
            &public_of(&dir.join("ro.key")),
            "--out",
            "produced",
        ],
        b"",
    );
    assert_eq!(recovered.code, 0, "{}", recovered.stderr);
    let opened = vellum(
        dir,
        &[
            "open",
            "-i",
            "ro.key",
            "produced/epoch-2.age",
            "-o",
            "epoch-2.key",
        ],
        b"",
    );
    assert_eq!(opened.code, 0, "{}", opened.stderr);
    let secret_line = |path: &str| {
        std::fs::read_to_string(dir.join(path))
            .unwrap()
            .lines()
            .find(|l| l.starts_with("AGE-SECRET-KEY-"))
            .unwrap()
            .to_owned()
    };
    assert_eq!(secret_line("epoch-2.key"), secret_line("bo-epochs/epoch-2.key"));
    let recorded = as_auditor(
        "ro",
        &ro_codes[1],
        &[
            "keys",
            "record-recovery",
            "--minute",
            "produced/recovery-minute.json",
            "--reason",
            "FOIA request 2026-0042",
        ],
    );
    assert!(
        recorded.contains("recorded the recovery of epoch 2\n"),
        "{recorded}"
    );
    gateway.stop();
}

/// A message document from `sender` to `recipients` (normal forms), sent at `at`.
fn message_from(dir: &Path, name: &str, sender: &str, recipients: &[&str], at: u64) -> String {
    let doc = serde_json::json!({
        "version": 1,
        "channel": "email",
        "conversation": { "id": format!("thread-{name}") },
        "sender": { "id": sender },
        "recipients": recipients.iter().map(|r| serde_json::json!({ "id": r })).collect::<Vec<_>>(),
        "sent_at_ms": at,
        "body": { "content_type": "text/plain", "text": format!("message {name}") },
    });
    let file = format!("{name}.json");
    std::fs::write(dir.join(&file), doc.to_string()).unwrap();
    file
}

/// Issue 7's story through the binary: records of three custodians; an auditor opens
/// a case scoped to one custodian and one participant; a records officer approves;
/// the auditor fetches exactly the in-scope records into a package that verifies
/// offline (and fails once tampered with), opens them; out-of-scope reads are refused;
/// the case's trail is proven in the log.
#[test]
fn an_auditor_reads_an_approved_scope_and_a_court_verifies_the_package() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let data = dir.join("vellum-data");
    let port = free_port();
    let gateway = Running::start(quickstart(&data, port), port, dir, "auditor");
    let config = data.join("vellum.toml");
    let url = format!("http://127.0.0.1:{port}");
    let run = |args: &[&str]| {
        let out = vellum(dir, args, b"");
        assert_eq!(out.code, 0, "{args:?}: {}", out.stderr);
        out.stdout_text()
    };
    let index_key = data.join("offline/index.key");
    let index_key = index_key.to_str().unwrap();
    let log_key = data.join("log.vkey");
    let log_key = log_key.to_str().unwrap();

    // Three custodians' devices; the witness appears in some of each one's messages.
    let witness = "mailto:witness@agency.example";
    let other = "mailto:someone@agency.example";
    let mut devices = vec![("demo", bundle(&data))];
    let admin_password = administrator(dir, &data, port);
    for custodian in ["bob", "carol"] {
        let out = format!("{custodian}.bundle.json");
        run(&[
            "admin",
            "device-bundle",
            "--gateway",
            &url,
            "--as",
            "admin",
            "--password-file",
            admin_password.to_str().unwrap(),
            "--custodian",
            custodian,
            "--retention",
            "default",
            "--index-key",
            index_key,
            "--org-key",
            data.join("org.vkey").to_str().unwrap(),
            "--log-key",
            log_key,
            "--out",
            &out,
        ]);
        devices.push((custodian, dir.join(out)));
    }
    let t0 = 1_764_150_000_000u64;
    let plan: [(&str, &[&str]); 3] = [
        ("demo", &[witness, other]),
        ("bob", &[witness, other, witness]),
        ("carol", &[witness]),
    ];
    for ((name, bundle), (_, recipients)) in devices.iter().zip(plan) {
        let device = format!("device-{name}");
        run(&["capture", "enroll", bundle.to_str().unwrap(), "--dir", &device]);
        let mut messages = Vec::new();
        for (i, to) in recipients.iter().enumerate() {
            messages.push(message_from(
                dir,
                &format!("{name}-{i}"),
                "mailto:sender@agency.example",
                &[to],
                t0 + i as u64,
            ));
        }
        let mut args = vec!["capture", "send", "--dir", device.as_str()];
        args.extend(messages.iter().map(String::as_str));
        run(&args);
    }

    // An auditor and a records officer, each signed in once.
    let ann_codes = enrolled(
        dir,
        &config,
        port,
        ("ann", "auditor"),
        "a long passphrase for the auditor",
    );
    let ro_codes = enrolled(
        dir,
        &config,
        port,
        ("ro", "approver"),
        "a long passphrase for the officer",
    );
    for (name, password, code) in [
        ("ann", "a long passphrase for the auditor", &ann_codes[0]),
        ("ro", "a long passphrase for the officer", &ro_codes[0]),
    ] {
        let file = dir.join(format!("{name}.pw"));
        std::fs::write(&file, password).unwrap();
        std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
        let role = if name == "ann" { "auditor" } else { "approver" };
        run(&[
            role,
            "login",
            "--gateway",
            &url,
            "--as",
            name,
            "--password-file",
            &format!("{name}.pw"),
            "--recovery-code",
            code,
            "--session",
            &format!("{name}.session"),
        ]);
    }
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(dir.join("ann.session")).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);

    // Search: by custodian, and by participant (tokens computed here).
    let found = |args: &[&str]| -> serde_json::Value {
        let mut all = vec!["auditor", "search", "--json", "--session", "ann.session"];
        all.extend_from_slice(args);
        serde_json::from_str(&run(&all)).unwrap()
    };
    assert_eq!(found(&["--custodian", "bob"])["total"], 3);
    let with_witness = found(&[
        "--participant",
        "witness@agency.example",
        "--index-key",
        index_key,
    ]);
    assert_eq!(with_witness["total"], 4);
    let carol = found(&["--custodian", "carol"]);
    let carol_record = carol["records"][0]["record_id"].as_str().unwrap().to_owned();

    // The case: bob's records with the witness.
    let opened = run(&[
        "auditor",
        "case",
        "open",
        "--reason",
        "FOIA-2026-17",
        "--custodian",
        "bob",
        "--participant",
        "witness@agency.example",
        "--index-key",
        index_key,
        "--session",
        "ann.session",
    ]);
    let case = opened
        .lines()
        .find_map(|l| l.strip_prefix("case "))
        .and_then(|l| l.split_whitespace().next())
        .unwrap()
        .to_owned();
    let refused = vellum(
        dir,
        &[
            "auditor",
            "fetch",
            &case,
            "--out",
            "early",
            "--log-key",
            log_key,
            "--session",
            "ann.session",
        ],
        b"",
    );
    assert_ne!(refused.code, 0);
    assert!(
        refused.stderr.contains("403") && refused.stderr.contains("no access"),
        "{}",
        refused.stderr
    );
    run(&[
        "auditor",
        "case",
        "request",
        &case,
        "--hours",
        "4",
        "--note",
        "exam",
        "--session",
        "ann.session",
    ]);
    // The records officer finds the request in the queue of those awaiting a decision.
    let queue = run(&["approver", "queue", "--session", "ro.session"]);
    assert!(queue.starts_with(&format!("{case}  requested")), "{queue}");
    assert!(queue.contains(" ann ("), "the queue names who asked: {queue}");
    assert!(
        queue.contains("account made by local-admin") && queue.contains("role given by local-admin"),
        "the queue says who made the account and gave the role: {queue}"
    );
    let listed = run(&[
        "auditor",
        "case",
        "list",
        "--state",
        "requested",
        "--session",
        "ro.session",
    ]);
    assert_eq!(listed, queue);
    let shown = run(&["approver", "show", &case, "--session", "ro.session"]);
    assert!(shown.contains("custodians:   bob"), "{shown}");
    assert!(shown.contains("requested:    "), "{shown}");
    assert!(
        shown.contains("grant:        none (the case is requested)"),
        "{shown}"
    );
    let digest = shown
        .lines()
        .find_map(|l| l.trim().strip_prefix("scope digest (computed here): "))
        .unwrap()
        .to_owned();
    let own = vellum(
        dir,
        &[
            "approver",
            "approve",
            &case,
            "--scope-sha256",
            &digest,
            "--session",
            "ann.session",
        ],
        b"",
    );
    assert_ne!(own.code, 0);
    assert!(own.stderr.contains("403"), "{}", own.stderr);
    let zeros = "0".repeat(64);
    let wrong = vellum(
        dir,
        &[
            "approver",
            "approve",
            &case,
            "--scope-sha256",
            &zeros,
            "--session",
            "ro.session",
        ],
        b"",
    );
    assert_eq!(wrong.code, 6, "{}", wrong.stderr);
    let approved = run(&[
        "approver",
        "approve",
        &case,
        "--scope-sha256",
        &digest,
        "--hours",
        "2",
        "--note",
        "ok",
        "--session",
        "ro.session",
    ]);
    assert!(approved.contains("[approved]"), "{approved}");

    // Fetch: exactly bob's two records with the witness, verified as written.
    run(&[
        "auditor",
        "fetch",
        &case,
        "--out",
        "package",
        "--log-key",
        log_key,
        "--session",
        "ann.session",
    ]);
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("package/manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["records"].as_array().unwrap().len(), 2);
    let verified = run(&["verify", "package", "--log-key", log_key, "package"]);
    assert!(verified.contains("package OK: 2 records"), "{verified}");
    assert!(verified.contains("complete: every record"), "{verified}");
    let listing = std::fs::read_to_string(dir.join("package/listing")).unwrap();
    assert_eq!(listing.lines().count(), 2, "{listing}");

    // Tampered copies fail, naming what.
    let tamper = |name: &str, change: &dyn Fn(&Path), expected: &str| {
        let copy = dir.join(name);
        Command::new("cp")
            .args(["-r", "package"])
            .arg(&copy)
            .current_dir(dir)
            .status()
            .unwrap();
        change(&copy);
        let out = vellum(dir, &["verify", "package", "--log-key", log_key, name], b"");
        assert_eq!(out.code, 6, "{name}: {}", out.stderr);
        assert!(out.stderr.contains(expected), "{name}: {}", out.stderr);
    };
    let first_body = manifest["records"][0]["body"].as_str().unwrap().to_owned();
    tamper(
        "no-fetch-record",
        &|p| {
            let mut m = manifest.clone();
            let kept: Vec<serde_json::Value> = m["fetch_events"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|e| !e["detail"].as_str().unwrap().contains("\"body\""))
                .cloned()
                .collect();
            m["fetch_events"] = serde_json::json!(kept);
            std::fs::write(p.join("manifest.json"), m.to_string()).unwrap();
        },
        "no proven fetch",
    );
    // A record left out, with its files and its fetch event: named by id.
    let left_out = manifest["records"][0]["record_id"].as_str().unwrap().to_owned();
    tamper(
        "left-out-record",
        &|p| {
            let mut m = manifest.clone();
            let records: Vec<serde_json::Value> = m["records"].as_array().unwrap()[1..].to_vec();
            let fetches: Vec<serde_json::Value> = m["fetch_events"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|e| !e["detail"].as_str().unwrap().contains(&left_out))
                .cloned()
                .collect();
            m["records"] = serde_json::json!(records);
            m["fetch_events"] = serde_json::json!(fetches);
            std::fs::write(p.join("manifest.json"), m.to_string()).unwrap();
            for ext in ["header", "age", "proof"] {
                std::fs::remove_file(p.join(format!("records/{left_out}.{ext}"))).unwrap();
            }
        },
        &format!("leaves out 1 of the 2 records its listing names: {left_out}"),
    );
    tamper(
        "edited-listing",
        &|p| {
            let text = std::fs::read_to_string(p.join("listing")).unwrap();
            let first = text.lines().next().unwrap().to_owned() + "\n";
            std::fs::write(p.join("listing"), text.replace(&first, "")).unwrap();
        },
        "the listing is not the one fetch event",
    );
    tamper(
        "no-listing",
        &|p| {
            let mut m = manifest.clone();
            m.as_object_mut().unwrap().remove("listing");
            std::fs::write(p.join("manifest.json"), m.to_string()).unwrap();
        },
        "names no listing",
    );
    // A package made before listings verifies, saying its completeness is not proven.
    let older = dir.join("older");
    Command::new("cp")
        .args(["-r", "package"])
        .arg(&older)
        .current_dir(dir)
        .status()
        .unwrap();
    let mut m = manifest.clone();
    m["format"] = serde_json::json!("vellum/package/v1");
    m.as_object_mut().unwrap().remove("listing");
    let fetches: Vec<serde_json::Value> = m["fetch_events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| !e["detail"].as_str().unwrap().contains("\"listing\""))
        .cloned()
        .collect();
    m["fetch_events"] = serde_json::json!(fetches);
    std::fs::write(older.join("manifest.json"), m.to_string()).unwrap();
    std::fs::remove_file(older.join("listing")).unwrap();
    let out = vellum(dir, &["verify", "package", "--log-key", log_key, "older"], b"");
    assert_eq!(out.code, 8, "{}", out.stderr);
    assert!(
        out.stdout_text().contains("package OK: 2 records"),
        "{}",
        out.stdout_text()
    );
    assert!(
        out.stderr.contains("completeness not proven (older package)"),
        "{}",
        out.stderr
    );
    tamper(
        "escaping-name",
        &|p| {
            let mut m = manifest.clone();
            m["records"][0]["body"] = serde_json::json!("../package/records/x.age");
            std::fs::write(p.join("manifest.json"), m.to_string()).unwrap();
        },
        "outside the package",
    );
    tamper(
        "flipped-body",
        &|p| {
            let path = p.join(&first_body);
            let mut bytes = std::fs::read(&path).unwrap();
            let last = bytes.len() - 1;
            bytes[last] ^= 1;
            std::fs::write(&path, bytes).unwrap();
        },
        "sealed body is not the one its header names",
    );
    tamper(
        "edited-manifest",
        &|p| {
            let mut m = manifest.clone();
            m["records"][0]["received_at"] = serde_json::json!(1);
            std::fs::write(p.join("manifest.json"), m.to_string()).unwrap();
        },
        "proof is for another log entry",
    );
    tamper(
        "no-approval",
        &|p| {
            let mut m = manifest.clone();
            let steps: Vec<serde_json::Value> = m["case_events"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|e| e["action"] != "case.approve")
                .cloned()
                .collect();
            m["case_events"] = serde_json::json!(steps);
            std::fs::write(p.join("manifest.json"), m.to_string()).unwrap();
        },
        "no recorded step approves",
    );
    tamper(
        "widened-scope",
        &|p| {
            let mut m = manifest.clone();
            m["case"]["scope"]["custodians"] = serde_json::json!(["bob", "carol"]);
            std::fs::write(p.join("manifest.json"), m.to_string()).unwrap();
        },
        "scope does not match its digest",
    );

    // Opened on the auditor's side with the epoch identity (the quickstart auditor's).
    run(&[
        "open",
        "-i",
        data.join("offline/auditor.key").to_str().unwrap(),
        data.join("keys/epoch-1.age").to_str().unwrap(),
        "-o",
        "epoch-1.key",
    ]);
    let unverified = vellum(
        dir,
        &[
            "auditor",
            "open",
            "flipped-body",
            "--log-key",
            log_key,
            "-i",
            "epoch-1.key",
        ],
        b"",
    );
    assert_eq!(
        unverified.code, 6,
        "a tampered package is not opened: {}",
        unverified.stderr
    );
    assert!(!dir.join("flipped-body/opened").exists());
    // The package is private to the auditor (0700); a failed open (the wrong key)
    // leaves nothing behind, and the retry works.
    use std::os::unix::fs::PermissionsExt as _;
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir.join("package")), 0o700);
    run(&["keys", "new", "-o", "stranger.key"]);
    let wrong = vellum(
        dir,
        &[
            "auditor",
            "open",
            "package",
            "--log-key",
            log_key,
            "-i",
            "stranger.key",
        ],
        b"",
    );
    assert_eq!(wrong.code, 4, "{}", wrong.stderr);
    let left: Vec<_> = std::fs::read_dir(dir.join("package"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with('.') || n == "opened")
        .collect();
    assert!(left.is_empty(), "a failed open left {left:?}");
    run(&[
        "auditor",
        "open",
        "package",
        "--log-key",
        log_key,
        "-i",
        "epoch-1.key",
    ]);
    assert_eq!(mode(&dir.join("package/opened")), 0o700);
    let opened: Vec<String> = std::fs::read_dir(dir.join("package/opened"))
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect();
    assert_eq!(opened.len(), 2);
    assert!(
        opened
            .iter()
            .all(|doc| doc.contains(witness) && doc.contains("message bob-")),
        "{opened:?}"
    );

    // Exports for the production, on the auditor's side.
    // An edited opened document is never exported as genuine: export opens the sealed
    // bodies again.
    let first_opened = std::fs::read_dir(dir.join("package/opened"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let genuine = std::fs::read_to_string(&first_opened).unwrap();
    std::fs::write(&first_opened, genuine.replace("message bob-", "FORGED bob-")).unwrap();
    let keyed = ["--log-key", log_key, "-i", "epoch-1.key"];
    let export = |args: &[&str]| {
        let mut all = vec!["auditor", "export", "package"];
        all.extend_from_slice(args);
        all.extend_from_slice(&keyed);
        run(&all)
    };
    let no_key = vellum(
        dir,
        &["auditor", "export", "package", "--format", "eml", "--out", "eml"],
        b"",
    );
    assert_eq!(no_key.code, 2, "{}", no_key.stderr);
    export(&["--format", "eml", "--out", "eml"]);
    let emls: Vec<String> = std::fs::read_dir(dir.join("eml"))
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect();
    assert_eq!(emls.len(), 2);
    for eml in &emls {
        for field in [
            "From: ",
            "To: ",
            "Date: ",
            "Message-ID: <",
            "X-Vellum-Record-Id: ",
            "X-Vellum-Custodian: bob",
        ] {
            assert!(eml.contains(field), "{field} missing: {eml}");
        }
        assert!(
            eml.contains("witness@agency.example") && eml.contains("message bob-"),
            "{eml}"
        );
    }
    export(&["--format", "mbox", "--out", "case.mbox"]);
    let mbox = std::fs::read_to_string(dir.join("case.mbox")).unwrap();
    assert_eq!(
        mbox.lines().filter(|l| l.starts_with("From ")).count(),
        2,
        "{mbox}"
    );
    export(&["--format", "jsonl", "--out", "case.jsonl"]);
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(dir.join("case.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert!(
        lines
            .iter()
            .all(|l| l["custodian"] == "bob" && l["document"]["version"] == 1)
    );
    export(&["--format", "csv", "--out", "load.csv"]);
    let csv = std::fs::read_to_string(dir.join("load.csv")).unwrap();
    for exported in [
        csv.clone(),
        mbox.clone(),
        emls.concat(),
        std::fs::read_to_string(dir.join("case.jsonl")).unwrap(),
    ] {
        assert!(!exported.contains("FORGED"), "an edited opened file was exported");
    }
    std::fs::write(&first_opened, &genuine).unwrap();
    let rows: Vec<&str> = csv.split("\r\n").filter(|l| !l.is_empty()).collect();
    assert_eq!(rows.len(), 3, "{csv}");
    assert!(rows[0].starts_with("record_id,custodian,channel"));
    // Each row's document digest is the SHA-256 of the opened document it names.
    for row in &rows[1..] {
        let cells: Vec<&str> = row.split(',').collect();
        let native = std::fs::read(dir.join("package").join(cells[14])).unwrap();
        let digest: String = sha2::Digest::finalize(<sha2::Sha256 as sha2::Digest>::new_with_prefix(&native))
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(cells[12], digest);
    }
    let exists = vellum(
        dir,
        &[
            "auditor",
            "export",
            "package",
            "--format",
            "csv",
            "--out",
            "load.csv",
            "--log-key",
            log_key,
            "-i",
            "epoch-1.key",
        ],
        b"",
    );
    assert_eq!(exists.code, 7, "{}", exists.stderr);

    // Full-text search, in memory, on the auditor's side.
    let found = vellum(dir, &["auditor", "grep", "package", "message bob"], b"");
    assert_eq!(found.code, 0, "{}", found.stderr);
    assert_eq!(found.stdout_text().lines().count(), 2, "{}", found.stdout_text());
    let phrase = vellum(dir, &["auditor", "grep", "package", "\"message bob-1\""], b"");
    assert_eq!(
        phrase.stdout_text().lines().count(),
        0,
        "bob-1 has no witness: {}",
        phrase.stdout_text()
    );
    let phrase = vellum(dir, &["auditor", "grep", "package", "\"message bob-2\""], b"");
    assert_eq!(
        phrase.stdout_text().lines().count(),
        1,
        "{}",
        phrase.stdout_text()
    );

    // Outside the scope: refused, over plain HTTP with the auditor's own token.
    let login = serde_json::json!({
        "username": "ann", "password": "a long passphrase for the auditor", "recovery_code": ann_codes[1],
    });
    let (status, tokens) = request(
        port,
        "POST",
        "/v1/auth/login",
        "Content-Type: application/json\r\n",
        &login.to_string(),
    )
    .unwrap();
    assert_eq!(status, 200, "{tokens}");
    let tokens: serde_json::Value = serde_json::from_str(&tokens).unwrap();
    let bearer = format!(
        "Authorization: Bearer {}\r\n",
        tokens["access_token"].as_str().unwrap()
    );
    let (status, _) = request(
        port,
        "GET",
        &format!("/v1/cases/{case}/records/{carol_record}/body"),
        &bearer,
        "",
    )
    .unwrap();
    assert_eq!(status, 403);

    // The trail: every step and fetch, each proven in the log.
    let trail = run(&[
        "approver",
        "trail",
        &case,
        "--log-key",
        log_key,
        "--session",
        "ro.session",
    ]);
    for action in ["case.open", "case.request", "case.approve", "case.fetch"] {
        assert!(trail.contains(action), "{action} missing: {trail}");
    }
    // Each step names its person, with who made their account and gave their role.
    assert!(
        trail
            .lines()
            .any(|l| l.contains("case.approve") && l.contains("by ro (approver; account made by local-admin")),
        "{trail}"
    );
    let proven: usize = trail
        .lines()
        .find(|l| l.contains(" events proven in the log"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    // open, request, approve; a list and a header and body per record.
    assert!(proven >= 3 + 1 + 2 * 2, "{trail}");
    drop(gateway);
}

/// The quickstart administrator's one-time password replaced with `vellum account
/// password`; the file (0600) holding the new one.
fn administrator(dir: &Path, data: &Path, port: u16) -> PathBuf {
    let password = "a passphrase for the first operator";
    let changed = vellum(
        dir,
        &[
            "account",
            "password",
            "--gateway",
            &format!("http://127.0.0.1:{port}"),
            "--as",
            "admin",
        ],
        format!("{}\n{password}\n", quickstart_password(data)).as_bytes(),
    );
    assert_eq!(changed.code, 0, "{}", changed.stderr);
    let file = dir.join("admin.pw");
    std::fs::write(&file, format!("{password}\n")).unwrap();
    std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    file
}

/// Enrollment bundles come from the admin API (F21): made on the administrator's
/// machine, the index key added there; audited as the administrator's
/// `device.enrollment`; refused, with nothing written and no token issued, for a
/// gateway whose keys are not the ones given, or for bad input; and a device enrolls
/// with the bundle and captures.
#[test]
fn enrollment_bundles_are_issued_through_the_admin_api() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let data = dir.join("vellum-data");
    let port = free_port();
    let gateway = Running::start(quickstart(&data, port), port, dir, "bundles");
    let url = format!("http://127.0.0.1:{port}");
    let password = administrator(dir, &data, port);
    let other = dir.join("other");
    let other_port = free_port();
    Running::start(
        quickstart(&other, other_port),
        other_port,
        dir,
        "other-deployment",
    )
    .stop();
    let bundle_for = |custodian: &str, org: &Path, out: &str, extra: &[&str]| {
        let mut args = vec![
            "admin",
            "device-bundle",
            "--gateway",
            &url,
            "--as",
            "admin",
            "--password-file",
            password.to_str().unwrap(),
            "--custodian",
            custodian,
            "--index-key",
            data.join("offline/index.key").to_str().unwrap(),
            "--org-key",
            org.to_str().unwrap(),
            "--log-key",
            data.join("log.vkey").to_str().unwrap(),
            "--out",
            out,
        ]
        .into_iter()
        .map(str::to_owned)
        .collect::<Vec<_>>();
        args.extend(extra.iter().map(|a| (*a).to_owned()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        vellum(dir, &args, b"")
    };
    // Another deployment's organisation key: refused before any token is issued.
    let refused = bundle_for("dana", &other.join("org.vkey"), "dana.bundle.json", &[]);
    assert_eq!(refused.code, 8, "{}", refused.stderr);
    assert!(refused.stderr.contains("--org-key"), "{}", refused.stderr);
    assert!(!dir.join("dana.bundle.json").exists());
    // Bad input: refused before the gateway is asked.
    for (custodian, extra, names) in [
        ("Dana Smith", &[][..], "--custodian"),
        ("dana", &["--days", "91"][..], "--days"),
        ("dana", &["--retention", "no such/class"][..], "--retention"),
    ] {
        let refused = bundle_for(custodian, &data.join("org.vkey"), "dana.bundle.json", extra);
        assert_ne!(refused.code, 0);
        assert!(refused.stderr.contains(names), "{}", refused.stderr);
        assert!(!dir.join("dana.bundle.json").exists());
    }
    // No token was issued for any of them.
    let events = |action: &str| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            use vellum_archive::ports::AuditStore as _;
            let url = format!("sqlite://{}", data.join("vellum.db").display());
            let store = vellum_archive::sqlite::SqliteStore::open(&url).await.unwrap();
            store
                .audit_by_action(action, 0, 10_000)
                .await
                .unwrap()
                .into_iter()
                .map(|(_, e)| (e.actor, e.subject))
                .collect::<Vec<_>>()
        })
    };
    assert!(events("device.enrollment").is_empty());

    let made = bundle_for(
        "dana",
        &data.join("org.vkey"),
        "dana.bundle.json",
        &["--retention", "default"],
    );
    assert_eq!(made.code, 0, "{}", made.stderr);
    let recorded = events("device.enrollment");
    assert_eq!(recorded.len(), 1);
    assert_ne!(recorded[0].0, "local-admin", "audited as the administrator");
    assert_eq!(recorded[0].1, "dana");
    // The bundle is private, and is never overwritten.
    let mode = std::fs::metadata(dir.join("dana.bundle.json"))
        .unwrap()
        .permissions();
    assert_eq!(std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777, 0o600);
    let again = bundle_for("dana", &data.join("org.vkey"), "dana.bundle.json", &[]);
    assert_ne!(again.code, 0);
    assert_eq!(events("device.enrollment").len(), 1);

    let enrolled = vellum(
        dir,
        &["capture", "enroll", "dana.bundle.json", "--dir", "device-dana"],
        b"",
    );
    assert_eq!(enrolled.code, 0, "{}", enrolled.stderr);
    let sent = vellum(
        dir,
        &[
            "capture",
            "send",
            "--dir",
            "device-dana",
            message().to_str().unwrap(),
        ],
        b"",
    );
    assert_eq!(sent.code, 0, "{}", sent.stderr);
    // The index key went nowhere near the gateway: no file of the deployment but
    // offline/index.key holds it.
    let index = std::fs::read_to_string(data.join("offline/index.key")).unwrap();
    for file in files_under(&data) {
        if file.ends_with("offline/index.key") || file.ends_with("offline/demo-device.bundle.json") {
            continue;
        }
        // (SQLite's -wal and -shm files go when the last connection closes.)
        let Ok(bytes) = std::fs::read(&file) else {
            continue;
        };
        assert!(
            !contains(&bytes, index.trim()),
            "the index key is in {}",
            file.display()
        );
    }
    gateway.stop();
}

/// The stored TOTP secret of `username`, read from the deployment's database.
fn stored_totp_secret(data: &Path, username: &str) -> ([u8; 16], Vec<u8>) {
    use vellum_archive::ports::AccountStore as _;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let url = format!("sqlite://{}", data.join("vellum.db").display());
        let store = vellum_archive::sqlite::SqliteStore::open(&url).await.unwrap();
        let account = store.account_by_username(username).await.unwrap().unwrap();
        (account.account_id, account.totp_secret.unwrap().to_vec())
    })
}

/// The 32-byte key of a key file.
fn key_file(path: &Path) -> zeroize::Zeroizing<[u8; 32]> {
    use base64::Engine as _;
    let text = std::fs::read_to_string(path).unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text.trim())
        .unwrap();
    zeroize::Zeroizing::new(bytes.try_into().unwrap())
}

/// TOTP secrets are sealed under the TOTP key (D11): the database holds none in the
/// clear; `serve` refuses to start without `totp_key_file`, or when a stored secret's
/// key is not configured (naming the account); a rotation re-seals every secret under
/// the new key, after which the person's codes still work.
#[test]
fn totp_secrets_are_sealed_and_their_key_rotates() {
    use vellum_gateway::auth::totp_seal::{TotpKeys, key_id};
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let data = dir.join("vellum-data");
    let port = free_port();
    let gateway = Running::start(quickstart(&data, port), port, dir, "totp-seal");
    let config = data.join("vellum.toml");
    let password = "a passphrase for the first reviewer";
    enrolled(dir, &config, port, ("tess", "auditor"), password);
    gateway.stop();

    let first = key_file(&data.join("keys/totp.key"));
    let (account, stored) = stored_totp_secret(&data, "tess");
    assert!(stored.starts_with(b"vtotp1"));
    assert_eq!(TotpKeys::sealed_by(&stored), Some(key_id(&first)));
    let secret = TotpKeys::new(first.clone(), Vec::new())
        .open(&account, &stored)
        .unwrap();
    for file in files_under(&data) {
        // (SQLite's -wal and -shm files go when the last connection closes.)
        let Ok(bytes) = std::fs::read(&file) else {
            continue;
        };
        assert!(
            !bytes.windows(secret.len()).any(|w| w == secret.as_slice()),
            "the TOTP secret is in the clear in {}",
            file.display()
        );
    }

    let original = std::fs::read_to_string(&config).unwrap();
    let serve = || vellum(dir, &["serve", "--config", config.to_str().unwrap()], b"");
    // Without the key, no start.
    std::fs::write(
        &config,
        original.replace("totp_key_file = \"keys/totp.key\"\n", ""),
    )
    .unwrap();
    let refused = serve();
    assert_ne!(refused.code, 0);
    assert!(
        refused.stderr.contains("totp_key_file is required"),
        "{}",
        refused.stderr
    );

    // A new key alone: tess's secret does not open, so no start, naming the account.
    let second = data.join("keys/totp-2.key");
    {
        use base64::Engine as _;
        let mut key = [0u8; 32];
        getrandom::getrandom(&mut key).unwrap();
        let text = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key);
        std::fs::write(&second, format!("{text}\n")).unwrap();
        std::fs::set_permissions(&second, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    }
    let rotated = original.replace("keys/totp.key", "keys/totp-2.key");
    std::fs::write(&config, &rotated).unwrap();
    let refused = serve();
    assert_ne!(refused.code, 0);
    assert!(
        refused.stderr.contains("\"tess\"") && refused.stderr.contains("totp_previous_key_files"),
        "{}",
        refused.stderr
    );
    assert_eq!(stored_totp_secret(&data, "tess").1, stored, "nothing changed");

    // With the old key as previous, the start re-seals under the new key ...
    std::fs::write(
        &config,
        rotated.replace(
            "totp_key_file = \"keys/totp-2.key\"\n",
            "totp_key_file = \"keys/totp-2.key\"\ntotp_previous_key_files = [\"keys/totp.key\"]\n",
        ),
    )
    .unwrap();
    let serving = |name: &str| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_vellum"));
        command.args(["serve", "--config", config.to_str().unwrap()]);
        Running::start(command, port, dir, name)
    };
    serving("totp-rotate").stop();
    let new = key_file(&second);
    let (_, resealed) = stored_totp_secret(&data, "tess");
    assert_eq!(TotpKeys::sealed_by(&resealed), Some(key_id(&new)));
    assert_eq!(
        TotpKeys::new(new, Vec::new()).open(&account, &resealed).unwrap(),
        secret
    );

    // ... and, the old key gone, tess signs in with a code of the same secret.
    std::fs::write(&config, &rotated).unwrap();
    let gateway = serving("totp-after");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    // The first day used this step's code: the next step's is accepted.
    let code = vellum_gateway::auth::totp::code_at(&secret, now + 30);
    let body = serde_json::json!({ "username": "tess", "password": password, "totp": code });
    let (status, text) = request(
        port,
        "POST",
        "/v1/auth/login",
        "Content-Type: application/json\r\n",
        &body.to_string(),
    )
    .unwrap();
    assert_eq!(status, 200, "{text}");
    gateway.stop();
}

/// An upgrade binds each device enrolled before bindings existed to the retention
/// classes it had used (migration 6), and the next start records each such binding as
/// an audit event, a leaf of the log: `device.retention` by `migration`, once.
#[test]
fn an_upgrades_device_bindings_become_audit_events_once() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let data = dir.join("vellum-data");
    let port = free_port();
    let gateway = Running::start(quickstart(&data, port), port, dir, "bindings");
    let enrolled = vellum(
        dir,
        &[
            "capture",
            "enroll",
            bundle(&data).to_str().unwrap(),
            "--dir",
            "device",
        ],
        b"",
    );
    assert_eq!(enrolled.code, 0, "{}", enrolled.stderr);
    let sent = vellum(
        dir,
        &["capture", "send", "--dir", "device", message().to_str().unwrap()],
        b"",
    );
    assert_eq!(sent.code, 0, "{}", sent.stderr);
    gateway.stop();

    // As the migration leaves a database whose devices had captured before it.
    let db = rusqlite::Connection::open(data.join("vellum.db")).unwrap();
    let marked = db
        .execute(
            "INSERT INTO device_retention_unaudited (device_id) SELECT device_id FROM devices",
            [],
        )
        .unwrap();
    assert_eq!(marked, 1);
    drop(db);
    let events = || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            use vellum_archive::ports::AuditStore as _;
            let url = format!("sqlite://{}", data.join("vellum.db").display());
            let store = vellum_archive::sqlite::SqliteStore::open(&url).await.unwrap();
            store
                .audit_by_action("device.retention", 0, 100)
                .await
                .unwrap()
                .into_iter()
                .map(|(_, e)| (e.actor, e.detail))
                .collect::<Vec<_>>()
        })
    };
    assert!(events().is_empty());
    for round in ["bindings-again", "bindings-third"] {
        Running::start(quickstart(&data, port), port, dir, round).stop();
        let recorded = events();
        assert_eq!(recorded.len(), 1, "{recorded:?}");
        assert_eq!(recorded[0].0, "migration");
        assert!(
            recorded[0].1.contains("\"retention\":[\"default\"]"),
            "{recorded:?}"
        );
    }
    let db = rusqlite::Connection::open(data.join("vellum.db")).unwrap();
    let left: i64 = db
        .query_row("SELECT count(*) FROM device_retention_unaudited", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(left, 0);
}
