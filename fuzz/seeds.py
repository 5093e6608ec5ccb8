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


RECORD_WORDS = ['"v"', '"time"', '"principal"', '"session"', '"call_id"', '"tool"', '"risk"', '"decision"', '"reason"',
                '"approval_id"', '"approver"', '"comment"', '"detail"', '"duration_us"', '"server"', '"new_key_id"',
                '"call_"', '"approval_"', '"key_rotated"', '"decision"', '"session_opened"', '"gateway_started"',
                '"2026-11-21T17:00:01.000000Z"']

CONTROL_WORDS = ['"airlock"', '"mode"', '"op"', '"mcp"', '"config"', '"ok"', '"refused"', '"code"', '"message"', '"item"',
                 '"done"', '"status"', '"stop"', '"tools_list"', '"tools_accept"', '"log_show"', '"log_tail"',
                 '"log_verify"', '"log_export"', '"log_prove"', '"log_checkpoint"', '"approvals_list"',
                 '"approvals_show"', '"approvals_decide"', '"keys_rotate"', '"reload"', '"report"', '"lines"',
                 '"follow"', '"pubkey"', '"since"', '"consistency"', '"to"', '"from"', '"token"', '"state"',
                 '"decision"', '"approve"', '"deny"', '"comment"', '"json"', '"2026-11-01"', '"not_operator"',
                 '"bad_request"', '"pid"', '"version"', '"principal"', '"approvals"', '"approval"']


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

    # OCSF: every stored record of the vectors (first byte 0: raw bytes).
    dictionary("ocsf_record", JSON_WORDS + RECORD_WORDS)
    vector_records = records + [json.dumps(json.loads(rd("tests", "vectors", "record.json"))["record"])]
    for i, r in enumerate(vector_records):
        put("ocsf_record", f"record-{i}", b"\0" + r.encode())
    for i, kind in enumerate(["approval_decided", "key_rotated", "gateway_started", "session_refused", "new_kind"]):
        rec = {"v": 2, "seq": 100 + i, "time": "2026-11-21T17:00:01.000000Z", "kind": kind, "principal": "alice",
               "approver": "bob", "approval_id": "a1", "tool": "fs__write", "decision": "approve",
               "detail": {"server": "fs", "new_key_id": "k2"}, "duration_us": 1500}
        put("ocsf_record", f"kind-{i}", b"\0" + json.dumps(rec, sort_keys=True, separators=(",", ":")).encode())

    # Control socket, gateway side (first byte 0: raw bytes): a hello, then op requests.
    dictionary("control_requests", JSON_WORDS + CONTROL_WORDS)
    token = "s3cret-token"
    requests = [
        {"op": "status"}, {"op": "stop"}, {"op": "tools_list"}, {"op": "tools_accept", "name": "demo__echo"},
        {"op": "log_show", "seq": 3}, {"op": "log_tail", "lines": 10, "follow": True}, {"op": "log_verify"},
        {"op": "log_verify", "pubkey": cp["public_key"]}, {"op": "log_export", "since": 4, "follow": False},
        {"op": "log_prove", "seq": 2}, {"op": "log_prove", "consistency": 3, "to": 7}, {"op": "log_checkpoint"},
        {"op": "approvals_list", "token": token, "state": "pending"}, {"op": "approvals_show", "token": token, "id": "0f1e2d3c"},
        {"op": "approvals_decide", "token": token, "id": "0f1e2d3c", "decision": "approve", "comment": "ok"},
        {"op": "keys_rotate"}, {"op": "reload"}, {"op": "report", "from": "2026-11-01", "to": "2026-11-30", "json": True},
    ]
    hello = {"airlock": 1, "mode": "op", "config": "/etc/airlock/airlock.toml"}
    ops = "".join(json.dumps(r) + "\n" for r in requests)
    put("control_requests", "session", b"\0" + (json.dumps(hello) + "\n" + ops).encode())
    for i, r in enumerate(requests):
        put("control_requests", f"op-{i}", b"\0" + (json.dumps({"airlock": 1, "mode": "op", "config": None}) + "\n" + json.dumps(r) + "\n").encode())
    put("control_requests", "mcp", b"\0" + (json.dumps({"airlock": 1, "mode": "mcp"}) + "\n" + json.dumps(init) + "\n").encode())
    put("control_requests", "bad", b"\0" + b'{"airlock":2,"mode":"op"}\n{"op":"status","x":1}\n{"op":"nope"}\nnot json\n')

    # Control socket, client side: a welcome or refusal, then item/done/error lines.
    dictionary("control_replies", JSON_WORDS + CONTROL_WORDS)
    welcome = {"ok": {"pid": 4242, "version": "0.1.0", "config": "/etc/airlock/airlock.toml", "principal": "unix:alice"}}
    status = {"pid": 4242, "version": "0.1.0", "uptime_secs": 5, "data_dir": "/var/lib/airlock", "config": None,
              "sessions": 1, "attached": 1, "held_calls": 0, "downstreams": [{"name": "demo", "state": "down", "reason": "exited"}],
              "log_records": 7, "log_bytes": 4096, "idle_exit_secs": 600}
    rows = [{"tool": "demo__echo", "server": "demo", "risk": "low", "status": "trusted", "fingerprint": "00" * 32, "source": "manifest"}]
    rotated = {"old_key_id": "k1", "new_key_id": "k2", "public_key": cp["public_key"], "seq": 8}
    answers = [{"done": status}, {"done": rows}, {"done": rotated}]
    answers += [{"item": json.loads(r)} for r in records[:3]] + [{"done": {"records": 3}}]
    answers += [{"error": {"code": "not_operator", "message": "unix:bob may not run `stop`"}}]
    put("control_replies", "session", b"\0" + "".join(json.dumps(l) + "\n" for l in [welcome] + answers).encode())
    for i, a in enumerate(answers):
        put("control_replies", f"answer-{i}", b"\0" + (json.dumps(welcome) + "\n" + json.dumps(a) + "\n").encode())
    refused = {"refused": {"code": "config_mismatch", "message": "the gateway of this data dir runs with a.toml"}}
    put("control_replies", "refused", b"\0" + (json.dumps(refused) + "\n").encode())

    # Audit journal (first byte 0: raw bytes; then the database's checkpoint count), in the
    # layout of src/audit/journal.rs: header (magic, base, SHA-256), then numbered groups.
    dictionary("audit_journal", [b"airlock-journal1".decode(), "AJE1"])
    def journal(base, groups, first=None):
        head = b"airlock-journal1" + base.to_bytes(8, "big")
        out = head + hashlib.sha256(head).digest() + bytes(8)
        for n, pairs in enumerate(groups):
            count = (first if first is not None else base + 1) + n
            payload = b"".join(len(k).to_bytes(2, "big") + k + len(v).to_bytes(4, "big") + v for k, v in pairs)
            c = count.to_bytes(8, "big")
            out += b"AJE1" + len(payload).to_bytes(4, "big") + c + hashlib.sha256(c + payload).digest() + payload
        return out + bytes(64)
    group = lambda n: [(b"r" + n.to_bytes(8, "big"), records[n % len(records)].encode()), (b"c" + n.to_bytes(8, "big"), cp["checkpoint"].encode())]
    for name, stored, data in [("empty", 0, b""), ("fresh", 0, journal(0, [])), ("three", 1, journal(0, [group(1), group(2), group(3)])),
                               ("behind", 0, journal(2, [group(3)])), ("stale", 4, journal(4, [group(5)]) + journal(0, [group(2)])[64:]),
                               ("zeros", 0, bytes(200)), ("garbage", 0, b"not a journal" * 8)]:
        put("audit_journal", name, bytes([0, stored]) + data)


if __name__ == "__main__":
    sys.exit(main())
