//! A whole `quell install --delegated-admin`, end to end, against the SDK's mocks: the sandbox's
//! emulator keeps an organization only in its management account, so a delegated administrator
//! there sees neither OUs nor accounts. Every client the run makes answers from one mocked
//! organization (management 999988887777, the security account 222233334444 as the StackSets
//! delegated administrator); a recorder notes which credentials signed each call.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use aws_credential_types::Credentials;
use aws_sdk_cloudformation::operation::create_stack::CreateStackOutput;
use aws_sdk_cloudformation::operation::create_stack_instances::CreateStackInstancesOutput;
use aws_sdk_cloudformation::operation::create_stack_set::CreateStackSetOutput;
use aws_sdk_cloudformation::operation::describe_stack_set::{
    DescribeStackSetError, DescribeStackSetOutput,
};
use aws_sdk_cloudformation::operation::describe_stack_set_operation::DescribeStackSetOperationOutput;
use aws_sdk_cloudformation::operation::describe_stacks::{
    DescribeStacksError, DescribeStacksOutput,
};
use aws_sdk_cloudformation::operation::get_template::GetTemplateOutput;
use aws_sdk_cloudformation::operation::list_stack_instances::ListStackInstancesOutput;
use aws_sdk_cloudformation::operation::list_stack_set_operation_results::ListStackSetOperationResultsOutput;
use aws_sdk_cloudformation::operation::list_stack_set_operations::ListStackSetOperationsOutput;
use aws_sdk_cloudformation::operation::list_stacks::ListStacksOutput;
use aws_sdk_cloudformation::types::{
    CallAs, Output, Parameter, StackInstanceComprehensiveStatus, StackInstanceDetailedStatus,
    StackInstanceStatus, StackInstanceSummary, StackSetOperation, StackSetOperationStatus,
    StackStatus,
};
use aws_smithy_mocks::{create_mock_http_client, mock, MockResponseInterceptor, Rule, RuleMode};
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextRef;
use aws_smithy_runtime_api::client::interceptors::{Intercept, SharedInterceptor};
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;
use aws_smithy_types::error::ErrorMetadata;

use super::stack_set::parameters;
use super::{converge, Verb};
use crate::args::{ConvergeArgs, GlobalArgs, OutputFormat};
use crate::aws::Aws;
use crate::calls::double::{self, Double};
use crate::config::Config;
use crate::printer::Printer;

const MANAGEMENT: &str = "999988887777";
const SECURITY: &str = "222233334444";
const IN_OU: &str = "444455556666";
const SINGLE: &str = "333344445555";
const OU: &str = "ou-ab12-cdef3456";
const ROOT: &str = "r-ab12";
const INSTALLER: &str = "QuellInstaller";

/// The access key of the caller's own credentials, and of each role it assumes.
const CALLER_KEY: &str = "AKIACALLER";
fn role_key(role_arn: &str) -> String {
    let account = role_arn.split(':').nth(4).unwrap_or_default();
    let name = role_arn.rsplit('/').next().unwrap_or_default();
    format!("ASIA{account}{name}")
}

#[derive(Debug, Default)]
struct Stack {
    template: String,
    parameters: BTreeMap<String, String>,
}

#[derive(Debug, Default)]
struct StackSet {
    template: String,
    parameters: BTreeMap<String, String>,
    auto_deployment: bool,
    instances: BTreeSet<(String, String)>,
    organizational_units: BTreeSet<String>,
}

/// The mocked organization's CloudFormation, and what every call carried.
#[derive(Debug, Default)]
struct World {
    stacks: BTreeMap<String, Stack>,
    stack_sets: BTreeMap<String, StackSet>,
    /// (operation, CallAs) of every StackSet call.
    stack_set_calls: Vec<(&'static str, Option<CallAs>)>,
    /// (service:operation, access key that signed it) of every request.
    signed: Vec<(String, String)>,
    assumed: Vec<String>,
}

type Shared = Arc<Mutex<World>>;

/// Notes which credentials signed each request, from its Authorization header.
#[derive(Debug)]
struct SignedBy(Shared);

impl Intercept for SignedBy {
    fn name(&self) -> &'static str {
        "SignedBy"
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let key = context
            .request()
            .headers()
            .get("authorization")
            .and_then(|a| a.split("Credential=").nth(1))
            .and_then(|c| c.split('/').next())
            .unwrap_or_default()
            .to_owned();
        if let Some(m) = cfg.load::<Metadata>() {
            self.0
                .lock()
                .unwrap()
                .signed
                .push((format!("{}:{}", m.service(), m.name()), key));
        }
        Ok(())
    }
}

fn accounts_of(ou: &str) -> Vec<&'static str> {
    match ou {
        OU => vec![IN_OU],
        ROOT => vec![SECURITY, SINGLE, IN_OU],
        _ => vec![],
    }
}

fn not_found(code: &str, message: &str) -> ErrorMetadata {
    ErrorMetadata::builder().code(code).message(message).build()
}

fn stack_outputs(name: &str) -> Vec<Output> {
    let keys: &[&str] = match name {
        "quell-artifacts" => &["ArtifactBucketName"],
        "quell-security" => &[
            "ContainmentTopicArn",
            "AuditTopicArn",
            "LedgerTableName",
            "ResponderFunctionName",
            "ResponderRoleArn",
            "ResponderRoleId",
            "CentralBusArn",
            "DeadLetterQueueName",
            "ArtifactKey",
        ],
        _ => &[],
    };
    keys.iter()
        .map(|k| {
            let value = match *k {
                "ResponderRoleId" => "AROAEXAMPLEROLEID0001".to_owned(),
                "ResponderRoleArn" => {
                    format!("arn:aws:iam::{SECURITY}:role/quell-responder-execution")
                }
                "CentralBusArn" => {
                    format!("arn:aws:events:us-east-1:{SECURITY}:event-bus/quell-central")
                }
                other => format!("{name}-{other}"),
            };
            Output::builder().output_key(*k).output_value(value).build()
        })
        .collect()
}

fn params(values: &[Parameter]) -> BTreeMap<String, String> {
    values
        .iter()
        .filter_map(|p| {
            Some((
                p.parameter_key()?.to_owned(),
                p.parameter_value().unwrap_or_default().to_owned(),
            ))
        })
        .collect()
}

#[allow(clippy::too_many_lines)]
fn rules(w: &Shared) -> Vec<Rule> {
    use aws_smithy_mocks::MockResponse::{Error as Fail, Output as Ok};
    let mut rules = Vec::new();
    macro_rules! on {
        ($krate:ident :: $op:ident, |$req:ident, $world:ident| $body:expr) => {{
            let shared = w.clone();
            rules.push(
                mock!($krate::Client::$op).then_compute_response(move |$req| {
                    let _ = &$req;
                    #[allow(unused_mut, unused_variables)]
                    let mut $world = shared.lock().unwrap();
                    $body
                }),
            );
        }};
    }
    // STS: who the caller is, and the roles it assumes.
    on!(aws_sdk_sts::get_caller_identity, |req, w| Ok(
        aws_sdk_sts::operation::get_caller_identity::GetCallerIdentityOutput::builder()
            .account(SECURITY)
            .arn(format!("arn:aws:sts::{SECURITY}:assumed-role/Admin/jo"))
            .build()
    ));
    on!(aws_sdk_sts::assume_role, |req, w| {
        let role = req.role_arn().unwrap_or_default().to_owned();
        w.assumed.push(role.clone());
        Ok(
            aws_sdk_sts::operation::assume_role::AssumeRoleOutput::builder()
                .credentials(
                    aws_sdk_sts::types::Credentials::builder()
                        .access_key_id(role_key(&role))
                        .secret_access_key("secret")
                        .session_token("token")
                        .expiration(aws_smithy_types::DateTime::from_secs(
                            std::time::SystemTime::now()
                                .duration_since(std::time::UNIX_EPOCH)
                                .unwrap()
                                .as_secs()
                                .cast_signed()
                                + 3600,
                        ))
                        .build()
                        .unwrap(),
                )
                .build(),
        )
    });

    // Organizations, as the delegated administrator may read it.
    on!(aws_sdk_organizations::describe_organization, |req, w| {
        Ok(
        aws_sdk_organizations::operation::describe_organization::DescribeOrganizationOutput::builder()
            .organization(
                aws_sdk_organizations::types::Organization::builder()
                    .id("o-exampleorg1")
                    .master_account_id(MANAGEMENT)
                    .build()
            )
            .build()
    )
    });
    on!(aws_sdk_organizations::describe_account, |req, w| Ok(
        aws_sdk_organizations::operation::describe_account::DescribeAccountOutput::builder()
            .account(
                aws_sdk_organizations::types::Account::builder()
                    .id(req.account_id().unwrap_or_default())
                    .build()
            )
            .build()
    ));
    on!(
        aws_sdk_organizations::describe_organizational_unit,
        |req, w| {
            Ok(
        aws_sdk_organizations::operation::describe_organizational_unit::DescribeOrganizationalUnitOutput::builder()
            .organizational_unit(
                aws_sdk_organizations::types::OrganizationalUnit::builder()
                    .id(req.organizational_unit_id().unwrap_or_default())
                    .build()
            )
            .build()
    )
        }
    );
    on!(aws_sdk_organizations::list_parents, |req, w| {
        let parent = if req.child_id() == Some(IN_OU) {
            OU
        } else {
            ROOT
        };
        Ok(
            aws_sdk_organizations::operation::list_parents::ListParentsOutput::builder()
                .parents(
                    aws_sdk_organizations::types::Parent::builder()
                        .id(parent)
                        .build(),
                )
                .build(),
        )
    });
    on!(aws_sdk_organizations::list_roots, |req, w| Ok(
        aws_sdk_organizations::operation::list_roots::ListRootsOutput::builder()
            .roots(
                aws_sdk_organizations::types::Root::builder()
                    .id(ROOT)
                    .build()
            )
            .build()
    ));
    on!(aws_sdk_organizations::list_accounts_for_parent, |req, w| {
        let direct: &[&str] = match req.parent_id() {
            Some(ROOT) => &[MANAGEMENT, SECURITY, SINGLE],
            Some(OU) => &[IN_OU],
            _ => &[],
        };
        Ok(aws_sdk_organizations::operation::list_accounts_for_parent::ListAccountsForParentOutput::builder()
            .set_accounts(Some(
                direct
                    .iter()
                    .map(|a| aws_sdk_organizations::types::Account::builder().id(*a).build())
                    .collect(),
            ))
            .build())
    });
    on!(
        aws_sdk_organizations::list_organizational_units_for_parent,
        |req, w| {
            let ous: &[&str] = if req.parent_id() == Some(ROOT) {
                &[OU]
            } else {
                &[]
            };
            Ok(aws_sdk_organizations::operation::list_organizational_units_for_parent::ListOrganizationalUnitsForParentOutput::builder()
            .set_organizational_units(Some(
                ous.iter()
                    .map(|o| aws_sdk_organizations::types::OrganizationalUnit::builder().id(*o).build())
                    .collect(),
            ))
            .build())
        }
    );
    on!(
        aws_sdk_organizations::list_delegated_administrators,
        |req, w| {
            Ok(
        aws_sdk_organizations::operation::list_delegated_administrators::ListDelegatedAdministratorsOutput::builder()
            .delegated_administrators(
                aws_sdk_organizations::types::DelegatedAdministrator::builder().id(SECURITY).build()
            )
            .build()
    )
        }
    );

    // The security account: nothing there yet.
    on!(aws_sdk_secretsmanager::describe_secret, |req, w| Fail(
        aws_sdk_secretsmanager::operation::describe_secret::DescribeSecretError::generic(
            not_found(
                "ResourceNotFoundException",
                "Secrets Manager can't find the specified secret."
            )
        )
    ));
    on!(aws_sdk_secretsmanager::create_secret, |req, w| Ok(
        aws_sdk_secretsmanager::operation::create_secret::CreateSecretOutput::builder()
            .arn(format!(
                "arn:aws:secretsmanager:us-east-1:{SECURITY}:secret:quell/external-ids-AbCdEf"
            ))
            .build()
    ));
    on!(aws_sdk_dynamodb::describe_table, |req, w| Fail(
        aws_sdk_dynamodb::operation::describe_table::DescribeTableError::generic(not_found(
            "ResourceNotFoundException",
            "Requested resource not found"
        ))
    ));
    on!(aws_sdk_s3::head_object, |req, w| Fail(
        aws_sdk_s3::operation::head_object::HeadObjectError::generic(not_found("NotFound", "404"))
    ));
    on!(aws_sdk_s3::put_object, |req, w| Ok(
        aws_sdk_s3::operation::put_object::PutObjectOutput::builder().build()
    ));
    on!(aws_sdk_securityhub::describe_action_targets, |req, w| {
        Ok(
        aws_sdk_securityhub::operation::describe_action_targets::DescribeActionTargetsOutput::builder()
            .set_action_targets(Some(vec![]))
            .build()
    )
    });
    on!(aws_sdk_securityhub::create_action_target, |req, w| Ok(
        aws_sdk_securityhub::operation::create_action_target::CreateActionTargetOutput::builder()
            .action_target_arn(format!(
                "arn:aws:securityhub:us-east-1:{SECURITY}:action/custom/{}",
                req.id().unwrap_or_default()
            ))
            .build()
    ));
    on!(
        aws_sdk_securityhub::describe_organization_configuration,
        |req, w| {
            Ok(
        aws_sdk_securityhub::operation::describe_organization_configuration::DescribeOrganizationConfigurationOutput::builder().build()
    )
        }
    );
    on!(aws_sdk_securityhub::describe_hub, |req, w| Ok(
        aws_sdk_securityhub::operation::describe_hub::DescribeHubOutput::builder().build()
    ));

    // What doctor reads in every target account and Region.
    on!(
        aws_sdk_config::describe_configuration_recorder_status,
        |req, w| {
            Ok(
        aws_sdk_config::operation::describe_configuration_recorder_status::DescribeConfigurationRecorderStatusOutput::builder()
            .configuration_recorders_status(
                aws_sdk_config::types::ConfigurationRecorderStatus::builder()
                    .name("default")
                    .recording(true)
                    .build()
            )
            .build()
    )
        }
    );
    on!(aws_sdk_cloudtrail::describe_trails, |req, w| Ok(
        aws_sdk_cloudtrail::operation::describe_trails::DescribeTrailsOutput::builder()
            .trail_list(
                aws_sdk_cloudtrail::types::Trail::builder()
                    .trail_arn(format!(
                        "arn:aws:cloudtrail:us-east-1:{MANAGEMENT}:trail/org"
                    ))
                    .is_multi_region_trail(true)
                    .build()
            )
            .build()
    ));
    on!(aws_sdk_cloudtrail::get_trail_status, |req, w| Ok(
        aws_sdk_cloudtrail::operation::get_trail_status::GetTrailStatusOutput::builder()
            .is_logging(true)
            .build()
    ));

    // CloudFormation stacks: created at once, complete at once.
    on!(aws_sdk_cloudformation::list_stacks, |req, w| Ok(
        ListStacksOutput::builder().build()
    ));
    on!(aws_sdk_cloudformation::describe_stacks, |req, w| {
        let name = req.stack_name().unwrap_or_default();
        if w.stacks.contains_key(name) {
            let stack = &w.stacks[name];
            Ok(DescribeStacksOutput::builder()
                .stacks(
                    aws_sdk_cloudformation::types::Stack::builder()
                        .stack_name(name)
                        .stack_status(StackStatus::CreateComplete)
                        .set_parameters(Some(parameters(&stack.parameters)))
                        .set_outputs(Some(stack_outputs(name)))
                        .build(),
                )
                .build())
        } else {
            Fail(DescribeStacksError::generic(not_found(
                "ValidationError",
                &format!("Stack with id {name} does not exist"),
            )))
        }
    });
    on!(aws_sdk_cloudformation::get_template, |req, w| Ok(
        GetTemplateOutput::builder()
            .template_body(
                w.stacks
                    .get(req.stack_name().unwrap_or_default())
                    .map(|s| s.template.clone())
                    .unwrap_or_default()
            )
            .build()
    ));
    on!(aws_sdk_cloudformation::create_stack, |req, w| {
        w.stacks.insert(
            req.stack_name().unwrap_or_default().to_owned(),
            Stack {
                template: req.template_body().unwrap_or_default().to_owned(),
                parameters: params(req.parameters()),
            },
        );
        Ok(CreateStackOutput::builder().stack_id("stack-id").build())
    });

    // StackSets: every call notes its CallAs; operations succeed at once.
    on!(aws_sdk_cloudformation::describe_stack_set, |req, w| {
        w.stack_set_calls
            .push(("DescribeStackSet", req.call_as().cloned()));
        match w.stack_sets.get(req.stack_set_name().unwrap_or_default()) {
            Some(set) => Ok(DescribeStackSetOutput::builder()
                .stack_set(
                    aws_sdk_cloudformation::types::StackSet::builder()
                        .stack_set_name(req.stack_set_name().unwrap_or_default())
                        .template_body(set.template.clone())
                        .set_parameters(Some(parameters(&set.parameters)))
                        .set_organizational_unit_ids(Some(
                            set.organizational_units.iter().cloned().collect(),
                        ))
                        .build(),
                )
                .build()),
            None => Fail(DescribeStackSetError::generic(not_found(
                "StackSetNotFoundException",
                "StackSet not found",
            ))),
        }
    });
    on!(aws_sdk_cloudformation::create_stack_set, |req, w| {
        w.stack_set_calls
            .push(("CreateStackSet", req.call_as().cloned()));
        w.stack_sets.insert(
            req.stack_set_name().unwrap_or_default().to_owned(),
            StackSet {
                template: req.template_body().unwrap_or_default().to_owned(),
                parameters: params(req.parameters()),
                auto_deployment: req
                    .auto_deployment()
                    .and_then(aws_sdk_cloudformation::types::AutoDeployment::enabled)
                    .unwrap_or(false),
                ..StackSet::default()
            },
        );
        Ok(CreateStackSetOutput::builder()
            .stack_set_id("set-id")
            .build())
    });
    on!(aws_sdk_cloudformation::create_stack_instances, |req, w| {
        w.stack_set_calls
            .push(("CreateStackInstances", req.call_as().cloned()));
        let targets = req
            .deployment_targets()
            .cloned()
            .unwrap_or_else(|| aws_sdk_cloudformation::types::DeploymentTargets::builder().build());
        let set = w
            .stack_sets
            .get_mut(req.stack_set_name().unwrap_or_default())
            .expect("instances of a stack set that exists");
        for ou in targets.organizational_unit_ids() {
            set.organizational_units.insert(ou.clone());
            let accounts: Vec<String> = if targets.accounts().is_empty() {
                accounts_of(ou).into_iter().map(str::to_owned).collect()
            } else {
                targets.accounts().to_vec()
            };
            for a in accounts {
                for r in req.regions() {
                    set.instances.insert((a.clone(), r.clone()));
                }
            }
        }
        Ok(CreateStackInstancesOutput::builder()
            .operation_id("op")
            .build())
    });
    on!(aws_sdk_cloudformation::list_stack_instances, |req, w| {
        w.stack_set_calls
            .push(("ListStackInstances", req.call_as().cloned()));
        let summaries = w
            .stack_sets
            .get(req.stack_set_name().unwrap_or_default())
            .map(|s| {
                s.instances
                    .iter()
                    .map(|(a, r)| {
                        StackInstanceSummary::builder()
                            .account(a)
                            .region(r)
                            .status(StackInstanceStatus::Current)
                            .stack_instance_status(
                                StackInstanceComprehensiveStatus::builder()
                                    .detailed_status(StackInstanceDetailedStatus::Succeeded)
                                    .build(),
                            )
                            .build()
                    })
                    .collect()
            })
            .unwrap_or_default();
        Ok(ListStackInstancesOutput::builder()
            .set_summaries(Some(summaries))
            .build())
    });
    on!(
        aws_sdk_cloudformation::list_stack_set_operations,
        |req, w| {
            w.stack_set_calls
                .push(("ListStackSetOperations", req.call_as().cloned()));
            Ok(ListStackSetOperationsOutput::builder().build())
        }
    );
    on!(
        aws_sdk_cloudformation::describe_stack_set_operation,
        |req, w| {
            w.stack_set_calls
                .push(("DescribeStackSetOperation", req.call_as().cloned()));
            Ok(DescribeStackSetOperationOutput::builder()
                .stack_set_operation(
                    StackSetOperation::builder()
                        .operation_id("op")
                        .status(StackSetOperationStatus::Succeeded)
                        .build(),
                )
                .build())
        }
    );
    on!(
        aws_sdk_cloudformation::list_stack_set_operation_results,
        |req, w| {
            w.stack_set_calls
                .push(("ListStackSetOperationResults", req.call_as().cloned()));
            Ok(ListStackSetOperationResultsOutput::builder().build())
        }
    );
    rules
}

fn config(dir: &std::path::Path) -> Config {
    let text = include_str!("../../../quell.example.yaml").replace(
        "security_account_role: OrganizationAccountAccessRole",
        &format!(
            "security_account_role: OrganizationAccountAccessRole\nmanagement_account_role: {INSTALLER}"
        ),
    );
    let path = dir.join("quell.yaml");
    std::fs::write(&path, &text).unwrap();
    Config::load(&path).unwrap()
}

#[tokio::test]
async fn a_delegated_administrator_installs_with_call_as_and_the_management_role() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    assert_eq!(config.management_account_role.as_deref(), Some(INSTALLER));
    let bootstrap = dir.path().join("bootstrap");
    // An arm64 ELF header, as the example configuration's architecture asks.
    let mut elf = vec![0u8; 64];
    elf[..4].copy_from_slice(b"\x7fELF");
    elf[18] = 0xb7;
    std::fs::write(&bootstrap, elf).unwrap();

    let world: Shared = Arc::default();
    let mut mocks = MockResponseInterceptor::new().rule_mode(RuleMode::MatchAny);
    for rule in rules(&world) {
        mocks = mocks.with_rule(&rule);
    }
    let double = Double {
        interceptors: vec![
            SharedInterceptor::new(mocks),
            SharedInterceptor::new(SignedBy(world.clone())),
        ],
        http: create_mock_http_client(),
    };
    let base = aws_config::SdkConfig::builder()
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(
            aws_credential_types::provider::SharedCredentialsProvider::new(Credentials::new(
                CALLER_KEY, "secret", None, None, "test",
            )),
        )
        .behavior_version(aws_config::BehaviorVersion::latest())
        .build();
    let printer = Printer::new(&GlobalArgs {
        sandbox: false,
        profile: None,
        output: OutputFormat::Json,
        quiet: true,
        verbose: 0,
    });
    let args = ConvergeArgs {
        config: Some(dir.path().join("quell.yaml")),
        yes: true,
        dry_run: false,
        retry_failed: false,
        delegated_admin: true,
        bootstrap: Some(bootstrap),
        skip_checks: false,
    };
    let code = double::scope(double.clone(), async {
        let sts = crate::calls::client!(aws_sdk_sts, &base);
        let aws = Aws::with_clients(base.clone(), sts);
        Box::pin(converge(aws, config, &args, Verb::Install, &printer)).await
    })
    .await
    .expect("the delegated install ends well");
    assert_eq!(code, crate::exit::SUCCESS);

    let w = world.lock().unwrap();
    // Every StackSet call is made as the delegated administrator.
    assert!(w.stack_set_calls.len() > 10, "{:?}", w.stack_set_calls);
    for (op, call_as) in &w.stack_set_calls {
        assert_eq!(
            call_as,
            &Some(CallAs::DelegatedAdmin),
            "{op} without CallAs"
        );
    }
    // The management stack is created with the configured role there; everything else with the
    // caller's own credentials in its own account, and the member accounts only read by doctor.
    let installer = format!("arn:aws:iam::{MANAGEMENT}:role/{INSTALLER}");
    assert!(w.assumed.contains(&installer), "{:?}", w.assumed);
    let creates: Vec<&(String, String)> = w
        .signed
        .iter()
        .filter(|(op, _)| op == "CloudFormation:CreateStack")
        .collect();
    assert_eq!(
        creates.len(),
        3,
        "artifacts, security, management: {creates:?}"
    );
    assert_eq!(
        creates
            .iter()
            .filter(|(_, key)| *key == role_key(&installer))
            .count(),
        1,
        "the management stack, signed by {INSTALLER}: {creates:?}"
    );
    assert!(
        w.stack_sets.contains_key("quell-member-roles"),
        "{:?}",
        w.stack_sets.keys()
    );
    for (op, key) in &w.signed {
        if op.starts_with("CloudFormation:") && op.contains("StackSet")
            || op.contains("StackInstances")
        {
            assert_eq!(
                key, CALLER_KEY,
                "{op} is the delegated administrator's own call"
            );
        }
        assert!(
            !op.contains("EnableAWSServiceAccess") && !op.contains("ActivateOrganizationsAccess"),
            "a delegated administrator leaves trusted access to the management account: {op}"
        );
    }
    // Single accounts get their own stack set, which never auto-deploys; the OU's does.
    let ous = &w.stack_sets["quell-member-roles"];
    let singles = &w.stack_sets["quell-member-roles-accounts"];
    assert!(ous.auto_deployment && !singles.auto_deployment);
    assert_eq!(
        singles.instances,
        BTreeSet::from([(SINGLE.to_owned(), "us-east-1".to_owned())])
    );
    assert_eq!(
        ous.instances,
        BTreeSet::from([(IN_OU.to_owned(), "us-east-1".to_owned())])
    );
    assert_eq!(ous.organizational_units, BTreeSet::from([OU.to_owned()]));
    assert_eq!(
        w.stack_sets["quell-member-regional-accounts"]
            .instances
            .len(),
        2,
        "one account in two Regions"
    );
}
