//! Turns the `call` span and the stage spans into metrics when they close, so every way
//! out of the pipeline (early refusals included) is counted once, in one place.

use std::time::Instant;

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Metadata, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

use super::metrics::{CallLabels, DecisionLabel, Rejected, StageLabel, get, rejected};
use super::trace::{CALL_TARGET, STAGE_TARGET};

/// The spans this layer reads: the call span and the stage spans.
pub(super) fn wanted(meta: &Metadata<'_>) -> bool {
    meta.is_span() && (meta.target() == STAGE_TARGET || (meta.target() == CALL_TARGET && meta.name() == "call"))
}

pub(super) struct MetricsLayer;

/// What the call span said about its call, read from its fields.
#[derive(Default)]
struct CallFields {
    server: Option<String>,
    tool: Option<String>,
    decision: Option<String>,
    risk: Option<String>,
}

impl Visit for CallFields {
    fn record_str(&mut self, field: &Field, value: &str) {
        let slot = match field.name() {
            "airlock.server" => &mut self.server,
            "gen_ai.tool.name" => &mut self.tool,
            "airlock.decision" => &mut self.decision,
            "airlock.risk" => &mut self.risk,
            _ => return,
        };
        *slot = Some(value.to_owned());
    }

    fn record_debug(&mut self, _: &Field, _: &dyn std::fmt::Debug) {}
}

struct Started(Instant);

impl<S> tracing_subscriber::Layer<S> for MetricsLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut extensions = span.extensions_mut();
        extensions.insert(Started(Instant::now()));
        if attrs.metadata().target() == CALL_TARGET {
            let mut fields = CallFields::default();
            attrs.record(&mut fields);
            extensions.insert(fields);
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        if let Some(fields) = span.extensions_mut().get_mut::<CallFields>() {
            values.record(fields);
        }
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let (Some(span), Some(m)) = (ctx.span(&id), get()) else { return };
        let mut extensions = span.extensions_mut();
        let Some(Started(started)) = extensions.remove::<Started>() else { return };
        let seconds = started.elapsed().as_secs_f64();
        if span.metadata().target() == STAGE_TARGET {
            m.stage_seconds.get_or_create(&StageLabel { stage: span.metadata().name() }).observe(seconds);
            return;
        }
        let Some(fields) = extensions.remove::<CallFields>() else { return };
        // `gen_ai.tool.name` is recorded only for a tool the catalog has: anything else a
        // client sent is `unknown`, so labels stay bounded.
        let (server, tool) = match (fields.server, fields.tool) {
            (Some(server), Some(tool)) => (server, tool),
            _ => ("unknown".to_owned(), "unknown".to_owned()),
        };
        let decision = fields.decision.unwrap_or_else(|| "error".to_owned());
        if decision == "invalid_arguments" {
            rejected(Rejected::Schema);
        }
        m.call_seconds.get_or_create(&DecisionLabel { decision: decision.clone() }).observe(seconds);
        let risk = fields.risk.unwrap_or_else(|| "none".to_owned());
        m.calls.get_or_create(&CallLabels { server, tool, decision, risk }).inc();
    }
}
