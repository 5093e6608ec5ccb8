//! The audit journal's replay on open (`audit::journal::replay`, run by every open of the
//! log: the writer's and `airlock log verify`'s): a journal file's bytes in, the groups
//! applied to the database out. A journal that is not one is refused, never a panic.
//!
//! Input: first byte even: the next byte is how many checkpoints the database held, the
//! rest is the file. Odd: the rest drives `arbitrary` to build a journal as the layout in
//! `src/audit/journal.rs` describes it (header, numbered groups of key/value pairs), then
//! optionally a gap in the numbering, a flipped byte or a cut; an intact journal must
//! replay exactly the groups the database lacks, a damaged one at most those.
#![no_main]

use airlock::audit::Sha256Digest;
use arbitrary::{Arbitrary, Result, Unstructured};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
struct Journal {
    base: u8,
    stored: u8,
    groups: Vec<Vec<(Vec<u8>, Vec<u8>)>>,
    /// A group numbered past the next one, appended after the others (a stale entry).
    gap: Option<(u8, Vec<(Vec<u8>, Vec<u8>)>)>,
    /// A byte XORed at this offset (taken modulo the length).
    flip: Option<(u32, u8)>,
    /// The file cut to this length (taken modulo the length).
    cut: Option<u32>,
}

fn header(base: u64) -> Vec<u8> {
    let mut header = vec![0u8; 64];
    header[..16].copy_from_slice(b"airlock-journal1");
    header[16..24].copy_from_slice(&base.to_be_bytes());
    let sum = Sha256Digest::of(&header[..24]);
    header[24..56].copy_from_slice(sum.as_bytes());
    header
}

fn entry(out: &mut Vec<u8>, count: u64, pairs: &[(Vec<u8>, Vec<u8>)]) {
    let mut payload = Vec::new();
    for (k, v) in pairs {
        let k = &k[..k.len().min(u16::MAX as usize)];
        payload.extend_from_slice(&(k.len() as u16).to_be_bytes());
        payload.extend_from_slice(k);
        payload.extend_from_slice(&(v.len() as u32).to_be_bytes());
        payload.extend_from_slice(v);
    }
    out.extend_from_slice(b"AJE1");
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(&count.to_be_bytes());
    out.extend_from_slice(Sha256Digest::of_parts(&[&count.to_be_bytes()[..], &payload[..]]).as_bytes());
    out.extend_from_slice(&payload);
}

fn structured(u: &mut Unstructured<'_>) -> Result<()> {
    let j = Journal::arbitrary(u)?;
    let (base, stored) = (u64::from(j.base), u64::from(j.stored));
    let mut file = header(base);
    let n = j.groups.len() as u64;
    for (i, pairs) in j.groups.iter().enumerate() {
        entry(&mut file, base + 1 + i as u64, pairs);
    }
    if let Some((skip, pairs)) = &j.gap {
        entry(&mut file, base + n + 2 + u64::from(*skip), pairs);
    }
    // The writer zero-fills the file ahead of its entries.
    file.resize(file.len() + 100, 0);
    let mut damaged = false;
    if let Some((at, xor)) = j.flip {
        let at = at as usize % file.len();
        file[at] ^= xor;
        damaged = xor != 0;
    }
    if let Some(cut) = j.cut {
        file.truncate(cut as usize % file.len());
        damaged = true;
    }
    // Groups base+1..=base+n; the database lacks those past `stored`, and can take them
    // only if it is not behind the journal's base.
    let expected = if stored >= base { (base + n).saturating_sub(stored) as usize } else { 0 };
    match airlock::fuzzing::journal_replay(&file, stored) {
        Ok((applied, clean)) if !damaged => {
            assert_eq!(applied, expected, "an intact journal replays exactly what the database lacks");
            assert_eq!(clean, n == 0 && base == stored);
        }
        Ok((applied, _)) => assert!(applied <= expected, "{applied} groups from a damaged journal, at most {expected}"),
        Err(error) => assert!(damaged, "an intact journal refused: {error}"),
    }
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    if mode % 2 == 0 {
        let Some((&stored, file)) = rest.split_first() else { return };
        let _ = airlock::fuzzing::journal_replay(file, u64::from(stored));
    } else {
        let _ = structured(&mut Unstructured::new(rest));
    }
});
