//! Feeds the hold metrics from the broker's events, off the call path.
//!
//! Owns: the task following `Broker::subscribe` for `telemetry`.
//! Uses: the broker's events, `telemetry`'s hold hooks (telemetry never imports approval).
//! Must not: change anything; it only counts.

use std::time::Duration;

use super::{Broker, Event, State};

/// Counts holds opened and settled (and how long they took) while metrics are on.
pub fn watch(broker: &Broker) {
    if !crate::telemetry::metrics_on() {
        return;
    }
    let mut events = broker.subscribe();
    tokio::spawn(async move {
        loop {
            match events.recv().await {
                Ok(Event::Requested(a)) => crate::telemetry::hold_opened(a.kind.as_str()),
                Ok(Event::Settled(a)) if a.state != State::Pending => {
                    let took = a.settled_ms.unwrap_or(a.created_ms).saturating_sub(a.created_ms);
                    crate::telemetry::hold_settled(a.kind.as_str(), a.state.as_str(), Duration::from_millis(took));
                }
                Ok(_) => {}
                Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::warn!(missed, "hold metrics missed broker events");
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
    });
}
