//! TODO: http
