"""checkov and parliament on a folder of rendered templates, against explained.yaml.

Exits 1 naming every finding that is not explained and every explanation no finding matches.
Usage: scan.py RENDERED_DIR
"""

import json
import os
import subprocess
import sys

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))


def checkov_findings(folder):
    out = subprocess.run(
        [os.path.join(os.path.dirname(sys.executable), "checkov"), "-d", folder,
         "--framework", "cloudformation", "-o", "json", "--quiet", "--compact", "--skip-download"],
        capture_output=True, text=True, check=False,
    )
    try:
        report = json.loads(out.stdout)
    except json.JSONDecodeError:
        sys.exit(f"checkov gave no report (exit {out.returncode}):\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")
    reports = report if isinstance(report, list) else [report]
    return [
        {"check": f["check_id"], "resource": f["resource"], "file": f["file_path"]}
        for r in reports
        for f in r.get("results", {}).get("failed_checks", [])
    ]


def parliament_findings(folder):
    paths = sorted(os.path.join(folder, f) for f in os.listdir(folder) if f.endswith(".yaml"))
    out = subprocess.run(
        [sys.executable, os.path.join(HERE, "iam_policies.py"), *paths],
        capture_output=True, text=True, check=True,
    )
    return [json.loads(line) for line in out.stdout.splitlines() if line.strip()]


def main(folder):
    with open(os.path.join(HERE, "explained.yaml")) as f:
        explained = yaml.safe_load(f)
    problems = []
    checks = checkov_findings(folder)
    policies = parliament_findings(folder)
    for found in checks:
        if not any(e["check"] == found["check"] and e["resource"] == found["resource"]
                   for e in explained["checkov"]):
            problems.append(f"checkov {found['check']} on {found['resource']} ({found['file']}) is not explained")
    for found in policies:
        if not any(e["template"] == found["template"] and e["where"] == found["where"]
                   and e["issue"] == found["issue"] for e in explained["parliament"]):
            problems.append(f"parliament {found['issue']} in {found['template']} {found['where']}: {found['detail']}")
    for e in explained["checkov"]:
        if not any(e["check"] == f["check"] and e["resource"] == f["resource"] for f in checks):
            problems.append(f"explained.yaml: checkov {e['check']} on {e['resource']} no longer occurs; remove it")
    for e in explained["parliament"]:
        if not any(e["template"] == f["template"] and e["where"] == f["where"]
                   and e["issue"] == f["issue"] for f in policies):
            problems.append(f"explained.yaml: parliament {e['issue']} in {e['template']} {e['where']} no longer occurs; remove it")
    for p in problems:
        print(p)
    print(f"{len(checks)} checkov and {len(policies)} parliament findings, {len(problems)} problem(s)")
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main(sys.argv[1])
