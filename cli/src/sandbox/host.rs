//! The local Lambda host. moto stores the responder function but cannot run it, and cannot deliver
//! SNS or EventBridge to Lambda. So where AWS would invoke the function, the sandbox subscribes an
//! SQS queue, and this host turns each message back into the exact Lambda event and hands it to the
//! real `bootstrap` through the Lambda Runtime API, with the function's own configuration and role.
//! Failed invocations are retried twice and then sent to the dead-letter queue the function's
//! configuration names, or dropped without one, as Lambda does for asynchronous invocations (here
//! without the minutes-long pauses between tries). Each queue has pollers of its own, as an event
//! source mapping has, and `quell sandbox crash` has the host kill the function part way through
//! first tries (see `crashes`).

use std::collections::HashMap;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use aws_config::SdkConfig;
use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Router;
use futures::StreamExt;
use quell_responder::aws_error::Described;
use quell_responder::sessions::Sessions;
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot, Mutex};

use super::seed::account_role;
use super::state::{sandbox_dir, SandboxState};
use crate::aws::sandbox_config;
use crate::config::Config;
use crate::deployment::{self, Deployment};

/// Starts the host in the background; it lives until `quell sandbox down`.
pub fn spawn(dir: &Path) -> anyhow::Result<u32> {
    let log = std::fs::File::create(dir.join("host.log"))?;
    let child = std::process::Command::new(std::env::current_exe()?)
        .args(["sandbox", "host"])
        .env("QUELL_HOME", super::state::quell_home().canonicalize()?)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0)
        .spawn()
        .context("cannot start the local Lambda host")?;
    Ok(child.id())
}

pub fn inbox_queue_name(prefix: &str) -> String {
    format!("{prefix}-sandbox-lambda-inbox")
}

pub async fn run() -> anyhow::Result<u8> {
    let state = SandboxState::load()?;
    let config = Config::load(&state.config_path)?;
    let mgmt = sandbox_config(
        &state,
        &config.home_region,
        &state.admin.access_key_id,
        &state.admin.secret_access_key,
        None,
    )
    .await;
    let (publish, wiring) = tokio::sync::watch::channel(None);
    let host = Arc::new(Host {
        sessions: Sessions::new(&mgmt, "quell-sandbox-host"),
        runtime: Runtime::new(usize::from(state.environments.max(1))),
        state,
        wiring,
    });
    tracing::warn!(
        stack = %deployment::security_stack(&config.name),
        account = %host.state.security_account,
        region = %config.home_region,
        "waiting for the responder to be deployed"
    );
    // Each queue has pollers of its own, as an event source mapping does: a slow batch on one
    // queue never holds up another's messages, and a message is taken as soon as it arrives.
    let pollers = host.runtime.environments.len().div_ceil(10);
    let mut polled = std::collections::HashSet::new();
    loop {
        // The deployment is read again now and then: an upgrade brings new code or settings.
        match Wiring::discover(&host.state, &config, &host.sessions).await {
            Ok(Some(w)) => {
                if publish.borrow().is_none() {
                    tracing::warn!(queue = %w.queue_url, subscription = %w.subscription_arn, "responder deployed: delivering its messages");
                }
                let queues: Vec<String> = std::iter::once(w.queue_url.clone())
                    .chain(w.mapped_queues.iter().map(|(url, _)| url.clone()))
                    .collect();
                publish.send_replace(Some(Arc::new(w)));
                for queue in queues {
                    if polled.insert(queue.clone()) {
                        for _ in 0..pollers {
                            tokio::spawn(poll(host.clone(), queue.clone()));
                        }
                    }
                }
                tokio::time::sleep(REDISCOVER_AFTER).await;
            }
            Ok(None) => tokio::time::sleep(Duration::from_secs(1)).await,
            Err(e) => {
                tracing::error!(error = %crate::exit::describe(&e), "cannot read the deployment");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    }
}

/// What every poller shares: the sandbox, the execution environments, and the deployment as
/// last read.
struct Host {
    state: SandboxState,
    sessions: Sessions,
    runtime: Runtime,
    wiring: tokio::sync::watch::Receiver<Option<Arc<Wiring>>>,
}

/// Takes `queue`'s messages to the function, batch after batch, for as long as the host runs.
async fn poll(host: Arc<Host>, queue: String) {
    loop {
        let wiring = host.wiring.borrow().clone();
        let Some(w) = wiring else {
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        };
        // The inbox stands in for the SNS subscription (`None`); the others for event source
        // mappings (the queue's ARN).
        let mapped = if queue == w.queue_url {
            None
        } else if let Some((_, arn)) = w.mapped_queues.iter().find(|(url, _)| *url == queue) {
            Some(arn.as_str())
        } else {
            // No longer part of the deployment.
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        };
        let on_failure = match mapped {
            // A mapping's redrive policy ends in the dead-letter queue.
            Some(_) => OnFailure::Redrive,
            // SNS invokes asynchronously: what fails every try goes where the function's
            // configuration says, or is dropped, as Lambda does.
            None if w.function.dead_letter_target.is_some() => OnFailure::DeadLetterEvent,
            None => OnFailure::Drop,
        };
        let delivered = Box::pin(deliver(
            &w,
            &host.runtime,
            &host.sessions,
            &host.state,
            &queue,
            on_failure,
            |m| match mapped {
                None => sns_lambda_event(m.body().unwrap_or_default(), &w.subscription_arn),
                Some(arn) => Ok(sqs_lambda_event(m, arn, &w.function.region)),
            },
        ))
        .await;
        if let Err(e) = delivered {
            tracing::error!(queue, error = %crate::exit::describe(&e), "delivery round failed");
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

/// How long the host trusts what it read about the deployment.
const REDISCOVER_AFTER: Duration = Duration::from_secs(3);

/// The queue subscribed to the containment topic where AWS would subscribe the function.
pub struct Inbox {
    pub queue_url: String,
    pub subscription_arn: String,
}

/// Creates the inbox queue and its subscription, or finds them. `quell install --sandbox` calls
/// it too, as the stand-in for the stack's `AWS::SNS::Subscription` (which moto ignores), so no
/// request published right after install can miss it.
pub async fn subscribe_inbox(
    security: &SdkConfig,
    deployment: &Deployment,
    prefix: &str,
) -> anyhow::Result<Inbox> {
    let sqs = crate::calls::client!(aws_sdk_sqs, security);
    // Looked up first: a run that changes nothing else creates nothing here either.
    let queue_url = match sqs
        .get_queue_url()
        .queue_name(inbox_queue_name(prefix))
        .send()
        .await
        .described("sqs:GetQueueUrl")
    {
        Ok(found) => found.queue_url.unwrap_or_default(),
        Err(_) => sqs
            .create_queue()
            .queue_name(inbox_queue_name(prefix))
            .send()
            .await
            .described("sqs:CreateQueue")?
            .queue_url()
            .unwrap_or_default()
            .to_owned(),
    };
    let attrs = sqs
        .get_queue_attributes()
        .queue_url(&queue_url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
        .send()
        .await
        .described("sqs:GetQueueAttributes")?;
    let queue_arn = attrs
        .attributes()
        .and_then(|a| a.get(&aws_sdk_sqs::types::QueueAttributeName::QueueArn))
        .cloned()
        .unwrap_or_default();
    let sns = crate::calls::client!(aws_sdk_sns, security);
    let subs = sns
        .list_subscriptions_by_topic()
        .topic_arn(&deployment.containment_topic_arn)
        .send()
        .await
        .described("sns:ListSubscriptionsByTopic")?;
    let subscription_arn = match subs
        .subscriptions()
        .iter()
        .find(|s| s.endpoint() == Some(queue_arn.as_str()))
    {
        Some(s) => s.subscription_arn().unwrap_or_default().to_owned(),
        None => sns
            .subscribe()
            .topic_arn(&deployment.containment_topic_arn)
            .protocol("sqs")
            .endpoint(&queue_arn)
            .return_subscription_arn(true)
            .send()
            .await
            .described("sns:Subscribe")?
            .subscription_arn()
            .unwrap_or_default()
            .to_owned(),
    };
    Ok(Inbox {
        queue_url,
        subscription_arn,
    })
}

/// Deletes the sandbox inbox queue (its subscription went with the containment topic).
pub async fn remove_inbox(security: &SdkConfig, prefix: &str) -> anyhow::Result<()> {
    let sqs = crate::calls::client!(aws_sdk_sqs, security);
    let found = sqs
        .get_queue_url()
        .queue_name(inbox_queue_name(prefix))
        .send()
        .await
        .described("sqs:GetQueueUrl");
    let url = match found {
        Ok(out) => out.queue_url.unwrap_or_default(),
        Err(e)
            if e.failure.message.contains("does not exist")
                || e.is_code("AWS.SimpleQueueService.NonExistentQueue")
                || e.is_code("QueueDoesNotExist") =>
        {
            return Ok(())
        }
        Err(e) => return Err(e.into()),
    };
    sqs.delete_queue()
        .queue_url(url)
        .send()
        .await
        .described("sqs:DeleteQueue")?;
    Ok(())
}

/// Where messages come from and which function they go to.
struct Wiring {
    security: SdkConfig,
    deployment: Deployment,
    queue_url: String,
    subscription_arn: String,
    /// Every queue that is an event source mapping of the function on AWS (URL, ARN): the
    /// responder's own delayed queue (EC2 phase 2, timers), the events queue the central bus's
    /// remediation rule feeds, the sweep queue and the per-kind request queues.
    mapped_queues: Vec<(String, String)>,
    function: FunctionSpec,
}

#[derive(Clone, PartialEq)]
struct FunctionSpec {
    name: String,
    arn: String,
    role: String,
    timeout: u64,
    memory: i32,
    env: Vec<(String, String)>,
    artifact_bucket: String,
    artifact_key: String,
    region: String,
    /// Where Lambda puts an asynchronous invocation that failed every try; `None`: dropped.
    dead_letter_target: Option<String>,
}

impl Wiring {
    async fn discover(
        state: &SandboxState,
        config: &Config,
        sessions: &Sessions,
    ) -> anyhow::Result<Option<Wiring>> {
        let security = sessions
            .assume(&account_role(&state.security_account), None)
            .await?;
        let Some(deployment) = Deployment::find(&security, &config.name).await? else {
            return Ok(None);
        };
        let Some(artifacts) =
            deployment::stack_outputs(&security, &deployment::artifacts_stack(&config.name))
                .await?
        else {
            return Ok(None);
        };
        let sqs = aws_sdk_sqs::Client::new(&security);
        let Inbox {
            queue_url,
            subscription_arn,
        } = subscribe_inbox(&security, &deployment, &config.name).await?;
        let outputs =
            deployment::stack_outputs(&security, &deployment::security_stack(&config.name))
                .await?
                .unwrap_or_default();
        // A queue's URL and ARN by name (an event source mapping names the queue by ARN).
        let queue = |name: String| {
            let (sqs, home, account) = (&sqs, &config.home_region, &state.security_account);
            async move {
                let url = deployment::queue_url(sqs, &name).await?;
                anyhow::Ok((url, format!("arn:aws:sqs:{home}:{account}:{name}")))
            }
        };
        let output = |key: &str| {
            outputs
                .get(key)
                .cloned()
                .with_context(|| format!("the security stack has no {key} output"))
        };
        let mut mapped_queues = Vec::new();
        for name in ["IsolationQueueName", "EventsQueueName", "SweepQueueName"] {
            mapped_queues.push(queue(output(name)?).await?);
        }
        for channel in quell_responder::authorization::Channel::ALL {
            mapped_queues.push(queue(channel.queue_name(&config.name)).await?);
        }
        let f = aws_sdk_lambda::Client::new(&security)
            .get_function_configuration()
            .function_name(&deployment.function_name)
            .send()
            .await
            .described("lambda:GetFunctionConfiguration")?;
        let env = f
            .environment()
            .and_then(|e| e.variables())
            .map(|v| {
                // Sorted: the spec is compared to tell whether the function changed.
                let mut env: Vec<(String, String)> =
                    v.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
                env.sort();
                env
            })
            .unwrap_or_default();
        let function = FunctionSpec {
            name: deployment.function_name.clone(),
            arn: f.function_arn().unwrap_or_default().to_owned(),
            role: f.role().unwrap_or_default().to_owned(),
            timeout: u64::try_from(f.timeout().unwrap_or(3)).unwrap_or(3),
            memory: f.memory_size().unwrap_or(128),
            env,
            artifact_bucket: artifacts
                .get("ArtifactBucketName")
                .cloned()
                .unwrap_or_default(),
            artifact_key: deployment.artifact_key.clone(),
            region: config.home_region.clone(),
            dead_letter_target: f
                .dead_letter_config()
                .and_then(|d| d.target_arn())
                .map(str::to_owned),
        };
        Ok(Some(Wiring {
            security,
            deployment,
            queue_url,
            subscription_arn,
            mapped_queues,
            function,
        }))
    }
}

/// What becomes of a message the function failed on every try.
#[derive(Clone, Copy, PartialEq, Eq)]
enum OnFailure {
    /// The queue's redrive policy: the original message goes to the dead-letter queue.
    Redrive,
    /// An asynchronous invocation with a dead-letter target: the event goes there.
    DeadLetterEvent,
    /// An asynchronous invocation without one: dropped (`AsyncEventsDropped`).
    Drop,
}

/// Receives what is waiting on `queue` and invokes the function with each message's Lambda event.
/// Each message is settled on its own, as an event source mapping with partial batch responses
/// settles it: one the function names in `batchItemFailures`, or whose invocation fails, is tried
/// again and then dead-lettered, and a message the host cannot hand over is made visible again at
/// once. One message never holds up the others, nor leaves them invisible until the queue's
/// visibility timeout.
async fn deliver(
    w: &Wiring,
    runtime: &Runtime,
    sessions: &Sessions,
    state: &SandboxState,
    queue: &str,
    on_failure: OnFailure,
    event_for: impl Fn(&aws_sdk_sqs::types::Message) -> anyhow::Result<Value>,
) -> anyhow::Result<()> {
    let sqs = aws_sdk_sqs::Client::new(&w.security);
    let received = sqs
        .receive_message()
        .queue_url(queue)
        .max_number_of_messages(10)
        .wait_time_seconds(1)
        .message_system_attribute_names(
            aws_sdk_sqs::types::MessageSystemAttributeName::ApproximateReceiveCount,
        )
        .send()
        .await
        .described("sqs:ReceiveMessage")?;
    let counts = &runtime.deliveries;
    counts.count(queue, |c| c.in_flight += received.messages().len() as u64);
    // The batch's messages side by side, as many as there are environments.
    // (Built in a loop, not a closure: the poller's task must be `Send` for every lifetime.)
    let mut each = Vec::new();
    for message in received.messages() {
        let (sqs, event_for) = (&sqs, &event_for);
        each.push(async move {
            let settled = Box::pin(deliver_one(
                w, runtime, sessions, state, sqs, queue, on_failure, event_for, message,
            ))
            .await;
            (message, settled)
        });
    }
    let settled: Vec<(&aws_sdk_sqs::types::Message, anyhow::Result<()>)> =
        futures::stream::iter(each)
            .buffer_unordered(runtime.environments.len())
            .collect()
            .await;
    for (message, settled) in settled {
        counts.count(queue, |c| c.in_flight = c.in_flight.saturating_sub(1));
        if let Err(e) = settled {
            counts.count(queue, |c| c.host_errors += 1);
            tracing::error!(queue, message = message.message_id().unwrap_or_default(), error = %crate::exit::describe(&e), "cannot hand the message over: visible again for the next round");
            if let Some(handle) = message.receipt_handle() {
                let _ = sqs
                    .change_message_visibility()
                    .queue_url(queue)
                    .receipt_handle(handle)
                    .visibility_timeout(0)
                    .send()
                    .await;
            }
        }
    }
    counts.save();
    Ok(())
}

/// Whether the function's response names a message it failed on (`batchItemFailures`).
fn reports_failures(response: &str) -> bool {
    serde_json::from_str::<Value>(response).is_ok_and(|r| {
        r["batchItemFailures"]
            .as_array()
            .is_some_and(|f| !f.is_empty())
    })
}

#[allow(clippy::too_many_arguments)]
async fn deliver_one(
    w: &Wiring,
    runtime: &Runtime,
    sessions: &Sessions,
    state: &SandboxState,
    sqs: &aws_sdk_sqs::Client,
    queue: &str,
    on_failure: OnFailure,
    event_for: &impl Fn(&aws_sdk_sqs::types::Message) -> anyhow::Result<Value>,
    message: &aws_sdk_sqs::types::Message,
) -> anyhow::Result<()> {
    tracing::warn!(
        queue,
        message = message.message_id().unwrap_or_default(),
        "delivering to the responder"
    );
    let mut event = event_for(message)?;
    let received: u32 = message
        .attributes()
        .and_then(|a| {
            a.get(&aws_sdk_sqs::types::MessageSystemAttributeName::ApproximateReceiveCount)
        })
        .and_then(|c| c.parse().ok())
        .unwrap_or(1);
    let mut last_error = None;
    for attempt in 1..=3 {
        // Each try is a receive of its own on AWS: the function sees the count go up, as it
        // would there (a sweep's place counts itself as not swept on its last).
        if let Some(attributes) = event
            .pointer_mut("/Records/0/attributes")
            .and_then(Value::as_object_mut)
        {
            attributes.insert(
                "ApproximateReceiveCount".into(),
                json!((received + attempt - 1).to_string()),
            );
        }
        let environment = runtime.lease().await;
        runtime
            .ensure_function(environment.index, &w.function, &w.security, sessions, state)
            .await?;
        // `quell sandbox crash`: the first try may be killed part way through.
        let kill_after = runtime.chaos.draw(attempt == 1);
        let invoked = runtime
            .invoke(
                environment.index,
                &w.function,
                event.to_string(),
                kill_after,
            )
            .await;
        if matches!(&invoked, Err(e) if e.killed) {
            runtime.deliveries.count(queue, |c| c.killed += 1);
        }
        drop(environment);
        match invoked {
            Ok(response) if reports_failures(&response) => {
                tracing::warn!(
                    attempt,
                    "the function named the message in batchItemFailures"
                );
                last_error = Some(InvokeError {
                    request_id: String::new(),
                    message: "named in batchItemFailures".into(),
                    killed: false,
                });
            }
            Ok(_) => {
                last_error = None;
                break;
            }
            Err(e) => {
                tracing::warn!(attempt, error = %e, "invocation failed");
                last_error = Some(e);
            }
        }
        if attempt < 3 {
            runtime.deliveries.count(queue, |c| c.retried += 1);
        }
    }
    if let Some(error) = last_error {
        match on_failure {
            OnFailure::Redrive => {
                let body = Value::String(message.body().unwrap_or_default().to_owned());
                send_to_dead_letters(sqs, &w.deployment, &body, &error).await?;
                runtime.deliveries.count(queue, |c| c.dead_lettered += 1);
            }
            OnFailure::DeadLetterEvent => {
                send_to_dead_letters(sqs, &w.deployment, &event, &error).await?;
                runtime.deliveries.count(queue, |c| c.dead_lettered += 1);
            }
            OnFailure::Drop => {
                runtime.deliveries.count(queue, |c| c.dropped += 1);
                tracing::warn!(queue, error = %error, "dropped after every try: the function has no dead-letter queue for asynchronous invocations (AsyncEventsDropped)");
            }
        }
    } else {
        runtime.deliveries.count(queue, |c| c.delivered += 1);
    }
    if let Some(handle) = message.receipt_handle() {
        sqs.delete_message()
            .queue_url(queue)
            .receipt_handle(handle)
            .send()
            .await
            .described("sqs:DeleteMessage")?;
    }
    Ok(())
}

async fn send_to_dead_letters(
    sqs: &aws_sdk_sqs::Client,
    d: &Deployment,
    event: &Value,
    error: &InvokeError,
) -> anyhow::Result<()> {
    let url = deployment::queue_url(sqs, &d.dead_letter_queue).await?;
    let attr = |v: &str| {
        aws_sdk_sqs::types::MessageAttributeValue::builder()
            .data_type("String")
            .string_value(v)
            .build()
            .expect("set")
    };
    // A redriven message is moved as it was, as SQS's redrive moves it; an asynchronous
    // invocation's event is sent whole, with Lambda's error attributes.
    let send = sqs.send_message().queue_url(url);
    let send = match event {
        Value::String(original) => send.message_body(original),
        other => send
            .message_body(other.to_string())
            .message_attributes("RequestID", attr(&error.request_id))
            .message_attributes("ErrorCode", attr("200"))
            .message_attributes("ErrorMessage", attr(&error.message)),
    };
    send.send()
        .await
        .described("sqs:SendMessage (dead-letter queue)")?;
    Ok(())
}

/// The Lambda event for a message of a queue mapped to the function (an event source mapping).
pub fn sqs_lambda_event(m: &aws_sdk_sqs::types::Message, queue_arn: &str, region: &str) -> Value {
    json!({
        "Records": [{
            "messageId": m.message_id(),
            "receiptHandle": m.receipt_handle(),
            "body": m.body(),
            // moto stamps every message with one constant, made-up SenderId; AWS stamps the
            // sender's unique id. Passing moto's on would record an identity nobody had, so it
            // is left out, and the responder records the sender as unverified.
            "attributes": m.attributes().map(|a| a.iter().filter(|(k, _)| k.as_str() != "SenderId").map(|(k, v)| (k.as_str().to_owned(), v.clone())).collect::<HashMap<_, _>>()).unwrap_or_default(),
            "messageAttributes": {},
            "md5OfBody": m.md5_of_body(),
            "eventSource": "aws:sqs",
            "eventSourceARN": queue_arn,
            "awsRegion": region,
        }]
    })
}

/// The Lambda event for an SNS message that SQS received in SNS's JSON envelope.
pub fn sns_lambda_event(envelope: &str, subscription_arn: &str) -> anyhow::Result<Value> {
    let e: Value =
        serde_json::from_str(envelope).context("the queued message is not an SNS envelope")?;
    let field = |k: &str| e.get(k).cloned().unwrap_or(Value::Null);
    if field("Type") != json!("Notification") {
        bail!("the queued message is not an SNS notification");
    }
    let attributes = match field("MessageAttributes") {
        Value::Null => json!({}),
        other => other,
    };
    Ok(json!({
        "Records": [{
            "EventSource": "aws:sns",
            "EventVersion": "1.0",
            "EventSubscriptionArn": subscription_arn,
            "Sns": {
                "Type": "Notification",
                "MessageId": field("MessageId"),
                "TopicArn": field("TopicArn"),
                "Subject": field("Subject"),
                "Message": field("Message"),
                "Timestamp": field("Timestamp"),
                "SignatureVersion": field("SignatureVersion"),
                "Signature": field("Signature"),
                "SigningCertUrl": field("SigningCertURL"),
                "UnsubscribeUrl": field("UnsubscribeURL"),
                "MessageAttributes": attributes,
            }
        }]
    }))
}

#[derive(Debug)]
struct InvokeError {
    request_id: String,
    message: String,
    /// The host killed the process (`quell sandbox crash`).
    killed: bool,
}

impl std::fmt::Display for InvokeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (request {})", self.message, self.request_id)
    }
}

struct Invocation {
    id: String,
    body: String,
    deadline_ms: u128,
    function_arn: String,
}

/// Invocations handed to the function, by request id, waiting for its response or error.
type Waiting = Arc<Mutex<HashMap<String, oneshot::Sender<Result<String, String>>>>>;

/// The Runtime API servers and the function processes behind them: up to `environments` at
/// once, each handling one invocation at a time, as Lambda scales a function out.
struct Runtime {
    waiting: Waiting,
    environments: Vec<Mutex<Option<Running>>>,
    /// The environments no invocation holds now, and a permit for each.
    idle: std::sync::Mutex<Vec<usize>>,
    permits: tokio::sync::Semaphore,
    /// What was delivered, retried and dead-lettered, for `quell sandbox status`.
    deliveries: super::deliveries::Deliveries,
    chaos: super::crashes::Chaos,
}

/// One execution environment: the function process and its own Runtime API server. Each gets a
/// fresh server, so a killed process's pending `next` request cannot take an invocation with it.
struct Running {
    child: tokio::process::Child,
    spec: FunctionSpec,
    /// Where the function's SDK sends its calls (see [`responder_endpoint`]).
    endpoint: String,
    started: Instant,
    queue: mpsc::Sender<Invocation>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.server.abort();
    }
}

#[derive(Clone)]
struct ApiState {
    next: Arc<Mutex<mpsc::Receiver<Invocation>>>,
    waiting: Waiting,
    /// When the process was started, until its first request for work: its cold start.
    cold_start: Arc<std::sync::Mutex<Option<Instant>>>,
}

/// A file in the sandbox's directory that, when present, names where the function's AWS calls
/// go instead of the sandbox itself: the test suite's fault-injecting proxy, which adds AWS-like
/// latency, throttling, errors and dropped connections in front of it. Read before every
/// invocation; the function is restarted when it changes.
pub const RESPONDER_ENDPOINT_FILE: &str = "responder-endpoint";

fn responder_endpoint(state: &SandboxState) -> String {
    std::fs::read_to_string(sandbox_dir().join(RESPONDER_ENDPOINT_FILE))
        .ok()
        .map(|e| e.trim().to_owned())
        .filter(|e| !e.is_empty())
        .unwrap_or_else(|| state.endpoint.clone())
}

/// Assumed credentials last an hour in the sandbox: restart the function well before.
const CREDENTIAL_LIFETIME: Duration = Duration::from_secs(45 * 60);

/// An execution environment one invocation holds until this is dropped.
struct Lease<'a> {
    runtime: &'a Runtime,
    index: usize,
    _permit: tokio::sync::SemaphorePermit<'a>,
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        self.runtime
            .idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(self.index);
    }
}

impl Runtime {
    fn new(environments: usize) -> Runtime {
        Runtime {
            waiting: Arc::new(Mutex::new(HashMap::new())),
            environments: (0..environments).map(|_| Mutex::new(None)).collect(),
            idle: std::sync::Mutex::new((0..environments).collect()),
            permits: tokio::sync::Semaphore::new(environments),
            deliveries: super::deliveries::Deliveries::default(),
            chaos: super::crashes::Chaos::default(),
        }
    }

    /// Waits for an idle execution environment.
    async fn lease(&self) -> Lease<'_> {
        let permit = self
            .permits
            .acquire()
            .await
            .expect("the semaphore stays open");
        let index = self
            .idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .pop()
            .expect("a permit is an idle environment");
        Lease {
            runtime: self,
            index,
            _permit: permit,
        }
    }

    /// Starts a Runtime API server for one execution environment.
    async fn serve(
        &self,
    ) -> anyhow::Result<(
        String,
        mpsc::Sender<Invocation>,
        tokio::task::JoinHandle<()>,
    )> {
        let (tx, rx) = mpsc::channel(1);
        let api = ApiState {
            next: Arc::new(Mutex::new(rx)),
            waiting: self.waiting.clone(),
            cold_start: Arc::new(std::sync::Mutex::new(Some(Instant::now()))),
        };
        let app = Router::new()
            .route("/2018-06-01/runtime/invocation/next", get(next_invocation))
            .route(
                "/2018-06-01/runtime/invocation/{id}/response",
                post(invocation_response),
            )
            .route(
                "/2018-06-01/runtime/invocation/{id}/error",
                post(invocation_error),
            )
            .route("/2018-06-01/runtime/init/error", post(init_error))
            .with_state(api);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?.to_string();
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok((address, tx, server))
    }

    /// Makes sure environment `index` runs the function's current code with fresh credentials.
    async fn ensure_function(
        &self,
        index: usize,
        spec: &FunctionSpec,
        security: &SdkConfig,
        sessions: &Sessions,
        state: &SandboxState,
    ) -> anyhow::Result<()> {
        let endpoint = responder_endpoint(state);
        let mut process = self.environments[index].lock().await;
        if let Some(running) = process.as_mut() {
            let exited = running.child.try_wait()?.is_some();
            if !exited
                && running.spec == *spec
                && running.endpoint == endpoint
                && running.started.elapsed() < CREDENTIAL_LIFETIME
            {
                return Ok(());
            }
            let _ = running.child.kill().await;
        }
        let bootstrap = fetch_code(security, spec).await?;
        let role = sessions.assume(&spec.role, None).await?;
        let creds = aws_credential_types::provider::ProvideCredentials::provide_credentials(
            &role
                .credentials_provider()
                .context("assumed role without credentials")?,
        )
        .await?;
        let (address, queue, server) = self.serve().await?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(sandbox_dir().join("responder.log"))?;
        let mut cmd = tokio::process::Command::new(&bootstrap);
        cmd.env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("AWS_LAMBDA_RUNTIME_API", &address)
            .env("AWS_LAMBDA_FUNCTION_NAME", &spec.name)
            .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", spec.memory.to_string())
            .env(
                "AWS_LAMBDA_LOG_GROUP_NAME",
                format!("/aws/lambda/{}", spec.name),
            )
            .env(
                "AWS_REGION",
                security
                    .region()
                    .map(ToString::to_string)
                    .unwrap_or_default(),
            )
            .env(
                "AWS_DEFAULT_REGION",
                security
                    .region()
                    .map(ToString::to_string)
                    .unwrap_or_default(),
            )
            .env("AWS_ACCESS_KEY_ID", creds.access_key_id())
            .env("AWS_SECRET_ACCESS_KEY", creds.secret_access_key())
            .env(
                "AWS_SESSION_TOKEN",
                creds.session_token().unwrap_or_default(),
            )
            // The one difference from AWS: the SDK inside the function talks to the sandbox.
            .env("AWS_ENDPOINT_URL", &endpoint)
            .env("_HANDLER", "bootstrap")
            .env(
                "LAMBDA_TASK_ROOT",
                bootstrap.parent().unwrap_or(Path::new("/")),
            )
            .envs(spec.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            // moto's EventBridge delivers events without the envelope's `account` field, which
            // AWS always sets; the responder then takes the detail's account (and says so in
            // `Origin`). Only this host, never a template, tells it that.
            .env(
                quell_responder::settings::SANDBOX_ENVELOPES_WITHOUT_ACCOUNT,
                "1",
            )
            // moto has no real SenderId (see `sqs_lambda_event`): requests are recorded as
            // unverified rather than refused as unauthenticated.
            .env(
                quell_responder::settings::SANDBOX_REQUESTS_WITHOUT_SENDER_ID,
                "1",
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true);
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot start {}", bootstrap.display()))?;
        tracing::warn!(code = %spec.artifact_key, api = %address, "responder started");
        *process = Some(Running {
            child,
            spec: spec.clone(),
            endpoint,
            started: Instant::now(),
            queue,
            server,
        });
        Ok(())
    }

    async fn invoke(
        &self,
        index: usize,
        spec: &FunctionSpec,
        body: String,
        kill_after: Option<Duration>,
    ) -> Result<String, InvokeError> {
        let id = uuid::Uuid::new_v4().to_string();
        let fail = |message: String| InvokeError {
            request_id: id.clone(),
            message,
            killed: false,
        };
        let (tx, rx) = oneshot::channel();
        self.waiting.lock().await.insert(id.clone(), tx);
        let deadline = SystemTime::now() + Duration::from_secs(spec.timeout);
        let deadline_ms = deadline
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or_default();
        let queue = self.environments[index]
            .lock()
            .await
            .as_ref()
            .map(|r| r.queue.clone())
            .ok_or_else(|| fail("the function is not running".into()))?;
        queue
            .send(Invocation {
                id: id.clone(),
                body,
                deadline_ms,
                function_arn: spec.arn.clone(),
            })
            .await
            .map_err(|_| fail("runtime API closed".into()))?;
        let kill_at = kill_after.map(|after| tokio::time::Instant::now() + after);
        let outcome = tokio::time::timeout(Duration::from_secs(spec.timeout), async {
            let mut rx = rx;
            loop {
                tokio::select! {
                    r = &mut rx => return r
                        .unwrap_or_else(|_| Err("invocation dropped".into()))
                        .map_err(|e| (e, false)),
                    () = tokio::time::sleep_until(kill_at.unwrap_or_else(tokio::time::Instant::now)), if kill_at.is_some() => {
                        if let Some(running) = self.environments[index].lock().await.as_mut() {
                            let _ = running.child.kill().await;
                        }
                        return Err((format!(
                            "Runtime exited: killed {} ms into the invocation (quell sandbox crash)",
                            kill_after.unwrap_or_default().as_millis()
                        ), true));
                    }
                    () = tokio::time::sleep(Duration::from_millis(200)) => {
                        let mut process = self.environments[index].lock().await;
                        if let Some(running) = process.as_mut() {
                            if let Ok(Some(status)) = running.child.try_wait() {
                                return Err((format!("Runtime exited with {status}"), false));
                            }
                        }
                    }
                }
            }
        })
        .await;
        self.waiting.lock().await.remove(&id);
        match outcome {
            Ok(Ok(response)) => Ok(response),
            Ok(Err((error, killed))) => Err(InvokeError {
                killed,
                ..fail(error)
            }),
            Err(_) => {
                if let Some(running) = self.environments[index].lock().await.as_mut() {
                    let _ = running.child.kill().await;
                }
                Err(fail(format!(
                    "Task timed out after {} seconds",
                    spec.timeout
                )))
            }
        }
    }
}

/// Downloads and unpacks the function's package once per content address.
async fn fetch_code(security: &SdkConfig, spec: &FunctionSpec) -> anyhow::Result<PathBuf> {
    let digest = spec
        .artifact_key
        .rsplit('/')
        .next()
        .unwrap_or("code")
        .trim_end_matches(".zip");
    let dir = sandbox_dir().join("functions").join(digest);
    let bootstrap = dir.join("bootstrap");
    if bootstrap.exists() {
        return Ok(bootstrap);
    }
    let obj = aws_sdk_s3::Client::new(security)
        .get_object()
        .bucket(&spec.artifact_bucket)
        .key(&spec.artifact_key)
        .send()
        .await
        .described("s3:GetObject (responder package)")?;
    let bytes = obj.body.collect().await?.into_bytes();
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes.to_vec()))
        .context("the responder package is not a zip")?;
    let tmp = dir.with_extension("partial");
    let _ = std::fs::remove_dir_all(&tmp);
    archive
        .extract(&tmp)
        .context("cannot unpack the responder package")?;
    if !tmp.join("bootstrap").exists() {
        bail!("the responder package has no bootstrap at its root");
    }
    std::fs::rename(&tmp, &dir)?;
    Ok(bootstrap)
}

async fn next_invocation(State(api): State<ApiState>) -> impl IntoResponse {
    if let Some(started) = api.cold_start.lock().ok().and_then(|mut c| c.take()) {
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        tracing::warn!(
            startup_ms = format!("{ms:.1}"),
            "runtime ready: first request for work"
        );
    }
    let invocation = api.next.lock().await.recv().await;
    let Some(inv) = invocation else {
        return (StatusCode::GONE, HeaderMap::new(), String::new());
    };
    let mut headers = HeaderMap::new();
    let mut put = |k: &'static str, v: &str| {
        if let Ok(v) = HeaderValue::from_str(v) {
            headers.insert(k, v);
        }
    };
    put("lambda-runtime-aws-request-id", &inv.id);
    put("lambda-runtime-deadline-ms", &inv.deadline_ms.to_string());
    put("lambda-runtime-invoked-function-arn", &inv.function_arn);
    put(
        "lambda-runtime-trace-id",
        &format!(
            "Root=1-{:08x}-{}",
            inv.deadline_ms / 1000,
            &inv.id.replace('-', "")[..24]
        ),
    );
    put("content-type", "application/json");
    (StatusCode::OK, headers, inv.body)
}

async fn complete(api: &ApiState, id: &str, result: Result<String, String>) -> StatusCode {
    match api.waiting.lock().await.remove(id) {
        Some(tx) => {
            let _ = tx.send(result);
            StatusCode::ACCEPTED
        }
        None => StatusCode::NOT_FOUND,
    }
}

async fn invocation_response(
    State(api): State<ApiState>,
    UrlPath(id): UrlPath<String>,
    body: Bytes,
) -> StatusCode {
    complete(&api, &id, Ok(String::from_utf8_lossy(&body).into_owned())).await
}

async fn invocation_error(
    State(api): State<ApiState>,
    UrlPath(id): UrlPath<String>,
    body: Bytes,
) -> StatusCode {
    complete(&api, &id, Err(String::from_utf8_lossy(&body).into_owned())).await
}

async fn init_error(body: Bytes) -> StatusCode {
    tracing::error!(error = %String::from_utf8_lossy(&body), "the responder failed to initialise");
    StatusCode::ACCEPTED
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lambda_events::event::sns::SnsEvent;

    #[test]
    fn an_sqs_delivered_envelope_becomes_the_lambda_sns_event() {
        let envelope = r#"{"Type":"Notification","MessageId":"95df01b4-ee98-5cb9-9903-4c221d41eb5e","TopicArn":"arn:aws:sns:us-east-1:222233334444:quell-containment","Subject":null,"Message":"{\"x\":1}","Timestamp":"2026-11-22T10:00:00.000Z","SignatureVersion":"1","Signature":"EXAMPLE","SigningCertURL":"https://sns.us-east-1.amazonaws.com/cert.pem","UnsubscribeURL":"https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe","MessageAttributes":{"ExternalId":{"Type":"String","Value":"abc"}}}"#;
        let event = sns_lambda_event(
            envelope,
            "arn:aws:sns:us-east-1:222233334444:quell-containment:sub",
        )
        .unwrap();
        let parsed: SnsEvent = serde_json::from_value(event).unwrap();
        let record = &parsed.records[0];
        assert_eq!(record.event_source, "aws:sns");
        assert_eq!(
            record.sns.message_id,
            "95df01b4-ee98-5cb9-9903-4c221d41eb5e"
        );
        assert_eq!(record.sns.message, "{\"x\":1}");
        assert_eq!(
            record.sns.signing_cert_url,
            "https://sns.us-east-1.amazonaws.com/cert.pem"
        );
        assert_eq!(record.sns.message_attributes["ExternalId"].value, "abc");
    }

    #[test]
    fn other_messages_are_refused() {
        assert!(sns_lambda_event("not json", "s").is_err());
        assert!(sns_lambda_event(r#"{"Type":"SubscriptionConfirmation"}"#, "s").is_err());
    }
}
