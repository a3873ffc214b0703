#!/usr/bin/env python3
"""Sweep benchmark: Quell's organization-wide sweep next to Cloud Custodian, same sandbox, same groups.

One sandbox organization with MEMBERS member accounts (default 20) in 2 Regions, Quell installed.
Two scenarios, 1,000 security groups each, half of them open to the world on port 22 (the other
half open on 443, which must stay):

- all 1,000 in one account and Region;
- the same 1,000 spread over the 20 member accounts x 2 Regions.

In each, Cloud Custodian (`c7n-org run`, pull mode, a policy with the same filter and
`remove-permissions: matched`, over the same accounts and Regions) and `quell sweep` each get the
open groups to fix; after each run every group is read back (no SSH rule open to the world, every
443 rule still there) and the SSH rules are opened again for the next tool.

Wall time: each tool's process from start to end (for Quell, `quell sweep`: publish, the
responder's sweep, and the wait for its record). AWS calls: for Custodian, the requests the
sandbox served during its run (its access log); for Quell, the responder's own count (SDK
interceptor: the sweep, the ledger and the audit message), which leaves out the CLI's publish and
ledger polling. Results: bench/results/sweep.md.

Sizes: MEMBERS (default 20), GROUP_COUNT (default 1000), REGIONS (default 2, the sandbox's; up to 6,
each added one recorded by AWS Config in every account). LATENCY_MS="50-100" runs both tools a
second time through the fault proxy, which adds that latency to every call of either tool.
SCENARIOS=spread leaves out the one-account scenario; RESULTS_FILE names the results file.
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

from fault_proxy import FaultProxy
from landing_zone import record_configuration
from sandbox_accounts import account_session

ROOT = pathlib.Path(__file__).resolve().parent.parent
QUELL = ROOT / "target/debug/quell"
HOME = ROOT / "bench/out/sweep"
C7N_ORG = ROOT / "bench/out/c7n-venv/bin/c7n-org"
RESULTS = ROOT / "bench/results" / os.environ.get("RESULTS_FILE", "sweep.md")
# "spread" runs only the scenario over every account and Region (the large run's point).
SCENARIOS = os.environ.get("SCENARIOS", "both")
MEMBERS = int(os.environ.get("MEMBERS", "20"))
ENVIRONMENTS = os.environ.get("ENVIRONMENTS", "8")
GROUPS = int(os.environ.get("GROUP_COUNT", "1000"))
# More Regions than the sandbox's two: each added one gets AWS Config recording in every account.
REGIONS = int(os.environ.get("REGIONS", "2"))
EXTRA_REGIONS = ["us-west-2", "ap-southeast-2", "eu-central-1", "ca-central-1"]
# "50-100": both tools run a second time with that latency added to every call by the fault proxy.
LATENCY_MS = [int(x) for x in os.environ["LATENCY_MS"].split("-")] if os.environ.get("LATENCY_MS") else None
ENV = dict(os.environ, QUELL_HOME=str(HOME), QUELL_VENV=str(ROOT / ".quell/venv"), NO_COLOR="1")
NO_RETRIES = Config(retries={"total_max_attempts": 3, "mode": "standard"})

POLICY = """
policies:
  - name: sg-open-ssh
    resource: aws.security-group
    filters:
      - type: ingress
        Ports: [22]
        Cidr:
          value: "0.0.0.0/0"
    actions:
      - type: remove-permissions
        ingress: matched
"""


def quell(*args):
    started = time.monotonic()
    out = subprocess.run([str(QUELL), *args], env=ENV, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"quell {' '.join(args)} failed ({out.returncode}):\n{out.stderr[-4000:]}")
    return time.monotonic() - started, out.stdout


class Org:
    def __init__(self, state):
        self.state = state
        self.endpoint = state["endpoint"]
        self.admin = boto3.Session(
            aws_access_key_id=state["admin"]["access_key_id"],
            aws_secret_access_key=state["admin"]["secret_access_key"],
            region_name="us-east-1",
        )
        self._sessions = {}

    def client(self, account, service, region):
        if account not in self._sessions:
            self._sessions[account] = account_session(self.endpoint, self.admin, account)
        return self._sessions[account].client(service, region_name=region, endpoint_url=self.endpoint, config=NO_RETRIES)

    def grow(self, members):
        org = self.admin.client("organizations", endpoint_url=self.endpoint, config=NO_RETRIES)
        workloads = next(o["id"] for o in self.state["organizational_units"] if o["path"] == "/Workloads")
        root = org.list_roots()["Roots"][0]["Id"]
        for i in range(len(self.state["member_accounts"]), members):
            account = org.create_account(Email=f"sweep-{i}@example.com", AccountName=f"sweep-{i}")["CreateAccountStatus"]["AccountId"]
            org.move_account(AccountId=account, SourceParentId=root, DestinationParentId=workloads)
            record_configuration(self.endpoint, self.admin, account, self.state["regions"])
        accounts = []
        for page in org.get_paginator("list_accounts_for_parent").paginate(ParentId=workloads):
            accounts += [a["Id"] for a in page["Accounts"]]
        for ou in org.list_organizational_units_for_parent(ParentId=workloads)["OrganizationalUnits"]:
            accounts += [a["Id"] for a in org.list_accounts_for_parent(ParentId=ou["Id"])["Accounts"]]
        return sorted(accounts)


def ssh(group):
    return [{"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}]


def web():
    return [{"IpProtocol": "tcp", "FromPort": 443, "ToPort": 443, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}]


def create_groups(org, places, scenario):
    """GROUPS groups spread evenly over `places`; every other one open on 22. Returns {place: [(id, open)]}."""
    made = {p: [] for p in places}
    for i in range(GROUPS):
        account, region = places[i % len(places)]
        ec2 = org.client(account, "ec2", region)
        gid = ec2.create_security_group(GroupName=f"{scenario}-{i}", Description="bench")["GroupId"]
        is_open = i % 2 == 0
        ec2.authorize_security_group_ingress(GroupId=gid, IpPermissions=ssh(gid) if is_open else web())
        made[(account, region)].append((gid, is_open))
    return made


def reopen(org, made):
    for (account, region), groups in made.items():
        ec2 = org.client(account, "ec2", region)
        for gid, is_open in groups:
            if is_open:
                ec2.authorize_security_group_ingress(GroupId=gid, IpPermissions=ssh(gid))


def verify(org, made, tool):
    """Every open group closed, every 443 rule kept. Returns (groups read back, open groups now closed)."""
    checked = closed = 0
    for (account, region), groups in made.items():
        ec2 = org.client(account, "ec2", region)
        ids = [g for g, _ in groups]
        for i in range(0, len(ids), 200):
            for g in ec2.describe_security_groups(GroupIds=ids[i:i + 200])["SecurityGroups"]:
                perms = g["IpPermissions"]
                open_ssh = any(p.get("FromPort") == 22 and any(r["CidrIp"] == "0.0.0.0/0" for r in p.get("IpRanges", [])) for p in perms)
                if open_ssh:
                    sys.exit(f"{tool}: {g['GroupId']} in {account} {region} is still open on 22")
                checked += 1
                closed += dict(groups)[g["GroupId"]]
        web_rules = 0
        for i in range(0, len(ids), 200):
            for g in ec2.describe_security_groups(GroupIds=ids[i:i + 200])["SecurityGroups"]:
                web_rules += sum(1 for p in g["IpPermissions"] if p.get("FromPort") == 443)
        expected = sum(1 for _, o in groups if not o)
        if web_rules != expected:
            sys.exit(f"{tool}: {account} {region} has {web_rules} rules on 443, expected {expected}")
    return checked, closed


def moto_requests():
    log = HOME / "sandbox/moto.log"
    # One werkzeug access-log line per request served.
    return sum(1 for line in log.read_text(errors="replace").splitlines() if ' HTTP/1.1" ' in line)


def run_custodian(org, accounts, regions, endpoint=None):
    work = HOME / "c7n"
    work.mkdir(parents=True, exist_ok=True)
    (work / "policy.yml").write_text(POLICY)
    (work / "accounts.yml").write_text(json.dumps({"accounts": [
        {"account_id": a, "name": f"acct-{a}", "role": f"arn:aws:iam::{a}:role/OrganizationAccountAccessRole", "regions": regions}
        for a in accounts
    ]}))
    env = dict(
        os.environ,
        AWS_ENDPOINT_URL=endpoint or org.endpoint,
        AWS_ACCESS_KEY_ID=org.state["admin"]["access_key_id"],
        AWS_SECRET_ACCESS_KEY=org.state["admin"]["secret_access_key"],
        AWS_DEFAULT_REGION="us-east-1",
    )
    before = moto_requests()
    started = time.monotonic()
    out = subprocess.run(
        [str(C7N_ORG), "run", "-c", str(work / "accounts.yml"), "-s", str(work / "out"), "-u", str(work / "policy.yml"),
         # No cached resource lists: both tools must read what is there now.
         "--cache-period", "0"],
        env=env, capture_output=True, text=True,
    )
    wall = time.monotonic() - started
    if out.returncode != 0:
        sys.exit(f"c7n-org failed ({out.returncode}):\n{out.stderr[-4000:]}")
    return wall, moto_requests() - before


def add_regions(state, added):
    """More Regions for the organization: Quell's configuration names them, and every account
    records its configuration there, as a landing zone would set up."""
    config = HOME / "sandbox/quell.yaml"
    text = config.read_text()
    old = "regions: [" + ", ".join(state["regions"]) + "]"
    if old not in text:
        sys.exit(f"{config} has no line {old!r}")
    state["regions"] = state["regions"] + added
    config.write_text(text.replace(old, "regions: [" + ", ".join(state["regions"]) + "]"))
    admin = boto3.Session(aws_access_key_id=state["admin"]["access_key_id"], aws_secret_access_key=state["admin"]["secret_access_key"], region_name="us-east-1")
    for account in [state["security_account"], *state["member_accounts"]]:
        record_configuration(state["endpoint"], admin, account, added)


def run_quell():
    log = HOME / "sandbox/responder.log"
    seen = len(log.read_text(errors="replace").splitlines()) if log.exists() else 0
    # Security groups only: the scope of the Custodian policy it is compared with.
    wall, out = quell("--sandbox", "--output", "json", "sweep", "--yes", "--only", "security_group",
                      "--config", str(HOME / "sandbox/quell.yaml"))
    report = json.loads(out)
    if report["status"] != "succeeded":
        sys.exit(f"the sweep ended {report['status']}")
    calls, handler_ms = 0, 0
    for line in log.read_text(errors="replace").splitlines()[seen:]:
        if '"invocation"' in line and report["request_id"] in line:
            fields = json.loads(line)["fields"]
            calls += fields["aws_calls"]
            handler_ms += fields["handler_ms"]
    fixed = sum(sum(1 for g in ((s.get("new") or {}).get("open_groups") or []) if g.get("outcome") == "fixed")
                for place in report["places"] for s in place["steps"])
    return wall, calls, handler_ms, fixed


def main():
    quell("sandbox", "down")
    # As many responder processes as the sweep queue's maximum concurrency (sweep.concurrency, 8).
    quell("sandbox", "up", "--environments", ENVIRONMENTS)
    rows = []
    try:
        state = json.loads((HOME / "sandbox/state.json").read_text())
        added = EXTRA_REGIONS[:max(0, REGIONS - len(state["regions"]))]
        if added:
            add_regions(state, added)
        org = Org(state)
        members = org.grow(MEMBERS)[:MEMBERS]
        quell("--sandbox", "install", "--config", str(HOME / "sandbox/quell.yaml"), "--yes")
        regions = state["regions"]
        security = state["security_account"]
        swept = sorted(set(members + [security]))
        # The seeded groups open on 22 are fixed first, so both tools start from the same state.
        run_quell()
        scenarios = [
            (f"{GROUPS:,} groups in one account and Region", [(members[0], regions[0])]),
            (f"{GROUPS:,} groups over {len(members)} accounts x {len(regions)} Regions", [(a, r) for a in members for r in regions]),
        ][1 if SCENARIOS == "spread" else 0:]
        modes = [("", None)] + ([(f", {LATENCY_MS[0]}-{LATENCY_MS[-1]} ms a call", LATENCY_MS)] if LATENCY_MS else [])
        proxy = FaultProxy(ROOT, HOME, state["endpoint"]) if LATENCY_MS else None
        try:
            for n, (scenario, places) in enumerate(scenarios):
                made = create_groups(org, places, f"s{n}")
                for suffix, latency in modes:
                    name = scenario + suffix
                    if proxy:
                        proxy.set({"latency_ms": latency})
                    wall, requests = run_custodian(org, swept, regions, proxy.url if latency else None)
                    checked, closed = verify(org, made, "custodian")
                    rows.append((name, "Cloud Custodian (c7n-org)", wall, requests, closed, checked))
                    print(f"{name}: Custodian {wall:.1f} s, {requests} requests", flush=True)
                    reopen(org, made)
                    wall, calls, handler_ms, fixed = run_quell()
                    checked, closed = verify(org, made, "quell")
                    if closed != fixed:
                        sys.exit(f"quell reported {fixed} groups fixed, {closed} were read back closed")
                    rows.append((name, f"Quell sweep (responder {handler_ms / 1000:.1f} s summed over its invocations)", wall, calls, closed, checked))
                    print(f"{name}: Quell {wall:.1f} s ({handler_ms} ms in the responder), {calls} calls, {fixed} fixed", flush=True)
                    reopen(org, made)
        finally:
            if proxy:
                proxy.close()
    finally:
        quell("sandbox", "down")
    lines = [
        "# Sweep benchmark: Quell and Cloud Custodian",
        "",
        f"Run {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC by `bench/sweep` on {os.cpu_count()} cores "
        f"({platform.machine()}), sandbox moto 5.2.5, debug `quell` and `bootstrap`, c7n 0.9.53 / c7n-org 0.6.52.",
        f"Both tools cover the same {len(swept)} accounts x {len(regions)} Regions; half of the {GROUPS:,} groups are open on port 22 "
        "from 0.0.0.0/0, the other half on 443. Every group is read back after each run: no open SSH rule left, every 443 rule kept.",
        "AWS calls: Custodian's are the requests the sandbox served during its run; Quell's are the responder's own count "
        "(the sweep, the ledger, the audit message), without the CLI's publish and polling.",
        "Quell runs `quell sweep --only security_group`: the scope of the Custodian policy (its buckets and snapshots "
        "playbooks would add their own listings).",
        "",
        "| scenario | tool | wall s | AWS calls | open groups read back closed | groups read back | Custodian's wall time / this |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    custodian = {name: wall for name, tool, wall, *_ in rows if tool.startswith("Cloud Custodian")}
    for name, tool, wall, calls, fixed, checked in rows:
        lines.append(f"| {name} | {tool} | {wall:.1f} | {calls} | {fixed} | {checked} | {custodian[name] / wall:.1f}x |")
    lines += [
        "",
        "Where the time goes: the sandbox serves one request at a time, about 5 ms each, and neither tool can fix a group "
        "in fewer than one write (EC2 has no call that revokes rules of several groups), so the revokes alone cost both "
        f"about {GROUPS // 2 * 5 / 1000:.1f} s. Quell adds one listing of every rule and one tag lookup per place before, and one "
        "rule listing after to read the fixes back; Custodian spends its extra time starting up and describing the groups.",
    ]
    if LATENCY_MS:
        lines += [
            "",
            f"With latency: both tools' calls pass the fault proxy, which holds each {LATENCY_MS[0]}-{LATENCY_MS[-1]} ms before "
            "the sandbox answers, calls in flight side by side, as AWS answers: what then counts is how many calls each tool "
            "keeps in flight. Custodian: c7n-org's worker processes, one account and Region each (C7N_ORG_PARALLEL, 4 per "
            f"core: {os.cpu_count() * 4} here). Quell: one responder invocation per account and Region, as many at once as "
            f"the sweep queue's maximum concurrency (sweep.concurrency, 8) and the host's {ENVIRONMENTS} environments allow.",
        ]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("\n".join(lines) + "\n")
    print(f"results written to {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
