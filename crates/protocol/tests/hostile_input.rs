//! Every parser meets random and mutated bytes: a value or a typed error, never a panic,
//! and a mutation that still verifies must not change what was signed.

#![allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]

mod common;

use common::*;
use proptest::prelude::*;
use vellum_protocol::age_header;
use vellum_protocol::document::MessageDocument;
use vellum_protocol::header::UnverifiedHeader;
use vellum_protocol::ids::{Epoch, UnixMillis};
use vellum_protocol::keyring::{self, KeyringStatement};
use vellum_protocol::keys::DeviceKey;
use vellum_protocol::receipt::{LogEntry, Receipt};
use vellum_protocol::seal::{self, Identity, Recipient, SealedBody};
use vellum_tlog::checkpoint::Checkpoint;
use vellum_tlog::note::NoteSigner;
use vellum_tlog::tree::MemoryTree;

struct Samples {
    device: DeviceKey,
    org: NoteSigner,
    log: NoteSigner,
    auditor: Identity,
    header: Vec<u8>,
    keyring: Vec<u8>,
    receipt: Vec<u8>,
    sealed: Vec<u8>,
    entry: Vec<u8>,
    identity_file: Vec<u8>,
}

fn samples() -> Samples {
    let device = DeviceKey::from_seed(&[1; 32]);
    let org = NoteSigner::from_seed("agency.example/org", [2; 32]).unwrap();
    let log = NoteSigner::from_seed("log.agency.example", [3; 32]).unwrap();
    let auditor = Identity::generate();
    let header = signed_header(&device, record_id(1));
    let keyring = KeyringStatement {
        epoch: Epoch(2),
        archive: auditor.to_public(),
        escrow: auditor.to_public(),
        valid_from: UnixMillis(0),
        valid_until: UnixMillis(u64::MAX),
    }
    .sign(&org)
    .unwrap();
    let entry = LogEntry::RecordAppended {
        record_id: record_id(1),
        header_sha256: header.digest(),
        received_at: UnixMillis(NOW),
    };
    let mut tree = MemoryTree::new();
    tree.push(
        LogEntry::RecordAppended {
            record_id: record_id(0),
            header_sha256: [0; 32],
            received_at: UnixMillis(0),
        }
        .leaf_hash(),
    );
    tree.push(entry.leaf_hash());
    tree.push(entry.leaf_hash());
    let checkpoint = Checkpoint::new(log.name(), 3, tree.root()).sign(&log).unwrap();
    let receipt = Receipt::new(&entry, 1, tree.prove_inclusion(3, 1).unwrap(), checkpoint);
    let sealed = seal::seal(&[auditor.to_public()], b"{}").unwrap().into_bytes();
    Samples {
        device,
        org,
        log,
        header: header.as_bytes().to_vec(),
        keyring: keyring.into_bytes(),
        receipt: receipt.to_text().into_bytes(),
        sealed,
        entry: entry.to_bytes(),
        identity_file: seal::format_identity_file(&auditor, NOW).as_bytes().to_vec(),
        auditor,
    }
}

/// Runs every parser; checks that whatever verifies still says what was signed.
fn parse_everything(s: &Samples, bytes: &[u8]) -> Result<(), TestCaseError> {
    if let Ok(h) = UnverifiedHeader::parse(bytes)
        && let Ok(v) = h.verify(&s.device.public())
    {
        prop_assert_eq!(v.as_bytes(), s.header.as_slice());
    }
    if let Ok(k) = keyring::verify(bytes, &s.org.verifier(), None, UnixMillis(NOW)) {
        prop_assert_eq!(k.statement().epoch, Epoch(2));
    }
    if let Ok(r) = Receipt::parse(bytes) {
        let header_digest: [u8; 32] = sha_of(&s.header);
        if let Ok(v) = r.verify(&s.log.verifier(), &record_id(1), &header_digest) {
            prop_assert_eq!(v.index, 1);
        }
    }
    if let Ok(e) = LogEntry::from_bytes(bytes) {
        prop_assert_eq!(e.to_bytes(), bytes);
    }
    let _ = age_header::inspect(bytes);
    if let Ok(body) = SealedBody::from_bytes(bytes.to_vec())
        && let Ok(plain) = body.open(std::slice::from_ref(&s.auditor))
    {
        prop_assert_eq!(&plain[..], b"{}");
    }
    let _ = MessageDocument::from_json(bytes);
    if let Ok(text) = std::str::from_utf8(bytes) {
        if let Ok(ids) = seal::parse_identity_file(text) {
            // A mutated identity file may parse, but only as a valid X25519 identity.
            prop_assert!(ids.iter().all(|i| i.to_public().to_string().starts_with("age1")));
        }
        let _ = seal::parse_recipients_file(text);
        let _ = text.parse::<Recipient>();
        let _ = KeyringStatement::parse_text(text);
    }
    Ok(())
}

fn sha_of(bytes: &[u8]) -> [u8; 32] {
    use sha2::Digest as _;
    sha2::Sha256::digest(bytes).into()
}

fn mutate(mut bytes: Vec<u8>, edits: &[(usize, u8)], cut: Option<usize>) -> Vec<u8> {
    for &(pos, value) in edits {
        if !bytes.is_empty() {
            let at = pos % bytes.len();
            bytes[at] = value;
        }
    }
    if let Some(cut) = cut {
        bytes.truncate(cut % (bytes.len() + 1));
    }
    bytes
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..800)) {
        let s = samples();
        parse_everything(&s, &bytes)?;
    }

    #[test]
    fn mutated_valid_objects_never_panic_nor_lie(
        edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..4),
        cut in proptest::option::of(any::<usize>()),
    ) {
        let s = samples();
        for original in [&s.header, &s.keyring, &s.receipt, &s.sealed, &s.entry, &s.identity_file] {
            parse_everything(&s, &mutate(original.clone(), &edits, cut))?;
        }
    }
}

#[test]
fn the_samples_themselves_verify() {
    // Guards the property tests above: if the samples stopped verifying, the
    // "verifies but lies" checks would pass vacuously.
    let s = samples();
    assert!(
        UnverifiedHeader::parse(&s.header)
            .unwrap()
            .verify(&s.device.public())
            .is_ok()
    );
    assert!(keyring::verify(&s.keyring, &s.org.verifier(), None, UnixMillis(NOW)).is_ok());
    let receipt = Receipt::parse(&s.receipt).unwrap();
    assert!(
        receipt
            .verify(&s.log.verifier(), &record_id(1), &sha_of(&s.header))
            .is_ok()
    );
    assert!(
        SealedBody::from_bytes(s.sealed.clone())
            .unwrap()
            .open(&[s.auditor])
            .is_ok()
    );
}
