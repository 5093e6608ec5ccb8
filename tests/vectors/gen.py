#!/usr/bin/env python3
"""Independent test vectors for Airlock's audit log.

Written from the specifications (RFC 8785 number form, RFC 6962 / RFC 9162 Merkle trees and
consistency proofs, RFC 8032 Ed25519, C2SP signed-note and tlog-checkpoint) using only the Python standard library (hashlib, json, base64). It shares no code
with Airlock and must never be replaced by output of Airlock itself.

Run from the repository root:  python3 tests/vectors/gen.py
Writes tests/vectors/{canonical,record,chain,merkle,checkpoint,consistency,note}.json.
"""

import base64
import hashlib
import json
import os
from decimal import Decimal

HERE = os.path.dirname(os.path.abspath(__file__))


# --- canonical JSON -----------------------------------------------------------------------

def es_number(x):
    """ECMAScript Number::toString for a finite float (RFC 8785 section 3.2.2.3)."""
    if x == 0:
        return "0"
    sign = "-" if x < 0 else ""
    sign_, digits, exp = Decimal(repr(abs(x))).as_tuple()
    digits = list(digits)
    while len(digits) > 1 and digits[-1] == 0:
        digits.pop()
        exp += 1
    ds = "".join(map(str, digits))
    k = len(ds)
    n = k + exp
    if k <= n <= 21:
        body = ds + "0" * (n - k)
    elif 0 < n <= 21:
        body = ds[:n] + "." + ds[n:]
    elif -6 < n <= 0:
        body = "0." + "0" * (-n) + ds
    else:
        e = n - 1
        body = ds[0] + ("." + ds[1:] if k > 1 else "") + "e" + ("+" if e >= 0 else "-") + str(abs(e))
    return sign + body


def esc(s):
    out = ['"']
    short = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\b": "\\b", "\f": "\\f"}
    for ch in s:
        if ch in short:
            out.append(short[ch])
        elif ord(ch) < 0x20:
            out.append("\\u%04x" % ord(ch))
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def canon(v):
    if v is None:
        return "null"
    if v is True:
        return "true"
    if v is False:
        return "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return es_number(v)
    if isinstance(v, str):
        return esc(v)
    if isinstance(v, list):
        return "[" + ",".join(canon(x) for x in v) + "]"
    if isinstance(v, dict):
        keys = sorted(v, key=lambda k: k.encode("utf-8"))
        return "{" + ",".join(esc(k) + ":" + canon(v[k]) for k in keys) + "}"
    raise TypeError(type(v))


def cbytes(v):
    return canon(v).encode("utf-8")


def sha256(b):
    return hashlib.sha256(b).digest()


CANONICAL_INPUTS = [
    '{ "b": 1, "a": 2 }',
    '{"z": {"y": [3, 2, 1], "x": null}, "é": true, "e": false, "E": "caps"}',
    '{"\\u20ac": "euro", "\\ud83d\\ude00": "emoji sorts after euro in UTF-8", "~": 1}',
    '["quote \\" backslash \\\\ slash / newline \\n tab \\t nul \\u0000 unit \\u001f del \\u007f"]',
    '[0, -1, 18446744073709551615, -9223372036854775808, 9007199254740993]',
    '[1.0, -0.0, 0.5, 2.25, 100.0, 1e2, 1.5e300, 1e21, 1e20, 1e-7, 0.000001, 123456.789, -3.14159]',
    '{"nested": [{"b": [], "a": {}}, [[]], ""]}',
    '"plain string"',
    '{"password": "hunter2", "path": "/etc/passwd", "options": {"recursive": true, "depth": 3}}',
]


def canonical_vectors():
    cases = []
    for text in CANONICAL_INPUTS:
        value = json.loads(text)
        out = canon(value)
        cases.append({"input": text, "canonical": out, "sha256": sha256(out.encode("utf-8")).hex()})
    return {"description": "canonical JSON: sorted keys (UTF-8 byte order), no whitespace, "
                           "minimal escapes, integers exact, floats per RFC 8785", "cases": cases}


# --- records -------------------------------------------------------------------------------

def redact(value, pointer):
    """Replaces the value at an RFC 6901 pointer ('*' matches every member) with [redacted]."""
    parts = [p.replace("~1", "/").replace("~0", "~") for p in pointer.split("/")[1:]]

    def walk(v, rest):
        if not rest:
            return "[redacted]"
        head, tail = rest[0], rest[1:]
        if isinstance(v, dict):
            return {k: (walk(x, tail) if head in ("*", k) else x) for k, x in v.items()}
        if isinstance(v, list):
            return [walk(x, tail) if head == "*" or head == str(i) else x for i, x in enumerate(v)]
        return v

    return walk(value, parts)


def record_vectors():
    args = {"path": "/srv/report.csv", "password": "hunter2", "headers": [{"token": "t-1"}, {"x": 1}], "ratio": 0.25}
    pointers = ["/password", "/headers/*/token", "/absent"]
    redacted = args
    for p in pointers:
        redacted = redact(redacted, p)
    result = {"content": [{"type": "text", "text": "ok"}], "isError": False}
    record = {
        "v": 1, "seq": 42, "time": "2026-11-21T17:00:00.000001Z", "kind": "call_completed",
        "principal": "alice", "session": "s-1", "call_id": "c-7", "tool": "fs__write_file",
        "risk": "high", "decision": "allow", "rule": "writes-need-review",
        "args_sha256": sha256(cbytes(args)).hex(), "args": redacted,
        "result_sha256": sha256(cbytes(result)).hex(), "is_error": False, "duration_us": 1234,
        "approver": "bob", "channel": "slack", "comment": "looks fine",
    }
    return {"description": "a full record: args digest of the original arguments, stored args redacted",
            "args": args, "redact": pointers, "result": result, "record": record,
            "canonical": canon(record)}


# --- hash chain and RFC 6962 Merkle tree ---------------------------------------------------

def leaf_hash(data):
    return sha256(b"\x00" + data)


def node_hash(left, right):
    return sha256(b"\x01" + left + right)


def split(n):
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def mth(leaves):
    """RFC 6962 section 2.1 MTH over raw leaf data."""
    if not leaves:
        return sha256(b"")
    if len(leaves) == 1:
        return leaf_hash(leaves[0])
    k = split(len(leaves))
    return node_hash(mth(leaves[:k]), mth(leaves[k:]))


def path(m, leaves):
    """RFC 6962 section 2.1.1 PATH(m, D[n])."""
    n = len(leaves)
    if n <= 1:
        return []
    k = split(n)
    if m < k:
        return path(m, leaves[:k]) + [mth(leaves[k:])]
    return path(m - k, leaves[k:]) + [mth(leaves[:k])]


def sample_records(n):
    return [{"v": 1, "seq": i, "time": "2026-11-21T17:00:%02d.000000Z" % i, "kind": "call_received",
             "principal": "alice", "call_id": "c-%d" % i, "tool": "fs__read_file"} for i in range(1, n + 1)]


def chain_vectors():
    records = sample_records(7)
    head = bytes(32)
    steps = []
    for r in records:
        line = cbytes(r)
        head = sha256(head + line)
        steps.append({"record": line.decode("utf-8"), "chain_hash": head.hex(), "leaf_hash": leaf_hash(line).hex()})
    lines = [cbytes(r) for r in records]
    roots = [mth(lines[:n]).hex() for n in range(len(lines) + 1)]
    return {"description": "hash_i = SHA-256(hash_{i-1} || canonical(record_i)), hash_0 = 32 zero bytes; "
                           "roots[n] = RFC 6962 root over the first n records",
            "steps": steps, "roots": roots}


def merkle_vectors():
    leaves = [("leaf-%d" % i).encode() for i in range(13)]
    roots = [mth(leaves[:n]).hex() for n in range(len(leaves) + 1)]
    proofs = []
    for n in range(1, len(leaves) + 1):
        for m in range(n):
            proofs.append({"index": m, "size": n, "path": [h.hex() for h in path(m, leaves[:n])]})
    return {"description": "RFC 6962: leaves are the UTF-8 strings leaf-0..leaf-12; roots[n] over the "
                           "first n; inclusion proofs (audit paths, bottom up) for every index and size",
            "leaves": [l.decode() for l in leaves], "roots": roots, "proofs": proofs}


# --- Ed25519 (RFC 8032 section 5.1), pure Python -------------------------------------------

P = 2 ** 255 - 19
L = 2 ** 252 + 27742317777372353535851937790883648493
D = (-121665 * pow(121666, P - 2, P)) % P
SQRT_M1 = pow(2, (P - 1) // 4, P)


def recover_x(y, sign):
    x2 = (y * y - 1) * pow(D * y * y + 1, P - 2, P) % P
    x = pow(x2, (P + 3) // 8, P)
    if (x * x - x2) % P != 0:
        x = x * SQRT_M1 % P
    if x % 2 != sign:
        x = P - x
    return x


BY = 4 * pow(5, P - 2, P) % P
BX = recover_x(BY, 0)
BASE = (BX, BY, 1, BX * BY % P)


def add(p1, p2):
    x1, y1, z1, t1 = p1
    x2, y2, z2, t2 = p2
    a = (y1 - x1) * (y2 - x2) % P
    b = (y1 + x1) * (y2 + x2) % P
    c = 2 * t1 * t2 * D % P
    d = 2 * z1 * z2 % P
    e, f, g, h = b - a, d - c, d + c, b + a
    return (e * f % P, g * h % P, f * g % P, e * h % P)


def mul(s, pt):
    acc = (0, 1, 1, 0)
    while s:
        if s & 1:
            acc = add(acc, pt)
        pt = add(pt, pt)
        s >>= 1
    return acc


def encode(pt):
    x, y, z, _ = pt
    zi = pow(z, P - 2, P)
    x, y = x * zi % P, y * zi % P
    return (y | ((x & 1) << 255)).to_bytes(32, "little")


def expand(seed):
    h = hashlib.sha512(seed).digest()
    a = int.from_bytes(h[:32], "little")
    a &= (1 << 254) - 8
    a |= 1 << 254
    return a, h[32:]


def public_key(seed):
    a, _ = expand(seed)
    return encode(mul(a, BASE))


def sign(seed, msg):
    a, prefix = expand(seed)
    pub = encode(mul(a, BASE))
    r = int.from_bytes(hashlib.sha512(prefix + msg).digest(), "little") % L
    big_r = encode(mul(r, BASE))
    k = int.from_bytes(hashlib.sha512(big_r + pub + msg).digest(), "little") % L
    return big_r + ((r + k * a) % L).to_bytes(32, "little")


def self_check_ed25519():
    # RFC 8032 section 7.1, TEST 1 and TEST 2.
    s1 = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
    assert public_key(s1).hex() == "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
    assert sign(s1, b"").hex() == ("e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33b"
                                   "acc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b")
    s2 = bytes.fromhex("4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb")
    assert sign(s2, b"\x72").hex() == ("92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e1"
                                       "5996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00")


def checkpoint_vectors():
    self_check_ed25519()
    seed = sha256(b"airlock test vector key")
    pub = public_key(seed)
    lines = [cbytes(r) for r in sample_records(7)]
    head = bytes(32)
    for line in lines:
        head = sha256(head + line)
    body = {"origin": "vectors.airlock.test", "size": 7, "root": mth(lines).hex(),
            "chain_head": head.hex(), "time": "2026-11-21T17:00:07.000000Z"}
    msg = cbytes(body)
    sig = sign(seed, msg)
    wire = dict(body, kind="checkpoint", key=base64.b64encode(pub).decode(),
                signature=base64.b64encode(sig).decode())
    return {"description": "Ed25519 over canonical({chain_head, origin, root, size, time}) for the 7 "
                           "records of chain.json; key from seed SHA-256('airlock test vector key')",
            "seed": seed.hex(), "public_key": base64.b64encode(pub).decode(),
            "key_id": sha256(pub)[:8].hex(), "signed_message": msg.decode(),
            "signature": base64.b64encode(sig).decode(), "checkpoint": canon(wire)}


def subproof(m, leaves, whole):
    """RFC 9162 section 2.1.4.1 SUBPROOF(m, D[n], b)."""
    n = len(leaves)
    if m == n:
        return [] if whole else [mth(leaves)]
    k = split(n)
    if m <= k:
        return subproof(m, leaves[:k], whole) + [mth(leaves[k:])]
    return subproof(m - k, leaves[k:], False) + [mth(leaves[:k])]


def consistency_vectors():
    leaves = [f"leaf-{i}".encode() for i in range(13)]
    proofs = []
    for n in range(1, 14):
        for m in range(1, n):
            proofs.append({"old_size": m, "new_size": n, "proof": [h.hex() for h in subproof(m, leaves[:n], True)]})
    return {"description": "RFC 9162 2.1.4.1 PROOF(m, D[n]) over the leaves of merkle.json (leaf-0..leaf-12), "
                           "hex, for 0 < m < n <= 13; roots are merkle.json's",
            "proofs": proofs}


def note_vectors():
    """A C2SP tlog-checkpoint signed note for the 7 records of chain.json (c2sp.org/signed-note)."""
    seed = sha256(b"airlock test vector key")
    pub = public_key(seed)
    lines = [cbytes(r) for r in sample_records(7)]
    head = bytes(32)
    for line in lines:
        head = sha256(head + line)
    origin, time = "vectors.airlock.test", "2026-11-21T17:00:07.000000Z"
    text = f"{origin}\n7\n{base64.b64encode(mth(lines)).decode()}\nairlock-chain {head.hex()} {time}\n"
    key_id = sha256(origin.encode() + b"\n" + b"\x01" + pub)[:4]
    sig = sign(seed, text.encode())
    note = text + "\n" + "\u2014 " + origin + " " + base64.b64encode(key_id + sig).decode() + "\n"
    vkey = f"{origin}+{key_id.hex()}+{base64.b64encode(bytes([1]) + pub).decode()}"
    return {"description": "signed note over origin, size, base64 root, airlock-chain extension; key id = "
                           "SHA-256(name || 0x0A || 0x01 || key)[:4]; key from chain.json's checkpoint seed",
            "verifier_key": vkey, "note": note, "chain_head": head.hex(), "time": time}


def main():
    outputs = {
        "consistency.json": consistency_vectors(),
        "note.json": note_vectors(),
        "canonical.json": canonical_vectors(),
        "record.json": record_vectors(),
        "chain.json": chain_vectors(),
        "merkle.json": merkle_vectors(),
        "checkpoint.json": checkpoint_vectors(),
    }
    for name, data in outputs.items():
        with open(os.path.join(HERE, name), "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1, ensure_ascii=False)
            f.write("\n")
        print("wrote", name)


if __name__ == "__main__":
    main()
