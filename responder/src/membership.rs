//! "Is this account in our organization?", asked of AWS Organizations through a read-only role in
//! the management account. Accounts that join later are recognised at once; positive answers are
//! cached for the life of the execution environment.

use std::collections::HashSet;

use tokio::sync::Mutex;

use crate::aws_error::{CallError, Described};
use crate::sessions::Sessions;

#[derive(Debug)]
pub struct Membership {
    reader_role_arn: String,
    known: Mutex<HashSet<String>>,
}

impl Membership {
    pub fn new(reader_role_arn: &str) -> Membership {
        Membership {
            reader_role_arn: reader_role_arn.to_owned(),
            known: Mutex::new(HashSet::new()),
        }
    }

    pub async fn is_member(
        &self,
        sessions: &Sessions,
        clients: &crate::clients::MemberFactory,
        external_id: &str,
        account: &str,
    ) -> Result<bool, CallError> {
        if self.known.lock().await.contains(account) {
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
                self.known.lock().await.insert(account.to_owned());
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
}
