//! EventBridge events from the central bus, parsed once into triggers: which resource, in which
//! account and Region, and what said so. Account and Region come from the event's own detail
//! (CloudTrail's `recipientAccountId`, Config's `awsAccountId`, the finding's `AwsAccountId`),
//! never from the envelope, which names the bus an event was forwarded to.

use serde::Serialize;
use serde_json::Value;

/// Security Hub controls about security groups open to the world.
pub const SECURITY_GROUP_CONTROLS: &[&str] =
    &["EC2.13", "EC2.14", "EC2.18", "EC2.19", "EC2.53", "EC2.54"];

/// CloudTrail calls that can open a security group.
const SECURITY_GROUP_CALLS: &[&str] =
    &["AuthorizeSecurityGroupIngress", "ModifySecurityGroupRules"];

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Resource {
    SecurityGroup { group_id: String },
}

impl Resource {
    pub fn arn(&self, partition: &str, account: &str, region: &str) -> String {
        match self {
            Resource::SecurityGroup { group_id } => {
                format!("arn:{partition}:ec2:{region}:{account}:security-group/{group_id}")
            }
        }
    }

    pub fn id(&self) -> &str {
        match self {
            Resource::SecurityGroup { group_id } => group_id,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Source {
    CloudTrail { event_name: String },
    Config { rule: String },
    SecurityHub { finding_id: String, control: String },
}

impl Source {
    pub fn describe(&self) -> String {
        match self {
            Source::CloudTrail { event_name } => format!("CloudTrail {event_name}"),
            Source::Config { rule } => format!("AWS Config rule {rule}"),
            Source::SecurityHub { control, .. } => format!("Security Hub control {control}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Trigger {
    /// The EventBridge event id: with the resource, the idempotency key.
    pub event_id: String,
    pub account: String,
    pub region: String,
    pub resource: Resource,
    pub source: Source,
}

/// What an event turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    Triggers(Vec<Trigger>),
    /// Nothing for a playbook: a call that failed, a compliant evaluation, a resolved finding.
    Nothing(String),
    /// The sweep schedule fired.
    Sweep {
        event_id: String,
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
        "Scheduled Event" if text(event, "/source") == Some("aws.events") => Ok(Parsed::Sweep { event_id }),
        other => Err(Malformed(format!(
            "detail-type {other:?} is not an event Quell handles (CloudTrail API calls, Config compliance changes, Security Hub findings)"
        ))),
    }
}

fn cloudtrail(event: &Value, event_id: String) -> Result<Parsed, Malformed> {
    let name = need(event, "/detail/eventName", "the CloudTrail event")?;
    if let Some(code) = text(event, "/detail/errorCode") {
        return Ok(Parsed::Nothing(format!(
            "{name} failed ({code}): nothing changed"
        )));
    }
    if !SECURITY_GROUP_CALLS.contains(&name) {
        return Err(Malformed(format!(
            "CloudTrail event {name} has no playbook"
        )));
    }
    let group = text(event, "/detail/requestParameters/groupId")
        .or_else(|| {
            text(
                event,
                "/detail/requestParameters/ModifySecurityGroupRulesRequest/GroupId",
            )
        })
        .ok_or_else(|| {
            Malformed(format!(
                "CloudTrail event {name} names no security group (requestParameters.groupId)"
            ))
        })?;
    Ok(Parsed::Triggers(vec![Trigger {
        event_id,
        account: need(event, "/detail/recipientAccountId", "the CloudTrail event")?.to_owned(),
        region: need(event, "/detail/awsRegion", "the CloudTrail event")?.to_owned(),
        resource: Resource::SecurityGroup {
            group_id: checked_group(group)?,
        },
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
    if kind != "AWS::EC2::SecurityGroup" {
        return Err(Malformed(format!(
            "Config rule {rule} reports a {kind}, which has no playbook"
        )));
    }
    Ok(Parsed::Triggers(vec![Trigger {
        event_id,
        account: need(event, "/detail/awsAccountId", "the Config event")?.to_owned(),
        region: need(event, "/detail/awsRegion", "the Config event")?.to_owned(),
        resource: Resource::SecurityGroup {
            group_id: checked_group(need(event, "/detail/resourceId", "the Config event")?)?,
        },
        source: Source::Config {
            rule: rule.to_owned(),
        },
    }]))
}

fn security_hub(event: &Value, event_id: &str) -> Result<Parsed, Malformed> {
    let findings = event
        .pointer("/detail/findings")
        .and_then(Value::as_array)
        .ok_or_else(|| Malformed("the Security Hub event has no detail.findings".into()))?;
    let mut triggers = Vec::new();
    let mut skipped = Vec::new();
    for f in findings {
        let id = need(f, "/Id", "a finding")?;
        let control = text(f, "/Compliance/SecurityControlId")
            .or_else(|| text(f, "/ProductFields/ControlId"))
            .unwrap_or("");
        let failed = text(f, "/Compliance/Status") == Some("FAILED");
        let active = text(f, "/RecordState").is_none_or(|s| s == "ACTIVE");
        if !SECURITY_GROUP_CONTROLS.contains(&control) || !failed || !active {
            skipped.push(format!(
                "{id}: control {control:?}, not a failed active security group finding"
            ));
            continue;
        }
        let account = need(f, "/AwsAccountId", "a finding")?;
        let region = need(f, "/Region", "a finding")?;
        let resources = f
            .pointer("/Resources")
            .and_then(Value::as_array)
            .ok_or_else(|| Malformed(format!("finding {id} has no Resources")))?;
        for r in resources
            .iter()
            .filter(|r| text(r, "/Type") == Some("AwsEc2SecurityGroup"))
        {
            let arn = need(r, "/Id", "a finding resource")?;
            let group = arn.rsplit('/').next().unwrap_or(arn);
            triggers.push(Trigger {
                event_id: event_id.to_owned(),
                account: account.to_owned(),
                region: region.to_owned(),
                resource: Resource::SecurityGroup {
                    group_id: checked_group(group)?,
                },
                source: Source::SecurityHub {
                    finding_id: id.to_owned(),
                    control: control.to_owned(),
                },
            });
        }
    }
    if triggers.is_empty() {
        return Ok(Parsed::Nothing(skipped.join("; ")));
    }
    Ok(Parsed::Triggers(triggers))
}

/// Group ids become ledger keys and API arguments: `sg-` and hex digits only.
fn checked_group(id: &str) -> Result<String, Malformed> {
    let ok = id.strip_prefix("sg-").is_some_and(|h| {
        !h.is_empty() && h.len() <= 32 && h.chars().all(|c| c.is_ascii_hexdigit())
    });
    if ok {
        Ok(id.to_owned())
    } else {
        Err(Malformed(format!(
            "{id:?} is not a security group id (sg- and hex digits)"
        )))
    }
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

    #[test]
    fn a_cloudtrail_authorize_names_the_group_in_the_callers_account_and_region() {
        let Parsed::Triggers(t) = parse(&cloudtrail_event(
            "AuthorizeSecurityGroupIngress",
            "sg-0abc12",
        ))
        .unwrap() else {
            panic!("a trigger")
        };
        assert_eq!(
            t[0].account, "111122223333",
            "from the detail, not the envelope"
        );
        assert_eq!(t[0].region, "eu-west-1");
        assert_eq!(t[0].resource.id(), "sg-0abc12");
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
            "detail": {"findings": [{"Id": "f-1", "Compliance": {"Status": "PASSED", "SecurityControlId": "EC2.19"}}]}});
        assert!(matches!(parse(&hub).unwrap(), Parsed::Nothing(_)));
    }

    #[test]
    fn config_and_security_hub_name_the_group_too() {
        let config = json!({"id": "ev-2", "detail-type": "Config Rules Compliance Change",
            "detail": {"configRuleName": "quell-restricted-ssh", "awsAccountId": "111122223333", "awsRegion": "us-east-1",
                       "resourceType": "AWS::EC2::SecurityGroup", "resourceId": "sg-0def",
                       "newEvaluationResult": {"complianceType": "NON_COMPLIANT"}}});
        let Parsed::Triggers(t) = parse(&config).unwrap() else {
            panic!()
        };
        assert_eq!(t[0].resource.id(), "sg-0def");
        let hub = json!({"id": "ev-3", "detail-type": "Security Hub Findings - Imported",
            "detail": {"findings": [{"Id": "f-1", "AwsAccountId": "111122223333", "Region": "us-east-1",
                "RecordState": "ACTIVE", "Compliance": {"Status": "FAILED", "SecurityControlId": "EC2.19"},
                "Resources": [{"Type": "AwsEc2SecurityGroup", "Id": "arn:aws:ec2:us-east-1:111122223333:security-group/sg-0123"}]}]}});
        let Parsed::Triggers(t) = parse(&hub).unwrap() else {
            panic!()
        };
        assert_eq!(t[0].resource.id(), "sg-0123");
        assert!(matches!(&t[0].source, Source::SecurityHub { control, .. } if control == "EC2.19"));
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
    }
}
