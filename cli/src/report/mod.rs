//! `quell report`: the organization at a glance in one HTML file anyone can open (or the same
//! data as JSON). Reads only: stack set instances, the organization's tree and the ledger.

mod model;
mod page;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use chrono::{DateTime, Duration, Utc};
use quell_responder::ledger::Ledger;

use crate::args::{GlobalArgs, OutputFormat, ReportArgs};
use crate::calls::client;
use crate::converge::plan::template_hash;
use crate::converge::{Context, StackKind};
use crate::deployment::Deployment;
use crate::exit;
use crate::printer::Printer;
use model::{Read, Report, StackSetRead, Versions};

pub async fn run(global: &GlobalArgs, args: &ReportArgs, printer: &Printer) -> anyhow::Result<u8> {
    let report = match &args.from {
        Some(saved) => {
            let text = std::fs::read_to_string(saved)
                .with_context(|| format!("cannot read the saved report {}", saved.display()))?;
            serde_json::from_str::<Report>(&text).with_context(|| {
                format!(
                    "{} is not a report saved by `quell report --output json`",
                    saved.display()
                )
            })?
        }
        None => Box::pin(read(global, args, printer)).await?,
    };
    if global.output == OutputFormat::Json {
        printer.result(&report, String::new);
        return Ok(exit::SUCCESS);
    }
    let html = page::render(&report)?;
    write_whole(&args.out, html.as_bytes())?;
    let accounts = count_accounts(&report.tree);
    printer.result(
        &serde_json::json!({ "written": args.out, "bytes": html.len(), "accounts": accounts }),
        || {
            format!(
                "wrote {} ({accounts} accounts x {} Regions, {} containments, {} remediations counted): open it in a browser\n",
                args.out.display(),
                report.regions.len(),
                report.containments.len(),
                report.remediations.by_playbook.iter().map(|p| p.counts.fixed + p.counts.skipped + p.counts.failed + p.counts.awaiting).sum::<u64>()
            )
        },
    );
    Ok(exit::SUCCESS)
}

fn count_accounts(nodes: &[model::Node]) -> usize {
    nodes
        .iter()
        .map(|n| n.accounts.len() + count_accounts(&n.children))
        .sum()
}

/// Written aside and renamed: an open browser tab never sees half a report.
fn write_whole(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let aside = path.with_extension("html.partial");
    std::fs::write(&aside, bytes).with_context(|| format!("cannot write {}", aside.display()))?;
    std::fs::rename(&aside, path).with_context(|| format!("cannot write {}", path.display()))
}

/// `30d`, `12h`, `2w`, `90m`.
pub fn parse_since(text: &str) -> Result<Duration, String> {
    let (number, unit) = text.split_at(text.trim_end_matches(char::is_alphabetic).len());
    let n: i64 = number.parse().map_err(|_| {
        format!("{text:?} is not a period: write a number and a unit, as 30d, 12h, 2w or 90m")
    })?;
    let period = match unit {
        "m" => Duration::minutes(n),
        "h" => Duration::hours(n),
        "d" => Duration::days(n),
        "w" => Duration::weeks(n),
        _ => {
            return Err(format!(
                "{text:?} has no unit Quell knows: use m, h, d or w (30d)"
            ))
        }
    };
    if n <= 0 || n > 100_000 {
        return Err(format!(
            "{text:?} is out of range: from 1 unit to about ten years"
        ));
    }
    Ok(period)
}

async fn read(global: &GlobalArgs, args: &ReportArgs, printer: &Printer) -> anyhow::Result<Report> {
    let now = Utc::now();
    let since: DateTime<Utc> = now - args.since;
    let task = printer.task("reading the organization, the stack sets and the ledger");
    let ctx = Context::connect(global, args.config.as_deref(), args.delegated_admin).await?;
    let mut stack_sets = Vec::new();
    for definition in &ctx.definitions {
        let set = ctx.stack_set(definition);
        task.update(&format!("stack set {}", set.name));
        let deployed = set.describe().await?;
        let regions = definition.regions(&ctx.config);
        let targeted: BTreeSet<(String, String)> = ctx
            .targets_of(definition)
            .iter()
            .flat_map(|t| t.accounts.iter())
            .flat_map(|a| regions.iter().map(move |r| (a.clone(), r.clone())))
            .collect();
        if deployed.is_none() && targeted.is_empty() {
            continue;
        }
        stack_sets.push(StackSetRead {
            name: set.name.clone(),
            template: deployed.as_ref().map(|d| template_hash(&d.template)),
            current: deployed
                .as_ref()
                .is_some_and(|d| d.template == ctx.rendered[definition.template.as_str()]),
            instances: deployed.map(|d| d.instances).unwrap_or_default(),
            targeted,
        });
    }
    let deployed_build = ctx
        .stack(StackKind::Security)
        .read()
        .await?
        .and_then(|d| d.parameters.get("ArtifactKey").cloned());
    task.update("the ledger");
    let records = match Deployment::find(&ctx.security, &ctx.config.name).await? {
        Some(d) => {
            Ledger::new(client!(aws_sdk_dynamodb, &ctx.security), &d.ledger_table)
                .recent(usize::MAX)
                .await?
        }
        None => Vec::new(),
    };
    task.done(&format!("read {} ledger records", records.len()));
    Ok(model::build(Read {
        now,
        since,
        name: ctx.config.name.clone(),
        organization_id: ctx.org.id.clone(),
        regions: ctx.config.all_regions(),
        responder: Versions {
            deployed: deployed_build,
            this_build: this_build(&ctx),
        },
        tree: &ctx.tree,
        stack_sets,
        records,
        cost: Some(crate::cost::for_context(&ctx)?),
    }))
}

/// The package `quell upgrade` would deploy from here, when there is a responder to package.
fn this_build(ctx: &Context) -> Option<String> {
    let path: PathBuf = crate::package::default_bootstrap().ok()?;
    crate::package::build(&path, ctx.config.responder.architecture)
        .ok()
        .map(|p| p.key())
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::converge::org_tree::OrgTree;
    use crate::converge::stack_set::Instance;
    use quell_responder::contract::Action;
    use quell_responder::ledger::{Record, Status, Step, StepStatus};

    /// An organization of `accounts` accounts in ten OUs, deployed everywhere, with `records`
    /// ledger records (three in ten containments of eight steps, the rest remediations).
    pub(super) fn large(
        accounts: usize,
        records: usize,
    ) -> (OrgTree, Vec<StackSetRead>, Vec<Record>) {
        let regions = ["us-east-1", "eu-west-1", "us-west-2", "ap-southeast-2"];
        let mut tree = OrgTree::default();
        tree.add_root("r-root");
        let ids: Vec<String> = (0..accounts)
            .map(|i| format!("{:012}", 100_000_000_000 + i))
            .collect();
        for (i, id) in ids.iter().enumerate() {
            let ou = format!("ou-root-{:08}", i % 10);
            if i < 10 {
                tree.add_ou("r-root", &ou);
            }
            tree.add_account(&ou, id);
        }
        let instances: Vec<Instance> = ids
            .iter()
            .flat_map(|a| regions.iter().map(move |r| (a, r)))
            .map(|(a, r)| Instance {
                account: a.clone(),
                region: (*r).to_owned(),
                status: "CURRENT".into(),
                detailed_status: Some("SUCCEEDED".into()),
                organizational_unit: None,
                reason: None,
                drift: None,
            })
            .collect();
        let targeted = instances
            .iter()
            .map(|i| (i.account.clone(), i.region.clone()))
            .collect();
        let sets = vec![StackSetRead {
            name: "quell-member-regional".into(),
            template: Some("8892663ec395".into()),
            current: true,
            instances,
            targeted,
        }];
        let now = Utc::now();
        let ledger = (0..records)
            .map(|n| {
                let account = &ids[n % ids.len()];
                let at = now - Duration::minutes(i64::try_from(n).unwrap_or(0));
                let mut r = Record::new(format!("request-{n:05}"), at, "message");
                r.account = Some(account.clone());
                r.finished_at = Some(at + Duration::seconds(3));
                r.status = Status::Succeeded;
                r.requester = Some(format!("arn:aws:sts::{account}:assumed-role/analyst/jo"));
                if n % 10 < 3 {
                    r.action = Action::Contain;
                    r.entity = Some(format!("arn:aws:iam::{account}:user/ci-deployer-{n}"));
                    r.entity_kind = Some("IAM user".into());
                    r.reason = Some("access key leaked in a public CI log".into());
                    r.steps = (0..8)
                        .map(|s| Step {
                            name: format!("step_{s}"),
                            status: StepStatus::Done,
                            detail: "attached the deny policy quell-deny-all; 2 access keys made inactive".into(),
                            prior: serde_json::json!({"keys": ["AKIA0000000000000000"]}),
                            new: serde_json::json!({}),
                            started_at: at,
                            finished_at: at,
                        })
                        .collect();
                } else {
                    r.action = Action::Remediate;
                    r.entity = Some(format!("arn:aws:ec2:us-east-1:{account}:security-group/sg-{n:017}"));
                    r.entity_kind = Some("security_group".into());
                }
                r
            })
            .collect();
        (tree, sets, ledger)
    }

    #[test]
    fn a_thousand_accounts_and_ten_thousand_records_fit_in_five_megabytes() {
        let (tree, stack_sets, records) = large(1_000, 10_000);
        let now = Utc::now();
        let report = model::build(Read {
            now,
            since: now - Duration::days(30),
            name: "quell".into(),
            organization_id: "o-large".into(),
            regions: ["us-east-1", "eu-west-1", "us-west-2", "ap-southeast-2"]
                .map(String::from)
                .to_vec(),
            responder: Versions {
                deployed: None,
                this_build: None,
            },
            tree: &tree,
            stack_sets,
            records,
            cost: None,
        });
        assert_eq!(count_accounts(&report.tree), 1_000);
        assert_eq!(report.containments_in_period, 3_000);
        assert_eq!(report.containments.len(), model::CONTAINMENTS_SHOWN);
        assert_eq!(
            report.totals.containments, 3_000,
            "the totals count every one"
        );
        let html = page::render(&report).unwrap();
        assert!(html.len() < 5_000_000, "{} bytes", html.len());
    }

    #[test]
    fn periods_are_read_or_refused_with_the_form_they_take() {
        assert_eq!(parse_since("30d"), Ok(Duration::days(30)));
        assert_eq!(parse_since("12h"), Ok(Duration::hours(12)));
        assert_eq!(parse_since("2w"), Ok(Duration::weeks(2)));
        assert!(parse_since("30").unwrap_err().contains("no unit"));
        assert!(parse_since("d").unwrap_err().contains("not a period"));
        assert!(parse_since("0d").unwrap_err().contains("out of range"));
        assert!(parse_since("30y").unwrap_err().contains("use m, h, d or w"));
    }
}
