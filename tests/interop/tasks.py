"""Check held calls as MCP tasks (extension `io.modelcontextprotocol/tasks`, SEP-2663) with an
independent requester: plain HTTP from Python (the standard library, no rmcp), speaking stateless 2026-07-28.

Starts Airlock ($AIRLOCK_BIN) in front of `airlock demo-tools` with a policy that holds
`demo__grant_role` for one SRE's approval, and checks, as carol (a caller) and bob (an SRE):

  the call answers at once with `resultType: "task"` (status `working`, the approval id in the
      status message, `pollIntervalMs`), and ran nothing;
  `tasks/get` keeps reporting `working` while nobody decides, each poll its own short request;
  another principal's `tasks/get` gets the answer an unknown task id gets;
  bob approves over `/api/v1/approvals/{id}/decision`; polling then reports `completed` with the
      downstream's real result, and roles.json holds exactly one grant.

  a `confirm` hold (`demo__delete_bucket`) answers with a task in `input_required` whose
      `inputRequests["airlock_confirm"]` is the confirmation form; mallory's `tasks/update` reads
      as an unknown task's and decides nothing; carol's accepting `tasks/update` runs the call
      once (the bucket is gone) and the task completes with the result;

  and then the same with the official requester, @modelcontextprotocol/ext-tasks (ext_tasks.mjs,
  needs --node): its session creates the task, settles it by polling while bob approves after
  --wait seconds, and ends `completed` with the real result (one more grant); and for a `confirm`
  hold its `onInputRequest` answers the task's question through `tasks/update` and the task
  completes with the real result.

  tasks.py [--work DIR] [--wait SECONDS] [--node PATH]   (--wait: how long nobody decides; default 5)

Prints one "PASS|FAIL tasks <check>" line per check; exits 1 if any failed, 2 on a setup error.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import urllib.error
import urllib.request

from gateway import airlock_bin, toml_value

VERSION = "2026-07-28"
TOOL = "demo__grant_role"
TASKS = "io.modelcontextprotocol/tasks"
PEOPLE = {"carol": ("tok-carol-interop-0123", "dev"), "bob": ("tok-bob-interop-0123", "sre"),
          "mallory": ("tok-mallory-interop-0123", "dev")}
POLICY = f"""[[rule]]
id = "interop-grants-need-an-sre"
tools = [{json.dumps(TOOL)}]
effect = "approve"
approvers = ["group:sre"]
quorum = 1
reason = "grants change who can do what"

[[rule]]
id = "interop-buckets-confirm"
tools = ["demo__delete_bucket"]
effect = "confirm"
reason = "deleting a bucket cannot be undone"

[[rule]]
id = "interop-allow-rest"
effect = "allow"
reason = "only grants are held in this run"
"""

FAILED = 0


def check(name: str, ok: bool, detail: Any = "") -> None:
    global FAILED
    if ok:
        print(f"PASS tasks {name}", flush=True)
    else:
        FAILED += 1
        print(f"FAIL tasks {name}: {detail}", flush=True)


def write_site(root: Path) -> Path:
    (root / "tool-manifests").mkdir(parents=True)
    (root / "policies").mkdir()
    manifest = {"name": "demo", "command": airlock_bin(), "args": ["demo-tools", "--sandbox", str(root / "sandbox-demo")]}
    (root / "tool-manifests" / "demo.toml").write_text("".join(f"{k} = {toml_value(v)}\n" for k, v in manifest.items()))
    (root / "policies" / "tasks.toml").write_text(POLICY)
    config = (
        "[gateway]\n"
        f"data_dir = {toml_value(str(root / 'data'))}\n"
        f"manifests = {toml_value(str(root / 'tool-manifests'))}\n"
        f"policies = {toml_value(str(root / 'policies'))}\n"
        'separator = "__"\n\n[approvals]\ntimeout = "10m"\n\n'
        '[http]\nallowed_hosts = ["localhost", "127.0.0.1"]\n'
    )
    for name, (token, group) in PEOPLE.items():
        digest = hashlib.sha256(token.encode()).hexdigest()
        config += f'\n[[identity.tokens]]\nname = "{name}"\nsha256 = "{digest}"\ngroups = ["{group}"]\n'
    (root / "airlock.toml").write_text(config)
    return root / "airlock.toml"


def start(config: Path) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen([airlock_bin(), "serve", "--config", str(config), "--http", "127.0.0.1:0"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    for line in proc.stderr:
        sys.stderr.write(line)
        if line.startswith("airlock: listening on "):
            url = line.removeprefix("airlock: listening on ").strip()
            threading.Thread(target=lambda: [sys.stderr.write(rest) for rest in proc.stderr or []], daemon=True).start()
            return proc, url
    raise RuntimeError(f"airlock serve --http exited ({proc.wait()}) before listening")


def http(method: str, url: str, headers: dict[str, str], body: Any = None) -> tuple[int, str]:
    data = None if body is None else json.dumps(body).encode()
    headers = {**headers, "content-type": "application/json"} if data is not None else headers
    request = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def message(text: str) -> dict[str, Any]:
    """The JSON-RPC message of a JSON or an SSE body."""
    try:
        return json.loads(text)
    except ValueError:
        for line in text.splitlines():
            if line.startswith("data:"):
                try:
                    return json.loads(line[5:].strip())
                except ValueError:
                    continue
    raise AssertionError(f"no JSON-RPC message in {text!r}")


class Requester:
    """One principal's stateless 2026-07-28 requests: every request carries its own _meta."""

    def __init__(self, url: str, who: str) -> None:
        self.url, self.token, self.next_id = url, PEOPLE[who][0], 0

    def request(self, method: str, params: dict[str, Any], name: str | None = None) -> dict[str, Any]:
        self.next_id += 1
        params = dict(params)
        params["_meta"] = {
            "io.modelcontextprotocol/protocolVersion": VERSION,
            "io.modelcontextprotocol/clientInfo": {"name": "interop-tasks", "version": "0"},
            "io.modelcontextprotocol/clientCapabilities": {"extensions": {TASKS: {}}},
        }
        headers = {"authorization": f"Bearer {self.token}", "accept": "application/json, text/event-stream",
                   "mcp-protocol-version": VERSION, "mcp-method": method}
        if name is not None:
            headers["mcp-name"] = name
        body = {"jsonrpc": "2.0", "id": self.next_id, "method": method, "params": params}
        status, text = http("POST", f"{self.url}/mcp", headers, body)
        assert status == 200, f"{method}: HTTP {status}: {text}"
        return message(text)

    def get(self, task_id: str) -> dict[str, Any]:
        return self.request("tasks/get", {"taskId": task_id}, name=task_id)

    def update(self, task_id: str, responses: dict[str, Any]) -> dict[str, Any]:
        return self.request("tasks/update", {"taskId": task_id, "inputResponses": responses}, name=task_id)

    def settle(self, task_id: str) -> dict[str, Any]:
        final: dict[str, Any] = {}
        for _ in range(600):  # a hang guard, not a timing check
            final = self.get(task_id).get("result", {})
            if final.get("status") in ("completed", "failed", "cancelled"):
                break
            time.sleep(0.1)
        return final


def api(url: str, who: str, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    headers = {"authorization": f"Bearer {PEOPLE[who][0]}"}
    status, text = http(method, f"{url}{path}", headers, body)
    return status, json.loads(text)


def grants(root: Path, user: str) -> list[Any]:
    path = root / "sandbox-demo" / "roles.json"
    return [g for g in json.loads(path.read_text()) if g.get("user") == user] if path.exists() else []


def run(root: Path, url: str, wait: float) -> None:
    carol, mallory = Requester(url, "carol"), Requester(url, "mallory")
    created = carol.request("tools/call", {"name": TOOL, "arguments": {"user": "tess", "role": "admin"}}, name=TOOL)
    task = created.get("result", {})
    check("call answers at once with a task handle", task.get("resultType") == "task" and task.get("status") == "working"
          and isinstance(task.get("pollIntervalMs"), int), created)
    task_id = task.get("taskId", "")
    check("status message names the approval and where to decide", "ap-" in task.get("statusMessage", "")
          and "expires at" in task.get("statusMessage", ""), task)
    check("nothing ran before a decision", grants(root, "tess") == [], grants(root, "tess"))

    deadline = time.monotonic() + wait
    polls = 0
    while time.monotonic() < deadline:
        polled = carol.get(task_id).get("result", {})
        polls += 1
        if polled.get("status") != "working":
            break
        time.sleep(0.5)
    check(f"still working after {wait:g} s of polling ({polls} short requests, none held open)",
          polled.get("status") == "working" and grants(root, "tess") == [], polled)

    theirs, unknown = mallory.get(task_id), mallory.get("tk-00000000000000000000000000000000")
    same = (theirs.get("error", {}).get("code"), theirs.get("error", {}).get("message", "").replace(task_id, "ID")) == (
        unknown.get("error", {}).get("code"), unknown.get("error", {}).get("message", "").replace("tk-00000000000000000000000000000000", "ID"))
    check("another principal's tasks/get reads as an unknown task", "error" in theirs and same, (theirs, unknown))

    status, listed = api(url, "bob", "GET", "/api/v1/approvals?state=pending")
    held = [a for a in listed.get("approvals", []) if a.get("tool") == TOOL] if status == 200 else []
    check("the hold is pending in the approvals API", len(held) == 1, listed)
    if not held:
        return
    status, decided = api(url, "bob", "POST", f"/api/v1/approvals/{held[0]['id']}/decision", {"decision": "approve"})
    check("bob approves over the API", status == 200, decided)

    final: dict[str, Any] = {}
    for _ in range(600):  # a hang guard, not a timing check
        final = carol.get(task_id).get("result", {})
        if final.get("status") != "working":
            break
        time.sleep(0.1)
    text = " ".join(c.get("text", "") for c in final.get("result", {}).get("content", []))
    check("the task completes with the downstream's real result", final.get("status") == "completed"
          and final.get("result", {}).get("isError") is False and 'granted role "admin" to "tess"' in text, final)
    check("the call ran exactly once", len(grants(root, "tess")) == 1, grants(root, "tess"))


def bucket(root: Path, name: str) -> bool:
    return (root / "sandbox-demo" / "buckets" / name).is_dir()


def confirm(root: Path, url: str) -> None:
    """A `confirm` hold asks its caller through the task; only the caller's answer counts."""
    carol, mallory = Requester(url, "carol"), Requester(url, "mallory")
    created = carol.request("tools/call", {"name": "demo__delete_bucket", "arguments": {"bucket": "tmp-scratch"}},
                            name="demo__delete_bucket").get("result", {})
    task_id = created.get("taskId", "")
    check("confirm: the call answers with a task asking for input", created.get("resultType") == "task"
          and created.get("status") == "input_required" and "tasks/update" in created.get("statusMessage", ""), created)
    asked = carol.get(task_id).get("result", {})
    question = asked.get("inputRequests", {}).get("airlock_confirm", {})
    check("confirm: tasks/get carries the confirmation form", asked.get("status") == "input_required"
          and question.get("method") == "elicitation/create"
          and "approve" in question.get("params", {}).get("requestedSchema", {}).get("properties", {}), asked)
    accept = {"airlock_confirm": {"action": "accept", "content": {"approve": True}}}
    theirs, unknown = mallory.update(task_id, accept), mallory.update("tk-00000000000000000000000000000000", accept)
    same = theirs.get("error", {}).get("message", "").replace(task_id, "ID") == \
        unknown.get("error", {}).get("message", "").replace("tk-00000000000000000000000000000000", "ID")
    check("confirm: another principal's tasks/update reads as an unknown task and decides nothing",
          "error" in theirs and same and carol.get(task_id).get("result", {}).get("status") == "input_required"
          and bucket(root, "tmp-scratch"), (theirs, unknown))
    acked = carol.update(task_id, accept)
    check("confirm: the caller's tasks/update is acknowledged", acked.get("result", {}).get("resultType") == "complete", acked)
    final = carol.settle(task_id)
    text = " ".join(c.get("text", "") for c in final.get("result", {}).get("content", []))
    check("confirm: the task completes with the real result and the call ran", final.get("status") == "completed"
          and 'deleted bucket "tmp-scratch"' in text and not bucket(root, "tmp-scratch"), final)


def ext_tasks_confirm(root: Path, url: str, node: str) -> None:
    """The official requester answers a `confirm` task's question with its onInputRequest."""
    script = Path(__file__).resolve().parent / "ext_tasks.mjs"
    done = subprocess.run([node, str(script), url, PEOPLE["carol"][0], "staging-assets", "confirm"], cwd=script.parent,
                          capture_output=True, text=True, timeout=120)
    sys.stderr.write(done.stderr)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    report = json.loads(lines[-1]) if done.returncode == 0 and lines else {}
    outcome = report.get("outcome", {})
    text = " ".join(c.get("text", "") for c in outcome.get("result", {}).get("content", []))
    asked = report.get("asked", [])
    check("ext-tasks confirm: onInputRequest got Airlock's question through the task", len(asked) == 1
          and asked[0].get("kind") == "elicitation" and asked[0].get("delivery") == "task-update"
          and asked[0].get("inputId") == "airlock_confirm" and "staging-assets" in asked[0].get("message", ""),
          {"rc": done.returncode, "out": done.stdout[-2000:], "err": done.stderr[-2000:]})
    check("ext-tasks confirm: the task settles completed with the real result, the call ran",
          outcome.get("status") == "completed" and 'deleted bucket "staging-assets"' in text
          and "input_required" in report.get("statuses", []) and not bucket(root, "staging-assets"), report)


def ext_tasks(root: Path, url: str, node: str, wait: float) -> None:
    """The official requester settles a task while bob approves it `wait` seconds later."""
    script = Path(__file__).resolve().parent / "ext_tasks.mjs"
    proc = subprocess.Popen([node, str(script), url, PEOPLE["carol"][0], "uma"], cwd=script.parent,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    held: list[Any] = []
    for _ in range(600):  # a hang guard, not a timing check
        status, listed = api(url, "bob", "GET", "/api/v1/approvals?state=pending")
        held = [a for a in listed.get("approvals", []) if a.get("tool") == TOOL] if status == 200 else []
        if held or proc.poll() is not None:
            break
        time.sleep(0.1)
    check("ext-tasks: the call is held", len(held) == 1, held)
    time.sleep(wait)
    check("ext-tasks: nothing ran while nobody decided", grants(root, "uma") == [] and proc.poll() is None,
          grants(root, "uma"))
    if held:
        status, decided = api(url, "bob", "POST", f"/api/v1/approvals/{held[0]['id']}/decision", {"decision": "approve"})
        check("ext-tasks: bob approves over the API", status == 200, decided)
    out, err = proc.communicate(timeout=120)
    sys.stderr.write(err)
    lines = [line for line in out.splitlines() if line.startswith("{")]
    report = json.loads(lines[-1]) if proc.returncode == 0 and lines else {}
    outcome = report.get("outcome", {})
    text = " ".join(c.get("text", "") for c in outcome.get("result", {}).get("content", []))
    check("ext-tasks: the task settles completed with the real result", outcome.get("status") == "completed"
          and 'granted role "admin" to "uma"' in text and str(report.get("taskId", "")).startswith("tk-"),
          {"rc": proc.returncode, "out": out[-2000:], "err": err[-2000:]})
    check(f"ext-tasks: settled by polling ({report.get('polls')} tasks/get, statuses {sorted(set(report.get('statuses', [])))})",
          report.get("polls", 0) >= 1 and "working" in report.get("statuses", []), report)
    check("ext-tasks: the call ran exactly once", len(grants(root, "uma")) == 1, grants(root, "uma"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, help="directory for configs, data and sandboxes (default: a temp dir)")
    ap.add_argument("--wait", type=float, default=5.0, help="seconds nobody decides while the client polls")
    ap.add_argument("--node", help="node binary, for the @modelcontextprotocol/ext-tasks requester")
    opts = ap.parse_args()
    if not os.access(airlock_bin(), os.X_OK):
        print(f"FAIL tasks setup: no airlock binary at {airlock_bin()}", flush=True)
        return 2
    base = opts.work or Path(tempfile.mkdtemp(prefix="airlock-tasks-"))
    base.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="tasks-", dir=base))
    proc, url = start(write_site(root))
    try:
        run(root, url, opts.wait)
        confirm(root, url)
        if opts.node:
            ext_tasks(root, url, opts.node, opts.wait)
            ext_tasks_confirm(root, url, opts.node)
        else:
            print("INFO tasks SKIPPED the @modelcontextprotocol/ext-tasks requester: no --node", flush=True)
    except Exception as exc:  # report, then the summary
        check("session", False, f"{type(exc).__name__}: {exc}")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    return 1 if FAILED else 0


if __name__ == "__main__":
    sys.exit(main())
