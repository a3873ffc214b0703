//! `quell contain ARN`, `quell release ARN` and `quell history`: send a request to its kind's
//! queue with the caller's own identity (SQS stamps who sent it, and the queue's policy says who
//! may), wait for the responder's outcome in the ledger, and print every step.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use aws_config::SdkConfig;
use futures::StreamExt;
use quell_responder::authorization::Channel;
use quell_responder::aws_error::{CallError, Described};
use quell_responder::contract::{self, Action, ContainmentMessage, Options, MESSAGE_VERSION};
use quell_responder::entity::Entity;
use quell_responder::ledger::{self, Ledger, Record, Status, StepStatus};
use quell_responder::secret::ExternalIds;
use serde::Serialize;

use crate::args::{ContainArgs, GlobalArgs, HistoryArgs, ReleaseArgs};
use crate::aws::{Aws, Caller};
use crate::config::Config;
use crate::deployment::{self, Deployment};
use crate::exit;
use crate::printer::{confirm, Printer, Tone};

#[derive(Debug, Serialize)]
struct Report<'a> {
    request_id: &'a str,
    message_id: &'a str,
    action: Action,
    status: Status,
    entity: &'a str,
    /// From the publish returning to the outcome read from the ledger.
    publish_to_outcome_ms: u128,
    record: &'a Record,
}

/// One request to send.
pub struct Request<'a> {
    pub arn: &'a str,
    pub reason: &'a str,
    pub request_id: Option<String>,
    pub action: Action,
    pub options: Options,
    pub yes: bool,
    pub config: Option<&'a PathBuf>,
    pub timeout: u64,
}

/// The outcome of one request, as the ledger recorded it.
pub struct Outcome {
    pub request_id: String,
    pub message_id: String,
    pub record: Record,
    /// The ledger it was read from, for what the record points to.
    pub ledger: Ledger,
    /// From the publish returning to the outcome read.
    pub waited: Duration,
}

/// Where requests go: the deployment found from the configuration.
pub(crate) struct Connection {
    pub(crate) security: SdkConfig,
    /// The caller's own identity, which requests are sent with.
    sender: SdkConfig,
    pub(crate) deployment: Deployment,
    caller: Caller,
    pub(crate) name: String,
    security_account: String,
}

pub(crate) async fn connect(
    global: &GlobalArgs,
    explicit: Option<&PathBuf>,
) -> anyhow::Result<Connection> {
    let config = Config::load(&crate::config_file::find(
        global,
        explicit.map(PathBuf::as_path),
    )?)?;
    let aws = Aws::connect(global, &config.home_region).await?;
    let caller = aws.caller().await?;
    let security = aws.security_account(&caller, &config).await?;
    let sender = aws.request_sender(&security);
    let deployment = Deployment::find(&security, &config.name)
        .await?
        .with_context(|| {
            format!(
                "no stack {} in {} ({}): run `quell install` first",
                deployment::security_stack(&config.name),
                config.security_account,
                config.home_region
            )
        })?;
    Ok(Connection {
        security,
        sender,
        deployment,
        caller,
        name: config.name,
        security_account: config.security_account,
    })
}

pub async fn run(global: &GlobalArgs, args: &ContainArgs, printer: &Printer) -> anyhow::Result<u8> {
    let request = Request {
        arn: &args.arn,
        reason: &args.reason,
        request_id: args.request_id.clone(),
        action: Action::Contain,
        options: Options {
            snapshot: args.snapshot,
            ..Options::default()
        },
        yes: args.yes,
        config: args.config.as_ref(),
        timeout: args.timeout,
    };
    Ok(report(&send(global, &request, printer).await?, printer))
}

pub async fn release(
    global: &GlobalArgs,
    args: &ReleaseArgs,
    printer: &Printer,
) -> anyhow::Result<u8> {
    let request = Request {
        arn: &args.arn,
        reason: &args.reason,
        request_id: args.request_id.clone(),
        action: Action::Release,
        options: Options {
            snapshot: false,
            reactivate_keys: args.reactivate_keys,
            ..Options::default()
        },
        yes: args.yes,
        config: args.config.as_ref(),
        timeout: args.timeout,
    };
    Ok(report(&send(global, &request, printer).await?, printer))
}

fn report(outcome: &Outcome, printer: &Printer) -> u8 {
    let record = &outcome.record;
    let report = Report {
        request_id: &outcome.request_id,
        message_id: &outcome.message_id,
        action: record.action,
        status: record.status,
        entity: record.entity.as_deref().unwrap_or_default(),
        publish_to_outcome_ms: outcome.waited.as_millis(),
        record,
    };
    printer.result(&report, || report_text(record, printer));
    exit_code(record.status)
}

/// `quell run PLAYBOOK --target ARN`: the responder checks the playbook, the target and the
/// sender, and starts the run; the outcome names the run (`quell runs ID` shows it).
pub async fn start_run(
    global: &GlobalArgs,
    args: &crate::args::RunArgs,
    printer: &Printer,
) -> anyhow::Result<u8> {
    if let Err(why) = Entity::parse(&args.target) {
        return Err(exit::refused(format!("--target: {why}")));
    }
    let request = Request {
        arn: &args.target,
        reason: &args.reason,
        request_id: args.request_id.clone(),
        action: Action::Run,
        options: Options {
            playbook: Some(args.playbook.clone()),
            ..Options::default()
        },
        yes: args.yes,
        config: args.config.as_ref(),
        timeout: args.timeout,
    };
    Ok(report(&send(global, &request, printer).await?, printer))
}

/// `quell sweep`: the playbooks over every target account and Region, run by the responder.
pub async fn sweep(
    global: &GlobalArgs,
    args: &crate::args::SweepArgs,
    printer: &Printer,
) -> anyhow::Result<u8> {
    let request = Request {
        arn: quell_responder::contract::SWEEP_ENTITY,
        reason: if args.dry_run {
            "sweep (dry run) requested with quell sweep"
        } else {
            "sweep requested with quell sweep"
        },
        request_id: None,
        action: Action::Sweep,
        options: Options {
            dry_run: args.dry_run,
            only: args.only.iter().map(|k| k.as_str().to_owned()).collect(),
            ..Options::default()
        },
        yes: args.yes || args.dry_run,
        config: args.config.as_ref(),
        timeout: args.timeout,
    };
    let outcome = send(global, &request, printer).await?;
    let record = &outcome.record;
    // Each place has its own record; the sweep's names how many and sums them up.
    let keys: Vec<String> = record
        .sweep_plan
        .iter()
        .flat_map(ledger::SweepPlan::places)
        .map(|(account, region)| ledger::place_key(&record.key, account, region))
        .collect();
    let mut places = outcome.ledger.get_many(&keys).await?;
    places.sort_by(|a, b| a.key.cmp(&b.key));
    let report = SweepReport {
        request_id: &outcome.request_id,
        message_id: &outcome.message_id,
        status: record.status,
        record,
        places: &places,
    };
    printer.result(&report, || {
        let mut t = report_text(record, printer);
        // The places that found something or failed; the quiet ones are counted above.
        for place in places.iter().filter(|p| p.status != Status::Skipped) {
            for step in &place.steps {
                let _ = writeln!(t, "    {}: {}", step.name, step.detail);
            }
        }
        t
    });
    Ok(exit_code(record.status))
}

#[derive(Debug, Serialize)]
struct SweepReport<'a> {
    request_id: &'a str,
    message_id: &'a str,
    status: Status,
    record: &'a Record,
    /// Every place's own record, by key.
    places: &'a [Record],
}

/// `quell approve ID` and `quell deny ID`: the responder carries out or drops the pending fix.
pub async fn decide(
    global: &GlobalArgs,
    args: &crate::args::DecisionArgs,
    action: Action,
    printer: &Printer,
) -> anyhow::Result<u8> {
    let run = args.id.starts_with("run:");
    if !args.id.starts_with("remediation:") && !run {
        return Err(exit::refused(format!(
            "{:?} is not a remediation or run id; ids look like remediation:<event id>:<resource> or run:<playbook>:<hash>:<window> (see `quell history`)",
            args.id
        )));
    }
    match (run, &args.step) {
        (true, None) => {
            return Err(exit::refused(format!(
                "{} is a playbook run: name the approval step with --step STEP",
                args.id
            )))
        }
        (false, Some(_)) => {
            return Err(exit::refused(
                "--step is for a declared playbook's run (run:...); a remediation has no steps to choose",
            ))
        }
        _ => {}
    }
    let request = Request {
        arn: &args.id,
        reason: &args.reason,
        request_id: None,
        action,
        options: Options {
            step: args.step.clone(),
            ..Options::default()
        },
        yes: args.yes,
        config: args.config.as_ref(),
        timeout: args.timeout,
    };
    Ok(report(&send(global, &request, printer).await?, printer))
}

pub fn exit_code(status: Status) -> u8 {
    match status {
        Status::Succeeded
        | Status::Skipped
        | Status::AwaitingApproval
        | Status::Waiting
        | Status::Denied => exit::SUCCESS,
        Status::Rejected => exit::REFUSED,
        Status::Failed | Status::InProgress => exit::CONTAINMENT_FAILED,
    }
}

/// A request checked for shape and ready to send.
struct Checked {
    request_id: String,
    channel: Channel,
}

/// What the CLI can refuse before anything is sent: the responder is the one authority on what
/// may be contained (whatever it refuses is recorded and audited, whoever sent it), so only the
/// message's own shape is checked here.
fn check(req: &Request<'_>) -> anyhow::Result<Checked> {
    if req.reason.trim().is_empty() {
        return Err(exit::refused(
            "--reason is empty: say why, it goes into the ledger and every audit message",
        ));
    }
    // The same bound the responder enforces, refused here before anything is sent.
    if let Err(why) = quell_responder::contract::check_text("--reason", req.reason) {
        return Err(exit::refused(why));
    }
    let request_id = req
        .request_id
        .clone()
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    if !ContainmentMessage::request_id_is_valid(&request_id) {
        return Err(exit::refused(
            "--request-id must be 1-64 characters of letters, digits, '-' and '_'",
        ));
    }
    let channel = Channel::for_action(req.action).with_context(|| {
        format!(
            "{} requests come from events, not from the CLI",
            req.action.as_str()
        )
    })?;
    Ok(Checked {
        request_id,
        channel,
    })
}

/// Sends a checked request; the message id.
async fn publish(c: &Connection, req: &Request<'_>, checked: &Checked) -> anyhow::Result<String> {
    let message = ContainmentMessage {
        version: MESSAGE_VERSION.into(),
        request_id: checked.request_id.clone(),
        action: req.action,
        entity: req.arn.to_owned(),
        reason: req.reason.to_owned(),
        requester: c.caller.arn.clone(),
        options: req.options.clone(),
    };
    send_request(c, checked.channel, &serde_json::to_string(&message)?).await
}

fn ledger_of(c: &Connection) -> Ledger {
    Ledger::new(
        crate::calls::client!(aws_sdk_dynamodb, &c.security),
        &c.deployment.ledger_table,
    )
}

/// Publishes the request and waits for its outcome.
pub async fn send(
    global: &GlobalArgs,
    req: &Request<'_>,
    printer: &Printer,
) -> anyhow::Result<Outcome> {
    let checked = check(req)?;
    let request_id = checked.request_id.clone();
    let c = connect(global, req.config).await?;

    let verb = match req.action {
        Action::Release => "Release".to_owned(),
        Action::Run => format!(
            "Run playbook {} on",
            req.options.playbook.as_deref().unwrap_or_default()
        ),
        _ => "Contain".to_owned(),
    };
    let question = match Entity::parse(req.arn) {
        _ if matches!(req.action, Action::Approve | Action::Deny) => {
            format!("{} the pending fix {}?", req.action.as_str(), req.arn)
        }
        Ok(entity) => format!(
            "{verb} {} {} in account {}?",
            entity.kind(),
            entity.name(),
            entity.account()
        ),
        Err(_) => format!("Send a {} request for {}?", req.action.as_str(), req.arn),
    };
    if !confirm(printer, &question, req.yes)? {
        return Err(exit::refused(format!(
            "{} cancelled; nothing was sent",
            req.action.as_str()
        )));
    }
    let message_id = publish(&c, req, &checked).await?;
    let published = Instant::now();
    printer.status(&format!(
        "request {request_id} sent (message {message_id}); waiting for the responder"
    ));

    let ledger = ledger_of(&c);
    let Some(record) = wait(
        &ledger,
        &request_id,
        &message_id,
        Duration::from_secs(req.timeout),
        printer,
    )
    .await?
    else {
        return Err(exit::Coded {
            code: exit::TIMED_OUT,
            message: format!(
                "no outcome for request {request_id} within {}s; it may still complete: `quell history {}` shows the ledger",
                req.timeout, req.arn
            ),
        }
        .into());
    };
    Ok(Outcome {
        request_id,
        message_id,
        record,
        ledger,
        waited: published.elapsed(),
    })
}

/// Requests sent at once by [`send_all`].
const SENT_AT_ONCE: usize = 8;

/// Sends every request (already confirmed by the caller) at once, for the responder to work on
/// side by side, then follows them all to their outcomes with one line of progress: `what` names
/// them ("releases"). The outcomes, in the order of `requests`; `None` for one without an outcome
/// within the longest timeout.
pub async fn send_all(
    global: &GlobalArgs,
    config: Option<&PathBuf>,
    requests: &[Request<'_>],
    what: &str,
    printer: &Printer,
) -> anyhow::Result<Vec<Option<Outcome>>> {
    let checked = requests
        .iter()
        .map(check)
        .collect::<anyhow::Result<Vec<_>>>()?;
    if requests.is_empty() {
        return Ok(Vec::new());
    }
    let c = connect(global, config).await?;
    let c = &c;
    let sent: Vec<anyhow::Result<String>> = futures::stream::iter(requests.iter().zip(&checked))
        .map(|(req, checked)| publish(c, req, checked))
        .buffered(SENT_AT_ONCE)
        .collect()
        .await;
    let message_ids = sent.into_iter().collect::<anyhow::Result<Vec<_>>>()?;
    printer.status(&format!(
        "{} {what} sent; waiting for the responder",
        requests.len()
    ));
    let ledger = ledger_of(c);
    let timeout = Duration::from_secs(requests.iter().map(|r| r.timeout).max().unwrap_or(300));
    let start = Instant::now();
    let task = printer.task(&format!("0 of {} {what} done", requests.len()));
    let mut outcomes: Vec<Option<Outcome>> = requests.iter().map(|_| None).collect();
    while start.elapsed() < timeout {
        // Every pending request's refusal and record in one batched read, as `wait` reads one.
        let pending: Vec<usize> = (0..requests.len())
            .filter(|&i| outcomes[i].is_none())
            .collect();
        let keys: Vec<String> = pending
            .iter()
            .flat_map(|&i| {
                [
                    contract::rejection_key(&message_ids[i]),
                    checked[i].request_id.clone(),
                ]
            })
            .collect();
        let read: HashMap<String, Record> = ledger
            .get_many(&keys)
            .await?
            .into_iter()
            .map(|r| (r.key.clone(), r))
            .collect();
        for i in pending {
            let (checked, message_id) = (&checked[i], &message_ids[i]);
            let found = match read.get(&contract::rejection_key(message_id)) {
                Some(refused) => Some(refused.clone()),
                None => read
                    .get(&checked.request_id)
                    .filter(|r| r.status.is_final() && r.message_ids.contains(message_id))
                    .cloned(),
            };
            outcomes[i] = found.map(|record| Outcome {
                request_id: checked.request_id.clone(),
                message_id: message_id.clone(),
                record,
                ledger: ledger.clone(),
                waited: start.elapsed(),
            });
        }
        let done = outcomes.iter().filter(|o| o.is_some()).count();
        task.update(&format!("{done} of {} {what} done", requests.len()));
        if done == requests.len() {
            task.done(&format!("{done} {what} done"));
            return Ok(outcomes);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    task.fail();
    Ok(outcomes)
}

/// Sends the request body to `channel`'s queue in the security account with the caller's own
/// identity; the message id.
async fn send_request(c: &Connection, channel: Channel, body: &str) -> anyhow::Result<String> {
    let queue = channel.queue_name(&c.name);
    let account = &c.security_account;
    let explain = |e: CallError| -> anyhow::Error {
        if e.failure
            .code
            .as_deref()
            .is_some_and(|code| code.contains("NonExistentQueue") || code == "QueueDoesNotExist")
        {
            anyhow::anyhow!("no queue {queue} in {account}: run `quell upgrade` (installs from before per-kind request queues lack it)")
        } else if e
            .failure
            .code
            .as_deref()
            .is_some_and(|code| code.contains("AccessDenied") || code == "AuthorizationError")
        {
            exit::refused(format!(
                "{} may not send {} requests ({e}): authorization.{} in the configuration names who may, and your own IAM policy must allow sqs:SendMessage on {queue}",
                c.caller.arn,
                channel.as_str(),
                channel.as_str()
            ))
        } else {
            anyhow::anyhow!("cannot send to {queue}: {e}")
        }
    };
    let sqs = crate::calls::client!(aws_sdk_sqs, &c.sender);
    let url = sqs
        .get_queue_url()
        .queue_name(&queue)
        .queue_owner_aws_account_id(account)
        .send()
        .await
        .described("sqs:GetQueueUrl")
        .map_err(explain)?
        .queue_url()
        .unwrap_or_default()
        .to_owned();
    let sent = sqs
        .send_message()
        .queue_url(url)
        .message_body(body)
        .send()
        .await
        .described("sqs:SendMessage")
        .map_err(explain)?;
    Ok(sent.message_id().unwrap_or_default().to_owned())
}

/// How long to wait before reading the ledger again: often at first, when an outcome is most
/// likely (a containment takes well under a second), then at a pace a long sweep can afford.
fn poll_interval(waited: Duration) -> Duration {
    if waited < Duration::from_secs(10) {
        Duration::from_millis(40)
    } else {
        Duration::from_millis(250)
    }
}

/// Polls the ledger until this delivery's outcome is final: the request's own record when this
/// message started it, or the refusal recorded under the message id.
async fn wait(
    ledger: &Ledger,
    request_id: &str,
    message_id: &str,
    timeout: Duration,
    printer: &Printer,
) -> anyhow::Result<Option<Record>> {
    let start = Instant::now();
    let task = printer.task(&format!("waiting for request {request_id}"));
    let mut shown_steps = 0;
    let refusal = contract::rejection_key(message_id);
    let keys = [refusal.clone(), request_id.to_owned()];
    while start.elapsed() < timeout {
        // The refusal and the record in one round trip: most outcomes arrive within a second.
        let found = ledger.get_many(&keys).await?;
        if let Some(refused) = found.iter().find(|r| r.key == refusal) {
            task.fail();
            return Ok(Some(refused.clone()));
        }
        if let Some(record) = found.into_iter().find(|r| r.key == request_id) {
            if record.message_ids.iter().any(|m| m == message_id) {
                for step in record.steps.iter().skip(shown_steps) {
                    task.update(&format!("{}: {}", step.name, step.detail));
                }
                shown_steps = record.steps.len();
                if record.status.is_final() {
                    task.done(&format!("request {request_id} {}", record.status.as_str()));
                    return Ok(Some(record));
                }
                if let Some(plan) = &record.sweep_plan {
                    let tally = ledger.tally(request_id).await?.unwrap_or_default();
                    task.update(&format!(
                        "{} of {} places swept, {} not swept",
                        tally.done,
                        plan.total(),
                        tally.failed
                    ));
                }
            }
        }
        tokio::time::sleep(poll_interval(start.elapsed())).await;
    }
    task.fail();
    Ok(None)
}

pub fn report_text(r: &Record, printer: &Printer) -> String {
    let mut t = String::new();
    let (word, tone) = match (r.status, r.action) {
        (Status::Succeeded, Action::Contain) => ("CONTAINED", Tone::Good),
        (Status::Succeeded, Action::Release) => ("RELEASED", Tone::Good),
        (Status::Rejected, _) => ("REFUSED", Tone::Bad),
        (Status::Failed, _) => ("FAILED", Tone::Bad),
        (Status::InProgress, _) => ("IN PROGRESS", Tone::Change),
        (Status::Succeeded, Action::Remediate) => ("REMEDIATED", Tone::Good),
        (Status::Succeeded, Action::Sweep) => ("SWEPT", Tone::Good),
        (Status::Succeeded, Action::Run) => ("RUN STARTED", Tone::Good),
        (Status::Skipped, _) => ("SKIPPED", Tone::Dim),
        (Status::Succeeded, Action::Approve) => ("APPROVED AND FIXED", Tone::Good),
        (Status::Succeeded, Action::Deny) | (Status::Denied, _) => ("DENIED", Tone::Change),
        (Status::AwaitingApproval, _) => ("AWAITING APPROVAL", Tone::Change),
        (Status::Waiting, _) => ("WAITING", Tone::Change),
    };
    let _ = writeln!(
        t,
        "{} {}",
        printer.paint(word, tone),
        r.entity.as_deref().unwrap_or("?")
    );
    let _ = writeln!(
        t,
        "  request   {}",
        r.request_id.as_deref().unwrap_or(&r.key)
    );
    let _ = writeln!(t, "  messages  {}", r.message_ids.join(", "));
    if let Some(reason) = &r.reason {
        let _ = writeln!(t, "  reason    {reason}");
    }
    if let Some(rej) = &r.rejection {
        let _ = writeln!(t, "  refused   {} ({})", rej.message, rej.code);
    }
    if let Some(e) = &r.error {
        let _ = writeln!(t, "  error     {e}");
    }
    for s in &r.steps {
        let (mark, tone) = match s.status {
            StepStatus::Done => ("done", Tone::Good),
            StepStatus::Skipped => ("skipped", Tone::Dim),
            StepStatus::Failed => ("FAILED", Tone::Bad),
        };
        let _ = writeln!(
            t,
            "  {:>9}  {:<26} {}",
            printer.paint(mark, tone),
            s.name,
            s.detail
        );
    }
    t
}

pub async fn history(
    global: &GlobalArgs,
    args: &HistoryArgs,
    printer: &Printer,
) -> anyhow::Result<u8> {
    let c = connect(global, args.config.as_ref()).await?;
    let ledger = Ledger::new(
        crate::calls::client!(aws_sdk_dynamodb, &c.security),
        &c.deployment.ledger_table,
    );
    let mut records = match &args.arn {
        Some(arn) => ledger.for_entity(arn).await?,
        None => ledger.recent(args.limit).await?,
    };
    records.truncate(args.limit);
    printer.result(&records, || {
        let mut t = String::new();
        if records.is_empty() {
            let _ = writeln!(
                t,
                "no records{}",
                args.arn
                    .as_ref()
                    .map(|a| format!(" for {a}"))
                    .unwrap_or_default()
            );
        }
        for r in &records {
            let _ = writeln!(
                t,
                "{}  {:<8} {:<11} {}  {}  ({})",
                r.received_at.format("%Y-%m-%d %H:%M:%S"),
                r.action.as_str(),
                r.status.as_str(),
                r.entity.as_deref().unwrap_or("?"),
                r.key,
                r.rejection
                    .as_ref()
                    .map(|x| x.code.as_str())
                    .or(r.error.as_deref())
                    .or(r.reason.as_deref())
                    .unwrap_or("")
            );
        }
        t
    });
    Ok(exit::SUCCESS)
}

/// `quell rotate-external-id`: a fresh message ExternalId; the current one is accepted until the
/// grace period ends. The responder reads the secret again within minutes (and at once when a
/// message presents an id it does not know), so no cold start is needed.
pub async fn rotate_external_id(
    global: &GlobalArgs,
    args: &crate::args::RotateArgs,
    printer: &Printer,
) -> anyhow::Result<u8> {
    let c = connect(global, args.config.as_ref()).await?;
    let name = deployment::secret_name(&c.name);
    let question = format!(
        "Rotate the containment message ExternalId in {name}? The current one stays valid for {} minute(s)",
        args.grace_minutes
    );
    if !confirm(printer, &question, args.yes)? {
        return Err(exit::refused("rotation cancelled; nothing was changed"));
    }
    let secrets = crate::calls::client!(aws_sdk_secretsmanager, &c.security);
    let ids = ExternalIds::load(&secrets, &name).await?;
    let until = chrono::Utc::now() + chrono::Duration::minutes(i64::from(args.grace_minutes));
    let rotated = ids.rotated(crate::converge::secret::random_id()?, until);
    secrets
        .put_secret_value()
        .secret_id(&name)
        .secret_string(serde_json::to_string(&rotated)?)
        .send()
        .await
        .described("secretsmanager:PutSecretValue")?;
    let report = serde_json::json!({
        "secret": name,
        "previous_valid_until": until.to_rfc3339(),
    });
    printer.result(&report, || {
        format!(
            "rotated the message ExternalId in {name}; the previous one is accepted until {}. Publishers read message_external_id from the secret again.",
            until.to_rfc3339()
        )
    });
    Ok(0)
}
