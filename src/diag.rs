//! Diagnostics for input files: a field path, where it is in the file, and what is wrong.
//!
//! Every problem with user input is reported as one line, `FILE:LINE:COLUMN: PATH: MESSAGE`.
//! The locations come from a light pass over the YAML events (yaml-rust2), separate from the
//! serde deserialization, so that problems found after parsing (a zero bandwidth, an unknown
//! device name) still point at the line that says them.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// One step of a path into a YAML document.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PathSeg {
    /// A mapping key.
    Key(String),
    /// A sequence index.
    Index(usize),
}

/// A path into a YAML document, displayed as `devices[0].count`.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FieldPath(pub Vec<PathSeg>);

impl FieldPath {
    /// The empty path (the document root).
    pub fn root() -> Self {
        FieldPath(Vec::new())
    }

    /// This path extended by a key.
    pub fn key(&self, key: &str) -> Self {
        let mut segs = self.0.clone();
        segs.push(PathSeg::Key(key.to_string()));
        FieldPath(segs)
    }

    /// This path extended by an index.
    pub fn index(&self, index: usize) -> Self {
        let mut segs = self.0.clone();
        segs.push(PathSeg::Index(index));
        FieldPath(segs)
    }

    /// Parses `a.b[2].c` or `a.b.2.c` (the `--set` syntax).
    pub fn parse(text: &str) -> Option<Self> {
        let mut segs = Vec::new();
        for part in text.split('.') {
            let (name, mut rest) = match part.find('[') {
                Some(i) => (&part[..i], &part[i..]),
                None => (part, ""),
            };
            if name.is_empty() && segs.is_empty() && rest.is_empty() {
                return None;
            }
            if !name.is_empty() {
                match name.parse::<usize>() {
                    Ok(index) => segs.push(PathSeg::Index(index)),
                    Err(_) => segs.push(PathSeg::Key(name.to_string())),
                }
            } else if rest.is_empty() {
                return None;
            }
            while !rest.is_empty() {
                let close = rest.find(']')?;
                let index = rest.get(1..close)?.parse().ok()?;
                segs.push(PathSeg::Index(index));
                rest = &rest[close + 1..];
                if !rest.is_empty() && !rest.starts_with('[') {
                    return None;
                }
            }
        }
        Some(FieldPath(segs))
    }

    /// Whether `self` is `other` or lies inside it.
    pub fn starts_with(&self, other: &FieldPath) -> bool {
        self.0.starts_with(&other.0)
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("(document)");
        }
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                PathSeg::Key(key) if i == 0 => f.write_str(key)?,
                PathSeg::Key(key) => write!(f, ".{key}")?,
                PathSeg::Index(index) => write!(f, "[{index}]")?,
            }
        }
        Ok(())
    }
}

/// Where a value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A line and column (both 1-based) in the file.
    Line {
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
    },
    /// A `--set` override on the command line.
    Override(String),
    /// Nowhere more precise than the file.
    Unknown,
}

/// One problem with an input file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// The file as the user named it.
    pub file: String,
    /// Where in the file.
    pub origin: Origin,
    /// The field the problem is about.
    pub path: FieldPath,
    /// What is wrong, a lowercase fragment.
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Keys, values and serde's messages quote the input, which may hold line breaks; they
        // are escaped so that a problem stays one line.
        let mut f = OneLine(f);
        match &self.origin {
            Origin::Line { line, column } => write!(f, "{}:{line}:{column}: ", self.file)?,
            Origin::Override(text) => write!(f, "{} (--set {text}): ", self.file)?,
            Origin::Unknown => write!(f, "{}: ", self.file)?,
        }
        if !self.path.0.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)
    }
}

/// Writes text with control characters escaped as in Rust strings (`\n`, `\u{1b}`).
struct OneLine<'a, 'b>(&'a mut fmt::Formatter<'b>);

impl fmt::Write for OneLine<'_, '_> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        for c in text.chars() {
            if c.is_control() {
                write!(self.0, "{}", c.escape_debug())?;
            } else {
                self.0.write_char(c)?;
            }
        }
        Ok(())
    }
}

/// Every problem found in one input, reported together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, diag) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{diag}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostics {}

/// Maps field paths of a YAML document to the line and column that wrote them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Locator {
    values: BTreeMap<FieldPath, (usize, usize)>,
    keys: BTreeMap<FieldPath, (usize, usize)>,
    overrides: Vec<(FieldPath, String)>,
    /// Where and why the event parser stopped before the end of the document.
    stopped: Option<(usize, usize, String)>,
}

impl Locator {
    /// Indexes `text` as far as the event parser reads it (see [`Locator::unreadable`]).
    pub fn new(text: &str) -> Self {
        // yaml-rust2 refuses a tab after `:` that libyaml (serde_yaml) accepts; a space in its
        // place keeps every line and column.
        let text = text.replace('\t', " ");
        let mut walker = Walker::default();
        let stopped = Parser::new_from_str(&text)
            .load(&mut walker, false)
            .err()
            .map(|err| {
                let mark = err.marker();
                (mark.line(), mark.col() + 1, err.info().to_string())
            });
        Locator {
            values: walker.values,
            keys: walker.keys,
            overrides: Vec::new(),
            stopped,
        }
    }

    /// The problem that stopped the index before the end of `file`, if any. serde_yaml reports
    /// a syntax error itself, before this is asked; what remains is YAML that libyaml accepts
    /// and yaml-rust2 does not (a comment or a tag with no space before what follows). Such a
    /// file is refused by the callers, since every later problem would be located wrongly or
    /// not at all.
    pub fn unreadable(&self, file: &str) -> Option<Diagnostic> {
        self.stopped
            .as_ref()
            .map(|(line, column, message)| Diagnostic {
                file: file.to_string(),
                origin: Origin::Line {
                    line: *line,
                    column: *column,
                },
                path: FieldPath::root(),
                message: message.clone(),
            })
    }

    /// Records that `path` was set on the command line by `--set text`.
    pub fn record_override(&mut self, path: FieldPath, text: String) {
        self.overrides.push((path, text));
    }

    /// Where the field at `path` came from: an override covering it, else its value's position,
    /// else its key's, else its nearest located ancestor's.
    pub fn origin(&self, path: &FieldPath) -> Origin {
        if let Some((_, text)) = self
            .overrides
            .iter()
            .rev()
            .find(|(p, _)| path.starts_with(p))
        {
            return Origin::Override(text.clone());
        }
        let mut probe = path.clone();
        loop {
            if let Some(&(line, column)) = self.values.get(&probe).or(self.keys.get(&probe)) {
                return Origin::Line { line, column };
            }
            if probe.0.pop().is_none() {
                return Origin::Unknown;
            }
        }
    }

    /// Where the key of the field at `path` is written (for unknown fields), falling back to
    /// [`Locator::origin`].
    pub fn key_origin(&self, path: &FieldPath) -> Origin {
        match self.keys.get(path) {
            Some(&(line, column)) if !self.overrides.iter().any(|(p, _)| path.starts_with(p)) => {
                Origin::Line { line, column }
            }
            _ => self.origin(path),
        }
    }

    /// A diagnostic for the field at `path`.
    pub fn diagnostic(
        &self,
        file: &str,
        path: FieldPath,
        message: impl Into<String>,
    ) -> Diagnostic {
        Diagnostic {
            file: file.to_string(),
            origin: self.origin(&path),
            path,
            message: message.into(),
        }
    }
}

/// Where a YAML problem the parser could not place belongs in `text`: the start of the second
/// document when `text` holds more than one (a file holds one), else line 1, column 1 (an empty
/// file has no better place).
pub fn unplaced_yaml_origin(text: &str) -> Origin {
    struct Starts(Vec<(usize, usize)>);
    impl MarkedEventReceiver for Starts {
        fn on_event(&mut self, event: Event, mark: Marker) {
            if event == Event::DocumentStart {
                self.0.push((mark.line(), mark.col() + 1));
            }
        }
    }
    let mut starts = Starts(Vec::new());
    let _ = Parser::new_from_str(text).load(&mut starts, true);
    let (line, column) = starts.0.get(1).copied().unwrap_or((1, 1));
    Origin::Line { line, column }
}

enum Frame {
    Map { key: Option<String> },
    Seq { index: usize },
}

#[derive(Default)]
struct Walker {
    frames: Vec<Frame>,
    path: Vec<PathSeg>,
    values: BTreeMap<FieldPath, (usize, usize)>,
    keys: BTreeMap<FieldPath, (usize, usize)>,
}

impl Walker {
    /// The path of the value about to be read in the innermost container.
    fn child_path(&self) -> FieldPath {
        let mut segs = self.path.clone();
        match self.frames.last() {
            Some(Frame::Map { key: Some(key) }) => segs.push(PathSeg::Key(key.clone())),
            Some(Frame::Seq { index }) => segs.push(PathSeg::Index(*index)),
            _ => {}
        }
        FieldPath(segs)
    }

    fn finish_value(&mut self) {
        match self.frames.last_mut() {
            Some(Frame::Map { key }) => *key = None,
            Some(Frame::Seq { index }) => *index += 1,
            None => {}
        }
    }

    fn open(&mut self, frame: Frame, mark: Marker) {
        let path = self.child_path();
        self.values
            .insert(path.clone(), (mark.line(), mark.col() + 1));
        self.path = path.0;
        self.frames.push(frame);
    }

    fn close(&mut self) {
        self.frames.pop();
        self.path.pop();
        self.finish_value();
    }
}

impl MarkedEventReceiver for Walker {
    fn on_event(&mut self, event: Event, mark: Marker) {
        let position = (mark.line(), mark.col() + 1);
        match event {
            Event::Scalar(text, ..) => {
                if let Some(Frame::Map { key: key @ None }) = self.frames.last_mut() {
                    *key = Some(text);
                    let path = self.child_path();
                    self.keys.insert(path, position);
                } else {
                    let path = self.child_path();
                    self.values.insert(path, position);
                    self.finish_value();
                }
            }
            Event::Alias(_) => {
                let path = self.child_path();
                self.values.insert(path, position);
                self.finish_value();
            }
            Event::MappingStart(..) => self.open(Frame::Map { key: None }, mark),
            Event::SequenceStart(..) => self.open(Frame::Seq { index: 0 }, mark),
            Event::MappingEnd | Event::SequenceEnd => self.close(),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_parse_and_print() {
        let path = FieldPath::parse("devices.0.count").unwrap();
        assert_eq!(path.to_string(), "devices[0].count");
        assert_eq!(FieldPath::parse("devices[0].count"), Some(path));
        assert_eq!(FieldPath::parse("a..b").map(|p| p.0.len()), None);
    }

    /// Found by fuzzing (issue 12 item 8): a quoted key holding a line break was echoed into the
    /// message and the path, and the problem took several lines.
    #[test]
    fn a_diagnostic_is_one_line_whatever_it_quotes() {
        let diag = Diagnostic {
            file: "s.yaml".into(),
            origin: Origin::Line { line: 1, column: 2 },
            path: FieldPath::root().key("orders").key("a\nb"),
            message: "unknown field `\n\r\u{1b}`, expected `kind`".into(),
        };
        assert_eq!(
            diag.to_string(),
            r"s.yaml:1:2: orders.a\nb: unknown field `\n\r\u{1b}`, expected `kind`"
        );
    }

    /// Found by fuzzing (issue 12 item 8): YAML that serde_yaml reads and yaml-rust2 does not
    /// left the index empty or cut short, so problems had no line or a wrong one.
    #[test]
    fn a_tab_after_a_colon_is_indexed_and_what_stops_the_index_is_kept() {
        let locator = Locator::new("name:\tx\ncolour: red\n");
        let at = FieldPath::root().key("colour");
        assert_eq!(locator.origin(&at), Origin::Line { line: 2, column: 9 });
        assert_eq!(locator.unreadable("s.yaml"), None);

        let locator = Locator::new("name: x\ndescription: |#c\n  t\ncolour: red\n");
        let diag = locator
            .unreadable("s.yaml")
            .expect("yaml-rust2 stops at `|#`");
        assert_eq!(
            diag.to_string(),
            "s.yaml:2:15: comments must be separated from other tokens by whitespace"
        );
    }

    #[test]
    fn locates_nested_fields() {
        let text = "name: x\ndevices:\n  - {name: gpu, count: 4}\n  - name: cpu\n    count: 2\nlinks:\n  topology: {kind: full}\n";
        let locator = Locator::new(text);
        let at = |p: &str| locator.origin(&FieldPath::parse(p).unwrap());
        assert_eq!(at("name"), Origin::Line { line: 1, column: 7 });
        assert_eq!(
            at("devices[0].count"),
            Origin::Line {
                line: 3,
                column: 24
            }
        );
        assert_eq!(
            at("devices[1].count"),
            Origin::Line {
                line: 5,
                column: 12
            }
        );
        assert_eq!(
            at("links.topology.kind"),
            Origin::Line {
                line: 7,
                column: 20
            }
        );
        // A missing field falls back to its parent.
        assert_eq!(
            at("links.topology.bandwidth"),
            Origin::Line {
                line: 7,
                column: 13
            }
        );
        let key = locator.key_origin(&FieldPath::parse("devices[1].count").unwrap());
        assert_eq!(key, Origin::Line { line: 5, column: 5 });
    }
}
