//! `quell`: install, upgrade and drive the Quell SOAR across an AWS Organization.

mod args;
mod assets;
mod authorization;
mod aws;
mod calls;
mod commands;
mod config;
mod config_file;
mod contain;
mod converge;
mod cost;
mod declared;
mod deployment;
mod dlq;
mod doctor;
mod exit;
#[cfg(test)]
mod granted;
mod limits;
mod located;
mod manual;
mod package;
mod playbook_commands;
mod playbook_document;
mod printer;
mod render;
mod report;
mod runs_command;
mod sandbox;
mod status;
mod uninstall;

use clap::FromArgMatches as _;

use crate::args::{Cli, Command, PlaybookCommand, SandboxCommand};
use crate::printer::Printer;
use quell_responder::contract::Action;

fn main() -> std::process::ExitCode {
    let cli = match Cli::from_arg_matches(&manual::command().get_matches()) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    init_tracing(cli.global.verbose);
    let printer = Printer::new(&cli.global);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            printer.error(&format!("cannot start the async runtime: {e}"));
            return exit::FAILURE.into();
        }
    };
    let result = runtime.block_on(run(cli, &printer));
    calls::append_to_call_log();
    match result {
        Ok(code) => code.into(),
        Err(e) => {
            printer.error(&exit::describe(&e));
            exit::code_for(&e).into()
        }
    }
}

async fn run(cli: Cli, printer: &Printer) -> anyhow::Result<u8> {
    let global = cli.global;
    match cli.command {
        Command::Render(args) => commands::render(&global, &args, printer),
        Command::Install(args) => {
            Box::pin(converge::run(
                &global,
                &args,
                converge::Verb::Install,
                printer,
            ))
            .await
        }
        Command::Upgrade(args) => {
            Box::pin(converge::run(
                &global,
                &args,
                converge::Verb::Upgrade,
                printer,
            ))
            .await
        }
        Command::Status(args) => Box::pin(status::run(&global, &args, printer)).await,
        Command::Uninstall(args) => Box::pin(uninstall::run(&global, &args, printer)).await,
        Command::Doctor(args) => Box::pin(doctor::run(&global, &args, printer)).await,
        Command::Sweep(args) => Box::pin(contain::sweep(&global, &args, printer)).await,
        Command::Approve(args) => {
            Box::pin(contain::decide(&global, &args, Action::Approve, printer)).await
        }
        Command::Deny(args) => {
            Box::pin(contain::decide(&global, &args, Action::Deny, printer)).await
        }
        Command::Contain(args) => contain::run(&global, &args, printer).await,
        Command::Release(args) => contain::release(&global, &args, printer).await,
        Command::History(args) => contain::history(&global, &args, printer).await,
        Command::Runs(args) => runs_command::run(&global, &args, printer).await,
        Command::Dlq(args) => dlq::run(&global, &args, printer).await,
        Command::Run(args) => contain::start_run(&global, &args, printer).await,
        Command::RotateExternalId(args) => {
            contain::rotate_external_id(&global, &args, printer).await
        }
        Command::Playbook { command } => match command {
            PlaybookCommand::Check(args) => playbook_commands::check(&global, &args, printer),
            PlaybookCommand::Simulate(args) => playbook_commands::simulate(&global, &args, printer),
            PlaybookCommand::Test(args) => playbook_commands::test(&global, &args, printer),
            PlaybookCommand::Actions => Ok(playbook_commands::actions(printer)),
        },
        Command::Report(args) => Box::pin(report::run(&global, &args, printer)).await,
        Command::Completions { shell } => Ok(manual::completions(shell)),
        Command::Man(args) => manual::man(&args, printer),
        Command::Sandbox { command } => match command {
            SandboxCommand::Up(args) => sandbox::up(&args, printer).await,
            SandboxCommand::Down => sandbox::down(printer),
            SandboxCommand::Status => sandbox::status(printer),
            SandboxCommand::Iam(args) => sandbox::iam_enforcement(&args, printer).await,
            SandboxCommand::Crash(args) => sandbox::crash(&args, printer),
            SandboxCommand::Demo => Box::pin(sandbox::demo::run(printer)).await,
            SandboxCommand::Host => Box::pin(sandbox::host::run()).await,
        },
    }
}

fn init_tracing(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info,quell=debug",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("QUELL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}
