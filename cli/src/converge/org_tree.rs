//! The organization's shape: which accounts each OU holds (its child OUs included, as StackSets
//! count them) and each account's parent. Read once per run; a few calls per OU.

use std::collections::{BTreeMap, BTreeSet};

use aws_sdk_organizations::Client;
use quell_responder::aws_error::Described;

#[derive(Debug, Clone, Default)]
pub struct OrgTree {
    /// Direct child OUs of each parent (root or OU).
    children: BTreeMap<String, Vec<String>>,
    /// Accounts directly in each parent (ACTIVE ones only: StackSets skip suspended accounts).
    accounts: BTreeMap<String, Vec<String>>,
    /// Each account's and OU's direct parent.
    parent: BTreeMap<String, String>,
    /// The roots, where the walk starts.
    roots: Vec<String>,
    /// Names of accounts and OUs, for people (`quell report`).
    names: BTreeMap<String, String>,
}

impl OrgTree {
    pub async fn read(org: &Client) -> anyhow::Result<OrgTree> {
        let mut tree = OrgTree::default();
        let roots = org
            .list_roots()
            .send()
            .await
            .described("organizations:ListRoots")?;
        let mut queue: Vec<String> = roots
            .roots()
            .iter()
            .filter_map(|r| r.id().map(str::to_owned))
            .collect();
        tree.roots.clone_from(&queue);
        while let Some(parent) = queue.pop() {
            let mut accounts = org
                .list_accounts_for_parent()
                .parent_id(&parent)
                .into_paginator()
                .send();
            while let Some(page) = accounts.next().await {
                for a in page
                    .described("organizations:ListAccountsForParent")?
                    .accounts()
                {
                    let active = a.status().is_none_or(|s| s.as_str() == "ACTIVE");
                    if let (Some(id), true) = (a.id(), active) {
                        tree.add_account(&parent, id);
                        tree.name(id, a.name());
                    }
                }
            }
            let mut ous = org
                .list_organizational_units_for_parent()
                .parent_id(&parent)
                .into_paginator()
                .send();
            while let Some(page) = ous.next().await {
                for ou in page
                    .described("organizations:ListOrganizationalUnitsForParent")?
                    .organizational_units()
                {
                    if let Some(id) = ou.id() {
                        tree.add_ou(&parent, id);
                        tree.name(id, ou.name());
                        queue.push(id.to_owned());
                    }
                }
            }
        }
        Ok(tree)
    }

    #[cfg(test)]
    pub fn add_root(&mut self, root: &str) {
        self.roots.push(root.to_owned());
    }

    pub fn add_ou(&mut self, parent: &str, ou: &str) {
        self.children
            .entry(parent.to_owned())
            .or_default()
            .push(ou.to_owned());
        self.parent.insert(ou.to_owned(), parent.to_owned());
    }

    pub fn add_account(&mut self, parent: &str, account: &str) {
        self.accounts
            .entry(parent.to_owned())
            .or_default()
            .push(account.to_owned());
        self.parent.insert(account.to_owned(), parent.to_owned());
    }

    fn name(&mut self, id: &str, name: Option<&str>) {
        if let Some(n) = name {
            self.names.insert(id.to_owned(), n.to_owned());
        }
    }

    pub fn roots(&self) -> &[String] {
        &self.roots
    }

    /// The OUs directly under `parent`.
    pub fn child_ous(&self, parent: &str) -> &[String] {
        self.children.get(parent).map_or(&[], Vec::as_slice)
    }

    /// The active accounts directly under `parent`.
    pub fn accounts_in(&self, parent: &str) -> &[String] {
        self.accounts.get(parent).map_or(&[], Vec::as_slice)
    }

    /// The account's or OU's name, when Organizations gave one.
    pub fn name_of(&self, id: &str) -> Option<&str> {
        self.names.get(id).map(String::as_str)
    }

    /// Every account under `ou`, child OUs included.
    pub fn accounts_under(&self, ou: &str) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        let mut queue = vec![ou.to_owned()];
        while let Some(p) = queue.pop() {
            out.extend(self.accounts.get(&p).into_iter().flatten().cloned());
            queue.extend(self.children.get(&p).into_iter().flatten().cloned());
        }
        out
    }

    /// The parents of an account or OU, nearest first, up to the root.
    pub fn ancestors(&self, id: &str) -> Vec<&str> {
        let mut out = Vec::new();
        let mut at = id;
        while let Some(p) = self.parent.get(at) {
            out.push(p.as_str());
            at = p;
        }
        out
    }
}
