//! House rules checked mechanically: every Rust file opens with a `//!` line, and the
//! architecture invariants of ARCHITECTURE.md hold: the module dependency table, who may derive
//! or implement serde traits and name serde_yaml, candle, petgraph or indicatif, who may do
//! I/O, and that `schedule` stays pure.
//!
//! The checker reads the source as text: comments, strings and character literals are blanked
//! first (keeping line breaks, so every finding names its file and line), `use` groups are
//! expanded into whole paths, and `super::` is resolved against the file's module and the
//! inline modules around it. Code under `#[cfg(test)]` is left out of the I/O and purity rules
//! only: tests may print and read files, but not import across the table.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;

use crate::support::root;

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn every_rust_file_starts_with_a_module_doc() {
    let mut files = Vec::new();
    for dir in ["src", "tests"] {
        rust_files(&root().join(dir), &mut files);
    }
    assert!(files.len() > 20);
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(
            text.starts_with("//! "),
            "{} starts with a //! line",
            file.display()
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The checker.

/// One source file: its path relative to the repository root (`src/sim/engine.rs`) and text.
struct Source {
    path: String,
    text: String,
}

impl Source {
    fn new(path: &str, text: &str) -> Self {
        Source {
            path: path.to_string(),
            text: text.to_string(),
        }
    }

    /// The module path of the file: `src/sim/engine.rs` is `[sim, engine]`, `src/sim/mod.rs`
    /// is `[sim]`, `src/lib.rs` is `[]`; `src/main.rs` counts as `cli` (the binary is the
    /// command line's).
    fn module(&self) -> Vec<String> {
        let rel = self.path.strip_prefix("src/").unwrap_or(&self.path);
        let rel = rel.strip_suffix(".rs").unwrap_or(rel);
        if rel == "main" {
            return vec!["cli".into()];
        }
        let mut parts: Vec<String> = rel.split('/').map(str::to_string).collect();
        if matches!(parts.last().map(String::as_str), Some("mod" | "lib")) {
            parts.pop();
        }
        parts
    }

    /// The top-level module the file belongs to (`lib` for `src/lib.rs`).
    fn top(&self) -> String {
        self.module()
            .first()
            .cloned()
            .unwrap_or_else(|| "lib".into())
    }

    /// Whether the file is `path` or inside the folder `path/`.
    fn is(&self, path: &str) -> bool {
        self.path == format!("src/{path}.rs")
            || self.path == format!("src/{path}/mod.rs")
            || self.path.starts_with(&format!("src/{path}/"))
    }
}

/// A broken rule, with where.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Violation {
    file: String,
    line: usize,
    message: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.file, self.line, self.message)
    }
}

fn is_ident_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// `text` with comments, string literals (plain, byte, C and raw) and character literals
/// replaced by spaces, line breaks kept. Lifetimes and labels (`'a`) are kept.
fn strip(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let blank = |out: &mut String, c: char| out.push(if c == '\n' { '\n' } else { ' ' });
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        let prev_ident = i > 0 && is_ident_char(chars[i - 1]);
        // A literal's `b`/`c`/`br` prefix is not an identifier before it.
        let prefixed =
            prev_ident && "bc".contains(chars[i - 1]) && (i == 1 || !is_ident_char(chars[i - 2]));
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                out.push(' ');
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    out.push_str("  ");
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    out.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    blank(&mut out, chars[i]);
                    i += 1;
                }
            }
        } else if c == 'r' && (!prev_ident || prefixed) && matches!(next, Some('"' | '#')) && {
            let hashes = chars[i + 1..].iter().take_while(|&&h| h == '#').count();
            chars.get(i + 1 + hashes) == Some(&'"')
        } {
            // A raw string: r"...", r#"..."#, br"...".
            let hashes = chars[i + 1..].iter().take_while(|&&h| h == '#').count();
            let closing: String = std::iter::once('"')
                .chain(std::iter::repeat_n('#', hashes))
                .collect();
            out.push('r');
            out.push_str(&" ".repeat(hashes));
            out.push('"');
            i += 2 + hashes;
            while i < chars.len() {
                if chars[i..].iter().take(closing.len()).collect::<String>() == closing {
                    out.push('"');
                    out.push_str(&" ".repeat(hashes));
                    i += closing.len();
                    break;
                }
                blank(&mut out, chars[i]);
                i += 1;
            }
        } else if c == '"' {
            out.push('"');
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                if chars[i] == '\\' {
                    out.push(' ');
                    i += 1;
                }
                if i < chars.len() {
                    blank(&mut out, chars[i]);
                    i += 1;
                }
            }
            out.push('"');
            i += 1;
        } else if c == '\'' && (!prev_ident || prefixed) {
            // A character literal ('x', '\n', '\u{1F600}', '\'') or a lifetime or label ('a).
            let end = if next == Some('\\') {
                chars
                    .get(i + 3..)
                    .and_then(|rest| rest.iter().position(|&q| q == '\''))
                    .map(|p| i + 4 + p)
            } else if chars.get(i + 2) == Some(&'\'') {
                Some(i + 3)
            } else {
                None
            };
            match end {
                Some(end) => {
                    out.push('\'');
                    out.push_str(&" ".repeat(end - i - 2));
                    out.push('\'');
                    i = end;
                }
                None => {
                    out.push(c);
                    i += 1;
                }
            }
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

/// A token of stripped source: an identifier (`$crate` and `r#name` included) or punctuation
/// (`::` and `!=` as one token), with its line.
#[derive(Debug, Clone, PartialEq)]
struct Token {
    text: String,
    line: usize,
}

fn tokens(code: &str) -> Vec<Token> {
    let chars: Vec<char> = code.chars().collect();
    let mut out = Vec::new();
    let (mut i, mut line) = (0, 1);
    while i < chars.len() {
        let c = chars[i];
        if c == '\n' {
            line += 1;
            i += 1;
        } else if c.is_whitespace() {
            i += 1;
        } else if is_ident_char(c)
            || (c == '$' && chars.get(i + 1).is_some_and(|&n| is_ident_char(n)))
        {
            let start = if c == '$' { i + 1 } else { i };
            let mut end = start;
            while end < chars.len() && is_ident_char(chars[end]) {
                end += 1;
            }
            let mut text: String = chars[start..end].iter().collect();
            if text == "r" && chars.get(end) == Some(&'#') {
                let mut raw_end = end + 1;
                while raw_end < chars.len() && is_ident_char(chars[raw_end]) {
                    raw_end += 1;
                }
                text = chars[end + 1..raw_end].iter().collect();
                end = raw_end;
            }
            out.push(Token { text, line });
            i = end;
        } else {
            let pair: String = chars[i..(i + 2).min(chars.len())].iter().collect();
            let text = if pair == "::" || pair == "!=" {
                i += 2;
                pair
            } else {
                i += 1;
                c.to_string()
            };
            out.push(Token { text, line });
        }
    }
    out
}

/// `code` (stripped) with every item under `#[cfg(test)]` or `#[cfg(all(test, ...))]` blanked,
/// line breaks kept; a file whose first attribute is `#![cfg(test)]` is blanked whole.
fn without_tests(code: &str) -> String {
    let chars: Vec<char> = code.chars().collect();
    let mut out: Vec<char> = chars.clone();
    let compact: String = chars.iter().filter(|c| !c.is_whitespace()).collect();
    if compact.starts_with("#![cfg(test)]") {
        return chars
            .iter()
            .map(|&c| if c == '\n' { '\n' } else { ' ' })
            .collect();
    }
    let mut i = 0;
    while i < chars.len() {
        if chars[i] != '#' {
            i += 1;
            continue;
        }
        // Read the attribute `#[...]` without whitespace.
        let Some(open) = (i + 1..chars.len()).find(|&j| !chars[j].is_whitespace()) else {
            break;
        };
        if chars[open] != '[' {
            i += 1;
            continue;
        }
        let mut depth = 0;
        let mut close = open;
        for (j, &ch) in chars.iter().enumerate().skip(open) {
            match ch {
                '[' => depth += 1,
                ']' => {
                    depth -= 1;
                    if depth == 0 {
                        close = j;
                        break;
                    }
                }
                _ => {}
            }
        }
        let attribute: String = chars[open..=close]
            .iter()
            .filter(|c| !c.is_whitespace())
            .collect();
        let test_only = attribute == "[cfg(test)]"
            || (attribute.starts_with("[cfg(all(")
                && attribute["[cfg(all(".len()..]
                    .split([',', ')'])
                    .any(|part| part == "test"));
        if !test_only {
            i = close + 1;
            continue;
        }
        // The item ends at the first `;` outside brackets, or with the block it opens.
        let (mut depth, mut end) = (0i32, chars.len());
        let mut j = close + 1;
        while j < chars.len() {
            match chars[j] {
                '(' | '[' => depth += 1,
                ')' | ']' => depth -= 1,
                ';' if depth == 0 => {
                    end = j + 1;
                    break;
                }
                '{' if depth == 0 => {
                    let mut braces = 0;
                    for (k, &ch) in chars.iter().enumerate().skip(j) {
                        match ch {
                            '{' => braces += 1,
                            '}' => {
                                braces -= 1;
                                if braces == 0 {
                                    end = k + 1;
                                    break;
                                }
                            }
                            _ => {}
                        }
                    }
                    break;
                }
                _ => {}
            }
            j += 1;
        }
        for c in &mut out[i..end] {
            if *c != '\n' {
                *c = ' ';
            }
        }
        i = end;
    }
    out.into_iter().collect()
}

/// A path as written, `use` groups expanded: `use crate::{a, b::{c, d}}` is `crate::a`,
/// `crate::b::c` and `crate::b::d`. `module` is the module path where it was written
/// (the file's, plus the inline `mod name { ... }` around it).
#[derive(Debug, Clone, PartialEq)]
struct PathRef {
    segments: Vec<String>,
    line: usize,
    module: Vec<String>,
}

/// Every path in `code` (stripped), starting from each identifier that does not follow `::`
/// or `.`.
fn paths(source: &Source, code: &str) -> Vec<PathRef> {
    let toks = tokens(code);
    let mut out = Vec::new();
    let mut module = source.module();
    let mut inline: Vec<usize> = Vec::new(); // brace depth of each inline module's body
    let mut depth = 0usize;
    let mut i = 0;
    while i < toks.len() {
        let t = &toks[i];
        match t.text.as_str() {
            "{" => {
                depth += 1;
                i += 1;
                continue;
            }
            "}" => {
                if inline.last() == Some(&depth) {
                    inline.pop();
                    module.pop();
                }
                depth = depth.saturating_sub(1);
                i += 1;
                continue;
            }
            "mod" if toks.get(i + 2).is_some_and(|b| b.text == "{") => {
                module.push(toks[i + 1].text.clone());
                inline.push(depth + 1);
                i += 2;
                continue;
            }
            _ => {}
        }
        let starts = t.text.starts_with(is_ident_char)
            && !(i > 0 && (toks[i - 1].text == "::" || toks[i - 1].text == "."));
        if !starts {
            i += 1;
            continue;
        }
        let mut found = Vec::new();
        i = path_at(&toks, i, Vec::new(), &mut found);
        for (segments, line) in found {
            out.push(PathRef {
                segments,
                line,
                module: module.clone(),
            });
        }
    }
    out
}

/// Reads the path starting at token `i` after `prefix`, expanding groups into `out`; returns the
/// index after it.
fn path_at(
    toks: &[Token],
    mut i: usize,
    mut prefix: Vec<String>,
    out: &mut Vec<(Vec<String>, usize)>,
) -> usize {
    let line = toks[i].line;
    prefix.push(toks[i].text.clone());
    i += 1;
    while toks.get(i).is_some_and(|t| t.text == "::") {
        match toks.get(i + 1).map(|t| t.text.as_str()) {
            Some("{") => {
                i += 2;
                while i < toks.len() && toks[i].text != "}" {
                    match toks[i].text.as_str() {
                        "," => i += 1,
                        "*" => {
                            out.push(([prefix.clone(), vec!["*".into()]].concat(), toks[i].line));
                            i += 1;
                        }
                        "self" => {
                            out.push((prefix.clone(), toks[i].line));
                            i += 1;
                        }
                        "as" => i += 2,
                        t if t.starts_with(is_ident_char) => {
                            i = path_at(toks, i, prefix.clone(), out);
                        }
                        _ => i += 1,
                    }
                }
                return i + 1;
            }
            Some("*") => {
                prefix.push("*".into());
                i += 2;
                break;
            }
            Some(t) if t.starts_with(is_ident_char) => {
                prefix.push(t.to_string());
                i += 2;
            }
            _ => break,
        }
    }
    out.push((prefix, line));
    i
}

/// The top-level crate module a path names, if it names one: `crate::x::...`, or `super::`
/// chains that climb to the crate root. `self::` and relative paths stay where they are.
fn crate_module(path: &PathRef) -> Option<String> {
    let segs = &path.segments;
    let ups = segs.iter().take_while(|s| *s == "super").count();
    let (base, rest): (Vec<String>, &[String]) = match segs.first().map(String::as_str) {
        Some("crate") => (Vec::new(), &segs[1..]),
        Some("super") if ups <= path.module.len() => (
            path.module[..path.module.len() - ups].to_vec(),
            &segs[ups..],
        ),
        _ => return None,
    };
    match base.first() {
        Some(top) => Some(top.clone()),
        None => rest
            .first()
            .filter(|s| s.starts_with(is_ident_char))
            .cloned(),
    }
}

/// The top-level modules `source` names, with the line of each mention.
fn imports(source: &Source) -> Vec<(String, usize)> {
    let mut code = strip(&source.text);
    if source.path == "src/main.rs" {
        // The binary reaches the library by its name.
        code = code.replace("pipegnn::", "crate::");
    }
    paths(source, &code)
        .iter()
        .filter_map(|p| crate_module(p).map(|m| (m, p.line)))
        .filter(|(m, _)| *m != source.top())
        .collect()
}

/// The module dependency table of ARCHITECTURE.md: the rows of the table under
/// "### Module dependencies", `| `module` | `a`, `b` |` (`-` for none).
fn dependency_table(architecture: &str) -> BTreeMap<String, BTreeSet<String>> {
    let section = architecture
        .split("### Module dependencies")
        .nth(1)
        .expect("ARCHITECTURE.md has a `### Module dependencies` section");
    let mut table = BTreeMap::new();
    for line in section.lines().skip_while(|l| !l.starts_with('|')) {
        if !line.starts_with('|') {
            break;
        }
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let (Some(module), Some(allowed)) = (cells.get(1), cells.get(2)) else {
            continue;
        };
        if !module.starts_with('`') {
            continue; // the header and its rule
        }
        let names = |cell: &str| -> BTreeSet<String> {
            cell.split(',')
                .map(|n| n.trim().trim_matches('`').to_string())
                .filter(|n| !n.is_empty() && n != "-")
                .collect()
        };
        table.insert(module.trim_matches('`').to_string(), names(allowed));
    }
    table
}

/// Each edge of `graph` not in `allowed`, as a violation at the first line that makes it.
fn check_dependencies(
    sources: &[Source],
    allowed: &BTreeMap<String, BTreeSet<String>>,
) -> Vec<Violation> {
    let mut out = Vec::new();
    for source in sources {
        let top = source.top();
        let mut seen = BTreeSet::new();
        for (module, line) in imports(source) {
            let ok = allowed.get(&top).is_some_and(|a| a.contains(&module));
            if !ok && seen.insert(module.clone()) {
                out.push(Violation {
                    file: source.path.clone(),
                    line,
                    message: format!(
                        "`{top}` imports `{module}`, which ARCHITECTURE.md's module dependency table \
                         does not allow"
                    ),
                });
            }
        }
    }
    out
}

/// A cycle in `graph`, as the modules along it (the first repeated at the end), if there is one.
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(node.to_string(), 1);
        stack.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            match state.get(next.as_str()) {
                Some(1) => {
                    let from = stack.iter().position(|n| n == next).expect("on the stack");
                    let mut cycle = stack[from..].to_vec();
                    cycle.push(next.clone());
                    return Some(cycle);
                }
                Some(_) => {}
                None => {
                    if let Some(cycle) = visit(next, graph, state, stack) {
                        return Some(cycle);
                    }
                }
            }
        }
        stack.pop();
        state.insert(node.to_string(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for node in graph.keys() {
        if !state.contains_key(node) {
            if let Some(cycle) = visit(node, graph, &mut state, &mut Vec::new()) {
                return Some(cycle);
            }
        }
    }
    None
}

/// The dependency graph the code has: top-level module -> the modules it names.
fn actual_graph(sources: &[Source]) -> BTreeMap<String, BTreeSet<String>> {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for source in sources {
        let entry = graph.entry(source.top()).or_default();
        entry.extend(imports(source).into_iter().map(|(m, _)| m));
    }
    graph
}

/// Where `source` derives or implements `trait_name` (`Serialize`, `Deserialize`): in
/// `#[derive(...)]` (also inside `cfg_attr`) or an `impl ... Trait for ...` header. A bound such
/// as `impl serde::Serialize` in an argument is neither.
fn derives(source: &Source, trait_name: &str) -> Vec<usize> {
    let toks = tokens(&strip(&source.text));
    let mut lines = Vec::new();
    for (i, t) in toks.iter().enumerate() {
        if t.text == "derive" && toks.get(i + 1).is_some_and(|p| p.text == "(") {
            let mut depth = 0;
            for u in &toks[i + 1..] {
                match u.text.as_str() {
                    "(" => depth += 1,
                    ")" => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    name if name == trait_name => lines.push(u.line),
                    _ => {}
                }
            }
        }
        if t.text == "impl" {
            let header: Vec<&Token> = toks[i + 1..]
                .iter()
                .take_while(|u| u.text != "{" && u.text != ";")
                .collect();
            let mut angle = 0i32;
            let mut named = None;
            for u in &header {
                match u.text.as_str() {
                    "<" => angle += 1,
                    ">" => angle -= 1,
                    "for" if angle == 0 => {
                        if let Some(line) = named {
                            lines.push(line);
                        }
                        break;
                    }
                    name if angle == 0 && name == trait_name => named = Some(u.line),
                    _ => {}
                }
            }
        }
    }
    lines
}

/// Paths in `source` whose first segment is `root` (an external crate), with their lines.
fn names_crate(source: &Source, root: &str) -> Vec<usize> {
    paths(source, &strip(&source.text))
        .into_iter()
        .filter(|p| p.segments.first().is_some_and(|s| s == root))
        .map(|p| p.line)
        .collect()
}

/// Rules about who may use serde, serde_yaml, candle, petgraph and indicatif.
fn check_crate_rules(sources: &[Source]) -> Vec<Violation> {
    let mut out = Vec::new();
    let mut flag = |source: &Source, lines: Vec<usize>, message: &str| {
        for line in lines {
            out.push(Violation {
                file: source.path.clone(),
                line,
                message: message.to_string(),
            });
        }
    };
    for s in sources {
        let yaml_side = s.is("scenario/raw") || s.is("schedule/file");
        if !s.is("report/json") {
            flag(
                s,
                derives(s, "Serialize"),
                "only `report::json` derives or implements `Serialize`",
            );
        }
        if !yaml_side {
            flag(
                s,
                derives(s, "Deserialize"),
                "only `scenario::raw` and `schedule::file` derive or implement `Deserialize`",
            );
            flag(
                s,
                names_crate(s, "serde_yaml"),
                "only `scenario::raw` and `schedule::file` use serde_yaml",
            );
        }
        if !s.is("exec") {
            for candle in ["candle_core", "candle_nn", "candle"] {
                flag(s, names_crate(s, candle), "only `exec` imports candle");
            }
        }
        if !s.is("graph") {
            flag(s, names_crate(s, "petgraph"), "only `graph` names petgraph");
        }
        if s.top() != "cli" {
            flag(
                s,
                names_crate(s, "indicatif"),
                "only `cli` draws progress (indicatif)",
            );
        }
    }
    out
}

/// Where `source`'s non-test code does I/O: the filesystem (`std::fs`), the standard streams
/// (`io::stdout`/`stderr`/`stdin`, `print!`, `println!`, `eprint!`, `eprintln!`, `dbg!`), the
/// process's exit (`process::exit`/`abort`, `ExitCode`).
fn io_uses(source: &Source) -> Vec<(usize, String)> {
    let code = without_tests(&strip(&source.text));
    let mut found = Vec::new();
    let toks = tokens(&code);
    for (i, t) in toks.iter().enumerate() {
        let is_macro = toks.get(i + 1).is_some_and(|n| n.text == "!")
            && !(i > 0 && toks[i - 1].text == "macro_rules");
        if is_macro && ["print", "println", "eprint", "eprintln", "dbg"].contains(&t.text.as_str())
        {
            found.push((t.line, format!("{}!", t.text)));
        }
        if t.text == "ExitCode" {
            found.push((t.line, "ExitCode".into()));
        }
    }
    for p in paths(source, &code) {
        let s = &p.segments;
        for (k, seg) in s.iter().enumerate() {
            let next = s.get(k + 1).map(String::as_str);
            let hit = match seg.as_str() {
                "fs" => k == 0 || s[k - 1] == "std",
                "io" => matches!(next, Some("stdout" | "stderr" | "stdin")),
                "process" => matches!(next, Some("exit" | "abort")),
                _ => false,
            };
            if hit {
                found.push((p.line, s.join("::")));
                break;
            }
        }
    }
    found.sort();
    found.dedup();
    found
}

/// Only `cli` (and the binary, which is the command line's) does I/O; test code may.
fn check_io(sources: &[Source]) -> Vec<Violation> {
    sources
        .iter()
        .filter(|s| s.top() != "cli")
        .flat_map(|s| {
            io_uses(s).into_iter().map(|(line, what)| Violation {
                file: s.path.clone(),
                line,
                message: format!(
                    "`{what}`: only `cli` reads and writes files, stdout and stderr and ends the \
                     process"
                ),
            })
        })
        .collect()
}

/// `schedule` and `testing` are pure: no clocks, threads, environment, files, streams or
/// processes, no randomness of their own (`testing`'s is proptest's, seeded by its runner).
fn check_pure(sources: &[Source]) -> Vec<Violation> {
    let mut out = Vec::new();
    for s in sources
        .iter()
        .filter(|s| s.is("schedule") || s.is("testing"))
    {
        for p in paths(s, &without_tests(&strip(&s.text))) {
            let segs: Vec<&str> = p.segments.iter().map(String::as_str).collect();
            let impure = match segs.as_slice() {
                ["std", "time" | "thread" | "env" | "fs" | "io" | "net" | "process", ..] => true,
                ["crate", "graph", "rng", ..] | ["rand" | "getrandom", ..] => true,
                [one, ..] => ["Instant", "SystemTime"].contains(one),
                [] => false,
            };
            if impure {
                out.push(Violation {
                    file: s.path.clone(),
                    line: p.line,
                    message: format!(
                        "`{}` is pure, but this names `{}`",
                        s.top(),
                        segs.join("::")
                    ),
                });
            }
        }
    }
    out
}

fn load_sources() -> Vec<Source> {
    let root = root();
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    files.sort();
    files
        .iter()
        .map(|f| Source {
            path: f
                .strip_prefix(&root)
                .unwrap()
                .to_string_lossy()
                .replace('\\', "/"),
            text: std::fs::read_to_string(f).unwrap(),
        })
        .collect()
}

fn assert_none(violations: Vec<Violation>) {
    let lines: Vec<String> = violations.iter().map(Violation::to_string).collect();
    assert!(lines.is_empty(), "\n{}", lines.join("\n"));
}

// ---------------------------------------------------------------------------------------------
// The rules, on the code.

/// The table ARCHITECTURE.md states, checked against itself: it names every top-level module,
/// has no cycle, and keeps the invariants that are not a matter of taste.
#[test]
fn the_dependency_table_is_complete_acyclic_and_keeps_the_invariants() {
    let text = std::fs::read_to_string(root().join("ARCHITECTURE.md")).unwrap();
    let table = dependency_table(&text);
    let modules: BTreeSet<String> = load_sources()
        .iter()
        .map(Source::top)
        .filter(|m| m != "lib")
        .collect();
    let rows: BTreeSet<String> = table.keys().cloned().collect();
    assert_eq!(
        rows, modules,
        "ARCHITECTURE.md's table has a row per top-level module"
    );
    for (module, allowed) in &table {
        for name in allowed {
            assert!(
                modules.contains(name),
                "`{module}` may import `{name}`, which is no module"
            );
        }
    }
    assert_eq!(find_cycle(&table), None, "the table has a cycle");
    let may = |a: &str, b: &str| table[a].contains(b);
    let pure = ["diag", "graph"];
    for name in &modules {
        assert!(!may(name, "cli"), "nothing imports `cli`, but `{name}` may");
        if name != "schedule" && !pure.contains(&name.as_str()) {
            assert!(
                !may("schedule", name),
                "`schedule` is pure, but may import `{name}`"
            );
        }
    }
    assert!(
        !may("sim", "exec") && !may("exec", "sim"),
        "sim and exec never import each other"
    );
    for other in ["sim", "exec", "plan", "cli"] {
        assert!(!may("report", other), "reports never import `{other}`");
    }
}

#[test]
fn modules_import_only_what_the_dependency_table_allows() {
    let text = std::fs::read_to_string(root().join("ARCHITECTURE.md")).unwrap();
    let sources = load_sources();
    let table = dependency_table(&text);
    assert_none(check_dependencies(&sources, &table));
    let graph = actual_graph(&sources);
    assert_eq!(find_cycle(&graph), None);
    // The table states what the code does, so a dependency that goes leaves it too.
    for (module, allowed) in &table {
        for name in allowed {
            assert!(
                graph.get(module).is_some_and(|used| used.contains(name)),
                "ARCHITECTURE.md's table says `{module}` imports `{name}`, but it no longer does: \
                 remove it from the row"
            );
        }
    }
}

#[test]
fn only_the_boundary_modules_use_serde_yaml_candle_and_petgraph() {
    assert_none(check_crate_rules(&load_sources()));
}

#[test]
fn only_cli_does_io() {
    assert_none(check_io(&load_sources()));
}

#[test]
fn schedule_is_pure() {
    assert_none(check_pure(&load_sources()));
}

// ---------------------------------------------------------------------------------------------
// The checker, on sources that break each rule.

fn table(rows: &[(&str, &[&str])]) -> BTreeMap<String, BTreeSet<String>> {
    rows.iter()
        .map(|(m, a)| (m.to_string(), a.iter().map(|s| s.to_string()).collect()))
        .collect()
}

fn messages(violations: &[Violation]) -> Vec<String> {
    violations.iter().map(Violation::to_string).collect()
}

#[test]
fn comments_strings_and_chars_are_not_code() {
    let text = r##"let a = "crate::x // no"; // crate::y
/* crate::z /* nested */ */ let b = 'c';
let r = r#"crate::w "# ; fn f<'a>(x: &'a str) -> char { '\'' }
use crate::v;"##;
    let stripped = strip(text);
    assert_eq!(stripped.lines().count(), text.lines().count());
    assert!(!stripped.contains("crate::x") && !stripped.contains("crate::y"));
    assert!(!stripped.contains("crate::z") && !stripped.contains("crate::w"));
    assert!(stripped.contains("<'a>(x: &'a str)"), "{stripped}");
    assert!(stripped.contains("use crate::v;"), "{stripped}");
    let source = Source::new("src/sim/engine.rs", text);
    assert_eq!(imports(&source), vec![("v".to_string(), 4)]);
}

#[test]
fn use_groups_and_super_chains_are_resolved() {
    let text = "use crate::{trace::Trace, exec::{runner, data}};
use super::queue::Queue;
fn f() { super::super::report::compute(); }
mod tests {
    use super::super::cost;
    use super::*;
}
";
    let source = Source::new("src/sim/engine.rs", text);
    let found: BTreeSet<(String, usize)> = imports(&source).into_iter().collect();
    let expected: BTreeSet<(String, usize)> = [("trace", 1), ("exec", 1), ("report", 3)]
        .into_iter()
        .map(|(m, l)| (m.to_string(), l))
        .collect();
    // `super::super::cost` in `sim::engine::tests` is `sim::cost`, inside `sim`.
    assert_eq!(found, expected);
    let allowed = table(&[("sim", &["trace", "report"])]);
    let v = check_dependencies(&[source], &allowed);
    assert_eq!(
        messages(&v),
        vec![
            "src/sim/engine.rs:1: `sim` imports `exec`, which ARCHITECTURE.md's module \
             dependency table does not allow"
        ]
    );
}

#[test]
fn the_table_is_read_from_markdown_and_cycles_are_found() {
    let md = "intro

### Module dependencies

words

| module | imports |
|---|---|
| `a` | - |
| `b` | `a` |
| `c` | `a`, `b` |

after | not a row |
";
    let t = dependency_table(md);
    assert_eq!(t, table(&[("a", &[]), ("b", &["a"]), ("c", &["a", "b"])]));
    assert_eq!(find_cycle(&t), None);
    let cyclic = table(&[("a", &["b"]), ("b", &["c"]), ("c", &["a"])]);
    assert_eq!(find_cycle(&cyclic).unwrap().len(), 4);
}

#[test]
fn serde_derives_and_impls_are_found_but_bounds_are_not() {
    let text = "#[derive(Debug, serde::Serialize)]
struct A;
impl<'de> Deserialize<'de> for B {}
fn f(x: &impl serde::Serialize) {}
#[cfg_attr(x, derive(Serialize))]
struct C;
impl Serialize for D {}
";
    assert_eq!(
        derives(&Source::new("src/cli/run.rs", text), "Serialize"),
        vec![1, 5, 7]
    );
    assert_eq!(
        derives(&Source::new("src/cli/run.rs", text), "Deserialize"),
        vec![3]
    );
    let sources = [
        Source::new("src/cli/run.rs", text),
        Source::new("src/report/json.rs", "#[derive(Serialize)] struct E;"),
        Source::new(
            "src/sim/engine.rs",
            "use candle_core::Tensor;
fn g() { petgraph::graph::Graph::new(); }
let v = serde_yaml::from_str(t);",
        ),
        Source::new("src/exec/stage.rs", "use candle_core::Tensor;"),
        Source::new("src/exec/runner.rs", "\n\nuse indicatif::ProgressBar;"),
        Source::new("src/cli/progress.rs", "use indicatif::ProgressBar;"),
    ];
    let v = messages(&check_crate_rules(&sources));
    assert_eq!(v.len(), 8, "{v:#?}");
    assert!(v.contains(&"src/exec/runner.rs:3: only `cli` draws progress (indicatif)".to_string()));
    assert!(v.contains(
        &"src/cli/run.rs:1: only `report::json` derives or implements `Serialize`".to_string()
    ));
    assert!(v.contains(
        &"src/cli/run.rs:3: only `scenario::raw` and `schedule::file` derive or implement \
          `Deserialize`"
            .to_string()
    ));
    assert!(v.contains(&"src/sim/engine.rs:1: only `exec` imports candle".to_string()));
    assert!(v.contains(&"src/sim/engine.rs:2: only `graph` names petgraph".to_string()));
    assert!(v.contains(
        &"src/sim/engine.rs:3: only `scenario::raw` and `schedule::file` use serde_yaml"
            .to_string()
    ));
}

#[test]
fn io_outside_cli_is_found_except_in_tests() {
    let text = r#"use std::{fs, io::Write};
fn f() {
    eprintln!("x");
    std::io::stderr().flush();
    let s = "println!";
}
#[cfg(test)]
mod tests {
    fn g() { println!("fine"); std::fs::read("x"); }
}
#[cfg(all(test, feature = "cuda"))]
fn h() { print!("fine"); }
fn k() { std::process::exit(1) }
"#;
    let plan = Source::new("src/plan/mod.rs", text);
    assert_eq!(
        io_uses(&plan).iter().map(|(l, _)| *l).collect::<Vec<_>>(),
        vec![1, 3, 4, 13]
    );
    let v = messages(&check_io(&[
        plan,
        Source::new("src/cli/run.rs", text),
        Source::new("src/main.rs", text),
    ]));
    assert_eq!(v.len(), 4, "cli and main may: {v:#?}");
    assert!(v[0].starts_with("src/plan/mod.rs:1: `std::fs`"), "{}", v[0]);
}

#[test]
fn impurity_in_schedule_is_found() {
    let text = "use std::time::Instant;
use crate::graph::{find_cycle, rng::Rng};
fn f() { let t = Instant::now(); }
";
    let v = messages(&check_pure(&[
        Source::new("src/schedule/gpipe.rs", text),
        Source::new("src/sim/engine.rs", text),
        Source::new(
            "src/testing/run.rs",
            "fn f() { std::process::Command::new(\"sh\"); }\n",
        ),
    ]));
    assert_eq!(v.len(), 4, "{v:#?}");
    assert!(v[0].starts_with("src/schedule/gpipe.rs:1: `schedule` is pure"));
    assert!(v[1].starts_with("src/schedule/gpipe.rs:2:"));
    assert!(v[2].starts_with("src/schedule/gpipe.rs:3:"));
    assert!(
        v[3].starts_with("src/testing/run.rs:1: `testing` is pure, but this names `std::process"),
        "{}",
        v[3]
    );
}
