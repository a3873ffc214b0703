#!/usr/bin/env python3
"""Containment benchmark, in the local sandbox.

For each entity type it contains RUNS fresh entities and reports the medians of the responder's
handler time (its own measurement; for EC2 both phases, without the connection-tracking wait, which
is a delayed message and not handler time) and of the AWS calls it made (retries included). It runs
every type twice: with the steps of a containment running concurrently (the default), and one at a
time (QUELL_STEP_CONCURRENCY=1), to show what running independent steps at once buys. It also
reports the bootstrap binary's start-up time to its first request for work, and the package size.

Run it through bench/containment, which builds first. Results: bench/results/containment.md
(RESULTS_FILE names another file in bench/results).
RELEASE_BOOTSTRAP=path/to/bootstrap runs that build as the responder (a release build, say
`cargo build --release -p quell-responder --bin bootstrap`); the debug build otherwise.
"""

import io
import json
import os
import pathlib
import platform
import shutil
import statistics
import subprocess
import sys
import time
import uuid
import zipfile

import boto3
from botocore.config import Config

from sandbox_accounts import account_session

ROOT = pathlib.Path(__file__).resolve().parent.parent
QUELL = ROOT / "target/debug/quell"
HOME = ROOT / "bench/out/containment"
RESULTS = ROOT / "bench/results" / os.environ.get("RESULTS_FILE", "containment.md")
RUNS = int(os.environ.get("RUNS", "5"))
ENV = dict(os.environ, QUELL_HOME=str(HOME), QUELL_VENV=str(ROOT / ".quell/venv"), NO_COLOR="1")
NO_RETRIES = Config(retries={"total_max_attempts": 1})


def quell(*args):
    out = subprocess.run([str(QUELL), *args], env=ENV, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"quell {' '.join(args)} failed ({out.returncode}):\n{out.stderr}")
    return out.stdout


def sessions(state):
    admin = boto3.Session(
        aws_access_key_id=state["admin"]["access_key_id"],
        aws_secret_access_key=state["admin"]["secret_access_key"],
        region_name="us-east-1",
    )

    def in_account(account):
        s = account_session(state["endpoint"], admin, account, "us-east-1")
        return lambda service: s.client(service, endpoint_url=state["endpoint"], config=NO_RETRIES)

    return in_account


def tiny_zip():
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("bootstrap", "#!/bin/sh\n")
    return buf.getvalue()


class Workloads:
    """Creates a fresh entity of each type in one member account."""

    def __init__(self, client, account):
        self.c, self.account = client, account
        iam, ec2 = client("iam"), client("ec2")
        trust_lambda = json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}]})
        trust_ec2 = trust_lambda.replace("lambda.amazonaws.com", "ec2.amazonaws.com")
        self.fn_role = iam.create_role(RoleName="bench-fn-role", AssumeRolePolicyDocument=trust_lambda)["Role"]["Arn"]
        iam.create_role(RoleName="bench-ec2-role", AssumeRolePolicyDocument=trust_ec2)
        self.profile = iam.create_instance_profile(InstanceProfileName="bench-profile")["InstanceProfile"]["Arn"]
        iam.add_role_to_instance_profile(InstanceProfileName="bench-profile", RoleName="bench-ec2-role")
        self.sg = ec2.create_security_group(GroupName="bench-web", Description="bench")["GroupId"]

    def user(self):
        name = f"u-{uuid.uuid4().hex[:10]}"
        iam = self.c("iam")
        iam.create_user(UserName=name)
        iam.create_access_key(UserName=name)
        iam.create_login_profile(UserName=name, Password="Bench-Password-1!")
        return f"arn:aws:iam::{self.account}:user/{name}"

    def role(self):
        name = f"r-{uuid.uuid4().hex[:10]}"
        trust = json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{self.account}:root"}, "Action": "sts:AssumeRole"}]})
        self.c("iam").create_role(RoleName=name, AssumeRolePolicyDocument=trust)
        return f"arn:aws:iam::{self.account}:role/{name}"

    def function(self):
        name = f"f-{uuid.uuid4().hex[:10]}"
        self.c("lambda").create_function(FunctionName=name, Runtime="provided.al2023", Handler="bootstrap", Role=self.fn_role, Code={"ZipFile": tiny_zip()})
        return f"arn:aws:lambda:us-east-1:{self.account}:function:{name}"

    def instance(self):
        run = self.c("ec2").run_instances(ImageId="ami-0abcdef1234567890", InstanceType="t3.micro", MinCount=1, MaxCount=1, SecurityGroupIds=[self.sg], IamInstanceProfile={"Arn": self.profile})
        return f"arn:aws:ec2:us-east-1:{self.account}:instance/{run['Instances'][0]['InstanceId']}"


def invocations(request_id):
    """The responder's own measurements for one request (EC2: both phases)."""
    found = []
    for line in (HOME / "sandbox/responder.log").read_text().splitlines():
        if request_id in line and '"invocation"' in line:
            fields = json.loads(line)["fields"]
            found.append((fields["handler_ms"], fields["aws_calls"]))
    return found


def set_step_concurrency(client, value):
    lam = client("lambda")
    env = lam.get_function_configuration(FunctionName="quell-responder")["Environment"]["Variables"]
    env["QUELL_STEP_CONCURRENCY"] = str(value)
    lam.update_function_configuration(FunctionName="quell-responder", Environment={"Variables": env})


def contain(arn):
    start = time.monotonic()
    report = json.loads(quell("--sandbox", "--output", "json", "contain", arn, "--reason", "benchmark", "--yes", "--timeout", "120"))
    wall = (time.monotonic() - start) * 1000
    if report["status"] != "succeeded":
        sys.exit(f"{arn}: {report['status']}: {report['record'].get('error') or report['record'].get('rejection')}")
    request_id = report["request_id"]
    for _ in range(50):
        found = invocations(request_id)
        if len(found) >= (2 if ":instance/" in arn else 1):
            break
        time.sleep(0.1)
    # The outcome the CLI prints comes from the first invocation (EC2: its second phase is a delayed message).
    first_handler = found[0][0] if found else 0
    return sum(h for h, _ in found), sum(c for _, c in found), len(report["record"]["steps"]), wall, report["publish_to_outcome_ms"], first_handler


def fresh_sandbox(home, *install_args):
    """A new sandbox under `home` (this module's ENV must name it) with Quell installed: its state."""
    quell("sandbox", "down")
    shutil.rmtree(home, ignore_errors=True)
    quell("sandbox", "up")
    state = json.loads((home / "sandbox/state.json").read_text())
    quell("--sandbox", "install", "--config", str(home / "sandbox/quell.yaml"), "--yes", *install_args)
    return state


def package_size(binary):
    if not binary.exists():
        return None
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.write(binary, "bootstrap")
    return binary.stat().st_size, len(buf.getvalue())


def main():
    release_bin = os.environ.get("RELEASE_BOOTSTRAP")
    build = "release" if release_bin else "debug"
    state = fresh_sandbox(HOME, *(["--bootstrap", release_bin] if release_bin else []))
    client = sessions(state)
    member = state["member_accounts"][0]
    work = Workloads(client(member), member)
    security = client(state["security_account"])

    rows = []
    for label, concurrency in (("concurrent steps", 0), ("one step at a time", 1)):
        set_step_concurrency(security, concurrency)
        time.sleep(5)  # the host picks up the new configuration and starts a new execution environment
        for kind in ("user", "role", "function", "instance"):
            samples = [contain(getattr(work, kind)()) for _ in range(RUNS)]
            rows.append({
                "mode": label,
                "kind": kind,
                "steps": samples[0][2],
                "handler_ms": statistics.median(s[0] for s in samples),
                "aws_calls": statistics.median(s[1] for s in samples),
                "cli_ms": statistics.median(s[3] for s in samples),
                "outcome_ms": statistics.median(s[4] for s in samples),
                "above_ms": statistics.median(s[4] - s[5] for s in samples),
            })
            print(f"{label:<20} {kind:<9} steps {rows[-1]['steps']:>2}  handler {rows[-1]['handler_ms']:>6.0f} ms  AWS calls {rows[-1]['aws_calls']:>4.0f}  quell contain {rows[-1]['cli_ms']:>6.0f} ms  publish to outcome {rows[-1]['outcome_ms']:>5.0f} ms ({rows[-1]['above_ms']:.0f} above the handler)", flush=True)

    startups = [float(line.split("startup_ms=")[1].split()[0].strip('"')) for line in (HOME / "sandbox/host.log").read_text().splitlines() if "startup_ms=" in line]
    debug = package_size(ROOT / "target/debug/bootstrap")
    release = package_size(pathlib.Path(os.environ.get("RELEASE_BOOTSTRAP", ROOT / "target/release/bootstrap")))
    quell("sandbox", "down")

    lines = [
        "# Containment benchmark",
        "",
        f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} by `bench/containment` on {os.cpu_count()} cores ({platform.machine()}), "
        f"sandbox moto 5.2.5, responder {build} build, {RUNS} fresh entities per row, medians.",
        "Handler time and AWS calls are the responder's own figures (calls counted by an SDK interceptor, retries included; "
        "they include the ledger, audit, ExternalId secret and role assumption). EC2: both phases, without the connection-tracking wait.",
        "",
        "Publish to outcome: from the CLI's publish returning to the outcome read from the ledger (the CLI's own "
        "measure, `publish_to_outcome_ms` in `--output json`); above the handler: that less the handler time of the "
        "invocation that produced the outcome. The whole command's wall time adds the process start, the caller and "
        "deployment look-ups and the publish.",
        "",
        "| steps run | entity | steps | handler ms | AWS calls | publish to outcome ms | above the handler ms | `quell contain` wall ms |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [f"| {r['mode']} | {r['kind']} | {r['steps']} | {r['handler_ms']:.0f} | {r['aws_calls']:.0f} | {r['outcome_ms']:.0f} | {r['above_ms']:.0f} | {r['cli_ms']:.0f} |" for r in rows]
    lines += ["", f"bootstrap start-up to its first request for work ({build} build, {len(startups)} starts): median {statistics.median(startups):.1f} ms" if startups else ""]
    if debug:
        lines.append(f"package: debug bootstrap {debug[0] / 1e6:.1f} MB, zipped {debug[1] / 1e6:.1f} MB")
    if release:
        lines.append(f"package: release bootstrap {release[0] / 1e6:.1f} MB, zipped {release[1] / 1e6:.1f} MB")
    RESULTS.write_text("\n".join(lines) + "\n")
    print("\n".join(lines[-3:]))
    print(f"results written to {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
