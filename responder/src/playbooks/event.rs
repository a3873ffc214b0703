//! EventBridge events from the central bus, parsed once into triggers: which resource, in which
//! account and Region, and what said so.
//!
//! Anyone in a member account can put an event on the central bus (its forwarding rule is theirs to
//! change), so nothing here is taken on trust. Every event must prove where it came from
//! ([`Origin`]): the envelope's `account`, which EventBridge sets to the account the event came
//! from, must be the account the detail names (CloudTrail's `recipientAccountId`, Config's
//! `awsAccountId`, a finding's `AwsAccountId`); every resource it names must be in that account, a
//! configured Region and the responder's own partition. Custom actions and the sweep schedule come
//! from the security account alone, with the exact ARNs install created.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Security Hub controls about security groups open to the world.
pub const SECURITY_GROUP_CONTROLS: &[&str] =
    &["EC2.13", "EC2.14", "EC2.18", "EC2.19", "EC2.53", "EC2.54"];

/// Security Hub controls about buckets open to the public.
pub const BUCKET_CONTROLS: &[&str] = &["S3.2", "S3.3", "S3.8"];

/// The AWS Config rules the regional StackSet deploys, by name without the prefix. Only their
/// verdicts are acted on.
pub const CONFIG_RULES: &[&str] = &[
    "restricted-ssh",
    "s3-bucket-public-read-prohibited",
    "s3-bucket-public-write-prohibited",
    "ebs-snapshot-public-restorable",
];

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
    /// When the event says it happened (EventBridge's `time`), for the time from event to fix.
    /// Anyone who can put events can set it, so it is only ever reported, never acted on.
    pub time: Option<DateTime<Utc>>,
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

/// Why an event is not acted on: unreadable, or not from where it would have to come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    Malformed(String),
    /// Readable, but it names an account, Region, partition, rule or action it cannot speak for.
    Provenance(String),
}

impl Refused {
    /// The ledger's rejection code.
    pub fn code(&self) -> &'static str {
        match self {
            Refused::Malformed(_) => "malformed_event",
            Refused::Provenance(_) => "provenance",
        }
    }

    pub fn message(&self) -> &str {
        match self {
            Refused::Malformed(m) | Refused::Provenance(m) => m,
        }
    }
}

impl From<Malformed> for Refused {
    fn from(m: Malformed) -> Refused {
        Refused::Malformed(m.0)
    }
}

fn foreign(why: String) -> Refused {
    Refused::Provenance(why)
}

/// Where events may come from: the deployment's own facts, from the responder's settings.
#[derive(Debug, Clone)]
pub struct Origin {
    pub security_account: String,
    /// The responder's own partition: nothing in another is ever acted on.
    pub partition: String,
    /// Every Region Quell is installed in.
    pub regions: Vec<String>,
    /// The exact ARNs of Quell's Security Hub custom actions.
    pub custom_actions: Vec<String>,
    /// The exact ARN of the sweep schedule rule.
    pub sweep_rule: String,
    /// The exact names of Quell's Config rules.
    pub config_rules: Vec<String>,
    /// The local sandbox's emulator delivers events without the envelope's `account` field (AWS
    /// always sets it); only the sandbox host sets this, and then the detail's account stands.
    pub envelope_may_lack_account: bool,
}

impl Origin {
    /// The envelope's `account` must be `claimed`.
    pub(crate) fn sent_by(&self, event: &Value, claimed: &str, what: &str) -> Result<(), Refused> {
        match text(event, "/account") {
            Some(a) if a == claimed => Ok(()),
            Some(a) => Err(foreign(format!(
                "{what} names account {claimed}, but the event came from account {a}; an account speaks only for itself"
            ))),
            None if self.envelope_may_lack_account => Ok(()),
            None => Err(foreign(format!(
                "{what} has no envelope account; EventBridge always sets it, so the event was not delivered by EventBridge"
            ))),
        }
    }

    fn region_ok(&self, region: &str, what: &str) -> Result<(), Refused> {
        if self.regions.iter().any(|r| r == region) {
            Ok(())
        } else {
            Err(foreign(format!(
                "{what} is in Region {region:?}, which is not one Quell is installed in ({})",
                self.regions.join(", ")
            )))
        }
    }

    /// An ARN taken from an event or finding: in our partition, in `account` when it names one,
    /// and in a configured Region when it names one.
    fn arn_ok(&self, arn: &str, account: &str, what: &str) -> Result<(), Refused> {
        let parts: Vec<&str> = arn.splitn(6, ':').collect();
        let [prefix, partition, _service, region, arn_account, _] = parts[..] else {
            return Err(Refused::Malformed(format!("{what} {arn:?} is not an ARN")));
        };
        if prefix != "arn" {
            return Err(Refused::Malformed(format!("{what} {arn:?} is not an ARN")));
        }
        if partition != self.partition {
            return Err(foreign(format!(
                "{what} {arn} is in partition {partition:?}; this responder acts in {:?} only",
                self.partition
            )));
        }
        if !arn_account.is_empty() && arn_account != account {
            return Err(foreign(format!(
                "{what} {arn} is in account {arn_account}, not in account {account} that reported it"
            )));
        }
        if !region.is_empty() {
            self.region_ok(region, &format!("{what} {arn}"))?;
        }
        Ok(())
    }
}

fn text<'a>(v: &'a Value, pointer: &str) -> Option<&'a str> {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

fn need<'a>(v: &'a Value, pointer: &str, what: &str) -> Result<&'a str, Malformed> {
    text(v, pointer).ok_or_else(|| Malformed(format!("{what} has no {pointer}")))
}

/// EventBridge's `time`, when it is one.
fn event_time(event: &Value) -> Option<DateTime<Utc>> {
    text(event, "/time")
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc))
}

pub fn parse(event: &Value, origin: &Origin) -> Result<Parsed, Refused> {
    let detail_type = need(event, "/detail-type", "the event")?;
    let event_id = need(event, "/id", "the event")?.to_owned();
    match detail_type {
        "AWS API Call via CloudTrail" => cloudtrail(event, event_id, origin),
        "Config Rules Compliance Change" => config(event, event_id, origin),
        "Security Hub Findings - Imported" => security_hub(event, &event_id, origin),
        "Security Hub Findings - Custom Action" => custom_action(event, &event_id, origin),
        "Scheduled Event" if text(event, "/source") == Some("aws.events") => {
            sweep_schedule(event, event_id, origin)
        }
        other => Err(Refused::Malformed(format!(
            "detail-type {other:?} is not an event Quell handles (CloudTrail API calls, Config compliance changes, Security Hub findings and custom actions)"
        ))),
    }
}

/// The sweep schedule: only the rule install created in the security account.
fn sweep_schedule(event: &Value, event_id: String, origin: &Origin) -> Result<Parsed, Refused> {
    origin.sent_by(event, &origin.security_account, "the sweep schedule")?;
    let from_rule = event
        .pointer("/resources")
        .and_then(Value::as_array)
        .is_some_and(|r| r.len() == 1 && r[0].as_str() == Some(origin.sweep_rule.as_str()));
    if !from_rule {
        return Err(foreign(format!(
            "a scheduled event that is not from Quell's sweep rule {} does not start a sweep",
            origin.sweep_rule
        )));
    }
    Ok(Parsed::Sweep { event_id })
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

fn cloudtrail(event: &Value, event_id: String, origin: &Origin) -> Result<Parsed, Refused> {
    let name = need(event, "/detail/eventName", "the CloudTrail event")?;
    let account = checked_account(need(
        event,
        "/detail/recipientAccountId",
        "the CloudTrail event",
    )?)?;
    origin.sent_by(event, &account, &format!("CloudTrail event {name}"))?;
    if let Some(code) = text(event, "/detail/errorCode") {
        return Ok(Parsed::Nothing(format!(
            "{name} failed ({code}): nothing changed"
        )));
    }
    let Some(resource) = cloudtrail_resource(name, event)? else {
        return Ok(Parsed::Nothing(format!("{name} cannot expose anything")));
    };
    let region = need(event, "/detail/awsRegion", "the CloudTrail event")?;
    origin.region_ok(region, &format!("CloudTrail event {name}"))?;
    Ok(Parsed::Triggers(vec![Trigger {
        event_id,
        account,
        region: region.to_owned(),
        resource,
        source: Source::CloudTrail {
            event_name: name.to_owned(),
        },
        time: event_time(event),
    }]))
}

/// A Config verdict's resource type and id: in the detail, or (in some of AWS's documented
/// shapes) only in the evaluation result's qualifier.
fn config_resource<'a>(event: &'a Value, field: &str) -> Result<&'a str, Malformed> {
    let detail = format!("/detail/{field}");
    let qualifier = format!(
        "/detail/newEvaluationResult/evaluationResultIdentifier/evaluationResultQualifier/{field}"
    );
    text(event, &detail)
        .or_else(|| text(event, &qualifier))
        .ok_or_else(|| {
            Malformed(format!(
                "the Config event has no {detail} (nor {qualifier})"
            ))
        })
}

fn config(event: &Value, event_id: String, origin: &Origin) -> Result<Parsed, Refused> {
    let rule = need(event, "/detail/configRuleName", "the Config event")?;
    let account = checked_account(need(event, "/detail/awsAccountId", "the Config event")?)?;
    origin.sent_by(
        event,
        &account,
        &format!("the verdict of Config rule {rule}"),
    )?;
    if !origin.config_rules.iter().any(|r| r == rule) {
        return Err(foreign(format!(
            "Config rule {rule} is not one of Quell's ({}); its verdict is not acted on and nothing was done",
            origin.config_rules.join(", ")
        )));
    }
    let compliance = text(event, "/detail/newEvaluationResult/complianceType").unwrap_or("");
    if compliance != "NON_COMPLIANT" {
        return Ok(Parsed::Nothing(format!(
            "{rule}: {compliance}, nothing to fix"
        )));
    }
    let region = need(event, "/detail/awsRegion", "the Config event")?;
    origin.region_ok(region, &format!("the verdict of Config rule {rule}"))?;
    let kind = config_resource(event, "resourceType")?;
    let id = config_resource(event, "resourceId")?;
    let resource = match kind {
        "AWS::EC2::SecurityGroup" => Resource::SecurityGroup {
            group_id: checked_group(id)?,
        },
        "AWS::S3::Bucket" => Resource::Bucket {
            name: checked_bucket(id)?,
        },
        "AWS::::Account" => {
            // EBS_SNAPSHOT_PUBLIC_RESTORABLE_CHECK judges the account, not a snapshot: only the
            // account it was evaluated in.
            if checked_account(id)? != account {
                return Err(foreign(format!(
                    "Config rule {rule} in account {account} judged account {id}; a verdict speaks only for its own account"
                )));
            }
            return Ok(Parsed::Place {
                event_id,
                account,
                region: region.to_owned(),
                kind: "ebs_snapshot",
                rule: rule.to_owned(),
            });
        }
        _ => {
            return Err(Refused::Malformed(format!(
                "Config rule {rule} reports a {kind}, which has no playbook"
            )))
        }
    };
    Ok(Parsed::Triggers(vec![Trigger {
        event_id,
        account,
        region: region.to_owned(),
        resource,
        source: Source::Config {
            rule: rule.to_owned(),
        },
        time: event_time(event),
    }]))
}

fn findings(event: &Value) -> Result<&Vec<Value>, Malformed> {
    event
        .pointer("/detail/findings")
        .and_then(Value::as_array)
        .filter(|f| !f.is_empty())
        .ok_or_else(|| Malformed("the Security Hub event has no detail.findings".into()))
}

/// A finding's Region: its own, else its first resource's, else the event's (AWS's documented
/// samples do not all carry the top-level one).
fn finding_region<'a>(event: &'a Value, f: &'a Value) -> Result<&'a str, Malformed> {
    text(f, "/Region")
        .or_else(|| text(f, "/Resources/0/Region"))
        .or_else(|| text(event, "/region"))
        .ok_or_else(|| {
            Malformed(format!(
                "finding {} names no Region (Region, Resources[0].Region or the event's region)",
                text(f, "/Id").unwrap_or("?")
            ))
        })
}

/// The finding's account, and where it lives, with both checked against the origin.
fn finding_place(
    event: &Value,
    f: &Value,
    origin: &Origin,
) -> Result<(FindingRef, String), Refused> {
    let region = finding_region(event, f)?;
    let finding = FindingRef {
        id: need(f, "/Id", "a finding")?.to_owned(),
        product_arn: need(f, "/ProductArn", "a finding")?.to_owned(),
        region: region.to_owned(),
    };
    let account = checked_account(need(f, "/AwsAccountId", "a finding")?)?;
    origin.region_ok(region, &format!("finding {}", finding.id))?;
    Ok((finding, account))
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

/// A finding resource's Region (its own, else the finding's), checked, and its id when it is an
/// ARN, checked to be in the finding's account.
fn resource_place<'a>(
    r: &'a Value,
    finding: &'a FindingRef,
    account: &str,
    origin: &Origin,
) -> Result<&'a str, Refused> {
    let region = text(r, "/Region").unwrap_or(&finding.region);
    origin.region_ok(region, &format!("a resource of finding {}", finding.id))?;
    let id = need(r, "/Id", "a finding resource")?;
    if id.starts_with("arn:") {
        origin.arn_ok(id, account, &format!("finding {}'s resource", finding.id))?;
    }
    if let Some(partition) = text(r, "/Partition") {
        if partition != origin.partition {
            return Err(foreign(format!(
                "finding {}'s resource {id} is in partition {partition:?}; this responder acts in {:?} only",
                finding.id, origin.partition
            )));
        }
    }
    Ok(region)
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

fn security_hub(event: &Value, event_id: &str, origin: &Origin) -> Result<Parsed, Refused> {
    let time = event_time(event);
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
        let (finding, account) = finding_place(event, f, origin)?;
        // The Security Hub administrator (the security account) also receives every member's
        // findings; the member's own copy is the one acted on.
        if text(event, "/account") == Some(origin.security_account.as_str())
            && account != origin.security_account
        {
            skipped.push(format!(
                "{id}: the administrator's copy of account {account}'s finding; that account's own copy is acted on"
            ));
            continue;
        }
        origin.sent_by(event, &account, &format!("finding {id}"))?;
        for r in finding_resources(f)? {
            let region = resource_place(r, &finding, &account, origin)?;
            if let Some(resource) = playbook_resource(r)? {
                triggers.push(Trigger {
                    event_id: event_id.to_owned(),
                    account: account.clone(),
                    region: region.to_owned(),
                    resource,
                    source: Source::SecurityHub {
                        finding: finding.clone(),
                        control: control.to_owned(),
                    },
                    time,
                });
            }
        }
    }
    if triggers.is_empty() {
        return Ok(Parsed::Nothing(skipped.join("; ")));
    }
    Ok(Parsed::Triggers(triggers))
}

fn custom_action(event: &Value, event_id: &str, origin: &Origin) -> Result<Parsed, Refused> {
    let actions = event
        .pointer("/resources")
        .and_then(Value::as_array)
        .filter(|r| !r.is_empty())
        .ok_or_else(|| Malformed("the custom action event names no action (resources)".into()))?;
    let [action] = &actions[..] else {
        return Err(foreign(format!(
            "the custom action event names {} actions; Security Hub names exactly one",
            actions.len()
        )));
    };
    let action_arn = action
        .as_str()
        .ok_or_else(|| Malformed("the custom action event's resources[0] is not text".into()))?;
    if !origin.custom_actions.iter().any(|a| a == action_arn) {
        return Err(foreign(format!(
            "custom action {action_arn} is not one of Quell's ({}); only the actions install created in the security account are acted on",
            origin.custom_actions.join(", ")
        )));
    }
    origin.sent_by(event, &origin.security_account, "a Quell custom action")?;
    let action_id = action_arn.rsplit('/').next().unwrap_or(action_arn);
    let contain = action_id == CONTAIN_ACTION.0;
    let action_name = if contain {
        CONTAIN_ACTION.1
    } else {
        REMEDIATE_ACTION.1
    };
    let time = event_time(event);
    let mut triggers = Vec::new();
    let mut requests = Vec::new();
    for f in findings(event)? {
        let (finding, account) = finding_place(event, f, origin)?;
        let before = triggers.len() + requests.len();
        for r in finding_resources(f)? {
            let region = resource_place(r, &finding, &account, origin)?;
            if contain {
                if let Some(entity) = containable(r, &account, &origin.partition)? {
                    let what = format!("finding {}'s entity", finding.id);
                    origin.arn_ok(&entity, &account, &what)?;
                    // An entity always names its account; one that names none is not this one's.
                    if entity.split(':').nth(4) != Some(account.as_str()) {
                        return Err(foreign(format!(
                            "{what} {entity} does not name account {account} that reported it"
                        )));
                    }
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
                    region: region.to_owned(),
                    resource,
                    source: Source::SecurityHubAction {
                        finding: finding.clone(),
                        action: action_name.to_owned(),
                    },
                    time,
                });
            }
        }
        if triggers.len() + requests.len() == before {
            let wanted = if contain {
                "an IAM user or role, a Lambda function or an EC2 instance"
            } else {
                "a security group, an S3 bucket or an EBS snapshot"
            };
            return Err(Refused::Malformed(format!(
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
fn containable(r: &Value, account: &str, partition: &str) -> Result<Option<String>, Malformed> {
    let id = need(r, "/Id", "a finding resource")?;
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
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    const SECURITY: &str = "999999999999";
    const MEMBER: &str = "111122223333";
    const OTHER: &str = "444455556666";

    pub(crate) fn origin() -> Origin {
        Origin {
            security_account: SECURITY.into(),
            partition: "aws".into(),
            regions: vec!["us-east-1".into(), "eu-west-1".into()],
            custom_actions: vec![
                format!("arn:aws:securityhub:us-east-1:{SECURITY}:action/custom/QuellContain"),
                format!("arn:aws:securityhub:us-east-1:{SECURITY}:action/custom/QuellRemediate"),
            ],
            sweep_rule: format!("arn:aws:events:us-east-1:{SECURITY}:rule/quell-sweep"),
            config_rules: vec![
                "quell-restricted-ssh".into(),
                "quell-s3-bucket-public-read-prohibited".into(),
                "quell-ebs-snapshot-public-restorable".into(),
            ],
            envelope_may_lack_account: false,
        }
    }

    fn parse_here(e: &Value) -> Result<Parsed, Refused> {
        parse(e, &origin())
    }

    /// The refusal's code and message.
    fn refusal(e: &Value) -> (&'static str, String) {
        match parse_here(e) {
            Err(r) => (r.code(), r.message().to_owned()),
            Ok(p) => panic!("expected a refusal, got {p:?}"),
        }
    }

    fn cloudtrail_event(name: &str, group: &str) -> Value {
        json!({
            "id": "ev-1", "detail-type": "AWS API Call via CloudTrail", "source": "aws.ec2",
            "account": MEMBER, "region": "eu-west-1",
            "detail": {"eventSource": "ec2.amazonaws.com", "eventName": name,
                       "awsRegion": "eu-west-1", "recipientAccountId": MEMBER,
                       "requestParameters": {"groupId": group}}
        })
    }

    fn triggers(e: &Value) -> Vec<Trigger> {
        match parse_here(e).unwrap() {
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
        assert_eq!(t[0].account, MEMBER);
        assert_eq!(t[0].region, "eu-west-1");
        assert_eq!(t[0].resource.id(), "sg-0abc12");
    }

    #[test]
    fn the_events_own_time_is_kept_for_the_report_and_a_bad_one_is_dropped() {
        let mut e = cloudtrail_event("AuthorizeSecurityGroupIngress", "sg-0abc12");
        assert_eq!(triggers(&e)[0].time, None);
        e["time"] = json!("2026-11-30T10:15:00Z");
        assert_eq!(
            triggers(&e)[0].time.map(|t| t.to_rfc3339()),
            Some("2026-11-30T10:15:00+00:00".to_owned())
        );
        // Anyone who puts events writes this field: a malformed one is no reason to refuse the event.
        e["time"] = json!("yesterday");
        assert_eq!(triggers(&e)[0].time, None);
    }

    #[test]
    fn an_event_from_one_account_naming_another_is_refused() {
        let mut e = cloudtrail_event("AuthorizeSecurityGroupIngress", "sg-0abc12");
        e["account"] = json!(OTHER);
        let (code, why) = refusal(&e);
        assert_eq!(code, "provenance");
        assert!(why.contains(OTHER) && why.contains(MEMBER), "{why}");
        // With no envelope account, only the sandbox's emulator is excused.
        e.as_object_mut().unwrap().remove("account");
        assert_eq!(refusal(&e).0, "provenance");
        let lenient = Origin {
            envelope_may_lack_account: true,
            ..origin()
        };
        assert!(matches!(parse(&e, &lenient), Ok(Parsed::Triggers(_))));
    }

    #[test]
    fn an_event_in_a_region_quell_does_not_cover_is_refused() {
        let mut e = cloudtrail_event("AuthorizeSecurityGroupIngress", "sg-0abc12");
        e["detail"]["awsRegion"] = json!("ap-south-1");
        let (code, why) = refusal(&e);
        assert_eq!(code, "provenance");
        assert!(why.contains("ap-south-1"), "{why}");
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
        assert!(matches!(parse_here(&e).unwrap(), Parsed::Nothing(_)));
    }

    fn config_event(rule: &str, kind: &str, id: &str, compliance: &str) -> Value {
        json!({"id": "ev-2", "detail-type": "Config Rules Compliance Change", "source": "aws.config",
            "account": MEMBER, "region": "us-east-1",
            "detail": {"configRuleName": rule, "awsAccountId": MEMBER, "awsRegion": "us-east-1",
                       "resourceType": kind, "resourceId": id,
                       "newEvaluationResult": {"complianceType": compliance}}})
    }

    #[test]
    fn a_failed_call_a_compliant_evaluation_and_a_passed_finding_are_nothing_to_do() {
        let mut e = cloudtrail_event("AuthorizeSecurityGroupIngress", "sg-0abc12");
        e["detail"]["errorCode"] = json!("UnauthorizedOperation");
        assert!(matches!(parse_here(&e).unwrap(), Parsed::Nothing(_)));
        let config = config_event(
            "quell-restricted-ssh",
            "AWS::EC2::SecurityGroup",
            "sg-01",
            "COMPLIANT",
        );
        assert!(matches!(parse_here(&config).unwrap(), Parsed::Nothing(_)));
        let mut f = finding("AwsEc2SecurityGroup", "sg-0123", "EC2.19");
        f["Compliance"]["Status"] = json!("PASSED");
        assert!(matches!(
            parse_here(&imported(&[f])).unwrap(),
            Parsed::Nothing(_)
        ));
    }

    fn finding(kind: &str, id: &str, control: &str) -> Value {
        json!({"Id": "f-1", "ProductArn": "arn:aws:securityhub:us-east-1::product/aws/securityhub",
            "AwsAccountId": MEMBER, "Region": "us-east-1", "RecordState": "ACTIVE",
            "Compliance": {"Status": "FAILED", "SecurityControlId": control},
            "Resources": [{"Type": kind, "Id": id}]})
    }

    fn imported(findings: &[Value]) -> Value {
        json!({"id": "ev-3", "detail-type": "Security Hub Findings - Imported", "source": "aws.securityhub",
            "account": MEMBER, "region": "us-east-1", "detail": {"findings": findings}})
    }

    #[test]
    fn config_and_security_hub_name_the_resource_too() {
        let config = config_event(
            "quell-s3-bucket-public-read-prohibited",
            "AWS::S3::Bucket",
            "open-bucket",
            "NON_COMPLIANT",
        );
        assert_eq!(triggers(&config)[0].resource.id(), "open-bucket");
        let hub = imported(&[finding(
            "AwsEc2SecurityGroup",
            &format!("arn:aws:ec2:us-east-1:{MEMBER}:security-group/sg-0123"),
            "EC2.19",
        )]);
        let t = triggers(&hub);
        assert_eq!(t[0].resource.id(), "sg-0123");
        assert!(
            matches!(&t[0].source, Source::SecurityHub { control, finding } if control == "EC2.19" && finding.id == "f-1")
        );
        let hub = imported(&[finding("AwsS3Bucket", "arn:aws:s3:::open-bucket", "S3.2")]);
        assert_eq!(
            triggers(&hub)[0].resource,
            Resource::Bucket {
                name: "open-bucket".into()
            }
        );
    }

    #[test]
    fn documented_variants_are_read_where_aws_puts_them() {
        // A Config verdict whose type and id are only in the evaluation result's qualifier.
        let mut config = config_event(
            "quell-restricted-ssh",
            "AWS::EC2::SecurityGroup",
            "sg-0abc",
            "NON_COMPLIANT",
        );
        let detail = config["detail"].as_object_mut().unwrap();
        detail.remove("resourceType");
        detail.remove("resourceId");
        config["detail"]["newEvaluationResult"]["evaluationResultIdentifier"] = json!({
            "evaluationResultQualifier": {"configRuleName": "quell-restricted-ssh",
                "resourceType": "AWS::EC2::SecurityGroup", "resourceId": "sg-0abc"}});
        assert_eq!(triggers(&config)[0].resource.id(), "sg-0abc");
        // A finding with no top-level Region: its resource's, else the event's.
        let mut f = finding("AwsEc2SecurityGroup", "sg-0123", "EC2.19");
        f.as_object_mut().unwrap().remove("Region");
        f["Resources"][0]["Region"] = json!("eu-west-1");
        assert_eq!(triggers(&imported(&[f.clone()]))[0].region, "eu-west-1");
        f["Resources"][0].as_object_mut().unwrap().remove("Region");
        assert_eq!(triggers(&imported(&[f]))[0].region, "us-east-1");
    }

    #[test]
    fn a_finding_naming_a_resource_of_another_account_is_refused() {
        let f = finding(
            "AwsEc2SecurityGroup",
            &format!("arn:aws:ec2:us-east-1:{OTHER}:security-group/sg-0123"),
            "EC2.19",
        );
        let (code, why) = refusal(&imported(&[f]));
        assert_eq!(code, "provenance");
        assert!(why.contains(OTHER), "{why}");
        // A finding whose account is not the one that sent it.
        let mut f = finding("AwsEc2SecurityGroup", "sg-0123", "EC2.19");
        f["AwsAccountId"] = json!(OTHER);
        assert_eq!(refusal(&imported(&[f])).0, "provenance");
        // Another partition.
        let f = finding(
            "AwsEc2SecurityGroup",
            &format!("arn:aws-cn:ec2:us-east-1:{MEMBER}:security-group/sg-0123"),
            "EC2.19",
        );
        assert_eq!(refusal(&imported(&[f])).0, "provenance");
    }

    #[test]
    fn the_administrators_copy_of_a_member_finding_is_left_to_the_members_own() {
        let mut e = imported(&[finding("AwsEc2SecurityGroup", "sg-0123", "EC2.19")]);
        e["account"] = json!(SECURITY);
        assert!(
            matches!(parse_here(&e).unwrap(), Parsed::Nothing(why) if why.contains("administrator's copy"))
        );
    }

    #[test]
    fn config_verdicts_count_only_from_quells_exact_rules_and_for_their_own_account() {
        let (code, why) = refusal(&config_event(
            "quell-restricted-ssh-lookalike",
            "AWS::EC2::SecurityGroup",
            "sg-01",
            "NON_COMPLIANT",
        ));
        assert_eq!(code, "provenance");
        assert!(why.contains("quell-restricted-ssh-lookalike"), "{why}");
        let place = config_event(
            "quell-ebs-snapshot-public-restorable",
            "AWS::::Account",
            MEMBER,
            "NON_COMPLIANT",
        );
        let Parsed::Place {
            account,
            region,
            kind,
            ..
        } = parse_here(&place).unwrap()
        else {
            panic!("a place to check")
        };
        assert_eq!(
            (account.as_str(), region.as_str(), kind),
            (MEMBER, "us-east-1", "ebs_snapshot")
        );
        let other = config_event(
            "quell-ebs-snapshot-public-restorable",
            "AWS::::Account",
            OTHER,
            "NON_COMPLIANT",
        );
        assert_eq!(refusal(&other).0, "provenance");
    }

    fn action_event(action: &str, findings: &[Value]) -> Value {
        json!({"id": "ev-5", "detail-type": "Security Hub Findings - Custom Action", "source": "aws.securityhub",
            "account": SECURITY, "region": "us-east-1",
            "resources": [format!("arn:aws:securityhub:us-east-1:{SECURITY}:action/custom/{action}")],
            "detail": {"actionName": action, "findings": findings}})
    }

    #[test]
    fn custom_actions_contain_entities_and_remediate_resources_of_each_finding() {
        let mut key = finding("AwsIamAccessKey", "AKIAEXAMPLE", "");
        key["Resources"][0]["Details"] =
            json!({"AwsIamAccessKey": {"PrincipalName": "alice", "PrincipalType": "IAMUser"}});
        let role = finding("AwsIamRole", &format!("arn:aws:iam::{MEMBER}:role/app"), "");
        let Parsed::Contain(c) = parse_here(&action_event("QuellContain", &[key, role])).unwrap()
        else {
            panic!("a containment")
        };
        assert_eq!(
            c.iter().map(|r| r.entity.as_str()).collect::<Vec<_>>(),
            [
                format!("arn:aws:iam::{MEMBER}:user/alice"),
                format!("arn:aws:iam::{MEMBER}:role/app")
            ]
        );
        let snap = finding("Other", "arn:aws:ec2:us-east-1::snapshot/snap-0abc", "");
        let t = triggers(&action_event("QuellRemediate", &[snap]));
        assert_eq!(t[0].resource.id(), "snap-0abc");
        assert!(t[0].source.is_request());
    }

    #[test]
    fn a_contain_action_on_a_finding_naming_another_accounts_role_is_refused() {
        // A member imported this finding about itself, naming a role in another account.
        let role = finding(
            "AwsIamRole",
            &format!("arn:aws:iam::{OTHER}:role/payments"),
            "",
        );
        let (code, why) = refusal(&action_event("QuellContain", &[role]));
        assert_eq!(code, "provenance");
        assert!(why.contains(OTHER) && why.contains(MEMBER), "{why}");
    }

    #[test]
    fn custom_actions_count_only_from_the_security_account_with_quells_exact_arns() {
        let role = finding("AwsIamRole", &format!("arn:aws:iam::{MEMBER}:role/app"), "");
        // The same action id in a member account (forwarded to the central bus).
        let mut e = action_event("QuellContain", std::slice::from_ref(&role));
        e["resources"] = json!([format!(
            "arn:aws:securityhub:us-east-1:{MEMBER}:action/custom/QuellContain"
        )]);
        e["account"] = json!(MEMBER);
        assert_eq!(refusal(&e).0, "provenance");
        // Quell's exact ARN, sent from a member account.
        let mut e = action_event("QuellContain", std::slice::from_ref(&role));
        e["account"] = json!(MEMBER);
        assert_eq!(refusal(&e).0, "provenance");
        // Two actions at once, one of them Quell's.
        let mut e = action_event("QuellContain", &[role]);
        e["resources"].as_array_mut().unwrap().push(json!(
            "arn:aws:securityhub:us-east-1:999999999999:action/custom/Other"
        ));
        assert_eq!(refusal(&e).0, "provenance");
    }

    #[test]
    fn the_sweep_starts_only_from_quells_schedule() {
        let mut e = json!({"id": "ev-9", "detail-type": "Scheduled Event", "source": "aws.events",
            "account": SECURITY, "region": "us-east-1",
            "resources": [format!("arn:aws:events:us-east-1:{SECURITY}:rule/quell-sweep")], "detail": {}});
        assert!(matches!(parse_here(&e).unwrap(), Parsed::Sweep { .. }));
        e["resources"] = json!([format!(
            "arn:aws:events:us-east-1:{MEMBER}:rule/quell-sweep"
        )]);
        assert_eq!(refusal(&e).0, "provenance");
    }

    #[test]
    fn malformed_events_are_refused_with_what_is_wrong() {
        let malformed = |e: &Value| {
            let (code, why) = refusal(e);
            assert_eq!(code, "malformed_event", "{why}");
            why
        };
        let e = cloudtrail_event("AuthorizeSecurityGroupIngress", "not-a-group; drop");
        assert!(malformed(&e).contains("is not a security group id"));
        let mut e = cloudtrail_event("AuthorizeSecurityGroupIngress", "sg-01");
        e["detail"]["requestParameters"] = json!({});
        assert!(malformed(&e).contains("names no security group"));
        let mut e = cloudtrail_event("PutBucketAcl", "sg-01");
        e["detail"]["requestParameters"] = json!({"bucketName": "Bad_Bucket/../x"});
        assert!(malformed(&e).contains("not an S3 bucket name"));
        assert!(
            malformed(&json!({"id": "x", "detail-type": "Something Else"}))
                .contains("not an event Quell handles")
        );
        assert!(malformed(&json!({"detail-type": "AWS API Call via CloudTrail"})).contains("/id"));
        let nothing = action_event(
            "QuellContain",
            &[finding("AwsS3Bucket", "arn:aws:s3:::b-1", "")],
        );
        assert!(malformed(&nothing).contains("names no resource"));
        let empty = action_event("QuellRemediate", &[]);
        assert!(malformed(&empty).contains("no detail.findings"));
        let other = action_event("SomeoneElses", &[finding("AwsS3Bucket", "b", "")]);
        assert!(refusal(&other).1.contains("not one of Quell's"));
    }
}
