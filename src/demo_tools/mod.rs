//! TODO: demo_tools
