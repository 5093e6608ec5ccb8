//! Reading the database's records ahead in batches and hashing them on every core.
//!
//! Each record is stored behind its chain hash, `SHA-256(chain before ‖ record)`. Here
//! every record's link is computed from the stored hash of the record before it, so the
//! records of a batch hash independently (and so do their Merkle leaves). The verifier
//! compares each link with the record's stored hash in order: while every earlier stored
//! hash matched, the stored hash before a record is the true chain, so the first mismatch
//! is found at the same record as hashing the chain one record after another would.

use std::collections::VecDeque;
use std::thread;

use super::super::digest::Sha256Digest;
use super::super::merkle::leaf_hash;

/// Records per batch: large enough that starting the threads costs nothing beside the
/// hashing, small enough to keep memory flat on a large log.
const BATCH: usize = 8192;

/// One record with its hashes.
pub(super) struct Hashed {
    pub key: sled::IVec,
    pub value: sled::IVec,
    /// `SHA-256(stored hash of the record before ‖ record bytes)`; `None` when the stored
    /// entry is too short to hold a hash and a record.
    pub link: Option<Sha256Digest>,
    pub leaf: Sha256Digest,
}

/// The records of a database scan, in order, with their hashes.
pub(super) struct Prehashed<I> {
    scan: I,
    /// The stored hash of the last record read (the chain before the next one).
    before: Sha256Digest,
    ready: VecDeque<Result<Hashed, sled::Error>>,
    done: bool,
    lanes: usize,
}

impl<I: Iterator<Item = Result<(sled::IVec, sled::IVec), sled::Error>>> Prehashed<I> {
    /// `chain` is the chain hash before the scan's first record.
    pub(super) fn new(scan: I, chain: Sha256Digest) -> Self {
        let lanes = thread::available_parallelism().map_or(1, |n| n.get());
        Self { scan, before: chain, ready: VecDeque::new(), done: false, lanes }
    }

    fn fill(&mut self) {
        let mut batch = Vec::with_capacity(BATCH);
        let mut error = None;
        while batch.len() < BATCH {
            match self.scan.next() {
                None => {
                    self.done = true;
                    break;
                }
                Some(Ok((key, value))) => {
                    let before = self.before;
                    if let Some(stored) = value.get(..32) {
                        let mut bytes = [0u8; 32];
                        bytes.copy_from_slice(stored);
                        self.before = Sha256Digest::from_bytes(bytes);
                    }
                    batch.push((key, value, before));
                }
                Some(Err(e)) => {
                    error = Some(e);
                    self.done = true;
                    break;
                }
            }
        }
        let per_lane = batch.len().div_ceil(self.lanes).max(1);
        let hashes: Vec<(Option<Sha256Digest>, Sha256Digest)> = thread::scope(|s| {
            let workers: Vec<_> =
                batch.chunks(per_lane).map(|chunk| (chunk.len(), s.spawn(move || hash_all(chunk)))).collect();
            workers
                .into_iter()
                // A hasher that panicked leaves its records without a link: they fail as edited.
                .flat_map(|(n, w)| w.join().unwrap_or_else(|_| vec![(None, Sha256Digest::from_bytes([0; 32])); n]))
                .collect()
        });
        for ((key, value, _), (link, leaf)) in batch.into_iter().zip(hashes) {
            self.ready.push_back(Ok(Hashed { key, value, link, leaf }));
        }
        if let Some(e) = error {
            self.ready.push_back(Err(e));
        }
    }
}

fn hash_all(chunk: &[(sled::IVec, sled::IVec, Sha256Digest)]) -> Vec<(Option<Sha256Digest>, Sha256Digest)> {
    chunk
        .iter()
        .map(|(_, value, before)| match value.get(32..) {
            Some(bytes) => (Some(Sha256Digest::of_parts(&[before.as_bytes(), bytes])), leaf_hash(bytes)),
            None => (None, leaf_hash(value)),
        })
        .collect()
}

impl<I: Iterator<Item = Result<(sled::IVec, sled::IVec), sled::Error>>> Iterator for Prehashed<I> {
    type Item = Result<Hashed, sled::Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.ready.is_empty() && !self.done {
            self.fill();
        }
        self.ready.pop_front()
    }
}
