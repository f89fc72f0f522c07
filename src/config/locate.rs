//! Naming a problem's line: where a dotted key (or a byte offset) is in the source text, and
//! the error that lists every problem as `file:line: key: message`.

#[allow(unused_imports)]
use super::*;

/// One problem in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub line: Option<usize>,
    pub key: Option<String>,
    pub message: String,
}

/// Everything wrong with a config file, one problem a line.
#[derive(Debug, Clone)]
pub struct ConfigError {
    pub file: PathBuf,
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}", self.file.display())?;
            if let Some(line) = p.line {
                write!(f, ":{line}")?;
            }
            write!(f, ": ")?;
            if let Some(key) = &p.key {
                write!(f, "{key}: ")?;
            }
            write!(f, "{}", p.message)?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// Where keys are in the source text, for naming lines.
pub(super) struct Locator<'a> {
    pub(super) src: &'a str,
    pub(super) doc: Option<toml_edit::Document<&'a str>>,
}

impl<'a> Locator<'a> {
    pub(super) fn new(src: &'a str) -> Self {
        Locator {
            src,
            doc: toml_edit::Document::parse(src).ok(),
        }
    }

    pub(super) fn line_at(&self, offset: usize) -> usize {
        let offset = offset.min(self.src.len());
        self.src.as_bytes()[..offset]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1
    }

    /// The line of a dotted key (the deepest part of it that is written in the file). A part
    /// may index an array of tables: `readers[1].path`.
    pub(super) fn line_of(&self, path: &str) -> Option<usize> {
        enum At<'d> {
            Item(&'d toml_edit::Item),
            Value(&'d toml_edit::Value),
            Table(&'d toml_edit::Table),
        }
        fn child<'d>(at: &At<'d>, name: &str) -> Option<(Option<std::ops::Range<usize>>, At<'d>)> {
            let table: Option<&toml_edit::Table> = match at {
                At::Item(toml_edit::Item::Table(t)) => Some(t),
                At::Table(t) => Some(t),
                _ => None,
            };
            if let Some(t) = table {
                let (k, v) = t.get_key_value(name)?;
                return Some((k.span().or_else(|| v.span()), At::Item(v)));
            }
            let inline = match at {
                At::Item(toml_edit::Item::Value(toml_edit::Value::InlineTable(t)))
                | At::Value(toml_edit::Value::InlineTable(t)) => t,
                _ => return None,
            };
            let (k, v) = inline.get_key_value(name)?;
            Some((k.span().or_else(|| v.span()), At::Item(v)))
        }
        fn index<'d>(at: &At<'d>, i: usize) -> Option<(Option<std::ops::Range<usize>>, At<'d>)> {
            match at {
                At::Item(toml_edit::Item::ArrayOfTables(a)) => {
                    let t = a.get(i)?;
                    Some((t.span(), At::Table(t)))
                }
                At::Item(toml_edit::Item::Value(toml_edit::Value::Array(a)))
                | At::Value(toml_edit::Value::Array(a)) => {
                    let v = a.get(i)?;
                    Some((v.span(), At::Value(v)))
                }
                _ => None,
            }
        }
        let mut at = At::Item(self.doc.as_ref()?.as_item());
        let mut best = None;
        for part in path.split('.') {
            let (name, idx) = match part.split_once('[') {
                Some((n, rest)) => (n, rest.trim_end_matches(']').parse::<usize>().ok()),
                None => (part, None),
            };
            let Some((span, next)) = child(&at, name) else {
                break;
            };
            if let Some(span) = span {
                best = Some(self.line_at(span.start));
            }
            at = next;
            if let Some(i) = idx {
                let Some((span, next)) = index(&at, i) else {
                    break;
                };
                if let Some(span) = span {
                    best = Some(self.line_at(span.start));
                }
                at = next;
            }
        }
        best
    }

    /// The dotted key whose text contains `offset`, if any.
    pub(super) fn key_at(&self, offset: usize) -> Option<String> {
        fn children(item: &toml_edit::Item) -> Vec<(&toml_edit::Key, &toml_edit::Item)> {
            match item {
                toml_edit::Item::Table(t) => {
                    t.iter().filter_map(|(k, _)| t.get_key_value(k)).collect()
                }
                toml_edit::Item::Value(toml_edit::Value::InlineTable(t)) => {
                    t.iter().filter_map(|(k, _)| t.get_key_value(k)).collect()
                }
                _ => Vec::new(),
            }
        }
        fn walk(item: &toml_edit::Item, offset: usize, prefix: &str) -> Option<String> {
            // `[[readers]]`: look into each table as `readers[N]`.
            if let toml_edit::Item::ArrayOfTables(a) = item {
                for (i, t) in a.iter().enumerate() {
                    let name = format!("{prefix}[{i}]");
                    for (k, _) in t.iter() {
                        let Some((key, value)) = t.get_key_value(k) else {
                            continue;
                        };
                        let full = format!("{name}.{}", key.get());
                        if let Some(deeper) = walk(value, offset, &full) {
                            return Some(deeper);
                        }
                        let in_key = key.span().is_some_and(|s| s.contains(&offset));
                        let in_value = value
                            .span()
                            .is_some_and(|s| s.contains(&offset) || s.end == offset);
                        if in_key || in_value {
                            return Some(full);
                        }
                    }
                }
                return None;
            }
            let mut found = None;
            for (key, value) in children(item) {
                let name = if prefix.is_empty() {
                    key.get().to_owned()
                } else {
                    format!("{prefix}.{}", key.get())
                };
                if let Some(deeper) = walk(value, offset, &name) {
                    return Some(deeper);
                }
                let in_key = key.span().is_some_and(|s| s.contains(&offset));
                let in_value = value
                    .span()
                    .is_some_and(|s| s.contains(&offset) || s.end == offset);
                if in_key || in_value {
                    found = Some(name);
                }
            }
            found
        }
        walk(self.doc.as_ref()?.as_item(), offset, "")
    }
}
