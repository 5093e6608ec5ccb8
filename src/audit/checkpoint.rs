//! Signed checkpoints: the tree head `{origin, size, root, chain_head, time}` and its
//! Ed25519 signature.
//!
//! Owns: the checkpoint wire form and the exact bytes that get signed.
//! Uses: `canonical`, `keys`.
//! Must not: decide which key is trusted (verification does).
//!
//! Wire form (one canonical JSON object, also one line of `checkpoints.log` and of exports):
//! `{"chain_head":HEX,"key":B64,"kind":"checkpoint","origin":STR,"root":HEX,
//! "signature":B64,"size":N,"time":RFC3339}`. The signature covers
//! `canonical({"chain_head","origin","root","size","time"})` only; `key` says which key made
//! it so that a verifier can name the signer in an error.

use serde_json::{Value, json};

use super::canonical::canonical;
use super::digest::Sha256Digest;
use super::keys::{PublicKey, Signature, SigningKey};

/// A signed tree head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub origin: String,
    /// Number of records covered (the last covered sequence number).
    pub size: u64,
    /// RFC 6962 Merkle root over records `1..=size`.
    pub root: Sha256Digest,
    /// Chain hash after record `size` (32 zero bytes when `size` is 0).
    pub chain_head: Sha256Digest,
    pub time: String,
    pub key: PublicKey,
    pub signature: Signature,
}

/// The bytes a checkpoint signature covers.
pub fn signed_message(
    origin: &str,
    size: u64,
    root: &Sha256Digest,
    chain_head: &Sha256Digest,
    time: &str,
) -> Vec<u8> {
    canonical(&json!({
        "chain_head": chain_head.to_string(),
        "origin": origin,
        "root": root.to_string(),
        "size": size,
        "time": time,
    }))
}

impl Checkpoint {
    /// Signs a new checkpoint.
    pub fn sign(
        key: &SigningKey,
        origin: &str,
        size: u64,
        root: Sha256Digest,
        chain_head: Sha256Digest,
        time: String,
    ) -> Checkpoint {
        let signature = key.sign(&signed_message(origin, size, &root, &chain_head, &time));
        Checkpoint {
            origin: origin.to_owned(),
            size,
            root,
            chain_head,
            time,
            key: key.public_key(),
            signature,
        }
    }

    /// Is the signature valid under the key the checkpoint names?
    pub fn signature_is_valid(&self) -> bool {
        let msg = signed_message(
            &self.origin,
            self.size,
            &self.root,
            &self.chain_head,
            &self.time,
        );
        self.key.verify(&msg, &self.signature)
    }

    /// The wire form as a JSON value.
    pub fn to_value(&self) -> Value {
        json!({
            "chain_head": self.chain_head.to_string(),
            "key": self.key.to_base64(),
            "kind": "checkpoint",
            "origin": self.origin,
            "root": self.root.to_string(),
            "signature": self.signature.to_base64(),
            "size": self.size,
            "time": self.time,
        })
    }

    /// The wire form as canonical bytes.
    pub fn to_canonical(&self) -> Vec<u8> {
        canonical(&self.to_value())
    }

    /// Parses the wire form; `None` if any field is missing or malformed.
    pub fn from_value(v: &Value) -> Option<Checkpoint> {
        let s = |k: &str| v.get(k).and_then(Value::as_str);
        if s("kind") != Some("checkpoint") {
            return None;
        }
        Some(Checkpoint {
            origin: s("origin")?.to_owned(),
            size: v.get("size")?.as_u64()?,
            root: s("root")?.parse().ok()?,
            chain_head: s("chain_head")?.parse().ok()?,
            time: s("time")?.to_owned(),
            key: PublicKey::parse(s("key")?)?,
            signature: Signature::parse(s("signature")?)?,
        })
    }

    /// Parses canonical bytes.
    pub fn from_slice(bytes: &[u8]) -> Option<Checkpoint> {
        Checkpoint::from_value(&serde_json::from_slice(bytes).ok()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoint_round_trips_and_detects_a_changed_field() {
        let key = SigningKey::generate().unwrap();
        let cp = Checkpoint::sign(
            &key,
            "test",
            3,
            Sha256Digest::of(b"r"),
            Sha256Digest::of(b"c"),
            "2026-01-01T00:00:00.000000Z".into(),
        );
        assert!(cp.signature_is_valid());
        let back = Checkpoint::from_slice(&cp.to_canonical()).unwrap();
        assert_eq!(back, cp);
        let mut changed = cp.clone();
        changed.size = 4;
        assert!(!changed.signature_is_valid());
    }
}
