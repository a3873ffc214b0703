#!/usr/bin/env python3
"""Install and upgrade benchmark, in the local sandbox.

For each organization size (ACCOUNTS, default "20 100" member accounts, each in 2 Regions) it
starts a fresh sandbox, adds member accounts to the Workloads OU until there are that many, and
times three runs of the real `quell`:

- `install --yes` on the empty organization,
- `upgrade` with nothing to change (must send no write call),
- `upgrade --yes` after a Region is added (the stack instances of one new Region).

It reports wall time and the AWS calls the CLI counted (its SDK interceptor; retries included),
and how many of them wrote. Results: bench/results/converge.md.
"""

import datetime
import json
import os
import pathlib
import platform
import subprocess
import sys
import time

import boto3
from botocore.config import Config

from landing_zone import record_configuration

ROOT = pathlib.Path(__file__).resolve().parent.parent
QUELL = ROOT / "target/debug/quell"
RESULTS = ROOT / "bench/results/converge.md"
SIZES = [int(n) for n in os.environ.get("ACCOUNTS", "20 100").split()]
NO_RETRIES = Config(retries={"total_max_attempts": 1})
NEW_REGION = "us-west-2"


def env(home):
    return dict(os.environ, QUELL_HOME=str(home), QUELL_VENV=str(ROOT / ".quell/venv"), NO_COLOR="1")


def quell(home, *args):
    started = time.monotonic()
    out = subprocess.run([str(QUELL), *args], env=env(home), capture_output=True, text=True)
    wall = time.monotonic() - started
    if out.returncode != 0:
        sys.exit(f"quell {' '.join(args)} failed ({out.returncode}):\n{out.stderr[-4000:]}")
    return wall, out.stdout


def grow(state, members):
    """Adds accounts to the Workloads OU until it holds `members` member accounts."""
    org = boto3.client(
        "organizations",
        endpoint_url=state["endpoint"],
        region_name="us-east-1",
        aws_access_key_id=state["admin"]["access_key_id"],
        aws_secret_access_key=state["admin"]["secret_access_key"],
        config=NO_RETRIES,
    )
    workloads = next(o["id"] for o in state["organizational_units"] if o["path"] == "/Workloads")
    root = org.list_roots()["Roots"][0]["Id"]
    have = len(state["member_accounts"])
    admin = boto3.Session(
        aws_access_key_id=state["admin"]["access_key_id"],
        aws_secret_access_key=state["admin"]["secret_access_key"],
    )
    for i in range(have, members):
        created = org.create_account(Email=f"bench-{i}@example.com", AccountName=f"bench-{i}")
        account = created["CreateAccountStatus"]["AccountId"]
        org.move_account(AccountId=account, SourceParentId=root, DestinationParentId=workloads)
        record_configuration(state["endpoint"], admin, account, state["regions"])


def run(members):
    home = ROOT / f"bench/out/converge-{members}"
    quell(home, "sandbox", "down")
    quell(home, "sandbox", "up")
    try:
        state = json.loads((home / "sandbox/state.json").read_text())
        started = time.monotonic()
        grow(state, members)
        setup = time.monotonic() - started
        config = home / "sandbox/quell.yaml"
        rows = []
        wall, out = quell(home, "--sandbox", "--output", "json", "install", "--config", str(config), "--yes")
        summary = json.loads(out)
        instances = sum(len(s["instances"]) for s in summary["stack_sets"])
        rows.append(("install", wall, summary["aws_calls"], instances))
        wall, out = quell(home, "--sandbox", "--output", "json", "upgrade", "--config", str(config))
        summary = json.loads(out)
        if summary["aws_calls"]["writes"] != 0:
            sys.exit(f"a no-change upgrade wrote: {summary['aws_calls']}")
        rows.append(("upgrade, nothing to change", wall, summary["aws_calls"], instances))
        wider = home / "wider.yaml"
        wider.write_text(config.read_text().replace("regions: [", f"regions: [{NEW_REGION}, "))
        wall, out = quell(home, "--sandbox", "--output", "json", "upgrade", "--config", str(wider), "--yes")
        summary = json.loads(out)
        after = sum(len(s["instances"]) for s in summary["stack_sets"])
        rows.append((f"upgrade, Region {NEW_REGION} added", wall, summary["aws_calls"], after))
        return setup, rows
    finally:
        quell(home, "sandbox", "down")


def main():
    if not QUELL.exists():
        sys.exit("build first: run bench/converge")
    lines = [
        "# Install and upgrade benchmark",
        "",
        f"Run {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC by `bench/converge` on "
        f"{os.cpu_count()} cores ({platform.machine()}), sandbox moto 5.2.5, debug `quell`.",
        "Member accounts are in the Workloads OU (plus the security account in its own OU); 2 Regions. "
        "AWS calls are the CLI's own count (SDK interceptor, retries included); writes are calls that change something.",
        "The sandbox finishes every StackSet operation at once, so wall time here is Quell's own work plus moto's: "
        "on AWS, CloudFormation's operation time dominates.",
        "",
        "| member accounts | run | wall s | AWS calls | writes | stack instances after |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    for members in SIZES:
        setup, rows = run(members)
        print(f"{members} member accounts (organization grown in {setup:.1f} s)")
        for name, wall, calls, instances in rows:
            print(f"  {name:<32} {wall:7.1f} s {calls['total']:6} calls {calls['writes']:4} writes {instances:5} instances")
            lines.append(f"| {members} | {name} | {wall:.1f} | {calls['total']} | {calls['writes']} | {instances} |")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("\n".join(lines) + "\n")
    print(f"results written to {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
