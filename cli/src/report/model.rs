//! What `quell report` shows, worked out from what was read: the organization against the
//! configured Regions, the containments as timelines, the remediations per playbook and account,
//! the last sweep, and the totals an auditor asks for. No AWS call here, so the same code renders
//! a live organization and a saved report (`--from`), and the tests feed it any size they like.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, Duration, Utc};
use quell_responder::contract::Action;
use quell_responder::ledger::{Record, Status, StepStatus};
use serde::{Deserialize, Serialize};

use crate::converge::org_tree::OrgTree;
use crate::converge::stack_set::Instance;

/// The whole report: `--output json` prints it, the HTML page carries it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub generated_at: DateTime<Utc>,
    /// Records received from then on are counted.
    pub since: DateTime<Utc>,
    pub name: String,
    pub organization_id: String,
    pub regions: Vec<String>,
    pub responder: Versions,
    pub stack_sets: Vec<StackSetVersion>,
    /// The organization from its roots: OUs, and the accounts in each with a cell per Region.
    pub tree: Vec<Node>,
    /// The newest containments and releases (at most `CONTAINMENTS_SHOWN`).
    pub containments: Vec<Containment>,
    /// How many there were in the period, shown or not.
    pub containments_in_period: usize,
    pub remediations: Remediations,
    pub sweep: Option<Sweep>,
    pub totals: Totals,
    /// Quell's footprint at this size and its monthly cost, estimated.
    #[serde(default)]
    pub cost: Option<crate::cost::Estimate>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Versions {
    /// The package the security stack runs (`responder/<sha256>.zip`).
    pub deployed: Option<String>,
    /// The package `quell upgrade` would deploy from this machine.
    pub this_build: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StackSetVersion {
    pub name: String,
    /// Hash of the deployed template; `None` when the stack set does not exist.
    pub template: Option<String>,
    /// The deployed template is the one this configuration renders.
    pub current: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Node {
    pub id: String,
    pub name: String,
    pub accounts: Vec<AccountRow>,
    pub children: Vec<Node>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccountRow {
    pub id: String,
    pub name: String,
    /// One per configured Region, in the configuration's order.
    pub cells: Vec<Cell>,
}

/// A cell's state, worst first: the page shows it as a word and a symbol, not only a colour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CellState {
    Failed,
    Drifted,
    /// Targeted, and auto-deployment (or the next upgrade) has not reached it yet.
    Pending,
    /// Deployed, behind the configuration or with an operation under way.
    Outdated,
    Current,
    /// Not a target of the configuration (the management account, accounts outside the OUs).
    NotTargeted,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Cell {
    pub state: CellState,
    /// Each stack set instance in this account and Region.
    pub instances: Vec<CellInstance>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CellInstance {
    pub stack_set: String,
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drift: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Containment {
    pub key: String,
    /// contain or release.
    pub action: String,
    pub status: String,
    pub entity: String,
    pub kind: String,
    pub account: String,
    pub requester: Option<String>,
    /// Why, as the requester wrote it.
    pub reason: Option<String>,
    pub approver: Option<String>,
    pub received_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub steps: Vec<TimelineStep>,
    pub error: Option<String>,
    /// The command that undoes it, for a containment that succeeded and was not released.
    pub release_command: Option<String>,
    pub released_by: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TimelineStep {
    pub name: String,
    pub status: String,
    pub detail: String,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Remediations {
    /// Per playbook and account over the period.
    pub by_playbook: Vec<PlaybookCounts>,
    /// Per day over the period, for the chart.
    pub by_day: Vec<DayCounts>,
    /// Fixes held for a decision, oldest first.
    pub awaiting: Vec<Awaiting>,
    /// The latest remediations, newest first (at most `LATEST_SHOWN`).
    pub latest: Vec<RemediationRow>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub fixed: u64,
    pub skipped: u64,
    pub failed: u64,
    pub awaiting: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PlaybookCounts {
    pub playbook: String,
    pub account: String,
    #[serde(flatten)]
    pub counts: Counts,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DayCounts {
    pub day: String,
    #[serde(flatten)]
    pub counts: Counts,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Awaiting {
    pub key: String,
    pub entity: String,
    pub account: String,
    pub why: String,
    pub since: DateTime<Utc>,
    pub approve: String,
    pub deny: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RemediationRow {
    pub key: String,
    pub playbook: String,
    pub entity: String,
    pub account: String,
    pub status: String,
    /// What was done, or why not (the exemption, the error).
    pub detail: String,
    pub received_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Sweep {
    pub key: String,
    pub status: String,
    pub received_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub places: Vec<SweptPlace>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SweptPlace {
    pub account: String,
    pub region: String,
    pub status: String,
    pub found: u64,
    pub fixed: u64,
    pub detail: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Totals {
    /// Remediations that fixed something, and the time from the event (or its receipt) to the fix.
    pub fixes: u64,
    pub fix_seconds_median: Option<f64>,
    pub fix_seconds_p95: Option<f64>,
    pub containments: u64,
    /// Containments in progress or failed, and fixes awaiting a decision.
    pub open_items: u64,
}

/// How many remediations the page lists one by one; the counts cover them all.
pub const LATEST_SHOWN: usize = 500;
/// How many containments the page carries with their timelines (about 1.5 KB each): the totals
/// count them all, and `quell history` lists every one.
pub const CONTAINMENTS_SHOWN: usize = 1_000;

/// A stack set as read, for the grid.
pub struct StackSetRead {
    pub name: String,
    pub template: Option<String>,
    pub current: bool,
    pub instances: Vec<Instance>,
    /// The accounts and Regions the configuration deploys it to.
    pub targeted: BTreeSet<(String, String)>,
}

/// Everything read from AWS that the report is made of.
pub struct Read<'a> {
    pub now: DateTime<Utc>,
    pub since: DateTime<Utc>,
    pub name: String,
    pub organization_id: String,
    pub regions: Vec<String>,
    pub responder: Versions,
    pub tree: &'a OrgTree,
    pub stack_sets: Vec<StackSetRead>,
    pub records: Vec<Record>,
    pub cost: Option<crate::cost::Estimate>,
}

pub fn build(read: Read<'_>) -> Report {
    let grid = Grid {
        regions: &read.regions,
        stack_sets: &read.stack_sets,
        placed: read
            .stack_sets
            .iter()
            .map(|s| {
                s.instances
                    .iter()
                    .map(|i| ((i.account.as_str(), i.region.as_str()), i))
                    .collect()
            })
            .collect(),
    };
    let tree = read
        .tree
        .roots()
        .iter()
        .map(|root| grid.node(read.tree, root))
        .collect();
    let records: Vec<&Record> = read
        .records
        .iter()
        .filter(|r| r.received_at >= read.since)
        .collect();
    let mut containments = containments(&records);
    let remediations = remediations(&records);
    let sweep = last_sweep(&read.records);
    let totals = totals(&records, &containments, &remediations);
    let containments_in_period = containments.len();
    containments.truncate(CONTAINMENTS_SHOWN);
    Report {
        generated_at: read.now,
        since: read.since,
        name: read.name,
        organization_id: read.organization_id,
        regions: read.regions.clone(),
        responder: read.responder,
        stack_sets: read
            .stack_sets
            .iter()
            .map(|s| StackSetVersion {
                name: s.name.clone(),
                template: s.template.clone(),
                current: s.current,
            })
            .collect(),
        tree,
        containments,
        containments_in_period,
        remediations,
        sweep,
        totals,
        cost: read.cost,
    }
}

struct Grid<'a> {
    regions: &'a [String],
    stack_sets: &'a [StackSetRead],
    /// Each stack set's instances by account and Region (a cell reads one of each).
    placed: Vec<HashMap<(&'a str, &'a str), &'a Instance>>,
}

impl Grid<'_> {
    fn node(&self, tree: &OrgTree, id: &str) -> Node {
        Node {
            id: id.to_owned(),
            name: tree.name_of(id).unwrap_or(id).to_owned(),
            accounts: tree
                .accounts_in(id)
                .iter()
                .map(|a| AccountRow {
                    id: a.clone(),
                    name: tree.name_of(a).unwrap_or_default().to_owned(),
                    cells: self
                        .regions
                        .iter()
                        .map(|region| self.cell(a, region))
                        .collect(),
                })
                .collect(),
            children: tree
                .child_ous(id)
                .iter()
                .map(|c| self.node(tree, c))
                .collect(),
        }
    }

    fn cell(&self, account: &str, region: &str) -> Cell {
        let mut instances = Vec::new();
        let mut state = CellState::NotTargeted;
        for (set, placed) in self.stack_sets.iter().zip(&self.placed) {
            let this = match placed.get(&(account, region)) {
                Some(i) => {
                    instances.push(CellInstance {
                        stack_set: set.name.clone(),
                        status: i.shown_status().to_owned(),
                        reason: i.reason.clone(),
                        drift: i.drift.clone(),
                    });
                    if i.failed() {
                        CellState::Failed
                    } else if i.drift.as_deref() == Some("DRIFTED") {
                        CellState::Drifted
                    } else if i.status != "CURRENT" || !set.current {
                        CellState::Outdated
                    } else {
                        CellState::Current
                    }
                }
                None if set
                    .targeted
                    .contains(&(account.to_owned(), region.to_owned())) =>
                {
                    CellState::Pending
                }
                None => CellState::NotTargeted,
            };
            state = state.min(this);
        }
        Cell { state, instances }
    }
}

fn containments(records: &[&Record]) -> Vec<Containment> {
    let released: BTreeMap<&str, &str> = records
        .iter()
        .filter(|r| r.action == Action::Release && r.status == Status::Succeeded)
        .filter_map(|r| Some((r.releases.as_deref()?, r.key.as_str())))
        .collect();
    let mut out: Vec<Containment> = records
        .iter()
        .filter(|r| matches!(r.action, Action::Contain | Action::Release))
        .filter(|r| r.entity.is_some())
        .map(|r| {
            let entity = r.entity.clone().unwrap_or_default();
            let released_by = r
                .released_by
                .clone()
                .or_else(|| released.get(r.key.as_str()).map(|k| (*k).to_owned()));
            let release_command = (r.action == Action::Contain
                && r.status == Status::Succeeded
                && released_by.is_none())
            .then(|| format!("quell release {entity}"));
            Containment {
                key: r.key.clone(),
                action: r.action.as_str().to_owned(),
                status: r.status.as_str().to_owned(),
                kind: r.entity_kind.clone().unwrap_or_default(),
                account: r.account.clone().unwrap_or_default(),
                requester: r.requester.clone(),
                reason: r.reason.clone(),
                approver: r.decided_by.clone(),
                received_at: r.received_at,
                finished_at: r.finished_at,
                steps: r
                    .steps
                    .iter()
                    .map(|s| TimelineStep {
                        name: s.name.clone(),
                        status: step_status(s.status).to_owned(),
                        detail: s.detail.clone(),
                        at: s.finished_at,
                    })
                    .collect(),
                error: r.error.clone().or_else(|| {
                    r.rejection
                        .as_ref()
                        .map(|x| format!("{}: {}", x.code, x.message))
                }),
                release_command,
                released_by,
                entity,
            }
        })
        .collect();
    out.sort_by_key(|c| std::cmp::Reverse(c.received_at));
    out
}

fn step_status(s: StepStatus) -> &'static str {
    match s {
        StepStatus::Done => "done",
        StepStatus::Skipped => "skipped",
        StepStatus::Failed => "failed",
    }
}

/// The built-in playbook whose step this is.
fn playbook_of_step(step: &str) -> Option<&'static str> {
    Some(match step {
        "revoke_ingress" => "open_security_group",
        "make_bucket_private" => "public_bucket",
        "make_snapshot_private" => "public_snapshot",
        "encrypted_copy" | "delete_original" => "unencrypted_snapshot",
        _ => return None,
    })
}

/// The built-in playbook a remediation belongs to (by the steps it recorded: one snapshot can be
/// both public and unencrypted), or the declared playbook that ran it.
fn playbook_of(r: &Record) -> String {
    if let Some(p) = &r.options.playbook {
        return p.clone();
    }
    let mut by_steps: Vec<&str> = Vec::new();
    for p in r.steps.iter().filter_map(|s| playbook_of_step(&s.name)) {
        if !by_steps.contains(&p) {
            by_steps.push(p);
        }
    }
    if !by_steps.is_empty() {
        return by_steps.join(" + ");
    }
    match r.entity_kind.as_deref() {
        Some("security_group") => "open_security_group".into(),
        Some("s3_bucket") => "public_bucket".into(),
        Some("ebs_snapshot") => "public_snapshot / unencrypted_snapshot".into(),
        Some(other) => other.to_owned(),
        None => "unknown".into(),
    }
}

fn count(counts: &mut Counts, status: Status) {
    match status {
        Status::Succeeded => counts.fixed += 1,
        Status::Skipped | Status::Denied => counts.skipped += 1,
        Status::Failed | Status::Rejected => counts.failed += 1,
        Status::AwaitingApproval => counts.awaiting += 1,
        Status::InProgress | Status::Waiting => {}
    }
}

fn remediations(records: &[&Record]) -> Remediations {
    let fixes: Vec<&&Record> = records
        .iter()
        .filter(|r| r.action == Action::Remediate && r.entity.is_some())
        .collect();
    let mut by_playbook: BTreeMap<(String, String), Counts> = BTreeMap::new();
    let mut by_day: BTreeMap<String, Counts> = BTreeMap::new();
    for r in &fixes {
        let account = r.account.clone().unwrap_or_default();
        count(
            by_playbook.entry((playbook_of(r), account)).or_default(),
            r.status,
        );
        count(
            by_day
                .entry(r.received_at.format("%Y-%m-%d").to_string())
                .or_default(),
            r.status,
        );
    }
    let mut awaiting: Vec<Awaiting> = fixes
        .iter()
        .filter(|r| r.status == Status::AwaitingApproval)
        .map(|r| Awaiting {
            key: r.key.clone(),
            entity: r.entity.clone().unwrap_or_default(),
            account: r.account.clone().unwrap_or_default(),
            why: r.reason.clone().unwrap_or_default(),
            since: r.received_at,
            approve: format!("quell approve {}", r.key),
            deny: format!("quell deny {}", r.key),
        })
        .collect();
    awaiting.sort_by_key(|a| a.since);
    let mut latest: Vec<RemediationRow> = fixes
        .iter()
        .map(|r| RemediationRow {
            key: r.key.clone(),
            playbook: playbook_of(r),
            entity: r.entity.clone().unwrap_or_default(),
            account: r.account.clone().unwrap_or_default(),
            status: r.status.as_str().to_owned(),
            detail: remediation_detail(r),
            received_at: r.received_at,
        })
        .collect();
    latest.sort_by_key(|r| std::cmp::Reverse(r.received_at));
    latest.truncate(LATEST_SHOWN);
    Remediations {
        by_playbook: by_playbook
            .into_iter()
            .map(|((playbook, account), counts)| PlaybookCounts {
                playbook,
                account,
                counts,
            })
            .collect(),
        by_day: by_day
            .into_iter()
            .map(|(day, counts)| DayCounts { day, counts })
            .collect(),
        awaiting,
        latest,
    }
}

fn remediation_detail(r: &Record) -> String {
    match r.status {
        Status::Skipped | Status::AwaitingApproval => r.reason.clone(),
        Status::Failed => r.error.clone(),
        Status::Rejected => r.rejection.as_ref().map(|x| x.message.clone()),
        _ => r.steps.last().map(|s| s.detail.clone()),
    }
    .unwrap_or_default()
}

fn last_sweep(records: &[Record]) -> Option<Sweep> {
    let parent = records
        .iter()
        .filter(|r| r.action == Action::Sweep && r.sweep_plan.is_some())
        .max_by_key(|r| r.received_at)?;
    let mut places: Vec<SweptPlace> = records
        .iter()
        .filter(|r| {
            r.action == Action::Sweep && r.request_id.as_deref() == Some(parent.key.as_str())
        })
        .filter(|r| r.key != parent.key)
        .filter_map(|r| {
            let step = r.steps.last()?;
            let (account, region) = place_of(&parent.key, &r.key)?;
            let list = |name: &str| {
                step.new
                    .get(name)
                    .and_then(serde_json::Value::as_array)
                    .cloned()
                    .unwrap_or_default()
            };
            let found: Vec<serde_json::Value> = list("open_groups")
                .into_iter()
                .chain(list("exposed"))
                .collect();
            let fixed = found
                .iter()
                .filter(|f| f.get("outcome").and_then(serde_json::Value::as_str) == Some("fixed"))
                .count();
            Some(SweptPlace {
                account,
                region,
                status: step_status(step.status).to_owned(),
                found: found.len() as u64,
                fixed: fixed as u64,
                detail: step.detail.clone(),
            })
        })
        .collect();
    places.sort_by(|a, b| (&a.account, &a.region).cmp(&(&b.account, &b.region)));
    Some(Sweep {
        key: parent.key.clone(),
        status: parent.status.as_str().to_owned(),
        received_at: parent.received_at,
        finished_at: parent.finished_at,
        places,
    })
}

/// `<sweep>/<account>/<region>` back into its place.
fn place_of(sweep: &str, key: &str) -> Option<(String, String)> {
    let rest = key.strip_prefix(sweep)?.strip_prefix('/')?;
    let (account, region) = rest.split_once('/')?;
    Some((account.to_owned(), region.to_owned()))
}

fn totals(records: &[&Record], containments: &[Containment], r: &Remediations) -> Totals {
    let mut seconds: Vec<f64> = records
        .iter()
        .filter(|r| r.action == Action::Remediate && r.status == Status::Succeeded)
        .filter_map(|r| {
            let finished = r.finished_at?;
            // The event's own time is whatever its sender wrote: never later than its receipt.
            let start = r.event_at.map_or(r.received_at, |t| t.min(r.received_at));
            Some(duration_seconds(finished - start))
        })
        .collect();
    seconds.sort_by(f64::total_cmp);
    let open_containments = containments
        .iter()
        .filter(|c| c.action == "contain" && matches!(c.status.as_str(), "in_progress" | "failed"))
        .count();
    Totals {
        fixes: seconds.len() as u64,
        fix_seconds_median: percentile(&seconds, 50),
        fix_seconds_p95: percentile(&seconds, 95),
        containments: containments
            .iter()
            .filter(|c| c.action == "contain")
            .count() as u64,
        open_items: (open_containments + r.awaiting.len()) as u64,
    }
}

fn duration_seconds(d: Duration) -> f64 {
    // Negative (a clock ahead of another) counts as none.
    d.to_std().map_or(0.0, |d| d.as_secs_f64())
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], percent: usize) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (percent * sorted.len()).div_ceil(100);
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(key: &str, action: Action, status: Status, at: DateTime<Utc>) -> Record {
        let mut r = Record::new(key.into(), at, "m");
        r.action = action;
        r.status = status;
        r.entity = Some(format!("arn:aws:iam::111122223333:user/{key}"));
        r.entity_kind = Some("security_group".into());
        r.account = Some("111122223333".into());
        r.finished_at = Some(at + Duration::seconds(10));
        r
    }

    fn tree() -> OrgTree {
        let mut t = OrgTree::default();
        t.add_root("r-1");
        t.add_ou("r-1", "ou-1");
        t.add_account("ou-1", "111122223333");
        t.add_account("ou-1", "444455556666");
        t.add_account("r-1", "999988887777");
        t
    }

    fn instance(account: &str, region: &str, status: &str, detailed: Option<&str>) -> Instance {
        Instance {
            account: account.into(),
            region: region.into(),
            status: status.into(),
            detailed_status: detailed.map(Into::into),
            organizational_unit: None,
            reason: detailed.map(|_| "Role quell-responder already exists".into()),
            drift: None,
        }
    }

    #[test]
    fn each_cell_shows_the_worst_of_its_instances_and_who_is_not_reached_yet() {
        let now = Utc::now();
        let t = tree();
        let targeted: BTreeSet<(String, String)> = ["111122223333", "444455556666"]
            .iter()
            .flat_map(|a| ["us-east-1", "eu-west-1"].map(|r| ((*a).to_owned(), r.to_owned())))
            .collect();
        let report = build(Read {
            now,
            since: now - Duration::days(30),
            name: "quell".into(),
            organization_id: "o-1".into(),
            regions: vec!["us-east-1".into(), "eu-west-1".into()],
            responder: Versions {
                deployed: None,
                this_build: None,
            },
            tree: &t,
            stack_sets: vec![
                StackSetRead {
                    name: "roles".into(),
                    template: Some("h".into()),
                    current: true,
                    instances: vec![
                        instance("111122223333", "us-east-1", "CURRENT", None),
                        instance("111122223333", "eu-west-1", "INOPERABLE", Some("FAILED")),
                    ],
                    targeted: targeted.clone(),
                },
                StackSetRead {
                    name: "wiring".into(),
                    template: Some("h".into()),
                    current: false,
                    instances: vec![instance("111122223333", "us-east-1", "CURRENT", None)],
                    targeted,
                },
            ],
            records: Vec::new(),
            cost: None,
        });
        let ou = &report.tree[0].children[0];
        let states = |row: &AccountRow| row.cells.iter().map(|c| c.state).collect::<Vec<_>>();
        // The second stack set's template is behind the configuration: outdated, not current.
        assert_eq!(
            states(&ou.accounts[0]),
            [CellState::Outdated, CellState::Failed]
        );
        assert_eq!(
            ou.accounts[0].cells[1].instances[0].reason.as_deref(),
            Some("Role quell-responder already exists")
        );
        // Targeted, no instance yet: auto-deployment has not reached it.
        assert_eq!(
            states(&ou.accounts[1]),
            [CellState::Pending, CellState::Pending]
        );
        // The account in the root is no target.
        assert_eq!(
            states(&report.tree[0].accounts[0]),
            [CellState::NotTargeted, CellState::NotTargeted]
        );
    }

    #[test]
    fn counts_timelines_and_totals_come_from_the_ledger_within_the_period() {
        let now = Utc::now();
        let t = tree();
        let mut fixed = record("fix-1", Action::Remediate, Status::Succeeded, now);
        // Sent with a time in the future: counted from its receipt, not before it.
        fixed.event_at = Some(now + Duration::hours(1));
        let mut early = record("fix-2", Action::Remediate, Status::Succeeded, now);
        early.event_at = Some(now - Duration::seconds(50));
        let mut exempt = record("fix-3", Action::Remediate, Status::Skipped, now);
        exempt.reason = Some("exempt: tag quell:exempt=ticket-12".into());
        let held = record("fix-4", Action::Remediate, Status::AwaitingApproval, now);
        let old = record(
            "fix-old",
            Action::Remediate,
            Status::Failed,
            now - Duration::days(40),
        );
        let contained = record("user-a", Action::Contain, Status::Succeeded, now);
        let mut released = record("user-b", Action::Contain, Status::Succeeded, now);
        released.released_by = Some("release-1".into());
        let failed = record("user-c", Action::Contain, Status::Failed, now);
        let report = build(Read {
            now,
            since: now - Duration::days(30),
            name: "quell".into(),
            organization_id: "o-1".into(),
            regions: vec!["us-east-1".into()],
            responder: Versions {
                deployed: None,
                this_build: None,
            },
            tree: &t,
            stack_sets: Vec::new(),
            records: vec![fixed, early, exempt, held, old, contained, released, failed],
            cost: None,
        });
        let counts = &report.remediations.by_playbook;
        assert_eq!(counts.len(), 1);
        assert_eq!(
            counts[0].counts,
            Counts {
                fixed: 2,
                skipped: 1,
                failed: 0,
                awaiting: 1
            },
            "the failure before the period is left out"
        );
        let exempt_row = report
            .remediations
            .latest
            .iter()
            .find(|r| r.key == "fix-3")
            .unwrap();
        assert_eq!(exempt_row.detail, "exempt: tag quell:exempt=ticket-12");
        assert_eq!(
            report.remediations.awaiting[0].approve,
            "quell approve fix-4"
        );
        // 10 s from receipt, and 60 s from an event 50 s before it.
        assert_eq!(report.totals.fixes, 2);
        assert_eq!(report.totals.fix_seconds_median, Some(10.0));
        assert_eq!(report.totals.fix_seconds_p95, Some(60.0));
        assert_eq!(report.totals.containments, 3);
        // The failed containment and the held fix.
        assert_eq!(report.totals.open_items, 2);
        let release = |key: &str| {
            report
                .containments
                .iter()
                .find(|c| c.key == key)
                .unwrap()
                .release_command
                .clone()
        };
        assert_eq!(
            release("user-a").as_deref(),
            Some("quell release arn:aws:iam::111122223333:user/user-a")
        );
        assert_eq!(release("user-b"), None, "already released");
        assert_eq!(release("user-c"), None, "nothing to release");
    }

    #[test]
    fn a_remediation_is_counted_under_the_playbooks_its_steps_belong_to() {
        let now = Utc::now();
        let step = |name: &str| quell_responder::ledger::Step {
            name: name.into(),
            status: StepStatus::Done,
            detail: String::new(),
            prior: serde_json::Value::Null,
            new: serde_json::Value::Null,
            started_at: now,
            finished_at: now,
        };
        let mut snapshot = record("snap", Action::Remediate, Status::Succeeded, now);
        snapshot.entity_kind = Some("ebs_snapshot".into());
        snapshot.steps = vec![
            step("make_snapshot_private"),
            step("encrypted_copy"),
            step("delete_original"),
        ];
        assert_eq!(
            playbook_of(&snapshot),
            "public_snapshot + unencrypted_snapshot"
        );
        snapshot.steps = vec![step("encrypted_copy")];
        assert_eq!(playbook_of(&snapshot), "unencrypted_snapshot");
        // Skipped before any step: named by the kind of resource.
        snapshot.steps.clear();
        assert_eq!(
            playbook_of(&snapshot),
            "public_snapshot / unencrypted_snapshot"
        );
        snapshot.options.playbook = Some("critical-cve".into());
        assert_eq!(playbook_of(&snapshot), "critical-cve");
    }

    #[test]
    fn the_last_sweep_is_read_per_place() {
        let now = Utc::now();
        let mut parent = record("sweep:1", Action::Sweep, Status::Succeeded, now);
        parent.sweep_plan = Some(quell_responder::ledger::SweepPlan {
            accounts: vec!["111122223333".into()],
            regions: vec!["us-east-1".into()],
        });
        let mut older = parent.clone();
        older.key = "sweep:0".into();
        older.received_at = now - Duration::days(1);
        let mut place = record(
            "sweep:1/111122223333/us-east-1",
            Action::Sweep,
            Status::Succeeded,
            now,
        );
        place.request_id = Some("sweep:1".into());
        place.steps.push(quell_responder::ledger::Step {
            name: "sweep 111122223333 us-east-1".into(),
            status: StepStatus::Done,
            detail: "3 groups, 2 open".into(),
            prior: serde_json::json!({}),
            new: serde_json::json!({"open_groups": [{"outcome": "fixed"}, {"outcome": "failed"}], "exposed": [{"outcome": "fixed"}]}),
            started_at: now,
            finished_at: now,
        });
        let sweep = last_sweep(&[older, parent, place]).unwrap();
        assert_eq!(sweep.key, "sweep:1");
        assert_eq!(sweep.places.len(), 1);
        assert_eq!((sweep.places[0].found, sweep.places[0].fixed), (3, 2));
        assert_eq!(sweep.places[0].region, "us-east-1");
    }
}
