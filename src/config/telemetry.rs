//! `[telemetry]`: metrics listener, OTLP traces, log format.
//!
//! Owns: its raw form and validation.
//! Uses: the validator's `problem` and `http_url`; the checked type `telemetry::TelemetryConfig`.
//! Must not: start anything (that is `telemetry`).

use std::net::SocketAddr;

use serde::Deserialize;
use toml::Spanned;

use super::raw::Validator;
use crate::telemetry::{LogFormat, MetricsSwitch, TelemetryConfig};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTelemetry {
    metrics: Option<Spanned<bool>>,
    metrics_listen: Option<Spanned<String>>,
    otlp_endpoint: Option<Spanned<String>>,
    service_name: Option<Spanned<String>>,
    sample_ratio: Option<Spanned<f64>>,
    log_format: Option<Spanned<String>>,
}

impl Validator<'_, '_> {
    pub(super) fn telemetry(&mut self, raw: RawTelemetry, out: &mut TelemetryConfig) {
        if let Some(on) = &raw.metrics {
            out.metrics = if *on.get_ref() { MetricsSwitch::On } else { MetricsSwitch::Off };
        }
        if let (Some(off), Some(_)) = (raw.metrics.as_ref().filter(|on| !*on.get_ref()), &raw.metrics_listen) {
            let msg = "key \"telemetry.metrics\": false turns metrics off, but telemetry.metrics_listen asks for them to be served; remove one of the two".to_owned();
            self.problem(off.span(), msg);
        }
        if let Some(listen) = raw.metrics_listen {
            match listen.get_ref().parse::<SocketAddr>() {
                Ok(addr) => out.metrics_listen = Some(addr),
                Err(_) => {
                    let msg = format!(
                        "key \"telemetry.metrics_listen\": \"{}\" is not an address like \"127.0.0.1:9464\"",
                        listen.get_ref()
                    );
                    self.problem(listen.span(), msg);
                }
            }
        }
        if let Some(url) = raw.otlp_endpoint {
            out.otlp_endpoint = self.http_url(&url, "telemetry.otlp_endpoint");
        }
        if let Some(name) = raw.service_name {
            let ok = !name.get_ref().trim().is_empty() && !name.get_ref().chars().any(char::is_control);
            if ok {
                out.service_name = name.get_ref().trim().to_owned();
            } else {
                self.problem(name.span(), "key \"telemetry.service_name\": must be a non-empty name without control characters".to_owned());
            }
        }
        if let Some(ratio) = raw.sample_ratio {
            if (0.0..=1.0).contains(ratio.get_ref()) {
                out.sample_ratio = *ratio.get_ref();
            } else {
                let msg = format!(
                    "key \"telemetry.sample_ratio\": {} is not between 0.0 and 1.0 (1.0 keeps every trace)",
                    ratio.get_ref()
                );
                self.problem(ratio.span(), msg);
            }
        }
        if let Some(format) = raw.log_format {
            match LogFormat::parse(format.get_ref()) {
                Some(f) => out.log_format = f,
                None => {
                    let msg = format!("key \"telemetry.log_format\": must be \"text\" or \"json\", not \"{}\"", format.get_ref());
                    self.problem(format.span(), msg);
                }
            }
        }
    }
}
