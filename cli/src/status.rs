//! `quell status`: what is deployed and how it is doing. Versions (responder build and template
//! hash) per stack and StackSet, compared with what this configuration renders; stack instances
//! by status per Region with the failed ones named; drift on request; the latest containments.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use quell_responder::ledger::{Ledger, Record};
use serde::Serialize;

use crate::args::{GlobalArgs, StatusArgs};
use crate::calls::client;
use crate::converge::plan::template_hash;
use crate::converge::stack_set::{paint_status, Drift, Instance};
use crate::converge::{Context, StackKind};
use crate::deployment::Deployment;
use crate::exit;
use crate::printer::{Printer, Tone};

#[derive(Debug, Serialize)]
struct Status {
    organization_id: String,
    stacks: Vec<StackStatus>,
    /// The responder package the security stack runs.
    responder_build: Option<String>,
    stack_sets: Vec<StackSetStatus>,
    containments: Vec<Record>,
    /// Fixes a playbook in approve mode is holding.
    awaiting_approval: Vec<Record>,
    /// What Quell deploys at this size and what it costs a month.
    cost: crate::cost::Estimate,
}

#[derive(Debug, Serialize)]
struct StackStatus {
    name: String,
    account: String,
    region: String,
    /// None when the stack does not exist.
    status: Option<String>,
    template: Option<String>,
    /// The deployed template is the one this configuration renders.
    current: bool,
}

#[derive(Debug, Serialize)]
struct StackSetStatus {
    name: String,
    deployed: bool,
    template: Option<String>,
    current: bool,
    /// Region -> instance status -> count.
    regions: BTreeMap<String, BTreeMap<String, usize>>,
    failed: Vec<Instance>,
    #[serde(skip_serializing_if = "Option::is_none")]
    drift: Option<DriftResult>,
}

#[derive(Debug, Serialize)]
#[serde(untagged)]
enum DriftResult {
    Found(Drift),
    Unavailable { error: String },
}

pub async fn run(global: &GlobalArgs, args: &StatusArgs, printer: &Printer) -> anyhow::Result<u8> {
    let ctx = Context::connect(global, args.config.as_deref(), args.delegated_admin).await?;
    let mut stacks = Vec::new();
    let mut responder_build = None;
    for kind in [
        StackKind::Artifacts,
        StackKind::Security,
        StackKind::Management,
    ] {
        let stack = ctx.stack(kind);
        let deployed = stack.read().await?;
        if kind == StackKind::Security {
            responder_build = deployed
                .as_ref()
                .and_then(|d| d.parameters.get("ArtifactKey").cloned());
        }
        stacks.push(StackStatus {
            name: stack.name.clone(),
            account: ctx.stack_account(kind).to_owned(),
            region: ctx.config.home_region.clone(),
            status: deployed.as_ref().map(|d| d.status.clone()),
            template: deployed.as_ref().map(|d| template_hash(&d.template)),
            current: deployed
                .as_ref()
                .is_some_and(|d| d.template == ctx.template_of(kind)),
        });
    }

    let mut stack_sets = Vec::new();
    for definition in &ctx.definitions {
        let set = ctx.stack_set(definition);
        let deployed = set.describe().await?;
        // The stack set for single accounts exists only where the configuration names some.
        if deployed.is_none() && ctx.targets_of(definition).is_empty() {
            continue;
        }
        let instances = deployed
            .as_ref()
            .map(|d| d.instances.clone())
            .unwrap_or_default();
        let mut regions: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
        for i in &instances {
            *regions
                .entry(i.region.clone())
                .or_default()
                .entry(i.shown_status().to_owned())
                .or_default() += 1;
        }
        let drift = if args.drift && deployed.is_some() {
            Some(match set.detect_drift(printer).await {
                Ok(d) => DriftResult::Found(d),
                Err(e) => DriftResult::Unavailable {
                    error: format!("{e:#}"),
                },
            })
        } else {
            None
        };
        stack_sets.push(StackSetStatus {
            name: set.name.clone(),
            deployed: deployed.is_some(),
            template: deployed.as_ref().map(|d| template_hash(&d.template)),
            current: deployed
                .as_ref()
                .is_some_and(|d| d.template == ctx.rendered[definition.template.as_str()]),
            failed: instances.iter().filter(|i| i.failed()).cloned().collect(),
            regions,
            drift,
        });
    }

    let (containments, awaiting_approval) =
        match Deployment::find(&ctx.security, &ctx.config.name).await? {
            Some(d) => {
                let ledger = Ledger::new(client!(aws_sdk_dynamodb, &ctx.security), &d.ledger_table);
                (
                    ledger.recent(args.containments).await?,
                    ledger.awaiting_approval().await?,
                )
            }
            None => (Vec::new(), Vec::new()),
        };
    let status = Status {
        organization_id: ctx.org.id.clone(),
        stacks,
        responder_build,
        stack_sets,
        containments,
        awaiting_approval,
        cost: crate::cost::for_context(&ctx)?,
    };
    printer.result(&status, || text(&status, printer));
    let healthy = status.stacks.iter().all(|s| s.status.is_some())
        && status
            .stack_sets
            .iter()
            .all(|s| s.deployed && s.failed.is_empty());
    Ok(if healthy {
        exit::SUCCESS
    } else {
        exit::FAILURE
    })
}

fn text(s: &Status, printer: &Printer) -> String {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "{}",
        printer.paint(
            &format!("Quell in organization {}", s.organization_id),
            Tone::Strong
        )
    );
    let version = |template: &Option<String>, current: bool| match template {
        None => printer.paint("not deployed", Tone::Bad),
        Some(h) if current => format!("template {h}"),
        Some(h) => format!(
            "template {h} {}",
            printer.paint(
                "(differs from this configuration: quell upgrade)",
                Tone::Change
            )
        ),
    };
    for st in &s.stacks {
        let _ = writeln!(
            t,
            "  stack {:<22} {} {}  {}  {}",
            st.name,
            st.account,
            st.region,
            st.status.as_deref().unwrap_or("-"),
            version(&st.template, st.current)
        );
    }
    if let Some(b) = &s.responder_build {
        let _ = writeln!(t, "  responder build {b}");
    }
    for set in &s.stack_sets {
        let _ = writeln!(
            t,
            "  stack set {}  {}",
            set.name,
            version(&set.template, set.current)
        );
        for (region, counts) in &set.regions {
            let counts: Vec<String> = counts
                .iter()
                .map(|(status, n)| format!("{n} {}", paint_status(printer, status)))
                .collect();
            let _ = writeln!(t, "    {region:<14} {}", counts.join(", "));
        }
        for f in &set.failed {
            let _ = writeln!(
                t,
                "    {} {} {}: {}",
                printer.paint("failed", Tone::Bad),
                f.account,
                f.region,
                f.reason.as_deref().unwrap_or("no reason given")
            );
        }
        match &set.drift {
            Some(DriftResult::Found(d)) => {
                let _ = writeln!(
                    t,
                    "    drift: {} ({} in sync, {} drifted, {} checks failed)",
                    d.status,
                    d.in_sync,
                    d.drifted_instances.len(),
                    d.failed_checks
                );
                for i in &d.drifted_instances {
                    let _ = writeln!(t, "      drifted {} {}", i.account, i.region);
                }
            }
            Some(DriftResult::Unavailable { error }) => {
                // The whole answer is in --output json; a line is enough here.
                let short: String = error
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .chars()
                    .take(160)
                    .collect();
                let _ = writeln!(t, "    drift: not detected ({short}...)");
            }
            None => {}
        }
    }
    let _ = writeln!(t, "Latest containments:");
    if s.containments.is_empty() {
        let _ = writeln!(t, "  none");
    }
    for r in &s.containments {
        let _ = writeln!(
            t,
            "  {}  {:<8} {:<11} {}",
            r.received_at.format("%Y-%m-%d %H:%M:%S"),
            r.action.as_str(),
            r.status.as_str(),
            r.entity.as_deref().unwrap_or("?")
        );
    }
    t.push_str(&s.cost.text());
    if !s.awaiting_approval.is_empty() {
        let _ = writeln!(
            t,
            "{} (`quell approve ID` or `quell deny ID`):",
            printer.paint("Awaiting approval", Tone::Change)
        );
        for r in &s.awaiting_approval {
            let _ = writeln!(
                t,
                "  {}  {}\n      {}",
                r.key,
                r.entity.as_deref().unwrap_or("?"),
                r.reason.as_deref().unwrap_or_default()
            );
        }
    }
    t
}
