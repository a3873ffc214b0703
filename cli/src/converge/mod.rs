//! `quell install` and `quell upgrade`: one converge. Render, read what is deployed, show the plan,
//! and apply exactly the difference: stacks, the responder package, StackSets and their stack
//! instances, each operation followed to its end. A run with nothing to change writes nothing.

mod apply;
pub mod custom_actions;
#[cfg(test)]
mod delegated_tests;
mod inputs;
pub mod org_tree;
pub mod organization;
pub mod plan;
pub mod secret;
pub mod stack;
pub mod stack_set;
#[cfg(test)]
mod tests;

use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use aws_config::SdkConfig;
use aws_sdk_cloudformation::types::CallAs;
use quell_responder::aws_error::Described;
use quell_responder::secret::ExternalIds;

use crate::args::{ConvergeArgs, GlobalArgs};
use crate::aws::{Aws, Caller};
use crate::calls::client;
use crate::config::Config;
use crate::deployment;
use crate::printer::{confirm, Printer};
use crate::render::{self, Rendered, StackSetDefinition};
use crate::{exit, package};
use inputs::Inputs;
use org_tree::OrgTree;
use organization::Organization;
use plan::{Plan, StackPlan, StackSetPlan, Target};
use stack::{DeployedStack, Stack};
use stack_set::StackSet;

/// Parameters whose values are never printed.
pub const SENSITIVE: &[&str] = &["RoleExternalId"];

/// Between two looks at a running stack or StackSet operation.
const POLL: Duration = Duration::from_secs(3);

/// Which command asked: they differ only in what they expect to find.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    Install,
    Upgrade,
}

/// Everything a converge works with, read once.
pub struct Context {
    pub config: Config,
    pub rendered: Rendered,
    /// The responder build to deploy: only install and upgrade have one.
    pub package: Option<package::Package>,
    pub aws: Aws,
    pub caller: Caller,
    pub org: Organization,
    pub tree: OrgTree,
    pub security: SdkConfig,
    pub management: SdkConfig,
    pub call_as: Option<CallAs>,
    pub definitions: Vec<StackSetDefinition>,
    pub cfn: aws_sdk_cloudformation::Client,
    pub poll: Duration,
}

/// What is deployed now.
pub struct Observed {
    pub trusted_access: bool,
    pub secret: Option<(String, ExternalIds)>,
    pub artifacts: Option<DeployedStack>,
    pub security: Option<DeployedStack>,
    pub management: Option<DeployedStack>,
    pub artifact_uploaded: bool,
    /// The declared playbooks' document is in the bucket (or there is none to ship).
    pub playbooks_uploaded: bool,
    pub stack_sets: Vec<Option<stack_set::Deployed>>,
    pub custom_actions: custom_actions::Observed,
}

/// The three plain stacks, in the order they depend on each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StackKind {
    Artifacts,
    Security,
    Management,
}

impl Context {
    pub async fn connect(
        global: &GlobalArgs,
        config_path: Option<&Path>,
        delegated_admin: bool,
    ) -> anyhow::Result<Context> {
        let config = Config::load(&crate::config_file::find(global, config_path)?)?;
        let aws = Aws::connect(global, &config.home_region).await?;
        Context::reach(aws, config, delegated_admin).await
    }

    /// Everything the run needs, read through `aws`.
    pub async fn reach(aws: Aws, config: Config, delegated_admin: bool) -> anyhow::Result<Context> {
        let rendered = render::render_all(&config)?;
        let caller = aws.caller().await?;
        let org = organization::check(&aws, &caller, &config, delegated_admin).await?;
        let tree = OrgTree::read(&client!(aws_sdk_organizations, aws.base())).await?;
        let security = aws.security_account(&caller, &config).await?;
        let management = match management_role(&caller, &org.management_account, &config)? {
            None => aws.in_region(&config.home_region),
            Some(role) => {
                aws.account(&caller, &org.management_account, &config.home_region, role)
                    .await?
            }
        };
        let cfn = client!(aws_sdk_cloudformation, aws.base());
        // The sandbox finishes every operation at once; polling it every 3 s only wastes time.
        let poll = if aws.sandbox().is_some() {
            Duration::from_millis(200)
        } else {
            POLL
        };
        Ok(Context {
            rendered,
            package: None,
            caller,
            org,
            tree,
            security,
            management,
            call_as: delegated_admin.then_some(CallAs::DelegatedAdmin),
            definitions: StackSetDefinition::all(),
            cfn,
            poll,
            aws,
            config,
        })
    }

    /// The build being deployed.
    pub fn package(&self) -> &package::Package {
        self.package
            .as_ref()
            .expect("install and upgrade build the package before they plan")
    }

    pub fn stack(&self, kind: StackKind) -> Stack<'_> {
        let c = &self.config;
        let (config, name, place) = match kind {
            StackKind::Artifacts => (
                &self.security,
                deployment::artifacts_stack(&c.name),
                format!(
                    "security account {} in {}",
                    c.security_account, c.home_region
                ),
            ),
            StackKind::Security => (
                &self.security,
                deployment::security_stack(&c.name),
                format!(
                    "security account {} in {}",
                    c.security_account, c.home_region
                ),
            ),
            StackKind::Management => (
                &self.management,
                deployment::management_stack(&c.name),
                format!(
                    "management account {} in {}",
                    self.org.management_account, c.home_region
                ),
            ),
        };
        Stack {
            config,
            name,
            place,
            poll: self.poll,
            // The sandbox ends every stack operation within seconds, or never (an emulator
            // error mid-way); on AWS a stack may take its time.
            deadline: if self.aws.sandbox().is_some() {
                Duration::from_secs(120)
            } else {
                Duration::from_secs(3 * 3600)
            },
        }
    }

    pub fn stack_account(&self, kind: StackKind) -> &str {
        match kind {
            StackKind::Artifacts | StackKind::Security => &self.config.security_account,
            StackKind::Management => &self.org.management_account,
        }
    }

    pub fn stack_set(&self, definition: &StackSetDefinition) -> StackSet<'_> {
        StackSet {
            cfn: &self.cfn,
            name: definition.full_name(&self.config),
            call_as: self.call_as.clone(),
            preferences: stack_set::preferences(
                &self.config.operation_preferences,
                self.targets_of(definition)
                    .iter()
                    .flat_map(|t| t.accounts.iter())
                    .collect::<std::collections::BTreeSet<_>>()
                    .len(),
            ),
            poll: self.poll,
            sandbox: self.aws.sandbox().is_some(),
        }
    }

    pub fn targets(&self) -> Vec<Target> {
        Target::resolve(
            &self.org.targets.organizational_units,
            &self.org.targets.accounts,
            &self.tree,
            &self.org.management_account,
        )
    }

    /// The targets one stack set deploys to.
    pub fn targets_of(&self, definition: &StackSetDefinition) -> Vec<Target> {
        self.targets()
            .into_iter()
            .filter(|t| definition.reaches(t.whole_ou))
            .collect()
    }

    /// Reads everything the plan compares against. Only reads.
    pub async fn observe(&self) -> anyhow::Result<Observed> {
        let name = &self.config.name;
        let secret = secret::read(&self.security, &deployment::secret_name(name)).await?;
        let artifacts = self.stack(StackKind::Artifacts).read().await?;
        let artifact_uploaded = match artifacts
            .as_ref()
            .and_then(|s| s.outputs.get("ArtifactBucketName"))
        {
            Some(bucket) => is_uploaded(&self.security, bucket, &self.package().key()).await?,
            None => false,
        };
        let playbooks_uploaded = match (
            &self.config.playbook_document,
            artifacts
                .as_ref()
                .and_then(|s| s.outputs.get("ArtifactBucketName")),
        ) {
            (None, _) => true,
            (Some(document), Some(bucket)) => {
                is_uploaded(&self.security, bucket, &document.key).await?
            }
            (Some(_), None) => false,
        };
        let mut stack_sets = Vec::new();
        for d in &self.definitions {
            stack_sets.push(self.stack_set(d).describe().await?);
        }
        Ok(Observed {
            // Only the management account can read it; a delegated administrator is registered
            // only once trusted access is on.
            trusted_access: self.call_as.is_some()
                || organization::trusted_access_enabled(&self.aws).await?,
            secret,
            artifacts,
            security: self.stack(StackKind::Security).read().await?,
            management: self.stack(StackKind::Management).read().await?,
            artifact_uploaded,
            playbooks_uploaded,
            stack_sets,
            custom_actions: custom_actions::read(
                &custom_actions::client(&self.security),
                &self.config.security_account,
                &self.config.home_region,
            )
            .await?,
        })
    }

    /// The plan: what applying would change.
    pub fn plan(&self, observed: &Observed, retry_failed: bool) -> anyhow::Result<Plan> {
        let inputs = Inputs::observed(self, observed);
        let mut stacks = Vec::new();
        for (kind, deployed) in [
            (StackKind::Artifacts, &observed.artifacts),
            (StackKind::Security, &observed.security),
            (StackKind::Management, &observed.management),
        ] {
            let current = deployed.as_ref().map(|d| plan::Current {
                template: &d.template,
                parameters: &d.parameters,
                failed_creation: d.failed_creation(),
            });
            stacks.push(StackPlan {
                name: self.stack(kind).name,
                account: self.stack_account(kind).to_owned(),
                region: self.config.home_region.clone(),
                change: plan::diff(
                    self.template_of(kind),
                    &inputs.stack_parameters(self, kind),
                    current.as_ref(),
                    SENSITIVE,
                ),
            });
        }
        let mut stack_sets = Vec::new();
        for (definition, deployed) in self.definitions.iter().zip(&observed.stack_sets) {
            let targets = self.targets_of(definition);
            let template = &self.rendered[definition.template.as_str()];
            let current = deployed.as_ref().map(|d| plan::Current {
                template: &d.template,
                parameters: &d.parameters,
                failed_creation: false,
            });
            let regions = definition.regions(&self.config);
            let instances = deployed.as_ref().map_or(&[][..], |d| &d.instances[..]);
            // A stack set created in this run deploys to no OU yet.
            let none_yet = std::collections::BTreeSet::new();
            let registered = match deployed {
                Some(d) => d.organizational_units.as_ref(),
                None => Some(&none_yet),
            };
            stack_sets.push(StackSetPlan {
                skipped: deployed.is_none() && targets.is_empty(),
                name: definition.full_name(&self.config),
                change: plan::diff(
                    template,
                    &inputs.stack_set_parameters(definition)?,
                    current.as_ref(),
                    SENSITIVE,
                ),
                instance_changes: plan::instance_changes(
                    &targets,
                    &regions,
                    instances,
                    registered,
                    &self.tree,
                    retry_failed,
                ),
                instances: instances.len(),
                regions,
            });
        }
        plan::hand_over(&mut stack_sets);
        let wanted_actions = custom_actions::wanted(self.config.playbook_document.as_ref());
        Ok(Plan {
            organization_id: self.org.id.clone(),
            trusted_access: !observed.trusted_access,
            create_secret: observed.secret.is_none(),
            custom_actions: observed.custom_actions.missing(&wanted_actions),
            remove_custom_actions: observed.custom_actions.stale(&wanted_actions),
            custom_actions_unavailable: match &observed.custom_actions {
                custom_actions::Observed::Unavailable { reason } => Some(reason.clone()),
                custom_actions::Observed::Available { .. } => None,
            },
            artifact_key: self.package().key(),
            upload_artifact: !observed.artifact_uploaded,
            playbooks_key: self
                .config
                .playbook_document
                .as_ref()
                .map(|d| d.key.clone()),
            upload_playbooks: self
                .config
                .playbook_document
                .as_ref()
                .filter(|_| !observed.playbooks_uploaded)
                .map(|d| d.key.clone()),
            stacks,
            stack_sets,
            cost: None,
        })
    }

    pub fn template_of(&self, kind: StackKind) -> &str {
        &self.rendered[match kind {
            StackKind::Artifacts => "artifacts.yaml",
            StackKind::Security => "security.yaml",
            StackKind::Management => "management.yaml",
        }]
    }
}

async fn is_uploaded(security: &SdkConfig, bucket: &str, key: &str) -> anyhow::Result<bool> {
    match client!(aws_sdk_s3, security)
        .head_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .described("s3:HeadObject")
    {
        Ok(_) => Ok(true),
        Err(e)
            if e.is_code("NotFound")
                || e.is_code("NoSuchKey")
                || e.failure.message.contains("404") =>
        {
            Ok(false)
        }
        Err(e) => Err(e.into()),
    }
}

/// A ledger kept by an earlier uninstall would make the new security stack fail half-way.
async fn refuse_orphan_ledger(ctx: &Context) -> anyhow::Result<()> {
    if !deployment::ledger_exists(&ctx.security, &ctx.config.name).await? {
        return Ok(());
    }
    Err(exit::refused(format!(
        "ledger table {} from an earlier installation is still in security account {}: keep its records with `quell uninstall --delete-ledger --config ...` (exports them to a file, then deletes the table), or choose another `name` in the configuration",
        deployment::ledger_table(&ctx.config.name),
        ctx.config.security_account
    )))
}

pub async fn run(
    global: &GlobalArgs,
    args: &ConvergeArgs,
    verb: Verb,
    printer: &Printer,
) -> anyhow::Result<u8> {
    // Loading checks the declared playbooks: a broken one stops the run here, before any call.
    let path = crate::config_file::find(global, args.config.as_deref())?;
    let config = Config::load(&path)?;
    if let Some(document) = &config.playbook_document {
        document.refuse_unrunnable()?;
    }
    let aws = Aws::connect(global, &config.home_region).await?;
    Box::pin(converge(aws, config, args, verb, printer)).await
}

/// One converge through `aws`, for `config` read from `args.config`.
pub async fn converge(
    aws: Aws,
    config: Config,
    args: &ConvergeArgs,
    verb: Verb,
    printer: &Printer,
) -> anyhow::Result<u8> {
    let bootstrap = match &args.bootstrap {
        Some(p) => p.clone(),
        None => package::default_bootstrap()?,
    };
    let build = package::build(&bootstrap, config.responder.architecture)?;
    let mut ctx = Context::reach(aws, config, args.delegated_admin).await?;
    if verb == Verb::Install && !args.skip_checks {
        crate::doctor::refuse_if_install_would_fail(
            &ctx.aws,
            &ctx.caller,
            &ctx.config,
            args.delegated_admin,
            printer,
        )
        .await?;
    }
    ctx.package = Some(build);
    let observed = ctx.observe().await?;
    if verb == Verb::Upgrade && observed.security.is_none() {
        return Err(exit::refused(format!(
            "no stack {} in security account {} ({}): run `quell install` with this configuration first",
            deployment::security_stack(&ctx.config.name),
            ctx.config.security_account,
            ctx.config.home_region,
        )));
    }
    if observed.security.is_none() {
        refuse_orphan_ledger(&ctx).await?;
    }
    let mut plan = ctx.plan(&observed, args.retry_failed)?;
    plan.cost = Some(crate::cost::for_context(&ctx)?);
    if args.dry_run {
        printer.result(&plan, || plan.text(printer));
        return Ok(exit::SUCCESS);
    }
    if !plan.changes_anything() {
        let summary = apply::Summary::unchanged(&ctx, &observed, plan).await?;
        printer.result(&summary, || summary.text(printer));
        return Ok(exit::SUCCESS);
    }
    printer.block(&plan.text(printer));
    let question = match verb {
        Verb::Install => "Apply this plan and install Quell?",
        Verb::Upgrade => "Apply this plan?",
    };
    if !confirm(printer, question, args.yes)? {
        return Err(exit::refused("cancelled; nothing was changed"));
    }
    let summary = apply::apply(&ctx, &observed, plan, printer).await?;
    printer.result(&summary, || summary.text(printer));
    Ok(if summary.failed_instances.is_empty() {
        exit::SUCCESS
    } else {
        exit::INSTANCES_FAILED
    })
}

/// The role to assume in the management account, or `None` when the caller is already there.
/// A delegated administrator runs elsewhere, and Organizations makes no role in the management
/// account: the configuration must name one.
fn management_role<'a>(
    caller: &Caller,
    management_account: &str,
    config: &'a Config,
) -> anyhow::Result<Option<&'a str>> {
    if caller.account == management_account {
        return Ok(None);
    }
    config.management_account_role.as_deref().map(Some).with_context(|| {
        format!(
            "{} is not in the management account {management_account}, and the management stack (the organization reader) is deployed there: set management_account_role in the configuration to a role there that {} may assume (with CloudFormation and IAM rights), or run quell from the management account",
            caller.arn, caller.arn
        )
    })
}

#[cfg(test)]
mod management_role_tests {
    use super::*;

    fn config(role: Option<&str>) -> Config {
        let mut c = Config::parse(
            include_str!("../../../quell.example.yaml"),
            Path::new("quell.example.yaml"),
        )
        .unwrap();
        c.management_account_role = role.map(str::to_owned);
        c
    }

    fn caller(account: &str) -> Caller {
        Caller {
            account: account.into(),
            arn: format!("arn:aws:sts::{account}:assumed-role/Admin/me"),
        }
    }

    #[test]
    fn a_delegated_administrator_uses_the_configured_management_role_or_is_told_to_set_one() {
        let management = "999988887777";
        assert_eq!(
            management_role(&caller(management), management, &config(None)).unwrap(),
            None,
            "in the management account: its own credentials"
        );
        assert_eq!(
            management_role(
                &caller("222233334444"),
                management,
                &config(Some("QuellInstaller"))
            )
            .unwrap(),
            Some("QuellInstaller")
        );
        let e = management_role(&caller("222233334444"), management, &config(None)).unwrap_err();
        assert!(e.to_string().contains("set management_account_role"), "{e}");
    }
}
