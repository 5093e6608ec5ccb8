"""Replicas of `airlock serve --http` on one PostgreSQL database, for the cluster benches
(`benches/approval_release`, `benches/cluster`). Python 3's standard library, psql and the
built binary only.

Owns: the throwaway database, starting and killing replicas (each in a process group of
its own, so its downstream dies with it), a small streamable-HTTP MCP client, the approval
API call, the release-latency measurement, and the load client (`python3 replicas.py load
CONFIG_JSON`, run as a child process by `benches/cluster`). Every network call and every
wait has a timeout; nothing here asserts a figure.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parent.parent
PEOPLE = {"carol": ("tok-carol-0123456789", "dev"), "bob": ("tok-bob-0123456789", "sre")}
POLICY = """[[rule]]
id = "grants-need-an-sre"
tools = ["demo__grant_role"]
effect = "approve"
approvers = ["group:sre"]
reason = "role grants need an SRE"

[[rule]]
id = "echo-is-fine"
tools = ["demo__echo"]
effect = "allow"
reason = "the bench's load"
"""
#: Seconds any single HTTP request may take before the bench gives up on it.
REQUEST_TIMEOUT = 30.0
#: Seconds a replica may take to start listening.
START_TIMEOUT = 60.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def psql(url: str, sql: str) -> str:
    """Runs `sql` with psql (30 s at most) and returns its unaligned output."""
    done = subprocess.run(["psql", url, "-qAtc", sql], check=True, capture_output=True, text=True, timeout=30)
    return done.stdout.strip()


class Database:
    """$AIRLOCK_TEST_PG_URL (an admin URL, as .ci/run sets it), else a throwaway cluster
    started with .ci/pg under `tmp`; `create()` makes fresh databases, `close()` drops them
    and stops the cluster if it started one."""

    def __init__(self, tmp: Path):
        self.admin = os.environ.get("AIRLOCK_TEST_PG_URL")
        self.pg_dir: Path | None = None
        self.names: list[str] = []
        if not self.admin:
            self.pg_dir = tmp / "pg"
            self.pg_dir.mkdir(mode=0o755)
            os.chmod(tmp, 0o755)
            self.admin = subprocess.run(["bash", ROOT / ".ci/pg", "start", self.pg_dir, str(free_port())], check=True,
                                        capture_output=True, text=True, timeout=120).stdout.strip()

    def create(self) -> str:
        name = f"airlock_bench_{uuid.uuid4().hex[:12]}"
        psql(self.admin, f"CREATE DATABASE {name}")
        self.names.append(name)
        return urlparse(self.admin)._replace(path="/" + name).geturl()

    def close(self) -> None:
        for name in self.names:
            subprocess.run(["psql", self.admin, "-qc", f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"],
                           check=False, capture_output=True, timeout=60)
        if self.pg_dir:
            subprocess.run(["bash", ROOT / ".ci/pg", "stop", self.pg_dir], check=False, timeout=120)


class Replica:
    """One `airlock serve --http` in `root` on the database `url`, in its own process group;
    with `keys_from`, it signs with that data dir's log key and argument key."""

    def __init__(self, airlock: str, root: Path, url: str, keys_from: Path | None = None):
        self.root, self.url = root, url
        (root / "tool-manifests").mkdir(parents=True)
        (root / "policies").mkdir()
        config = '[gateway]\ndata_dir = "data"\n\n[approvals]\ntimeout = "10m"\n'
        for name, (token, group) in PEOPLE.items():
            digest = hashlib.sha256(token.encode()).hexdigest()
            config += f'\n[[identity.tokens]]\nname = "{name}"\nsha256 = "{digest}"\ngroups = ["{group}"]\n'
        config += '\n[storage]\nbackend = "postgres"\nurl_env = "AIRLOCK_BENCH_DB_URL"\n'
        self.config = root / "airlock.toml"
        self.config.write_text(config)
        (root / "policies" / "bench.toml").write_text(POLICY)
        (root / "tool-manifests" / "demo.toml").write_text(
            f'name = "demo"\ncommand = "{airlock}"\nargs = ["demo-tools", "--sandbox", "{root / "sandbox"}"]\n')
        if keys_from:
            (root / "data").mkdir()
            for key in ("audit-key", "args-key"):
                shutil.copy(keys_from / key, root / "data" / key)
        self.env = dict(os.environ, AIRLOCK_BENCH_DB_URL=url, AIRLOCK_LOG=os.environ.get("AIRLOCK_LOG", "warn"))
        self.stderr: list[str] = []
        self.proc = subprocess.Popen([airlock, "serve", "--config", self.config, "--http", "127.0.0.1:0"],
                                     env=self.env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True, start_new_session=True)
        lines: queue.Queue = queue.Queue()

        def drain() -> None:
            for line in self.proc.stderr:
                self.stderr.append(line)
                lines.put(line)
            lines.put(None)

        threading.Thread(target=drain, daemon=True).start()
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                self.kill()
                raise RuntimeError(f"replica in {root} did not listen within {START_TIMEOUT:.0f} s") from None
            if line is None:
                self.kill()
                raise RuntimeError(f"replica in {root} exited before listening:\n{''.join(self.stderr[-20:])}")
            match = re.match(r"airlock: listening on http://(\S+)", line)
            if match:
                self.addr = match.group(1)
                return

    @property
    def data(self) -> Path:
        return self.root / "data"

    def cpu_seconds(self) -> float:
        """User + system CPU of the gateway process itself (not its downstream)."""
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def kill(self) -> None:
        """SIGTERM to the process group, SIGKILL after 5 s; never raises."""
        if self.proc.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, 5), (signal.SIGKILL, 5)):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                return
            try:
                self.proc.wait(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                continue
        try:  # the downstream, if the gateway left it behind
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def airlock(self, airlock: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        """`airlock ARGS --config` of this replica (e.g. `log verify`)."""
        return subprocess.run([airlock, *args, "--config", self.config], env=self.env, capture_output=True,
                              text=True, timeout=timeout)


class Mcp:
    """A minimal streamable-HTTP MCP client (2025-11-25) on one keep-alive connection:
    JSON-RPC over POST, answers as JSON or SSE; each request times out."""

    def __init__(self, addr: str, token: str, timeout: float = REQUEST_TIMEOUT):
        self.addr, self.token, self.timeout, self.session, self.next_id = addr, token, timeout, None, 0
        self.conn = http.client.HTTPConnection(addr, timeout=timeout)
        answer = self.request("initialize", {"protocolVersion": "2025-11-25", "capabilities": {},
                                             "clientInfo": {"name": "airlock-cluster-bench", "version": "1"}})
        if "result" not in answer:
            raise RuntimeError(f"initialize: {answer}")
        self.post({"jsonrpc": "2.0", "method": "notifications/initialized"})

    def post(self, message: dict) -> bytes:
        headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream",
                   "Authorization": f"Bearer {self.token}"}
        if self.session:
            headers["Mcp-Session-Id"] = self.session
        try:
            self.conn.request("POST", "/mcp", json.dumps(message), headers)
            response = self.conn.getresponse()
            body = response.read()  # the stream of a request ends with its answer
        except (OSError, http.client.HTTPException):
            self.conn.close()
            raise
        self.session = response.getheader("Mcp-Session-Id") or self.session
        self.kind = response.getheader("Content-Type", "")
        return body

    def request(self, method: str, params: dict) -> dict:
        self.next_id += 1
        body = self.post({"jsonrpc": "2.0", "id": self.next_id, "method": method, "params": params})
        if self.kind.startswith("application/json"):
            return json.loads(body)
        for line in body.decode().splitlines():
            if line.startswith("data:") and line[5:].strip():
                message = json.loads(line[5:])
                if message.get("id") == self.next_id:
                    return message
        raise RuntimeError(f"{method}: the stream ended without an answer")

    def close(self) -> None:
        self.conn.close()


def api(addr: str, method: str, path: str, who: str, body: dict | None = None) -> tuple[int, dict]:
    conn = http.client.HTTPConnection(addr, timeout=REQUEST_TIMEOUT)
    try:
        conn.request(method, path, json.dumps(body) if body is not None else None,
                     {"Authorization": f"Bearer {PEOPLE[who][0]}", "Content-Type": "application/json"})
        response = conn.getresponse()
        return response.status, json.loads(response.read() or b"null")
    finally:
        conn.close()


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def release_latency(a: Replica, b: Replica, rounds: int, seconds: float) -> dict:
    """Holds a call on `a`, approves it through `b`'s API, `rounds` times (or until `seconds`
    pass): the time from sending the decision to `a`'s client receiving the result (so it
    includes B logging and storing the decision, the NOTIFY, A's catch-up, A logging
    `call_forwarded`, the tool running and A logging `call_completed`), and how long B took
    to answer the decision, in ms."""
    carol = Mcp(a.addr, PEOPLE["carol"][0], timeout=60)
    latencies: list[float] = []
    decided: list[float] = []
    stop_at = time.monotonic() + seconds
    try:
        for round_ in range(rounds):
            if time.monotonic() > stop_at:
                break
            user = f"u{round_}-{uuid.uuid4().hex[:6]}"
            done: dict = {}

            def call() -> None:
                try:
                    done["answer"] = carol.request("tools/call", {"name": "demo__grant_role",
                                                                  "arguments": {"user": user, "role": "r"}})
                except Exception as error:  # reported below
                    done["error"] = error
                done["at"] = time.perf_counter()

            worker = threading.Thread(target=call, daemon=True)
            worker.start()
            approval, seen_by = None, time.monotonic() + REQUEST_TIMEOUT
            while approval is None:  # until replica B has heard of the hold
                _, listed = api(b.addr, "GET", "/api/v1/approvals?state=pending", "bob")
                approval = next((x for x in listed["approvals"] if x["args"].get("user") == user), None)
                if approval is None:
                    if time.monotonic() > seen_by or not worker.is_alive():
                        raise RuntimeError(f"round {round_}: B never listed the hold ({done})")
                    time.sleep(0.002)
            sent = time.perf_counter()
            status, body = api(b.addr, "POST", f"/api/v1/approvals/{approval['id']}/decision", "bob",
                               {"decision": "approve"})
            if status != 200:
                raise RuntimeError(f"round {round_}: the decision was answered {status}: {body}")
            decided.append((time.perf_counter() - sent) * 1000)
            worker.join(timeout=60)
            if worker.is_alive() or "error" in done:
                raise RuntimeError(f"round {round_}: the held call did not come back: {done.get('error')}")
            result = done["answer"].get("result", {})
            if result.get("isError"):
                raise RuntimeError(f"round {round_}: the released call failed: {done['answer']}")
            latencies.append((done["at"] - sent) * 1000)
    finally:
        carol.close()
    return {"rounds": len(latencies), "latencies": latencies, "decided": decided}


def load(config: dict) -> dict:
    """One load client process: a thread per entry of `config["targets"]` (an address), each
    with its own session calling `demo__echo` back to back until `config["end"]`
    (time.monotonic(), shared by every process on the machine). Counts the calls answered
    within [start, end] and their latencies; a refused or failed call is counted, not retried."""
    start, end = config["start"], config["end"]
    results = []

    def client(addr: str, name: str) -> None:
        mine = {"calls": 0, "errors": 0, "latencies": [], "failure": None}
        results.append(mine)
        try:
            mcp = Mcp(addr, PEOPLE["carol"][0])
            i = 0
            while time.monotonic() < end:
                i += 1
                text = f"{name}-{i}"
                sent = time.monotonic()
                answer = mcp.request("tools/call", {"name": "demo__echo", "arguments": {"text": text}})
                got = time.monotonic()
                content = answer.get("result", {}).get("content") or [{}]
                ok = not answer.get("result", {}).get("isError") and content[0].get("text") == text
                if start <= got <= end:
                    if ok:
                        mine["calls"] += 1
                        mine["latencies"].append((got - sent) * 1000)
                    else:
                        mine["errors"] += 1
            mcp.close()
        except Exception as error:  # reported to the parent, which fails the run
            mine["failure"] = f"{addr}: {error!r}"

    threads = [threading.Thread(target=client, args=(addr, f"{config['name']}-t{n}"), daemon=True)
               for n, addr in enumerate(config["targets"])]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=max(1.0, end - time.monotonic() + 2 * REQUEST_TIMEOUT))
    usage = os.times()
    return {"clients": results, "cpu": usage.user + usage.system,
            "stuck": sum(thread.is_alive() for thread in threads)}


if __name__ == "__main__" and sys.argv[1:2] == ["load"]:
    print(json.dumps(load(json.loads(sys.argv[2]))))
