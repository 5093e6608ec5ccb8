"""Airlock's telemetry read by independent parsers.

Starts `airlock serve --http` in front of `airlock demo-tools` with `[telemetry]` metrics and
OTLP traces on, and a local OTLP/HTTP receiver (decoded with the official
`opentelemetry-proto` package). Makes calls over plain JSON-RPC (streamable HTTP), one with
a W3C `traceparent` in `params._meta`, then checks:
  - /metrics parsed by prometheus-client's OpenMetrics parser, counts equal to the calls made;
  - `airlock metrics` (the control socket) parsed the same way, with the same counts;
  - the call span continues the client's trace and has the stage spans as children.
Prints PASS/FAIL lines; exits 1 on any failure.
"""

import argparse
import http.server
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from prometheus_client.openmetrics.parser import text_string_to_metric_families

FAILED = []


def check(ok, name, detail=""):
    print(("PASS " if ok else "FAIL ") + name + ("" if ok else f": {detail}"))
    if not ok:
        FAILED.append(name)


class Receiver(http.server.BaseHTTPRequestHandler):
    bodies = []

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.path == "/v1/traces":
            Receiver.bodies.append(body)
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.end_headers()

    def log_message(self, *args):
        pass


def start_gateway(airlock, work, otlp):
    sandbox = os.path.join(work, "sandbox")
    os.makedirs(os.path.join(work, "tool-manifests"), exist_ok=True)
    os.makedirs(os.path.join(work, "policies"), exist_ok=True)
    os.makedirs(sandbox, exist_ok=True)
    with open(os.path.join(work, "tool-manifests", "demo.toml"), "w") as f:
        f.write(f'name = "demo"\ncommand = {json.dumps(airlock)}\nargs = ["demo-tools", "--sandbox", {json.dumps(sandbox)}]\n')
    with open(os.path.join(work, "policies", "allow.toml"), "w") as f:
        f.write('[[rule]]\nid = "allow-all"\neffect = "allow"\nreason = "interop"\n')
    config = os.path.join(work, "airlock.toml")
    with open(config, "w") as f:
        f.write('[gateway]\ndata_dir = "data"\n\n[telemetry]\nmetrics_listen = "127.0.0.1:0"\n'
                f'otlp_endpoint = "{otlp}"\nservice_name = "airlock-interop"\n')
    proc = subprocess.Popen([airlock, "serve", "--config", config, "--http", "127.0.0.1:0"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    metrics = url = None
    deadline = time.time() + 60
    while url is None and time.time() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        print("[airlock]", line.rstrip())
        if line.startswith("airlock: metrics on "):
            metrics = line.split("metrics on ", 1)[1].strip()
        if line.startswith("airlock: listening on "):
            url = line.split("listening on ", 1)[1].strip()
    threading.Thread(target=lambda: [print("[airlock]", l.rstrip()) for l in proc.stderr], daemon=True).start()
    if url is None or metrics is None:
        proc.kill()
        sys.exit("airlock did not start with a metrics listener")
    return proc, url, metrics


class Mcp:
    """Streamable HTTP, by hand: POST JSON-RPC, read a JSON or SSE answer."""

    def __init__(self, url):
        self.url = url + "/mcp"
        self.session = None
        self.next_id = 1

    def post(self, message):
        headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream",
                   "MCP-Protocol-Version": "2025-11-25"}
        if self.session:
            headers["Mcp-Session-Id"] = self.session
        req = urllib.request.Request(self.url, data=json.dumps(message).encode(), headers=headers, method="POST")
        with urllib.request.urlopen(req, timeout=60) as resp:
            self.session = resp.headers.get("Mcp-Session-Id", self.session)
            body = resp.read().decode()
            if "id" not in message:
                return None
            if resp.headers.get("Content-Type", "").startswith("text/event-stream"):
                for line in body.splitlines():
                    if line.startswith("data:") and line[5:].strip():
                        answer = json.loads(line[5:])
                        if answer.get("id") == message["id"]:
                            return answer
                raise RuntimeError(f"no answer in {body!r}")
            return json.loads(body)

    def request(self, method, params):
        message = {"jsonrpc": "2.0", "id": self.next_id, "method": method, "params": params}
        self.next_id += 1
        return self.post(message)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--airlock", default=os.environ.get("AIRLOCK_BIN"))
    parser.add_argument("--work", required=True)
    args = parser.parse_args()
    os.makedirs(args.work, exist_ok=True)
    receiver = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    otlp = f"http://127.0.0.1:{receiver.server_address[1]}"
    proc, url, metrics_url = start_gateway(args.airlock, args.work, otlp)
    try:
        mcp = Mcp(url)
        init = mcp.request("initialize", {"protocolVersion": "2025-11-25", "capabilities": {},
                                          "clientInfo": {"name": "interop-telemetry", "version": "1"}})
        check("result" in init, "initialize", init)
        mcp.post({"jsonrpc": "2.0", "method": "notifications/initialized"})
        trace_id, parent_id = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
        for i in range(4):
            params = {"name": "demo__echo", "arguments": {"text": f"call {i}"}}
            if i == 0:
                params["_meta"] = {"traceparent": f"00-{trace_id}-{parent_id}-01"}
            answer = mcp.request("tools/call", params)
            check(answer.get("result", {}).get("isError") is not True, f"call {i} answered", answer)
        denied = mcp.request("tools/call", {"name": "demo__echo", "arguments": {"text": 7}})
        check(denied.get("result", {}).get("isError") is True, "invalid arguments refused", denied)

        text = urllib.request.urlopen(metrics_url, timeout=30).read().decode()
        families = {f.name: f for f in text_string_to_metric_families(text)}
        calls = {tuple(sorted(s.labels.items())): s.value for s in families["airlock_calls"].samples}
        allowed = [v for k, v in calls.items() if dict(k).get("tool") == "demo__echo" and dict(k)["decision"] == "allow"]
        check(allowed == [4.0], "airlock_calls_total{tool=demo__echo,decision=allow} == 4", calls)
        invalid = [v for k, v in calls.items() if dict(k)["decision"] == "invalid_arguments"]
        check(invalid == [1.0], "airlock_calls_total{decision=invalid_arguments} == 1", calls)
        stage = {s.labels["stage"]: s.value for s in families["airlock_stage_duration_seconds"].samples
                 if s.name.endswith("_count")}
        check(stage.get("downstream") == 4.0 and stage.get("validate") == 5.0, "stage histograms count the calls", stage)
        records = [s.value for s in families["airlock_audit_records"].samples if s.name.endswith("_total")]
        check(records and records[0] >= 20, "audit records counted (>= 4 per allowed call + 2 per refused)", records)

        # `airlock metrics`: the same registry read over the control socket (how a
        # stdio-only gateway is read), parsed by the same independent parser.
        config = os.path.join(args.work, "airlock.toml")
        out = subprocess.run([args.airlock, "metrics", "--config", config], capture_output=True, text=True, timeout=60)
        check(out.returncode == 0, "airlock metrics over the control socket", out.stderr)
        if out.returncode == 0:
            socket_families = {f.name: f for f in text_string_to_metric_families(out.stdout)}
            over_socket = {tuple(sorted(s.labels.items())): s.value for s in socket_families["airlock_calls"].samples}
            check(over_socket == calls, "airlock metrics shows the calls /metrics shows", over_socket)
            rejected = {s.labels["reason"]: s.value for s in socket_families["airlock_rejected_requests"].samples
                        if s.name.endswith("_total")}
            check(rejected.get("schema") == 1.0, "airlock_rejected_requests_total{reason=schema} == 1", rejected)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        receiver.shutdown()

    spans = []
    for body in Receiver.bodies:
        req = ExportTraceServiceRequest()
        req.ParseFromString(body)
        for rs in req.resource_spans:
            for ss in rs.scope_spans:
                spans.extend(ss.spans)
    check(bool(spans), "spans received over OTLP/HTTP", len(Receiver.bodies))
    ours = [s for s in spans if s.trace_id.hex() == trace_id]
    calls = [s for s in ours if s.name == "tools/call demo__echo" and s.kind == Span.SPAN_KIND_SERVER]
    check(len(calls) == 1 and calls[0].parent_span_id.hex() == parent_id,
          "the call span continues the client's traceparent", [(s.name, s.parent_span_id.hex()) for s in ours])
    if calls:
        children = sorted(s.name for s in ours if s.parent_span_id == calls[0].span_id)
        want = {"validate", "decide", "audit_commit", "tools/call echo"}
        check(want <= set(children), "stage spans are children of the call span", children)
        attrs = {a.key: a.value.string_value for a in calls[0].attributes}
        check(attrs.get("mcp.method.name") == "tools/call" and attrs.get("gen_ai.tool.name") == "demo__echo",
              "MCP/GenAI semantic-convention attributes", attrs)
        client = [s for s in ours if s.kind == Span.SPAN_KIND_CLIENT]
        check(len(client) == 1 and client[0].parent_span_id == calls[0].span_id, "downstream request is a client span",
              [(s.name, s.kind) for s in ours])
    sys.exit(1 if FAILED else 0)


if __name__ == "__main__":
    main()
