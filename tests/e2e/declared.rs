//! Declared playbooks end to end: a playbook added to the configuration reaches the responder
//! with `quell upgrade` and no new build, and a GuardDuty finding put on a member account's bus
//! (forwarded by the rule its trigger rendered) runs it. Every effect is read back from EC2.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use quell_responder::ledger::{Record, Status};
use serde_json::Value;

use crate::entities::{evidence_of, launch, tags_of};
use crate::remediate::{ledger_of, put_event, uuid_like};
use crate::support::{Sandbox, HOME};
use crate::TestFn;

pub fn tests() -> Vec<(&'static str, TestFn)> {
    crate::online![
        a_playbook_added_by_upgrade_snapshots_then_isolates_the_instance_guardduty_names,
        the_shipped_open_security_group_definition_takes_over_from_the_built_in,
        critical_cve_quarantines_for_patching_opens_a_ticket_and_waits_for_a_verified_approver,
    ]
}

const PLAYBOOK: &str = "guardduty-instance-compromise";

/// A playbook on API calls: its trigger is forwarded by member accounts specifically.
pub const CLOUDTRAIL_PLAYBOOK: &str = r"
id: tag-new-instances
version: 1
description: Tags every instance launched.
mode: auto
trigger:
  cloudtrail:
    source: ec2.amazonaws.com
    names: [RunInstances]
target:
  type: AWS::EC2::Instance
  id: ${{ event.detail.responseElements.instancesSet.items[0].instanceId }}
steps:
  - id: mark
    action: tag
    with:
      tags: {seen-by: quell}
";

/// A playbook an analyst starts from the security account's Security Hub: install makes the
/// custom action, the security stack routes its events.
pub const CUSTOM_ACTION_PLAYBOOK: &str = r"
id: evidence-on-request
version: 1
description: Tags the instance of the findings an analyst chose, and snapshots its volumes.
mode: auto
trigger:
  securityhub_action:
    name: 'Quell: evidence'
target:
  type: AWS::EC2::Instance
  id: ${{ finding.resource_id }}
steps:
  - id: mark
    action: tag
    with:
      tags:
        quell:evidence-for: ${{ finding.id }}
  - id: evidence
    action: ec2.snapshot_volumes
    with:
      description: Evidence for ${{ finding.id }}
";

/// A playbook on a schedule: the security stack gets its rule.
pub const SCHEDULE_PLAYBOOK: &str = r"
id: nightly-inventory
version: 1
description: Marks every running instance with the night it was last seen.
mode: auto
trigger:
  schedule: cron(0 2 * * ? *)
target:
  type: AWS::EC2::Instance
  id: ${{ event.detail.target.id }}
when:
  path: resource.state
  equals: running
steps:
  - id: mark
    action: tag
    with:
      tags:
        quell:last-seen: ${{ event.time }}
";

pub fn repository() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is in the repository")
        .to_owned()
}

/// A playbook started by hand (`quell run`).
const MANUAL: &str = "isolate-instance";

fn with_playbooks(text: &str, custom_action: &std::path::Path) -> String {
    let include = |id: &str| {
        format!(
            "  - include: {}\n",
            repository()
                .join("playbooks")
                .join(format!("{id}.yaml"))
                .display()
        )
    };
    format!(
        "{text}declared_playbooks:\n{}{}  - include: {}\n",
        include(PLAYBOOK),
        include(MANUAL),
        custom_action.display()
    )
}

fn json(out: &std::process::Output) -> Result<Value> {
    serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "not JSON: {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn change_of<'a>(plan: &'a Value, list: &str, name: &str) -> Result<&'a Value> {
    plan[list]
        .as_array()
        .and_then(|a| a.iter().find(|x| x["name"] == name))
        .map(|x| &x["action"])
        .with_context(|| format!("{name} in the plan's {list}: {plan}"))
}

/// The finished run of `playbook` on `instance`, waiting up to 60 s.
async fn run_on(s: &Sandbox, playbook: &str, account: &str, instance: &str) -> Result<Record> {
    finished_run(s, playbook, account, "AWS::EC2::Instance", instance).await
}

/// The finished run of `playbook` on the resource, waiting up to 60 s.
async fn finished_run(
    s: &Sandbox,
    playbook: &str,
    account: &str,
    kind: &str,
    id: &str,
) -> Result<Record> {
    run_when(s, playbook, (account, kind, id), "finished", |run| {
        run.status.finished()
    })
    .await
}

/// The run of `playbook` on the resource once `reached` holds of it, waiting up to 60 s.
async fn run_when(
    s: &Sandbox,
    playbook: &str,
    (account, kind, id): (&str, &str, &str),
    what: &str,
    reached: impl Fn(&quell_responder::playbooks::language::run::Run) -> bool,
) -> Result<Record> {
    let ledger = ledger_of(&s.in_account(&s.security(), HOME).await?);
    let entity = format!("{account}/{HOME}/{kind}/{id}");
    let mut seen = None;
    for _ in 0..120 {
        if let Some(r) = ledger
            .for_entity(&entity)
            .await?
            .into_iter()
            .find(|r| r.key.starts_with(&format!("run:{playbook}:")))
        {
            if r.run.as_deref().is_some_and(&reached) {
                return Ok(r);
            }
            seen = Some(r);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let tail = |file: &str| {
        let log = std::fs::read_to_string(s.home().join("sandbox").join(file)).unwrap_or_default();
        let last: Vec<&str> = log.lines().rev().take(15).collect();
        last.into_iter().rev().collect::<Vec<_>>().join("\n")
    };
    bail!(
        "no {what} run of {playbook} on {id} within 60 s (the run as last read: {:?}); the responder's log ends:\n{}\nthe sandbox host's:\n{}",
        seen.map(|r| (r.status, r.error, r.steps)),
        tail("responder.log"),
        tail("host.log")
    )
}

/// The GuardDuty finding of the shipped fixture, about `instance` in `account`, under a fresh id.
fn finding(account: &str, instance: &str) -> Result<Value> {
    let text = std::fs::read_to_string(
        repository().join("playbooks/fixtures/events/guardduty-ec2-cryptocurrency.json"),
    )?
    .replace("111122223333", account)
    .replace("i-0feedc0ffee123456", instance)
    .replace("8e2c3a7b9d1f4e6a0b5c2d8f7e9a1b3c", &uuid_like());
    Ok(serde_json::from_str::<Value>(&text)?["detail"].clone())
}

/// Every group of every interface of `instance`.
async fn groups_of(ec2: &aws_sdk_ec2::Client, instance: &str) -> Result<Vec<String>> {
    Ok(crate::entities::enis(ec2, instance)
        .await?
        .into_iter()
        .flatten()
        .collect())
}

async fn a_playbook_added_by_upgrade_snapshots_then_isolates_the_instance_guardduty_names(
    s: Arc<Sandbox>,
) -> Result<()> {
    let custom_action = s.home().join("custom-action-playbook.yaml");
    std::fs::write(&custom_action, CUSTOM_ACTION_PLAYBOOK)?;
    let config = s.config_variant("declared.yaml", |text| with_playbooks(text, &custom_action))?;

    // The plan: the document is uploaded and the security stack names it. Member accounts
    // forward every finding already, so no StackSet changes; the responder package is not built
    // or uploaded again.
    let plan = plan_of(&s, &config)?;
    ensure!(plan["upload_playbooks"].is_string(), "{plan}");
    ensure!(
        plan["upload_artifact"] == false,
        "no new responder build: {plan}"
    );
    ensure!(
        change_of(&plan, "stacks", "quell-security")? == "update",
        "{plan}"
    );
    for set in ["quell-member-regional", "quell-member-roles"] {
        ensure!(
            change_of(&plan, "stack_sets", set)? == "unchanged",
            "{set}: {plan}"
        );
    }
    upgrade_to(&s, &config).await?;

    let account = s.members()[0].clone();
    let ec2 = aws_sdk_ec2::Client::new(&s.in_account(&account, HOME).await?);
    let instance = launch(&ec2).await?;
    let before = groups_of(&ec2, &instance).await?;
    ensure!(!before.is_empty(), "the instance has groups");

    put_event(
        &s,
        &account,
        HOME,
        "aws.guardduty",
        "GuardDuty Finding",
        &finding(&account, &instance)?,
    )
    .await?;
    let record = run_on(&s, PLAYBOOK, &account, &instance).await?;
    let run = record.run.as_ref().context("a run")?;
    ensure!(
        record.status == Status::Succeeded,
        "the run succeeded: {:?} {:?}",
        run.status,
        record.steps
    );
    let outcomes: Vec<(&str, &str)> = run
        .steps
        .iter()
        .map(|st| (st.id.as_str(), st.outcome.as_str()))
        .collect();
    // The emulator has no BatchUpdateFindings: the note fails, recorded, and the playbook goes
    // on (`on_error: continue`), as a finding update never undoes a containment.
    ensure!(
        outcomes
            == [
                ("evidence", "done"),
                ("isolate", "done"),
                ("note", "failed"),
                ("tell", "done")
            ],
        "{outcomes:?}"
    );

    // `quell runs` lists it and shows it step by step.
    let listed = json(&s.must(&["--sandbox", "--output", "json", "runs"])?)?;
    ensure!(
        listed
            .as_array()
            .is_some_and(|l| l.iter().any(|r| r["key"] == record.key.as_str())),
        "listed: {listed}"
    );
    let shown = s.must(&["--sandbox", "runs", &record.key])?;
    let shown = String::from_utf8_lossy(&shown.stdout);
    for words in [
        "SUCCEEDED",
        "evidence",
        "evidence snapshot(s) started",
        "isolation group",
    ] {
        ensure!(shown.contains(words), "{words:?} in:\n{shown}");
    }

    // Evidence first: a snapshot of the instance's volume, tagged with the run.
    let snapshots = evidence_of(&ec2, &instance).await?;
    let taken = &run.steps[0].outputs["snapshot_ids"];
    ensure!(
        snapshots.len() == taken.as_array().map_or(0, Vec::len) && !snapshots.is_empty(),
        "the evidence snapshots are there: {taken} {snapshots:?}"
    );
    ensure!(
        snapshots.iter().all(|snap| snap
            .tags()
            .iter()
            .any(|t| t.key() == Some("quell:run") && t.value() == Some(record.key.as_str()))),
        "tagged with the run"
    );
    let first_snapshot = record
        .steps
        .iter()
        .position(|st| st.name == "evidence.snapshots")
        .context("the snapshot step is recorded")?;
    let first_isolation = record
        .steps
        .iter()
        .position(|st| st.name.starts_with("isolate."))
        .context("the isolation is recorded")?;
    ensure!(
        first_snapshot < first_isolation,
        "evidence before isolation"
    );

    // Then isolation, in two phases, read back: every interface in Quell's isolation group only.
    let isolation = record
        .step("isolate.isolation_groups")
        .context("phase 2 recorded")?
        .new["group"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    ensure!(
        record.step("isolate.untracked_groups").is_some(),
        "phase 1 recorded"
    );
    let after = groups_of(&ec2, &instance).await?;
    ensure!(
        after == [isolation.clone()],
        "isolated: {after:?} (was {before:?})"
    );

    // The same finding again (EventBridge delivers at least once) starts nothing new.
    let again = finding(&account, &instance)?;
    let mut same = again.clone();
    same["id"] = run.context["finding"]["id"].clone();
    same["arn"] = run.context["finding"]["arn"].clone();
    put_event(
        &s,
        &account,
        HOME,
        "aws.guardduty",
        "GuardDuty Finding",
        &same,
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let ledger = ledger_of(&s.in_account(&s.security(), HOME).await?);
    let runs = ledger
        .for_entity(&format!("{account}/{HOME}/AWS::EC2::Instance/{instance}"))
        .await?;
    ensure!(runs.len() == 1, "one run for one finding: {}", runs.len());

    by_hand(&s, &account, &ec2).await?;
    by_custom_action(&s, &account, &ec2).await?;

    // A change to a step only is a new document for the security stack; the member StackSet's
    // forwarding stays as it is.
    let edited = std::fs::read_to_string(repository().join(format!("playbooks/{PLAYBOOK}.yaml")))?
        .replace(
            "Isolated ${{ finding.resource_id }}",
            "Quell isolated ${{ finding.resource_id }}",
        );
    let copy = s.home().join("edited-playbook.yaml");
    std::fs::write(&copy, edited)?;
    let steps_only = s.config_variant("declared-edited.yaml", |text| {
        format!(
            "{text}declared_playbooks:\n  - include: {}\n",
            copy.display()
        )
    })?;
    let plan = plan_of(&s, &steps_only)?;
    ensure!(plan["upload_playbooks"].is_string(), "{plan}");
    ensure!(
        change_of(&plan, "stacks", "quell-security")? == "update",
        "{plan}"
    );
    ensure!(
        change_of(&plan, "stack_sets", "quell-member-regional")? == "unchanged",
        "a step change needs no StackSet update: {plan}"
    );

    // A CloudTrail trigger names calls that member accounts must forward: a StackSet update.
    let calls = s.home().join("calls-playbook.yaml");
    std::fs::write(&calls, CLOUDTRAIL_PLAYBOOK)?;
    let with_calls = s.config_variant("declared-calls.yaml", |text| {
        format!(
            "{text}declared_playbooks:\n  - include: {}\n",
            calls.display()
        )
    })?;
    let plan = plan_of(&s, &with_calls)?;
    ensure!(
        change_of(&plan, "stack_sets", "quell-member-regional")? == "update",
        "a CloudTrail trigger is forwarded by members: {plan}"
    );

    // Back to the configuration the other tests use: the playbook and its forwarding go.
    let original = s.config_path();
    upgrade_to(&s, &original).await?;
    Ok(())
}

/// `quell run`: a playbook with a `manual` trigger, on an instance the analyst names. A playbook
/// with a trigger of its own is refused, and an instance named in an account it is not in is
/// left alone; what the run did is read back from EC2.
async fn by_hand(s: &Sandbox, account: &str, ec2: &aws_sdk_ec2::Client) -> Result<()> {
    let instance = launch(ec2).await?;
    let before = groups_of(ec2, &instance).await?;
    let arn = format!("arn:aws:ec2:{HOME}:{account}:instance/{instance}");
    let run = |playbook: &str, target: &str| {
        s.quell(&[
            "--sandbox",
            "--output",
            "json",
            "run",
            playbook,
            "--target",
            target,
            "--reason",
            "INC-4711: beaconing from the proxy logs",
            "--yes",
        ])
    };

    let refused = run(PLAYBOOK, &arn);
    let report = json(&refused)?;
    ensure!(
        refused.status.code() == Some(3) && report["record"]["rejection"]["code"] == "not_manual",
        "a playbook with its own trigger is not started by hand: {report}"
    );
    // The instance named in another member account: read there, it does not exist.
    let other = s
        .members()
        .into_iter()
        .find(|m| m != account)
        .context("a second member account")?;
    let elsewhere = format!("arn:aws:ec2:{HOME}:{other}:instance/{instance}");
    let skipped = json(&run(MANUAL, &elsewhere))?;
    ensure!(
        skipped["record"]["status"] == "skipped",
        "an instance named in an account it is not in starts nothing: {skipped}"
    );
    ensure!(
        groups_of(ec2, &instance).await? == before,
        "nothing changed on the instance after two refused runs"
    );

    let started = run(MANUAL, &arn);
    let report = json(&started)?;
    ensure!(
        started.status.success() && report["record"]["status"] == "succeeded",
        "the run started: {report}"
    );
    let record = run_on(s, MANUAL, account, &instance).await?;
    let outcomes: Vec<&str> = record
        .run
        .as_ref()
        .context("a run")?
        .steps
        .iter()
        .map(|st| st.outcome.as_str())
        .collect();
    ensure!(
        record.status == Status::Succeeded && outcomes == ["done"; 4],
        "{:?} {outcomes:?}",
        record.status
    );
    ensure!(
        record
            .requester
            .as_deref()
            .is_some_and(|r| r.contains("running playbook isolate-instance")),
        "the run records who started it: {:?}",
        record.requester
    );
    let tags = tags_of(ec2, &instance).await?;
    ensure!(
        tags.iter()
            .any(|(k, v)| k == "quell:contained-by" && !v.is_empty()),
        "the instance is marked with who asked: {tags:?}"
    );
    let isolation = record
        .step("isolate.isolation_groups")
        .context("phase 2 recorded")?
        .new["group"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let after = groups_of(ec2, &instance).await?;
    ensure!(after == [isolation], "isolated: {after:?} (was {before:?})");
    Ok(())
}

/// "Quell: evidence" chosen in the security account's Security Hub on a member's finding: the run
/// acts in the member account, read back from EC2. (The sandbox's emulator has no custom
/// actions, so the event Security Hub would send is put on the security account's bus.)
async fn by_custom_action(s: &Sandbox, account: &str, ec2: &aws_sdk_ec2::Client) -> Result<()> {
    let instance = launch(ec2).await?;
    let id = quell_responder::playbooks::language::trigger::custom_action_id("Quell: evidence");
    let finding_id = format!("finding-{}", uuid_like());
    let finding = serde_json::json!({
        "SchemaVersion": "2018-10-08", "Id": finding_id,
        "ProductArn": format!("arn:aws:securityhub:{HOME}::product/aws/securityhub"),
        "GeneratorId": "analyst", "AwsAccountId": account, "Region": HOME,
        "Types": ["TTPs/Discovery"], "Title": "beaconing", "Severity": {"Label": "HIGH"},
        "RecordState": "ACTIVE", "Workflow": {"Status": "NEW"},
        "Resources": [{"Type": "AwsEc2Instance", "Region": HOME, "Partition": "aws",
            "Id": format!("arn:aws:ec2:{HOME}:{account}:instance/{instance}")}]
    });
    crate::storage::choose_custom_action(s, &id, "Quell: evidence", &finding).await?;
    let record = run_on(s, "evidence-on-request", account, &instance).await?;
    ensure!(
        record.status == Status::Succeeded,
        "{:?} {:?}",
        record.run.as_ref().map(|r| &r.status),
        record.steps
    );
    let tags = tags_of(ec2, &instance).await?;
    ensure!(
        tags.iter()
            .any(|(k, v)| k == "quell:evidence-for" && *v == finding_id),
        "the finding's instance is tagged: {tags:?}"
    );
    ensure!(
        !evidence_of(ec2, &instance).await?.is_empty(),
        "the evidence snapshot is there"
    );
    Ok(())
}

/// The shipped definition of the built-in open-security-group playbook, declared with the
/// built-in left to notify: the definition revokes the world-open rule and keeps the others,
/// read back from EC2, and the built-in writes nothing.
async fn the_shipped_open_security_group_definition_takes_over_from_the_built_in(
    s: Arc<Sandbox>,
) -> Result<()> {
    use crate::remediate::{cloudtrail_authorize, ec2_rule, group_with, ingress};
    let config = declaring(
        &s,
        "declared-sg.yaml",
        "playbooks:\n  open_security_group:\n    mode: notify\n",
        "open-security-group.yaml",
    )?;
    upgrade_to(&s, &config).await?;

    let account = s.members()[0].clone();
    let group = group_with(
        &s,
        &account,
        HOME,
        "declared-open",
        &[],
        vec![
            ec2_rule("tcp", 22, "0.0.0.0/0"),
            ec2_rule("tcp", 443, "0.0.0.0/0"),
        ],
    )
    .await?;
    cloudtrail_authorize(&s, &account, HOME, &group).await?;

    let run = finished_run(
        &s,
        "open-security-group",
        &account,
        "AWS::EC2::SecurityGroup",
        &group,
    )
    .await?;
    ensure!(
        run.status == Status::Succeeded,
        "{:?} {:?}",
        run.run.as_ref().map(|r| &r.status),
        run.steps
    );
    let left = ingress(&s, &account, HOME, &group).await?;
    ensure!(
        left == [("tcp".to_owned(), 443, "0.0.0.0/0".to_owned())],
        "SSH from anywhere revoked, HTTPS kept: {left:?}"
    );
    let revoked = &run.run.as_ref().context("a run")?.steps[0].outputs["revoked"];
    ensure!(
        revoked.as_array().is_some_and(|r| r.len() == 1),
        "the revoked rule is the step's output: {revoked}"
    );

    let original = s.config_path();
    upgrade_to(&s, &original).await?;
    Ok(())
}

/// The sandbox's configuration with `extra` YAML, declaring `playbook` from `playbooks/`.
pub fn declaring(
    s: &Sandbox,
    name: &str,
    extra: &str,
    playbook: &str,
) -> Result<std::path::PathBuf> {
    let file = repository().join("playbooks").join(playbook);
    s.config_variant(name, |text| {
        format!(
            "{text}{extra}declared_playbooks:\n  - include: {}\n",
            file.display()
        )
    })
}

/// What `quell upgrade --dry-run` would do with `config`.
fn plan_of(s: &Sandbox, config: &std::path::Path) -> Result<Value> {
    json(&s.must(&[
        "--sandbox",
        "--output",
        "json",
        "upgrade",
        "--config",
        config.to_str().unwrap_or_default(),
        "--dry-run",
    ])?)
}

/// `quell upgrade` to `config`, and the responder running with it.
pub async fn upgrade_to(s: &Sandbox, config: &std::path::Path) -> Result<()> {
    s.must(&[
        "--sandbox",
        "upgrade",
        "--config",
        config.to_str().unwrap_or_default(),
        "--yes",
    ])?;
    s.settings_applied().await;
    Ok(())
}

/// A ticket system on this machine, for the `security-tickets` webhook: every request is kept,
/// and each is answered with ticket SEC-7. A blocking listener on its own thread: the responder
/// runs in the sandbox host, another process.
fn ticket_system() -> Result<(String, Arc<std::sync::Mutex<Vec<String>>>)> {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let url = format!("http://{}/tickets", listener.local_addr()?);
    let requests = Arc::new(std::sync::Mutex::new(Vec::new()));
    let kept = requests.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(&stream);
            let mut head = String::new();
            let mut length = 0;
            while reader.read_line(&mut head).is_ok_and(|n| n > 0) && !head.ends_with("\r\n\r\n") {
                if let Some(v) = head.lines().last().and_then(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(str::to_owned)
                }) {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; length];
            let _ = reader.read_exact(&mut body);
            if let Ok(mut all) = kept.lock() {
                all.push(format!("{head}{}", String::from_utf8_lossy(&body)));
            }
            let answer = r#"{"ticket_id":"SEC-7"}"#;
            let _ = (&stream).write_all(
                format!(
                    "HTTP/1.1 201 Created\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{answer}",
                    answer.len()
                )
                .as_bytes(),
            );
        }
    });
    Ok((url, requests))
}

/// The shipped `critical-cve` playbook on an Inspector finding put on a member's bus: the instance
/// is tagged, its volume snapshotted, quarantined with HTTPS out only, and a ticket opened, each
/// read back; then the run waits for an approver AWS authenticates. The sandbox's queues stamp no
/// sender, so an approval sent here is refused and nothing is patched: the approval, the patch,
/// Inspector closing the finding and the release are shown against the SDK's mocks.
async fn critical_cve_quarantines_for_patching_opens_a_ticket_and_waits_for_a_verified_approver(
    s: Arc<Sandbox>,
) -> Result<()> {
    let (url, tickets) = ticket_system()?;
    let config = declaring(
        &s,
        "declared-cve.yaml",
        &format!("webhooks:\n  security-tickets:\n    url: {url}\n    shape: generic\n"),
        "critical-cve.yaml",
    )?;
    upgrade_to(&s, &config).await?;
    let shown = quarantined_for_patching(&s, &tickets).await;
    // Back to the configuration the other tests use, whatever happened above.
    upgrade_to(&s, &s.config_path()).await?;
    shown
}

async fn quarantined_for_patching(
    s: &Sandbox,
    tickets: &std::sync::Mutex<Vec<String>>,
) -> Result<()> {
    let account = s.members()[0].clone();
    let ec2 = aws_sdk_ec2::Client::new(&s.in_account(&account, HOME).await?);
    let instance = launch(&ec2).await?;
    let text = std::fs::read_to_string(
        repository().join("playbooks/fixtures/events/inspector2-package-vulnerability.json"),
    )?
    .replace("111122223333", &account)
    .replace("i-0123456789abcdef0", &instance)
    .replace(
        "0d3c8b7f6e5a4b3c2d1e0f9a8b7c6d5e",
        &uuid_like().replace('-', ""),
    );
    let event: Value = serde_json::from_str(&text)?;
    put_event(
        s,
        &account,
        HOME,
        "aws.inspector2",
        "Inspector2 Finding",
        &event["detail"],
    )
    .await?;

    let record = run_when(
        s,
        "critical-cve",
        (&account, "AWS::EC2::Instance", &instance),
        "waiting",
        |run| {
            matches!(
                run.status,
                quell_responder::playbooks::language::run::Status::Waiting { .. }
            )
        },
    )
    .await?;
    let run = record.run.as_deref().context("a run")?;
    let outcomes: Vec<(&str, &str)> = run
        .steps
        .iter()
        .take(4)
        .map(|st| (st.id.as_str(), st.outcome.as_str()))
        .collect();
    ensure!(
        outcomes
            == [
                ("mark", "done"),
                ("evidence", "done"),
                ("quarantine", "done"),
                ("ticket", "done")
            ],
        "{outcomes:?} {:?}",
        record.steps
    );
    ensure!(
        record.status == Status::Waiting,
        "waits at the approval: {:?}",
        record.status
    );

    // Read back: the tag, the evidence, the quarantine with HTTPS out only, the ticket.
    let tags = tags_of(&ec2, &instance).await?;
    ensure!(
        tags.iter().any(|(k, _)| k == "quell:incident"),
        "tagged: {tags:?}"
    );
    ensure!(
        !evidence_of(&ec2, &instance).await?.is_empty(),
        "the evidence snapshot"
    );
    let groups = groups_of(&ec2, &instance).await?;
    let [quarantine] = &groups[..] else {
        bail!("one quarantine group on every interface: {groups:?}")
    };
    let described = ec2
        .describe_security_groups()
        .group_ids(quarantine)
        .send()
        .await?;
    let group = described.security_groups().first().context("the group")?;
    ensure!(
        group.ip_permissions().is_empty(),
        "nothing comes in: {:?}",
        group.ip_permissions()
    );
    ensure!(
        !group.ip_permissions_egress().is_empty()
            && group
                .ip_permissions_egress()
                .iter()
                .all(|p| p.ip_protocol() == Some("tcp")
                    && p.from_port() == Some(443)
                    && p.to_port() == Some(443)),
        "HTTPS out only: {:?}",
        group.ip_permissions_egress()
    );
    let opened = tickets.lock().map(|t| t.clone()).unwrap_or_default();
    ensure!(
        opened.len() == 1
            && opened[0].starts_with("POST /tickets")
            && opened[0].contains(&instance),
        "one ticket opened, naming the instance: {opened:?}"
    );
    ensure!(
        run.steps[3].outputs["ticket_id"] == "SEC-7",
        "the ticket's id is the step's output: {:?}",
        run.steps[3].outputs
    );

    // An approval the sandbox cannot authenticate is refused, and nothing is patched.
    let out = s.quell(&[
        "--sandbox",
        "--output",
        "json",
        "approve",
        &record.key,
        "--step",
        "approve_patch",
        "--reason",
        "lead on call",
        "--yes",
    ]);
    let report = json(&out)?;
    ensure!(
        out.status.code() == Some(3)
            && report["record"]["rejection"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("a sender IAM confirmed")),
        "refused for want of an authenticated approver: {report}"
    );
    let after = ledger_of(&s.in_account(&s.security(), HOME).await?)
        .get(&record.key)
        .await?
        .context("the run")?;
    ensure!(
        after.status == Status::Waiting && after.step("patch.send_command").is_none(),
        "still waiting, nothing sent: {:?}",
        after.steps
    );

    // The approval's 72-hour timeout is beyond an SQS delay: one one-time schedule in Quell's
    // group, due when the run's wait ends, delivering to the isolation queue. (The emulator never
    // fires it; the delivery is shown against the mocks.)
    let Some(quell_responder::playbooks::language::run::Status::Waiting { until, .. }) =
        after.run.as_deref().map(|r| r.status.clone())
    else {
        bail!("the run waits: {:?}", after.run);
    };
    let scheduler = aws_sdk_scheduler::Client::new(&s.in_account(&s.security(), HOME).await?);
    let listed = scheduler
        .list_schedules()
        .group_name("quell-timers")
        .send()
        .await
        .context("scheduler:ListSchedules")?;
    let mut pending = Vec::new();
    for summary in listed.schedules() {
        let schedule = scheduler
            .get_schedule()
            .group_name("quell-timers")
            .name(summary.name().unwrap_or_default())
            .send()
            .await
            .context("scheduler:GetSchedule")?;
        pending.push((
            schedule
                .schedule_expression()
                .unwrap_or_default()
                .to_owned(),
            schedule
                .target()
                .map(|t| t.arn().to_owned())
                .unwrap_or_default(),
            schedule
                .target()
                .and_then(|t| t.input())
                .unwrap_or_default()
                .to_owned(),
        ));
    }
    let fires = |expression: &str| {
        expression
            .strip_prefix("at(")
            .and_then(|e| e.strip_suffix(')'))
            .and_then(|e| chrono::NaiveDateTime::parse_from_str(e, "%Y-%m-%dT%H:%M:%S").ok())
            .map(|t| t.and_utc())
    };
    let ours: Vec<_> = pending
        .iter()
        .filter(|(_, _, input)| input.contains(&record.key) && input.contains("approve_patch"))
        .collect();
    ensure!(
        ours.len() == 1
            && fires(&ours[0].0).is_some_and(|at| (at - until).num_seconds().abs() <= 1)
            && ours[0].1.ends_with(":quell-isolation"),
        "one schedule for the approval's timeout, due {until}, to the isolation queue: {pending:?}"
    );

    Ok(())
}
