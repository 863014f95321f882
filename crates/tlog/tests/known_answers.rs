//! Known answers published by the reference implementations, so this crate agrees
//! with the ecosystem byte for byte rather than only with itself.

#![allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]

use vellum_tlog::hash::leaf_hash;
use vellum_tlog::note::{self, NoteVerifier};
use vellum_tlog::tree::MemoryTree;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The Certificate Transparency reference tests' eight leaves and the root of each prefix.
#[test]
fn rfc_6962_reference_roots() {
    let leaves: [&[u8]; 8] = [
        b"",
        &[0x00],
        &[0x10],
        &[0x20, 0x21],
        &[0x30, 0x31],
        &[0x40, 0x41, 0x42, 0x43],
        &[0x50, 0x51, 0x52, 0x53, 0x54, 0x55, 0x56, 0x57],
        &[
            0x60, 0x61, 0x62, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68, 0x69, 0x6a, 0x6b, 0x6c, 0x6d, 0x6e, 0x6f,
        ],
    ];
    let roots = [
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ];
    let mut tree = MemoryTree::new();
    for (leaf, root) in leaves.iter().zip(roots) {
        tree.push(leaf_hash(leaf));
        assert_eq!(hex(tree.root().as_bytes()), root, "size {}", tree.len());
    }
}

/// The example verifier key and signed note of the Go `sumdb/note` package (the
/// signed-note reference): our key-string parsing, key id and signature check accept
/// it, and reject it once the text changes. (Only the public key is used here.)
#[test]
fn go_signed_note_reference_example() {
    let vkey = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
    let text = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n";
    let published = format!(
        "{text}\n\u{2014} PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
    );
    let verifier = NoteVerifier::from_vkey(vkey).unwrap();
    assert_eq!(verifier.key_id(), 0xc74f20a3);
    assert_eq!(verifier.to_string(), vkey);
    assert_eq!(note::open(published.as_bytes(), &verifier).unwrap().text(), text);
    let altered = published.replacen("cryptography", "cryptographY", 1);
    assert!(note::open(altered.as_bytes(), &verifier).is_err());
}
