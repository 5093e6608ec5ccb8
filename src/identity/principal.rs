//! Owns: the `Principal` newtype, the `Caller` value the pipeline carries, and the
//! `stdio_principal` spec (`env:VAR` or a literal).
//! Uses: nothing else of ours.
//! Must not: read tokens or talk to the network.

use std::fmt;

/// Who is calling: a validated, non-empty name without control characters.
///
/// Static tokens use their configured `name`; OIDC callers are `{issuer}#{sub}` (never an
/// email, which an IdP may let a user change); the stdio caller comes from
/// `identity.stdio_principal`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Principal(String);

/// Why a string is not a valid [`Principal`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrincipalError {
    #[error("a principal must not be empty")]
    Empty,
    #[error("a principal must be at most {max} bytes (this one has {len})", max = Principal::MAX_LEN)]
    TooLong { len: usize },
    #[error("a principal must not contain control characters")]
    ControlCharacter,
    #[error("a principal must not start or end with whitespace")]
    SurroundingWhitespace,
}

impl Principal {
    /// Upper bound in bytes; an OIDC `sub` is at most 255 ASCII characters, so
    /// `{issuer}#{sub}` fits comfortably.
    pub const MAX_LEN: usize = 1024;

    /// Validates `name` and wraps it.
    pub fn new(name: impl Into<String>) -> Result<Self, PrincipalError> {
        let name = name.into();
        if name.is_empty() {
            return Err(PrincipalError::Empty);
        }
        if name.len() > Self::MAX_LEN {
            return Err(PrincipalError::TooLong { len: name.len() });
        }
        if name.chars().any(char::is_control) {
            return Err(PrincipalError::ControlCharacter);
        }
        if name.trim() != name {
            return Err(PrincipalError::SurroundingWhitespace);
        }
        Ok(Self(name))
    }

    /// The principal as text, e.g. for the audit log or a policy match.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for Principal {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// How a caller proved who they are.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMethod {
    /// The local user of a stdio session (`identity.stdio_principal`).
    Stdio,
    /// A static bearer token from `[[identity.tokens]]`.
    StaticToken,
    /// A JWT from an `[[identity.oidc]]` issuer, presented as a bearer token.
    Oidc,
    /// An interactive OpenID Connect sign-in on the approver page (code flow with PKCE):
    /// a person at the identity provider, not a token an agent could hold.
    OidcSignIn,
    /// HTTP with no identity configured: everyone is the same anonymous caller.
    Anonymous,
    /// A Slack user listed in `[approvals.slack] users`, vouched for by Slack's request
    /// signature (an approver, never a tool caller).
    Slack,
    /// Another local user on the control socket, admitted by `[gateway] socket_clients`
    /// and named by its peer uid (SO_PEERCRED): principal `unix:<name>`.
    UnixPeer,
}

impl AuthMethod {
    /// Lowercase name, as shown in messages and stored with a hold.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stdio => "stdio",
            Self::StaticToken => "static token",
            Self::Oidc => "OIDC bearer token",
            Self::OidcSignIn => "OIDC sign-in",
            Self::Anonymous => "anonymous",
            Self::Slack => "Slack",
            Self::UnixPeer => "unix socket peer",
        }
    }
}

/// Whether a person is known to hold a credential. Out-of-band confirmation needs
/// [`Holder::Human`]: an agent with a shell can use any credential it can read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Holder {
    /// A credential an agent may hold: stdio, static tokens and bearer JWTs unless the
    /// config marks them `human = true`.
    #[default]
    Unverified,
    /// A person: a token or issuer marked `human = true`, an interactive OIDC sign-in on
    /// the approver page, or a mapped Slack user.
    Human,
}

/// The person behind one or more identities (`person = "…"` in `[identity]`): identities
/// of one person count once toward a quorum, and count as the caller on their own calls.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Person(String);

impl Person {
    /// Validates `name` with the rules of a [`Principal`].
    pub fn new(name: impl Into<String>) -> Result<Self, PrincipalError> {
        Principal::new(name).map(|p| Self(p.0))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The form two names are compared in: Unicode NFKC, full case folding, NFKC again (the
/// identifier caseless match of Unicode §3.13), so `Alice`, fullwidth `ａｌｉｃｅ` and `alice`
/// fold to the same key. Full folding (not `to_lowercase`) also maps `ß` to `ss` and `ſ` to
/// `s`, which lowercasing leaves apart. Used for refusing look-alikes and for "is this the
/// same person" checks, never to grant anything: a folded match only ever refuses more.
pub fn fold_name(name: &str) -> String {
    use unicode_normalization::UnicodeNormalization as _;
    let nfkc: String = name.nfkc().collect();
    caseless::default_case_fold_str(&nfkc).nfkc().collect()
}

/// An identified caller: who, which groups, and how they proved it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    pub principal: Principal,
    pub groups: Vec<String>,
    pub via: AuthMethod,
    /// The person this identity belongs to, when the config links one.
    pub person: Option<Person>,
    /// Whether a person is known to hold the credential.
    pub holder: Holder,
    /// When the credential stops being valid (unix seconds; a JWT's `exp`). `None`: only
    /// when the config changes.
    pub expires_at: Option<u64>,
    /// What to call them on a page: the `name` (else `email`) claim of an OIDC token, or
    /// the `person` of a token entry. Shown beside the principal, never used to decide.
    pub display_name: Option<String>,
}

impl Caller {
    /// A caller with no person link, not known to be human, with a credential that does
    /// not expire by itself.
    pub fn new(principal: Principal, groups: Vec<String>, via: AuthMethod) -> Self {
        Self { principal, groups, via, person: None, holder: Holder::Unverified, expires_at: None, display_name: None }
    }

    /// The one caller of an HTTP endpoint without identity configured.
    pub(crate) fn anonymous() -> Self {
        // A constant that satisfies every Principal rule, so no validation is needed.
        Self::new(Principal(String::from("anonymous")), Vec::new(), AuthMethod::Anonymous)
    }

    /// The display name, else the principal.
    pub fn shown_name(&self) -> &str {
        self.display_name.as_deref().unwrap_or(self.principal.as_str())
    }

    /// True if the caller is a member of `group` (exact, case-sensitive match).
    pub fn in_group(&self, group: &str) -> bool {
        self.groups.iter().any(|g| g == group)
    }

    /// Who this caller counts as when votes are counted and self-approval is checked: the
    /// linked person, else the principal, both folded ([`fold_name`]), in namespaces of
    /// their own so a person named like a principal is not confused with it.
    pub fn counts_as(&self) -> String {
        counts_as(self.principal.as_str(), self.person.as_ref().map(Person::as_str))
    }
}

/// [`Caller::counts_as`] from stored text (a hold keeps its caller's principal and person).
pub fn counts_as(principal: &str, person: Option<&str>) -> String {
    match person {
        Some(person) => format!("person:{}", fold_name(person)),
        None => format!("principal:{}", fold_name(principal)),
    }
}

/// Why a `stdio_principal` spec could not be resolved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StdioPrincipalError {
    #[error("identity.stdio_principal: environment variable {var} is not set")]
    EnvUnset { var: String },
    #[error("identity.stdio_principal: `env:` needs a variable name, e.g. \"env:USER\"")]
    EmptyVarName,
    #[error("identity.stdio_principal: {0}")]
    Invalid(#[from] PrincipalError),
    #[error("identity.stdio_principal: {0}")]
    Clash(String),
}

/// Resolves a `stdio_principal` spec: `"env:VAR"` reads the environment variable `VAR`,
/// anything else is the principal itself.
pub fn resolve_stdio_principal(spec: &str) -> Result<Principal, StdioPrincipalError> {
    resolve_stdio_principal_with(spec, |var| std::env::var(var).ok())
}

/// [`resolve_stdio_principal`] with an injectable environment lookup (tests, and callers
/// that already captured the environment).
pub fn resolve_stdio_principal_with(
    spec: &str,
    lookup: impl FnOnce(&str) -> Option<String>,
) -> Result<Principal, StdioPrincipalError> {
    match spec.strip_prefix("env:") {
        Some("") => Err(StdioPrincipalError::EmptyVarName),
        Some(var) => {
            let value = lookup(var).filter(|v| !v.is_empty()).ok_or_else(|| {
                StdioPrincipalError::EnvUnset {
                    var: var.to_owned(),
                }
            })?;
            Ok(Principal::new(value)?)
        }
        None => Ok(Principal::new(spec)?),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn principal_rejects_empty_control_and_padded_names() {
        assert_eq!(Principal::new(""), Err(PrincipalError::Empty));
        assert_eq!(
            Principal::new("a\nb"),
            Err(PrincipalError::ControlCharacter)
        );
        assert_eq!(
            Principal::new(" alice"),
            Err(PrincipalError::SurroundingWhitespace)
        );
        let long = "x".repeat(Principal::MAX_LEN + 1);
        assert!(matches!(
            Principal::new(long),
            Err(PrincipalError::TooLong { .. })
        ));
        assert_eq!(
            Principal::new("https://idp#123").unwrap().as_str(),
            "https://idp#123"
        );
    }

    #[test]
    fn look_alikes_fold_to_one_key() {
        assert_eq!(fold_name("Alice"), "alice");
        assert_eq!(fold_name("\u{ff41}\u{ff4c}\u{ff49}\u{ff43}\u{ff45}"), "alice");
        assert_eq!(fold_name("STRASSE"), fold_name("stra\u{df}e"));
        assert_ne!(fold_name("alice"), fold_name("alicia"));
        // A person and a principal of the same name are different voters.
        assert_ne!(counts_as("carol", None), counts_as("x", Some("carol")));
        assert_eq!(counts_as("a", Some("Carol")), counts_as("b", Some("carol")));
    }

    #[test]
    fn env_spec_reads_the_named_variable() {
        let p = resolve_stdio_principal_with("env:AIRLOCK_WHO", |var| {
            assert_eq!(var, "AIRLOCK_WHO");
            Some("carol".into())
        })
        .unwrap();
        assert_eq!(p.as_str(), "carol");
    }

    #[test]
    fn env_spec_with_unset_or_empty_variable_is_an_error() {
        let unset = resolve_stdio_principal_with("env:NOPE", |_| None);
        assert_eq!(
            unset,
            Err(StdioPrincipalError::EnvUnset { var: "NOPE".into() })
        );
        let empty = resolve_stdio_principal_with("env:NOPE", |_| Some(String::new()));
        assert!(matches!(empty, Err(StdioPrincipalError::EnvUnset { .. })));
        assert_eq!(
            resolve_stdio_principal_with("env:", |_| None),
            Err(StdioPrincipalError::EmptyVarName)
        );
    }

    #[test]
    fn any_other_spec_is_a_literal_principal() {
        let p = resolve_stdio_principal_with("ops-bot", |_| panic!("no lookup")).unwrap();
        assert_eq!(p.as_str(), "ops-bot");
        // Only the exact `env:` prefix is special.
        let p = resolve_stdio_principal_with("ENV:USER", |_| panic!("no lookup")).unwrap();
        assert_eq!(p.as_str(), "ENV:USER");
    }
}
