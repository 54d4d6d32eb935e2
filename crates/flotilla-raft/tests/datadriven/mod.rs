//! A small datadriven test runner in the style of cockroachdb/datadriven, as etcd-io/raft
//! uses it: a test file is a list of directives, each a command line, a `----` line and the
//! exact expected output, separated by blank lines. Lines starting with `#` narrate.
//!
//! ```text
//! # Node 1 campaigns.
//! campaign 1
//! ----
//!
//! deliver-msgs drop=(2,3) from=1
//! ----
//! > 2 receiving messages
//! ...
//! ```
//!
//! Arguments are `word`, `(a,b)`, `"quoted text"`, `key=value` or `key=(a,b)`.
//! Set `REWRITE=1` to regenerate every expected output in place; review the diff.

use std::fmt::Write as _;
use std::path::Path;

/// One argument of a directive. A positional argument has no key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Arg {
    pub key: Option<String>,
    pub vals: Vec<String>,
}

/// One directive: a command, its arguments, and where it came from.
#[derive(Clone, Debug)]
pub struct Directive {
    pub cmd: String,
    pub args: Vec<Arg>,
}

impl Directive {
    /// The positional arguments, each as its list of values.
    pub fn positional(&self) -> Vec<&[String]> {
        self.args.iter().filter(|a| a.key.is_none()).map(|a| a.vals.as_slice()).collect()
    }

    /// The values of `key=...`, if given.
    pub fn get(&self, key: &str) -> Option<&[String]> {
        self.args.iter().find(|a| a.key.as_deref() == Some(key)).map(|a| a.vals.as_slice())
    }

    /// Every key this directive uses, for rejecting typos.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.args.iter().filter_map(|a| a.key.as_deref())
    }
}

/// Splits a directive line into its command and arguments.
pub fn parse_line(pos: &str, line: &str) -> Result<Directive, String> {
    let mut tokens = Vec::new();
    let mut cur = String::new();
    let mut depth = 0usize;
    let mut quoted = false;
    for c in line.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                cur.push(c);
            }
            '(' if !quoted => {
                depth += 1;
                cur.push(c);
            }
            ')' if !quoted => {
                depth = depth.checked_sub(1).ok_or(format!("{pos}: unbalanced ')'"))?;
                cur.push(c);
            }
            c if c.is_whitespace() && !quoted && depth == 0 => {
                if !cur.is_empty() {
                    tokens.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if quoted || depth != 0 {
        return Err(format!("{pos}: unterminated quote or parenthesis in {line:?}"));
    }
    if !cur.is_empty() {
        tokens.push(cur);
    }
    let mut it = tokens.into_iter();
    let cmd = it.next().ok_or(format!("{pos}: empty directive"))?;
    let mut args = Vec::new();
    for tok in it {
        let (key, val) = match tok.split_once('=') {
            Some((k, v)) if !tok.starts_with('"') && !tok.starts_with('(') => {
                (Some(k.to_string()), v.to_string())
            }
            _ => (None, tok),
        };
        args.push(Arg { key, vals: parse_values(&val) });
    }
    Ok(Directive { cmd, args })
}

fn parse_values(v: &str) -> Vec<String> {
    let unquote = |s: &str| -> String {
        let s = s.trim();
        s.strip_prefix('"').and_then(|s| s.strip_suffix('"')).unwrap_or(s).to_string()
    };
    match v.strip_prefix('(').and_then(|v| v.strip_suffix(')')) {
        Some(inner) if inner.trim().is_empty() => Vec::new(),
        Some(inner) => inner.split(',').map(unquote).collect(),
        None => vec![unquote(v)],
    }
}

/// A file is text interleaved with directives; rewriting keeps the text as it is.
enum Chunk {
    Text(String),
    Block { line: usize, directive: String, expected: Vec<String> },
}

fn parse_file(name: &str, content: &str) -> Result<Vec<Chunk>, String> {
    let lines: Vec<&str> = content.lines().collect();
    let mut chunks = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        if line.trim().is_empty() || line.starts_with('#') {
            chunks.push(Chunk::Text(line.to_string()));
            i += 1;
            continue;
        }
        let start = i;
        i += 1;
        if lines.get(i).map(|l| l.trim_end()) != Some("----") {
            return Err(format!("{name}:{}: expected ---- after the directive", start + 1));
        }
        i += 1;
        let mut expected = Vec::new();
        while i < lines.len() && !lines[i].trim().is_empty() {
            expected.push(lines[i].trim_end().to_string());
            i += 1;
        }
        chunks.push(Chunk::Block { line: start + 1, directive: line.to_string(), expected });
    }
    Ok(chunks)
}

/// Runs every directive of the file at `path` through `run` and compares the outputs. With
/// `REWRITE=1` the file is rewritten with the actual outputs instead. Panics with every
/// mismatch (a line diff each) if any output differs.
pub fn run_file(path: &Path, mut run: impl FnMut(&Directive) -> String) {
    let name = path
        .file_name()
        .map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into_owned());
    let content = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let chunks = parse_file(&name, &content).unwrap_or_else(|e| panic!("{e}"));
    let rewrite = std::env::var("REWRITE").is_ok_and(|v| !v.is_empty() && v != "0");
    let mut out = String::new();
    let mut failures = Vec::new();
    for chunk in &chunks {
        match chunk {
            Chunk::Text(t) => {
                out.push_str(t);
                out.push('\n');
            }
            Chunk::Block { line, directive, expected } => {
                let pos = format!("{name}:{line}");
                let d = parse_line(&pos, directive).unwrap_or_else(|e| panic!("{e}"));
                let actual: Vec<String> =
                    run(&d).lines().map(|l| l.trim_end().to_string()).collect();
                assert!(
                    actual.iter().all(|l| !l.is_empty()),
                    "{pos}: the output of {directive:?} has a blank line, which ends a block"
                );
                writeln!(out, "{directive}\n----").expect("write to string");
                for l in &actual {
                    writeln!(out, "{l}").expect("write to string");
                }
                if &actual != expected {
                    failures.push(format!("{pos}: {directive}\n{}", line_diff(expected, &actual)));
                }
            }
        }
    }
    if rewrite {
        if out != content {
            std::fs::write(path, out)
                .unwrap_or_else(|e| panic!("cannot rewrite {}: {e}", path.display()));
        }
        return;
    }
    if !failures.is_empty() {
        panic!(
            "{} of the directives in {name} produced unexpected output \
             (rerun with REWRITE=1 to accept, then review the diff):\n\n{}",
            failures.len(),
            failures.join("\n")
        );
    }
}

/// A minimal line diff (longest common subsequence): `-` expected only, `+` actual only.
fn line_diff(expected: &[String], actual: &[String]) -> String {
    let (n, m) = (expected.len(), actual.len());
    let mut lcs = vec![vec![0usize; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if expected[i] == actual[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j) = (0, 0);
    let mut out = String::new();
    while i < n || j < m {
        if i < n && j < m && expected[i] == actual[j] {
            writeln!(out, "  {}", expected[i]).expect("write to string");
            i += 1;
            j += 1;
        } else if j < m && (i == n || lcs[i][j + 1] >= lcs[i + 1][j]) {
            writeln!(out, "+ {}", actual[j]).expect("write to string");
            j += 1;
        } else {
            writeln!(out, "- {}", expected[i]).expect("write to string");
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_positional_keyed_lists_and_quotes() {
        let d = parse_line("t:1", r#"cmd 1 (2,3) voters=(1, 2) k=v "a b" x="c d""#).unwrap();
        assert_eq!(d.cmd, "cmd");
        assert_eq!(
            d.positional(),
            vec![&["1".to_string()][..], &["2".into(), "3".into()][..], &["a b".into()][..]]
        );
        assert_eq!(d.get("voters"), Some(&["1".to_string(), "2".to_string()][..]));
        assert_eq!(d.get("k"), Some(&["v".to_string()][..]));
        assert_eq!(d.get("x"), Some(&["c d".to_string()][..]));
        assert_eq!(parse_line("t:1", "p empty=()").unwrap().get("empty"), Some(&[][..]));
    }

    #[test]
    fn blocks_end_at_a_blank_line() {
        let chunks = parse_file("t", "# n\na 1\n----\nx\ny\n\nb\n----\n").unwrap();
        let blocks: Vec<_> = chunks
            .iter()
            .filter_map(|c| match c {
                Chunk::Block { directive, expected, .. } => {
                    Some((directive.clone(), expected.clone()))
                }
                Chunk::Text(_) => None,
            })
            .collect();
        assert_eq!(
            blocks,
            vec![("a 1".into(), vec!["x".into(), "y".into()]), ("b".into(), vec![])]
        );
    }

    #[test]
    fn diff_marks_missing_and_extra_lines() {
        let e: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
        let a: Vec<String> = ["a", "c", "d"].map(String::from).to_vec();
        assert_eq!(line_diff(&e, &a), "  a\n- b\n  c\n+ d\n");
    }
}
