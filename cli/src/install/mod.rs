//! `quell install`: everything Quell needs, organization-wide, from the management account (or a
//! StackSets delegated administrator).

mod organization;
mod secret;
pub mod stacks;
pub mod stacksets;

use std::fmt::Write as _;

use anyhow::Context;
use aws_sdk_cloudformation::types::CallAs;
use quell_responder::aws_error::Described;
use serde::Serialize;

use crate::args::{GlobalArgs, InstallArgs};
use crate::aws::Aws;
use crate::config::Config;
use crate::deployment::{self, Deployment};
use crate::printer::{confirm, Printer, Tone};
use crate::render::{self, StackSetDefinition};
use crate::{exit, package};
use stacks::{Change, StackSpec};
use stacksets::{Instance, StackSetSpec};

#[derive(Debug, Serialize)]
struct Summary {
    organization_id: String,
    security_account: String,
    home_region: String,
    stacks: Vec<StackResult>,
    artifact: ArtifactResult,
    stack_sets: Vec<StackSetResult>,
    containment_topic_arn: String,
    audit_topic_arn: String,
    how_to_contain: String,
}

#[derive(Debug, Serialize)]
struct StackResult {
    name: String,
    account: String,
    region: String,
    change: Change,
}

#[derive(Debug, Serialize)]
struct ArtifactResult {
    bucket: String,
    key: String,
    uploaded: bool,
}

#[derive(Debug, Serialize)]
struct StackSetResult {
    name: String,
    regions: Vec<String>,
    instances: Vec<Instance>,
}

pub async fn run(global: &GlobalArgs, args: &InstallArgs, printer: &Printer) -> anyhow::Result<u8> {
    let config = Config::load(&args.config)?;
    let rendered = render::render_all(&config)?;
    let bootstrap = match &args.bootstrap {
        Some(p) => p.clone(),
        None => package::default_bootstrap()?,
    };
    let package = package::build(&bootstrap, config.responder.architecture)?;
    let aws = Aws::connect(global, &config.home_region).await?;
    let caller = aws.caller().await?;
    let org = organization::check(&aws, &caller, &config, args.delegated_admin).await?;
    let call_as = args.delegated_admin.then_some(CallAs::DelegatedAdmin);
    let definitions = StackSetDefinition::all();

    printer.status(&format!(
        "installing Quell into organization {} as {}",
        org.id, caller.arn
    ));
    printer.status(&format!(
        "  security stack {} in {} ({})",
        deployment::security_stack(&config.name),
        config.security_account,
        config.home_region
    ));
    for d in &definitions {
        printer.status(&format!(
            "  stack set {} -> {} in {}",
            d.full_name(&config),
            org.target_description(),
            d.regions(&config).join(", ")
        ));
    }
    if !confirm(printer, "Install Quell?", args.yes)? {
        return Err(exit::refused("install cancelled; nothing was changed"));
    }

    organization::ensure_trusted_access(&aws, printer).await?;
    let security = aws.security_account(&caller, &config).await?;
    let (secret_arn, ids) =
        secret::ensure(&security, &deployment::secret_name(&config.name), printer).await?;
    let security_place = format!(
        "security account {} in {}",
        config.security_account, config.home_region
    );
    let mut stacks_done = Vec::new();

    let (change, artifacts) = stacks::deploy(
        &security,
        &StackSpec {
            name: &deployment::artifacts_stack(&config.name),
            template: &rendered["artifacts.yaml"],
            parameters: vec![],
            named_iam: false,
            place: security_place.clone(),
        },
        printer,
    )
    .await?;
    stacks_done.push(StackResult {
        name: deployment::artifacts_stack(&config.name),
        account: config.security_account.clone(),
        region: config.home_region.clone(),
        change,
    });
    let bucket = artifacts
        .get("ArtifactBucketName")
        .cloned()
        .context("the artifacts stack has no ArtifactBucketName output")?;
    let uploaded = upload(&security, &bucket, &package, printer).await?;

    let (change, outputs) = stacks::deploy(
        &security,
        &StackSpec {
            name: &deployment::security_stack(&config.name),
            template: &rendered["security.yaml"],
            parameters: vec![
                ("ArtifactBucket", bucket.clone()),
                ("ArtifactKey", package.key()),
                ("OrganizationId", org.id.clone()),
                ("ManagementAccountId", org.management_account.clone()),
                ("ExternalIdSecretArn", secret_arn.clone()),
            ],
            named_iam: true,
            place: security_place.clone(),
        },
        printer,
    )
    .await?;
    stacks_done.push(StackResult {
        name: deployment::security_stack(&config.name),
        account: config.security_account.clone(),
        region: config.home_region.clone(),
        change,
    });
    let get = |k: &str| {
        outputs
            .get(k)
            .cloned()
            .with_context(|| format!("the security stack has no output {k}"))
    };
    let responder_role = get("ResponderRoleArn")?;
    let central_bus = get("CentralBusArn")?;

    let management = aws
        .account(
            &caller,
            &org.management_account,
            &config.home_region,
            &config.security_account_role,
        )
        .await?;
    let (change, _) = stacks::deploy(
        &management,
        &StackSpec {
            name: &deployment::management_stack(&config.name),
            template: &rendered["management.yaml"],
            parameters: vec![
                ("ResponderRoleArn", responder_role.clone()),
                ("RoleExternalId", ids.role_external_id.clone()),
                ("OrganizationId", org.id.clone()),
            ],
            named_iam: true,
            place: format!(
                "management account {} in {}",
                org.management_account, config.home_region
            ),
        },
        printer,
    )
    .await?;
    stacks_done.push(StackResult {
        name: deployment::management_stack(&config.name),
        account: org.management_account.clone(),
        region: config.home_region.clone(),
        change,
    });

    let cfn = aws_sdk_cloudformation::Client::new(aws.base());
    let mut stack_sets = Vec::new();
    for definition in &definitions {
        let parameters = definition
            .parameters
            .iter()
            .map(|p| {
                let value = match p.as_str() {
                    "ResponderRoleArn" => responder_role.clone(),
                    "RoleExternalId" => ids.role_external_id.clone(),
                    "CentralBusArn" => central_bus.clone(),
                    other => anyhow::bail!(
                        "stacksets/{}.yaml names parameter {other}, which install does not know",
                        definition.name
                    ),
                };
                Ok((p.clone(), value))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let spec = StackSetSpec {
            name: definition.full_name(&config),
            definition,
            template: &rendered[definition.template.as_str()],
            parameters,
            regions: definition.regions(&config),
            call_as: call_as.clone(),
            preferences: &config.operation_preferences,
        };
        stacksets::ensure(&cfn, &spec, printer).await?;
        stacksets::add_instances(&cfn, &spec, &org.targets, printer).await?;
        let instances = stacksets::list_instances(&cfn, &spec.name, call_as.clone()).await?;
        stack_sets.push(StackSetResult {
            name: spec.name.clone(),
            regions: spec.regions.clone(),
            instances,
        });
    }

    let deployment = Deployment::find(&security, &config.name)
        .await?
        .context("the security stack vanished during install")?;
    if aws.sandbox().is_some() {
        crate::sandbox::host::subscribe_inbox(&security, &deployment, &config.name).await?;
    }
    let summary = Summary {
        organization_id: org.id.clone(),
        security_account: config.security_account.clone(),
        home_region: config.home_region.clone(),
        stacks: stacks_done,
        artifact: ArtifactResult {
            bucket,
            key: package.key(),
            uploaded,
        },
        stack_sets,
        containment_topic_arn: deployment.containment_topic_arn.clone(),
        audit_topic_arn: deployment.audit_topic_arn.clone(),
        how_to_contain: format!(
            "quell contain arn:aws:iam::ACCOUNT:user/NAME --reason TEXT --config {}",
            args.config.display()
        ),
    };
    printer.result(&summary, || summary_text(&summary, printer));
    Ok(exit::SUCCESS)
}

async fn upload(
    security: &aws_config::SdkConfig,
    bucket: &str,
    package: &package::Package,
    printer: &Printer,
) -> anyhow::Result<bool> {
    let s3 = aws_sdk_s3::Client::new(security);
    let key = package.key();
    match s3
        .head_object()
        .bucket(bucket)
        .key(&key)
        .send()
        .await
        .described("s3:HeadObject")
    {
        Ok(_) => {
            printer.status(&format!("responder package {key} is already uploaded"));
            return Ok(false);
        }
        Err(e)
            if e.is_code("NotFound")
                || e.is_code("NoSuchKey")
                || e.failure.message.contains("404") => {}
        Err(e) => return Err(e.into()),
    }
    let task = printer.task(&format!(
        "uploading the responder ({} KiB) to s3://{bucket}/{key}",
        package.zip.len() / 1024
    ));
    s3.put_object()
        .bucket(bucket)
        .key(&key)
        .body(package.zip.clone().into())
        .checksum_algorithm(aws_sdk_s3::types::ChecksumAlgorithm::Sha256)
        .send()
        .await
        .described("s3:PutObject")
        .inspect_err(|_| ())?;
    task.done(&format!(
        "uploaded the responder from {}",
        package.binary.display()
    ));
    Ok(true)
}

fn summary_text(s: &Summary, printer: &Printer) -> String {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "\n{}",
        printer.paint(
            &format!("Quell is installed in organization {}", s.organization_id),
            Tone::Strong
        )
    );
    for stack in &s.stacks {
        let _ = writeln!(
            t,
            "  stack {:<22} {} {}  {:?}",
            stack.name, stack.account, stack.region, stack.change
        );
    }
    let _ = writeln!(
        t,
        "  responder package s3://{}/{} ({})",
        s.artifact.bucket,
        s.artifact.key,
        if s.artifact.uploaded {
            "uploaded"
        } else {
            "unchanged"
        }
    );
    for set in &s.stack_sets {
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
                stacksets::paint_status(printer, &i.status)
            );
        }
    }
    let _ = writeln!(t, "\nContainment topic: {}", s.containment_topic_arn);
    let _ = writeln!(
        t,
        "Audit topic:       {} (subscribe your team's address)",
        s.audit_topic_arn
    );
    let _ = writeln!(t, "To contain:        {}", s.how_to_contain);
    t
}
