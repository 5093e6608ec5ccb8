//! `airlock tokens new NAME`: makes a static bearer token and its `[[identity.tokens]]`
//! entry.
//!
//! Owns: the command's flags and output. Stdout is the config entry alone (only the
//! token's SHA-256, so `>> airlock.toml` is safe); the token itself goes to stderr, once.
//! Uses: `ring::rand::SystemRandom` (256 bits), `identity` (name rules), `toml` (quoting).
//! Must not: write the token anywhere else, or into the config.

use std::process::ExitCode;

use anyhow::Context;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::SecureRandom as _;
use serde::Serialize;

use crate::identity::{Person, Principal};

/// Prefix of every token: lets secret scanners recognise a leaked one.
const PREFIX: &str = "airlock_";

/// Subcommands of `airlock tokens`.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum Command {
    /// Make a 256-bit random token; print its [[identity.tokens]] entry (stdout) and the
    /// token itself, once (stderr).
    New {
        /// The principal the token authenticates as.
        name: String,
        /// Groups of that principal (comma-separated or repeated).
        #[arg(long, value_delimiter = ',')]
        groups: Vec<String>,
        /// Only a person holds this token: it may confirm its own holds out of band.
        #[arg(long)]
        human: bool,
        /// The person behind the token (their identities count once toward a quorum).
        #[arg(long)]
        person: Option<String>,
    },
}

#[derive(Serialize)]
struct Entry {
    name: String,
    sha256: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    groups: Vec<String>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    human: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    person: Option<String>,
}

#[derive(Serialize)]
struct Tokens {
    tokens: Vec<Entry>,
}

#[derive(Serialize)]
struct Doc {
    identity: Tokens,
}

#[allow(clippy::print_stdout)] // the config entry is the command's output
pub(crate) fn run(cmd: Command) -> anyhow::Result<ExitCode> {
    let Command::New { name, groups, human, person } = cmd;
    Principal::new(name.as_str()).with_context(|| format!("name {name:?}"))?;
    if name.contains('#') {
        anyhow::bail!("name {name:?}: '#' is reserved for OIDC principals ({{issuer}}#{{sub}})");
    }
    if let Some(person) = &person {
        Person::new(person.as_str()).with_context(|| format!("person {person:?}"))?;
    }
    let groups: Vec<String> = groups.into_iter().map(|g| g.trim().to_owned()).collect();
    if groups.iter().any(String::is_empty) {
        anyhow::bail!("--groups: a group name must not be empty");
    }
    let mut bytes = [0u8; 32];
    ring::rand::SystemRandom::new().fill(&mut bytes).map_err(|_| anyhow::anyhow!("the system random number generator failed"))?;
    let token = format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes));
    let sha256 = hex::encode(ring::digest::digest(&ring::digest::SHA256, token.as_bytes()));
    let doc = Doc { identity: Tokens { tokens: vec![Entry { name: name.clone(), sha256, groups, human, person }] } };
    let entry = toml::to_string(&doc).context("formatting the config entry")?;
    println!("{}", entry.trim_end());
    eprintln!("airlock: token for {name:?} (shown once; give it to its holder, Airlock keeps only its SHA-256):");
    eprintln!("{token}");
    Ok(ExitCode::SUCCESS)
}
