//! Witnesses: keeping copies of the log's checkpoints where the gateway's disk cannot
//! reach, so that a rollback or rewrite of the whole data directory is caught.
//!
//! Owns: the publisher (`publish`: a directory and C2SP tlog-witness endpoints, in the
//! background) and the minimal witness server (`server`, `airlock witness serve`).
//! Uses: `audit` (checkpoint notes, consistency proofs, keys).
//! Must not: sit on the call path: a witness that cannot be reached never delays a call.

pub mod publish;
pub mod server;
