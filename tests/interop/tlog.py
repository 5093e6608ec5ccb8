"""Airlock's checkpoints and proofs against an independent implementation.

Written from the specifications, not from Airlock's code: C2SP signed-note and
tlog-checkpoint (note parsing, key ids, verifier keys; Ed25519 through `cryptography`) and
RFC 9162 section 2.1 (Merkle tree hash, inclusion proofs, consistency proofs: both the
recursive PROOF/SUBPROOF definition and the verification algorithm of 2.1.4.2).

Runs `airlock serve` over stdio twice (a scripted MCP client calls demo-tools), then checks
through the CLI only:
  * `airlock keys show` prints a verifier key whose hash is SHA-256(name || 0x0A || 0x01 || key)[:4];
  * `airlock log checkpoint` is a signed note that verifies, and its root is the RFC 9162
    tree hash of the exported records;
  * every `airlock log prove --consistency OLD` proof equals PROOF(m, D[n]) and verifies, and
    a proof against a changed root does not;
  * `airlock log prove SEQ` paths equal PATH(m, D[n]) and verify.

Usage: tlog.py --work DIR   (the airlock binary: $AIRLOCK_BIN)
Prints PASS/FAIL lines; exits 1 if any check failed.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

AIRLOCK = os.environ.get("AIRLOCK_BIN", "airlock")
FAILED = 0


def report(ok: bool, what: str) -> None:
    global FAILED
    print(("PASS " if ok else "FAIL ") + what, flush=True)
    if not ok:
        FAILED += 1


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


# ---- RFC 9162 section 2.1 -------------------------------------------------------------

def leaf(data: bytes) -> bytes:
    return sha256(b"\x00" + data)


def node(left: bytes, right: bytes) -> bytes:
    return sha256(b"\x01" + left + right)


def split(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def mth(leaves: list[bytes]) -> bytes:
    if not leaves:
        return sha256(b"")
    if len(leaves) == 1:
        return leaves[0]
    k = split(len(leaves))
    return node(mth(leaves[:k]), mth(leaves[k:]))


def path(m: int, leaves: list[bytes]) -> list[bytes]:
    if len(leaves) <= 1:
        return []
    k = split(len(leaves))
    if m < k:
        return path(m, leaves[:k]) + [mth(leaves[k:])]
    return path(m - k, leaves[k:]) + [mth(leaves[:k])]


def subproof(m: int, leaves: list[bytes], b: bool) -> list[bytes]:
    n = len(leaves)
    if m == n:
        return [] if b else [mth(leaves)]
    k = split(n)
    if m <= k:
        return subproof(m, leaves[:k], b) + [mth(leaves[k:])]
    return subproof(m - k, leaves[k:], False) + [mth(leaves[:k])]


def verify_inclusion(index: int, size: int, leaf_hash: bytes, proof: list[bytes], root: bytes) -> bool:
    # RFC 9162 2.1.3.2
    if index >= size:
        return False
    fn, sn, r = index, size - 1, leaf_hash
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


def verify_consistency(first: int, second: int, first_hash: bytes, second_hash: bytes, proof: list[bytes]) -> bool:
    # RFC 9162 2.1.4.2 (0 < first < second)
    if not proof:
        return False
    if first & (first - 1) == 0:
        proof = [first_hash] + proof
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = proof[0]
    for c in proof[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr, sr = node(c, fr), node(c, sr)
            while fn and not fn & 1:
                fn >>= 1
                sn >>= 1
        else:
            sr = node(sr, c)
        fn >>= 1
        sn >>= 1
    return fr == first_hash and sr == second_hash and sn == 0


# ---- C2SP signed-note and tlog-checkpoint ----------------------------------------------

def parse_vkey(text: str) -> tuple[str, bytes, Ed25519PublicKey]:
    name, key_hash, b64 = text.strip().split("+", 2)
    raw = base64.b64decode(b64, validate=True)
    assert raw[0] == 0x01 and len(raw) == 33, "an Ed25519 note key"
    expected = sha256(name.encode() + b"\n" + raw)[:4]
    assert bytes.fromhex(key_hash) == expected, "key hash = SHA-256(name || 0x0A || 0x01 || key)[:4]"
    return name, expected, Ed25519PublicKey.from_public_bytes(raw[1:])


def parse_note(note: str) -> tuple[str, list[tuple[str, bytes, bytes]]]:
    assert note.endswith("\n") and all(c == "\n" or ord(c) >= 0x20 for c in note)
    at = note.rindex("\n\n")
    text, sig_block = note[: at + 1], note[at + 2:]
    sigs = []
    for line in sig_block.rstrip("\n").split("\n"):
        assert line.startswith("\u2014 "), line
        name, b64 = line[2:].split(" ")
        raw = base64.b64decode(b64, validate=True)
        sigs.append((name, raw[:4], raw[4:]))
    return text, sigs


def verify_note(note: str, vkey: tuple[str, bytes, Ed25519PublicKey]) -> str:
    """Returns the note text when a signature by vkey verifies; raises otherwise."""
    name, key_id, public = vkey
    text, sigs = parse_note(note)
    mine = [s for (n, i, s) in sigs if n == name and i == key_id]
    if not mine:
        raise InvalidSignature("no signature by the key")
    public.verify(mine[0], text.encode())
    return text


def parse_checkpoint(text: str) -> tuple[str, int, bytes, list[str]]:
    lines = text.rstrip("\n").split("\n")
    origin, size, root = lines[0], lines[1], base64.b64decode(lines[2], validate=True)
    assert origin and size.isdigit() and (size == "0" or not size.startswith("0")) and len(root) == 32
    return origin, int(size), root, lines[3:]


# ---- running Airlock ---------------------------------------------------------------------

def airlock(*args: str) -> str:
    out = subprocess.run([AIRLOCK, *args], capture_output=True, text=True, env=dict(os.environ, AIRLOCK_LOG="warn"))
    if out.returncode != 0:
        raise RuntimeError(f"airlock {' '.join(args)}: exit {out.returncode}\n{out.stdout}{out.stderr}")
    return out.stdout


def run_gateway(config: Path, calls: int) -> None:
    msgs = [
        {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "tlog.py", "version": "1"}}},
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
    ]
    for i in range(calls):
        msgs.append({"jsonrpc": "2.0", "id": i + 1, "method": "tools/call",
                     "params": {"name": "demo__echo", "arguments": {"text": f"call {i}"}}})
    proc = subprocess.Popen([AIRLOCK, "serve", "--config", str(config)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, env=dict(os.environ, AIRLOCK_LOG="warn"))
    assert proc.stdin and proc.stdout
    proc.stdin.write(json.dumps(msgs[0]) + "\n")
    proc.stdin.flush()
    proc.stdout.readline()
    for m in msgs[1:]:
        proc.stdin.write(json.dumps(m) + "\n")
        proc.stdin.flush()
        if "id" in m:
            while json.loads(proc.stdout.readline()).get("id") != m["id"]:
                pass
    proc.stdin.close()
    proc.wait(timeout=60)


def setup(work: Path) -> Path:
    work.mkdir(parents=True, exist_ok=True)
    (work / "tool-manifests").mkdir(exist_ok=True)
    (work / "policies").mkdir(exist_ok=True)
    (work / "sandbox").mkdir(exist_ok=True)
    (work / "tool-manifests" / "demo.toml").write_text(
        f'name = "demo"\ncommand = {json.dumps(AIRLOCK)}\nargs = ["demo-tools", "--sandbox", {json.dumps(str(work / "sandbox"))}]\n')
    (work / "policies" / "allow.toml").write_text('[[rule]]\nid = "allow"\neffect = "allow"\nreason = "interop"\n')
    config = work / "airlock.toml"
    config.write_text('[gateway]\ndata_dir = "data"\n')
    return config


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", required=True, type=Path)
    work = ap.parse_args().work
    config = setup(work)
    data = str(work / "data")
    for calls in (5, 7):
        run_gateway(config, calls)

    show = airlock("keys", "show", "--data-dir", data)
    vkey_text = next(l.split(None, 2)[2] for l in show.splitlines() if l.startswith("note key"))
    try:
        vkey = parse_vkey(vkey_text)
        report(True, f"keys show prints a C2SP verifier key ({vkey_text.split('+')[0]}+{vkey_text.split('+')[1]}+...)")
    except (AssertionError, ValueError) as e:
        report(False, f"verifier key {vkey_text!r}: {e}")
        return 1

    export = [l for l in airlock("log", "export", "--data-dir", data).splitlines() if l]
    records = [l.encode() for l in export if json.loads(l).get("kind") not in ("export", "checkpoint")]
    leaves = [leaf(r) for r in records]
    sizes = sorted({json.loads(l)["size"] for l in export if json.loads(l).get("kind") == "checkpoint"})

    note = airlock("log", "checkpoint", "--data-dir", data)
    try:
        origin, size, root, ext = parse_checkpoint(verify_note(note, vkey))
        report(origin == vkey[0], f"checkpoint origin {origin!r} is the key name")
        report(size == len(records) and root == mth(leaves),
               f"log checkpoint: note signature verifies; root of {size} records is the RFC 9162 tree hash")
        report(len(ext) == 1 and ext[0].startswith("airlock-chain "), "one extension line with the chain head")
    except (InvalidSignature, AssertionError, ValueError) as e:
        report(False, f"log checkpoint note: {e!r}\n{note}")
    try:
        verify_note(note.replace(f"\n{size}\n", f"\n{size + 1}\n"), vkey)
        report(False, "a note with a changed size must not verify")
    except InvalidSignature:
        report(True, "a note with a changed size does not verify")

    checked = 0
    for old in [s for s in sizes if s < sizes[-1]]:
        p = json.loads(airlock("log", "prove", "--data-dir", data, "--consistency", str(old)))
        proof = [base64.b64decode(h) for h in p["proof"]]
        n = p["new_size"]
        ok = proof == subproof(old, leaves[:n], True)
        ok = ok and verify_consistency(old, n, mth(leaves[:old]), mth(leaves[:n]), proof)
        ok = ok and not verify_consistency(old, n, mth(leaves[:old]), sha256(b"other"), proof)
        for which, want in (("old_note", old), ("new_note", n)):
            _, sz, rt, _ = parse_checkpoint(verify_note(p[which], vkey))
            ok = ok and sz == want and rt == mth(leaves[:want])
        if not ok:
            report(False, f"consistency proof {old} -> {n}")
        checked += 1
    report(checked > 3 and FAILED == 0, f"{checked} consistency proofs equal PROOF(m, D[n]) and verify (RFC 9162 2.1.4)")

    inclusions = 0
    for seq in range(1, len(records) + 1, 3):
        p = json.loads(airlock("log", "prove", "--data-dir", data, str(seq)))
        proof = [bytes.fromhex(h) for h in p["path"]]
        n = p["checkpoint"]["size"]
        ok = proof == path(seq - 1, leaves[:n]) and verify_inclusion(seq - 1, n, leaves[seq - 1], proof, mth(leaves[:n]))
        if not ok:
            report(False, f"inclusion proof of {seq} in {n}")
        inclusions += 1
    report(inclusions > 3, f"{inclusions} inclusion proofs equal PATH(m, D[n]) and verify (RFC 9162 2.1.3)")
    return 1 if FAILED else 0


if __name__ == "__main__":
    sys.exit(main())
