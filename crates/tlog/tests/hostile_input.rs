//! Every parser in this crate meets random and mutated bytes: it must return a value
//! or a typed error, never panic, and a mutated signed object must never verify as
//! something other than what was signed.

#![allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]

use proptest::prelude::*;
use vellum_tlog::checkpoint::{self, Checkpoint};
use vellum_tlog::hash::{Hash, leaf_hash};
use vellum_tlog::note::{Note, NoteSigner, NoteVerifier};
use vellum_tlog::proof::{ConsistencyProof, TlogProof};
use vellum_tlog::tree::MemoryTree;
use vellum_tlog::verify;

fn signer() -> NoteSigner {
    NoteSigner::from_seed("log.example/fuzz", [9; 32]).unwrap()
}

fn sample_proof() -> (String, String) {
    let mut tree = MemoryTree::new();
    for i in 0..13u32 {
        tree.push(leaf_hash(&i.to_be_bytes()));
    }
    let signer = signer();
    let note = Checkpoint::new(signer.name(), 13, tree.root())
        .sign(&signer)
        .unwrap();
    let inclusion = TlogProof {
        extra: Some(b"entry".to_vec()),
        index: 5,
        hashes: tree.prove_inclusion(13, 5).unwrap(),
        checkpoint: note,
    };
    let consistency = ConsistencyProof {
        old: 6,
        new: 13,
        hashes: tree.prove_consistency(6, 13).unwrap(),
    };
    (inclusion.to_text(), consistency.to_text())
}

fn parse_everything(bytes: &[u8]) {
    let verifier = signer().verifier();
    let _ = Note::parse(bytes);
    let _ = checkpoint::open(bytes, &verifier);
    if let Ok(text) = std::str::from_utf8(bytes) {
        let _ = Checkpoint::parse_text(text);
        let _ = NoteVerifier::from_vkey(text);
        let _ = NoteSigner::from_skey(text);
        let _ = Hash::from_base64(text);
    }
    if let Ok(proof) = TlogProof::parse(bytes) {
        let _ = proof.verify(&verifier, &leaf_hash(b"x"));
    }
    let _ = ConsistencyProof::parse(bytes);
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
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        parse_everything(&bytes);
    }

    #[test]
    fn mutated_proofs_never_panic_nor_verify_wrongly(
        edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..4),
        cut in proptest::option::of(any::<usize>()),
    ) {
        let (inclusion, consistency) = sample_proof();
        for original in [inclusion.as_bytes(), consistency.as_bytes()] {
            let bytes = mutate(original.to_vec(), &edits, cut);
            parse_everything(&bytes);
        }
        // A mutated inclusion proof that still verifies must say exactly what was signed.
        let bytes = mutate(inclusion.clone().into_bytes(), &edits, cut);
        if let Ok(proof) = TlogProof::parse(&bytes) {
            let leaf = leaf_hash(&5u32.to_be_bytes());
            if let Ok(cp) = proof.verify(&signer().verifier(), &leaf) {
                prop_assert_eq!(cp.size(), 13);
                prop_assert_eq!(proof.index, 5);
            }
        }
    }

    #[test]
    fn random_proofs_never_panic(
        index in any::<u64>(), size in any::<u64>(),
        hashes in proptest::collection::vec(any::<[u8; 32]>(), 0..70),
    ) {
        let hashes: Vec<Hash> = hashes.into_iter().map(Hash).collect();
        let _ = verify::inclusion(index, size, &Hash([0; 32]), &hashes, &Hash([1; 32]));
        let _ = verify::consistency(index, size, &Hash([0; 32]), &Hash([1; 32]), &hashes);
    }
}
