//! Declared playbooks' runs against mocks: what the sandbox cannot show. Approvals need senders
//! AWS authenticated (the emulator stamps none); a document changed in the bucket, a finding
//! that names another account, a GuardDuty sample finding, an exemption added while a run waits
//! and timers delivered early or twice are each tried here as an attacker or the platform would.

use aws_smithy_mocks::{mock, mock_client, RuleMode};
use quell_responder::clients::MemberClients;
use quell_responder::ledger::Status;
use quell_responder::runs::document::key_for;
use quell_responder::Responder;
use serde_json::{json, Value};

use super::authorization::queued;
use super::playbooks::{event_delivery, request_delivery, EVENTS_QUEUE};
use super::{calls, clients, record, settings_with, world, Shared, ACCOUNT};

const INSTANCE: &str = "i-0123456789abcdef0";
const ANALYST: &str = "arn:aws:iam::222233334444:role/team/Analyst";
const JO: &str = "arn:aws:sts::222233334444:assumed-role/Analyst/jo";
const KIM: &str = "arn:aws:sts::222233334444:assumed-role/Analyst/kim";
const ANALYST_ID: &str = "AROAANALYST000000001";

/// A GuardDuty instance playbook with `steps`.
fn playbook(steps: &Value) -> Value {
    json!({
        "id": "gd-tag", "version": 1, "description": "Tags an instance GuardDuty names.",
        "mode": "auto",
        "trigger": {"guardduty": {"types": ["CryptoCurrency:EC2/"], "min_severity": 5, "resource_types": ["Instance"]}},
        "target": {"type": "AWS::EC2::Instance", "id": "${{ finding.resource_id }}"},
        "scope": {"exempt_tag": "quell:exempt"},
        "steps": steps
    })
}

fn tag_step() -> Value {
    json!({"id": "mark", "action": "tag", "with": {"tags": {"quell:incident": "${{ finding.id }}"}}})
}

/// The member account's EC2: one running instance whose tags are the world's.
fn ec2(w: &Shared) -> aws_sdk_ec2::Client {
    use aws_sdk_ec2::operation::{
        create_tags::*, delete_tags::*, describe_instances::*, describe_tags::*,
    };
    use aws_sdk_ec2::types::{
        Instance, InstanceState, InstanceStateName, Reservation, Tag, TagDescription,
    };
    let describe = {
        let w = w.clone();
        mock!(aws_sdk_ec2::Client::describe_instances).then_compute_output(move |_| {
            let mut world = w.lock().unwrap();
            world.call("DescribeInstances");
            let tags = world
                .instance_tags
                .iter()
                .map(|(k, v)| Tag::builder().key(k).value(v).build());
            DescribeInstancesOutput::builder()
                .reservations(
                    Reservation::builder()
                        .instances(
                            Instance::builder()
                                .instance_id(INSTANCE)
                                .vpc_id("vpc-1")
                                .state(
                                    InstanceState::builder()
                                        .name(InstanceStateName::Running)
                                        .build(),
                                )
                                .set_tags(Some(tags.collect()))
                                .build(),
                        )
                        .build(),
                )
                .build()
        })
    };
    let describe_tags = {
        let w = w.clone();
        mock!(aws_sdk_ec2::Client::describe_tags).then_compute_output(move |_| {
            let world = w.lock().unwrap();
            DescribeTagsOutput::builder()
                .set_tags(Some(
                    world
                        .instance_tags
                        .iter()
                        .map(|(k, v)| {
                            TagDescription::builder()
                                .key(k)
                                .value(v)
                                .resource_id(INSTANCE)
                                .build()
                        })
                        .collect(),
                ))
                .build()
        })
    };
    let create = {
        let w = w.clone();
        mock!(aws_sdk_ec2::Client::create_tags).then_compute_output(move |req| {
            let mut world = w.lock().unwrap();
            world.call("CreateTags");
            for t in req.tags() {
                world.instance_tags.insert(
                    t.key().unwrap_or_default().to_owned(),
                    t.value().unwrap_or_default().to_owned(),
                );
            }
            CreateTagsOutput::builder().build()
        })
    };
    let delete = {
        let w = w.clone();
        mock!(aws_sdk_ec2::Client::delete_tags).then_compute_output(move |req| {
            let mut world = w.lock().unwrap();
            for t in req.tags() {
                world.instance_tags.remove(t.key().unwrap_or_default());
            }
            DeleteTagsOutput::builder().build()
        })
    };
    mock_client!(
        aws_sdk_ec2,
        RuleMode::MatchAny,
        &[&describe, &describe_tags, &create, &delete]
    )
}

/// A responder whose declared playbooks are `playbooks`, with the bucket serving `served` under
/// their key (what someone who can write the bucket may have put there instead).
fn responder_serving(w: &Shared, playbooks: &[Value], served: Option<Vec<u8>>) -> Responder {
    build(
        w,
        playbooks,
        Setup {
            served,
            ..Setup::default()
        },
    )
}

fn responder_with_ssm(w: &Shared, playbooks: &[Value], ssm: aws_sdk_ssm::Client) -> Responder {
    build(
        w,
        playbooks,
        Setup {
            ssm: Some(ssm),
            ..Setup::default()
        },
    )
}

/// What a test changes in the responder it runs against.
#[derive(Default)]
struct Setup {
    /// What the bucket serves instead of the document (someone who can write it).
    served: Option<Vec<u8>>,
    ssm: Option<aws_sdk_ssm::Client>,
    secrets: Option<aws_sdk_secretsmanager::Client>,
    /// `QUELL_WEBHOOKS`.
    webhooks: Option<String>,
    /// `QUELL_PLAYBOOKS`: where the sweep goes, the built-in playbooks' modes.
    playbook_settings: Option<String>,
    /// The member account's EC2 and S3, when not the one instance's.
    ec2: Option<aws_sdk_ec2::Client>,
    s3: Option<aws_sdk_s3::Client>,
}

fn build(w: &Shared, playbooks: &[Value], setup: Setup) -> Responder {
    let document = serde_json::to_vec(playbooks).unwrap();
    let uri = format!("s3://quell-artifacts/{}", key_for(&document));
    let body = setup.served.unwrap_or(document);
    let get = mock!(aws_sdk_s3::Client::get_object).then_compute_output(move |_| {
        aws_sdk_s3::operation::get_object::GetObjectOutput::builder()
            .body(aws_sdk_s3::primitives::ByteStream::from(body.clone()))
            .build()
    });
    let mut all = clients(w, Vec::new(), ec2(w), None);
    all.s3 = mock_client!(aws_sdk_s3, RuleMode::MatchAny, &[&get]);
    if let Some(secrets) = setup.secrets {
        all.secrets = secrets;
    }
    let member = MemberClients {
        iam: super::iam(w, Vec::new()),
        lambda: super::lambda(w),
        ec2: setup.ec2.clone().unwrap_or_else(|| ec2(w)),
        s3: setup
            .s3
            .clone()
            .unwrap_or_else(|| mock_client!(aws_sdk_s3, RuleMode::MatchAny, &[])),
        ssm: setup
            .ssm
            .unwrap_or_else(|| mock_client!(aws_sdk_ssm, RuleMode::MatchAny, &[])),
        organizations: super::organizations(),
    };
    all.member = std::sync::Arc::new(move |_| member.clone());
    let mut env = vec![
        ("QUELL_EVENTS_QUEUE_ARN", EVENTS_QUEUE),
        ("QUELL_DECLARED_PLAYBOOKS", uri.as_str()),
    ];
    if let Some(hooks) = &setup.webhooks {
        env.push(("QUELL_WEBHOOKS", hooks.as_str()));
    }
    if let Some(settings) = &setup.playbook_settings {
        env.push(("QUELL_PLAYBOOKS", settings.as_str()));
    }
    Responder::with_clients(all, settings_with(&env))
}

fn responder(w: &Shared, playbooks: &[Value]) -> Responder {
    responder_serving(w, playbooks, None)
}

/// GuardDuty's event about the instance, from `envelope` naming `named` in its finding.
fn finding_event(envelope: &str, named: &str, sample: bool) -> Value {
    json!({
        "version": "0", "id": format!("ev-{named}-{sample}"), "detail-type": "GuardDuty Finding",
        "source": "aws.guardduty", "account": envelope, "region": "us-east-1", "time": "2026-11-30T08:00:00Z",
        "resources": [],
        "detail": {
            "schemaVersion": "2.0", "accountId": named, "region": "us-east-1", "partition": "aws",
            "id": "f1", "arn": format!("arn:aws:guardduty:us-east-1:{named}:detector/d/finding/f1"),
            "type": "CryptoCurrency:EC2/BitcoinTool.B!DNS", "severity": 8, "title": "mining",
            "resource": {"resourceType": "Instance", "instanceDetails": {"instanceId": INSTANCE}},
            "service": {"resourceRole": "ACTOR", "additionalInfo": {"sample": sample}}
        }
    })
}

async fn deliver_finding(r: &Responder, envelope: &str, named: &str, sample: bool) -> Value {
    r.handle(event_delivery(
        &format!("m-{named}-{sample}"),
        &finding_event(envelope, named, sample),
    ))
    .await
    .unwrap()
}

/// The one run, finished well, on the member account's instance.
fn succeeded_on_the_instance(w: &Shared, out: &Value) {
    let run = the_run(w);
    assert_eq!(run.status, Status::Succeeded, "{out}");
    assert_eq!(
        run.entity.as_deref(),
        Some(format!("{ACCOUNT}/us-east-1/AWS::EC2::Instance/{INSTANCE}").as_str())
    );
}

/// The keys of the runs in the world's ledger.
fn run_keys(w: &Shared) -> Vec<String> {
    let world = w.lock().unwrap();
    world
        .ledger
        .keys()
        .filter(|k| k.starts_with("run:"))
        .cloned()
        .collect()
}

/// The one run record in the world's ledger.
fn the_run(w: &Shared) -> quell_responder::ledger::Record {
    let key = {
        let world = w.lock().unwrap();
        let keys: Vec<&String> = world
            .ledger
            .keys()
            .filter(|k| k.starts_with("run:"))
            .collect();
        assert_eq!(keys.len(), 1, "one run: {keys:?}");
        keys[0].clone()
    };
    record(w, &key)
}

/// `quell approve RUN --step S` as the decide queue delivers it, from `requester` whom SQS
/// stamped with `sender`.
fn approval(key: &str, step: &str, requester: &str, sender: Option<&str>, n: u32) -> Value {
    let body = json!({"version": "1", "request_id": format!("decision-{n}"), "action": "approve",
        "entity": key, "reason": "ticket 9", "requester": requester, "options": {"step": step}});
    queued("decide", &format!("q-{n}"), &body, sender)
}

#[tokio::test]
async fn a_finding_runs_its_playbook_once_in_the_account_that_sent_it() {
    let w = world();
    let r = responder(&w, &[playbook(&json!([tag_step()]))]);
    let out = deliver_finding(&r, ACCOUNT, ACCOUNT, false).await;
    let run = the_run(&w);
    assert_eq!(run.status, Status::Succeeded, "{out} {run:?}");
    assert_eq!(w.lock().unwrap().instance_tags["quell:incident"], "f1");
    assert!(run
        .entity
        .as_deref()
        .unwrap()
        .starts_with(&format!("{ACCOUNT}/us-east-1/")));
    // Delivered again (at least once): acted on once.
    deliver_finding(&r, ACCOUNT, ACCOUNT, false).await;
    assert_eq!(calls(&w, "CreateTags"), 1);
}

#[tokio::test]
async fn a_document_that_does_not_hash_to_its_key_runs_nothing() {
    let w = world();
    let honest = playbook(&json!([tag_step()]));
    let mut forged = honest.clone();
    forged["steps"][0]["with"]["tags"] = json!({"owner": "attacker"});
    let r = responder_serving(&w, &[honest], Some(serde_json::to_vec(&[forged]).unwrap()));
    let out = deliver_finding(&r, ACCOUNT, ACCOUNT, false).await;
    assert_eq!(
        out["outcomes"][0]["code"], "declared_playbooks_refused",
        "{out}"
    );
    assert!(
        out["outcomes"][0]["message"]
            .as_str()
            .unwrap()
            .contains("do not hash to their key"),
        "{out}"
    );
    assert_eq!(calls(&w, "CreateTags"), 0);
    assert!(w.lock().unwrap().instance_tags.is_empty());
}

#[tokio::test]
async fn a_finding_naming_another_account_or_a_sample_finding_runs_nothing() {
    let w = world();
    let r = responder(&w, &[playbook(&json!([tag_step()]))]);
    // A member puts an event about an instance in another account on its own bus.
    let out = deliver_finding(&r, "444455556666", ACCOUNT, false).await;
    assert!(
        out.to_string()
            .contains("acts only in the account that produced its event"),
        "{out}"
    );
    let out = deliver_finding(&r, ACCOUNT, ACCOUNT, true).await;
    assert!(out.to_string().contains("sample finding"), "{out}");
    assert_eq!(calls(&w, "CreateTags"), 0);
    assert!(!w
        .lock()
        .unwrap()
        .ledger
        .keys()
        .any(|k| k.starts_with("run:")));
}

fn approval_first(min: u64) -> Value {
    playbook(&json!([
        {"id": "agree", "action": "approval", "timeout": "4h", "on_timeout": "end",
         "with": {"approvers": [ANALYST], "min": min, "summary": "tag ${{ finding.resource_id }}?"}},
        tag_step()
    ]))
}

#[tokio::test]
async fn an_approval_counts_only_distinct_verified_approvers() {
    let w = world();
    let r = responder(&w, &[approval_first(2)]);
    deliver_finding(&r, ACCOUNT, ACCOUNT, false).await;
    let run = the_run(&w);
    assert_eq!(run.status, Status::Waiting, "{run:?}");
    assert!(
        w.lock()
            .unwrap()
            .published
            .iter()
            .any(|m| m["event"] == "awaiting_approval"
                && m["record"]["reason"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("--step agree")),
        "the approvers are asked, with the command"
    );
    let key = run.key.clone();

    // Through the ExternalId topic nobody is authenticated: refused.
    let topic = request_delivery(
        "t-1",
        &json!({"version": "1", "request_id": "decision-topic", "action": "approve", "entity": key,
                "reason": "r", "requester": JO, "options": {"step": "agree"}}),
    );
    r.handle(topic).await.unwrap();
    assert_eq!(record(&w, "decision-topic").status, Status::Rejected);

    // jo approves twice: one person, one approval.
    let jo = format!("{ANALYST_ID}:jo");
    r.handle(approval(&key, "agree", JO, Some(&jo), 1))
        .await
        .unwrap();
    r.handle(approval(&key, "agree", JO, Some(&jo), 2))
        .await
        .unwrap();
    assert_eq!(the_run(&w).status, Status::Waiting);
    assert_eq!(
        calls(&w, "CreateTags"),
        0,
        "nothing before the second approver"
    );

    // kim is the second person: the step is approved and the tag written.
    let kim = format!("{ANALYST_ID}:kim");
    r.handle(approval(&key, "agree", KIM, Some(&kim), 3))
        .await
        .unwrap();
    let run = the_run(&w);
    assert_eq!(run.status, Status::Succeeded, "{run:?}");
    assert_eq!(
        run.run.as_ref().unwrap().steps[0].approvers,
        vec![jo, kim],
        "both recorded"
    );
    assert_eq!(calls(&w, "CreateTags"), 1);
}

#[tokio::test]
async fn an_exemption_tag_added_during_the_wait_wins_over_the_approval() {
    let w = world();
    let r = responder(&w, &[approval_first(1)]);
    deliver_finding(&r, ACCOUNT, ACCOUNT, false).await;
    let key = the_run(&w).key;
    w.lock()
        .unwrap()
        .instance_tags
        .insert("quell:exempt".into(), "forensics team has it".into());
    let jo = format!("{ANALYST_ID}:jo");
    r.handle(approval(&key, "agree", JO, Some(&jo), 1))
        .await
        .unwrap();
    let run = the_run(&w);
    assert_eq!(run.status, Status::Failed, "{run:?}");
    assert!(
        run.error
            .as_deref()
            .unwrap_or_default()
            .contains("forensics team has it"),
        "{run:?}"
    );
    assert_eq!(calls(&w, "CreateTags"), 0);
}

/// A message from the isolation queue, as Lambda's event source mapping delivers it.
fn isolation_delivery(n: u32, body: &str) -> Value {
    json!({"Records": [{
        "messageId": format!("wake-{n}"), "receiptHandle": "r", "body": body,
        "attributes": {"ApproximateReceiveCount": "1"}, "messageAttributes": {}, "md5OfBody": "",
        "eventSource": "aws:sqs", "eventSourceARN": "arn:aws:sqs:us-east-1:222233334444:quell-isolation",
        "awsRegion": "us-east-1"
    }]})
}

/// Timers sent to the isolation queue so far, with the delay each asked for.
fn isolation_timers(w: &Shared) -> Vec<(String, i32)> {
    let world = w.lock().unwrap();
    world
        .queued
        .iter()
        .zip(&world.delays)
        .filter(|((queue, body), _)| queue.ends_with("-isolation") && body.contains("\"timer\""))
        .map(|((_, body), delay)| (body.clone(), *delay))
        .collect()
}

/// Moves the one run's wait to the past, as if its time had come.
fn make_the_wait_due(w: &Shared) {
    let mut world = w.lock().unwrap();
    let key = world
        .ledger
        .keys()
        .find(|k| k.starts_with("run:"))
        .cloned()
        .unwrap();
    let item = world.ledger.get_mut(&key).unwrap();
    let mut stored: Value = serde_json::from_str(item["record"].as_s().unwrap()).unwrap();
    stored["run"]["status"]["until"] = json!("2020-01-01T00:00:00Z");
    item.insert(
        "record".into(),
        aws_sdk_dynamodb::types::AttributeValue::S(stored.to_string()),
    );
}

#[tokio::test]
async fn a_wait_of_minutes_is_one_sqs_delay_and_no_schedule() {
    let w = world();
    let waits = playbook(&json!([
        {"id": "cool_off", "action": "wait", "with": {"for": "10m"}},
        tag_step()
    ]));
    let r = responder(&w, &[waits]);
    deliver_finding(&r, ACCOUNT, ACCOUNT, false).await;
    let timers = isolation_timers(&w);
    assert_eq!(timers.len(), 1, "{timers:?}");
    assert!((595..=600).contains(&timers[0].1), "{timers:?}");
    assert!(w.lock().unwrap().schedules.is_empty());
}

#[tokio::test]
async fn a_wait_beyond_fifteen_minutes_is_one_schedule_that_delivers_to_the_isolation_queue_and_acts_once(
) {
    let w = world();
    let waits = playbook(&json!([
        {"id": "cool_off", "action": "wait", "with": {"for": "2h"}},
        tag_step()
    ]));
    let r = responder(&w, &[waits]);
    let asked = chrono::Utc::now();
    deliver_finding(&r, ACCOUNT, ACCOUNT, false).await;
    assert!(isolation_timers(&w).is_empty(), "no chain of SQS delays");
    let schedule = {
        let world = w.lock().unwrap();
        assert_eq!(world.schedules.len(), 1);
        world.schedules[0].clone()
    };
    assert_eq!(schedule.group_name(), Some("quell-timers"));
    let name = schedule.name().unwrap();
    assert!(
        name.len() <= 64
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)),
        "{name}"
    );
    let expression = schedule.schedule_expression().unwrap();
    let at = chrono::NaiveDateTime::parse_from_str(
        expression
            .strip_prefix("at(")
            .and_then(|e| e.strip_suffix(')'))
            .unwrap(),
        "%Y-%m-%dT%H:%M:%S",
    )
    .unwrap()
    .and_utc();
    let due = asked + chrono::Duration::hours(2);
    assert!(
        at >= due - chrono::Duration::seconds(1) && at <= due + chrono::Duration::seconds(30),
        "{expression} for {due}"
    );
    assert_eq!(schedule.schedule_expression_timezone(), Some("UTC"));
    assert_eq!(
        schedule.flexible_time_window().unwrap().mode(),
        &aws_sdk_scheduler::types::FlexibleTimeWindowMode::Off
    );
    assert_eq!(
        schedule.action_after_completion(),
        Some(&aws_sdk_scheduler::types::ActionAfterCompletion::Delete)
    );
    let target = schedule.target().unwrap();
    assert_eq!(
        target.arn(),
        "arn:aws:sqs:us-east-1:222233334444:quell-isolation"
    );
    assert_eq!(
        target.role_arn(),
        "arn:aws:iam::222233334444:role/quell-timers"
    );
    assert_eq!(
        target.dead_letter_config().and_then(|d| d.arn()),
        Some("arn:aws:sqs:us-east-1:222233334444:quell-responder-dlq")
    );
    let wake = target.input().unwrap().to_owned();

    // Delivered early (a redelivery): scheduled again under the same name, which Scheduler
    // refuses as taken, so there is still one schedule and nothing is done.
    r.handle(isolation_delivery(1, &wake)).await.unwrap();
    assert_eq!(calls(&w, "CreateSchedule"), 2);
    assert_eq!(w.lock().unwrap().schedules.len(), 1);
    assert!(isolation_timers(&w).is_empty());
    assert_eq!(calls(&w, "CreateTags"), 0);

    // Due and delivered twice: one tag.
    make_the_wait_due(&w);
    let mut due: Value = serde_json::from_str(&wake).unwrap();
    due["at"] = json!("2020-01-01T00:00:00Z");
    r.handle(isolation_delivery(2, &due.to_string()))
        .await
        .unwrap();
    r.handle(isolation_delivery(3, &due.to_string()))
        .await
        .unwrap();
    assert_eq!(the_run(&w).status, Status::Succeeded);
    assert_eq!(calls(&w, "CreateTags"), 1);
}

#[tokio::test]
async fn a_schedule_that_arrives_with_minutes_to_go_is_sent_on_as_a_delay() {
    let w = world();
    let waits = playbook(&json!([
        {"id": "cool_off", "action": "wait", "with": {"for": "2h"}},
        tag_step()
    ]));
    let r = responder(&w, &[waits]);
    deliver_finding(&r, ACCOUNT, ACCOUNT, false).await;
    let wake = w.lock().unwrap().schedules[0]
        .target()
        .unwrap()
        .input()
        .unwrap()
        .to_owned();
    let mut soon: Value = serde_json::from_str(&wake).unwrap();
    soon["at"] = json!((chrono::Utc::now() + chrono::Duration::minutes(5)).to_rfc3339());
    r.handle(isolation_delivery(1, &soon.to_string()))
        .await
        .unwrap();
    let timers = isolation_timers(&w);
    assert_eq!(timers.len(), 1, "{timers:?}");
    assert!((295..=300).contains(&timers[0].1), "{timers:?}");
    assert_eq!(calls(&w, "CreateSchedule"), 1);
    assert_eq!(calls(&w, "CreateTags"), 0);
}

#[tokio::test]
async fn a_timer_scheduler_refuses_fails_the_run_visibly_and_its_redelivery_schedules_it() {
    let w = world();
    w.lock()
        .unwrap()
        .failures
        .insert("CreateSchedule", ["AccessDeniedException"].into());
    let waits = playbook(&json!([
        {"id": "cool_off", "action": "wait", "with": {"for": "2h"}},
        tag_step()
    ]));
    let r = responder(&w, &[waits]);
    let event = finding_event(ACCOUNT, ACCOUNT, false);
    let first = r.handle(event_delivery("m-1", &event)).await;
    let run = the_run(&w);
    assert_eq!(run.status, Status::Failed, "{first:?}");
    let error = run.error.unwrap_or_default();
    assert!(
        error.contains("scheduler:CreateSchedule") && error.contains("AccessDenied"),
        "{error}"
    );
    assert!(w.lock().unwrap().schedules.is_empty());

    // The event source's retry: the timer is scheduled and the run waits again, nothing acted.
    r.handle(event_delivery("m-1", &event)).await.unwrap();
    assert_eq!(w.lock().unwrap().schedules.len(), 1);
    assert_eq!(the_run(&w).status, Status::Waiting);
    assert_eq!(calls(&w, "CreateTags"), 0);
}

fn inspector_event(envelope: &str, status: &str) -> Value {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../playbooks/fixtures/events/inspector2-package-vulnerability.json"
    ))
    .unwrap();
    let mut event: Value = serde_json::from_str(&text).unwrap();
    event["account"] = json!(envelope);
    event["id"] = json!(format!("inspector-{envelope}-{status}"));
    event["detail"]["status"] = json!(status);
    event
}

#[tokio::test]
async fn a_wait_for_moves_on_only_for_its_finding_closing_in_its_account() {
    let w = world();
    let closes = json!({
        "id": "cve-tag", "version": 1, "description": "Tags until Inspector closes the finding.",
        "mode": "auto",
        "trigger": {"inspector": {"types": ["PACKAGE_VULNERABILITY"], "min_severity": "CRITICAL"}},
        "target": {"type": "AWS::EC2::Instance", "id": "${{ finding.resource_id }}"},
        "steps": [
            tag_step(),
            {"id": "closed", "action": "wait_for", "timeout": "7d", "on_timeout": "fail",
             "with": {"event": {"path": "finding.status", "equals": "CLOSED"}}},
            {"id": "put_back", "action": "release", "with": {"steps": ["mark"]}}
        ]
    });
    let r = responder(&w, &[closes]);
    r.handle(event_delivery("i-1", &inspector_event(ACCOUNT, "ACTIVE")))
        .await
        .unwrap();
    assert_eq!(the_run(&w).status, Status::Waiting);
    assert!(w
        .lock()
        .unwrap()
        .instance_tags
        .contains_key("quell:incident"));

    // Another member says the finding closed: not its finding to close.
    r.handle(event_delivery(
        "i-2",
        &inspector_event("444455556666", "CLOSED"),
    ))
    .await
    .unwrap();
    assert_eq!(the_run(&w).status, Status::Waiting);

    // Still active: the condition does not hold.
    r.handle(event_delivery("i-3", &inspector_event(ACCOUNT, "ACTIVE")))
        .await
        .unwrap();
    assert_eq!(the_run(&w).status, Status::Waiting);

    // Inspector closes it: the release puts the tags back as they were (none).
    r.handle(event_delivery("i-4", &inspector_event(ACCOUNT, "CLOSED")))
        .await
        .unwrap();
    let run = the_run(&w);
    assert_eq!(run.status, Status::Succeeded, "{run:?}");
    assert!(
        !w.lock()
            .unwrap()
            .instance_tags
            .contains_key("quell:incident"),
        "released"
    );
    assert!(run.step("release.mark").is_some(), "{:?}", run.steps);
}

/// SSM answering SendCommand with one command and GetCommandInvocation with `statuses` in turn.
fn ssm(w: &Shared, statuses: &'static [&'static str]) -> aws_sdk_ssm::Client {
    use aws_sdk_ssm::operation::{get_command_invocation::*, send_command::*};
    use aws_sdk_ssm::types::{Command, CommandInvocationStatus};
    let send = {
        let w = w.clone();
        mock!(aws_sdk_ssm::Client::send_command).then_compute_output(move |req| {
            let mut world = w.lock().unwrap();
            world.call("SendCommand");
            world.published.push(json!({"ssm": req.document_name(), "parameters": format!("{:?}", req.parameters())}));
            SendCommandOutput::builder()
                .command(Command::builder().command_id("cmd-1").build())
                .build()
        })
    };
    let result = {
        let w = w.clone();
        mock!(aws_sdk_ssm::Client::get_command_invocation).then_compute_output(move |_| {
            let n = {
                let mut world = w.lock().unwrap();
                world.call("GetCommandInvocation");
                world.calls["GetCommandInvocation"] - 1
            };
            let status = statuses[n.min(statuses.len() - 1)];
            GetCommandInvocationOutput::builder()
                .status(CommandInvocationStatus::from(status))
                .standard_error_content(if status == "Failed" {
                    "yum: no space left"
                } else {
                    ""
                })
                .build()
        })
    };
    mock_client!(aws_sdk_ssm, RuleMode::MatchAny, &[&send, &result])
}

fn patch_playbook() -> Value {
    playbook(&json!([
        {"id": "patch", "action": "patch.install", "with": {"reboot": "if_needed"}, "outputs": ["status"]},
        tag_step()
    ]))
}

/// Delivers every wake the responder queued since `from`, as the isolation queue would.
async fn deliver_wakes(r: &Responder, w: &Shared, from: usize) -> usize {
    let bodies: Vec<String> = w.lock().unwrap().queued[from..]
        .iter()
        .filter(|(q, _)| q.ends_with("-isolation"))
        .map(|(_, b)| b.clone())
        .collect();
    let sent = w.lock().unwrap().queued.len();
    for (n, body) in bodies.iter().enumerate() {
        r.handle(json!({"Records": [{
            "messageId": format!("wake-{from}-{n}"), "receiptHandle": "r", "body": body,
            "attributes": {"ApproximateReceiveCount": "1"}, "messageAttributes": {}, "md5OfBody": "",
            "eventSource": "aws:sqs", "eventSourceARN": "arn:aws:sqs:us-east-1:222233334444:quell-isolation",
            "awsRegion": "us-east-1"
        }]}))
        .await
        .unwrap();
    }
    sent
}

#[tokio::test]
async fn a_patch_is_sent_once_and_its_result_polled_until_ssm_says_it_succeeded() {
    let w = world();
    let r = responder_with_ssm(
        &w,
        &[patch_playbook()],
        ssm(&w, &["Pending", "InProgress", "Success"]),
    );
    deliver_finding(&r, ACCOUNT, ACCOUNT, false).await;
    assert_eq!(
        the_run(&w).status,
        Status::InProgress,
        "waiting for the command"
    );
    let mut from = 0;
    for _ in 0..5 {
        from = deliver_wakes(&r, &w, from).await;
    }
    let run = the_run(&w);
    assert_eq!(run.status, Status::Succeeded, "{run:?}");
    assert_eq!(calls(&w, "SendCommand"), 1, "sent once, however many polls");
    assert_eq!(calls(&w, "GetCommandInvocation"), 3);
    assert!(
        w.lock()
            .unwrap()
            .published
            .iter()
            .any(|m| m["ssm"] == "AWS-RunPatchBaseline"
                && m["parameters"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("Install")),
        "the patch baseline, Operation=Install"
    );
    assert_eq!(
        run.run.as_ref().unwrap().steps[0].outputs["status"],
        "Success"
    );
    assert_eq!(
        calls(&w, "CreateTags"),
        1,
        "the next step ran after the patch"
    );
}

#[tokio::test]
async fn a_failed_patch_fails_the_step_with_what_ssm_said_and_nothing_after_it_runs() {
    let w = world();
    let r = responder_with_ssm(&w, &[patch_playbook()], ssm(&w, &["Failed"]));
    deliver_finding(&r, ACCOUNT, ACCOUNT, false).await;
    deliver_wakes(&r, &w, 0).await;
    let run = the_run(&w);
    assert_eq!(run.status, Status::Failed, "{run:?}");
    assert!(
        run.error
            .as_deref()
            .unwrap_or_default()
            .contains("no space left"),
        "{run:?}"
    );
    assert_eq!(calls(&w, "CreateTags"), 0);
    // The finding delivered again: the failed run stays failed, and nothing is sent again.
    deliver_finding(&r, ACCOUNT, ACCOUNT, false).await;
    assert_eq!(the_run(&w).status, Status::Failed);
    assert_eq!(calls(&w, "SendCommand"), 1);
}

#[tokio::test]
async fn a_document_not_allow_listed_is_refused_by_the_responder_too() {
    let w = world();
    let custom = playbook(&json!([
        {"id": "harden", "action": "ssm.run_document", "with": {"document": "Team-Harden"}}
    ]));
    let r = responder_with_ssm(&w, &[custom], ssm(&w, &["Success"]));
    deliver_finding(&r, ACCOUNT, ACCOUNT, false).await;
    let run = the_run(&w);
    assert_eq!(run.status, Status::Failed, "{run:?}");
    assert!(
        run.error
            .as_deref()
            .unwrap_or_default()
            .contains("not allow-listed"),
        "{run:?}"
    );
    assert_eq!(calls(&w, "SendCommand"), 0);
}

/// A ticket system on this machine: it answers every request with `{"ticket_id": "SEC-1"}` and
/// keeps what it was sent (request line, headers, body).
async fn ticket_server() -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let keep = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let mut buf = Vec::new();
            let mut chunk = [0_u8; 4096];
            // Headers, then as much body as Content-Length says.
            loop {
                let n = socket.read(&mut chunk).await.unwrap_or(0);
                buf.extend_from_slice(&chunk[..n]);
                let text = String::from_utf8_lossy(&buf).to_string();
                if let Some(end) = text.find("\r\n\r\n") {
                    let length = text
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                        })
                        .unwrap_or(0);
                    if buf.len() >= end + 4 + length || n == 0 {
                        break;
                    }
                }
                if n == 0 {
                    break;
                }
            }
            keep.lock()
                .unwrap()
                .push(String::from_utf8_lossy(&buf).to_string());
            let body = r#"{"ticket_id":"SEC-1"}"#;
            let answer = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = socket.write_all(answer.as_bytes()).await;
        }
    });
    (url, seen)
}

/// The security account's Secrets Manager: the ExternalIds, and the webhook's credential.
fn secrets_with_webhook() -> aws_sdk_secretsmanager::Client {
    use aws_sdk_secretsmanager::operation::get_secret_value::GetSecretValueOutput;
    let get = mock!(aws_sdk_secretsmanager::Client::get_secret_value).then_compute_output(|req| {
        let value = if req.secret_id().is_some_and(|id| id.contains("tickets")) {
            "Bearer hook-secret-123".to_owned()
        } else {
            json!({"message_external_id": super::EXTERNAL_ID, "role_external_id": "role-secret"})
                .to_string()
        };
        GetSecretValueOutput::builder().secret_string(value).build()
    });
    mock_client!(aws_sdk_secretsmanager, RuleMode::MatchAny, &[&get])
}

#[tokio::test]
async fn a_ticket_is_opened_with_the_secret_in_its_header_only_and_closed_on_release() {
    let (url, seen) = ticket_server().await;
    let w = world();
    let playbooks = [playbook(&json!([
        {"id": "ticket", "action": "ticket.open", "outputs": ["ticket_id"],
         "with": {"webhook": "tickets", "title": "Mining on ${{ finding.resource_id }}", "body": "see run"}},
        tag_step(),
        {"id": "done", "action": "release", "with": {"steps": ["mark", "ticket"]}}
    ]))];
    let hooks = json!({"tickets": {"url": url, "shape": "generic",
        "secret": "arn:aws:secretsmanager:us-east-1:222233334444:secret:tickets-AbCd"}})
    .to_string();
    let r = build(
        &w,
        &playbooks,
        Setup {
            secrets: Some(secrets_with_webhook()),
            webhooks: Some(hooks),
            ..Setup::default()
        },
    );
    deliver_finding(&r, ACCOUNT, ACCOUNT, false).await;
    let run = the_run(&w);
    assert_eq!(run.status, Status::Succeeded, "{run:?}");
    assert_eq!(
        run.run.as_ref().unwrap().steps[0].outputs["ticket_id"],
        "SEC-1"
    );

    let requests = seen.lock().unwrap().clone();
    assert_eq!(
        requests.len(),
        2,
        "opened, then closed on release: {requests:?}"
    );
    for (request, action) in requests.iter().zip(["open", "close"]) {
        assert!(
            request
                .to_ascii_lowercase()
                .contains("authorization: bearer hook-secret-123"),
            "{request}"
        );
        assert!(
            request.contains(&format!("\"action\":\"{action}\"")),
            "{request}"
        );
    }
    assert!(
        requests[1].contains("\"ticket_id\":\"SEC-1\""),
        "{}",
        requests[1]
    );
    assert!(
        !w.lock()
            .unwrap()
            .instance_tags
            .contains_key("quell:incident"),
        "the tag released too"
    );

    // The credential went to the ticket system and nowhere else.
    let world = w.lock().unwrap();
    let kept = format!(
        "{:?} {:?} {:?}",
        world.ledger, world.published, world.queued
    );
    assert!(
        !kept.contains("hook-secret-123"),
        "the credential is in a record, message or queue"
    );
}

fn launched_by(arn: &str) -> Value {
    json!({
        "version": "0", "id": format!("ct-{}", arn.len()), "detail-type": "AWS API Call via CloudTrail",
        "source": "aws.ec2", "account": ACCOUNT, "region": "us-east-1", "time": "2026-11-30T08:00:00Z",
        "resources": [],
        "detail": {
            "eventSource": "ec2.amazonaws.com", "eventName": "RunInstances", "awsRegion": "us-east-1",
            "recipientAccountId": ACCOUNT, "eventID": format!("e-{}", arn.len()),
            "userIdentity": {"type": "AssumedRole", "arn": arn},
            "responseElements": {"instancesSet": {"items": [{"instanceId": INSTANCE}]}}
        }
    })
}

#[tokio::test]
async fn quells_own_calls_start_no_run_and_anyone_elses_do() {
    let w = world();
    let on_launch = json!({
        "id": "tag-launches", "version": 1, "description": "Tags what is launched.", "mode": "auto",
        "trigger": {"cloudtrail": {"source": "ec2.amazonaws.com", "names": ["RunInstances"]}},
        "target": {"type": "AWS::EC2::Instance",
                   "id": "${{ event.detail.responseElements.instancesSet.items[0].instanceId }}"},
        "steps": [{"id": "mark", "action": "tag", "with": {"tags": {"seen": "yes"}}}]
    });
    let r = responder(&w, &[on_launch]);
    let own = "arn:aws:sts::111122223333:assumed-role/quell-responder/quell-responder";
    let out = r
        .handle(event_delivery("ct-1", &launched_by(own)))
        .await
        .unwrap();
    assert!(out.to_string().contains("loop guard"), "{out}");
    assert_eq!(calls(&w, "CreateTags"), 0);
    let someone = "arn:aws:sts::111122223333:assumed-role/deployer/ci";
    r.handle(event_delivery("ct-2", &launched_by(someone)))
        .await
        .unwrap();
    assert_eq!(the_run(&w).status, Status::Succeeded);
    assert_eq!(calls(&w, "CreateTags"), 1);
}

#[tokio::test]
async fn a_finished_run_is_released_once_and_its_tag_put_back() {
    let w = world();
    let r = responder(&w, &[playbook(&json!([tag_step()]))]);
    deliver_finding(&r, ACCOUNT, ACCOUNT, false).await;
    let key = the_run(&w).key;
    assert!(w
        .lock()
        .unwrap()
        .instance_tags
        .contains_key("quell:incident"));
    let release = |n: u32| {
        request_delivery(
            &format!("rel-{n}"),
            &json!({"version": "1", "request_id": format!("release-{n}"), "action": "release",
                    "entity": key, "reason": "false positive", "requester": JO}),
        )
    };
    r.handle(release(1)).await.unwrap();
    assert_eq!(record(&w, "release-1").status, Status::Succeeded);
    assert!(
        !w.lock()
            .unwrap()
            .instance_tags
            .contains_key("quell:incident"),
        "put back"
    );
    let run = the_run(&w);
    assert_eq!(run.status, Status::Succeeded, "the run ended as it ended");
    assert_eq!(run.released_by.as_deref(), Some("release-1"));
    assert_eq!(run.run.as_ref().unwrap().steps[0].outcome, "released");
    // Nothing is left to undo: a second release is refused and changes nothing.
    w.lock()
        .unwrap()
        .instance_tags
        .insert("quell:incident".into(), "again".into());
    r.handle(release(2)).await.unwrap();
    let second = record(&w, "release-2");
    assert_eq!(second.status, Status::Rejected);
    assert_eq!(second.rejection.unwrap().code, "not_releasable");
    assert_eq!(w.lock().unwrap().instance_tags["quell:incident"], "again");
}

/// A playbook started by hand (`quell run`) on `kind`, with `steps`.
fn manual_playbook(kind: &str, steps: &Value) -> Value {
    json!({
        "id": "by-hand", "version": 1, "description": "Started by an analyst.", "mode": "auto",
        "trigger": {"manual": {}},
        "dedup": {"key": "${{ event.id }}"},
        "target": {"type": kind, "id": "${{ event.detail.target.id }}"},
        "steps": steps
    })
}

/// `quell run by-hand --target ARN` as the contain queue delivers it, from `requester` whom SQS
/// stamped with `sender`.
fn run_request(id: &str, target: &str, requester: &str, sender: &str) -> Value {
    let body = json!({"version": "1", "request_id": id, "action": "run", "entity": target,
        "reason": "INC-4711", "requester": requester, "options": {"playbook": "by-hand"}});
    queued("contain", &format!("q-{id}"), &body, Some(sender))
}

#[tokio::test]
async fn a_manual_playbook_starts_only_from_a_checked_request_and_its_starter_may_not_approve_it() {
    let w = world();
    let r = responder(
        &w,
        &[manual_playbook(
            "AWS::EC2::Instance",
            &json!([
                {"id": "agree", "action": "approval", "timeout": "4h", "on_timeout": "end",
                 "with": {"approvers": [ANALYST], "min": 1, "summary": "tag ${{ event.detail.target.id }}?"}},
                {"id": "mark", "action": "tag", "with": {"tags": {"quell:asked-by": "${{ event.detail.requester }}"}}}
            ]),
        )],
    );
    let arn = format!("arn:aws:ec2:us-east-1:{ACCOUNT}:instance/{INSTANCE}");

    // The event a request becomes, put on the bus by someone: the responder never takes it from
    // an event.
    let forged = json!({"version": "0", "id": "ev-forged", "source": "quell",
        "detail-type": "Quell Manual Run", "account": ACCOUNT, "region": "us-east-1",
        "resources": [], "detail": {"target": {"arn": arn, "id": INSTANCE,
        "type": "AWS::EC2::Instance"}, "requester": JO, "reason": "forged"}});
    r.handle(event_delivery("m-forged", &forged)).await.unwrap();
    assert!(
        !w.lock()
            .unwrap()
            .ledger
            .keys()
            .any(|k| k.starts_with("run:")),
        "a forged event starts no run"
    );

    let jo = format!("{ANALYST_ID}:jo");
    r.handle(run_request("run-1", &arn, JO, &jo)).await.unwrap();
    let run = the_run(&w);
    assert_eq!(run.status, Status::Waiting, "{run:?}");
    assert!(
        run.requester
            .as_deref()
            .is_some_and(|who| who.contains(JO) && who.contains("by-hand")),
        "{:?}",
        run.requester
    );
    let request = record(&w, "run-1");
    assert_eq!(request.status, Status::Succeeded, "{request:?}");
    assert!(request
        .reason
        .as_deref()
        .unwrap_or_default()
        .contains(&run.key));

    // jo started it: jo's approval is refused, and nothing is tagged.
    r.handle(approval(&run.key, "agree", JO, Some(&jo), 1))
        .await
        .unwrap();
    assert_eq!(record(&w, "decision-1").status, Status::Rejected);
    assert_eq!(the_run(&w).status, Status::Waiting);
    assert_eq!(calls(&w, "CreateTags"), 0);

    // kim approves: the tag names who asked.
    let kim = format!("{ANALYST_ID}:kim");
    r.handle(approval(&run.key, "agree", KIM, Some(&kim), 2))
        .await
        .unwrap();
    assert_eq!(the_run(&w).status, Status::Succeeded);
    assert_eq!(w.lock().unwrap().instance_tags["quell:asked-by"], JO);

    // The same request delivered again starts nothing.
    r.handle(run_request("run-1", &arn, JO, &jo)).await.unwrap();
    assert_eq!(calls(&w, "CreateTags"), 1);
}

#[tokio::test]
async fn a_manual_run_acts_only_on_the_entity_its_arn_spells_path_and_all() {
    let w = world();
    let r = responder(
        &w,
        &[manual_playbook(
            "AWS::IAM::Role",
            &json!([{"id": "revoke", "action": "iam.revoke_sessions"}]),
        )],
    );
    let jo = format!("{ANALYST_ID}:jo");
    // IAM finds role `app` by name whatever path the request gives; the role is at `/`.
    let out = r
        .handle(run_request(
            "wrong-path",
            &format!("arn:aws:iam::{ACCOUNT}:role/ops/app"),
            JO,
            &jo,
        ))
        .await
        .unwrap();
    assert_eq!(record(&w, "wrong-path").status, Status::Skipped, "{out}");
    assert!(out.to_string().contains("not that entity"), "{out}");
    assert_eq!(calls(&w, "PutRolePolicy"), 0);

    // A run request naming no playbook, and a containment naming one: refused as malformed.
    for (id, action, options) in [
        ("no-playbook", "run", json!({})),
        (
            "contain-with-playbook",
            "contain",
            json!({"playbook": "by-hand"}),
        ),
    ] {
        r.handle(queued(
            "contain",
            &format!("q-{id}"),
            &json!({"version": "1", "request_id": id, "action": action,
                "entity": format!("arn:aws:iam::{ACCOUNT}:role/app"), "reason": "r",
                "requester": JO, "options": options}),
            Some(&jo),
        ))
        .await
        .unwrap();
        let refused = record(&w, &format!("delivery:q-{id}"));
        assert_eq!(
            refused.rejection.map(|x| x.code),
            Some("malformed_message".to_owned()),
            "{id}"
        );
    }

    // A playbook the configuration does not declare, or one of another target type.
    r.handle(queued(
        "contain",
        "q-unknown",
        &json!({"version": "1", "request_id": "unknown", "action": "run",
            "entity": format!("arn:aws:iam::{ACCOUNT}:role/app"), "reason": "r",
            "requester": JO, "options": {"playbook": "nope"}}),
        Some(&jo),
    ))
    .await
    .unwrap();
    assert_eq!(
        record(&w, "unknown").rejection.unwrap().code,
        "unknown_playbook"
    );
    r.handle(run_request(
        "wrong-type",
        &format!("arn:aws:ec2:us-east-1:{ACCOUNT}:instance/{INSTANCE}"),
        JO,
        &jo,
    ))
    .await
    .unwrap();
    assert_eq!(
        record(&w, "wrong-type").rejection.unwrap().code,
        "wrong_target"
    );
    assert_eq!(calls(&w, "PutRolePolicy"), 0);

    r.handle(run_request(
        "right",
        &format!("arn:aws:iam::{ACCOUNT}:role/app"),
        JO,
        &jo,
    ))
    .await
    .unwrap();
    assert_eq!(record(&w, "right").status, Status::Succeeded);
    assert_eq!(calls(&w, "PutRolePolicy"), 1);
}

/// Security Hub's event for the custom action `action_arn` chosen in `envelope` on a finding
/// about the instance in `named`.
fn custom_action_event(envelope: &str, action_arn: &str, named: &str) -> Value {
    json!({
        "version": "0", "id": format!("ca-{envelope}-{named}"),
        "detail-type": "Security Hub Findings - Custom Action", "source": "aws.securityhub",
        "account": envelope, "region": "us-east-1", "time": "2026-11-30T08:00:00Z",
        "resources": [action_arn],
        "detail": {"actionName": "Quell: tag it", "actionDescription": "d", "findings": [{
            "SchemaVersion": "2018-10-08", "Id": format!("finding-{named}"),
            "ProductArn": "arn:aws:securityhub:us-east-1::product/aws/securityhub",
            "AwsAccountId": named, "Region": "us-east-1", "Types": ["Software and Configuration Checks"],
            "Title": "t", "Severity": {"Label": "HIGH"}, "RecordState": "ACTIVE",
            "Workflow": {"Status": "NEW"},
            "Resources": [{"Type": "AwsEc2Instance", "Region": "us-east-1",
                "Id": format!("arn:aws:ec2:us-east-1:{named}:instance/{INSTANCE}")}]
        }]}
    })
}

#[tokio::test]
async fn a_custom_action_starts_runs_only_when_chosen_in_the_security_accounts_security_hub() {
    let w = world();
    let name = "Quell: tag it";
    let tagging = json!({
        "id": "tag-on-action", "version": 1, "description": "Tags the finding's instance.",
        "mode": "auto", "trigger": {"securityhub_action": {"name": name}},
        "target": {"type": "AWS::EC2::Instance", "id": "${{ finding.resource_id }}"},
        "steps": [tag_step()]
    });
    let r = responder(&w, &[tagging]);
    let id = quell_responder::playbooks::language::trigger::custom_action_id(name);
    let security = "222233334444";
    let ours = format!("arn:aws:securityhub:us-east-1:{security}:action/custom/{id}");
    let no_runs = |w: &Shared| {
        !w.lock()
            .unwrap()
            .ledger
            .keys()
            .any(|k| k.starts_with("run:"))
    };

    let theirs = format!("arn:aws:securityhub:us-east-1:{ACCOUNT}:action/custom/{id}");
    let other =
        format!("arn:aws:securityhub:us-east-1:{security}:action/custom/QuellPbffffffffffff0");
    for (n, (envelope, action)) in [
        // A member account's own Security Hub, with an action of the same id there.
        (ACCOUNT, &theirs),
        // A member's event that names the security account's action: the envelope says who
        // sent it.
        (ACCOUNT, &ours),
        // The security account, but another action than the one install made for this playbook.
        (security, &other),
    ]
    .into_iter()
    .enumerate()
    {
        let out = r
            .handle(event_delivery(
                &format!("m-forged-{n}"),
                &custom_action_event(envelope, action, ACCOUNT),
            ))
            .await
            .unwrap();
        assert!(no_runs(&w), "{envelope} {action}: {out}");
    }
    assert_eq!(calls(&w, "CreateTags"), 0);

    // Chosen in the security account on the member's finding: the run acts in the member.
    let out = r
        .handle(event_delivery(
            "m-3",
            &custom_action_event(security, &ours, ACCOUNT),
        ))
        .await
        .unwrap();
    succeeded_on_the_instance(&w, &out);
    assert_eq!(
        w.lock().unwrap().instance_tags["quell:incident"],
        format!("finding-{ACCOUNT}")
    );
}

#[tokio::test]
async fn lock_and_counter_items_expire_and_run_records_never_do() {
    let w = world();
    let r = responder(&w, &[approval_first(1)]);
    deliver_finding(&r, ACCOUNT, ACCOUNT, false).await;
    let world = w.lock().unwrap();
    let expiry = |key: &str| -> Option<i64> {
        world.ledger[key]
            .get(quell_responder::ledger::EXPIRES_ATTRIBUTE)
            .and_then(|v| v.as_n().ok())
            .and_then(|n| n.parse().ok())
    };
    let now = chrono::Utc::now().timestamp();
    let mut seen = (0, 0);
    for key in world.ledger.keys() {
        if key.starts_with("lock:rate:") {
            // The hour's counter: gone a day or so later.
            let at = expiry(key).unwrap_or_else(|| panic!("{key} expires"));
            assert!((now + 86_000..now + 87_000).contains(&at), "{key}: {at}");
            seen.0 += 1;
        } else if key.starts_with("lock:") {
            // The run's hold on its target: as long as the longest run, and a day.
            let at = expiry(key).unwrap_or_else(|| panic!("{key} expires"));
            assert!(at > now + 31 * 86_400, "{key}: {at}");
            seen.1 += 1;
        } else {
            assert_eq!(expiry(key), None, "{key} is evidence and never expires");
        }
    }
    assert_eq!(
        seen,
        (1, 1),
        "{:?}",
        world.ledger.keys().collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn runs_beyond_the_playbooks_hourly_limit_do_not_start() {
    let w = world();
    let mut limited = playbook(&json!([tag_step()]));
    limited["limits"] = json!({"max_runs_per_hour": 1});
    limited["dedup"] = json!({"key": "${{ finding.arn }}"});
    let r = responder(&w, &[limited]);
    for n in 1..=2 {
        let mut event = finding_event(ACCOUNT, ACCOUNT, false);
        event["id"] = json!(format!("ev-{n}"));
        event["detail"]["id"] = json!(format!("f{n}"));
        event["detail"]["arn"] = json!(format!(
            "arn:aws:guardduty:us-east-1:{ACCOUNT}:detector/d/finding/f{n}"
        ));
        r.handle(event_delivery(&format!("m-{n}"), &event))
            .await
            .unwrap();
    }
    let runs = run_keys(&w);
    assert_eq!(runs.len(), 2, "{runs:?}");
    let records: Vec<_> = runs.iter().map(|k| record(&w, k)).collect();
    let skipped = records
        .iter()
        .find(|r| r.status == Status::Skipped)
        .expect("the second run was held back");
    assert!(
        skipped
            .error
            .as_deref()
            .unwrap_or_default()
            .contains("limits.max_runs_per_hour"),
        "{skipped:?}"
    );
    assert!(records.iter().any(|r| r.status == Status::Succeeded));
    assert_eq!(calls(&w, "CreateTags"), 1, "one run acted");
}

#[tokio::test]
async fn a_schedule_runs_its_playbook_over_the_swept_instances_only_from_its_own_rule() {
    let w = world();
    let scheduled = json!({
        "id": "nightly-tag", "version": 1, "description": "Marks every instance nightly.",
        "mode": "auto", "trigger": {"schedule": "cron(0 2 * * ? *)"},
        "target": {"type": "AWS::EC2::Instance", "id": "${{ event.detail.target.id }}"},
        "scope": {"exempt_tag": "quell:exempt"},
        "steps": [{"id": "mark", "action": "tag", "with": {"tags": {"quell:seen": "${{ event.time }}"}}}]
    });
    let r = build(
        &w,
        &[scheduled],
        Setup {
            playbook_settings: Some(
                json!({"sweep": {"accounts": [ACCOUNT], "regions": ["us-east-1"]}}).to_string(),
            ),
            ..Setup::default()
        },
    );
    let fired = |rule: &str| {
        json!({"version": "0", "id": format!("sched-{rule}"), "detail-type": "Scheduled Event",
            "source": "aws.events", "account": "222233334444", "region": "us-east-1",
            "time": "2026-11-30T02:00:00Z", "resources": [rule], "detail": {}})
    };
    let suffix = quell_responder::playbooks::language::trigger::schedule_rule_suffix("nightly-tag");
    let ours = format!("arn:aws:events:us-east-1:222233334444:rule/quell-{suffix}");

    // A rule someone else made in the security account: no run.
    r.handle(event_delivery(
        "m-other",
        &fired("arn:aws:events:us-east-1:222233334444:rule/nightly-tag"),
    ))
    .await
    .unwrap();
    // Its own rule's name, sent from a member account.
    let mut forged = fired(&ours);
    forged["account"] = json!(ACCOUNT);
    r.handle(event_delivery("m-forged", &forged)).await.unwrap();
    assert!(!w
        .lock()
        .unwrap()
        .ledger
        .keys()
        .any(|k| k.starts_with("run:")));
    assert_eq!(calls(&w, "CreateTags"), 0);

    let out = r
        .handle(event_delivery("m-ours", &fired(&ours)))
        .await
        .unwrap();
    succeeded_on_the_instance(&w, &out);
    assert_eq!(
        w.lock().unwrap().instance_tags["quell:seen"],
        "2026-11-30T02:00:00Z"
    );
    assert!(out.to_string().contains("1 runs started"), "{out}");

    // The same firing delivered again is no new run.
    r.handle(event_delivery("m-ours-again", &fired(&ours)))
        .await
        .unwrap();
    assert_eq!(calls(&w, "CreateTags"), 1);
}

#[tokio::test]
async fn a_schedule_over_roles_lists_each_account_once_and_never_quells_own_or_service_linked_roles(
) {
    let w = world();
    let scheduled = json!({
        "id": "nightly-roles", "version": 1, "description": "Looks at every role nightly.",
        "mode": "simulate", "trigger": {"schedule": "rate(1 day)"},
        "target": {"type": "AWS::IAM::Role", "id": "${{ event.detail.target.id }}"},
        "steps": [{"id": "contain", "action": "iam.contain_role"}]
    });
    let r = build(
        &w,
        &[scheduled],
        Setup {
            playbook_settings: Some(
                json!({"sweep": {"accounts": [ACCOUNT], "regions": ["us-east-1", "eu-west-1"]}})
                    .to_string(),
            ),
            ..Setup::default()
        },
    );
    let suffix =
        quell_responder::playbooks::language::trigger::schedule_rule_suffix("nightly-roles");
    let fired = json!({"version": "0", "id": "sched-roles", "detail-type": "Scheduled Event",
        "source": "aws.events", "account": "222233334444", "region": "us-east-1",
        "time": "2026-11-30T02:00:00Z",
        "resources": [format!("arn:aws:events:us-east-1:222233334444:rule/quell-{suffix}")],
        "detail": {}});
    let out = r.handle(event_delivery("m-roles", &fired)).await.unwrap();
    // Roles are global: listed in the sweep's first Region only, not once per Region.
    assert_eq!(calls(&w, "ListRoles"), 1, "{out}");
    let runs = run_keys(&w);
    assert_eq!(runs.len(), 1, "the workload's role only: {runs:?}");
    let run = record(&w, &runs[0]);
    assert_eq!(
        run.entity.as_deref(),
        Some(format!("{ACCOUNT}/us-east-1/AWS::IAM::Role/app").as_str())
    );
    assert!(out.to_string().contains("1 runs started"), "{out}");
    // Simulated: read back, nothing written.
    assert_eq!(calls(&w, "GetRole"), 1);
    assert_eq!(
        calls(&w, "PutRolePolicy") + calls(&w, "AttachRolePolicy"),
        0
    );
}

/// What the runtime adds to each step, in AWS calls: the bench (`bench/playbooks`) prints the
/// figure, and this bounds it. A step is its action's calls plus the run record saved once.
#[tokio::test]
async fn a_step_costs_its_actions_calls_and_one_ledger_write() {
    let mut per_run = Vec::new();
    for steps in [1_usize, 4] {
        let w = world();
        let list: Vec<Value> = (0..steps)
            .map(|i| {
                json!({"id": format!("mark{i}"), "action": "tag",
                "with": {"tags": {format!("quell:step{i}"): "${{ finding.id }}"}}})
            })
            .collect();
        let r = responder(&w, &[playbook(&Value::Array(list))]);
        deliver_finding(&r, ACCOUNT, ACCOUNT, false).await;
        assert_eq!(the_run(&w).status, Status::Succeeded);
        assert_eq!(calls(&w, "CreateTags"), steps, "one call per tag step");
        per_run.push((calls(&w, "PutItem"), calls(&w, "DescribeInstances")));
    }
    let writes = (per_run[1].0 - per_run[0].0) / 3;
    let reads = (per_run[1].1 - per_run[0].1) / 3;
    println!(
        "runtime overhead per step: {writes} ledger write(s), {reads} read(s) of the target (the exemption check before a writing step); a one-step run: {} ledger writes, {} target reads in all",
        per_run[0].0, per_run[0].1
    );
    assert_eq!(
        per_run[1].0 - per_run[0].0,
        3 * writes,
        "linear in the steps"
    );
    assert_eq!(writes, 1, "one save per step: {per_run:?}");
    assert!(reads <= 1, "at most one read back per step: {per_run:?}");
}

/// A shipped playbook file, as the CLI puts it in the document.
fn shipped(name: &str) -> Value {
    let path = format!("{}/../playbooks/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_saphyr::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

/// The snapshot shared with everyone, and the CloudTrail call that shared it.
fn shared_snapshot(w: &Shared) -> Value {
    use super::playbooks::Snap;
    let mut encrypted = Snap::plain(true);
    encrypted.encrypted = true;
    w.lock()
        .unwrap()
        .snapshots
        .insert("snap-0a1".into(), encrypted);
    json!({"version": "0", "id": "ev-share", "detail-type": "AWS API Call via CloudTrail",
        "source": "aws.ec2", "account": ACCOUNT, "region": "us-east-1", "resources": [],
        "detail": {"eventSource": "ec2.amazonaws.com", "eventName": "ModifySnapshotAttribute",
            "awsRegion": "us-east-1", "recipientAccountId": ACCOUNT,
            "userIdentity": {"arn": format!("arn:aws:sts::{ACCOUNT}:assumed-role/dev/dana")},
            "requestParameters": {"snapshotId": "snap-0a1",
                "createVolumePermission": {"add": {"items": [{"group": "all"}]}}}}})
}

/// What the built-in playbook does with `event`, and what the shipped definition does with it
/// while the built-in only notifies: the member account's calls, in order, and the world after.
async fn built_in_and_declared(
    definition: &str,
    built_in: &str,
    prepare: impl Fn(&Shared) -> Value,
    clients: impl Fn(&Shared) -> (aws_sdk_ec2::Client, Option<aws_sdk_s3::Client>),
) -> [(Vec<String>, Shared); 2] {
    let mut out = Vec::new();
    for declared in [false, true] {
        let w = world();
        let event = prepare(&w);
        let (ec2, s3) = clients(&w);
        let mode = if declared { "notify" } else { "auto" };
        let playbooks = if declared {
            vec![shipped(definition)]
        } else {
            Vec::new()
        };
        let r = build(
            &w,
            &playbooks,
            Setup {
                playbook_settings: Some(json!({ built_in: {"mode": mode} }).to_string()),
                ec2: Some(ec2),
                s3,
                ..Setup::default()
            },
        );
        r.handle(event_delivery("m-1", &event)).await.unwrap();
        // The member account's calls: the ledger's writes and the audit topic's messages are
        // the security account's, and each path keeps its own.
        let calls: Vec<String> = w
            .lock()
            .unwrap()
            .sequence
            .iter()
            .filter(|op| !["PutItem", "Publish"].contains(*op))
            .map(|op| (*op).to_owned())
            .collect();
        out.push((calls, w));
    }
    let second = out.pop().expect("two runs");
    let first = out.pop().expect("two runs");
    [first, second]
}

#[tokio::test]
async fn the_shipped_public_snapshot_definition_makes_the_built_in_playbooks_calls() {
    let [(built_in, bw), (declared, dw)] = built_in_and_declared(
        "public-snapshot.yaml",
        "public_snapshot",
        shared_snapshot,
        |w| (super::playbooks::snapshots_ec2(w, false), None),
    )
    .await;
    assert_eq!(built_in, declared, "the same calls, in the same order");
    assert!(
        built_in.iter().any(|c| c == "ModifySnapshotAttribute"),
        "{built_in:?}"
    );
    for w in [&bw, &dw] {
        assert!(
            !w.lock().unwrap().snapshots["snap-0a1"].public,
            "read back private"
        );
    }
    let run = the_run(&dw);
    assert_eq!(run.status, Status::Succeeded, "{run:?}");
}

/// A responder with `definition` declared over the member account's snapshots, the built-in
/// unencrypted-snapshot playbook only notifying, and copies made with the configured key.
fn snapshot_responder(w: &Shared, definition: Value) -> Responder {
    build(
        w,
        &[definition],
        Setup {
            playbook_settings: Some(
                json!({"unencrypted_snapshot": {"mode": "notify", "kms_key_id": "alias/backups"}})
                    .to_string(),
            ),
            ec2: Some(super::playbooks::snapshots_ec2(w, false)),
            ..Setup::default()
        },
    )
}

#[tokio::test]
async fn the_shipped_unencrypted_snapshot_definition_deletes_the_original_only_after_a_verified_approval(
) {
    let w = world();
    w.lock()
        .unwrap()
        .snapshots
        .insert("snap-0a1".into(), super::playbooks::Snap::plain(false));
    let mut definition = shipped("unencrypted-snapshot.yaml");
    definition["steps"][1]["with"]["approvers"] = json!([ANALYST]);
    let r = snapshot_responder(&w, definition);
    let created = super::playbooks::create_snapshot_event("snap-0a1");
    r.handle(event_delivery("m-1", &created)).await.unwrap();

    let run = the_run(&w);
    assert_eq!(run.status, Status::Waiting, "{run:?}");
    let copy_id = {
        let world = w.lock().unwrap();
        let copy_id = world.snapshots["snap-0a1"].tags["quell:encrypted-copy"].clone();
        let copy = &world.snapshots[&copy_id];
        assert!(copy.encrypted);
        assert_eq!(copy.kms.as_deref(), Some("alias/backups"));
        assert_eq!(copy.tags["quell:encrypted-copy-of"], "snap-0a1");
        copy_id
    };
    assert_eq!(
        run.run.as_ref().unwrap().steps[0].outputs["copy_id"],
        json!(copy_id)
    );
    assert_eq!(
        calls(&w, "DeleteSnapshot"),
        0,
        "nothing deleted before approval"
    );

    // The same call reported again makes no second copy and no second run.
    r.handle(event_delivery("m-2", &created)).await.unwrap();
    assert_eq!(calls(&w, "CopySnapshot"), 1);

    let jo = format!("{ANALYST_ID}:jo");
    r.handle(approval(&run.key, "approve_delete", JO, Some(&jo), 1))
        .await
        .unwrap();
    let run = the_run(&w);
    assert_eq!(run.status, Status::Succeeded, "{run:?}");
    assert_eq!(calls(&w, "DeleteSnapshot"), 1);
    let world = w.lock().unwrap();
    assert!(!world.snapshots.contains_key("snap-0a1"), "read back gone");
    assert!(world.snapshots.contains_key(&copy_id), "the copy stays");
}

#[tokio::test]
async fn the_shipped_unencrypted_snapshot_definition_makes_the_built_in_playbooks_writes() {
    let [(built_in, bw), (declared, dw)] = built_in_and_declared(
        "unencrypted-snapshot.yaml",
        "unencrypted_snapshot",
        |w| {
            w.lock()
                .unwrap()
                .snapshots
                .insert("snap-0a1".into(), super::playbooks::Snap::plain(false));
            super::playbooks::create_snapshot_event("snap-0a1")
        },
        |w| (super::playbooks::snapshots_ec2(w, false), None),
    )
    .await;
    // The definition reads the snapshot more often (its conditions, the exemption check before a
    // writing step); the writes are the built-in's, in its order, up to the approval both wait for.
    let writes = |calls: &[String]| -> Vec<String> {
        calls
            .iter()
            // The approval's 72-hour timeout is the security account's schedule.
            .filter(|c| !c.starts_with("Describe") && *c != "CreateSchedule")
            .cloned()
            .collect()
    };
    assert!(
        writes(&built_in).contains(&"CopySnapshot".to_owned()),
        "{built_in:?}"
    );
    assert_eq!(writes(&built_in), writes(&declared));
    for w in [&bw, &dw] {
        let world = w.lock().unwrap();
        let copy = &world.snapshots["snap-0a1"].tags["quell:encrypted-copy"];
        assert!(world.snapshots[copy].encrypted, "an encrypted copy, tagged");
    }
    assert_eq!(the_run(&dw).status, Status::Waiting);
}

#[tokio::test]
async fn a_snapshot_ec2_could_not_take_fails_the_copy_step_at_once_instead_of_waiting_for_ever() {
    let w = world();
    let mut failed = super::playbooks::Snap::plain(false);
    failed.state = "error";
    w.lock()
        .unwrap()
        .snapshots
        .insert("snap-0a1".into(), failed);
    let copy_only = json!({
        "id": "copy-originals", "version": 1, "description": "Copies new snapshots encrypted.",
        "mode": "auto",
        "trigger": {"cloudtrail": {"source": "ec2.amazonaws.com", "names": ["CreateSnapshot"]}},
        "target": {"type": "AWS::EC2::Snapshot", "id": "${{ event.detail.responseElements.snapshotId }}"},
        "steps": [{"id": "copy", "action": "ebs.snapshot_encrypt_copy"}]
    });
    let r = snapshot_responder(&w, copy_only);
    r.handle(event_delivery(
        "m-1",
        &super::playbooks::create_snapshot_event("snap-0a1"),
    ))
    .await
    .unwrap();
    let run = the_run(&w);
    assert_eq!(run.status, Status::Failed, "{run:?}");
    let error = run.run.as_ref().unwrap().steps[0]
        .error
        .clone()
        .unwrap_or_default();
    assert!(error.contains("state error"), "{error}");
    assert_eq!(calls(&w, "CopySnapshot"), 0);
    assert!(
        !w.lock()
            .unwrap()
            .queued
            .iter()
            .any(|(q, _)| q.ends_with("-isolation")),
        "no poll scheduled"
    );
}

#[tokio::test]
async fn an_original_whose_tag_names_a_snapshot_that_does_not_name_it_back_is_never_deleted() {
    use super::playbooks::Snap;
    let w = world();
    {
        // Someone in the member account tags their snapshot as if Quell had copied it, naming an
        // encrypted snapshot that is not its copy.
        let mut world = w.lock().unwrap();
        let mut other = Snap::plain(false);
        other.encrypted = true;
        world.snapshots.insert("snap-0enc".into(), other);
        world
            .snapshots
            .insert("snap-0a1".into(), Snap::plain(false));
    }
    let ec2 = super::playbooks::snapshots_ec2(&w, false);
    ec2.create_tags()
        .resources("snap-0a1")
        .tags(
            aws_sdk_ec2::types::Tag::builder()
                .key("quell:encrypted-copy")
                .value("snap-0enc")
                .build(),
        )
        .send()
        .await
        .unwrap();
    let delete_only = json!({
        "id": "delete-originals", "version": 1, "description": "Deletes copied originals.",
        "mode": "auto",
        "trigger": {"cloudtrail": {"source": "ec2.amazonaws.com", "names": ["CreateSnapshot"]}},
        "target": {"type": "AWS::EC2::Snapshot", "id": "${{ event.detail.responseElements.snapshotId }}"},
        "steps": [{"id": "delete_original", "action": "ebs.snapshot_delete_original"}]
    });
    let r = snapshot_responder(&w, delete_only);
    r.handle(event_delivery(
        "m-1",
        &super::playbooks::create_snapshot_event("snap-0a1"),
    ))
    .await
    .unwrap();
    let run = the_run(&w);
    assert_eq!(run.status, Status::Failed, "{run:?}");
    let error = run.run.as_ref().unwrap().steps[0]
        .error
        .clone()
        .unwrap_or_default();
    assert!(
        error.contains("snap-0enc") && error.contains("does not name the snapshot back"),
        "{error}"
    );
    assert_eq!(calls(&w, "DeleteSnapshot"), 0);
    assert!(w.lock().unwrap().snapshots.contains_key("snap-0a1"));
}

#[tokio::test]
async fn the_shipped_public_bucket_definition_makes_the_built_in_playbooks_calls_and_fails_alike() {
    let event = |_: &Shared| {
        json!({"version": "0", "id": "ev-s3", "detail-type": "AWS API Call via CloudTrail",
            "source": "aws.s3", "account": ACCOUNT, "region": "us-east-1", "resources": [],
            "detail": {"eventSource": "s3.amazonaws.com", "eventName": "PutBucketAcl",
                "awsRegion": "us-east-1", "recipientAccountId": ACCOUNT,
                "userIdentity": {"arn": format!("arn:aws:sts::{ACCOUNT}:assumed-role/dev/dana")},
                "requestParameters": {"bucketName": "open-reports"}}})
    };
    let [(built_in, _), (declared, dw)] =
        built_in_and_declared("public-bucket.yaml", "public_bucket", event, |w| {
            (
                super::playbooks::snapshots_ec2(w, false),
                Some(super::playbooks::public_bucket_s3(w)),
            )
        })
        .await;
    // The account denies the public access block: both stop there, and change no ACL.
    assert_eq!(built_in, declared, "the same calls, in the same order");
    assert_eq!(
        declared
            .iter()
            .filter(|c| *c == "PutPublicAccessBlock")
            .count(),
        1
    );
    assert!(
        !declared.iter().any(|c| c == "PutBucketAcl"),
        "{declared:?}"
    );
    let run = the_run(&dw);
    assert_eq!(run.status, Status::Failed, "{run:?}");
    assert!(
        run.error
            .as_deref()
            .unwrap_or_default()
            .contains("PutPublicAccessBlock")
            || format!("{:?}", run.run).contains("PutPublicAccessBlock"),
        "{run:?}"
    );
}

/// The member account's writes in `w`, sorted: the containment's steps run at once in `quell
/// contain` and one after another in a run, so the set is what must agree.
fn member_writes(w: &Shared) -> Vec<String> {
    let mut ops: Vec<String> = w
        .lock()
        .unwrap()
        .sequence
        .iter()
        .filter(|op| !["PutItem", "Publish", "DescribeInstances"].contains(*op))
        .filter(|op| !op.starts_with("Get") && !op.starts_with("List"))
        .map(|op| (*op).to_owned())
        .collect();
    ops.sort();
    ops
}

#[tokio::test]
async fn the_role_containment_step_makes_quell_contains_calls_and_the_runs_release_undoes_them() {
    let role = format!("arn:aws:iam::{ACCOUNT}:role/app");
    let jo = format!("{ANALYST_ID}:jo");

    let by_contain = world();
    let r = responder(&by_contain, &[]);
    r.handle(queued(
        "contain",
        "q-contain",
        &json!({"version": "1", "request_id": "contain-1", "action": "contain", "entity": role,
            "reason": "INC-4711", "requester": JO}),
        Some(&jo),
    ))
    .await
    .unwrap();
    assert_eq!(record(&by_contain, "contain-1").status, Status::Succeeded);

    let by_run = world();
    let r = responder(
        &by_run,
        &[manual_playbook(
            "AWS::IAM::Role",
            &json!([{"id": "contain", "action": "iam.contain_role"}]),
        )],
    );
    r.handle(run_request("run-1", &role, JO, &jo))
        .await
        .unwrap();
    let run = the_run(&by_run);
    assert_eq!(run.status, Status::Succeeded, "{:?}", run.steps);
    let written = member_writes(&by_run);
    assert_eq!(written, member_writes(&by_contain), "the same writes");
    assert!(
        written.iter().any(|op| op == "AttachRolePolicy"),
        "{written:?}"
    );
    assert!(
        run.step("contain.attach_deny_all").is_some()
            && run.step("contain.revoke_older_sessions").is_some(),
        "each containment step recorded with its prior state: {:?}",
        run.steps
    );

    r.handle(request_delivery(
        "rel-1",
        &json!({"version": "1", "request_id": "release-1", "action": "release",
            "entity": run.key, "reason": "false positive", "requester": JO}),
    ))
    .await
    .unwrap();
    assert_eq!(record(&by_run, "release-1").status, Status::Succeeded);
    let after = by_run.lock().unwrap().sequence.clone();
    assert!(
        after.contains(&"DetachRolePolicy") && after.contains(&"DeleteRolePolicy"),
        "the deny and the session revocation are undone: {after:?}"
    );
}

#[tokio::test]
async fn a_function_is_read_back_with_its_tags_and_an_exempt_one_is_left_alone() {
    let w = world();
    let mut contain = manual_playbook(
        "AWS::Lambda::Function",
        &json!([{"id": "stop", "action": "lambda.contain"}]),
    );
    contain["scope"] = json!({"exempt_tag": "quell:exempt"});
    let r = responder(&w, &[contain]);
    let jo = format!("{ANALYST_ID}:jo");
    let out = r
        .handle(run_request(
            "run-fn",
            &format!("arn:aws:lambda:us-east-1:{ACCOUNT}:function:orders"),
            JO,
            &jo,
        ))
        .await
        .unwrap();
    assert_eq!(record(&w, "run-fn").status, Status::Skipped, "{out}");
    assert!(out.to_string().contains("payments freeze"), "{out}");
    assert_eq!(calls(&w, "PutFunctionConcurrency"), 0);
    assert_eq!(calls(&w, "PutRolePolicy"), 0);
}
