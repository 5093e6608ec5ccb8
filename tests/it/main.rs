//! Integration tests: one target, one module per topic; they drive the built `airlock` binary.

#![allow(unreachable_pub)]

mod approvals;
mod approvals_api;
mod audit;
mod audit_view;
mod channels;
mod cluster_approvals;
mod cluster_limits;
mod cluster_log;
mod config_errors;
mod demo;
mod demo_tools;
mod durability;
mod enforcement;
mod feed;
mod fuzz_regressions;
mod headers;
mod http_isolation;
mod identities;
mod isolation_routing;
mod operate;
mod limits;
mod list_caching;
mod metrics;
mod pipeline;
mod policy;
mod protocol;
mod reload;
mod report;
mod resources;
mod shared_gateway;
mod startup;
mod stdio_limits;
mod telemetry;
mod task_relay;
mod tasks;
mod tool_integrity;
mod util;
mod web;
mod what_is_shown;
mod witness;
