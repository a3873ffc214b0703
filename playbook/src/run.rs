//! A run of a declared playbook as a state machine: each input (the start, a step's result, a
//! timer, an approval, an event) moves the run on and says what must happen next. Nothing here
//! calls AWS or sleeps: the responder carries out the effects (a step's AWS calls, an SQS delay or
//! a one-time schedule, an approval request) and feeds their results back.
//!
//! Inputs arrive late, early and twice, as timers and queues deliver them: an input that does not
//! fit where the run stands changes nothing and asks for nothing.

use std::collections::BTreeSet;

use chrono::{DateTime, Duration as Span, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use wildmatch::WildMatch;

use crate::catalogue;
use crate::definition::{Playbook, Step};
use crate::template::{fill_all, Template};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Status {
    /// A step's action is being carried out.
    Running {
        step: usize,
        attempt: u32,
    },
    /// A wait, approval or `wait_for` holds the run until `until`.
    Waiting {
        step: usize,
        until: DateTime<Utc>,
    },
    Succeeded,
    /// Stopped by `end` or a rejected approval, with the writes done so far still in place.
    Ended {
        reason: String,
    },
    Failed {
        reason: String,
    },
    RolledBack {
        reason: String,
    },
}

impl Status {
    pub fn finished(&self) -> bool {
        matches!(
            self,
            Status::Succeeded
                | Status::Ended { .. }
                | Status::Failed { .. }
                | Status::RolledBack { .. }
        )
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    pub id: String,
    /// done, skipped, failed, timed_out, released, not_done (a write in notify or simulate
    /// mode), or empty before it is reached.
    pub outcome: String,
    pub attempts: u32,
    #[serde(default)]
    pub outputs: Map<String, Value>,
    /// Distinct principals who approved, for approvals.
    #[serde(default)]
    pub approvers: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One run: the playbook it follows, pinned, and where it stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Run {
    pub id: String,
    pub playbook: String,
    pub version: u64,
    pub target: String,
    pub started_at: DateTime<Utc>,
    /// Who started it, for runs a person started (`quell run`), as the unique id AWS gave the
    /// sender (a user id, or a role id and session name): they may not approve it.
    pub requester: Option<String>,
    /// The event, finding, resource and account the run reads.
    pub context: Value,
    pub status: Status,
    pub steps: Vec<StepRecord>,
    /// Who may approve a playbook in approve mode (the configuration's `authorization.decide`),
    /// and whether they have: one approval before the first write covers the run.
    #[serde(default)]
    pub mode_approvers: Vec<String>,
    #[serde(default)]
    pub mode_approved: bool,
}

/// How long a playbook in approve mode waits for its approval before the run ends.
pub const MODE_APPROVAL_WINDOW: Span = Span::days(7);

/// What happened, fed back to the run.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    StepDone {
        step: String,
        attempt: u32,
        outputs: Map<String, Value>,
    },
    StepFailed {
        step: String,
        attempt: u32,
        error: String,
        /// Throttling, a timeout: worth the step's retries.
        transient: bool,
    },
    TimerFired {
        step: String,
    },
    /// An approval or rejection, from a sender AWS authenticated: `principal` is the IAM role or
    /// user ARN IAM confirmed (matched against the approvers), `person` the sender's unique id
    /// (a user id, or role id and session name), which tells two people in one role apart.
    Decision {
        step: String,
        principal: String,
        person: String,
        approve: bool,
    },
    /// An event about the run's finding, for a `wait_for`.
    Event {
        finding: Value,
    },
}

/// What must happen next.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "effect", rename_all = "snake_case")]
pub enum Effect {
    /// Carry out the step's action with these parameters, on this resource.
    Act {
        step: String,
        action: String,
        attempt: u32,
        parameters: Value,
        target: String,
    },
    /// Deliver `TimerFired` for the step at `at` (SQS delay up to 15 minutes, a one-time schedule
    /// beyond).
    Timer { step: String, at: DateTime<Utc> },
    /// Ask the approvers; their decisions come back as `Decision`.
    AskApproval {
        step: String,
        approvers: Vec<String>,
        min: u64,
        summary: String,
    },
    /// Undo these steps, newest first, with each one's inverse.
    Release { steps: Vec<(String, String)> },
    /// The run is over.
    Finished { status: Status },
}

/// An input the run refuses outright (as opposed to one it ignores because it is late).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused(pub String);

impl Run {
    /// A new run of `playbook` on `target`, with what it reads.
    pub fn new(
        id: &str,
        playbook: &Playbook,
        target: &str,
        context: Value,
        requester: Option<String>,
        now: DateTime<Utc>,
    ) -> Run {
        Run {
            id: id.to_owned(),
            playbook: playbook.id.clone(),
            version: playbook.version,
            target: target.to_owned(),
            started_at: now,
            requester,
            context,
            status: Status::Running {
                step: 0,
                attempt: 0,
            },
            steps: playbook
                .steps
                .iter()
                .map(|s| StepRecord {
                    id: s.id.clone(),
                    ..StepRecord::default()
                })
                .collect(),
            mode_approvers: Vec::new(),
            mode_approved: false,
        }
    }

    /// Whether the run waits at `at` for the approval its playbook's approve mode asks before
    /// the first write.
    fn awaits_mode_approval(&self, playbook: &Playbook, at: usize) -> bool {
        playbook.mode == "approve" && !self.mode_approved && playbook.steps[at].writes()
    }

    fn index(&self, id: &str) -> Option<usize> {
        self.steps.iter().position(|s| s.id == id)
    }

    /// The index of `step` when the run is carrying out exactly that attempt of it: an answer for
    /// any other step or attempt is late or repeated.
    fn running(&self, step: &str, attempt: u32) -> Option<usize> {
        let Status::Running {
            step: at,
            attempt: current,
        } = self.status
        else {
            return None;
        };
        (self.index(step) == Some(at) && attempt == current).then_some(at)
    }

    /// The context steps read: what the run started with, its outputs so far, and itself.
    fn context(&self) -> Value {
        let mut c = self.context.clone();
        let steps: Map<String, Value> = self
            .steps
            .iter()
            .map(|s| (s.id.clone(), json!({ "outputs": s.outputs })))
            .collect();
        c["steps"] = Value::Object(steps);
        c["run"] = json!({"id": self.id, "started_at": self.started_at.to_rfc3339()});
        c
    }

    /// Starts the run: its first steps, up to the first one that needs the outside world.
    pub fn start(&mut self, playbook: &Playbook, now: DateTime<Utc>) -> Vec<Effect> {
        self.proceed(playbook, 0, now)
    }

    /// Moves the run on with `input`.
    pub fn advance(
        &mut self,
        playbook: &Playbook,
        input: Input,
        now: DateTime<Utc>,
    ) -> Result<Vec<Effect>, Refused> {
        if self.status.finished() {
            return Ok(Vec::new());
        }
        Ok(match input {
            Input::StepDone {
                step,
                attempt,
                outputs,
            } => {
                let Some(at) = self.running(&step, attempt) else {
                    return Ok(Vec::new());
                };
                let declared = &playbook.steps[at].outputs;
                let record = &mut self.steps[at];
                record.outcome = "done".into();
                record.outputs = outputs
                    .into_iter()
                    .filter(|(k, _)| declared.contains(k))
                    .collect();
                self.proceed(playbook, at + 1, now)
            }
            Input::StepFailed {
                step,
                attempt,
                error,
                transient,
            } => {
                let Some(at) = self.running(&step, attempt) else {
                    return Ok(Vec::new());
                };
                let definition = &playbook.steps[at];
                if transient && attempt < definition.retry {
                    return Ok(self.act(playbook, at, attempt + 1));
                }
                let record = &mut self.steps[at];
                record.outcome = "failed".into();
                record.error = Some(error.clone());
                let handling = definition.on_error.clone();
                self.after(
                    playbook,
                    at,
                    &handling,
                    &format!("step {step} failed: {error}"),
                    now,
                )
            }
            Input::TimerFired { step } => {
                let Status::Waiting { step: at, until } = self.status else {
                    return Ok(Vec::new());
                };
                // Early or for another step: a timer delivered twice or out of turn.
                if self.index(&step) != Some(at) || now < until {
                    return Ok(Vec::new());
                }
                let definition = &playbook.steps[at];
                if definition.action == "wait" {
                    self.steps[at].outcome = "done".into();
                    return Ok(self.proceed(playbook, at + 1, now));
                }
                if self.awaits_mode_approval(playbook, at) {
                    self.steps[at].outcome = "not_done".into();
                    return Ok(self.finish(Status::Ended {
                        reason: format!(
                            "nobody approved step {step} within {} days (mode approve)",
                            MODE_APPROVAL_WINDOW.num_days()
                        ),
                    }));
                }
                self.steps[at].outcome = "timed_out".into();
                self.steps[at]
                    .outputs
                    .insert("decision".into(), json!("timed_out"));
                let handling = definition
                    .on_timeout
                    .clone()
                    .unwrap_or_else(|| "fail".into());
                self.after(
                    playbook,
                    at,
                    &handling,
                    &format!("step {step} timed out"),
                    now,
                )
            }
            Input::Decision {
                step,
                principal,
                person,
                approve,
            } => {
                let Status::Waiting { step: at, .. } = self.status else {
                    return Err(Refused(format!(
                        "run {} is not waiting for an approval",
                        self.id
                    )));
                };
                let definition = &playbook.steps[at];
                let mode_approval = self.awaits_mode_approval(playbook, at);
                if self.index(&step) != Some(at)
                    || !(definition.action == "approval" || mode_approval)
                {
                    return Err(Refused(format!(
                        "run {} is waiting at step {}, not at approval {step}",
                        self.id, self.steps[at].id
                    )));
                }
                let approvers = if mode_approval {
                    self.mode_approvers.clone()
                } else {
                    strings(&definition.with, "approvers")
                };
                if !approvers
                    .iter()
                    .any(|p| WildMatch::new(p).matches(&principal))
                {
                    return Err(Refused(format!(
                        "{principal} is not among the approvers of step {step}"
                    )));
                }
                if self.requester.as_deref() == Some(person.as_str()) {
                    return Err(Refused(format!(
                        "{person} started run {}, and may not approve it",
                        self.id
                    )));
                }
                if mode_approval {
                    self.steps[at].approvers.push(person.clone());
                    if !approve {
                        self.steps[at].outcome = "not_done".into();
                        return Ok(self.finish(Status::Ended {
                            reason: format!(
                                "{person} ({principal}) rejected the run (mode approve)"
                            ),
                        }));
                    }
                    self.mode_approved = true;
                    return Ok(self.act(playbook, at, 1));
                }
                if !approve {
                    let record = &mut self.steps[at];
                    record.outcome = "done".into();
                    record.outputs.insert("decision".into(), json!("rejected"));
                    record.outputs.insert("approvers".into(), json!([person]));
                    return Ok(self.finish(Status::Ended {
                        reason: format!("{person} ({principal}) rejected step {step}"),
                    }));
                }
                let min = definition
                    .with
                    .get("min")
                    .and_then(Value::as_u64)
                    .unwrap_or(1);
                let record = &mut self.steps[at];
                if !record.approvers.contains(&person) {
                    record.approvers.push(person);
                }
                if (record.approvers.len() as u64) < min {
                    return Ok(Vec::new());
                }
                record.outcome = "done".into();
                record.outputs.insert("decision".into(), json!("approved"));
                record
                    .outputs
                    .insert("approvers".into(), json!(record.approvers.clone()));
                self.proceed(playbook, at + 1, now)
            }
            Input::Event { finding } => {
                let Status::Waiting { step: at, .. } = self.status else {
                    return Ok(Vec::new());
                };
                let definition = &playbook.steps[at];
                if definition.action != "wait_for" {
                    return Ok(Vec::new());
                }
                let Some(condition) = definition
                    .with
                    .get("event")
                    .and_then(|c| crate::condition::Condition::parse(crate::Node::new(c, "")).ok())
                else {
                    return Ok(Vec::new());
                };
                // Only events about the run's own finding.
                if finding["arn"] != self.context["finding"]["arn"] {
                    return Ok(Vec::new());
                }
                if !condition
                    .evaluate(&json!({ "finding": finding }), now)
                    .matched
                {
                    return Ok(Vec::new());
                }
                self.steps[at].outcome = "done".into();
                self.steps[at].outputs.insert("event".into(), finding);
                self.proceed(playbook, at + 1, now)
            }
        })
    }

    fn finish(&mut self, status: Status) -> Vec<Effect> {
        self.status = status.clone();
        vec![Effect::Finished { status }]
    }

    /// What `on_error` or `on_timeout` says to do after step `at`.
    fn after(
        &mut self,
        playbook: &Playbook,
        at: usize,
        handling: &str,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Vec<Effect> {
        match handling {
            "continue" => self.proceed(playbook, at + 1, now),
            "end" => self.finish(Status::Ended {
                reason: reason.to_owned(),
            }),
            "rollback" => {
                let undo = self.undoable(playbook, None);
                for (id, _) in &undo {
                    if let Some(i) = self.index(id) {
                        self.steps[i].outcome = "released".into();
                    }
                }
                let mut effects = vec![Effect::Release { steps: undo }];
                effects.extend(self.finish(Status::RolledBack {
                    reason: reason.to_owned(),
                }));
                effects
            }
            "fail" => self.finish(Status::Failed {
                reason: reason.to_owned(),
            }),
            later => match self.index(later) {
                // Checking guarantees a later step; a run from an older version is failed safe.
                Some(j) if j > at => self.proceed(playbook, j, now),
                _ => self.finish(Status::Failed {
                    reason: format!("{reason}; `{later}` is not a later step"),
                }),
            },
        }
    }

    /// `quell release RUN` on a finished run: every done step with an inverse, newest first,
    /// marked released. Nothing when the run still goes on, or all is released already.
    pub fn release_all(&mut self, playbook: &Playbook) -> Vec<(String, String)> {
        if !self.status.finished() {
            return Vec::new();
        }
        let undo = self.undoable(playbook, None);
        for (id, _) in &undo {
            if let Some(i) = self.index(id) {
                self.steps[i].outcome = "released".into();
            }
        }
        undo
    }

    /// Done steps with an inverse, newest first, limited to `only` when given.
    fn undoable(
        &self,
        playbook: &Playbook,
        only: Option<&BTreeSet<String>>,
    ) -> Vec<(String, String)> {
        self.steps
            .iter()
            .zip(&playbook.steps)
            .rev()
            .filter(|(record, _)| record.outcome == "done")
            .filter(|(record, _)| only.is_none_or(|o| o.contains(&record.id)))
            .filter_map(|(record, step)| {
                let inverse = catalogue::action(&step.action)?.inverse?;
                Some((record.id.clone(), inverse.to_owned()))
            })
            .collect()
    }

    fn act(&mut self, playbook: &Playbook, at: usize, attempt: u32) -> Vec<Effect> {
        let step = &playbook.steps[at];
        let context = self.context();
        let parameters = match fill_all(&Value::Object(step.with.clone()), &context) {
            Ok(p) => p,
            Err(e) => {
                self.steps[at].outcome = "failed".into();
                self.steps[at].error = Some(e.to_string());
                return self.finish(Status::Failed {
                    reason: format!("step {}: {e}", step.id),
                });
            }
        };
        let target = match &step.target {
            Some(t) => match Template::parse(&t.id).and_then(|t| t.fill(&context)) {
                Ok(Value::String(id)) if crate::usable_id(&id) => id,
                Ok(other) => {
                    return self.finish(Status::Failed {
                        reason: format!("step {}: no usable target ({other})", step.id),
                    })
                }
                Err(e) => {
                    return self.finish(Status::Failed {
                        reason: format!("step {}: {e}", step.id),
                    })
                }
            },
            None => self.target.clone(),
        };
        self.steps[at].attempts = attempt;
        self.status = Status::Running { step: at, attempt };
        vec![Effect::Act {
            step: step.id.clone(),
            action: step.action.clone(),
            attempt,
            parameters,
            target,
        }]
    }

    /// Runs steps from `from` until one needs the outside world, or the run ends.
    fn proceed(&mut self, playbook: &Playbook, from: usize, now: DateTime<Utc>) -> Vec<Effect> {
        let mut at = from;
        loop {
            let Some(step) = playbook.steps.get(at) else {
                return self.finish(Status::Succeeded);
            };
            if let Some(condition) = &step.condition {
                if !condition.evaluate(&self.context(), now).matched {
                    self.steps[at].outcome = "skipped".into();
                    at += 1;
                    continue;
                }
            }
            return match step.action.as_str() {
                "end" => {
                    self.steps[at].outcome = "done".into();
                    self.finish(Status::Ended {
                        reason: format!("step {} ends the run", step.id),
                    })
                }
                "fail" => {
                    let reason = fill_all(
                        &step.with.get("reason").cloned().unwrap_or(Value::Null),
                        &self.context(),
                    )
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_else(|| format!("step {} fails the run", step.id));
                    self.steps[at].outcome = "done".into();
                    self.finish(Status::Failed { reason })
                }
                "release" => {
                    let named: BTreeSet<String> =
                        strings(&step.with, "steps").into_iter().collect();
                    let undo = self.undoable(playbook, Some(&named));
                    for (id, _) in &undo {
                        if let Some(i) = self.index(id) {
                            self.steps[i].outcome = "released".into();
                        }
                    }
                    self.steps[at].outcome = "done".into();
                    let mut effects = vec![Effect::Release { steps: undo }];
                    effects.extend(self.proceed(playbook, at + 1, now));
                    effects
                }
                "wait" => {
                    let wait = step
                        .with
                        .get("for")
                        .and_then(Value::as_str)
                        .and_then(|d| crate::parse_duration(d).ok())
                        .unwrap_or_default();
                    self.hold(step, at, now, wait)
                }
                "approval" => {
                    let mut effects = self.hold(step, at, now, step.timeout.unwrap_or_default());
                    let summary = fill_all(
                        &step.with.get("summary").cloned().unwrap_or(Value::Null),
                        &self.context(),
                    )
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default();
                    effects.insert(
                        0,
                        Effect::AskApproval {
                            step: step.id.clone(),
                            approvers: strings(&step.with, "approvers"),
                            min: step.with.get("min").and_then(Value::as_u64).unwrap_or(1),
                            summary,
                        },
                    );
                    effects
                }
                "wait_for" => self.hold(step, at, now, step.timeout.unwrap_or_default()),
                // notify and simulate: the run goes through its steps, writing nothing.
                _ if self.awaits_mode_approval(playbook, at) => {
                    let mut effects = self.hold(
                        step,
                        at,
                        now,
                        MODE_APPROVAL_WINDOW.to_std().unwrap_or_default(),
                    );
                    effects.insert(
                        0,
                        Effect::AskApproval {
                            step: step.id.clone(),
                            approvers: self.mode_approvers.clone(),
                            min: 1,
                            summary: format!(
                                "playbook {} (mode approve) would now start writing on {}: step {} ({})",
                                playbook.id, self.target, step.id, step.action
                            ),
                        },
                    );
                    effects
                }
                _ if step.writes() && matches!(playbook.mode.as_str(), "notify" | "simulate") => {
                    self.steps[at].outcome = "not_done".into();
                    at += 1;
                    continue;
                }
                _ => self.act(playbook, at, 1),
            };
        }
    }

    fn hold(
        &mut self,
        step: &Step,
        at: usize,
        now: DateTime<Utc>,
        wait: std::time::Duration,
    ) -> Vec<Effect> {
        let until = now + Span::from_std(wait).unwrap_or_else(|_| Span::days(30));
        self.status = Status::Waiting { step: at, until };
        vec![Effect::Timer {
            step: step.id.clone(),
            at: until,
        }]
    }
}

fn strings(with: &Map<String, Value>, key: &str) -> Vec<String> {
    with.get(key)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests;
