//! The engine against the real SDK clients with aws-smithy-mocks behind them: what moto cannot show.
//! A small in-memory world answers the calls (the ledger table, one IAM user, role and function),
//! and failures are injected into chosen operations to see what the ledger, the audit topic and the
//! dead-letter queue say, and that sending the request again completes it.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use aws_smithy_mocks::{mock, mock_client, MockResponse, Rule, RuleMode};
use aws_smithy_types::error::ErrorMetadata;
use quell_responder::clients::{Clients, MemberClients};
use quell_responder::ledger::{Record, Status, StepStatus};
use quell_responder::settings::Settings;
use quell_responder::Responder;
use serde_json::{json, Value};

#[path = "mocked/authorization.rs"]
mod authorization;
#[path = "mocked/isolation.rs"]
mod isolation;
#[path = "mocked/playbooks.rs"]
mod playbooks;
#[path = "mocked/runs.rs"]
mod runs;
#[path = "mocked/trust.rs"]
mod trust;

const ACCOUNT: &str = "111122223333";
const EXTERNAL_ID: &str = "message-secret";

type Item = HashMap<String, aws_sdk_dynamodb::types::AttributeValue>;

#[derive(Default)]
struct Principal {
    attached: Vec<String>,
    inline: HashMap<String, String>,
}

/// Everything the fake AWS knows, and the failures it has been told to answer with.
#[derive(Default)]
struct World {
    ledger: HashMap<String, Item>,
    published: Vec<Value>,
    dead_letters: Vec<String>,
    /// Every message sent to any queue: (queue URL, body), and the delay each asked for.
    queued: Vec<(String, String)>,
    delays: Vec<i32>,
    /// The ledger record of each isolation message's request, as it was when the message went out.
    record_when_isolation_sent: Vec<Option<String>>,
    /// EventBridge Scheduler's schedules, as created.
    schedules: Vec<aws_sdk_scheduler::operation::create_schedule::CreateScheduleInput>,
    user: Principal,
    keys: Vec<(String, String)>,
    login: bool,
    role: Principal,
    execution_role: Principal,
    concurrency: Option<i32>,
    /// EBS snapshots of the member account, and finding updates sent to Security Hub.
    snapshots: HashMap<String, playbooks::Snap>,
    finding_updates: Vec<playbooks::FindingUpdate>,
    /// The member instance's tags, as EC2 has them.
    instance_tags: HashMap<String, String>,
    /// Operation name -> error codes to answer with, one per call, before answering normally.
    failures: HashMap<&'static str, VecDeque<&'static str>>,
    calls: HashMap<&'static str, usize>,
    /// The same calls, in the order they were made.
    sequence: Vec<&'static str>,
}

type Shared = Arc<Mutex<World>>;

impl World {
    /// Counts the call and returns the injected error code for it, if one is due.
    fn call(&mut self, op: &'static str) -> Option<&'static str> {
        *self.calls.entry(op).or_default() += 1;
        self.sequence.push(op);
        self.failures.get_mut(op).and_then(VecDeque::pop_front)
    }
}

fn meta(code: &str) -> ErrorMetadata {
    ErrorMetadata::builder()
        .code(code)
        .message(format!("injected {code}"))
        .build()
}

/// IAM answers GetUserPolicy and GetRolePolicy with the document URL-encoded.
fn url_encoded(doc: &str) -> String {
    percent_encoding::utf8_percent_encode(doc, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// The tags a request's tag specifications carry.
fn requested_tags(
    specs: &[aws_sdk_ec2::types::TagSpecification],
) -> impl Iterator<Item = (String, String)> + '_ {
    specs
        .iter()
        .flat_map(aws_sdk_ec2::types::TagSpecification::tags)
        .map(|t| {
            (
                t.key().unwrap_or_default().to_owned(),
                t.value().unwrap_or_default().to_owned(),
            )
        })
}

fn settings() -> Settings {
    settings_with(&[])
}

/// The settings, with some variables added or replaced.
fn settings_with(extra: &[(&str, &str)]) -> Settings {
    let mut env: HashMap<&str, &str> = HashMap::from([
        ("QUELL_LEDGER_TABLE", "quell-ledger"),
        (
            "QUELL_AUDIT_TOPIC_ARN",
            "arn:aws:sns:us-east-1:222233334444:quell-audit",
        ),
        (
            "QUELL_SECRET_ARN",
            "arn:aws:secretsmanager:us-east-1:222233334444:secret:quell/external-ids",
        ),
        ("QUELL_MEMBER_ROLE_NAME", "quell-responder"),
        (
            "QUELL_ORG_READER_ROLE_ARN",
            "arn:aws:iam::999988887777:role/quell-org-reader",
        ),
        ("QUELL_ORGANIZATION_ID", "o-exampleorgid"),
        ("QUELL_NAME_PREFIX", "quell"),
        ("QUELL_PROTECTED_PRINCIPALS", "[]"),
        (
            "QUELL_ISOLATION_QUEUE_URL",
            "https://sqs.us-east-1.amazonaws.com/222233334444/quell-isolation",
        ),
        (
            "QUELL_ISOLATION_QUEUE_ARN",
            "arn:aws:sqs:us-east-1:222233334444:quell-isolation",
        ),
        ("QUELL_ISOLATION_WAIT_SECONDS", "0"),
        ("QUELL_SECURITY_ACCOUNT", "222233334444"),
        ("QUELL_HOME_REGION", "us-east-1"),
        ("QUELL_REGIONS", r#"["us-east-1","eu-west-1"]"#),
        // Every kind through the ExternalId topic too, and self-approval allowed: the tests of
        // containment and playbooks send through the topic; `authorization` tests tighten this.
        ("QUELL_AUTHORIZATION", authorization::PERMISSIVE),
        (
            "QUELL_DLQ_URL",
            "https://sqs.us-east-1.amazonaws.com/222233334444/quell-responder-dlq",
        ),
        (
            "QUELL_DLQ_ARN",
            "arn:aws:sqs:us-east-1:222233334444:quell-responder-dlq",
        ),
        ("QUELL_TIMER_GROUP", "quell-timers"),
        (
            "QUELL_SWEEP_QUEUE_URL",
            "https://sqs.us-east-1.amazonaws.com/222233334444/quell-sweep",
        ),
        (
            "QUELL_SWEEP_QUEUE_ARN",
            "arn:aws:sqs:us-east-1:222233334444:quell-sweep",
        ),
        ("QUELL_FUNCTION_TIMEOUT_SECONDS", "120"),
        (
            "QUELL_TIMER_ROLE_ARN",
            "arn:aws:iam::222233334444:role/quell-timers",
        ),
    ]);
    env.extend(extra.iter().copied());
    Settings::from_lookup(|k| env.get(k).map(|v| (*v).to_owned())).expect("settings")
}

// ---- the security account's services -------------------------------------------------------

fn dynamodb(w: &Shared) -> aws_sdk_dynamodb::Client {
    use aws_sdk_dynamodb::operation::{delete_item::*, get_item::*, put_item::*, query::*};
    let text = |item: &Item, k: &str| item.get(k).and_then(|v| v.as_s().ok()).cloned();
    let get = {
        let w = w.clone();
        mock!(aws_sdk_dynamodb::Client::get_item).then_compute_output(move |req| {
            let key = req
                .key()
                .and_then(|k| k.get("request_id"))
                .and_then(|v| v.as_s().ok())
                .cloned()
                .unwrap_or_default();
            GetItemOutput::builder()
                .set_item(w.lock().unwrap().ledger.get(&key).cloned())
                .build()
        })
    };
    let put = {
        let w = w.clone();
        mock!(aws_sdk_dynamodb::Client::put_item).then_compute_response(move |req| {
            let item = req.item().cloned().unwrap_or_default();
            let key = text(&item, "request_id").unwrap_or_default();
            let mut world = w.lock().unwrap();
            let existing = world.ledger.get(&key).cloned();
            let values = req
                .expression_attribute_values()
                .cloned()
                .unwrap_or_default();
            let value = |k: &str| values.get(k).and_then(|x| x.as_s().ok()).cloned();
            // The ledger's own conditions, evaluated as DynamoDB would.
            let allowed = match req.condition_expression() {
                None => true,
                Some("attribute_not_exists(request_id)") => existing.is_none(),
                Some("updated_at = :seen") => {
                    existing.as_ref().and_then(|e| text(e, "updated_at")) == value(":seen")
                }
                Some(c) if c.starts_with("attribute_not_exists(request_id) OR #o = :me") => {
                    match &existing {
                        None => true,
                        Some(e) => {
                            text(e, "owner") == value(":me")
                                || text(e, "expires_at") < value(":now")
                        }
                    }
                }
                Some(other) => panic!("condition the fake does not know: {other}"),
            };
            if !allowed {
                // With its code, as the SDK parses it from DynamoDB's answer.
                return MockResponse::Error(PutItemError::ConditionalCheckFailedException(
                    aws_sdk_dynamodb::types::error::ConditionalCheckFailedException::builder()
                        .message("condition")
                        .meta(meta("ConditionalCheckFailedException"))
                        .build(),
                ));
            }
            world.call("PutItem");
            world.ledger.insert(key, item);
            MockResponse::Output(PutItemOutput::builder().build())
        })
    };
    let delete = {
        let w = w.clone();
        mock!(aws_sdk_dynamodb::Client::delete_item).then_compute_output(move |req| {
            let key = req
                .key()
                .and_then(|k| k.get("request_id"))
                .and_then(|v| v.as_s().ok())
                .cloned()
                .unwrap_or_default();
            w.lock().unwrap().ledger.remove(&key);
            DeleteItemOutput::builder().build()
        })
    };
    let query = {
        let w = w.clone();
        mock!(aws_sdk_dynamodb::Client::query).then_compute_output(move |req| {
            let entity = req
                .expression_attribute_values()
                .and_then(|v| v.get(":e"))
                .and_then(|v| v.as_s().ok())
                .cloned();
            let mut items: Vec<Item> = w
                .lock()
                .unwrap()
                .ledger
                .values()
                .filter(|i| text(i, "entity") == entity)
                .cloned()
                .collect();
            items.sort_by_key(|i| std::cmp::Reverse(text(i, "received_at")));
            QueryOutput::builder().set_items(Some(items)).build()
        })
    };
    mock_client!(
        aws_sdk_dynamodb,
        RuleMode::MatchAny,
        &[&get, &put, &delete, &query]
    )
}

fn sns(w: &Shared) -> aws_sdk_sns::Client {
    let w = w.clone();
    let publish = mock!(aws_sdk_sns::Client::publish).then_compute_response(move |req| {
        let mut world = w.lock().unwrap();
        if let Some(code) = world.call("Publish") {
            return MockResponse::Error(aws_sdk_sns::operation::publish::PublishError::generic(
                meta(code),
            ));
        }
        let outer: Value =
            serde_json::from_str(req.message().unwrap_or_default()).unwrap_or_default();
        let doc: Value =
            serde_json::from_str(outer["default"].as_str().unwrap_or_default()).unwrap_or_default();
        world.published.push(doc);
        MockResponse::Output(
            aws_sdk_sns::operation::publish::PublishOutput::builder()
                .message_id("audit")
                .build(),
        )
    });
    mock_client!(aws_sdk_sns, RuleMode::MatchAny, &[&publish])
}

fn sqs(w: &Shared) -> aws_sdk_sqs::Client {
    let w = w.clone();
    let send = mock!(aws_sdk_sqs::Client::send_message).then_compute_response(move |req| {
        let body = req.message_body().unwrap_or_default().to_owned();
        let mut world = w.lock().unwrap();
        if req.queue_url().is_some_and(|u| u.ends_with("-isolation")) {
            if let Some(code) = world.call("SendMessageIsolation") {
                return MockResponse::Error(
                    aws_sdk_sqs::operation::send_message::SendMessageError::generic(meta(code)),
                );
            }
            let request = serde_json::from_str::<Value>(&body)
                .ok()
                .and_then(|b| b["request_id"].as_str().map(str::to_owned));
            if let Some(request) = request {
                let seen = world
                    .ledger
                    .get(&request)
                    .and_then(|item| item.get("record")?.as_s().ok().cloned());
                world.record_when_isolation_sent.push(seen);
            }
        }
        if req.queue_url().is_some_and(|u| u.ends_with("-dlq")) {
            world.dead_letters.push(body.clone());
        }
        world
            .queued
            .push((req.queue_url().unwrap_or_default().to_owned(), body));
        world.delays.push(req.delay_seconds().unwrap_or(0));
        MockResponse::Output(
            aws_sdk_sqs::operation::send_message::SendMessageOutput::builder()
                .message_id("m")
                .build(),
        )
    });
    mock_client!(aws_sdk_sqs, RuleMode::MatchAny, &[&send])
}

/// EventBridge Scheduler: keeps what it is asked to schedule, and refuses a name already in the
/// group with ConflictException, as Scheduler does.
fn scheduler(w: &Shared) -> aws_sdk_scheduler::Client {
    use aws_sdk_scheduler::operation::create_schedule::*;
    let w = w.clone();
    let create =
        mock!(aws_sdk_scheduler::Client::create_schedule).then_compute_response(move |req| {
            let mut world = w.lock().unwrap();
            let code = world.call("CreateSchedule");
            let taken = world
                .schedules
                .iter()
                .any(|s| s.group_name() == req.group_name() && s.name() == req.name());
            if let Some(code) = code.or(taken.then_some("ConflictException")) {
                let meta = meta(code);
                return MockResponse::Error(if code == "ConflictException" {
                    CreateScheduleError::ConflictException(
                        aws_sdk_scheduler::types::error::ConflictException::builder()
                            .message("schedule exists")
                            .meta(meta)
                            .build()
                            .unwrap(),
                    )
                } else {
                    CreateScheduleError::generic(meta)
                });
            }
            world.schedules.push(req.clone());
            MockResponse::Output(
                CreateScheduleOutput::builder()
                    .schedule_arn(format!(
                        "arn:aws:scheduler:us-east-1:222233334444:schedule/{}/{}",
                        req.group_name().unwrap_or("default"),
                        req.name().unwrap_or_default()
                    ))
                    .build()
                    .unwrap(),
            )
        });
    mock_client!(aws_sdk_scheduler, RuleMode::MatchAny, &[&create])
}

fn secrets() -> aws_sdk_secretsmanager::Client {
    let get = mock!(aws_sdk_secretsmanager::Client::get_secret_value).then_output(|| {
        aws_sdk_secretsmanager::operation::get_secret_value::GetSecretValueOutput::builder()
            .secret_string(
                json!({"message_external_id": EXTERNAL_ID, "role_external_id": "role-secret"})
                    .to_string(),
            )
            .build()
    });
    mock_client!(aws_sdk_secretsmanager, RuleMode::MatchAny, &[&get])
}

fn sts() -> aws_sdk_sts::Client {
    let assume = mock!(aws_sdk_sts::Client::assume_role).then_output(|| {
        let expires = aws_smithy_types::DateTime::from_secs(
            i64::try_from(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_secs(),
            )
            .unwrap()
                + 900,
        );
        aws_sdk_sts::operation::assume_role::AssumeRoleOutput::builder()
            .credentials(
                aws_sdk_sts::types::Credentials::builder()
                    .access_key_id("AKIA")
                    .secret_access_key("s")
                    .session_token("t")
                    .expiration(expires)
                    .build()
                    .unwrap(),
            )
            .build()
    });
    mock_client!(aws_sdk_sts, RuleMode::MatchAny, &[&assume])
}

// ---- the member account ------------------------------------------------------------------------

macro_rules! iam_rule {
    ($w:expr, $op:ident, $name:literal, $err:ty, |$world:ident, $req:ident| $body:expr) => {{
        let w = $w.clone();
        mock!(aws_sdk_iam::Client::$op).then_compute_response(move |$req| {
            let mut $world = w.lock().unwrap();
            if let Some(code) = $world.call($name) {
                return MockResponse::Error(<$err>::generic(meta(code)));
            }
            $body
        })
    }};
}

/// `first`: rules that answer before the world does (the mocks cannot compute answers on retries).
fn iam(w: &Shared, first: Vec<Rule>) -> aws_sdk_iam::Client {
    use aws_sdk_iam::operation::{
        attach_role_policy::*, attach_user_policy::*, delete_login_profile::*,
        delete_role_policy::*, delete_user_policy::*, detach_role_policy::*, detach_user_policy::*,
        get_login_profile::*, get_role::*, get_role_policy::*, get_user::*, get_user_policy::*,
        list_access_keys::*, list_attached_role_policies::*, list_attached_user_policies::*,
        list_roles::*, put_role_policy::*, put_user_policy::*, update_access_key::*,
    };
    use aws_sdk_iam::types::{
        AccessKeyMetadata, AttachedPolicy, LoginProfile, Role, StatusType, User,
    };
    let now = aws_smithy_types::DateTime::from_secs(1_700_000_000);
    let rules: Vec<Rule> = first
        .into_iter()
        .chain([
            iam_rule!(w, get_user, "GetUser", GetUserError, |world, _req| {
                let _ = &world;
                MockResponse::Output(
                    GetUserOutput::builder()
                        .user(
                            User::builder()
                                .path("/")
                                .user_name("alice")
                                .user_id("AIDA")
                                .arn(format!("arn:aws:iam::{ACCOUNT}:user/alice"))
                                .create_date(now)
                                .build()
                                .unwrap(),
                        )
                        .build(),
                )
            }),
            iam_rule!(w, get_role, "GetRole", GetRoleError, |world, req| {
                let _ = &world;
                MockResponse::Output(
                    GetRoleOutput::builder()
                        .role(
                            Role::builder()
                                .path("/")
                                .role_name(req.role_name().unwrap_or_default())
                                .role_id("AROA")
                                .arn(format!("arn:aws:iam::{ACCOUNT}:role/app"))
                                .create_date(now)
                                .build()
                                .unwrap(),
                        )
                        .build(),
                )
            }),
            // The member account's roles: a workload's, Quell's own and a service-linked one.
            iam_rule!(w, list_roles, "ListRoles", ListRolesError, |world, _req| {
                let _ = &world;
                let role = |path: &str, name: &str| {
                    Role::builder()
                        .path(path)
                        .role_name(name)
                        .role_id("AROA")
                        .arn(format!("arn:aws:iam::{ACCOUNT}:role{path}{name}"))
                        .create_date(now)
                        .build()
                        .unwrap()
                };
                MockResponse::Output(
                    ListRolesOutput::builder()
                        .roles(role("/", "app"))
                        .roles(role("/", "quell-responder"))
                        .roles(role(
                            "/aws-service-role/config.amazonaws.com/",
                            "AWSServiceRoleForConfig",
                        ))
                        .build()
                        .unwrap(),
                )
            }),
            iam_rule!(
                w,
                list_attached_user_policies,
                "ListAttachedUserPolicies",
                ListAttachedUserPoliciesError,
                |world, _req| {
                    MockResponse::Output(
                        ListAttachedUserPoliciesOutput::builder()
                            .set_attached_policies(Some(
                                world
                                    .user
                                    .attached
                                    .iter()
                                    .map(|a| AttachedPolicy::builder().policy_arn(a).build())
                                    .collect(),
                            ))
                            .build(),
                    )
                }
            ),
            iam_rule!(
                w,
                list_attached_role_policies,
                "ListAttachedRolePolicies",
                ListAttachedRolePoliciesError,
                |world, _req| {
                    MockResponse::Output(
                        ListAttachedRolePoliciesOutput::builder()
                            .set_attached_policies(Some(
                                world
                                    .role
                                    .attached
                                    .iter()
                                    .map(|a| AttachedPolicy::builder().policy_arn(a).build())
                                    .collect(),
                            ))
                            .build(),
                    )
                }
            ),
            iam_rule!(
                w,
                attach_user_policy,
                "AttachUserPolicy",
                AttachUserPolicyError,
                |world, req| {
                    world
                        .user
                        .attached
                        .push(req.policy_arn().unwrap_or_default().to_owned());
                    MockResponse::Output(AttachUserPolicyOutput::builder().build())
                }
            ),
            iam_rule!(
                w,
                attach_role_policy,
                "AttachRolePolicy",
                AttachRolePolicyError,
                |world, req| {
                    world
                        .role
                        .attached
                        .push(req.policy_arn().unwrap_or_default().to_owned());
                    MockResponse::Output(AttachRolePolicyOutput::builder().build())
                }
            ),
            iam_rule!(
                w,
                get_user_policy,
                "GetUserPolicy",
                GetUserPolicyError,
                |world, req| {
                    match world.user.inline.get(req.policy_name().unwrap_or_default()) {
                        Some(doc) => MockResponse::Output(
                            GetUserPolicyOutput::builder()
                                .user_name("alice")
                                .policy_name(req.policy_name().unwrap_or_default())
                                .policy_document(url_encoded(doc))
                                .build()
                                .unwrap(),
                        ),
                        None => {
                            MockResponse::Error(GetUserPolicyError::generic(meta("NoSuchEntity")))
                        }
                    }
                }
            ),
            iam_rule!(
                w,
                get_role_policy,
                "GetRolePolicy",
                GetRolePolicyError,
                |world, req| {
                    let role = if req.role_name() == Some("app") {
                        &world.role
                    } else {
                        &world.execution_role
                    };
                    match role.inline.get(req.policy_name().unwrap_or_default()) {
                        Some(doc) => MockResponse::Output(
                            GetRolePolicyOutput::builder()
                                .role_name(req.role_name().unwrap_or_default())
                                .policy_name(req.policy_name().unwrap_or_default())
                                .policy_document(url_encoded(doc))
                                .build()
                                .unwrap(),
                        ),
                        None => {
                            MockResponse::Error(GetRolePolicyError::generic(meta("NoSuchEntity")))
                        }
                    }
                }
            ),
            iam_rule!(
                w,
                put_user_policy,
                "PutUserPolicy",
                PutUserPolicyError,
                |world, req| {
                    world.user.inline.insert(
                        req.policy_name().unwrap_or_default().to_owned(),
                        req.policy_document().unwrap_or_default().to_owned(),
                    );
                    MockResponse::Output(PutUserPolicyOutput::builder().build())
                }
            ),
            iam_rule!(
                w,
                detach_user_policy,
                "DetachUserPolicy",
                DetachUserPolicyError,
                |world, req| {
                    let arn = req.policy_arn().unwrap_or_default().to_owned();
                    world.user.attached.retain(|a| *a != arn);
                    MockResponse::Output(DetachUserPolicyOutput::builder().build())
                }
            ),
            iam_rule!(
                w,
                delete_user_policy,
                "DeleteUserPolicy",
                DeleteUserPolicyError,
                |world, req| {
                    world
                        .user
                        .inline
                        .remove(req.policy_name().unwrap_or_default());
                    MockResponse::Output(DeleteUserPolicyOutput::builder().build())
                }
            ),
            iam_rule!(
                w,
                detach_role_policy,
                "DetachRolePolicy",
                DetachRolePolicyError,
                |world, req| {
                    let arn = req.policy_arn().unwrap_or_default().to_owned();
                    world.role.attached.retain(|a| *a != arn);
                    MockResponse::Output(DetachRolePolicyOutput::builder().build())
                }
            ),
            iam_rule!(
                w,
                delete_role_policy,
                "DeleteRolePolicy",
                DeleteRolePolicyError,
                |world, req| {
                    world
                        .role
                        .inline
                        .remove(req.policy_name().unwrap_or_default());
                    MockResponse::Output(DeleteRolePolicyOutput::builder().build())
                }
            ),
            iam_rule!(
                w,
                put_role_policy,
                "PutRolePolicy",
                PutRolePolicyError,
                |world, req| {
                    let role = if req.role_name() == Some("app") {
                        &mut world.role
                    } else {
                        &mut world.execution_role
                    };
                    role.inline.insert(
                        req.policy_name().unwrap_or_default().to_owned(),
                        req.policy_document().unwrap_or_default().to_owned(),
                    );
                    MockResponse::Output(PutRolePolicyOutput::builder().build())
                }
            ),
            iam_rule!(
                w,
                list_access_keys,
                "ListAccessKeys",
                ListAccessKeysError,
                |world, _req| {
                    let keys = world
                        .keys
                        .iter()
                        .map(|(id, st)| {
                            AccessKeyMetadata::builder()
                                .access_key_id(id)
                                .status(StatusType::from(st.as_str()))
                                .build()
                        })
                        .collect();
                    MockResponse::Output(
                        ListAccessKeysOutput::builder()
                            .set_access_key_metadata(Some(keys))
                            .build()
                            .unwrap(),
                    )
                }
            ),
            iam_rule!(
                w,
                update_access_key,
                "UpdateAccessKey",
                UpdateAccessKeyError,
                |world, req| {
                    let id = req.access_key_id().unwrap_or_default().to_owned();
                    let status = req
                        .status()
                        .map(|s| s.as_str().to_owned())
                        .unwrap_or_default();
                    for k in &mut world.keys {
                        if k.0 == id {
                            k.1.clone_from(&status);
                        }
                    }
                    MockResponse::Output(UpdateAccessKeyOutput::builder().build())
                }
            ),
            iam_rule!(
                w,
                get_login_profile,
                "GetLoginProfile",
                GetLoginProfileError,
                |world, _req| {
                    if world.login {
                        MockResponse::Output(
                            GetLoginProfileOutput::builder()
                                .login_profile(
                                    LoginProfile::builder()
                                        .user_name("alice")
                                        .create_date(now)
                                        .build()
                                        .unwrap(),
                                )
                                .build(),
                        )
                    } else {
                        MockResponse::Error(GetLoginProfileError::generic(meta("NoSuchEntity")))
                    }
                }
            ),
            iam_rule!(
                w,
                delete_login_profile,
                "DeleteLoginProfile",
                DeleteLoginProfileError,
                |world, _req| {
                    world.login = false;
                    MockResponse::Output(DeleteLoginProfileOutput::builder().build())
                }
            ),
        ])
        .collect();
    let refs: Vec<&Rule> = rules.iter().collect();
    mock_client!(aws_sdk_iam, RuleMode::MatchAny, refs)
}

fn lambda(w: &Shared) -> aws_sdk_lambda::Client {
    use aws_sdk_lambda::operation::{
        get_function_concurrency::*, get_function_configuration::*, list_functions::*,
        list_tags::*, put_function_concurrency::*,
    };
    let config = mock!(aws_sdk_lambda::Client::get_function_configuration).then_output(|| {
        GetFunctionConfigurationOutput::builder()
            .function_name("orders")
            .function_arn(format!(
                "arn:aws:lambda:us-east-1:{ACCOUNT}:function:orders"
            ))
            .role(format!("arn:aws:iam::{ACCOUNT}:role/orders-role"))
            .build()
    });
    // The function is exempted by its tag: only a declared playbook's scope reads it.
    let tags = mock!(aws_sdk_lambda::Client::list_tags).then_output(|| {
        ListTagsOutput::builder()
            .tags("quell:exempt", "payments freeze, CHG-88")
            .build()
    });
    let list = mock!(aws_sdk_lambda::Client::list_functions).then_output(|| {
        ListFunctionsOutput::builder()
            .functions(
                aws_sdk_lambda::types::FunctionConfiguration::builder()
                    .function_name("orders")
                    .role(format!("arn:aws:iam::{ACCOUNT}:role/orders-role"))
                    .build(),
            )
            .build()
    });
    let get = {
        let w = w.clone();
        mock!(aws_sdk_lambda::Client::get_function_concurrency).then_compute_output(move |_| {
            GetFunctionConcurrencyOutput::builder()
                .set_reserved_concurrent_executions(w.lock().unwrap().concurrency)
                .build()
        })
    };
    let put = {
        let w = w.clone();
        mock!(aws_sdk_lambda::Client::put_function_concurrency).then_compute_response(move |req| {
            let mut world = w.lock().unwrap();
            if let Some(code) = world.call("PutFunctionConcurrency") {
                return MockResponse::Error(PutFunctionConcurrencyError::generic(meta(code)));
            }
            world.concurrency = req.reserved_concurrent_executions();
            MockResponse::Output(
                PutFunctionConcurrencyOutput::builder()
                    .set_reserved_concurrent_executions(world.concurrency)
                    .build(),
            )
        })
    };
    mock_client!(
        aws_sdk_lambda,
        RuleMode::MatchAny,
        &[&config, &tags, &list, &get, &put]
    )
}

fn organizations() -> aws_sdk_organizations::Client {
    let describe = mock!(aws_sdk_organizations::Client::describe_account).then_output(|| {
        aws_sdk_organizations::operation::describe_account::DescribeAccountOutput::builder().build()
    });
    mock_client!(aws_sdk_organizations, RuleMode::MatchAny, &[&describe])
}

fn responder(w: &Shared) -> Responder {
    responder_with(w, Vec::new())
}

/// An instance in a VPC where the responder may not create security groups.
fn ec2_without_group_creation(w: &Shared) -> aws_sdk_ec2::Client {
    ec2_instance(w, None)
}

/// An instance (with the instance profile `profile`, if any) in a VPC where the responder may
/// not create security groups.
fn ec2_instance(w: &Shared, profile: Option<&'static str>) -> aws_sdk_ec2::Client {
    use aws_sdk_ec2::operation::{
        create_security_group::*, create_tags::*, describe_instance_attribute::*,
        describe_instances::*, describe_network_interfaces::*, describe_security_groups::*,
        modify_instance_attribute::*,
    };
    use aws_sdk_ec2::types::{
        AttributeBooleanValue, AttributeValue, GroupIdentifier, Instance, InstanceNetworkInterface,
        NetworkInterface, Reservation,
    };
    let instances = mock!(aws_sdk_ec2::Client::describe_instances).then_output(move || {
        DescribeInstancesOutput::builder()
            .reservations(
                Reservation::builder()
                    .instances(
                        Instance::builder()
                            .instance_id("i-0123456789abcdef0")
                            .vpc_id("vpc-1")
                            .set_iam_instance_profile(profile.map(|arn| {
                                aws_sdk_ec2::types::IamInstanceProfile::builder()
                                    .arn(arn)
                                    .build()
                            }))
                            .network_interfaces(
                                InstanceNetworkInterface::builder()
                                    .network_interface_id("eni-1")
                                    .build(),
                            )
                            .build(),
                    )
                    .build(),
            )
            .build()
    });
    let enis = mock!(aws_sdk_ec2::Client::describe_network_interfaces).then_output(|| {
        DescribeNetworkInterfacesOutput::builder()
            .network_interfaces(
                NetworkInterface::builder()
                    .network_interface_id("eni-1")
                    .groups(GroupIdentifier::builder().group_id("sg-web").build())
                    .build(),
            )
            .build()
    });
    let attribute = mock!(aws_sdk_ec2::Client::describe_instance_attribute).then_output(|| {
        DescribeInstanceAttributeOutput::builder()
            .disable_api_termination(AttributeBooleanValue::builder().value(false).build())
            .instance_initiated_shutdown_behavior(
                AttributeValue::builder().value("terminate").build(),
            )
            .build()
    });
    let modify = {
        let w = w.clone();
        mock!(aws_sdk_ec2::Client::modify_instance_attribute).then_compute_output(move |_| {
            w.lock().unwrap().call("ModifyInstanceAttribute");
            ModifyInstanceAttributeOutput::builder().build()
        })
    };
    let tags =
        mock!(aws_sdk_ec2::Client::create_tags).then_output(|| CreateTagsOutput::builder().build());
    let groups = mock!(aws_sdk_ec2::Client::describe_security_groups)
        .then_output(|| DescribeSecurityGroupsOutput::builder().build());
    let create = {
        let w = w.clone();
        mock!(aws_sdk_ec2::Client::create_security_group).then_compute_response(move |_| {
            w.lock().unwrap().call("CreateSecurityGroup");
            MockResponse::Error(CreateSecurityGroupError::generic(meta(
                "UnauthorizedOperation",
            )))
        })
    };
    mock_client!(
        aws_sdk_ec2,
        RuleMode::MatchAny,
        &[&instances, &enis, &attribute, &modify, &tags, &groups, &create]
    )
}

fn responder_with(w: &Shared, first_iam: Vec<Rule>) -> Responder {
    responder_with_ec2(
        w,
        first_iam,
        mock_client!(aws_sdk_ec2, RuleMode::MatchAny, &[]),
    )
}

fn responder_with_ec2(w: &Shared, first_iam: Vec<Rule>, ec2: aws_sdk_ec2::Client) -> Responder {
    responder_full(w, first_iam, ec2, None, settings())
}

/// Every client, with the S3 and Security Hub ones given (empty mocks when `None`).
fn responder_full(
    w: &Shared,
    first_iam: Vec<Rule>,
    ec2: aws_sdk_ec2::Client,
    s3: Option<aws_sdk_s3::Client>,
    settings: Settings,
) -> Responder {
    Responder::with_clients(clients(w, first_iam, ec2, s3), settings)
}

/// The clients `responder_full` uses, for tests that replace one more.
fn clients(
    w: &Shared,
    first_iam: Vec<Rule>,
    ec2: aws_sdk_ec2::Client,
    s3: Option<aws_sdk_s3::Client>,
) -> Clients {
    let base = aws_config::SdkConfig::builder()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .build();
    let member = MemberClients {
        iam: iam(w, first_iam),
        lambda: lambda(w),
        ec2,
        s3: s3.unwrap_or_else(|| mock_client!(aws_sdk_s3, RuleMode::MatchAny, &[])),
        ssm: mock_client!(aws_sdk_ssm, RuleMode::MatchAny, &[]),
        organizations: organizations(),
    };
    Clients {
        base,
        dynamodb: dynamodb(w),
        sns: sns(w),
        sqs: sqs(w),
        scheduler: scheduler(w),
        secrets: secrets(),
        sts: sts(),
        s3: mock_client!(aws_sdk_s3, RuleMode::MatchAny, &[]),
        security_hub: playbooks::security_hub(w),
        iam: authorization::security_account_iam(),
        member: Arc::new(move |_| member.clone()),
        counter: quell_responder::clients::CallCounter::default(),
    }
}

fn world() -> Shared {
    let w = World {
        keys: vec![("AKIAOLD".into(), "Active".into())],
        login: true,
        ..World::default()
    };
    Arc::new(Mutex::new(w))
}

fn delivery(message_id: &str, request_id: &str, entity: &str) -> Value {
    let body = json!({"version": "1", "request_id": request_id, "action": "contain", "entity": entity, "reason": "test", "requester": "tester"});
    json!({"Records": [{
        "EventSource": "aws:sns", "EventVersion": "1.0", "EventSubscriptionArn": "arn:aws:sns:us-east-1:222233334444:quell-containment:sub",
        "Sns": {"Type": "Notification", "MessageId": message_id, "TopicArn": "arn:aws:sns:us-east-1:222233334444:quell-containment",
                "Subject": null, "Message": body.to_string(), "Timestamp": "2026-11-22T10:00:00.000Z", "SignatureVersion": "1",
                "Signature": "x", "SigningCertUrl": "https://example.invalid/cert", "UnsubscribeUrl": "https://example.invalid/unsub",
                "MessageAttributes": {"ExternalId": {"Type": "String", "Value": EXTERNAL_ID}}}
    }]})
}

fn record(w: &Shared, key: &str) -> Record {
    let world = w.lock().unwrap();
    let item = world
        .ledger
        .get(key)
        .unwrap_or_else(|| panic!("no ledger record {key}"));
    serde_json::from_str(item["record"].as_s().unwrap()).unwrap()
}

fn calls(w: &Shared, op: &str) -> usize {
    w.lock().unwrap().calls.get(op).copied().unwrap_or(0)
}

/// The mutating call behind each step of each entity type.
const CASES: &[(&str, &str, &str)] = &[
    ("user", "attach_deny_all", "AttachUserPolicy"),
    ("user", "revoke_older_sessions", "PutUserPolicy"),
    ("user", "deactivate_access_keys", "UpdateAccessKey"),
    ("user", "delete_login_profile", "DeleteLoginProfile"),
    ("role", "attach_deny_all", "AttachRolePolicy"),
    ("role", "revoke_older_sessions", "PutRolePolicy"),
    ("function", "deny_function_credentials", "PutRolePolicy"),
    ("function", "zero_concurrency", "PutFunctionConcurrency"),
];

fn entity(kind: &str) -> String {
    match kind {
        "user" => format!("arn:aws:iam::{ACCOUNT}:user/alice"),
        "role" => format!("arn:aws:iam::{ACCOUNT}:role/app"),
        _ => format!("arn:aws:lambda:us-east-1:{ACCOUNT}:function:orders"),
    }
}

#[tokio::test]
async fn a_failure_at_each_step_is_recorded_exactly_and_sending_again_completes_it() {
    for (kind, step, op) in CASES {
        let w = world();
        w.lock()
            .unwrap()
            .failures
            .insert(op, VecDeque::from(["AccessDenied"]));
        let responder = responder(&w);
        let arn = entity(kind);

        // A permanent error: recorded, audited, sent to the dead-letter queue; no platform retry.
        let out = responder.handle(delivery("m1", "req-1", &arn)).await;
        assert!(
            out.is_ok(),
            "{kind}/{step}: a permanent failure is not retried by the platform: {out:?}"
        );
        let r = record(&w, "req-1");
        assert_eq!(r.status, Status::Failed, "{kind}/{step}");
        for s in &r.steps {
            let expected = if s.name == *step {
                StepStatus::Failed
            } else {
                StepStatus::Done
            };
            assert!(
                s.status == expected || (s.status == StepStatus::Skipped && s.name != *step),
                "{kind}/{step}: {} is {:?}",
                s.name,
                s.status
            );
        }
        assert!(
            r.error.as_deref().unwrap_or_default().contains(step),
            "{kind}/{step}: the error names what was not done: {:?}",
            r.error
        );
        let failed_audit = w
            .lock()
            .unwrap()
            .published
            .iter()
            .find(|m| m["event"] == "failed")
            .cloned()
            .expect("a failed audit message");
        assert_eq!(failed_audit["record"]["key"], "req-1");
        assert!(failed_audit["record"]["steps"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["name"] == *step && s["status"] == "failed"));
        assert_eq!(
            w.lock().unwrap().dead_letters.len(),
            1,
            "{kind}/{step}: the failure reached the dead-letter queue"
        );
        let before: HashMap<&str, usize> =
            CASES.iter().map(|(_, _, o)| (*o, calls(&w, o))).collect();

        // The same request again: the missing step is done, the others are not repeated.
        responder
            .handle(delivery("m2", "req-1", &arn))
            .await
            .expect("second delivery");
        let r = record(&w, "req-1");
        assert_eq!(r.status, Status::Succeeded, "{kind}/{step}: {:?}", r.error);
        assert_eq!(r.attempts, 2);
        assert_eq!(r.message_ids, ["m1", "m2"]);
        assert_eq!(
            calls(&w, op),
            before[op] + 1,
            "{kind}/{step}: the failed call is made again"
        );
        for (k, s, other) in CASES {
            if other != op && *k == *kind {
                assert_eq!(
                    calls(&w, other),
                    before[other],
                    "{kind}/{step}: {s} is not repeated"
                );
            }
        }
        assert!(w
            .lock()
            .unwrap()
            .published
            .iter()
            .any(|m| m["event"] == "succeeded" && m["record"]["key"] == "req-1"));
    }
}

/// AttachUserPolicy throttled `times` times, then attaching for real.
fn throttled_attach(w: &Shared, times: usize) -> Rule {
    use aws_sdk_iam::operation::attach_user_policy::{
        AttachUserPolicyError, AttachUserPolicyOutput,
    };
    let w = w.clone();
    mock!(aws_sdk_iam::Client::attach_user_policy)
        .sequence()
        .error(|| AttachUserPolicyError::generic(meta("Throttling")))
        .times(times)
        .output(move || {
            w.lock()
                .unwrap()
                .user
                .attached
                .push("arn:aws:iam::aws:policy/AWSDenyAll".into());
            AttachUserPolicyOutput::builder().build()
        })
        .build()
}

#[tokio::test]
async fn a_request_delivered_again_while_its_claim_holds_waits_and_takes_over_once_it_has_run_out()
{
    let w = world();
    let responder = responder(&w);
    let arn = entity("user");
    responder
        .handle(delivery("m1", "req-1", &arn))
        .await
        .unwrap();
    // As if the invocation that took m1 had been cut off half way, a moment ago.
    let ledger = quell_responder::ledger::Ledger::new(dynamodb(&w), "quell-ledger");
    let mut cut = record(&w, "req-1");
    cut.status = Status::InProgress;
    cut.updated_at = chrono::Utc::now() - chrono::Duration::seconds(10);
    ledger.save(&cut).await.unwrap();
    let writes = calls(&w, "AttachUserPolicy") + calls(&w, "UpdateAccessKey");
    let queued = w.lock().unwrap().queued.len();

    // The platform delivers m1 again while the claim holds (120 s timeout + 30 s): nothing is
    // done, nothing refused, and the request is tried again later through the responder's queue.
    responder
        .handle(delivery("m1", "req-1", &arn))
        .await
        .unwrap();
    let held = record(&w, "req-1");
    assert_eq!(held.status, Status::InProgress, "{held:?}");
    assert!(held.rejection.is_none());
    assert_eq!(
        calls(&w, "AttachUserPolicy") + calls(&w, "UpdateAccessKey"),
        writes
    );
    {
        let world = w.lock().unwrap();
        assert_eq!(world.queued.len(), queued + 1);
        let (queue, body) = world.queued.last().unwrap();
        assert!(
            queue.ends_with("-isolation") && body.contains("req-1"),
            "{body}"
        );
        // Not before the claim can be taken over: 120 s timeout + 30 s margin, and a second.
        assert_eq!(world.delays.last(), Some(&151), "{:?}", world.delays);
    }

    // Once the claim has run out, the same delivery takes the work over and finishes it.
    cut.updated_at = chrono::Utc::now() - chrono::Duration::seconds(151);
    ledger.save(&cut).await.unwrap();
    responder
        .handle(delivery("m1", "req-1", &arn))
        .await
        .unwrap();
    let done = record(&w, "req-1");
    assert_eq!(done.status, Status::Succeeded, "{done:?}");
    assert_eq!(
        done.attempts,
        cut.attempts + 1,
        "taken over, not started anew"
    );
}

#[tokio::test]
async fn throttling_is_retried_by_the_client() {
    let w = world();
    let rule = throttled_attach(&w, 2);
    let responder = responder_with(&w, vec![rule.clone()]);
    responder
        .handle(delivery("m1", "req-t", &entity("user")))
        .await
        .expect("handled");
    assert_eq!(record(&w, "req-t").status, Status::Succeeded);
    assert_eq!(
        rule.num_calls(),
        3,
        "two throttled attempts and one that went through"
    );
}

/// The responder's own queue's Lambda event for `body`.
fn isolation_queue_delivery(message_id: &str, body: &str) -> Value {
    json!({"Records": [{
        "messageId": message_id, "receiptHandle": "r", "body": body,
        "attributes": {}, "messageAttributes": {}, "md5OfBody": "",
        "eventSource": "aws:sqs", "eventSourceARN": "arn:aws:sqs:us-east-1:222233334444:quell-isolation",
        "awsRegion": "us-east-1"
    }]})
}

/// The retry messages sent to the responder's own queue so far.
fn retries(w: &Shared) -> Vec<String> {
    w.lock()
        .unwrap()
        .queued
        .iter()
        .filter(|(url, _)| url.ends_with("/quell-isolation"))
        .map(|(_, body)| body.clone())
        .collect()
}

#[tokio::test]
async fn throttling_that_outlasts_the_retries_is_tried_again_through_the_responders_own_queue() {
    let w = world();
    // Two attempts' worth of throttling (the client tries 3 times each), then it passes.
    let rule = throttled_attach(&w, 6);
    let responder = responder_with(&w, vec![rule.clone()]);
    let out = responder
        .handle(delivery("m1", "req-x", &entity("user")))
        .await;
    assert!(
        out.is_ok(),
        "never handed back to the platform, whose retries end with the ExternalId in a dead-letter queue: {out:?}"
    );
    let r = record(&w, "req-x");
    assert_eq!(r.status, Status::Failed);
    assert_eq!(
        r.step("attach_deny_all").unwrap().status,
        StepStatus::Failed
    );
    let first = retries(&w);
    assert_eq!(first.len(), 1, "one retry scheduled");
    let retry: Value = serde_json::from_str(&first[0]).unwrap();
    assert_eq!(retry["attempt"], 2);
    assert_eq!(retry["request"]["request_id"], "req-x");
    responder
        .handle(isolation_queue_delivery("q1", &first[0]))
        .await
        .unwrap();
    let second = retries(&w);
    assert_eq!(second.len(), 2, "attempt 2 failed too: attempt 3 scheduled");
    responder
        .handle(isolation_queue_delivery("q2", &second[1]))
        .await
        .unwrap();
    let r = record(&w, "req-x");
    assert_eq!(r.status, Status::Succeeded, "{r:?}");
    assert_eq!(rule.num_calls(), 7);
    assert!(w.lock().unwrap().dead_letters.is_empty());
    assert_eq!(
        w.lock().unwrap().delays,
        [60, 90],
        "backing off, attempt by attempt"
    );
}

/// Collects what the responder logs, as it would reach CloudWatch Logs.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn after_a_forced_failure_no_queue_record_audit_or_log_holds_the_external_id() {
    let logs = Logs::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .finish();
    // Global, not scoped: other tests on other threads register the same call sites, and a
    // scoped subscriber would miss those cached as uninteresting. Only this test sets one.
    tracing::subscriber::set_global_default(subscriber).expect("the only global subscriber");
    let w = world();
    let rule = throttled_attach(&w, 100);
    let responder = responder_with(&w, vec![rule]);
    responder
        .handle(delivery("m1", "req-s", &entity("user")))
        .await
        .unwrap();
    for i in 0..2 {
        let body = retries(&w)[i].clone();
        responder
            .handle(isolation_queue_delivery(&format!("q{i}"), &body))
            .await
            .unwrap();
    }
    let world = w.lock().unwrap();
    let given_up: Value = serde_json::from_str(
        world
            .dead_letters
            .last()
            .expect("given up: the request is dead-lettered"),
    )
    .unwrap();
    assert_eq!(given_up["event"], "given_up");
    assert_eq!(given_up["request"]["request_id"], "req-s");
    let mut everywhere: Vec<String> = world.queued.iter().map(|(_, b)| b.clone()).collect();
    everywhere.extend(world.published.iter().map(Value::to_string));
    everywhere.extend(world.ledger.values().map(|i| format!("{i:?}")));
    everywhere.push(String::from_utf8_lossy(&logs.0.lock().unwrap()).into_owned());
    assert!(
        everywhere.last().unwrap().contains("req-s"),
        "logs were captured"
    );
    for text in &everywhere {
        assert!(!text.contains(EXTERNAL_ID), "the ExternalId leaked: {text}");
    }
}

#[tokio::test]
async fn permanent_errors_are_not_retried() {
    let w = world();
    w.lock()
        .unwrap()
        .failures
        .insert("PutUserPolicy", VecDeque::from(["AccessDenied"]));
    let responder = responder(&w);
    responder
        .handle(delivery("m1", "req-p", &entity("user")))
        .await
        .expect("handled");
    assert_eq!(calls(&w, "PutUserPolicy"), 1);
    assert_eq!(record(&w, "req-p").status, Status::Failed);
}

#[tokio::test]
async fn the_function_deny_names_its_scoping_and_the_old_concurrency_is_recorded() {
    let w = world();
    w.lock().unwrap().concurrency = Some(5);
    let responder = responder(&w);
    responder
        .handle(delivery("m1", "req-f", &entity("function")))
        .await
        .expect("handled");
    let r = record(&w, "req-f");
    assert_eq!(r.status, Status::Succeeded, "{:?}", r.error);
    let deny = r.step("deny_function_credentials").unwrap();
    assert!(
        deny.detail.contains("lambda:SourceFunctionArn"),
        "{}",
        deny.detail
    );
    let doc: Value = serde_json::from_str(
        w.lock().unwrap().execution_role.inline["QuellContainFunction-orders"].as_str(),
    )
    .unwrap();
    assert_eq!(
        doc["Statement"][0]["Condition"]["ArnEquals"]["lambda:SourceFunctionArn"],
        entity("function")
    );
    assert_eq!(
        r.step("zero_concurrency").unwrap().prior["reserved_concurrency"],
        5
    );
    assert_eq!(w.lock().unwrap().concurrency, Some(0));
}

#[tokio::test]
async fn an_instance_whose_vpc_refuses_new_groups_gets_every_other_control_and_no_isolation_schedule(
) {
    let w = world();
    let responder = responder_with_ec2(&w, Vec::new(), ec2_without_group_creation(&w));
    let arn = format!("arn:aws:ec2:us-east-1:{ACCOUNT}:instance/i-0123456789abcdef0");
    responder
        .handle(delivery("m1", "req-i", &arn))
        .await
        .expect("a permanent failure is handled");
    let r = record(&w, "req-i");
    assert_eq!(r.status, Status::Failed);
    let untracked = r.step("untracked_groups").unwrap();
    assert_eq!(untracked.status, StepStatus::Failed);
    assert!(
        untracked.detail.contains("UnauthorizedOperation"),
        "{}",
        untracked.detail
    );
    for done in [
        "tag_instance",
        "termination_protection",
        "shutdown_behaviour_stop",
    ] {
        assert_eq!(
            r.step(done).unwrap().status,
            StepStatus::Done,
            "{done} still done"
        );
    }
    assert_eq!(
        r.step("deny_instance_credentials").unwrap().status,
        StepStatus::Skipped,
        "no instance profile"
    );
    assert!(
        r.step("schedule_isolation").is_none(),
        "isolation is not scheduled without the untracked phase"
    );
    assert!(
        r.error
            .as_deref()
            .unwrap_or_default()
            .contains("isolation was not scheduled"),
        "{:?}",
        r.error
    );
    assert_eq!(w.lock().unwrap().dead_letters.len(), 1);
    assert!(
        calls(&w, "ModifyInstanceAttribute") >= 2,
        "termination protection and shutdown behaviour were set"
    );
}

fn release_delivery(message_id: &str, request_id: &str, entity: &str) -> Value {
    let body = json!({"version": "1", "request_id": request_id, "action": "release", "entity": entity, "reason": "test", "requester": "tester"});
    playbooks::request_delivery(message_id, &body)
}

#[tokio::test]
async fn a_functions_earlier_inline_policy_is_recorded_as_json_and_put_back_on_release() {
    let w = world();
    let original = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:GetObject","Resource":"arn:aws:s3:::orders/*"}]}"#;
    {
        let mut world = w.lock().unwrap();
        world.concurrency = Some(5);
        world
            .execution_role
            .inline
            .insert("QuellContainFunction-orders".into(), original.into());
    }
    let responder = responder(&w);
    responder
        .handle(delivery("m1", "req-f", &entity("function")))
        .await
        .unwrap();
    let r = record(&w, "req-f");
    assert_eq!(r.status, Status::Succeeded, "{:?}", r.error);
    let prior = &r.step("deny_function_credentials").unwrap().prior["document"];
    assert_eq!(
        prior.as_str(),
        Some(original),
        "kept as IAM took it, not URL-encoded as IAM returns it"
    );
    responder
        .handle(release_delivery("m2", "rel-f", &entity("function")))
        .await
        .unwrap();
    let rel = record(&w, "rel-f");
    assert_eq!(rel.status, Status::Succeeded, "{rel:?}");
    assert_eq!(
        w.lock().unwrap().execution_role.inline["QuellContainFunction-orders"],
        original
    );
}

#[tokio::test]
async fn a_user_with_no_room_for_another_managed_policy_is_denied_everything_inline() {
    let w = world();
    // IAM refuses an 11th managed policy with LimitExceeded.
    w.lock()
        .unwrap()
        .failures
        .insert("AttachUserPolicy", VecDeque::from(["LimitExceeded"]));
    let responder = responder(&w);
    responder
        .handle(delivery("m1", "req-full", &entity("user")))
        .await
        .unwrap();
    let r = record(&w, "req-full");
    assert_eq!(r.status, Status::Succeeded, "read back as denied: {r:?}");
    let step = r.step("attach_deny_all").unwrap();
    assert_eq!(step.status, StepStatus::Done);
    assert!(step.detail.contains("QuellDenyAll"), "{}", step.detail);
    let inline = w.lock().unwrap().user.inline["QuellDenyAll"].clone();
    let doc: Value = serde_json::from_str(&inline).unwrap();
    assert_eq!(doc["Statement"][0]["Effect"], "Deny");
    assert_eq!(doc["Statement"][0]["Action"], "*");
    assert_eq!(doc["Statement"][0]["Resource"], "*");
    assert!(w.lock().unwrap().user.attached.is_empty());

    responder
        .handle(release_delivery("m2", "rel-full", &entity("user")))
        .await
        .unwrap();
    assert_eq!(record(&w, "rel-full").status, Status::Succeeded);
    assert!(
        !w.lock().unwrap().user.inline.contains_key("QuellDenyAll"),
        "release removes the inline stand-in"
    );
}
