//! The key ceremony and recovery through the real binary: `vellum escrow init` splits
//! a new escrow identity (and the organisation key) among custodians; `vellum escrow
//! recover` rebuilds it from M shares, sealed or on paper, and re-wraps an epoch
//! identity to a newcomer who then reads a record sealed under that epoch. Every bad
//! set of shares is refused with its own error.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a failed unwrap is a failed test"
)]

mod common;

use std::path::Path;

use common::{Run, vellum};

/// A new identity file in `dir`; returns its public key.
fn new_identity(dir: &Path, file: &str) -> String {
    let made = vellum(dir, &["keys", "new", "-o", file], b"");
    assert_eq!(made.code, 0, "{}", made.stderr);
    let text = std::fs::read_to_string(dir.join(file)).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("# public key: "))
        .unwrap()
        .to_owned()
}

fn ok(run: &Run) -> String {
    assert_eq!(run.code, 0, "{}", run.stderr);
    run.stdout_text()
}

/// Every file under `dir`, recursively, as bytes.
fn all_bytes(dir: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(all_bytes(&path));
        } else {
            out.extend(std::fs::read(&path).unwrap());
        }
    }
    out
}

#[test]
fn custodians_rebuild_the_escrow_identity_and_a_newcomer_reads_an_old_epoch() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let a = new_identity(dir, "a.key");
    let b = new_identity(dir, "b.key");
    let said = ok(&vellum(
        dir,
        &[
            "escrow",
            "init",
            "--out",
            "ceremony",
            "--threshold",
            "2",
            "--custodian",
            &format!("alma={a}"),
            "--custodian",
            &format!("ben={b}"),
            "--custodian",
            "cleo",
            "--org-name",
            "agency.example/org",
            "--org-threshold",
            "2",
        ],
        b"",
    ));
    let recipient = std::fs::read_to_string(dir.join("ceremony/escrow.recipient")).unwrap();
    let recipient = recipient.trim();
    assert!(
        recipient.starts_with("age1") && said.contains(recipient),
        "{said}"
    );
    assert!(said.contains("fingerprint: "), "{said}");
    for file in [
        "alma.escrow-share.age",
        "ben.escrow-share.age",
        "cleo.escrow-share.txt",
        "alma.org-share.age",
        "cleo.org-share.txt",
    ] {
        assert!(dir.join("ceremony/shares").join(file).is_file(), "{file}");
    }
    // Neither secret is written whole anywhere.
    let written = String::from_utf8_lossy(&all_bytes(&dir.join("ceremony"))).into_owned();
    assert!(
        !written.contains("AGE-SECRET-KEY"),
        "the escrow identity was written"
    );
    assert!(
        !written.contains("PRIVATE+KEY"),
        "the organisation key was written"
    );
    assert!(!dir.join("ceremony/org.skey").exists());

    // An epoch whose identity is wrapped to an auditor and the escrow recipient, and a
    // record sealed under it.
    let epoch = new_identity(dir, "epoch-1.key");
    let auditor = new_identity(dir, "auditor.key");
    ok(&vellum(
        dir,
        &[
            "seal",
            "-r",
            &auditor,
            "-r",
            recipient,
            "-o",
            "epoch-1.age",
            "epoch-1.key",
        ],
        b"",
    ));
    std::fs::write(dir.join("minutes.txt"), b"minutes of the budget meeting").unwrap();
    ok(&vellum(
        dir,
        &["seal", "-r", &epoch, "-o", "record.age", "minutes.txt"],
        b"",
    ));
    std::fs::remove_file(dir.join("epoch-1.key")).unwrap();
    std::fs::remove_file(dir.join("auditor.key")).unwrap();

    // Every auditor identity is gone. Alma (sealed share) and Cleo (paper) rebuild the
    // escrow identity and re-wrap epoch 1 to a newcomer.
    let newcomer = new_identity(dir, "newcomer.key");
    let recovered = ok(&vellum(
        dir,
        &[
            "escrow",
            "recover",
            "--share",
            "ceremony/shares/alma.escrow-share.age",
            "--share",
            "ceremony/shares/cleo.escrow-share.txt",
            "-i",
            "a.key",
            "--rewrap",
            "epoch-1.age",
            "--to",
            &newcomer,
            "--out",
            "rewrapped",
        ],
        b"",
    ));
    assert!(recovered.contains(recipient), "{recovered}");
    ok(&vellum(
        dir,
        &[
            "open",
            "-i",
            "newcomer.key",
            "-o",
            "epoch-1.again",
            "rewrapped/epoch-1.age",
        ],
        b"",
    ));
    let read = vellum(dir, &["open", "-i", "epoch-1.again", "record.age"], b"");
    assert_eq!(read.stdout, b"minutes of the budget meeting", "{}", read.stderr);
}

#[test]
fn bad_sets_of_shares_are_refused_with_their_own_error() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let init = |out: &str| {
        ok(&vellum(
            dir,
            &[
                "escrow",
                "init",
                "--out",
                out,
                "--threshold",
                "2",
                "--custodian",
                "a",
                "--custodian",
                "b",
                "--custodian",
                "c",
                "--org-name",
                "agency.example/org",
                "--org-threshold",
                "2",
            ],
            b"",
        ))
    };
    init("one");
    init("two");
    let recover = |shares: &[&str]| {
        let mut args = vec!["escrow", "recover"];
        for share in shares {
            args.extend_from_slice(&["--share", share]);
        }
        vellum(dir, &args, b"")
    };
    let refused = |shares: &[&str], code: i32, says: &str| {
        let run = recover(shares);
        assert_eq!(run.code, code, "{shares:?}: {}", run.stderr);
        assert!(run.stderr.contains(says), "{shares:?}: {}", run.stderr);
    };
    let (a, b) = ("one/shares/a.escrow-share.txt", "one/shares/b.escrow-share.txt");
    assert_eq!(recover(&[a, b]).code, 0);
    refused(&[a], 6, "1 distinct shares given, 2 needed");
    refused(&[a, a], 6, "given twice");
    refused(&[a, "two/shares/b.escrow-share.txt"], 6, "different splits");
    refused(
        &["one/shares/a.org-share.txt", "one/shares/b.org-share.txt"],
        6,
        "organisation signing key",
    );
    // A mistyped character on paper.
    let paper = std::fs::read_to_string(dir.join(b)).unwrap();
    let line = paper.lines().find(|l| !l.starts_with('#')).unwrap();
    let mut typo = line.as_bytes().to_vec();
    let last = typo.len() - 1;
    typo[last] = if typo[last] == b'q' { b'p' } else { b'q' };
    std::fs::write(
        dir.join("typo.txt"),
        paper.replacen(line, std::str::from_utf8(&typo).unwrap(), 1),
    )
    .unwrap();
    refused(&[a, "typo.txt"], 4, "checksum");
    // A sealed share without its custodian's identity.
    let k = new_identity(dir, "k.key");
    ok(&vellum(dir, &["seal", "-r", &k, "-o", "sealed.age", a], b""));
    refused(&["sealed.age", b], 4, "identity");
    assert_eq!(
        vellum(
            dir,
            &[
                "escrow",
                "recover",
                "--share",
                "sealed.age",
                "--share",
                b,
                "-i",
                "k.key"
            ],
            b""
        )
        .code,
        0
    );
    // Ceremony parameters out of range.
    let bad = vellum(
        dir,
        &[
            "escrow",
            "init",
            "--out",
            "three",
            "--threshold",
            "3",
            "--custodian",
            "a",
            "--custodian",
            "b",
        ],
        b"",
    );
    assert_ne!(bad.code, 0);
    assert!(bad.stderr.contains("2 <= M <= N"), "{}", bad.stderr);
    assert!(!dir.join("three").exists(), "a refused ceremony wrote files");
}

/// The auditor-side rotation: a new epoch wrapped to each auditor and to escrow, its
/// statement signed by an organisation key that exists only as custodians' shares.
#[test]
fn a_new_epoch_is_wrapped_to_each_auditor_and_signed_by_a_split_organisation_key() {
    use vellum_protocol::keyring;
    use vellum_protocol::seal::{Identity, parse_identity_file};
    use vellum_tlog::note::NoteVerifier;

    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    ok(&vellum(
        dir,
        &[
            "escrow",
            "init",
            "--out",
            "ceremony",
            "--threshold",
            "2",
            "--custodian",
            "a",
            "--custodian",
            "b",
            "--custodian",
            "c",
            "--org-name",
            "agency.example/org",
            "--org-threshold",
            "2",
        ],
        b"",
    ));
    let escrow = std::fs::read_to_string(dir.join("ceremony/escrow.recipient")).unwrap();
    let ann = new_identity(dir, "ann.key");
    let bo = new_identity(dir, "bo.key");
    ok(&vellum(
        dir,
        &[
            "epoch",
            "new",
            "--epoch",
            "2",
            "--auditor",
            &format!("ann={ann}"),
            "--auditor",
            &format!("bo={bo}"),
            "--escrow",
            escrow.trim(),
            "--out",
            "epoch-2",
        ],
        b"",
    ));
    let sign = |shares: &[&str]| {
        let mut args = vec![
            "keyring",
            "sign",
            "--statement",
            "epoch-2/statement.txt",
            "-o",
            "keyring-2.note",
        ];
        for share in shares {
            args.extend_from_slice(&["--org-share", share]);
        }
        vellum(dir, &args, b"")
    };
    let one = sign(&["ceremony/shares/a.org-share.txt"]);
    assert_ne!(one.code, 0);
    assert!(one.stderr.contains("2 needed"), "{}", one.stderr);
    let wrong = sign(&[
        "ceremony/shares/a.escrow-share.txt",
        "ceremony/shares/b.escrow-share.txt",
    ]);
    assert!(
        wrong.stderr.contains("not of the organisation signing key"),
        "{}",
        wrong.stderr
    );
    assert!(
        !dir.join("keyring-2.note").exists(),
        "a refused signing wrote a note"
    );
    ok(&sign(&[
        "ceremony/shares/a.org-share.txt",
        "ceremony/shares/c.org-share.txt",
    ]));

    // The note verifies against the organisation's public key, and each auditor's
    // wrapped copy holds the identity whose recipient the statement names.
    let vkey = std::fs::read_to_string(dir.join("ceremony/org.vkey")).unwrap();
    let org = NoteVerifier::from_vkey(vkey.trim()).unwrap();
    let note = std::fs::read(dir.join("keyring-2.note")).unwrap();
    let now = vellum_protocol::ids::UnixMillis(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64,
    );
    let verified = keyring::verify(&note, &org, None, now).unwrap();
    assert_eq!(verified.statement().epoch.0, 2);
    assert_eq!(verified.statement().escrow.to_string(), escrow.trim());
    for (who, key) in [("ann", "ann.key"), ("bo", "bo.key")] {
        let opened = vellum(
            dir,
            &["open", "-i", key, &format!("epoch-2/wrapped/{who}.age")],
            b"",
        );
        assert_eq!(opened.code, 0, "{}", opened.stderr);
        let epoch = Identity::parse(&String::from_utf8(opened.stdout).unwrap()).unwrap();
        assert_eq!(
            epoch.to_public().to_string(),
            verified.statement().archive.to_string()
        );
    }
    // Ann's copy is hers alone.
    let ann_identity = parse_identity_file(&std::fs::read_to_string(dir.join("ann.key")).unwrap()).unwrap();
    assert_eq!(ann_identity.len(), 1);
    assert_ne!(
        vellum(dir, &["open", "-i", "ann.key", "epoch-2/wrapped/bo.age"], b"").code,
        0
    );
    // Nothing in the epoch folder holds the identity unwrapped.
    let written = String::from_utf8_lossy(&all_bytes(&dir.join("epoch-2"))).into_owned();
    assert!(!written.contains("AGE-SECRET-KEY"));
}

/// A deployment that began with a whole escrow identity (as a quickstart writes one)
/// splits it; the recipient stays, so epochs already wrapped to it stay recoverable.
#[test]
fn an_existing_escrow_identity_is_split_and_still_opens_its_epochs() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let escrow = new_identity(dir, "escrow.key");
    let epoch = new_identity(dir, "epoch-1.key");
    ok(&vellum(
        dir,
        &["seal", "-r", &escrow, "-o", "epoch-1.age", "epoch-1.key"],
        b"",
    ));
    let said = ok(&vellum(
        dir,
        &[
            "escrow",
            "init",
            "--out",
            "ceremony",
            "--threshold",
            "2",
            "--custodian",
            "a",
            "--custodian",
            "b",
            "--from-identity",
            "escrow.key",
        ],
        b"",
    ));
    assert!(said.contains(&escrow) && said.contains("destroy"), "{said}");
    std::fs::remove_file(dir.join("escrow.key")).unwrap();
    let newcomer = new_identity(dir, "newcomer.key");
    ok(&vellum(
        dir,
        &[
            "escrow",
            "recover",
            "--share",
            "ceremony/shares/a.escrow-share.txt",
            "--share",
            "ceremony/shares/b.escrow-share.txt",
            "--rewrap",
            "epoch-1.age",
            "--to",
            &newcomer,
            "--out",
            "rewrapped",
        ],
        b"",
    ));
    let opened = vellum(dir, &["open", "-i", "newcomer.key", "rewrapped/epoch-1.age"], b"");
    assert_eq!(opened.code, 0, "{}", opened.stderr);
    let text = String::from_utf8(opened.stdout).unwrap();
    let identity = vellum_protocol::seal::parse_identity_file(&text).unwrap();
    assert_eq!(identity[0].to_public().to_string(), epoch);
}
