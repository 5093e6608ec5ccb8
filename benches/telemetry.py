#!/usr/bin/env python3
"""What telemetry costs on the audited call path: telemetry off, metrics on, traces on.

    nice -n 10 cargo build --release
    python3 benches/telemetry.py [--airlock target/release/airlock] [--rounds 7] [--calls 2000]

Starts `airlock serve --standalone` on stdio in front of `airlock demo-tools` (audit log on,
`[audit] durability = "none"` so the disk does not drown the difference) once per mode and
round, and times `--calls` sequential `tools/call demo__echo` after `--warmup` warm-up
calls. Modes:

  off      [telemetry] metrics = false          no registry, no spans
  metrics  [telemetry] metrics = true           the registry and the metrics layer
  traces   metrics = false, otlp_endpoint = …   every call exported to a local OTLP/HTTP
                                                receiver (a separate process answering 200)

The modes run in a rotating order in each round, so drift of the machine spreads over all of
them. Prints, for each mode, the median over rounds of the per-round p50 (and p99), the
spread of the per-round p50s, the difference to `off`, and the gateway's own CPU time per
call (all its threads, from /proc/<pid>/task/*/schedstat; the downstream excluded), which
other load on the machine disturbs much less than latency. The client is this script
(JSON-RPC over pipes, the same for every mode): absolute figures include its own cost, the
differences do not. Standard library only. Never asserts: a benchmark, not a test.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

MODES = {
    "off": "metrics = false\n",
    "metrics": "metrics = true\n",
    "traces": 'metrics = false\notlp_endpoint = "{otlp}"\n',
}

RECEIVER = r"""
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()
    def log_message(self, *a):
        pass
s = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
print(s.server_address[1], flush=True)
s.serve_forever()
"""


def setup(work, airlock, mode, otlp):
    os.makedirs(os.path.join(work, "tool-manifests"), exist_ok=True)
    os.makedirs(os.path.join(work, "policies"), exist_ok=True)
    sandbox = os.path.join(work, "sandbox")
    os.makedirs(sandbox, exist_ok=True)
    with open(os.path.join(work, "tool-manifests", "demo.toml"), "w") as f:
        f.write(f'name = "demo"\ncommand = {json.dumps(airlock)}\n'
                f'args = ["demo-tools", "--sandbox", {json.dumps(sandbox)}]\n')
    with open(os.path.join(work, "policies", "allow.toml"), "w") as f:
        f.write('[[rule]]\nid = "allow-all"\neffect = "allow"\nreason = "bench"\n')
    config = os.path.join(work, "airlock.toml")
    with open(config, "w") as f:
        f.write('[gateway]\ndata_dir = "data"\n\n[audit]\ndurability = "none"\n\n[telemetry]\n'
                + MODES[mode].format(otlp=otlp))
    return config


class Stdio:
    def __init__(self, airlock, config):
        self.proc = subprocess.Popen([airlock, "serve", "--standalone", "--config", config],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, env={**os.environ, "AIRLOCK_LOG": "error"})
        self.next_id = 1

    def send(self, message):
        self.proc.stdin.write(json.dumps(message).encode() + b"\n")
        self.proc.stdin.flush()

    def request(self, method, params):
        ident = self.next_id
        self.next_id += 1
        self.send({"jsonrpc": "2.0", "id": ident, "method": method, "params": params})
        while True:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError("airlock closed stdout")
            answer = json.loads(line)
            if answer.get("id") == ident:
                return answer

    def stop(self):
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def cpu_ns(pid):
    """Nanoseconds the gateway's threads have run on a CPU (schedstat, all threads): what the
    call path costs the gateway, much less disturbed by other load than latency is."""
    total = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/schedstat") as f:
                total += int(f.read().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            pass
    return total


def measure(airlock, config, warmup, calls):
    gw = Stdio(airlock, config)
    try:
        init = gw.request("initialize", {"protocolVersion": "2025-06-18", "capabilities": {},
                                         "clientInfo": {"name": "bench-telemetry", "version": "1"}})
        if "result" not in init:
            raise RuntimeError(f"initialize: {init}")
        gw.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        # Until the downstream is up, a call can be refused; warm-up covers it.
        deadline = time.time() + 60
        while True:
            answer = gw.request("tools/call", {"name": "demo__echo", "arguments": {"text": "warm"}})
            if answer.get("result", {}).get("isError") is not True and "error" not in answer:
                break
            if time.time() > deadline:
                raise RuntimeError(f"the echo call never succeeded: {answer}")
            time.sleep(0.1)
        for _ in range(warmup):
            gw.request("tools/call", {"name": "demo__echo", "arguments": {"text": "warm"}})
        took = []
        cpu_before = cpu_ns(gw.proc.pid)
        for i in range(calls):
            params = {"name": "demo__echo", "arguments": {"text": f"call {i}"}}
            start = time.perf_counter_ns()
            answer = gw.request("tools/call", params)
            took.append((time.perf_counter_ns() - start) / 1000)
            if "error" in answer or answer.get("result", {}).get("isError"):
                raise RuntimeError(f"call {i} failed: {answer}")
        cpu = (cpu_ns(gw.proc.pid) - cpu_before) / 1000 / calls
    finally:
        gw.stop()
    took.sort()
    return took[len(took) // 2], took[int(len(took) * 0.99)], cpu


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--airlock", default=os.path.join(here, "..", "target", "release", "airlock"))
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=200)
    args = parser.parse_args()
    airlock = os.path.abspath(args.airlock)
    if not os.access(airlock, os.X_OK):
        sys.exit(f"no airlock binary at {airlock}: run `cargo build --release` or pass --airlock")
    receiver = subprocess.Popen([sys.executable, "-c", RECEIVER], stdout=subprocess.PIPE, text=True)
    otlp = f"http://127.0.0.1:{receiver.stdout.readline().strip()}"
    modes = list(MODES)
    p50s = {m: [] for m in modes}
    p99s = {m: [] for m in modes}
    cpus = {m: [] for m in modes}
    try:
        with tempfile.TemporaryDirectory(prefix="airlock-bench-telemetry-") as scratch:
            for r in range(args.rounds):
                order = modes[r % len(modes):] + modes[:r % len(modes)]
                for mode in order:
                    work = os.path.join(scratch, f"{mode}-{r}")
                    config = setup(work, airlock, mode, otlp)
                    p50, p99, cpu = measure(airlock, config, args.warmup, args.calls)
                    p50s[mode].append(p50)
                    p99s[mode].append(p99)
                    cpus[mode].append(cpu)
                    print(f"round {r + 1}/{args.rounds} {mode:8} p50 {p50:7.1f} µs  p99 {p99:7.1f} µs  "
                          f"gateway CPU {cpu:6.1f} µs/call", file=sys.stderr)
    finally:
        receiver.kill()
        receiver.wait()
    base = statistics.median(p50s["off"])
    cpu_base = statistics.median(cpus["off"])
    print(f"\n{args.rounds} rounds × {args.calls} sequential calls (stdio, durability none), µs\n")
    print("| mode | median p50 | p50 range over rounds | median p99 | p50 vs off | gateway CPU/call (range) | CPU vs off |")
    print("|---|---|---|---|---|---|---|")
    for mode in modes:
        med = statistics.median(p50s[mode])
        cpu = statistics.median(cpus[mode])
        print(f"| {mode} | {med:.1f} | {min(p50s[mode]):.1f}–{max(p50s[mode]):.1f} | "
              f"{statistics.median(p99s[mode]):.1f} | {med - base:+.1f} ({(med - base) / base * 100:+.1f} %) | "
              f"{cpu:.1f} ({min(cpus[mode]):.1f}–{max(cpus[mode]):.1f}) | {cpu - cpu_base:+.1f} |")


if __name__ == "__main__":
    main()
