//! Prompts and resources, passed through from the downstreams.
//!
//! Prompts are namespaced like tools (`<server><sep><prompt>`); resource URIs are kept as
//! the servers give them, and a read goes to the first server that lists the URI (or, for
//! templated URIs, the first that can read it). These are reads of text a server offers;
//! they are not tool calls and go through no policy.

use rmcp::RoleServer;
use rmcp::model::{
    ErrorData, GetPromptRequestParams, GetPromptResponse, ListPromptsResult,
    ListResourceTemplatesResult, ListResourcesResult, ReadResourceRequestParams,
    ReadResourceResponse, SubscribeRequestParams, UnsubscribeRequestParams,
};
use rmcp::service::RequestContext;

use super::Gateway;
use crate::downstream::Namespacing;

impl Gateway {
    pub(super) async fn list_prompts(&self) -> Result<ListPromptsResult, ErrorData> {
        let mut prompts = Vec::new();
        for (server, peer) in self.downstreams.connected() {
            if let Ok(list) = peer.list_all_prompts().await {
                for mut prompt in list {
                    prompt.name = self.downstreams.namespacing().expose(server.name(), &prompt.name);
                    prompts.push(prompt);
                }
            }
        }
        prompts.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(ListPromptsResult::with_all_items(prompts))
    }

    pub(super) async fn get_prompt(
        &self,
        mut request: GetPromptRequestParams,
        context: &RequestContext<RoleServer>,
    ) -> Result<GetPromptResponse, ErrorData> {
        request.meta = Some(context.meta.clone());
        let connected = self.downstreams.connected();
        // A prefixed name says its server; unprefixed names are looked up in each server's list.
        if let Namespacing::Prefix { separator } = self.downstreams.namespacing() {
            let target = request.name.split_once(separator.as_str()).and_then(|(server, prompt)| {
                connected.iter().find(|(s, _)| s.name() == server).map(|(_, peer)| (peer, prompt.to_owned()))
            });
            if let Some((peer, prompt)) = target {
                request.name = prompt;
                return peer.get_prompt_once(request).await.map_err(service_error);
            }
        } else {
            for (_, peer) in &connected {
                let Ok(list) = peer.list_all_prompts().await else { continue };
                if list.iter().any(|p| p.name == request.name) {
                    return peer.get_prompt_once(request).await.map_err(service_error);
                }
            }
        }
        Err(ErrorData::invalid_params(format!("unknown prompt: {}", request.name), None))
    }

    pub(super) async fn list_resources(&self) -> Result<ListResourcesResult, ErrorData> {
        let mut resources = Vec::new();
        for (_, peer) in self.downstreams.connected() {
            if let Ok(list) = peer.list_all_resources().await {
                resources.extend(list);
            }
        }
        Ok(ListResourcesResult::with_all_items(resources))
    }

    pub(super) async fn list_resource_templates(&self) -> Result<ListResourceTemplatesResult, ErrorData> {
        let mut templates = Vec::new();
        for (_, peer) in self.downstreams.connected() {
            if let Ok(list) = peer.list_all_resource_templates().await {
                templates.extend(list);
            }
        }
        Ok(ListResourceTemplatesResult::with_all_items(templates))
    }

    pub(super) async fn read_resource(&self, request: ReadResourceRequestParams) -> Result<ReadResourceResponse, ErrorData> {
        let connected = self.downstreams.connected();
        // The server that lists the URI first; then any server that can read it.
        let mut order = Vec::new();
        for (server, peer) in &connected {
            let lists = peer.list_all_resources().await.is_ok_and(|list| list.iter().any(|r| r.uri == request.uri));
            if lists {
                order.insert(0, (server.clone(), peer.clone()));
            } else {
                order.push((server.clone(), peer.clone()));
            }
        }
        let mut last = None;
        for (_, peer) in order {
            match peer.read_resource_once(request.clone()).await {
                Ok(response) => return Ok(response),
                Err(error) => last = Some(service_error(error)),
            }
        }
        Err(last.unwrap_or_else(|| ErrorData::resource_not_found(format!("no server serves {}", request.uri), None)))
    }

    #[allow(deprecated)] // resources/subscribe is legacy-only; still passed on for legacy clients
    pub(super) async fn subscribe(&self, request: SubscribeRequestParams, subscribe: bool) -> Result<(), ErrorData> {
        let mut last = None;
        for (_, peer) in self.downstreams.connected() {
            let outcome = if subscribe {
                peer.subscribe(request.clone()).await
            } else {
                let mut params = UnsubscribeRequestParams::new(request.uri.clone());
                params.meta = request.meta.clone();
                peer.unsubscribe(params).await
            };
            match outcome {
                Ok(()) => return Ok(()),
                Err(error) => last = Some(service_error(error)),
            }
        }
        Err(last.unwrap_or_else(|| ErrorData::resource_not_found(format!("no server serves {}", request.uri), None)))
    }
}

fn service_error(error: rmcp::service::ServiceError) -> ErrorData {
    match error {
        rmcp::service::ServiceError::McpError(error) => error,
        other => ErrorData::internal_error(format!("downstream: {other}"), None),
    }
}
