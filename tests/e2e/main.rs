//! End-to-end tests: the real `quell` and `bootstrap` binaries against one local sandbox.
//!
//! Tests run one at a time: some switch moto's IAM enforcement, which is global to the sandbox.

mod authorization;
mod bad_input;
mod browser;
mod burst;
mod cli;
mod contain;
mod crash;
mod declared;
mod delivery;
mod entities;
mod faults;
mod install;
mod load;
mod permissions;
mod proxy;
mod remediate;
mod report;
mod storage;
mod support;
mod sweep;
mod upgrade;

use std::future::Future;
use std::process::ExitCode;
use std::sync::Arc;

use libtest_mimic::{Arguments, Failed, Trial};
use support::Sandbox;

type TestFn =
    fn(Arc<Sandbox>) -> std::pin::Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>>;

/// Tests that need no sandbox.
fn offline() -> Vec<Trial> {
    cli::offline()
        .into_iter()
        .chain(report::offline())
        .collect()
}

fn main() -> ExitCode {
    let mut args = Arguments::from_args();
    args.test_threads = Some(1);
    let mut trials = offline();
    let online: Vec<(&'static str, TestFn)> = [
        install::tests(),
        contain::tests(),
        bad_input::tests(),
        authorization::tests(),
        entities::tests(),
        cli::online(),
        remediate::tests(),
        storage::tests(),
        report::tests(),
        sweep::tests(),
        declared::tests(),
        delivery::tests(),
        burst::tests(),
        faults::tests(),
        load::tests(),
        crash::tests(),
        // It ends with an uninstall and a fresh install.
        upgrade::tests(),
        // Last: what the responder called in all of the above.
        permissions::tests(),
    ]
    .concat();
    // Start a sandbox only when a test that needs it is going to run.
    let wanted: Vec<_> = online
        .iter()
        .filter(|(name, _)| {
            args.filter.as_deref().is_none_or(|f| {
                if args.exact {
                    *name == f
                } else {
                    name.contains(f)
                }
            })
        })
        .collect();
    let sandbox = if wanted.is_empty() || args.list {
        None
    } else {
        match Sandbox::start() {
            Ok(s) => Some(Arc::new(s)),
            Err(e) => {
                eprintln!("cannot start the sandbox for the end-to-end tests: {e:#}");
                return ExitCode::FAILURE;
            }
        }
    };
    for (name, test) in online {
        let sandbox = sandbox.clone();
        trials.push(Trial::test(name, move || {
            let s = sandbox.ok_or_else(|| Failed::from("no sandbox"))?;
            let rt = &s.runtime;
            rt.block_on(test(s.clone()))
                .map_err(|e| Failed::from(format!("{e:#}")))
        }));
    }
    let conclusion = libtest_mimic::run(&args, trials);
    if let Some(s) = sandbox {
        if let Err(e) = s.stop() {
            eprintln!("sandbox down failed: {e:#}");
            return ExitCode::FAILURE;
        }
    }
    conclusion.exit_code()
}

/// Wraps an async test function for the table above.
#[macro_export]
macro_rules! online {
    ($($name:ident),* $(,)?) => {
        vec![$((stringify!($name), (|s| Box::pin($name(s))) as $crate::TestFn)),*]
    };
}
