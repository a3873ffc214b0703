//! `quell uninstall`: removes stack instances, StackSets and the stacks, then finds what Quell
//! made outside CloudFormation and deals with it: unused isolation groups are deleted, groups in
//! use and entities still contained are listed (or released first with `--release-all`), the
//! ledger is kept as evidence unless `--delete-ledger` exports and deletes it.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::Context as _;
use aws_sdk_ec2::types::Filter;
use futures::stream::{self, StreamExt};
use quell_responder::contract::{Action, Options};
use quell_responder::entities::instance::quell_groups;
use quell_responder::ledger::{Ledger, Record, Status};
use serde::Serialize;

use crate::args::{GlobalArgs, UninstallArgs};
use crate::calls::client;
use crate::contain::{self, Request};
use crate::converge::plan::{self, instance_changes};
use crate::converge::{custom_actions, Context, StackKind};
use crate::deployment;
use crate::printer::{confirm, Printer, Tone};
use crate::{exit, sandbox};
use quell_responder::aws_error::Described;

/// Accounts x Regions scanned at once for leftovers.
const SCAN_CONCURRENCY: usize = 8;

#[derive(Debug, Default, Serialize)]
struct Report {
    removed: Vec<String>,
    released: Vec<String>,
    /// What stays, each with why and what to do.
    left: Vec<Leftover>,
    ledger_export: Option<PathBuf>,
}

#[derive(Debug, Serialize)]
struct Leftover {
    what: String,
    why: String,
}

pub async fn run(
    global: &GlobalArgs,
    args: &UninstallArgs,
    printer: &Printer,
) -> anyhow::Result<u8> {
    let ctx = Context::connect(global, args.config.as_deref(), args.delegated_admin).await?;
    let table = deployment::ledger_table(&ctx.config.name);
    let ledger_exists = deployment::ledger_exists(&ctx.security, &ctx.config.name).await?;
    let contained = if ledger_exists {
        still_contained(&ctx, &table).await?
    } else {
        Vec::new()
    };
    printer.status(&format!(
        "uninstalling Quell ({}) from organization {}: both StackSets and their instances, the security, artifacts and management stacks, the ExternalId secret and the responder packages",
        ctx.config.name, ctx.org.id
    ));
    if !contained.is_empty() {
        printer.status(&format!(
            "{} entities are contained{}",
            contained.len(),
            if args.release_all {
                "; they will be released first"
            } else {
                " and will stay contained (add --release-all to release them first)"
            }
        ));
    }
    if !confirm(printer, "Uninstall Quell?", args.yes)? {
        return Err(exit::refused("uninstall cancelled; nothing was changed"));
    }

    let mut report = Report::default();
    if args.release_all {
        // Every release at once: the responder works on them side by side, and a large
        // organization's containments are not released one wait after another.
        let requests: Vec<Request> = contained
            .iter()
            .map(|record| Request {
                arn: record.entity.as_deref().unwrap_or_default(),
                reason: "released by quell uninstall --release-all",
                request_id: None,
                action: Action::Release,
                options: Options::default(),
                yes: true,
                config: args.config.as_ref(),
                timeout: 300,
            })
            .collect();
        let outcomes =
            contain::send_all(global, args.config.as_ref(), &requests, "releases", printer).await?;
        let mut unreleased = Vec::new();
        for (request, outcome) in requests.iter().zip(&outcomes) {
            match outcome {
                Some(o) if o.record.status == Status::Succeeded => {
                    report.released.push(request.arn.to_owned());
                }
                Some(o) => unreleased.push(format!(
                    "{} ended {}: {}",
                    request.arn,
                    o.record.status.as_str(),
                    o.record
                        .error
                        .as_deref()
                        .or(o.record.rejection.as_ref().map(|r| r.message.as_str()))
                        .unwrap_or("see the ledger")
                )),
                None => unreleased.push(format!("{} has no outcome after 300 s", request.arn)),
            }
        }
        if !unreleased.is_empty() {
            anyhow::bail!(
                "{} of {} releases did not succeed, so nothing was uninstalled ({} released): {}. Fix them (`quell history ARN`), then run uninstall again",
                unreleased.len(),
                requests.len(),
                report.released.len(),
                unreleased.join("; ")
            );
        }
    } else {
        for record in &contained {
            report.left.push(Leftover {
                what: format!("contained {}", record.entity.as_deref().unwrap_or("?")),
                why: format!(
                    "Quell's controls stay on it ({}); release it with `quell release` before uninstalling, or undo them by hand",
                    record
                        .steps
                        .iter()
                        .map(|s| s.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            });
        }
    }

    // Every StackSet's instances, then the set itself: member roles last, so the responder can
    // act in an account for as long as events still come from it.
    for definition in ctx.definitions.iter().rev() {
        let set = ctx.stack_set(definition);
        let Some(deployed) = set.describe().await? else {
            continue;
        };
        let regions: Vec<String> = deployed
            .instances
            .iter()
            .map(|i| i.region.clone())
            .collect();
        let removals =
            instance_changes(&[], &regions, &deployed.instances, None, &ctx.tree, false).remove;
        for call in &removals {
            let outcome = set.remove(call, printer).await?;
            if outcome.ended_badly() || !outcome.failed.is_empty() {
                anyhow::bail!(
                    "removing stack instances of {} ended {} with failed instances: {}; fix them, then run uninstall again",
                    set.name,
                    outcome.status,
                    outcome
                        .failed
                        .iter()
                        .map(|f| format!("{} {}: {}", f.account, f.region, f.reason.as_deref().unwrap_or("no reason given")))
                        .collect::<Vec<_>>()
                        .join("; ")
                );
            }
        }
        set.delete().await?;
        report.removed.push(format!(
            "stack set {} and its {} stack instances",
            set.name,
            deployed.instances.len()
        ));
    }

    let bucket = ctx
        .stack(StackKind::Artifacts)
        .read()
        .await?
        .and_then(|s| s.outputs.get("ArtifactBucketName").cloned());
    for kind in [
        StackKind::Management,
        StackKind::Security,
        StackKind::Artifacts,
    ] {
        let stack = ctx.stack(kind);
        if stack.read().await?.is_some() {
            stack.delete(printer).await?;
            report
                .removed
                .push(format!("stack {} ({})", stack.name, stack.place));
        }
    }
    if let Some(bucket) = bucket {
        let objects = empty_and_delete_bucket(&ctx, &bucket).await?;
        report.removed.push(format!(
            "bucket {bucket} with {objects} responder package versions"
        ));
    }
    let hub = custom_actions::client(&ctx.security);
    let actions =
        custom_actions::read(&hub, &ctx.config.security_account, &ctx.config.home_region).await?;
    for id in custom_actions::delete(&hub, &actions).await? {
        report
            .removed
            .push(format!("Security Hub custom action {id}"));
    }
    if delete_secret(&ctx).await? {
        report.removed.push(format!(
            "secret {}",
            deployment::secret_name(&ctx.config.name)
        ));
    }
    if ledger_exists {
        ledger(&ctx, &table, args, &mut report).await?;
    }
    // Kept by the security stack's DeletionPolicy under the name CloudFormation gave it.
    report.left.push(Leftover {
        what: format!(
            "log group of the responder in {} ({})",
            ctx.config.security_account, ctx.config.home_region
        ),
        why: format!(
            "the responder's logs are evidence; the stack keeps the group (named {}-security-ResponderLogGroup-...) and its events expire after responder.log_retention_days; delete it in CloudWatch Logs when it is no longer needed",
            ctx.config.name
        ),
    });
    if ctx.aws.sandbox().is_some() {
        sandbox::host::remove_inbox(&ctx.security, &ctx.config.name).await?;
    }
    leftover_groups(&ctx, printer, &mut report).await?;

    printer.result(&report, || text(&report, printer));
    Ok(exit::SUCCESS)
}

/// Entities whose latest successful record is a containment.
async fn still_contained(ctx: &Context, table: &str) -> anyhow::Result<Vec<Record>> {
    let ledger = Ledger::new(client!(aws_sdk_dynamodb, &ctx.security), table);
    let mut latest: BTreeMap<String, Record> = BTreeMap::new();
    // Oldest first, so the newest successful record per entity wins.
    let mut records = ledger.recent(usize::MAX).await?;
    records.reverse();
    for r in records {
        if r.status != Status::Succeeded {
            continue;
        }
        if let Some(entity) = r.entity.clone() {
            latest.insert(entity, r);
        }
    }
    Ok(latest
        .into_values()
        .filter(|r| r.action == Action::Contain)
        .collect())
}

async fn empty_and_delete_bucket(ctx: &Context, bucket: &str) -> anyhow::Result<usize> {
    let s3 = client!(aws_sdk_s3, &ctx.security);
    let mut removed = 0;
    loop {
        let listed = s3
            .list_object_versions()
            .bucket(bucket)
            .send()
            .await
            .described("s3:ListObjectVersions")?;
        let mut ids: Vec<aws_sdk_s3::types::ObjectIdentifier> = Vec::new();
        for v in listed.versions() {
            ids.push(
                aws_sdk_s3::types::ObjectIdentifier::builder()
                    .key(v.key().unwrap_or_default())
                    .set_version_id(v.version_id().map(str::to_owned))
                    .build()?,
            );
        }
        for m in listed.delete_markers() {
            ids.push(
                aws_sdk_s3::types::ObjectIdentifier::builder()
                    .key(m.key().unwrap_or_default())
                    .set_version_id(m.version_id().map(str::to_owned))
                    .build()?,
            );
        }
        if ids.is_empty() {
            break;
        }
        removed += listed.versions().len();
        s3.delete_objects()
            .bucket(bucket)
            .delete(
                aws_sdk_s3::types::Delete::builder()
                    .set_objects(Some(ids))
                    .quiet(true)
                    .build()?,
            )
            .send()
            .await
            .described("s3:DeleteObjects")?;
    }
    s3.delete_bucket()
        .bucket(bucket)
        .send()
        .await
        .described("s3:DeleteBucket")?;
    Ok(removed)
}

/// The ExternalIds are worth nothing without the roles and topic they guard: deleted at once, so
/// that a later install starts with fresh ones.
async fn delete_secret(ctx: &Context) -> anyhow::Result<bool> {
    let sm = client!(aws_sdk_secretsmanager, &ctx.security);
    match sm
        .delete_secret()
        .secret_id(deployment::secret_name(&ctx.config.name))
        .force_delete_without_recovery(true)
        .send()
        .await
        .described("secretsmanager:DeleteSecret")
    {
        Ok(_) => Ok(true),
        Err(e) if e.is_code("ResourceNotFoundException") => Ok(false),
        Err(e) => Err(e.into()),
    }
}

async fn ledger(
    ctx: &Context,
    table: &str,
    args: &UninstallArgs,
    report: &mut Report,
) -> anyhow::Result<()> {
    if !args.delete_ledger {
        report.left.push(Leftover {
            what: format!("ledger table {table} in {}", ctx.config.security_account),
            why: "it is the audit record of every containment; a new install under the same name needs it gone: run uninstall again with --delete-ledger to export it to a file and delete it".into(),
        });
        return Ok(());
    }
    let dynamodb = client!(aws_sdk_dynamodb, &ctx.security);
    let records = Ledger::new(dynamodb.clone(), table)
        .recent(usize::MAX)
        .await?;
    let path = PathBuf::from(format!(
        "{table}-{}.json",
        chrono::Utc::now().format("%Y%m%dT%H%M%SZ")
    ));
    std::fs::write(&path, serde_json::to_vec_pretty(&records)?).with_context(|| {
        format!(
            "cannot write the ledger export {}; the table was not deleted",
            path.display()
        )
    })?;
    // The table is created with deletion protection; it comes off only here, after the export.
    dynamodb
        .update_table()
        .table_name(table)
        .deletion_protection_enabled(false)
        .send()
        .await
        .described("dynamodb:UpdateTable (deletion protection off)")?;
    dynamodb
        .delete_table()
        .table_name(table)
        .send()
        .await
        .described("dynamodb:DeleteTable")?;
    report.removed.push(format!(
        "ledger table {table} ({} records exported to {})",
        records.len(),
        path.display()
    ));
    report.ledger_export = Some(path);
    Ok(())
}

/// Quell's isolation and untracked groups in every target account and Region: deleted when no
/// network interface uses them, listed otherwise.
async fn leftover_groups(
    ctx: &Context,
    printer: &Printer,
    report: &mut Report,
) -> anyhow::Result<()> {
    let places = plan::places(&ctx.targets(), &ctx.config.all_regions());
    let task = printer.task(&format!(
        "looking for Quell's security groups in {} accounts x Regions",
        places.len()
    ));
    let results: Vec<anyhow::Result<(Vec<String>, Vec<Leftover>)>> = stream::iter(places)
        .map(|(account, region)| async move {
            let session = ctx
                .aws
                .account(
                    &ctx.caller,
                    &account,
                    &region,
                    &ctx.config.security_account_role,
                )
                .await?;
            groups_in(&client!(aws_sdk_ec2, &session), &account, &region).await
        })
        .buffer_unordered(SCAN_CONCURRENCY)
        .collect()
        .await;
    task.done("looked for Quell's security groups");
    for r in results {
        match r {
            Ok((removed, left)) => {
                report.removed.extend(removed);
                report.left.extend(left);
            }
            Err(e) => report.left.push(Leftover {
                what: "security groups in one account and Region were not checked".into(),
                why: format!("{e:#}"),
            }),
        }
    }
    Ok(())
}

async fn groups_in(
    ec2: &aws_sdk_ec2::Client,
    account: &str,
    region: &str,
) -> anyhow::Result<(Vec<String>, Vec<Leftover>)> {
    let groups = quell_groups(ec2).await?;
    let (mut removed, mut left) = (Vec::new(), Vec::new());
    for g in &groups {
        let id = g.group_id().unwrap_or_default();
        let users = ec2
            .describe_network_interfaces()
            .filters(Filter::builder().name("group-id").values(id).build())
            .send()
            .await
            .described("ec2:DescribeNetworkInterfaces")?;
        let enis: Vec<&str> = users
            .network_interfaces()
            .iter()
            .filter_map(|n| n.network_interface_id())
            .collect();
        if enis.is_empty() {
            ec2.delete_security_group()
                .group_id(id)
                .send()
                .await
                .described("ec2:DeleteSecurityGroup")?;
            removed.push(format!("security group {id} ({account} {region})"));
        } else {
            left.push(Leftover {
                what: format!("security group {id} ({account} {region})"),
                why: format!(
                    "in use by {}: a contained instance still sits in it; release it, then delete the group",
                    enis.join(", ")
                ),
            });
        }
    }
    Ok((removed, left))
}

fn text(r: &Report, printer: &Printer) -> String {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "\n{}",
        printer.paint("Quell is uninstalled", Tone::Strong)
    );
    for x in &r.released {
        let _ = writeln!(t, "  released {x}");
    }
    for x in &r.removed {
        let _ = writeln!(t, "  {} {x}", printer.paint("removed", Tone::Good));
    }
    if r.left.is_empty() {
        let _ = writeln!(t, "Nothing Quell made is left.");
    } else {
        let _ = writeln!(t, "Left in place:");
        for l in &r.left {
            let _ = writeln!(
                t,
                "  {} {}: {}",
                printer.paint("kept", Tone::Change),
                l.what,
                l.why
            );
        }
    }
    t
}
