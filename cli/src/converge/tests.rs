//! StackSet orchestration against the real CloudFormation client with aws-smithy-mocks: the
//! sandbox finishes every operation at once and never fails one, so what happens while an
//! operation runs, fails or stops is shown here.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_cloudformation::operation::create_stack_instances::CreateStackInstancesOutput;
use aws_sdk_cloudformation::operation::delete_stack_instances::DeleteStackInstancesOutput;
use aws_sdk_cloudformation::operation::delete_stack_set::DeleteStackSetOutput;
use aws_sdk_cloudformation::operation::describe_stack_set::DescribeStackSetOutput;
use aws_sdk_cloudformation::operation::describe_stack_set_operation::DescribeStackSetOperationOutput;
use aws_sdk_cloudformation::operation::list_stack_instances::ListStackInstancesOutput;
use aws_sdk_cloudformation::operation::list_stack_set_operation_results::ListStackSetOperationResultsOutput;
use aws_sdk_cloudformation::operation::list_stack_set_operations::ListStackSetOperationsOutput;
use aws_sdk_cloudformation::operation::update_stack_instances::UpdateStackInstancesOutput;
use aws_sdk_cloudformation::operation::update_stack_set::{
    UpdateStackSetError, UpdateStackSetOutput,
};
use aws_sdk_cloudformation::types::error::OperationInProgressException;
use aws_sdk_cloudformation::types::{
    AccountFilterType, CallAs, DeploymentTargets, Parameter, StackInstanceComprehensiveStatus,
    StackInstanceDetailedStatus, StackInstanceStatus, StackInstanceSummary,
    StackSetOperationResultStatus, StackSetOperationResultSummary, StackSetOperationStatus,
    StackSetOperationSummary, StackSetStatus,
};
use aws_smithy_mocks::{mock, mock_client, MockResponse, RuleMode};

use super::apply::converge_stack_set;
use super::plan::{InstanceChanges, Value};
use super::stack_set::{InstanceCall, StackSet};
use crate::args::{GlobalArgs, OutputFormat};
use crate::calls::CallLog;
use crate::config::OperationPreferences;
use crate::printer::Printer;
use crate::render::StackSetDefinition;

const OU: &str = "ou-ab12-workload";

/// What a call carried that the tests look at.
#[derive(Debug, Clone)]
struct Call {
    operation: &'static str,
    call_as: Option<CallAs>,
    targets: Option<DeploymentTargets>,
    accounts: Vec<String>,
    regions: Vec<String>,
    operation_id: Option<String>,
}

/// A stack set as CloudFormation would keep it, with scripted operation statuses.
#[derive(Debug, Default)]
struct World {
    template: String,
    parameters: BTreeMap<String, String>,
    /// account, region, detailed status, reason
    instances: Vec<(String, String, &'static str, Option<String>)>,
    /// Statuses each operation shows, one per look; the last one stays.
    scripts: HashMap<String, VecDeque<&'static str>>,
    /// What new operations will do, in order of creation.
    next_scripts: VecDeque<Vec<&'static str>>,
    /// Operations somebody else started.
    foreign: Vec<String>,
    /// Per operation: account, region, status, reason.
    results: HashMap<String, Vec<(String, String, &'static str, String)>>,
    /// The next write answers OperationInProgressException (and a foreign operation appears).
    busy_writes: usize,
    calls: Vec<Call>,
    created: usize,
    /// What the last drift detection found: the set's status and each instance's.
    drift: Option<&'static str>,
    instance_drift: HashMap<String, &'static str>,
    /// The OUs the stack set deploys to, as DescribeStackSet reports them.
    registered: Vec<String>,
    /// AutoDeployment.Enabled of the CreateStackSet call, once made.
    created_auto_deploying: Option<bool>,
}

type Shared = Arc<Mutex<World>>;

impl World {
    fn record(&mut self, c: Call) {
        self.calls.push(c);
    }

    fn new_operation(&mut self) -> String {
        self.created += 1;
        let id = format!("op-{}", self.created);
        let script = self
            .next_scripts
            .pop_front()
            .unwrap_or_else(|| vec!["SUCCEEDED"]);
        self.scripts.insert(id.clone(), script.into());
        id
    }

    fn status_of(&mut self, id: &str) -> &'static str {
        let script = self.scripts.get_mut(id).expect("a known operation");
        if script.len() > 1 {
            script.pop_front().unwrap()
        } else {
            script[0]
        }
    }

    fn ops(&self) -> Vec<&'static str> {
        self.calls.iter().map(|c| c.operation).collect()
    }
}

fn call(operation: &'static str, call_as: Option<&CallAs>) -> Call {
    Call {
        operation,
        call_as: call_as.cloned(),
        targets: None,
        accounts: vec![],
        regions: vec![],
        operation_id: None,
    }
}

fn client(world: &Shared) -> aws_sdk_cloudformation::Client {
    let w = world.clone();
    let describe =
        mock!(aws_sdk_cloudformation::Client::describe_stack_set).then_compute_output(move |req| {
            let mut w = w.lock().unwrap();
            w.record(call("DescribeStackSet", req.call_as()));
            let set = aws_sdk_cloudformation::types::StackSet::builder()
                .stack_set_name("quell-member-roles")
                .status(StackSetStatus::Active)
                .template_body(w.template.clone())
                .set_parameters(Some(
                    w.parameters
                        .iter()
                        .map(|(k, v)| {
                            Parameter::builder()
                                .parameter_key(k)
                                .parameter_value(v)
                                .build()
                        })
                        .collect(),
                ))
                .set_organizational_unit_ids(Some(w.registered.clone()))
                .set_stack_set_drift_detection_details(w.drift.map(|d| {
                    aws_sdk_cloudformation::types::StackSetDriftDetectionDetails::builder()
                        .drift_status(aws_sdk_cloudformation::types::StackSetDriftStatus::from(d))
                        .failed_stack_instances_count(0)
                        .build()
                }))
                .build();
            DescribeStackSetOutput::builder().stack_set(set).build()
        });
    let w = world.clone();
    let list = mock!(aws_sdk_cloudformation::Client::list_stack_instances).then_compute_output(
        move |req| {
            let mut w = w.lock().unwrap();
            w.record(call("ListStackInstances", req.call_as()));
            let summaries = w
                .instances
                .iter()
                .map(|(account, region, detailed, reason)| {
                    StackInstanceSummary::builder()
                        .account(account)
                        .region(region)
                        .status(if *detailed == "FAILED" {
                            StackInstanceStatus::Outdated
                        } else {
                            StackInstanceStatus::Current
                        })
                        .stack_instance_status(
                            StackInstanceComprehensiveStatus::builder()
                                .detailed_status(StackInstanceDetailedStatus::from(*detailed))
                                .build(),
                        )
                        .set_status_reason(reason.clone())
                        .set_drift_status(
                            w.instance_drift
                                .get(account)
                                .map(|d| aws_sdk_cloudformation::types::StackDriftStatus::from(*d)),
                        )
                        .build()
                })
                .collect();
            ListStackInstancesOutput::builder()
                .set_summaries(Some(summaries))
                .build()
        },
    );
    let w = world.clone();
    let operations = mock!(aws_sdk_cloudformation::Client::list_stack_set_operations)
        .then_compute_output(move |req| {
            let mut w = w.lock().unwrap();
            w.record(call("ListStackSetOperations", req.call_as()));
            let foreign = w.foreign.clone();
            let summaries = foreign
                .iter()
                .map(|id| {
                    let status = w.scripts[id].front().copied().unwrap_or("SUCCEEDED");
                    StackSetOperationSummary::builder()
                        .operation_id(id)
                        .status(StackSetOperationStatus::from(status))
                        .build()
                })
                .collect();
            ListStackSetOperationsOutput::builder()
                .set_summaries(Some(summaries))
                .build()
        });
    let w = world.clone();
    let describe_op = mock!(aws_sdk_cloudformation::Client::describe_stack_set_operation)
        .then_compute_output(move |req| {
            let mut w = w.lock().unwrap();
            let mut c = call("DescribeStackSetOperation", req.call_as());
            c.operation_id = req.operation_id().map(str::to_owned);
            w.record(c);
            let status = w.status_of(req.operation_id().unwrap_or_default());
            DescribeStackSetOperationOutput::builder()
                .stack_set_operation(
                    aws_sdk_cloudformation::types::StackSetOperation::builder()
                        .status(StackSetOperationStatus::from(status))
                        .build(),
                )
                .build()
        });
    let w = world.clone();
    let results = mock!(aws_sdk_cloudformation::Client::list_stack_set_operation_results)
        .then_compute_output(move |req| {
            let mut w = w.lock().unwrap();
            w.record(call("ListStackSetOperationResults", req.call_as()));
            let rows = w
                .results
                .get(req.operation_id().unwrap_or_default())
                .cloned()
                .unwrap_or_default();
            ListStackSetOperationResultsOutput::builder()
                .set_summaries(Some(
                    rows.into_iter()
                        .map(|(a, r, s, reason)| {
                            StackSetOperationResultSummary::builder()
                                .account(a)
                                .region(r)
                                .status(StackSetOperationResultStatus::from(s))
                                .status_reason(reason)
                                .build()
                        })
                        .collect(),
                ))
                .build()
        });
    let w = world.clone();
    let update =
        mock!(aws_sdk_cloudformation::Client::update_stack_set).then_compute_response(move |req| {
            let mut w = w.lock().unwrap();
            w.record(call("UpdateStackSet", req.call_as()));
            if w.busy_writes > 0 {
                w.busy_writes -= 1;
                // Somebody else's operation holds the stack set for two more looks.
                w.created += 1;
                let id = format!("foreign-{}", w.created);
                w.scripts.insert(
                    id.clone(),
                    VecDeque::from(["RUNNING", "RUNNING", "SUCCEEDED"]),
                );
                w.foreign.push(id);
                return MockResponse::Error(UpdateStackSetError::OperationInProgressException(
                    // As the deserializer builds it from the wire: the code in the metadata.
                    OperationInProgressException::builder()
                        .message("Another Operation on StackSet is in progress")
                        .meta(
                            aws_sdk_cloudformation::error::ErrorMetadata::builder()
                                .code("OperationInProgressException")
                                .message("Another Operation on StackSet is in progress")
                                .build(),
                        )
                        .build(),
                ));
            }
            w.template = req.template_body().unwrap_or_default().to_owned();
            let id = w.new_operation();
            MockResponse::Output(UpdateStackSetOutput::builder().operation_id(id).build())
        });
    macro_rules! instance_op {
        ($op:ident, $name:literal, $out:ident) => {{
            let w = world.clone();
            mock!(aws_sdk_cloudformation::Client::$op).then_compute_output(move |req| {
                let mut w = w.lock().unwrap();
                let mut c = call($name, req.call_as());
                c.targets = req.deployment_targets().cloned();
                c.regions = req.regions().to_vec();
                w.record(c);
                let id = w.new_operation();
                $out::builder().operation_id(id).build()
            })
        }};
    }
    let create_instances = instance_op!(
        create_stack_instances,
        "CreateStackInstances",
        CreateStackInstancesOutput
    );
    let update_instances = instance_op!(
        update_stack_instances,
        "UpdateStackInstances",
        UpdateStackInstancesOutput
    );
    let w = world.clone();
    let delete_instances = mock!(aws_sdk_cloudformation::Client::delete_stack_instances)
        .then_compute_output(move |req| {
            let mut w = w.lock().unwrap();
            let mut c = call("DeleteStackInstances", req.call_as());
            c.targets = req.deployment_targets().cloned();
            c.accounts = req.accounts().to_vec();
            c.regions = req.regions().to_vec();
            w.record(c);
            let id = w.new_operation();
            DeleteStackInstancesOutput::builder()
                .operation_id(id)
                .build()
        });
    let w = world.clone();
    let detect = mock!(aws_sdk_cloudformation::Client::detect_stack_set_drift).then_compute_output(
        move |req| {
            let mut w = w.lock().unwrap();
            w.record(call("DetectStackSetDrift", req.call_as()));
            let id = w.new_operation();
            aws_sdk_cloudformation::operation::detect_stack_set_drift::DetectStackSetDriftOutput::builder()
                .operation_id(id)
                .build()
        },
    );
    let w = world.clone();
    let create_set =
        mock!(aws_sdk_cloudformation::Client::create_stack_set).then_compute_output(move |req| {
            let mut w = w.lock().unwrap();
            w.record(call("CreateStackSet", req.call_as()));
            w.created_auto_deploying = req
                .auto_deployment()
                .and_then(aws_sdk_cloudformation::types::AutoDeployment::enabled);
            aws_sdk_cloudformation::operation::create_stack_set::CreateStackSetOutput::builder()
                .build()
        });
    let w = world.clone();
    let delete_set =
        mock!(aws_sdk_cloudformation::Client::delete_stack_set).then_compute_output(move |req| {
            w.lock()
                .unwrap()
                .record(call("DeleteStackSet", req.call_as()));
            DeleteStackSetOutput::builder().build()
        });
    mock_client!(
        aws_sdk_cloudformation,
        RuleMode::MatchAny,
        &[
            &describe,
            &list,
            &operations,
            &describe_op,
            &results,
            &update,
            &create_instances,
            &update_instances,
            &delete_instances,
            &delete_set,
            &create_set,
            &detect
        ]
    )
}

fn world(instances: &[(&str, &str)]) -> Shared {
    Arc::new(Mutex::new(World {
        template: "template v1".into(),
        parameters: BTreeMap::from([("CentralBusArn".into(), "arn:bus".into())]),
        instances: instances
            .iter()
            .map(|(a, r)| ((*a).to_owned(), (*r).to_owned(), "SUCCEEDED", None))
            .collect(),
        ..World::default()
    }))
}

fn printer() -> Printer {
    Printer::new(&GlobalArgs {
        sandbox: false,
        profile: None,
        output: OutputFormat::Text,
        quiet: true,
        verbose: 0,
    })
}

fn stack_set(
    cfn: &aws_sdk_cloudformation::Client,
    call_as: Option<CallAs>,
    sandbox: bool,
) -> StackSet<'_> {
    StackSet {
        cfn,
        name: "quell-member-roles".into(),
        call_as,
        preferences: super::stack_set::preferences(&OperationPreferences::default(), 2),
        poll: Duration::from_millis(1),
        sandbox,
    }
}

fn definition() -> StackSetDefinition {
    StackSetDefinition::all()
        .into_iter()
        .find(|d| d.name == "member-roles")
        .expect("the member-roles definition")
}

fn wanted(bus: &str) -> BTreeMap<String, Value> {
    BTreeMap::from([("CentralBusArn".to_owned(), Value::Known(bus.to_owned()))])
}

fn deployed(w: &Shared) -> super::stack_set::Deployed {
    let w = w.lock().unwrap();
    super::stack_set::Deployed {
        template: w.template.clone(),
        parameters: w.parameters.clone(),
        instances: vec![],
        organizational_units: Some([OU.to_owned()].into()),
    }
}

fn one(account: &str, region: &str) -> InstanceCall {
    InstanceCall {
        organizational_unit: OU.into(),
        whole_ou: false,
        accounts: vec![account.into()],
        regions: vec![region.into()],
    }
}

const A: &str = "111111111111";
const B: &str = "222222222222";

#[tokio::test]
async fn an_operation_already_running_is_waited_for_before_the_update_starts() {
    let w = world(&[(A, "us-east-1")]);
    {
        let mut g = w.lock().unwrap();
        g.scripts.insert(
            "theirs".into(),
            VecDeque::from(["RUNNING", "RUNNING", "SUCCEEDED"]),
        );
        g.foreign.push("theirs".into());
        g.next_scripts.push_back(vec!["RUNNING", "SUCCEEDED"]);
    }
    let cfn = client(&w);
    let set = stack_set(&cfn, None, false);
    let current = deployed(&w);
    let (instances, failed) = converge_stack_set(
        &set,
        &definition(),
        "template v2",
        &wanted("arn:bus"),
        Some(&current),
        &InstanceChanges::default(),
        &printer(),
    )
    .await
    .expect("the update ends well");
    assert!(failed.is_empty());
    assert_eq!(instances.len(), 1);
    let g = w.lock().unwrap();
    let ops = g.ops();
    let update_at = ops.iter().position(|o| *o == "UpdateStackSet").unwrap();
    let theirs_done = g
        .calls
        .iter()
        .rposition(|c| c.operation_id.as_deref() == Some("theirs"))
        .unwrap();
    assert!(
        theirs_done < update_at,
        "the update waited for the running operation: {ops:?}"
    );
    assert_eq!(g.template, "template v2");
    assert!(g.scripts["theirs"].len() == 1 && g.scripts["theirs"][0] == "SUCCEEDED");
}

#[tokio::test]
async fn operation_in_progress_on_the_write_is_waited_out_and_the_write_sent_again() {
    let w = world(&[(A, "us-east-1")]);
    w.lock().unwrap().busy_writes = 1;
    let cfn = client(&w);
    let set = stack_set(&cfn, None, false);
    let current = deployed(&w);
    converge_stack_set(
        &set,
        &definition(),
        "template v2",
        &wanted("arn:bus"),
        Some(&current),
        &InstanceChanges::default(),
        &printer(),
    )
    .await
    .expect("the update goes through once the other operation ended");
    let g = w.lock().unwrap();
    let updates = g.ops().iter().filter(|o| **o == "UpdateStackSet").count();
    assert_eq!(updates, 2, "{:?}", g.ops());
    assert_eq!(g.template, "template v2");
}

#[tokio::test]
async fn a_failed_operation_ends_the_run_naming_each_instance_and_its_reason() {
    let w = world(&[(A, "us-east-1")]);
    {
        let mut g = w.lock().unwrap();
        g.next_scripts.push_back(vec!["RUNNING", "FAILED"]);
        g.instances.push((
            B.into(),
            "eu-west-1".into(),
            "FAILED",
            Some("see the operation".into()),
        ));
        g.results.insert(
            "op-1".into(),
            vec![(
                B.into(),
                "eu-west-1".into(),
                "FAILED",
                "Role quell-responder already exists".into(),
            )],
        );
    }
    let cfn = client(&w);
    let set = stack_set(&cfn, None, false);
    let current = deployed(&w);
    let changes = InstanceChanges {
        add: vec![one(B, "eu-west-1")],
        ..InstanceChanges::default()
    };
    let err = converge_stack_set(
        &set,
        &definition(),
        "template v1",
        &wanted("arn:bus"),
        Some(&current),
        &changes,
        &printer(),
    )
    .await
    .expect_err("a FAILED operation is an error");
    let text = format!("{err:#}");
    assert!(text.contains("ended FAILED"), "{text}");
    assert!(
        text.contains(&format!(
            "{B} eu-west-1: Role quell-responder already exists"
        )),
        "{text}"
    );
    assert!(text.contains("quell upgrade --retry-failed"), "{text}");
    // No template change was asked for, so no update was sent.
    assert!(!w.lock().unwrap().ops().contains(&"UpdateStackSet"));
}

#[tokio::test]
async fn a_stopped_operation_ends_the_run() {
    let w = world(&[(A, "us-east-1")]);
    w.lock()
        .unwrap()
        .next_scripts
        .push_back(vec!["STOPPING", "STOPPED"]);
    let cfn = client(&w);
    let set = stack_set(&cfn, None, false);
    let current = deployed(&w);
    let changes = InstanceChanges {
        add: vec![one(B, "us-east-1")],
        ..InstanceChanges::default()
    };
    let err = converge_stack_set(
        &set,
        &definition(),
        "template v2",
        &wanted("arn:bus"),
        Some(&current),
        &changes,
        &printer(),
    )
    .await
    .expect_err("a STOPPED operation is an error");
    assert!(format!("{err:#}").contains("ended STOPPED"), "{err:#}");
    // The add after the stopped update was never sent.
    assert!(!w.lock().unwrap().ops().contains(&"CreateStackInstances"));
}

#[tokio::test]
async fn under_soft_tolerance_a_succeeded_operation_still_names_its_failed_instances() {
    let w = world(&[(A, "us-east-1")]);
    {
        let mut g = w.lock().unwrap();
        g.next_scripts.push_back(vec!["RUNNING", "SUCCEEDED"]);
        g.instances
            .push((B.into(), "us-east-1".into(), "FAILED", None));
        g.results.insert(
            "op-1".into(),
            vec![
                (A.into(), "us-east-1".into(), "SUCCEEDED", String::new()),
                (
                    B.into(),
                    "us-east-1".into(),
                    "FAILED",
                    "AccessDenied: iam:CreateRole".into(),
                ),
            ],
        );
    }
    let cfn = client(&w);
    let set = stack_set(&cfn, None, false);
    let current = deployed(&w);
    let (_, failed) = converge_stack_set(
        &set,
        &definition(),
        "template v2",
        &wanted("arn:bus"),
        Some(&current),
        &InstanceChanges::default(),
        &printer(),
    )
    .await
    .expect("within the failure tolerance the run goes on");
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].instance.account, B);
    assert_eq!(
        failed[0].instance.reason.as_deref(),
        Some("AccessDenied: iam:CreateRole")
    );
}

#[tokio::test]
async fn retry_failed_runs_the_template_again_on_exactly_the_failed_instances() {
    let w = world(&[(A, "us-east-1")]);
    let cfn = client(&w);
    let set = stack_set(&cfn, None, false);
    let current = deployed(&w);
    let changes = InstanceChanges {
        retry: vec![one(B, "eu-west-1")],
        ..InstanceChanges::default()
    };
    converge_stack_set(
        &set,
        &definition(),
        "template v1",
        &wanted("arn:bus"),
        Some(&current),
        &changes,
        &printer(),
    )
    .await
    .unwrap();
    let g = w.lock().unwrap();
    let retry = g
        .calls
        .iter()
        .find(|c| c.operation == "UpdateStackInstances")
        .unwrap();
    let t = retry.targets.as_ref().unwrap();
    assert_eq!(t.organizational_unit_ids(), [OU.to_owned()]);
    assert_eq!(t.accounts(), [B.to_owned()]);
    assert_eq!(
        t.account_filter_type().map(AccountFilterType::as_str),
        Some("INTERSECTION")
    );
    assert_eq!(retry.regions, ["eu-west-1".to_owned()]);
}

#[tokio::test]
async fn delegated_administrators_send_call_as_on_every_call() {
    let w = world(&[(A, "us-east-1")]);
    w.lock().unwrap().busy_writes = 1;
    let cfn = client(&w);
    let set = stack_set(&cfn, Some(CallAs::DelegatedAdmin), false);
    let current = set.describe().await.unwrap().expect("deployed");
    let changes = InstanceChanges {
        add: vec![one(B, "us-east-1")],
        remove: vec![one(A, "eu-west-1")],
        retry: vec![one(A, "us-east-1")],
        handover: vec![],
        failed: vec![],
    };
    converge_stack_set(
        &set,
        &definition(),
        "template v2",
        &wanted("arn:bus2"),
        Some(&current),
        &changes,
        &printer(),
    )
    .await
    .unwrap();
    set.delete().await.unwrap();
    let g = w.lock().unwrap();
    let kinds: std::collections::BTreeSet<&str> = g.ops().into_iter().collect();
    assert_eq!(
        kinds.len(),
        10,
        "every kind of call but drift detection was made: {kinds:?}"
    );
    for c in &g.calls {
        assert_eq!(
            c.call_as,
            Some(CallAs::DelegatedAdmin),
            "{} without CallAs",
            c.operation
        );
    }
}

#[tokio::test]
async fn removal_names_deployment_targets_on_aws_and_accounts_in_the_sandbox() {
    for sandbox in [false, true] {
        let w = world(&[(A, "us-east-1")]);
        let cfn = client(&w);
        let set = stack_set(&cfn, None, sandbox);
        set.remove(&one(A, "us-east-1"), &printer()).await.unwrap();
        let g = w.lock().unwrap();
        let c = g
            .calls
            .iter()
            .find(|c| c.operation == "DeleteStackInstances")
            .unwrap();
        if sandbox {
            assert_eq!(c.accounts, [A.to_owned()]);
            assert!(c.targets.is_none());
        } else {
            assert!(c.accounts.is_empty());
            let t = c.targets.as_ref().unwrap();
            assert_eq!(t.organizational_unit_ids(), [OU.to_owned()]);
            assert_eq!(t.accounts(), [A.to_owned()]);
        }
    }
}

#[tokio::test]
async fn nothing_to_change_sends_no_write_call() {
    let w = world(&[(A, "us-east-1"), (B, "us-east-1")]);
    let log = CallLog::default();
    let mocked = client(&w);
    let cfn = aws_sdk_cloudformation::Client::from_conf(
        mocked
            .config()
            .to_builder()
            .interceptor(log.clone())
            .build(),
    );
    let set = stack_set(&cfn, None, false);
    let current = set.describe().await.unwrap().expect("deployed");
    let (instances, failed) = converge_stack_set(
        &set,
        &definition(),
        "template v1",
        &wanted("arn:bus"),
        Some(&current),
        &InstanceChanges::default(),
        &printer(),
    )
    .await
    .unwrap();
    assert_eq!(instances.len(), 2);
    assert!(failed.is_empty());
    let count = log.count();
    assert!(count.total >= 3, "the calls were counted: {count:?}");
    assert_eq!(count.writes, 0, "{count:?}");
    let ops = w.lock().unwrap().ops();
    assert!(
        ops.iter()
            .all(|o| o.starts_with("Describe") || o.starts_with("List")),
        "{ops:?}"
    );
}

#[tokio::test]
async fn drift_detection_runs_to_its_end_and_names_the_drifted_instances() {
    let w = world(&[(A, "us-east-1"), (B, "us-east-1")]);
    {
        let mut g = w.lock().unwrap();
        g.next_scripts
            .push_back(vec!["RUNNING", "RUNNING", "SUCCEEDED"]);
        g.drift = Some("DRIFTED");
        g.instance_drift.insert(A.into(), "IN_SYNC");
        g.instance_drift.insert(B.into(), "DRIFTED");
    }
    let cfn = client(&w);
    let set = stack_set(&cfn, Some(CallAs::DelegatedAdmin), false);
    let drift = set.detect_drift(&printer()).await.unwrap();
    assert_eq!(drift.status, "DRIFTED");
    assert_eq!(drift.in_sync, 1);
    assert_eq!(drift.drifted_instances.len(), 1);
    assert_eq!(drift.drifted_instances[0].account, B);
    let g = w.lock().unwrap();
    let looks = g
        .calls
        .iter()
        .filter(|c| c.operation == "DescribeStackSetOperation")
        .count();
    assert_eq!(looks, 3, "followed until SUCCEEDED");
    assert!(g
        .calls
        .iter()
        .all(|c| c.call_as == Some(CallAs::DelegatedAdmin)));
}

#[tokio::test]
async fn single_accounts_get_a_stack_set_that_never_auto_deploys() {
    for definition in StackSetDefinition::all() {
        let w = world(&[]);
        let cfn = client(&w);
        let set = stack_set(&cfn, None, false);
        let changes = InstanceChanges {
            add: vec![one(A, "us-east-1")],
            ..InstanceChanges::default()
        };
        converge_stack_set(
            &set,
            &definition,
            "template v1",
            &wanted("arn:bus"),
            None,
            &changes,
            &printer(),
        )
        .await
        .unwrap();
        let g = w.lock().unwrap();
        assert_eq!(
            g.created_auto_deploying,
            Some(definition.reaches(true)),
            "{}: auto-deployment only for the configured OUs",
            definition.name
        );
    }
}

#[tokio::test]
async fn the_ous_a_stack_set_deploys_to_are_read_on_aws_and_not_guessed_in_the_sandbox() {
    let w = world(&[(A, "us-east-1")]);
    w.lock().unwrap().registered = vec![OU.to_owned(), "ou-ab12-emptyemp".to_owned()];
    let cfn = client(&w);
    let on_aws = stack_set(&cfn, None, false)
        .describe()
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        on_aws.organizational_units,
        Some([OU.to_owned(), "ou-ab12-emptyemp".to_owned()].into())
    );
    let in_sandbox = stack_set(&cfn, None, true)
        .describe()
        .await
        .unwrap()
        .unwrap();
    assert_eq!(in_sandbox.organizational_units, None);
}
