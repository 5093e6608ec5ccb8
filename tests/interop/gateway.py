"""Generate an Airlock config directory for the interop run, and say how to start Airlock on it.

Every file the run feeds the gateway is written here, so keeping the gateway compatible with the
run means keeping this one shape working:

  DIR/airlock.toml               [gateway] data_dir, manifests, policies, separator,
                                 prefix_tools (only when false); [http] allowed_hosts
  DIR/tool-manifests/NAME.toml   name + (command, args, env) or (url, transport)
  DIR/policies/allow-all.toml    one rule, effect = "allow", so no call is held for approval

CLI (used by ./run):
  gateway.py config DIR [--no-prefix] SERVER_JSON...   write DIR, print DIR/airlock.toml
      SERVER_JSON: '{"name": "fs", "command": "/x/node", "args": ["/x/index.js", "/root"]}'
               or  '{"name": "conf", "url": "http://localhost:1234/mcp", "transport": "streamable-http"}'
  gateway.py free-port                                  print a free TCP port on 127.0.0.1
  gateway.py wait-http PORT PID                         wait until 127.0.0.1:PORT accepts and
                                                        /healthz (if any) answers, or PID exits
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any


def toml_value(v: Any) -> str:
    # json strings are valid TOML basic strings for everything we write (paths, URLs, names).
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return str(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{json.dumps(k)} = {toml_value(x)}" for k, x in v.items()) + " }"
    raise TypeError(f"cannot write {type(v).__name__} as TOML")


def write_manifest(dir: Path, server: dict[str, Any]) -> None:
    keys = ["name", "command", "args", "env", "url", "transport", "default_risk"]
    lines = [f"{k} = {toml_value(server[k])}" for k in keys if k in server]
    (dir / f"{server['name']}.toml").write_text("\n".join(lines) + "\n")


def write_config(out: Path, servers: list[dict[str, Any]], prefix_tools: bool = True) -> Path:
    out = out.resolve()
    (out / "tool-manifests").mkdir(parents=True, exist_ok=True)
    (out / "policies").mkdir(parents=True, exist_ok=True)
    for server in servers:
        write_manifest(out / "tool-manifests", server)
    (out / "policies" / "allow-all.toml").write_text(
        "[[rule]]\n"
        'id = "interop-allow-all"\n'
        'effect = "allow"\n'
        'reason = "the interop run checks forwarding, not approvals"\n'
    )
    gateway = [
        "[gateway]",
        f"data_dir = {toml_value(str(out / 'data'))}",
        f"manifests = {toml_value(str(out / 'tool-manifests'))}",
        f"policies = {toml_value(str(out / 'policies'))}",
        'separator = "__"',
    ]
    if not prefix_tools:
        gateway.append("prefix_tools = false")
    config = "\n".join(gateway) + '\n\n[http]\nallowed_hosts = ["localhost", "127.0.0.1"]\n'
    path = out / "airlock.toml"
    path.write_text(config)
    return path


def airlock_bin() -> str:
    """The gateway binary under test: $AIRLOCK_BIN, else the release build of this checkout."""
    default = Path(__file__).resolve().parents[2] / "target" / "release" / "airlock"
    return os.environ.get("AIRLOCK_BIN") or str(default)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(port: int, pid: int, timeout: float = 90.0) -> bool:
    """True once the port accepts and /healthz answers anything; False if PID died or time ran out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2):
                return True
        except urllib.error.HTTPError:
            return True  # it answered: the listener is up, /healthz may just not exist
        except OSError:
            time.sleep(0.2)
    return False


def main(argv: list[str]) -> int:
    cmd = argv[1] if len(argv) > 1 else ""
    if cmd == "config" and len(argv) >= 3:
        rest = argv[3:]
        servers = [json.loads(a) for a in rest if a != "--no-prefix"]
        print(write_config(Path(argv[2]), servers, prefix_tools="--no-prefix" not in rest))
        return 0
    if cmd == "free-port":
        print(free_port())
        return 0
    if cmd == "wait-http" and len(argv) == 4:
        return 0 if wait_http(int(argv[2]), int(argv[3])) else 1
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
