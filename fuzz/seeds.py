#!/usr/bin/env python3
"""Writes the seed corpora, fuzz/seeds/<target>/, from the repository's own fixtures:
tests/vectors, the shipped config, manifests and policies, examples/, and the JSON-RPC
and Slack messages the integration tests send. Run by fuzz/run; the output is not
committed (it follows the fixtures)."""
import hashlib, json, os, re, shutil, sys, urllib.parse

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "fuzz", "seeds")


def rd(*p):
    with open(os.path.join(ROOT, *p), "rb") as f:
        return f.read()


def put(target, name, data):
    d = os.path.join(OUT, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


def files(*dirs, ext=".toml"):
    for d in dirs:
        for base, _, names in os.walk(os.path.join(ROOT, d)):
            for n in sorted(names):
                if n.endswith(ext):
                    yield os.path.relpath(os.path.join(base, n), ROOT)


# Merkle helpers (RFC 6962), for proofs and frontiers matching tests/vectors/chain.json.
def node(a, b):
    return hashlib.sha256(b"\x01" + a + b).digest()


def root(leaves):
    if len(leaves) == 1:
        return leaves[0]
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return node(root(leaves[:k]), root(leaves[k:]))


def path(leaves, i):
    if len(leaves) == 1:
        return []
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    if i < k:
        return path(leaves[:k], i) + [root(leaves[k:])]
    return path(leaves[k:], i - k) + [root(leaves[:k])]


def frontier(leaves):
    out, start = [], 0
    for h in reversed(range(64)):
        if len(leaves) & (1 << h):
            out.append(root(leaves[start:start + (1 << h)]).hex())
            start += 1 << h
    return out


def dictionary(target, words):
    """A libFuzzer dictionary, seeds/<target>.dict (fuzz/run passes it with -dict)."""
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, f"{target}.dict"), "w") as f:
        for w in sorted(set(words)):
            escaped = "".join(chr(b) if 32 <= b < 127 and b not in b'"\\' else f"\\x{b:02x}" for b in w.encode())
            f.write(f'"{escaped}"\n')


def toml_keys():
    """The keys the TOML files may hold: every field of the Raw* structs, and syntax."""
    words = ["[[rule]]", "[tools.", "[identity]", "[[identity.tokens]]", "[[identity.oidc]]", "[gateway]",
             "[http]", "[audit]", "[approvals]", "[approvals.slack]", "[approvals.teams]", "[approvals.web]",
             "[approvals.slack.users]", "[servers.", " = ", '"""', "'''", "[", "]", "{", "}", "true", "1e999",
             '"30m"', '"env:USER"', '"critical"', '"approve"', '"group:sre"', '"/a/*"']
    for src in ("src/config/raw.rs", "src/manifest.rs", "src/policy/rule.rs"):
        text = rd(*src.split("/")).decode()
        words += re.findall(r"^\s+(?:pub )?(\w+): Option<", text, re.M)
    return words


JSON_WORDS = ["{", "}", "[", "]", ":", ",", '"', "null", "true", "false", "-0", "1e400", "\\u0000", "\\ud800",
              '"jsonrpc"', '"2.0"', '"id"', '"method"', '"params"', '"result"', '"error"', '"tools/call"',
              '"initialize"', '"kind"', '"checkpoint"', '"export"', '"seq"', '"frontier"', '"chain_head"',
              '"keys"', '"kty"', '"kid"', '"RSA"', '"EC"', '"P-256"', "event:", "data:", "\n\n", "\r\n"]


def main():
    shutil.rmtree(OUT, ignore_errors=True)
    for target in ("config_toml", "manifest_toml", "policy_toml"):
        dictionary(target, toml_keys())
    for target in ("stdio_lines", "sse_stream", "jwks", "audit_export", "audit_stored", "slack_payload"):
        dictionary(target, JSON_WORDS)
    # TOML: config, manifests, policies.
    for i, f in enumerate(["airlock.toml"] + list(files("examples", ext="airlock.toml"))):
        put("config_toml", f"shipped-{i}", rd(f))
    for i, f in enumerate(files("tool-manifests", "examples")):
        if "/tool-manifests/" in "/" + f:
            put("manifest_toml", f"shipped-{i}", rd(f))
    for i, f in enumerate(files("policies", "examples")):
        if "/policies/" in "/" + f:
            put("policy_toml", f"shipped-{i}", rd(f))

    # JSON-RPC lines, as the integration tests send them.
    init = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "raw", "version": "0"}}}
    lines = [
        init,
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        {"jsonrpc": "2.0", "id": 2, "method": "tools/list", "params": {}},
        {"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "demo__echo", "arguments": {"text": "ok"}, "_meta": {"progressToken": 1}}},
        {"jsonrpc": "2.0", "id": "s", "result": {"action": "accept", "content": {"approve": True}}},
        {"jsonrpc": "2.0", "id": 4, "error": {"code": -32601, "message": "no"}},
        {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 3}},
        {"jsonrpc": "2.0", "id": 7, "params": 42},
    ]
    stream = "\n".join(json.dumps(l) for l in lines) + "\n"
    put("stdio_lines", "session", stream)
    put("stdio_lines", "garbage", "not json\n{\"jsonrpc\":\"2.0\"\n\n[1,2]\n")
    for i, l in enumerate(lines):
        put("stdio_lines", f"line-{i}", json.dumps(l) + "\n")
    # SSE: first byte is the chunk size.
    sse = "event: endpoint\ndata: /message?sessionId=abc\n\n" + "".join(
        f"event: message\ndata: {json.dumps(l)}\n\n" for l in lines) + "data: a\ndata: b\r\n\r\n: comment\n\n"
    for size in (1, 7, 255):
        put("sse_stream", f"stream-{size}", bytes([size]) + sse.encode())

    # Bearer headers.
    for i, h in enumerate(["Bearer s3cret-token", "bearer   s3cret-token  ", "Basic YWxpY2U6eA==",
                           "Bearer eyJhbGciOiJFUzI1NiIsImtpZCI6ImsifQ.eyJzdWIiOiJhIn0.c2ln", "Bearer", "Bearer a b"]):
        put("bearer_header", f"h-{i}", h)

    # Slack interaction bodies.
    click = {"type": "block_actions", "user": {"id": "U1", "username": "u1"}, "trigger_id": "t",
             "actions": [{"type": "button", "action_id": "airlock_approve", "value": "0f1e2d3c"}]}
    modal = {"type": "view_submission", "user": {"id": "U1"}, "view": {"callback_id": "airlock_deny_reason",
             "private_metadata": "0f1e2d3c", "state": {"values": {"reason": {"reason": {"value": "no"}}}}}}
    for i, p in enumerate([click, modal]):
        put("slack_payload", f"p-{i}", urllib.parse.urlencode({"payload": json.dumps(p)}))
    slack = json.loads(rd("tests", "vectors", "slack_signature.json"))
    put("slack_payload", "published", slack["body"])

    # JWKS documents.
    ec = {"kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": "k1",
          "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU", "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}
    rsa = {"kty": "RSA", "use": "sig", "kid": "k2", "alg": "RS256", "e": "AQAB", "n": "sXchDaQebHnPiGvyDOAT4saGEUetSyo9MKLOoWFsueri23bOdgWp4Dy1WlUzewbgBHod5pcM9H95GQRV3JDXboIRROSBigeC5yjU1hGzHHyXss8UDprecbAYxknTcQkhslANGRUZmdTOQ5qTRsLAt6BTYuyvVRdhS8exSZEy_c4gs_7svlJJQ4H9_NxsiIoLwAEk7-Q3UXERGYw_75IDrGA84-lA_-Ct4eTlXHBIY2EaV7t7LjJaynVJCpkv4LKjTTAumiGUIuQhrNhZLuF_RJLqHpM2kgWFLU7-VTdL1VbC2tejvcI2BlMkEpk1BzBZI0KQB0GaDWFLN-aEAw3vRw"}
    docs = [{"keys": [ec, rsa]}, {"keys": [dict(ec, use="enc"), dict(rsa, alg="PS256"), {"kid": "x"}]}, {"keys": []}, {}]
    for i, d in enumerate(docs):
        put("jwks", f"doc-{i}", json.dumps(d))

    # Audit: records and checkpoint of tests/vectors, as export, stored state and proofs.
    chain = json.loads(rd("tests", "vectors", "chain.json"))
    cp = json.loads(rd("tests", "vectors", "checkpoint.json"))
    records = [s["record"] for s in chain["steps"]]
    leaves = [bytes.fromhex(s["leaf_hash"]) for s in chain["steps"]]
    put("audit_export", "whole", "\n".join(records + [cp["checkpoint"]]) + "\n")
    header = {"kind": "export", "since": 1, "chain_head": "00" * 32, "frontier": []}
    put("audit_export", "with-header", "\n".join([json.dumps(header)] + records + [cp["checkpoint"]]) + "\n")
    header = {"kind": "export", "since": 4, "chain_head": chain["steps"][2]["chain_hash"], "frontier": frontier(leaves[:3])}
    put("audit_export", "since-4", "\n".join([json.dumps(header)] + records[3:] + [cp["checkpoint"]]) + "\n")
    put("audit_stored", "checkpoint", cp["checkpoint"])
    state = {"seq": 7, "chain_head": chain["steps"][6]["chain_hash"], "frontier": frontier(leaves), "checkpoints": 1, "key": cp["public_key"]}
    put("audit_stored", "state", json.dumps(state))
    for i in (0, 3, 6):
        proof = {"seq": i + 1, "record": json.loads(records[i]), "path": [h.hex() for h in path(leaves, i)], "checkpoint": json.loads(cp["checkpoint"])}
        put("audit_stored", f"proof-{i + 1}", json.dumps(proof))
    put("audit_stored", "key", cp["public_key"])
    put("audit_stored", "signature", cp["signature"])


if __name__ == "__main__":
    sys.exit(main())
