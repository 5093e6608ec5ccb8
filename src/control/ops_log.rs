//! The `log_*` requests: the running gateway's log read through its own reader
//! (`AuditLog::reader`: the database is never opened a second time), with the same
//! `LogReader` functions the offline `airlock log` commands call.
//!
//! Record and export lines travel as JSON strings, byte for byte as stored, so an export
//! made over the socket verifies like one made from the files.
//!
//! Following (`log_tail` and `log_export` with `follow`) waits on the writer's durable-size
//! watch (`AuditLog::durable`), until the client leaves or the gateway stops.

use std::sync::Arc;

use serde_json::{Value, json};

use super::ops::OpContext;
use super::server::ReplyWriter;
use super::{Refusal, RefusalCode};
use crate::audit::{AuditError, LogPaths, LogReader, PublicKey, Seq, Trust};
use crate::feed::follow::ExportCursor;
use crate::gateway::Gateway;

fn failed(what: &str) -> impl FnOnce(AuditError) -> Refusal + '_ {
    move |error| match error {
        AuditError::NotFound(seq) => Refusal::new(RefusalCode::Failed, format!("no record {seq} in the log")),
        error => Refusal::new(RefusalCode::Failed, format!("{what}: {error}")),
    }
}

fn reader(gateway: &Gateway) -> Result<LogReader, Refusal> {
    gateway.audit().reader().map_err(failed("the audit log is closed"))
}

fn text(bytes: &[u8]) -> Value {
    Value::String(String::from_utf8_lossy(bytes).into_owned())
}

pub(super) fn show(gateway: &Gateway, seq: u64) -> Result<Value, Refusal> {
    let bytes = reader(gateway)?.get(Seq::new(seq)).map_err(failed("reading the log"))?;
    Ok(text(&bytes))
}

pub(super) fn checkpoint(gateway: &Gateway) -> Result<Value, Refusal> {
    let cp = reader(gateway)?.latest_checkpoint().map_err(failed("reading the checkpoints"))?;
    Ok(json!({"size": cp.size, "note": cp.to_note().map(|note| note.to_string())}))
}

/// Streams records `from..` as items; returns the next sequence number to send, or `None`
/// when the client left.
async fn send_records(reader: &LogReader, out: &mut ReplyWriter, from: u64, upto: u64) -> Result<Option<u64>, Refusal> {
    let mut next = from;
    for item in reader.records_from(Seq::new(from)) {
        let (seq, bytes) = item.map_err(failed("reading the log"))?;
        if seq.get() > upto {
            break;
        }
        if out.item(text(&bytes)).await.is_err() {
            return Ok(None);
        }
        next = seq.get() + 1;
    }
    Ok(Some(next))
}

/// Waits until more than `seen` records are durable; `None` when the gateway stops.
/// The writer's durable-size watch (`AuditLog::durable`, the one `feed::Follower` and the
/// sink wait on) moves only once a group is acknowledged and in the database.
async fn grown(ctx: &OpContext<'_>, seen: u64) -> Result<Option<u64>, Refusal> {
    let mut durable = ctx.control.gateway.audit().durable();
    tokio::select! {
        () = ctx.control.shutdown.cancelled() => Ok(None),
        now = durable.wait_for(|&n| n > seen) => Ok(now.ok().map(|n| *n)),
    }
}

pub(super) async fn tail(ctx: &OpContext<'_>, out: &mut ReplyWriter, lines: u64, follow: bool) -> Result<Value, Refusal> {
    let reader = reader(&ctx.control.gateway)?;
    let mut last = reader.last_seq().map_err(failed("reading the log"))?.get();
    let mut next = last.saturating_sub(lines) + 1;
    loop {
        match send_records(&reader, out, next, last).await? {
            Some(n) => next = n,
            None => return Ok(json!({"next": next})),
        }
        if !follow {
            return Ok(json!({"next": next}));
        }
        match grown(ctx, next - 1).await? {
            Some(now) => last = now,
            None => return Ok(json!({"next": next, "stopped": true})),
        }
    }
}

pub(super) async fn export(ctx: &OpContext<'_>, out: &mut ReplyWriter, since: Option<u64>, follow: bool) -> Result<Value, Refusal> {
    let since = Seq::new(since.unwrap_or(1).max(1));
    // The lines are `feed::follow::ExportCursor`'s, as in the offline `--follow`; the first
    // batch walks the whole log, so off the async threads.
    let blocking = reader(&ctx.control.gateway)?;
    let (mut cursor, bytes) = tokio::task::spawn_blocking(move || ExportCursor::start(&blocking, since))
        .await
        .map_err(|e| Refusal::new(RefusalCode::Failed, format!("the export stopped: {e}")))?
        .map_err(failed("exporting the log"))?;
    if !send_lines(out, &bytes).await {
        return Ok(json!({"next": cursor.next().get()}));
    }
    if !follow {
        return Ok(json!({"next": cursor.next().get()}));
    }
    let reader = reader(&ctx.control.gateway)?;
    loop {
        let Some(durable) = grown(ctx, cursor.next().get() - 1).await? else {
            return Ok(json!({"next": cursor.next().get(), "stopped": true}));
        };
        let bytes = cursor.more(&reader, durable).map_err(failed("reading the log"))?;
        if !send_lines(out, &bytes).await {
            return Ok(json!({"next": cursor.next().get()}));
        }
    }
}

/// Sends each line of `bytes` as an item; false when the client left.
async fn send_lines(out: &mut ReplyWriter, bytes: &[u8]) -> bool {
    for line in bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        if out.item(text(line)).await.is_err() {
            return false;
        }
    }
    true
}

/// The key a live verification trusts: `pubkey` (base64 or hex), else the gateway's own.
fn anchor(gateway: &Gateway, pubkey: Option<&str>) -> Result<PublicKey, Refusal> {
    match pubkey {
        Some(text) => PublicKey::parse(text.trim())
            .ok_or_else(|| Refusal::new(RefusalCode::BadRequest, "the trusted key is not a public key (base64 or hex)")),
        None => Ok(gateway.audit().public_key()),
    }
}

pub(super) async fn verify(ctx: &OpContext<'_>, pubkey: Option<&str>) -> Result<Value, Refusal> {
    let gateway = &ctx.control.gateway;
    let anchor = anchor(gateway, pubkey)?;
    let reader = reader(gateway)?;
    let paths = LogPaths::new(&ctx.control.settings.data_dir, None);
    let outcome = tokio::task::spawn_blocking(move || crate::audit::verify_live(&reader, &paths, Trust { anchor }))
        .await
        .map_err(|e| Refusal::new(RefusalCode::Failed, format!("the verification stopped: {e}")))?
        .map_err(failed("the audit log is unreadable"))?;
    Ok(match outcome {
        Ok(report) => json!({"intact": true, "summary": report.summary(), "warnings": report.warnings, "last": report.last.get()}),
        Err(failure) => json!({"intact": false, "failure": failure.to_string()}),
    })
}

pub(super) async fn prove(gateway: &Arc<Gateway>, seq: Option<u64>, consistency: Option<u64>, to: Option<u64>) -> Result<Value, Refusal> {
    let reader = reader(gateway)?;
    tokio::task::spawn_blocking(move || match (consistency, seq) {
        (Some(old), _) => reader.consistency(old, to).map(|p| p.to_value()),
        (None, Some(seq)) => reader.prove(Seq::new(seq)).map(|p| p.to_value()),
        (None, None) => Err(AuditError::Corrupt("give SEQ or --consistency OLD_SIZE".into())),
    })
    .await
    .map_err(|e| Refusal::new(RefusalCode::Failed, format!("the proof stopped: {e}")))?
    .map_err(failed("proving"))
}

/// `airlock report` on a running gateway: the live verification and the records read through
/// the gateway's reader, gathered and rendered by `report` exactly as offline.
pub(super) async fn report(ctx: &OpContext<'_>, from: Option<String>, to: Option<String>, json: bool, pubkey: Option<&str>) -> Result<Value, Refusal> {
    let gateway = &ctx.control.gateway;
    let anchor = anchor(gateway, pubkey)?;
    let reader = reader(gateway)?;
    let data_dir = ctx.control.settings.data_dir.clone();
    let paths = LogPaths::new(&data_dir, None);
    let reverify = match pubkey {
        Some(_) => format!("airlock log verify --data-dir {} --pubkey FILE", data_dir.display()),
        None => format!("airlock log verify --data-dir {}", data_dir.display()),
    };
    tokio::task::spawn_blocking(move || {
        use crate::report::{Verification, gather, period_of, records_of, render_html};
        let verification = Verification::of(crate::audit::verify_live(&reader, &paths, Trust { anchor }), reverify);
        let intact = verification.status == "intact";
        let records = records_of(&reader).map_err(failed("reading the log"))?;
        let period = period_of(&records, from, to).map_err(|why| Refusal::new(RefusalCode::BadRequest, why))?;
        let evidence = gather(&records, period, verification, data_dir.display().to_string());
        let document = if json {
            serde_json::to_string_pretty(&evidence).map_err(|e| Refusal::new(RefusalCode::Failed, e.to_string()))?
        } else {
            render_html(&evidence)
        };
        Ok(json!({"intact": intact, "document": document}))
    })
    .await
    .map_err(|e| Refusal::new(RefusalCode::Failed, format!("the report stopped: {e}")))?
}
