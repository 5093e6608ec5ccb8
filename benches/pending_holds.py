"""Memory and time of many pending approvals: RSS of `airlock serve` idle, then after a
client without elicitation has opened N `confirm` holds (each call returns at once and
leaves its approval pending until it expires).

Run with the interop venv (it has the Python `mcp` SDK):
    tests/interop/.venv/bin/python benches/pending_holds.py --airlock target/release/airlock 10000
Prints figures only; asserts nothing about them.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import anyio
from mcp import Client, StdioServerParameters


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024
    return float("nan")


def airlock_pid(config: Path) -> int:
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"serve" in cmdline and str(config).encode() in cmdline:
                return int(proc.name)
    raise SystemExit("airlock serve not found")


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--airlock", required=True)
    parser.add_argument("holds", type=int, nargs="?", default=10_000)
    args = parser.parse_args()
    airlock = str(Path(args.airlock).resolve())
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "tool-manifests").mkdir()
        (root / "policies").mkdir()
        config = root / "airlock.toml"
        config.write_text('[gateway]\ndata_dir = "data"\n[audit]\ndurability = "none"\n[approvals]\ntimeout = "1h"\n')
        (root / "tool-manifests" / "demo.toml").write_text(
            f'name = "demo"\ncommand = "{airlock}"\nargs = ["demo-tools", "--sandbox", "sandbox"]\n'
        )
        (root / "policies" / "holds.toml").write_text(
            '[[rule]]\nid = "echo-confirm"\ntools = ["demo__echo"]\neffect = "confirm"\n'
        )
        params = StdioServerParameters(command=airlock, args=["serve", "--config", str(config)])
        async with Client(params, mode="legacy") as client:
            pid = airlock_pid(config)
            await client.call_tool("demo__read_customer", {"id": "C-1001"})
            print(f"idle after one call: RSS {rss_mib(pid):.1f} MiB", flush=True)
            started = time.monotonic()
            for i in range(args.holds):
                result = await client.call_tool("demo__echo", {"text": f"hold {i}"})
                if not result.is_error:
                    raise SystemExit(f"call {i} was not held")
            took = time.monotonic() - started
            print(
                f"{args.holds} pending holds: RSS {rss_mib(pid):.1f} MiB; "
                f"opened in {took:.1f} s ({took / args.holds * 1000:.2f} ms each, durability none)",
                flush=True,
            )


anyio.run(main)
