//! The Ed25519 signing key of the log: creation, loading, public keys and key ids.
//!
//! Owns: the key file format (PKCS#8 DER, mode 0600), `PublicKey`, `KeyId`, `Signature`.
//! Uses: ed25519-dalek to sign (13 µs a signature against ring's 20 µs, measured here;
//! a signature is on every call's path) and for batch verification, which ring lacks and
//! which halves what a log's signatures cost `verify`; ring to generate keys and for the
//! one-at-a-time check that is verification's final word. Ed25519 signatures are
//! deterministic: both libraries make the same bytes from one key and message.
//! Must not: expose private key bytes beyond writing the key file.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::pkcs8::DecodePrivateKey;
use ring::signature::{ED25519, Ed25519KeyPair, UnparsedPublicKey};

use super::AuditError;
use super::digest::Sha256Digest;

/// An Ed25519 public key (32 bytes). Text form: standard base64.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKey([u8; 32]);

/// First 8 bytes of SHA-256 of the public key, as 16 hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyId([u8; 8]);

/// An Ed25519 signature (64 bytes). Text form: standard base64.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Signature([u8; 64]);

impl PublicKey {
    /// Wraps raw key bytes.
    pub const fn from_bytes(bytes: [u8; 32]) -> PublicKey {
        PublicKey(bytes)
    }

    /// The raw bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// This key's id.
    pub fn id(&self) -> KeyId {
        let d = Sha256Digest::of(&self.0);
        let mut id = [0u8; 8];
        id.copy_from_slice(&d.as_bytes()[..8]);
        KeyId(id)
    }

    /// Base64 text form.
    pub fn to_base64(&self) -> String {
        B64.encode(self.0)
    }

    /// Parses base64 (44 characters) or hex (64 digits).
    pub fn parse(text: &str) -> Option<PublicKey> {
        let text = text.trim();
        let mut out = [0u8; 32];
        if text.len() == 64 && hex::decode_to_slice(text, &mut out).is_ok() {
            return Some(PublicKey(out));
        }
        let bytes = B64.decode(text).ok()?;
        <[u8; 32]>::try_from(bytes.as_slice()).ok().map(PublicKey)
    }

    /// Reads a public key file: just the key (base64 or hex), a note verifier key
    /// (`name+hash+base64`), or the output of `airlock keys show` (a line
    /// `public key  <base64>`).
    pub fn read_file(path: &Path) -> Result<PublicKey, AuditError> {
        let text = fs::read_to_string(path).map_err(|e| AuditError::io(path, e))?;
        let bad = || AuditError::BadPublicKey(path.to_path_buf());
        for line in text.lines() {
            let line = line.trim();
            if let Some(rest) = line.strip_prefix("public key") {
                return PublicKey::parse(rest).ok_or_else(bad);
            }
        }
        if let Ok(vk) = super::note::VerifierKey::parse(&text) {
            return Ok(vk.key);
        }
        PublicKey::parse(&text).ok_or_else(bad)
    }

    /// Does `sig` sign `msg` under this key?
    pub fn verify(&self, msg: &[u8], sig: &Signature) -> bool {
        UnparsedPublicKey::new(&ED25519, &self.0)
            .verify(msg, &sig.0)
            .is_ok()
    }
}

/// Whether every `(key, message, signature)` verifies, checked as one batch: about half
/// the cost of one check each. A batch that fails says only that one of them is bad; the
/// caller checks them one by one (`PublicKey::verify`) to find which. The batch equation
/// is the cofactored one, so a signature its key's holder crafted with a small-order part
/// could pass here and fail one check alone; without the private key none can be made.
pub(crate) fn verify_batch(items: &[(PublicKey, &[u8], Signature)]) -> bool {
    // A log's checkpoints share a key or a few (rotations): each is decompressed once, not
    // once a signature (a square root, a fifth of a signature's check).
    let mut keys: Vec<ed25519_dalek::VerifyingKey> = Vec::with_capacity(items.len());
    let mut last: Option<(PublicKey, ed25519_dalek::VerifyingKey)> = None;
    for (key, _, _) in items {
        let point = match last {
            Some((known, point)) if known == *key => point,
            _ => match ed25519_dalek::VerifyingKey::from_bytes(&key.0) {
                Ok(point) => point,
                Err(_) => return false,
            },
        };
        last = Some((*key, point));
        keys.push(point);
    }
    let messages: Vec<&[u8]> = items.iter().map(|(_, m, _)| *m).collect();
    let signatures: Vec<ed25519_dalek::Signature> =
        items.iter().map(|(_, _, s)| ed25519_dalek::Signature::from_bytes(&s.0)).collect();
    ed25519_dalek::verify_batch(&messages, &signatures, &keys).is_ok()
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_base64())
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.id())
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

impl Signature {
    /// Wraps raw signature bytes.
    pub const fn from_bytes(bytes: [u8; 64]) -> Signature {
        Signature(bytes)
    }

    /// Base64 text form.
    pub fn to_base64(&self) -> String {
        B64.encode(self.0)
    }

    /// Parses the base64 text form.
    pub fn parse(text: &str) -> Option<Signature> {
        let bytes = B64.decode(text.trim()).ok()?;
        <[u8; 64]>::try_from(bytes.as_slice()).ok().map(Signature)
    }

    /// The raw bytes.
    pub const fn as_bytes(&self) -> &[u8; 64] {
        &self.0
    }
}

impl fmt::Display for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_base64())
    }
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({})", self.to_base64())
    }
}

/// The private signing key.
pub struct SigningKey {
    signer: ed25519_dalek::SigningKey,
    pkcs8: Vec<u8>,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningKey({})", self.public_key().id())
    }
}

impl SigningKey {
    /// A fresh random key.
    pub fn generate() -> Result<SigningKey, AuditError> {
        let rng = ring::rand::SystemRandom::new();
        let doc = Ed25519KeyPair::generate_pkcs8(&rng).map_err(|_| AuditError::KeyGeneration)?;
        SigningKey::from_pkcs8(doc.as_ref()).ok_or(AuditError::KeyGeneration)
    }

    /// Loads PKCS#8 DER bytes (v1, or v2 whose public key must match the private one).
    pub fn from_pkcs8(bytes: &[u8]) -> Option<SigningKey> {
        let signer = ed25519_dalek::SigningKey::from_pkcs8_der(bytes).ok()?;
        Some(SigningKey {
            signer,
            pkcs8: bytes.to_vec(),
        })
    }

    /// The public half.
    pub fn public_key(&self) -> PublicKey {
        PublicKey(self.signer.verifying_key().to_bytes())
    }

    /// Signs `msg`.
    pub fn sign(&self, msg: &[u8]) -> Signature {
        use ed25519_dalek::Signer;
        Signature(self.signer.sign(msg).to_bytes())
    }

    /// Reads a key file written by `write_new`.
    pub fn load(path: &Path) -> Result<SigningKey, AuditError> {
        let bytes = fs::read(path).map_err(|e| AuditError::io(path, e))?;
        if let Ok(meta) = fs::metadata(path)
            && meta.permissions().mode() & 0o077 != 0
        {
            tracing::warn!(path = %path.display(), "audit key file is readable by others; chmod 600 it");
        }
        SigningKey::from_pkcs8(&bytes).ok_or_else(|| AuditError::BadKeyFile(path.to_path_buf()))
    }

    /// Loads the key at `path`, or creates one there (mode 0600) if there is none.
    pub fn load_or_create(path: &Path) -> Result<SigningKey, AuditError> {
        let mut created = NewFiles::default();
        let key = SigningKey::load_or_create_in(path, &mut created)?;
        created.sync()?;
        Ok(key)
    }

    /// As `load_or_create`, but a new key file is durable only once `created` is synced.
    pub(crate) fn load_or_create_in(path: &Path, created: &mut NewFiles) -> Result<SigningKey, AuditError> {
        if path.exists() {
            return SigningKey::load(path);
        }
        let key = SigningKey::generate()?;
        created.add(path, write_secret(path, &key.pkcs8)?);
        tracing::info!(path = %path.display(), key_id = %key.public_key().id(), "created audit signing key");
        Ok(key)
    }

    /// Writes the key to a file that must not exist yet, mode 0600, and makes it durable.
    pub fn write_new(&self, path: &Path) -> Result<(), AuditError> {
        let mut created = NewFiles::default();
        created.add(path, write_secret(path, &self.pkcs8)?);
        created.sync()
    }
}

/// Writes `bytes` to a new file at `path` (it must not exist yet), mode 0600; not synced.
pub(crate) fn write_secret(path: &Path, bytes: &[u8]) -> Result<File, AuditError> {
    let io = |e| AuditError::io(path, e);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io)?;
    file.write_all(bytes).map_err(io)?;
    Ok(file)
}

/// Files created while a log opens (keys, journal, `checkpoints.log`), made durable
/// together before anything depends on them. Why together: on ext4 a new file's fsync
/// commits the file system's journal, and that commit carries every file created before
/// it, so the first fsync of the set costs a commit (1–4 ms here) and the others only a
/// cache flush; synced one by one, as each was made, a fresh data dir paid five commits
/// before its first answer.
#[derive(Default)]
pub(crate) struct NewFiles {
    files: Vec<(std::path::PathBuf, File)>,
}

impl NewFiles {
    pub(crate) fn add(&mut self, path: &Path, file: File) {
        self.files.push((path.to_path_buf(), file));
    }

    /// fsyncs every file, then each directory holding one, once.
    pub(crate) fn sync(self) -> Result<(), AuditError> {
        let mut dirs: Vec<&Path> = Vec::new();
        for (path, file) in &self.files {
            file.sync_all().map_err(|e| AuditError::io(path, e))?;
            let dir = parent_of(path);
            if !dirs.contains(&dir) {
                dirs.push(dir);
            }
        }
        for dir in dirs {
            File::open(dir).and_then(|d| d.sync_all()).map_err(|e| AuditError::io(dir, e))?;
        }
        Ok(())
    }
}

fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// fsyncs the directory holding `path`, so a new or renamed entry survives a crash.
pub(crate) fn sync_parent(path: &Path) -> Result<(), AuditError> {
    let parent = parent_of(path);
    File::open(parent)
        .and_then(|d| d.sync_all())
        .map_err(|e| AuditError::io(parent, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_verifies_under_its_key_only() {
        let a = SigningKey::generate().unwrap();
        let b = SigningKey::generate().unwrap();
        let sig = a.sign(b"message");
        assert!(a.public_key().verify(b"message", &sig));
        assert!(!a.public_key().verify(b"other", &sig));
        assert!(!b.public_key().verify(b"message", &sig));
    }

    /// RFC 8410 §10.3: a version 1 PKCS#8 Ed25519 key and the public key it names.
    #[test]
    fn a_version_1_key_loads_and_a_version_2_key_with_another_public_key_does_not() {
        let v1 = B64.decode("MC4CAQAwBQYDK2VwBCIEINTuctv5E1hK1bbY8fdp+K06/nwoy/HU++CXqI9EdVhC").unwrap();
        let key = SigningKey::from_pkcs8(&v1).unwrap();
        assert_eq!(hex::encode(key.public_key().as_bytes()), "19bf44096984cdfe8541bac167dc3b96c85086aa30b6b6cb0c5c38ad703166e1");
        let rng = ring::rand::SystemRandom::new();
        let mut v2 = Ed25519KeyPair::generate_pkcs8(&rng).unwrap().as_ref().to_vec();
        assert!(SigningKey::from_pkcs8(&v2).is_some());
        let last = v2.len() - 1;
        v2[last] ^= 1;
        assert!(SigningKey::from_pkcs8(&v2).is_none(), "a public key that is not the private key's");
    }

    /// The same key signs the same bytes in ring (which made the keys of older logs).
    #[test]
    fn signatures_are_those_ring_makes_with_the_key() {
        use ring::signature::KeyPair;
        let rng = ring::rand::SystemRandom::new();
        let doc = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        let ring_pair = Ed25519KeyPair::from_pkcs8(doc.as_ref()).unwrap();
        let key = SigningKey::from_pkcs8(doc.as_ref()).unwrap();
        assert_eq!(key.public_key().as_bytes().as_slice(), ring_pair.public_key().as_ref());
        for msg in [&b""[..], b"checkpoint", &[7u8; 300]] {
            assert_eq!(key.sign(msg).as_bytes().as_slice(), ring_pair.sign(msg).as_ref());
        }
    }

    #[test]
    fn key_file_is_private_and_loads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        let key = SigningKey::load_or_create(&path).unwrap();
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(
            SigningKey::load(&path).unwrap().public_key(),
            key.public_key()
        );
    }

    #[test]
    fn public_key_parses_from_base64_and_hex() {
        let pk = SigningKey::generate().unwrap().public_key();
        assert_eq!(PublicKey::parse(&pk.to_base64()), Some(pk));
        assert_eq!(PublicKey::parse(&hex::encode(pk.as_bytes())), Some(pk));
        assert_eq!(PublicKey::parse("nope"), None);
    }
}
