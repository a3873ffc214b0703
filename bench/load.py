#!/usr/bin/env python3
"""Load benchmark, in the local sandbox: containment throughput and latency, and an event burst.

One sandbox organization grown to MEMBERS member accounts (default 10), Quell installed, the local
Lambda host running ENVIRONMENTS responder processes at once (default 32). Each part runs twice:
as the sandbox answers (a few milliseconds a call), and with the fault proxy in front of the
sandbox adding LATENCY_MS (default 50-100) to every call of the responder, as AWS would.

Containment: at 1, 10 and 100 requests in flight, rounds of that many requests sent at once to the
contain queue (users, roles, functions and instances, spread over the accounts; every tenth sent
twice), 20, 10 and 10 rounds (LEVELS="1:20,10:10,100:10"). Latency is from the send to the record's end in the ledger;
throughput is requests over the level's wall time. At 100 that is 1,000 requests over 10 accounts.
Every request must end succeeded and be read back contained; every duplicate acted on once.

Burst: a deployment opens GROUP_COUNT groups (default 500) to the world across the accounts, and its
CloudTrail events reach the members' buses: each opening event one to three times, shuffled, among
the deployment's other calls (creating groups, tags, instances, interfaces) up to EVENTS in all
(default 10,000), which the members' rules do not forward. Reported: time until every group reads
back closed and the queue is drained, events forwarded, responder calls per forwarded event, and
revokes (exactly one per group), with nothing dead-lettered.

Run it through bench/load, which builds first. Results: bench/results/load.md.
"""

import datetime
import json
import os
import platform
import random
import statistics
import sys
import time
import uuid

import boto3

import containment
from containment import Workloads
from fault_proxy import FaultProxy
from sandbox_accounts import account_session
from sweep import Org

ROOT = containment.ROOT
HOME = ROOT / "bench/out/load"
RESULTS = ROOT / "bench/results/load.md"
MEMBERS = int(os.environ.get("MEMBERS", "10"))
ENVIRONMENTS = os.environ.get("ENVIRONMENTS", "32")
LATENCY_MS = [int(x) for x in os.environ.get("LATENCY_MS", "50-100").split("-")]
# Requests in flight -> rounds: LEVELS="1:20,10:10,100:10" (the default).
ROUNDS = {int(k): int(v) for k, v in (p.split(":") for p in os.environ.get("LEVELS", "1:20,10:10,100:10").split(","))}
GROUPS = int(os.environ.get("GROUP_COUNT", "500"))
EVENTS = int(os.environ.get("EVENTS", "10000"))
containment.ENV = dict(containment.ENV, QUELL_HOME=str(HOME))
quell = containment.quell
DENY_ALL = "arn:aws:iam::aws:policy/AWSDenyAll"
KINDS = ("user", "role", "function", "instance")


def percentile(values, p):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


class Sandbox:
    def __init__(self, state, members):
        self.state, self.members = state, members
        self.admin = boto3.Session(aws_access_key_id=state["admin"]["access_key_id"],
                                   aws_secret_access_key=state["admin"]["secret_access_key"], region_name="us-east-1")
        self.sessions = {}
        self.work = {}

    def client(self, account, service):
        if account not in self.sessions:
            self.sessions[account] = account_session(self.state["endpoint"], self.admin, account, "us-east-1")
        return self.sessions[account].client(service, endpoint_url=self.state["endpoint"], config=containment.NO_RETRIES)

    def workloads(self, account):
        if account not in self.work:
            self.work[account] = Workloads(lambda service: self.client(account, service), account)
        return self.work[account]

    def security(self, service):
        return self.client(self.state["security_account"], service)


def contained(sb, arn, record):
    """Reads the entity back: the effect, not the record."""
    account = arn.split(":")[4]
    name = arn.rsplit("/", 1)[-1].rsplit(":", 1)[-1]
    if ":user/" in arn:
        attached = sb.client(account, "iam").list_attached_user_policies(UserName=name)["AttachedPolicies"]
        return any(p["PolicyArn"] == DENY_ALL for p in attached)
    if ":role/" in arn:
        attached = sb.client(account, "iam").list_attached_role_policies(RoleName=name)["AttachedPolicies"]
        return any(p["PolicyArn"] == DENY_ALL for p in attached)
    if ":function:" in arn:
        return sb.client(account, "lambda").get_function_concurrency(FunctionName=name).get("ReservedConcurrentExecutions") == 0
    isolation = next((s["new"]["group"] for s in reversed(record["steps"]) if s["name"] == "isolation_groups"), None)
    enis = sb.client(account, "ec2").describe_network_interfaces(Filters=[{"Name": "attachment.instance-id", "Values": [name]}])["NetworkInterfaces"]
    return bool(enis) and all([g["GroupId"] for g in e["Groups"]] == [isolation] for e in enis)


def records(sb, keys):
    """The ledger's records of `keys` that exist, by key."""
    found = {}
    ddb = sb.security("dynamodb")
    for i in range(0, len(keys), 100):
        request = {"quell-ledger": {"Keys": [{"request_id": {"S": k}} for k in keys[i:i + 100]], "ConsistentRead": True}}
        while request:
            out = ddb.batch_get_item(RequestItems=request)
            for item in out["Responses"].get("quell-ledger", []):
                found[item["request_id"]["S"]] = json.loads(item["record"]["S"])
            request = out.get("UnprocessedKeys") or None
    return found


def when(text):
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def containment_level(sb, proxy, queue, requester, in_flight, rounds, label):
    latencies, started, duplicates = [], time.time(), 0
    calls_before, busy = proxy.stats()["calls"], 0.0
    n = 0
    for _ in range(rounds):
        batch = []
        for _ in range(in_flight):
            account = sb.members[n % len(sb.members)]
            kind = KINDS[n % len(KINDS)]
            arn = getattr(sb.workloads(account), kind)()
            batch.append((f"load-{uuid.uuid4().hex[:12]}", arn))
            n += 1
        sent = {}
        entries = []
        for i, (rid, arn) in enumerate(batch):
            body = json.dumps({"version": "1", "request_id": rid, "action": "contain", "entity": arn,
                               "reason": "load benchmark", "requester": requester, "options": {}})
            entries.append(body)
            if i % 10 == 0 and in_flight > 1:
                entries.append(body)
                duplicates += 1
        sqs = sb.security("sqs")
        for i in range(0, len(entries), 10):
            now = time.time()
            sqs.send_message_batch(QueueUrl=queue, Entries=[{"Id": str(j), "MessageBody": b} for j, b in enumerate(entries[i:i + 10])])
            for b in entries[i:i + 10]:
                sent.setdefault(json.loads(b)["request_id"], now)
        keys = [rid for rid, _ in batch]
        sent_at = time.time()
        deadline = time.time() + 600
        while True:
            done = {k: r for k, r in records(sb, keys).items() if r["status"] not in ("in_progress",)}
            if len(done) == len(keys):
                break
            if time.time() > deadline:
                sys.exit(f"{label}: {len(keys) - len(done)} requests without an outcome after 600 s")
            time.sleep(0.2)
        for rid, arn in batch:
            r = done[rid]
            if r["status"] != "succeeded":
                sys.exit(f"{label}: {arn} ended {r['status']}: {r.get('error') or r.get('rejection')}")
            if len(r["message_ids"]) != 1 or r["attempts"] != 1:
                sys.exit(f"{label}: {arn} acted on more than once: {r['message_ids']} {r['attempts']}")
            if not contained(sb, arn, r):
                sys.exit(f"{label}: {arn} is recorded contained but does not read back so")
            latencies.append((when(r["finished_at"]) - sent[rid]) * 1000)
        busy += max(when(done[k]["finished_at"]) for k in keys) - sent_at
    wall = time.time() - started
    calls = proxy.stats()["calls"] - calls_before
    # Throughput over the time requests were in flight (creating the entities is not counted).
    return {"in_flight": in_flight, "requests": len(latencies), "duplicates": duplicates, "wall": busy,
            "throughput": len(latencies) / busy, "calls_per_s": calls / busy, "p50": percentile(latencies, 50), "p90": percentile(latencies, 90),
            "p99": percentile(latencies, 99), "max": max(latencies)}


def cloudtrail(account, name, params):
    return {"Source": "aws.ec2", "DetailType": "AWS API Call via CloudTrail", "Detail": json.dumps({
        "eventVersion": "1.09", "eventSource": "ec2.amazonaws.com", "eventName": name, "awsRegion": "us-east-1",
        "recipientAccountId": account, "eventID": str(uuid.uuid4()),
        "userIdentity": {"type": "AssumedRole", "arn": f"arn:aws:sts::{account}:assumed-role/deployer/pipeline"},
        "requestParameters": params})}


def queue_quiet(sb, url):
    attrs = sb.security("sqs").get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    return sum(int(attrs[k]) for k in ("ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible", "ApproximateNumberOfMessagesDelayed")) == 0


def host_counts():
    path = HOME / "sandbox/host-deliveries.json"
    return json.loads(path.read_text()) if path.exists() else {}


def burst(sb, proxy, label, rng):
    groups = []
    for n in range(GROUPS):
        account = sb.members[n % len(sb.members)]
        ec2 = sb.client(account, "ec2")
        gid = ec2.create_security_group(GroupName=f"burst-{uuid.uuid4().hex[:8]}", Description="burst")["GroupId"]
        ec2.authorize_security_group_ingress(GroupId=gid, IpPermissions=[
            {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]},
            {"IpProtocol": "tcp", "FromPort": 443, "ToPort": 443, "IpRanges": [{"CidrIp": "10.0.0.0/8"}]}])
        groups.append((account, gid))
    events = []
    for n, (account, gid) in enumerate(groups):
        opening = cloudtrail(account, "AuthorizeSecurityGroupIngress", {"groupId": gid, "ipPermissions": {"items": [
            {"ipProtocol": "tcp", "fromPort": 22, "toPort": 22, "ipRanges": {"items": [{"cidrIp": "0.0.0.0/0"}]}}]}})
        events += [(account, opening)] * (1 + n % 3)
    forwarded = len(events)
    noise = ("CreateSecurityGroup", "CreateTags", "RunInstances", "CreateNetworkInterface", "AttachNetworkInterface")
    while len(events) < EVENTS:
        account, gid = groups[len(events) % len(groups)]
        events.append((account, cloudtrail(account, noise[len(events) % len(noise)], {"groupId": gid})))
    rng.shuffle(events)
    before = proxy.stats()
    dead_before = sum(q.get("dead_lettered", 0) for q in host_counts().values())
    url = sb.security("sqs").get_queue_url(QueueName="quell-events")["QueueUrl"]
    started = time.time()
    by_account = {}
    for account, entry in events:
        by_account.setdefault(account, []).append(entry)
    for account, entries in by_account.items():
        bus = sb.client(account, "events")
        for i in range(0, len(entries), 10):
            out = bus.put_events(Entries=entries[i:i + 10])
            if out["FailedEntryCount"]:
                sys.exit(f"{label}: EventBridge refused events: {out}")
    put = time.time() - started
    left = list(groups)
    while left:
        # Read back 200 groups to a call, so the polling takes little of the sandbox's time.
        still = []
        by_owner = {}
        for account, gid in left:
            by_owner.setdefault(account, []).append(gid)
        for account, ids in by_owner.items():
            for i in range(0, len(ids), 200):
                for g in sb.client(account, "ec2").describe_security_groups(GroupIds=ids[i:i + 200])["SecurityGroups"]:
                    perms = g["IpPermissions"]
                    if not any(p.get("FromPort") == 443 for p in perms):
                        sys.exit(f"{label}: {g['GroupId']}'s internal rule was removed")
                    if any(r["CidrIp"] == "0.0.0.0/0" for p in perms for r in p.get("IpRanges", [])):
                        still.append((account, g["GroupId"]))
        left = still
        if left and time.time() - started > 1800:
            sys.exit(f"{label}: {len(left)} groups still open after 30 minutes")
        if left:
            time.sleep(1)
    closed = time.time() - started
    while not queue_quiet(sb, url):
        time.sleep(0.5)
    drained = time.time() - started
    after = proxy.stats()
    calls = after["calls"] - before["calls"]
    # Revokes the sandbox made (a try the SDK repeated after a 500 is not a second fix).
    revokes = after["succeeded_by_call"].get("ec2:RevokeSecurityGroupIngress", 0) - before["succeeded_by_call"].get("ec2:RevokeSecurityGroupIngress", 0)
    if revokes != GROUPS:
        sys.exit(f"{label}: {revokes} revokes for {GROUPS} groups: not exactly one each")
    dead = sum(q.get("dead_lettered", 0) for q in host_counts().values()) - dead_before
    if dead:
        sys.exit(f"{label}: {dead} events dead-lettered")
    return {"events": len(events), "forwarded": forwarded, "put": put, "closed": closed, "drained": drained,
            "calls": calls, "per_event": calls / forwarded, "revokes": revokes}


def main():
    quell("sandbox", "down")
    import shutil
    shutil.rmtree(HOME, ignore_errors=True)
    quell("sandbox", "up", "--environments", ENVIRONMENTS)
    state = json.loads((HOME / "sandbox/state.json").read_text())
    members = Org(state).grow(MEMBERS)[:MEMBERS]
    quell("--sandbox", "install", "--config", str(HOME / "sandbox/quell.yaml"), "--yes")
    sb = Sandbox(state, members)
    requester = sb.security("sts").get_caller_identity()["Arn"]
    queue = sb.security("sqs").get_queue_url(QueueName="quell-requests-contain")["QueueUrl"]
    proxy = FaultProxy(ROOT, HOME, state["endpoint"])
    rng = random.Random(7)
    levels, bursts = [], []
    try:
        for label, latency in (("as the sandbox answers", None), (f"{LATENCY_MS[0]}-{LATENCY_MS[-1]} ms added to every call", LATENCY_MS)):
            proxy.set({"latency_ms": latency})
            containment_level(sb, proxy, queue, requester, 1, 2, label)  # warm every environment's sessions
            for in_flight, rounds in ROUNDS.items():
                row = containment_level(sb, proxy, queue, requester, in_flight, rounds, label)
                levels.append({"mode": label, **row})
                print(f"{label:<30} {in_flight:>3} in flight: {row['requests']} contained in {row['wall']:.1f} s, {row['throughput']:.1f}/s, "
                      f"p50 {row['p50']:.0f} ms, p90 {row['p90']:.0f}, p99 {row['p99']:.0f}, max {row['max']:.0f}; the sandbox served {row['calls_per_s']:.0f} responder calls/s", flush=True)
            b = burst(sb, proxy, label, rng)
            bursts.append({"mode": label, **b})
            print(f"{label:<30} burst: {b['events']} events, {b['forwarded']} forwarded; all {GROUPS} groups closed at {b['closed']:.1f} s, "
                  f"drained at {b['drained']:.1f} s; {b['per_event']:.1f} calls per forwarded event, {b['revokes']} revokes", flush=True)
    finally:
        proxy.close()
        quell("sandbox", "down")
    lines = [
        "# Load benchmark",
        "",
        f"Run {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC by `bench/load` on {os.cpu_count()} cores ({platform.machine()}), "
        f"sandbox moto 5.2.5, debug responder, {len(members)} member accounts, the local Lambda host running {ENVIRONMENTS} responder processes at once.",
        "Added latency comes from the fault proxy in front of the sandbox, per call of the responder, calls in flight delayed side by side.",
        "",
        "## Containment throughput and latency",
        "",
        "Rounds of N requests sent at once to the contain queue (users, roles, functions and instances over the accounts; every tenth "
        "sent twice). Latency: from the send to the record's end in the ledger (instances: both isolation phases). Every request ended "
        "succeeded, was read back contained, and every duplicate was acted on once. In flight s: the time requests were in flight "
        "(the entities are made between rounds); contained / s over it. Responder calls / s: what the sandbox served the responder "
        "then, counted at the proxy: one moto process answers every call, so past a few requests at once it is the ceiling, not Quell.",
        "",
        "| calls answered | in flight | requests | duplicates | in flight s | contained / s | p50 ms | p90 ms | p99 ms | max ms | responder calls / s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [f"| {r['mode']} | {r['in_flight']} | {r['requests']} | {r['duplicates']} | {r['wall']:.1f} | {r['throughput']:.1f} | {r['p50']:.0f} | "
              f"{r['p90']:.0f} | {r['p99']:.0f} | {r['max']:.0f} | {r['calls_per_s']:.0f} |" for r in levels]
    lines += [
        "",
        "## Event burst",
        "",
        f"A deployment opens {GROUPS} groups to the world over the accounts; each opening event reaches the member's bus one to three "
        "times, shuffled among the deployment's other CloudTrail events (which the members' rules do not forward). Closed: every group "
        "reads back without its world-open rule (its internal rule kept); drained: the events queue is empty. Calls: the responder's, "
        "counted at the proxy. Revokes: exactly one per group, nothing dead-lettered.",
        "",
        "| calls answered | events put | forwarded | put s | all closed s | drained s | responder calls / forwarded event | revokes |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [f"| {b['mode']} | {b['events']} | {b['forwarded']} | {b['put']:.1f} | {b['closed']:.1f} | {b['drained']:.1f} | {b['per_event']:.1f} | {b['revokes']} |"
              for b in bursts]
    RESULTS.write_text("\n".join(lines) + "\n")
    print(f"results written to {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
