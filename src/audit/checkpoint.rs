//! Signed checkpoints: the tree head `{origin, size, root, chain_head, time}` and its
//! Ed25519 signature.
//!
//! Owns: the checkpoint wire form and the exact bytes that get signed.
//! Uses: `canonical`, `keys`, `note`.
//! Must not: decide which key is trusted (verification does).
//!
//! Wire form (one canonical JSON object, also one line of `checkpoints.log` and of exports):
//! `{"chain_head":HEX,"format":"note","key":B64,"kind":"checkpoint","origin":STR,"root":HEX,
//! "signature":B64,"size":N,"time":RFC3339}`; `key` says which key made it so that a
//! verifier can name the signer in an error. Two forms, told apart by `format`:
//! - `"note"` (written since checkpoints became C2SP notes): the signature is the Ed25519
//!   note signature over the c2sp.org/tlog-checkpoint text `origin\nsize\nbase64(root)\n`
//!   plus one extension line `airlock-chain <hex chain head> <time>`, key name = origin.
//!   `Checkpoint::to_note` rebuilds the signed note byte for byte.
//! - absent (older logs): the signature covers
//!   `canonical({"chain_head","origin","root","size","time"})`. These stay valid.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::{Value, json};

use super::canonical::canonical;
use super::digest::Sha256Digest;
use super::keys::{PublicKey, Signature, SigningKey};
use super::note::{CheckpointText, KeyName, Note, NoteSignature, VerifierKey};

/// The extension line that carries Airlock's chain head and the checkpoint time.
const CHAIN_EXTENSION: &str = "airlock-chain";

/// What the signature of a checkpoint covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// Canonical JSON of the tree head (logs written before signed notes).
    Json,
    /// The C2SP checkpoint note text.
    Note,
}

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
    pub form: Form,
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
    /// Signs a new checkpoint: a signed note when the origin can be a key name (it always
    /// is for origins Airlock chooses), else the JSON form.
    pub fn sign(
        key: &SigningKey,
        origin: &str,
        size: u64,
        root: Sha256Digest,
        chain_head: Sha256Digest,
        time: String,
    ) -> Checkpoint {
        let mut cp = Checkpoint {
            origin: origin.to_owned(),
            size,
            root,
            chain_head,
            time,
            key: key.public_key(),
            signature: Signature::from_bytes([0; 64]),
            form: Form::Json,
        };
        let msg = match KeyName::new(origin) {
            Ok(_) => {
                cp.form = Form::Note;
                cp.note_text().into_bytes()
            }
            Err(_) => signed_message(origin, size, &cp.root, &cp.chain_head, &cp.time),
        };
        cp.signature = key.sign(&msg);
        cp
    }

    /// Is the signature valid under the key the checkpoint names?
    pub fn signature_is_valid(&self) -> bool {
        self.key.verify(&self.signed_bytes(), &self.signature)
    }

    /// The bytes the signature covers: the note text, or (older logs) the JSON message.
    pub fn signed_bytes(&self) -> Vec<u8> {
        match self.form {
            Form::Note => self.note_text().into_bytes(),
            Form::Json => signed_message(&self.origin, self.size, &self.root, &self.chain_head, &self.time),
        }
    }

    /// The checkpoint note text (what a note-form signature covers).
    pub fn note_text(&self) -> String {
        CheckpointText {
            origin: self.origin.clone(),
            size: self.size,
            root: self.root,
            extensions: vec![format!("{CHAIN_EXTENSION} {} {}", self.chain_head, self.time)],
        }
        .render()
    }

    /// The log's verifier key for notes (`None` if the origin cannot be a key name).
    pub fn verifier_key(&self) -> Option<VerifierKey> {
        KeyName::new(&self.origin)
            .ok()
            .map(|name| VerifierKey::ed25519(name, self.key))
    }

    /// The signed note (`None` for a JSON-form checkpoint, whose signature covers JSON).
    pub fn to_note(&self) -> Option<Note> {
        if self.form != Form::Note {
            return None;
        }
        let vk = self.verifier_key()?;
        Some(Note {
            text: self.note_text(),
            signatures: vec![NoteSignature {
                name: self.origin.clone(),
                key_id: vk.id(),
                body: self.signature.as_bytes().to_vec(),
            }],
        })
    }

    /// Reads an Airlock checkpoint from a signed note, checking its signature by one of
    /// `keys` (the key name must be the origin). Other signature lines are ignored.
    pub fn from_note(note: &Note, keys: &[PublicKey]) -> Result<Checkpoint, String> {
        let text = CheckpointText::parse(&note.text).map_err(|e| e.to_string())?;
        let name = KeyName::new(&text.origin).map_err(|e| e.to_string())?;
        let (chain_head, time) = text
            .extensions
            .iter()
            .find_map(|l| {
                let mut parts = l.strip_prefix(CHAIN_EXTENSION)?.strip_prefix(' ')?.split(' ');
                let head: Sha256Digest = parts.next()?.parse().ok()?;
                let time = parts.next()?.to_owned();
                parts.next().is_none().then_some((head, time))
            })
            .ok_or("the note has no airlock-chain line (not an Airlock checkpoint)")?;
        for key in keys {
            let vk = VerifierKey::ed25519(name.clone(), *key);
            match note.verify(&vk) {
                None => continue,
                Some(false) => return Err(format!("the signature by key {} does not verify", key.id())),
                Some(true) => {}
            }
            let line = note.signatures.iter().find(|s| s.is_from(&vk));
            let sig = line
                .and_then(|l| <[u8; 64]>::try_from(l.body.as_slice()).ok())
                .ok_or("unreadable signature")?;
            let cp = Checkpoint {
                origin: text.origin,
                size: text.size,
                root: text.root,
                chain_head,
                time,
                key: *key,
                signature: Signature::from_bytes(sig),
                form: Form::Note,
            };
            // The note must be exactly what this checkpoint signs (no other extensions).
            if cp.note_text() != note.text {
                return Err("the note carries lines Airlock does not write".into());
            }
            return Ok(cp);
        }
        Err("the note is not signed by a trusted log key".into())
    }

    /// The wire form as a JSON value.
    pub fn to_value(&self) -> Value {
        let mut v = json!({
            "chain_head": self.chain_head.to_string(),
            "key": self.key.to_base64(),
            "kind": "checkpoint",
            "origin": self.origin,
            "root": self.root.to_string(),
            "signature": self.signature.to_base64(),
            "size": self.size,
            "time": self.time,
        });
        if self.form == Form::Note {
            v["format"] = json!("note");
        }
        v
    }

    /// The wire form as canonical bytes.
    pub fn to_canonical(&self) -> Vec<u8> {
        canonical(&self.to_value())
    }

    /// Parses the wire form; `None` if any field is missing or malformed.
    pub fn from_value(v: &Value) -> Option<Checkpoint> {
        Wire::deserialize(v).ok()?.into_checkpoint()
    }

    /// Parses canonical bytes.
    pub fn from_slice(bytes: &[u8]) -> Option<Checkpoint> {
        // Straight into the fields, without a `Value` of the object: a verifier parses
        // one checkpoint for every group of the log.
        serde_json::from_slice::<Wire<'_>>(bytes).ok()?.into_checkpoint()
    }
}

/// The wire form's members as parsed, before their values are checked.
#[derive(Deserialize)]
struct Wire<'a> {
    #[serde(borrow)]
    kind: Cow<'a, str>,
    /// Absent in the older form; when present it must be a string (`null` is refused).
    #[serde(borrow, default, deserialize_with = "present")]
    format: Option<Cow<'a, str>>,
    #[serde(borrow)]
    origin: Cow<'a, str>,
    size: u64,
    #[serde(borrow)]
    root: Cow<'a, str>,
    #[serde(borrow)]
    chain_head: Cow<'a, str>,
    #[serde(borrow)]
    time: Cow<'a, str>,
    #[serde(borrow)]
    key: Cow<'a, str>,
    #[serde(borrow)]
    signature: Cow<'a, str>,
}

fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Cow<'de, str>>, D::Error> {
    // `Cow<str>` borrows only when asked to (serde's `borrow`), as here.
    #[derive(Deserialize)]
    struct Borrowed<'a>(#[serde(borrow)] Cow<'a, str>);
    Borrowed::deserialize(d).map(|b| Some(b.0))
}

impl Wire<'_> {
    fn into_checkpoint(self) -> Option<Checkpoint> {
        if self.kind != "checkpoint" {
            return None;
        }
        let form = match self.format.as_deref() {
            None => Form::Json,
            Some("note") => Form::Note,
            Some(_) => return None,
        };
        Some(Checkpoint {
            origin: self.origin.into_owned(),
            size: self.size,
            root: self.root.parse().ok()?,
            chain_head: self.chain_head.parse().ok()?,
            time: self.time.into_owned(),
            key: PublicKey::parse(&self.key)?,
            signature: Signature::parse(&self.signature)?,
            form,
        })
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
        assert_eq!(cp.form, Form::Note);
        let note = Note::parse(&cp.to_note().unwrap().to_string()).unwrap();
        assert_eq!(Checkpoint::from_note(&note, &[key.public_key()]).unwrap(), cp);
        let other = SigningKey::generate().unwrap().public_key();
        assert!(Checkpoint::from_note(&note, &[other]).is_err());
    }

    #[test]
    fn bytes_and_values_parse_alike_and_a_bad_format_is_refused() {
        let key = SigningKey::generate().unwrap();
        let cp = Checkpoint::sign(&key, "test", 3, Sha256Digest::of(b"r"), Sha256Digest::of(b"c"), "t".into());
        let mut v: Value = serde_json::from_slice(&cp.to_canonical()).unwrap();
        // An escaped string cannot be borrowed from the bytes; it still parses.
        v["time"] = json!("t\"1");
        let bytes = serde_json::to_vec(&v).unwrap();
        let parsed = Checkpoint::from_slice(&bytes).unwrap();
        assert_eq!(parsed.time, "t\"1");
        assert_eq!(Checkpoint::from_value(&v), Some(parsed));
        for format in [json!(null), json!("json"), json!(1)] {
            let mut bad = v.clone();
            bad["format"] = format;
            assert_eq!(Checkpoint::from_slice(&serde_json::to_vec(&bad).unwrap()), None, "{bad}");
            assert_eq!(Checkpoint::from_value(&bad), None, "{bad}");
        }
        let mut other = v.clone();
        other["kind"] = json!("record");
        assert_eq!(Checkpoint::from_slice(&serde_json::to_vec(&other).unwrap()), None);
    }

    #[test]
    fn json_form_checkpoints_still_verify() {
        let key = SigningKey::generate().unwrap();
        let cp = Checkpoint::sign(&key, "not a key name", 1, Sha256Digest::of(b"r"), Sha256Digest::of(b"c"), "t".into());
        assert_eq!(cp.form, Form::Json);
        assert!(cp.signature_is_valid() && cp.to_note().is_none());
        assert_eq!(Checkpoint::from_slice(&cp.to_canonical()).unwrap(), cp);
    }
}
