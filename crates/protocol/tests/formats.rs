//! Behaviour of every format: round trips, and each refusal with its own error.

#![allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]

mod common;

use common::*;
use vellum_protocol::blind::IndexKey;
use vellum_protocol::document::{Body, Conversation, MessageDocument, Participant};
use vellum_protocol::header::{HeaderError, UnverifiedHeader};
use vellum_protocol::ids::{Epoch, UnixMillis};
use vellum_protocol::keyring::{self, KeyringError, KeyringStatement};
use vellum_protocol::keys::{DeviceKey, generate_note_signer};
use vellum_protocol::receipt::{LogEntry, Receipt, ReceiptError};
use vellum_protocol::seal::{self, Identity, SealError, SealedBody};
use vellum_tlog::checkpoint::Checkpoint;
use vellum_tlog::proof::ProofError;
use vellum_tlog::tree::MemoryTree;

#[test]
fn sealing_opens_for_each_recipient_only() {
    let (a, b, stranger) = (Identity::generate(), Identity::generate(), Identity::generate());
    let body = seal::seal(&[a.to_public(), b.to_public()], b"minutes of the meeting").unwrap();
    assert_eq!(
        &body.open(std::slice::from_ref(&a)).unwrap()[..],
        b"minutes of the meeting"
    );
    assert_eq!(
        &body.open(std::slice::from_ref(&b)).unwrap()[..],
        b"minutes of the meeting"
    );
    assert!(matches!(body.open(&[stranger]), Err(SealError::NoMatchingKey)));
    assert!(!body.as_bytes().windows(7).any(|w| w == b"minutes"));
    assert!(matches!(seal::seal(&[], b"x"), Err(SealError::NoRecipients)));
}

#[test]
fn streaming_seals_large_bodies_and_reports_the_digest() {
    let auditor = Identity::generate();
    let plaintext: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let mut sealed = Vec::new();
    let digest = seal::seal_stream(&[auditor.to_public()], plaintext.as_slice(), &mut sealed).unwrap();
    let body = SealedBody::from_bytes(sealed.clone()).unwrap();
    assert_eq!(body.digest(), digest);
    let mut opened = Vec::new();
    let n = seal::open_stream(&[auditor], sealed.as_slice(), &mut opened).unwrap();
    assert_eq!(n, plaintext.len() as u64);
    assert!(opened == plaintext);
}

#[test]
fn corrupted_and_truncated_ciphertext_is_refused() {
    let auditor = Identity::generate();
    let body = seal::seal(&[auditor.to_public()], &[7u8; 200_000]).unwrap();
    let bytes = body.as_bytes();
    let mut flipped = bytes.to_vec();
    let last = flipped.len() - 10;
    flipped[last] ^= 1;
    let mut out = Vec::new();
    let ids = [auditor];
    assert!(matches!(
        seal::open_stream(&ids, flipped.as_slice(), &mut out),
        Err(SealError::Corrupt)
    ));
    let truncated = &bytes[..bytes.len() - 100];
    assert!(matches!(
        seal::open_stream(&ids, truncated, &mut Vec::new()),
        Err(SealError::Corrupt)
    ));
    // A flipped header MAC is corruption, not a wrong key.
    let text = String::from_utf8_lossy(bytes);
    let mac_at = text.find("\n--- ").unwrap() + 6;
    let mut bad_mac = bytes.to_vec();
    bad_mac[mac_at] = if bad_mac[mac_at] == b'A' { b'B' } else { b'A' };
    assert!(matches!(
        seal::open_stream(&ids, bad_mac.as_slice(), &mut Vec::new()),
        Err(SealError::Corrupt)
    ));
}

#[test]
fn plaintext_cannot_become_a_sealed_body() {
    assert!(matches!(
        SealedBody::from_bytes(b"{\"text\":\"hi\"}".to_vec()),
        Err(SealError::NotAgeFile(_))
    ));
    let header_only = b"age-encryption.org/v1\n-> X25519 AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\n--- AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\n";
    assert!(matches!(
        SealedBody::from_bytes(header_only.to_vec()),
        Err(SealError::NotAgeFile(_))
    ));
    let scrypt = b"age-encryption.org/v1\n-> scrypt AAAAAAAAAAAAAAAAAAAAAA 18\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\n--- AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\n0123456789abcdef0123456789abcdef";
    assert!(matches!(
        SealedBody::from_bytes(scrypt.to_vec()),
        Err(SealError::UnsupportedStanza)
    ));
}

#[test]
fn oversized_age_headers_are_refused_by_total_size() {
    // 60 stanzas of 300-byte bodies: every line and stanza is within limits, the whole
    // header (about 25 KiB) is not.
    let mut text = String::from("age-encryption.org/v1\n");
    for _ in 0..60 {
        text.push_str("-> X25519 AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\n");
        for _ in 0..6 {
            text.push_str(&"A".repeat(64));
            text.push('\n');
        }
        text.push_str("AAAA\n");
    }
    text.push_str("--- AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\n");
    text.push_str(&"x".repeat(64));
    let refused = vellum_protocol::age_header::inspect(text.as_bytes()).unwrap_err();
    assert_eq!(refused.0, "header too large");
}

#[test]
fn identity_files_match_age_keygen() {
    let identity = Identity::generate();
    let file = seal::format_identity_file(&identity, NOW);
    let lines: Vec<&str> = file.lines().collect();
    assert_eq!(lines[0], "# created: 2025-11-26T09:40:00Z");
    assert_eq!(lines[1], format!("# public key: {}", identity.to_public()));
    assert!(lines[2].starts_with("AGE-SECRET-KEY-1"));
    let parsed = seal::parse_identity_file(&file).unwrap();
    assert_eq!(parsed[0].to_public(), identity.to_public());
    assert!(matches!(
        seal::parse_identity_file("# only a comment\n"),
        Err(SealError::InvalidIdentity)
    ));
    assert!(matches!(
        seal::parse_identity_file("age1notasecret\n"),
        Err(SealError::InvalidIdentity)
    ));
}

#[test]
fn headers_verify_only_under_their_device_key() {
    let device = DeviceKey::generate();
    let signed = signed_header(&device, record_id(1));
    let header = UnverifiedHeader::parse(signed.as_bytes()).unwrap();
    assert_eq!(header.claimed_device(), device_id());
    let verified = header.verify(&device.public()).unwrap();
    assert_eq!(verified.fields().record_id, record_id(1));
    assert_eq!(verified.as_bytes(), signed.as_bytes());
    assert_eq!(verified.digest(), signed.digest());

    let other = DeviceKey::generate();
    let refused = UnverifiedHeader::parse(signed.as_bytes())
        .unwrap()
        .verify(&other.public());
    assert_eq!(refused.unwrap_err(), HeaderError::BadSignature);

    let mut body = verified.fields().body;
    body.len += 1;
    assert_eq!(verified.check_body(&body), Err(HeaderError::BodyMismatch));
}

#[test]
fn every_header_byte_is_covered_by_the_signature() {
    let device = DeviceKey::generate();
    let signed = signed_header(&device, record_id(2));
    for i in 0..signed.as_bytes().len() {
        let mut bytes = signed.as_bytes().to_vec();
        bytes[i] ^= 0x01;
        let outcome = UnverifiedHeader::parse(&bytes).and_then(|h| h.verify(&device.public()));
        assert!(outcome.is_err(), "flipping byte {i} went unnoticed");
    }
}

#[test]
fn header_structure_errors_are_distinct() {
    let device = DeviceKey::generate();
    let bytes = signed_header(&device, record_id(3)).as_bytes().to_vec();
    assert_eq!(
        UnverifiedHeader::parse(&bytes[..50]).unwrap_err(),
        HeaderError::Truncated
    );
    let mut longer = bytes.clone();
    longer.push(0);
    assert_eq!(
        UnverifiedHeader::parse(&longer).unwrap_err(),
        HeaderError::TooLong
    );
    let mut magic = bytes.clone();
    magic[3] = 2;
    assert_eq!(
        UnverifiedHeader::parse(&magic).unwrap_err(),
        HeaderError::BadMagic
    );
    // Swap the two tokens: still well-formed bytes, but not canonical.
    let tokens_at = bytes.len() - 64 - 32;
    let mut swapped = bytes.clone();
    swapped[tokens_at..tokens_at + 32].rotate_left(16);
    assert_eq!(
        UnverifiedHeader::parse(&swapped).unwrap_err(),
        HeaderError::TokensNotCanonical
    );
    let mut v4 = bytes.clone();
    v4[4 + 6] = 0x40;
    assert!(matches!(
        UnverifiedHeader::parse(&v4).unwrap_err(),
        HeaderError::Field(_)
    ));
    // Numbers above 2^63 - 1 (what the databases hold) are refused whole, so a header
    // accepted at the door is one the store can keep.
    for (at, what) in [(36, "capture time"), (44, "epoch"), (52, "body length")] {
        let mut big = bytes.clone();
        big[at] |= 0x80;
        assert_eq!(
            UnverifiedHeader::parse(&big).unwrap_err(),
            HeaderError::OutOfRange(what)
        );
    }
}

#[test]
fn a_device_cannot_sign_a_number_the_archive_cannot_store() {
    let device = DeviceKey::generate();
    let mut fields = UnverifiedHeader::parse(signed_header(&device, record_id(4)).as_bytes())
        .unwrap()
        .archived_fields()
        .clone();
    fields.captured_at = vellum_protocol::ids::UnixMillis(1 << 63);
    assert_eq!(
        fields.sign(&device).unwrap_err(),
        HeaderError::OutOfRange("capture time")
    );
}

fn statement(epoch: u64) -> KeyringStatement {
    KeyringStatement {
        epoch: Epoch(epoch),
        archive: Identity::generate().to_public(),
        escrow: Identity::generate().to_public(),
        valid_from: UnixMillis(NOW - 1000),
        valid_until: UnixMillis(NOW + 86_400_000),
    }
}

#[test]
fn keyring_statements_verify_against_the_pinned_key_only() {
    let org = generate_note_signer("agency.example/org").unwrap();
    let pinned = org.verifier();
    let note = statement(4).sign(&org).unwrap();
    let accepted = keyring::verify(note.as_bytes(), &pinned, None, UnixMillis(NOW)).unwrap();
    assert_eq!(accepted.statement().epoch, Epoch(4));
    // Re-fetching the same statement is fine.
    keyring::verify(note.as_bytes(), &pinned, Some(&accepted), UnixMillis(NOW)).unwrap();

    let foreign = generate_note_signer("agency.example/org").unwrap();
    let forged = statement(5).sign(&foreign).unwrap();
    assert_eq!(
        keyring::verify(forged.as_bytes(), &pinned, None, UnixMillis(NOW)),
        Err(KeyringError::UnpinnedKey)
    );

    let tampered = note.replacen("epoch 4", "epoch 9", 1);
    assert_eq!(
        keyring::verify(tampered.as_bytes(), &pinned, None, UnixMillis(NOW)),
        Err(KeyringError::BadSignature)
    );

    let older = statement(3).sign(&org).unwrap();
    assert_eq!(
        keyring::verify(older.as_bytes(), &pinned, Some(&accepted), UnixMillis(NOW)),
        Err(KeyringError::Rollback {
            accepted: Epoch(4),
            offered: Epoch(3)
        })
    );
    let rival = statement(4).sign(&org).unwrap();
    assert_eq!(
        keyring::verify(rival.as_bytes(), &pinned, Some(&accepted), UnixMillis(NOW)),
        Err(KeyringError::Equivocation(Epoch(4)))
    );
    let newer = statement(5).sign(&org).unwrap();
    assert!(keyring::verify(newer.as_bytes(), &pinned, Some(&accepted), UnixMillis(NOW)).is_ok());

    assert_eq!(
        keyring::verify(note.as_bytes(), &pinned, None, UnixMillis(NOW - 5000)),
        Err(KeyringError::NotYetValid)
    );
    assert_eq!(
        keyring::verify(note.as_bytes(), &pinned, None, UnixMillis(NOW + 86_400_000)),
        Err(KeyringError::Expired)
    );
}

#[test]
fn receipts_prove_the_record_to_a_pinned_log() {
    let log = generate_note_signer("log.agency.example").unwrap();
    let device = DeviceKey::generate();
    let mut tree = MemoryTree::new();
    let mut entries = Vec::new();
    for n in 0..9u8 {
        let header = signed_header(&device, record_id(n));
        let entry = LogEntry::RecordAppended {
            record_id: record_id(n),
            header_sha256: header.digest(),
            received_at: UnixMillis(NOW + u64::from(n)),
        };
        tree.push(entry.leaf_hash());
        entries.push((header, entry));
    }
    let checkpoint = Checkpoint::new(log.name(), tree.len(), tree.root())
        .sign(&log)
        .unwrap();
    let (header, entry) = &entries[6];
    let receipt = Receipt::new(entry, 6, tree.prove_inclusion(9, 6).unwrap(), checkpoint.clone());
    let parsed = Receipt::parse(receipt.to_text().as_bytes()).unwrap();
    let verified = parsed
        .verify(&log.verifier(), &record_id(6), &header.digest())
        .unwrap();
    assert_eq!((verified.index, verified.checkpoint.size()), (6, 9));
    assert_eq!(verified.received_at, UnixMillis(NOW + 6));

    // Another record's receipt, another log's key, a wrong index: each refused.
    assert_eq!(
        parsed.verify(&log.verifier(), &record_id(5), &header.digest()),
        Err(ReceiptError::WrongRecord)
    );
    let other_log = generate_note_signer("log.agency.example").unwrap();
    assert!(matches!(
        parsed.verify(&other_log.verifier(), &record_id(6), &header.digest()),
        Err(ReceiptError::Proof(ProofError::Checkpoint(_)))
    ));
    let wrong_index = Receipt::new(entry, 5, tree.prove_inclusion(9, 6).unwrap(), checkpoint.clone());
    assert!(matches!(
        wrong_index.verify(&log.verifier(), &record_id(6), &header.digest()),
        Err(ReceiptError::Proof(ProofError::Verify(_)))
    ));

    // Against a checkpoint verified before: the same answer without its signature
    // checked again; the same refusals; another checkpoint is refused.
    assert_eq!(parsed.checkpoint_note(), checkpoint);
    let known = &verified.checkpoint;
    assert_eq!(
        parsed.verify_in(known, &record_id(6), &header.digest()),
        Ok(verified.clone())
    );
    let (header3, entry3) = &entries[3];
    let sibling = Receipt::new(entry3, 3, tree.prove_inclusion(9, 3).unwrap(), checkpoint.clone());
    assert_eq!(
        sibling
            .verify_in(known, &record_id(3), &header3.digest())
            .map(|v| v.index),
        Ok(3)
    );
    assert_eq!(
        parsed.verify_in(known, &record_id(5), &header.digest()),
        Err(ReceiptError::WrongRecord)
    );
    assert!(matches!(
        wrong_index.verify_in(known, &record_id(6), &header.digest()),
        Err(ReceiptError::Proof(ProofError::Verify(_)))
    ));
    let older = Checkpoint::new(log.name(), 7, tree.root_at(7).unwrap())
        .sign(&log)
        .unwrap();
    let against_older = Receipt::new(entry, 6, tree.prove_inclusion(7, 6).unwrap(), older);
    assert!(matches!(
        against_older.verify_in(known, &record_id(6), &header.digest()),
        Err(ReceiptError::Proof(ProofError::Malformed(_)))
    ));
}

#[test]
fn audit_leaves_round_trip_and_never_pass_as_a_record_receipt() {
    let entry = LogEntry::AuditRecorded {
        event_sha256: [7; 32],
        at: UnixMillis(NOW),
    };
    let bytes = entry.to_bytes();
    assert_eq!(bytes.len(), 42);
    assert_eq!(&bytes[..2], &[1, 2]);
    assert_eq!(&bytes[34..], &NOW.to_be_bytes());
    assert_eq!(LogEntry::from_bytes(&bytes), Ok(entry.clone()));
    assert!(LogEntry::from_bytes(&bytes[..41]).is_err());
    assert!(LogEntry::from_bytes(&[bytes.as_slice(), &[0]].concat()).is_err());

    // A proof of an audit leaf is a valid inclusion proof, but not a capture receipt.
    let log = generate_note_signer("log.agency.example").unwrap();
    let mut tree = MemoryTree::new();
    tree.push(entry.leaf_hash());
    let checkpoint = Checkpoint::new(log.name(), 1, tree.root()).sign(&log).unwrap();
    let receipt = Receipt::new(&entry, 0, tree.prove_inclusion(1, 0).unwrap(), checkpoint);
    assert_eq!(
        receipt.verify(&log.verifier(), &record_id(0), &[7; 32]),
        Err(ReceiptError::WrongRecord)
    );
}

fn document() -> MessageDocument {
    MessageDocument {
        version: 1,
        channel: "signal".into(),
        conversation: Conversation {
            id: "group-Zm9v".into(),
            title: Some("Budget".into()),
        },
        sender: Participant {
            id: "tel:+15550100000".into(),
            display_name: Some("Jo".into()),
            as_written: None,
        },
        recipients: vec![Participant {
            id: "mailto:ann@agency.example".into(),
            display_name: None,
            as_written: None,
        }],
        sent_at_ms: NOW,
        received_at_ms: None,
        body: Body {
            content_type: "text/plain".into(),
            text: "See you at 3".into(),
        },
        edits: vec![],
        deletions: vec![],
        attachments: vec![],
    }
}

#[test]
fn documents_round_trip_and_yield_searchable_tokens() {
    let doc = document();
    let json = doc.to_json().unwrap();
    assert_eq!(MessageDocument::from_json(&json).unwrap(), doc);
    let key = IndexKey::from_bytes([3; 32]);
    let tokens = doc.blind_tokens(&key).unwrap();
    assert_eq!(tokens.len(), 4);
    let phone = vellum_protocol::blind::ParticipantId::phone("+1 (555) 010-0000", None).unwrap();
    assert!(tokens.contains(&key.participant(&phone)));

    let mut bad = doc.clone();
    bad.sender.id = "+1 555 010 0000".into();
    assert!(bad.to_json().is_err());
    assert!(MessageDocument::from_json(br#"{"version":2}"#).is_err());
}
