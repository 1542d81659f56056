//! Man pages (`man/`) and shell completions (`completions/`), rendered from the clap
//! definitions. `scripts/gen-docs` writes them; a test renders them in memory and fails
//! when the committed files differ.
//!
//! A man page is composed here rather than left to `clap_mangen::Man::render`: our
//! SYNOPSIS shows every option with its value, the examples (each command's `after_help`)
//! get an EXAMPLES section kept verbatim, and EXIT STATUS, ENVIRONMENT and FILES are added.
//! NAME, DESCRIPTION, OPTIONS and VERSION are clap_mangen's.

use std::io::Write;

use clap::{Arg, ArgAction, CommandFactory};
use clap_complete::Shell;

use ndpipe::exit::Exit;

/// Every binary's clap definition: the table's commands that have one, then `pipeline`.
pub fn commands() -> Vec<clap::Command> {
    ndpipe::commands::ALL
        .iter()
        .filter(|c| c.binary)
        .map(|c| (c.cli)())
        .chain([ndpipe::pipeline::Args::command()])
        .collect()
}

/// A command's examples, the text its `--help` ends with (and the man page's EXAMPLES).
/// Lines fit in [`EXAMPLE_WIDTH`] columns, so clap never re-wraps them.
pub fn examples(cmd: &clap::Command) -> String {
    cmd.get_after_help()
        .map(|s| s.to_string())
        .unwrap_or_default()
}

/// The widest an example line may be: `--help` output is wrapped to the terminal, and a
/// command split without its `\` breaks when copied.
#[cfg_attr(not(test), allow(dead_code))]
pub const EXAMPLE_WIDTH: usize = 60;

/// Every generated file: its path relative to the package root, and its bytes.
pub fn render() -> Vec<(String, Vec<u8>)> {
    let mut files = Vec::new();
    for cmd in commands() {
        let name = cmd.get_name().to_owned();
        files.push((format!("man/{name}.1"), man_page(cmd.clone())));
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

/// One command's man page, in roff.
pub fn man_page(mut cmd: clap::Command) -> Vec<u8> {
    cmd.build();
    let name = cmd.get_name().to_owned();
    let man = clap_mangen::Man::new(cmd.clone());
    // The roff crate's preamble, once: it defines the `Aq` string that apostrophes are
    // written as. Our own title line: clap_mangen writes an empty date as nothing, which
    // shifts the source and manual arguments of `.TH` one place left.
    let mut out = format!(
        "{PREAMBLE}.TH {name} 1 \"\" \"ndpipe {}\" \"ndpipe Manual\"\n",
        env!("CARGO_PKG_VERSION")
    )
    .into_bytes();
    let section = |out: &mut Vec<u8>, f: &dyn Fn(&mut dyn Write) -> std::io::Result<()>| {
        let mut buf = Vec::new();
        f(&mut buf).expect("rendering to memory cannot fail");
        let text = String::from_utf8(buf).expect("roff from UTF-8 text is UTF-8");
        for line in text.lines().skip_while(|l| is_preamble(l)) {
            out.extend_from_slice(line.as_bytes());
            out.push(b'\n');
        }
    };
    section(&mut out, &|w| man.render_name_section(w));
    out.extend_from_slice(synopsis(&cmd).as_bytes());
    section(&mut out, &|w| man.render_description_section(w));
    section(&mut out, &|w| man.render_options_section(w));
    out.extend_from_slice(examples_section(&cmd).as_bytes());
    out.extend_from_slice(exit_status_section().as_bytes());
    out.extend_from_slice(environment_section(&cmd).as_bytes());
    out.extend_from_slice(files_section(&name).as_bytes());
    section(&mut out, &|w| man.render_version_section(w));
    out
}

/// The two lines the roff crate starts every rendering with (they define `Aq`).
const PREAMBLE: &str = ".ie \\n(.g .ds Aq \\(aq\n.el .ds Aq '\n";

fn is_preamble(line: &str) -> bool {
    PREAMBLE.lines().any(|p| p == line)
}

/// Escapes text for a roff text line: backslash, minus (so it stays an ASCII `-` that can
/// be copied), apostrophe and backquote (so they are not typeset as curly quotes), and a
/// leading period.
fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\\' => out.push_str(r"\e"),
            '-' => out.push_str(r"\-"),
            '\'' => out.push_str(r"\*(Aq"),
            '`' => out.push_str(r"\(ga"),
            '~' => out.push_str(r"\(ti"),
            '^' => out.push_str(r"\(ha"),
            _ => out.push(c),
        }
    }
    if out.starts_with('.') {
        out.insert_str(0, r"\&");
    }
    out
}

fn bold(text: &str) -> String {
    format!(r"\fB{}\fR", esc(text))
}

fn italic(text: &str) -> String {
    format!(r"\fI{}\fR", esc(text))
}

/// Whether an argument may be given more than once (or take several values).
fn repeatable(arg: &Arg) -> bool {
    matches!(arg.get_action(), ArgAction::Append | ArgAction::Count)
        || arg.get_num_args().is_some_and(|r| r.max_values() > 1)
}

/// An option as the synopsis shows it, without brackets: `--table NAME`, `-q|--quiet`.
/// Spaces inside it are unbreakable, so a line never ends between a flag and its value.
fn synopsis_option(arg: &Arg) -> String {
    let mut s = match (arg.get_short(), arg.get_long()) {
        (Some(short), Some(long)) => format!(
            "{}|{}",
            bold(&format!("-{short}")),
            bold(&format!("--{long}"))
        ),
        (Some(short), None) => bold(&format!("-{short}")),
        (None, Some(long)) => bold(&format!("--{long}")),
        (None, None) => String::new(),
    };
    if arg.get_action().takes_values() {
        let value = match arg.get_value_names() {
            Some(names) => names
                .iter()
                .map(|n| n.as_str())
                .collect::<Vec<_>>()
                .join(" "),
            None => arg.get_id().as_str().to_uppercase(),
        };
        if arg.get_num_args().is_some_and(|r| r.min_values() == 0) {
            s.push_str(&format!(r"\ [{}]", italic(&value)));
        } else {
            s.push_str(&format!(r"\ {}", italic(&value)));
        }
    }
    s
}

/// SYNOPSIS: the command, its required options, the others in brackets, each with its
/// value name, `...` after repeatable ones, then the operands.
fn synopsis(cmd: &clap::Command) -> String {
    let mut words = Vec::new();
    let args: Vec<&Arg> = cmd.get_arguments().filter(|a| !a.is_hide_set()).collect();
    let options = args.iter().filter(|a| !a.is_positional());
    for arg in options.clone().filter(|a| a.is_required_set()) {
        let opt = synopsis_option(arg);
        words.push(if repeatable(arg) {
            format!("{opt} [{opt}]...")
        } else {
            opt
        });
    }
    for arg in options.filter(|a| !a.is_required_set()) {
        let dots = if repeatable(arg) { "..." } else { "" };
        words.push(format!("[{}]{dots}", synopsis_option(arg)));
    }
    for arg in args.iter().filter(|a| a.is_positional()) {
        let value = arg
            .get_value_names()
            .and_then(|n| n.first())
            .map_or_else(|| arg.get_id().as_str().to_uppercase(), |n| n.to_string());
        let dots = if repeatable(arg) { "..." } else { "" };
        words.push(if arg.is_required_set() {
            format!("{}{dots}", italic(&value))
        } else {
            format!("[{}]{dots}", italic(&value))
        });
    }
    let mut s = format!(".SH SYNOPSIS\n.SY {}\n", cmd.get_name());
    for w in words {
        s.push_str(&w);
        // A line ending in a period ends a sentence to roff, which then puts two spaces
        // after it; `\&` (a zero-width character) makes the `...` ordinary text.
        if w.ends_with('.') {
            s.push_str(r"\&");
        }
        s.push('\n');
    }
    s.push_str(".YS\n");
    s
}

/// EXAMPLES: the `--help` examples without their heading, line for line (no filling).
fn examples_section(cmd: &clap::Command) -> String {
    let text = examples(cmd);
    let body: Vec<&str> = text
        .lines()
        .skip_while(|l| l.trim_end().ends_with(':') && !l.starts_with(' '))
        .collect();
    if body.is_empty() {
        return String::new();
    }
    let mut s = String::from(".SH EXAMPLES\n.nf\n");
    for line in body {
        s.push_str(&esc(line));
        s.push('\n');
    }
    s.push_str(".fi\n");
    s
}

/// EXIT STATUS: every [`Exit`] code with its meaning.
fn exit_status_section() -> String {
    let mut s = String::from(".SH \"EXIT STATUS\"\n");
    for exit in Exit::ALL {
        s.push_str(&format!(
            ".TP\n.B {}\n{}\n",
            exit.code(),
            esc(exit.describe())
        ));
    }
    s
}

/// The environment variables a command reads: those its flags fall back to (clap's
/// `env =`), the ones read by its own code, and the ones every command reads.
pub fn environment(cmd: &clap::Command) -> Vec<(String, String)> {
    let mut vars = Vec::new();
    for arg in cmd.get_arguments() {
        if let (Some(var), Some(long)) = (arg.get_env(), arg.get_long()) {
            vars.push((
                var.to_string_lossy().into_owned(),
                format!("The value of --{long} when the flag is not given."),
            ));
        }
    }
    if cmd.get_name() == "pipeline" {
        vars.push((
            "any NAME in the text".into(),
            "$NAME and ${NAME} in the pipe text are replaced by the variable's value \
             (${NAME:-default} when it may be unset); an unset variable without a default \
             is a usage error. A persist stage reads the PostgreSQL variables listed under \
             persist(1)."
                .into(),
        ));
    }
    let own: &[(&str, &str)] = match cmd.get_name() {
        "persist" => &[
            (
                "PGHOST",
                "PostgreSQL host names or socket directories, comma-separated (default: the \
                 socket directory /var/run/postgresql when it exists, else localhost). This \
                 and the PG variables below are read only when neither --database-url nor \
                 DATABASE_URL is set; with none of them set either, rows go to the SQLite \
                 file --sqlite.",
            ),
            ("PGPORT", "PostgreSQL port (default: 5432)."),
            ("PGUSER", "PostgreSQL user (default: USER, else postgres)."),
            ("PGPASSWORD", "PostgreSQL password."),
            (
                "PGPASSFILE",
                "The password file (default: ~/.pgpass), read as libpq reads it when no \
                 password is given; ignored, with a warning, when others may read it.",
            ),
            ("PGDATABASE", "Database name (default: the user name)."),
            (
                "PGSSLMODE",
                "disable, allow, prefer, require (encrypted, certificate not checked), \
                 verify-ca or verify-full (checked against the system's roots). Also applies \
                 to a URL without sslmode.",
            ),
            (
                "PGSSLROOTCERT",
                "Root certificates the server's chain is checked against (system: the \
                 system's roots; default: ~/.postgresql/root.crt when it exists, else the \
                 system's roots). Naming one makes require check the chain, as libpq does.",
            ),
            (
                "PGAPPNAME",
                "The application_name the server shows for persist's connections \
                 (default: ndpipe).",
            ),
            (
                "USER",
                "The default PostgreSQL user and database name when PGUSER is not set.",
            ),
        ],
        _ => &[],
    };
    vars.extend(own.iter().map(|&(k, v)| (k.to_owned(), v.to_owned())));
    vars.push((
        "NDPIPE_LOG".into(),
        "Which log lines are printed on stderr, as a tracing filter: a level (error, warn, \
         info, debug, trace) or per-module directives such as ndpipe=debug,warn. Default: \
         info, or error with --quiet."
            .into(),
    ));
    vars.push((
        "NO_COLOR".into(),
        "When set and not empty, log lines, --help and usage errors are printed without \
         colour."
            .into(),
    ));
    vars
}

fn environment_section(cmd: &clap::Command) -> String {
    let mut s = String::from(".SH ENVIRONMENT\n");
    for (var, text) in environment(cmd) {
        s.push_str(&format!(".TP\n.B {var}\n{}\n", esc(&text)));
    }
    s
}

/// FILES: the files a command reads or writes without being told their full name.
fn files_section(name: &str) -> String {
    let mut files: Vec<(&str, &str)> = Vec::new();
    if name == "persist" || name == "pipeline" {
        files.push((
            "ndpipe.db",
            "The SQLite database written when no PostgreSQL connection is configured (the \
             default of --sqlite, in the current directory). It runs in WAL mode: \
             ndpipe.db-wal and ndpipe.db-shm sit beside it while it is open.",
        ));
        files.push((
            "/var/run/postgresql",
            "The PostgreSQL socket directory used when a PG variable is set but PGHOST is not \
             (when it exists).",
        ));
    }
    files.push((
        "PATH given to --dead-letter",
        "Rejected records are appended to it as NDJSON, one per line; several stages may \
         share one file.",
    ));
    let mut s = String::from(".SH FILES\n");
    for (file, text) in files {
        let head = match file.strip_suffix(" given to --dead-letter") {
            Some(p) => format!("{} given to {}", italic(p), bold("--dead-letter")),
            None => italic(file),
        };
        s.push_str(&format!(".TP\n{head}\n{}\n", esc(text)));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `--help` ends with the examples exactly as written, at 60 columns and wider: clap
    /// wraps after_help to the terminal, and a command broken without its `\` fails
    /// when copied.
    #[test]
    fn help_examples_are_unwrapped_at_60_columns() {
        for cmd in commands() {
            let name = cmd.get_name().to_owned();
            let text = examples(&cmd);
            assert!(text.starts_with("Examples:\n"), "{name}: no examples");
            let lines: Vec<&str> = text.lines().collect();
            for line in &lines {
                assert!(
                    line.chars().count() <= EXAMPLE_WIDTH,
                    "{name}: example line wider than {EXAMPLE_WIDTH} columns: {line:?}"
                );
                assert_eq!(line.trim_end(), *line, "{name}: trailing space: {line:?}");
            }
            for width in [EXAMPLE_WIDTH, 80, 100] {
                for long in [false, true] {
                    let mut cmd = cmd.clone().term_width(width);
                    let help = if long {
                        cmd.render_long_help()
                    } else {
                        cmd.render_help()
                    }
                    .to_string();
                    let help_lines: Vec<&str> = help.lines().collect();
                    assert!(
                        help_lines.windows(lines.len()).any(|w| w == lines),
                        "{name} {} at {width} columns does not end with the examples \
                         verbatim:\n{help}",
                        if long { "--help" } else { "-h" },
                    );
                }
            }
        }
    }

    fn page(name: &str) -> String {
        let cmd = commands()
            .into_iter()
            .find(|c| c.get_name() == name)
            .unwrap();
        String::from_utf8(man_page(cmd)).unwrap()
    }

    #[test]
    fn man_synopsis_shows_values_and_repeats() {
        let persist = page("persist");
        let synopsis = &persist[persist.find(".SH SYNOPSIS").unwrap()..];
        let synopsis = &synopsis[..synopsis.find(".YS").unwrap()];
        for want in [
            r"[\fB\-\-table\fR\ \fINAME\fR]",
            "[\\fB\\-\\-column\\fR\\ \\fICOL=FIELD[:TYPE]\\fR]...\\&\n",
            r"[\fB\-\-create\-table\fR]",
            r"[\fB\-q\fR|\fB\-\-quiet\fR]",
            "[\\fIFILE\\fR]...\\&\n",
        ] {
            assert!(synopsis.contains(want), "{want} missing from:\n{synopsis}");
        }
        let kafka = page("ingest-kafka");
        assert!(kafka.contains(
            ".SY ingest-kafka\n\\fB\\-\\-brokers\\fR\\ \\fIHOSTS\\fR\n\
             \\fB\\-\\-topic\\fR\\ \\fITOPIC\\fR [\\fB\\-\\-topic\\fR\\ \\fITOPIC\\fR]...\\&\n"
        ));
        assert!(kafka.contains("\n[\\fB\\-X\\fR\\ \\fIKEY=VALUE\\fR]...\\&\n"));
    }

    #[test]
    fn man_pages_have_the_sections_once_and_examples_verbatim() {
        for cmd in commands() {
            let name = cmd.get_name().to_owned();
            let page = page(&name);
            let headings: Vec<&str> = page.lines().filter(|l| l.starts_with(".SH ")).collect();
            for want in [
                ".SH NAME",
                ".SH SYNOPSIS",
                ".SH DESCRIPTION",
                ".SH OPTIONS",
                ".SH EXAMPLES",
                ".SH \"EXIT STATUS\"",
                ".SH ENVIRONMENT",
                ".SH FILES",
                ".SH VERSION",
            ] {
                assert_eq!(
                    headings.iter().filter(|h| **h == want).count(),
                    1,
                    "{name}: {want} in {headings:?}"
                );
            }
            assert!(
                !page.contains(".SH EXTRA"),
                "{name}: examples rendered twice"
            );
            assert!(page.starts_with(&format!("{PREAMBLE}.TH {name} 1 \"\" \"ndpipe ")));
            assert_eq!(
                page.matches(".ds Aq").count(),
                2,
                "{name}: preamble repeated"
            );
            let examples_text = examples(&cmd);
            let body: Vec<&str> = examples_text.lines().skip(1).collect();
            let roff: Vec<String> = body.iter().map(|l| esc(l)).collect();
            let section = &page[page.find(".SH EXAMPLES\n.nf\n").unwrap() + 17..];
            let section: Vec<&str> = section[..section.find(".fi\n").unwrap()].lines().collect();
            assert_eq!(section, roff, "{name}");
            for exit in Exit::ALL {
                assert!(
                    page.contains(&format!(".TP\n.B {}\n", exit.code())),
                    "{name}"
                );
            }
        }
    }

    #[test]
    fn roff_escapes() {
        assert_eq!(esc(r"a \"), r"a \e");
        assert_eq!(esc("--x 'y'"), r"\-\-x \*(Aqy\*(Aq");
        assert_eq!(esc(".tee"), r"\&.tee");
    }

    /// Every variable a flag falls back to is documented, and every PG variable the
    /// PostgreSQL connection code reads.
    #[test]
    fn environment_lists_what_the_code_reads() {
        for cmd in commands() {
            let documented: Vec<String> = environment(&cmd).into_iter().map(|(k, _)| k).collect();
            for arg in cmd.get_arguments() {
                if let Some(var) = arg.get_env() {
                    let var = var.to_string_lossy();
                    assert!(documented.iter().any(|d| *d == var), "{var}");
                }
            }
            for var in ["NDPIPE_LOG", "NO_COLOR"] {
                assert!(documented.iter().any(|d| d == var));
            }
        }
        let persist = commands()
            .into_iter()
            .find(|c| c.get_name() == "persist")
            .unwrap();
        let documented: Vec<String> = environment(&persist).into_iter().map(|(k, _)| k).collect();
        // Where libpq's variables are read (ConnectSpec::from_env).
        let src = include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/src/postgres/connect.rs"
        ));
        for (at, _) in src.match_indices("\"PG") {
            let var = &src[at + 1..];
            let var = &var[..var.find('"').unwrap()];
            if var.bytes().all(|b| b.is_ascii_uppercase()) {
                assert!(
                    documented.iter().any(|d| d == var),
                    "persist reads {var} but its man page does not say so"
                );
            }
        }
    }
}
