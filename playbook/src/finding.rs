//! Findings from GuardDuty, Inspector and Security Hub, in one shape conditions can read:
//! `finding.severity` is 0-10 whoever reported it, and a GuardDuty or Inspector finding that also
//! arrives through Security Hub keeps its native ARN, so that both copies are one finding.

use serde::Serialize;
use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Finding {
    /// The native finding's ARN (GuardDuty's or Inspector's, also when Security Hub delivered it).
    pub arn: String,
    pub id: String,
    /// GuardDuty's finding type, Inspector's type, or the first of Security Hub's types.
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    /// 0 to 10.
    pub severity: f64,
    /// GuardDuty, Inspector, or the Security Hub product name (Prowler, Security Hub, ...).
    pub product: String,
    pub account: String,
    pub region: String,
    pub resource_type: String,
    pub resource_id: String,
    /// A GuardDuty sample finding (generated on request, describing nothing real).
    pub sample: bool,
    /// Inspector's `fixAvailable`: YES, NO or PARTIAL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix_available: Option<String>,
    /// ACTIVE, SUPPRESSED or CLOSED (Inspector); Security Hub's record state.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Security Hub's workflow status: NEW, NOTIFIED, SUPPRESSED or RESOLVED.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workflow: Option<String>,
}

fn text(v: &Value, pointer: &str) -> String {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

fn opt(v: &Value, pointer: &str) -> Option<String> {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .map(str::to_owned)
}

/// Inspector's and Security Hub's labels, as numbers.
fn label_severity(label: &str) -> f64 {
    match label {
        "CRITICAL" => 9.0,
        "HIGH" => 7.0,
        "MEDIUM" => 4.0,
        "LOW" => 1.0,
        _ => 0.0,
    }
}

/// The findings an EventBridge event carries (Security Hub's imported events carry several).
/// Events of other kinds carry none.
pub fn findings(event: &Value) -> Vec<Finding> {
    let source = event["source"].as_str().unwrap_or_default();
    let detail_type = event["detail-type"].as_str().unwrap_or_default();
    match (source, detail_type) {
        ("aws.guardduty", "GuardDuty Finding") => vec![guardduty(&event["detail"])],
        ("aws.inspector2", "Inspector2 Finding") => vec![inspector(&event["detail"])],
        ("aws.securityhub", t) if t.starts_with("Security Hub Findings") => event["detail"]
            ["findings"]
            .as_array()
            .map(|list| list.iter().map(security_hub).collect())
            .unwrap_or_default(),
        _ => Vec::new(),
    }
}

fn guardduty(d: &Value) -> Finding {
    let resource_type = text(d, "/resource/resourceType");
    let resource_id = match resource_type.as_str() {
        "Instance" => text(d, "/resource/instanceDetails/instanceId"),
        "AccessKey" => text(d, "/resource/accessKeyDetails/accessKeyId"),
        "S3Bucket" => text(d, "/resource/s3BucketDetails/0/name"),
        "Lambda" => text(d, "/resource/lambdaDetails/functionArn"),
        _ => String::new(),
    };
    Finding {
        arn: text(d, "/arn"),
        id: text(d, "/id"),
        kind: text(d, "/type"),
        title: text(d, "/title"),
        severity: d["severity"].as_f64().unwrap_or(0.0),
        product: "GuardDuty".into(),
        account: text(d, "/accountId"),
        region: text(d, "/region"),
        resource_type,
        resource_id,
        sample: d
            .pointer("/service/additionalInfo/sample")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        fix_available: None,
        status: d
            .pointer("/service/archived")
            .and_then(Value::as_bool)
            .map(|a| if a { "ARCHIVED" } else { "ACTIVE" }.to_owned()),
        workflow: None,
    }
}

fn inspector(d: &Value) -> Finding {
    let severity = d["inspectorScore"]
        .as_f64()
        .unwrap_or_else(|| label_severity(d["severity"].as_str().unwrap_or_default()));
    Finding {
        arn: text(d, "/findingArn"),
        id: text(d, "/findingArn"),
        kind: text(d, "/type"),
        title: text(d, "/title"),
        severity,
        product: "Inspector".into(),
        account: text(d, "/awsAccountId"),
        region: text(d, "/resources/0/region"),
        resource_type: text(d, "/resources/0/type"),
        resource_id: text(d, "/resources/0/id"),
        sample: false,
        fix_available: opt(d, "/fixAvailable"),
        status: opt(d, "/status"),
        workflow: None,
    }
}

fn security_hub(f: &Value) -> Finding {
    let product = opt(f, "/ProductName")
        .unwrap_or_else(|| text(f, "/ProductFields/aws~1securityhub~1ProductName"));
    // GuardDuty and Inspector put their own ARN among the product fields.
    let native = match product.as_str() {
        "GuardDuty" => opt(f, "/ProductFields/aws~1guardduty~1service~1arn")
            .or_else(|| opt(f, "/ProductFields/aws~1guardduty~1arn")),
        "Inspector" => opt(f, "/ProductFields/aws~1inspector2~1FindingArn"),
        _ => None,
    };
    let severity = f
        .pointer("/Severity/Normalized")
        .and_then(Value::as_f64)
        .map_or_else(|| label_severity(&text(f, "/Severity/Label")), |n| n / 10.0);
    Finding {
        arn: native.clone().unwrap_or_else(|| text(f, "/Id")),
        id: text(f, "/Id"),
        kind: text(f, "/Types/0"),
        title: text(f, "/Title"),
        severity,
        product,
        account: text(f, "/AwsAccountId"),
        region: text(f, "/Region"),
        resource_type: text(f, "/Resources/0/Type"),
        resource_id: asff_resource_id(&text(f, "/Resources/0/Type"), text(f, "/Resources/0/Id")),
        sample: f
            .pointer("/ProductFields/aws~1guardduty~1service~1additionalInfo~1sample")
            .and_then(Value::as_str)
            == Some("true"),
        fix_available: opt(f, "/Vulnerabilities/0/FixAvailable"),
        status: opt(f, "/RecordState"),
        workflow: opt(f, "/Workflow/Status"),
    }
}

/// Security Hub names resources by ARN; a run's target is an instance's id or a role's name, as
/// GuardDuty and Inspector give them.
fn asff_resource_id(kind: &str, id: String) -> String {
    let marker = match kind {
        "AwsEc2Instance" => ":instance/",
        "AwsIamRole" => ":role/",
        _ => return id,
    };
    match id.split_once(marker) {
        Some((_, rest)) => rest.rsplit('/').next().unwrap_or(rest).to_owned(),
        None => id,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::event as fixture;

    #[test]
    fn security_hub_names_instances_and_roles_as_the_other_products_do() {
        assert_eq!(
            asff_resource_id(
                "AwsEc2Instance",
                "arn:aws:ec2:us-east-1:111122223333:instance/i-0abc".into()
            ),
            "i-0abc"
        );
        assert_eq!(
            asff_resource_id(
                "AwsIamRole",
                "arn:aws:iam::111122223333:role/service/app".into()
            ),
            "app"
        );
        assert_eq!(
            asff_resource_id("AwsS3Bucket", "arn:aws:s3:::logs".into()),
            "arn:aws:s3:::logs"
        );
    }

    #[test]
    fn guardduty_inspector_and_security_hub_read_alike() {
        let gd = findings(&fixture("guardduty-ec2-ssh-brute-force.json"));
        assert_eq!(gd.len(), 1);
        let gd = &gd[0];
        assert_eq!(gd.kind, "UnauthorizedAccess:EC2/SSHBruteForce");
        assert_eq!(gd.resource_type, "Instance");
        assert_eq!(gd.resource_id, "i-99999999");
        assert_eq!(gd.account, "111122223333");
        assert!((gd.severity - 8.0).abs() < f64::EPSILON);
        assert!(!gd.sample);

        let insp = &findings(&fixture("inspector2-package-vulnerability.json"))[0];
        assert_eq!(insp.product, "Inspector");
        assert_eq!(insp.kind, "PACKAGE_VULNERABILITY");
        assert_eq!(insp.fix_available.as_deref(), Some("YES"));
        assert_eq!(insp.resource_id, "i-0123456789abcdef0");
        assert!(insp.severity > 9.0);

        let hub = findings(&fixture("securityhub-imported-inspector.json"));
        assert_eq!(hub.len(), 1);
        assert_eq!(
            hub[0].arn, insp.arn,
            "the copy Security Hub delivers is the same finding"
        );
        assert_eq!(hub[0].product, "Inspector");
        assert!(
            (hub[0].severity - 9.0).abs() < f64::EPSILON,
            "Normalized 90 is 9"
        );
        assert_eq!(hub[0].workflow.as_deref(), Some("NEW"));
    }

    #[test]
    fn other_events_carry_no_finding() {
        assert!(findings(
            &serde_json::json!({"source": "aws.ec2", "detail-type": "AWS API Call via CloudTrail"})
        )
        .is_empty());
        assert!(findings(&serde_json::json!({})).is_empty());
    }
}
