//! The pipe text: split into stages on unquoted `|` (and sources joined by `&`), and into
//! words by the shell's quoting rules.
//!
//! What the shell does and this does too: `'…'` (literal), `"…"` (with `\"`, `\\`, `\$`
//! and `$VAR` inside), `\` escaping the next character, `\` + newline joining lines, `#`
//! starting a comment at the start of a word, `$VAR` and `${VAR}` expanded from the
//! environment (`${VAR:-default}` when it may be unset). What it does not: globs, `~`,
//! command substitution, redirections. An unset `$VAR` without a default is an error
//! rather than an empty word, so that `--brokers $B` with `B` unset does not quietly
//! swallow the next flag.
//!
//! A newline ends a stage as `|` does, so a file may hold one stage per line, with or
//! without `|` at either end of a line. (shell-words and shlex split words but know
//! neither `|` nor `$VAR`, which is why this lexer is written here.)

/// How one stage is joined to the stage before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Join {
    /// The first stage.
    Start,
    /// `|`, or a new line.
    Pipe,
    /// `&`: another source feeding the same hub.
    Also,
}

/// One stage's words, as written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StageText {
    pub words: Vec<String>,
    pub join: Join,
    /// 1-based line of the text the stage starts on.
    pub line: usize,
}

#[derive(Debug, PartialEq)]
enum Token {
    Word(String),
    Pipe,
    Also,
    Newline,
}

/// Splits `text` into stages. `env` looks variables up (the process environment in use).
pub fn split(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Vec<StageText>, String> {
    let tokens = lex(text, env)?;
    let mut stages: Vec<StageText> = Vec::new();
    let mut words = Vec::new();
    let mut join = Join::Start;
    let mut start_line = 1;
    // The separator that ended the last stage, when it was `|` or `&`: a stage must follow.
    let mut pending: Option<(Join, usize)> = None;
    let close = |words: &mut Vec<String>,
                 join: &mut Join,
                 start_line: usize,
                 stages: &mut Vec<StageText>| {
        if !words.is_empty() {
            stages.push(StageText {
                words: std::mem::take(words),
                join: *join,
                line: start_line,
            });
            *join = Join::Pipe;
        }
    };
    for (token, at_line) in tokens {
        match token {
            Token::Word(w) => {
                if words.is_empty() {
                    start_line = at_line;
                    if let Some((j, _)) = pending.take() {
                        join = j;
                    }
                }
                words.push(w);
            }
            Token::Newline => close(&mut words, &mut join, start_line, &mut stages),
            Token::Pipe | Token::Also => {
                let sep = if token == Token::Pipe {
                    Join::Pipe
                } else {
                    Join::Also
                };
                let symbol = if sep == Join::Pipe { "|" } else { "&" };
                if words.is_empty() {
                    // `| validate` at the start of a line continues the stage before.
                    let after_stage = stages.last().is_some() && pending.is_none();
                    if !after_stage {
                        return Err(format!(
                            "line {at_line}: `{symbol}` with no stage before it (an empty stage)"
                        ));
                    }
                }
                close(&mut words, &mut join, start_line, &mut stages);
                pending = Some((sep, at_line));
            }
        }
    }
    close(&mut words, &mut join, start_line, &mut stages);
    if let Some((sep, at)) = pending {
        let symbol = if sep == Join::Pipe { "|" } else { "&" };
        return Err(format!(
            "line {at}: the text ends with `{symbol}`: a stage must follow it"
        ));
    }
    Ok(stages)
}

fn lex(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Vec<(Token, usize)>, String> {
    let mut tokens = Vec::new();
    let mut chars = text.chars().peekable();
    let mut line = 1;
    // The word being built; `None` between words (so `''` still makes an empty word).
    let mut word: Option<String> = None;
    let finish = |word: &mut Option<String>, tokens: &mut Vec<(Token, usize)>, line: usize| {
        if let Some(w) = word.take() {
            tokens.push((Token::Word(w), line));
        }
    };
    while let Some(c) = chars.next() {
        match c {
            '\n' => {
                finish(&mut word, &mut tokens, line);
                tokens.push((Token::Newline, line));
                line += 1;
            }
            c if c.is_whitespace() => finish(&mut word, &mut tokens, line),
            '|' => {
                finish(&mut word, &mut tokens, line);
                if chars.peek() == Some(&'|') {
                    return Err(format!("line {line}: `||` is not supported (only `|`)"));
                }
                tokens.push((Token::Pipe, line));
            }
            '&' => {
                finish(&mut word, &mut tokens, line);
                if chars.peek() == Some(&'&') {
                    return Err(format!(
                        "line {line}: `&&` is not supported (`&` joins sources)"
                    ));
                }
                tokens.push((Token::Also, line));
            }
            ';' | '<' | '>' | '(' | ')' | '`' => {
                return Err(format!(
                    "line {line}: `{c}` has no meaning in a pipe text: quote it if it is part of a value"
                ));
            }
            '#' if word.is_none() => {
                // A comment, to the end of the line.
                while let Some(&n) = chars.peek() {
                    if n == '\n' {
                        break;
                    }
                    chars.next();
                }
            }
            '\\' => match chars.next() {
                Some('\n') => line += 1, // A continuation: the line goes on.
                Some(n) => word.get_or_insert_with(String::new).push(n),
                None => return Err(format!("line {line}: the text ends with `\\`")),
            },
            '\'' => {
                let start = line;
                let w = word.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(n) => {
                            if n == '\n' {
                                line += 1;
                            }
                            w.push(n)
                        }
                        None => {
                            return Err(format!("line {start}: unbalanced `'`: no closing quote"))
                        }
                    }
                }
            }
            '"' => {
                let start = line;
                word.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(n @ ('"' | '\\' | '$' | '`')) => word.as_mut().unwrap().push(n),
                            Some('\n') => line += 1,
                            Some(n) => {
                                let w = word.as_mut().unwrap();
                                w.push('\\');
                                w.push(n);
                            }
                            None => {
                                return Err(format!(
                                    "line {start}: unbalanced `\"`: no closing quote"
                                ))
                            }
                        },
                        Some('$') => {
                            let value = variable(&mut chars, env, line)?;
                            word.as_mut().unwrap().push_str(&value);
                        }
                        Some(n) => {
                            if n == '\n' {
                                line += 1;
                            }
                            word.as_mut().unwrap().push(n)
                        }
                        None => {
                            return Err(format!("line {start}: unbalanced `\"`: no closing quote"))
                        }
                    }
                }
            }
            '$' => {
                let value = variable(&mut chars, env, line)?;
                word.get_or_insert_with(String::new).push_str(&value);
            }
            c => word.get_or_insert_with(String::new).push(c),
        }
    }
    finish(&mut word, &mut tokens, line);
    Ok(tokens)
}

/// Reads a variable reference after `$`: `NAME` or `{NAME}` or `{NAME:-default}`. A `$`
/// followed by anything else is a literal `$`.
fn variable(
    chars: &mut std::iter::Peekable<std::str::Chars<'_>>,
    env: &dyn Fn(&str) -> Option<String>,
    line: usize,
) -> Result<String, String> {
    let is_name = |c: char| c == '_' || c.is_ascii_alphanumeric();
    if chars.peek() == Some(&'{') {
        chars.next();
        let mut inner = String::new();
        loop {
            match chars.next() {
                Some('}') => break,
                Some(c) => inner.push(c),
                None => return Err(format!("line {line}: `${{` without a closing `}}`")),
            }
        }
        let (name, default) = match inner.split_once(":-") {
            Some((n, d)) => (n.to_owned(), Some(d.to_owned())),
            None => (inner, None),
        };
        if name.is_empty() || !name.chars().all(is_name) {
            return Err(format!("line {line}: `${{{name}}}` is not a variable name"));
        }
        return match (env(&name), default) {
            (Some(v), _) if !v.is_empty() => Ok(v),
            (_, Some(d)) => Ok(d),
            (Some(v), None) => Ok(v),
            (None, None) => Err(unset(&name, line)),
        };
    }
    let mut name = String::new();
    while let Some(&c) = chars.peek() {
        if !is_name(c) || (name.is_empty() && c.is_ascii_digit()) {
            break;
        }
        name.push(c);
        chars.next();
    }
    if name.is_empty() {
        return Ok("$".to_owned());
    }
    env(&name).ok_or_else(|| unset(&name, line))
}

fn unset(name: &str, line: usize) -> String {
    format!("line {line}: ${name} is not set (write ${{{name}:-}} for an empty default)")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "B" => Some("k1:9092,k2:9092".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    fn words(text: &str) -> Vec<Vec<String>> {
        split(text, &env)
            .unwrap()
            .into_iter()
            .map(|s| s.words)
            .collect()
    }

    #[test]
    fn stages_split_on_unquoted_pipes() {
        assert_eq!(
            words(r#"validate --schema s.json | enrich --set 'a="x|y"' --jq ".a | .b" | persist"#),
            [
                vec!["validate", "--schema", "s.json"],
                vec!["enrich", "--set", "a=\"x|y\"", "--jq", ".a | .b"],
                vec!["persist"],
            ]
        );
    }

    #[test]
    fn quoting_escapes_and_variables_as_in_sh() {
        assert_eq!(
            words(r#"ingest-kafka --brokers $B --group "g-${B}" --x '$B' a\ b "q\"q" ''"#),
            [vec![
                "ingest-kafka",
                "--brokers",
                "k1:9092,k2:9092",
                "--group",
                "g-k1:9092,k2:9092",
                "--x",
                "$B",
                "a b",
                "q\"q",
                "",
            ]]
        );
        assert_eq!(
            words("x ${NOPE:-d} ${EMPTY:-e} $EMPTY"),
            [vec!["x", "d", "e", ""]]
        );
        let e = split("x $NOPE", &env).unwrap_err();
        assert!(e.contains("$NOPE is not set"), "{e}");
    }

    #[test]
    fn files_with_lines_comments_and_continuations() {
        let text = "# the ETL job\n\
                    validate --schema s.json   # checks\n\
                    | enrich --timestamp t \\\n  --id key\n\
                    \n\
                    persist --table events |\n\
                    tee out.ndjson\n";
        let stages = split(text, &env).unwrap();
        let w: Vec<_> = stages.iter().map(|s| s.words.join(" ")).collect();
        assert_eq!(
            w,
            [
                "validate --schema s.json",
                "enrich --timestamp t --id key",
                "persist --table events",
                "tee out.ndjson"
            ]
        );
        assert_eq!(
            stages.iter().map(|s| s.line).collect::<Vec<_>>(),
            [2, 3, 6, 7]
        );
    }

    #[test]
    fn sources_join_with_ampersand() {
        let stages = split("ingest-http & ingest-kafka --topic t | validate", &env).unwrap();
        let joins: Vec<Join> = stages.iter().map(|s| s.join).collect();
        assert_eq!(joins, [Join::Start, Join::Also, Join::Pipe]);
    }

    #[test]
    fn bad_texts_say_where() {
        for (text, says) in [
            ("validate | | persist", "empty stage"),
            ("| validate", "empty stage"),
            ("validate |", "ends with `|`"),
            ("validate --jq '.a", "unbalanced `'`"),
            ("validate --jq \".a", "unbalanced `\"`"),
            ("validate > out", "`>` has no meaning"),
            ("validate || persist", "`||`"),
        ] {
            let e = split(text, &env).unwrap_err();
            assert!(e.contains(says), "{text}: {e}");
        }
        assert!(split("  # nothing\n", &env).unwrap().is_empty());
    }
}
