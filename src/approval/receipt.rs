//! Approval receipts: what an approved call carries downstream in
//! `_meta["airlock/approval"]`, signed with the gateway's Ed25519 log key so a downstream
//! (or `airlock receipts verify`) can check it with the public key alone.
//!
//! The signed message is `airlock-receipt-v1\n` followed by the canonical JSON of the
//! receipt. The prefix keeps a receipt signature from ever reading as a checkpoint
//! signature (checkpoints sign bare canonical JSON) made by the same key.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::audit::{AuditLog, PublicKey, Signature, canonical};

use super::{ApprovalId, Kind};

/// Domain separation for receipt signatures.
pub const SIGNING_PREFIX: &[u8] = b"airlock-receipt-v1\n";

/// What was approved, for which call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Receipt {
    pub v: u32,
    pub approval_id: ApprovalId,
    pub kind: Kind,
    /// The call that executes under this approval.
    pub call_id: String,
    pub tool: String,
    pub caller: String,
    /// Who approved (for `confirm`, the caller).
    pub approvers: Vec<String>,
    pub decided_at: String,
    /// Plain SHA-256 of the canonical arguments forwarded, so the downstream (which has
    /// them) can check the receipt without Airlock's key. A receipt goes only downstream,
    /// never to the log or a channel: those carry the keyed `args_hmac` instead.
    pub args_sha256: String,
    pub tool_fingerprint: String,
}

/// A receipt with its signature and the id of the key that made it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedReceipt {
    pub receipt: Receipt,
    /// Hex id of the signing key (`airlock keys show`).
    pub key_id: String,
    /// Base64 Ed25519 signature.
    pub signature: String,
}

/// Why a receipt does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReceiptError {
    #[error("not a receipt: {0}")]
    Malformed(String),
    #[error("signed by key {found}, not by the given key {expected}")]
    OtherKey { found: String, expected: String },
    #[error("the signature does not match the receipt")]
    BadSignature,
    #[error("the receipt is for arguments with digest {receipt}, not {given}")]
    OtherArguments { receipt: String, given: String },
}

impl SignedReceipt {
    /// Signs `receipt` with the log's current key.
    pub fn sign(receipt: Receipt, audit: &AuditLog) -> SignedReceipt {
        let key_id = audit.public_key().id().to_string();
        let signature = audit.sign(&message(&receipt)).to_base64();
        SignedReceipt { receipt, key_id, signature }
    }

    /// The JSON form carried in `_meta`.
    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    /// Reads the JSON form.
    pub fn from_value(value: &Value) -> Result<SignedReceipt, ReceiptError> {
        serde_json::from_value(value.clone()).map_err(|e| ReceiptError::Malformed(e.to_string()))
    }

    /// Checks the signature against `key`.
    pub fn verify(&self, key: &PublicKey) -> Result<(), ReceiptError> {
        let expected = key.id().to_string();
        if self.key_id != expected {
            return Err(ReceiptError::OtherKey { found: self.key_id.clone(), expected });
        }
        let signature = Signature::parse(&self.signature).ok_or(ReceiptError::BadSignature)?;
        if key.verify(&message(&self.receipt), &signature) { Ok(()) } else { Err(ReceiptError::BadSignature) }
    }
}

fn message(receipt: &Receipt) -> Vec<u8> {
    let value = serde_json::to_value(receipt).unwrap_or(Value::Null);
    let mut out = SIGNING_PREFIX.to_vec();
    out.extend_from_slice(&canonical(&value));
    out
}
