//! Reading the database's records ahead in batches and hashing them on every core.
//!
//! Each record is stored behind its chain hash, `SHA-256(chain before ‖ record)`. Here
//! every record's link is computed from the stored hash of the record before it, so the
//! records of a batch hash independently (and so do their Merkle leaves). The verifier
//! compares each link with the record's stored hash in order: while every earlier stored
//! hash matched, the stored hash before a record is the true chain, so the first mismatch
//! is found at the same record as hashing the chain one record after another would.
//!
//! A thread of its own reads the database ahead (a bare scan is a third of the work) and
//! starts hashing each batch as soon as it is read, so batches are hashed while the
//! verifier walks earlier ones, and while the caller is still parsing the checkpoints.

use std::collections::VecDeque;
use std::sync::mpsc;
use std::thread;

use super::super::digest::Sha256Digest;
use super::super::merkle::leaf_hash;
use super::super::store::{ScanError, StoredRecord};

/// Records per batch: large enough that starting the threads costs nothing beside the
/// hashing, small enough to keep memory flat on a large log.
const BATCH: usize = 8192;
/// Batches read and being hashed ahead of the one being walked.
const AHEAD: usize = 2;

/// A batch's hashes: one per record, in order.
type Hashes = Vec<(Option<Sha256Digest>, Sha256Digest)>;

/// A batch being hashed on every core.
struct Hashing {
    batch: Read,
    error: Option<ScanError>,
    /// One thread per lane, each hashing its run of the batch.
    lanes: Vec<(usize, thread::JoinHandle<Hashes>)>,
}

/// One record with its hashes.
pub(super) struct Hashed {
    pub seq: u64,
    pub value: sled::IVec,
    /// `SHA-256(stored hash of the record before ‖ record bytes)`; `None` when the stored
    /// entry is too short to hold a hash and a record.
    pub link: Option<Sha256Digest>,
    pub leaf: Sha256Digest,
}

/// A batch as read: each record with the stored hash of the record before it.
type Read = Vec<(u64, sled::IVec, Sha256Digest)>;

/// The records of a database scan, in order, with their hashes.
pub(super) struct Prehashed {
    /// `None` only while dropping.
    batches: Option<mpsc::Receiver<Hashing>>,
    /// Joined on drop: the reader holds the database open, and whoever verified may
    /// open it again next (sled locks it).
    reader: Option<thread::JoinHandle<()>>,
    ready: VecDeque<Result<Hashed, ScanError>>,
}

impl Prehashed {
    /// `chain` is the chain hash before the scan's first record.
    pub(super) fn new<I>(scan: I, chain: Sha256Digest) -> Self
    where
        I: Iterator<Item = Result<StoredRecord, ScanError>> + Send + 'static,
    {
        let lanes = thread::available_parallelism().map_or(1, |n| n.get());
        let (tx, batches) = mpsc::sync_channel(AHEAD);
        // Ends when the scan does, or when `batches` is dropped (a send fails).
        let reader = thread::spawn(move || read_ahead(scan, chain, lanes, tx));
        Self { batches: Some(batches), reader: Some(reader), ready: VecDeque::new() }
    }

    fn fill(&mut self) {
        let Some(Ok(Hashing { batch, error, lanes })) = self.batches.as_ref().map(mpsc::Receiver::recv) else {
            // The reader is gone: the scan ended, or the reader panicked, which must not
            // pass for the end of the log.
            if let Some(reader) = self.reader.take()
                && reader.join().is_err()
            {
                let error = ScanError::Db(sled::Error::ReportableBug("the database reader panicked".into()));
                self.ready.push_back(Err(error));
            }
            return;
        };
        let hashes: Hashes = lanes
            .into_iter()
            // A hasher that panicked leaves its records without a link: they fail as edited.
            .flat_map(|(n, w)| w.join().unwrap_or_else(|_| vec![(None, Sha256Digest::from_bytes([0; 32])); n]))
            .collect();
        for ((seq, value, _), (link, leaf)) in batch.into_iter().zip(hashes) {
            self.ready.push_back(Ok(Hashed { seq, value, link, leaf }));
        }
        if let Some(e) = error {
            self.ready.push_back(Err(e));
        }
    }
}

/// Starts hashing `batch` on `lanes` threads, each with its run of it.
fn start_hashing(batch: Read, error: Option<ScanError>, lanes: usize) -> Hashing {
    let per_lane = batch.len().div_ceil(lanes).max(1);
    let lanes = batch
        .chunks(per_lane)
        .map(|chunk| {
            // The hashers own their runs: they outlive this call.
            let run: Vec<_> = chunk.iter().map(|(_, value, before)| (value.clone(), *before)).collect();
            (run.len(), thread::spawn(move || hash_all(&run)))
        })
        .collect();
    Hashing { batch, error, lanes }
}

/// Reads `scan` in batches, each record paired with the stored hash before it, and starts
/// hashing each; a read error ends the last batch.
fn read_ahead<I>(mut scan: I, mut before: Sha256Digest, lanes: usize, tx: mpsc::SyncSender<Hashing>)
where
    I: Iterator<Item = Result<StoredRecord, ScanError>>,
{
    loop {
        let mut batch = Vec::with_capacity(BATCH);
        let mut error = None;
        let mut done = false;
        while batch.len() < BATCH {
            match scan.next() {
                None => {
                    done = true;
                    break;
                }
                Some(Ok((seq, value))) => {
                    let prior = before;
                    if let Some(stored) = value.get(..32) {
                        let mut bytes = [0u8; 32];
                        bytes.copy_from_slice(stored);
                        before = Sha256Digest::from_bytes(bytes);
                    }
                    batch.push((seq, value, prior));
                }
                Some(Err(e)) => {
                    error = Some(e);
                    done = true;
                    break;
                }
            }
        }
        if (!batch.is_empty() || error.is_some()) && tx.send(start_hashing(batch, error, lanes)).is_err() {
            return;
        }
        if done {
            return;
        }
    }
}

fn hash_all(run: &[(sled::IVec, Sha256Digest)]) -> Hashes {
    run.iter()
        .map(|(value, before)| match value.get(32..) {
            Some(bytes) => (Some(Sha256Digest::of_parts(&[before.as_bytes(), bytes])), leaf_hash(bytes)),
            None => (None, leaf_hash(value)),
        })
        .collect()
}

impl Drop for Prehashed {
    fn drop(&mut self) {
        // Unblocks a reader waiting to send, then waits at most the rest of its batch. The
        // hashers own their runs (clones of sled's buffers), so none needs joining.
        self.batches = None;
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

impl Iterator for Prehashed {
    type Item = Result<Hashed, ScanError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.ready.is_empty() {
            self.fill();
        }
        self.ready.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numbered(db: &sled::Db) -> impl Iterator<Item = Result<StoredRecord, ScanError>> + Send + 'static {
        db.iter().map(|kv| {
            let (k, v) = kv?;
            Ok((u64::from_be_bytes(k.as_ref().try_into().unwrap()), v))
        })
    }

    #[test]
    fn dropped_early_it_lets_go_of_the_database() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        {
            let db = sled::open(&path).unwrap();
            for i in 0..(BATCH as u64 * 3) {
                db.insert(i.to_be_bytes(), vec![7u8; 64]).unwrap();
            }
            let mut records = Prehashed::new(numbered(&db), Sha256Digest::from_bytes([0; 32]));
            assert!(records.next().is_some_and(|r| r.is_ok()));
        }
        // sled locks its directory for as long as any handle lives, the reader's included.
        sled::open(&path).unwrap();
    }

    #[test]
    fn every_record_comes_with_the_stored_hash_before_it() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path().join("db")).unwrap();
        let n = BATCH as u64 + 5;
        for i in 0..n {
            db.insert(i.to_be_bytes(), [[i as u8; 32], [1; 32]].concat()).unwrap();
        }
        let start = Sha256Digest::from_bytes([9; 32]);
        let all: Vec<Hashed> = Prehashed::new(numbered(&db), start).map(Result::unwrap).collect();
        assert_eq!(all.len() as u64, n);
        for (i, h) in all.iter().enumerate() {
            let before = if i == 0 { start } else { Sha256Digest::from_bytes([(i - 1) as u8; 32]) };
            assert_eq!(h.link, Some(Sha256Digest::of_parts(&[before.as_bytes(), &[1; 32]])), "record {i}");
        }
    }
}
