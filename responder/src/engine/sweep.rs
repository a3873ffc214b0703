//! The organization-wide sweep: the same playbook over every target account x Region, a bounded
//! number at once, for what events missed. One ledger record per sweep, one step per place, with
//! every group found, fixed or left alone and why.

use chrono::Utc;
use futures::StreamExt;
use serde::Serialize;
use serde_json::json;

use super::{is_transient, Outcome, Responder};
use crate::audit::AuditEvent;
use crate::aws_error::CallError;
use crate::contract::{Action, Options, SWEEP_ENTITY};
use crate::error::ResponderError;
use crate::ledger::{Claim, Record, Status, Step, StepStatus};
use crate::playbooks::exposure::Rule;
use crate::playbooks::{security_group, Mode, TagExemption};

/// Revoke calls in flight at once within one account and Region.
const REVOKES_AT_ONCE: usize = 16;

/// What the sweep did in one account and Region.
#[derive(Debug, Serialize)]
struct Place {
    account: String,
    region: String,
    groups: usize,
    open: Vec<OpenGroup>,
    error: Option<String>,
    transient: bool,
}

#[derive(Debug, Serialize)]
struct OpenGroup {
    group: String,
    rules: Vec<Rule>,
    /// fixed, exempt: <why>, notify, dry run, failed: <why>
    outcome: String,
}

impl Responder {
    /// Runs a sweep under `key` (a request id, or `sweep:<event id>` for the schedule).
    pub(super) async fn sweep(
        &self,
        key: &str,
        message_id: &str,
        requester: &str,
        options: &Options,
    ) -> Result<Outcome, ResponderError> {
        let mut fresh = Record::new(key.to_owned(), Utc::now(), message_id);
        fresh.request_id = Some(key.to_owned());
        fresh.action = Action::Sweep;
        fresh.options = options.clone();
        fresh.entity = Some(SWEEP_ENTITY.into());
        fresh.entity_kind = Some("organization".into());
        fresh.requester = Some(requester.to_owned());
        fresh.reason = Some(if options.dry_run {
            "sweep, dry run: find and record, change nothing".into()
        } else {
            "sweep: run the playbooks over every target account and Region".into()
        });
        let mut record =
            match self.ledger.claim(fresh, Utc::now()).await.map_err(|e| {
                ResponderError::Aws(format!("cannot claim {key} in the ledger: {e}"))
            })? {
                Claim::Fresh(r) | Claim::Resumed(r) => r,
                Claim::Busy(r) | Claim::Finished(r) => {
                    return Ok(Outcome {
                        key: key.to_owned(),
                        status: r.status,
                        code: Some("duplicate".into()),
                        message: "this sweep is running or ran already".into(),
                        transient: false,
                    })
                }
            };
        self.audit_or_log(AuditEvent::Started, &record).await;
        let sweep = &self.settings.playbooks.sweep;
        let accounts = match self.ids_for_calls().await {
            Ok(ids) => {
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
            Err(e) => Err(e),
        };
        let accounts = match accounts {
            Ok(a) => a,
            Err(e) => {
                return self
                    .finish_failed(
                        &mut record,
                        format!("cannot list the target accounts: {e}"),
                        is_transient(&e),
                    )
                    .await
            }
        };
        let places: Vec<(String, String)> = accounts
            .iter()
            .flat_map(|a| sweep.regions.iter().map(move |r| (a.clone(), r.clone())))
            .collect();
        let dry_run = options.dry_run;
        let results: Vec<Place> = futures::stream::iter(places)
            .map(
                |(account, region)| async move { self.sweep_place(account, region, dry_run).await },
            )
            .buffer_unordered(sweep.concurrency.max(1))
            .collect()
            .await;
        let mut results = results;
        results.sort_by(|a, b| (&a.account, &a.region).cmp(&(&b.account, &b.region)));
        let now = Utc::now();
        let (mut fixed, mut open, mut failed_places) = (0, 0, 0);
        for p in &results {
            open += p.open.len();
            fixed += p.open.iter().filter(|g| g.outcome == "fixed").count();
            failed_places += usize::from(p.error.is_some());
            record.steps.push(Step {
                name: format!("sweep {} {}", p.account, p.region),
                status: if p.error.is_some() {
                    StepStatus::Failed
                } else if p.open.is_empty() {
                    StepStatus::Skipped
                } else {
                    StepStatus::Done
                },
                detail: match &p.error {
                    Some(e) => format!("not swept: {e}"),
                    None => format!(
                        "{} groups, {} open to the world on a sensitive port, {} fixed",
                        p.groups,
                        p.open.len(),
                        p.open.iter().filter(|g| g.outcome == "fixed").count()
                    ),
                },
                prior: json!({"groups": p.groups}),
                new: json!(p.open),
                started_at: now,
                finished_at: now,
            });
        }
        let summary = format!(
            "{} accounts x Regions swept: {open} open groups found, {fixed} fixed, {failed_places} places not swept",
            results.len()
        );
        if failed_places > 0 {
            let transient = results
                .iter()
                .filter(|p| p.error.is_some())
                .all(|p| p.transient);
            return self.finish_failed(&mut record, summary, transient).await;
        }
        record.reason = Some(format!(
            "{}; {summary}",
            record.reason.clone().unwrap_or_default()
        ));
        record.status = Status::Succeeded;
        record.finished_at = Some(Utc::now());
        record.updated_at = Utc::now();
        self.ledger
            .save(&record)
            .await
            .map_err(|e| ResponderError::Aws(format!("cannot record the sweep: {e}")))?;
        self.audit_or_log(AuditEvent::Succeeded, &record).await;
        Ok(Outcome {
            key: key.to_owned(),
            status: Status::Succeeded,
            code: None,
            message: summary,
            transient: false,
        })
    }

    async fn sweep_place(&self, account: String, region: String, dry_run: bool) -> Place {
        let mut place = Place {
            account,
            region,
            groups: 0,
            open: Vec::new(),
            error: None,
            transient: false,
        };
        if let Err(e) = self.sweep_into(&mut place, dry_run).await {
            place.transient = is_transient(&e);
            place.error = Some(e.to_string());
        }
        place
    }

    async fn sweep_into(&self, place: &mut Place, dry_run: bool) -> Result<(), CallError> {
        let playbooks = &self.settings.playbooks;
        let settings = &playbooks.open_security_group;
        let exemptions = &playbooks.exemptions;
        let partition = super::remediate::partition_of(&place.region);
        let clients = self
            .session_in(partition, &place.account, Some(&place.region))
            .await?;
        let groups = security_group::scan(&clients.ec2).await?;
        place.groups = groups.len();
        let account_exempt = self.account_exemption(&place.account).await?;
        let mut to_fix: Vec<usize> = Vec::new();
        for g in groups {
            let rules = g.offending(&settings.ports);
            if rules.is_empty() {
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
            let after = security_group::scan(&clients.ec2).await?;
            for g in fixed {
                let still = after
                    .iter()
                    .find(|a| a.id == g.group)
                    .map(|a| a.offending(&settings.ports))
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
