"""Every IAM policy in the rendered templates, through parliament.

CloudFormation intrinsics are resolved to realistic values first (a `!GetAtt X.Arn` becomes an
ARN of X's resource type), so parliament can check each action against the resource types it
can take. Prints one JSON object per finding: template, where, issue, detail.
Usage: iam_policies.py TEMPLATE...
"""

import json
import re
import sys

import yaml
from parliament import analyze_policy_string

ACCOUNT = "123456789012"
REGION = "us-east-1"
PSEUDO = {"AWS::Partition": "aws", "AWS::AccountId": ACCOUNT, "AWS::Region": REGION}

# What a `!Ref` or `!GetAtt X.Arn` of each resource type stands for, as an ARN.
ARN_OF_TYPE = {
    "AWS::DynamoDB::Table": "arn:aws:dynamodb:{r}:{a}:table/{n}",
    "AWS::SQS::Queue": "arn:aws:sqs:{r}:{a}:{n}",
    "AWS::SNS::Topic": "arn:aws:sns:{r}:{a}:{n}",
    "AWS::Events::EventBus": "arn:aws:events:{r}:{a}:event-bus/{n}",
    "AWS::Events::Rule": "arn:aws:events:{r}:{a}:rule/{n}",
    "AWS::Logs::LogGroup": "arn:aws:logs:{r}:{a}:log-group:{n}:*",
    "AWS::IAM::Role": "arn:aws:iam::{a}:role/{n}",
    "AWS::Lambda::Function": "arn:aws:lambda:{r}:{a}:function:{n}",
    "AWS::S3::Bucket": "arn:aws:s3:::{n}",
}

# Parameter values, by what they name.
PARAMETER_ARNS = {
    "OrganizationId": "o-exampleorgid",
    "ManagementAccountId": "210987654321",
    "CentralBusArn": f"arn:aws:events:{REGION}:{ACCOUNT}:event-bus/quell-central",
    "ResponderRoleArn": f"arn:aws:iam::{ACCOUNT}:role/quell-responder-execution",
    # Not an ARN: the execution role's unique id, as IAM gives it.
    "ResponderRoleId": "AROAEXAMPLEEXECUTION1",
    "ExternalIdSecretArn": f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:quell/external-ids-AbCdEf",
    # Not an ARN: the artifacts stack's bucket name.
    "ArtifactBucket": "quell-artifacts-example",
}


class Tagged:
    def __init__(self, tag, value):
        self.tag, self.value = tag, value


def construct(loader, tag_suffix, node):
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    return Tagged(tag_suffix, value)


yaml.SafeLoader.add_multi_constructor("!", construct)


def resolver(template):
    resources = template.get("Resources", {})

    def arn_of(name):
        # A template's own resource first: the artifacts stack's bucket is a parameter of the
        # security stack by the same name.
        if name in PARAMETER_ARNS and name not in resources:
            return PARAMETER_ARNS[name]
        kind = resources.get(name, {}).get("Type", "")
        props = resources.get(name, {}).get("Properties", {}) or {}
        label = next(
            (props[k] for k in ("TableName", "QueueName", "TopicName", "Name", "LogGroupName",
                                "RoleName", "FunctionName", "BucketName")
             if isinstance(props.get(k), str)),
            name.lower(),
        )
        pattern = ARN_OF_TYPE.get(kind)
        if pattern is None:
            return f"unresolved:{name}"
        return pattern.format(r=REGION, a=ACCOUNT, n=label)

    def resolve(v):
        if isinstance(v, Tagged):
            if v.tag == "Ref":
                return PSEUDO.get(v.value) or arn_of(v.value)
            if v.tag == "GetAtt":
                name, _, attr = (v.value if isinstance(v.value, str) else ".".join(v.value)).partition(".")
                return arn_of(name) if attr == "Arn" else f"{name}.{attr}"
            if v.tag == "Sub":
                text = v.value if isinstance(v.value, str) else v.value[0]

                def sub(m):
                    key = m.group(1)
                    if key in PSEUDO:
                        return PSEUDO[key]
                    name, _, attr = key.partition(".")
                    return arn_of(name) if attr in ("", "Arn") else key

                return re.sub(r"\$\{([^}]+)\}", sub, text)
            return resolve(v.value)
        if isinstance(v, dict):
            return {k: resolve(x) for k, x in v.items()}
        if isinstance(v, list):
            return [resolve(x) for x in v]
        return v

    return resolve


def policies(node, where):
    """(where, document) for every policy document under `node`."""
    if isinstance(node, dict):
        for key, value in node.items():
            here = f"{where}.{key}"
            if key in ("PolicyDocument", "AssumeRolePolicyDocument") and isinstance(value, dict):
                yield here, value
            else:
                yield from policies(value, here)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from policies(value, f"{where}[{i}]")


def main(paths):
    for path in paths:
        with open(path) as f:
            template = yaml.safe_load(f)
        resolved = resolver(template)(template)
        for where, document in policies(resolved.get("Resources", {}), "Resources"):
            trust = where.endswith("AssumeRolePolicyDocument")
            found = analyze_policy_string(json.dumps(document), ignore_private_auditors=True)
            for finding in found.findings:
                # Trust policies name principals, not resources: parliament's resource checks
                # do not apply to them.
                if trust and finding.issue in ("RESOURCE_STAR", "RESOURCE_MISMATCH", "MALFORMED"):
                    continue
                print(json.dumps({
                    "template": path.rsplit("/", 1)[-1],
                    "where": where,
                    "issue": finding.issue,
                    "detail": finding.detail,
                }, default=str))


if __name__ == "__main__":
    main(sys.argv[1:])
