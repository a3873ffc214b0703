//! Rendering the Handlebars templates with a configuration.

use std::collections::BTreeMap;

use handlebars::Handlebars;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::assets::{self, TemplateSource};
use crate::config::Config;
use quell_responder::authorization::Channel;

/// `contain` -> `Contain`: a CloudFormation logical id part.
fn title(word: &str) -> String {
    let mut c = word.chars();
    c.next()
        .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
        .unwrap_or_default()
}

/// A managed AWS Config rule that the regional StackSet deploys.
#[derive(Debug, Serialize)]
struct ConfigRule {
    logical_id: &'static str,
    name: &'static str,
    identifier: &'static str,
    description: &'static str,
    resource_types: &'static [&'static str],
    periodic: bool,
}

const CONFIG_RULES: &[ConfigRule] = &[
    ConfigRule {
        logical_id: "RestrictedSshRule",
        name: "restricted-ssh",
        identifier: "INCOMING_SSH_DISABLED",
        description: "Security groups must not allow SSH from anywhere.",
        resource_types: &["AWS::EC2::SecurityGroup"],
        periodic: false,
    },
    ConfigRule {
        logical_id: "S3PublicReadRule",
        name: "s3-bucket-public-read-prohibited",
        identifier: "S3_BUCKET_PUBLIC_READ_PROHIBITED",
        description: "S3 buckets must not allow public read access.",
        resource_types: &["AWS::S3::Bucket"],
        periodic: false,
    },
    ConfigRule {
        logical_id: "S3PublicWriteRule",
        name: "s3-bucket-public-write-prohibited",
        identifier: "S3_BUCKET_PUBLIC_WRITE_PROHIBITED",
        description: "S3 buckets must not allow public write access.",
        resource_types: &["AWS::S3::Bucket"],
        periodic: false,
    },
    ConfigRule {
        logical_id: "EbsSnapshotPublicRule",
        name: "ebs-snapshot-public-restorable",
        identifier: "EBS_SNAPSHOT_PUBLIC_RESTORABLE_CHECK",
        description: "EBS snapshots must not be restorable by everyone.",
        resource_types: &[],
        periodic: true,
    },
];

/// One StackSet definition from `stacksets/`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StackSetDefinition {
    /// Suffix of the StackSet name: `<prefix>-<name>`.
    pub name: String,
    pub template: String,
    pub regions: RegionScope,
    pub capabilities: Vec<String>,
    pub auto_deployment: AutoDeployment,
    pub parameters: Vec<String>,
    /// Which of the configured targets this stack set deploys to.
    #[serde(skip, default)]
    pub reach: Reach,
}

/// Each definition is deployed as two stack sets, one per kind of target. Auto-deployment is a
/// setting of the whole stack set and follows every OU an operation has named, account filters
/// notwithstanding: single accounts deployed through their parent OU in an auto-deploying stack
/// set would bring every account that later joins that OU along. So the configured OUs get a stack
/// set that auto-deploys, and single accounts one that never does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Reach {
    /// The configured OUs, every account in them now and later.
    #[default]
    OrganizationalUnits,
    /// The configured single accounts, and no others ever.
    Accounts,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RegionScope {
    /// The home Region only (global resources such as IAM roles).
    Home,
    /// Every configured Region.
    All,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AutoDeployment {
    pub enabled: bool,
    pub retain_stacks_on_account_removal: bool,
}

impl StackSetDefinition {
    /// Every stack set, in deployment order: each definition for OUs, then for single accounts.
    pub fn all() -> Vec<StackSetDefinition> {
        assets::STACKSETS
            .iter()
            .flat_map(|text| {
                let ous: StackSetDefinition =
                    serde_saphyr::from_str(text).expect("stacksets/*.yaml are checked by tests");
                let accounts = StackSetDefinition {
                    name: format!("{}-accounts", ous.name),
                    auto_deployment: AutoDeployment {
                        enabled: false,
                        retain_stacks_on_account_removal: false,
                    },
                    reach: Reach::Accounts,
                    ..ous.clone()
                };
                [ous, accounts]
            })
            .collect()
    }

    /// Whether a configured target is this stack set's to deploy.
    pub fn reaches(&self, whole_ou: bool) -> bool {
        whole_ou == (self.reach == Reach::OrganizationalUnits)
    }

    pub fn full_name(&self, config: &Config) -> String {
        format!("{}-{}", config.name, self.name)
    }

    pub fn regions(&self, config: &Config) -> Vec<String> {
        match self.regions {
            RegionScope::Home => vec![config.home_region.clone()],
            RegionScope::All => config.all_regions(),
        }
    }
}

/// Rendered templates by file name.
pub type Rendered = BTreeMap<&'static str, String>;

pub fn render_all(config: &Config) -> anyhow::Result<Rendered> {
    let mut hb = Handlebars::new();
    hb.set_strict_mode(true);
    // CloudFormation YAML, not HTML: nothing to escape.
    hb.register_escape_fn(handlebars::no_escape);
    let authorization = config.authorization();
    let context = json!({
        "name": config.name,
        "responder": {
            "architecture": config.responder.architecture.lambda_name(),
            "memory_mb": config.responder.memory_mb,
            "timeout_seconds": config.responder.timeout_seconds,
            "log_retention_days": config.responder.log_retention_days,
            "events_concurrency": config.responder.events_concurrency,
            "reserved_concurrency": config.responder.reserved_concurrency,
            "call_timeout_seconds": config.responder.call_timeout_seconds,
        },
        // Inside a single-quoted YAML scalar: quotes are doubled.
        "protected_principals_json": serde_json::to_string(&config.protected_principals)?.replace('\'', "''"),
        "config_rules": config.config_rules,
        "isolation_wait_seconds": config.containment.isolation_wait_seconds,
        // Lambda's rule for queue event sources: at least six times the function timeout.
        "isolation_visibility_timeout": config.responder.timeout_seconds * 6,
        "config_rules_list": CONFIG_RULES,
        "sweep_schedule": config.sweep.schedule,
        "sweep_concurrency": config.sweep.concurrency,
        "regions_json": serde_json::to_string(&config.all_regions())?,
        "playbooks_json": serde_json::to_string(&config.playbook_settings())?.replace('\'', "''"),
        "authorization_json": serde_json::to_string(&authorization)?.replace('\'', "''"),
        "declared_playbooks_key": config.playbook_document.as_ref().map(|d| d.key.clone()),
        // JSON is YAML's flow style: the pattern goes in as it is.
        "declared_forwarded": config
            .playbook_document
            .as_ref()
            .and_then(|d| d.forwarded.as_ref())
            .map(ToString::to_string),
        "declared_actions": config
            .playbook_document
            .as_ref()
            .map(|d| d.custom_actions.iter().map(|(id, _, _)| id.clone()).collect::<Vec<_>>())
            .unwrap_or_default(),
        "declared_schedules": config
            .playbook_document
            .as_ref()
            .map(|d| d.schedules.clone())
            .unwrap_or_default(),
        "ssm_documents_json": serde_json::to_string(&config.ssm_documents)?,
        // Inside a single-quoted YAML scalar: quotes are doubled.
        "webhooks_json": serde_json::to_string(&config.webhooks)?.replace('\'', "''"),
        "webhook_secrets": config.webhooks.values().filter_map(|h| h.secret.clone()).collect::<Vec<_>>(),
        "ssm_documents": config.ssm_documents,
        "member_forwarded": config
            .playbook_document
            .as_ref()
            .and_then(|d| d.member_forwarded.as_ref())
            .map(ToString::to_string),
        "request_queues": Channel::ALL.iter().map(|c| Ok(json!({
            "logical_id": format!("{}RequestsQueue", title(c.as_str())),
            "kind": c.as_str(),
            // A JSON array is a YAML flow sequence; the patterns hold no quotes (config checks).
            "patterns_json": serde_json::to_string(authorization.patterns(*c))?,
        }))).collect::<anyhow::Result<Vec<_>>>()?,
    });
    let mut out = Rendered::new();
    for t in assets::ALL_TEMPLATES {
        out.insert(t.file, render_one(&hb, t, &context)?);
    }
    crate::limits::check_environment(&out["security.yaml"])?;
    Ok(out)
}

fn render_one(
    hb: &Handlebars,
    t: &TemplateSource,
    context: &serde_json::Value,
) -> anyhow::Result<String> {
    hb.render_template(t.source, context)
        .map_err(|e| anyhow::anyhow!("template {} does not render: {e}", t.file))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn config() -> Config {
        Config::parse(
            include_str!("../../quell.example.yaml"),
            Path::new("quell.example.yaml"),
        )
        .unwrap()
    }

    #[test]
    fn every_template_renders_with_names_and_settings() {
        let r = render_all(&config()).unwrap();
        assert_eq!(r.len(), 5);
        let security = &r["security.yaml"];
        assert!(security.contains("FunctionName: quell-responder\n"));
        assert!(security.contains("- arm64\n"));
        assert!(security.contains(r#"QUELL_PROTECTED_PRINCIPALS: '["arn:aws:iam::*:role/OrganizationAccountAccessRole","arn:aws:iam::*:role/BreakGlass*"]'"#));
        assert!(
            !r.values().any(|t| t.contains("{{")),
            "no placeholder left behind"
        );
        let regional = &r["member-regional.yaml"];
        assert!(regional.contains("SourceIdentifier: S3_BUCKET_PUBLIC_READ_PROHIBITED"));
        assert!(regional.contains("Name: quell-forward-api-calls"));
    }

    #[test]
    fn the_custom_action_rule_names_the_actions_install_creates() {
        let r = render_all(&config()).unwrap();
        for a in crate::converge::custom_actions::wanted(None) {
            assert!(
                r["security.yaml"].contains(&format!("action/custom/{}\"", a.id)),
                "{}",
                a.id
            );
        }
        assert!(r["member-regional.yaml"].contains("- CreateSnapshot"));
    }

    /// The part of a rendered template from `start` on.
    fn from<'a>(text: &'a str, start: &str) -> &'a str {
        &text[text.find(start).unwrap_or_else(|| panic!("no {start:?}"))..]
    }

    /// The part of a rendered template from `start` up to `end`.
    fn between<'a>(text: &'a str, start: &str, end: &str) -> &'a str {
        let rest = from(text, start);
        &rest[..rest
            .find(end)
            .unwrap_or_else(|| panic!("no {end:?} after {start:?}"))]
    }

    #[test]
    fn the_responder_acts_on_exactly_the_config_rules_rendered() {
        let rendered: Vec<&str> = CONFIG_RULES.iter().map(|r| r.name).collect();
        assert_eq!(rendered, quell_responder::playbooks::event::CONFIG_RULES);
        let r = render_all(&config()).unwrap();
        for name in rendered {
            assert!(
                r["member-regional.yaml"].contains(&format!("            - quell-{name}\n")),
                "the forwarding rule names {name} exactly"
            );
        }
        assert!(!r["member-regional.yaml"].contains("prefix:"));
    }

    #[test]
    fn custom_actions_reach_the_responder_only_from_the_security_account() {
        let r = render_all(&config()).unwrap();
        let member = &r["member-regional.yaml"];
        assert!(
            !member.contains("Security Hub Findings - Custom Action"),
            "members never forward custom actions"
        );
        let security = &r["security.yaml"];
        let central_rule = between(security, "RemediationRule:", "CustomActionRule:");
        assert!(
            !central_rule.contains("Custom Action"),
            "the central bus's rule takes no custom actions"
        );
        let bus_policy = from(security, "CentralBusPolicy:");
        assert!(
            bus_policy.contains("aws:PrincipalArn: !Sub \"arn:${AWS::Partition}:iam::*:role/quell-event-forwarder-*\""),
            "only Quell's forwarder roles put events on the central bus"
        );
        assert!(security.contains("QUELL_REGIONS: '[\"us-east-1\",\"eu-west-1\"]'"));
    }

    #[test]
    fn no_queue_lambda_writes_to_can_hold_the_external_id() {
        let r = render_all(&config()).unwrap();
        let security = &r["security.yaml"];
        let function = between(security, "  ResponderFunction:", "  ContainmentTopic:");
        assert!(
            !function.contains("DeadLetterConfig"),
            "Lambda would put the whole SNS event, ExternalId attribute included, in it"
        );
        assert!(security.contains("MetricName: AsyncEventsDropped"));
        let dlq_policy = from(security, "DeadLetterQueuePolicy:");
        assert!(dlq_policy.contains(
            "aws:PrincipalArn:\n                  - !GetAtt ResponderRole.Arn\n                  - !GetAtt TimerRole.Arn\n"
        ));
    }

    #[test]
    fn every_queue_reports_partial_batch_failures_and_events_never_take_every_environment() {
        let r = render_all(&config()).unwrap();
        let security = &r["security.yaml"];
        let mappings: Vec<&str> = security
            .split("Type: AWS::Lambda::EventSourceMapping")
            .skip(1)
            .collect();
        assert!(mappings.len() >= 3, "{}", mappings.len());
        for m in &mappings {
            let properties = m.split("\n\n").next().unwrap_or_default();
            assert!(
                properties.contains("FunctionResponseTypes:\n        - ReportBatchItemFailures"),
                "{properties}"
            );
        }
        let events = between(security, "EventSourceArn: !GetAtt EventsQueue.Arn", "\n\n");
        assert!(events.contains("MaximumConcurrency: 5"), "{events}");
        assert!(!security.contains("ReservedConcurrentExecutions"));

        let mut reserved = config();
        reserved.responder.reserved_concurrency = Some(20);
        reserved.responder.events_concurrency = 8;
        let r = render_all(&reserved).unwrap();
        let security = &r["security.yaml"];
        assert!(security.contains("      ReservedConcurrentExecutions: 20\n"));
        assert!(security.contains("MaximumConcurrency: 8"));
    }

    #[test]
    fn only_the_items_the_responder_marks_expire_and_the_name_is_the_one_it_writes() {
        let r = render_all(&config()).unwrap();
        let table = between(&r["security.yaml"], "  LedgerTable:", "  ResponderRole");
        assert!(
            table.contains(&format!(
                "TimeToLiveSpecification:\n        AttributeName: {}\n        Enabled: true",
                quell_responder::ledger::EXPIRES_ATTRIBUTE
            )),
            "{table}"
        );
    }

    #[test]
    fn the_responder_may_delete_only_its_locks_from_the_ledger() {
        let r = render_all(&config()).unwrap();
        let security = &r["security.yaml"];
        let ledger = between(security, "Sid: Ledger\n", "Sid: IsolationSchedule");
        let deletes: Vec<&str> = ledger.matches("dynamodb:DeleteItem").collect();
        assert_eq!(deletes.len(), 1, "one statement allows deletes");
        let locks = from(ledger, "Sid: LedgerLocksOnly");
        assert!(locks.contains("dynamodb:DeleteItem"));
        let prefix = quell_responder::ledger::LOCK_PREFIX;
        assert!(locks.contains(&format!(
            "dynamodb:LeadingKeys:\n                      - \"{prefix}*\""
        )));
    }

    #[test]
    fn the_member_role_shapes_and_creates_only_groups_tagged_as_quells() {
        let r = render_all(&config()).unwrap();
        let roles = &r["member-roles.yaml"];
        let shape = between(
            roles,
            "Sid: ShapeQuellGroupsOnly",
            "- Sid: CreateQuellGroupsOnly",
        );
        let create = between(
            roles,
            "Sid: CreateQuellGroupsOnly",
            "- Sid: ContainInstances",
        );
        for (statement, key) in [
            (shape, "aws:ResourceTag/quell:purpose"),
            (create, "aws:RequestTag/quell:purpose"),
        ] {
            assert!(statement.contains(key), "{statement}");
        }
        for action in [
            "ec2:AuthorizeSecurityGroupIngress",
            "ec2:AuthorizeSecurityGroupEgress",
            "ec2:RevokeSecurityGroupEgress",
            "ec2:CreateSecurityGroup",
        ] {
            let unconditioned = between(roles, "Sid: ContainInstances", "Outputs:");
            assert!(
                !unconditioned.contains(action),
                "{action} is granted without Quell's tag"
            );
        }
        assert_eq!(
            quell_responder::entities::instance::PURPOSE_TAG,
            "quell:purpose",
            "the tag the policy names is the one Quell sets"
        );
    }

    #[test]
    fn each_kind_of_request_has_a_queue_only_its_configured_principals_may_send_to() {
        let mut c = config();
        c.authorization.release = Some(vec!["arn:aws:iam::*:role/IncidentLead".into()]);
        let r = render_all(&c).unwrap();
        let security = &r["security.yaml"];
        for channel in Channel::ALL {
            let id = format!("{}RequestsQueue", title(channel.as_str()));
            let policy = between(
                security,
                &format!("  {id}Policy:"),
                &format!("  {id}Events:"),
            );
            let patterns = serde_json::to_string(c.authorization().patterns(channel)).unwrap();
            assert!(
                policy.contains(&format!(
                    "ArnLike:\n                aws:PrincipalArn: {patterns}"
                )),
                "{id} admits exactly its patterns: {policy}"
            );
            assert!(
                policy.contains(&format!(
                    "ArnNotLike:\n                aws:PrincipalArn: {patterns}"
                )),
                "{id} denies everyone else, whatever their own policies say"
            );
            assert!(policy.contains("aws:PrincipalOrgID: !Ref OrganizationId"));
            assert!(security.contains(&format!("QueueName: quell-requests-{}\n", channel.as_str())));
            assert!(security.contains(&format!("EventSourceArn: !GetAtt {id}.Arn")));
        }
        let release = between(
            security,
            "  ReleaseRequestsQueuePolicy:",
            "  ReleaseRequestsQueueEvents:",
        );
        assert!(release.contains("role/IncidentLead"));
        assert!(!release.contains("arn:aws:iam::222233334444:*"));
        let env = from(security, "QUELL_AUTHORIZATION: '");
        let json = &env["QUELL_AUTHORIZATION: '".len()..env.find("'\n").unwrap()];
        let handed: quell_responder::authorization::Authorization =
            serde_json::from_str(json).unwrap();
        assert_eq!(
            handed,
            c.authorization(),
            "the responder checks what the queues enforce"
        );
    }

    #[test]
    fn a_responder_environment_over_lambdas_4_kb_is_refused_at_render() {
        let (bytes, vars) =
            crate::limits::environment_bytes(&render_all(&config()).unwrap()["security.yaml"]);
        assert!(
            bytes > 1500 && bytes < 4096,
            "the example fits: {bytes} {vars:?}"
        );
        assert!(vars.iter().any(|(k, _)| k == "QUELL_PLAYBOOKS"));
        // Each listed account costs about 15 bytes of the environment.
        let room = (4096 - bytes) / 15;
        let mut near = config();
        near.targets.accounts = (0..room.saturating_sub(10))
            .map(|i| format!("{:012}", 100_000_000_000_u64 + i as u64))
            .collect();
        assert!(render_all(&near).is_ok(), "just under the limit renders");
        let mut over = config();
        over.targets.accounts = (0..room + 10)
            .map(|i| format!("{:012}", 100_000_000_000_u64 + i as u64))
            .collect();
        let e = render_all(&over).unwrap_err().to_string();
        assert!(
            e.contains("over Lambda's 4096") && e.contains("QUELL_PLAYBOOKS"),
            "{e}"
        );
    }

    #[test]
    fn trust_policies_name_the_execution_roles_unique_id_so_a_recreated_role_is_trusted_again() {
        let r = render_all(&config()).unwrap();
        assert!(r["security.yaml"].contains("Value: !GetAtt ResponderRole.RoleId"));
        for file in ["member-roles.yaml", "management.yaml"] {
            let t = &r[file];
            assert!(t.contains("  ResponderRoleId:\n    Type: String"), "{file}");
            assert!(
                t.contains("- Sid: !Sub \"QuellResponder${ResponderRoleId}\"\n            Effect: Allow\n            Principal:\n              AWS: !Ref ResponderRoleArn"),
                "{file}: the trust statement changes with the id"
            );
        }
        let roles = StackSetDefinition::all()
            .into_iter()
            .find(|d| d.name == "member-roles")
            .unwrap();
        assert!(roles.parameters.iter().any(|p| p == "ResponderRoleId"));
    }

    #[test]
    fn the_containment_topic_key_admits_the_organization_through_sns_only() {
        let r = render_all(&config()).unwrap();
        let security = &r["security.yaml"];
        let topic = between(security, "  ContainmentTopic:\n", "  # Integrations");
        assert!(
            topic.contains("KmsMasterKeyId: !Ref ContainmentTopicKey"),
            "{topic}"
        );
        let key = between(security, "  ContainmentTopicKey:", "  ContainmentTopic:\n");
        let json = &key[key.find("!Sub '").unwrap() + 6..key.rfind('\'').unwrap()];
        let policy: serde_json::Value = serde_json::from_str(json).unwrap();
        let publish = &policy["Statement"][1];
        assert_eq!(publish["Principal"]["AWS"], "*");
        assert_eq!(
            publish["Condition"]["StringEquals"]["aws:PrincipalOrgID"],
            "${OrganizationId}"
        );
        assert_eq!(
            publish["Condition"]["StringEquals"]["kms:ViaService"],
            "sns.${AWS::Region}.amazonaws.com"
        );
        assert!(!publish["Action"].to_string().contains("kms:*"));
        assert!(key.contains("EnableKeyRotation: true"));
    }

    #[test]
    fn config_rules_can_be_left_out() {
        let mut c = config();
        c.config_rules = false;
        let r = render_all(&c).unwrap();
        assert!(!r["member-regional.yaml"].contains("AWS::Config::ConfigRule"));
    }

    #[test]
    fn member_regional_depends_on_no_other_stack_set() {
        // Auto-deployment reaches a new account with each stack set in no particular order: a
        // rule pointing at member-roles' role would forward nothing until that role exists.
        let r = render_all(&config()).unwrap();
        let regional = &r["member-regional.yaml"];
        assert!(
            !regional.contains(":role/"),
            "no role named by ARN: every role it uses is its own"
        );
        let role_arns = regional.matches("RoleArn:").count();
        assert_eq!(
            role_arns,
            regional.matches("Type: AWS::Events::Rule").count(),
            "every forwarding rule names its role"
        );
        assert!(role_arns >= 4, "API calls, Config, Security Hub, findings");
        assert_eq!(
            regional
                .matches("RoleArn: !GetAtt EventForwarderRole.Arn")
                .count(),
            role_arns
        );
        let role = between(regional, "  EventForwarderRole:", "  ForwardApiCalls:");
        assert!(role.contains("Type: AWS::IAM::Role"));
        assert!(
            role.contains("RoleName: !Sub \"quell-event-forwarder-${AWS::Region}\""),
            "one per Region, since IAM names are account-wide: {role}"
        );
        assert!(!r["member-roles.yaml"].contains("EventForwarderRole"));
    }

    #[test]
    fn stackset_definitions_parse_and_name_known_templates() {
        let defs = StackSetDefinition::all();
        assert_eq!(
            defs.iter().map(|d| d.name.as_str()).collect::<Vec<_>>(),
            [
                "member-roles",
                "member-roles-accounts",
                "member-regional",
                "member-regional-accounts"
            ]
        );
        for d in &defs {
            assert_eq!(
                d.auto_deployment.enabled,
                d.reach == Reach::OrganizationalUnits,
                "{}: only the stack set for OUs auto-deploys",
                d.name
            );
        }
        for d in &defs {
            assert!(
                assets::ALL_TEMPLATES.iter().any(|t| t.file == d.template),
                "{}",
                d.template
            );
        }
        assert_eq!(defs[0].regions, RegionScope::Home);
        assert_eq!(defs[2].regions(&config()), ["us-east-1", "eu-west-1"]);
    }
}
