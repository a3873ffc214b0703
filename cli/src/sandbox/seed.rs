//! Seeding the sandbox: an organization (management, security and three member accounts in nested
//! OUs) and, in each member account, the workloads and misconfigurations Quell exists to handle.

use std::io::Write;

use anyhow::Context;
use aws_config::SdkConfig;
use aws_sdk_ec2::types::{IpPermission, IpRange, ResourceType, Tag, TagSpecification};
use futures::future::try_join_all;
use quell_responder::aws_error::Described;
use quell_responder::sessions::Sessions;

use super::state::{AccessKey, OrganizationalUnit, Seeded};
use crate::aws::sandbox_config;
use crate::sandbox::state::SandboxState;

pub const HOME_REGION: &str = "us-east-1";
pub const SECOND_REGION: &str = "eu-west-1";
pub const ACCOUNT_ACCESS_ROLE: &str = "OrganizationAccountAccessRole";
pub const ADMIN_USER: &str = "quell-sandbox-admin";
/// The seeded user that plays the compromised identity.
pub const COMPROMISED_USER: &str = "ci-deployer";

pub struct Organization {
    pub organization_id: String,
    pub root_id: String,
    pub management_account: String,
    pub security_account: String,
    pub member_accounts: Vec<String>,
    pub organizational_units: Vec<OrganizationalUnit>,
    pub admin: AccessKey,
    pub seeded: Vec<Seeded>,
}

/// Seeds a fresh moto. `draft` carries the endpoint; its identity fields are filled in here.
pub async fn seed(draft: &SandboxState) -> anyhow::Result<Organization> {
    // moto's default identity is the management account: make a real administrator there first,
    // so every later call works the same with IAM enforcement on.
    let bootstrap = sandbox_config(draft, HOME_REGION, "testing", "testing", None).await;
    let iam = aws_sdk_iam::Client::new(&bootstrap);
    iam.create_user()
        .user_name(ADMIN_USER)
        .send()
        .await
        .described("iam:CreateUser")?;
    iam.attach_user_policy()
        .user_name(ADMIN_USER)
        .policy_arn("arn:aws:iam::aws:policy/AdministratorAccess")
        .send()
        .await
        .described("iam:AttachUserPolicy")?;
    let key = iam
        .create_access_key()
        .user_name(ADMIN_USER)
        .send()
        .await
        .described("iam:CreateAccessKey")?;
    let key = key.access_key().context("no access key returned")?;
    let admin = AccessKey {
        access_key_id: key.access_key_id().to_owned(),
        secret_access_key: key.secret_access_key().to_owned(),
    };
    let mgmt = sandbox_config(
        draft,
        HOME_REGION,
        &admin.access_key_id,
        &admin.secret_access_key,
        None,
    )
    .await;

    let org = aws_sdk_organizations::Client::new(&mgmt);
    let created = org
        .create_organization()
        .feature_set(aws_sdk_organizations::types::OrganizationFeatureSet::All)
        .send()
        .await
        .described("organizations:CreateOrganization")?;
    let organization = created.organization().context("no organization returned")?;
    let organization_id = organization.id().unwrap_or_default().to_owned();
    let management_account = organization
        .master_account_id()
        .unwrap_or_default()
        .to_owned();
    let roots = org
        .list_roots()
        .send()
        .await
        .described("organizations:ListRoots")?;
    let root_id = roots
        .roots()
        .first()
        .and_then(|r| r.id())
        .context("no root")?
        .to_owned();

    let security_ou = create_ou(&org, &root_id, "Security").await?;
    let workloads_ou = create_ou(&org, &root_id, "Workloads").await?;
    let production_ou = create_ou(&org, &workloads_ou, "Production").await?;

    let security_account =
        create_account(&org, &root_id, &security_ou, "security", "Security Tooling").await?;
    let mut members = Vec::new();
    for (name, ou) in [
        ("workload-a", &workloads_ou),
        ("workload-b", &workloads_ou),
        ("workload-c", &production_ou),
    ] {
        members.push(create_account(&org, &root_id, ou, name, name).await?);
    }
    let organizational_units = vec![
        OrganizationalUnit {
            id: security_ou,
            path: "/Security".into(),
            accounts: vec![security_account.clone()],
        },
        OrganizationalUnit {
            id: workloads_ou,
            path: "/Workloads".into(),
            accounts: members[..2].to_vec(),
        },
        OrganizationalUnit {
            id: production_ou,
            path: "/Workloads/Production".into(),
            accounts: members[2..].to_vec(),
        },
    ];

    let sessions = Sessions::new(&mgmt, "quell-sandbox-seed");
    let everyone: Vec<String> = std::iter::once(security_account.clone())
        .chain(members.iter().cloned())
        .collect();
    // As in moto, the role Organizations creates has no permissions; AWS gives it AdministratorAccess.
    try_join_all(
        everyone
            .iter()
            .map(|account| grant_account_access(&sessions, account)),
    )
    .await?;
    try_join_all(
        everyone
            .iter()
            .flat_map(|account| [(account, HOME_REGION), (account, SECOND_REGION)])
            .map(|(account, region)| record_configuration(&sessions, account, region)),
    )
    .await?;
    let seeded: Vec<Seeded> = try_join_all(
        members
            .iter()
            .map(|account| seed_member(&sessions, account)),
    )
    .await?
    .into_iter()
    .flatten()
    .collect();

    Ok(Organization {
        organization_id,
        root_id,
        management_account,
        security_account,
        member_accounts: members,
        organizational_units,
        admin,
        seeded,
    })
}

async fn create_ou(
    org: &aws_sdk_organizations::Client,
    parent: &str,
    name: &str,
) -> anyhow::Result<String> {
    let out = org
        .create_organizational_unit()
        .parent_id(parent)
        .name(name)
        .send()
        .await
        .described("organizations:CreateOrganizationalUnit")?;
    Ok(out
        .organizational_unit()
        .and_then(|o| o.id())
        .context("no OU id returned")?
        .to_owned())
}

async fn create_account(
    org: &aws_sdk_organizations::Client,
    root: &str,
    ou: &str,
    slug: &str,
    name: &str,
) -> anyhow::Result<String> {
    let out = org
        .create_account()
        .email(format!("{slug}@sandbox.quell.invalid"))
        .account_name(name)
        .send()
        .await
        .described("organizations:CreateAccount")?;
    let account = out
        .create_account_status()
        .and_then(|s| s.account_id())
        .context("no account id returned")?
        .to_owned();
    org.move_account()
        .account_id(&account)
        .source_parent_id(root)
        .destination_parent_id(ou)
        .send()
        .await
        .described("organizations:MoveAccount")?;
    Ok(account)
}

pub fn account_role(account: &str) -> String {
    format!("arn:aws:iam::{account}:role/{ACCOUNT_ACCESS_ROLE}")
}

async fn grant_account_access(sessions: &Sessions, account: &str) -> anyhow::Result<()> {
    let config = sessions.assume(&account_role(account), None).await?;
    aws_sdk_iam::Client::new(&config)
        .attach_role_policy()
        .role_name(ACCOUNT_ACCESS_ROLE)
        .policy_arn("arn:aws:iam::aws:policy/AdministratorAccess")
        .send()
        .await
        .described("iam:AttachRolePolicy")?;
    Ok(())
}

/// AWS Config recording, as a landing zone turns it on in every account and Region: Quell's Config
/// rules need a recorder, and install checks for one before it writes anything.
async fn record_configuration(
    sessions: &Sessions,
    account: &str,
    region: &str,
) -> anyhow::Result<()> {
    let home = sessions.assume(&account_role(account), None).await?;
    let config = aws_sdk_config::Client::new(
        &home
            .to_builder()
            .region(aws_config::Region::new(region.to_owned()))
            .build(),
    );
    let recorder = aws_sdk_config::types::ConfigurationRecorder::builder()
        .name(CONFIG_RECORDER)
        .role_arn(format!(
            "arn:aws:iam::{account}:role/aws-service-role/config.amazonaws.com/AWSServiceRoleForConfig"
        ))
        .build();
    config
        .put_configuration_recorder()
        .configuration_recorder(recorder)
        .send()
        .await
        .described("config:PutConfigurationRecorder")?;
    config
        .put_delivery_channel()
        .delivery_channel(
            aws_sdk_config::types::DeliveryChannel::builder()
                .name(CONFIG_RECORDER)
                .s3_bucket_name(format!("config-{account}-{region}"))
                .build(),
        )
        .send()
        .await
        .described("config:PutDeliveryChannel")?;
    config
        .start_configuration_recorder()
        .configuration_recorder_name(CONFIG_RECORDER)
        .send()
        .await
        .described("config:StartConfigurationRecorder")?;
    Ok(())
}

/// The name of the Config recorder (and delivery channel) every sandbox account records with.
pub const CONFIG_RECORDER: &str = "default";

async fn seed_member(sessions: &Sessions, account: &str) -> anyhow::Result<Vec<Seeded>> {
    let home = sessions.assume(&account_role(account), None).await?;
    let second = home
        .to_builder()
        .region(aws_config::Region::new(SECOND_REGION))
        .build();
    let mut out = Vec::new();
    out.extend(seed_identities(&home, account).await?);
    out.push(seed_function(&home, account).await?);
    out.extend(seed_network(&home, account, HOME_REGION, true).await?);
    out.extend(seed_network(&second, account, SECOND_REGION, false).await?);
    out.push(seed_bucket(&home, account).await?);
    out.push(seed_snapshot(&home, account).await?);
    Ok(out)
}

fn seeded(account: &str, region: &str, kind: &str, arn: String, note: impl Into<String>) -> Seeded {
    Seeded {
        account: account.into(),
        region: region.into(),
        kind: kind.into(),
        arn,
        note: note.into(),
        access_key: None,
    }
}

fn trust(service_or_account: &str) -> String {
    let principal = if service_or_account.ends_with(".amazonaws.com") {
        serde_json::json!({ "Service": service_or_account })
    } else {
        serde_json::json!({ "AWS": format!("arn:aws:iam::{service_or_account}:root") })
    };
    serde_json::json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": principal, "Action": "sts:AssumeRole"}]}).to_string()
}

async fn seed_identities(config: &SdkConfig, account: &str) -> anyhow::Result<Vec<Seeded>> {
    let iam = aws_sdk_iam::Client::new(config);
    let user = iam
        .create_user()
        .user_name(COMPROMISED_USER)
        .send()
        .await
        .described("iam:CreateUser")?;
    let user_arn = user
        .user()
        .map(|u| u.arn().to_owned())
        .context("no user returned")?;
    // Enough to show, under IAM enforcement, that the key works before containment: S3, EC2, SNS.
    iam.attach_user_policy()
        .user_name(COMPROMISED_USER)
        .policy_arn("arn:aws:iam::aws:policy/PowerUserAccess")
        .send()
        .await
        .described("iam:AttachUserPolicy")?;
    let key = iam
        .create_access_key()
        .user_name(COMPROMISED_USER)
        .send()
        .await
        .described("iam:CreateAccessKey")?;
    let key = key.access_key().context("no access key returned")?;
    iam.create_login_profile()
        .user_name(COMPROMISED_USER)
        .password("Sandbox-Only-Password-1!")
        .send()
        .await
        .described("iam:CreateLoginProfile")?;
    let mut user_seed = seeded(
        account,
        "global",
        "iam_user",
        user_arn,
        format!("access key {} and a console login", key.access_key_id()),
    );
    user_seed.access_key = Some(AccessKey {
        access_key_id: key.access_key_id().to_owned(),
        secret_access_key: key.secret_access_key().to_owned(),
    });

    let role = iam
        .create_role()
        .role_name("app-runtime")
        .assume_role_policy_document(trust(account))
        .send()
        .await
        .described("iam:CreateRole")?;
    iam.attach_role_policy()
        .role_name("app-runtime")
        .policy_arn("arn:aws:iam::aws:policy/ReadOnlyAccess")
        .send()
        .await
        .described("iam:AttachRolePolicy")?;
    let role_arn = role
        .role()
        .map(|r| r.arn().to_owned())
        .context("no role returned")?;
    Ok(vec![
        user_seed,
        seeded(
            account,
            "global",
            "iam_role",
            role_arn,
            "assumable by the account, ReadOnlyAccess",
        ),
    ])
}

/// The smallest valid deployment package: moto stores it, it never runs it.
fn tiny_package() -> anyhow::Result<Vec<u8>> {
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    zip.start_file(
        "bootstrap",
        zip::write::SimpleFileOptions::default().unix_permissions(0o755),
    )?;
    zip.write_all(b"#!/bin/sh\nexit 0\n")?;
    Ok(zip.finish()?.into_inner())
}

async fn seed_function(config: &SdkConfig, account: &str) -> anyhow::Result<Seeded> {
    let iam = aws_sdk_iam::Client::new(config);
    let role = iam
        .create_role()
        .role_name("orders-processor-role")
        .assume_role_policy_document(trust("lambda.amazonaws.com"))
        .send()
        .await
        .described("iam:CreateRole")?;
    let role_arn = role
        .role()
        .map(|r| r.arn().to_owned())
        .context("no role returned")?;
    let function = aws_sdk_lambda::Client::new(config)
        .create_function()
        .function_name("orders-processor")
        .runtime(aws_sdk_lambda::types::Runtime::Providedal2023)
        .handler("bootstrap")
        .role(&role_arn)
        .code(
            aws_sdk_lambda::types::FunctionCode::builder()
                .zip_file(aws_smithy_types::Blob::new(tiny_package()?))
                .build(),
        )
        .send()
        .await
        .described("lambda:CreateFunction")?;
    Ok(seeded(
        account,
        HOME_REGION,
        "lambda_function",
        function.function_arn().unwrap_or_default().to_owned(),
        format!("execution role {role_arn}"),
    ))
}

fn tags(kind: ResourceType, name: &str) -> TagSpecification {
    TagSpecification::builder()
        .resource_type(kind)
        .tags(Tag::builder().key("Name").value(name).build())
        .build()
}

async fn seed_network(
    config: &SdkConfig,
    account: &str,
    region: &str,
    with_instance: bool,
) -> anyhow::Result<Vec<Seeded>> {
    let ec2 = aws_sdk_ec2::Client::new(config);
    let vpcs = ec2
        .describe_vpcs()
        .send()
        .await
        .described("ec2:DescribeVpcs")?;
    let vpc = vpcs
        .vpcs()
        .iter()
        .find(|v| v.is_default() == Some(true))
        .and_then(|v| v.vpc_id())
        .context("no default VPC")?
        .to_owned();
    let sg = ec2
        .create_security_group()
        .group_name("admin-ssh")
        .description("SSH for administrators")
        .vpc_id(&vpc)
        .send()
        .await
        .described("ec2:CreateSecurityGroup")?;
    let sg_id = sg.group_id().context("no group id")?.to_owned();
    ec2.authorize_security_group_ingress()
        .group_id(&sg_id)
        .ip_permissions(
            IpPermission::builder()
                .ip_protocol("tcp")
                .from_port(22)
                .to_port(22)
                .ip_ranges(
                    IpRange::builder()
                        .cidr_ip("0.0.0.0/0")
                        .description("temporary")
                        .build(),
                )
                .build(),
        )
        .send()
        .await
        .described("ec2:AuthorizeSecurityGroupIngress")?;
    let mut out = vec![seeded(
        account,
        region,
        "security_group",
        format!("arn:aws:ec2:{region}:{account}:security-group/{sg_id}"),
        "ingress tcp 22 from 0.0.0.0/0",
    )];
    if !with_instance {
        return Ok(out);
    }
    let iam = aws_sdk_iam::Client::new(config);
    iam.create_role()
        .role_name("app-server-role")
        .assume_role_policy_document(trust("ec2.amazonaws.com"))
        .send()
        .await
        .described("iam:CreateRole")?;
    let profile = iam
        .create_instance_profile()
        .instance_profile_name("app-server")
        .send()
        .await
        .described("iam:CreateInstanceProfile")?;
    iam.add_role_to_instance_profile()
        .instance_profile_name("app-server")
        .role_name("app-server-role")
        .send()
        .await
        .described("iam:AddRoleToInstanceProfile")?;
    let profile_arn = profile
        .instance_profile()
        .map(|p| p.arn().to_owned())
        .context("no instance profile")?;
    let run = ec2
        .run_instances()
        .image_id("ami-0abcdef1234567890")
        .instance_type(aws_sdk_ec2::types::InstanceType::T3Micro)
        .min_count(1)
        .max_count(1)
        .security_group_ids(&sg_id)
        .iam_instance_profile(
            aws_sdk_ec2::types::IamInstanceProfileSpecification::builder()
                .arn(&profile_arn)
                .build(),
        )
        .tag_specifications(tags(ResourceType::Instance, "app-server"))
        .send()
        .await
        .described("ec2:RunInstances")?;
    let instance = run
        .instances()
        .first()
        .and_then(|i| i.instance_id())
        .context("no instance")?;
    out.push(seeded(
        account,
        region,
        "ec2_instance",
        format!("arn:aws:ec2:{region}:{account}:instance/{instance}"),
        format!("instance profile app-server, group {sg_id}"),
    ));
    Ok(out)
}

async fn seed_bucket(config: &SdkConfig, account: &str) -> anyhow::Result<Seeded> {
    let s3 = aws_sdk_s3::Client::new(config);
    let bucket = format!("public-assets-{account}");
    s3.create_bucket()
        .bucket(&bucket)
        .send()
        .await
        .described("s3:CreateBucket")?;
    s3.put_bucket_acl()
        .bucket(&bucket)
        .acl(aws_sdk_s3::types::BucketCannedAcl::PublicRead)
        .send()
        .await
        .described("s3:PutBucketAcl")?;
    let policy = serde_json::json!({"Version": "2012-10-17", "Statement": [{"Sid": "PublicRead", "Effect": "Allow", "Principal": "*", "Action": "s3:GetObject", "Resource": format!("arn:aws:s3:::{bucket}/*")}]});
    s3.put_bucket_policy()
        .bucket(&bucket)
        .policy(policy.to_string())
        .send()
        .await
        .described("s3:PutBucketPolicy")?;
    Ok(seeded(
        account,
        HOME_REGION,
        "s3_bucket",
        format!("arn:aws:s3:::{bucket}"),
        "public-read ACL and a public GetObject policy",
    ))
}

async fn seed_snapshot(config: &SdkConfig, account: &str) -> anyhow::Result<Seeded> {
    let ec2 = aws_sdk_ec2::Client::new(config);
    let volume = ec2
        .create_volume()
        .availability_zone(format!("{HOME_REGION}a"))
        .size(8)
        .send()
        .await
        .described("ec2:CreateVolume")?;
    let snapshot = ec2
        .create_snapshot()
        .volume_id(volume.volume_id().unwrap_or_default())
        .description("nightly backup")
        .tag_specifications(tags(ResourceType::Snapshot, "nightly-backup"))
        .send()
        .await
        .described("ec2:CreateSnapshot")?;
    let id = snapshot.snapshot_id().unwrap_or_default().to_owned();
    ec2.modify_snapshot_attribute()
        .snapshot_id(&id)
        .attribute(aws_sdk_ec2::types::SnapshotAttributeName::CreateVolumePermission)
        .operation_type(aws_sdk_ec2::types::OperationType::Add)
        .group_names("all")
        .send()
        .await
        .described("ec2:ModifySnapshotAttribute")?;
    Ok(seeded(
        account,
        HOME_REGION,
        "ebs_snapshot",
        format!("arn:aws:ec2:{HOME_REGION}::snapshot/{id}"),
        "unencrypted, restorable by everyone",
    ))
}
