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
    /// never a StackSets target, and a single account already under a configured OU is the OU's:
    /// deployed by both stack sets, its second stack would meet the first one's named roles.
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
        let under_ous: BTreeSet<String> = out
            .iter()
            .flat_map(|t| t.accounts.iter().cloned())
            .collect();
        for (account, parent) in accounts {
            if under_ous.contains(account) {
                continue;
            }
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
    /// Removals of instances that another stack set of this run adds (an account moving between
    /// the stack set for OUs and the one for single accounts): run before any stack set adds,
    /// since both stacks would create the same named roles.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub handover: Vec<InstanceCall>,
    pub retry: Vec<InstanceCall>,
    /// Failed instances not retried in this run.
    pub failed: Vec<Instance>,
}

impl InstanceChanges {
    pub fn is_empty(&self) -> bool {
        self.add.is_empty()
            && self.remove.is_empty()
            && self.handover.is_empty()
            && self.retry.is_empty()
    }

    fn adds(&self, account: &str, region: &str) -> bool {
        self.add.iter().any(|c| {
            c.regions.iter().any(|r| r == region) && c.accounts.iter().any(|a| a == account)
        })
    }
}

/// Moves each removal that frees a place another stack set adds into that set's `handover`.
pub fn hand_over(sets: &mut [StackSetPlan]) {
    for i in 0..sets.len() {
        let (moving, staying): (Vec<InstanceCall>, Vec<InstanceCall>) =
            std::mem::take(&mut sets[i].instance_changes.remove)
                .into_iter()
                .partition(|call| {
                    sets.iter().enumerate().any(|(j, other)| {
                        j != i
                            && call.accounts.iter().any(|a| {
                                call.regions
                                    .iter()
                                    .any(|r| other.instance_changes.adds(a, r))
                            })
                    })
                });
        sets[i].instance_changes.remove = staying;
        sets[i].instance_changes.handover = moving;
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

/// The stack instances that make the deployed ones match the targets in `regions`. `registered`
/// names the OUs the stack set deploys to (those its operations have named), when CloudFormation
/// says: auto-deployment follows them, so a configured OU with no accounts yet is registered all
/// the same, and an OU that is no longer configured is let go even when it holds no instance.
pub fn instance_changes(
    targets: &[Target],
    regions: &[String],
    deployed: &[Instance],
    registered: Option<&BTreeSet<String>>,
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
        let unregistered =
            registered.is_some_and(|r| !r.contains(&t.organizational_unit)) && t.whole_ou;
        if unregistered && t.accounts.is_empty() {
            whole.extend(regions.iter().map(|r| (r.clone(), BTreeSet::new())));
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
    // OUs still registered that no target needs, with no instance left to remove through them.
    let needed: BTreeSet<&str> = targets
        .iter()
        .map(|t| t.organizational_unit.as_str())
        .collect();
    for ou in registered.into_iter().flatten() {
        let removed = changes
            .remove
            .iter()
            .any(|c| c.whole_ou && &c.organizational_unit == ou);
        if !needed.contains(ou.as_str()) && !removed {
            changes.remove.push(InstanceCall {
                organizational_unit: ou.clone(),
                whole_ou: true,
                accounts: Vec::new(),
                regions: regions.to_vec(),
            });
        }
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
    /// Not deployed, and no target for it in the configuration: it stays absent.
    #[serde(skip)]
    pub skipped: bool,
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
    pub custom_actions: Vec<super::custom_actions::CustomAction>,
    /// Quell's custom actions no declared playbook names any more, to delete: (id, ARN).
    pub remove_custom_actions: Vec<(String, String)>,
    /// Why custom actions cannot be created, when they cannot.
    pub custom_actions_unavailable: Option<String>,
    pub artifact_key: String,
    pub upload_artifact: bool,
    /// The declared playbooks' document, content-addressed like the package.
    pub playbooks_key: Option<String>,
    /// Its key when the bucket does not hold it yet.
    pub upload_playbooks: Option<String>,
    pub stacks: Vec<StackPlan>,
    #[serde(serialize_with = "skipping_absent")]
    pub stack_sets: Vec<StackSetPlan>,
    /// What the deployment will be at this size and cost a month.
    pub cost: Option<crate::cost::Estimate>,
}

fn skipping_absent<S: serde::Serializer>(sets: &[StackSetPlan], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(sets.iter().filter(|p| !p.skipped))
}

impl Plan {
    /// The stack sets this run deploys or keeps: not those that stay absent.
    pub fn deployed_stack_sets(&self) -> impl Iterator<Item = &StackSetPlan> {
        self.stack_sets.iter().filter(|s| !s.skipped)
    }

    pub fn changes_anything(&self) -> bool {
        self.trusted_access
            || self.create_secret
            || !self.custom_actions.is_empty()
            || !self.remove_custom_actions.is_empty()
            || self.upload_artifact
            || self.upload_playbooks.is_some()
            || self
                .stacks
                .iter()
                .any(|s| s.change.action != Action::Unchanged)
            || self
                .deployed_stack_sets()
                .any(|s| s.change.action != Action::Unchanged || !s.instance_changes.is_empty())
    }

    /// Counts of (add, change, remove), as the closing line says them.
    fn totals(&self) -> (usize, usize, usize) {
        let mut add = usize::from(self.create_secret)
            + usize::from(self.upload_artifact)
            + usize::from(self.upload_playbooks.is_some())
            + self.custom_actions.len();
        let mut change = usize::from(self.trusted_access);
        let mut remove = self.remove_custom_actions.len();
        let changes = self
            .stacks
            .iter()
            .map(|s| &s.change)
            .chain(self.deployed_stack_sets().map(|s| &s.change));
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
        for s in self.deployed_stack_sets() {
            add += pairs(&s.instance_changes.add);
            remove += pairs(&s.instance_changes.remove) + pairs(&s.instance_changes.handover);
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
        if let Some(key) = &self.upload_playbooks {
            let _ = writeln!(t, "  {} declared playbooks {key}: upload", add("+"));
        }
        for s in &self.stacks {
            write_change(
                &mut t,
                &format!("stack {} ({} {})", s.name, s.account, s.region),
                &s.change,
                printer,
            );
        }
        for s in self.deployed_stack_sets() {
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
            for c in &ic.handover {
                let _ = writeln!(
                    t,
                    "      {} remove instances first (another stack set takes them over): {}",
                    remove("-"),
                    c.describe()
                );
            }
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
        for a in &self.custom_actions {
            let _ = writeln!(
                t,
                "  {} Security Hub custom action {:?}: create",
                add("+"),
                a.name
            );
        }
        for (id, _) in &self.remove_custom_actions {
            let _ = writeln!(
                t,
                "  {} Security Hub custom action {id}: delete (no declared playbook names it)",
                remove("-")
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
        if let Some(cost) = &self.cost {
            t.push_str(&cost.text());
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
            None,
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
            None,
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
            None,
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
        let c = instance_changes(
            &ou_targets(&t),
            &regions(&["us-east-1"]),
            &have,
            None,
            &t,
            false,
        );
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
        let c = instance_changes(&targets, &regions(&["us-east-1"]), &have, None, &t, false);
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

        let c = instance_changes(&[], &regions(&["us-east-1"]), &have, None, &t, false);
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
        let c = instance_changes(&[], &regions(&["us-east-1"]), &have, None, &t, false);
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
        let c = instance_changes(&targets, &regions(&["us-east-1"]), &have, None, &t, false);
        assert_eq!(c.add.len(), 1);
        assert!(!c.add[0].whole_ou);
        assert_eq!(c.add[0].accounts, vec!["444444444444".to_owned()]);
        assert_eq!(c.add[0].organizational_unit, "r-ab12");
    }

    fn registered(ous: &[&str]) -> BTreeSet<String> {
        ous.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn an_ou_with_no_account_yet_is_registered_so_that_accounts_joining_it_are_covered() {
        let mut t = tree();
        let empty = "ou-ab12-emptyemp";
        t.add_ou("r-ab12", empty);
        let targets = Target::resolve(&[empty.to_owned()], &[], &t, "999999999999");
        assert!(targets[0].accounts.is_empty());
        let two = regions(&["eu-west-1", "us-east-1"]);

        let c = instance_changes(&targets, &two, &[], Some(&registered(&[])), &t, false);
        assert_eq!(c.add.len(), 1, "{c:?}");
        assert!(c.add[0].whole_ou && c.add[0].accounts.is_empty());
        assert_eq!(c.add[0].organizational_unit, empty);
        assert_eq!(
            c.add[0].regions, two,
            "auto-deployment covers these Regions"
        );

        let c = instance_changes(&targets, &two, &[], Some(&registered(&[empty])), &t, false);
        assert!(c.is_empty(), "registered once, nothing more: {c:?}");
        let c = instance_changes(&targets, &two, &[], None, &t, false);
        assert!(
            c.is_empty(),
            "not known (the sandbox): nothing guessed: {c:?}"
        );
    }

    #[test]
    fn an_ou_no_longer_configured_is_let_go_even_with_no_instance_in_it() {
        let t = tree();
        let have = deployed(&["111111111111", "222222222222"], &["us-east-1"]);
        let reg = registered(&[OU, PROD]);
        let c = instance_changes(
            &ou_targets(&t),
            &regions(&["us-east-1"]),
            &have,
            Some(&reg),
            &t,
            false,
        );
        // 333 in PROD has no instance, yet PROD is registered: auto-deployment would reach it.
        assert!(c.add.iter().all(|a| a.organizational_unit == OU), "{c:?}");
        assert_eq!(c.remove.len(), 1, "{c:?}");
        assert_eq!(c.remove[0].organizational_unit, PROD);
        assert!(c.remove[0].whole_ou);
        assert_eq!(c.remove[0].regions, regions(&["us-east-1"]));
    }

    #[test]
    fn single_accounts_leave_the_auto_deploying_stack_set_with_their_parent_ou() {
        // An earlier version deployed 444 alone through root in the stack set for OUs, which
        // registered root there: every account joining root would get Quell's roles.
        let t = tree();
        let mut have = deployed(&ALL, &["us-east-1"]);
        have.push(instance("444444444444", "us-east-1"));
        have.last_mut().unwrap().organizational_unit = Some("r-ab12".into());
        let reg = registered(&[OU, "r-ab12"]);
        let c = instance_changes(
            &ou_targets(&t),
            &regions(&["us-east-1"]),
            &have,
            Some(&reg),
            &t,
            false,
        );
        assert!(c.add.is_empty(), "{c:?}");
        assert_eq!(
            c.remove.len(),
            1,
            "one call: the instance and the OU together: {c:?}"
        );
        let r = &c.remove[0];
        assert_eq!(r.organizational_unit, "r-ab12");
        assert!(
            r.whole_ou,
            "root goes as an OU, so auto-deployment stops following it"
        );
        assert_eq!(r.accounts, vec!["444444444444".to_owned()]);
    }

    fn set_plan(name: &str, changes: InstanceChanges) -> StackSetPlan {
        StackSetPlan {
            skipped: false,
            name: name.into(),
            regions: regions(&["us-east-1"]),
            instances: 0,
            change: Change {
                action: Action::Unchanged,
                template_from: None,
                template: String::new(),
                parameters: vec![],
            },
            instance_changes: changes,
        }
    }

    #[test]
    fn an_account_moving_between_stack_sets_leaves_one_before_the_other_adds_it() {
        let t = tree();
        let us = regions(&["us-east-1"]);
        // 111 was a single account; now its OU is configured.
        let mut single = instance("111111111111", "us-east-1");
        single.organizational_unit = Some(OU.into());
        let for_ous = instance_changes(&ou_targets(&t), &us, &[], None, &t, false);
        let for_accounts = instance_changes(&[], &us, &[single], None, &t, false);
        let unrelated = InstanceChanges {
            remove: vec![InstanceCall {
                organizational_unit: PROD.into(),
                whole_ou: false,
                accounts: vec!["555555555555".into()],
                regions: us.clone(),
            }],
            ..InstanceChanges::default()
        };
        let mut sets = vec![
            set_plan("quell-member-roles", for_ous),
            set_plan("quell-member-roles-accounts", for_accounts),
            set_plan("quell-member-regional", unrelated),
        ];
        hand_over(&mut sets);
        let accounts = &sets[1].instance_changes;
        assert!(accounts.remove.is_empty(), "{accounts:?}");
        assert_eq!(accounts.handover.len(), 1);
        assert_eq!(
            accounts.handover[0].accounts,
            vec!["111111111111".to_owned()]
        );
        assert_eq!(sets[0].instance_changes.add.len(), 1);
        assert!(
            sets[2].instance_changes.handover.is_empty()
                && sets[2].instance_changes.remove.len() == 1,
            "a removal nobody takes over stays a removal"
        );
    }

    #[test]
    fn a_single_account_under_a_configured_ou_is_the_ous() {
        let t = tree();
        let targets = Target::resolve(
            &[OU.to_owned()],
            &[
                ("333333333333".to_owned(), PROD.to_owned()),
                ("444444444444".to_owned(), "r-ab12".to_owned()),
            ],
            &t,
            "999999999999",
        );
        let singles: Vec<&Target> = targets.iter().filter(|t| !t.whole_ou).collect();
        assert_eq!(singles.len(), 1, "333 is already in the OU: {targets:?}");
        assert_eq!(
            singles[0].accounts,
            BTreeSet::from(["444444444444".to_owned()])
        );
    }

    #[test]
    fn failed_instances_are_retried_only_when_asked() {
        let t = tree();
        let mut have = deployed(&ALL, &["us-east-1"]);
        have[1].detailed_status = Some("FAILED".into());
        have[1].status = "OUTDATED".into();
        have[1].reason = Some("Role quell-responder already exists".into());
        let c = instance_changes(
            &ou_targets(&t),
            &regions(&["us-east-1"]),
            &have,
            None,
            &t,
            false,
        );
        assert!(c.retry.is_empty());
        assert_eq!(c.failed.len(), 1);
        assert!(
            c.is_empty(),
            "a failed instance alone is not a change without --retry-failed"
        );
        let c = instance_changes(
            &ou_targets(&t),
            &regions(&["us-east-1"]),
            &have,
            None,
            &t,
            true,
        );
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
