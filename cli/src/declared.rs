//! Playbooks declared in the configuration (`declared_playbooks:`), inline or in files it
//! includes, read and checked with every problem reported where it is: file, line, column, the
//! key, what was expected and the nearest known name.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use quell_responder::playbooks::language::definition::Playbook;
use quell_responder::playbooks::language::{Node, Problem};
use serde_json::Value;

use crate::located::Located;

const KEY: &str = "declared_playbooks";

/// A playbook as read, with where it came from.
#[derive(Debug)]
pub struct Declared {
    pub playbook: Playbook,
    /// The playbook as written (without its `tests:`): what the responder is given to parse.
    pub source: Value,
    /// The file it is in (the configuration, or the file it includes).
    pub file: PathBuf,
}

impl Declared {
    /// A path a playbook names (an event fixture), relative to its file.
    pub fn relative(&self, path: &str) -> PathBuf {
        self.file
            .parent()
            .map_or_else(|| PathBuf::from(path), |dir| dir.join(path))
    }
}

/// A problem placed in its file.
#[derive(Debug, Clone)]
pub struct Diagnostic {
    pub file: PathBuf,
    pub line: u64,
    pub column: u64,
    pub problem: Problem,
}

impl std::fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let p = &self.problem;
        writeln!(f, "error: {}", p.found)?;
        write!(
            f,
            "  --> {}:{}:{}",
            self.file.display(),
            self.line,
            self.column
        )?;
        if !p.at.is_empty() {
            write!(f, " ({})", p.at)?;
        }
        if let Some(e) = &p.expected {
            write!(f, "\n  = expected {e}")?;
        }
        if let Some(d) = &p.did_you_mean {
            write!(f, "\n  = help: did you mean `{d}`?")?;
        }
        Ok(())
    }
}

/// Every problem found, each placed.
#[derive(Debug)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl std::fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut text = String::new();
        for d in &self.0 {
            let _ = writeln!(text, "{d}");
        }
        let n = self.0.len();
        write!(
            f,
            "{text}{n} problem{} in the declared playbooks; nothing was changed",
            if n == 1 { "" } else { "s" }
        )
    }
}

impl std::error::Error for Diagnostics {}

fn read(path: &Path) -> Result<Located, Box<Diagnostic>> {
    let place = |found: String| {
        Box::new(Diagnostic {
            file: path.to_owned(),
            line: 1,
            column: 1,
            problem: Problem::new(found),
        })
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| place(format!("cannot read {}: {e}", path.display())))?;
    Located::parse(&text).map_err(|e| place(format!("not YAML: {e}")))
}

/// The declared playbooks of the configuration at `config_path`, all checked; the problems of all
/// of them when any has one.
pub fn load(config_path: &Path) -> Result<Vec<Declared>, Diagnostics> {
    let config = read(config_path).map_err(|d| Diagnostics(vec![*d]))?;
    let Some(entries) = config.value.get(KEY) else {
        return Ok(Vec::new());
    };
    let placed = |located: &Located, file: &Path, problem: Problem| {
        let (line, column) = located.place(&problem.at);
        Diagnostic {
            file: file.to_owned(),
            line,
            column,
            problem,
        }
    };
    let Some(entries) = entries.as_array() else {
        return Err(Diagnostics(vec![placed(
            &config,
            config_path,
            Problem::new("a value that is not a list")
                .expected("a list of playbooks, or of `include: FILE`")
                .at(KEY),
        )]));
    };
    let mut out = Vec::new();
    let mut problems = Vec::new();
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    for (i, entry) in entries.iter().enumerate() {
        let at = format!("{KEY}[{i}]");
        let include = entry
            .as_object()
            .filter(|m| m.len() == 1)
            .and_then(|m| m.get("include"))
            .and_then(Value::as_str);
        let loaded = match include {
            Some(rel) => {
                let file = config_path
                    .parent()
                    .unwrap_or_else(|| Path::new("."))
                    .join(rel);
                match read(&file) {
                    Ok(located) => {
                        let parsed = Playbook::parse(Node::new(&located.value, ""));
                        parsed
                            .map(|p| (p, located.value.clone(), file.clone()))
                            .map_err(|e| placed(&located, &file, e))
                    }
                    Err(mut d) => {
                        let (line, column) = config.place(&format!("{at}.include"));
                        d.problem.at = format!("{at}.include");
                        config_path.clone_into(&mut d.file);
                        d.line = line;
                        d.column = column;
                        Err(*d)
                    }
                }
            }
            None => Playbook::parse(Node::new(entry, &at))
                .map(|p| (p, entry.clone(), config_path.to_owned()))
                .map_err(|e| placed(&config, config_path, e)),
        };
        match loaded {
            Ok((playbook, mut source, file)) => {
                if let Some(first) = seen.insert(playbook.id.clone(), at.clone()) {
                    problems.push(placed(
                        &config,
                        config_path,
                        Problem::new(format!("a second playbook `{}`", playbook.id))
                            .expected(format!("ids unique: `{first}` has it already"))
                            .at(&at),
                    ));
                    continue;
                }
                if let Some(fields) = source.as_object_mut() {
                    fields.remove("tests");
                }
                out.push(Declared {
                    playbook,
                    source,
                    file,
                });
            }
            Err(d) => problems.push(d),
        }
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(Diagnostics(problems))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    fn shipped() -> String {
        std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../playbooks/critical-cve.yaml"
        ))
        .unwrap()
    }

    #[test]
    fn included_and_inline_playbooks_load_and_problems_point_into_their_files() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "cve.yaml", &shipped());
        let broken = shipped().replace(
            "    on_timeout: fail\n    outputs: [decision]",
            "    outputs: [decision]",
        );
        write(dir.path(), "broken.yaml", &broken);
        let config = write(
            dir.path(),
            "quell.yaml",
            "name: quell\ndeclared_playbooks:\n  - include: cve.yaml\n  - include: broken.yaml\n  - id: Bad\n    version: 1\n",
        );
        let e = load(&config).unwrap_err();
        assert_eq!(e.0.len(), 2, "{e}");
        let missing = &e.0[0];
        assert!(missing.file.ends_with("broken.yaml"));
        assert!(missing.problem.found.contains("no `on_timeout`"), "{e}");
        let line = broken
            .lines()
            .position(|l| l.contains("id: approve_patch"))
            .unwrap() as u64
            + 1;
        assert_eq!((missing.line, missing.column), (line, 5), "{e}");
        let inline = &e.0[1];
        assert!(inline.file.ends_with("quell.yaml"));
        assert_eq!(inline.problem.at, "declared_playbooks[2]");
        assert!(inline.problem.found.contains("no `trigger`"), "{e}");
        assert_eq!((inline.line, inline.column), (5, 5));
        assert!(
            e.to_string().contains(&format!("broken.yaml:{line}:5")),
            "{e}"
        );

        let good = write(
            dir.path(),
            "good.yaml",
            "declared_playbooks:\n  - include: cve.yaml\n",
        );
        let loaded = load(&good).unwrap();
        assert_eq!(loaded[0].playbook.id, "critical-cve");
        assert!(loaded[0]
            .relative("fixtures/x.json")
            .starts_with(dir.path()));
    }

    #[test]
    fn a_missing_include_or_a_repeated_id_is_named_in_the_configuration() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "cve.yaml", &shipped());
        let config = write(
            dir.path(),
            "quell.yaml",
            "declared_playbooks:\n  - include: cve.yaml\n  - include: cve.yaml\n  - include: nowhere.yaml\n",
        );
        let e = load(&config).unwrap_err();
        assert_eq!(e.0.len(), 2, "{e}");
        assert!(
            e.0[0]
                .problem
                .found
                .contains("a second playbook `critical-cve`"),
            "{e}"
        );
        assert_eq!(e.0[1].problem.at, "declared_playbooks[2].include");
        assert_eq!((e.0[1].line, e.0[1].column), (4, 5));
    }
}
