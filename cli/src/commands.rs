//! Small commands that need no AWS access.

use std::fmt::Write as _;

use crate::args::{GlobalArgs, RenderArgs};
use crate::config::Config;
use crate::printer::Printer;
use crate::render;

pub fn render(global: &GlobalArgs, args: &RenderArgs, printer: &Printer) -> anyhow::Result<u8> {
    let config = Config::load(&crate::config_file::find(global, args.config.as_deref())?)?;
    let rendered = render::render_all(&config)?;
    std::fs::create_dir_all(&args.out)
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", args.out.display()))?;
    let mut written = Vec::new();
    for (file, text) in &rendered {
        let path = args.out.join(file);
        std::fs::write(&path, text)
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
        written.push(path.display().to_string());
    }
    printer.result(&serde_json::json!({ "written": written }), || {
        let mut text = String::new();
        for w in &written {
            let _ = writeln!(text, "wrote {w}");
        }
        text
    });
    Ok(crate::exit::SUCCESS)
}
