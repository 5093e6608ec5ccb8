"""A stand-in for `airlock serve`, to check this harness before (or without) the real gateway.

It takes the same command line (`serve --config FILE [--http ADDR]`) and reads the same
airlock.toml and tool manifests that gateway.py writes, connects to every downstream with the
Python SDK, and re-serves their tools namespaced as <server><separator><tool>. Tools only: no
resources, prompts, logging, sampling or elicitation relay, no policy, no audit. Use it with
`INTEROP_TARGET=standin tests/interop/run`; nothing in the real CI path runs it.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tomllib
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import mcp_types as t
from mcp import Client, StdioServerParameters
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel.server import Server


def load(config: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    cfg = tomllib.loads(config.read_text())
    gw = cfg.get("gateway", {})
    manifests = Path(gw.get("manifests", "tool-manifests"))
    servers = [tomllib.loads(p.read_text()) for p in sorted(manifests.glob("*.toml"))]
    return gw, servers


def build(config: Path) -> Server[Any]:
    gw, servers = load(config)
    sep = gw.get("separator", "__")
    prefix = gw.get("prefix_tools", True)
    routes: dict[str, tuple[Client, str]] = {}
    tools: list[dict[str, Any]] = []

    @asynccontextmanager
    async def lifespan(_: Server[Any]) -> AsyncIterator[dict[str, Any]]:
        async with AsyncExitStack() as stack:
            for s in servers:
                if "url" in s:
                    target: Any = s["url"]
                else:
                    target = StdioServerParameters(command=s["command"], args=s.get("args", []), env=s.get("env"))
                c = await stack.enter_async_context(Client(target, mode="legacy"))
                for tool in (await c.list_tools()).tools:
                    exposed = f"{s['name']}{sep}{tool.name}" if prefix else tool.name
                    routes[exposed] = (c, tool.name)
                    d = tool.model_dump(mode="json", by_alias=True, exclude_none=True)
                    d["name"] = exposed
                    tools.append(d)
            yield {}

    async def list_tools(ctx: ServerRequestContext[Any], params: Any) -> t.ListToolsResult:
        return t.ListToolsResult.model_validate({"tools": tools})

    async def call_tool(ctx: ServerRequestContext[Any], params: t.CallToolRequestParams) -> t.CallToolResult:
        if params.name not in routes:
            from mcp.shared.exceptions import MCPError

            raise MCPError(code=-32602, message=f"unknown tool {params.name}")
        c, name = routes[params.name]
        return await c.call_tool(name, params.arguments or {})

    return Server("standin-gateway", version="0", lifespan=lifespan, on_list_tools=list_tools, on_call_tool=call_tool)


async def run_stdio(server: Server[Any]) -> None:
    from mcp.server.stdio import stdio_server

    async with stdio_server() as (read, write):
        await server.run(read, write, server.create_initialization_options())


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("command", choices=["serve"])
    ap.add_argument("--config", required=True, type=Path)
    ap.add_argument("--http")
    opts = ap.parse_args()
    server = build(opts.config)
    if opts.http:
        import uvicorn

        host, port = opts.http.rsplit(":", 1)
        app = server.streamable_http_app(host=host)
        uvicorn.run(app, host=host, port=int(port), log_level="warning")
    else:
        asyncio.run(run_stdio(server))
    return 0


if __name__ == "__main__":
    sys.exit(main())
