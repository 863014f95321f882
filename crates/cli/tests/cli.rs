//! The `vellum` binary from the outside: outputs, files it leaves (or must not leave),
//! and one exit code per kind of failure.

#![allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]

mod common;

use std::path::Path;

use common::*;

const NOT_FOUND: i32 = 3;
const WRONG_KEY: i32 = 4;
const MALFORMED: i32 = 5;
const VERIFY_FAILED: i32 = 6;
const EXISTS: i32 = 7;

#[test]
fn keys_new_writes_an_age_keygen_file_privately_and_never_overwrites() {
    let dir = tempfile::tempdir().unwrap();
    let run = vellum(dir.path(), &["keys", "new", "-o", "id.key"], b"");
    assert_eq!(run.code, 0, "{}", run.stderr);
    let text = std::fs::read_to_string(dir.path().join("id.key")).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("# created: "));
    assert!(lines[1].starts_with("# public key: age1"));
    assert!(lines[2].starts_with("AGE-SECRET-KEY-1"));
    assert_eq!(lines.len(), 3);
    assert!(
        run.stderr.contains(&lines[1][14..]),
        "public key is echoed on stderr"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(dir.path().join("id.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    let again = vellum(dir.path(), &["keys", "new", "-o", "id.key"], b"");
    assert_eq!(again.code, EXISTS);
    assert!(again.stderr.contains("exists"), "{}", again.stderr);
    assert_eq!(std::fs::read_to_string(dir.path().join("id.key")).unwrap(), text);
}

#[test]
fn keys_new_without_output_prints_the_identity() {
    let dir = tempfile::tempdir().unwrap();
    let run = vellum(dir.path(), &["keys", "new"], b"");
    assert_eq!(run.code, 0);
    assert!(run.stdout_text().contains("AGE-SECRET-KEY-1"));
    assert!(run.stderr.starts_with("Public key: age1"));
}

fn identity(dir: &Path, name: &str) -> String {
    assert_eq!(vellum(dir, &["keys", "new", "-o", name], b"").code, 0);
    public_key_of(&dir.join(name))
}

#[test]
fn seal_and_open_through_pipes_and_files() {
    let dir = tempfile::tempdir().unwrap();
    let recipient = identity(dir.path(), "a.key");
    let sealed = vellum(dir.path(), &["seal", "-r", &recipient], b"piped secret");
    assert_eq!(sealed.code, 0, "{}", sealed.stderr);
    assert!(!sealed.stdout.windows(6).any(|w| w == b"secret"));
    let opened = vellum(
        dir.path(),
        &["open", "-i", "a.key", "-o", "plain.txt", "-"],
        &sealed.stdout,
    );
    assert_eq!(opened.code, 0, "{}", opened.stderr);
    assert_eq!(
        std::fs::read(dir.path().join("plain.txt")).unwrap(),
        b"piped secret"
    );
}

#[test]
fn failures_have_distinct_exit_codes_and_leave_no_output() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let recipient = identity(d, "a.key");
    identity(d, "b.key");
    let big: Vec<u8> = vec![42; 300_000];
    assert_eq!(
        vellum(d, &["seal", "-r", &recipient, "-o", "m.age"], &big).code,
        0
    );
    let sealed = std::fs::read(d.join("m.age")).unwrap();

    let wrong = vellum(d, &["open", "-i", "b.key", "-o", "out", "m.age"], b"");
    assert_eq!(wrong.code, WRONG_KEY, "{}", wrong.stderr);
    assert!(!d.join("out").exists());

    // Damage the last chunk: earlier chunks decrypt, but no partial plaintext may remain.
    let mut damaged = sealed.clone();
    let at = damaged.len() - 5;
    damaged[at] ^= 0x80;
    std::fs::write(d.join("damaged.age"), &damaged).unwrap();
    let corrupt = vellum(d, &["open", "-i", "a.key", "-o", "out", "damaged.age"], b"");
    assert_eq!(corrupt.code, MALFORMED, "{}", corrupt.stderr);
    assert!(!d.join("out").exists(), "partial plaintext was left behind");
    assert!(
        std::fs::read_dir(d).unwrap().all(|e| !e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with(".vellum"))
    );

    std::fs::write(d.join("short.age"), &sealed[..sealed.len() - 1000]).unwrap();
    assert_eq!(
        vellum(d, &["open", "-i", "a.key", "short.age"], b"").code,
        MALFORMED
    );
    assert_eq!(
        vellum(d, &["open", "-i", "a.key"], b"not age at all").code,
        MALFORMED
    );
    assert_eq!(
        vellum(d, &["open", "-i", "a.key", "missing.age"], b"").code,
        NOT_FOUND
    );
    assert_eq!(
        vellum(d, &["open", "-i", "missing.key", "m.age"], b"").code,
        NOT_FOUND
    );
    assert_eq!(
        vellum(d, &["open", "-i", "m.age", "m.age"], b"").code,
        MALFORMED,
        "a non-identity file"
    );
    assert_eq!(vellum(d, &["seal", "-r", "age1nonsense"], b"x").code, MALFORMED);
    let no_recipient = vellum(d, &["seal", "-o", "x.age"], b"x");
    assert_eq!(no_recipient.code, 1);
    assert!(no_recipient.stderr.contains("no recipients"));
    // Outputs never replace a file; a secret pasted as a recipient is not echoed.
    let clobber = vellum(d, &["seal", "-r", &recipient, "-o", "a.key"], b"x");
    assert_eq!(clobber.code, EXISTS);
    assert!(
        std::fs::read_to_string(d.join("a.key"))
            .unwrap()
            .contains("AGE-SECRET-KEY-1")
    );
    assert_eq!(
        vellum(d, &["open", "-i", "a.key", "-o", "m.age", "m.age"], b"").code,
        EXISTS
    );
    let secret = std::fs::read_to_string(d.join("b.key")).unwrap();
    let secret = secret
        .lines()
        .find(|l| l.starts_with("AGE-SECRET-KEY-1"))
        .unwrap();
    let pasted = vellum(d, &["seal", "-r", secret], b"x");
    assert_eq!(pasted.code, MALFORMED);
    assert!(!pasted.stderr.contains(secret), "the secret was echoed");
    assert!(pasted.stderr.contains("secret identity"), "{}", pasted.stderr);
    for run in [&wrong, &corrupt] {
        assert_eq!(
            run.stderr.lines().count(),
            1,
            "errors are one line: {}",
            run.stderr
        );
    }
}

#[test]
fn demo_artefacts_verify_and_tampering_is_caught() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let demo = vellum(d, &["demo", "--dir", "out"], b"");
    assert_eq!(demo.code, 0, "{}", demo.stderr);
    assert!(demo.stdout_text().contains("tokens match: true"));
    let out = d.join("out");
    let receipt = std::fs::read_dir(out.join("records"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "receipt"))
        .unwrap();
    let receipt = receipt.to_str().unwrap();

    let ok = |args: &[&str]| {
        let run = vellum(d, args, b"");
        assert_eq!(run.code, 0, "{args:?}: {}", run.stderr);
        run.stdout_text()
    };
    assert!(
        ok(&[
            "verify",
            "checkpoint",
            "--log-key",
            "out/log.vkey",
            "out/checkpoint-3.note"
        ])
        .contains("size 3")
    );
    assert!(ok(&["verify", "inclusion", "--log-key", "out/log.vkey", receipt]).contains("inclusion OK"));
    let vkey = std::fs::read_to_string(out.join("log.vkey")).unwrap();
    ok(&[
        "verify",
        "checkpoint",
        "--log-key",
        vkey.trim(),
        "out/checkpoint-2.note",
    ]);
    ok(&[
        "verify",
        "consistency",
        "--log-key",
        "out/log.vkey",
        "out/checkpoint-2.note",
        "out/checkpoint-3.note",
        "out/consistency-2-3.proof",
    ]);

    // Another key with the same name, a tampered checkpoint, a receipt for another entry.
    let org = std::fs::read_to_string(out.join("org.vkey")).unwrap();
    let code = |args: &[&str]| vellum(d, args, b"").code;
    assert_eq!(
        code(&[
            "verify",
            "checkpoint",
            "--log-key",
            org.trim(),
            "out/checkpoint-3.note"
        ]),
        VERIFY_FAILED
    );
    let note = std::fs::read_to_string(out.join("checkpoint-3.note")).unwrap();
    std::fs::write(out.join("forged.note"), note.replacen("\n3\n", "\n4\n", 1)).unwrap();
    assert_eq!(
        code(&[
            "verify",
            "checkpoint",
            "--log-key",
            "out/log.vkey",
            "out/forged.note"
        ]),
        VERIFY_FAILED
    );
    std::fs::write(out.join("other-entry"), b"not the entry").unwrap();
    assert_eq!(
        code(&[
            "verify",
            "inclusion",
            "--log-key",
            "out/log.vkey",
            receipt,
            "--entry",
            "out/other-entry"
        ]),
        VERIFY_FAILED
    );
    assert_eq!(
        code(&[
            "verify",
            "consistency",
            "--log-key",
            "out/log.vkey",
            "out/checkpoint-3.note",
            "out/checkpoint-2.note",
            "out/consistency-2-3.proof"
        ]),
        MALFORMED,
        "swapped checkpoints do not match the proof's sizes"
    );
    assert_eq!(
        code(&[
            "verify",
            "checkpoint",
            "--log-key",
            "out/log.vkey",
            "out/log.vkey"
        ]),
        MALFORMED
    );
    assert_eq!(
        code(&[
            "verify",
            "checkpoint",
            "--log-key",
            "out/nothing",
            "out/checkpoint-3.note"
        ]),
        NOT_FOUND
    );

    // The sealed bodies open with the epoch identity and the escrow identity alike.
    let body = receipt.replace(".receipt", ".age");
    assert!(ok(&["open", "-i", "out/archive-epoch-1.key", &body]).contains("\"version\":1"));
    assert!(ok(&["open", "-i", "out/escrow.key", &body]).contains("\"version\":1"));

    assert_eq!(vellum(d, &["demo", "--dir", "out"], b"").code, EXISTS);
}

/// `vellum … | head`: a reader that closes the pipe early ends the command quietly,
/// with the status of a SIGPIPE death (141), never a panic or an error line.
#[test]
fn a_closed_output_pipe_ends_the_command_quietly() {
    use std::io::Read as _;
    let dir = tempfile::tempdir().unwrap();
    let recipient = identity(dir.path(), "a.key");
    std::fs::write(dir.path().join("big"), vec![7u8; 8 << 20]).unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_vellum"))
        .args(["seal", "-r", &recipient, "big"])
        .current_dir(dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = [0u8; 16];
    child.stdout.take().unwrap().read_exact(&mut first).unwrap();
    // The reader is gone now (the pipe's read end dropped).
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(141),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stderr.is_empty(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(first.starts_with(b"age-encryption"));
}
