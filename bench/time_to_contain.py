#!/usr/bin/env python3
"""Time to contain, in the local sandbox: how soon the stolen credential stops working.

For each entity type it contains RUNS fresh entities with a warm responder and reads, from the
responder's own timeline of AWS calls (every try of every call, when it was sent and when it
ended), the sequential round trips before the first protective write (the deny policy, the
concurrency of 0, the isolation group) and in all, where calls in flight together count once, and
the time from the request's arrival to the end of that write and to the outcome. It does so twice:
as the sandbox answers (a few milliseconds a call), and with 50 ms added to every call by the
fault proxy in front of the sandbox, calls in flight at once delayed side by side as on AWS.

Run it through bench/time-to-contain, which builds first. Results: bench/results/time-to-contain.md.
"""

import json
import os
import platform
import statistics
import sys
import time

import containment
from containment import Workloads, sessions
from fault_proxy import FaultProxy

ROOT = containment.ROOT
HOME = ROOT / "bench/out/time-to-contain"
RESULTS = ROOT / "bench/results/time-to-contain.md"
RUNS = int(os.environ.get("RUNS", "5"))
LATENCY_MS = int(os.environ.get("LATENCY_MS", "50"))
# The containment benchmark's helpers, on a sandbox of this benchmark's own.
containment.ENV = dict(containment.ENV, QUELL_HOME=str(HOME))
quell = containment.quell

# The writes that stop an entity from acting: its first one is what the clock stops at.
PROTECTIVE = {
    "iam:AttachUserPolicy", "iam:AttachRolePolicy", "iam:PutUserPolicy", "iam:PutRolePolicy",
    "lambda:PutFunctionConcurrency", "ec2:ModifyNetworkInterfaceAttribute",
}


def rounds(spans):
    """Sequential round trips: a call sent before the calls in flight have ended shares their round."""
    count, end = 0, -1
    for _, sent, ended in sorted(spans, key=lambda s: s[1]):
        if sent >= end:
            count, end = count + 1, ended
        else:
            end = max(end, ended)
    return count


def first_invocation(request_id):
    for _ in range(100):
        for line in (HOME / "sandbox/responder.log").read_text().splitlines():
            if request_id in line and '"invocation"' in line:
                fields = json.loads(line)["fields"]
                return fields["handler_ms"], json.loads(fields["timeline"])
        time.sleep(0.1)
    sys.exit(f"no invocation logged for {request_id}")


def contain(arn):
    report = json.loads(quell("--sandbox", "--output", "json", "contain", arn, "--reason", "benchmark", "--yes", "--timeout", "120"))
    if report["status"] != "succeeded":
        sys.exit(f"{arn}: {report['status']}: {report['record'].get('error') or report['record'].get('rejection')}")
    handler_ms, timeline = first_invocation(report["request_id"])
    first = next((i for i, s in enumerate(timeline) if s[0] in PROTECTIVE), None)
    if first is None:
        sys.exit(f"{arn}: no protective write in {timeline}")
    before = [s for s in timeline if s[1] < timeline[first][1]]
    return {
        "rounds_before": rounds(before),
        "rounds_total": rounds(timeline),
        "calls": len(timeline),
        "first_write_ms": timeline[first][2] / 1000,
        "first_write": timeline[first][0],
        "handler_ms": handler_ms,
    }


def main():
    state = containment.fresh_sandbox(HOME)
    client = sessions(state)
    member = state["member_accounts"][0]
    work = Workloads(client(member), member)

    # The proxy stands in front of the sandbox for the responder alone, in both modes.
    proxy = FaultProxy(ROOT, HOME, state["endpoint"])
    rows = []
    try:
        for label, latency in (("as the sandbox answers", None), (f"{LATENCY_MS} ms added to every call", [LATENCY_MS, LATENCY_MS])):
            proxy.set({"latency_ms": latency})
            for kind in ("user", "role", "function", "instance"):
                contain(getattr(work, kind)())  # warm: the environment, its sessions and caches
                samples = [contain(getattr(work, kind)()) for _ in range(RUNS)]
                med = lambda k: statistics.median(s[k] for s in samples)  # noqa: E731
                rows.append({"mode": label, "kind": kind, "first": samples[0]["first_write"], **{k: med(k) for k in ("rounds_before", "rounds_total", "calls", "first_write_ms", "handler_ms")}})
                r = rows[-1]
                print(f"{label:<28} {kind:<9} round trips before {r['first']}: {r['rounds_before']:.0f}, in all {r['rounds_total']:.0f} ({r['calls']:.0f} calls); "
                      f"first protective write done at {r['first_write_ms']:.0f} ms, outcome at {r['handler_ms']:.0f} ms", flush=True)
    finally:
        proxy.close()
        quell("sandbox", "down")

    lines = [
        "# Time to contain",
        "",
        f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} by `bench/time-to-contain` on {os.cpu_count()} cores ({platform.machine()}), "
        f"sandbox moto 5.2.5, debug responder, warm, {RUNS} fresh entities per row, medians.",
        "From the responder's own timeline of its AWS calls (every try, sent and ended): round trips are sequential, calls in flight "
        "together count once; times are from the request's arrival in the handler. The first protective write is the first call that "
        "stops the entity (deny policy, session revocation, concurrency 0, isolation group). The added latency comes from the fault "
        "proxy in front of the sandbox, per call, calls in flight delayed side by side.",
        "",
        "| calls answered | entity | first protective write | round trips before it | round trips in all | calls | first write done ms | outcome ms |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    lines += [f"| {r['mode']} | {r['kind']} | `{r['first']}` | {r['rounds_before']:.0f} | {r['rounds_total']:.0f} | {r['calls']:.0f} | {r['first_write_ms']:.0f} | {r['handler_ms']:.0f} |" for r in rows]
    RESULTS.write_text("\n".join(lines) + "\n")
    print(f"results written to {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
