//! Owns: tests of static tokens, the `Authorization` header, the 401 pieces and config checks.
//! Uses: the helpers of `identity::tests`.
//! Must not: reach any network but loopback.

use serde_json::json;

use super::*;

fn sha256_hex(token: &str) -> String {
    hex::encode(ring::digest::digest(
        &ring::digest::SHA256,
        token.as_bytes(),
    ))
}

fn token_config() -> IdentityConfig {
    IdentityConfig {
        stdio_principal: Some("ops".into()),
        tokens: vec![
            TokenEntry {
                name: "alice".into(),
                sha256: sha256_hex("s3cret-a"),
                groups: vec!["sre".into()],
                ..TokenEntry::default()
            },
            TokenEntry {
                name: "bob".into(),
                sha256: sha256_hex("s3cret-b"),
                groups: vec![],
                ..TokenEntry::default()
            },
        ],
        ..IdentityConfig::default()
    }
}

#[tokio::test]
async fn right_static_token_is_accepted_with_its_name_and_groups() {
    let auth = Authenticator::new(token_config()).unwrap();
    assert!(auth.is_enabled());
    let caller = auth.authenticate(Some("Bearer s3cret-a")).await.unwrap();
    assert_eq!(caller.principal.as_str(), "alice");
    assert_eq!(caller.groups, vec!["sre"]);
    assert_eq!(caller.via, AuthMethod::StaticToken);
    assert!(caller.in_group("sre"));
    // The scheme is case-insensitive (RFC 7235).
    let bob = auth.authenticate(Some("bearer s3cret-b")).await.unwrap();
    assert_eq!(bob.principal.as_str(), "bob");
}

#[tokio::test]
async fn wrong_static_token_is_rejected_without_echoing_it() {
    let auth = Authenticator::new(token_config()).unwrap();
    for header in [
        "Bearer s3cret-c",
        "Bearer s3cret-a-and-more",
        "Bearer S3CRET-A",
    ] {
        let err = auth.authenticate(Some(header)).await.unwrap_err();
        assert_eq!(err, AuthError::InvalidToken(TokenProblem::UnknownToken));
        assert!(!err.to_string().contains("s3cret"));
        assert!(!www_authenticate("https://a.example", &err).contains("s3cret"));
    }
    // A JWT-shaped token with no OIDC configured is just an unknown token.
    let err = auth.authenticate(Some("Bearer a.b.c")).await.unwrap_err();
    assert_eq!(err, AuthError::InvalidToken(TokenProblem::UnknownToken));
}

#[tokio::test]
async fn missing_or_non_bearer_credentials_are_missing_not_invalid() {
    let auth = Authenticator::new(token_config()).unwrap();
    for header in [None, Some("Basic YWxpY2U6eA=="), Some("")] {
        assert_eq!(
            auth.authenticate(header).await,
            Err(AuthError::MissingCredentials),
            "{header:?}"
        );
    }
    for header in ["Bearer", "Bearer    ", "Bearer a b"] {
        assert_eq!(
            auth.authenticate(Some(header)).await,
            Err(AuthError::InvalidToken(TokenProblem::Malformed)),
            "{header:?}"
        );
    }
}

#[tokio::test]
async fn without_tokens_or_issuers_every_http_caller_is_anonymous() {
    let auth = Authenticator::new(IdentityConfig::default()).unwrap();
    assert!(!auth.is_enabled());
    for header in [None, Some("Bearer whatever")] {
        let caller = auth.authenticate(header).await.unwrap();
        assert_eq!(
            (caller.principal.as_str(), caller.via),
            ("anonymous", AuthMethod::Anonymous)
        );
    }
}

#[test]
fn stdio_caller_uses_the_configured_principal() {
    let auth = Authenticator::new(token_config()).unwrap();
    let caller = auth.stdio_caller().unwrap();
    assert_eq!(
        (caller.principal.as_str(), caller.via),
        ("ops", AuthMethod::Stdio)
    );
    let unset = IdentityConfig {
        stdio_principal: Some("env:AIRLOCK_TEST_SURELY_UNSET_VAR".into()),
        ..IdentityConfig::default()
    };
    let err = Authenticator::new(unset)
        .unwrap()
        .stdio_caller()
        .unwrap_err();
    assert!(matches!(err, StdioPrincipalError::EnvUnset { .. }));
}

#[test]
fn www_authenticate_points_at_the_resource_metadata() {
    let missing = www_authenticate(
        "https://airlock.example.com/",
        &AuthError::MissingCredentials,
    );
    assert_eq!(
        missing,
        r#"Bearer resource_metadata="https://airlock.example.com/.well-known/oauth-protected-resource""#
    );
    let expired = www_authenticate(
        "https://airlock.example.com",
        &AuthError::InvalidToken(TokenProblem::Expired),
    );
    assert_eq!(
        expired,
        concat!(
            r#"Bearer resource_metadata="https://airlock.example.com/.well-known/oauth-protected-resource", "#,
            r#"error="invalid_token", error_description="invalid token: the token has expired""#
        )
    );
}

#[test]
fn every_auth_error_message_is_a_valid_quoted_string() {
    use TokenProblem::*;
    let problems = [
        Malformed,
        UnknownToken,
        UnsupportedAlgorithm,
        MissingKeyId,
        UnknownIssuer,
        UnknownKey,
        KeyAlgorithmMismatch,
        BadSignature,
        Expired,
        NotYetValid,
        WrongAudience,
        MissingClaim("exp"),
        InvalidClaim("sub"),
    ];
    let errors = problems
        .into_iter()
        .map(AuthError::InvalidToken)
        .chain([AuthError::MissingCredentials, AuthError::KeysUnavailable]);
    for err in errors {
        let msg = err.to_string();
        assert!(
            msg.chars().all(|c| c.is_ascii_graphic() || c == ' '),
            "{msg}"
        );
        assert!(!msg.contains('"') && !msg.contains('\\'), "{msg}");
    }
}

#[tokio::test]
async fn protected_resource_metadata_lists_the_issuers() {
    let key = TestKey::es256("k");
    let idp = Idp::start(&[&key]).await;
    let meta = idp
        .authenticator()
        .protected_resource_metadata("https://airlock.example.com/");
    assert_eq!(meta["resource"], "https://airlock.example.com");
    assert_eq!(meta["authorization_servers"], json!([idp.issuer()]));
    assert_eq!(meta["bearer_methods_supported"], json!(["header"]));
    assert_eq!(
        resource_metadata_url("https://airlock.example.com/"),
        "https://airlock.example.com/.well-known/oauth-protected-resource"
    );
}

#[test]
fn bad_identity_config_is_refused_with_the_entry_named() {
    let bad_hex = IdentityConfig {
        tokens: vec![TokenEntry {
            name: "carol".into(),
            sha256: "not-hex".into(),
            groups: vec![],
            ..TokenEntry::default()
        }],
        ..IdentityConfig::default()
    };
    let err = Authenticator::new(bad_hex).unwrap_err().to_string();
    assert!(err.contains("carol") && err.contains("sha256"), "{err}");

    let mut dup = token_config();
    dup.tokens[1].sha256 = dup.tokens[0].sha256.to_uppercase();
    assert!(matches!(
        Authenticator::new(dup),
        Err(IdentityConfigError::DuplicateToken { .. })
    ));

    let bad_name = IdentityConfig {
        tokens: vec![TokenEntry {
            name: "".into(),
            sha256: sha256_hex("x"),
            groups: vec![],
            ..TokenEntry::default()
        }],
        ..IdentityConfig::default()
    };
    assert!(matches!(
        Authenticator::new(bad_name),
        Err(IdentityConfigError::TokenName { .. })
    ));

    install_crypto_provider();
    for issuer in [
        "http://idp.example.com",
        "ftp://localhost",
        "not a url",
        "https://idp/?x=1",
    ] {
        let config = IdentityConfig {
            oidc: vec![OidcIssuer {
                issuer: issuer.into(),
                audience: "a".into(),
                ..OidcIssuer::default()
            }],
            ..IdentityConfig::default()
        };
        assert!(
            matches!(
                Authenticator::new(config),
                Err(IdentityConfigError::Issuer { .. })
            ),
            "{issuer}"
        );
    }
    for issuer in [
        "https://idp.example.com",
        "http://localhost:8080",
        "http://[::1]:1",
        "http://127.0.0.1",
    ] {
        let config = IdentityConfig {
            oidc: vec![OidcIssuer {
                issuer: issuer.into(),
                audience: "a".into(),
                ..OidcIssuer::default()
            }],
            ..IdentityConfig::default()
        };
        assert!(Authenticator::new(config).is_ok(), "{issuer}");
    }
}

#[test]
fn authenticator_is_shareable_and_its_future_is_send() {
    fn assert_send_sync<T: Send + Sync>(_: &T) {}
    fn assert_send<T: Send>(_: &T) {}
    let auth = Authenticator::new(token_config()).unwrap();
    assert_send_sync(&auth);
    let fut = auth.authenticate(None);
    assert_send(&fut);
}

#[test]
fn a_stdio_principal_that_is_a_token_name_is_refused_when_stdio_starts() {
    let config = IdentityConfig {
        stdio_principal: Some("Alice".into()),
        tokens: vec![TokenEntry { name: "alice".into(), sha256: sha256_hex("t"), ..TokenEntry::default() }],
        ..IdentityConfig::default()
    };
    // An HTTP-only gateway has no stdio caller, so it starts.
    let auth = Authenticator::new(config).unwrap();
    assert!(matches!(auth.stdio_caller(), Err(StdioPrincipalError::Clash(_))));
    let reserved = IdentityConfig {
        tokens: vec![TokenEntry { name: "http://idp#carol".into(), sha256: sha256_hex("t"), ..TokenEntry::default() }],
        ..IdentityConfig::default()
    };
    assert!(matches!(Authenticator::new(reserved), Err(IdentityConfigError::ReservedName(_))));
}
