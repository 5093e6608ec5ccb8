//! Owns: JWS compact parsing, RS256/ES256 signature checks with ring, JWK parsing, and the
//! claim checks (`iss`, `aud`, `exp`, `nbf`, `sub`, groups).
//! Uses: `ring::signature`, `base64`, `serde_json`.
//! Must not: fetch anything (see `oidc.rs`), or trust a claim before the signature holds.

use std::collections::HashMap;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::signature::{
    ECDSA_P256_SHA256_FIXED, RSA_PKCS1_2048_8192_SHA256, RsaPublicKeyComponents, UnparsedPublicKey,
};
use serde_json::{Map, Value};

use super::TokenProblem;

/// Longest token we parse; real access tokens are a few KiB even with many groups.
pub(crate) const MAX_TOKEN_LEN: usize = 16 * 1024;

/// Clock skew allowed on `exp` and `nbf`, in seconds.
pub(crate) const LEEWAY_SECS: i64 = 60;

/// The only algorithms accepted. `none`, HMAC and everything else are refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Alg {
    Rs256,
    Es256,
}

impl Alg {
    fn from_header(alg: &str) -> Option<Self> {
        match alg {
            "RS256" => Some(Self::Rs256),
            "ES256" => Some(Self::Es256),
            _ => None,
        }
    }
}

/// A public key from a JWKS, ready for ring.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum VerifyingKey {
    /// Big-endian modulus (leading zeros stripped) and exponent.
    Rsa { n: Vec<u8>, e: Vec<u8> },
    /// Uncompressed SEC1 point `04 ‖ x ‖ y` on P-256.
    EcP256 { point: Vec<u8> },
}

impl VerifyingKey {
    fn alg(&self) -> Alg {
        match self {
            Self::Rsa { .. } => Alg::Rs256,
            Self::EcP256 { .. } => Alg::Es256,
        }
    }

    fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        match self {
            Self::Rsa { n, e } => RsaPublicKeyComponents { n, e }
                .verify(&RSA_PKCS1_2048_8192_SHA256, message, signature)
                .is_ok(),
            Self::EcP256 { point } => UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, point)
                .verify(message, signature)
                .is_ok(),
        }
    }
}

/// Parses a JWKS document into `kid → keys`, keeping only signature keys we can use
/// (RSA for RS256, EC P-256 for ES256) that have a `kid`. Others are skipped, not errors:
/// an IdP may publish encryption keys or algorithms we do not accept. A `kid` that names
/// several keys keeps them all, in document order (RFC 7517 §4.5 only says it SHOULD be
/// unique), so a token signed by any of them verifies.
pub(crate) fn parse_jwks(doc: &Value) -> Option<HashMap<String, Vec<VerifyingKey>>> {
    let keys = doc.get("keys")?.as_array()?;
    let mut out = HashMap::new();
    for jwk in keys {
        let Some(kid) = jwk.get("kid").and_then(Value::as_str) else {
            continue;
        };
        match parse_jwk(jwk) {
            Some(key) => out.entry(kid.to_owned()).or_insert_with(Vec::new).push(key),
            None => tracing::debug!(kid, "skipping unusable JWK"),
        }
    }
    Some(out)
}

fn parse_jwk(jwk: &Value) -> Option<VerifyingKey> {
    let field = |name: &str| jwk.get(name).and_then(Value::as_str);
    if field("use").is_some_and(|u| u != "sig") {
        return None;
    }
    let key = match field("kty")? {
        "RSA" => {
            let n = b64(field("n")?)?;
            let e = b64(field("e")?)?;
            let first_nonzero = n.iter().position(|b| *b != 0)?;
            VerifyingKey::Rsa {
                n: n[first_nonzero..].to_vec(),
                e,
            }
        }
        "EC" if field("crv")? == "P-256" => {
            let (x, y) = (b64(field("x")?)?, b64(field("y")?)?);
            if x.len() != 32 || y.len() != 32 {
                return None;
            }
            let mut point = Vec::with_capacity(65);
            point.push(0x04);
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            VerifyingKey::EcP256 { point }
        }
        _ => return None,
    };
    // A JWK that names an algorithm is bound to it: an RSA key marked PS256 is not ours.
    match field("alg") {
        Some(alg) if Alg::from_header(alg) != Some(key.alg()) => None,
        _ => Some(key),
    }
}

fn b64(s: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(s).ok()
}

/// A parsed, not yet verified JWT.
#[derive(Debug)]
pub(crate) struct UnverifiedJwt<'a> {
    pub(crate) alg: Alg,
    pub(crate) kid: String,
    pub(crate) claims: Map<String, Value>,
    signing_input: &'a [u8],
    signature: Vec<u8>,
}

/// True if `token` has the shape of a JWS compact serialization (three dot-separated parts).
pub(crate) fn looks_like_jwt(token: &str) -> bool {
    token.split('.').count() == 3
}

/// Splits and decodes a compact JWS. Rejects `alg: none` and every algorithm other than
/// RS256/ES256 before any key is looked up, and any `crit` header (we implement no
/// extensions, RFC 7515 §4.1.11).
pub(crate) fn parse(token: &str) -> Result<UnverifiedJwt<'_>, TokenProblem> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(TokenProblem::Malformed);
    }
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenProblem::Malformed);
    };
    let header = decode_object(h)?;
    let alg = header
        .get("alg")
        .and_then(Value::as_str)
        .ok_or(TokenProblem::Malformed)?;
    let alg = Alg::from_header(alg).ok_or(TokenProblem::UnsupportedAlgorithm)?;
    if header.contains_key("crit") {
        return Err(TokenProblem::Malformed);
    }
    let kid = match header.get("kid") {
        Some(Value::String(kid)) if !kid.is_empty() => kid.clone(),
        Some(_) => return Err(TokenProblem::Malformed),
        None => return Err(TokenProblem::MissingKeyId),
    };
    let claims = decode_object(p)?;
    let signature = b64(s).ok_or(TokenProblem::Malformed)?;
    let signing_input = &token.as_bytes()[..h.len() + 1 + p.len()];
    Ok(UnverifiedJwt {
        alg,
        kid,
        claims,
        signing_input,
        signature,
    })
}

fn decode_object(part: &str) -> Result<Map<String, Value>, TokenProblem> {
    let bytes = b64(part).ok_or(TokenProblem::Malformed)?;
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(TokenProblem::Malformed),
    }
}

impl UnverifiedJwt<'_> {
    /// The unverified `iss`, used only to pick which issuer's keys to check against.
    pub(crate) fn claimed_issuer(&self) -> Option<&str> {
        self.claims.get("iss").and_then(Value::as_str)
    }

    /// Checks the signature with `key`, refusing a key whose type disagrees with the
    /// header's `alg` (no RSA key used for ES256 or the reverse).
    pub(crate) fn verify(&self, key: &VerifyingKey) -> Result<(), TokenProblem> {
        if key.alg() != self.alg {
            return Err(TokenProblem::KeyAlgorithmMismatch);
        }
        if key.verify(self.signing_input, &self.signature) {
            Ok(())
        } else {
            Err(TokenProblem::BadSignature)
        }
    }
}

/// What an issuer expects of a token's claims.
#[derive(Debug)]
pub(crate) struct ClaimRules<'a> {
    pub(crate) issuer: &'a str,
    pub(crate) audience: &'a str,
    pub(crate) groups_claim: Option<&'a str>,
}

/// The claims Airlock keeps from a verified token.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Identity {
    pub(crate) subject: String,
    pub(crate) groups: Vec<String>,
    /// The token's `exp` (seconds since the epoch).
    pub(crate) expires_at: i64,
}

/// Checks `iss`, `aud`, `exp` (required), `nbf` (optional) and `sub` (required) against
/// `rules` at `now` (seconds since the epoch), with [`LEEWAY_SECS`] of clock skew, and
/// extracts the groups. Call only after [`UnverifiedJwt::verify`] succeeded.
pub(crate) fn check_claims(
    claims: &Map<String, Value>,
    rules: &ClaimRules<'_>,
    now: i64,
) -> Result<Identity, TokenProblem> {
    if claims.get("iss").and_then(Value::as_str) != Some(rules.issuer) {
        return Err(TokenProblem::UnknownIssuer);
    }
    let audience_ok = match claims.get("aud") {
        Some(Value::String(aud)) => aud == rules.audience,
        Some(Value::Array(auds)) => auds.iter().any(|a| a.as_str() == Some(rules.audience)),
        _ => false,
    };
    if !audience_ok {
        return Err(TokenProblem::WrongAudience);
    }
    let exp = numeric_date(claims, "exp")?.ok_or(TokenProblem::MissingClaim("exp"))?;
    if now > exp.saturating_add(LEEWAY_SECS) {
        return Err(TokenProblem::Expired);
    }
    if let Some(nbf) = numeric_date(claims, "nbf")?
        && now < nbf.saturating_sub(LEEWAY_SECS)
    {
        return Err(TokenProblem::NotYetValid);
    }
    let subject = match claims.get("sub") {
        Some(Value::String(sub)) if !sub.is_empty() => sub.clone(),
        Some(_) => return Err(TokenProblem::InvalidClaim("sub")),
        None => return Err(TokenProblem::MissingClaim("sub")),
    };
    let groups = match rules.groups_claim {
        Some(name) => groups(claims, name)?,
        None => Vec::new(),
    };
    Ok(Identity { subject, groups, expires_at: exp })
}

/// A NumericDate (RFC 7519 §2): a JSON number of seconds, possibly fractional.
fn numeric_date(
    claims: &Map<String, Value>,
    name: &'static str,
) -> Result<Option<i64>, TokenProblem> {
    match claims.get(name) {
        None => Ok(None),
        Some(v) => match (v.as_i64(), v.as_f64()) {
            (Some(i), _) => Ok(Some(i)),
            (None, Some(f)) if f.is_finite() => Ok(Some(f.floor() as i64)),
            _ => Err(TokenProblem::InvalidClaim(name)),
        },
    }
}

/// Groups from `name`: a top-level claim, or a JSON pointer when it starts with `/`
/// (e.g. Keycloak's `/realm_access/roles`). Absent means no groups; a single string is
/// one group; anything but strings is an error rather than a silent empty list.
fn groups(claims: &Map<String, Value>, name: &str) -> Result<Vec<String>, TokenProblem> {
    let value = match name.strip_prefix('/') {
        Some(path) => match path.split_once('/') {
            Some((first, rest)) => claims
                .get(first)
                .and_then(|v| v.pointer(&format!("/{rest}"))),
            None => claims.get(path),
        },
        None => claims.get(name),
    };
    match value {
        None => Ok(Vec::new()),
        Some(Value::String(g)) => Ok(vec![g.clone()]),
        Some(Value::Array(items)) => items
            .iter()
            .map(|g| {
                g.as_str()
                    .map(str::to_owned)
                    .ok_or(TokenProblem::InvalidClaim("groups"))
            })
            .collect(),
        Some(_) => Err(TokenProblem::InvalidClaim("groups")),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn rules() -> ClaimRules<'static> {
        ClaimRules {
            issuer: "https://idp",
            audience: "api://airlock",
            groups_claim: Some("groups"),
        }
    }

    fn claims(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => unreachable!(),
        }
    }

    fn enc(v: &Value) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
    }

    #[test]
    fn audience_may_be_a_string_or_an_array() {
        let now = 1_000_000;
        let base = json!({"iss": "https://idp", "sub": "u1", "exp": now + 10});
        for aud in [json!("api://airlock"), json!(["other", "api://airlock"])] {
            let mut c = claims(base.clone());
            c.insert("aud".into(), aud);
            assert!(check_claims(&c, &rules(), now).is_ok());
        }
        for aud in [json!("other"), json!(["other"]), json!(7)] {
            let mut c = claims(base.clone());
            c.insert("aud".into(), aud);
            assert_eq!(
                check_claims(&c, &rules(), now),
                Err(TokenProblem::WrongAudience)
            );
        }
    }

    #[test]
    fn exp_and_nbf_allow_the_documented_leeway_and_no_more() {
        let now = 1_000_000;
        let at = |exp: i64, nbf: i64| {
            claims(
                json!({"iss": "https://idp", "aud": "api://airlock", "sub": "u", "exp": exp, "nbf": nbf}),
            )
        };
        assert!(check_claims(&at(now - LEEWAY_SECS, now), &rules(), now).is_ok());
        assert_eq!(
            check_claims(&at(now - LEEWAY_SECS - 1, now), &rules(), now),
            Err(TokenProblem::Expired)
        );
        assert!(check_claims(&at(now + 100, now + LEEWAY_SECS), &rules(), now).is_ok());
        assert_eq!(
            check_claims(&at(now + 100, now + LEEWAY_SECS + 1), &rules(), now),
            Err(TokenProblem::NotYetValid)
        );
        let no_exp = claims(json!({"iss": "https://idp", "aud": "api://airlock", "sub": "u"}));
        assert_eq!(
            check_claims(&no_exp, &rules(), now),
            Err(TokenProblem::MissingClaim("exp"))
        );
    }

    #[test]
    fn groups_come_from_the_configured_claim_or_pointer() {
        let now = 0;
        let c = claims(json!({
            "iss": "https://idp", "aud": "api://airlock", "sub": "u", "exp": 100,
            "groups": ["sre", "dev"], "realm_access": {"roles": ["admin"]}, "bad": [1]
        }));
        assert_eq!(
            check_claims(&c, &rules(), now).unwrap().groups,
            vec!["sre", "dev"]
        );
        let pointer = ClaimRules {
            groups_claim: Some("/realm_access/roles"),
            ..rules()
        };
        assert_eq!(
            check_claims(&c, &pointer, now).unwrap().groups,
            vec!["admin"]
        );
        let bad = ClaimRules {
            groups_claim: Some("bad"),
            ..rules()
        };
        assert_eq!(
            check_claims(&c, &bad, now),
            Err(TokenProblem::InvalidClaim("groups"))
        );
        let absent = ClaimRules {
            groups_claim: Some("roles"),
            ..rules()
        };
        assert!(check_claims(&c, &absent, now).unwrap().groups.is_empty());
    }

    #[test]
    fn only_rs256_and_es256_headers_parse() {
        let body = enc(&json!({"iss": "x"}));
        for alg in ["none", "HS256", "PS256", "RS512", "ES384", "rs256"] {
            let token = format!("{}.{body}.", enc(&json!({"alg": alg, "kid": "k"})));
            assert_eq!(
                parse(&token).unwrap_err(),
                TokenProblem::UnsupportedAlgorithm,
                "{alg}"
            );
        }
        let token = format!("{}.{body}.AAAA", enc(&json!({"alg": "ES256", "kid": "k"})));
        assert_eq!(parse(&token).unwrap().alg, Alg::Es256);
        let crit = format!(
            "{}.{body}.AAAA",
            enc(&json!({"alg": "ES256", "kid": "k", "crit": ["b64"]}))
        );
        assert_eq!(parse(&crit).unwrap_err(), TokenProblem::Malformed);
        let no_kid = format!("{}.{body}.AAAA", enc(&json!({"alg": "ES256"})));
        assert_eq!(parse(&no_kid).unwrap_err(), TokenProblem::MissingKeyId);
    }

    #[test]
    fn malformed_tokens_are_refused_before_any_key_lookup() {
        for token in [
            "",
            "a.b",
            "a.b.c.d",
            "!!!.e30.AA",
            "e30.e30.AA",
            "W10.e30.AA",
        ] {
            assert!(parse(token).is_err(), "{token:?}");
        }
        let huge = "a".repeat(MAX_TOKEN_LEN + 1);
        assert_eq!(parse(&huge).unwrap_err(), TokenProblem::Malformed);
    }

    #[test]
    fn jwk_alg_and_use_bind_the_key() {
        let xy = URL_SAFE_NO_PAD.encode([1u8; 32]);
        let ec = json!({"kty": "EC", "crv": "P-256", "x": xy, "y": xy});
        assert!(parse_jwk(&ec).is_some());
        let mut wrong_alg = ec.clone();
        wrong_alg["alg"] = json!("RS256");
        assert!(parse_jwk(&wrong_alg).is_none());
        let mut enc_use = ec.clone();
        enc_use["use"] = json!("enc");
        assert!(parse_jwk(&enc_use).is_none());
        let p384 = json!({"kty": "EC", "crv": "P-384", "x": xy, "y": xy});
        assert!(parse_jwk(&p384).is_none());
        let oct = json!({"kty": "oct", "k": "AAAA"});
        assert!(parse_jwk(&oct).is_none());
    }
}
