#!/usr/bin/env python3
"""Soak: mixed traffic against the sandbox with faults injected, for DURATION seconds.

Every round it creates, in the member accounts, users and roles to contain and security groups
opened to the world on port 22 with the CloudTrail event that says so (every third event sent
twice), then sends the containments at once, each from its own `quell contain`. The responder runs
behind the fault proxy, which fails RATE of every call (throttling, HTTP 500, calls held and cut,
connections cut before or after the write). At the end the faults stop, the queues drain, and
everything is read back:

  sent    containments requested, groups opened (with their events)
  done    containments that succeeded and are read back contained; groups read back closed
  failed  containments that ended failed, with their record; groups whose remediation record failed
  lost    anything with no final record and not read back done: must be 0

DURATION (seconds, default 1800), RATE (default 0.05), PER_ROUND (entities per kind and round,
default 4). Run it through bench/soak, which builds first. Results: bench/results/soak.md.
"""

import functools
import json
import os
import platform
import random
import subprocess
import sys
import time
import uuid

import containment
from containment import sessions
from fault_proxy import FaultProxy

ROOT = containment.ROOT
HOME = ROOT / "bench/out/soak"
RESULTS = ROOT / "bench/results/soak.md"
DURATION = int(os.environ.get("DURATION", "1800"))
RATE = float(os.environ.get("RATE", "0.05"))
PER_ROUND = int(os.environ.get("PER_ROUND", "4"))
containment.ENV = dict(containment.ENV, QUELL_HOME=str(HOME))
quell = containment.quell
DENY_ALL = "arn:aws:iam::aws:policy/AWSDenyAll"


def opened_group(c, account, n):
    ec2 = c("ec2")
    group = ec2.create_security_group(GroupName=f"soak-{n}-{uuid.uuid4().hex[:6]}", Description="soak")["GroupId"]
    ec2.authorize_security_group_ingress(GroupId=group, IpPermissions=[{"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}])
    detail = {
        "eventVersion": "1.09", "eventSource": "ec2.amazonaws.com", "eventName": "AuthorizeSecurityGroupIngress",
        "awsRegion": "us-east-1", "recipientAccountId": account, "eventID": str(uuid.uuid4()),
        "userIdentity": {"type": "AssumedRole", "arn": f"arn:aws:sts::{account}:assumed-role/dev/soak"},
        "requestParameters": {"groupId": group, "ipPermissions": {"items": [{"ipProtocol": "tcp", "fromPort": 22, "toPort": 22, "ipRanges": {"items": [{"cidrIp": "0.0.0.0/0"}]}}]}},
    }
    entry = {"Source": "aws.ec2", "DetailType": "AWS API Call via CloudTrail", "Detail": json.dumps(detail)}
    for _ in range(2 if n % 3 == 0 else 1):
        c("events").put_events(Entries=[entry])
    return group


def open_on_22(c, group):
    perms = c("ec2").describe_security_groups(GroupIds=[group])["SecurityGroups"][0]["IpPermissions"]
    return any(p.get("FromPort") == 22 and any(r["CidrIp"] == "0.0.0.0/0" for r in p.get("IpRanges", [])) for p in perms)


def records_about(ledger, arn):
    out = ledger.query(TableName="quell-ledger", IndexName="entity-index", KeyConditionExpression="entity = :e",
                       ExpressionAttributeValues={":e": {"S": arn}})
    return [i["status"]["S"] for i in out["Items"] if i["request_id"]["S"].startswith("remediation:")]


def contained(c, arn):
    iam = c("iam")
    name = arn.rsplit("/", 1)[1]
    if ":user/" in arn:
        attached = iam.list_attached_user_policies(UserName=name)["AttachedPolicies"]
        keys = iam.list_access_keys(UserName=name)["AccessKeyMetadata"]
        return any(p["PolicyArn"] == DENY_ALL for p in attached) and all(k["Status"] == "Inactive" for k in keys)
    attached = iam.list_attached_role_policies(RoleName=name)["AttachedPolicies"]
    return any(p["PolicyArn"] == DENY_ALL for p in attached)


def main():
    state = containment.fresh_sandbox(HOME)
    # One session per account and one client per service: making them is what costs here.
    session_in = functools.cache(sessions(state))

    @functools.cache
    def made(account, service):
        return session_in(account)(service)

    def client(account):
        return lambda service: made(account, service)

    members = state["member_accounts"]
    ledger = client(state["security_account"])("dynamodb")
    proxy = FaultProxy(ROOT, HOME, state["endpoint"])
    proxy.set({"rate": RATE, "stall_ms": 1500})

    containments, groups = [], []  # (request id, account, arn, process), (account, group)
    started, n = time.monotonic(), 0
    try:
        while time.monotonic() - started < DURATION:
            for _ in range(PER_ROUND):
                account = random.choice(members)
                c = client(account)
                iam = c("iam")
                name = f"soak-{n}"
                iam.create_user(UserName=name)
                iam.create_access_key(UserName=name)
                iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{account}:root"}, "Action": "sts:AssumeRole"}]}))
                for arn in (f"arn:aws:iam::{account}:user/{name}", f"arn:aws:iam::{account}:role/{name}"):
                    rid = f"soak-{uuid.uuid4().hex[:12]}"
                    proc = subprocess.Popen([str(containment.QUELL), "--sandbox", "--output", "json", "contain", arn, "--reason", "soak",
                                             "--request-id", rid, "--yes", "--timeout", "600"], env=containment.ENV, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
                    containments.append((rid, account, arn, proc))
                groups.append((account, opened_group(c, account, n)))
                n += 1
            # Reap what ended, so the machine is not buried in processes.
            while sum(1 for *_, proc in containments if proc.poll() is None) > 4 * PER_ROUND:
                time.sleep(0.5)
            print(f"{time.monotonic() - started:6.0f} s: {len(containments)} containments and {len(groups)} groups sent", flush=True)
        for *_, proc in containments:
            proc.wait()
        stats = proxy.stats()
        proxy.set({"rate": 0.0})
        # The queues drain without faults; an event still being retried gets its last tries.
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and any(open_on_22(client(a), g) and not records_about(ledger, f"arn:aws:ec2:us-east-1:{a}:security-group/{g}") for a, g in groups):
            time.sleep(2)
    finally:
        proxy.close()

    tally = {"containments": {"sent": len(containments), "done": 0, "failed": 0, "lost": 0},
             "groups": {"sent": len(groups), "done": 0, "failed": 0, "lost": 0}}
    lost = []
    for rid, account, arn, proc in containments:
        item = ledger.get_item(TableName="quell-ledger", Key={"request_id": {"S": rid}}, ConsistentRead=True).get("Item")
        status = item["status"]["S"] if item else None
        if status == "succeeded" and contained(client(account), arn):
            tally["containments"]["done"] += 1
        elif status == "failed":
            tally["containments"]["failed"] += 1
        else:
            tally["containments"]["lost"] += 1
            lost.append(f"{arn} ({rid}): {status}")
    for account, group in groups:
        arn = f"arn:aws:ec2:us-east-1:{account}:security-group/{group}"
        statuses = records_about(ledger, arn)
        if not open_on_22(client(account), group):
            tally["groups"]["done"] += 1
        elif "failed" in statuses:
            tally["groups"]["failed"] += 1
        else:
            tally["groups"]["lost"] += 1
            lost.append(f"{arn}: still open, records {statuses}")
    quell("sandbox", "down")

    lines = [
        "# Soak",
        "",
        f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} by `bench/soak` on {os.cpu_count()} cores ({platform.machine()}), "
        f"sandbox moto 5.2.5, debug responder, {DURATION} s of traffic, {RATE:.0%} of the responder's calls failed by the fault proxy "
        f"({stats['calls']} calls, injected {json.dumps(stats['injected'])}, {stats['after_the_write']} after the write was made).",
        "",
        "| what | sent | done (read back) | failed (recorded) | lost |",
        "|---|---:|---:|---:|---:|",
    ]
    for what, t in tally.items():
        lines.append(f"| {what} | {t['sent']} | {t['done']} | {t['failed']} | {t['lost']} |")
    if lost:
        lines += ["", "Lost:", *[f"- {x}" for x in lost]]
    RESULTS.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"results written to {RESULTS.relative_to(ROOT)}")
    sys.exit(1 if lost else 0)


if __name__ == "__main__":
    main()
