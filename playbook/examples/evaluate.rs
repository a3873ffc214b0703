//! How long the responder takes to decide what 1,000 findings start, against 50 declared
//! playbooks: once with playbooks none of the findings match, once with playbooks each finding
//! matches (trigger, conditions, and the plan of every step with its parameters filled). Then
//! what the run state machine adds to each step against filling the action's parameters alone
//! (what calling the action directly needs). Run by `bench/playbooks`, which writes the figures
//! to bench/results/playbooks.md.

use std::time::{Duration, Instant};

use chrono::Utc;
use quell_playbook::definition::Playbook;
use quell_playbook::run::{Effect, Input, Run};
use quell_playbook::simulate::simulate;
use quell_playbook::template::fill_all;
use quell_playbook::Node;
use serde_json::{json, Value};

const FINDINGS: usize = 1_000;
const PLAYBOOKS: usize = 50;
const ROUNDS: usize = 5;

fn shipped(path: &str) -> Value {
    let full = format!("{}/../playbooks/{path}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{full}: {e}"));
    if std::path::Path::new(path)
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"))
    {
        serde_json::from_str(&text).expect("JSON fixture")
    } else {
        serde_saphyr::from_str(&text).expect("YAML playbook")
    }
}

/// 1,000 findings: Inspector and GuardDuty events, each with its own id, resource and severity.
fn findings() -> Vec<Value> {
    let inspector = shipped("fixtures/events/inspector2-package-vulnerability.json");
    let guardduty = shipped("fixtures/events/guardduty-ec2-cryptocurrency.json");
    (0..FINDINGS)
        .map(|i| {
            let mut e = if i % 2 == 0 {
                inspector.clone()
            } else {
                guardduty.clone()
            };
            let instance = format!("i-{i:017x}");
            if i % 2 == 0 {
                e["detail"]["findingArn"] = json!(format!(
                    "arn:aws:inspector2:us-east-1:111122223333:finding/{i:032x}"
                ));
                e["detail"]["resources"][0]["id"] = json!(instance);
                e["detail"]["inspectorScore"] =
                    json!(7.0 + f64::from(u8::try_from(i % 30).unwrap_or(0)) / 10.0);
            } else {
                e["detail"]["id"] = json!(format!("{i:032x}"));
                e["detail"]["resource"]["instanceDetails"]["instanceId"] = json!(instance);
                e["detail"]["severity"] = json!(7 + i % 2);
            }
            e
        })
        .collect()
}

/// 50 playbooks from the shipped ones: `matching` keeps their triggers; otherwise each asks for a
/// finding type no event has.
fn playbooks(matching: bool) -> Vec<Playbook> {
    let bases = [
        shipped("critical-cve.yaml"),
        shipped("guardduty-instance-compromise.yaml"),
    ];
    (0..PLAYBOOKS)
        .map(|i| {
            let mut v = bases[i % 2].clone();
            v["id"] = json!(format!("{}-{i}", v["id"].as_str().unwrap_or("p")));
            if !matching {
                if i % 2 == 0 {
                    v["trigger"]["inspector"]["types"] = json!(["NETWORK_REACHABILITY"]);
                } else {
                    v["trigger"]["guardduty"]["types"] = json!([format!("Recon:EC2/Variant{i}")]);
                }
            }
            Playbook::parse(Node::new(&v, "")).expect("a valid playbook")
        })
        .collect()
}

/// Every finding against every playbook; returns the fastest round and how many runs would start.
fn measure(findings: &[Value], playbooks: &[Playbook]) -> (Duration, usize) {
    let resource = json!({"state": "running", "tags": {"Env": "prod"}});
    let account = json!({"id": "111122223333"});
    let now = Utc::now();
    let mut best = Duration::MAX;
    let mut started = 0;
    for _ in 0..ROUNDS {
        let t = Instant::now();
        started = 0;
        for f in findings {
            for p in playbooks {
                if simulate(p, f, &resource, &account, now).matched {
                    started += 1;
                }
            }
        }
        best = best.min(t.elapsed());
    }
    (best, started)
}

const STEPS: usize = 20;
const RUNS: usize = 500;

/// A GuardDuty playbook of `STEPS` tag steps, and the context a run of it sees.
fn tagging() -> (Playbook, Value) {
    let steps: Vec<Value> = (0..STEPS)
        .map(|i| json!({"id": format!("mark{i}"), "action": "tag",
            "with": {"tags": {format!("quell:step{i}"): "${{ finding.id }} on ${{ finding.resource_id }}"}}}))
        .collect();
    let v = json!({
        "id": "tagging", "version": 1, "description": "Tags.", "mode": "auto",
        "trigger": {"guardduty": {"types": ["CryptoCurrency:EC2/"]}},
        "target": {"type": "AWS::EC2::Instance", "id": "${{ finding.resource_id }}"},
        "steps": steps
    });
    let context = json!({
        "event": shipped("fixtures/events/guardduty-ec2-cryptocurrency.json"),
        "finding": {"id": "8e2c3a7b9d1f4e6a0b5c2d8f7e9a1b3c", "resource_id": "i-0feedc0ffee123456"},
        "account": {"id": "111122223333"}, "resource": {"state": "running"}, "vars": {}
    });
    (
        Playbook::parse(Node::new(&v, "")).expect("a valid playbook"),
        context,
    )
}

/// `RUNS` runs of the tagging playbook through the state machine, each step's outcome fed back
/// and the run serialised as the ledger saves it after every step; then the same parameters
/// filled directly. The fastest round of each, per step.
fn per_step() -> (Duration, Duration) {
    let (playbook, context) = tagging();
    let now = Utc::now();
    let (mut runtime, mut direct) = (Duration::MAX, Duration::MAX);
    for _ in 0..ROUNDS {
        let t = Instant::now();
        for n in 0..RUNS {
            let mut run = Run::new(
                &format!("run:{n}"),
                &playbook,
                "i-0feedc0ffee123456",
                context.clone(),
                None,
                now,
            );
            let mut effects = run.start(&playbook, now);
            while let Some(Effect::Act { step, attempt, .. }) = effects
                .iter()
                .find(|e| matches!(e, Effect::Act { .. }))
                .cloned()
            {
                let saved = serde_json::to_vec(&run).expect("a run serialises");
                std::hint::black_box(saved);
                let input = Input::StepDone {
                    step,
                    attempt,
                    outputs: serde_json::Map::new(),
                };
                effects = run
                    .advance(&playbook, input, now)
                    .expect("a step's outcome is taken");
            }
            std::hint::black_box(&run);
        }
        runtime = runtime.min(t.elapsed());
        let t = Instant::now();
        for _ in 0..RUNS {
            for s in &playbook.steps {
                std::hint::black_box(
                    fill_all(&Value::Object(s.with.clone()), &context).expect("filled"),
                );
            }
        }
        direct = direct.min(t.elapsed());
    }
    let steps = u32::try_from(RUNS * STEPS).unwrap_or(u32::MAX);
    (runtime / steps, direct / steps)
}

fn main() {
    let findings = findings();
    let steps: usize = playbooks(true).iter().map(|p| p.steps.len()).sum();
    println!(
        "| playbooks | findings | runs that would start | wall ms | per finding x playbook µs |"
    );
    println!("|---|---:|---:|---:|---:|");
    for (name, matching) in [
        ("none match", false),
        ("half match (trigger, conditions, every step planned)", true),
    ] {
        let playbooks = playbooks(matching);
        let (wall, started) = measure(&findings, &playbooks);
        let pairs = f64::from(u32::try_from(findings.len() * playbooks.len()).unwrap_or(u32::MAX));
        println!(
            "| {PLAYBOOKS} ({name}) | {FINDINGS} | {started} | {:.1} | {:.2} |",
            wall.as_secs_f64() * 1e3,
            wall.as_secs_f64() * 1e6 / pairs
        );
    }
    println!();
    println!("{steps} steps across the 50 matching playbooks; fastest of {ROUNDS} rounds.");
    println!();
    let (runtime, direct) = per_step();
    println!("## The runtime's cost per step, against calling the action directly");
    println!();
    println!("| per step | µs |");
    println!("|---|---:|");
    println!(
        "| through the run (state machine, parameters filled, run serialised for its ledger save) | {:.2} |",
        runtime.as_secs_f64() * 1e6
    );
    println!(
        "| directly (parameters filled) | {:.2} |",
        direct.as_secs_f64() * 1e6
    );
    println!(
        "| runtime overhead | {:.2} |",
        (runtime.saturating_sub(direct)).as_secs_f64() * 1e6
    );
    println!();
    println!("{RUNS} runs of a {STEPS}-step playbook; fastest of {ROUNDS} rounds.");
}
