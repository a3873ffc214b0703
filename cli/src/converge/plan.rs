//! What a converge would change, computed from what is deployed and what the configuration and
//! the build ask for. Pure: no AWS calls here, so every case is a plain unit test.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::org_tree::OrgTree;
use super::stack_set::{Instance, InstanceCall};
use crate::printer::{Printer, Tone};

/// What CloudFormation shows for a `NoEcho` parameter: its value cannot be compared.
const MASKED: &str = "****";

/// A parameter value, or one that only an earlier step of the same run will tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Known(String),
    /// Not known before apply: the output of a stack that does not exist yet.
    AfterApply(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Create,
    /// A failed creation that CloudFormation cannot update: delete it, then create it.
    Replace,
    Update,
    Unchanged,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ParameterChange {
    pub name: String,
    pub from: Option<String>,
    pub to: String,
}

/// Template and parameter differences of one stack or stack set.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Change {
    pub action: Action,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub template_from: Option<String>,
    pub template: String,
    pub parameters: Vec<ParameterChange>,
}

pub fn template_hash(body: &str) -> String {
    hex::encode(&Sha256::digest(body.as_bytes())[..6])
}

/// What is deployed of a stack or stack set: its template and parameter values.
pub struct Current<'a> {
    pub template: &'a str,
    pub parameters: &'a BTreeMap<String, String>,
    /// Ended its creation in a state CloudFormation cannot update.
    pub failed_creation: bool,
}

/// Compares the rendered template and parameters with what is deployed. `sensitive` names
/// parameters whose values are never printed.
pub fn diff(
    template: &str,
    parameters: &BTreeMap<String, Value>,
    current: Option<&Current<'_>>,
    sensitive: &[&str],
) -> Change {
    let shown = |name: &str, v: &str| {
        if sensitive.contains(&name) {
            "(sensitive)".to_owned()
        } else {
            v.to_owned()
        }
    };
    let to_text = |name: &str, v: &Value| match v {
        Value::Known(s) => shown(name, s),
        Value::AfterApply(from) => format!("(known after apply: {from})"),
    };
    let Some(current) = current.filter(|c| !c.failed_creation) else {
        return Change {
            action: if current.is_some() {
                Action::Replace
            } else {
                Action::Create
            },
            template_from: None,
            template: template_hash(template),
            parameters: parameters
                .iter()
                .map(|(k, v)| ParameterChange {
                    name: k.clone(),
                    from: None,
                    to: to_text(k, v),
                })
                .collect(),
        };
    };
    let mut changes = Vec::new();
    for (name, want) in parameters {
        let have = current.parameters.get(name);
        let same = match (want, have) {
            (Value::Known(w), Some(h)) => w == h || h == MASKED,
            (Value::AfterApply(_), _) | (Value::Known(_), None) => false,
        };
        if !same {
            changes.push(ParameterChange {
                name: name.clone(),
                from: have.map(|h| shown(name, h)),
                to: to_text(name, want),
            });
        }
    }
    let template_changed = current.template != template;
    Change {
        action: if template_changed || !changes.is_empty() {
            Action::Update
        } else {
            Action::Unchanged
        },
        template_from: template_changed.then(|| template_hash(current.template)),
        template: template_hash(template),
        parameters: changes,
    }
}

/// Where a stack set should have instances: the accounts reached through one OU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub organizational_unit: String,
    /// A configured OU (all its accounts, now and later) rather than single accounts in it.
    pub whole_ou: bool,
    pub accounts: BTreeSet<String>,
}

impl Target {
    /// The configured targets resolved against the organization. The management account is
    /// never a StackSets target.
    pub fn resolve(
        ous: &[String],
        accounts: &[(String, String)],
        tree: &OrgTree,
        management_account: &str,
    ) -> Vec<Target> {
        let mut out: Vec<Target> = ous
            .iter()
            .map(|ou| Target {
                organizational_unit: ou.clone(),
                whole_ou: true,
                accounts: tree
                    .accounts_under(ou)
                    .into_iter()
                    .filter(|a| a != management_account)
                    .collect(),
            })
            .collect();
        for (account, parent) in accounts {
            out.push(Target {
                organizational_unit: parent.clone(),
                whole_ou: false,
                accounts: BTreeSet::from([account.clone()]),
            });
        }
        out
    }
}

/// Every account of the targets in every Region, each account once: where the member stacks are.
pub fn places(targets: &[Target], regions: &[String]) -> Vec<(String, String)> {
    let accounts: BTreeSet<&String> = targets.iter().flat_map(|t| &t.accounts).collect();
    accounts
        .into_iter()
        .flat_map(|a| regions.iter().map(move |r| (a.clone(), r.clone())))
        .collect()
}

/// Stack instances to add, remove and retry, one operation each.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct InstanceChanges {
    pub add: Vec<InstanceCall>,
    pub remove: Vec<InstanceCall>,
    pub retry: Vec<InstanceCall>,
    /// Failed instances not retried in this run.
    pub failed: Vec<Instance>,
}

impl InstanceChanges {
    pub fn is_empty(&self) -> bool {
        self.add.is_empty() && self.remove.is_empty() && self.retry.is_empty()
    }
}

/// Groups (account, region) pairs of one OU into calls: Regions with the same accounts together.
fn calls_for(
    ou: &str,
    whole_ou: bool,
    by_region: &BTreeMap<String, BTreeSet<String>>,
) -> Vec<InstanceCall> {
    let mut by_accounts: BTreeMap<&BTreeSet<String>, Vec<String>> = BTreeMap::new();
    for (region, accounts) in by_region {
        if !accounts.is_empty() {
            by_accounts
                .entry(accounts)
                .or_default()
                .push(region.clone());
        }
    }
    by_accounts
        .into_iter()
        .map(|(accounts, regions)| InstanceCall {
            organizational_unit: ou.to_owned(),
            whole_ou,
            accounts: accounts.iter().cloned().collect(),
            regions,
        })
        .collect()
}

/// The stack instances that make the deployed ones match the targets in `regions`.
pub fn instance_changes(
    targets: &[Target],
    regions: &[String],
    deployed: &[Instance],
    tree: &OrgTree,
    retry_failed: bool,
) -> InstanceChanges {
    let have: BTreeSet<(&str, &str)> = deployed
        .iter()
        .map(|i| (i.account.as_str(), i.region.as_str()))
        .collect();
    let mut wanted: BTreeSet<(String, String)> = BTreeSet::new();
    let mut changes = InstanceChanges::default();

    for t in targets {
        let mut whole: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let mut partial: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for region in regions {
            let missing: BTreeSet<String> = t
                .accounts
                .iter()
                .filter(|a| !have.contains(&(a.as_str(), region.as_str())))
                .cloned()
                .collect();
            for a in &t.accounts {
                wanted.insert((a.clone(), region.clone()));
            }
            if t.whole_ou && !missing.is_empty() && missing.len() == t.accounts.len() {
                whole.insert(region.clone(), missing);
            } else {
                partial.insert(region.clone(), missing);
            }
        }
        // Whole-OU Regions are one call whatever the accounts: group them by the OU alone.
        if !whole.is_empty() {
            changes.add.push(InstanceCall {
                organizational_unit: t.organizational_unit.clone(),
                whole_ou: true,
                accounts: t.accounts.iter().cloned().collect(),
                regions: whole.into_keys().collect(),
            });
        }
        changes
            .add
            .extend(calls_for(&t.organizational_unit, false, &partial));
    }

    let desired_ous: BTreeSet<&str> = targets
        .iter()
        .filter(|t| t.whole_ou)
        .map(|t| t.organizational_unit.as_str())
        .collect();
    // The OU an instance was deployed through: AWS says so; otherwise the outermost configured OU
    // holding the account, else its own parent (StackSets resolve an OU to every account under it).
    let ou_of = |i: &Instance| {
        i.organizational_unit.clone().or_else(|| {
            let ancestors = tree.ancestors(&i.account);
            ancestors
                .iter()
                .rev()
                .find(|o| desired_ous.contains(**o))
                .or(ancestors.first())
                .map(|o| (*o).to_owned())
        })
    };
    // Per OU: Region -> accounts to remove, and how many instances the OU has in all.
    let mut removals: BTreeMap<String, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    let mut retries: BTreeMap<String, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    let mut kept_per_ou: BTreeMap<String, usize> = BTreeMap::new();
    for i in deployed {
        // An account that left the organization: StackSets removes its instances itself.
        let Some(ou) = ou_of(i) else { continue };
        if wanted.contains(&(i.account.clone(), i.region.clone())) {
            *kept_per_ou.entry(ou.clone()).or_default() += 1;
            if i.failed() {
                if retry_failed {
                    retries
                        .entry(ou)
                        .or_default()
                        .entry(i.region.clone())
                        .or_default()
                        .insert(i.account.clone());
                } else {
                    changes.failed.push(i.clone());
                }
            }
        } else {
            removals
                .entry(ou)
                .or_default()
                .entry(i.region.clone())
                .or_default()
                .insert(i.account.clone());
        }
    }
    for (ou, by_region) in &removals {
        // A whole OU that is no longer a target goes as an OU, so that accounts joining it later
        // are not deployed to either.
        let whole = !desired_ous.contains(ou.as_str()) && !kept_per_ou.contains_key(ou);
        changes.remove.extend(calls_for(ou, whole, by_region));
    }
    for (ou, by_region) in &retries {
        changes.retry.extend(calls_for(ou, false, by_region));
    }
    changes
}

/// One stack of the plan.
#[derive(Debug, Clone, Serialize)]
pub struct StackPlan {
    pub name: String,
    pub account: String,
    pub region: String,
    #[serde(flatten)]
    pub change: Change,
}

/// One stack set of the plan.
#[derive(Debug, Clone, Serialize)]
pub struct StackSetPlan {
    pub name: String,
    pub regions: Vec<String>,
    /// Instances deployed now (an update changes each of them).
    pub instances: usize,
    #[serde(flatten)]
    pub change: Change,
    pub instance_changes: InstanceChanges,
}

#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub organization_id: String,
    pub trusted_access: bool,
    pub create_secret: bool,
    /// Security Hub custom actions to create: (id, name, description).
    pub custom_actions: Vec<(&'static str, &'static str, &'static str)>,
    /// Why custom actions cannot be created, when they cannot.
    pub custom_actions_unavailable: Option<String>,
    pub artifact_key: String,
    pub upload_artifact: bool,
    pub stacks: Vec<StackPlan>,
    pub stack_sets: Vec<StackSetPlan>,
}

impl Plan {
    pub fn changes_anything(&self) -> bool {
        self.trusted_access
            || self.create_secret
            || !self.custom_actions.is_empty()
            || self.upload_artifact
            || self
                .stacks
                .iter()
                .any(|s| s.change.action != Action::Unchanged)
            || self
                .stack_sets
                .iter()
                .any(|s| s.change.action != Action::Unchanged || !s.instance_changes.is_empty())
    }

    /// Counts of (add, change, remove), as the closing line says them.
    fn totals(&self) -> (usize, usize, usize) {
        let mut add = usize::from(self.create_secret)
            + usize::from(self.upload_artifact)
            + self.custom_actions.len();
        let mut change = usize::from(self.trusted_access);
        let mut remove = 0;
        let changes = self
            .stacks
            .iter()
            .map(|s| &s.change)
            .chain(self.stack_sets.iter().map(|s| &s.change));
        for c in changes {
            match c.action {
                Action::Create => add += 1,
                Action::Update | Action::Replace => change += 1,
                Action::Unchanged => {}
            }
        }
        let pairs = |calls: &[InstanceCall]| -> usize {
            calls
                .iter()
                .map(|c| c.accounts.len() * c.regions.len())
                .sum()
        };
        for s in &self.stack_sets {
            add += pairs(&s.instance_changes.add);
            remove += pairs(&s.instance_changes.remove);
            change += pairs(&s.instance_changes.retry);
        }
        (add, change, remove)
    }

    pub fn text(&self, printer: &Printer) -> String {
        let add = |s: &str| printer.paint(s, Tone::Good);
        let change = |s: &str| printer.paint(s, Tone::Change);
        let remove = |s: &str| printer.paint(s, Tone::Bad);
        let mut t = String::new();
        let _ = writeln!(t, "Plan for organization {}:", self.organization_id);
        if self.trusted_access {
            let _ = writeln!(
                t,
                "  {} StackSets trusted access with AWS Organizations: turn on",
                change("~")
            );
        }
        if self.create_secret {
            let _ = writeln!(t, "  {} secret with the ExternalIds: create", add("+"));
        }
        if self.upload_artifact {
            let _ = writeln!(
                t,
                "  {} responder package {}: upload",
                add("+"),
                self.artifact_key
            );
        }
        for s in &self.stacks {
            write_change(
                &mut t,
                &format!("stack {} ({} {})", s.name, s.account, s.region),
                &s.change,
                printer,
            );
        }
        for s in &self.stack_sets {
            let what = format!("stack set {} ({})", s.name, s.regions.join(", "));
            let what = if s.change.action == Action::Unchanged && !s.instance_changes.is_empty() {
                format!("{what} template and parameters")
            } else {
                what
            };
            write_change(&mut t, &what, &s.change, printer);
            if s.change.action == Action::Update && s.instances > 0 {
                let _ = writeln!(
                    t,
                    "      {} update all {} stack instances",
                    change("~"),
                    s.instances
                );
            }
            let ic = &s.instance_changes;
            for c in &ic.add {
                let _ = writeln!(t, "      {} add instances: {}", add("+"), c.describe());
            }
            for c in &ic.remove {
                let _ = writeln!(
                    t,
                    "      {} remove instances: {}",
                    remove("-"),
                    c.describe()
                );
            }
            for c in &ic.retry {
                let _ = writeln!(
                    t,
                    "      {} retry failed instances: {}",
                    change("~"),
                    c.describe()
                );
            }
            for f in &ic.failed {
                let _ = writeln!(
                    t,
                    "      {} {} {} failed ({}): add --retry-failed to run it again",
                    remove("!"),
                    f.account,
                    f.region,
                    f.reason.as_deref().unwrap_or("no reason given")
                );
            }
        }
        for (_, name, _) in &self.custom_actions {
            let _ = writeln!(
                t,
                "  {} Security Hub custom action {name:?}: create",
                add("+")
            );
        }
        if let Some(why) = &self.custom_actions_unavailable {
            let _ = writeln!(
                t,
                "  {} Security Hub custom actions: not available: {why}",
                remove("!")
            );
        }
        let (a, c, r) = self.totals();
        if self.changes_anything() {
            let _ = writeln!(
                t,
                "Plan: {} to add, {} to change, {} to remove.",
                add(&a.to_string()),
                change(&c.to_string()),
                remove(&r.to_string())
            );
        } else {
            let _ = writeln!(
                t,
                "Nothing to change: the deployment matches the configuration and this build."
            );
        }
        t
    }
}

fn write_change(t: &mut String, what: &str, c: &Change, printer: &Printer) {
    let (mark, word, tone) = match c.action {
        Action::Create => ("+", "create", Tone::Good),
        Action::Replace => ("~", "replace (its creation failed)", Tone::Change),
        Action::Update => ("~", "update", Tone::Change),
        Action::Unchanged => (" ", "unchanged", Tone::Dim),
    };
    let _ = writeln!(
        t,
        "  {} {what}: {}",
        printer.paint(mark, tone),
        printer.paint(word, tone)
    );
    if c.action != Action::Update {
        return;
    }
    if let Some(from) = &c.template_from {
        let _ = writeln!(t, "      template {from} -> {}", c.template);
    }
    for p in &c.parameters {
        let _ = writeln!(
            t,
            "      parameter {}: {} -> {}",
            p.name,
            p.from.as_deref().unwrap_or("(none)"),
            p.to
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OU: &str = "ou-ab12-workload";
    const PROD: &str = "ou-ab12-prodprod";

    /// root -> OU {111, 222} -> PROD {333}; root -> 999 (management).
    fn tree() -> OrgTree {
        let mut t = OrgTree::default();
        t.add_ou("r-ab12", OU);
        t.add_ou(OU, PROD);
        t.add_account(OU, "111111111111");
        t.add_account(OU, "222222222222");
        t.add_account(PROD, "333333333333");
        t.add_account("r-ab12", "999999999999");
        t
    }

    fn instance(account: &str, region: &str) -> Instance {
        Instance {
            account: account.into(),
            region: region.into(),
            status: "CURRENT".into(),
            detailed_status: Some("SUCCEEDED".into()),
            organizational_unit: None,
            reason: None,
            drift: None,
        }
    }

    fn deployed(accounts: &[&str], regions: &[&str]) -> Vec<Instance> {
        let mut out = Vec::new();
        for a in accounts {
            for r in regions {
                out.push(instance(a, r));
            }
        }
        out
    }

    fn regions(r: &[&str]) -> Vec<String> {
        r.iter().map(|s| (*s).to_owned()).collect()
    }

    fn ou_targets(t: &OrgTree) -> Vec<Target> {
        Target::resolve(&[OU.to_owned()], &[], t, "999999999999")
    }

    const ALL: [&str; 3] = ["111111111111", "222222222222", "333333333333"];

    #[test]
    fn an_ou_target_covers_its_child_ous_but_never_the_management_account() {
        let t = tree();
        let targets = Target::resolve(&["r-ab12".to_owned()], &[], &t, "999999999999");
        assert_eq!(
            targets[0].accounts,
            ALL.iter().map(|s| (*s).to_owned()).collect()
        );
    }

    #[test]
    fn places_name_each_account_once_in_every_region() {
        let t = tree();
        let mut targets = ou_targets(&t);
        targets.push(Target {
            organizational_unit: OU.into(),
            whole_ou: false,
            accounts: BTreeSet::from(["111111111111".to_owned()]),
        });
        let p = places(&targets, &regions(&["us-east-1", "eu-west-1"]));
        assert_eq!(p.len(), 6, "three accounts x two Regions, 111 once: {p:?}");
        assert_eq!(p[0], ("111111111111".to_owned(), "us-east-1".to_owned()));
    }

    #[test]
    fn nothing_deployed_adds_the_whole_ou_in_one_call() {
        let t = tree();
        let c = instance_changes(
            &ou_targets(&t),
            &regions(&["us-east-1", "eu-west-1"]),
            &[],
            &t,
            false,
        );
        assert_eq!(c.add.len(), 1);
        assert!(c.add[0].whole_ou);
        assert_eq!(c.add[0].organizational_unit, OU);
        assert_eq!(c.add[0].regions, regions(&["eu-west-1", "us-east-1"]));
        assert!(c.remove.is_empty() && c.retry.is_empty());
    }

    #[test]
    fn everything_in_place_changes_nothing() {
        let t = tree();
        let have = deployed(&ALL, &["us-east-1", "eu-west-1"]);
        let c = instance_changes(
            &ou_targets(&t),
            &regions(&["us-east-1", "eu-west-1"]),
            &have,
            &t,
            false,
        );
        assert!(c.is_empty(), "{c:?}");
    }

    #[test]
    fn a_new_region_adds_exactly_that_region() {
        let t = tree();
        let have = deployed(&ALL, &["us-east-1"]);
        let c = instance_changes(
            &ou_targets(&t),
            &regions(&["us-east-1", "eu-west-1"]),
            &have,
            &t,
            false,
        );
        assert_eq!(c.add.len(), 1);
        assert_eq!(c.add[0].regions, regions(&["eu-west-1"]));
        assert!(c.add[0].whole_ou);
        assert!(c.remove.is_empty());
    }

    #[test]
    fn a_dropped_region_removes_exactly_that_region() {
        let t = tree();
        let have = deployed(&ALL, &["us-east-1", "eu-west-1"]);
        let c = instance_changes(&ou_targets(&t), &regions(&["us-east-1"]), &have, &t, false);
        assert!(c.add.is_empty());
        assert_eq!(c.remove.len(), 1);
        let r = &c.remove[0];
        assert_eq!(r.regions, regions(&["eu-west-1"]));
        // The OU stays a target, so the removal names the accounts.
        assert!(!r.whole_ou);
        assert_eq!(
            r.organizational_unit, OU,
            "attributed to the configured OU, not PROD"
        );
        assert_eq!(r.accounts.len(), 3);
    }

    #[test]
    fn a_dropped_ou_goes_as_an_ou_unless_an_account_in_it_stays() {
        let t = tree();
        let have = deployed(&ALL, &["us-east-1"]);
        let targets = Target::resolve(
            &[],
            &[("111111111111".into(), OU.into())],
            &t,
            "999999999999",
        );
        let c = instance_changes(&targets, &regions(&["us-east-1"]), &have, &t, false);
        assert!(c.add.is_empty(), "111 keeps its instance: {c:?}");
        // 111 stays, so the OU cannot go as a whole: exactly the other two accounts go.
        assert_eq!(c.remove.len(), 2, "{c:?}");
        let removed: BTreeSet<&str> = c
            .remove
            .iter()
            .flat_map(|r| r.accounts.iter().map(String::as_str))
            .collect();
        assert_eq!(removed, BTreeSet::from(["222222222222", "333333333333"]));
        let in_ou = c
            .remove
            .iter()
            .find(|r| r.organizational_unit == OU)
            .unwrap();
        assert!(
            !in_ou.whole_ou,
            "111 stays in the OU, so the OU cannot go as a whole"
        );
        assert_eq!(in_ou.accounts, vec!["222222222222".to_owned()]);

        let c = instance_changes(&[], &regions(&["us-east-1"]), &have, &t, false);
        assert_eq!(
            c.remove.len(),
            2,
            "one call per OU of the fallback attribution: {c:?}"
        );
        assert!(c.remove.iter().all(|r| r.whole_ou));
    }

    #[test]
    fn the_ou_aws_reports_is_used_for_removal() {
        let t = tree();
        let mut have = deployed(&ALL, &["us-east-1"]);
        for i in &mut have {
            i.organizational_unit = Some(OU.into());
        }
        let c = instance_changes(&[], &regions(&["us-east-1"]), &have, &t, false);
        assert_eq!(c.remove.len(), 1);
        assert!(c.remove[0].whole_ou);
        assert_eq!(c.remove[0].organizational_unit, OU);
    }

    #[test]
    fn a_single_account_target_is_added_through_its_parent() {
        let t = tree();
        let have = deployed(&ALL, &["us-east-1"]);
        let mut targets = ou_targets(&t);
        targets.push(Target {
            organizational_unit: "r-ab12".into(),
            whole_ou: false,
            accounts: BTreeSet::from(["444444444444".to_owned()]),
        });
        let c = instance_changes(&targets, &regions(&["us-east-1"]), &have, &t, false);
        assert_eq!(c.add.len(), 1);
        assert!(!c.add[0].whole_ou);
        assert_eq!(c.add[0].accounts, vec!["444444444444".to_owned()]);
        assert_eq!(c.add[0].organizational_unit, "r-ab12");
    }

    #[test]
    fn failed_instances_are_retried_only_when_asked() {
        let t = tree();
        let mut have = deployed(&ALL, &["us-east-1"]);
        have[1].detailed_status = Some("FAILED".into());
        have[1].status = "OUTDATED".into();
        have[1].reason = Some("Role quell-responder already exists".into());
        let c = instance_changes(&ou_targets(&t), &regions(&["us-east-1"]), &have, &t, false);
        assert!(c.retry.is_empty());
        assert_eq!(c.failed.len(), 1);
        assert!(
            c.is_empty(),
            "a failed instance alone is not a change without --retry-failed"
        );
        let c = instance_changes(&ou_targets(&t), &regions(&["us-east-1"]), &have, &t, true);
        assert_eq!(c.retry.len(), 1);
        assert_eq!(c.retry[0].accounts, vec![have[1].account.clone()]);
        assert!(!c.retry[0].whole_ou);
    }

    fn values(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn diff_names_template_and_parameter_changes() {
        let have = values(&[
            ("ArtifactKey", "responder/a.zip"),
            ("OrganizationId", "o-1"),
        ]);
        let current = Current {
            template: "old",
            parameters: &have,
            failed_creation: false,
        };
        let want: BTreeMap<String, Value> = [
            (
                "ArtifactKey".to_owned(),
                Value::Known("responder/b.zip".into()),
            ),
            ("OrganizationId".to_owned(), Value::Known("o-1".into())),
        ]
        .into();
        let c = diff("new", &want, Some(&current), &[]);
        assert_eq!(c.action, Action::Update);
        assert_eq!(c.template_from, Some(template_hash("old")));
        assert_eq!(
            c.parameters,
            vec![ParameterChange {
                name: "ArtifactKey".into(),
                from: Some("responder/a.zip".into()),
                to: "responder/b.zip".into()
            }]
        );
        let c = diff("old", &want, Some(&current), &[]);
        assert_eq!(c.action, Action::Update);
        assert!(c.template_from.is_none());
        let same: BTreeMap<String, Value> = have
            .iter()
            .map(|(k, v)| (k.clone(), Value::Known(v.clone())))
            .collect();
        assert_eq!(
            diff("old", &same, Some(&current), &[]).action,
            Action::Unchanged
        );
    }

    #[test]
    fn masked_parameters_count_as_unchanged_and_sensitive_ones_are_never_shown() {
        let have = values(&[("RoleExternalId", "****")]);
        let current = Current {
            template: "t",
            parameters: &have,
            failed_creation: false,
        };
        let want: BTreeMap<String, Value> =
            [("RoleExternalId".to_owned(), Value::Known("s3cr3t".into()))].into();
        assert_eq!(
            diff("t", &want, Some(&current), &["RoleExternalId"]).action,
            Action::Unchanged
        );
        let created = diff("t", &want, None, &["RoleExternalId"]);
        assert_eq!(created.action, Action::Create);
        assert!(!format!("{created:?}").contains("s3cr3t"));
    }

    #[test]
    fn a_failed_creation_is_replaced_and_unknown_values_wait_for_apply() {
        let have = BTreeMap::new();
        let current = Current {
            template: "t",
            parameters: &have,
            failed_creation: true,
        };
        let want: BTreeMap<String, Value> = [(
            "ArtifactBucket".to_owned(),
            Value::AfterApply("the artifacts stack".into()),
        )]
        .into();
        let c = diff("t", &want, Some(&current), &[]);
        assert_eq!(c.action, Action::Replace);
        assert!(c.parameters[0].to.contains("known after apply"));
    }
}
