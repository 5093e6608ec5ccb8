//! Reaching the running gateway of a data dir from a CLI command, over its control socket.
//!
//! Owns: the rule every operator command follows: ask the data dir's gateway when one
//! runs, else work on the data dir directly (the gateway's sled databases are locked while
//! it runs, so the files are only opened when none does).
//! Uses: `control` (the client side).
//! Must not: fall back to the files on any error but "no gateway runs": a gateway that
//! refuses (not admitted, not an operator, another config) is an answer, not an absence.

use std::path::{Path, PathBuf};

use crate::control::{self, Connection, ControlError, OpLine, Request};

/// An `op` connection to the gateway of `data_dir`, or `None` when none runs there.
pub(crate) async fn connect(data_dir: &Path, config: Option<PathBuf>) -> anyhow::Result<Option<Connection>> {
    match control::connect_op(data_dir, config).await {
        Ok(connection) => Ok(Some(connection)),
        Err(ControlError::NotRunning(_)) => Ok(None),
        Err(error) => Err(anyhow::Error::new(error).context(format!("the gateway of {}", data_dir.display()))),
    }
}

/// A runtime for one command.
pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread().enable_all().build()?)
}

/// Sends `request` and hands every streamed item to `each`; returns the `done` value.
pub(crate) async fn stream(
    connection: &mut Connection,
    request: &Request,
    mut each: impl FnMut(serde_json::Value) -> anyhow::Result<()>,
) -> Result<serde_json::Value, anyhow::Error> {
    let mut answer = connection.request(request).await?;
    loop {
        match answer.next().await? {
            OpLine::Item(item) => each(item)?,
            OpLine::Done(done) => return Ok(done),
        }
    }
}


/// A line the gateway sent as a JSON string (records, export lines).
pub(crate) fn line_of(item: &serde_json::Value) -> anyhow::Result<&str> {
    item.as_str().ok_or_else(|| anyhow::anyhow!("the gateway sent a line that is not a string: {item}"))
}
