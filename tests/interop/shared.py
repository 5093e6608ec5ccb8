"""Several Python `mcp` SDK stdio clients launch `airlock serve` on one config at the same
moment, half of them in each protocol era: one gateway serves them all, and one log holds
and verifies all their calls.

  shared.py --airlock BIN --config CFG --data-dir DIR [--clients N] [--prefix everything__]

The data dir must be fresh (no gateway has run on it). Prints one "PASS|FAIL shared <check>"
line per check; exits 1 if any failed.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import anyio
from mcp import Client, StdioServerParameters

MODES = ["legacy", "2026-07-28"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--airlock", required=True)
    ap.add_argument("--config", required=True)
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--clients", type=int, default=3)
    ap.add_argument("--prefix", default="everything__")
    opts = ap.parse_args()
    failed = 0

    def report(name: str, ok: bool, detail: str = "") -> None:
        nonlocal failed
        failed += 0 if ok else 1
        print(f"{'PASS' if ok else 'FAIL'} shared {name}{': ' + detail if detail and not ok else ''}", flush=True)

    results: dict[int, str] = {}
    status: dict = {}

    async def one(i: int, all_called: anyio.Event, release: anyio.Event, called: list[int]) -> None:
        mode = MODES[i % len(MODES)]
        params = StdioServerParameters(command=opts.airlock, args=["serve", "--config", opts.config])
        async with Client(params, mode=mode) as c:
            names = {t.name for t in (await c.list_tools()).tools}
            assert f"{opts.prefix}echo" in names, sorted(names)[:5]
            r = await c.call_tool(f"{opts.prefix}echo", {"message": f"client {i} ({mode})"})
            results[i] = " ".join(x.text for x in r.content if getattr(x, "type", None) == "text")
            called.append(i)
            if len(called) == opts.clients:
                all_called.set()
            await release.wait()

    async def run() -> None:
        all_called, release, called = anyio.Event(), anyio.Event(), []
        async with anyio.create_task_group() as tg:
            for i in range(opts.clients):
                tg.start_soon(one, i, all_called, release, called)
            with anyio.fail_after(120):
                await all_called.wait()
            out = subprocess.run([opts.airlock, "gateway", "status", "--json", "--config", opts.config],
                                 capture_output=True, text=True, check=False)
            status.update(json.loads(out.stdout) if out.returncode == 0 else {"error": out.stderr})
            release.set()

    try:
        anyio.run(run)
    except Exception as exc:  # noqa: BLE001 - report, do not crash
        report("clients ran", False, f"{type(exc).__name__}: {exc}")
        return 1
    for i in range(opts.clients):
        mode = MODES[i % len(MODES)]
        report(f"client {i} ({mode}) listed and called echo", results.get(i) == f"Echo: client {i} ({mode})", repr(results.get(i)))
    report(f"one gateway served {opts.clients} sessions at once", status.get("attached", 0) >= opts.clients, json.dumps(status)[:300])

    stop = subprocess.run([opts.airlock, "gateway", "stop", "--data-dir", opts.data_dir], capture_output=True, text=True, check=False)
    report("gateway stop", stop.returncode == 0, stop.stderr)
    verify = subprocess.run([opts.airlock, "log", "verify", "--data-dir", opts.data_dir], capture_output=True, text=True, check=False)
    report("log verify", verify.returncode == 0, verify.stderr + verify.stdout)
    export = subprocess.run([opts.airlock, "log", "export", "--data-dir", opts.data_dir], capture_output=True, text=True, check=False)
    records = [json.loads(line) for line in export.stdout.splitlines() if line.strip()]
    started = sum(1 for r in records if r.get("kind") == "gateway_started")
    report("one gateway started for simultaneous launches", started == 1, f"{started} gateway_started records")
    sessions = {r.get("session") for r in records if r.get("kind") == "call_received" and r.get("tool") == f"{opts.prefix}echo"}
    report("every client's call is in the one log, each its own session", len(sessions) == opts.clients, f"{len(sessions)} sessions")
    completed = sum(1 for r in records if r.get("kind") == "call_completed" and r.get("tool") == f"{opts.prefix}echo")
    report("every call completed in the log", completed == opts.clients, f"{completed} call_completed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
