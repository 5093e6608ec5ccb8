//! C2SP signed notes (c2sp.org/signed-note) with Ed25519 signatures, the checkpoint note
//! text of c2sp.org/tlog-checkpoint, and Ed25519 cosignatures (c2sp.org/tlog-cosignature).
//!
//! Owns: note parsing and rendering, key names, key ids, verifier keys
//! (`name+hash+base64`), note signatures and cosignatures.
//! Uses: `keys` (Ed25519 through ring), `digest`.
//! Must not: decide which keys are trusted (callers pass the keys they trust), or know
//! Airlock's records.
//!
//! Written from the specifications rather than taken from a crate: the Rust crates that
//! parse notes bring their own Ed25519 stack, and the format is a few dozen lines.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;

use super::digest::Sha256Digest;
use super::keys::{PublicKey, Signature, SigningKey};

/// Signature type byte of a log's Ed25519 note signature.
pub(super) const TYPE_ED25519: u8 = 0x01;
/// Signature type byte of a timestamped Ed25519 witness cosignature.
pub(super) const TYPE_COSIGNATURE: u8 = 0x04;
/// The most signature lines a note may carry (the spec asks for at least 16).
const MAX_SIGNATURES: usize = 64;
/// The largest note accepted.
pub const MAX_NOTE_BYTES: usize = 64 * 1024;

/// Why a note or key could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoteError {
    #[error("key name {0:?} is empty or contains a space or '+'")]
    BadKeyName(String),
    #[error("not a verifier key (name+hash+base64): {0}")]
    BadVerifierKey(String),
    #[error("not a signed note: {0}")]
    Malformed(String),
    #[error("not a checkpoint: {0}")]
    NotCheckpoint(String),
}

fn malformed(why: impl Into<String>) -> NoteError {
    NoteError::Malformed(why.into())
}

/// A key name: non-empty, no Unicode spaces, no `+`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KeyName(String);

impl KeyName {
    /// Checks a key name.
    pub fn new(name: &str) -> Result<KeyName, NoteError> {
        let bad = name.is_empty()
            || name.chars().any(|c| c.is_whitespace() || c == '+' || c.is_control());
        if bad {
            return Err(NoteError::BadKeyName(name.to_owned()));
        }
        Ok(KeyName(name.to_owned()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for KeyName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `SHA-256(name ‖ 0x0A ‖ type ‖ public key)[:4]`.
pub(super) fn key_id(name: &KeyName, sig_type: u8, key: &PublicKey) -> [u8; 4] {
    let d = Sha256Digest::of_parts(&[name.0.as_bytes(), b"\n", &[sig_type], key.as_bytes()]);
    let mut id = [0u8; 4];
    id.copy_from_slice(&d.as_bytes()[..4]);
    id
}

/// A verifier key: who signs (name), how (type byte) and with which public key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifierKey {
    pub name: KeyName,
    pub sig_type: u8,
    pub key: PublicKey,
}

impl VerifierKey {
    /// A log's Ed25519 note key.
    pub fn ed25519(name: KeyName, key: PublicKey) -> VerifierKey {
        VerifierKey { name, sig_type: TYPE_ED25519, key }
    }

    /// A witness's cosignature key.
    pub fn cosigner(name: KeyName, key: PublicKey) -> VerifierKey {
        VerifierKey { name, sig_type: TYPE_COSIGNATURE, key }
    }

    /// The key id signature lines carry.
    pub fn id(&self) -> [u8; 4] {
        key_id(&self.name, self.sig_type, &self.key)
    }

    /// Parses `name+hash+base64(type ‖ key)`; the hash must match.
    pub fn parse(text: &str) -> Result<VerifierKey, NoteError> {
        let bad = |why: &str| NoteError::BadVerifierKey(why.to_owned());
        let mut parts = text.trim().splitn(3, '+');
        let (Some(name), Some(hash), Some(key)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(bad("expected three parts separated by '+'"));
        };
        let name = KeyName::new(name)?;
        let raw = B64.decode(key).map_err(|_| bad("the key is not base64"))?;
        let (&sig_type, key) = raw.split_first().ok_or_else(|| bad("empty key"))?;
        if sig_type != TYPE_ED25519 && sig_type != TYPE_COSIGNATURE {
            return Err(bad("only Ed25519 keys (types 0x01 and 0x04) are supported"));
        }
        let key = <[u8; 32]>::try_from(key).map_err(|_| bad("an Ed25519 key has 32 bytes"))?;
        let vk = VerifierKey { name, sig_type, key: PublicKey::from_bytes(key) };
        if hash.len() != 8 || hex::decode(hash).ok().as_deref() != Some(&vk.id()[..]) {
            return Err(bad("the key hash does not match the name and key"));
        }
        Ok(vk)
    }
}

impl fmt::Display for VerifierKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut raw = vec![self.sig_type];
        raw.extend_from_slice(self.key.as_bytes());
        write!(f, "{}+{}+{}", self.name, hex::encode(self.id()), B64.encode(raw))
    }
}

/// One signature line: `— <name> base64(key id ‖ signature bytes)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteSignature {
    pub name: String,
    pub key_id: [u8; 4],
    /// What follows the key id (a signature, or a timestamp and a signature).
    pub body: Vec<u8>,
}

impl NoteSignature {
    /// Parses one line without its newline.
    pub fn parse_line(line: &str) -> Result<NoteSignature, NoteError> {
        let rest = line
            .strip_prefix("\u{2014} ")
            .ok_or_else(|| malformed("a signature line starts with an em dash and a space"))?;
        let (name, sig) = rest
            .split_once(' ')
            .ok_or_else(|| malformed("a signature line is: em dash, name, signature"))?;
        KeyName::new(name)?;
        let raw = B64
            .decode(sig)
            .map_err(|_| malformed("a signature is not base64"))?;
        if raw.len() < 5 {
            return Err(malformed("a signature is too short"));
        }
        let mut key_id = [0u8; 4];
        key_id.copy_from_slice(&raw[..4]);
        Ok(NoteSignature { name: name.to_owned(), key_id, body: raw[4..].to_vec() })
    }

    /// Is this line from `key` (same name and key id)?
    pub fn is_from(&self, key: &VerifierKey) -> bool {
        self.name == key.name.as_str() && self.key_id == key.id()
    }
}

impl fmt::Display for NoteSignature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut raw = self.key_id.to_vec();
        raw.extend_from_slice(&self.body);
        write!(f, "\u{2014} {} {}", self.name, B64.encode(raw))
    }
}

/// A signed note: its text (ending in a newline) and its signature lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub text: String,
    pub signatures: Vec<NoteSignature>,
}

impl Note {
    /// Parses a whole note. Signatures are not checked here.
    pub fn parse(note: &str) -> Result<Note, NoteError> {
        if note.len() > MAX_NOTE_BYTES {
            return Err(malformed("the note is too large"));
        }
        if note.chars().any(|c| c < ' ' && c != '\n') {
            return Err(malformed("a note contains no control characters but newline"));
        }
        if !note.ends_with('\n') {
            return Err(malformed("a note ends with a newline"));
        }
        let split = note
            .rfind("\n\n")
            .ok_or_else(|| malformed("no blank line between text and signatures"))?;
        let text = &note[..=split];
        let lines = &note[split + 2..];
        let signatures = lines
            .strip_suffix('\n')
            .unwrap_or(lines)
            .split('\n')
            .map(NoteSignature::parse_line)
            .collect::<Result<Vec<_>, _>>()?;
        if signatures.len() > MAX_SIGNATURES {
            return Err(malformed("too many signatures"));
        }
        Ok(Note { text: text.to_owned(), signatures })
    }

    /// Checks the Ed25519 note signature of `key`. `None`: the note has no signature from
    /// that key; `Some(false)`: it has one and it does not verify.
    pub fn verify(&self, key: &VerifierKey) -> Option<bool> {
        let line = self.signatures.iter().find(|s| s.is_from(key))?;
        let sig = <[u8; 64]>::try_from(line.body.as_slice()).ok();
        Some(sig.is_some_and(|sig| {
            key.key.verify(self.text.as_bytes(), &Signature::from_bytes(sig))
        }))
    }

    /// Checks a cosignature of `key`; returns its timestamp when it verifies.
    pub fn cosigned_by(&self, key: &VerifierKey) -> Option<Result<u64, ()>> {
        let line = self.signatures.iter().find(|s| s.is_from(key))?;
        Some(check_cosignature(key, &self.text, &line.body))
    }
}

impl fmt::Display for Note {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)?;
        f.write_str("\n")?;
        for s in &self.signatures {
            writeln!(f, "{s}")?;
        }
        Ok(())
    }
}

/// The message a cosignature signs.
fn cosigned_message(text: &str, timestamp: u64) -> Vec<u8> {
    format!("cosignature/v1\ntime {timestamp}\n{text}").into_bytes()
}

/// A witness's cosignature over checkpoint `text` at `timestamp` (POSIX seconds).
pub fn cosign(key: &SigningKey, name: &KeyName, text: &str, timestamp: u64) -> NoteSignature {
    let vk = VerifierKey::cosigner(name.clone(), key.public_key());
    let mut body = timestamp.to_be_bytes().to_vec();
    body.extend_from_slice(key.sign(&cosigned_message(text, timestamp)).as_bytes());
    NoteSignature { name: name.0.clone(), key_id: vk.id(), body }
}

fn check_cosignature(key: &VerifierKey, text: &str, body: &[u8]) -> Result<u64, ()> {
    if body.len() != 8 + 64 {
        return Err(());
    }
    let (ts, sig) = body.split_at(8);
    let timestamp = u64::from_be_bytes(ts.try_into().map_err(|_| ())?);
    let sig = <[u8; 64]>::try_from(sig).map_err(|_| ())?;
    if timestamp > i64::MAX as u64 {
        return Err(());
    }
    let ok = key.key.verify(&cosigned_message(text, timestamp), &Signature::from_bytes(sig));
    if ok { Ok(timestamp) } else { Err(()) }
}

/// The text of a checkpoint note: origin, tree size, base64 root, extension lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointText {
    pub origin: String,
    pub size: u64,
    pub root: Sha256Digest,
    pub extensions: Vec<String>,
}

impl CheckpointText {
    /// Renders the note text (each line ending in a newline).
    pub fn render(&self) -> String {
        let mut text = format!("{}\n{}\n{}\n", self.origin, self.size, B64.encode(self.root.as_bytes()));
        for line in &self.extensions {
            text.push_str(line);
            text.push('\n');
        }
        text
    }

    /// Parses note text per c2sp.org/tlog-checkpoint.
    pub fn parse(text: &str) -> Result<CheckpointText, NoteError> {
        let bad = |why: &str| NoteError::NotCheckpoint(why.to_owned());
        let body = text.strip_suffix('\n').ok_or_else(|| bad("the text ends with a newline"))?;
        let mut lines = body.split('\n');
        let origin = lines.next().filter(|l| !l.is_empty()).ok_or_else(|| bad("no origin line"))?;
        let size = lines.next().ok_or_else(|| bad("no tree size line"))?;
        let size_ok = size == "0" || (!size.starts_with('0') && size.bytes().all(|b| b.is_ascii_digit()));
        let size: u64 = match size.parse() {
            Ok(n) if size_ok => n,
            _ => return Err(bad("the tree size is not a decimal without leading zeroes")),
        };
        let root = lines.next().ok_or_else(|| bad("no root hash line"))?;
        let root = B64
            .decode(root)
            .ok()
            .and_then(|r| Sha256Digest::from_slice(&r))
            .ok_or_else(|| bad("the root hash is not 32 bytes of base64"))?;
        let extensions: Vec<String> = lines.map(str::to_owned).collect();
        if extensions.iter().any(String::is_empty) {
            return Err(bad("an extension line is empty"));
        }
        Ok(CheckpointText { origin: origin.to_owned(), size, root, extensions })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

/// Signs `text` as `name` with the log key.
    fn sign(key: &SigningKey, name: &KeyName, text: &str) -> NoteSignature {
        let vk = VerifierKey::ed25519(name.clone(), key.public_key());
        NoteSignature {
            name: name.0.clone(),
            key_id: vk.id(),
            body: key.sign(text.as_bytes()).as_bytes().to_vec(),
        }
    }

    fn name(s: &str) -> KeyName {
        KeyName::new(s).unwrap()
    }

    #[test]
    fn key_names_refuse_spaces_plus_and_empty() {
        for bad in ["", "a b", "a+b", "a\tb", "a\u{2003}b"] {
            assert!(KeyName::new(bad).is_err(), "{bad:?}");
        }
        assert!(KeyName::new("example.com/log").is_ok());
    }

    #[test]
    fn verifier_key_round_trips_and_refuses_a_wrong_hash() {
        let key = SigningKey::generate().unwrap();
        let vk = VerifierKey::ed25519(name("airlock"), key.public_key());
        let text = vk.to_string();
        assert_eq!(VerifierKey::parse(&text).unwrap(), vk);
        let mut parts: Vec<&str> = text.split('+').collect();
        parts[1] = "00000000";
        assert!(VerifierKey::parse(&parts.join("+")).is_err());
    }

    #[test]
    fn signed_note_round_trips_and_detects_an_edit() {
        let key = SigningKey::generate().unwrap();
        let vk = VerifierKey::ed25519(name("airlock"), key.public_key());
        let text = CheckpointText {
            origin: "airlock".into(),
            size: 7,
            root: Sha256Digest::of(b"root"),
            extensions: vec!["airlock-chain x y".into()],
        }
        .render();
        let note = Note { signatures: vec![sign(&key, &vk.name, &text)], text };
        let parsed = Note::parse(&note.to_string()).unwrap();
        assert_eq!(parsed, note);
        assert_eq!(parsed.verify(&vk), Some(true));
        let cp = CheckpointText::parse(&parsed.text).unwrap();
        assert_eq!(cp.size, 7);
        let edited = Note::parse(&note.to_string().replace("\n7\n", "\n8\n")).unwrap();
        assert_eq!(edited.verify(&vk), Some(false));
        let other = VerifierKey::ed25519(name("other"), key.public_key());
        assert_eq!(parsed.verify(&other), None);
    }

    #[test]
    fn cosignature_verifies_with_its_timestamp() {
        let key = SigningKey::generate().unwrap();
        let vk = VerifierKey::cosigner(name("w.example/1"), key.public_key());
        let text = "o\n1\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n".to_owned();
        let note = Note { signatures: vec![cosign(&key, &vk.name, &text, 1_700_000_000)], text };
        let parsed = Note::parse(&note.to_string()).unwrap();
        assert_eq!(parsed.cosigned_by(&vk), Some(Ok(1_700_000_000)));
    }

    #[test]
    fn malformed_notes_are_refused() {
        for bad in ["no newline", "text\n", "text\n\n", "text\n\n\u{2014} a !!!\n", "t\r\n\n\u{2014} a AAAAAAA=\n"] {
            assert!(Note::parse(bad).is_err(), "{bad:?}");
        }
        for bad in ["o\n01\nAAAA\n", "o\n1\n", "\n1\nAAAA\n", "o\n1\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n\n"] {
            assert!(CheckpointText::parse(bad).is_err(), "{bad:?}");
        }
    }
}
