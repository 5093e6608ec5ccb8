//! TODO: downstream
