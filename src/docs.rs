//! Man pages (`man/`) and shell completions (`completions/`), rendered from the clap
//! definitions. `scripts/gen-docs` writes them; a test renders them in memory and fails
//! when the committed files differ.

use clap::CommandFactory;
use clap_complete::Shell;

use crate::stage::{enrich, ingest_http, ingest_kafka, persist, validate};

/// Every command's clap definition, by binary name.
pub fn commands() -> Vec<clap::Command> {
    vec![
        validate::Args::command(),
        enrich::Args::command(),
        persist::Args::command(),
        ingest_http::Args::command(),
        ingest_kafka::Args::command(),
    ]
}

/// Every generated file: its path relative to the package root, and its bytes.
pub fn render() -> Vec<(String, Vec<u8>)> {
    let mut files = Vec::new();
    for cmd in commands() {
        let name = cmd.get_name().to_owned();
        let mut man = Vec::new();
        clap_mangen::Man::new(cmd.clone())
            .render(&mut man)
            .expect("rendering to memory cannot fail");
        files.push((format!("man/{name}.1"), man));
        for (shell, file) in [
            (Shell::Bash, format!("completions/{name}.bash")),
            (Shell::Zsh, format!("completions/_{name}")),
            (Shell::Fish, format!("completions/{name}.fish")),
        ] {
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut cmd.clone(), name.clone(), &mut out);
            files.push((file, out));
        }
    }
    files
}
