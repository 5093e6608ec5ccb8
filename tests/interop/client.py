"""Drive an MCP server with the official Python SDK and check what server-everything and
server-filesystem answer through it (normally: through Airlock).

One run = one protocol mode over one transport:
  client.py --mode legacy|2026-07-28 (--url URL | --command CMD [--arg A ...])
            [--everything PREFIX] [--fs PREFIX --fs-root DIR] [--label TEXT]

PREFIX is what the gateway puts before a downstream's tool names ("everything__"); pass "" to
talk to a downstream directly. Prints one "PASS|FAIL <label> <check>" line per check and exits 1
if any check failed, 2 if the session could not be opened at all.
"""

from __future__ import annotations

import argparse
import base64
import logging
import sys
import traceback
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
from mcp import Client, StdioServerParameters
from mcp.shared.exceptions import MCPError


class Checks:
    def __init__(self, label: str) -> None:
        self.label = label
        self.failed = 0
        self.passed = 0

    async def run(self, name: str, fn: Callable[[], Awaitable[None]]) -> None:
        try:
            with anyio.fail_after(60):
                await fn()
        except Exception as exc:  # a failed check must not stop the others
            self.failed += 1
            print(f"FAIL {self.label} {name}: {type(exc).__name__}: {exc}", flush=True)
            if not isinstance(exc, AssertionError):
                traceback.print_exc(file=sys.stderr)
        else:
            self.passed += 1
            print(f"PASS {self.label} {name}", flush=True)


def texts(result: Any) -> list[str]:
    return [c.text for c in result.content if getattr(c, "type", None) == "text"]


def ok(result: Any) -> Any:
    assert not result.is_error, f"tool returned isError: {texts(result)}"
    return result


async def everything_checks(c: Client, checks: Checks, p: str, names: set[str]) -> None:
    async def listed() -> None:
        want = {f"{p}{n}" for n in ("echo", "get-sum", "get-tiny-image", "get-structured-content")}
        assert want <= names, f"missing {sorted(want - names)}"

    async def echo() -> None:
        r = ok(await c.call_tool(f"{p}echo", {"message": "hello through airlock ✈"}))
        assert texts(r) == ["Echo: hello through airlock ✈"], texts(r)

    async def get_sum() -> None:
        r = ok(await c.call_tool(f"{p}get-sum", {"a": 2, "b": 40}))
        assert texts(r) == ["The sum of 2 and 40 is 42."], texts(r)

    async def image() -> None:
        r = ok(await c.call_tool(f"{p}get-tiny-image", {}))
        images = [x for x in r.content if x.type == "image"]
        assert len(images) == 1 and images[0].mime_type == "image/png", r.content
        assert base64.b64decode(images[0].data)[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
        assert len(texts(r)) == 2, "text blocks around the image were lost"

    async def structured() -> None:
        r = ok(await c.call_tool(f"{p}get-structured-content", {"location": "Chicago"}))
        want = {"temperature": 36, "conditions": "Light rain / drizzle", "humidity": 82}
        assert r.structured_content == want, r.structured_content

    await checks.run("everything: tools listed", listed)
    await checks.run("everything: echo", echo)
    await checks.run("everything: get-sum", get_sum)
    await checks.run("everything: image content", image)
    await checks.run("everything: structuredContent", structured)


async def fs_checks(c: Client, checks: Checks, p: str, names: set[str], root: Path, tag: str) -> None:
    hello = root / "hello.txt"

    async def listed() -> None:
        want = {f"{p}{n}" for n in ("read_text_file", "write_file", "list_directory")}
        assert want <= names, f"missing {sorted(want - names)}"

    async def read() -> None:
        r = ok(await c.call_tool(f"{p}read_text_file", {"path": str(hello)}))
        assert texts(r) == [hello.read_text()], texts(r)

    async def listing() -> None:
        r = ok(await c.call_tool(f"{p}list_directory", {"path": str(root)}))
        assert "[FILE] hello.txt" in "\n".join(texts(r)), texts(r)

    async def write() -> None:
        target = root / f"written-{tag}.txt"
        body = f"written by client.py ({tag})\n"
        ok(await c.call_tool(f"{p}write_file", {"path": str(target), "content": body}))
        assert target.read_text() == body, "file on disk differs"

    async def outside_root() -> None:
        r = await c.call_tool(f"{p}read_text_file", {"path": "/etc/hostname"})
        assert r.is_error, f"read outside the allowed root did not fail: {texts(r)}"

    await checks.run("fs: tools listed", listed)
    await checks.run("fs: read_text_file", read)
    await checks.run("fs: list_directory", listing)
    await checks.run("fs: write_file has its effect", write)
    await checks.run("fs: downstream error passed through", outside_root)


async def session(opts: argparse.Namespace, checks: Checks) -> None:
    if opts.url:
        target: Any = opts.url
    else:
        target = StdioServerParameters(command=opts.command, args=opts.arg)
    async with Client(target, mode=opts.mode) as c:
        print(f"INFO {checks.label} protocol {c.protocol_version}", flush=True)
        names = {t.name for t in (await c.list_tools()).tools}
        prefixes = [p for p in (opts.everything, opts.fs) if p]
        if prefixes:

            async def namespaced() -> None:
                bad = sorted(n for n in names if not any(n.startswith(p) for p in prefixes))
                assert not bad, f"tools without a server prefix: {bad}"

            await checks.run("all tools namespaced", namespaced)
        if opts.everything is not None:
            await everything_checks(c, checks, opts.everything, names)
        if opts.fs is not None:
            await fs_checks(c, checks, opts.fs, names, Path(opts.fs_root), opts.tag)

        async def unknown() -> None:
            try:
                r = await c.call_tool(f"{opts.everything or ''}no-such-tool", {})
            except MCPError:
                return
            assert r.is_error, "an unknown tool was answered as a success"

        await checks.run("unknown tool is refused", unknown)


class Termination(logging.Handler):
    """Collects the SDK's warnings about closing the session."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.failures: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if "Session termination failed" in record.getMessage():
            self.failures.append(record.getMessage())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mode", required=True, choices=["legacy", "2026-07-28", "auto"])
    ap.add_argument("--url")
    ap.add_argument("--command")
    ap.add_argument("--arg", action="append", default=[])
    ap.add_argument("--everything", metavar="PREFIX")
    ap.add_argument("--fs", metavar="PREFIX")
    ap.add_argument("--fs-root")
    ap.add_argument("--label", default="client")
    ap.add_argument("--tag", default="run", help="distinguishes files this run writes")
    opts = ap.parse_args()
    if bool(opts.url) == bool(opts.command):
        ap.error("give exactly one of --url and --command")
    if opts.fs is not None and not opts.fs_root:
        ap.error("--fs needs --fs-root")
    checks = Checks(opts.label)
    termination = Termination()
    logging.getLogger("mcp.client.streamable_http").addHandler(termination)
    try:
        anyio.run(session, opts, checks)
    except Exception as exc:
        print(f"FAIL {checks.label} session: {type(exc).__name__}: {exc}", flush=True)
        traceback.print_exc(file=sys.stderr)
        return 2
    if opts.url and opts.mode != "2026-07-28":
        # The SDK closes a streamable-HTTP session with DELETE on leaving `Client` and
        # accepts only 200 or 204 (issue 19: Airlock used to answer 202).
        if termination.failures:
            checks.failed += 1
            print(f"FAIL {checks.label} session closed with DELETE: {termination.failures[0]}", flush=True)
        else:
            checks.passed += 1
            print(f"PASS {checks.label} session closed with DELETE", flush=True)
    print(f"INFO {checks.label} {checks.passed} passed, {checks.failed} failed", flush=True)
    return 1 if checks.failed else 0


if __name__ == "__main__":
    sys.exit(main())
