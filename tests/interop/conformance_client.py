"""The "client under test" for `conformance client`: Airlock, driven by the Python SDK.

The conformance runner starts a test MCP server for a scenario and runs
`conformance_client.py <server-url>` with MCP_CONFORMANCE_SCENARIO set. We write an Airlock
config whose only tool manifest points at that URL (streamable HTTP), start `airlock serve` over
stdio, and make the calls the scenario expects through it; the test server then judges how
Airlock behaved as an MCP client. INTEROP_TARGET=direct connects the SDK straight to the URL
instead (to check this driver without a gateway).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import anyio
import mcp_types as t
from mcp import Client, StdioServerParameters

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gateway  # noqa: E402  (sibling module)

SERVER_NAME = "conf"

# scenario -> (tool to call, arguments); None = list tools only.
CALLS: dict[str, tuple[str, dict[str, Any]] | None] = {
    "initialize": None,
    "tools_call": ("add_numbers", {"a": 20, "b": 22}),
    "elicitation-sep1034-client-defaults": ("test_client_elicitation_defaults", {}),
    "sse-retry": ("test_reconnection", {}),
}


def log(msg: str) -> None:
    print(f"conformance_client: {msg}", file=sys.stderr, flush=True)


async def accept_with_defaults(context: Any, params: t.ElicitRequestParams) -> t.ElicitResult:
    """A user who accepts the form as offered: every field gets its schema default."""
    schema = getattr(params, "requested_schema", None) or {}
    props = schema.get("properties", {}) if isinstance(schema, dict) else {}
    content = {k: p["default"] for k, p in props.items() if isinstance(p, dict) and "default" in p}
    log(f"elicitation accepted with defaults {content}")
    return t.ElicitResult.model_validate({"action": "accept", "content": content})


async def drive(target: Any, prefix: str, scenario: str) -> None:
    async with Client(target, mode="legacy", elicitation_callback=accept_with_defaults) as c:
        tools = [tool.name for tool in (await c.list_tools()).tools]
        log(f"tools: {tools}")
        call = CALLS.get(scenario)
        if call is None:
            return
        name, args = call
        result = await c.call_tool(prefix + name, args)
        dumped = result.model_dump(mode="json", by_alias=True, exclude_none=True)
        print(json.dumps(dumped), flush=True)
        if result.is_error:
            raise SystemExit(f"{prefix + name} returned isError")


def main() -> int:
    url = sys.argv[-1]
    scenario = os.environ.get("MCP_CONFORMANCE_SCENARIO", "")
    log(f"scenario {scenario!r}, server {url}")
    if scenario not in CALLS:
        log("scenario not driven by this client (does not apply to a gateway)")
        return 1
    if os.environ.get("INTEROP_TARGET", "airlock") == "direct":
        anyio.run(drive, url, "", scenario)
        return 0
    with tempfile.TemporaryDirectory(prefix="airlock-conf-client-") as tmp:
        server = {"name": SERVER_NAME, "url": url, "transport": "streamable-http"}
        config = gateway.write_config(Path(tmp), [server])
        target = StdioServerParameters(command=gateway.airlock_bin(), args=["serve", "--config", str(config)])
        anyio.run(drive, target, SERVER_NAME + "__", scenario)
    return 0


if __name__ == "__main__":
    sys.exit(main())
