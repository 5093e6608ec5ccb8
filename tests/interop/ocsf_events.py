"""`airlock log export --format ocsf` against an independent OCSF implementation.

The validator is PyPI `pydantic-ocsf` (models generated from the OCSF schema, which the
package ships as JSON for 1.0.0 to 1.7.0): each event is validated by the model of its class
(required attributes, types, enums, `type_uid` = class * 100 + activity, sibling names such
as `activity_name` for a known `activity_id`). The models accept unknown attributes, so this
script also checks, against the schema JSON the package ships, that every top-level
attribute belongs to the class and that the objects Airlock fills meet their `at_least_one`
constraints.

Runs `airlock serve` over stdio twice with calls that are allowed, denied and held for a
confirmation (which the restart cancels), so records of every OCSF class Airlock uses
appear, then exports and validates every event.

Usage: ocsf_events.py --work DIR   (the airlock binary: $AIRLOCK_BIN)
Prints PASS/FAIL lines; exits 1 if any check failed.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import ocsf
from ocsf.v1_7_0 import events as ocsf_events
from pydantic import ValidationError

AIRLOCK = os.environ.get("AIRLOCK_BIN", "airlock")
FAILED = 0
MODELS = {
    3004: ocsf_events.EntityManagement,
    6002: ocsf_events.ApplicationLifecycle,
    6003: ocsf_events.ApiActivity,
}
SCHEMA = json.loads((Path(ocsf.__file__).parent / "schemas" / "v1_7_0.json").read_text())


def report(ok: bool, what: str) -> None:
    global FAILED
    print(("PASS " if ok else "FAIL ") + what, flush=True)
    if not ok:
        FAILED += 1


def airlock(*args: str) -> str:
    out = subprocess.run([AIRLOCK, *args], capture_output=True, text=True, env=dict(os.environ, AIRLOCK_LOG="warn"))
    if out.returncode != 0:
        raise RuntimeError(f"airlock {' '.join(args)}: exit {out.returncode}\n{out.stdout}{out.stderr}")
    return out.stdout


def run_gateway(config: Path, texts: list[str]) -> None:
    """One stdio session of a client without elicitation calling demo__echo with each text."""
    # --standalone: each run is its own gateway, so the second one is a restart (a held
    # call left pending is settled "gateway restarted") rather than a bridge to the first.
    proc = subprocess.Popen([AIRLOCK, "serve", "--standalone", "--config", str(config)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, env=dict(os.environ, AIRLOCK_LOG="warn"))
    assert proc.stdin and proc.stdout

    def send(msg: dict) -> None:
        proc.stdin.write(json.dumps(msg) + "\n")
        proc.stdin.flush()

    send({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "ocsf_events.py", "version": "1"}}})
    proc.stdout.readline()
    send({"jsonrpc": "2.0", "method": "notifications/initialized"})
    for i, text in enumerate(texts, start=1):
        send({"jsonrpc": "2.0", "id": i, "method": "tools/call",
              "params": {"name": "demo__echo", "arguments": {"text": text}}})
        while json.loads(proc.stdout.readline()).get("id") != i:
            pass
    proc.stdin.close()
    proc.wait(timeout=60)


def setup(work: Path) -> Path:
    for sub in ("tool-manifests", "policies", "sandbox"):
        (work / sub).mkdir(parents=True, exist_ok=True)
    (work / "tool-manifests" / "demo.toml").write_text(
        f'name = "demo"\ncommand = {json.dumps(AIRLOCK)}\nargs = ["demo-tools", "--sandbox", {json.dumps(str(work / "sandbox"))}]\n')
    (work / "policies" / "rules.toml").write_text(
        '[[rule]]\nid = "allow"\neffect = "allow"\nreason = "interop"\n'
        '[[rule]]\nid = "no-secret"\ntools = ["demo__echo"]\nwhen = { "/text" = { regex = "^secret" } }\n'
        'effect = "deny"\nreason = "no secrets"\n'
        '[[rule]]\nid = "ask"\ntools = ["demo__echo"]\nwhen = { "/text" = { regex = "^ask" } }\neffect = "confirm"\n')
    config = work / "airlock.toml"
    config.write_text('[gateway]\ndata_dir = "data"\n')
    return config


def class_attributes(name: str) -> set[str]:
    """Every attribute a class has in the package's schema (its own, its parents', base_event's)."""
    attrs: set[str] = set()
    while name:
        cls = SCHEMA["events"][name]
        attrs |= {k for k in cls["attributes"] if not k.startswith("$")}
        name = cls.get("extends", "base_event" if name != "base_event" else "")
    return attrs


def at_least_one(obj_name: str, value: dict) -> bool:
    constraint = SCHEMA["objects"][obj_name].get("constraints", {}).get("at_least_one")
    return not constraint or any(k in value for k in constraint)


def check_event(ev: dict, record: bytes) -> list[str]:
    problems = []
    model = MODELS.get(ev.get("class_uid"))
    if model is None:
        return [f"class_uid {ev.get('class_uid')} is not one Airlock documents"]
    try:
        model.model_validate(ev)
    except ValidationError as e:
        problems.append(f"{model.__name__}: {e}")
    name = {3004: "entity_management", 6002: "application_lifecycle", 6003: "api_activity"}[ev["class_uid"]]
    unknown = set(ev) - class_attributes(name)
    if unknown:
        problems.append(f"attributes not in {name}: {sorted(unknown)}")
    for attr, obj in (("actor", "actor"), ("src_endpoint", "network_endpoint"), ("entity", "managed_entity")):
        if attr in ev and not at_least_one(obj, ev[attr]):
            problems.append(f"{attr} fails the at_least_one constraint of {obj}")
    if ev["metadata"].get("uid") != hashlib.sha256(record).hexdigest():
        problems.append("metadata.uid is not the record's SHA-256")
    if json.loads(record) != ev.get("unmapped", {}).get("airlock"):
        problems.append("unmapped.airlock is not the record")
    return problems


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", required=True, type=Path)
    work = ap.parse_args().work
    config = setup(work)
    data = str(work / "data")
    run_gateway(config, ["hello", "secret plan", "ask first", "again"])
    run_gateway(config, ["after restart"])

    export = [l.encode() for l in airlock("log", "export", "--data-dir", data).splitlines() if l]
    records = [l for l in export if json.loads(l).get("kind") not in ("export", "checkpoint")]
    lines = [l for l in airlock("log", "export", "--format", "ocsf", "--data-dir", data).splitlines() if l]
    events = [json.loads(l) for l in lines]
    report(len(events) == len(records) > 0, f"one OCSF event per record ({len(events)})")
    bad = 0
    for ev, rec in zip(events, records):
        problems = check_event(ev, rec)
        if problems:
            bad += 1
            if bad <= 5:
                print(f"INFO seq {json.loads(rec)['seq']} ({json.loads(rec)['kind']}): {problems}")
    report(bad == 0, f"every event validates with pydantic-ocsf {ocsf.__version__} against OCSF 1.7.0 ({len(events) - bad}/{len(events)})")
    kinds = {(e["class_uid"], e["unmapped"]["airlock"]["kind"]) for e in events}
    for cls, kind in ((6002, "gateway_started"), (6003, "decision"), (6003, "call_completed"),
                      (3004, "approval_requested"), (3004, "approval_settled")):
        report((cls, kind) in kinds, f"{kind} maps to class {cls}")
    deny = [e for e in events if e["unmapped"]["airlock"].get("decision") == "deny"]
    report(len(deny) == 1 and deny[0]["status_id"] == 2, "the denied call's decision is a Failure")

    # The validator is live: a broken copy of a valid event is refused.
    broken = copy.deepcopy(events[0])
    broken["type_uid"] += 1
    try:
        MODELS[broken["class_uid"]].model_validate(broken)
        report(False, "an event with a wrong type_uid must not validate")
    except ValidationError:
        report(True, "an event with a wrong type_uid does not validate")
    return 1 if FAILED else 0


if __name__ == "__main__":
    sys.exit(main())
