//! The stage contract in one process: `validate` and `enrich` built from their configs
//! and chained over channels by the same wiring the shell form uses, compared byte for
//! byte with the shell pipe of the two commands.

use clap::Parser;
use ndpipe::dead_letter::DeadLetters;
use ndpipe::shutdown::Shutdown;
use ndpipe::stage::stdio::{Reader, Writer};
use ndpipe::stage::{enrich, validate, Ctx};
use ndpipe::wire::{chain, Link};

use crate::util::*;

const VALIDATE: [&str; 5] = ["validate", "--require", "id", "--type", "amount=number"];
const ENRICH: [&str; 7] = [
    "enrich",
    "--set",
    "env=\"prod\"",
    "--id",
    "key",
    "--id-from",
    "id",
];

#[test]
fn validate_then_enrich_in_one_process_matches_the_shell_pipe() {
    let dir = Dir::new();
    let input = gen_events(&dir, "in.ndjson", 20_000, &["--bad", "0.05"]);
    let input = input.display().to_string();

    // The shell pipe.
    let o = sh(
        &dir,
        &format!(
            "{} {} --dead-letter shell-dl.ndjson {input} | {} {} --dead-letter shell-dl.ndjson \
             > shell.ndjson",
            bin("validate"),
            VALIDATE[1..].join(" "),
            bin("enrich"),
            ENRICH[1..]
                .iter()
                .map(|a| format!("'{a}'"))
                .collect::<Vec<_>>()
                .join(" "),
        ),
    );
    assert!(o.status.success(), "{}", err(&o));

    // The same stages, in this process.
    let validate = validate::Config::from_args(&validate::Args::parse_from(VALIDATE)).unwrap();
    let enrich = enrich::Config::from_args(&enrich::Args::parse_from(ENRICH)).unwrap();
    let dead =
        DeadLetters::open(Some(dir.path("chain-dl.ndjson").to_str().unwrap()), "_meta").unwrap();
    let ctx = Ctx::new(dead, Shutdown::new(), "_meta");
    let out = std::fs::File::create(dir.path("chain.ndjson")).unwrap();
    let inputs = ndpipe::ndjson::open_inputs(&[input.clone().into()]).unwrap();
    let links = vec![
        Link::new(
            Box::new(Reader {
                inputs,
                max_line_bytes: 16 << 20,
                drain_timeout: std::time::Duration::from_secs(30),
            }),
            ctx.clone(),
        ),
        Link::new(Box::new(validate), ctx.clone()),
        Link::new(Box::new(enrich), ctx.clone()),
        Link::new(Box::new(Writer { out }), ctx),
    ];
    let stats = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(chain(links, 4))
        .unwrap();
    let shell = dir.read("shell.ndjson");
    let chained = dir.read("chain.ndjson");
    assert!(shell.lines().count() > 18_000, "most events pass");
    assert!(shell == chained, "stdout differs");
    // Two stages append to one dead-letter file at once: compare as sets of lines.
    let sorted = |name: &str| {
        let mut lines: Vec<String> = dir.read(name).lines().map(str::to_owned).collect();
        lines.sort();
        lines
    };
    assert_eq!(
        sorted("shell-dl.ndjson"),
        sorted("chain-dl.ndjson"),
        "dead letters differ"
    );
    // Every stage reports the same kind of stats: validate's out is enrich's in.
    assert_eq!(stats.len(), 4);
    assert_eq!(stats[1].events_out, stats[2].events_in);
    assert_eq!(stats[3].events_in, chained.lines().count() as u64);
    assert!(stats[1].rejected > 0);
}
