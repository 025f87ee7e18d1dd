//! What a refused configuration looks like.
//!
//! A [`ConfigError`] reads like a compiler message, so that an editor or a
//! terminal can jump to it:
//!
//! ```text
//! /etc/sip-ha/sip-ha.toml:12:7: unknown key `intervall` in [health]; expected one of: interval, fail_after, rise_after, check
//! ```
//!
//! Positions come from byte offsets (TOML spans) turned into 1-based line and
//! column numbers by [`line_col`]; columns count characters, not bytes. The
//! `toml` crate's own errors (syntax, unknown keys, wrong types) are rewritten
//! here into the same shape and vocabulary as the checks in `load`.

use std::fmt;
use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// A configuration that cannot be used, and where and why.
///
/// When validation finds several independent problems, the first (in file
/// order) is this error and the rest are in [`more`](Self::more), so one run
/// of `check-config` can report them all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// The configuration file.
    pub path: PathBuf,
    /// 1-based line, `None` when the problem has no position (the file could
    /// not be read at all). (`u32` rather than `usize` keeps the error small
    /// enough to return by value.)
    pub line: Option<u32>,
    /// 1-based column, in characters.
    pub column: Option<u32>,
    /// What is wrong.
    pub message: String,
    /// What would be right, when that can be said briefly.
    pub expected: Option<String>,
    /// Further problems found in the same file, in file order.
    pub more: Vec<ConfigError>,
}

impl ConfigError {
    /// An error at byte offset `span.start` of `src`.
    pub(crate) fn at(
        path: &Path,
        src: &str,
        span: Range<usize>,
        message: impl Into<String>,
        expected: Option<String>,
    ) -> Self {
        let (line, column) = line_col(src, span.start);
        let narrow = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        ConfigError {
            path: path.to_owned(),
            line: Some(narrow(line)),
            column: Some(narrow(column)),
            message: message.into(),
            expected,
            more: Vec::new(),
        }
    }

    /// The file could not be read.
    pub(crate) fn unreadable(path: &Path, err: &io::Error) -> Self {
        let mut reason = err.to_string();
        // "No such file or directory (os error 2)": the number helps nobody.
        if let Some(i) = reason.find(" (os error ") {
            reason.truncate(i);
        }
        let hint = match err.kind() {
            io::ErrorKind::NotFound => "create it from the example sip-ha.toml or pass --config",
            io::ErrorKind::PermissionDenied => "run sip-ha as root, or let its user read the file",
            _ => "check the path, or pass --config",
        };
        ConfigError {
            path: path.to_owned(),
            line: None,
            column: None,
            message: format!("cannot read {}: {reason}; {hint}", path.display()),
            expected: None,
            more: Vec::new(),
        }
    }

    /// This error followed by the ones in `more`, flattened.
    pub fn all(&self) -> impl Iterator<Item = &ConfigError> {
        std::iter::once(self).chain(self.more.iter())
    }

    /// Rewrites an error from the `toml` crate (syntax, unknown key, wrong
    /// type, duplicate key) into a `ConfigError` with a position.
    pub(crate) fn from_toml(path: &Path, src: &str, err: &toml::de::Error) -> Self {
        let span = err.span().unwrap_or(0..0);
        let keys = toml_keys(err);
        let (message, expected) = describe_toml(src, &span, err.message(), &keys);
        ConfigError::at(path, src, span, message, expected)
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.fmt_one(f)?;
        for e in &self.more {
            writeln!(f)?;
            e.fmt_one(f)?;
        }
        Ok(())
    }
}

impl ConfigError {
    fn fmt_one(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Without a position the message names the file itself.
        if let Some(line) = self.line {
            write!(
                f,
                "{}:{line}:{}: ",
                self.path.display(),
                self.column.unwrap_or(1)
            )?;
        }
        f.write_str(&self.message)?;
        if let Some(expected) = &self.expected {
            write!(f, "; expected {expected}")?;
        }
        Ok(())
    }
}

/// The 1-based (line, column) of byte `offset` in `src`. The column counts
/// characters. An offset past the end means the end; one inside a multi-byte
/// character means that character.
pub fn line_col(src: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(src.len());
    while !src.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &src[..offset];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = before.matches('\n').count() + 1;
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

/// The dotted key path the `toml` crate attaches to a deserialization error
/// ("health.check"). It is only exposed through `Display` when the error has
/// no input attached, hence the detour.
fn toml_keys(err: &toml::de::Error) -> Vec<String> {
    let mut bare = err.clone();
    bare.set_input(None);
    let text = bare.to_string();
    let last = text.trim_end().lines().last().unwrap_or("");
    match last.strip_prefix("in `").and_then(|s| s.strip_suffix('`')) {
        Some(path) if !path.is_empty() => path.split('.').map(str::to_owned).collect(),
        _ => Vec::new(),
    }
}

/// How a table is written in the file: `[health]`, `[[health.check]]`, or
/// "the top level" for keys outside any table.
fn table_label(keys: &[String]) -> String {
    let joined = keys.join(".");
    match joined.as_str() {
        "" => "the top level".to_owned(),
        "health.check" | "sync.path" | "sync.target" | "alert.snmp" => format!("[[{joined}]]"),
        _ => format!("[{joined}]"),
    }
}

/// Every `backquoted` word in `s`, in order.
fn backquoted(s: &str) -> Vec<&str> {
    s.split('`').skip(1).step_by(2).collect()
}

/// The message and expectation for a `toml` error.
fn describe_toml(
    src: &str,
    span: &Range<usize>,
    msg: &str,
    keys: &[String],
) -> (String, Option<String>) {
    if let Some(rest) = msg.strip_prefix("unknown field ") {
        // serde: "unknown field `x`, expected one of `a`, `b`" (or "expected
        // `a` or `b`", or "there are no fields").
        let (field, expected) = rest.split_once(", ").unwrap_or((rest, ""));
        let field = field.trim_matches('`');
        let names = backquoted(expected);
        let expected = (!names.is_empty()).then(|| format!("one of: {}", names.join(", ")));
        if keys.is_empty() {
            return (format!("unknown section `{field}`"), expected);
        }
        if keys == ["nodes"] {
            return (
                format!("unknown node `{field}`"),
                Some("`master` and `slave`".to_owned()),
            );
        }
        return (
            format!("unknown key `{field}` in {}", table_label(keys)),
            expected,
        );
    }
    if let Some(rest) = msg.strip_prefix("invalid type: ") {
        // serde: "invalid type: string \"22\", expected i64"
        let (found, wanted) = rest.rsplit_once(", expected ").unwrap_or((rest, ""));
        let place = match keys.split_last() {
            Some((key, table)) => format!("`{key}` in {}", table_label(table)),
            None => "this value".to_owned(),
        };
        let wanted = match wanted {
            "i64" | "u64" | "i32" | "u32" | "u16" => "an integer".to_owned(),
            "a sequence" => "an array, like [\"a\", \"b\"]".to_owned(),
            "a string" => "a string in quotes".to_owned(),
            "a boolean" => "true or false".to_owned(),
            "a table" => "a table".to_owned(),
            w if w.starts_with("struct ") || w == "a map" => "a table".to_owned(),
            w => w.to_owned(),
        };
        return (
            format!("wrong type for {place}: found {found}"),
            Some(wanted),
        );
    }
    if msg == "duplicate key" {
        return describe_duplicate(src, span);
    }
    // A syntax error: "invalid basic string, expected `\"`".
    let (what, expected) = match msg.split_once(", expected ") {
        Some((what, expected)) => (what, Some(expected.to_owned())),
        None => (msg, None),
    };
    (format!("TOML syntax error: {}", what.trim()), expected)
}

/// "duplicate key" says neither which key nor where the first one is.
fn describe_duplicate(src: &str, span: &Range<usize>) -> (String, Option<String>) {
    let name = src.get(span.clone()).unwrap_or("").trim();
    let (line_no, _) = line_col(src, span.start);
    let lines: Vec<&str> = src.lines().collect();
    let this = lines.get(line_no.saturating_sub(1)).copied().unwrap_or("");
    let header = table_header(this);
    if let Some(header) = header {
        // The same table opened twice: find the first one.
        let earlier = lines.get(..line_no.saturating_sub(1)).unwrap_or(&[]);
        let first = earlier
            .iter()
            .position(|l| table_header(l).as_ref() == Some(&header));
        let shown = format!("[{header}]");
        let message = match first {
            Some(i) => format!("table {shown} appears twice (first at line {})", i + 1),
            None => format!("`{name}` in table {shown} is defined twice"),
        };
        return (
            message,
            Some("each table written once, with all of its keys under one header".to_owned()),
        );
    }
    // A key set twice: look back to the start of its table for the first.
    let mut first = None;
    for i in (0..line_no.saturating_sub(1)).rev() {
        let l = lines.get(i).copied().unwrap_or("");
        if table_header(l).is_some() || l.trim_start().starts_with("[[") {
            break;
        }
        if let Some((k, _)) = l.split_once('=') {
            if k.trim().trim_matches(|c| c == '"' || c == '\'') == name {
                first = Some(i + 1);
            }
        }
    }
    let message = match first {
        Some(l) => format!("key `{name}` is set twice (first at line {l})"),
        None => format!("key `{name}` is set twice"),
    };
    (
        message,
        Some("each key set only once in a table".to_owned()),
    )
}

/// `Some("nodes.master")` for a line `[nodes.master]` (spaces removed), `None`
/// for anything else, including `[[...]]` array headers, which may repeat.
fn table_header(line: &str) -> Option<String> {
    let t = line.trim();
    if t.starts_with("[[") {
        return None;
    }
    let inner = t.strip_prefix('[')?;
    let end = inner.find(']')?;
    Some(
        inner[..end]
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_counts_from_one_in_characters() {
        let src = "a = 1\nbé = 2\n";
        assert_eq!(line_col(src, 0), (1, 1));
        assert_eq!(line_col(src, 4), (1, 5));
        assert_eq!(line_col(src, 6), (2, 1));
        // "é" is two bytes; the "=" after it is the fourth character.
        assert_eq!(line_col(src, 10), (2, 4));
        // Inside 'é': that character.
        assert_eq!(line_col(src, 8), (2, 2));
        assert_eq!(line_col(src, 999), (3, 1));
        assert_eq!(line_col("", 5), (1, 1));
    }

    #[test]
    fn display_without_position_is_the_message() {
        let e = ConfigError::unreadable(Path::new("/x"), &io::Error::from(io::ErrorKind::NotFound));
        assert!(e.to_string().starts_with("cannot read /x: "), "{e}");
        assert!(e.to_string().contains("pass --config"), "{e}");
    }
}
