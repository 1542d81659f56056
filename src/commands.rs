//! The commands: each one's `Args → Config` step, then the shell form of its stage.
//! The binaries in `src/bin` parse flags and call one of these; nothing below this
//! module sees a command line.

use crate::exit::{Exit, Result};
use crate::pipeline;
use crate::shell;
use crate::stage::{enrich, ingest_http, ingest_kafka, persist, validate};

/// `validate`: stdin/files → validate → stdout.
pub async fn validate(args: validate::Args) -> Result<Exit> {
    let config = validate::Config::from_args(&args)?;
    shell::run(Box::new(config), &args.common, &args.inputs, None).await
}

/// `enrich`: stdin/files → enrich → stdout.
pub async fn enrich(args: enrich::Args) -> Result<Exit> {
    let config = enrich::Config::from_args(&args)?;
    shell::run(Box::new(config), &args.common, &args.inputs, None).await
}

/// `ingest-http`: HTTP → stdout.
pub async fn ingest_http(args: ingest_http::Args) -> Result<Exit> {
    let config = ingest_http::Config::from_args(&args)?;
    shell::run(Box::new(config), &args.common, &[], None).await
}

/// `ingest-kafka`: Kafka → stdout.
pub async fn ingest_kafka(args: ingest_kafka::Args) -> Result<Exit> {
    let config = ingest_kafka::Config::from_args(&args)?;
    shell::run(Box::new(config), &args.common, &[], None).await
}

/// `persist`: stdin/files → persist → database (and stdout with `--emit`); or with
/// `--show`, the table's rows to stdout.
pub async fn persist(args: persist::Args) -> Result<Exit> {
    let opts = persist::Options::from(&args);
    if args.show {
        if !args.inputs.is_empty() {
            return Err(crate::exit::Error::usage(
                "--show reads the table, not input files",
            ));
        }
        return persist::show::run(&opts).await;
    }
    // Inputs first: a missing file exits 66 before any database (or SQLite file) is touched.
    crate::ndjson::open_inputs(&args.inputs)?;
    let (stage, counts) = persist::Persist::open(&opts).await?;
    shell::run(
        Box::new(stage),
        &args.common,
        &args.inputs,
        Some(Box::new(move || counts.summary())),
    )
    .await
}

/// `pipeline`: a pipe text of the commands above, run in one process.
pub async fn pipeline(args: pipeline::Args) -> Result<Exit> {
    pipeline::main(args).await
}
