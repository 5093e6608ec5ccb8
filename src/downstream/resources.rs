//! Which downstream owns a resource URI.
//!
//! Owns: each server's resource index (its listed resources and resource templates, minus
//! those its manifest hides, with the lists' cache hints), cached per connection and
//! dropped when the server sends `notifications/resources/list_changed`, reconnects, or
//! the freshness it promised runs out; `Downstreams::resource_owner`.
//! Uses: the servers' rmcp peers, `manifest` for `hidden` entries, regex for templates.
//! Must not: decide whether a read may happen, or send the read itself.
//!
//! Decisions:
//! - A read goes only to the one server that lists the URI, or else the one whose
//!   template matches it. A URI no server lists is unknown and no server is asked; a URI
//!   two servers claim is refused as ambiguous, so a server cannot capture reads meant for
//!   another by listing the same URI.
//! - Templates are matched by a hand-written RFC 6570 reader (no maintained crate matches
//!   URIs against templates; the expansion crates only expand): simple `{var}` matches
//!   one path segment, `{+var}`/`{#var}` anything, `{?a,b}`/`{&a}` an optional query,
//!   `{/var}`, `{.var}`, `{;var}` their prefixed segments.

use std::sync::{Arc, PoisonError, RwLock};

use regex::Regex;
use rmcp::RoleClient;
use rmcp::model::{PaginatedRequestParams, Resource, ResourceTemplate};
use rmcp::service::Peer;

use super::freshness::{Fetched, Page, all_pages};
use super::{Downstreams, Server};

/// What one server serves, as far as reads go.
#[derive(Debug, Default)]
pub struct ResourceIndex {
    /// Listed resources, hidden ones left out.
    pub resources: Vec<Resource>,
    /// Listed templates, with their compiled matchers.
    templates: Vec<(ResourceTemplate, Option<Regex>)>,
    /// The cache hints of the two lists (`None`: the server lists none).
    pub resources_fetched: Option<Fetched>,
    /// As above, for the templates.
    pub templates_fetched: Option<Fetched>,
}

impl ResourceIndex {
    /// The listed templates.
    pub fn templates(&self) -> impl Iterator<Item = &ResourceTemplate> {
        self.templates.iter().map(|(t, _)| t)
    }

    fn lists(&self, uri: &str) -> bool {
        self.resources.iter().any(|r| r.uri == uri)
    }

    fn templated(&self, uri: &str) -> bool {
        self.templates.iter().any(|(_, re)| re.as_ref().is_some_and(|re| re.is_match(uri)))
    }
}

/// A server's cached index; `None` until first needed and after each invalidation.
#[derive(Debug, Default)]
pub(crate) struct ResourceCache(RwLock<Option<Arc<ResourceIndex>>>);

impl ResourceCache {
    pub(crate) fn invalidate(&self) {
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = None;
    }

    /// The index, unless a freshness its server promised ran out.
    fn get(&self) -> Option<Arc<ResourceIndex>> {
        let index = self.0.read().unwrap_or_else(PoisonError::into_inner).clone()?;
        let ran_out = [index.resources_fetched, index.templates_fetched].iter().flatten().any(Fetched::ran_out);
        (!ran_out).then_some(index)
    }

    fn set(&self, index: Arc<ResourceIndex>) {
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = Some(index);
    }
}

/// Who serves a URI.
pub enum ResourceOwner {
    /// Exactly this server.
    Found(Arc<Server>, Peer<RoleClient>),
    /// No connected server lists it or has a template for it.
    Unknown,
    /// Several servers claim it (their names).
    Ambiguous(Vec<String>),
}

impl Server {
    /// The server's resource index, listed now if it is not cached. A server that cannot
    /// list resources (no such capability) serves none.
    pub async fn resource_index(&self, peer: &Peer<RoleClient>) -> Arc<ResourceIndex> {
        if let Some(index) = self.resources.get() {
            return index;
        }
        let manifest = &self.manifest;
        let listed = all_pages(|cursor| async move {
            let page = peer.list_resources(Some(PaginatedRequestParams::default().with_cursor(cursor))).await?;
            Ok::<_, rmcp::ServiceError>(Page { items: page.resources, next_cursor: page.next_cursor, ttl_ms: page.ttl_ms, cache_scope: page.cache_scope })
        });
        let (resources, resources_fetched) = match listed.await {
            Ok((list, fetched)) => (list.into_iter().filter(|r| !manifest.resource_override(&r.uri).hidden).collect(), Some(fetched)),
            Err(error) => {
                tracing::debug!(server = self.name(), %error, "no resources listed");
                (Vec::new(), None)
            }
        };
        let listed = all_pages(|cursor| async move {
            let page = peer.list_resource_templates(Some(PaginatedRequestParams::default().with_cursor(cursor))).await?;
            Ok::<_, rmcp::ServiceError>(Page { items: page.resource_templates, next_cursor: page.next_cursor, ttl_ms: page.ttl_ms, cache_scope: page.cache_scope })
        });
        let (templates, templates_fetched) = match listed.await {
            Ok((list, fetched)) => (list.into_iter().map(|t| {
                let re = template_regex(&t.uri_template);
                if re.is_none() {
                    tracing::warn!(server = self.name(), template = %t.uri_template, "unreadable URI template; no read matches it");
                }
                (t, re)
            }).collect(), Some(fetched)),
            Err(_) => (Vec::new(), None),
        };
        let index = Arc::new(ResourceIndex { resources, templates, resources_fetched, templates_fetched });
        self.resources.set(index.clone());
        index
    }
}

impl Downstreams {
    /// The one connected server that serves `uri`: a listed resource first, then a
    /// template. Asks servers only for their lists, never for the URI itself.
    pub async fn resource_owner(&self, uri: &str) -> ResourceOwner {
        let mut listed = Vec::new();
        let mut templated = Vec::new();
        for (server, peer) in self.connected() {
            let index = server.resource_index(&peer).await;
            if server.manifest.resource_override(uri).hidden {
                continue;
            }
            if index.lists(uri) {
                listed.push((server, peer));
            } else if index.templated(uri) {
                templated.push((server, peer));
            }
        }
        let mut candidates = if listed.is_empty() { templated } else { listed };
        match candidates.len() {
            0 => ResourceOwner::Unknown,
            1 => {
                let (server, peer) = candidates.remove(0);
                ResourceOwner::Found(server, peer)
            }
            _ => ResourceOwner::Ambiguous(candidates.iter().map(|(s, _)| s.name().to_owned()).collect()),
        }
    }
}

/// An anchored regex matching the URIs `template` expands to; `None` when the template
/// is malformed (an unclosed `{`).
fn template_regex(template: &str) -> Option<Regex> {
    let mut pattern = String::from("^");
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        pattern.push_str(&regex::escape(&rest[..open]));
        let close = rest[open..].find('}')? + open;
        let expression = &rest[open + 1..close];
        pattern.push_str(match expression.chars().next() {
            Some('+' | '#') => ".*",
            Some('?' | '&') => "(?:[?&][^#]*)?",
            Some('/') => "(?:/[^?#]*)?",
            Some('.') => r"(?:\.[^/?#]*)?",
            Some(';') => "(?:;[^/?#]*)?",
            _ => "[^/?#]*",
        });
        rest = &rest[close + 1..];
    }
    if rest.contains('}') {
        return None;
    }
    pattern.push_str(&regex::escape(rest));
    pattern.push('$');
    Regex::new(&pattern).ok()
}

#[cfg(test)]
mod tests {
    use super::template_regex;

    fn matches(template: &str, uri: &str) -> bool {
        template_regex(template).is_some_and(|re| re.is_match(uri))
    }

    #[test]
    fn templates_match_what_they_expand_to() {
        assert!(matches("test://template/{id}/data", "test://template/42/data"));
        assert!(!matches("test://template/{id}/data", "test://template/4/2/data"));
        assert!(!matches("test://template/{id}/data", "test://other/42/data"));
        assert!(matches("file:///{+path}", "file:///etc/passwd"));
        assert!(matches("demo://search{?q,limit}", "demo://search?q=x&limit=2"));
        assert!(matches("demo://search{?q,limit}", "demo://search"));
        assert!(matches("a://b.c", "a://b.c") && !matches("a://b.c", "a://bxc"), "literals are escaped");
        assert!(template_regex("a://{unclosed").is_none());
        assert!(template_regex("a://x}").is_none());
    }
}
