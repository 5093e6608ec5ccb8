//! TODO: risk
