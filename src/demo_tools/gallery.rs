//! `content_gallery`: one content block of every MCP type, built from scratch.
//!
//! Owns: a tiny valid PNG (1×1 RGBA, stored-deflate zlib, real CRCs) and a tiny WAV
//! (8 kHz mono 8-bit), the gallery result, and its output schema.
//! Uses: rmcp's content model and base64.
//! Must not: read files; the gallery is deterministic so a proxy can compare it byte for byte.

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use rmcp::model::{
    CallToolResult, ContentBlock, JsonObject, MetaObject, Resource, ResourceContents,
};
use serde_json::{Value, json};

/// URI of the gallery's resource link and embedded resources.
pub(super) const GALLERY_URI: &str = "demo://gallery";

/// The gallery: text, image, audio, resource_link, embedded text, embedded blob, plus
/// `structuredContent` and a `_meta` entry.
pub(super) fn result() -> CallToolResult {
    let png = BASE64.encode(tiny_png());
    let wav = BASE64.encode(tiny_wav());
    let content = vec![
        ContentBlock::text("hello from the content gallery"),
        ContentBlock::image(png, "image/png"),
        ContentBlock::audio(wav, "audio/wav"),
        ContentBlock::resource_link(
            Resource::new("demo://customers", "customers")
                .with_description("The customer list of the demo sandbox")
                .with_mime_type("application/json"),
        ),
        ContentBlock::resource(
            ResourceContents::text("embedded text resource", format!("{GALLERY_URI}/note.txt"))
                .with_mime_type("text/plain"),
        ),
        ContentBlock::resource(
            ResourceContents::blob(
                BASE64.encode(b"\x00\x01\x02binary\xff"),
                format!("{GALLERY_URI}/blob.bin"),
            )
            .with_mime_type("application/octet-stream"),
        ),
    ];
    let mut result = CallToolResult::success(content);
    result.structured_content = Some(structured());
    let mut meta = MetaObject::new();
    meta.insert("demo/gallery".to_string(), json!({"version": 1}));
    result.meta = Some(meta);
    result
}

/// The structured content `result` returns; matches `output_schema`.
pub(super) fn structured() -> Value {
    json!({
        "count": 6,
        "types": ["text", "image", "audio", "resource_link", "resource", "resource"],
    })
}

/// The output schema declared for `content_gallery`.
pub(super) fn output_schema() -> Arc<JsonObject> {
    let schema = json!({
        "type": "object",
        "properties": {
            "count": {"type": "integer"},
            "types": {"type": "array", "items": {"type": "string"}},
        },
        "required": ["count", "types"],
    });
    match schema {
        Value::Object(map) => Arc::new(map),
        _ => Arc::new(JsonObject::new()),
    }
}

/// A 1×1 opaque teal PNG.
pub(super) fn tiny_png() -> Vec<u8> {
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    // width 1, height 1, bit depth 8, colour type 6 (RGBA), deflate, no filter, no interlace
    let ihdr = [0, 0, 0, 1, 0, 0, 0, 1, 8, 6, 0, 0, 0];
    push_chunk(&mut png, b"IHDR", &ihdr);
    // One scanline: filter byte 0, then R G B A.
    let raw = [0u8, 0x00, 0x80, 0x80, 0xff];
    push_chunk(&mut png, b"IDAT", &zlib_stored(&raw));
    push_chunk(&mut png, b"IEND", &[]);
    png
}

fn push_chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    let mut crc_input = kind.to_vec();
    crc_input.extend_from_slice(data);
    out.extend_from_slice(&crc32(&crc_input).to_be_bytes());
}

/// zlib stream with one stored (uncompressed) deflate block; `data` must be < 64 KiB.
fn zlib_stored(data: &[u8]) -> Vec<u8> {
    let len = data.len() as u16;
    let mut out = vec![0x78, 0x01, 0x01];
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&(!len).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&adler32(data).to_be_bytes());
    out
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            let mask = (crc & 1).wrapping_neg();
            crc = (crc >> 1) ^ (0xedb8_8320 & mask);
        }
    }
    !crc
}

fn adler32(data: &[u8]) -> u32 {
    let (mut a, mut b) = (1u32, 0u32);
    for &byte in data {
        a = (a + u32::from(byte)) % 65521;
        b = (b + a) % 65521;
    }
    (b << 16) | a
}

/// 10 ms of a 400 Hz square wave: RIFF/WAVE, PCM, 8 kHz, mono, 8-bit.
pub(super) fn tiny_wav() -> Vec<u8> {
    const RATE: u32 = 8000;
    let samples: Vec<u8> = (0..80)
        .map(|i| if (i / 10) % 2 == 0 { 0xa0 } else { 0x60 })
        .collect();
    let mut wav = Vec::with_capacity(44 + samples.len());
    wav.extend_from_slice(b"RIFF");
    wav.extend_from_slice(&(36 + samples.len() as u32).to_le_bytes());
    wav.extend_from_slice(b"WAVEfmt ");
    wav.extend_from_slice(&16u32.to_le_bytes()); // fmt chunk size
    wav.extend_from_slice(&1u16.to_le_bytes()); // PCM
    wav.extend_from_slice(&1u16.to_le_bytes()); // mono
    wav.extend_from_slice(&RATE.to_le_bytes());
    wav.extend_from_slice(&RATE.to_le_bytes()); // byte rate = rate * 1 channel * 1 byte
    wav.extend_from_slice(&1u16.to_le_bytes()); // block align
    wav.extend_from_slice(&8u16.to_le_bytes()); // bits per sample
    wav.extend_from_slice(b"data");
    wav.extend_from_slice(&(samples.len() as u32).to_le_bytes());
    wav.extend_from_slice(&samples);
    wav
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_matches_the_published_check_value() {
        // The CRC-32 check value for "123456789" (ISO-HDLC, as used by PNG).
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
    }

    #[test]
    fn adler32_matches_the_rfc_1950_example() {
        assert_eq!(adler32(b"Wikipedia"), 0x11e6_0398);
    }

    #[test]
    fn wav_header_sizes_add_up() {
        let wav = tiny_wav();
        let riff = u32::from_le_bytes([wav[4], wav[5], wav[6], wav[7]]) as usize;
        assert_eq!(riff + 8, wav.len());
    }
}
