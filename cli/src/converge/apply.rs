//! Carries out a plan step by step, in dependency order: trusted access, the secret, the
//! artifacts stack, the responder package, the security and management stacks, then each
//! StackSet (template and parameters, then stack instances to add, remove and retry).

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use anyhow::Context as _;
use quell_responder::aws_error::Described;
use serde::Serialize;

use super::inputs::{known, Inputs};
use super::plan::{self, Action, InstanceChanges, Plan, Value};
use super::stack::DeployedStack;
use super::stack_set::{paint_status, Deployed, Instance, Outcome, StackSet};
use super::{organization, secret, Context, Observed, StackKind, SENSITIVE};
use crate::calls::{self, client, CallCount};
use crate::deployment::{self, Deployment};
use crate::printer::{Printer, Tone};
use crate::render::StackSetDefinition;

#[derive(Debug, Serialize)]
pub struct Summary {
    pub organization_id: String,
    pub security_account: String,
    pub home_region: String,
    /// False when the plan had nothing to change.
    pub applied: bool,
    pub plan: Plan,
    pub artifact_bucket: String,
    pub artifact_key: String,
    pub stack_sets: Vec<StackSetResult>,
    /// Stack instances an operation left failed, with CloudFormation's reasons.
    pub failed_instances: Vec<FailedInstance>,
    pub containment_topic_arn: String,
    pub audit_topic_arn: String,
    pub aws_calls: CallCount,
}

#[derive(Debug, Serialize)]
pub struct StackSetResult {
    pub name: String,
    pub regions: Vec<String>,
    pub instances: Vec<Instance>,
}

#[derive(Debug, Serialize)]
pub struct FailedInstance {
    pub stack_set: String,
    #[serde(flatten)]
    pub instance: Instance,
}

impl Summary {
    /// Nothing to change: what is deployed, from what was read.
    pub async fn unchanged(
        ctx: &Context,
        observed: &Observed,
        plan: Plan,
    ) -> anyhow::Result<Summary> {
        let stack_sets = ctx
            .definitions
            .iter()
            .zip(&observed.stack_sets)
            .filter(|(_, s)| s.is_some())
            .map(|(d, s)| StackSetResult {
                name: d.full_name(&ctx.config),
                regions: d.regions(&ctx.config),
                instances: s.as_ref().map(|s| s.instances.clone()).unwrap_or_default(),
            })
            .collect();
        let bucket = observed
            .artifacts
            .as_ref()
            .and_then(|a| a.outputs.get("ArtifactBucketName").cloned())
            .unwrap_or_default();
        finish(ctx, plan, false, bucket, stack_sets, Vec::new()).await
    }

    pub fn text(&self, printer: &Printer) -> String {
        let mut t = String::new();
        let headline = if self.applied {
            format!("Quell is deployed in organization {}", self.organization_id)
        } else {
            format!(
                "Nothing to change: Quell in organization {} matches the configuration and this build",
                self.organization_id
            )
        };
        let _ = writeln!(t, "\n{}", printer.paint(&headline, Tone::Strong));
        for s in &self.plan.stacks {
            let _ = writeln!(
                t,
                "  stack {:<22} {} {}  {}",
                s.name,
                s.account,
                s.region,
                match s.change.action {
                    Action::Create => "created",
                    Action::Replace => "replaced",
                    Action::Update => "updated",
                    Action::Unchanged => "unchanged",
                }
            );
        }
        let _ = writeln!(
            t,
            "  responder package s3://{}/{} ({})",
            self.artifact_bucket,
            self.artifact_key,
            if self.plan.upload_artifact {
                "uploaded"
            } else {
                "unchanged"
            }
        );
        for set in &self.stack_sets {
            let _ = writeln!(
                t,
                "  stack set {} ({} instances):",
                set.name,
                set.instances.len()
            );
            for i in &set.instances {
                let _ = writeln!(
                    t,
                    "    {} {:<14} {}",
                    i.account,
                    i.region,
                    paint_status(printer, i.shown_status())
                );
            }
        }
        if !self.failed_instances.is_empty() {
            let _ = writeln!(
                t,
                "\n{}",
                printer.paint(
                    &format!("{} stack instances failed:", self.failed_instances.len()),
                    Tone::Bad
                )
            );
            for f in &self.failed_instances {
                let _ = writeln!(
                    t,
                    "  {} {} {}: {}",
                    f.stack_set,
                    f.instance.account,
                    f.instance.region,
                    f.instance.reason.as_deref().unwrap_or("no reason given")
                );
            }
            let _ = writeln!(
                t,
                "Fix the cause in those accounts, then run `quell upgrade --retry-failed`."
            );
        }
        let _ = writeln!(t, "\nContainment topic: {}", self.containment_topic_arn);
        let _ = writeln!(
            t,
            "Audit topic:       {} (subscribe your team's address)",
            self.audit_topic_arn
        );
        let _ = writeln!(
            t,
            "AWS calls:         {} ({} writes)",
            self.aws_calls.total, self.aws_calls.writes
        );
        t
    }
}

async fn finish(
    ctx: &Context,
    plan: Plan,
    applied: bool,
    artifact_bucket: String,
    stack_sets: Vec<StackSetResult>,
    failed_instances: Vec<FailedInstance>,
) -> anyhow::Result<Summary> {
    let deployment = Deployment::find(&ctx.security, &ctx.config.name)
        .await?
        .context("the security stack is missing: run `quell install` to create it")?;
    Ok(Summary {
        organization_id: ctx.org.id.clone(),
        security_account: ctx.config.security_account.clone(),
        home_region: ctx.config.home_region.clone(),
        applied,
        artifact_key: plan.artifact_key.clone(),
        plan,
        artifact_bucket,
        stack_sets,
        failed_instances,
        containment_topic_arn: deployment.containment_topic_arn,
        audit_topic_arn: deployment.audit_topic_arn,
        aws_calls: calls::log().count(),
    })
}

/// Creates, replaces or updates one plain stack as the fresh inputs require; returns its outputs.
async fn converge_stack(
    ctx: &Context,
    kind: StackKind,
    deployed: Option<&DeployedStack>,
    inputs: &Inputs,
    printer: &Printer,
) -> anyhow::Result<HashMap<String, String>> {
    let stack = ctx.stack(kind);
    let template = ctx.template_of(kind);
    let wanted = inputs.stack_parameters(ctx, kind);
    let current = deployed.map(|d| plan::Current {
        template: &d.template,
        parameters: &d.parameters,
        failed_creation: d.failed_creation(),
    });
    let change = plan::diff(template, &wanted, current.as_ref(), SENSITIVE);
    let named_iam = kind != StackKind::Artifacts;
    match change.action {
        Action::Unchanged => Ok(deployed.map(|d| d.outputs.clone()).unwrap_or_default()),
        Action::Replace => {
            stack.delete(printer).await?;
            stack
                .apply(false, template, &known(&wanted)?, named_iam, printer)
                .await
        }
        Action::Create => {
            stack
                .apply(false, template, &known(&wanted)?, named_iam, printer)
                .await
        }
        Action::Update => {
            stack
                .apply(true, template, &known(&wanted)?, named_iam, printer)
                .await
        }
    }
}

fn output(outputs: &HashMap<String, String>, key: &str, stack: &str) -> anyhow::Result<Value> {
    outputs
        .get(key)
        .cloned()
        .map(Value::Known)
        .with_context(|| format!("stack {stack} has no output {key}: its template is not Quell's"))
}

pub async fn apply(
    ctx: &Context,
    observed: &Observed,
    plan: Plan,
    printer: &Printer,
) -> anyhow::Result<Summary> {
    if plan.trusted_access {
        organization::ensure_trusted_access(&ctx.aws, printer).await?;
    }
    let mut inputs = Inputs::observed(ctx, observed);
    if plan.create_secret {
        let (arn, ids) = secret::ensure(
            &ctx.security,
            &deployment::secret_name(&ctx.config.name),
            printer,
        )
        .await?;
        inputs.secret_arn = Value::Known(arn);
        inputs.role_external_id = Value::Known(ids.role_external_id);
    }

    let name = ctx.stack(StackKind::Artifacts).name;
    let outputs = converge_stack(
        ctx,
        StackKind::Artifacts,
        observed.artifacts.as_ref(),
        &inputs,
        printer,
    )
    .await?;
    inputs.artifact_bucket = output(&outputs, "ArtifactBucketName", &name)?;
    let Value::Known(bucket) = inputs.artifact_bucket.clone() else {
        unreachable!("set just above")
    };
    if plan.upload_artifact {
        upload(ctx, &bucket, printer).await?;
    }
    if let (Some(_), Some(document)) = (&plan.upload_playbooks, &ctx.config.playbook_document) {
        upload_playbooks(ctx, &bucket, document, printer).await?;
    }

    let name = ctx.stack(StackKind::Security).name;
    let outputs = converge_stack(
        ctx,
        StackKind::Security,
        observed.security.as_ref(),
        &inputs,
        printer,
    )
    .await?;
    inputs.responder_role_arn = output(&outputs, "ResponderRoleArn", &name)?;
    inputs.responder_role_id = output(&outputs, "ResponderRoleId", &name)?;
    inputs.central_bus_arn = output(&outputs, "CentralBusArn", &name)?;
    // After the security stack: its rule is what sends the actions' events to the responder.
    if !plan.custom_actions.is_empty() {
        let task = printer.task("Security Hub custom actions");
        super::custom_actions::create(
            &super::custom_actions::client(&ctx.security),
            &plan.custom_actions,
        )
        .await?;
        task.done(&format!(
            "Security Hub custom actions created: {}",
            plan.custom_actions
                .iter()
                .map(|a| format!("{:?}", a.name))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if !plan.remove_custom_actions.is_empty() {
        let task = printer.task("Security Hub custom actions no playbook names");
        let deleted = super::custom_actions::remove(
            &super::custom_actions::client(&ctx.security),
            &plan.remove_custom_actions,
        )
        .await?;
        task.done(&format!(
            "Security Hub custom actions deleted: {}",
            deleted.join(", ")
        ));
    }
    converge_stack(
        ctx,
        StackKind::Management,
        observed.management.as_ref(),
        &inputs,
        printer,
    )
    .await?;

    // Instances moving to another stack set leave the one they are in before any stack set adds.
    for (definition, planned) in ctx.definitions.iter().zip(&plan.stack_sets) {
        let set = ctx.stack_set(definition);
        for call in &planned.instance_changes.handover {
            check(&set, set.remove(call, printer).await?)?;
        }
    }
    let mut results = Vec::new();
    let mut failed = Vec::new();
    for ((definition, deployed), planned) in ctx
        .definitions
        .iter()
        .zip(&observed.stack_sets)
        .zip(&plan.stack_sets)
    {
        if planned.skipped {
            continue;
        }
        let set = ctx.stack_set(definition);
        let template = &ctx.rendered[definition.template.as_str()];
        let wanted = inputs.stack_set_parameters(definition)?;
        let (instances, failures) = converge_stack_set(
            &set,
            definition,
            template,
            &wanted,
            deployed.as_ref(),
            &planned.instance_changes,
            printer,
        )
        .await?;
        failed.extend(failures);
        results.push(StackSetResult {
            name: set.name.clone(),
            regions: definition.regions(&ctx.config),
            instances,
        });
    }

    if ctx.aws.sandbox().is_some() {
        let deployment = Deployment::find(&ctx.security, &ctx.config.name)
            .await?
            .context("the security stack vanished during the run")?;
        crate::sandbox::host::subscribe_inbox(&ctx.security, &deployment, &ctx.config.name).await?;
        crate::sandbox::stand_ins::apply(&ctx.security, &deployment, &ctx.config.name).await?;
    }
    finish(ctx, plan, true, bucket, results, failed).await
}

/// Brings one stack set in line: created or updated, then its instances added, removed and
/// retried. Returns its instances afterwards and those left failed.
pub async fn converge_stack_set(
    set: &StackSet<'_>,
    definition: &StackSetDefinition,
    template: &str,
    wanted: &BTreeMap<String, Value>,
    deployed: Option<&Deployed>,
    changes: &InstanceChanges,
    printer: &Printer,
) -> anyhow::Result<(Vec<Instance>, Vec<FailedInstance>)> {
    let mut outcomes = Vec::new();
    match deployed {
        None => {
            set.create(definition, template, &known(wanted)?).await?;
            printer.status(&format!("stack set {} created", set.name));
        }
        Some(d) => {
            let current = plan::Current {
                template: &d.template,
                parameters: &d.parameters,
                failed_creation: false,
            };
            if plan::diff(template, wanted, Some(&current), SENSITIVE).action != Action::Unchanged {
                let updated = set
                    .update(definition, template, &known(wanted)?, printer)
                    .await?;
                outcomes.push(check(set, updated)?);
            }
        }
    }
    // Adds first: coverage is never lower than before while the run is under way.
    for call in &changes.add {
        outcomes.push(check(set, set.add(call, printer).await?)?);
    }
    for call in &changes.remove {
        outcomes.push(check(set, set.remove(call, printer).await?)?);
    }
    for call in &changes.retry {
        outcomes.push(check(set, set.retry(call, printer).await?)?);
    }
    let instances = set.instances().await?;
    // The instances still failed once every operation ended, each named once, with the reason
    // the operation gave when it gave one.
    let failed = instances
        .iter()
        .filter(|i| i.failed())
        .map(|i| FailedInstance {
            stack_set: set.name.clone(),
            instance: outcomes
                .iter()
                .flat_map(|o| &o.failed)
                .find(|f| f.account == i.account && f.region == i.region)
                .cloned()
                .unwrap_or_else(|| i.clone()),
        })
        .collect();
    Ok((instances, failed))
}

/// An operation that ended FAILED or STOPPED ends the run: later steps would build on it.
fn check(set: &StackSet<'_>, outcome: Outcome) -> anyhow::Result<Outcome> {
    if !outcome.ended_badly() {
        return Ok(outcome);
    }
    let failed: Vec<String> = outcome
        .failed
        .iter()
        .map(|i| {
            format!(
                "{} {}: {}",
                i.account,
                i.region,
                i.reason.as_deref().unwrap_or("no reason given")
            )
        })
        .collect();
    anyhow::bail!(
        "stack set {} operation {} ended {}{}\nfix the cause, then run `quell upgrade --retry-failed`",
        set.name,
        outcome.operation_id,
        outcome.status,
        if failed.is_empty() {
            String::new()
        } else {
            format!(":\n  {}", failed.join("\n  "))
        }
    )
}

/// Before the security stack names it: the responder reads the document at its next cold start.
async fn upload_playbooks(
    ctx: &Context,
    bucket: &str,
    document: &crate::playbook_document::PlaybookDocument,
    printer: &Printer,
) -> anyhow::Result<()> {
    let task = printer.task(&format!(
        "uploading the declared playbooks to s3://{bucket}/{}",
        document.key
    ));
    client!(aws_sdk_s3, &ctx.security)
        .put_object()
        .bucket(bucket)
        .key(&document.key)
        .content_type("application/json")
        .body(document.body.clone().into())
        .checksum_algorithm(aws_sdk_s3::types::ChecksumAlgorithm::Sha256)
        .send()
        .await
        .described("s3:PutObject")?;
    task.done(&format!(
        "uploaded the declared playbooks ({} bytes)",
        document.body.len()
    ));
    Ok(())
}

async fn upload(ctx: &Context, bucket: &str, printer: &Printer) -> anyhow::Result<()> {
    let package = ctx.package();
    let key = package.key();
    let zip = package.zip()?;
    let task = printer.task(&format!(
        "uploading the responder ({} KiB) to s3://{bucket}/{key}",
        zip.len() / 1024
    ));
    client!(aws_sdk_s3, &ctx.security)
        .put_object()
        .bucket(bucket)
        .key(&key)
        .body(zip.into())
        .checksum_algorithm(aws_sdk_s3::types::ChecksumAlgorithm::Sha256)
        .send()
        .await
        .described("s3:PutObject")?;
    task.done(&format!(
        "uploaded the responder from {}",
        package.binary.display()
    ));
    Ok(())
}
