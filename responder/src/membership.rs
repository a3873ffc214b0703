//! "Is this account in our organization?", asked of AWS Organizations through a read-only role in
//! the management account. Accounts that join later are recognised at once; a positive answer is
//! kept for a few minutes, so a warm containment asks nothing before it acts, and an account that
//! left the organization is refused within minutes.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use tokio::sync::Mutex;

use crate::aws_error::{CallError, Described};
use crate::sessions::Sessions;

#[derive(Debug)]
pub struct Membership {
    reader_role_arn: String,
    /// Accounts AWS Organizations said were members, and when it said so.
    known: Mutex<HashMap<String, Instant>>,
}

/// How long a member account is taken to still be one without asking again.
pub const MEMBERSHIP_LIFETIME: Duration = Duration::from_secs(5 * 60);

impl Membership {
    pub fn new(reader_role_arn: &str) -> Membership {
        Membership {
            reader_role_arn: reader_role_arn.to_owned(),
            known: Mutex::new(HashMap::new()),
        }
    }

    pub async fn is_member(
        &self,
        sessions: &Sessions,
        clients: &crate::clients::MemberFactory,
        external_id: &str,
        account: &str,
    ) -> Result<bool, CallError> {
        if self
            .known
            .lock()
            .await
            .get(account)
            .is_some_and(|at| at.elapsed() < MEMBERSHIP_LIFETIME)
        {
            return Ok(true);
        }
        let config = sessions
            .assume(&self.reader_role_arn, Some(external_id))
            .await?;
        let org = clients(&config).organizations;
        match org
            .describe_account()
            .account_id(account)
            .send()
            .await
            .described("organizations:DescribeAccount")
        {
            Ok(_) => {
                self.known
                    .lock()
                    .await
                    .insert(account.to_owned(), Instant::now());
                Ok(true)
            }
            Err(e) if e.is_code("AccountNotFoundException") => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The OUs and root above `account`, nearest first (for OU exemptions).
    pub async fn ancestors(
        &self,
        sessions: &Sessions,
        clients: &crate::clients::MemberFactory,
        external_id: &str,
        account: &str,
    ) -> Result<Vec<String>, CallError> {
        let config = sessions
            .assume(&self.reader_role_arn, Some(external_id))
            .await?;
        let org = clients(&config).organizations;
        let mut out = Vec::new();
        let mut child = account.to_owned();
        // An organization is at most five OUs deep; the bound guards against a cycle.
        for _ in 0..8 {
            let parents = org
                .list_parents()
                .child_id(&child)
                .send()
                .await
                .described("organizations:ListParents")?;
            let Some(parent) = parents.parents().first() else {
                break;
            };
            let id = parent.id().unwrap_or_default().to_owned();
            let is_root = parent.r#type().is_some_and(|t| t.as_str() == "ROOT");
            out.push(id.clone());
            if is_root {
                break;
            }
            child = id;
        }
        Ok(out)
    }

    /// Every active account under the OUs, child OUs included, plus the single accounts.
    pub async fn accounts_under(
        &self,
        sessions: &Sessions,
        clients: &crate::clients::MemberFactory,
        external_id: &str,
        ous: &[String],
        accounts: &[String],
    ) -> Result<Vec<String>, CallError> {
        let config = sessions
            .assume(&self.reader_role_arn, Some(external_id))
            .await?;
        let org = clients(&config).organizations;
        let mut out: Vec<String> = accounts.to_vec();
        let mut queue: Vec<String> = ous.to_vec();
        while let Some(parent) = queue.pop() {
            let mut pages = org
                .list_accounts_for_parent()
                .parent_id(&parent)
                .into_paginator()
                .send();
            while let Some(page) = pages.next().await {
                for a in page
                    .described("organizations:ListAccountsForParent")?
                    .accounts()
                {
                    if a.status().is_none_or(|s| s.as_str() == "ACTIVE") {
                        out.extend(a.id().map(str::to_owned));
                    }
                }
            }
            let mut pages = org
                .list_organizational_units_for_parent()
                .parent_id(&parent)
                .into_paginator()
                .send();
            while let Some(page) = pages.next().await {
                for ou in page
                    .described("organizations:ListOrganizationalUnitsForParent")?
                    .organizational_units()
                {
                    queue.extend(ou.id().map(str::to_owned));
                }
            }
        }
        out.sort();
        out.dedup();
        Ok(out)
    }
}
