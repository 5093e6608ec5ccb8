"""Read the checks.json files `conformance server|client -o DIR` wrote and judge them.

conformance_summary.py server|client DIR
Prints one line per scenario: PASS / FAIL / FAIL(optional) with its check counts and warnings,
and exits 1 if a required scenario failed or did not run.

Which scenarios a gateway must pass is decided here, in one place:
- server mode, required: everything about tools (the issue's bar), the lifecycle, ping, and
  the HTTP transport's own duties (DNS-rebinding protection, SSE streams).
- server mode, optional: resources, prompts, completion and logging/setLevel, which Airlock
  may pass through but need not; their result is shown and does not fail the run.
- client mode: the scenarios conformance_client.py drives; auth/* does not apply (Airlock does
  no OAuth towards downstream servers).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

SERVER_REQUIRED = [
    "server-initialize",
    "ping",
    "tools-list",
    "tools-call-simple-text",
    "tools-call-image",
    "tools-call-audio",
    "tools-call-embedded-resource",
    "tools-call-mixed-content",
    "tools-call-with-logging",
    "tools-call-error",
    "tools-call-with-progress",
    "tools-call-sampling",
    "tools-call-elicitation",
    "json-schema-2020-12",
    "elicitation-sep1034-defaults",
    "elicitation-sep1330-enums",
    "server-sse-polling",
    "server-sse-multiple-streams",
    "dns-rebinding-protection",
]
SERVER_OPTIONAL = [
    "logging-set-level",
    "completion-complete",
    "resources-list",
    "resources-read-text",
    "resources-read-binary",
    "resources-templates-read",
    "resources-subscribe",
    "resources-unsubscribe",
    "prompts-list",
    "prompts-get-simple",
    "prompts-get-with-args",
    "prompts-get-embedded-resource",
    "prompts-get-with-image",
]
CLIENT_REQUIRED = ["initialize", "tools_call", "elicitation-sep1034-client-defaults", "sse-retry"]

STAMP = re.compile(r"-\d{4}-\d{2}-\d{2}T[\d-]+Z$")


def load(dir: Path, mode: str) -> dict[str, list[dict]]:
    found: dict[str, list[dict]] = {}
    for checks in sorted(dir.rglob("checks.json")):
        rel = str(checks.parent.relative_to(dir))
        name = STAMP.sub("", rel)
        if mode == "server":
            name = name.removeprefix("server-")
        found[name] = json.loads(checks.read_text())
    return found


def judge(checks: list[dict]) -> tuple[int, int, int]:
    statuses = [c.get("status") for c in checks]
    return statuses.count("SUCCESS"), statuses.count("FAILURE"), statuses.count("WARNING")


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[1] not in ("server", "client"):
        print(__doc__)
        return 2
    mode, dir = argv[1], Path(argv[2])
    results = load(dir, mode)
    required = SERVER_REQUIRED if mode == "server" else CLIENT_REQUIRED
    optional = SERVER_OPTIONAL if mode == "server" else []
    bad = 0
    for name in required + optional + sorted(set(results) - set(required) - set(optional)):
        is_optional = name in optional
        if name not in results:
            tag = "FAIL(optional)" if is_optional else "FAIL"
            bad += 0 if is_optional else 1
            print(f"{tag:15} {mode}:{name} (no result: the scenario did not run)")
            continue
        ok, failed, warned = judge(results[name])
        passed = failed == 0 and len(results[name]) > 0
        if passed:
            tag = "PASS"
        else:
            tag = "FAIL(optional)" if is_optional else "FAIL"
            bad += 0 if is_optional else 1
        extra = f", {warned} warnings" if warned else ""
        print(f"{tag:15} {mode}:{name} ({ok} checks passed, {failed} failed{extra})")
        if not passed:
            for c in results[name]:
                if c.get("status") == "FAILURE":
                    print(f"{'':15}   {c.get('id')}: {c.get('errorMessage') or c.get('description')}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
