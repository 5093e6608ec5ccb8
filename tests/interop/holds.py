"""Check Airlock's `confirm` holds with the official Python SDK as the client.

Starts Airlock (the binary in $AIRLOCK_BIN) in front of `airlock demo-tools`, with a policy that
makes `demo__grant_role` a `confirm` call, and checks:

  legacy (2025-11-25), stdio and HTTP: Airlock asks with `elicitation/create` (form mode, boolean
      `approve`); accept + approve runs the call (a grant in roles.json, a receipt in
      receipts.jsonl); decline, accept without approve and cancel run nothing;
  2026-07-28, HTTP: the call answers `input_required` with `inputRequests["airlock_confirm"]`
      and a `requestState` starting `airlock.v1.`; a retry with an accepting `inputResponses`
      runs it, once: the same state again (replay), an altered state, the state with other
      arguments and a retry without an answer are refused ("Confirmation refused: ...") and run
      nothing; a declining retry runs nothing; the SDK's own retry loop confirms too;
  afterwards, with Airlock stopped: `airlock log verify` exits 0 and `airlock log export` holds
      the approval_requested / approval_decided / approval_settled / call_forwarded records the
      calls above imply.

  holds.py [--work DIR]      (DIR: where configs, data and sandboxes go; default a temp dir)

Prints one "PASS|FAIL holds <check>" line per check; exits 1 if any failed, 2 on a setup error.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import mcp_types as t
from mcp import Client, StdioServerParameters

from gateway import airlock_bin, toml_value

TOOL = "demo__grant_role"
KEY = "airlock_confirm"
POLICY = f"""[[rule]]
id = "interop-grants-confirm"
tools = [{json.dumps(TOOL)}]
effect = "confirm"
reason = "grants change who can do what"

[[rule]]
id = "interop-allow-rest"
effect = "allow"
reason = "only grants are held in this run"
"""


class Checks:
    def __init__(self) -> None:
        self.failed = 0
        self.passed = 0

    async def run(self, name: str, fn: Callable[[], Awaitable[None]]) -> None:
        try:
            with anyio.fail_after(120):  # a hang guard, not a timing check
                await fn()
        except Exception as exc:  # a failed check must not stop the others
            self.failed += 1
            print(f"FAIL holds {name}: {type(exc).__name__}: {exc}", flush=True)
            if not isinstance(exc, AssertionError):
                traceback.print_exc(file=sys.stderr)
        else:
            self.passed += 1
            print(f"PASS holds {name}", flush=True)


class Site:
    """One Airlock config: data_dir, the demo downstream's sandbox, and what its calls should
    have left in the audit log (the approvals settled, in order, and those that ran)."""

    def __init__(self, root: Path, name: str) -> None:
        self.dir = root / name
        self.sandbox = self.dir / "sandbox-demo"
        self.data = self.dir / "data"
        self.settled: list[str] = []  # expected approval_settled decisions, in log order
        self.decided: list[str] = []  # expected approval_decided verdicts, in log order
        (self.dir / "tool-manifests").mkdir(parents=True)
        (self.dir / "policies").mkdir()
        manifest = {
            "name": "demo",
            "command": airlock_bin(),
            "args": ["demo-tools", "--sandbox", str(self.sandbox)],
        }
        (self.dir / "tool-manifests" / "demo.toml").write_text(
            "".join(f"{k} = {toml_value(v)}\n" for k, v in manifest.items())
        )
        (self.dir / "policies" / "holds.toml").write_text(POLICY)
        self.config = self.dir / "airlock.toml"
        self.config.write_text(
            "[gateway]\n"
            f"data_dir = {toml_value(str(self.data))}\n"
            f"manifests = {toml_value(str(self.dir / 'tool-manifests'))}\n"
            f"policies = {toml_value(str(self.dir / 'policies'))}\n"
            'separator = "__"\n\n'
            '[http]\nallowed_hosts = ["localhost", "127.0.0.1"]\n'
        )

    def grants(self, user: str) -> list[dict[str, Any]]:
        path = self.sandbox / "roles.json"
        if not path.exists():
            return []
        return [g for g in json.loads(path.read_text()) if g.get("user") == user]

    def receipts(self) -> list[dict[str, Any]]:
        path = self.sandbox / "receipts.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def expect(self, *verdicts: str, settled: str) -> None:
        self.decided.extend(verdicts)
        self.settled.append(settled)


def texts(result: Any) -> str:
    return "\n".join(c.text for c in result.content if getattr(c, "type", None) == "text")


def ran_once(site: Site, user: str, receipts_before: int, result: Any) -> None:
    assert isinstance(result, t.CallToolResult), f"not a tool result: {result!r}"
    assert not result.is_error, f"isError: {texts(result)}"
    grants = site.grants(user)
    assert len(grants) == 1, f"roles.json grants for {user}: {grants}"
    receipts = site.receipts()
    assert len(receipts) == receipts_before + 1, f"receipts: {receipts_before} -> {len(receipts)}"
    receipt = receipts[-1].get("receipt", {})
    assert receipt.get("kind") == "confirm" and receipt.get("tool") == TOOL, receipts[-1]
    assert isinstance(receipts[-1].get("signature"), str), receipts[-1]


def did_not_run(site: Site, user: str, receipts_before: int, result: Any, starts: str) -> None:
    assert isinstance(result, t.CallToolResult), f"not a tool result: {result!r}"
    assert result.is_error, f"not a tool error: {texts(result)}"
    assert texts(result).startswith(starts), f"text does not start with {starts!r}: {texts(result)}"
    assert site.grants(user) == [], f"roles.json has a grant for {user}"
    assert len(site.receipts()) == receipts_before, "a receipt reached the downstream"


class Asker:
    """The elicitation callback: answers with whatever `answer` holds, and keeps what it was asked."""

    def __init__(self) -> None:
        self.answer: t.ElicitResult = t.ElicitResult(action="decline")
        self.asked: list[Any] = []

    async def __call__(self, _context: Any, params: Any) -> t.ElicitResult:
        self.asked.append(params)
        return self.answer


ACCEPT = t.ElicitResult(action="accept", content={"approve": True, "comment": "ok from holds.py"})
ACCEPT_NO = t.ElicitResult(action="accept", content={"approve": False})
DECLINE = t.ElicitResult(action="decline")
CANCEL = t.ElicitResult(action="cancel")


def check_form(params: Any) -> None:
    """The question is a form-mode elicitation with a required boolean `approve`."""
    assert getattr(params, "mode", "form") == "form", params
    schema = params.requested_schema
    schema = schema if isinstance(schema, dict) else schema.model_dump(by_alias=True, exclude_none=True)
    props = schema.get("properties", {})
    assert props.get("approve", {}).get("type") == "boolean", schema
    assert "approve" in schema.get("required", []), schema
    assert props.get("comment", {}).get("type") == "string", schema
    assert "comment" not in schema.get("required", []), schema
    assert TOOL in params.message and "Argument digest" in params.message, params.message


# ---------------------------------------------------------------------------------------------
async def legacy_checks(c: Client, asker: Asker, site: Site, checks: Checks, label: str) -> None:
    async def call(user: str, answer: t.ElicitResult) -> Any:
        asker.answer = answer
        return await c.call_tool(TOOL, {"user": user, "role": "admin"})

    async def accept() -> None:
        before, asked = len(site.receipts()), len(asker.asked)
        result = await call(f"{label}-ana", ACCEPT)
        site.expect("approve", settled="approved")
        assert len(asker.asked) == asked + 1, "no elicitation/create reached the client"
        check_form(asker.asked[-1])
        ran_once(site, f"{label}-ana", before, result)

    async def decline() -> None:
        before = len(site.receipts())
        result = await call(f"{label}-bo", DECLINE)
        site.expect("deny", settled="denied")
        did_not_run(site, f"{label}-bo", before, result, "Not confirmed")

    async def accept_without_approve() -> None:
        before = len(site.receipts())
        result = await call(f"{label}-cy", ACCEPT_NO)
        site.expect("deny", settled="denied")
        did_not_run(site, f"{label}-cy", before, result, "Not confirmed")

    async def cancel() -> None:
        before = len(site.receipts())
        result = await call(f"{label}-dee", CANCEL)
        site.expect(settled="cancelled")
        did_not_run(site, f"{label}-dee", before, result, "Approval ")
        assert "was cancelled" in texts(result), texts(result)

    await checks.run(f"legacy {label}: elicitation accept (approve: true) runs the call once", accept)
    await checks.run(f"legacy {label}: decline -> 'Not confirmed', nothing runs", decline)
    await checks.run(f"legacy {label}: accept with approve: false -> 'Not confirmed', nothing runs", accept_without_approve)
    if label == "stdio":
        await checks.run(f"legacy {label}: cancel -> cancelled, nothing runs", cancel)


# ---------------------------------------------------------------------------------------------
def alter_claims(state: str) -> str:
    """The same state with one claim changed (args_sha256) and the original tag."""
    prefix = "airlock.v1."
    body, tag = state[len(prefix):].split(".", 1)
    claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    claims["args_sha256"] = hashlib.sha256(b"other arguments").hexdigest()
    forged = base64.urlsafe_b64encode(json.dumps(claims, separators=(",", ":")).encode()).rstrip(b"=").decode()
    assert forged != body
    return f"{prefix}{forged}.{tag}"


async def modern_checks(c: Client, site: Site, checks: Checks) -> None:
    s = c.session
    await c.list_tools()  # the SDK mirrors x-mcp-header arguments only for listed tools

    async def first(args: dict[str, Any]) -> t.InputRequiredResult:
        r = await s.call_tool(TOOL, args, allow_input_required=True)
        assert isinstance(r, t.InputRequiredResult), f"expected input_required, got {r!r}"
        return r

    async def retry(args: dict[str, Any], state: str | None, answer: t.ElicitResult | None) -> Any:
        responses = {KEY: answer} if answer is not None else None
        return await s.call_tool(TOOL, args, input_responses=responses, request_state=state, allow_input_required=True)

    ana = {"user": "modern-ana", "role": "admin"}
    bo = {"user": "modern-bo", "role": "viewer"}
    cy = {"user": "modern-cy", "role": "viewer"}
    seen: dict[str, Any] = {}

    async def asks() -> None:
        r = await first(ana)
        seen["ana"] = r
        assert r.request_state and r.request_state.startswith("airlock.v1."), r.request_state
        assert r.input_requests and KEY in r.input_requests, r.input_requests
        req = r.input_requests[KEY]
        assert isinstance(req, t.ElicitRequest), f"{KEY} is not an elicitation: {req!r}"
        check_form(req.params)
        assert site.grants("modern-ana") == [], "the call ran before it was confirmed"

    async def accept() -> None:
        before = len(site.receipts())
        result = await retry(ana, seen["ana"].request_state, ACCEPT)
        site.expect("approve", settled="approved")
        ran_once(site, "modern-ana", before, result)

    async def replay() -> None:
        before = len(site.receipts())
        result = await retry(ana, seen["ana"].request_state, ACCEPT)
        assert result.is_error and texts(result).startswith("Confirmation refused:"), texts(result)
        assert "already used" in texts(result), texts(result)
        assert len(site.grants("modern-ana")) == 1, "the replayed call ran a second time"
        assert len(site.receipts()) == before, "a second receipt reached the downstream"

    async def altered() -> None:
        r = await first(bo)
        seen["bo"] = r
        before = len(site.receipts())
        result = await retry(bo, alter_claims(r.request_state), ACCEPT)
        did_not_run(site, "modern-bo", before, result, "Confirmation refused:")
        assert "altered" in texts(result), texts(result)
        # One character of the sealed body changed, tag kept.
        state, at = r.request_state, len("airlock.v1.") + 4
        flipped = state[:at] + ("A" if state[at] != "A" else "B") + state[at + 1 :]
        result = await retry(bo, flipped, ACCEPT)
        did_not_run(site, "modern-bo", before, result, "Confirmation refused:")

    async def other_arguments() -> None:
        before = len(site.receipts())
        other = {"user": "modern-bo", "role": "owner"}
        result = await retry(other, seen["bo"].request_state, ACCEPT)
        did_not_run(site, "modern-bo", before, result, "Confirmation refused:")
        assert "arguments" in texts(result), texts(result)

    async def decline() -> None:
        # The genuine state, unused so far (the refused retries above did not spend it).
        before = len(site.receipts())
        result = await retry(bo, seen["bo"].request_state, DECLINE)
        site.expect("deny", settled="denied")
        did_not_run(site, "modern-bo", before, result, "Not confirmed")

    async def no_answer() -> None:
        r = await first(cy)
        before = len(site.receipts())
        result = await retry(cy, r.request_state, None)
        site.expect(settled="cancelled")
        did_not_run(site, "modern-cy", before, result, "Confirmation refused:")
        # The hold is over: the state cannot be used to confirm afterwards.
        result = await retry(cy, r.request_state, ACCEPT)
        did_not_run(site, "modern-cy", before, result, "Confirmation refused:")

    await checks.run("2026-07-28 http: first call -> input_required, airlock_confirm form, airlock.v1. state", asks)
    if "ana" not in seen:
        return
    await checks.run("2026-07-28 http: retry with accept runs the call once", accept)
    await checks.run("2026-07-28 http: the accepted state replayed -> refused, nothing runs again", replay)
    await checks.run("2026-07-28 http: altered state -> refused, nothing runs", altered)
    if "bo" in seen:
        await checks.run("2026-07-28 http: the state with other arguments -> refused, nothing runs", other_arguments)
        await checks.run("2026-07-28 http: retry with decline -> 'Not confirmed', nothing runs", decline)
    await checks.run("2026-07-28 http: retry without an answer -> refused, hold cancelled", no_answer)


async def modern_sdk_loop(url: str, site: Site, checks: Checks) -> None:
    """The SDK's own multi-round-trip loop (Client.call_tool + elicitation_callback)."""
    asker = Asker()
    asker.answer = ACCEPT

    async def run() -> None:
        async with Client(url, mode="2026-07-28", elicitation_callback=asker) as c:
            before = len(site.receipts())
            result = await c.call_tool(TOOL, {"user": "modern-sdk", "role": "viewer"})
            site.expect("approve", settled="approved")
            assert len(asker.asked) == 1, f"the callback was asked {len(asker.asked)} times"
            ran_once(site, "modern-sdk", before, result)

    await checks.run("2026-07-28 http: the SDK's retry loop with an elicitation callback confirms", run)


# ---------------------------------------------------------------------------------------------
class HttpAirlock:
    """`airlock serve --http 127.0.0.1:0`; the address is read from its stderr."""

    def __init__(self, site: Site) -> None:
        self.proc = subprocess.Popen(
            [airlock_bin(), "serve", "--config", str(site.config), "--http", "127.0.0.1:0"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.url: str | None = None
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            sys.stderr.write(f"[airlock http] {line}")
            if line.startswith("airlock: listening on "):
                self.url = line.removeprefix("airlock: listening on ").strip() + "/mcp"
                break
        if self.url is None:
            raise RuntimeError(f"airlock serve --http exited ({self.proc.wait()}) before listening")
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            sys.stderr.write(f"[airlock http] {line}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def airlock_log(site: Site, *args: str) -> subprocess.CompletedProcess[str]:
    """`airlock log ARGS --data-dir D`, retried while the stopped gateway's database lock lingers."""
    for _ in range(100):
        out = subprocess.run(
            [airlock_bin(), "log", *args, "--data-dir", str(site.data)], capture_output=True, text=True
        )
        if "locked" not in out.stderr:
            return out
        time.sleep(0.1)
    raise RuntimeError(f"the audit database in {site.data} stayed locked")


async def audit_checks(site: Site, checks: Checks, label: str) -> None:
    async def verify() -> None:
        out = airlock_log(site, "verify")
        assert out.returncode == 0, f"exit {out.returncode}: {out.stdout[-400:]} {out.stderr[-400:]}"

    async def records() -> None:
        out = airlock_log(site, "export")
        assert out.returncode == 0, f"export exit {out.returncode}: {out.stderr[-400:]}"
        recs = [json.loads(line) for line in out.stdout.splitlines() if line.strip()]
        of = lambda kind: [r for r in recs if r.get("kind") == kind]  # noqa: E731
        requested, decided, settled = of("approval_requested"), of("approval_decided"), of("approval_settled")
        assert len(requested) == len(site.settled), f"{len(requested)} approval_requested, expected {len(site.settled)}"
        assert all(r.get("tool") == TOOL and r.get("decision") == "confirm" for r in requested), requested
        assert all(r.get("rule") == "interop-grants-confirm" for r in requested), [r.get("rule") for r in requested]
        got = [r.get("decision") for r in settled]
        assert got == site.settled, f"approval_settled decisions {got}, expected {site.settled}"
        assert [r.get("approval_id") for r in settled] == [r.get("approval_id") for r in requested], "settled ids"
        verdicts = [r.get("decision") for r in decided]
        assert verdicts == site.decided, f"approval_decided verdicts {verdicts}, expected {site.decided}"
        assert all(r.get("channel") == "elicitation" for r in decided), [r.get("channel") for r in decided]
        approved = [r["approval_id"] for r in settled if r.get("decision") == "approved"]
        forwarded = [r.get("approval_id") for r in of("call_forwarded") if r.get("tool") == TOOL]
        assert forwarded == approved, f"call_forwarded approval ids {forwarded}, approved {approved}"
        receipts = [r.get("receipt", {}).get("approval_id") for r in site.receipts()]
        assert receipts == approved, f"receipt approval ids {receipts}, approved {approved}"

    await checks.run(f"audit {label}: airlock log verify exits 0", verify)
    await checks.run(f"audit {label}: approval records match the calls", records)


async def main_async(work: Path, checks: Checks) -> None:
    # stdio: each Client spawns its own `airlock serve`; one session at a time (sled locks data_dir).
    stdio = Site(work, "stdio")
    asker = Asker()
    params = StdioServerParameters(command=airlock_bin(), args=["serve", "--config", str(stdio.config)])
    async with Client(params, mode="legacy", elicitation_callback=asker) as c:
        print(f"INFO holds legacy stdio protocol {c.protocol_version}", flush=True)
        await legacy_checks(c, asker, stdio, checks, "stdio")

    http = Site(work, "http")
    gateway = HttpAirlock(http)
    try:
        assert gateway.url
        asker = Asker()
        async with Client(gateway.url, mode="legacy", elicitation_callback=asker) as c:
            print(f"INFO holds legacy http protocol {c.protocol_version}", flush=True)
            await legacy_checks(c, asker, http, checks, "http")
        async with Client(gateway.url, mode="2026-07-28") as c:
            print(f"INFO holds modern http protocol {c.protocol_version}", flush=True)
            await modern_checks(c, http, checks)
        await modern_sdk_loop(gateway.url, http, checks)
    finally:
        gateway.stop()

    await audit_checks(stdio, checks, "stdio")
    await audit_checks(http, checks, "http")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, help="directory for configs, data and sandboxes (default: a temp dir)")
    opts = ap.parse_args()
    if not os.access(airlock_bin(), os.X_OK):
        print(f"FAIL holds setup: no airlock binary at {airlock_bin()}", flush=True)
        return 2
    checks = Checks()
    with tempfile.TemporaryDirectory(prefix="airlock-holds-") as tmp:
        work = Path(tmp)
        if opts.work:  # kept for reading after the run
            opts.work.mkdir(parents=True, exist_ok=True)
            work = Path(tempfile.mkdtemp(prefix="holds-", dir=opts.work))
        try:
            anyio.run(main_async, work, checks)
        except Exception as exc:
            print(f"FAIL holds session: {type(exc).__name__}: {exc}", flush=True)
            traceback.print_exc(file=sys.stderr)
            return 2
    print(f"INFO holds {checks.passed} passed, {checks.failed} failed", flush=True)
    return 1 if checks.failed else 0


if __name__ == "__main__":
    sys.exit(main())
