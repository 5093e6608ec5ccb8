//! TODO: config
mod diag;
pub use diag::{ConfigErrors, Problem};
