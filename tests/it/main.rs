//! Integration tests: one target, one module per topic.

mod demo_tools;
