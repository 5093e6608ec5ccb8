//! Owns: static bearer tokens from `[[identity.tokens]]`, kept only as SHA-256 digests.
//! Uses: `ring::digest`, `identity::principal`.
//! Must not: keep a presented token after hashing it, or branch on which entry matched
//! while scanning.

use ring::digest::{SHA256, digest};

use super::principal::{Holder, Person, Principal};

/// One configured token, reduced to what authentication needs.
#[derive(Debug)]
pub(crate) struct StoredToken {
    pub(crate) digest: [u8; 32],
    pub(crate) principal: Principal,
    pub(crate) groups: Vec<String>,
    pub(crate) holder: Holder,
    pub(crate) person: Option<Person>,
}

/// Why a token entry's `sha256` is unusable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DigestError {
    NotHex,
    WrongLength(usize),
}

/// Parses the hex SHA-256 of a token (64 hex digits, either case).
pub(crate) fn parse_digest(hex_digest: &str) -> Result<[u8; 32], DigestError> {
    let bytes = hex::decode(hex_digest.trim()).map_err(|_| DigestError::NotHex)?;
    <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| DigestError::WrongLength(bytes.len()))
}

/// The configured static tokens.
#[derive(Debug, Default)]
pub(crate) struct StaticTokens {
    entries: Vec<StoredToken>,
}

impl StaticTokens {
    pub(crate) fn new(entries: Vec<StoredToken>) -> Self {
        Self { entries }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Finds the entry whose digest equals SHA-256(`presented`).
    pub(crate) fn find(&self, presented: &str) -> Option<&StoredToken> {
        let probe = sha256(presented.as_bytes());
        let index = scan(self.entries.iter().map(|e| &e.digest), &probe, ct_eq)?;
        self.entries.get(index)
    }
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest(&SHA256, bytes).as_ref());
    out
}

/// Compares `probe` with every digest, always all of them, and selects the match with
/// masks rather than a branch, so neither the time taken nor the branch history says which
/// entry (if any) matched. Only "found or not" is decided at the end.
fn scan<'a>(
    digests: impl Iterator<Item = &'a [u8; 32]>,
    probe: &[u8; 32],
    eq: impl Fn(&[u8; 32], &[u8; 32]) -> u8,
) -> Option<usize> {
    let mut found: u8 = 0;
    let mut index: usize = 0;
    for (i, d) in digests.enumerate() {
        let hit = eq(d, probe);
        // All ones if hit == 1, zero otherwise.
        let mask = 0usize.wrapping_sub(usize::from(hit));
        index = (i & mask) | (index & !mask);
        found |= hit;
    }
    (std::hint::black_box(found) == 1).then_some(index)
}

/// 1 if `a == b`, 0 otherwise, without an early exit: every byte is XOR-folded.
fn ct_eq(a: &[u8; 32], b: &[u8; 32]) -> u8 {
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    let diff = std::hint::black_box(diff);
    // diff == 0 → 0u16 - 1 = 0xFFFF → top byte 0xFF → 1; any other diff → top byte 0 → 0.
    (u16::from(diff).wrapping_sub(1) >> 8) as u8 & 1
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    fn entry(token: &str, name: &str) -> StoredToken {
        StoredToken {
            digest: sha256(token.as_bytes()),
            principal: Principal::new(name).unwrap(),
            groups: vec!["sre".into()],
            holder: Holder::Unverified,
            person: None,
        }
    }

    #[test]
    fn right_token_is_found_and_wrong_token_is_not() {
        let tokens = StaticTokens::new(vec![entry("tok-a", "alice"), entry("tok-b", "bob")]);
        assert_eq!(tokens.find("tok-b").unwrap().principal.as_str(), "bob");
        assert_eq!(tokens.find("tok-a").unwrap().principal.as_str(), "alice");
        assert!(tokens.find("tok-c").is_none());
        assert!(tokens.find("").is_none());
        assert!(tokens.find("tok-a ").is_none());
    }

    #[test]
    fn digest_parsing_accepts_64_hex_digits_only() {
        let hex_digest = hex::encode(sha256(b"x"));
        assert_eq!(parse_digest(&hex_digest).unwrap(), sha256(b"x"));
        assert_eq!(
            parse_digest(&hex_digest.to_uppercase()).unwrap(),
            sha256(b"x")
        );
        assert_eq!(parse_digest("abcd"), Err(DigestError::WrongLength(2)));
        assert_eq!(parse_digest("zz"), Err(DigestError::NotHex));
    }

    #[test]
    fn scan_compares_every_entry_even_after_a_match() {
        let digests: Vec<[u8; 32]> = (0u8..5).map(|i| [i; 32]).collect();
        for target in 0u8..5 {
            let calls = Cell::new(0);
            let counting = |a: &[u8; 32], b: &[u8; 32]| {
                calls.set(calls.get() + 1);
                ct_eq(a, b)
            };
            let got = scan(digests.iter(), &[target; 32], counting);
            assert_eq!(got, Some(usize::from(target)));
            assert_eq!(
                calls.get(),
                5,
                "target {target} must not stop the scan early"
            );
        }
        let calls = Cell::new(0);
        let counting = |a: &[u8; 32], b: &[u8; 32]| {
            calls.set(calls.get() + 1);
            ct_eq(a, b)
        };
        assert_eq!(scan(digests.iter(), &[9; 32], counting), None);
        assert_eq!(calls.get(), 5);
    }

    #[test]
    fn ct_eq_notices_a_single_flipped_bit_anywhere() {
        let base = sha256(b"airlock");
        assert_eq!(ct_eq(&base, &base), 1);
        for byte in 0..32 {
            for bit in 0..8 {
                let mut other = base;
                other[byte] ^= 1 << bit;
                assert_eq!(ct_eq(&base, &other), 0, "byte {byte} bit {bit}");
            }
        }
    }
}
