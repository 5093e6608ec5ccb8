//! The audit trail as a feed: OCSF events, following durable records, the HTTP sink.
//!
//! Owns: the OCSF mapping (`ocsf`), `Follower` (records after a sequence number as they
//! become durable, for the sink and for `log export --follow` over the control socket), and
//! the `[audit.sink]` background task (`sink`) with its position in `<data_dir>/state`.
//! Uses: `audit` (the in-process reader and the durable-size watch), `approval::outbound::Secret`.
//! Must not: be on the call path (it only reads what the writer acknowledged), or send a
//! record before it is durable.

pub mod follow;
pub mod ocsf;
pub mod sink;

/// The two shapes of a fed record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// The stored canonical record line, as `log export` writes it.
    #[default]
    Jsonl,
    /// One OCSF event a line (`ocsf::to_ocsf`).
    Ocsf,
}

impl Format {
    /// Parses `jsonl` or `ocsf`.
    pub fn parse(text: &str) -> Option<Format> {
        match text {
            "jsonl" => Some(Format::Jsonl),
            "ocsf" => Some(Format::Ocsf),
            _ => None,
        }
    }

    /// One line (without newline) for a stored record of the log named `origin`.
    pub fn line(self, record: &[u8], origin: &str) -> Result<Vec<u8>, ocsf::OcsfError> {
        match self {
            Format::Jsonl => Ok(record.to_vec()),
            Format::Ocsf => ocsf::ocsf_line(record, origin),
        }
    }
}
