//! Newline-delimited JSON-RPC on stdin, as `airlock serve` reads it: raw bytes into the
//! gateway's own `LineTransport::receive`, until end of input.
#![no_main]

use airlock::gateway::stdio::LineTransport;
use libfuzzer_sys::fuzz_target;
use rmcp::RoleServer;
use rmcp::transport::Transport;

fuzz_target!(|data: &[u8]| {
    airlock_fuzz::runtime().block_on(async {
        let mut transport = LineTransport::new(std::io::Cursor::new(data.to_vec()), tokio::io::sink(), airlock::config::MIN_MESSAGE_SIZE);
        // The smallest limit, so that long lines take the oversized path too.
        while Transport::<RoleServer>::receive(&mut transport).await.is_some() {}
    });
});
