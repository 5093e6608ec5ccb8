//! A legacy HTTP+SSE downstream's event stream, as `downstream::sse_client` reads it. The
//! first byte sets the chunk size the rest arrives in (so events split across chunks,
//! and UTF-8 split across chunks, are exercised); each chunk is appended lossily as
//! `read_events` does, every complete event is taken off by the client's `take_event`,
//! and `message` events are parsed as JSON-RPC.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rmcp::RoleClient;
use rmcp::service::RxJsonRpcMessage;

fuzz_target!(|data: &[u8]| {
    let Some((&size, stream)) = data.split_first() else { return };
    let mut buffer = String::new();
    for chunk in stream.chunks(usize::from(size.max(1))) {
        buffer.push_str(&String::from_utf8_lossy(chunk));
        for (kind, data) in airlock::fuzzing::sse_take_events(&mut buffer) {
            assert!(!kind.contains('\n'), "an event name spans lines");
            if kind == "message" || kind.is_empty() {
                let _ = serde_json::from_str::<RxJsonRpcMessage<RoleClient>>(&data);
            }
        }
    }
});
