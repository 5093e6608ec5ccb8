//! Forwarding one `tools/call` downstream and relaying what comes back.

use rmcp::RoleServer;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, ErrorCode, ErrorData,
    ProgressNotificationParam, ProgressToken, ResultType,
};
use rmcp::service::RequestContext;

use super::Session;
use crate::downstream::{CallStep, ElicitReply, ForwardError, PendingCall};

/// The pipeline for one call. Today: resolve and forward.
pub(super) async fn run(
    session: &Session,
    request: CallToolRequestParams,
    context: RequestContext<RoleServer>,
) -> Result<CallToolResponse, ErrorData> {
    let caller = session.caller(&context)?;
    tracing::Span::current().record("principal", caller.principal.as_str());
    let catalog = session.gateway.downstreams.catalog();
    let Some(entry) = catalog.get(&request.name) else {
        // Hidden tools read the same as tools that do not exist.
        return Err(ErrorData::invalid_params(format!("unknown tool: {}", request.name), None));
    };
    let client_token = context.meta.get_progress_token();
    let mut downstream_request = request;
    downstream_request.name = entry.tool.name.clone();
    // rmcp moves the request's `_meta` into the context; forward the client's entries.
    downstream_request.meta = Some(context.meta.clone());
    let pending = match entry.server.start_call(downstream_request).await {
        Ok(pending) => pending,
        Err(error) => return forward_error(error),
    };
    match relay(pending, client_token, &context).await {
        Relayed::Done(Ok(response)) => Ok(mark_complete(response)),
        Relayed::Done(Err(error)) => forward_error(error),
        Relayed::Cancelled => Err(ErrorData::new(ErrorCode::INTERNAL_ERROR, "request cancelled by the client", None)),
    }
}

enum Relayed {
    Done(Result<CallToolResponse, ForwardError>),
    Cancelled,
}

/// Relays progress and elicitation until the call ends or the client cancels it.
async fn relay(
    mut pending: PendingCall,
    client_token: Option<ProgressToken>,
    context: &RequestContext<RoleServer>,
) -> Relayed {
    loop {
        let step = tokio::select! {
            step = pending.next() => step,
            () = context.ct.cancelled() => {
                pending.cancel(Some("cancelled by the client".to_owned())).await;
                return Relayed::Cancelled;
            }
        };
        match step {
            CallStep::Progress(progress) => {
                // Progress only goes to a client that asked for it, under its own token.
                if let Some(token) = &client_token {
                    let mut progress: ProgressNotificationParam = progress;
                    progress.progress_token = token.clone();
                    if let Err(error) = context.peer.notify_progress(progress).await {
                        tracing::debug!(%error, "could not relay progress");
                    }
                }
            }
            CallStep::Elicit(elicit) => {
                let ElicitReply { params, reply } = elicit;
                let answer = tokio::select! {
                    answer = context.peer.create_elicitation(params) => answer.map_err(|e| {
                        ErrorData::new(ErrorCode::INTERNAL_ERROR, format!("client could not answer the elicitation: {e}"), None)
                    }),
                    () = context.ct.cancelled() => {
                        pending.cancel(Some("cancelled by the client".to_owned())).await;
                        return Relayed::Cancelled;
                    }
                };
                let _ = reply.send(answer);
            }
            CallStep::Done(result) => return Relayed::Done(result),
        }
    }
}

/// A legacy downstream's result carries no `resultType`; a 2026-07-28 client requires it
/// (rmcp strips it again for legacy clients).
fn mark_complete(response: CallToolResponse) -> CallToolResponse {
    match response {
        CallToolResponse::Complete(mut result) => {
            if result.result_type.is_none() {
                result.result_type = Some(ResultType::COMPLETE);
            }
            CallToolResponse::Complete(result)
        }
        other => other,
    }
}

/// The one mapping of forwarding failures to the wire: the downstream's own JSON-RPC
/// errors pass through; Airlock's are tool errors the model can read.
fn forward_error(error: ForwardError) -> Result<CallToolResponse, ErrorData> {
    match error {
        ForwardError::Downstream(error) => Err(error),
        ForwardError::Unavailable { .. } | ForwardError::Lost { .. } | ForwardError::Unexpected { .. } => {
            Ok(CallToolResponse::Complete(CallToolResult::error(vec![ContentBlock::text(error.to_string())])))
        }
    }
}
