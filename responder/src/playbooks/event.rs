//! EventBridge events from the central bus, parsed once into triggers: which resource, in which
//! account and Region, and what said so. Account and Region come from the event's own detail
//! (CloudTrail's `recipientAccountId`, Config's `awsAccountId`, the finding's `AwsAccountId`),
//! never from the envelope, which names the bus an event was forwarded to.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Security Hub controls about security groups open to the world.
pub const SECURITY_GROUP_CONTROLS: &[&str] =
    &["EC2.13", "EC2.14", "EC2.18", "EC2.19", "EC2.53", "EC2.54"];

/// Security Hub controls about buckets open to the public.
pub const BUCKET_CONTROLS: &[&str] = &["S3.2", "S3.3", "S3.8"];

/// The custom actions `quell install` creates in Security Hub: (id, name, description).
pub const CONTAIN_ACTION: (&str, &str, &str) = (
    "QuellContain",
    "Quell: contain",
    "Contain the finding's IAM user or role, Lambda function or EC2 instance",
);
pub const REMEDIATE_ACTION: (&str, &str, &str) = (
    "QuellRemediate",
    "Quell: remediate",
    "Fix the finding's security group, S3 bucket or EBS snapshot",
);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Resource {
    SecurityGroup { group_id: String },
    Bucket { name: String },
    Snapshot { snapshot_id: String },
}

impl Resource {
    pub fn arn(&self, partition: &str, account: &str, region: &str) -> String {
        match self {
            Resource::SecurityGroup { group_id } => {
                format!("arn:{partition}:ec2:{region}:{account}:security-group/{group_id}")
            }
            Resource::Bucket { name } => format!("arn:{partition}:s3:::{name}"),
            Resource::Snapshot { snapshot_id } => {
                format!("arn:{partition}:ec2:{region}::snapshot/{snapshot_id}")
            }
        }
    }

    pub fn id(&self) -> &str {
        match self {
            Resource::SecurityGroup { group_id } => group_id,
            Resource::Bucket { name } => name,
            Resource::Snapshot { snapshot_id } => snapshot_id,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Resource::SecurityGroup { .. } => "security_group",
            Resource::Bucket { .. } => "s3_bucket",
            Resource::Snapshot { .. } => "ebs_snapshot",
        }
    }
}

/// The finding an event came from: what `BatchUpdateFindings` needs to put a note on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FindingRef {
    pub id: String,
    pub product_arn: String,
    /// Where the finding lives: finding updates are made there.
    pub region: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Source {
    CloudTrail {
        event_name: String,
    },
    Config {
        rule: String,
    },
    SecurityHub {
        finding: FindingRef,
        control: String,
    },
    /// An analyst chose "Quell: remediate" on the finding: acted on whatever the playbook's mode.
    SecurityHubAction {
        finding: FindingRef,
        action: String,
    },
    /// The organization-wide sweep found it.
    Sweep {
        sweep: String,
    },
}

impl Source {
    pub fn describe(&self) -> String {
        match self {
            Source::CloudTrail { event_name } => format!("CloudTrail {event_name}"),
            Source::Config { rule } => format!("AWS Config rule {rule}"),
            Source::SecurityHub { control, .. } => format!("Security Hub control {control}"),
            Source::SecurityHubAction { action, .. } => {
                format!("Security Hub custom action {action:?}")
            }
            Source::Sweep { sweep } => format!("sweep {sweep}"),
        }
    }

    pub fn finding(&self) -> Option<&FindingRef> {
        match self {
            Source::SecurityHub { finding, .. } | Source::SecurityHubAction { finding, .. } => {
                Some(finding)
            }
            Source::CloudTrail { .. } | Source::Config { .. } | Source::Sweep { .. } => None,
        }
    }

    /// A person asked for this fix (a custom action), rather than an event reporting a change.
    pub fn is_request(&self) -> bool {
        matches!(self, Source::SecurityHubAction { .. })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trigger {
    /// The EventBridge event id: with the resource, the idempotency key.
    pub event_id: String,
    pub account: String,
    pub region: String,
    pub resource: Resource,
    pub source: Source,
}

/// "Quell: contain" on a finding: the entity to contain, as an ARN the containment path checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainRequest {
    pub event_id: String,
    pub entity: String,
    pub finding: FindingRef,
}

/// What an event turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    Triggers(Vec<Trigger>),
    Contain(Vec<ContainRequest>),
    /// Nothing for a playbook: a call that failed, a compliant evaluation, a resolved finding.
    Nothing(String),
    /// The sweep schedule fired.
    Sweep {
        event_id: String,
    },
    /// A Config rule judged a whole account and Region (EBS_SNAPSHOT_PUBLIC_RESTORABLE_CHECK):
    /// the resources of `kind` there are checked one by one.
    Place {
        event_id: String,
        account: String,
        region: String,
        kind: &'static str,
        rule: String,
    },
}

/// An event that cannot be read: reported, never acted on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Malformed(pub String);

fn text<'a>(v: &'a Value, pointer: &str) -> Option<&'a str> {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

fn need<'a>(v: &'a Value, pointer: &str, what: &str) -> Result<&'a str, Malformed> {
    text(v, pointer).ok_or_else(|| Malformed(format!("{what} has no {pointer}")))
}

pub fn parse(event: &Value) -> Result<Parsed, Malformed> {
    let detail_type = need(event, "/detail-type", "the event")?;
    let event_id = need(event, "/id", "the event")?.to_owned();
    match detail_type {
        "AWS API Call via CloudTrail" => cloudtrail(event, event_id),
        "Config Rules Compliance Change" => config(event, event_id),
        "Security Hub Findings - Imported" => security_hub(event, &event_id),
        "Security Hub Findings - Custom Action" => custom_action(event, &event_id),
        "Scheduled Event" if text(event, "/source") == Some("aws.events") => Ok(Parsed::Sweep { event_id }),
        other => Err(Malformed(format!(
            "detail-type {other:?} is not an event Quell handles (CloudTrail API calls, Config compliance changes, Security Hub findings and custom actions)"
        ))),
    }
}

/// CloudTrail calls and where each names the resource it changed.
fn cloudtrail_resource(name: &str, event: &Value) -> Result<Option<Resource>, Malformed> {
    let named = |pointers: &[&str], what: &str| {
        pointers
            .iter()
            .find_map(|p| text(event, p))
            .ok_or_else(|| Malformed(format!("CloudTrail event {name} names no {what}")))
    };
    Ok(Some(match name {
        "AuthorizeSecurityGroupIngress" | "ModifySecurityGroupRules" => Resource::SecurityGroup {
            group_id: checked_group(named(
                &[
                    "/detail/requestParameters/groupId",
                    "/detail/requestParameters/ModifySecurityGroupRulesRequest/GroupId",
                ],
                "security group (requestParameters.groupId)",
            )?)?,
        },
        "PutBucketAcl"
        | "PutBucketPolicy"
        | "DeleteBucketPublicAccessBlock"
        | "PutBucketPublicAccessBlock" => Resource::Bucket {
            name: checked_bucket(named(
                &["/detail/requestParameters/bucketName"],
                "bucket (requestParameters.bucketName)",
            )?)?,
        },
        "ModifySnapshotAttribute" => Resource::Snapshot {
            snapshot_id: checked_snapshot(named(
                &["/detail/requestParameters/snapshotId"],
                "snapshot (requestParameters.snapshotId)",
            )?)?,
        },
        "CreateSnapshot" | "CopySnapshot" => Resource::Snapshot {
            snapshot_id: checked_snapshot(named(
                &["/detail/responseElements/snapshotId"],
                "snapshot (responseElements.snapshotId)",
            )?)?,
        },
        // Forwarded because the rule is coarse; these never open anything.
        "AuthorizeSecurityGroupEgress" | "DeleteBucketPolicy" => return Ok(None),
        _ => {
            return Err(Malformed(format!(
                "CloudTrail event {name} has no playbook"
            )))
        }
    }))
}

fn cloudtrail(event: &Value, event_id: String) -> Result<Parsed, Malformed> {
    let name = need(event, "/detail/eventName", "the CloudTrail event")?;
    if let Some(code) = text(event, "/detail/errorCode") {
        return Ok(Parsed::Nothing(format!(
            "{name} failed ({code}): nothing changed"
        )));
    }
    let Some(resource) = cloudtrail_resource(name, event)? else {
        return Ok(Parsed::Nothing(format!("{name} cannot expose anything")));
    };
    Ok(Parsed::Triggers(vec![Trigger {
        event_id,
        account: checked_account(need(
            event,
            "/detail/recipientAccountId",
            "the CloudTrail event",
        )?)?,
        region: need(event, "/detail/awsRegion", "the CloudTrail event")?.to_owned(),
        resource,
        source: Source::CloudTrail {
            event_name: name.to_owned(),
        },
    }]))
}

fn config(event: &Value, event_id: String) -> Result<Parsed, Malformed> {
    let rule = need(event, "/detail/configRuleName", "the Config event")?;
    let compliance = text(event, "/detail/newEvaluationResult/complianceType").unwrap_or("");
    if compliance != "NON_COMPLIANT" {
        return Ok(Parsed::Nothing(format!(
            "{rule}: {compliance}, nothing to fix"
        )));
    }
    let kind = need(event, "/detail/resourceType", "the Config event")?;
    let id = need(event, "/detail/resourceId", "the Config event")?;
    let resource = match kind {
        "AWS::EC2::SecurityGroup" => Resource::SecurityGroup {
            group_id: checked_group(id)?,
        },
        "AWS::S3::Bucket" => Resource::Bucket {
            name: checked_bucket(id)?,
        },
        "AWS::::Account" => {
            // EBS_SNAPSHOT_PUBLIC_RESTORABLE_CHECK judges the account, not a snapshot.
            return Ok(Parsed::Place {
                event_id,
                account: checked_account(id)?,
                region: need(event, "/detail/awsRegion", "the Config event")?.to_owned(),
                kind: "ebs_snapshot",
                rule: rule.to_owned(),
            });
        }
        _ => {
            return Err(Malformed(format!(
                "Config rule {rule} reports a {kind}, which has no playbook"
            )))
        }
    };
    Ok(Parsed::Triggers(vec![Trigger {
        event_id,
        account: checked_account(need(event, "/detail/awsAccountId", "the Config event")?)?,
        region: need(event, "/detail/awsRegion", "the Config event")?.to_owned(),
        resource,
        source: Source::Config {
            rule: rule.to_owned(),
        },
    }]))
}

fn findings(event: &Value) -> Result<&Vec<Value>, Malformed> {
    event
        .pointer("/detail/findings")
        .and_then(Value::as_array)
        .filter(|f| !f.is_empty())
        .ok_or_else(|| Malformed("the Security Hub event has no detail.findings".into()))
}

fn finding_ref(f: &Value) -> Result<FindingRef, Malformed> {
    Ok(FindingRef {
        id: need(f, "/Id", "a finding")?.to_owned(),
        product_arn: need(f, "/ProductArn", "a finding")?.to_owned(),
        region: need(f, "/Region", "a finding")?.to_owned(),
    })
}

fn finding_resources(f: &Value) -> Result<&Vec<Value>, Malformed> {
    f.pointer("/Resources")
        .and_then(Value::as_array)
        .ok_or_else(|| {
            Malformed(format!(
                "finding {} has no Resources",
                text(f, "/Id").unwrap_or("?")
            ))
        })
}

/// A finding resource a playbook fixes, or `None` when it is of another kind.
fn playbook_resource(r: &Value) -> Result<Option<Resource>, Malformed> {
    let id = need(r, "/Id", "a finding resource")?;
    let last = |sep: char| id.rsplit(sep).next().unwrap_or(id);
    Ok(match text(r, "/Type").unwrap_or("") {
        "AwsEc2SecurityGroup" => Some(Resource::SecurityGroup {
            group_id: checked_group(last('/'))?,
        }),
        "AwsS3Bucket" => Some(Resource::Bucket {
            name: checked_bucket(id.strip_prefix("arn:").map_or(id, |_| last(':')))?,
        }),
        _ if id.contains(":snapshot/snap-") => Some(Resource::Snapshot {
            snapshot_id: checked_snapshot(last('/'))?,
        }),
        _ => None,
    })
}

fn security_hub(event: &Value, event_id: &str) -> Result<Parsed, Malformed> {
    let mut triggers = Vec::new();
    let mut skipped = Vec::new();
    for f in findings(event)? {
        let id = need(f, "/Id", "a finding")?;
        let control = text(f, "/Compliance/SecurityControlId")
            .or_else(|| text(f, "/ProductFields/ControlId"))
            .unwrap_or("");
        let failed = text(f, "/Compliance/Status") == Some("FAILED");
        let active = text(f, "/RecordState").is_none_or(|s| s == "ACTIVE");
        let covered =
            SECURITY_GROUP_CONTROLS.contains(&control) || BUCKET_CONTROLS.contains(&control);
        if !covered || !failed || !active {
            skipped.push(format!(
                "{id}: control {control:?}, not a failed active finding of a covered control"
            ));
            continue;
        }
        let finding = finding_ref(f)?;
        let account = checked_account(need(f, "/AwsAccountId", "a finding")?)?;
        let region = need(f, "/Region", "a finding")?;
        for r in finding_resources(f)? {
            if let Some(resource) = playbook_resource(r)? {
                triggers.push(Trigger {
                    event_id: event_id.to_owned(),
                    account: account.clone(),
                    region: text(r, "/Region").unwrap_or(region).to_owned(),
                    resource,
                    source: Source::SecurityHub {
                        finding: finding.clone(),
                        control: control.to_owned(),
                    },
                });
            }
        }
    }
    if triggers.is_empty() {
        return Ok(Parsed::Nothing(skipped.join("; ")));
    }
    Ok(Parsed::Triggers(triggers))
}

fn custom_action(event: &Value, event_id: &str) -> Result<Parsed, Malformed> {
    let action_arn = event
        .pointer("/resources/0")
        .and_then(Value::as_str)
        .ok_or_else(|| Malformed("the custom action event names no action (resources)".into()))?;
    let action_id = action_arn.rsplit('/').next().unwrap_or(action_arn);
    let contain = if action_id == CONTAIN_ACTION.0 {
        true
    } else if action_id == REMEDIATE_ACTION.0 {
        false
    } else {
        return Err(Malformed(format!(
            "custom action {action_arn} is not one of Quell's ({}, {})",
            CONTAIN_ACTION.0, REMEDIATE_ACTION.0
        )));
    };
    let action_name = text(event, "/detail/actionName").unwrap_or(action_id);
    let mut triggers = Vec::new();
    let mut requests = Vec::new();
    for f in findings(event)? {
        let finding = finding_ref(f)?;
        let account = checked_account(need(f, "/AwsAccountId", "a finding")?)?;
        let region = need(f, "/Region", "a finding")?;
        let before = triggers.len() + requests.len();
        for r in finding_resources(f)? {
            if contain {
                if let Some(entity) = containable(r, &account)? {
                    requests.push(ContainRequest {
                        event_id: event_id.to_owned(),
                        entity,
                        finding: finding.clone(),
                    });
                }
            } else if let Some(resource) = playbook_resource(r)? {
                triggers.push(Trigger {
                    event_id: event_id.to_owned(),
                    account: account.clone(),
                    region: text(r, "/Region").unwrap_or(region).to_owned(),
                    resource,
                    source: Source::SecurityHubAction {
                        finding: finding.clone(),
                        action: action_name.to_owned(),
                    },
                });
            }
        }
        if triggers.len() + requests.len() == before {
            let wanted = if contain {
                "an IAM user or role, a Lambda function or an EC2 instance"
            } else {
                "a security group, an S3 bucket or an EBS snapshot"
            };
            return Err(Malformed(format!(
                "finding {} names no resource {action_name:?} can act on ({wanted})",
                finding.id
            )));
        }
    }
    Ok(if contain {
        Parsed::Contain(requests)
    } else {
        Parsed::Triggers(triggers)
    })
}

/// The ARN to contain for a finding resource, or `None` for a kind Quell does not contain. The
/// containment path parses and checks the ARN like any other request's.
fn containable(r: &Value, account: &str) -> Result<Option<String>, Malformed> {
    let id = need(r, "/Id", "a finding resource")?;
    let partition = text(r, "/Partition").unwrap_or("aws");
    Ok(match text(r, "/Type").unwrap_or("") {
        "AwsIamUser" | "AwsIamRole" | "AwsLambdaFunction" | "AwsEc2Instance" => Some(id.to_owned()),
        // GuardDuty's credential findings name the key's owner, not an ARN.
        "AwsIamAccessKey" => {
            let name = need(
                r,
                "/Details/AwsIamAccessKey/PrincipalName",
                "an access key resource",
            )?;
            match text(r, "/Details/AwsIamAccessKey/PrincipalType").unwrap_or("") {
                "IAMUser" => Some(format!("arn:{partition}:iam::{account}:user/{name}")),
                "AssumedRole" | "Role" => Some(format!(
                    "arn:{partition}:iam::{account}:role/{}",
                    name.split('/').next().unwrap_or(name)
                )),
                _ => None,
            }
        }
        _ => None,
    })
}

fn checked(id: &str, ok: bool, what: &str) -> Result<String, Malformed> {
    if ok {
        Ok(id.to_owned())
    } else {
        Err(Malformed(format!("{id:?} is not {what}")))
    }
}

fn hex_id(id: &str, prefix: &str) -> bool {
    id.strip_prefix(prefix)
        .is_some_and(|h| !h.is_empty() && h.len() <= 32 && h.chars().all(|c| c.is_ascii_hexdigit()))
}

/// Ids become ledger keys and API arguments: only the characters each kind of id can have.
fn checked_group(id: &str) -> Result<String, Malformed> {
    checked(
        id,
        hex_id(id, "sg-"),
        "a security group id (sg- and hex digits)",
    )
}

fn checked_snapshot(id: &str) -> Result<String, Malformed> {
    checked(
        id,
        hex_id(id, "snap-"),
        "a snapshot id (snap- and hex digits)",
    )
}

fn checked_bucket(name: &str) -> Result<String, Malformed> {
    let ok = (3..=63).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    checked(name, ok, "an S3 bucket name")
}

fn checked_account(id: &str) -> Result<String, Malformed> {
    checked(
        id,
        id.len() == 12 && id.chars().all(|c| c.is_ascii_digit()),
        "an AWS account id (12 digits)",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cloudtrail_event(name: &str, group: &str) -> Value {
        json!({
            "id": "ev-1", "detail-type": "AWS API Call via CloudTrail", "source": "aws.ec2",
            "account": "999999999999", "region": "us-east-1",
            "detail": {"eventSource": "ec2.amazonaws.com", "eventName": name,
                       "awsRegion": "eu-west-1", "recipientAccountId": "111122223333",
                       "requestParameters": {"groupId": group}}
        })
    }

    fn triggers(e: &Value) -> Vec<Trigger> {
        match parse(e).unwrap() {
            Parsed::Triggers(t) => t,
            other => panic!("expected triggers, got {other:?}"),
        }
    }

    #[test]
    fn a_cloudtrail_authorize_names_the_group_in_the_callers_account_and_region() {
        let t = triggers(&cloudtrail_event(
            "AuthorizeSecurityGroupIngress",
            "sg-0abc12",
        ));
        assert_eq!(
            t[0].account, "111122223333",
            "from the detail, not the envelope"
        );
        assert_eq!(t[0].region, "eu-west-1");
        assert_eq!(t[0].resource.id(), "sg-0abc12");
    }

    #[test]
    fn bucket_and_snapshot_calls_name_their_resource() {
        let mut e = cloudtrail_event("PutBucketPolicy", "sg-01");
        e["detail"]["requestParameters"] = json!({"bucketName": "team-reports.2026"});
        assert_eq!(
            triggers(&e)[0].resource,
            Resource::Bucket {
                name: "team-reports.2026".into()
            }
        );
        e["detail"]["eventName"] = json!("ModifySnapshotAttribute");
        e["detail"]["requestParameters"] =
            json!({"snapshotId": "snap-0f00", "attributeType": "CREATE_VOLUME_PERMISSION"});
        assert_eq!(triggers(&e)[0].resource.id(), "snap-0f00");
        e["detail"]["eventName"] = json!("CreateSnapshot");
        e["detail"]["responseElements"] = json!({"snapshotId": "snap-0bee"});
        assert_eq!(triggers(&e)[0].resource.kind(), "ebs_snapshot");
        e["detail"]["eventName"] = json!("AuthorizeSecurityGroupEgress");
        assert!(matches!(parse(&e).unwrap(), Parsed::Nothing(_)));
    }

    #[test]
    fn a_failed_call_a_compliant_evaluation_and_a_passed_finding_are_nothing_to_do() {
        let mut e = cloudtrail_event("AuthorizeSecurityGroupIngress", "sg-0abc12");
        e["detail"]["errorCode"] = json!("UnauthorizedOperation");
        assert!(matches!(parse(&e).unwrap(), Parsed::Nothing(_)));
        let config = json!({"id": "ev-2", "detail-type": "Config Rules Compliance Change",
            "detail": {"configRuleName": "quell-restricted-ssh", "newEvaluationResult": {"complianceType": "COMPLIANT"}}});
        assert!(matches!(parse(&config).unwrap(), Parsed::Nothing(_)));
        let hub = json!({"id": "ev-3", "detail-type": "Security Hub Findings - Imported",
            "detail": {"findings": [{"Id": "f-1", "ProductArn": "arn:aws:securityhub:us-east-1::product/aws/securityhub",
                "Compliance": {"Status": "PASSED", "SecurityControlId": "EC2.19"}}]}});
        assert!(matches!(parse(&hub).unwrap(), Parsed::Nothing(_)));
    }

    fn finding(kind: &str, id: &str, control: &str) -> Value {
        json!({"Id": "f-1", "ProductArn": "arn:aws:securityhub:us-east-1::product/aws/securityhub",
            "AwsAccountId": "111122223333", "Region": "us-east-1", "RecordState": "ACTIVE",
            "Compliance": {"Status": "FAILED", "SecurityControlId": control},
            "Resources": [{"Type": kind, "Id": id}]})
    }

    #[test]
    fn config_and_security_hub_name_the_resource_too() {
        let config = json!({"id": "ev-2", "detail-type": "Config Rules Compliance Change",
            "detail": {"configRuleName": "quell-s3-bucket-public-read-prohibited", "awsAccountId": "111122223333", "awsRegion": "us-east-1",
                       "resourceType": "AWS::S3::Bucket", "resourceId": "open-bucket",
                       "newEvaluationResult": {"complianceType": "NON_COMPLIANT"}}});
        assert_eq!(triggers(&config)[0].resource.id(), "open-bucket");
        let hub = json!({"id": "ev-3", "detail-type": "Security Hub Findings - Imported",
            "detail": {"findings": [finding("AwsEc2SecurityGroup", "arn:aws:ec2:us-east-1:111122223333:security-group/sg-0123", "EC2.19")]}});
        let t = triggers(&hub);
        assert_eq!(t[0].resource.id(), "sg-0123");
        assert!(
            matches!(&t[0].source, Source::SecurityHub { control, finding } if control == "EC2.19" && finding.id == "f-1")
        );
        let hub = json!({"id": "ev-4", "detail-type": "Security Hub Findings - Imported",
            "detail": {"findings": [finding("AwsS3Bucket", "arn:aws:s3:::open-bucket", "S3.2")]}});
        assert_eq!(
            triggers(&hub)[0].resource,
            Resource::Bucket {
                name: "open-bucket".into()
            }
        );
    }

    #[test]
    fn an_account_level_verdict_checks_that_accounts_snapshots() {
        let config = json!({"id": "ev-6", "detail-type": "Config Rules Compliance Change",
            "detail": {"configRuleName": "quell-ebs-snapshot-public-restorable", "awsAccountId": "111122223333",
                       "awsRegion": "eu-west-1", "resourceType": "AWS::::Account", "resourceId": "111122223333",
                       "newEvaluationResult": {"complianceType": "NON_COMPLIANT"}}});
        let Parsed::Place {
            account,
            region,
            kind,
            ..
        } = parse(&config).unwrap()
        else {
            panic!("a place to check")
        };
        assert_eq!(
            (account.as_str(), region.as_str(), kind),
            ("111122223333", "eu-west-1", "ebs_snapshot")
        );
    }

    fn action_event(action: &str, findings: &[Value]) -> Value {
        json!({"id": "ev-5", "detail-type": "Security Hub Findings - Custom Action", "source": "aws.securityhub",
            "resources": [format!("arn:aws:securityhub:us-east-1:999999999999:action/custom/{action}")],
            "detail": {"actionName": action, "findings": findings}})
    }

    #[test]
    fn custom_actions_contain_entities_and_remediate_resources_of_each_finding() {
        let mut key = finding("AwsIamAccessKey", "AKIAEXAMPLE", "");
        key["Resources"][0]["Details"] =
            json!({"AwsIamAccessKey": {"PrincipalName": "alice", "PrincipalType": "IAMUser"}});
        let role = finding("AwsIamRole", "arn:aws:iam::111122223333:role/app", "");
        let Parsed::Contain(c) = parse(&action_event("QuellContain", &[key, role])).unwrap() else {
            panic!("a containment")
        };
        assert_eq!(
            c.iter().map(|r| r.entity.as_str()).collect::<Vec<_>>(),
            [
                "arn:aws:iam::111122223333:user/alice",
                "arn:aws:iam::111122223333:role/app"
            ]
        );
        let snap = finding(
            "Other",
            "arn:aws:ec2:us-east-1:111122223333:snapshot/snap-0abc",
            "",
        );
        let t = triggers(&action_event("QuellRemediate", &[snap]));
        assert_eq!(t[0].resource.id(), "snap-0abc");
        assert!(t[0].source.is_request());
    }

    #[test]
    fn malformed_events_are_refused_with_what_is_wrong() {
        let e = cloudtrail_event("AuthorizeSecurityGroupIngress", "not-a-group; drop");
        assert!(parse(&e)
            .unwrap_err()
            .0
            .contains("is not a security group id"));
        let mut e = cloudtrail_event("AuthorizeSecurityGroupIngress", "sg-01");
        e["detail"]["requestParameters"] = json!({});
        assert!(parse(&e).unwrap_err().0.contains("names no security group"));
        let mut e = cloudtrail_event("PutBucketAcl", "sg-01");
        e["detail"]["requestParameters"] = json!({"bucketName": "Bad_Bucket/../x"});
        assert!(parse(&e).unwrap_err().0.contains("not an S3 bucket name"));
        assert!(parse(&json!({"id": "x", "detail-type": "Something Else"}))
            .unwrap_err()
            .0
            .contains("not an event Quell handles"));
        assert!(
            parse(&json!({"detail-type": "AWS API Call via CloudTrail"}))
                .unwrap_err()
                .0
                .contains("/id")
        );
        let other = action_event("SomeoneElses", &[finding("AwsS3Bucket", "b", "")]);
        assert!(parse(&other).unwrap_err().0.contains("not one of Quell's"));
        let nothing = action_event(
            "QuellContain",
            &[finding("AwsS3Bucket", "arn:aws:s3:::b-1", "")],
        );
        assert!(parse(&nothing).unwrap_err().0.contains("names no resource"));
        let empty = action_event("QuellRemediate", &[]);
        assert!(parse(&empty).unwrap_err().0.contains("no detail.findings"));
    }
}
