//! `quell contain ARN`: publish a containment request with the ExternalId, wait for the responder's
//! outcome in the ledger, and print every step.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use aws_sdk_sns::types::MessageAttributeValue;
use quell_responder::aws_error::Described;
use quell_responder::contract::{
    self, Action, ContainmentMessage, EXTERNAL_ID_ATTRIBUTE, MESSAGE_VERSION,
};
use quell_responder::entity::Entity;
use quell_responder::ledger::{Ledger, Record, Status, StepStatus};
use quell_responder::secret::ExternalIds;
use serde::Serialize;

use crate::args::{ContainArgs, GlobalArgs};
use crate::aws::Aws;
use crate::config::Config;
use crate::deployment::{self, Deployment};
use crate::exit;
use crate::printer::{confirm, Printer, Tone};
use crate::sandbox::state::SandboxState;

#[derive(Debug, Serialize)]
struct Report<'a> {
    request_id: &'a str,
    message_id: &'a str,
    status: Status,
    entity: &'a str,
    record: &'a Record,
}

fn config_path(global: &GlobalArgs, explicit: Option<&PathBuf>) -> anyhow::Result<PathBuf> {
    if let Some(p) = explicit {
        return Ok(p.clone());
    }
    if global.sandbox {
        return Ok(SandboxState::load()?.config_path);
    }
    let default = PathBuf::from("quell.yaml");
    if default.exists() {
        return Ok(default);
    }
    anyhow::bail!("no configuration: pass --config FILE (the one `quell install` used), or create quell.yaml here")
}

/// The outcome of one containment request, as the ledger recorded it.
pub struct Outcome {
    pub request_id: String,
    pub message_id: String,
    pub record: Record,
}

pub async fn run(global: &GlobalArgs, args: &ContainArgs, printer: &Printer) -> anyhow::Result<u8> {
    let outcome = request(global, args, printer).await?;
    let record = &outcome.record;
    let report = Report {
        request_id: &outcome.request_id,
        message_id: &outcome.message_id,
        status: record.status,
        entity: &args.arn,
        record,
    };
    printer.result(&report, || report_text(record, printer));
    Ok(exit_code(record.status))
}

pub fn exit_code(status: Status) -> u8 {
    match status {
        Status::Succeeded => exit::SUCCESS,
        Status::Rejected => exit::REFUSED,
        Status::Failed | Status::InProgress => exit::CONTAINMENT_FAILED,
    }
}

/// Publishes the request and waits for its outcome.
pub async fn request(
    global: &GlobalArgs,
    args: &ContainArgs,
    printer: &Printer,
) -> anyhow::Result<Outcome> {
    // The responder is the one authority on what may be contained: whatever it refuses is recorded
    // and audited, whoever sent it. Here only the message's own shape is checked.
    if args.reason.trim().is_empty() {
        return Err(exit::refused(
            "--reason is empty: say why, it goes into the ledger and every audit message",
        ));
    }
    let request_id = args
        .request_id
        .clone()
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    if !ContainmentMessage::request_id_is_valid(&request_id) {
        return Err(exit::refused(
            "--request-id must be 1-64 characters of letters, digits, '-' and '_'",
        ));
    }
    let config = Config::load(&config_path(global, args.config.as_ref())?)?;
    let aws = Aws::connect(global, &config.home_region).await?;
    let caller = aws.caller().await?;
    let security = aws
        .account(
            &caller,
            &config.security_account,
            &config.home_region,
            &config.security_account_role,
        )
        .await?;
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
    let secrets = aws_sdk_secretsmanager::Client::new(&security);
    let ids = ExternalIds::load(&secrets, &deployment::secret_name(&config.name)).await?;

    let question = match Entity::parse(&args.arn) {
        Ok(entity) => format!(
            "Contain {} {} in account {}?",
            entity.kind(),
            entity.name(),
            entity.account()
        ),
        Err(_) => format!("Send a containment request for {}?", args.arn),
    };
    if !confirm(printer, &question, args.yes)? {
        return Err(exit::refused("containment cancelled; nothing was sent"));
    }
    let message = ContainmentMessage {
        version: MESSAGE_VERSION.into(),
        request_id: request_id.clone(),
        action: Action::Contain,
        entity: args.arn.clone(),
        reason: args.reason.clone(),
        requester: caller.arn.clone(),
    };
    let published = aws_sdk_sns::Client::new(&security)
        .publish()
        .topic_arn(&deployment.containment_topic_arn)
        .subject(format!("Quell containment request {request_id}"))
        .message(serde_json::to_string(&message)?)
        .message_attributes(
            EXTERNAL_ID_ATTRIBUTE,
            MessageAttributeValue::builder()
                .data_type("String")
                .string_value(&ids.message_external_id)
                .build()?,
        )
        .send()
        .await
        .described("sns:Publish")?;
    let message_id = published.message_id().unwrap_or_default().to_owned();
    printer.status(&format!(
        "request {request_id} published (message {message_id}); waiting for the responder"
    ));

    let ledger = Ledger::new(
        aws_sdk_dynamodb::Client::new(&security),
        &deployment.ledger_table,
    );
    let record = wait(
        &ledger,
        &request_id,
        &message_id,
        Duration::from_secs(args.timeout),
        printer,
    )
    .await?;
    let Some(record) = record else {
        return Err(exit::Coded {
            code: exit::TIMED_OUT,
            message: format!(
                "no outcome for request {request_id} within {}s; it may still complete: check the ledger table {} or the responder's logs",
                args.timeout, deployment.ledger_table
            ),
        }
        .into());
    };
    Ok(Outcome {
        request_id,
        message_id,
        record,
    })
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
    while start.elapsed() < timeout {
        if let Some(refused) = ledger.get(&contract::rejection_key(message_id)).await? {
            task.fail();
            return Ok(Some(refused));
        }
        if let Some(record) = ledger.get(request_id).await? {
            if record.message_ids.iter().any(|m| m == message_id) {
                for step in record.steps.iter().skip(shown_steps) {
                    task.update(&format!("{}: {}", step.name, step.detail));
                }
                shown_steps = record.steps.len();
                if record.status.is_final() {
                    task.done(&format!("request {request_id} {}", record.status.as_str()));
                    return Ok(Some(record));
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    task.fail();
    Ok(None)
}

pub fn report_text(r: &Record, printer: &Printer) -> String {
    let mut t = String::new();
    let (word, tone) = match r.status {
        Status::Succeeded => ("CONTAINED", Tone::Good),
        Status::Rejected => ("REFUSED", Tone::Bad),
        Status::Failed => ("FAILED", Tone::Bad),
        Status::InProgress => ("IN PROGRESS", Tone::Change),
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
            "  {:>9}  {:<24} {}",
            printer.paint(mark, tone),
            s.name,
            s.detail
        );
    }
    t
}
