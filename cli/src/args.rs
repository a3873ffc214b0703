//! Command-line arguments. Logic lives in one module per command; this file only says what can be typed.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "quell",
    version,
    about = "Open-source SOAR for AWS Organizations: install it everywhere, contain what is compromised."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Args)]
pub struct GlobalArgs {
    /// Run against the local sandbox started by `quell sandbox up` instead of AWS.
    #[arg(long, global = true)]
    pub sandbox: bool,
    /// AWS profile to use (ignored with --sandbox).
    #[arg(long, global = true, env = "AWS_PROFILE")]
    pub profile: Option<String>,
    /// Output format.
    #[arg(long, global = true, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
    /// Print only results and errors.
    #[arg(long, short, global = true)]
    pub quiet: bool,
    /// More logging (repeat for more).
    #[arg(long, short, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Render the CloudFormation templates for a configuration into a folder.
    Render(RenderArgs),
    /// Install Quell across the organization: security stack, member StackSets, the responder.
    /// On an existing deployment it is the same as `upgrade`.
    Install(ConvergeArgs),
    /// Bring the deployment in line with the configuration and this build: shows the plan first.
    Upgrade(ConvergeArgs),
    /// What is deployed: versions, stack instances per Region, drift, latest containments.
    Status(StatusArgs),
    /// Remove Quell from the organization and list what it leaves behind.
    Uninstall(UninstallArgs),
    /// Check that everything Quell needs is in place, and say how to fix what is not.
    Doctor(DoctorArgs),
    /// Run the playbooks over every target account and Region now, and report per place.
    Sweep(SweepArgs),
    /// Carry out a fix a playbook in approve mode is holding (ID from the audit message or `quell history`).
    Approve(DecisionArgs),
    /// Drop a fix a playbook in approve mode is holding: it is recorded as denied and never done.
    Deny(DecisionArgs),
    /// Contain a compromised entity: publish a containment request and wait for its outcome.
    Contain(ContainArgs),
    /// Undo a containment from the prior state recorded in the ledger.
    Release(ReleaseArgs),
    /// List containments and releases from the ledger, newest first.
    History(HistoryArgs),
    /// Runs of the declared playbooks: the latest, or one as a timeline with what it waits for.
    Runs(RunsArgs),
    /// Start a declared playbook with a `manual` trigger on one entity, and wait for the run to
    /// finish or wait (for an approval, a timer, an event).
    Run(RunArgs),
    /// Replace the ExternalId that authenticates containment messages; the old one is still
    /// accepted for the grace period, so publishers can switch without a gap.
    RotateExternalId(RotateArgs),
    /// What is in the responder's dead-letter queue, readable; `quell dlq redrive` sends the events
    /// in it back to the events queue once the cause is fixed.
    Dlq(DlqArgs),
    /// Declared playbooks: check them, see what one would do with an event, run their tests.
    /// None of these calls AWS.
    Playbook {
        #[command(subcommand)]
        command: PlaybookCommand,
    },
    /// The organization at a glance: one self-contained HTML file (deployment per account and
    /// Region, containments, remediations, the last sweep, totals); `--output json` for the data.
    Report(ReportArgs),
    /// Shell completions, printed: `quell completions bash > /etc/bash_completion.d/quell`.
    Completions {
        #[arg(value_enum)]
        shell: Shell,
    },
    /// The manual page (roff), made from the same definitions as `--help`: printed, or with
    /// `--out DIR` one page per command (`man -l DIR/quell.1`).
    Man(ManArgs),
    /// The local sandbox: a simulated AWS Organization on this machine (moto).
    Sandbox {
        #[command(subcommand)]
        command: SandboxCommand,
    },
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Quell configuration file (default: ./quell.yaml, then $QUELL_CONFIG; with --sandbox, the
    /// sandbox's own).
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Where to write the page.
    #[arg(long, default_value = "report.html")]
    pub out: PathBuf,
    /// The period the ledger is read for: 30d, 12h, 2w, 90m.
    #[arg(long, default_value = "30d", value_parser = crate::report::parse_since)]
    pub since: chrono::Duration,
    /// Render a report saved with `--output json` instead of reading AWS (for sharing, or
    /// rendering again with this build).
    #[arg(long)]
    pub from: Option<PathBuf>,
    /// StackSets are administered as a delegated administrator.
    #[arg(long)]
    pub delegated_admin: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

#[derive(Debug, Args)]
pub struct ManArgs {
    /// Folder to write quell.1 and a page per command to (created if missing).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct RenderArgs {
    /// Quell configuration file (default: ./quell.yaml, then $QUELL_CONFIG; with --sandbox, the
    /// sandbox's own).
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Folder to write the templates to (created if missing).
    #[arg(long)]
    pub out: PathBuf,
}

// Command-line switches are booleans by nature.
#[allow(clippy::struct_excessive_bools)]
#[derive(Debug, Args)]
pub struct ConvergeArgs {
    /// Quell configuration file (default: ./quell.yaml, then $QUELL_CONFIG; with --sandbox, the
    /// sandbox's own).
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Apply without asking.
    #[arg(long, short)]
    pub yes: bool,
    /// Print the plan and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Run the current template again on stack instances a previous operation left failed.
    #[arg(long)]
    pub retry_failed: bool,
    /// Run as a StackSets delegated administrator: every StackSet call uses CallAs=DELEGATED_ADMIN.
    #[arg(long)]
    pub delegated_admin: bool,
    /// The responder binary to package (default: `bootstrap` next to this `quell`).
    #[arg(long)]
    pub bootstrap: Option<PathBuf>,
    /// Install without first running `quell doctor`'s blocking checks (stack instances then fail
    /// in the places those checks would have named).
    #[arg(long)]
    pub skip_checks: bool,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Quell configuration file (default: ./quell.yaml, then $QUELL_CONFIG; with --sandbox, the
    /// sandbox's own).
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Also run StackSet drift detection and show its results (starts one operation per stack set).
    #[arg(long)]
    pub drift: bool,
    /// StackSets are administered as a delegated administrator.
    #[arg(long)]
    pub delegated_admin: bool,
    /// How many of the latest containments to show.
    #[arg(long, default_value_t = 10)]
    pub containments: usize,
}

#[allow(clippy::struct_excessive_bools)]
#[derive(Debug, Args)]
pub struct UninstallArgs {
    /// Quell configuration file (default: ./quell.yaml, then $QUELL_CONFIG; with --sandbox, the
    /// sandbox's own).
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Do not ask for confirmation.
    #[arg(long, short)]
    pub yes: bool,
    /// Release every entity Quell still holds contained before removing the responder.
    #[arg(long)]
    pub release_all: bool,
    /// Export the ledger to a JSON file here and delete its table (kept otherwise: it is evidence).
    #[arg(long)]
    pub delete_ledger: bool,
    #[arg(long)]
    pub delegated_admin: bool,
}

#[derive(Debug, Args)]
pub struct SweepArgs {
    /// Find and record, change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Only these kinds of resource (comma-separated); every kind when absent.
    #[arg(long, value_enum, value_delimiter = ',')]
    pub only: Vec<SweepKind>,
    #[arg(long, short)]
    pub yes: bool,
    /// Quell configuration file (default: ./quell.yaml, then $QUELL_CONFIG; with --sandbox, the
    /// sandbox's own).
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Seconds to wait for the sweep to end (it goes on either way: `quell history` shows it).
    #[arg(long, default_value_t = 3600)]
    pub timeout: u64,
}

/// What `quell sweep --only` can limit a sweep to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "snake_case")]
pub enum SweepKind {
    SecurityGroup,
    S3Bucket,
    EbsSnapshot,
}

impl SweepKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SweepKind::SecurityGroup => "security_group",
            SweepKind::S3Bucket => "s3_bucket",
            SweepKind::EbsSnapshot => "ebs_snapshot",
        }
    }
}

#[derive(Debug, Args)]
pub struct DecisionArgs {
    /// The remediation's ledger id, e.g. remediation:<event id>:<resource>, or a declared
    /// playbook's run, run:<playbook>:<hash>:<window>.
    pub id: String,
    /// A run's approval step being decided (runs only).
    #[arg(long)]
    pub step: Option<String>,
    /// Why: recorded in the ledger and every audit message.
    #[arg(long, short)]
    pub reason: String,
    #[arg(long, short)]
    pub yes: bool,
    /// Quell configuration file (default: ./quell.yaml, then $QUELL_CONFIG; with --sandbox, the
    /// sandbox's own).
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Seconds to wait for the responder's outcome.
    #[arg(long, default_value_t = 300)]
    pub timeout: u64,
}

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Quell configuration file (default: ./quell.yaml, then $QUELL_CONFIG; with --sandbox, the
    /// sandbox's own).
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Check as a StackSets delegated administrator.
    #[arg(long)]
    pub delegated_admin: bool,
}

#[derive(Debug, Args)]
pub struct ContainArgs {
    /// ARN of the entity to contain, e.g. arn:aws:iam::111122223333:user/alice
    pub arn: String,
    /// Why: recorded in the ledger and in every audit message.
    #[arg(long)]
    pub reason: String,
    /// Do not ask for confirmation.
    #[arg(long, short)]
    pub yes: bool,
    /// Quell configuration file (default: ./quell.yaml, then $QUELL_CONFIG; with --sandbox, the
    /// sandbox's own).
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Request id (default: a new UUID). Sending the same id again never acts twice.
    #[arg(long)]
    pub request_id: Option<String>,
    /// Seconds to wait for the outcome (an EC2 instance's includes the connection-tracking wait).
    #[arg(long, default_value_t = 300)]
    pub timeout: u64,
    /// EC2 instances: also take tagged snapshots of every attached volume, for forensics.
    #[arg(long)]
    pub snapshot: bool,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The declared playbook's id (its trigger must be `manual`).
    pub playbook: String,
    /// ARN of the entity the run acts on, e.g. arn:aws:ec2:eu-west-1:111122223333:instance/i-0abc
    #[arg(long)]
    pub target: String,
    /// Why: recorded in the ledger, in every audit message, and in the run's `event.detail.reason`.
    #[arg(long)]
    pub reason: String,
    /// Do not ask for confirmation.
    #[arg(long, short)]
    pub yes: bool,
    /// Quell configuration file (default: ./quell.yaml, then $QUELL_CONFIG; with --sandbox, the
    /// sandbox's own).
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Request id (default: a new UUID). Sending the same id again never starts a second run.
    #[arg(long)]
    pub request_id: Option<String>,
    /// Seconds to wait for the run to finish or to start waiting.
    #[arg(long, default_value_t = 300)]
    pub timeout: u64,
}

#[derive(Debug, Args)]
pub struct ReleaseArgs {
    /// ARN of the contained entity, or a declared playbook's finished run (run:...): what it
    /// changed is undone, newest first.
    pub arn: String,
    /// Why: recorded in the ledger and in every audit message.
    #[arg(long, default_value = "released with quell release")]
    pub reason: String,
    /// IAM users: make the access keys Quell deactivated active again (they stay inactive otherwise).
    #[arg(long)]
    pub reactivate_keys: bool,
    #[arg(long, short)]
    pub yes: bool,
    /// Quell configuration file (default: ./quell.yaml, then $QUELL_CONFIG; with --sandbox, the
    /// sandbox's own).
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    #[arg(long)]
    pub request_id: Option<String>,
    #[arg(long, default_value_t = 120)]
    pub timeout: u64,
}

#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// Only the records about this entity.
    pub arn: Option<String>,
    /// Quell configuration file (default: ./quell.yaml, then $QUELL_CONFIG; with --sandbox, the
    /// sandbox's own).
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// At most this many records.
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
}

#[derive(Debug, Args)]
pub struct RunsArgs {
    /// One run's id (run:<playbook>:<hash>:<window>), shown step by step.
    pub id: Option<String>,
    /// Quell configuration file (default: ./quell.yaml, then $QUELL_CONFIG; with --sandbox, the
    /// sandbox's own).
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// At most this many runs.
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
}

#[derive(Debug, Args)]
pub struct DlqArgs {
    #[command(subcommand)]
    pub command: Option<DlqCommand>,
    /// Quell configuration file (default: ./quell.yaml, then $QUELL_CONFIG; with --sandbox, the
    /// sandbox's own).
    #[arg(long, short, global = true)]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// Send the events in the dead-letter queue back to the events queue, each once, and delete
    /// them from the dead-letter queue; everything else stays, with what to do about it.
    Redrive {
        /// Send them; without it, only what would be sent is shown.
        #[arg(long, short)]
        yes: bool,
    },
}

#[derive(Debug, Args)]
pub struct RotateArgs {
    /// Quell configuration file (default: ./quell.yaml, then $QUELL_CONFIG; with --sandbox, the
    /// sandbox's own).
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// How long the old ExternalId is still accepted, in minutes (0 to 10080, a week).
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u32).range(0..=10_080))]
    pub grace_minutes: u32,
    /// Rotate without asking.
    #[arg(long, short)]
    pub yes: bool,
}

#[derive(Debug, Subcommand)]
pub enum PlaybookCommand {
    /// Check every declared playbook: each problem with its file, line and column.
    Check(PlaybookConfigArgs),
    /// What a playbook would do with an event: trigger, each condition's values, each step's
    /// parameters and IAM actions. Makes no AWS call.
    Simulate(SimulateArgs),
    /// Run every declared playbook's `tests:`; exits 1 when one fails.
    Test(PlaybookConfigArgs),
    /// The actions a step may use: parameters, outputs, what undoes each, the IAM actions it needs.
    Actions,
}

#[derive(Debug, Args)]
pub struct PlaybookConfigArgs {
    /// Quell configuration file (default: ./quell.yaml, then $QUELL_CONFIG; with --sandbox, the
    /// sandbox's own).
    #[arg(long, short)]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct SimulateArgs {
    /// Quell configuration file (default: ./quell.yaml, then $QUELL_CONFIG; with --sandbox, the
    /// sandbox's own).
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// The playbook's id.
    pub playbook: String,
    /// An EventBridge event, as JSON (fixtures for each kind: playbooks/fixtures/events).
    #[arg(long)]
    pub event: PathBuf,
    /// What the run would read live about the target, as JSON (state, tags, ...).
    #[arg(long)]
    pub resource: Option<PathBuf>,
    /// The account, as JSON (id, name, ou_path).
    #[arg(long)]
    pub account: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum SandboxCommand {
    /// Start the sandbox (installs moto on first use) and seed a simulated organization.
    Up(SandboxUpArgs),
    /// Stop the sandbox processes this project started.
    Down,
    /// Show the sandbox: endpoint, accounts, Regions and everything seeded.
    Status,
    /// Turn moto's IAM enforcement on or off.
    Iam(IamArgs),
    /// Have the local Lambda host kill the responder part way through invocations, to test
    /// that the platform's retry resumes the work.
    Crash(CrashArgs),
    /// The main job end to end: sandbox, install across the organization, contain, report.
    Demo,
    /// Runs the local Lambda host (started by `sandbox up`).
    #[command(hide = true)]
    Host,
}

#[derive(Debug, Args)]
pub struct SandboxUpArgs {
    /// Loopback port for moto (default: a free one).
    #[arg(long)]
    pub port: Option<u16>,
    /// Execution environments the local Lambda host runs at once, each its own responder
    /// process, as Lambda runs the function side by side (1 to 64).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub environments: u16,
}

#[derive(Debug, Args)]
pub struct CrashArgs {
    /// The share of deliveries whose first try is killed (0 to 1).
    #[arg(long, default_value_t = 0.5, value_parser = share)]
    pub rate: f64,
    /// Each kill comes at a random moment within this many milliseconds of the invocation's start.
    #[arg(long, default_value_t = 200)]
    pub within_ms: u64,
    /// Kills in all, after which every try runs to the end.
    #[arg(long, default_value_t = 10)]
    pub at_most: u64,
    /// Seeds the draws, so a run can be repeated.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Stop killing.
    #[arg(long, conflicts_with_all = ["rate", "within_ms", "at_most", "seed"])]
    pub off: bool,
}

fn share(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
        _ => Err(format!(
            "{text} is not a share from 0 to 1 (0.25 kills a quarter)"
        )),
    }
}

#[derive(Debug, Args)]
pub struct IamArgs {
    #[arg(value_enum)]
    pub enforcement: Switch,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Switch {
    On,
    Off,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sweep_kinds_are_the_ones_the_responder_knows() {
        let kinds: Vec<&str> = SweepKind::value_variants()
            .iter()
            .map(|k| k.as_str())
            .collect();
        assert_eq!(kinds, quell_responder::contract::SWEEP_KINDS);
        let parsed = Cli::try_parse_from(["quell", "sweep", "--only", "s3_bucket,ebs_snapshot"])
            .expect("parses");
        let Command::Sweep(args) = parsed.command else {
            panic!("a sweep")
        };
        assert_eq!(args.only, [SweepKind::S3Bucket, SweepKind::EbsSnapshot]);
        let e = Cli::try_parse_from(["quell", "sweep", "--only", "rds"]).unwrap_err();
        assert!(e.to_string().contains("security_group"), "{e}");
    }

    #[test]
    fn a_crash_rate_is_a_share_and_off_takes_nothing_else() {
        let parsed =
            Cli::try_parse_from(["quell", "sandbox", "crash", "--rate", "0.25"]).expect("parses");
        let Command::Sandbox {
            command: SandboxCommand::Crash(args),
        } = parsed.command
        else {
            panic!("sandbox crash")
        };
        assert!((args.rate - 0.25).abs() < f64::EPSILON && !args.off);
        for bad in ["1.5", "half", "NaN"] {
            let e = Cli::try_parse_from(["quell", "sandbox", "crash", "--rate", bad]).unwrap_err();
            assert!(
                e.to_string().contains("is not a share from 0 to 1"),
                "{bad}: {e}"
            );
        }
        let e = Cli::try_parse_from(["quell", "sandbox", "crash", "--off", "--rate", "0.5"])
            .unwrap_err();
        assert!(e.to_string().contains("--rate"), "{e}");
    }
}
