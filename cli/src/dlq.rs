//! `quell dlq`: what is in the responder's dead-letter queue, each message told apart and said
//! plainly: what it is about, why it is there, and what to do about it. `quell dlq redrive` sends
//! the events back to the events queue, and a sweep's places back to the sweep queue, once the
//! cause is fixed; each is acted on once, because the responder claims every event's remediation
//! and every place by its ledger key (one already done is a duplicate, one that failed is taken
//! up again).
//!
//! What reaches the dead-letter queue:
//! - events from the central bus that failed three receives (the events queue's redrive);
//! - requests from the request queues that did (the same), and requests from the topic the
//!   responder gave up on after its own retries (`given_up`, without the ExternalId);
//! - the responder's record of a request that failed for good (`failed`);
//! - a run's timer or phase that failed three receives on the isolation queue, or that
//!   EventBridge Scheduler could not deliver;
//! - a sweep's place that failed three receives on the sweep queue (its sweep waits for it).
//!
//! Only events and places are sent back. A request is the requester's to send again (the responder checks
//! who sent it, and the same request id resumes it), a failed record is already in the ledger, and
//! only the responder may put a timer on the isolation queue.

use std::collections::HashMap;
use std::fmt::Write as _;

use aws_config::SdkConfig;
use quell_responder::aws_error::Described;
use serde::Serialize;
use serde_json::Value;

use crate::args::{DlqArgs, DlqCommand, GlobalArgs};
use crate::deployment::queue_url;
use crate::exit;
use crate::printer::Printer;

/// How long a listed message stays hidden from other readers while it is being read; every
/// message not sent back is made visible again right after.
const READ_VISIBILITY_SECONDS: i32 = 30;

/// At most this many messages are read in one command.
const MOST_MESSAGES: usize = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Event,
    Request,
    GivenUp,
    Failed,
    RunTimer,
    SweepPlace,
    Unknown,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Event => "event",
            Kind::Request => "request",
            Kind::GivenUp => "given up",
            Kind::Failed => "failed",
            Kind::RunTimer => "run timer",
            Kind::SweepPlace => "sweep place",
            Kind::Unknown => "unknown",
        }
    }
}

/// Where a redrive sends each kind it sends back: the queue it came from.
pub struct Homes {
    pub events: String,
    pub sweep: String,
}

impl Homes {
    pub fn for_prefix(prefix: &str) -> Homes {
        Homes {
            events: crate::deployment::events_queue(prefix),
            sweep: crate::deployment::sweep_queue(prefix),
        }
    }

    fn of(&self, kind: Kind) -> Option<&str> {
        match kind {
            Kind::Event => Some(&self.events),
            Kind::SweepPlace => Some(&self.sweep),
            _ => None,
        }
    }
}

/// One message of the dead-letter queue, read.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetter {
    pub message_id: String,
    pub kind: Kind,
    /// What it is about: the event, the request, the ledger key or the run.
    pub about: String,
    /// Why it is there, when the message says.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// What to do about it.
    pub next: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sent_at: Option<String>,
    #[serde(skip)]
    body: String,
    #[serde(skip)]
    receipt_handle: String,
}

fn text(v: &Value, path: &str) -> String {
    v.pointer(path)
        .map(|x| x.as_str().map_or_else(|| x.to_string(), str::to_owned))
        .unwrap_or_default()
}

/// What a message is, from its body and attributes (anyone's JSON: nothing in it is trusted, it
/// is only described).
pub fn classify(
    body: &str,
    attributes: &HashMap<String, String>,
) -> (Kind, String, Option<String>, String) {
    let v: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    // Lambda's and EventBridge Scheduler's dead-letter attributes.
    let said_why = attributes
        .get("ErrorMessage")
        .or_else(|| attributes.get("ERROR_MESSAGE"))
        .cloned();
    let resend = |id: &str| {
        format!("the requester sends it again with --request-id {id}: the responder checks the sender, and the same id resumes what was done")
    };
    if v["source"] == "quell" && v["event"] == "failed" {
        let key = text(&v, "/record/key");
        return (
            Kind::Failed,
            format!("{key} ({})", text(&v, "/record/entity")),
            v.pointer("/record/error")
                .and_then(Value::as_str)
                .map(str::to_owned),
            format!(
                "failed for good: `quell history` shows it; once the cause is fixed, {}",
                resend(&key)
            ),
        );
    }
    if v["source"] == "quell" && v["event"] == "given_up" {
        let id = text(&v, "/request/request_id");
        return (
            Kind::GivenUp,
            format!(
                "{} {} (request {id})",
                text(&v, "/request/action"),
                text(&v, "/request/entity")
            ),
            v["error"].as_str().map(str::to_owned),
            resend(&id),
        );
    }
    if v.get("detail-type").is_some() && v.get("source").is_some() {
        // A CloudTrail call: its name and the resource it names.
        let call = ["groupId", "bucketName", "snapshotId", "instanceId"]
            .iter()
            .find_map(|k| v["detail"]["requestParameters"][k].as_str())
            .map(|id| format!(" {} {id}", text(&v, "/detail/eventName")))
            .unwrap_or_default();
        return (
            Kind::Event,
            format!(
                "{} \"{}\"{call} from {} {} (event {})",
                text(&v, "/source"),
                text(&v, "/detail-type"),
                text(&v, "/account"),
                text(&v, "/region"),
                text(&v, "/id")
            ),
            said_why,
            "`quell dlq redrive --yes` sends it back to the events queue once the cause is fixed"
                .into(),
        );
    }
    if v.get("quell_run").is_some() && v.get("wake").is_some() {
        let run = text(&v, "/quell_run");
        return (
            Kind::RunTimer,
            format!("run {run}, step {} ({})", text(&v, "/step"), text(&v, "/wake")),
            said_why,
            format!("`quell runs {run}` shows where the run stands; only the responder may put a timer back on the isolation queue"),
        );
    }
    if v.get("sweep").is_some() && v.get("account").is_some() && v.get("region").is_some() {
        return (
            Kind::SweepPlace,
            format!(
                "{} in {} of sweep {}",
                text(&v, "/account"),
                text(&v, "/region"),
                text(&v, "/sweep")
            ),
            said_why,
            "the sweep waits for this place: `quell dlq redrive --yes` sends it back to the sweep queue once the cause is fixed".into(),
        );
    }
    if v.get("request_id").is_some() && v.get("action").is_some() {
        let id = text(&v, "/request_id");
        return (
            Kind::Request,
            format!(
                "{} {} (request {id})",
                text(&v, "/action"),
                text(&v, "/entity")
            ),
            said_why,
            resend(&id),
        );
    }
    let shown: String = body.chars().take(120).collect();
    (
        Kind::Unknown,
        shown,
        said_why,
        "not Quell's: left where it is".into(),
    )
}

fn read(message: &aws_sdk_sqs::types::Message) -> DeadLetter {
    let attributes: HashMap<String, String> = message
        .message_attributes()
        .map(|a| {
            a.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.string_value()?.to_owned())))
                .collect()
        })
        .unwrap_or_default();
    let body = message.body().unwrap_or_default().to_owned();
    let (kind, about, error, next) = classify(&body, &attributes);
    let sent_at = message
        .attributes()
        .and_then(|a| a.get(&aws_sdk_sqs::types::MessageSystemAttributeName::SentTimestamp))
        .and_then(|ms| ms.parse::<i64>().ok())
        .and_then(chrono::DateTime::from_timestamp_millis)
        .map(|t| t.to_rfc3339());
    DeadLetter {
        message_id: message.message_id().unwrap_or_default().to_owned(),
        kind,
        about,
        error,
        next,
        sent_at,
        body,
        receipt_handle: message.receipt_handle().unwrap_or_default().to_owned(),
    }
}

/// Every message of the dead-letter queue, each hidden from other readers while this command
/// runs (and for at most 30 s if it stops half way).
async fn read_all(sqs: &aws_sdk_sqs::Client, url: &str) -> anyhow::Result<Vec<DeadLetter>> {
    let mut out: Vec<DeadLetter> = Vec::new();
    while out.len() < MOST_MESSAGES {
        let received = sqs
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(10)
            .visibility_timeout(READ_VISIBILITY_SECONDS)
            .message_system_attribute_names(
                aws_sdk_sqs::types::MessageSystemAttributeName::SentTimestamp,
            )
            .message_attribute_names("All")
            .send()
            .await
            .described("sqs:ReceiveMessage")?;
        if received.messages().is_empty() {
            break;
        }
        out.extend(received.messages().iter().map(read));
    }
    Ok(out)
}

/// Visible again at once, for the responder's operators and the next command.
async fn release(sqs: &aws_sdk_sqs::Client, url: &str, letters: &[&DeadLetter]) {
    for l in letters {
        let _ = sqs
            .change_message_visibility()
            .queue_url(url)
            .receipt_handle(&l.receipt_handle)
            .visibility_timeout(0)
            .send()
            .await;
    }
}

/// What a redrive did.
#[derive(Debug, Default, Serialize)]
pub struct Redriven {
    pub sent: Vec<String>,
    pub kept: Vec<DeadLetter>,
}

/// Lists the dead-letter queue, or sends its events and places back when `send` (and only then).
pub async fn redrive(
    security: &SdkConfig,
    dead_letter_queue: &str,
    homes: &Homes,
    send: bool,
) -> anyhow::Result<(Vec<DeadLetter>, Redriven)> {
    let sqs = crate::calls::client!(aws_sdk_sqs, security);
    let dlq = queue_url(&sqs, dead_letter_queue).await?;
    let letters = read_all(&sqs, &dlq).await?;
    let mut done = Redriven::default();
    if send {
        let mut urls: HashMap<&str, String> = HashMap::new();
        for l in &letters {
            let Some(home) = homes.of(l.kind) else {
                continue;
            };
            if !urls.contains_key(home) {
                urls.insert(home, queue_url(&sqs, home).await?);
            }
            let url = &urls[home];
            // Sent before it is deleted: a stop in between sends it twice at worst, and the
            // ledger makes the second a duplicate.
            sqs.send_message()
                .queue_url(url)
                .message_body(&l.body)
                .send()
                .await
                .described("sqs:SendMessage (back where it came from)")?;
            sqs.delete_message()
                .queue_url(&dlq)
                .receipt_handle(&l.receipt_handle)
                .send()
                .await
                .described("sqs:DeleteMessage (dead-letter queue)")?;
            done.sent.push(l.message_id.clone());
        }
    }
    let kept: Vec<&DeadLetter> = letters
        .iter()
        .filter(|l| !done.sent.contains(&l.message_id))
        .collect();
    release(&sqs, &dlq, &kept).await;
    done.kept = kept.into_iter().cloned().collect();
    Ok((letters, done))
}

fn listing(letters: &[DeadLetter]) -> String {
    let mut t = String::new();
    if letters.is_empty() {
        let _ = writeln!(t, "the dead-letter queue is empty");
    }
    for l in letters {
        let _ = writeln!(
            t,
            "{}  {:<9} {}",
            l.sent_at.as_deref().unwrap_or("?"),
            l.kind.as_str(),
            l.about
        );
        if let Some(e) = &l.error {
            let _ = writeln!(t, "    why:  {e}");
        }
        let _ = writeln!(t, "    next: {}", l.next);
    }
    t
}

pub async fn run(global: &GlobalArgs, args: &DlqArgs, printer: &Printer) -> anyhow::Result<u8> {
    let c = crate::contain::connect(global, args.config.as_ref()).await?;
    let homes = Homes::for_prefix(&c.name);
    let yes = match args.command {
        None => {
            let (letters, _) =
                redrive(&c.security, &c.deployment.dead_letter_queue, &homes, false).await?;
            printer.result(&letters, || listing(&letters));
            return Ok(exit::SUCCESS);
        }
        Some(DlqCommand::Redrive { yes }) => yes,
    };
    let (letters, done) =
        redrive(&c.security, &c.deployment.dead_letter_queue, &homes, yes).await?;
    printer.result(&done, || {
        let back = letters.iter().filter(|l| homes.of(l.kind).is_some()).count();
        let mut t = if yes {
            format!(
                "sent back to {} and {}: {} (each is acted on once)\n",
                homes.events,
                homes.sweep,
                done.sent.len()
            )
        } else {
            format!(
                "events and sweep places that would be sent back to {} and {}: {back} (add --yes to send them)\n",
                homes.events, homes.sweep
            )
        };
        let kept: Vec<DeadLetter> = done
            .kept
            .iter()
            .filter(|l| yes || homes.of(l.kind).is_none())
            .cloned()
            .collect();
        if !kept.is_empty() {
            let _ = writeln!(t, "kept in the dead-letter queue:");
            t.push_str(&listing(&kept));
        }
        t
    });
    Ok(exit::SUCCESS)
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use aws_credential_types::Credentials;
    use aws_sdk_sqs::operation::change_message_visibility::ChangeMessageVisibilityOutput;
    use aws_sdk_sqs::operation::delete_message::DeleteMessageOutput;
    use aws_sdk_sqs::operation::get_queue_url::GetQueueUrlOutput;
    use aws_sdk_sqs::operation::receive_message::ReceiveMessageOutput;
    use aws_sdk_sqs::operation::send_message::SendMessageOutput;
    use aws_sdk_sqs::types::Message;
    use aws_smithy_mocks::{create_mock_http_client, mock, MockResponseInterceptor, RuleMode};
    use aws_smithy_runtime_api::client::interceptors::SharedInterceptor;
    use serde_json::json;

    use super::*;
    use crate::calls::double::{self, Double};

    const DLQ: &str = "https://sqs.us-east-1.amazonaws.com/222233334444/quell-responder-dlq";
    const EVENTS: &str = "https://sqs.us-east-1.amazonaws.com/222233334444/quell-events";
    const SWEEP: &str = "https://sqs.us-east-1.amazonaws.com/222233334444/quell-sweep";

    fn event() -> Value {
        json!({"version": "0", "id": "ev-7", "detail-type": "AWS API Call via CloudTrail",
            "source": "aws.ec2", "account": "111122223333", "region": "eu-west-1",
            "detail": {"eventName": "AuthorizeSecurityGroupIngress",
                "requestParameters": {"groupId": "sg-0a1"}}})
    }

    fn failed() -> Value {
        json!({"source": "quell", "event": "failed", "record": {"key": "req-9",
            "entity": "arn:aws:iam::111122223333:user/mallory", "error": "iam:AttachUserPolicy: AccessDenied"}})
    }

    fn place() -> Value {
        json!({"version": "1", "sweep": "req-5", "account": "111122223333", "region": "eu-west-1"})
    }

    fn timer() -> Value {
        json!({"quell_run": "run:critical-cve:ab12:0", "step": "approve_patch", "wake": "timer",
            "at": "2026-12-03T10:00:00Z"})
    }

    #[test]
    fn each_kind_of_dead_letter_is_told_apart_and_said_plainly() {
        let none = HashMap::new();
        let (kind, about, _, next) = classify(&event().to_string(), &none);
        assert_eq!(kind, Kind::Event);
        assert_eq!(
            about,
            "aws.ec2 \"AWS API Call via CloudTrail\" AuthorizeSecurityGroupIngress sg-0a1 from 111122223333 eu-west-1 (event ev-7)"
        );
        assert!(next.contains("redrive"), "{next}");

        let (kind, about, error, next) = classify(&failed().to_string(), &none);
        assert_eq!(kind, Kind::Failed);
        assert!(
            about.starts_with("req-9") && about.contains("mallory"),
            "{about}"
        );
        assert_eq!(error.as_deref(), Some("iam:AttachUserPolicy: AccessDenied"));
        assert!(next.contains("--request-id req-9"), "{next}");

        let given_up = json!({"source": "quell", "event": "given_up", "message_id": "m", "attempts": 3,
            "error": "ThrottlingException", "request": {"request_id": "req-3", "action": "contain",
            "entity": "arn:aws:iam::111122223333:role/app"}});
        let (kind, about, error, next) = classify(&given_up.to_string(), &none);
        assert_eq!(kind, Kind::GivenUp);
        assert!(
            about.contains("contain arn:aws:iam::111122223333:role/app (request req-3)"),
            "{about}"
        );
        assert_eq!(error.as_deref(), Some("ThrottlingException"));
        assert!(next.contains("--request-id req-3"));

        // What EventBridge Scheduler dead-letters: the timer, its error in the attributes.
        let scheduler = HashMap::from([(
            "ERROR_MESSAGE".to_owned(),
            "AccessDenied on sqs:SendMessage".to_owned(),
        )]);
        let (kind, about, error, next) = classify(&timer().to_string(), &scheduler);
        assert_eq!(kind, Kind::RunTimer);
        assert!(
            about.contains("run:critical-cve:ab12:0, step approve_patch"),
            "{about}"
        );
        assert_eq!(error.as_deref(), Some("AccessDenied on sqs:SendMessage"));
        assert!(next.contains("quell runs run:critical-cve:ab12:0"));

        let request = json!({"version": "1", "request_id": "req-4", "action": "release",
            "entity": "arn:aws:lambda:us-east-1:111122223333:function:app", "requester": "x"});
        let (kind, _, _, next) = classify(&request.to_string(), &none);
        assert_eq!(kind, Kind::Request);
        assert!(next.contains("--request-id req-4"));

        let (kind, about, _, next) = classify(&place().to_string(), &none);
        assert_eq!(kind, Kind::SweepPlace);
        assert_eq!(about, "111122223333 in eu-west-1 of sweep req-5");
        assert!(next.contains("sweep queue"), "{next}");

        let (kind, about, _, next) = classify("not json at all", &none);
        assert_eq!(kind, Kind::Unknown);
        assert_eq!(about, "not json at all");
        assert!(next.contains("left where it is"));
    }

    /// The dead-letter queue as SQS keeps it: (id, body, visible, deleted); and what was sent
    /// where: (queue URL, body).
    #[derive(Default)]
    struct Queues {
        dlq: Vec<(String, String, bool, bool)>,
        sent: Vec<(String, String)>,
    }

    fn double(q: &Arc<Mutex<Queues>>) -> Double {
        let url = mock!(aws_sdk_sqs::Client::get_queue_url).then_compute_output(|req| {
            let name = req.queue_name().unwrap_or_default();
            GetQueueUrlOutput::builder()
                .queue_url(format!(
                    "https://sqs.us-east-1.amazonaws.com/222233334444/{name}"
                ))
                .build()
        });
        let receive = {
            let q = q.clone();
            mock!(aws_sdk_sqs::Client::receive_message).then_compute_output(move |req| {
                assert_eq!(
                    req.queue_url(),
                    Some(DLQ),
                    "only the dead-letter queue is read"
                );
                let mut q = q.lock().unwrap();
                let mut out = ReceiveMessageOutput::builder();
                let mut n = 0;
                for (id, body, visible, deleted) in &mut q.dlq {
                    if *visible && !*deleted && n < 10 {
                        *visible = false;
                        n += 1;
                        out = out.messages(
                            Message::builder()
                                .message_id(id.clone())
                                .receipt_handle(format!("r-{id}"))
                                .body(body.clone())
                                .build(),
                        );
                    }
                }
                out.build()
            })
        };
        let visible = {
            let q = q.clone();
            mock!(aws_sdk_sqs::Client::change_message_visibility).then_compute_output(move |req| {
                let mut q = q.lock().unwrap();
                for m in &mut q.dlq {
                    if Some(format!("r-{}", m.0).as_str()) == req.receipt_handle() {
                        m.2 = req.visibility_timeout() == Some(0);
                    }
                }
                ChangeMessageVisibilityOutput::builder().build()
            })
        };
        let delete = {
            let q = q.clone();
            mock!(aws_sdk_sqs::Client::delete_message).then_compute_output(move |req| {
                let mut q = q.lock().unwrap();
                for m in &mut q.dlq {
                    if Some(format!("r-{}", m.0).as_str()) == req.receipt_handle() {
                        m.3 = true;
                    }
                }
                DeleteMessageOutput::builder().build()
            })
        };
        let send = {
            let q = q.clone();
            mock!(aws_sdk_sqs::Client::send_message).then_compute_output(move |req| {
                q.lock().unwrap().sent.push((
                    req.queue_url().unwrap_or_default().to_owned(),
                    req.message_body().unwrap_or_default().to_owned(),
                ));
                SendMessageOutput::builder().message_id("new").build()
            })
        };
        let mut mocks = MockResponseInterceptor::new().rule_mode(RuleMode::MatchAny);
        for rule in [&url, &receive, &visible, &delete, &send] {
            mocks = mocks.with_rule(rule);
        }
        Double {
            interceptors: vec![SharedInterceptor::new(mocks)],
            http: create_mock_http_client(),
        }
    }

    fn security() -> SdkConfig {
        SdkConfig::builder()
            .region(aws_config::Region::new("us-east-1"))
            .credentials_provider(
                aws_credential_types::provider::SharedCredentialsProvider::new(Credentials::new(
                    "AKIA", "secret", None, None, "test",
                )),
            )
            .behavior_version(aws_config::BehaviorVersion::latest())
            .build()
    }

    fn dead_letters() -> Arc<Mutex<Queues>> {
        Arc::new(Mutex::new(Queues {
            dlq: [
                ("m-event", event()),
                ("m-failed", failed()),
                ("m-timer", timer()),
                ("m-place", place()),
            ]
            .into_iter()
            .map(|(id, body)| (id.to_owned(), body.to_string(), true, false))
            .collect(),
            sent: Vec::new(),
        }))
    }

    #[tokio::test]
    async fn listing_reads_every_message_and_leaves_each_where_it_was() {
        let q = dead_letters();
        let (letters, done) = double::scope(double(&q), async {
            redrive(
                &security(),
                "quell-responder-dlq",
                &Homes::for_prefix("quell"),
                false,
            )
            .await
        })
        .await
        .unwrap();
        let kinds: Vec<Kind> = letters.iter().map(|l| l.kind).collect();
        assert_eq!(
            kinds,
            [Kind::Event, Kind::Failed, Kind::RunTimer, Kind::SweepPlace]
        );
        assert!(done.sent.is_empty());
        let q = q.lock().unwrap();
        assert!(q.sent.is_empty());
        assert!(
            q.dlq
                .iter()
                .all(|(_, _, visible, deleted)| *visible && !*deleted),
            "visible again, none deleted"
        );
    }

    #[tokio::test]
    async fn a_redrive_sends_events_and_places_back_where_they_came_from_once_and_keeps_the_rest() {
        let q = dead_letters();
        let (_, done) = double::scope(double(&q), async {
            redrive(
                &security(),
                "quell-responder-dlq",
                &Homes::for_prefix("quell"),
                true,
            )
            .await
        })
        .await
        .unwrap();
        assert_eq!(done.sent, ["m-event", "m-place"]);
        let kept: Vec<Kind> = done.kept.iter().map(|l| l.kind).collect();
        assert_eq!(kept, [Kind::Failed, Kind::RunTimer]);
        let q = q.lock().unwrap();
        assert_eq!(
            q.sent,
            [
                (EVENTS.to_owned(), event().to_string()),
                (SWEEP.to_owned(), place().to_string())
            ],
            "each unchanged, once, to the queue it came from"
        );
        for (id, _, visible, deleted) in &q.dlq {
            if id == "m-event" || id == "m-place" {
                assert!(*deleted, "sent back, then deleted");
            } else {
                assert!(*visible && !*deleted, "{id} stays, visible");
            }
        }
    }
}
