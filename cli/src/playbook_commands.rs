//! `quell playbook check | simulate | test | actions`: declared playbooks worked out on this
//! machine, with no AWS call.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context as _;
use chrono::Utc;
use quell_responder::playbooks::language::catalogue::{self, ACTIONS};
use quell_responder::playbooks::language::simulate::{simulate as plan_for, Case, Plan};
use quell_responder::playbooks::language::Node;
use serde::Serialize;
use serde_json::{json, Value};

use crate::args::{GlobalArgs, PlaybookConfigArgs, SimulateArgs};
use crate::declared::{self, Declared};
use crate::exit;
use crate::printer::{Printer, Tone};

fn json_file(path: &Path, what: &str) -> anyhow::Result<Value> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read {what} {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{what} {} is not JSON", path.display()))
}

#[derive(Serialize)]
struct Checked<'a> {
    id: &'a str,
    version: u64,
    file: String,
    steps: usize,
    iam: Vec<&'static str>,
}

pub fn check(
    global: &GlobalArgs,
    args: &PlaybookConfigArgs,
    printer: &Printer,
) -> anyhow::Result<u8> {
    let path = crate::config_file::find(global, args.config.as_deref())?;
    let loaded = declared::load(&path)?;
    let report: Vec<Checked<'_>> = loaded
        .iter()
        .map(|d| Checked {
            id: &d.playbook.id,
            version: d.playbook.version,
            file: d.file.display().to_string(),
            steps: d.playbook.steps.len(),
            iam: d.playbook.iam_actions().into_iter().collect(),
        })
        .collect();
    printer.result(&report, || {
        let mut t = String::new();
        for c in &report {
            let _ = writeln!(
                t,
                "{} {} v{} ({}): {} steps; needs in member accounts: {}",
                printer.paint("ok", Tone::Good),
                c.id,
                c.version,
                c.file,
                c.steps,
                if c.iam.is_empty() {
                    "nothing".to_owned()
                } else {
                    c.iam.join(", ")
                }
            );
        }
        if report.is_empty() {
            let _ = writeln!(t, "no declared_playbooks in {}", path.display());
        }
        t
    });
    Ok(exit::SUCCESS)
}

fn find<'a>(loaded: &'a [Declared], id: &str, config: &Path) -> anyhow::Result<&'a Declared> {
    loaded
        .iter()
        .find(|d| d.playbook.id == id)
        .with_context(|| {
            let ids: Vec<&str> = loaded.iter().map(|d| d.playbook.id.as_str()).collect();
            let near = quell_responder::playbooks::language::nearest(id, &ids)
                .map(|n| format!("; did you mean `{n}`?"))
                .unwrap_or_default();
            format!(
                "no declared playbook `{id}` in {} (it has: {}){near}",
                config.display(),
                if ids.is_empty() {
                    "none".to_owned()
                } else {
                    ids.join(", ")
                }
            )
        })
}

pub fn simulate(global: &GlobalArgs, args: &SimulateArgs, printer: &Printer) -> anyhow::Result<u8> {
    let path = crate::config_file::find(global, args.config.as_deref())?;
    let loaded = declared::load(&path)?;
    let d = find(&loaded, &args.playbook, &path)?;
    let event = json_file(&args.event, "event")?;
    let resource = match &args.resource {
        Some(p) => json_file(p, "resource")?,
        None => json!({}),
    };
    let account = match &args.account {
        Some(p) => json_file(p, "account")?,
        None => json!({}),
    };
    let plan = plan_for(&d.playbook, &event, &resource, &account, Utc::now());
    printer.result(&plan, || plan_text(&plan, printer));
    Ok(exit::SUCCESS)
}

fn plan_text(plan: &Plan, printer: &Printer) -> String {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "playbook {} v{} (mode {})",
        plan.playbook, plan.version, plan.mode
    );
    let _ = writeln!(
        t,
        "  trigger: {}",
        if plan.trigger_matched {
            printer.paint("matches", Tone::Good)
        } else {
            printer.paint("does not match this event", Tone::Dim)
        }
    );
    if let Some(f) = &plan.finding {
        let _ = writeln!(
            t,
            "  finding: {} {} severity {} on {} {} ({} {})",
            f.product, f.kind, f.severity, f.resource_type, f.resource_id, f.account, f.region
        );
    }
    if let Some(target) = &plan.target {
        let _ = writeln!(t, "  target: {target}");
    }
    if let Some(why) = &plan.exempt {
        let _ = writeln!(t, "  exempt: {why}");
    }
    if let Some(w) = &plan.when {
        let _ = writeln!(
            t,
            "  when: {}",
            if w.matched { "holds" } else { "does not hold" }
        );
        for l in &w.leaves {
            let _ = writeln!(
                t,
                "    {} {} {} {}: saw {}",
                if l.result { "yes" } else { "no " },
                l.path,
                l.operator,
                l.operand,
                l.seen
                    .as_ref()
                    .map_or("nothing".to_owned(), Value::to_string)
            );
        }
    }
    if !plan.matched {
        let _ = writeln!(t, "  no run would start");
    }
    for s in &plan.steps {
        let _ = writeln!(
            t,
            "  step {} ({}): {}{}",
            s.id,
            s.action,
            s.decision,
            if s.writes { ", writes" } else { "" }
        );
        if s.parameters.as_object().is_some_and(|m| !m.is_empty()) {
            let _ = writeln!(t, "    with {}", s.parameters);
        }
        if !s.iam.is_empty() {
            let _ = writeln!(t, "    needs {}", s.iam.join(", "));
        }
        if let Some(u) = s.undone_by {
            let _ = writeln!(t, "    undone by {u}");
        }
        if let (Some(secs), Some(then)) = (s.timeout_seconds, &s.on_timeout) {
            let _ = writeln!(t, "    at most {secs} s, then {then}");
        }
    }
    if let Some(p) = &plan.problem {
        let _ = writeln!(t, "  {}", printer.paint(&format!("stops: {p}"), Tone::Bad));
    }
    let _ = writeln!(t, "No AWS call was made.");
    t
}

#[derive(Debug, Serialize)]
struct TestResult {
    playbook: String,
    test: String,
    passed: bool,
    differences: Vec<String>,
}

pub fn test(
    global: &GlobalArgs,
    args: &PlaybookConfigArgs,
    printer: &Printer,
) -> anyhow::Result<u8> {
    let loaded = declared::load(&crate::config_file::find(global, args.config.as_deref())?)?;
    let mut results = Vec::new();
    for d in &loaded {
        for (i, t) in d.playbook.tests.iter().enumerate() {
            let at = format!("tests[{i}]");
            let case = Case::parse(Node::new(t, &at)).map_err(|e| {
                anyhow::anyhow!("{}: playbook {}: {e}", d.file.display(), d.playbook.id)
            })?;
            let event = match &case.event {
                Value::String(rel) => json_file(&d.relative(rel), "event")?,
                inline => inline.clone(),
            };
            let plan = plan_for(
                &d.playbook,
                &event,
                &case.resource,
                &case.account,
                Utc::now(),
            );
            let differences = case.differences(&plan);
            results.push(TestResult {
                playbook: d.playbook.id.clone(),
                test: case.name,
                passed: differences.is_empty(),
                differences,
            });
        }
    }
    let failed = results.iter().filter(|r| !r.passed).count();
    printer.result(&results, || {
        let mut t = String::new();
        for r in &results {
            let _ = writeln!(
                t,
                "{} {}: {}",
                if r.passed {
                    printer.paint("pass", Tone::Good)
                } else {
                    printer.paint("FAIL", Tone::Bad)
                },
                r.playbook,
                r.test
            );
            for d in &r.differences {
                let _ = writeln!(t, "     {d}");
            }
        }
        let _ = writeln!(t, "{} tests, {failed} failed", results.len());
        t
    });
    Ok(if failed == 0 {
        exit::SUCCESS
    } else {
        exit::FAILURE
    })
}

pub fn actions(printer: &Printer) -> u8 {
    printer.result(&ACTIONS, || {
        let mut t = String::new();
        for a in ACTIONS {
            let params: Vec<String> = a
                .params
                .iter()
                .map(|p| format!("{}{}", p.name, if p.required { "" } else { "?" }))
                .collect();
            let _ = writeln!(t, "{} ({}): {}", a.name, params.join(", "), a.summary);
            if !a.outputs.is_empty() {
                let _ = writeln!(t, "    outputs: {}", a.outputs.join(", "));
            }
            if let Some(i) = a.inverse {
                let _ = writeln!(t, "    undone by: {i}");
            }
            if !a.iam.is_empty() {
                let _ = writeln!(t, "    needs: {}", a.iam.join(", "));
            }
        }
        let _ = writeln!(t, "control steps: {}", catalogue::CONTROL.join(", "));
        t
    });
    exit::SUCCESS
}
