//! What Quell puts in the organization and what that costs a month, before anything is
//! installed: counted from the templates this configuration renders and the accounts it targets,
//! priced from a dated table in the repository (`prices.yaml`) under named assumptions.

// Counts of accounts, resources and calls a month stay far below 2^52: as f64 they are exact.
#![allow(clippy::cast_precision_loss)]

use std::collections::BTreeMap;
use std::fmt::Write as _;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use crate::config::{Architecture, Config};
use crate::render::{RegionScope, Rendered, StackSetDefinition};

const PRICES: &str = include_str!("prices.yaml");

#[derive(Debug, Clone, Deserialize)]
struct Prices {
    as_of: String,
    region: String,
    config_rule_evaluation: Vec<Tier>,
    lambda_request_per_million: f64,
    lambda_gb_second_arm64: f64,
    lambda_gb_second_x86_64: f64,
    sqs_request_per_million: f64,
    dynamodb_write_per_million: f64,
    dynamodb_read_per_million: f64,
    sns_publish_per_million: f64,
    eventbridge_event_per_million: f64,
    kms_key_month: f64,
    secret_month: f64,
    cloudwatch_alarm_month: f64,
    logs_ingest_per_gb: f64,
    assumptions: Assumptions,
}

#[derive(Debug, Clone, Deserialize)]
struct Tier {
    up_to: Option<u64>,
    usd: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Assumptions {
    pub events_per_place_per_day: f64,
    pub config_evaluations_per_rule_per_place_per_month: f64,
    pub responder_ms_per_event: f64,
    pub ledger_writes_per_event: f64,
    pub ledger_reads_per_event: f64,
    pub audit_messages_per_event: f64,
    pub containments_per_month: f64,
    pub log_kb_per_invocation: f64,
    pub idle_queue_requests_per_month: f64,
}

/// What Quell deploys at this size.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Footprint {
    /// Member accounts the configuration targets.
    pub accounts: usize,
    pub regions: usize,
    /// Stack instances over every stack set (account x Region each).
    pub stack_instances: usize,
    /// Resources by CloudFormation type, over the whole organization.
    pub resources: BTreeMap<String, usize>,
    /// AWS Config rules in each account and Region.
    pub config_rules_per_place: usize,
    /// Stacks in the security and management accounts.
    pub stacks: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Line {
    pub what: String,
    pub usd_per_month: f64,
    /// How it is worked out, with the quantities.
    pub basis: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Estimate {
    pub footprint: Footprint,
    /// Biggest first.
    pub lines: Vec<Line>,
    pub total_usd_per_month: f64,
    /// Config rule evaluations' share of the total, and what `config_rules: false` saves.
    pub config_rules_share: f64,
    pub prices_as_of: String,
    pub prices_region: String,
    pub assumptions: Assumptions,
}

/// How many resources of each type a rendered template declares.
fn resource_types(template: &str) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for line in template.lines() {
        if let Some(t) = line.trim().strip_prefix("Type: ") {
            let t = t.trim().trim_matches(|c| c == '"' || c == '\'');
            if t.starts_with("AWS::") {
                *out.entry(t.to_owned()).or_insert(0) += 1;
            }
        }
    }
    out
}

/// The footprint of `config` over `accounts` targeted member accounts.
pub fn footprint(
    config: &Config,
    rendered: &Rendered,
    definitions: &[StackSetDefinition],
    accounts: usize,
) -> Footprint {
    let regions = config.all_regions().len();
    let mut f = Footprint {
        accounts,
        regions,
        ..Footprint::default()
    };
    let mut seen = std::collections::BTreeSet::new();
    for d in definitions {
        // A definition is deployed as two stack sets (OUs, single accounts) over the same targets.
        if !seen.insert(d.template.clone()) {
            continue;
        }
        let places = accounts
            * match d.regions {
                RegionScope::Home => 1,
                RegionScope::All => regions,
            };
        f.stack_instances += places;
        let types = rendered
            .get(d.template.as_str())
            .map(|t| resource_types(t))
            .unwrap_or_default();
        if d.regions == RegionScope::All {
            f.config_rules_per_place += types.get("AWS::Config::ConfigRule").copied().unwrap_or(0);
        }
        for (t, n) in types {
            *f.resources.entry(t).or_insert(0) += n * places;
        }
    }
    for (file, text) in rendered {
        if file.starts_with("member-") {
            continue;
        }
        f.stacks += 1;
        for (t, n) in resource_types(text) {
            *f.resources.entry(t).or_insert(0) += n;
        }
    }
    f
}

fn tiered(count: f64, tiers: &[Tier]) -> f64 {
    let mut left = count;
    let mut below = 0.0;
    let mut usd = 0.0;
    for t in tiers {
        let size = t.up_to.map_or(f64::INFINITY, |u| u as f64 - below);
        let here = left.min(size);
        usd += here * t.usd;
        left -= here;
        below += size;
        if left <= 0.0 {
            break;
        }
    }
    usd
}

/// Runs a month of the sweep schedule makes: `rate(N unit)`; a cron is counted as daily.
fn sweeps_per_month(schedule: &str) -> f64 {
    let inner = schedule
        .strip_prefix("rate(")
        .and_then(|s| s.strip_suffix(')'));
    let Some((n, unit)) = inner.and_then(|s| s.split_once(' ')) else {
        return 30.0;
    };
    let n: f64 = n.parse().unwrap_or(1.0);
    let minutes = match unit.trim_end_matches('s') {
        "minute" => n,
        "hour" => n * 60.0,
        "day" => n * 1440.0,
        _ => 1440.0,
    };
    30.0 * 1440.0 / minutes.max(1.0)
}

fn money(usd: f64) -> String {
    if usd >= 100.0 {
        format!("${usd:.0}")
    } else {
        format!("${usd:.2}")
    }
}

fn count(n: f64) -> String {
    if n >= 1e6 {
        format!("{:.1} M", n / 1e6)
    } else if n >= 1e3 {
        format!("{:.1} k", n / 1e3)
    } else {
        format!("{n:.0}")
    }
}

pub fn estimate(config: &Config, footprint: Footprint) -> anyhow::Result<Estimate> {
    let p: Prices =
        serde_saphyr::from_str(PRICES).context("cli/src/cost/prices.yaml is malformed")?;
    let a = p.assumptions.clone();
    let places = (footprint.accounts * footprint.regions) as f64;
    let events = places * a.events_per_place_per_day * 30.0;
    let sweeps = sweeps_per_month(&config.sweep.schedule) * places;
    let invocations = events + sweeps + a.containments_per_month;
    let gb_seconds = invocations * a.responder_ms_per_event / 1000.0
        * f64::from(config.responder.memory_mb)
        / 1024.0;
    let gb_second = match config.responder.architecture {
        Architecture::Arm64 => p.lambda_gb_second_arm64,
        Architecture::X86_64 => p.lambda_gb_second_x86_64,
    };
    let queues = footprint
        .resources
        .get("AWS::Lambda::EventSourceMapping")
        .copied()
        .unwrap_or(0) as f64;
    let sqs_requests = invocations * 3.0 + queues * a.idle_queue_requests_per_month;
    let per_place_evaluations =
        footprint.config_rules_per_place as f64 * a.config_evaluations_per_rule_per_place_per_month;
    let evaluations = per_place_evaluations * places;
    let keys = footprint
        .resources
        .get("AWS::KMS::Key")
        .copied()
        .unwrap_or(0) as f64;
    let alarms = footprint
        .resources
        .get("AWS::CloudWatch::Alarm")
        .copied()
        .unwrap_or(0) as f64;
    let mut lines = vec![
        Line {
            what: "AWS Config rule evaluations".into(),
            usd_per_month: tiered(per_place_evaluations, &p.config_rule_evaluation) * places,
            basis: format!(
                "{} rules x {} evaluations x {} accounts x Regions = {} evaluations",
                footprint.config_rules_per_place,
                a.config_evaluations_per_rule_per_place_per_month,
                places,
                count(evaluations)
            ),
        },
        Line {
            what: "EventBridge: events forwarded to the security account".into(),
            usd_per_month: events / 1e6 * p.eventbridge_event_per_million,
            basis: format!("{} events", count(events)),
        },
        Line {
            what: "Lambda: the responder".into(),
            usd_per_month: invocations / 1e6 * p.lambda_request_per_million + gb_seconds * gb_second,
            basis: format!(
                "{} invocations (events, {} swept places, containments) x {} ms at {} MB = {} GB-s",
                count(invocations),
                count(sweeps),
                a.responder_ms_per_event,
                config.responder.memory_mb,
                count(gb_seconds)
            ),
        },
        Line {
            what: "SQS: the responder's queues".into(),
            usd_per_month: sqs_requests / 1e6 * p.sqs_request_per_million,
            basis: format!(
                "{} requests (3 per message, and {queues:.0} queues long-polled by Lambda when idle)",
                count(sqs_requests)
            ),
        },
        Line {
            what: "DynamoDB: the ledger (on demand)".into(),
            usd_per_month: invocations * a.ledger_writes_per_event / 1e6 * p.dynamodb_write_per_million
                + invocations * a.ledger_reads_per_event / 1e6 * p.dynamodb_read_per_million,
            basis: format!(
                "{} writes and {} reads",
                count(invocations * a.ledger_writes_per_event),
                count(invocations * a.ledger_reads_per_event)
            ),
        },
        Line {
            what: "SNS: audit messages".into(),
            usd_per_month: invocations * a.audit_messages_per_event / 1e6 * p.sns_publish_per_million,
            basis: format!("{} messages", count(invocations * a.audit_messages_per_event)),
        },
        Line {
            what: "CloudWatch: logs and alarms".into(),
            usd_per_month: invocations * a.log_kb_per_invocation / 1e6 * p.logs_ingest_per_gb
                + alarms * p.cloudwatch_alarm_month,
            basis: format!(
                "{:.2} GB of logs, {alarms:.0} alarms",
                invocations * a.log_kb_per_invocation / 1e6
            ),
        },
        Line {
            what: "KMS key and the ExternalId secret".into(),
            usd_per_month: keys * p.kms_key_month + p.secret_month,
            basis: format!("{keys:.0} key, 1 secret"),
        },
    ];
    lines.sort_by(|x, y| y.usd_per_month.total_cmp(&x.usd_per_month));
    let total: f64 = lines.iter().map(|l| l.usd_per_month).sum();
    let config_rules = lines
        .iter()
        .find(|l| l.what.starts_with("AWS Config"))
        .map_or(0.0, |l| l.usd_per_month);
    Ok(Estimate {
        footprint,
        lines,
        total_usd_per_month: total,
        config_rules_share: if total > 0.0 {
            config_rules / total
        } else {
            0.0
        },
        prices_as_of: p.as_of,
        prices_region: p.region,
        assumptions: a,
    })
}

/// The estimate for the organization `ctx` reached: its targeted accounts today.
pub fn for_context(ctx: &crate::converge::Context) -> anyhow::Result<Estimate> {
    let accounts: std::collections::BTreeSet<String> =
        ctx.targets().into_iter().flat_map(|t| t.accounts).collect();
    estimate(
        &ctx.config,
        footprint(&ctx.config, &ctx.rendered, &ctx.definitions, accounts.len()),
    )
}

impl Estimate {
    pub fn text(&self) -> String {
        let f = &self.footprint;
        let mut t = String::new();
        let _ = writeln!(
            t,
            "Footprint: {} accounts x {} Regions, {} stack instances, {} stacks; {} AWS Config rules in each account and Region",
            f.accounts, f.regions, f.stack_instances, f.stacks, f.config_rules_per_place
        );
        let interesting = [
            "AWS::IAM::Role",
            "AWS::Events::Rule",
            "AWS::Config::ConfigRule",
            "AWS::Lambda::Function",
            "AWS::SQS::Queue",
        ];
        let shown: Vec<String> = interesting
            .iter()
            .filter_map(|k| {
                f.resources
                    .get(*k)
                    .map(|n| format!("{n} {}", k.rsplit("::").next().unwrap_or(k)))
            })
            .collect();
        let _ = writeln!(t, "  in all: {}", shown.join(", "));
        let _ = writeln!(
            t,
            "Estimated cost: {} a month (prices of {} in {}; assumptions below)",
            money(self.total_usd_per_month),
            self.prices_as_of,
            self.prices_region
        );
        for l in &self.lines {
            let _ = writeln!(
                t,
                "  {:>9}  {}: {}",
                money(l.usd_per_month),
                l.what,
                l.basis
            );
        }
        if self.config_rules_share >= 0.5 {
            let _ = writeln!(
                t,
                "  Config rule evaluations are {:.0}% of it: `config_rules: false` saves them, and the playbooks still act on CloudTrail events and the sweep.",
                self.config_rules_share * 100.0
            );
        }
        let a = &self.assumptions;
        let _ = writeln!(
            t,
            "  assumed: {} forwarded events per account and Region a day, {} evaluations per Config rule per account and Region a month, {} ms per invocation, {} containments a month; no free tier counted",
            a.events_per_place_per_day,
            a.config_evaluations_per_rule_per_place_per_month,
            a.responder_ms_per_event,
            a.containments_per_month
        );
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiers() -> Vec<Tier> {
        serde_saphyr::from_str::<Prices>(PRICES)
            .unwrap()
            .config_rule_evaluation
    }

    #[test]
    fn evaluations_are_priced_by_tier() {
        let t = tiers();
        assert!((tiered(1_000.0, &t) - 1.0).abs() < 1e-9);
        // 100,000 at $0.001, 400,000 at $0.0008, 100,000 at $0.0005.
        assert!((tiered(600_000.0, &t) - (100.0 + 320.0 + 50.0)).abs() < 1e-6);
    }

    #[test]
    fn the_schedule_sets_the_sweeps() {
        assert!((sweeps_per_month("rate(12 hours)") - 60.0).abs() < 1e-9);
        assert!((sweeps_per_month("rate(1 day)") - 30.0).abs() < 1e-9);
        assert!((sweeps_per_month("cron(0 3 * * ? *)") - 30.0).abs() < 1e-9);
    }

    #[test]
    fn resources_are_counted_by_type() {
        let t = "Resources:\n  A:\n    Type: AWS::Config::ConfigRule\n  B:\n    Type: \"AWS::Config::ConfigRule\"\n  C:\n    Type: AWS::Events::Rule\n  D:\n    Type: Custom::Thing\n";
        let types = resource_types(t);
        assert_eq!(types["AWS::Config::ConfigRule"], 2);
        assert_eq!(types["AWS::Events::Rule"], 1);
        assert_eq!(types.len(), 2);
    }

    #[test]
    fn the_example_organization_is_estimated_biggest_line_first() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../quell.example.yaml");
        let config = Config::load(&path).unwrap();
        let rendered = crate::render::render_all(&config).unwrap();
        let definitions = StackSetDefinition::all();
        let at = |accounts| {
            estimate(
                &config,
                footprint(&config, &rendered, &definitions, accounts),
            )
            .unwrap()
        };
        let small = at(10);
        let large = at(1_000);
        assert!(small.footprint.config_rules_per_place > 0);
        assert_eq!(
            large.footprint.stack_instances,
            100 * small.footprint.stack_instances
        );
        assert!(large
            .lines
            .windows(2)
            .all(|w| w[0].usd_per_month >= w[1].usd_per_month));
        assert_eq!(large.lines[0].what, "AWS Config rule evaluations");
        assert!(large.config_rules_share > 0.5, "{}", large.text());
        assert!(
            large.text().contains("`config_rules: false` saves them"),
            "{}",
            large.text()
        );
        assert!(large.total_usd_per_month > small.total_usd_per_month * 50.0);
    }
}
