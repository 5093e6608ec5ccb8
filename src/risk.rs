//! Risk levels and how a tool gets one (DESIGN.md §3).
//!
//! Owns: `Risk`, `RiskSource`, and `assign`, a pure function from the facts about a tool
//! (manifest entry, MCP annotation hints, manifest default, fingerprint drift) to its risk.
//! Uses: nothing of ours (std and serde only), so it can be reasoned about on its own.
//! Must not: `use crate::` anything; read files; talk to servers. Callers pass plain values.

use std::fmt;
use std::str::FromStr;

/// How much harm a tool call can do. Ordered: `Low < Medium < High < Critical`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Risk {
    /// Reads only; allowed by default.
    Low,
    /// Changes something recoverable; the caller confirms by default.
    Medium,
    /// Changes something that matters; one independent approver by default.
    High,
    /// Irreversible or security-relevant; two independent approvers by default.
    Critical,
}

impl Risk {
    /// Every level, weakest first.
    pub const ALL: [Risk; 4] = [Risk::Low, Risk::Medium, Risk::High, Risk::Critical];

    /// The lowercase name used in files and on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Risk::Low => "low",
            Risk::Medium => "medium",
            Risk::High => "high",
            Risk::Critical => "critical",
        }
    }
}

impl fmt::Display for Risk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A string that is not a risk level.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("\"{0}\" is not a risk level (expected low, medium, high or critical)")]
pub struct UnknownRisk(pub String);

impl FromStr for Risk {
    type Err = UnknownRisk;
    fn from_str(s: &str) -> Result<Risk, UnknownRisk> {
        Risk::ALL
            .into_iter()
            .find(|r| r.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| UnknownRisk(s.to_string()))
    }
}

/// Where a tool's risk came from; shown by `airlock tools list` and `airlock explain`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RiskSource {
    /// The tool's own `[tools.<name>]` entry in its manifest.
    Manifest,
    /// The server's MCP annotations (`readOnlyHint`, `destructiveHint`).
    Annotations,
    /// The manifest's `default_risk`.
    ManifestDefault,
    /// Nothing said anything: `high`.
    Fallback,
    /// The tool changed since it was first seen and has not been accepted: `critical`.
    FingerprintChanged,
    /// The tool was added while the gateway ran (`new_tools = "hold"`) and has not been
    /// accepted: `critical`.
    NewTool,
}

impl RiskSource {
    /// A short phrase for people: "from the manifest entry".
    pub fn describe(self) -> &'static str {
        match self {
            RiskSource::Manifest => "from the manifest entry",
            RiskSource::Annotations => "from the server's annotations",
            RiskSource::ManifestDefault => "from the manifest's default_risk",
            RiskSource::Fallback => "no manifest entry, annotation or default: fallback",
            RiskSource::FingerprintChanged => "tool changed since first seen and not accepted",
            RiskSource::NewTool => "tool added while running and not accepted (new_tools = \"hold\")",
        }
    }
}

impl fmt::Display for RiskSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RiskSource::Manifest => "manifest",
            RiskSource::Annotations => "annotations",
            RiskSource::ManifestDefault => "manifest-default",
            RiskSource::Fallback => "fallback",
            RiskSource::FingerprintChanged => "fingerprint-changed",
            RiskSource::NewTool => "new-tool",
        })
    }
}

/// Everything `assign` looks at, as plain values.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RiskInputs {
    /// `risk` from the tool's `[tools.<name>]` manifest entry.
    pub manifest_entry: Option<Risk>,
    /// The tool's `annotations.readOnlyHint`, if the server sent one.
    pub read_only_hint: Option<bool>,
    /// The tool's `annotations.destructiveHint`, if the server sent one.
    pub destructive_hint: Option<bool>,
    /// The manifest's `default_risk`.
    pub manifest_default: Option<Risk>,
    /// True when the tool's fingerprint changed and an operator has not accepted it.
    pub fingerprint_changed: bool,
}

/// The risk of a tool, and where it came from (DESIGN.md §3).
///
/// Order: an unaccepted fingerprint change (critical, overriding everything, because the
/// tool is no longer the one the operator classified); the manifest entry; annotations;
/// the manifest's `default_risk`; `high`.
///
/// Annotations count only when they carry `readOnlyHint` or `destructiveHint`:
/// `readOnlyHint: true` → low; otherwise `destructiveHint: false` → medium; otherwise high
/// (MCP's own default for a non-read-only tool is destructive). Annotations that say
/// neither fall through to the manifest's default, so a server cannot lower a default by
/// sending an empty annotations object.
pub fn assign(inputs: &RiskInputs) -> (Risk, RiskSource) {
    if inputs.fingerprint_changed {
        return (Risk::Critical, RiskSource::FingerprintChanged);
    }
    if let Some(risk) = inputs.manifest_entry {
        return (risk, RiskSource::Manifest);
    }
    if let Some(risk) = from_annotations(inputs.read_only_hint, inputs.destructive_hint) {
        return (risk, RiskSource::Annotations);
    }
    if let Some(risk) = inputs.manifest_default {
        return (risk, RiskSource::ManifestDefault);
    }
    (Risk::High, RiskSource::Fallback)
}

fn from_annotations(read_only: Option<bool>, destructive: Option<bool>) -> Option<Risk> {
    match (read_only, destructive) {
        (None, None) => None,
        (Some(true), _) => Some(Risk::Low),
        (_, Some(false)) => Some(Risk::Medium),
        _ => Some(Risk::High),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs() -> RiskInputs {
        RiskInputs::default()
    }

    #[test]
    fn risk_assignment_follows_the_documented_order() {
        use Risk::*;
        use RiskSource::*;
        let cases: Vec<(&str, RiskInputs, (Risk, RiskSource))> = vec![
            ("nothing known", inputs(), (High, Fallback)),
            (
                "default only",
                RiskInputs {
                    manifest_default: Some(Medium),
                    ..inputs()
                },
                (Medium, ManifestDefault),
            ),
            (
                "read-only hint",
                RiskInputs {
                    read_only_hint: Some(true),
                    manifest_default: Some(Critical),
                    ..inputs()
                },
                (Low, Annotations),
            ),
            (
                "non-destructive hint",
                RiskInputs {
                    destructive_hint: Some(false),
                    ..inputs()
                },
                (Medium, Annotations),
            ),
            (
                "read_only false, no destructive hint",
                RiskInputs {
                    read_only_hint: Some(false),
                    manifest_default: Some(Low),
                    ..inputs()
                },
                (High, Annotations),
            ),
            (
                "destructive hint",
                RiskInputs {
                    destructive_hint: Some(true),
                    ..inputs()
                },
                (High, Annotations),
            ),
            (
                "read-only wins over destructive",
                RiskInputs {
                    read_only_hint: Some(true),
                    destructive_hint: Some(true),
                    ..inputs()
                },
                (Low, Annotations),
            ),
            (
                "manifest entry beats annotations",
                RiskInputs {
                    manifest_entry: Some(Critical),
                    read_only_hint: Some(true),
                    ..inputs()
                },
                (Critical, Manifest),
            ),
            (
                "manifest entry may lower",
                RiskInputs {
                    manifest_entry: Some(Low),
                    destructive_hint: Some(true),
                    ..inputs()
                },
                (Low, Manifest),
            ),
            (
                "changed fingerprint beats everything",
                RiskInputs {
                    manifest_entry: Some(Low),
                    fingerprint_changed: true,
                    ..inputs()
                },
                (Critical, FingerprintChanged),
            ),
        ];
        for (name, input, want) in cases {
            assert_eq!(assign(&input), want, "{name}");
        }
    }

    #[test]
    fn risks_are_ordered_and_parse_from_their_names() {
        assert!(
            Risk::Low < Risk::Medium && Risk::Medium < Risk::High && Risk::High < Risk::Critical
        );
        for r in Risk::ALL {
            assert_eq!(r.as_str().parse::<Risk>(), Ok(r));
        }
        assert_eq!("HIGH".parse::<Risk>(), Ok(Risk::High));
        assert!("severe".parse::<Risk>().is_err());
    }
}
