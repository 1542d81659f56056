//! Which files the globs name: listing the matches (in the order they are read), and the
//! directories to watch for new ones.

use std::io;
use std::path::{Component, Path, PathBuf};
use std::time::SystemTime;

use glob::{MatchOptions, Pattern};
use notify::RecursiveMode;

use super::Order;

/// `*` and `?` stay within one path component, as in a shell; `**` crosses them.
const OPTIONS: MatchOptions = MatchOptions {
    case_sensitive: true,
    require_literal_separator: true,
    require_literal_leading_dot: false,
};

/// The paths and globs given on the command line.
#[derive(Clone, Debug)]
pub struct Globs {
    texts: Vec<String>,
    patterns: Vec<Pattern>,
}

/// A match: its path, size and modification time when listed.
#[derive(Clone, Debug)]
pub struct Found {
    pub path: PathBuf,
    pub size: u64,
    pub modified: SystemTime,
}

/// What one listing found: the matches, and what could not be looked into.
#[derive(Debug, Default)]
pub struct Listing {
    pub found: Vec<Found>,
    /// Directories or files that could not be read, with why.
    pub unreadable: Vec<(PathBuf, io::Error)>,
    /// Globs that matched nothing.
    pub unmatched: Vec<String>,
}

impl Globs {
    pub fn new(texts: &[String]) -> Result<Globs, String> {
        let patterns = texts
            .iter()
            .map(|t| Pattern::new(t).map_err(|e| format!("{t:?} is not a valid glob: {e}")))
            .collect::<Result<_, _>>()?;
        Ok(Globs {
            texts: texts.to_vec(),
            patterns,
        })
    }

    pub fn texts(&self) -> &[String] {
        &self.texts
    }

    /// Every path the globs match now (each once), in `order`. Anything that is not a
    /// regular file is listed too: opening it says why it is refused.
    pub fn list(&self, order: Order) -> Listing {
        let mut listing = Listing::default();
        for text in &self.texts {
            let mut any = false;
            let entries = match glob::glob_with(text, OPTIONS) {
                Ok(entries) => entries,
                Err(e) => unreachable!("checked by Globs::new: {e}"),
            };
            for entry in entries {
                match entry {
                    Ok(path) => {
                        any = true;
                        if listing.found.iter().any(|f| f.path == path) {
                            continue;
                        }
                        match path.metadata() {
                            Ok(m) if m.is_dir() => {}
                            Ok(m) => listing.found.push(Found {
                                size: m.len(),
                                modified: m.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                                path,
                            }),
                            // Gone since it was listed: as if never seen.
                            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                            Err(e) => listing.unreadable.push((path, e)),
                        }
                    }
                    Err(e) => {
                        let path = e.path().to_owned();
                        listing.unreadable.push((path, e.into()));
                    }
                }
            }
            if !any {
                listing.unmatched.push(text.clone());
            }
        }
        match order {
            Order::Mtime => listing
                .found
                .sort_by(|a, b| a.modified.cmp(&b.modified).then(a.path.cmp(&b.path))),
            Order::Name => listing.found.sort_by(|a, b| a.path.cmp(&b.path)),
        }
        listing
    }

    /// Whether `path` is one the globs name.
    pub fn matches(&self, path: &Path) -> bool {
        self.patterns
            .iter()
            .any(|p| p.matches_path_with(path, OPTIONS))
    }

    /// The directories whose changes can add a match: each glob's literal leading
    /// directories, watched recursively when a wildcard comes before the last component.
    pub fn roots(&self) -> Vec<(PathBuf, RecursiveMode)> {
        let mut roots: Vec<(PathBuf, RecursiveMode)> = Vec::new();
        for text in &self.texts {
            let path = Path::new(text);
            let comps: Vec<Component> = path.components().collect();
            let literal = comps
                .iter()
                .take_while(|c| !has_wildcard(&c.as_os_str().to_string_lossy()))
                .count();
            // The last component names files: the directory is what comes before it.
            let dir_len = literal.min(comps.len().saturating_sub(1));
            let dir: PathBuf = comps[..dir_len].iter().collect();
            let dir = if dir.as_os_str().is_empty() {
                PathBuf::from(".")
            } else {
                dir
            };
            let mode = if literal + 1 < comps.len() {
                RecursiveMode::Recursive
            } else {
                RecursiveMode::NonRecursive
            };
            match roots.iter_mut().find(|(d, _)| *d == dir) {
                Some((_, m)) if mode == RecursiveMode::Recursive => *m = mode,
                Some(_) => {}
                None => roots.push((dir, mode)),
            }
        }
        roots
    }
}

fn has_wildcard(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_globs_list_in_order_and_name_their_roots() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        std::fs::write(root.join("a/b/2.ndjson"), "{}\n").unwrap();
        std::fs::write(root.join("a/1.ndjson"), "{}\n").unwrap();
        std::fs::write(root.join("a/skip.txt"), "{}\n").unwrap();
        let g = Globs::new(&[format!("{}/**/*.ndjson", root.display())]).unwrap();
        let names: Vec<_> = g
            .list(Order::Name)
            .found
            .iter()
            .map(|f| f.path.strip_prefix(root).unwrap().to_owned())
            .collect();
        assert_eq!(
            names,
            [PathBuf::from("a/1.ndjson"), PathBuf::from("a/b/2.ndjson")]
        );
        assert!(g.matches(&root.join("a/b/c/3.ndjson")));
        assert!(!g.matches(&root.join("a/3.txt")));
        assert_eq!(g.roots(), [(root.to_owned(), RecursiveMode::Recursive)]);
        let flat = Globs::new(&["logs/*.ndjson".into(), "app.log".into()]).unwrap();
        assert!(!flat.matches(Path::new("logs/x/y.ndjson")));
        assert_eq!(
            flat.roots(),
            [
                (PathBuf::from("logs"), RecursiveMode::NonRecursive),
                (PathBuf::from("."), RecursiveMode::NonRecursive)
            ]
        );
        let none = Globs::new(&[format!("{}/nothing*", root.display())]).unwrap();
        assert_eq!(none.list(Order::Mtime).unmatched.len(), 1);
    }
}
