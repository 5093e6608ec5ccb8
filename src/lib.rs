//! Airlock: an MCP gateway that classifies every tool call by risk, holds risky calls for
//! human approval, and appends every step to a signed, hash-chained audit log.
//!
//! The modules follow the call pipeline: identify → validate → classify → decide → hold →
//! forward → record. See `ARCHITECTURE.md` for the map and its invariants.

pub mod approval;
pub mod audit;
pub mod audit_view;
pub mod cli;
pub mod config;
pub mod control;
pub mod demo_tools;
pub mod downstream;
pub mod feed;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub mod gateway;
pub mod http;
pub mod identity;
pub mod manifest;
pub mod policy;
pub mod report;
pub mod risk;
pub mod storage;
pub mod telemetry;
pub mod text;
pub mod witness;
