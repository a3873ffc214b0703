//! `quell runs [ID]`: the declared playbooks' runs as the ledger has them. A run shows each step
//! with its outcome, what it changed (the ledger steps, with the state before), who approved,
//! and, while it waits, until when and the command that decides it.

use std::fmt::Write as _;

use quell_responder::ledger::{Ledger, Record};
use quell_responder::playbooks::language::run::{Run, Status as RunStatus};

use quell_responder::contract::clipped;

use crate::args::{GlobalArgs, RunsArgs};
use crate::exit;
use crate::printer::{Printer, Tone};

pub async fn run(global: &GlobalArgs, args: &RunsArgs, printer: &Printer) -> anyhow::Result<u8> {
    let c = crate::contain::connect(global, args.config.as_ref()).await?;
    let ledger = Ledger::new(
        crate::calls::client!(aws_sdk_dynamodb, &c.security),
        &c.deployment.ledger_table,
    );
    if let Some(id) = &args.id {
        let Some(record) = ledger.get(id).await?.filter(|r| r.run.is_some()) else {
            return Err(exit::refused(format!(
                "no run {id} in the ledger; `quell runs` lists them"
            )));
        };
        printer.result(&record, || timeline(&record, printer));
        return Ok(exit::SUCCESS);
    }
    let mut runs: Vec<Record> = ledger
        .recent(usize::MAX)
        .await?
        .into_iter()
        .filter(|r| r.run.is_some())
        .collect();
    runs.truncate(args.limit);
    printer.result(&runs, || {
        let mut t = String::new();
        if runs.is_empty() {
            let _ = writeln!(t, "no runs of declared playbooks");
        }
        for r in &runs {
            let Some(run) = r.run.as_deref() else {
                continue;
            };
            let _ = writeln!(
                t,
                "{}  {:<9} {} v{}  {}  {}  {}",
                r.received_at.format("%Y-%m-%d %H:%M:%S"),
                r.status.as_str(),
                run.playbook,
                run.version,
                r.entity.as_deref().unwrap_or("?"),
                r.key,
                standing(run)
            );
        }
        t
    });
    Ok(exit::SUCCESS)
}

/// How much of a step's detail the timeline shows; `--output json` has all of it.
const DETAIL: usize = 200;

/// Where a run stands, in a few words.
fn standing(run: &Run) -> String {
    let step = |i: usize| run.steps.get(i).map_or("?", |s| s.id.as_str());
    match &run.status {
        RunStatus::Running { step: i, attempt } => format!("at {} (attempt {attempt})", step(*i)),
        RunStatus::Waiting { step: i, until } => {
            format!(
                "waiting at {} until {}",
                step(*i),
                until.format("%Y-%m-%d %H:%M UTC")
            )
        }
        RunStatus::Succeeded => "succeeded".into(),
        RunStatus::Ended { reason } => format!("ended: {reason}"),
        RunStatus::Failed { reason } => format!("failed: {reason}"),
        RunStatus::RolledBack { reason } => format!("rolled back: {reason}"),
    }
}

fn timeline(r: &Record, printer: &Printer) -> String {
    let mut t = String::new();
    let Some(run) = r.run.as_deref() else {
        return t;
    };
    let tone = match &run.status {
        RunStatus::Succeeded => Tone::Good,
        RunStatus::Failed { .. } | RunStatus::RolledBack { .. } => Tone::Bad,
        _ => Tone::Change,
    };
    let _ = writeln!(
        t,
        "{} {} v{} on {}",
        printer.paint(&standing(run).to_uppercase(), tone),
        run.playbook,
        run.version,
        r.entity.as_deref().unwrap_or("?")
    );
    let _ = writeln!(t, "  run       {}", r.key);
    let _ = writeln!(t, "  started   {}", run.started_at.to_rfc3339());
    if let Some(reason) = &r.reason {
        let _ = writeln!(t, "  about     {reason}");
    }
    for step in &run.steps {
        let outcome = if step.outcome.is_empty() {
            "-"
        } else {
            &step.outcome
        };
        let _ = writeln!(t, "  {:<10} {outcome}", step.id);
        if !step.approvers.is_empty() {
            let _ = writeln!(t, "             approved by {}", step.approvers.join(", "));
        }
        let prefix = format!("{}.", step.id);
        let changes: Vec<_> = r
            .steps
            .iter()
            .filter(|s| s.name.starts_with(&prefix))
            .collect();
        // A failed step's error is its last change's detail, when it got that far.
        if let (Some(e), true) = (&step.error, changes.is_empty()) {
            let _ = writeln!(t, "             {}", clipped(e, DETAIL));
        }
        for change in changes {
            let _ = writeln!(
                t,
                "             {} {:?} {}",
                change.finished_at.format("%H:%M:%S"),
                change.status,
                clipped(&change.detail, DETAIL)
            );
        }
    }
    for release in r.steps.iter().filter(|s| s.name.starts_with("release.")) {
        let _ = writeln!(
            t,
            "  {:<10} {:?} {}",
            release.name, release.status, release.detail
        );
    }
    // An approval asks with the command (the record's reason says so); a plain wait does not.
    let asks = r
        .reason
        .as_deref()
        .is_some_and(|x| x.contains("quell approve"));
    if let (true, RunStatus::Waiting { step, .. }) = (asks, &run.status) {
        if let Some(s) = run.steps.get(*step) {
            let _ = writeln!(
                t,
                "  decide    quell approve {key} --step {id} --reason ...   (or quell deny)",
                key = r.key,
                id = s.id
            );
        }
    }
    t
}
