//! One place of a sweep: an account in a Region, its security groups, snapshots and (in the
//! account's first Region) buckets, each found, fixed or left alone and why.

use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::Serialize;
use serde_json::json;

use super::remediate::Intent;
use super::{is_transient, Outcome, Responder};
use crate::aws_error::CallError;
use crate::contract::Options;
use crate::ledger::{Status, Step, StepStatus};
use crate::playbooks::event::{Resource, Source, Trigger};
use crate::playbooks::exposure::Rule;
use crate::playbooks::{bucket, security_group, snapshot, Mode, TagExemption};

/// What every place of one sweep shares.
pub(super) struct SweepRun<'a> {
    pub(super) key: &'a str,
    pub(super) message_id: &'a str,
    pub(super) options: &'a Options,
    /// Buckets are global: each account's are swept once, in this Region's place.
    pub(super) bucket_region: Option<&'a str>,
    /// What each bucket or snapshot found is recorded as coming from.
    pub(super) source: Source,
    /// Only what is public (a verdict about public snapshots is not one about encryption).
    pub(super) public_only: bool,
    /// Who asked for the sweep: what it leaves awaiting approval may not be approved by them.
    pub(super) caller: Option<&'a crate::authorization::Caller>,
}

/// Revoke calls in flight at once within one account and Region.
const REVOKES_AT_ONCE: usize = 16;

/// What the sweep did in one account and Region.
#[derive(Debug, Serialize)]
pub(super) struct Place {
    account: String,
    region: String,
    groups: usize,
    open: Vec<OpenGroup>,
    /// Snapshots in this place, and the account's buckets (swept in its first Region).
    snapshots: usize,
    buckets: usize,
    /// Public buckets, public or unencrypted snapshots: each fixed under its own ledger record.
    exposed: Vec<Exposed>,
    pub(super) error: Option<String>,
    pub(super) transient: bool,
}

/// Each exposed resource in words, for the place's step.
fn exposed_text(exposed: &[Exposed]) -> String {
    use std::fmt::Write as _;
    exposed.iter().fold(String::new(), |mut t, e| {
        let _ = write!(t, "; {} ({}): {}", e.resource, e.problem, e.outcome);
        t
    })
}

impl Place {
    fn new(account: String, region: String) -> Place {
        Place {
            account,
            region,
            groups: 0,
            open: Vec::new(),
            snapshots: 0,
            buckets: 0,
            exposed: Vec::new(),
            error: None,
            transient: false,
        }
    }

    /// The place's step in its record: what was found and what became of it.
    pub(super) fn step(&self, started_at: DateTime<Utc>) -> Step {
        let fixed = self.open.iter().filter(|g| g.outcome == "fixed").count();
        Step {
            name: format!("sweep {} {}", self.account, self.region),
            status: if self.error.is_some() {
                StepStatus::Failed
            } else if self.open.is_empty() && self.exposed.is_empty() {
                StepStatus::Skipped
            } else {
                StepStatus::Done
            },
            detail: match &self.error {
                Some(e) => format!("not swept: {e}"),
                None => format!(
                    "{} groups, {} open to the world on a sensitive port, {fixed} fixed; {} snapshots, {} buckets, {} exposed{}",
                    self.groups,
                    self.open.len(),
                    self.snapshots,
                    self.buckets,
                    self.exposed.len(),
                    exposed_text(&self.exposed)
                ),
            },
            prior: json!({"groups": self.groups, "snapshots": self.snapshots, "buckets": self.buckets}),
            new: json!({"open_groups": self.open, "exposed": self.exposed}),
            started_at,
            finished_at: Utc::now(),
        }
    }
}

#[derive(Debug, Serialize)]
struct Exposed {
    resource: String,
    problem: String,
    /// dry run, exempt: <why>, or the status of its own remediation record and what it says.
    outcome: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    record: Option<String>,
}

#[derive(Debug, Serialize)]
struct OpenGroup {
    group: String,
    rules: Vec<Rule>,
    /// fixed, exempt: <why>, notify, dry run, failed: <why>
    outcome: String,
}

impl Responder {
    /// The accounts the sweep covers: `sweep.accounts`, and those under `sweep.organizational_units`
    /// and their child OUs, as the organization lists them now.
    pub(super) async fn swept_accounts(&self) -> Result<Vec<String>, CallError> {
        let sweep = &self.settings.playbooks.sweep;
        let ids = self.ids_for_calls().await?;
        self.membership
            .accounts_under(
                &self.sessions,
                &self.member_clients,
                &ids.role_external_id,
                &sweep.organizational_units,
                &sweep.accounts,
            )
            .await
    }

    /// One account and Region's resources of `kind`, each fixed under its own record (a Config
    /// rule that judges a whole account points here).
    pub(super) async fn check_place(
        &self,
        message_id: &str,
        event_id: &str,
        account: String,
        region: String,
        kind: &str,
        source: Source,
    ) -> Outcome {
        let key = format!("check-{event_id}");
        let options = Options {
            only: vec![kind.to_owned()],
            ..Options::default()
        };
        let run = SweepRun {
            key: &key,
            message_id,
            options: &options,
            bucket_region: None,
            source,
            public_only: true,
            caller: None,
        };
        let mut place = Place::new(account, region);
        let checked = self.sweep_storage(&mut place, &run).await;
        let (status, message, transient) = match checked {
            Ok(()) => (
                if place.exposed.is_empty() {
                    Status::Skipped
                } else {
                    Status::Succeeded
                },
                format!(
                    "{} {} in {} {}: {} exposed{}",
                    place.snapshots,
                    kind,
                    place.account,
                    place.region,
                    place.exposed.len(),
                    exposed_text(&place.exposed)
                ),
                false,
            ),
            Err(e) => (Status::Failed, e.to_string(), is_transient(&e)),
        };
        Outcome {
            key,
            status,
            code: None,
            message,
            transient,
        }
    }

    pub(super) async fn sweep_place(
        &self,
        account: String,
        region: String,
        run: &SweepRun<'_>,
    ) -> Place {
        let mut place = Place::new(account, region);
        let groups = if run.options.sweeps("security_group") {
            self.sweep_into(&mut place, run.options.dry_run).await
        } else {
            Ok(())
        };
        let swept = match groups {
            Ok(()) => self.sweep_storage(&mut place, run).await,
            Err(e) => Err(e),
        };
        if let Err(e) = swept {
            place.transient = is_transient(&e);
            place.error = Some(e.to_string());
        }
        place
    }

    /// Snapshots of the place and, in the account's first Region, its buckets: what is exposed is
    /// fixed through the same per-resource playbook an event runs, each with its own record.
    async fn sweep_storage(&self, place: &mut Place, run: &SweepRun<'_>) -> Result<(), CallError> {
        let partition = super::remediate::partition_of(&place.region);
        let clients = self
            .session_in(partition, &place.account, Some(&place.region))
            .await?;
        let mut found: Vec<(Resource, String, String)> = Vec::new();
        let snapshots = if run.options.sweeps("ebs_snapshot") {
            snapshot::scan(&clients.ec2).await?
        } else {
            Vec::new()
        };
        place.snapshots = snapshots.len();
        for s in snapshots {
            let mut problems = Vec::new();
            if s.public {
                problems.push("restorable by everyone");
            }
            if !s.encrypted && !run.public_only {
                problems.push("unencrypted");
            }
            if !problems.is_empty() {
                found.push((
                    Resource::Snapshot {
                        snapshot_id: s.id.clone(),
                    },
                    place.region.clone(),
                    problems.join(", "),
                ));
            }
        }
        if run.options.sweeps("s3_bucket") && run.bucket_region == Some(place.region.as_str()) {
            let names = bucket::list(&clients.s3).await?;
            place.buckets = names.len();
            for name in names {
                let Some(b) = bucket::read(&clients.s3, &name, &place.account).await? else {
                    continue;
                };
                let exposure = b.exposure();
                if exposure.is_public() {
                    found.push((
                        Resource::Bucket { name },
                        b.region.clone(),
                        exposure.describe(),
                    ));
                }
            }
        }
        let account_exempt = self.account_exemption(&place.account).await?;
        for (resource, region, problem) in found {
            let label = format!("{} {}", resource.kind(), resource.id());
            let (outcome, record) = if let Some(why) = &account_exempt {
                (why.clone(), None)
            } else if run.options.dry_run {
                ("dry run".to_owned(), None)
            } else {
                let trigger = Trigger {
                    event_id: run.key.to_owned(),
                    account: place.account.clone(),
                    region,
                    resource,
                    source: run.source.clone(),
                    time: None,
                };
                match Box::pin(self.remediate_one(
                    run.message_id,
                    &trigger,
                    Intent::Found,
                    run.caller,
                ))
                .await
                {
                    Ok(o) => (format!("{}: {}", o.status.as_str(), o.message), Some(o.key)),
                    Err(e) => (format!("failed: {e}"), None),
                }
            };
            place.exposed.push(Exposed {
                resource: label,
                problem,
                outcome,
                record,
            });
        }
        Ok(())
    }

    async fn sweep_into(&self, place: &mut Place, dry_run: bool) -> Result<(), CallError> {
        let playbooks = &self.settings.playbooks;
        let settings = &playbooks.open_security_group;
        let exemptions = &playbooks.exemptions;
        let partition = super::remediate::partition_of(&place.region);
        let clients = self
            .session_in(partition, &place.account, Some(&place.region))
            .await?;
        let (groups, count) = security_group::scan(&clients.ec2, &exemptions.tag).await?;
        place.groups = count;
        let account_exempt = self.account_exemption(&place.account).await?;
        let mut to_fix: Vec<usize> = Vec::new();
        let mut own: Option<std::collections::HashSet<String>> = None;
        for g in groups {
            let rules = g.offending(&settings.ports);
            if rules.is_empty() {
                continue;
            }
            // Read only where something is open: most places have no open group at all.
            if own.is_none() {
                own = Some(
                    security_group::quell_untracked(&clients.ec2, &self.settings.name_prefix)
                        .await?,
                );
            }
            if own.as_ref().is_some_and(|o| o.contains(&g.id)) {
                place.open.push(OpenGroup {
                    group: g.id,
                    rules,
                    outcome: "Quell's own untracked containment group (verified by name, tag and exact rules), left alone".to_owned(),
                });
                continue;
            }
            let tag_exempt = match exemptions.for_tags(&g.tags) {
                TagExemption::Exempt(why) => Some(why),
                TagExemption::None | TagExemption::Unexplained => None,
            };
            let outcome = if let Some(why) = account_exempt.clone().or(tag_exempt) {
                why
            } else if dry_run {
                "dry run".to_owned()
            } else if settings.mode == Mode::Notify {
                "notify".to_owned()
            } else {
                to_fix.push(place.open.len());
                "fixing".to_owned()
            };
            place.open.push(OpenGroup {
                group: g.id,
                rules,
                outcome,
            });
        }
        // One revoke per group, a few at once: a place with hundreds of open groups is the case
        // the sweep exists for.
        let ec2 = &clients.ec2;
        let revoked: Vec<(usize, Result<(), CallError>)> = futures::stream::iter(to_fix)
            .map(|i| {
                let g = &place.open[i];
                async move { (i, security_group::revoke(ec2, &g.group, &g.rules).await) }
            })
            .buffer_unordered(REVOKES_AT_ONCE)
            .collect()
            .await;
        for (i, result) in revoked {
            place.open[i].outcome = match result {
                Ok(()) => "fixed".to_owned(),
                Err(e) => format!("failed: {e}"),
            };
        }
        // Read back what was fixed: nothing is reported fixed that was not seen fixed.
        let fixed: Vec<&mut OpenGroup> = place
            .open
            .iter_mut()
            .filter(|g| g.outcome == "fixed")
            .collect();
        if !fixed.is_empty() {
            let (after, _) = security_group::ingress_by_group(&clients.ec2).await?;
            for g in fixed {
                let still: Vec<&Rule> = after
                    .get(&g.group)
                    .map(|rules| crate::playbooks::exposure::offending(rules, &settings.ports))
                    .unwrap_or_default();
                if !still.is_empty() {
                    g.outcome = format!(
                        "failed: still open after the revoke ({} rules)",
                        still.len()
                    );
                }
            }
        }
        Ok(())
    }
}
