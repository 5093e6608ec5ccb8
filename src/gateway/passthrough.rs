//! Prompts and resources: lists pass through; `resources/read`, `resources/subscribe` and
//! `prompts/get` go through the pipeline like a tool call.
//!
//! Owns: listing prompts, resources and templates (hidden ones left out), and the read
//! pipeline: identify → resolve the owner → classify → decide → record → forward → record.
//! Uses: `downstream::Downstreams::resource_owner` (the one server that lists a URI),
//! `policy` with `Subject::Resource` / `Subject::Prompt`, the audit log.
//! Must not: send a read to any server but its owner, or forward before the decision is
//! durable.
//!
//! Decisions:
//! - A read's risk is its manifest entry (`[resources."<glob>"]`, `[prompts.<name>]`),
//!   else low: reading what a server offers is usually harmless, and the operator marks
//!   what is not.
//! - `confirm` and `approve` refuse the read instead of holding it: the hold machinery is
//!   built around tool calls (fingerprints, `CallToolResult` answers, receipts in `_meta`),
//!   and a read that needs people is refused, never run. The error says so.
//! - The log stores a resource's URI with its user-info, query values and fragment
//!   replaced by `[redacted]` (where tokens travel), and `args_hmac` (keyed) over the full
//!   `{"uri": …}`, so an auditor who has the URI can still prove which one was read.
//!   Prompt arguments are stored like tool arguments (with `[audit] redact`).

use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use rmcp::RoleServer;
use rmcp::model::{
    ErrorCode, ErrorData, GetPromptRequestParams, GetPromptResponse, ListPromptsResult,
    ListResourceTemplatesResult, ListResourcesResult, ReadResourceRequestParams, ReadResourceResponse,
    ServerResult, SubscribeRequestParams, UnsubscribeRequestParams,
};
use rmcp::service::RequestContext;
use serde_json::{Value, json};

use super::{Gateway, Session};
use crate::audit::{REDACTED, Record, RecordKind};
use crate::downstream::freshness::CacheHints;
use crate::downstream::{Namespacing, ResourceOwner, Server};
use crate::identity::Caller;
use crate::policy::{CallFacts, Effect, Subject};
use crate::risk::Risk;

/// Which request a read is; recorded as `detail.method`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Method {
    Read,
    Subscribe,
    GetPrompt,
}

impl Method {
    fn as_str(self) -> &'static str {
        match self {
            Method::Read => "resources/read",
            Method::Subscribe => "resources/subscribe",
            Method::GetPrompt => "prompts/get",
        }
    }
    fn subject(self) -> Subject {
        if self == Method::GetPrompt { Subject::Prompt } else { Subject::Resource }
    }
}

/// One read on its way through the pipeline.
struct Read {
    method: Method,
    /// The URI or the exposed prompt name: what rules match.
    name: String,
    /// What `when` predicates see: `{"uri": …}` or the prompt's arguments.
    args: Value,
    call_id: String,
    caller: Caller,
    started: Instant,
}

/// The sessions subscribed to each resource URI.
#[derive(Default)]
pub(super) struct Subscribers(Mutex<Vec<(String, String, rmcp::Peer<RoleServer>)>>);

impl Subscribers {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(String, String, rmcp::Peer<RoleServer>)>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn add(&self, session: &str, uri: &str, peer: rmcp::Peer<RoleServer>) {
        let mut all = self.lock();
        all.retain(|(s, u, p)| (s != session || u != uri) && !p.is_transport_closed());
        all.push((session.to_owned(), uri.to_owned(), peer));
    }

    /// Removes one subscription; true when another session still subscribes to `uri`.
    fn remove(&self, session: &str, uri: &str) -> bool {
        let mut all = self.lock();
        all.retain(|(s, u, p)| (s != session || u != uri) && !p.is_transport_closed());
        all.iter().any(|(_, u, _)| u == uri)
    }

    /// The open sessions subscribed to `uri`.
    pub(super) fn of(&self, uri: &str) -> Vec<rmcp::Peer<RoleServer>> {
        self.lock().iter().filter(|(_, u, p)| u == uri && !p.is_transport_closed()).map(|(_, _, p)| p.clone()).collect()
    }
}

impl Gateway {
    pub(super) async fn list_prompts(&self) -> Result<ListPromptsResult, ErrorData> {
        let mut prompts = Vec::new();
        let mut hints = CacheHints::default();
        for (server, peer) in self.downstreams.connected() {
            let mut cursor = None;
            loop {
                let Ok(page) = peer.list_prompts(Some(rmcp::model::PaginatedRequestParams::default().with_cursor(cursor))).await else {
                    break;
                };
                hints.add(page.ttl_ms, page.cache_scope);
                for mut prompt in page.prompts {
                    if server.manifest().prompt_override(&prompt.name).hidden {
                        continue;
                    }
                    prompt.name = self.downstreams.namespacing().expose(server.name(), &prompt.name);
                    prompts.push(prompt);
                }
                cursor = page.next_cursor;
                if cursor.is_none() {
                    break;
                }
            }
        }
        prompts.sort_by(|a, b| a.name.cmp(&b.name));
        let mut list = ListPromptsResult::with_all_items(prompts);
        (list.ttl_ms, list.cache_scope) = hints.aggregate();
        Ok(list)
    }

    /// Every server's listed resources, with the list's cache hints (`freshness`): a
    /// server that lists none has no part in them.
    pub(super) async fn list_resources(&self) -> Result<ListResourcesResult, ErrorData> {
        let mut resources = Vec::new();
        let mut hints = CacheHints::default();
        for (server, peer) in self.downstreams.connected() {
            let index = server.resource_index(&peer).await;
            resources.extend(index.resources.iter().cloned());
            if let Some(fetched) = index.resources_fetched {
                let (ttl, scope) = fetched.now();
                hints.add(ttl, scope);
            }
        }
        let mut list = ListResourcesResult::with_all_items(resources);
        (list.ttl_ms, list.cache_scope) = hints.aggregate();
        Ok(list)
    }

    pub(super) async fn list_resource_templates(&self) -> Result<ListResourceTemplatesResult, ErrorData> {
        let mut templates = Vec::new();
        let mut hints = CacheHints::default();
        for (server, peer) in self.downstreams.connected() {
            let index = server.resource_index(&peer).await;
            templates.extend(index.templates().cloned());
            if let Some(fetched) = index.templates_fetched {
                let (ttl, scope) = fetched.now();
                hints.add(ttl, scope);
            }
        }
        let mut list = ListResourceTemplatesResult::with_all_items(templates);
        (list.ttl_ms, list.cache_scope) = hints.aggregate();
        Ok(list)
    }

    /// The server and downstream name of an exposed prompt name, if one serves it and does
    /// not hide it. Only the named server is asked (or, unprefixed, each server's list).
    async fn prompt_owner(&self, exposed: &str) -> Result<(std::sync::Arc<Server>, rmcp::Peer<rmcp::RoleClient>, String), String> {
        let connected = self.downstreams.connected();
        let candidates: Vec<_> = match self.downstreams.namespacing() {
            Namespacing::Prefix { separator } => exposed
                .split_once(separator.as_str())
                .and_then(|(server, prompt)| {
                    connected.iter().find(|(s, _)| s.name() == server).map(|(s, p)| (s.clone(), p.clone(), prompt.to_owned()))
                })
                .into_iter()
                .collect(),
            Namespacing::None => connected.iter().map(|(s, p)| (s.clone(), p.clone(), exposed.to_owned())).collect(),
        };
        let mut found = Vec::new();
        for (server, peer, prompt) in candidates {
            if server.manifest().prompt_override(&prompt).hidden {
                continue;
            }
            let listed = peer.list_all_prompts().await.is_ok_and(|list| list.iter().any(|p| p.name == prompt));
            if listed {
                found.push((server, peer, prompt));
            }
        }
        match found.len() {
            1 => Ok(found.remove(0)),
            0 => Err(format!("unknown prompt: {exposed}")),
            _ => Err(format!(
                "prompt {exposed} is served by several servers ({}); it was not forwarded",
                found.iter().map(|(s, _, _)| s.name()).collect::<Vec<_>>().join(", ")
            )),
        }
    }
}

impl Session {
    pub(super) async fn read(
        &self,
        request: ReadResourceRequestParams,
        context: &RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        let read = self.begin(Method::Read, &request.uri, json!({"uri": request.uri}), context)?;
        let (server, peer) = self.resource_gate(&read).await?;
        let mut request = request;
        request.meta = Some(forwardable_meta(context));
        let response = peer.read_resource_once(request).await.map_err(service_error);
        self.complete(&read, server.name(), response.as_ref().map(|r| ServerResult::from(r.clone()))).await?;
        response
    }

    #[allow(deprecated)] // resources/subscribe is legacy-only; still passed on for legacy clients
    pub(super) async fn subscribe_to(
        &self,
        request: SubscribeRequestParams,
        context: &RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        let read = self.begin(Method::Subscribe, &request.uri, json!({"uri": request.uri}), context)?;
        let (server, peer) = self.resource_gate(&read).await?;
        let uri = request.uri.clone();
        let outcome = peer.subscribe(request).await.map_err(service_error);
        self.complete(&read, server.name(), outcome.as_ref().map(|()| ServerResult::empty(()))).await?;
        if outcome.is_ok() {
            self.gateway.subscribers.add(&self.id, &uri, context.peer.clone());
        }
        outcome
    }

    /// Ending a subscription needs no decision (it reads nothing), but goes only to the
    /// owner, like the subscription did, and only once no other session subscribes.
    #[allow(deprecated)]
    pub(super) async fn unsubscribe_from(&self, request: UnsubscribeRequestParams) -> Result<(), ErrorData> {
        if self.gateway.subscribers.remove(&self.id, &request.uri) {
            return Ok(());
        }
        match self.gateway.downstreams.resource_owner(&request.uri).await {
            ResourceOwner::Found(_, peer) => peer.unsubscribe(request).await.map_err(service_error),
            ResourceOwner::Unknown | ResourceOwner::Ambiguous(_) => Err(unknown_resource()),
        }
    }

    pub(super) async fn prompt(
        &self,
        mut request: GetPromptRequestParams,
        context: &RequestContext<RoleServer>,
    ) -> Result<GetPromptResponse, ErrorData> {
        let args = Value::Object(request.arguments.clone().unwrap_or_default());
        let read = self.begin(Method::GetPrompt, &request.name, args, context)?;
        let (server, peer, prompt) = match self.gateway.prompt_owner(&request.name).await {
            Ok(owner) => owner,
            Err(why) => {
                self.refused(&read, None, "unknown_prompt", &why).await?;
                return Err(ErrorData::invalid_params(why, None));
            }
        };
        let risk = server.manifest().prompt_override(&prompt).risk.unwrap_or(Risk::Low);
        self.decide(&read, server.name(), risk).await?;
        request.name = prompt;
        request.meta = Some(forwardable_meta(context));
        let response = peer.get_prompt_once(request).await.map_err(service_error);
        self.complete(&read, server.name(), response.as_ref().map(|r| ServerResult::from(r.clone()))).await?;
        response
    }

    /// Identify: every read has a caller and a call id, like a tool call.
    fn begin(&self, method: Method, name: &str, args: Value, context: &RequestContext<RoleServer>) -> Result<Read, ErrorData> {
        let caller = self.caller(context)?;
        Ok(Read { method, name: name.to_owned(), args, call_id: self.gateway.next_call_id(), caller, started: Instant::now() })
    }

    /// Resolves a URI to its one owner and decides; `Err` is the answer when it may not run.
    async fn resource_gate(&self, read: &Read) -> Result<(std::sync::Arc<Server>, rmcp::Peer<rmcp::RoleClient>), ErrorData> {
        match self.gateway.downstreams.resource_owner(&read.name).await {
            ResourceOwner::Found(server, peer) => {
                let risk = server.manifest().resource_override(&read.name).risk.unwrap_or(Risk::Low);
                self.decide(read, server.name(), risk).await?;
                Ok((server, peer))
            }
            ResourceOwner::Unknown => {
                self.refused(read, None, "unknown_resource", "no server lists this resource").await?;
                Err(unknown_resource())
            }
            ResourceOwner::Ambiguous(servers) => {
                let why = format!("several servers list this resource ({}); it was not forwarded", servers.join(", "));
                self.refused(read, None, "ambiguous_resource", &why).await?;
                Err(ErrorData::invalid_request(why, None))
            }
        }
    }

    /// Decide by policy and record `call_received` + `decision` (+ `call_forwarded`)
    /// durably; `Ok` only for `allow`.
    async fn decide(&self, read: &Read, server: &str, risk: Risk) -> Result<(), ErrorData> {
        let facts = CallFacts {
            subject: read.method.subject(),
            tool: &read.name,
            risk,
            args: &read.args,
            principal: read.caller.principal.as_str(),
            groups: &read.caller.groups,
        };
        let policy = self.gateway.policy();
        let decision = policy.set.decide(&facts);
        let by = match &decision.winning_rule {
            Some(rule) => format!("rule `{rule}`"),
            None => "the default policy".to_owned(),
        };
        let mut record = self.record(read, RecordKind::Decision, Some(server)).policy_sha256(policy.set.digest().set()).decision(decision.effect.as_str()).risk(risk.as_str()).reason(decision.reason.clone());
        if let Some(rule) = &decision.winning_rule {
            record = record.rule(rule.as_str());
        }
        let received = self.received(read, Some(server));
        let what = read.method.subject().noun();
        match decision.effect {
            Effect::Allow => {
                let forwarded = self.record(read, RecordKind::CallForwarded, Some(server));
                // Signed with its `call_completed` at the latest (see `forward::record_before_forwarding`).
                refuse_unrecorded(self.gateway.audit.append_all_sign_later(vec![received, record, forwarded]).await)
            }
            Effect::Deny => {
                record_all(&self.gateway, vec![received, record]).await?;
                Err(refused(format!("Denied by {by}: {}. The {what} was not forwarded.", decision.reason)))
            }
            Effect::Confirm | Effect::Approve => {
                record_all(&self.gateway, vec![received, record]).await?;
                Err(refused(format!(
                    "This {what} needs {} ({by}: {}), and Airlock does not hold {} requests for people: \
                     it was not forwarded. Ask an operator to lower its risk or allow it by rule.",
                    if decision.effect == Effect::Confirm { "your confirmation" } else { "approval" },
                    decision.reason,
                    read.method.as_str(),
                )))
            }
        }
    }

    /// A read that resolves to nothing: recorded, never forwarded.
    async fn refused(&self, read: &Read, server: Option<&str>, decision: &str, why: &str) -> Result<(), ErrorData> {
        let record = self.record(read, RecordKind::Decision, server).decision(decision).reason(why);
        record_all(&self.gateway, vec![self.received(read, server), record]).await
    }

    /// `call_completed` for a forwarded read, durable before the client gets the answer.
    async fn complete(&self, read: &Read, server: &str, result: Result<ServerResult, &ErrorData>) -> Result<(), ErrorData> {
        let (value, is_error) = match &result {
            Ok(result) => (serde_json::to_value(result).unwrap_or(Value::Null), false),
            Err(error) => (serde_json::to_value(error).unwrap_or(Value::Null), true),
        };
        let completed = self
            .record(read, RecordKind::CallCompleted, Some(server))
            .with_result(&value)
            .is_error(is_error)
            .duration_us(u64::try_from(read.started.elapsed().as_micros()).unwrap_or(u64::MAX));
        record_all(&self.gateway, vec![completed]).await
    }

    fn received(&self, read: &Read, server: Option<&str>) -> Record {
        let mut record = self.record(read, RecordKind::CallReceived, server).session(self.id.as_str());
        let redactor = self.gateway.audit.redactor();
        record = match read.method {
            Method::GetPrompt => record.with_args(&read.args, redactor),
            Method::Read | Method::Subscribe => {
                let mut stored = record.with_args(&json!({"uri": loggable_uri(&read.name)}), redactor);
                // Keyed, like every argument digest people see: a URI may carry a short secret.
                stored.args_hmac = Some(redactor.digest(&read.args).as_digest());
                stored
            }
        };
        record
    }

    /// The fields every record of this read carries. Prompts are named in `tool`; a URI
    /// appears only (redacted) in `call_received`'s arguments.
    fn record(&self, read: &Read, kind: RecordKind, server: Option<&str>) -> Record {
        let mut record = Record::new(kind).call_id(read.call_id.as_str());
        if kind != RecordKind::CallCompleted {
            record = record.principal(read.caller.principal.as_str());
        }
        if read.method == Method::GetPrompt {
            record = record.tool(read.name.as_str());
        }
        if kind == RecordKind::Decision {
            record = record.policy_sha256(self.gateway.policy().set.digest().set());
        }
        record.detail(json!({"method": read.method.as_str(), "server": server}))
    }
}

/// The client's `_meta` minus `airlock/*` (only the gateway writes those).
fn forwardable_meta(context: &RequestContext<RoleServer>) -> rmcp::model::RequestMetaObject {
    let mut meta = context.meta.clone();
    meta.0.0.retain(|key, _| !key.starts_with("airlock/"));
    meta
}

/// `uri` for the log: user-info, query values and fragment redacted, since that is where
/// URIs carry tokens. A URI that does not parse is not stored at all.
fn loggable_uri(uri: &str) -> String {
    let Ok(mut url) = url::Url::parse(uri) else { return REDACTED.to_owned() };
    if !url.username().is_empty() {
        let _ = url.set_username(REDACTED);
    }
    if url.password().is_some() {
        let _ = url.set_password(Some(REDACTED));
    }
    if let Some(query) = url.query().filter(|q| !q.is_empty()) {
        let redacted: Vec<String> = query
            .split('&')
            .map(|pair| format!("{}={REDACTED}", pair.split_once('=').map_or(pair, |(key, _)| key)))
            .collect();
        url.set_query(Some(&redacted.join("&")));
    }
    if url.fragment().is_some_and(|f| !f.is_empty()) {
        url.set_fragment(Some(REDACTED));
    }
    url.to_string()
}

async fn record_all(gateway: &Gateway, records: Vec<Record>) -> Result<(), ErrorData> {
    refuse_unrecorded(gateway.audit.append_all(records).await)
}

fn refuse_unrecorded<T>(appended: Result<T, crate::audit::AuditError>) -> Result<(), ErrorData> {
    if let Err(error) = appended {
        tracing::error!(%error, "audit log append failed; refusing the read");
        return Err(ErrorData::new(ErrorCode::INTERNAL_ERROR, "the audit log is unavailable; the request was not run", None));
    }
    Ok(())
}

fn refused(text: String) -> ErrorData {
    ErrorData::invalid_request(text, None)
}

fn unknown_resource() -> ErrorData {
    ErrorData::resource_not_found("unknown resource", None)
}

fn service_error(error: rmcp::service::ServiceError) -> ErrorData {
    match error {
        rmcp::service::ServiceError::McpError(error) => error,
        other => ErrorData::internal_error(format!("downstream: {other}"), None),
    }
}

#[cfg(test)]
mod tests {
    use super::loggable_uri;

    #[test]
    fn tokens_in_uris_do_not_reach_the_log() {
        assert_eq!(loggable_uri("demo://customers"), "demo://customers");
        let logged = loggable_uri("https://user:hunter2@api.example/x?token=s3cret&page=2#access_token=abc");
        assert!(!logged.contains("hunter2") && !logged.contains("s3cret") && !logged.contains("abc"), "{logged}");
        assert!(logged.contains("token=[redacted]") && logged.contains("page=[redacted]"), "{logged}");
        assert_eq!(loggable_uri("not a uri"), "[redacted]");
    }
}
