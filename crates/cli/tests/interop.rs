//! Interoperability with an independent age implementation, both ways: the TypeScript
//! `age-encryption` package opens what `vellum seal` writes, and `vellum open` opens
//! what it writes. Bodies span several 64 KiB age chunks.

#![allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]

mod common;

use common::*;

fn plaintext() -> Vec<u8> {
    (0..200_000u32).map(|i| (i * 7 % 256) as u8).collect()
}

#[test]
fn vellum_seals_typescript_opens() {
    let dir = tempfile::tempdir().unwrap();
    let made = vellum(dir.path(), &["keys", "new", "-o", "auditor.key"], b"");
    assert_eq!(made.code, 0, "{}", made.stderr);
    let recipient = public_key_of(&dir.path().join("auditor.key"));

    let sealed = vellum(
        dir.path(),
        &["seal", "-r", &recipient, "-o", "msg.age"],
        &plaintext(),
    );
    assert_eq!(sealed.code, 0, "{}", sealed.stderr);
    let sealed_bytes = std::fs::read(dir.path().join("msg.age")).unwrap();
    assert!(sealed_bytes.starts_with(b"age-encryption.org/v1\n"));

    let opened = ts_age(dir.path(), &["open", "auditor.key"], &sealed_bytes);
    assert_eq!(opened.code, 0, "{}", opened.stderr);
    assert!(
        opened.stdout == plaintext(),
        "TypeScript age opened different bytes"
    );
}

#[test]
fn typescript_seals_vellum_opens() {
    let dir = tempfile::tempdir().unwrap();
    let key = ts_age(dir.path(), &["keygen"], b"");
    assert_eq!(key.code, 0, "{}", key.stderr);
    std::fs::write(dir.path().join("ts.key"), &key.stdout).unwrap();
    let recipient = public_key_of(&dir.path().join("ts.key"));

    let sealed = ts_age(dir.path(), &["seal", &recipient], &plaintext());
    assert_eq!(sealed.code, 0, "{}", sealed.stderr);
    std::fs::write(dir.path().join("msg.age"), &sealed.stdout).unwrap();

    let opened = vellum(dir.path(), &["open", "-i", "ts.key", "msg.age"], b"");
    assert_eq!(opened.code, 0, "{}", opened.stderr);
    assert!(opened.stdout == plaintext(), "vellum opened different bytes");
}

#[test]
fn one_file_for_recipients_of_both_implementations() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(vellum(dir.path(), &["keys", "new", "-o", "v.key"], b"").code, 0);
    let ts_key = ts_age(dir.path(), &["keygen"], b"");
    std::fs::write(dir.path().join("ts.key"), &ts_key.stdout).unwrap();
    let (v_rcpt, ts_rcpt) = (
        public_key_of(&dir.path().join("v.key")),
        public_key_of(&dir.path().join("ts.key")),
    );
    std::fs::write(dir.path().join("recipients.txt"), format!("# both\n{ts_rcpt}\n")).unwrap();

    let sealed = vellum(
        dir.path(),
        &["seal", "-r", &v_rcpt, "-R", "recipients.txt", "-o", "m.age"],
        b"hello both",
    );
    assert_eq!(sealed.code, 0, "{}", sealed.stderr);
    let bytes = std::fs::read(dir.path().join("m.age")).unwrap();
    assert_eq!(
        ts_age(dir.path(), &["open", "ts.key"], &bytes).stdout,
        b"hello both"
    );
    assert_eq!(
        vellum(dir.path(), &["open", "-i", "v.key"], &bytes).stdout,
        b"hello both"
    );
}
