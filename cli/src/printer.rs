//! The one place that writes to the terminal. Results go to stdout (text or `--output json`);
//! progress and diagnostics go to stderr, as a live view on a terminal and as plain lines in a pipe,
//! so `quell ... --output json | jq` always gets clean JSON.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use owo_colors::OwoColorize;
use serde::Serialize;

use crate::args::{GlobalArgs, OutputFormat};

/// Four independent switches, each set by its own flag or by the terminal.
#[allow(clippy::struct_excessive_bools)]
#[derive(Debug, Clone)]
pub struct Printer {
    json: bool,
    quiet: bool,
    live: bool,
    color: bool,
}

impl Printer {
    pub fn new(global: &GlobalArgs) -> Printer {
        let live = std::io::stderr().is_terminal();
        Printer {
            json: global.output == OutputFormat::Json,
            quiet: global.quiet,
            live,
            color: live && std::env::var_os("NO_COLOR").is_none(),
        }
    }

    pub fn is_live(&self) -> bool {
        self.live && !self.quiet
    }

    /// A progress line.
    pub fn status(&self, message: &str) {
        if self.quiet {
            return;
        }
        if self.color {
            eprintln!("{} {message}", "•".cyan());
        } else {
            eprintln!("- {message}");
        }
    }

    /// Several lines of progress output at once (a plan before it is applied).
    pub fn block(&self, text: &str) {
        if !self.quiet {
            eprint!("{text}");
        }
    }

    pub fn warn(&self, message: &str) {
        if self.color {
            eprintln!("{} {message}", "warning:".yellow().bold());
        } else {
            eprintln!("warning: {message}");
        }
    }

    pub fn error(&self, message: &str) {
        if self.color {
            eprintln!("{} {message}", "error:".red().bold());
        } else {
            eprintln!("error: {message}");
        }
    }

    /// The command's result: JSON when asked for, the text otherwise.
    pub fn result<T: Serialize>(&self, value: &T, text: impl FnOnce() -> String) {
        let mut out = std::io::stdout().lock();
        if self.json {
            let _ = serde_json::to_writer_pretty(&mut out, value);
            let _ = writeln!(out);
        } else {
            let _ = write!(out, "{}", text());
        }
        let _ = out.flush();
    }

    /// A long operation: a spinner on a terminal, a line in a pipe.
    pub fn task(&self, message: &str) -> Task {
        if self.is_live() {
            let bar = ProgressBar::new_spinner();
            bar.set_style(
                ProgressStyle::with_template("{spinner:.cyan} {msg} {elapsed:.dim}")
                    .expect("valid template"),
            );
            bar.set_message(message.to_owned());
            bar.enable_steady_tick(Duration::from_millis(100));
            Task {
                bar: Some(bar),
                printer: self.clone(),
                last: std::cell::RefCell::default(),
            }
        } else {
            self.status(message);
            Task {
                bar: None,
                printer: self.clone(),
                last: std::cell::RefCell::default(),
            }
        }
    }

    pub fn paint(&self, text: &str, tone: Tone) -> String {
        if !self.color {
            return text.to_owned();
        }
        match tone {
            Tone::Good => text.green().to_string(),
            Tone::Bad => text.red().to_string(),
            Tone::Change => text.yellow().to_string(),
            Tone::Dim => text.dimmed().to_string(),
            Tone::Strong => text.bold().to_string(),
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub enum Tone {
    Good,
    Bad,
    Change,
    Dim,
    Strong,
}

/// A running task; say how it ended with [`Task::done`] or [`Task::fail`].
#[derive(Debug)]
pub struct Task {
    bar: Option<ProgressBar>,
    printer: Printer,
    /// The last progress line printed in a pipe: a repeat says nothing new.
    last: std::cell::RefCell<String>,
}

impl Task {
    pub fn update(&self, message: &str) {
        match &self.bar {
            Some(bar) => bar.set_message(message.to_owned()),
            None if *self.last.borrow() != message => {
                self.printer.status(message);
                message.clone_into(&mut self.last.borrow_mut());
            }
            None => {}
        }
    }

    /// A line that stays: above the spinner on a terminal, a plain line in a pipe.
    pub fn line(&self, message: &str) {
        match &self.bar {
            Some(bar) => bar.println(format!("  {message}")),
            None => self.printer.status(message),
        }
    }

    pub fn done(self, message: &str) {
        match self.bar {
            Some(bar) => {
                bar.finish_and_clear();
                self.printer.status(&format!(
                    "{message} {}",
                    self.printer.paint("✓", Tone::Good)
                ));
            }
            None => self.printer.status(message),
        }
    }

    pub fn fail(self) {
        if let Some(bar) = self.bar {
            bar.finish_and_clear();
        }
    }
}

/// Asks before a change; refuses without a terminal unless `yes`.
pub fn confirm(printer: &Printer, question: &str, yes: bool) -> anyhow::Result<bool> {
    if yes {
        return Ok(true);
    }
    if !std::io::stdin().is_terminal() {
        return Err(crate::exit::refused(format!(
            "{question} needs confirmation and there is no terminal to ask on: add --yes"
        )));
    }
    let _ = printer;
    eprint!("{question} [y/N] ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes" | "YES" | "Yes"))
}
