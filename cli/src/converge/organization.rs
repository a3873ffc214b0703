//! Checks against AWS Organizations before anything is written: who is installing, whether the
//! configured security account and targets exist, and StackSets trusted access.

use quell_responder::aws_error::Described;

use crate::aws::{Aws, Caller};
use crate::config::Config;
use crate::printer::Printer;

pub const STACKSETS_PRINCIPAL: &str = "member.org.stacksets.cloudformation.amazonaws.com";

/// Where stack instances go: whole OUs, and single accounts (each within its parent OU).
#[derive(Debug, Clone, Default)]
pub struct Targets {
    pub organizational_units: Vec<String>,
    /// Account id and its parent OU (or root) id.
    pub accounts: Vec<(String, String)>,
}

pub struct Organization {
    pub id: String,
    pub management_account: String,
    pub targets: Targets,
}

pub async fn check(
    aws: &Aws,
    caller: &Caller,
    config: &Config,
    delegated_admin: bool,
) -> anyhow::Result<Organization> {
    let org = crate::calls::client!(aws_sdk_organizations, aws.base());
    let described = org.describe_organization().send().await.described("organizations:DescribeOrganization").map_err(|e| {
        anyhow::anyhow!("cannot read the organization as {} ({e}): run quell from the management account, or from a StackSets delegated administrator with --delegated-admin", caller.arn)
    })?;
    let o = described
        .organization()
        .ok_or_else(|| anyhow::anyhow!("DescribeOrganization returned no organization"))?;
    let management_account = o.master_account_id().unwrap_or_default().to_owned();
    if !delegated_admin && caller.account != management_account {
        anyhow::bail!(
            "{} is in account {}, not the management account {management_account}: run with management-account credentials, or pass --delegated-admin from a registered StackSets delegated administrator",
            caller.arn,
            caller.account
        );
    }
    let known = |account: &str| {
        let org = org.clone();
        let account = account.to_owned();
        async move {
            org.describe_account()
                .account_id(&account)
                .send()
                .await
                .described("organizations:DescribeAccount")
        }
    };
    if let Err(e) = known(&config.security_account).await {
        anyhow::bail!("security_account {} is not in organization {} ({e}): fix security_account in the configuration", config.security_account, o.id().unwrap_or_default());
    }
    for ou in &config.targets.organizational_units {
        let found = if ou.starts_with("r-") {
            org.list_roots()
                .send()
                .await
                .described("organizations:ListRoots")?
                .roots()
                .iter()
                .any(|r| r.id() == Some(ou.as_str()))
        } else {
            org.describe_organizational_unit()
                .organizational_unit_id(ou)
                .send()
                .await
                .described("organizations:DescribeOrganizationalUnit")
                .is_ok()
        };
        if !found {
            anyhow::bail!(
                "targets.organizational_units: {ou} is not an OU of organization {}",
                o.id().unwrap_or_default()
            );
        }
    }
    let mut accounts = Vec::new();
    for account in &config.targets.accounts {
        if account == &management_account {
            anyhow::bail!("targets.accounts: {account} is the management account, which StackSets never deploy to; remove it from the targets");
        }
        if let Err(e) = known(account).await {
            anyhow::bail!(
                "targets.accounts: {account} is not in organization {} ({e})",
                o.id().unwrap_or_default()
            );
        }
        let parents = org
            .list_parents()
            .child_id(account)
            .send()
            .await
            .described("organizations:ListParents")?;
        let parent = parents
            .parents()
            .first()
            .and_then(|p| p.id())
            .unwrap_or_default()
            .to_owned();
        accounts.push((account.clone(), parent));
    }
    Ok(Organization {
        id: o.id().unwrap_or_default().to_owned(),
        management_account,
        targets: Targets {
            organizational_units: config.targets.organizational_units.clone(),
            accounts,
        },
    })
}

/// Whether CloudFormation StackSets has trusted access to the organization.
pub async fn trusted_access_enabled(aws: &Aws) -> anyhow::Result<bool> {
    let org = crate::calls::client!(aws_sdk_organizations, aws.base());
    Ok(org
        .list_aws_service_access_for_organization()
        .send()
        .await
        .described("organizations:ListAWSServiceAccessForOrganization")?
        .enabled_service_principals()
        .iter()
        .any(|p| p.service_principal() == Some(STACKSETS_PRINCIPAL)))
}

/// Service-managed StackSets need trusted access between CloudFormation and Organizations.
pub async fn ensure_trusted_access(aws: &Aws, printer: &Printer) -> anyhow::Result<()> {
    if trusted_access_enabled(aws).await? {
        return Ok(());
    }
    let org = crate::calls::client!(aws_sdk_organizations, aws.base());
    let cfn = crate::calls::client!(aws_sdk_cloudformation, aws.base());
    // CloudFormation's own call also creates the service-linked roles StackSets need.
    match cfn.activate_organizations_access().send().await.described("cloudformation:ActivateOrganizationsAccess") {
        Ok(_) => {}
        Err(e) if aws.sandbox().is_some() => {
            // The sandbox does not implement ActivateOrganizationsAccess; Organizations' call is
            // the documented alternative for the same trusted access.
            tracing::debug!(error = %e, "ActivateOrganizationsAccess unavailable in the sandbox");
            org.enable_aws_service_access().service_principal(STACKSETS_PRINCIPAL).send().await.described("organizations:EnableAWSServiceAccess")?;
        }
        Err(e) => return Err(anyhow::anyhow!("cannot turn on StackSets trusted access ({e}): run from the management account, or turn it on in the CloudFormation console (StackSets > Activate trusted access)")),
    }
    printer.status("StackSets trusted access with AWS Organizations turned on");
    Ok(())
}
