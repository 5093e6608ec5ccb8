//! Integration tests: one target, one module per topic.

mod audit;
