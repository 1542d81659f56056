//! The one exit-code enum and the error type that carries it.
//!
//! Every failure in ndpipe ends up as an [`Error`]: a message for the one line printed on
//! stderr and the [`Exit`] code the process ends with. Codes follow BSD `sysexits.h`, so
//! shell scripts can tell "bad data" from "database down" from "typo in a flag".

use std::fmt;
use std::io;

/// How a process ends. The numbers are part of the interface: README documents them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Exit {
    /// Every record was handled. Rejects written to a dead-letter output count as handled.
    Ok = 0,
    /// A bad flag, a bad flag value, or flags that do not go together.
    Usage = 64,
    /// Records were rejected and no `--dead-letter` output was given to hold them.
    DataErr = 65,
    /// An input file (or a file named by a flag, such as `--schema`) does not exist.
    NoInput = 66,
    /// A required service (database, broker) was unreachable at start, or ingest-http
    /// could not listen on its address.
    Unavailable = 69,
    /// A bug or an unexpected internal state.
    Software = 70,
    /// Reading or writing failed (disk full, permission denied, ...).
    IoErr = 74,
    /// SIGINT stopped a run before the end of its input (it drained what it had read),
    /// or a second SIGINT/SIGTERM arrived while draining.
    Interrupted = 130,
    /// SIGTERM stopped a run before the end of its input; it drained what it had read.
    Terminated = 143,
}

impl Exit {
    /// Every code, in numeric order (the man pages' EXIT STATUS lists them).
    pub const ALL: [Exit; 9] = [
        Exit::Ok,
        Exit::Usage,
        Exit::DataErr,
        Exit::NoInput,
        Exit::Unavailable,
        Exit::Software,
        Exit::IoErr,
        Exit::Interrupted,
        Exit::Terminated,
    ];

    pub fn code(self) -> u8 {
        self as u8
    }

    /// What the code means: the variant's doc comment as plain text (a test keeps the two
    /// equal).
    pub fn describe(self) -> &'static str {
        match self {
            Exit::Ok => {
                "Every record was handled. Rejects written to a dead-letter output count as \
                 handled."
            }
            Exit::Usage => "A bad flag, a bad flag value, or flags that do not go together.",
            Exit::DataErr => {
                "Records were rejected and no --dead-letter output was given to hold them."
            }
            Exit::NoInput => {
                "An input file (or a file named by a flag, such as --schema) does not exist."
            }
            Exit::Unavailable => {
                "A required service (database, broker) was unreachable at start, or \
                 ingest-http could not listen on its address."
            }
            Exit::Software => "A bug or an unexpected internal state.",
            Exit::IoErr => "Reading or writing failed (disk full, permission denied, ...).",
            Exit::Interrupted => {
                "SIGINT stopped a run before the end of its input (it drained what it had \
                 read), or a second SIGINT/SIGTERM arrived while draining."
            }
            Exit::Terminated => {
                "SIGTERM stopped a run before the end of its input; it drained what it had \
                 read."
            }
        }
    }
}

impl From<Exit> for std::process::ExitCode {
    fn from(e: Exit) -> Self {
        std::process::ExitCode::from(e.code())
    }
}

/// An error with the exit code it maps to.
pub struct Error {
    pub exit: Exit,
    pub source: anyhow::Error,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(exit: Exit, source: impl Into<anyhow::Error>) -> Error {
        Error {
            exit,
            source: source.into(),
        }
    }

    pub fn usage(msg: impl fmt::Display) -> Error {
        Error::new(Exit::Usage, anyhow::anyhow!("{msg}"))
    }

    pub fn no_input(msg: impl fmt::Display) -> Error {
        Error::new(Exit::NoInput, anyhow::anyhow!("{msg}"))
    }

    pub fn unavailable(msg: impl fmt::Display) -> Error {
        Error::new(Exit::Unavailable, anyhow::anyhow!("{msg}"))
    }

    /// A file the user named (`what`: "--schema s.json", or an input's path) could not be
    /// read: 66 and "no such file" when it does not exist, else `otherwise` (74 for a
    /// flag's file; 66 for an input, which then names the error).
    pub fn unreadable(what: impl fmt::Display, e: &io::Error, otherwise: Exit) -> Error {
        match e.kind() {
            io::ErrorKind::NotFound => Error::no_input(format!("{what}: no such file")),
            _ => Error::new(otherwise, anyhow::anyhow!("{what}: {e}")),
        }
    }

    /// What a task or a thread gave back, or the error its panic is: "`what` panicked".
    pub fn joined<T>(
        what: impl fmt::Display,
        joined: std::result::Result<T, tokio::task::JoinError>,
    ) -> Result<T> {
        joined.map_err(|e| Error::from(anyhow::anyhow!("{what} panicked: {e}")))
    }

    /// True when the root cause is a closed pipe on our output (`| head`): a clean end.
    pub fn is_broken_pipe(&self) -> bool {
        is_broken_pipe(&self.source)
    }
}

/// Walks an error chain looking for `io::ErrorKind::BrokenPipe` (ripgrep's habit).
pub fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        e.downcast_ref::<io::Error>()
            .is_some_and(|io| io.kind() == io::ErrorKind::BrokenPipe)
    })
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {:#}", self.exit, self.source)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#}", self.source)
    }
}

/// Any other error is internal unless it is an I/O error somewhere in its chain.
impl From<anyhow::Error> for Error {
    fn from(source: anyhow::Error) -> Error {
        let exit = if source.chain().any(|e| e.is::<io::Error>()) {
            Exit::IoErr
        } else {
            Exit::Software
        };
        Error { exit, source }
    }
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Error {
        Error::new(Exit::IoErr, e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_sysexits() {
        assert_eq!(Exit::Ok.code(), 0);
        assert_eq!(Exit::Usage.code(), 64);
        assert_eq!(Exit::DataErr.code(), 65);
        assert_eq!(Exit::NoInput.code(), 66);
        assert_eq!(Exit::Unavailable.code(), 69);
        assert_eq!(Exit::Software.code(), 70);
        assert_eq!(Exit::IoErr.code(), 74);
        assert_eq!(Exit::Interrupted.code(), 130);
        assert_eq!(Exit::Terminated.code(), 143);
    }

    /// `describe` is the doc comment of each variant (backticks dropped), and `ALL` holds
    /// every variant once, in numeric order.
    #[test]
    fn descriptions_are_the_doc_comments() {
        let src = include_str!("exit.rs");
        let body = &src[src.find("pub enum Exit {").unwrap()..];
        let body = &body[..body.find("\n}").unwrap()];
        let mut docs = Vec::new();
        let mut doc = String::new();
        for line in body.lines().skip(1).map(str::trim) {
            if let Some(text) = line.strip_prefix("///") {
                if !doc.is_empty() {
                    doc.push(' ');
                }
                doc.push_str(text.trim());
            } else if let Some((_, code)) = line.split_once(" = ") {
                let code: u8 = code.trim_end_matches(',').parse().unwrap();
                docs.push((code, std::mem::take(&mut doc).replace('`', "")));
            }
        }
        assert_eq!(docs.len(), Exit::ALL.len(), "Exit::ALL misses a variant");
        for (exit, (code, doc)) in Exit::ALL.iter().zip(&docs) {
            assert_eq!(exit.code(), *code, "Exit::ALL is not in declaration order");
            assert_eq!(exit.describe(), doc, "{exit:?}");
        }
        assert!(Exit::ALL.windows(2).all(|w| w[0].code() < w[1].code()));
    }

    #[test]
    fn io_errors_map_to_74_and_broken_pipe_is_detected() {
        let e: Error = anyhow::Error::new(io::Error::from(io::ErrorKind::BrokenPipe))
            .context("writing stdout")
            .into();
        assert_eq!(e.exit, Exit::IoErr);
        assert!(e.is_broken_pipe());
        let e: Error = anyhow::anyhow!("oops").into();
        assert_eq!(e.exit, Exit::Software);
        assert!(!e.is_broken_pipe());
    }
}
