#!/usr/bin/env python3
"""Instructions per audited call, by function, with callgrind (the README's breakdown).

Runs `airlock serve` (stdio: the bridge, the shared gateway it starts, one `demo-tools`
downstream; the given durability) under
`valgrind --tool=callgrind --trace-children=yes` twice, with N1 and N2 sequential
`demo__echo` calls, and prints per process (gateway, bridge if any, downstream) and for the
gateway's heaviest inclusive functions the difference divided by N2 - N1: the fixed costs
of start and shutdown cancel. Stdlib only; needs valgrind and callgrind_annotate.

  benches/callgrind.py target/release/airlock [--durability none|fsync] [--calls 100,600]
"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run(airlock: Path, durability: str, calls: int, out: Path) -> None:
    work = Path(tempfile.mkdtemp(prefix="airlock-cg-"))
    (work / "tool-manifests").mkdir()
    (work / "policies").mkdir()
    sandbox = work / "sandbox"
    sandbox.mkdir()
    (work / "airlock.toml").write_text(
        f'[gateway]\ndata_dir = "data"\nmanifests = "tool-manifests"\n\n[audit]\ndurability = "{durability}"\n')
    (work / "tool-manifests" / "demo.toml").write_text(
        f'name = "demo"\ncommand = {json.dumps(str(airlock))}\n'
        f'args = ["demo-tools", "--sandbox", {json.dumps(str(sandbox))}]\ndefault_risk = "low"\n')
    out.mkdir(parents=True, exist_ok=True)
    argv = ["valgrind", "--tool=callgrind", "--trace-children=yes",
            f"--callgrind-out-file={out}/callgrind.out.%p", str(airlock), "serve", "--config", str(work / "airlock.toml")]
    env = dict(os.environ, AIRLOCK_LOG="warn")
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, cwd=work)

    def send(message):
        proc.stdin.write((json.dumps(message) + "\n").encode())
        proc.stdin.flush()

    def answer(want_id):
        while True:
            line = proc.stdout.readline()
            if not line:
                sys.exit(f"airlock closed stdout before answering id {want_id}")
            message = json.loads(line)
            if message.get("id") == want_id:
                return message

    send({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "callgrind", "version": "1"}}})
    answer(0)
    send({"jsonrpc": "2.0", "method": "notifications/initialized"})
    send({"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
    answer(1)
    for i in range(calls):
        send({"jsonrpc": "2.0", "id": 2 + i, "method": "tools/call",
              "params": {"name": "demo__echo", "arguments": {"text": f"call {i}"}}})
        reply = answer(2 + i)
        text = json.dumps(reply)
        if f"call {i}" not in text:
            sys.exit(f"call {i} did not echo: {text[:300]}")
    proc.stdin.close()
    proc.wait(timeout=600)
    # The bridge is gone; the shared gateway (and its downstream) would idle on: stop it,
    # then wait for callgrind to write every profile.
    subprocess.run([str(airlock), "gateway", "stop", "--config", str(work / "airlock.toml")],
                   check=True, stdout=subprocess.DEVNULL, env=env)
    for _ in range(600):
        files = list(out.glob("callgrind.out.*"))
        if len(files) >= 2 and all(re.search(r"^totals: ", f.read_text(errors="replace"), re.M) for f in files):
            return
        time.sleep(0.5)
    sys.exit(f"callgrind profiles in {out} were not all written")


def profiles(out: Path):
    """{role: (total instructions, file)} by each process's command line."""
    found = {}
    for f in sorted(out.glob("callgrind.out.*")):
        head = f.read_text(errors="replace")[:4000]
        cmd = re.search(r"^cmd: (.*)$", head, re.M)
        total = re.search(r"^(?:summary|totals): (\d+)", f.read_text(errors="replace"), re.M)
        if not cmd or not total:
            continue
        cmd = cmd.group(1)
        role = ("downstream" if " demo-tools" in cmd else "gateway" if " gateway run" in cmd
                else "bridge (airlock serve)" if " serve" in cmd else cmd)
        if role in found:
            role = f"{role} ({f.name})"
        found[role] = (int(total.group(1)), f)
    return found


def rows(f: Path, inclusive: bool):
    """{(file, function): instructions} from callgrind_annotate."""
    argv = ["callgrind_annotate", "--auto=no", "--threshold=100", f"--inclusive={'yes' if inclusive else 'no'}", str(f)]
    text = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    found = {}
    for line in text.splitlines():
        m = re.match(r"\s*([\d,]+) \([^)]*\)\s+(.*?):(.*?)(?: \[(.*)\])?$", line)
        if m and "PROGRAM TOTALS" not in line:
            key = (m.group(2), m.group(3), m.group(4) or "")
            found[key] = found.get(key, 0) + int(m.group(1).replace(",", ""))
    return found


def bucket(file: str, function: str, object_file: str) -> str:
    """Where an instruction belongs: our module, a crate, the standard library, libc."""
    m = re.search(r"/work/[^/]+/src/([a-z_]+)", file) or re.search(r"\bairlock::([a-z_]+)", function)
    if m:
        return f"airlock::{m.group(1)}"
    m = re.search(r"/registry/src/[^/]+/([A-Za-z0-9_-]+?)-\d+\.\d+[^/]*/", file)
    if m:
        return m.group(1)
    if file.startswith("/rustc/"):
        return "std/core/alloc"
    if "libc.so" in object_file or "ld-linux" in object_file:
        return "libc (malloc, memcpy, syscall stubs)"
    m = re.match(r"<?([a-z_][a-z0-9_]*)::", function)
    return m.group(1) if m else (object_file or "other")


# Inclusive costs of these (non-recursive) functions, per call, when present.
NAMED = [
    ("audit: one group commit (Writer::commit)", r"audit::writer::.*commit"),
    ("audit: Ed25519 signing (ring)", r"Ed25519KeyPair::sign"),
    ("audit: journal append", r"audit::journal::Journal::append"),
    ("audit: sled inserts", r"sled::tree::Tree::insert"),
    ("audit: Merkle root", r"audit::merkle::.*root"),
    ("audit: records' canonical bytes (Record::prepare)", r"audit::record::Record::prepare"),
    ("gateway: the pipeline (forward::run)", r"gateway::forward::run"),
    ("fdatasync/fsync stubs", r"^(fdatasync|fsync)$"),
]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("airlock", type=Path)
    parser.add_argument("--durability", default="none")
    parser.add_argument("--calls", default="100,600")
    parser.add_argument("--top", type=int, default=40)
    args = parser.parse_args()
    n1, n2 = (int(x) for x in args.calls.split(","))
    root = Path(tempfile.mkdtemp(prefix="airlock-cg-out-"))
    prof = {}
    for n in (n1, n2):
        run(args.airlock.resolve(), args.durability, n, root / str(n))
        prof[n] = profiles(root / str(n))
    per = n2 - n1
    print(f"instructions per call ({args.durability}; ({n2} calls - {n1} calls) / {per}; profiles in {root})")
    for role in prof[n2]:
        if role in prof[n1]:
            print(f"  {role:<40} {(prof[n2][role][0] - prof[n1][role][0]) / per / 1000:>9.1f}k")
    if "gateway" not in prof[n1] or "gateway" not in prof[n2]:
        return
    f1, f2 = prof[n1]["gateway"][1], prof[n2]["gateway"][1]
    exclusive = {}
    for rows_of, sign in ((rows(f2, False), 1), (rows(f1, False), -1)):
        for key, value in rows_of.items():
            exclusive[bucket(*key)] = exclusive.get(bucket(*key), 0) + sign * value
    print("\ngateway, own instructions per call by module or crate:")
    for name, value in sorted(exclusive.items(), key=lambda kv: -kv[1])[: args.top]:
        if value / per >= 500:
            print(f"  {value / per / 1000:>9.1f}k  {name}")
    i1, i2 = rows(f1, True), rows(f2, True)
    print("\ngateway, inclusive per call, named functions:")
    for label, pattern in NAMED:
        best = 0
        for key in i2:
            if "'" not in key[1] and re.search(pattern, key[1]):
                best = max(best, i2[key] - i1.get(key, 0))
        if best:
            print(f"  {best / per / 1000:>9.1f}k  {label}")


if __name__ == "__main__":
    main()
