//! `pipeline`: a shell pipe of ndpipe commands, run in one process.
//!
//! The pipe text is the configuration: `validate … | enrich … | persist …` is split as the
//! shell would ([`text`]), each stage parsed by its own command's clap definition and
//! built by the same `Args → Config` step as its binary ([`plan`]), then run as the chain
//! `[hub, stage, …, writer]` by [`crate::wire`] with bounded channels ([`run`]). Events
//! travel decoded, so each is parsed once.
//!
//! - [`args`]: `pipeline`'s own flags.
//! - [`text`]: quoting, `$VAR`, `|`, `&`, comments and continuations.
//! - [`plan`]: stages, their shape, their configs; every usage error before anything runs.
//! - [`explain`]: what `--explain` prints.
//! - [`run`]: building the stages (databases opened now), the run and its summary.
//! - [`reload`]: live scaling: `--file` re-read on SIGHUP or when it changes.

pub mod args;
pub mod explain;
pub mod plan;
pub mod reload;
pub mod run;
pub mod text;

pub use args::Args;

use crate::exit::{Exit, Result};
use crate::shutdown::Shutdown;
use crate::wire::relay::Bounds;

/// Whether the pipe holds many events in flight across threads (a sink or a server
/// source), so that the binary tunes the allocator as `ingest-http` does
/// ([`crate::memory::tame_malloc`]) rather than as the filters do. Not as `persist` alone
/// does ([`crate::memory::sink_malloc`]): a stalled database then held 67 MiB at peak
/// under load (mapped blocks, recycled by [`crate::pool`]: 53-57). Called before any
/// thread starts; a text that does not parse is decided later, by [`main`].
pub fn holds_events(args: &Args) -> bool {
    let text = match (&args.file, &args.text) {
        (Some(path), _) => plan::read_file(path).unwrap_or_default(),
        (None, Some(t)) => t.clone(),
        (None, None) => return false,
    };
    let env = |name: &str| std::env::var(name).ok();
    text::split(&text, &env).is_ok_and(|stages| {
        stages
            .iter()
            .filter_map(|s| crate::commands::find(&s.words[0]))
            .any(|c| c.holds_events)
    })
}

/// Runs `pipeline` as its binary: flags parsed (usage errors exit 64), the allocator
/// tuned for the text's stages, then [`run_text`] on the runtime.
pub fn main() -> std::process::ExitCode {
    let args: Args = crate::cli::parse();
    if holds_events(&args) {
        crate::memory::tame_malloc();
    } else {
        crate::memory::reuse_malloc();
    }
    let common = args.common.clone();
    crate::cli::run("pipeline", &common, run_text(args))
}

/// Runs `pipeline` with its parsed flags.
pub async fn run_text(args: Args) -> Result<Exit> {
    if let Some(args::Sub::Top { addr }) = args.command {
        crate::top::show(addr, &addr.to_string(), std::future::pending()).await?;
        return Ok(Exit::Ok);
    }
    // Live scaling: SIGHUP reloads --file, so it must not end the run while it starts.
    let hup = args.file.as_ref().and_then(|_| reload::catch_hup());
    let (text, inputs) = match &args.file {
        Some(path) => {
            let text = plan::read_file(path)?;
            let mut inputs: Vec<_> = args.text.iter().map(Into::into).collect();
            inputs.extend(args.inputs.iter().cloned());
            (text, inputs)
        }
        None => match &args.text {
            Some(t) => (t.clone(), args.inputs.clone()),
            None => {
                return Err(crate::exit::Error::usage(
                    "give the pipe text, or --file PATH (see pipeline --help)",
                ))
            }
        },
    };
    let plan = match plan::parse(&text, inputs, &args.common)? {
        plan::Parsed::Help(h) => {
            print!("{h}");
            return Ok(Exit::Ok);
        }
        plan::Parsed::Plan(p) => p,
    };
    let base = Bounds {
        events: args.channels.channel_capacity,
        bytes: args.channels.channel_bytes,
        when_full: args.channels.when_full,
    };
    let bounds = plan.channels.apply(&base);
    if args.explain {
        print!("{}", explain::explain(&plan, &args.common, &bounds));
        return Ok(Exit::Ok);
    }
    let options = run::Options {
        base,
        bounds,
        serve: args
            .common
            .metrics_listen
            .map(|addr| (addr, args.ready_window)),
        reload: args.file.clone().map(|path| run::Reload {
            path,
            text: text.clone(),
            hup,
            common: args.common.clone(),
        }),
        top: args.top,
    };
    let common = crate::shell::Options::from(&args.common);
    run::run(plan, &common, options, Shutdown::on_signals()).await
}
