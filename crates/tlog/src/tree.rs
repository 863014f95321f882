//! Where tree hashes live and how proofs are assembled from them.
//!
//! A log of `n` leaves is stored as the hashes of its *perfect subtrees*: the node
//! `NodeId { level, index }` covers leaves `index·2^level .. (index+1)·2^level`. Once
//! written such a node never changes, so storage can keep it forever (and later serve
//! it in C2SP tiles). Any other hash the proofs need — the root, or the right edge of
//! a tree whose size is not a power of two — is folded from perfect subtrees on demand.
//!
//! Proof generation first computes every [`NodeId`] it needs, reads them in **one**
//! call to [`HashReader::read_hashes`] (one database round trip for a stored log),
//! then folds them into the RFC 6962 proof.

use thiserror::Error;

use crate::hash::{Hash, node_hash};

/// The largest number of hashes a proof for a tree of at most 2^64 leaves can hold.
pub const MAX_PROOF_HASHES: usize = 128;

/// A perfect subtree: leaves `index << level .. (index + 1) << level`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId {
    /// Height above the leaves (0 for a leaf hash).
    pub level: u8,
    /// Position among the nodes of that level, counted from the left.
    pub index: u64,
}

/// Read access to stored perfect-subtree hashes.
pub trait HashReader {
    /// The storage error.
    type Error;

    /// Returns the hashes of `ids`, in the same order. Every id asked for lies inside a
    /// tree the caller knows to be complete, so a missing hash is a storage error.
    fn read_hashes(&self, ids: &[NodeId]) -> Result<Vec<Hash>, Self::Error>;
}

/// Why a proof could not be produced.
#[derive(Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProveError<E> {
    /// The leaf index is not below the tree size.
    #[error("leaf index {index} is not in a tree of size {size}")]
    IndexOutOfRange {
        /// The index asked for.
        index: u64,
        /// The tree size asked for.
        size: u64,
    },
    /// A consistency proof was asked from a larger tree to a smaller one.
    #[error("cannot prove consistency from size {old} to the smaller size {new}")]
    SizesOutOfOrder {
        /// The older size.
        old: u64,
        /// The newer size.
        new: u64,
    },
    /// The tree does not (yet) hold that many leaves.
    #[error("the tree holds fewer than {0} leaves")]
    TreeTooSmall(u64),
    /// The reader returned a different number of hashes than asked for.
    #[error("hash reader returned {got} hashes for {asked} ids")]
    ShortRead {
        /// How many were asked for.
        asked: usize,
        /// How many came back.
        got: usize,
    },
    /// The reader failed.
    #[error("reading tree hashes failed")]
    Read(#[source] E),
}

/// A half-open range of leaves `[lo, hi)` whose hash a proof needs.
#[derive(Clone, Copy, Debug)]
struct Span {
    lo: u64,
    hi: u64,
}

/// The largest power of two strictly below `n` (`n >= 2`).
fn split_point(n: u64) -> u64 {
    1u64 << (63 - (n - 1).leading_zeros())
}

/// Decomposes `[lo, hi)` into perfect subtrees, left to right. Within RFC 6962's
/// recursion `lo` is always aligned to a power of two at least `hi - lo`, so this
/// yields the binary digits of `hi - lo` from the largest down.
fn perfect_nodes(span: Span, out: &mut Vec<NodeId>) {
    let mut lo = span.lo;
    while lo < span.hi {
        let remaining = span.hi - lo;
        let mut level = 63 - remaining.leading_zeros();
        if lo != 0 {
            level = level.min(lo.trailing_zeros());
        }
        out.push(NodeId {
            level: level as u8,
            index: lo >> level,
        });
        lo += 1u64 << level;
    }
}

/// RFC 6962 `PATH(m, D[lo..hi])`, as the spans whose hashes form the proof, leaf first.
fn inclusion_spans(m: u64, mut span: Span, out: &mut Vec<Span>) {
    // Walk down from the root, remembering siblings; the proof lists them bottom-up.
    let start = out.len();
    while span.hi - span.lo > 1 {
        let k = split_point(span.hi - span.lo);
        let mid = span.lo + k;
        if m < mid {
            out.push(Span { lo: mid, hi: span.hi });
            span.hi = mid;
        } else {
            out.push(Span { lo: span.lo, hi: mid });
            span.lo = mid;
        }
    }
    out[start..].reverse();
}

/// RFC 6962 `SUBPROOF(m, D[lo..hi], b)`, as spans, in proof order.
fn consistency_spans(mut m: u64, mut span: Span, mut whole: bool, out: &mut Vec<Span>) {
    let start = out.len();
    loop {
        let n = span.hi - span.lo;
        if m == n {
            if !whole {
                out.push(span);
            }
            break;
        }
        let k = split_point(n);
        let mid = span.lo + k;
        if m <= k {
            out.push(Span { lo: mid, hi: span.hi });
            span.hi = mid;
        } else {
            out.push(Span { lo: span.lo, hi: mid });
            span.lo = mid;
            m -= k;
            whole = false;
        }
    }
    // The recursion appends the sibling *after* the sub-proof; we collected top-down.
    out[start..].reverse();
}

/// The stored nodes a proof (or a root) needs, and how to fold them into it.
///
/// Synchronous readers use [`prove_inclusion`], [`prove_consistency`] and [`tree_root`];
/// asynchronous storage asks for [`ProofPlan::ids`] in one round trip and calls
/// [`ProofPlan::assemble`] with the answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProofPlan {
    ids: Vec<NodeId>,
    /// How many consecutive ids fold into each output hash.
    counts: Vec<usize>,
}

impl ProofPlan {
    fn from_spans(spans: &[Span]) -> Self {
        let mut ids = Vec::new();
        let mut counts = Vec::with_capacity(spans.len());
        for span in spans {
            let before = ids.len();
            perfect_nodes(*span, &mut ids);
            counts.push(ids.len() - before);
        }
        Self { ids, counts }
    }

    /// The plan for the inclusion proof of leaf `index` in the first `size` leaves.
    pub fn inclusion<E>(size: u64, index: u64) -> Result<Self, ProveError<E>> {
        if index >= size {
            return Err(ProveError::IndexOutOfRange { index, size });
        }
        let mut spans = Vec::new();
        inclusion_spans(index, Span { lo: 0, hi: size }, &mut spans);
        Ok(Self::from_spans(&spans))
    }

    /// The plan for the consistency proof from `old` to `new` leaves (empty when `old`
    /// is 0 or equal to `new`).
    pub fn consistency<E>(old: u64, new: u64) -> Result<Self, ProveError<E>> {
        if old > new {
            return Err(ProveError::SizesOutOfOrder { old, new });
        }
        let mut spans = Vec::new();
        if old != 0 && old != new {
            consistency_spans(old, Span { lo: 0, hi: new }, true, &mut spans);
        }
        Ok(Self::from_spans(&spans))
    }

    /// The plan for the root of the first `size` leaves (one output hash).
    pub fn root(size: u64) -> Self {
        Self::from_spans(&[Span { lo: 0, hi: size }])
    }

    /// The stored nodes to read, in order.
    pub fn ids(&self) -> &[NodeId] {
        &self.ids
    }

    /// Folds the hashes of [`ProofPlan::ids`] (same order) into the proof.
    pub fn assemble<E>(&self, hashes: &[Hash]) -> Result<Vec<Hash>, ProveError<E>> {
        if hashes.len() != self.ids.len() {
            return Err(ProveError::ShortRead {
                asked: self.ids.len(),
                got: hashes.len(),
            });
        }
        let mut rest = hashes;
        let mut out = Vec::with_capacity(self.counts.len());
        for &count in &self.counts {
            let (mine, tail) = rest.split_at(count);
            rest = tail;
            out.push(fold_right(mine));
        }
        Ok(out)
    }

    fn run<R: HashReader>(&self, reader: &R) -> Result<Vec<Hash>, ProveError<R::Error>> {
        let hashes = reader.read_hashes(&self.ids).map_err(ProveError::Read)?;
        self.assemble(&hashes)
    }
}

/// Folds perfect subtrees (largest first) into the hash of their union.
fn fold_right(nodes: &[Hash]) -> Hash {
    let mut iter = nodes.iter().rev();
    let Some(last) = iter.next() else {
        return Hash::empty_root();
    };
    iter.fold(*last, |acc, left| node_hash(left, &acc))
}

/// The root hash of the first `size` leaves.
pub fn tree_root<R: HashReader>(size: u64, reader: &R) -> Result<Hash, ProveError<R::Error>> {
    Ok(ProofPlan::root(size).run(reader)?[0])
}

/// The inclusion proof of leaf `index` in the tree of the first `size` leaves.
pub fn prove_inclusion<R: HashReader>(
    size: u64,
    index: u64,
    reader: &R,
) -> Result<Vec<Hash>, ProveError<R::Error>> {
    ProofPlan::inclusion(size, index)?.run(reader)
}

/// The consistency proof from the tree of `old` leaves to the tree of `new` leaves.
/// Empty when `old` is 0 or equal to `new`.
pub fn prove_consistency<R: HashReader>(
    old: u64,
    new: u64,
    reader: &R,
) -> Result<Vec<Hash>, ProveError<R::Error>> {
    ProofPlan::consistency(old, new)?.run(reader)
}

/// The node ids that become complete when leaf `index` is appended, lowest first
/// (the leaf itself, then each parent it completes). Storage writes exactly these.
pub fn nodes_completed_by(index: u64) -> impl Iterator<Item = NodeId> {
    // A tree never reaches 2^64 leaves; capping keeps the shifts below in range.
    let completed_levels = index.trailing_ones().min(63) as u8;
    (0..=completed_levels).map(move |level| NodeId {
        level,
        index: index >> level,
    })
}

/// The perfect subtrees that make up a tree of `size` leaves, leftmost (largest) first.
/// Their hashes are all a sequencer needs to keep appending: see [`Frontier`].
pub fn frontier_ids(size: u64) -> Vec<NodeId> {
    let mut ids = Vec::with_capacity(size.count_ones() as usize);
    perfect_nodes(Span { lo: 0, hi: size }, &mut ids);
    ids
}

/// The right edge of a tree: the hashes of [`frontier_ids`]. With it a sequencer
/// appends leaves, learns which stored nodes each append completes, and computes the
/// root, all without reading storage. It is rebuilt from storage on start, never
/// trusted from a previous run's memory.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Frontier {
    size: u64,
    nodes: Vec<Hash>,
}

/// The hashes given for a frontier do not match its size.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
#[error("a frontier of size {size} needs {expected} hashes, got {got}")]
pub struct FrontierMismatch {
    /// The tree size.
    pub size: u64,
    /// The number of hashes it needs.
    pub expected: usize,
    /// The number given.
    pub got: usize,
}

impl Frontier {
    /// The frontier of the empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// The frontier of a tree of `size` leaves from the hashes of [`frontier_ids`]`(size)`.
    pub fn from_hashes(size: u64, nodes: Vec<Hash>) -> Result<Self, FrontierMismatch> {
        let expected = size.count_ones() as usize;
        if nodes.len() != expected {
            return Err(FrontierMismatch {
                size,
                expected,
                got: nodes.len(),
            });
        }
        Ok(Self { size, nodes })
    }

    /// The number of leaves.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The root hash.
    pub fn root(&self) -> Hash {
        fold_right(&self.nodes)
    }

    /// The frontier's nodes with their ids, leftmost first.
    pub fn nodes(&self) -> impl Iterator<Item = (NodeId, Hash)> + '_ {
        frontier_ids(self.size)
            .into_iter()
            .zip(self.nodes.iter().copied())
    }

    /// Appends a leaf and returns every node it completes, the leaf first
    /// (exactly [`nodes_completed_by`] the new index, with their hashes).
    pub fn push(&mut self, leaf: Hash) -> Vec<(NodeId, Hash)> {
        let index = self.size;
        let mut hash = leaf;
        let mut completed = vec![(NodeId { level: 0, index }, leaf)];
        for level in 0..index.trailing_ones() {
            // Trailing ones in the index mean the frontier ends with subtrees of sizes
            // 2^(t-1) .. 2, 1; each absorbs the new hash into its parent.
            let Some(left) = self.nodes.pop() else { break };
            hash = node_hash(&left, &hash);
            completed.push((
                NodeId {
                    level: (level + 1) as u8,
                    index: index >> (level + 1),
                },
                hash,
            ));
        }
        self.nodes.push(hash);
        self.size += 1;
        completed
    }
}

/// A whole tree in memory: every perfect-subtree hash, level by level.
///
/// Used by tests, by offline tools that rebuild a log from its entries, and as the
/// reference the stored backends are checked against.
#[derive(Clone, Debug, Default)]
pub struct MemoryTree {
    levels: Vec<Vec<Hash>>,
}

impl MemoryTree {
    /// An empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// The number of leaves.
    pub fn len(&self) -> u64 {
        self.levels.first().map_or(0, |leaves| leaves.len() as u64)
    }

    /// Whether the tree has no leaves.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends a leaf hash and returns its index.
    pub fn push(&mut self, leaf: Hash) -> u64 {
        let index = self.len();
        let mut hash = leaf;
        for id in nodes_completed_by(index) {
            let level = usize::from(id.level);
            if self.levels.len() == level {
                self.levels.push(Vec::new());
            }
            if id.level > 0 {
                let left = self.levels[level - 1][(id.index * 2) as usize];
                let right = self.levels[level - 1][(id.index * 2 + 1) as usize];
                hash = node_hash(&left, &right);
            }
            self.levels[level].push(hash);
        }
        index
    }

    /// The root of the whole tree.
    pub fn root(&self) -> Hash {
        self.root_at(self.len()).unwrap_or_else(|_| Hash::empty_root())
    }

    /// The root of the first `size` leaves.
    pub fn root_at(&self, size: u64) -> Result<Hash, ProveError<MissingNode>> {
        self.check_size(size)?;
        tree_root(size, self)
    }

    /// The inclusion proof of leaf `index` in the first `size` leaves.
    pub fn prove_inclusion(&self, size: u64, index: u64) -> Result<Vec<Hash>, ProveError<MissingNode>> {
        self.check_size(size)?;
        prove_inclusion(size, index, self)
    }

    /// The consistency proof between the first `old` and the first `new` leaves.
    pub fn prove_consistency(&self, old: u64, new: u64) -> Result<Vec<Hash>, ProveError<MissingNode>> {
        self.check_size(new)?;
        prove_consistency(old, new, self)
    }

    fn check_size(&self, size: u64) -> Result<(), ProveError<MissingNode>> {
        if size > self.len() {
            return Err(ProveError::TreeTooSmall(size));
        }
        Ok(())
    }
}

/// A [`MemoryTree`] was asked for a node it does not hold.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("no stored hash for node {0:?}")]
pub struct MissingNode(pub NodeId);

impl HashReader for MemoryTree {
    type Error = MissingNode;

    fn read_hashes(&self, ids: &[NodeId]) -> Result<Vec<Hash>, MissingNode> {
        ids.iter()
            .map(|id| {
                self.levels
                    .get(usize::from(id.level))
                    .and_then(|level| level.get(usize::try_from(id.index).ok()?))
                    .copied()
                    .ok_or(MissingNode(*id))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::leaf_hash;

    /// RFC 6962's recursive MTH, written as plainly as the RFC states it.
    pub(crate) fn reference_root(leaves: &[Hash]) -> Hash {
        match leaves.len() {
            0 => Hash::empty_root(),
            1 => leaves[0],
            n => {
                let k = split_point(n as u64) as usize;
                node_hash(&reference_root(&leaves[..k]), &reference_root(&leaves[k..]))
            }
        }
    }

    #[test]
    fn memory_tree_matches_reference_root_for_every_size() {
        let mut tree = MemoryTree::new();
        let mut leaves = Vec::new();
        assert_eq!(tree.root(), Hash::empty_root());
        for i in 0..300u32 {
            let leaf = leaf_hash(&i.to_be_bytes());
            leaves.push(leaf);
            tree.push(leaf);
            assert_eq!(tree.root(), reference_root(&leaves), "size {}", i + 1);
        }
        for size in 0..=300u64 {
            assert_eq!(
                tree.root_at(size).unwrap(),
                reference_root(&leaves[..size as usize])
            );
        }
    }

    #[test]
    fn frontier_appends_like_the_whole_tree() {
        let mut tree = MemoryTree::new();
        let mut frontier = Frontier::new();
        for i in 0..300u32 {
            let leaf = leaf_hash(&i.to_be_bytes());
            let completed = frontier.push(leaf);
            tree.push(leaf);
            let ids: Vec<NodeId> = completed.iter().map(|(id, _)| *id).collect();
            assert_eq!(ids, nodes_completed_by(u64::from(i)).collect::<Vec<_>>());
            assert_eq!(
                tree.read_hashes(&ids).unwrap(),
                completed.iter().map(|(_, h)| *h).collect::<Vec<_>>()
            );
            assert_eq!(frontier.root(), tree.root());
            let (ids, hashes): (Vec<NodeId>, Vec<Hash>) = frontier.nodes().unzip();
            assert_eq!(ids, frontier_ids(frontier.size()));
            assert_eq!(tree.read_hashes(&ids).unwrap(), hashes);
            let rebuilt = Frontier::from_hashes(frontier.size(), hashes).unwrap();
            assert_eq!(rebuilt, frontier);
        }
        assert!(Frontier::from_hashes(3, vec![Hash::empty_root()]).is_err());
    }

    #[test]
    fn nodes_completed_by_follows_trailing_ones() {
        let ids: Vec<_> = nodes_completed_by(7).collect();
        assert_eq!(
            ids,
            vec![
                NodeId { level: 0, index: 7 },
                NodeId { level: 1, index: 3 },
                NodeId { level: 2, index: 1 },
                NodeId { level: 3, index: 0 },
            ]
        );
        assert_eq!(nodes_completed_by(4).count(), 1);
    }

    #[test]
    fn proofs_refuse_impossible_requests() {
        let mut tree = MemoryTree::new();
        tree.push(leaf_hash(b"a"));
        assert_eq!(
            tree.prove_inclusion(1, 1),
            Err(ProveError::IndexOutOfRange { index: 1, size: 1 })
        );
        assert_eq!(tree.prove_inclusion(2, 0), Err(ProveError::TreeTooSmall(2)));
        assert_eq!(
            tree.prove_consistency(1, 0),
            Err(ProveError::SizesOutOfOrder { old: 1, new: 0 })
        );
    }
}
