//! Integration tests: they drive the built `airlock` binary and the public API.

mod config_errors;
mod policy;
