// The official Tasks requester (@modelcontextprotocol/ext-tasks, over @modelcontextprotocol/client
// 2.x pinned to 2026-07-28) calling a held tool through Airlock and settling the task by polling.
// Driven by tasks.py, which approves the hold over the API while this waits.
//
//   node ext_tasks.mjs URL TOKEN USER            grant USER a role (an `approve` hold)
//   node ext_tasks.mjs URL TOKEN BUCKET confirm  delete BUCKET (a `confirm` hold): the package's
//                                                onInputRequest answers the task's question
//
// Prints one JSON line: {taskId, polls, statuses, asked, outcome}; exits 1 on any error.
import { Client, StreamableHTTPClientTransport } from "@modelcontextprotocol/client";
import { createTaskSessionFromClient } from "@modelcontextprotocol/ext-tasks/client";

const [url, token, user, mode = "approve"] = process.argv.slice(2);
const VERSION = "2026-07-28";
const clientInfo = { name: "airlock-interop-ext-tasks", version: "0" };
const clientCapabilities = { extensions: { "io.modelcontextprotocol/tasks": {} } };
const auth = { authorization: `Bearer ${token}` };

const client = new Client(clientInfo, { capabilities: clientCapabilities, versionNegotiation: { mode: { pin: VERSION } } });
await client.connect(new StreamableHTTPClientTransport(new URL(`${url}/mcp`), { requestInit: { headers: auth } }));

// The package frames 2026-07-28 task traffic itself and leaves the HTTP exchange to the host:
// one short POST per request, with the SEP-2243 standard headers.
let nextId = 0;
let polls = 0;
async function rawDispatch(unframed) {
  const request = { jsonrpc: "2.0", id: ++nextId, ...unframed };
  if (request.method === "tasks/get") polls += 1;
  const headers = { ...auth, "content-type": "application/json", accept: "application/json, text/event-stream",
    "mcp-protocol-version": VERSION, "mcp-method": request.method };
  const name = request.params?.name ?? request.params?.uri ?? request.params?.taskId;
  if (typeof name === "string") headers["mcp-name"] = name;
  const response = await fetch(`${url}/mcp`, { method: "POST", headers, body: JSON.stringify(request) });
  const text = await response.text();
  try { return JSON.parse(text); } catch { /* an SSE body */ }
  for (const line of text.split("\n")) {
    if (!line.startsWith("data:")) continue;
    try { return JSON.parse(line.slice(5)); } catch { /* not this line */ }
  }
  throw new Error(`HTTP ${response.status} without a JSON-RPC message: ${text}`);
}

// The person at this client confirms: what Airlock asks arrives as the task's input request.
async function onInputRequest(request, context) {
  asked.push({ kind: request.kind, delivery: context.delivery, inputId: context.inputId,
    message: String(request.params?.message ?? "") });
  return { action: "accept", content: { approve: true } };
}

const session = createTaskSessionFromClient(client, {
  endpointId: "airlock-interop",
  onInputRequest,
  rawDispatch,
  v2RequestFraming: { protocolVersion: VERSION, clientInfo, clientCapabilities },
});
const statuses = [];
const asked = [];
try {
  const execution = mode === "confirm"
    ? await session.callTool("demo__delete_bucket", { bucket: user })
    : await session.callTool("demo__grant_role", { user, role: "admin" });
  const { outcome } = await execution.settle({
    onEvent: (event) => { if (event.type === "task") statuses.push(event.task.status); },
  });
  console.log(JSON.stringify({ taskId: execution.handle?.taskId, polls, statuses, asked, outcome }));
} finally {
  await session.close();
  await client.close();
}
