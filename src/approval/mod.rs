//! TODO: approval
