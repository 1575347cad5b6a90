//! Diagnostics for input files: a field path, where it is in the file, and what is wrong.
//!
//! Every problem with user input is reported as one line, `FILE:LINE:COLUMN: PATH: MESSAGE`.
//! The locations come from a light pass over the YAML events (yaml-rust2), separate from the
//! serde deserialization, so that problems found after parsing (a zero bandwidth, an unknown
//! device name) still point at the line that says them.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};

use yaml_rust2::parser::{Event, Parser};
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

/// The largest scenario or schedule file that is read: 4 MiB. A scenario is a few kilobytes
/// (the 32,640 explicit pairs of a full topology of the most devices are about 2 MiB); a
/// schedule file of this size holds about 75,000 ops as `schedule --format json` writes them
/// (400,000 in flow style). The YAML parsers take up to about 130 bytes of memory per byte of
/// text (a flat flow sequence of 4 MiB: about 0.5 GiB); larger files are refused unread.
pub const MAX_DOCUMENT_BYTES: usize = 4 << 20;

/// The deepest nesting of mappings and sequences in a scenario or schedule file: 32 levels.
/// Scenarios need 4 (`links.pairs[0].between`), schedule files 4 (`orders.0[0]`); a deeper
/// document is refused at the first value past the limit, before anything else parses it.
pub const MAX_DEPTH: usize = 32;

/// A position in the file: 1-based line and column; line 0 means none.
type Position = (u32, u32);

/// One step from a node of the document tree to a child: a key (interned) or an index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Step {
    Key(u32),
    Index(u32),
}

/// Where a node's value and its key (in a mapping) are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Node {
    value: Position,
    key: Position,
}

/// Maps field paths of a YAML document to the line and column that wrote them.
///
/// The document is indexed once, as a tree of nodes (node 0 is the root) with its key names
/// interned: about 50 bytes a value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Locator {
    names: BTreeMap<String, u32>,
    children: BTreeMap<(u32, Step), u32>,
    nodes: Vec<Node>,
    /// Where a second document starts, if the file holds one.
    second_document: Option<Position>,
    overrides: Vec<(FieldPath, String)>,
    /// Where and why the event parser stopped before the end of the document.
    stopped: Option<(usize, usize, String)>,
}

impl Locator {
    /// Indexes `text`, the content of `file`, as far as the event parser reads it (see
    /// [`Locator::unreadable`]; serde_yaml reports syntax errors itself).
    ///
    /// # Errors
    /// A document larger than [`MAX_DOCUMENT_BYTES`], or nested deeper than [`MAX_DEPTH`]
    /// (located at the first value past the limit, and named by its top-level field). The walk
    /// stops there, so neither costs more than reading the limit's worth.
    pub fn new(file: &str, text: &str) -> Result<Self, Diagnostic> {
        if text.len() > MAX_DOCUMENT_BYTES {
            return Err(too_large(file));
        }
        let too_deep = |line, column, path| Diagnostic {
            file: file.to_string(),
            origin: Origin::Line { line, column },
            path,
            message: format!("nested deeper than {MAX_DEPTH} levels of mappings and sequences"),
        };
        if let Some(bracket) = deep_flow_bracket(text) {
            // The walk over the text up to the bracket finds where the nesting, counted with
            // the block mappings and sequences around it, first passes the limit, and the
            // field it is in.
            return Err(match walk(&text[..=bracket.offset]) {
                Err((path, mark)) => too_deep(mark.line(), mark.col() + 1, path),
                Ok(walker) => too_deep(bracket.line, bracket.column, walker.top_level_field()),
            });
        }
        // yaml-rust2 refuses a tab after `:` that libyaml (serde_yaml) accepts; a space in its
        // place keeps every line and column.
        match walk(&text.replace('\t', " ")) {
            Ok(walker) => Ok(walker.locator),
            Err((path, mark)) => Err(too_deep(mark.line(), mark.col() + 1, path)),
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

    /// The nodes along `path` from the root, as far as the document has them.
    fn nodes_along(&self, path: &FieldPath) -> Vec<u32> {
        let mut nodes = vec![0];
        let mut node = 0;
        for seg in &path.0 {
            let step = match seg {
                PathSeg::Key(key) => match self.names.get(key) {
                    Some(&name) => Step::Key(name),
                    None => break,
                },
                PathSeg::Index(index) => match u32::try_from(*index) {
                    Ok(index) => Step::Index(index),
                    Err(_) => break,
                },
            };
            match self.children.get(&(node, step)) {
                Some(&child) => {
                    node = child;
                    nodes.push(child);
                }
                None => break,
            }
        }
        nodes
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
        for &node in self.nodes_along(path).iter().rev() {
            let node = self.nodes[node as usize];
            for (line, column) in [node.value, node.key] {
                if line > 0 {
                    return Origin::Line {
                        line: line as usize,
                        column: column as usize,
                    };
                }
            }
        }
        Origin::Unknown
    }

    /// Where the key of the field at `path` is written (for unknown fields), falling back to
    /// [`Locator::origin`].
    pub fn key_origin(&self, path: &FieldPath) -> Origin {
        let nodes = self.nodes_along(path);
        let overridden = self.overrides.iter().any(|(p, _)| path.starts_with(p));
        match self.nodes[*nodes.last().expect("the root is always there") as usize].key {
            (line, column) if line > 0 && nodes.len() == path.0.len() + 1 && !overridden => {
                Origin::Line {
                    line: line as usize,
                    column: column as usize,
                }
            }
            _ => self.origin(path),
        }
    }

    /// Where a YAML problem the parser could not place belongs: the start of the second
    /// document when the file holds more than one (a file holds one), else line 1, column 1 (an
    /// empty file has no better place).
    pub fn unplaced_origin(&self) -> Origin {
        let (line, column) = self.second_document.unwrap_or((1, 1));
        Origin::Line {
            line: line as usize,
            column: column as usize,
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

/// The one-line refusal of a file larger than [`MAX_DOCUMENT_BYTES`].
pub fn too_large(file: &str) -> Diagnostic {
    Diagnostic {
        file: file.to_string(),
        origin: Origin::Unknown,
        path: FieldPath::root(),
        message: format!(
            "the file is larger than {} MiB ({MAX_DOCUMENT_BYTES} bytes), the most a scenario or \
             schedule file may hold",
            MAX_DOCUMENT_BYTES >> 20
        ),
    }
}

/// Indexes the first document of `text`, stopping at a scan error (the index holds what came
/// before it). `Err` with the top-level field and the place of the first mapping or sequence
/// nested deeper than [`MAX_DEPTH`].
fn walk(text: &str) -> Result<Walker, (FieldPath, Marker)> {
    let mut walker = Walker {
        locator: Locator {
            nodes: vec![Node::default()],
            ..Locator::default()
        },
        frames: Vec::new(),
    };
    let mut parser = Parser::new_from_str(text);
    let mut documents = 0;
    loop {
        let (event, mark) = match parser.next_token() {
            Ok(next) => next,
            Err(err) => {
                let mark = err.marker();
                walker.locator.stopped =
                    Some((mark.line(), mark.col() + 1, err.info().to_string()));
                break;
            }
        };
        match event {
            Event::StreamEnd => break,
            Event::DocumentStart => {
                documents += 1;
                if documents > 1 {
                    walker.locator.second_document = Some(position(mark));
                    break;
                }
            }
            event => walker.on_event(event, mark).map_err(|path| (path, mark))?,
        }
    }
    Ok(walker)
}

/// Where a flow bracket opens past [`MAX_DEPTH`].
#[derive(Debug, PartialEq, Eq)]
struct DeepBracket {
    offset: usize,
    line: usize,
    column: usize,
}

/// The first flow bracket (`[` or `{`) nested deeper than [`MAX_DEPTH`], found by a lexical pass
/// that skips comments, quoted scalars and block scalars, and in block context counts a
/// bracket only where a node can start (`a[0]` is a plain scalar). It runs before either YAML
/// parser, because both read a flow collection to its end before reporting its start, in time
/// that grows with the square of its depth (100,000 brackets: tens of seconds).
fn deep_flow_bracket(text: &str) -> Option<DeepBracket> {
    let bytes = text.as_bytes();
    let at = |i: usize| bytes.get(i).copied();
    let blank = |c: Option<u8>| matches!(c, None | Some(b' ' | b'\t' | b'\r' | b'\n'));
    let (mut line, mut column) = (1, 1);
    let mut depth = 0;
    // Whether a node (and so a quoted scalar or a flow collection) may start here.
    let mut node_start = true;
    let mut after_blank = true;
    let mut indent = 0;
    let mut in_indent = true;
    // The column a block node on this line starts at (a key or a sequence entry's content).
    let mut node_column = 0;
    // Inside a block scalar: the indentation its lines must exceed.
    let mut block_scalar: Option<usize> = None;
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if c == b'\n' {
            (line, column, indent, in_indent, after_blank) = (line + 1, 1, 0, true, true);
            if depth == 0 {
                node_start = true;
            }
            i += 1;
            continue;
        }
        if in_indent && c == b' ' {
            (indent, column, i) = (indent + 1, column + 1, i + 1);
            continue;
        }
        if in_indent {
            in_indent = false;
            node_column = column;
            match block_scalar {
                Some(parent) if indent > parent => {
                    // A line of the block scalar: skip it.
                    while i < bytes.len() && bytes[i] != b'\n' {
                        i += 1;
                    }
                    continue;
                }
                _ => block_scalar = None,
            }
        }
        // Bytes that continue a UTF-8 character take no column.
        let width = usize::from(c & 0xC0 != 0x80);
        match c {
            b' ' | b'\t' | b'\r' => {
                (after_blank, column, i) = (true, column + 1, i + 1);
                continue;
            }
            b'#' if after_blank => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
                continue;
            }
            b'\'' | b'"' if node_start => {
                // A quoted scalar, over lines if need be: `''` and `\"` do not end it.
                i += 1;
                column += 1;
                while i < bytes.len() {
                    let d = bytes[i];
                    i += 1;
                    if d == b'\n' {
                        (line, column) = (line + 1, 1);
                        continue;
                    }
                    column += usize::from(d & 0xC0 != 0x80);
                    if c == b'"' && d == b'\\' && i < bytes.len() && bytes[i] != b'\n' {
                        column += usize::from(bytes[i] & 0xC0 != 0x80);
                        i += 1;
                    } else if d == c && c == b'\'' && at(i) == Some(b'\'') {
                        (i, column) = (i + 1, column + 1);
                    } else if d == c {
                        break;
                    }
                }
                (node_start, after_blank) = (false, false);
                continue;
            }
            b'[' | b'{' if depth > 0 || node_start => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Some(DeepBracket {
                        offset: i,
                        line,
                        column,
                    });
                }
                node_start = true;
            }
            b']' | b'}' if depth > 0 => {
                depth -= 1;
                node_start = false;
            }
            b',' if depth > 0 => node_start = true,
            b'-' | b'?' if node_start && blank(at(i + 1)) => {
                node_start = true;
                node_column = column + 1;
            }
            b':' if blank(at(i + 1))
                || (depth > 0 && matches!(at(i + 1), Some(b',' | b'[' | b']' | b'{' | b'}'))) =>
            {
                node_start = true;
            }
            b'|' | b'>' if node_start && depth == 0 => {
                // A block scalar: its header ends the line, its lines are indented past the
                // node that holds it.
                block_scalar = Some(node_column.saturating_sub(1));
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
                continue;
            }
            b'!' | b'&' if node_start => {
                // A tag or an anchor: the node starts after it.
                while i < bytes.len()
                    && !blank(at(i))
                    && !(depth > 0 && matches!(bytes[i], b',' | b'[' | b']' | b'{' | b'}'))
                {
                    column += usize::from(bytes[i] & 0xC0 != 0x80);
                    i += 1;
                }
                after_blank = false;
                continue;
            }
            _ => {
                if node_start && depth == 0 {
                    // A plain scalar that may be a key: a block scalar after its `:` belongs to
                    // the mapping at this column.
                    node_column = column;
                }
                node_start = false;
            }
        }
        after_blank = false;
        column += width;
        i += 1;
    }
    None
}

fn position(mark: Marker) -> Position {
    // Files are at most MAX_DOCUMENT_BYTES, so lines and columns fit.
    (mark.line() as u32, mark.col() as u32 + 1)
}

enum Frame {
    Map { node: u32, key: Option<u32> },
    Seq { node: u32, index: u32 },
}

struct Walker {
    locator: Locator,
    frames: Vec<Frame>,
}

impl Walker {
    /// The node of the value about to be read in the innermost container (created on first
    /// use); a complex key (a mapping or sequence as a key) stands for its container.
    fn child(&mut self) -> u32 {
        let (parent, step) = match self.frames.last() {
            Some(&Frame::Map {
                node,
                key: Some(key),
            }) => (node, Step::Key(key)),
            Some(&Frame::Seq { node, index }) => (node, Step::Index(index)),
            Some(&Frame::Map { node, key: None }) => return node,
            None => return 0,
        };
        let next = self.locator.nodes.len() as u32;
        let child = *self.locator.children.entry((parent, step)).or_insert(next);
        if child == next {
            self.locator.nodes.push(Node::default());
        }
        child
    }

    fn finish_value(&mut self) {
        match self.frames.last_mut() {
            Some(Frame::Map { key, .. }) => *key = None,
            Some(Frame::Seq { index, .. }) => *index += 1,
            None => {}
        }
    }

    /// The field the nesting-too-deep message names: the top-level field being read, which
    /// says what is wrong without a path of `MAX_DEPTH` steps.
    fn top_level_field(&self) -> FieldPath {
        let names: BTreeMap<u32, &String> = self
            .locator
            .names
            .iter()
            .map(|(name, &id)| (id, name))
            .collect();
        let first = match self.frames.first() {
            Some(Frame::Map { key: Some(key), .. }) => {
                names.get(key).map(|n| PathSeg::Key((*n).clone()))
            }
            Some(Frame::Seq { index, .. }) => Some(PathSeg::Index(*index as usize)),
            _ => None,
        };
        FieldPath(first.into_iter().collect())
    }

    fn open(&mut self, map: bool, mark: Marker) -> Result<(), FieldPath> {
        if self.frames.len() >= MAX_DEPTH {
            return Err(self.top_level_field());
        }
        let node = self.child();
        self.locator.nodes[node as usize].value = position(mark);
        self.frames.push(if map {
            Frame::Map { node, key: None }
        } else {
            Frame::Seq { node, index: 0 }
        });
        Ok(())
    }

    fn close(&mut self) {
        self.frames.pop();
        self.finish_value();
    }

    /// Takes one event; `Err` with the top-level field when it opens a container past
    /// [`MAX_DEPTH`].
    fn on_event(&mut self, event: Event, mark: Marker) -> Result<(), FieldPath> {
        match event {
            Event::Scalar(text, ..) => {
                if let Some(Frame::Map {
                    key: key @ None, ..
                }) = self.frames.last_mut()
                {
                    let next = self.locator.names.len() as u32;
                    let name = *self.locator.names.entry(text).or_insert(next);
                    *key = Some(name);
                    let node = self.child();
                    self.locator.nodes[node as usize].key = position(mark);
                } else {
                    let node = self.child();
                    self.locator.nodes[node as usize].value = position(mark);
                    self.finish_value();
                }
            }
            Event::Alias(_) => {
                let node = self.child();
                self.locator.nodes[node as usize].value = position(mark);
                self.finish_value();
            }
            Event::MappingStart(..) => self.open(true, mark)?,
            Event::SequenceStart(..) => self.open(false, mark)?,
            Event::MappingEnd | Event::SequenceEnd => self.close(),
            _ => {}
        }
        Ok(())
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
        let locator = Locator::new("s.yaml", "name:\tx\ncolour: red\n").unwrap();
        let at = FieldPath::root().key("colour");
        assert_eq!(locator.origin(&at), Origin::Line { line: 2, column: 9 });
        assert_eq!(locator.unreadable("s.yaml"), None);

        let locator =
            Locator::new("s.yaml", "name: x\ndescription: |#c\n  t\ncolour: red\n").unwrap();
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
        let locator = Locator::new("scenario.yaml", text).unwrap();
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

    #[test]
    fn flow_brackets_are_counted_outside_text() {
        let deep = "[".repeat(MAX_DEPTH + 1);
        let found = deep_flow_bracket(&deep).map(|b| (b.offset, b.line, b.column));
        assert_eq!(found, Some((MAX_DEPTH, 1, MAX_DEPTH + 1)));
        assert_eq!(deep_flow_bracket(&"[".repeat(MAX_DEPTH)), None);
        for text in [
            format!("# {deep}"),
            format!("a: '{deep}'"),
            format!("a: 'it''s {deep}'"),
            format!("a: \"\\\" {deep}\""),
            format!("a: x{deep}"),
            format!("a: |\n  {deep}\n  {deep}\nb: 1"),
            format!("- k: >-\n    {deep}\n"),
            format!("a: &anchor x{deep}"),
        ] {
            assert_eq!(deep_flow_bracket(&text), None, "{text}");
        }
        // Where a block scalar ends, brackets count again; so do they after a tag or anchor.
        for text in [
            format!("- k: |\n    x\n  other: {deep}"),
            format!("a: !!seq {deep}"),
            format!("a: &anchor {deep}"),
            format!("a: [1, {{b: 'x'}}, {deep}"),
        ] {
            assert!(deep_flow_bracket(&text).is_some(), "{text}");
        }
    }

    #[test]
    fn nesting_is_refused_where_it_passes_the_limit() {
        let text = format!("a:\n  b: {}", "[".repeat(100));
        let err = Locator::new("f.yaml", &text).unwrap_err();
        // Two block levels, then the 31st bracket is the 33rd level.
        assert_eq!(
            err.to_string(),
            "f.yaml:2:36: a: nested deeper than 32 levels of mappings and sequences"
        );
        let text = "- ".repeat(MAX_DEPTH);
        assert!(Locator::new("f.yaml", &text).is_ok());
        let err = Locator::new("f.yaml", &"x".repeat(MAX_DOCUMENT_BYTES + 1)).unwrap_err();
        assert!(err
            .to_string()
            .starts_with("f.yaml: the file is larger than 4 MiB"));
    }
}
