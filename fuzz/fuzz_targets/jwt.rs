//! Bearer JWTs through the OIDC steps that need no network: `jwt::parse`, the key for the
//! token's `kid` from a JWKS, the signature check, and `check_claims`. Tokens are either
//! raw text or built from generated header and claims objects; a built token may be
//! signed with this process's ES256 key (published in the JWKS), so verified tokens with
//! arbitrary claims reach the claim checks as they would from a real issuer.
#![no_main]

use std::sync::OnceLock;

use airlock_fuzz::{object, value, word};
use arbitrary::{Arbitrary, Result, Unstructured};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use libfuzzer_sys::fuzz_target;
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use serde_json::{Value, json};

const KID: &str = "fuzz-key";
const ISSUER: &str = "https://idp.example";
const AUDIENCE: &str = "airlock";

struct Key {
    pair: EcdsaKeyPair,
    jwks: Value,
}

fn key() -> &'static Key {
    static KEY: OnceLock<Key> = OnceLock::new();
    KEY.get_or_init(|| {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).expect("a key");
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).expect("a key");
        let point = pair.public_key().as_ref();
        let jwks = json!({"keys": [
            {"kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": KID,
             "x": B64.encode(&point[1..33]), "y": B64.encode(&point[33..65])},
            {"kty": "RSA", "kid": "rsa", "n": B64.encode([0xc5; 256]), "e": "AQAB"},
        ]});
        Key { pair, jwks }
    })
}

#[derive(Debug)]
enum Token {
    Raw(String),
    Built { header: Value, claims: Value, sign: bool, signature: Vec<u8> },
}

impl<'a> Arbitrary<'a> for Token {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        if u.ratio(1, 5)? {
            return Ok(Token::Raw(String::arbitrary(u)?));
        }
        let mut header = object(u, 1)?;
        if u.ratio(7, 8)? {
            header.insert("alg".into(), Value::from(*u.choose(&["ES256", "RS256", "none", "HS256"])?));
        }
        if u.ratio(7, 8)? {
            header.insert("kid".into(), Value::from(if u.ratio(3, 4)? { KID.to_owned() } else { word(u)? }));
        }
        let mut claims = object(u, 3)?;
        for (name, likely) in [("iss", ISSUER), ("aud", AUDIENCE), ("sub", "alice")] {
            if u.ratio(3, 4)? {
                claims.insert(name.into(), if u.ratio(3, 4)? { Value::from(likely) } else { value(u, 1)? });
            }
        }
        for name in ["exp", "nbf"] {
            if u.ratio(2, 3)? {
                claims.insert(name.into(), value(u, 0)?);
            }
        }
        Ok(Token::Built {
            header: Value::Object(header),
            claims: Value::Object(claims),
            sign: u.ratio(3, 4)?,
            signature: Vec::arbitrary(u)?,
        })
    }
}

#[derive(Debug, Arbitrary)]
struct Input {
    token: Token,
    groups_claim: Option<String>,
    now: i64,
}

fuzz_target!(|input: Input| {
    let key = key();
    let text = match &input.token {
        Token::Raw(text) => text.clone(),
        Token::Built { header, claims, sign, signature } => {
            let signing_input = format!("{}.{}", B64.encode(header.to_string()), B64.encode(claims.to_string()));
            let signature = if *sign {
                key.pair.sign(&SystemRandom::new(), signing_input.as_bytes()).map_or(signature.clone(), |s| s.as_ref().to_vec())
            } else {
                signature.clone()
            };
            format!("{signing_input}.{}", B64.encode(signature))
        }
    };
    let outcome = airlock::fuzzing::jwt(&text, &key.jwks, ISSUER, AUDIENCE, input.groups_claim.as_deref(), input.now);
    if outcome.verified {
        let Token::Built { header, sign: true, .. } = &input.token else {
            panic!("a token this target did not sign verified: {text}");
        };
        assert_eq!(header["alg"], "ES256");
    }
});
