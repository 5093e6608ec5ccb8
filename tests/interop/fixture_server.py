"""A downstream MCP server that implements what the conformance suite's server scenarios ask for.

The @modelcontextprotocol/conformance package ships no reference server, so this fixture is ours:
each tool, resource and prompt below follows the "Server Implementation Requirements" text of
the scenario named beside it (`npx conformance list --server`). Airlock fronts it with tool
prefixing off, so the conformance suite sees the same names through the gateway.

Usage: fixture_server.py            (stdio, as a downstream in a tool manifest)
       fixture_server.py --http PORT (streamable HTTP at /mcp, to check the fixture directly)
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import sys
import warnings
from typing import Any

import anyio
import mcp_types as t
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel.server import NotificationOptions, Server
from mcp.shared.exceptions import MCPDeprecationWarning

# Logging is deprecated at 2026-07-28, but the 2025-11-25 scenarios still exercise it.
warnings.simplefilter("ignore", MCPDeprecationWarning)

# A 1x1 red PNG and a tiny silent WAV, built here so nothing binary is committed.
PNG_1X1 = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg=="
)
PNG_B64 = base64.b64encode(PNG_1X1).decode()


def _wav_silence(samples: int = 8) -> bytes:
    data = b"\x00\x00" * samples
    rate = 8000
    header = b"RIFF" + (36 + len(data)).to_bytes(4, "little") + b"WAVEfmt "
    header += (16).to_bytes(4, "little") + (1).to_bytes(2, "little") + (1).to_bytes(2, "little")
    header += rate.to_bytes(4, "little") + (rate * 2).to_bytes(4, "little")
    header += (2).to_bytes(2, "little") + (16).to_bytes(2, "little")
    return header + b"data" + len(data).to_bytes(4, "little") + data


WAV_B64 = base64.b64encode(_wav_silence()).decode()
NO_ARGS: dict[str, Any] = {"type": "object", "properties": {}}


def _tool(name: str, description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"name": name, "description": description, "inputSchema": schema or NO_ARGS}


def _string_args(*names: str) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {n: {"type": "string"} for n in names},
        "required": list(names),
    }


TOOLS = [
    _tool("test_simple_text", "Returns simple text (tools-call-simple-text)"),
    _tool("test_image_content", "Returns a PNG image (tools-call-image)"),
    _tool("test_audio_content", "Returns a WAV clip (tools-call-audio)"),
    _tool("test_embedded_resource", "Returns an embedded resource (tools-call-embedded-resource)"),
    _tool("test_multiple_content_types", "Returns text, image and resource (tools-call-mixed-content)"),
    _tool("test_tool_with_logging", "Logs three messages while running (tools-call-with-logging)"),
    _tool("test_tool_with_progress", "Reports progress 0/50/100 (tools-call-with-progress)"),
    _tool("test_error_handling", "Always fails with isError (tools-call-error)"),
    _tool("test_sampling", "Asks the client to sample (tools-call-sampling)", _string_args("prompt")),
    _tool("test_elicitation", "Asks the user for input (tools-call-elicitation)", _string_args("message")),
    _tool("test_elicitation_sep1034_defaults", "Elicitation with defaults (SEP-1034)"),
    _tool("test_elicitation_sep1330_enums", "Elicitation with every enum form (SEP-1330)"),
    _tool("test_reconnection", "Takes a moment, for SSE polling (server-sse-polling)"),
    {
        "name": "json_schema_2020_12_tool",
        "description": "Tool with JSON Schema 2020-12 features",
        "inputSchema": {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "type": "object",
            "$defs": {
                "address": {
                    "type": "object",
                    "properties": {"street": {"type": "string"}, "city": {"type": "string"}},
                }
            },
            "properties": {"name": {"type": "string"}, "address": {"$ref": "#/$defs/address"}},
            "additionalProperties": False,
        },
    },
]

SEP1034_SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "description": "Name", "default": "John Doe"},
        "age": {"type": "integer", "description": "Age", "default": 30},
        "score": {"type": "number", "description": "Score", "default": 95.5},
        "status": {
            "type": "string",
            "description": "Status",
            "enum": ["active", "inactive", "pending"],
            "default": "active",
        },
        "verified": {"type": "boolean", "description": "Verified", "default": True},
    },
}

SEP1330_SCHEMA = {
    "type": "object",
    "properties": {
        "untitledSingle": {"type": "string", "enum": ["option1", "option2", "option3"]},
        "titledSingle": {
            "type": "string",
            "oneOf": [
                {"const": "value1", "title": "First Option"},
                {"const": "value2", "title": "Second Option"},
                {"const": "value3", "title": "Third Option"},
            ],
        },
        "legacyEnum": {
            "type": "string",
            "enum": ["opt1", "opt2", "opt3"],
            "enumNames": ["Option One", "Option Two", "Option Three"],
        },
        "untitledMulti": {
            "type": "array",
            "items": {"type": "string", "enum": ["option1", "option2", "option3"]},
        },
        "titledMulti": {
            "type": "array",
            "items": {
                "anyOf": [
                    {"const": "value1", "title": "First Choice"},
                    {"const": "value2", "title": "Second Choice"},
                    {"const": "value3", "title": "Third Choice"},
                ]
            },
        },
    },
}


def _text(text: str, is_error: bool = False) -> t.CallToolResult:
    return t.CallToolResult.model_validate(
        {"content": [{"type": "text", "text": text}], "isError": is_error}
    )


async def _elicit(ctx: ServerRequestContext[Any], message: str, schema: dict[str, Any]) -> t.ElicitResult:
    return await ctx.session.elicit_form(message, schema, related_request_id=ctx.request_id)


async def _log(ctx: ServerRequestContext[Any], text: str) -> None:
    await ctx.session.send_log_message("info", text, logger="fixture", related_request_id=ctx.request_id)


async def call_tool(ctx: ServerRequestContext[Any], params: t.CallToolRequestParams) -> t.CallToolResult:
    name = params.name
    args = params.arguments or {}
    if name == "test_simple_text":
        return _text("This is a simple text response for testing.")
    if name == "test_image_content":
        return t.CallToolResult.model_validate(
            {"content": [{"type": "image", "data": PNG_B64, "mimeType": "image/png"}]}
        )
    if name == "test_audio_content":
        return t.CallToolResult.model_validate(
            {"content": [{"type": "audio", "data": WAV_B64, "mimeType": "audio/wav"}]}
        )
    if name == "test_embedded_resource":
        return t.CallToolResult.model_validate(
            {
                "content": [
                    {
                        "type": "resource",
                        "resource": {
                            "uri": "test://embedded-resource",
                            "mimeType": "text/plain",
                            "text": "This is an embedded resource content.",
                        },
                    }
                ]
            }
        )
    if name == "test_multiple_content_types":
        return t.CallToolResult.model_validate(
            {
                "content": [
                    {"type": "text", "text": "Multiple content types test:"},
                    {"type": "image", "data": PNG_B64, "mimeType": "image/png"},
                    {
                        "type": "resource",
                        "resource": {
                            "uri": "test://mixed-content-resource",
                            "mimeType": "application/json",
                            "text": json.dumps({"test": "data", "value": 123}),
                        },
                    },
                ]
            }
        )
    if name == "test_tool_with_logging":
        await _log(ctx, "Tool execution started")
        await anyio.sleep(0.05)
        await _log(ctx, "Tool processing data")
        await anyio.sleep(0.05)
        await _log(ctx, "Tool execution completed")
        return _text("Tool with logging executed successfully")
    if name == "test_tool_with_progress":
        for step in (0, 50, 100):
            await ctx.session.report_progress(step, 100, f"step {step}")
            if step < 100:
                await anyio.sleep(0.05)
        return _text("Tool with progress executed successfully")
    if name == "test_error_handling":
        return _text("This tool intentionally returns an error for testing", is_error=True)
    if name == "test_sampling":
        return await _sampling(ctx, str(args.get("prompt", "")))
    if name == "test_elicitation":
        schema = {
            "type": "object",
            "properties": {
                "username": {"type": "string", "description": "User's response"},
                "email": {"type": "string", "description": "User's email address"},
            },
            "required": ["username", "email"],
        }
        res = await _elicit(ctx, str(args.get("message", "")), schema)
        return _text(f"User response: action={res.action}, content={json.dumps(res.content)}")
    if name == "test_elicitation_sep1034_defaults":
        res = await _elicit(ctx, "Please review the defaults", SEP1034_SCHEMA)
        return _text(f"Elicitation completed: action={res.action}, content={json.dumps(res.content)}")
    if name == "test_elicitation_sep1330_enums":
        res = await _elicit(ctx, "Please pick from the enums", SEP1330_SCHEMA)
        return _text(f"Elicitation completed: action={res.action}, content={json.dumps(res.content)}")
    if name == "test_reconnection":
        await anyio.sleep(0.2)
        return _text("Reconnection test completed")
    if name == "json_schema_2020_12_tool":
        return _text(f"Received: {json.dumps(args, sort_keys=True)}")
    return _text(f"unknown tool {name}", is_error=True)


async def _sampling(ctx: ServerRequestContext[Any], prompt: str) -> t.CallToolResult:
    request = t.CreateMessageRequest.model_validate(
        {
            "method": "sampling/createMessage",
            "params": {
                "messages": [{"role": "user", "content": {"type": "text", "text": prompt}}],
                "maxTokens": 100,
            },
        }
    )
    from mcp.server.session import ServerMessageMetadata  # local: only this tool needs it

    res = await ctx.session.send_request(
        request,
        t.CreateMessageResult,
        metadata=ServerMessageMetadata(related_request_id=ctx.request_id),
    )
    content = res.content
    text = getattr(content, "text", None) or json.dumps(content.model_dump(mode="json", by_alias=True))
    return _text(f"LLM response: {text}")


async def list_tools(ctx: ServerRequestContext[Any], params: Any) -> t.ListToolsResult:
    return t.ListToolsResult.model_validate({"tools": TOOLS})


RESOURCES = [
    {"uri": "test://static-text", "name": "static-text", "description": "A static text resource", "mimeType": "text/plain"},
    {"uri": "test://static-binary", "name": "static-binary", "description": "A static PNG", "mimeType": "image/png"},
    {"uri": "test://watched-resource", "name": "watched", "description": "A resource to subscribe to", "mimeType": "text/plain"},
]


async def list_resources(ctx: ServerRequestContext[Any], params: Any) -> t.ListResourcesResult:
    return t.ListResourcesResult.model_validate({"resources": RESOURCES})


async def list_resource_templates(ctx: ServerRequestContext[Any], params: Any) -> t.ListResourceTemplatesResult:
    return t.ListResourceTemplatesResult.model_validate(
        {
            "resourceTemplates": [
                {
                    "uriTemplate": "test://template/{id}/data",
                    "name": "template-data",
                    "description": "Data for an id",
                    "mimeType": "application/json",
                }
            ]
        }
    )


async def read_resource(ctx: ServerRequestContext[Any], params: t.ReadResourceRequestParams) -> t.ReadResourceResult:
    uri = str(params.uri)
    if uri == "test://static-text":
        contents: dict[str, Any] = {
            "uri": uri,
            "mimeType": "text/plain",
            "text": "This is the content of the static text resource.",
        }
    elif uri == "test://static-binary":
        contents = {"uri": uri, "mimeType": "image/png", "blob": PNG_B64}
    elif uri == "test://watched-resource":
        contents = {"uri": uri, "mimeType": "text/plain", "text": "watched"}
    elif uri.startswith("test://template/") and uri.endswith("/data"):
        ident = uri[len("test://template/") : -len("/data")]
        body = {"id": ident, "templateTest": True, "data": f"Data for ID: {ident}"}
        contents = {"uri": uri, "mimeType": "application/json", "text": json.dumps(body)}
    else:
        from mcp.shared.exceptions import MCPError

        raise MCPError(code=-32002, message=f"Resource not found: {uri}")
    return t.ReadResourceResult.model_validate({"contents": [contents]})


async def subscribe(ctx: ServerRequestContext[Any], params: Any) -> t.EmptyResult:
    return t.EmptyResult()


PROMPTS = [
    {"name": "test_simple_prompt", "description": "A prompt without arguments"},
    {
        "name": "test_prompt_with_arguments",
        "description": "A prompt with two arguments",
        "arguments": [
            {"name": "arg1", "description": "First test argument", "required": True},
            {"name": "arg2", "description": "Second test argument", "required": True},
        ],
    },
    {
        "name": "test_prompt_with_embedded_resource",
        "description": "A prompt embedding a resource",
        "arguments": [{"name": "resourceUri", "description": "URI to embed", "required": True}],
    },
    {"name": "test_prompt_with_image", "description": "A prompt with an image"},
]


async def list_prompts(ctx: ServerRequestContext[Any], params: Any) -> t.ListPromptsResult:
    return t.ListPromptsResult.model_validate({"prompts": PROMPTS})


async def get_prompt(ctx: ServerRequestContext[Any], params: t.GetPromptRequestParams) -> t.GetPromptResult:
    args = params.arguments or {}
    if params.name == "test_simple_prompt":
        msgs: list[dict[str, Any]] = [
            {"role": "user", "content": {"type": "text", "text": "This is a simple prompt for testing."}}
        ]
    elif params.name == "test_prompt_with_arguments":
        text = f"Prompt with arguments: arg1='{args.get('arg1', '')}', arg2='{args.get('arg2', '')}'"
        msgs = [{"role": "user", "content": {"type": "text", "text": text}}]
    elif params.name == "test_prompt_with_embedded_resource":
        resource = {
            "uri": args.get("resourceUri", "test://example-resource"),
            "mimeType": "text/plain",
            "text": "Embedded resource content for testing.",
        }
        msgs = [
            {"role": "user", "content": {"type": "resource", "resource": resource}},
            {"role": "user", "content": {"type": "text", "text": "Please process the embedded resource above."}},
        ]
    elif params.name == "test_prompt_with_image":
        msgs = [
            {"role": "user", "content": {"type": "image", "data": PNG_B64, "mimeType": "image/png"}},
            {"role": "user", "content": {"type": "text", "text": "Please analyze the image above."}},
        ]
    else:
        from mcp.shared.exceptions import MCPError

        raise MCPError(code=-32602, message=f"Unknown prompt: {params.name}")
    return t.GetPromptResult.model_validate({"messages": msgs})


async def complete(ctx: ServerRequestContext[Any], params: t.CompleteRequestParams) -> t.CompleteResult:
    candidates = ["paris", "park", "party"]
    prefix = params.argument.value
    values = [c for c in candidates if c.startswith(prefix)]
    return t.CompleteResult.model_validate({"completion": {"values": values, "total": len(values), "hasMore": False}})


async def set_level(ctx: ServerRequestContext[Any], params: Any) -> t.EmptyResult:
    return t.EmptyResult()


def build() -> Server[Any]:
    return Server(
        "airlock-conformance-fixture",
        version="1.0.0",
        on_list_tools=list_tools,
        on_call_tool=call_tool,
        on_list_resources=list_resources,
        on_list_resource_templates=list_resource_templates,
        on_read_resource=read_resource,
        on_subscribe_resource=subscribe,
        on_unsubscribe_resource=subscribe,
        on_list_prompts=list_prompts,
        on_get_prompt=get_prompt,
        on_completion=complete,
        on_set_logging_level=set_level,
    )


async def run_stdio(server: Server[Any]) -> None:
    from mcp.server.stdio import stdio_server

    async with stdio_server() as (read, write):
        await server.run(read, write, server.create_initialization_options(NotificationOptions()))


def run_http(server: Server[Any], port: int) -> None:
    import uvicorn

    app = server.streamable_http_app()
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--http", type=int, metavar="PORT", help="serve streamable HTTP on 127.0.0.1:PORT/mcp")
    opts = parser.parse_args()
    server = build()
    if opts.http:
        run_http(server, opts.http)
    else:
        asyncio.run(run_stdio(server))


if __name__ == "__main__":
    sys.exit(main())
