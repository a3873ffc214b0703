//! The catalogue's actions carried out in a member account, each reading what it changes first
//! (the prior state a release puts back) and returning what it did as a ledger step.
//!
//! `ec2.quarantine` changes groups in two phases, as a containment does: security group changes
//! do not end tracked connections, so phase 1 moves the interfaces to the untracked group and
//! phase 2, after the configured wait, to the quarantine group. The engine comes back for phase 2
//! through the isolation queue; the run stays on the step meanwhile.

use std::fmt::Write as _;

use aws_sdk_ec2::types::{ResourceType, Tag, TagSpecification};
use serde_json::{json, Map, Value};

use crate::aws_error::{AwsFailure, CallError, Described};
use crate::clients::MemberClients;
use crate::entities::iam::{Kind, Principal};
use crate::entities::instance::{self, Ctx};
use crate::entities::StepOutcome;
use crate::entity::{IamPrincipal, Instance};
use crate::ledger::Step;

use super::{containments, remediations};

/// The actions this module carries out in member accounts. With the engine's own (`notify`,
/// `finding.update`, `verify`, tickets), these are what a declared playbook may use with this
/// build: install and upgrade refuse a playbook that names any other. Inverses (what `undo`
/// runs on release) are not steps of their own.
pub const IN_MEMBER_ACCOUNTS: &[&str] = &[
    "tag",
    "untag",
    "ec2.snapshot_volumes",
    "ec2.quarantine",
    "iam.revoke_sessions",
    "iam.session_instance",
    "ssm.run_document",
    "patch.scan",
    "patch.install",
    "sg.revoke_open_ingress",
    "s3.make_private",
    "ebs.snapshot_make_private",
    "ebs.snapshot_encrypt_copy",
    "ebs.snapshot_delete_original",
    "iam.contain_user",
    "iam.contain_role",
    "lambda.contain",
];

/// How long after sending a command its result is first asked for, and then again while it
/// runs: patching takes minutes, and a poll is one call.
pub const COMMAND_POLL_SECONDS: i64 = 20;

/// Carried out by the engine from the security account.
pub const IN_SECURITY_ACCOUNT: &[&str] = &[
    "notify",
    "finding.update",
    "verify",
    "ticket.open",
    "ticket.comment",
    "ticket.close",
];

/// Whether this responder build carries out `action` (control steps are the run's own).
pub fn runnable(action: &str) -> bool {
    IN_MEMBER_ACCOUNTS.contains(&action)
        || IN_SECURITY_ACCOUNT.contains(&action)
        || quell_playbook::catalogue::CONTROL.contains(&action)
}

/// Where a run acts.
#[derive(Clone, Copy)]
pub struct Place<'a> {
    pub partition: &'a str,
    pub account: &'a str,
    pub region: &'a str,
    pub name_prefix: &'a str,
    /// The run's ledger key: tags and descriptions name it.
    pub run: &'a str,
    /// SSM documents allowed besides the patch baselines.
    pub ssm_documents: &'a [String],
    /// The ports an ingress rule open to the world must not reach
    /// (`playbooks.open_security_group.ports`).
    pub ports: &'a [u16],
    /// Why an ARN is protected, when it is: a function's containment leaves a protected role be.
    pub protected: &'a dyn Fn(&str) -> Option<String>,
    /// The KMS key encrypted snapshot copies use (`playbooks.unencrypted_snapshot.kms_key_id`),
    /// or the account's default.
    pub kms_key_id: Option<&'a str>,
}

/// What one phase of an action did.
#[derive(Debug, Clone)]
pub struct Acted {
    /// Ledger steps, named `<step>.<part>`.
    pub parts: Vec<(String, StepOutcome)>,
    pub outputs: Map<String, Value>,
    /// Another phase is due, this many seconds from now.
    pub next_phase: Option<(u8, i64)>,
}

impl Acted {
    pub(super) fn one(part: &str, outcome: StepOutcome, outputs: Map<String, Value>) -> Acted {
        Acted {
            parts: vec![(part.to_owned(), outcome)],
            outputs,
            next_phase: None,
        }
    }
}

pub(super) fn refused(call: &str, message: String) -> CallError {
    CallError {
        call: call.into(),
        failure: AwsFailure {
            code: Some("Quell.Playbook".into()),
            message,
        },
    }
}

fn instance_of(place: &Place<'_>, id: &str) -> Instance {
    Instance {
        partition: place.partition.to_owned(),
        region: place.region.to_owned(),
        account: place.account.to_owned(),
        id: id.to_owned(),
    }
}

fn role_of(place: &Place<'_>, name: &str) -> IamPrincipal {
    IamPrincipal {
        partition: place.partition.to_owned(),
        account: place.account.to_owned(),
        path: "/".into(),
        name: name.to_owned(),
    }
}

/// Carries out phase `phase` (1 first) of `action` with `with` on `target`; `earlier` holds the
/// ledger steps this step recorded in its earlier phases (a command's id, for its result).
#[allow(clippy::too_many_arguments)]
pub async fn carry_out(
    m: &MemberClients,
    place: &Place<'_>,
    action: &str,
    with: &Value,
    target: &str,
    phase: u8,
    wait_seconds: i32,
    earlier: &[Step],
) -> Result<Acted, CallError> {
    let vm = instance_of(place, target);
    let ctx = Ctx {
        ec2: &m.ec2,
        iam: &m.iam,
        instance: &vm,
        request_id: place.run,
        name_prefix: place.name_prefix,
        known_groups: None,
    };
    match action {
        "tag" => tag(m, target, with).await,
        "untag" => untag(m, target, with).await,
        "ec2.snapshot_volumes" => snapshot_volumes(&ctx, with).await,
        "ec2.quarantine" => quarantine(&ctx, with, phase, wait_seconds).await,
        "iam.revoke_sessions" => {
            let who = role_of(place, target);
            let p = Principal {
                kind: Kind::Role,
                who: &who,
            };
            let outcome =
                crate::entities::iam::run(&m.iam, p, "revoke_older_sessions", chrono::Utc::now())
                    .await?;
            Ok(Acted::one("revoke_older_sessions", outcome, Map::new()))
        }
        "iam.session_instance" => session_instance(m, target, with).await,
        "sg.revoke_open_ingress" => remediations::revoke_open_ingress(m, place, target).await,
        "s3.make_private" => remediations::make_bucket_private(m, place, target).await,
        "ebs.snapshot_make_private" => remediations::make_snapshot_private(m, place, target).await,
        "ebs.snapshot_encrypt_copy" => {
            remediations::encrypt_snapshot_copy(m, place, target, phase).await
        }
        "ebs.snapshot_delete_original" => {
            remediations::delete_snapshot_original(m, place, target).await
        }
        "iam.contain_user" | "iam.contain_role" | "lambda.contain" => {
            containments::contain(m, place, action, target).await
        }
        "ssm.run_document" | "patch.scan" | "patch.install" => {
            let (document, parameters) = command_of(action, with, place.ssm_documents)?;
            if phase <= 1 {
                send_command(m, place, target, &document, &parameters).await
            } else {
                command_result(m, target, earlier, phase).await
            }
        }
        other => Err(refused(
            "playbook",
            format!("this responder build does not carry out `{other}`"),
        )),
    }
}

/// Undoes what `parts` (the step's ledger steps) did, with the catalogue's inverse.
pub async fn undo(
    m: &MemberClients,
    place: &Place<'_>,
    inverse: &str,
    target: &str,
    parts: &[Step],
) -> Result<StepOutcome, CallError> {
    let vm = instance_of(place, target);
    let ctx = Ctx {
        ec2: &m.ec2,
        iam: &m.iam,
        instance: &vm,
        request_id: place.run,
        name_prefix: place.name_prefix,
        known_groups: None,
    };
    let named: Vec<Step> = parts
        .iter()
        .map(|s| Step {
            name: s.name.rsplit('.').next().unwrap_or_default().to_owned(),
            ..s.clone()
        })
        .collect();
    let refs: Vec<&Step> = named.iter().collect();
    match inverse {
        "untag" | "tag" => restore_tags(m, target, &named).await,
        "ec2.release_quarantine" => {
            let mut results = instance::release(&ctx, &refs).await;
            match results.pop() {
                Some((_, outcome)) => outcome,
                None => Err(refused(
                    "playbook",
                    "nothing recorded to release: the quarantine did not reach its second phase"
                        .into(),
                )),
            }
        }
        // As `quell release` by default: a leaked key stays inactive until a person decides.
        "iam.release_user" | "iam.release_role" | "lambda.release" => {
            containments::release(m, place, inverse, target, &named, false).await
        }
        "iam.restore_sessions" => {
            let who = role_of(place, target);
            let p = Principal {
                kind: Kind::Role,
                who: &who,
            };
            let mut results = crate::entities::iam::release(&m.iam, p, &refs, false).await;
            results.pop().map_or_else(
                || {
                    Err(refused(
                        "playbook",
                        "no revocation recorded to release".into(),
                    ))
                },
                |(_, r)| r,
            )
        }
        other => Err(refused(
            "playbook",
            format!("this responder build cannot release with `{other}`"),
        )),
    }
}

fn text_map(with: &Value, key: &str) -> Vec<(String, String)> {
    with[key]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| {
            (
                k.clone(),
                v.as_str().map_or_else(|| v.to_string(), str::to_owned),
            )
        })
        .collect()
}

async fn current_tags(m: &MemberClients, id: &str) -> Result<Map<String, Value>, CallError> {
    let out = m
        .ec2
        .describe_tags()
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("resource-id")
                .values(id)
                .build(),
        )
        .send()
        .await
        .described("ec2:DescribeTags")?;
    Ok(out
        .tags()
        .iter()
        .filter_map(|t| Some((t.key()?.to_owned(), json!(t.value().unwrap_or_default()))))
        .collect())
}

async fn tag(m: &MemberClients, id: &str, with: &Value) -> Result<Acted, CallError> {
    let tags = text_map(with, "tags");
    let before = current_tags(m, id).await?;
    let prior: Map<String, Value> = tags
        .iter()
        .map(|(k, _)| (k.clone(), before.get(k).cloned().unwrap_or(Value::Null)))
        .collect();
    let mut call = m.ec2.create_tags().resources(id);
    for (k, v) in &tags {
        call = call.tags(Tag::builder().key(k).value(v).build());
    }
    call.send().await.described("ec2:CreateTags")?;
    let keys: Vec<&str> = tags.iter().map(|(k, _)| k.as_str()).collect();
    Ok(Acted::one(
        "tags",
        StepOutcome::done(
            format!("tagged {id}: {}", keys.join(", ")),
            json!({ "tags": prior }),
            json!({ "tags": tags.iter().map(|(k, v)| (k.clone(), json!(v))).collect::<Map<_, _>>() }),
        ),
        Map::new(),
    ))
}

async fn untag(m: &MemberClients, id: &str, with: &Value) -> Result<Acted, CallError> {
    let keys: Vec<String> = with["keys"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|k| k.as_str().map(str::to_owned))
        .collect();
    let before = current_tags(m, id).await?;
    let prior: Map<String, Value> = keys
        .iter()
        .map(|k| (k.clone(), before.get(k).cloned().unwrap_or(Value::Null)))
        .collect();
    let mut call = m.ec2.delete_tags().resources(id);
    for k in &keys {
        call = call.tags(Tag::builder().key(k).build());
    }
    call.send().await.described("ec2:DeleteTags")?;
    Ok(Acted::one(
        "tags",
        StepOutcome::done(
            format!("removed tags from {id}: {}", keys.join(", ")),
            json!({ "tags": prior }),
            json!({ "tags": keys.iter().map(|k| (k.clone(), Value::Null)).collect::<Map<_, _>>() }),
        ),
        Map::new(),
    ))
}

/// Puts each tag back as it was before the step, unless someone changed it since: a tag whose
/// value is no longer the one the step set is left alone and named.
async fn restore_tags(
    m: &MemberClients,
    id: &str,
    parts: &[Step],
) -> Result<StepOutcome, CallError> {
    let Some(step) = parts.iter().find(|s| s.name == "tags") else {
        return Err(refused(
            "playbook",
            "no tag change recorded to release".into(),
        ));
    };
    let now = current_tags(m, id).await?;
    let mut put = Vec::new();
    let mut delete = Vec::new();
    let mut drifted = Vec::new();
    for (key, set) in step.new["tags"].as_object().into_iter().flatten() {
        if now.get(key).unwrap_or(&Value::Null) != set {
            drifted.push(key.clone());
            continue;
        }
        match step.prior["tags"].get(key).and_then(Value::as_str) {
            Some(value) => put.push((key.clone(), value.to_owned())),
            None => delete.push(key.clone()),
        }
    }
    if !put.is_empty() {
        let mut call = m.ec2.create_tags().resources(id);
        for (k, v) in &put {
            call = call.tags(Tag::builder().key(k).value(v).build());
        }
        call.send().await.described("ec2:CreateTags")?;
    }
    if !delete.is_empty() {
        let mut call = m.ec2.delete_tags().resources(id);
        for k in &delete {
            call = call.tags(Tag::builder().key(k).build());
        }
        call.send().await.described("ec2:DeleteTags")?;
    }
    let mut detail = format!(
        "tags on {id} put back as they were ({} restored, {} removed)",
        put.len(),
        delete.len()
    );
    if !drifted.is_empty() {
        let _ = write!(
            detail,
            "; changed since, left alone: {}",
            drifted.join(", ")
        );
    }
    Ok(StepOutcome::done(
        detail,
        step.new.clone(),
        step.prior.clone(),
    ))
}

async fn snapshot_volumes(c: &Ctx<'_>, with: &Value) -> Result<Acted, CallError> {
    let Some(facts) = instance::facts(c.ec2, c.instance).await? else {
        return Err(refused(
            "ec2:DescribeInstances",
            format!("{} does not exist", c.instance.id),
        ));
    };
    let description = with["description"].as_str().map_or_else(
        || format!("Quell evidence, run {}", c.request_id),
        |d| d.chars().take(255).collect(),
    );
    let mut taken = Vec::new();
    for volume in &facts.volumes {
        let snap = c
            .ec2
            .create_snapshot()
            .volume_id(volume)
            .description(&description)
            .tag_specifications(
                TagSpecification::builder()
                    .resource_type(ResourceType::Snapshot)
                    .tags(Tag::builder().key("quell:run").value(c.request_id).build())
                    .tags(
                        Tag::builder()
                            .key("quell:source-instance")
                            .value(&c.instance.id)
                            .build(),
                    )
                    .build(),
            )
            .send()
            .await
            .described("ec2:CreateSnapshot")?;
        taken.push(snap.snapshot_id().unwrap_or_default().to_owned());
    }
    let mut outputs = Map::new();
    outputs.insert("snapshot_ids".into(), json!(taken));
    let outcome = if taken.is_empty() {
        StepOutcome::skipped(
            "the instance has no EBS volumes to snapshot",
            json!({ "volumes": [] }),
        )
    } else {
        StepOutcome::done(
            format!(
                "{} evidence snapshot(s) started: {}",
                taken.len(),
                taken.join(", ")
            ),
            json!({ "volumes": facts.volumes }),
            json!({ "snapshots": taken }),
        )
    };
    Ok(Acted::one("snapshots", outcome, outputs))
}

async fn quarantine(
    c: &Ctx<'_>,
    with: &Value,
    phase: u8,
    wait_seconds: i32,
) -> Result<Acted, CallError> {
    let Some(facts) = instance::facts(c.ec2, c.instance).await? else {
        return Err(refused(
            "ec2:DescribeInstances",
            format!("{} does not exist", c.instance.id),
        ));
    };
    let last = match with["profile"].as_str() {
        Some("patch_egress") => "patch_egress_groups",
        _ => "isolation_groups",
    };
    let part = if phase <= 1 { "untracked_groups" } else { last };
    let outcome = instance::run(c, &facts, part, &|_| None).await?;
    let mut outputs = Map::new();
    if phase <= 1 {
        outputs.insert(
            "previous_groups".into(),
            outcome.prior["interfaces"].clone(),
        );
    } else {
        outputs.insert("isolation_group".into(), outcome.new["group"].clone());
    }
    Ok(Acted {
        parts: vec![(part.to_owned(), outcome)],
        outputs,
        next_phase: (phase <= 1).then_some((2, i64::from(wait_seconds.max(0)))),
    })
}

/// An SSM document's name and its parameters.
type Command = (String, Vec<(String, Vec<String>)>);

/// The document and parameters a command step sends: the patch baseline for `patch.*`, an
/// allow-listed document for `ssm.run_document` (checked again here: the document is not
/// trusted to have been checked).
fn command_of(action: &str, with: &Value, allowed: &[String]) -> Result<Command, CallError> {
    let baseline = quell_playbook::catalogue::DEFAULT_DOCUMENTS[0].to_owned();
    match action {
        "patch.scan" => Ok((baseline, vec![("Operation".into(), vec!["Scan".into()])])),
        "patch.install" => {
            let reboot = match with["reboot"].as_str() {
                Some("never") => "NoReboot",
                _ => "RebootIfNeeded",
            };
            Ok((
                baseline,
                vec![
                    ("Operation".into(), vec!["Install".into()]),
                    ("RebootOption".into(), vec![reboot.into()]),
                ],
            ))
        }
        _ => {
            let document = with["document"].as_str().unwrap_or_default().to_owned();
            let permitted = quell_playbook::catalogue::DEFAULT_DOCUMENTS
                .contains(&document.as_str())
                || allowed.contains(&document);
            if !permitted {
                return Err(refused(
                    "ssm:SendCommand",
                    format!("the SSM document {document:?} is not allow-listed (ssm_documents in the configuration)"),
                ));
            }
            let parameters = text_map(with, "parameters")
                .into_iter()
                .map(|(k, v)| (k, vec![v]))
                .collect();
            Ok((document, parameters))
        }
    }
}

async fn send_command(
    m: &MemberClients,
    place: &Place<'_>,
    instance: &str,
    document: &str,
    parameters: &[(String, Vec<String>)],
) -> Result<Acted, CallError> {
    let mut call = m
        .ssm
        .send_command()
        .document_name(document)
        .instance_ids(instance)
        // SSM keeps at most 100 characters of comment.
        .comment(place.run.chars().take(100).collect::<String>());
    for (name, values) in parameters {
        call = call.parameters(name, values.clone());
    }
    // An instance SSM does not manage is refused here (InvalidInstanceId): nothing was sent.
    let sent = call.send().await.described("ssm:SendCommand")?;
    let id = sent
        .command()
        .and_then(|c| c.command_id())
        .unwrap_or_default()
        .to_owned();
    Ok(Acted {
        parts: vec![(
            "send_command".into(),
            StepOutcome::done(
                format!("{document} sent to {instance} (command {id})"),
                Value::Null,
                json!({ "command_id": id, "document": document }),
            ),
        )],
        outputs: Map::new(),
        next_phase: Some((2, COMMAND_POLL_SECONDS)),
    })
}

/// The command's result on the instance: done, failed, or ask again later.
async fn command_result(
    m: &MemberClients,
    instance: &str,
    earlier: &[Step],
    phase: u8,
) -> Result<Acted, CallError> {
    let Some(id) = earlier
        .iter()
        .rev()
        .find(|s| s.name.ends_with(".send_command"))
        .and_then(|s| s.new["command_id"].as_str())
    else {
        return Err(refused(
            "ssm:GetCommandInvocation",
            "no command was recorded as sent".into(),
        ));
    };
    let out = match m
        .ssm
        .get_command_invocation()
        .command_id(id)
        .instance_id(instance)
        .send()
        .await
        .described("ssm:GetCommandInvocation")
    {
        Ok(out) => out,
        // Asked too soon after sending: SSM has not registered the invocation yet.
        Err(e) if e.is_code("InvocationDoesNotExist") => return Ok(later(phase)),
        Err(e) => return Err(e),
    };
    let status = out
        .status()
        .map(|s| s.as_str().to_owned())
        .unwrap_or_default();
    match status.as_str() {
        "Pending" | "InProgress" | "Delayed" => Ok(later(phase)),
        "Success" => {
            let mut outputs = Map::new();
            outputs.insert("command_id".into(), json!(id));
            outputs.insert("status".into(), json!(status));
            let shown: Option<String> = out
                .standard_output_content()
                .map(|o| o.chars().take(2000).collect());
            Ok(Acted::one(
                "command_result",
                StepOutcome::done(
                    format!("command {id} succeeded on {instance}"),
                    Value::Null,
                    json!({ "command_id": id, "status": status, "output": shown }),
                ),
                outputs,
            ))
        }
        other => Err(refused(
            "ssm:GetCommandInvocation",
            format!(
                "command {id} ended {other} on {instance}: {}",
                out.standard_error_content()
                    .unwrap_or_default()
                    .chars()
                    .take(500)
                    .collect::<String>()
            ),
        )),
    }
}

/// Nothing new yet: the next poll.
fn later(phase: u8) -> Acted {
    Acted {
        parts: Vec::new(),
        outputs: Map::new(),
        next_phase: Some((phase.saturating_add(1), COMMAND_POLL_SECONDS)),
    }
}

/// The instance whose role credentials a session used: EC2 names an instance role's sessions
/// after the instance, so the session name of `principal_id` (`ROLEID:SESSION`) is the instance
/// id, which is read back and accepted only when its profile holds the run's role.
async fn session_instance(m: &MemberClients, role: &str, with: &Value) -> Result<Acted, CallError> {
    let principal = with["principal_id"].as_str().unwrap_or_default();
    let session = principal
        .split_once(':')
        .map(|(_, s)| s)
        .unwrap_or_default();
    let looks_like_instance = session
        .strip_prefix("i-")
        .is_some_and(|h| (8..=17).contains(&h.len()) && h.chars().all(|c| c.is_ascii_hexdigit()));
    if !looks_like_instance {
        return Err(refused(
            "playbook",
            format!(
                "the session {principal:?} is not an instance's: its name is not an instance id"
            ),
        ));
    }
    let vm = json!(crate::runs::resource::instance(m, session).await?);
    let Some(profile) = vm["profile_arn"].as_str() else {
        return Err(refused(
            "ec2:DescribeInstances",
            format!("{session} does not exist or has no instance profile"),
        ));
    };
    let name = profile.rsplit('/').next().unwrap_or_default();
    let roles = m
        .iam
        .get_instance_profile()
        .instance_profile_name(name)
        .send()
        .await
        .described("iam:GetInstanceProfile")?;
    let holds = roles
        .instance_profile()
        .is_some_and(|p| p.roles().iter().any(|r| r.role_name() == role));
    if !holds {
        return Err(refused(
            "iam:GetInstanceProfile",
            format!("{session}'s instance profile does not hold the role {role}: the session is not its"),
        ));
    }
    let mut outputs = Map::new();
    outputs.insert("instance_id".into(), json!(session));
    Ok(Acted::one(
        "session_instance",
        StepOutcome::done(
            format!("the session came from {session}, whose profile holds {role}"),
            Value::Null,
            json!({ "instance_id": session }),
        ),
        outputs,
    ))
}
