//! Integration tests: they drive the built `airlock` binary.

mod pipeline;
mod protocol;
mod util;
