"""Slack and Teams approvals against independent implementations.

Runs `airlock serve --http` with [approvals.slack] and [approvals.teams] pointed at a fake
Slack Web API and a fake Workflows webhook served here, holds real tool calls (airlock
demo-tools, default policy: delete_bucket is high risk, so it needs approval), and checks:

  * slack_sdk's SignatureVerifier produces the signatures Airlock accepts; a tampered body,
    a stale timestamp and a replay get 401 and leave no approval_decided in the log;
  * an Approve click releases the held call; a Deny asks for a reason in a modal whose
    submission denies it; chat.update shows each outcome;
  * every Block Kit payload Airlock sent (messages, updates, the modal) round-trips unchanged
    through slack_sdk.models.blocks.Block.parse_all(...) / to_dict();
  * every Adaptive Card Airlock posted parses and validates with no events in the
    `adaptivecards` npm package (adaptive_cards.js).

Usage: channels.py --node NODE --work DIR   (the airlock binary: $AIRLOCK_BIN)
Prints PASS/FAIL lines; exits 1 if any check failed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
import traceback
import urllib.error
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import anyio
from mcp import Client
from slack_sdk.models.blocks import Block
from slack_sdk.signature import SignatureVerifier

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gateway  # noqa: E402

SECRET = "interop-signing-secret-4f1c"
TOKEN = "xoxb-interop-token"
TS = "1700000000.000200"
FAILED = 0


def report(ok: bool, name: str, detail: str = "") -> None:
    global FAILED
    if not ok:
        FAILED += 1
    print(f"{'PASS' if ok else 'FAIL'} {name}{': ' + detail if detail and not ok else ''}", flush=True)


class Fake:
    """Slack's Web API at /api/METHOD and a Teams webhook at /teams, recording every body."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, dict[str, Any]]] = []
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                length = int(self.headers.get("content-length") or 0)
                body = json.loads(self.rfile.read(length) or b"null")
                method = self.path.rsplit("/", 1)[-1]
                with fake.lock:
                    fake.seen.append((method, body))
                if self.path == "/teams":
                    self.send_response(202)
                    self.end_headers()
                    return
                answer = {"ok": True}
                if method == "chat.postMessage":
                    answer = {"ok": True, "channel": "C0INTEROP", "ts": TS}
                data = json.dumps(answer).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def all(self, method: str) -> list[dict[str, Any]]:
        with self.lock:
            return [b for m, b in self.seen if m == method]

    async def nth(self, method: str, n: int) -> dict[str, Any]:
        with anyio.fail_after(60):
            while len(self.all(method)) < n:
                await anyio.sleep(0.05)
        return self.all(method)[n - 1]


def write_setup(work: Path, fake: Fake) -> Path:
    airlock = gateway.airlock_bin()
    (work / "tool-manifests").mkdir(parents=True, exist_ok=True)
    (work / "policies").mkdir(parents=True, exist_ok=True)
    gateway.write_manifest(
        work / "tool-manifests",
        {"name": "demo", "command": airlock, "args": ["demo-tools", "--sandbox", str(work / "sandbox")]},
    )
    config = work / "airlock.toml"
    config.write_text(
        "[gateway]\n"
        f"data_dir = {gateway.toml_value(str(work / 'data'))}\n"
        f"manifests = {gateway.toml_value(str(work / 'tool-manifests'))}\n"
        f"policies = {gateway.toml_value(str(work / 'policies'))}\n\n"
        '[approvals]\ntimeout = "30m"\n\n'
        "[approvals.slack]\n"
        'bot_token_env = "INTEROP_SLACK_BOT_TOKEN"\nsigning_secret_env = "INTEROP_SLACK_SIGNING_SECRET"\n'
        f'channel = "C0INTEROP"\napi_base = "{fake.url}/api"\n'
        'users = { U0ALICE = "alice", U0BOB = "bob" }\n\n'
        '[approvals.teams]\nworkflow_url_env = "INTEROP_TEAMS_URL"\n'
    )
    return config


def form(payload: dict[str, Any]) -> str:
    return urllib.parse.urlencode({"payload": json.dumps(payload)})


def click(user: str, action: str, approval: str) -> dict[str, Any]:
    return {
        "type": "block_actions",
        "user": {"id": user},
        "trigger_id": f"trigger-{user}",
        "channel": {"id": "C0INTEROP"},
        "actions": [{"type": "button", "action_id": action, "value": approval}],
    }


def post(base: str, body: str, timestamp: str, signature: str) -> int:
    request = urllib.request.Request(
        f"{base}/slack/interactions",
        data=body.encode(),
        method="POST",
        headers={
            "content-type": "application/x-www-form-urlencoded",
            "x-slack-request-timestamp": timestamp,
            "x-slack-signature": signature,
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status
    except urllib.error.HTTPError as error:
        return error.code


def signed(verifier: SignatureVerifier, body: str, timestamp: str | None = None) -> tuple[str, str]:
    timestamp = timestamp or str(int(time.time()))
    return timestamp, verifier.generate_signature(timestamp=timestamp, body=body)


def approval_id(message: dict[str, Any]) -> str:
    actions = [b for b in message["blocks"] if b["type"] == "actions"][0]
    return actions["elements"][0]["value"]


async def flows(base: str, fake: Fake, verifier: SignatureVerifier) -> None:
    async with Client(f"{base}/mcp", mode="legacy") as client:
        results: dict[str, Any] = {}

        async def hold(name: str, bucket: str) -> None:
            results[name] = await client.call_tool("demo__delete_bucket", {"bucket": bucket})

        async with anyio.create_task_group() as tg:
            tg.start_soon(hold, "approved", "tmp-scratch")
            first = approval_id(await fake.nth("chat.postMessage", 1))

            approve = form(click("U0ALICE", "airlock_approve", first))
            ts, sig = signed(verifier, approve)
            tampered = approve.replace("U0ALICE", "U0BOB")
            report(post(base, tampered, ts, sig) == 401, "slack: a tampered body gets 401")
            stale_ts, stale_sig = signed(verifier, approve, str(int(time.time()) - 600))
            report(verifier.is_valid(approve, stale_ts, stale_sig) is False, "slack_sdk itself refuses the stale request")
            report(post(base, approve, stale_ts, stale_sig) == 401, "slack: a stale timestamp gets 401")
            unmapped = form(click("U0MALLORY", "airlock_approve", first))
            ts2, sig2 = signed(verifier, unmapped)
            report(post(base, unmapped, ts2, sig2) == 200, "slack: a slack_sdk-signed request is accepted")
            report(post(base, unmapped, ts2, sig2) == 401, "slack: a replayed request gets 401")
            told = await fake.nth("chat.postEphemeral", 1)
            report(told.get("user") == "U0MALLORY" and "not mapped" in told.get("text", ""), "slack: an unmapped user is told", str(told))

            report(post(base, approve, ts, sig) == 200, "slack: alice's signed Approve is accepted")
            update = await fake.nth("chat.update", 1)
            report("Approved" in json.dumps(update) and "alice" in json.dumps(update), "slack: chat.update shows the approval", json.dumps(update)[:300])

            tg.start_soon(hold, "denied", "staging-assets")
            second = approval_id(await fake.nth("chat.postMessage", 2))
            report(post(base, *signed_form(verifier, form(click("U0BOB", "airlock_deny", second)))) == 200, "slack: bob's Deny is accepted")
            opened = await fake.nth("views.open", 1)
            view = opened["view"]
            submission = {
                "type": "view_submission",
                "user": {"id": "U0BOB"},
                "view": {
                    "callback_id": view["callback_id"],
                    "private_metadata": view["private_metadata"],
                    "state": {"values": {"reason": {"reason": {"type": "plain_text_input", "value": "interop says no"}}}},
                },
            }
            report(post(base, *signed_form(verifier, form(submission))) == 200, "slack: the reason modal's submission is accepted")
            update = await fake.nth("chat.update", 2)
            report("interop says no" in json.dumps(update), "slack: chat.update shows the denial and its reason")
        report(not results["approved"].is_error, "the approved call completed")
        report(bool(results["denied"].is_error), "the denied call was refused")


def signed_form(verifier: SignatureVerifier, body: str) -> tuple[str, str, str]:
    ts, sig = signed(verifier, body)
    return body, ts, sig


def round_trips(fake: Fake) -> None:
    payloads: list[tuple[str, list[dict[str, Any]]]] = []
    for method in ("chat.postMessage", "chat.update"):
        payloads += [(method, b["blocks"]) for b in fake.all(method)]
    payloads += [("views.open", b["view"]["blocks"]) for b in fake.all("views.open")]
    report(len(payloads) >= 5, "captured every Block Kit payload", f"only {len(payloads)}")
    for i, (method, blocks) in enumerate(payloads):
        again = [b.to_dict() for b in Block.parse_all(blocks)]
        report(again == blocks, f"slack_sdk Block round trip: {method} #{i}", json.dumps(blocks)[:400])


def log_records(airlock: str, data: Path) -> list[dict[str, Any]]:
    for _ in range(100):
        out = subprocess.run([airlock, "log", "export", "--format", "jsonl", "--data-dir", str(data)], capture_output=True, text=True)
        if "locked" not in out.stderr:
            break
        time.sleep(0.1)
    assert out.returncode == 0, out.stderr
    return [json.loads(line) for line in out.stdout.splitlines() if line.strip()]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--node", required=True)
    ap.add_argument("--work", required=True, type=Path)
    opts = ap.parse_args()
    work: Path = opts.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    fake = Fake()
    config = write_setup(work, fake)
    airlock = gateway.airlock_bin()
    port = gateway.free_port()
    env = dict(os.environ, INTEROP_SLACK_BOT_TOKEN=TOKEN, INTEROP_SLACK_SIGNING_SECRET=SECRET, INTEROP_TEAMS_URL=f"{fake.url}/teams")
    log = open(work / "airlock.log", "w")
    proc = subprocess.Popen([airlock, "serve", "--config", str(config), "--http", f"127.0.0.1:{port}"], env=env, stdout=subprocess.DEVNULL, stderr=log)
    base = f"http://127.0.0.1:{port}"
    try:
        if not gateway.wait_http(port, proc.pid):
            report(False, "airlock serve --http started")
            return 1
        try:
            anyio.run(flows, base, fake, SignatureVerifier(SECRET))
        except Exception as exc:  # a broken flow still leaves the captured payloads to check
            report(False, "slack flows", f"{type(exc).__name__}: {exc}")
            traceback.print_exc()
        round_trips(fake)
        cards = [{"label": f"teams card #{i}", "card": a["content"]} for i, b in enumerate(fake.all("teams")) for a in b["attachments"]]
        report(any("/approvals/ap-" in json.dumps(c["card"]) for c in cards), "teams: a card links to the approver page")
        cards_file = work / "cards.json"
        cards_file.write_text(json.dumps(cards))
        node = subprocess.run([opts.node, str(Path(__file__).with_name("adaptive_cards.js")), str(cards_file)], capture_output=True, text=True, cwd=Path(__file__).parent)
        print(node.stdout, end="", flush=True)
        report(node.returncode == 0, "teams: every card validates in adaptivecards", node.stderr[-400:])
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    records = log_records(airlock, work / "data")
    decided = [(r.get("approver"), r.get("decision"), r.get("channel")) for r in records if r.get("kind") == "approval_decided"]
    report(decided == [("alice", "approve", "slack"), ("bob", "deny", "slack")], "log: only the two genuine clicks decided anything", str(decided))
    log.close()
    stderr = (work / "airlock.log").read_text()
    report(TOKEN not in stderr and SECRET not in stderr and fake.url + "/teams" not in stderr, "log: no secret in airlock's own log output")
    print(f"INFO channels {FAILED} failed", flush=True)
    return 1 if FAILED else 0


if __name__ == "__main__":
    sys.exit(main())
