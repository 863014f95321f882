//! Transparency-log math for Vellum, with no I/O.
//!
//! This crate holds everything a party needs to check Vellum's append-only log
//! without trusting the gateway:
//!
//! * [`hash`]: RFC 6962 leaf and interior-node hashing;
//! * [`tree`]: the addressing of stored subtree hashes, an in-memory tree and the
//!   generation of inclusion and consistency proofs over any [`tree::HashReader`];
//! * [`verify`]: RFC 9162 verification of those proofs;
//! * [`note`]: C2SP signed notes with Ed25519 keys (key names and key ids as the
//!   spec defines them);
//! * [`checkpoint`]: C2SP `tlog-checkpoint` bodies, signed as notes;
//! * [`proof`]: the C2SP `tlog-proof@v1` text format and Vellum's consistency-proof text.
//!
//! ```
//! use vellum_tlog::{checkpoint::Checkpoint, hash::leaf_hash, note::NoteSigner, tree::MemoryTree, verify};
//!
//! let mut tree = MemoryTree::new();
//! for entry in [b"first".as_slice(), b"second", b"third"] {
//!     tree.push(leaf_hash(entry));
//! }
//! let signer = NoteSigner::from_seed("log.example/demo", [7; 32]).unwrap();
//! let note = Checkpoint::new("log.example/demo", tree.len(), tree.root()).sign(&signer).unwrap();
//!
//! // A verifier who pinned the log's public key checks the checkpoint and a proof.
//! let verified = vellum_tlog::checkpoint::open(note.as_bytes(), &signer.verifier()).unwrap();
//! let proof = tree.prove_inclusion(verified.size(), 1).unwrap();
//! verify::inclusion(1, verified.size(), &leaf_hash(b"second"), &proof, verified.root()).unwrap();
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod checkpoint;
pub mod hash;
pub mod note;
pub mod proof;
pub mod tree;
pub mod verify;

pub use hash::Hash;
