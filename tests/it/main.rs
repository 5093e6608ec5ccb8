//! Integration tests: one target, one module per topic; they drive the built `airlock` binary.

mod demo_tools;
mod pipeline;
mod protocol;
mod util;
