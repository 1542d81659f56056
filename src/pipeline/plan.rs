//! From the pipe text to a plan: each stage's words parsed by that command's own clap
//! definition, the shape checked (sources first, `persist` last unless `--emit`), then
//! each stage's `Args → Config` step, the same one its binary takes.
//!
//! Nothing is opened here but the files a stage's flags name as configuration (a schema,
//! a lookup table, a token file): no input is read, no database or broker is reached.

use std::path::PathBuf;

use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches};

use crate::cli::Common;
use crate::commands::{self, Command, Configured};
use crate::exit::{Error, Exit, Result};
use crate::stage::Kind;

use super::args::SettingsLine;
use super::text::{self, Join, StageText};
use crate::wire::relay::{Bounds, WhenFull};

/// A stage of the plan.
pub struct Planned {
    /// 1-based place in the text, for messages.
    pub position: usize,
    /// Its row of the command table.
    pub command: &'static Command,
    pub words: Vec<String>,
    /// The flags common to every command, as they apply to this stage: `pipeline`'s,
    /// with the stage's own `--dead-letter` if it names one.
    pub common: Common,
    /// The value of its live-scaling knob ([`Command::knob`]) it starts with.
    pub knob: Option<usize>,
    pub config: Box<dyn Configured>,
}

/// Channel settings given on a first line `pipeline --channel-capacity N …` of the text.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChannelsGiven {
    pub events: Option<usize>,
    pub bytes: Option<u64>,
    pub when_full: Option<WhenFull>,
}

impl ChannelsGiven {
    /// `base` (the command line's) with what the text gives instead.
    pub fn apply(&self, base: &Bounds) -> Bounds {
        Bounds {
            events: self.events.unwrap_or(base.events),
            bytes: self.bytes.unwrap_or(base.bytes),
            when_full: self.when_full.unwrap_or(base.when_full),
        }
    }
}

/// Takes a first stage `pipeline …` off `stages`: the channel settings it gives.
fn settings(stages: &mut Vec<StageText>) -> Result<ChannelsGiven> {
    let Some(first) = stages.first() else {
        return Ok(ChannelsGiven::default());
    };
    if first.words[0] != "pipeline" {
        return Ok(ChannelsGiven::default());
    }
    let line = stages.remove(0);
    let label = "the `pipeline` line";
    let mut cmd = SettingsLine::command();
    let m = cmd.try_get_matches_from_mut(&line.words).map_err(|e| {
        Error::usage(format!(
            "{label}: {} (it takes channel settings only)",
            first_line(&e)
        ))
    })?;
    let given = |id: &str| m.value_source(id) == Some(ValueSource::CommandLine);
    let a =
        SettingsLine::from_arg_matches(&m).map_err(|e| Error::usage(format!("{label}: {e}")))?;
    Ok(ChannelsGiven {
        events: given("channel_capacity").then_some(a.channels.channel_capacity),
        bytes: given("channel_bytes").then_some(a.channels.channel_bytes),
        when_full: given("when_full").then_some(a.channels.when_full),
    })
}

/// What `pipeline` will run.
pub struct Plan {
    /// Channel settings of the text's `pipeline` line.
    pub channels: ChannelsGiven,
    /// Source stages feeding the hub (joined by `&`); may be empty.
    pub sources: Vec<Planned>,
    /// Filters and sinks, in order.
    pub stages: Vec<Planned>,
    /// Input files: read when there is no source stage (none: stdin), else only those
    /// given, into the same hub.
    pub inputs: Vec<PathBuf>,
}

/// A parsed text, or a stage's `--help` to print instead of running.
pub enum Parsed {
    Plan(Plan),
    Help(String),
}

/// The flag of [`Common`] a stage may give itself; the others are given once, to
/// `pipeline`.
const STAGE_OWN: &str = "dead_letter";

/// Parses `text` into a plan with `common` applied to every stage.
pub fn parse(text: &str, inputs: Vec<PathBuf>, common: &Common) -> Result<Parsed> {
    let (channels, parsed) = match all_words(text, common)? {
        AllWords::Help(h) => return Ok(Parsed::Help(h)),
        AllWords::Stages(channels, parsed) => (channels, parsed),
    };
    let total = parsed.len();
    let mut plan = Plan {
        channels,
        sources: Vec::new(),
        stages: Vec::new(),
        inputs,
    };
    for w in parsed {
        let label = label(w.position, total, w.command.name);
        let source = w.command.kind == Kind::Source;
        let knob = w.parsed.knob();
        let config = w.parsed.configure().map_err(|e| Error {
            exit: e.exit,
            source: e.source.context(label),
        })?;
        let planned = Planned {
            position: w.position,
            command: w.command,
            words: w.words,
            common: w.common,
            knob,
            config,
        };
        if source {
            plan.sources.push(planned);
        } else {
            plan.stages.push(planned);
        }
    }
    check_paths(&plan, total)?;
    Ok(Parsed::Plan(plan))
}

/// A file as the file system knows it: its device and inode when it exists, else its
/// absolute path (its directory resolved), so that `./a`, `a` and `d/../a` are one file.
#[derive(PartialEq, Eq)]
enum FileId {
    Inode(u64, u64),
    Path(PathBuf),
}

fn file_id(path: &std::path::Path) -> FileId {
    use std::os::unix::fs::MetadataExt;
    if let Ok(m) = std::fs::metadata(path) {
        return FileId::Inode(m.dev(), m.ino());
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => std::path::Path::new("."),
    };
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_owned());
    FileId::Path(dir.join(path.file_name().unwrap_or_default()))
}

/// Every path is known before any is opened: refuses a `tee` onto one of the input files
/// (truncating it before it is read), and two `tee`s onto one file (each truncating what
/// the other wrote).
fn check_paths(plan: &Plan, total: usize) -> Result<()> {
    let inputs: Vec<(FileId, &PathBuf)> = plan
        .inputs
        .iter()
        .filter(|p| p.as_os_str() != "-")
        .map(|p| (file_id(p), p))
        .collect();
    let mut written: Vec<(FileId, &PathBuf)> = Vec::new();
    for p in &plan.stages {
        let label = label(p.position, total, p.command.name);
        for file in p.config.writes() {
            let id = file_id(file);
            if let Some((_, input)) = inputs.iter().find(|(i, _)| *i == id) {
                return Err(Error::usage(format!(
                    "{label}: {} is an input file of this pipeline: tee would overwrite \
                     what is being read",
                    input.display()
                )));
            }
            if let Some((_, other)) = written.iter().find(|(w, _)| *w == id) {
                return Err(Error::usage(format!(
                    "{label}: {} is already written by a tee of this pipeline (as {}): \
                     give each copy a file of its own",
                    file.display(),
                    other.display()
                )));
            }
            written.push((id, file));
        }
    }
    Ok(())
}

/// What a reload may change in one stage.
pub struct Scaling {
    pub command: &'static Command,
    pub words: Vec<String>,
    /// The value of its live-scaling knob ([`Command::knob`]), if it has one.
    pub workers: Option<usize>,
}

/// Parses `text` as [`parse`] does, without building any stage: what live scaling
/// compares with the running pipeline.
pub fn scaling(text: &str, common: &Common) -> Result<(ChannelsGiven, Vec<Scaling>)> {
    let (channels, parsed) = match all_words(text, common)? {
        AllWords::Help(_) => return Err(Error::usage("--help in the text")),
        AllWords::Stages(channels, parsed) => (channels, parsed),
    };
    let stages = parsed
        .into_iter()
        .map(|w| Scaling {
            command: w.command,
            workers: w.parsed.knob(),
            words: w.words,
        })
        .collect();
    Ok((channels, stages))
}

enum AllWords {
    Stages(ChannelsGiven, Vec<StageWords>),
    Help(String),
}

/// The text's channel settings and every stage's words, parsed by the stage's command
/// and in a valid shape; or a stage's `--help`. Words come first, for every stage: a typo
/// in the last stage is found before anything of the first is built.
fn all_words(text: &str, common: &Common) -> Result<AllWords> {
    let env = |name: &str| std::env::var(name).ok();
    let mut stages = text::split(text, &env).map_err(Error::usage)?;
    let channels = settings(&mut stages)?;
    if stages.is_empty() {
        return Err(Error::usage(
            "the pipe text is empty: give stages, as in 'validate --require id | persist'",
        ));
    }
    let total = stages.len();
    let mut parsed = Vec::with_capacity(total);
    for (i, st) in stages.into_iter().enumerate() {
        match parse_words(i + 1, total, st, common)? {
            Words::Help(h) => return Ok(AllWords::Help(h)),
            Words::Stage(w) => parsed.push(w),
        }
    }
    check_shape(&parsed, total)?;
    Ok(AllWords::Stages(channels, parsed))
}

/// clap's message in one line, without its `error: `.
fn first_line(e: &clap::Error) -> String {
    let rendered = e.render().to_string();
    rendered
        .lines()
        .next()
        .unwrap_or("")
        .trim_start_matches("error: ")
        .to_owned()
}

/// `stage 2 of 4 (validate)`.
pub fn label(position: usize, total: usize, name: &str) -> String {
    format!("stage {position} of {total} ({name})")
}

enum Words {
    Stage(StageWords),
    Help(String),
}

/// One stage's words, parsed by its command's clap definition.
struct StageWords {
    position: usize,
    command: &'static Command,
    join: Join,
    words: Vec<String>,
    common: Common,
    parsed: Box<dyn commands::Parsed>,
}

fn parse_words(position: usize, total: usize, st: StageText, common: &Common) -> Result<Words> {
    let given = st.words[0].clone();
    let Some(command) = commands::find(&given) else {
        let hint = if given.contains('/') || given.ends_with(".ndjson") {
            " (input files go after the pipe text)"
        } else {
            ""
        };
        let known: Vec<&str> = commands::ALL.iter().map(|c| c.name).collect();
        return Err(Error::usage(format!(
            "stage {position} of {total}: unknown command {given:?}{hint}; known: {}",
            known.join(", ")
        )));
    };
    let name = command.name;
    let label = label(position, total, name);
    let mut cmd = (command.cli)();
    let matches = match cmd.try_get_matches_from_mut(&st.words) {
        Ok(m) => m,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                return Ok(Words::Help(e.render().to_string()));
            }
            return Err(Error::usage(format!(
                "{label}: {} (see '{name} --help')",
                first_line(&e)
            )));
        }
    };
    let takes_common = command.takes_common();
    if takes_common {
        // Read from `Common` itself, so that a new common flag is covered too.
        let common_flags = <Common as clap::Args>::augment_args(clap::Command::new("common"));
        for arg in common_flags.get_arguments() {
            let id = arg.get_id().as_str();
            if id != STAGE_OWN && matches.value_source(id) == Some(ValueSource::CommandLine) {
                return Err(Error::usage(format!(
                    "{label}: --{} applies to the whole pipeline: give it to pipeline, \
                     before the text",
                    arg.get_long().unwrap_or(id)
                )));
            }
        }
    }
    let mut stage_common = common.clone();
    if let Some(own) = takes_common.then(|| dead_letter(&matches)).flatten() {
        stage_common.dead_letter = Some(own);
    }
    let parsed = (command.parse)(&matches, &stage_common)
        .map_err(|e| Error::usage(format!("{label}: {e}")))?;
    no_inputs(&label, parsed.inputs())?;
    if let Some(why) = parsed.not_a_stage() {
        return Err(Error::usage(format!("{label}: {why}")));
    }
    Ok(Words::Stage(StageWords {
        position,
        command,
        join: st.join,
        words: st.words,
        common: stage_common,
        parsed,
    }))
}

fn dead_letter(m: &ArgMatches) -> Option<String> {
    (m.value_source(STAGE_OWN) == Some(ValueSource::CommandLine))
        .then(|| m.get_one::<String>(STAGE_OWN).cloned())
        .flatten()
}

fn no_inputs(label: &str, inputs: &[PathBuf]) -> Result<()> {
    match inputs.first() {
        None => Ok(()),
        Some(p) => Err(Error::usage(format!(
            "{label}: {:?} looks like an input file: input files go after the pipe text",
            p.display().to_string()
        ))),
    }
}

/// Sources first (the first stage, and any joined to it by `&`); `&` joins nothing else;
/// `persist` passes nothing on, so it is last unless it has `--emit`.
fn check_shape(stages: &[StageWords], total: usize) -> Result<()> {
    let mut in_sources = true;
    for (i, s) in stages.iter().enumerate() {
        let name = s.command.name;
        let label = label(s.position, total, name);
        let source = s.command.kind == Kind::Source;
        match (source, s.join) {
            (true, Join::Start) => {}
            (true, Join::Also) if in_sources => {}
            (true, _) => {
                return Err(Error::usage(format!(
                    "{label}: a source must come first (sources are joined with `&`, before \
                     the first `|`)"
                )))
            }
            (false, Join::Also) => {
                return Err(Error::usage(format!(
                    "{label}: `&` joins sources only; {name} is not one"
                )))
            }
            (false, _) => {}
        }
        if !source {
            in_sources = false;
        }
        if i + 1 < stages.len() && !s.parsed.passes_on() {
            return Err(Error::usage(format!(
                "{label}: {name} passes nothing on without --emit: make it the last \
                 stage, or give it --emit"
            )));
        }
    }
    Ok(())
}

/// The largest pipe file read. A pipe text is a few lines; this is far beyond any real
/// one, and keeps `--file /dev/zero` or a log file given by mistake from filling memory.
pub const MAX_PIPE_FILE: u64 = 4 << 20;

/// Reads `--file`: 66 when it cannot be read, is not a regular file (a FIFO would block
/// the reader for good, a device may never end) or is larger than [`MAX_PIPE_FILE`].
/// Blocking: call it off the runtime's threads.
pub fn read_file(path: &std::path::Path) -> Result<String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let fail = |why: String| {
        Error::new(
            Exit::NoInput,
            anyhow::anyhow!("--file {}: {why}", path.display()),
        )
    };
    // Non-blocking: opening a FIFO with no writer would otherwise wait for one.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| fail(e.to_string()))?;
    let meta = file.metadata().map_err(|e| fail(e.to_string()))?;
    if !meta.is_file() {
        let what = if meta.is_dir() {
            "a directory"
        } else {
            "not a regular file (a FIFO, socket or device)"
        };
        return Err(fail(format!(
            "is {what}: give a file holding the pipe text"
        )));
    }
    let mut bytes = Vec::new();
    file.take(MAX_PIPE_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| fail(e.to_string()))?;
    if bytes.len() as u64 > MAX_PIPE_FILE {
        return Err(fail(format!(
            "is larger than {} MiB: a pipe text is a few lines",
            MAX_PIPE_FILE >> 20
        )));
    }
    String::from_utf8(bytes).map_err(|_| fail("is not UTF-8 text".to_owned()))
}
