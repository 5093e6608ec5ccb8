//! RFC 6962 (RFC 9162 §2.1) Merkle trees: leaf and node hashes, an append-only frontier,
//! inclusion and consistency proofs and their checks.
//!
//! Owns: the tree arithmetic.
//! Uses: `Sha256Digest`.
//! Must not: know what a leaf contains (callers pass canonical record bytes).

use super::digest::Sha256Digest;

/// `SHA-256(0x00 ‖ data)`.
pub fn leaf_hash(data: &[u8]) -> Sha256Digest {
    Sha256Digest::of_parts(&[&[0u8], data])
}

/// `SHA-256(0x01 ‖ left ‖ right)`.
pub fn node_hash(left: &Sha256Digest, right: &Sha256Digest) -> Sha256Digest {
    Sha256Digest::of_parts(&[&[1u8], left.as_bytes(), right.as_bytes()])
}

/// The root of the empty tree, `SHA-256("")`.
pub fn empty_root() -> Sha256Digest {
    Sha256Digest::of(b"")
}

/// The right edge of a growing tree: the roots of its perfect subtrees, largest first.
/// Enough to append leaves and compute the root without keeping every leaf.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Frontier {
    size: u64,
    /// `(height, root)` with strictly decreasing heights; heights are the set bits of `size`.
    nodes: Vec<(u32, Sha256Digest)>,
}

impl Frontier {
    /// An empty tree.
    pub fn new() -> Frontier {
        Frontier::default()
    }

    /// Rebuilds a frontier from stored subtree roots (largest first) for a tree of `size`.
    /// Returns `None` if their number does not match `size`.
    pub fn from_parts(size: u64, roots: Vec<Sha256Digest>) -> Option<Frontier> {
        let heights: Vec<u32> = (0..64u32)
            .rev()
            .filter(|h| size & (1u64 << h) != 0)
            .collect();
        if heights.len() != roots.len() {
            return None;
        }
        Some(Frontier {
            size,
            nodes: heights.into_iter().zip(roots).collect(),
        })
    }

    /// Number of leaves.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The subtree roots, largest first (what `from_parts` takes back).
    pub fn roots(&self) -> Vec<Sha256Digest> {
        self.nodes.iter().map(|(_, d)| *d).collect()
    }

    /// Appends a leaf given its leaf hash.
    pub fn push(&mut self, leaf: Sha256Digest) {
        let mut height = 0u32;
        let mut acc = leaf;
        while let Some(&(h, left)) = self.nodes.last() {
            if h != height {
                break;
            }
            self.nodes.pop();
            acc = node_hash(&left, &acc);
            height += 1;
        }
        self.nodes.push((height, acc));
        self.size += 1;
    }

    /// The tree head: `MTH(D[0:size])`.
    pub fn root(&self) -> Sha256Digest {
        let mut iter = self.nodes.iter().rev();
        match iter.next() {
            None => empty_root(),
            Some(&(_, last)) => iter.fold(last, |acc, (_, left)| node_hash(left, &acc)),
        }
    }
}

/// The largest power of two strictly below `n` (`n >= 2`).
fn split_point(n: usize) -> usize {
    let mut k = 1;
    while k << 1 < n {
        k <<= 1;
    }
    k
}

/// `MTH` over already-hashed leaves.
pub fn root_of(leaves: &[Sha256Digest]) -> Sha256Digest {
    match leaves.len() {
        0 => empty_root(),
        1 => leaves[0],
        n => {
            let k = split_point(n);
            node_hash(&root_of(&leaves[..k]), &root_of(&leaves[k..]))
        }
    }
}

/// The audit path for leaf `index` in the tree made of `leaves` (RFC 6962 `PATH`), bottom up.
/// Returns `None` if `index` is out of range.
pub fn inclusion_proof(leaves: &[Sha256Digest], index: usize) -> Option<Vec<Sha256Digest>> {
    if index >= leaves.len() {
        return None;
    }
    let mut path = Vec::new();
    path_into(leaves, index, &mut path);
    Some(path)
}

fn path_into(leaves: &[Sha256Digest], index: usize, path: &mut Vec<Sha256Digest>) {
    let n = leaves.len();
    if n <= 1 {
        return;
    }
    let k = split_point(n);
    if index < k {
        path_into(&leaves[..k], index, path);
        path.push(root_of(&leaves[k..]));
    } else {
        path_into(&leaves[k..], index - k, path);
        path.push(root_of(&leaves[..k]));
    }
}

/// Checks an inclusion proof (RFC 9162 §2.1.3.2): does `leaf` at `index` of a tree of `size`
/// leaves hash up to `root` along `path`?
pub fn verify_inclusion(
    leaf: &Sha256Digest,
    index: u64,
    size: u64,
    path: &[Sha256Digest],
    root: &Sha256Digest,
) -> bool {
    if index >= size {
        return false;
    }
    let (mut fn_, mut sn) = (index, size - 1);
    let mut r = *leaf;
    for p in path {
        if sn == 0 {
            return false;
        }
        if fn_ & 1 == 1 || fn_ == sn {
            r = node_hash(p, &r);
            if fn_ & 1 == 0 {
                while fn_ & 1 == 0 && fn_ != 0 {
                    fn_ >>= 1;
                    sn >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    sn == 0 && r == *root
}

/// The consistency proof between the tree of the first `old` leaves and the tree of all
/// `leaves` (RFC 9162 §2.1.4.1 `PROOF(m, D[n])`). Empty when `old` is 0 or the whole tree;
/// `None` when `old` exceeds the tree.
pub fn consistency_proof(leaves: &[Sha256Digest], old: usize) -> Option<Vec<Sha256Digest>> {
    if old > leaves.len() {
        return None;
    }
    let mut proof = Vec::new();
    if old > 0 && old < leaves.len() {
        subproof(old, leaves, true, &mut proof);
    }
    Some(proof)
}

/// `SUBPROOF(m, D[n], b)`, appended to `out` in the RFC's order.
fn subproof(m: usize, leaves: &[Sha256Digest], whole: bool, out: &mut Vec<Sha256Digest>) {
    let n = leaves.len();
    if m == n {
        if !whole {
            out.push(root_of(leaves));
        }
        return;
    }
    let k = split_point(n);
    if m <= k {
        subproof(m, &leaves[..k], whole, out);
        out.push(root_of(&leaves[k..]));
    } else {
        subproof(m - k, &leaves[k..], false, out);
        out.push(root_of(&leaves[..k]));
    }
}

/// Checks a consistency proof (RFC 9162 §2.1.4.2): is the tree of `new_size` leaves with
/// `new_root` an extension of the tree of `old_size` leaves with `old_root`? Size 0 is
/// consistent with everything (empty proof); equal sizes need equal roots (empty proof).
pub fn verify_consistency(
    old_size: u64,
    new_size: u64,
    old_root: &Sha256Digest,
    new_root: &Sha256Digest,
    proof: &[Sha256Digest],
) -> bool {
    if old_size > new_size {
        return false;
    }
    if old_size == 0 || old_size == new_size {
        return proof.is_empty() && (old_size == 0 || old_root == new_root);
    }
    if proof.is_empty() {
        return false;
    }
    let mut path: Vec<Sha256Digest> = Vec::with_capacity(proof.len() + 1);
    if old_size.is_power_of_two() {
        path.push(*old_root);
    }
    path.extend_from_slice(proof);
    let (mut fn_, mut sn) = (old_size - 1, new_size - 1);
    while fn_ & 1 == 1 {
        fn_ >>= 1;
        sn >>= 1;
    }
    let (mut fr, mut sr) = (path[0], path[0]);
    for c in &path[1..] {
        if sn == 0 {
            return false;
        }
        if fn_ & 1 == 1 || fn_ == sn {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            while fn_ & 1 == 0 && fn_ != 0 {
                fn_ >>= 1;
                sn >>= 1;
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    fr == *old_root && sr == *new_root && sn == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaves(n: usize) -> Vec<Sha256Digest> {
        (0..n)
            .map(|i| leaf_hash(format!("leaf {i}").as_bytes()))
            .collect()
    }

    #[test]
    fn frontier_root_matches_the_recursive_definition_for_every_size() {
        let all = leaves(40);
        let mut f = Frontier::new();
        assert_eq!(f.root(), root_of(&[]));
        for (i, leaf) in all.iter().enumerate() {
            f.push(*leaf);
            assert_eq!(f.root(), root_of(&all[..=i]), "size {}", i + 1);
            let again = Frontier::from_parts(f.size(), f.roots()).unwrap();
            assert_eq!(again, f);
        }
    }

    #[test]
    fn every_consistency_proof_verifies_and_a_fork_does_not() {
        let all = leaves(33);
        for n in 1..=all.len() {
            let new_root = root_of(&all[..n]);
            for m in 0..=n {
                let proof = consistency_proof(&all[..n], m).unwrap();
                let old_root = root_of(&all[..m]);
                assert!(verify_consistency(m as u64, n as u64, &old_root, &new_root, &proof), "{m} {n}");
                if m > 0 && m < n {
                    let mut forked = all[..n].to_vec();
                    forked[m - 1] = leaf_hash(b"fork");
                    let forked_root = root_of(&forked);
                    assert!(!verify_consistency(m as u64, n as u64, &old_root, &forked_root, &proof));
                    let wrong = leaf_hash(b"x");
                    assert!(!verify_consistency(m as u64, n as u64, &wrong, &new_root, &proof));
                }
            }
        }
        assert!(consistency_proof(&all[..3], 4).is_none());
    }

    #[test]
    fn every_inclusion_proof_verifies_and_a_wrong_leaf_does_not() {
        for n in 1..20usize {
            let all = leaves(n);
            let root = root_of(&all);
            for i in 0..n {
                let path = inclusion_proof(&all, i).unwrap();
                assert!(verify_inclusion(&all[i], i as u64, n as u64, &path, &root));
                let other = leaf_hash(b"other");
                assert!(!verify_inclusion(&other, i as u64, n as u64, &path, &root));
            }
        }
    }
}
