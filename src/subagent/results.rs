//! Results a task reports by printing `::baton-result KEY=VALUE` lines on
//! stdout: small named values kept in the result's `outputs`, on the order
//! (and later fed to workflow steps). They are bounded in count ([`MAX_RESULTS`]) and size
//! ([`MAX_KEY`], [`MAX_VALUE`]); a malformed one is ignored with a warning
//! line on the task's stderr.
//!
//! Architecture invariant: pure. Lines in, a map and warnings out; the lines
//! themselves are still published as ordinary log lines by the caller.

use std::collections::BTreeMap;

/// What starts a result line.
pub const MARKER: &str = "::baton-result";
/// Longest key, in bytes (keys are ASCII).
pub const MAX_KEY: usize = 64;
/// Longest value, in bytes.
pub const MAX_VALUE: usize = 1024;
/// Most distinct keys one task may report.
pub const MAX_RESULTS: usize = 32;

/// The results of one task so far; a later line with the same key wins.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Results {
    values: BTreeMap<String, String>,
}

impl Results {
    /// Takes one stdout line. A line starting with [`MARKER`] that is not a
    /// valid result, or a new key past [`MAX_RESULTS`], is ignored and the
    /// warning to show in the task's log is returned.
    pub fn observe(&mut self, line: &str) -> Option<String> {
        let (key, value) = match parse(line)? {
            Ok(kv) => kv,
            Err(why) => return Some(format!("baton: result line ignored: {why}")),
        };
        if self.values.len() >= MAX_RESULTS && !self.values.contains_key(key) {
            return Some(format!(
                "baton: result line ignored: more than {MAX_RESULTS} results"
            ));
        }
        self.values.insert(key.to_string(), value.to_string());
        None
    }

    pub fn into_map(self) -> BTreeMap<String, String> {
        self.values
    }
}

/// `None` when the line is not a result line (it does not start with the
/// marker); otherwise the key and value, or why they are not valid.
pub fn parse(line: &str) -> Option<Result<(&str, &str), String>> {
    let rest = line.strip_prefix(MARKER)?;
    let Some(pair) = rest.strip_prefix(' ') else {
        return Some(Err(format!("expected '{MARKER} KEY=VALUE'")));
    };
    let Some((key, value)) = pair.trim_start_matches(' ').split_once('=') else {
        return Some(Err(format!("expected '{MARKER} KEY=VALUE'")));
    };
    Some(check(key, value).map(|()| (key, value)))
}

fn check(key: &str, value: &str) -> Result<(), String> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
    if key.is_empty() || key.len() > MAX_KEY || !key.chars().all(allowed) {
        return Err(format!(
            "the key must be 1 to {MAX_KEY} letters, digits, '_' or '-'"
        ));
    }
    if value.len() > MAX_VALUE {
        return Err(format!(
            "the value of '{key}' is longer than {MAX_VALUE} bytes"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(lines: &[&str]) -> (BTreeMap<String, String>, Vec<String>) {
        let mut results = Results::default();
        let warnings = lines.iter().filter_map(|l| results.observe(l)).collect();
        (results.into_map(), warnings)
    }

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn valid_lines_become_results() {
        let (results, warnings) = collect(&[
            "::baton-result rows=42",
            "::baton-result out_file-2=/tmp/a b=c ",
            "::baton-result empty=",
        ]);
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(
            results,
            map(&[("rows", "42"), ("out_file-2", "/tmp/a b=c "), ("empty", "")])
        );
    }

    #[test]
    fn other_lines_are_not_results() {
        let (results, warnings) = collect(&[
            "hello",
            "echo ::baton-result a=1",
            " ::baton-result a=1",
            "",
        ]);
        assert!(results.is_empty() && warnings.is_empty());
        assert_eq!(parse("x ::baton-result a=1"), None);
    }

    #[test]
    fn malformed_marker_lines_warn_and_are_ignored() {
        for line in [
            "::baton-result",
            "::baton-result ",
            "::baton-resultx=1",
            "::baton-result novalue",
            "::baton-result =1",
            "::baton-result a.b=1",
            "::baton-result ké=1",
        ] {
            let (results, warnings) = collect(&[line]);
            assert!(results.is_empty(), "{line}: {results:?}");
            assert_eq!(warnings.len(), 1, "{line}");
        }
    }

    #[test]
    fn too_long_keys_and_values_are_refused() {
        let key = "k".repeat(MAX_KEY);
        let value = "v".repeat(MAX_VALUE);
        let longest = format!("{MARKER} {key}={value}");
        assert_eq!(parse(&longest), Some(Ok((key.as_str(), value.as_str()))));
        let long_key = format!("{MARKER} {key}k=1");
        assert!(matches!(parse(&long_key), Some(Err(_))));
        let long_value = format!("{MARKER} k={value}v");
        assert!(matches!(parse(&long_value), Some(Err(_))));
    }

    #[test]
    fn at_most_max_results_keys_but_known_ones_may_change() {
        let lines: Vec<String> = (0..=MAX_RESULTS)
            .map(|i| format!("{MARKER} k{i}=v"))
            .chain([format!("{MARKER} k0=changed")])
            .collect();
        let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
        let (results, warnings) = collect(&lines);
        assert_eq!(results.len(), MAX_RESULTS);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(!results.contains_key(&format!("k{MAX_RESULTS}")));
        assert_eq!(results["k0"], "changed");
    }

    #[test]
    fn a_later_line_with_the_same_key_wins() {
        let (results, _) = collect(&["::baton-result a=1", "::baton-result a=2"]);
        assert_eq!(results, map(&[("a", "2")]));
    }
}
