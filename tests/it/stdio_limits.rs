//! The stdio transport's message size limit: an oversized line is refused with -32600 in
//! bounded memory, and the session keeps serving.

use tokio::io::AsyncWriteExt;

use crate::util::{ALLOW_ALL, RawStdio, Setup, next_json};

/// Peak resident set of a process (`VmHWM`), in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc status");
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).expect("VmHWM line");
    let kib: u64 = line.split_whitespace().nth(1).expect("value").parse().expect("number");
    kib * 1024
}


#[tokio::test]
async fn an_oversized_stdio_line_is_refused_in_bounded_memory_and_the_session_keeps_serving() {
    const LIMIT: usize = 1024 * 1024;
    const LINE: usize = 256 * 1024 * 1024;
    let setup = Setup::new(&format!("[gateway]\ndata_dir = \"data\"\nmax_message_size = {LIMIT}\n"));
    setup.demo("demo");
    setup.policy("allow-all", ALLOW_ALL);
    let mut gateway = RawStdio::spawn(&setup);
    let pid = gateway.child.id().expect("pid");
    gateway.initialize().await;
    let RawStdio { mut child, mut stdin, mut lines } = gateway;
    let before = peak_rss(pid);

    // A 256 MiB message without a newline, written while the gateway answers: the refusal
    // comes as soon as the limit is passed, before the line ends.
    let writer = tokio::spawn(async move {
        let chunk = vec![b'x'; 1024 * 1024];
        stdin.write_all(b"{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"tools/list\",\"params\":{\"pad\":\"").await.expect("write");
        for _ in 0..LINE / chunk.len() {
            stdin.write_all(&chunk).await.expect("write");
        }
        stdin.write_all(b"\"}}\n").await.expect("write");
        stdin.write_all(b"{\"jsonrpc\":\"2.0\",\"id\":3,\"method\":\"tools/list\"}\n").await.expect("write");
        stdin
    });
    let refused = next_json(&mut lines).await;
    assert_eq!(refused["error"]["code"], -32600, "{refused}");
    assert!(refused["id"].is_null(), "{refused}");
    assert!(refused["error"]["message"].as_str().unwrap_or("").contains(&LIMIT.to_string()), "{refused}");
    let listed = next_json(&mut lines).await;
    assert_eq!(listed["id"], 3, "the next request is answered: {listed}");
    assert!(listed["result"]["tools"].as_array().is_some_and(|t| !t.is_empty()), "{listed}");
    let _stdin = writer.await.expect("writer");

    // A memory bound, not a timing one: the gateway never held the line.
    let peak = peak_rss(pid);
    let grown = peak.saturating_sub(before);
    assert!(grown < (LINE as u64) / 8, "peak RSS grew by {} MiB reading a {} MiB line", grown >> 20, LINE >> 20);
    child.kill().await.expect("kill");
}

#[test]
fn check_refuses_a_bad_max_message_size_with_its_line() {
    let setup = Setup::new("[gateway]\ndata_dir = \"data\"\nmax_message_size = 12\n");
    let out = std::process::Command::new(crate::util::airlock())
        .args(["check", "--config"])
        .arg(setup.config())
        .output()
        .expect("run check");
    assert!(!out.status.success());
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(said.contains("airlock.toml:3") && said.contains("gateway.max_message_size"), "{said}");
}
