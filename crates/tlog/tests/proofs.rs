//! Exhaustive checks of proof generation against verification: every tree size from 1
//! to 300, every leaf, every pair of sizes; and every tampering must fail.

#![allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]

use vellum_tlog::hash::{Hash, leaf_hash, node_hash};
use vellum_tlog::tree::MemoryTree;
use vellum_tlog::verify::{self, VerifyError};

const MAX: u64 = 300;

fn tree_of(size: u64) -> MemoryTree {
    let mut tree = MemoryTree::new();
    for i in 0..size {
        tree.push(leaf_hash(&i.to_be_bytes()));
    }
    tree
}

fn flip(hash: &Hash) -> Hash {
    let mut bytes = hash.0;
    bytes[0] ^= 1;
    Hash(bytes)
}

#[test]
fn inclusion_proofs_verify_for_every_leaf_of_every_size() {
    let tree = tree_of(MAX);
    for size in 1..=MAX {
        let root = tree.root_at(size).unwrap();
        for index in 0..size {
            let leaf = leaf_hash(&index.to_be_bytes());
            let proof = tree.prove_inclusion(size, index).unwrap();
            verify::inclusion(index, size, &leaf, &proof, &root).unwrap();

            // Tampering with the leaf, the root, any hash, the index or the length fails.
            assert!(verify::inclusion(index, size, &flip(&leaf), &proof, &root).is_err());
            assert!(verify::inclusion(index, size, &leaf, &proof, &flip(&root)).is_err());
            for i in 0..proof.len() {
                let mut bad = proof.clone();
                bad[i] = flip(&bad[i]);
                assert!(verify::inclusion(index, size, &leaf, &bad, &root).is_err());
            }
            if size > 1 {
                let other = (index + 1) % size;
                assert!(verify::inclusion(other, size, &leaf, &proof, &root).is_err());
            }
            let mut longer = proof.clone();
            longer.push(root);
            assert!(verify::inclusion(index, size, &leaf, &longer, &root).is_err());
            if !proof.is_empty() {
                assert!(verify::inclusion(index, size, &leaf, &proof[..proof.len() - 1], &root).is_err());
            }
            if size < MAX {
                // The same proof does not establish the leaf in the next tree.
                let next_root = tree.root_at(size + 1).unwrap();
                assert!(verify::inclusion(index, size + 1, &leaf, &proof, &next_root).is_err());
            }
        }
    }
}

#[test]
fn consistency_proofs_verify_for_every_pair_of_sizes() {
    let tree = tree_of(MAX);
    let roots: Vec<Hash> = (0..=MAX).map(|s| tree.root_at(s).unwrap()).collect();
    for new in 1..=MAX {
        for old in 0..=new {
            let (old_root, new_root) = (&roots[old as usize], &roots[new as usize]);
            let proof = tree.prove_consistency(old, new).unwrap();
            verify::consistency(old, new, old_root, new_root, &proof).unwrap();

            if old == 0 {
                continue;
            }
            assert!(verify::consistency(old, new, &flip(old_root), new_root, &proof).is_err());
            assert!(verify::consistency(old, new, old_root, &flip(new_root), &proof).is_err());
            for i in 0..proof.len() {
                let mut bad = proof.clone();
                bad[i] = flip(&bad[i]);
                assert!(verify::consistency(old, new, old_root, new_root, &bad).is_err());
            }
            let mut longer = proof.clone();
            longer.push(*new_root);
            assert!(verify::consistency(old, new, old_root, new_root, &longer).is_err());
            if !proof.is_empty() {
                assert!(
                    verify::consistency(old, new, old_root, new_root, &proof[..proof.len() - 1]).is_err()
                );
            }
            if new < MAX {
                // The same proof does not link the old tree to the next one.
                let next_root = &roots[new as usize + 1];
                assert!(verify::consistency(old, new + 1, old_root, next_root, &proof).is_err());
            }
        }
    }
}

#[test]
fn a_forked_log_is_caught() {
    // Two logs agree on the first 10 leaves, then differ: no proof links their heads.
    let honest = tree_of(20);
    let mut forked = tree_of(10);
    for i in 10..20u64 {
        forked.push(leaf_hash(&(i + 1000).to_be_bytes()));
    }
    let proof = forked.prove_consistency(15, 20).unwrap();
    assert_eq!(
        verify::consistency(15, 20, &honest.root_at(15).unwrap(), &forked.root(), &proof),
        Err(VerifyError::RootMismatch)
    );
}

#[test]
fn rfc_6962_shapes_for_a_seven_leaf_tree() {
    // RFC 6962 §2.1.3: the inclusion proof for leaf d (index 3) of seven leaves is [c, g, l].
    let tree = tree_of(7);
    let leaf = |i: u64| leaf_hash(&i.to_be_bytes());
    let g = node_hash(&leaf(0), &leaf(1));
    let l = node_hash(&node_hash(&leaf(4), &leaf(5)), &leaf(6));
    assert_eq!(tree.prove_inclusion(7, 3).unwrap(), vec![leaf(2), g, l]);
    // Consistency from 3 to 7 (RFC 6962 §2.1.3 example): [c, d, g, l].
    assert_eq!(
        tree.prove_consistency(3, 7).unwrap(),
        vec![leaf(2), leaf(3), g, l]
    );
    // Consistency from 4 to 7: [l]; the old root is a perfect subtree.
    assert_eq!(tree.prove_consistency(4, 7).unwrap(), vec![l]);
}
