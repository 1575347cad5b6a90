//! Stash bounds as small arithmetic expressions: `min(devices - device, chunks)`.
//!
//! A bound says how many chunks a device may hold in flight (forwarded, and not yet through
//! their last backward op) as a function of the shape. The catalog states each kind's bound in
//! this form ([`super::catalog::stash_bound`]) and `pipegnn proptest --max-in-flight` reads a
//! user's, so both are parsed and evaluated by the same code.
//!
//! Grammar, over 64-bit integers:
//!
//! ```text
//! expr  := term (("+" | "-") term)*
//! term  := unary (("*" | "/") unary)*
//! unary := "-" unary | atom
//! atom  := NUMBER | NAME | ("min" | "max") "(" expr ("," expr)* ")" | "(" expr ")"
//! ```
//!
//! Names: `stages` (S, every stage), `chunks` (K), `devices` (P), `v` (stages per device,
//! `S / P`), and `device` (the device's index d, `0..P`), also written `stage`: with one stage
//! per device, stage d is on device d. Division rounds down.

use std::fmt;

use thiserror::Error;

/// The values a bound is evaluated at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BoundVars {
    /// Stages in all (S).
    pub stages: u32,
    /// Chunks per epoch (K).
    pub chunks: u32,
    /// Devices (P).
    pub devices: u32,
    /// Stages per device (v).
    pub stages_per_device: u32,
    /// The device whose bound this is (d).
    pub device: u32,
}

/// Why a bound's text could not be read, or its value computed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum BoundError {
    /// The text is not an expression; `column` counts characters from 1.
    #[error("column {column}: {message}")]
    Syntax {
        /// Where (1-based, in characters).
        column: usize,
        /// What is wrong.
        message: String,
    },
    /// A division by zero, or a value past 64 bits, at these values.
    #[error("{0}")]
    Value(String),
}

/// A parsed bound expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bound {
    text: String,
    root: Node,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Name {
    Stages,
    Chunks,
    Devices,
    StagesPerDevice,
    Device,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BinaryOp {
    Add,
    Sub,
    Mul,
    Div,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Node {
    Number(i64),
    Name(Name),
    Negate(Box<Node>),
    Binary(BinaryOp, Box<Node>, Box<Node>),
    Min(Vec<Node>),
    Max(Vec<Node>),
}

/// The longest expression read, in bytes: a bound is a line, not a program.
const MAX_TEXT_BYTES: usize = 1024;
/// The deepest nesting of parentheses and unary minus signs: keeps the recursive parser's
/// stack small.
const MAX_DEPTH: usize = 64;

impl Bound {
    /// Parses `text`.
    ///
    /// # Errors
    /// [`BoundError::Syntax`] with the column of the first problem: an unknown name or function,
    /// a missing operand or parenthesis, a number past 64 bits, text past 1,024 bytes or
    /// nesting past 64 levels.
    pub fn parse(text: &str) -> Result<Self, BoundError> {
        if text.len() > MAX_TEXT_BYTES {
            return Err(BoundError::Syntax {
                column: 1,
                message: format!("longer than {MAX_TEXT_BYTES} bytes"),
            });
        }
        let mut parser = Parser {
            chars: text.chars().collect(),
            at: 0,
            depth: 0,
        };
        let root = parser.expr()?;
        parser.skip_space();
        if parser.at < parser.chars.len() {
            return Err(parser.error(format!(
                "unexpected `{}` after a complete expression",
                parser.chars[parser.at]
            )));
        }
        Ok(Bound {
            text: text.trim().to_string(),
            root,
        })
    }

    /// The expression as written (trimmed).
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The value at `vars`.
    ///
    /// # Errors
    /// [`BoundError::Value`] on a division by zero or a result past 64 bits.
    pub fn eval(&self, vars: BoundVars) -> Result<i64, BoundError> {
        eval(&self.root, vars)
    }
}

impl fmt::Display for Bound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

fn eval(node: &Node, vars: BoundVars) -> Result<i64, BoundError> {
    let overflow = || BoundError::Value("a value is past 64 bits".into());
    Ok(match node {
        Node::Number(n) => *n,
        Node::Name(name) => i64::from(match name {
            Name::Stages => vars.stages,
            Name::Chunks => vars.chunks,
            Name::Devices => vars.devices,
            Name::StagesPerDevice => vars.stages_per_device,
            Name::Device => vars.device,
        }),
        Node::Negate(inner) => eval(inner, vars)?.checked_neg().ok_or_else(overflow)?,
        Node::Binary(op, a, b) => {
            let (a, b) = (eval(a, vars)?, eval(b, vars)?);
            match op {
                BinaryOp::Add => a.checked_add(b).ok_or_else(overflow)?,
                BinaryOp::Sub => a.checked_sub(b).ok_or_else(overflow)?,
                BinaryOp::Mul => a.checked_mul(b).ok_or_else(overflow)?,
                BinaryOp::Div => {
                    if b == 0 {
                        return Err(BoundError::Value(format!("{a} / 0 divides by zero")));
                    }
                    let quotient = a.checked_div(b).ok_or_else(overflow)?;
                    // Round down, not toward zero.
                    if a % b != 0 && ((a < 0) != (b < 0)) {
                        quotient - 1
                    } else {
                        quotient
                    }
                }
            }
        }
        Node::Min(args) | Node::Max(args) => {
            let mut values = args.iter().map(|arg| eval(arg, vars));
            let first = values
                .next()
                .expect("the parser takes at least one argument")?;
            values.try_fold(first, |acc, value| {
                let value = value?;
                Ok(if matches!(node, Node::Min(_)) {
                    acc.min(value)
                } else {
                    acc.max(value)
                })
            })?
        }
    })
}

struct Parser {
    chars: Vec<char>,
    at: usize,
    depth: usize,
}

impl Parser {
    fn error(&self, message: String) -> BoundError {
        BoundError::Syntax {
            column: self.at + 1,
            message,
        }
    }

    fn skip_space(&mut self) {
        while self.chars.get(self.at).is_some_and(|c| c.is_whitespace()) {
            self.at += 1;
        }
    }

    /// The next character after spaces, not consumed.
    fn peek(&mut self) -> Option<char> {
        self.skip_space();
        self.chars.get(self.at).copied()
    }

    fn found(&mut self) -> String {
        match self.peek() {
            Some(c) => format!("`{c}`"),
            None => "the end".into(),
        }
    }

    fn expect(&mut self, want: char) -> Result<(), BoundError> {
        if self.peek() == Some(want) {
            self.at += 1;
            Ok(())
        } else {
            let found = self.found();
            Err(self.error(format!("expected `{want}`, found {found}")))
        }
    }

    fn expr(&mut self) -> Result<Node, BoundError> {
        let mut left = self.term()?;
        while let Some(c @ ('+' | '-')) = self.peek() {
            self.at += 1;
            let op = if c == '+' {
                BinaryOp::Add
            } else {
                BinaryOp::Sub
            };
            left = Node::Binary(op, Box::new(left), Box::new(self.term()?));
        }
        Ok(left)
    }

    fn term(&mut self) -> Result<Node, BoundError> {
        let mut left = self.unary()?;
        while let Some(c @ ('*' | '/')) = self.peek() {
            self.at += 1;
            let op = if c == '*' {
                BinaryOp::Mul
            } else {
                BinaryOp::Div
            };
            left = Node::Binary(op, Box::new(left), Box::new(self.unary()?));
        }
        Ok(left)
    }

    fn nested<T>(
        &mut self,
        f: impl FnOnce(&mut Self) -> Result<T, BoundError>,
    ) -> Result<T, BoundError> {
        if self.depth == MAX_DEPTH {
            return Err(self.error(format!("nested deeper than {MAX_DEPTH} levels")));
        }
        self.depth += 1;
        let result = f(self);
        self.depth -= 1;
        result
    }

    fn unary(&mut self) -> Result<Node, BoundError> {
        if self.peek() == Some('-') {
            self.at += 1;
            return self.nested(|p| Ok(Node::Negate(Box::new(p.unary()?))));
        }
        self.atom()
    }

    fn atom(&mut self) -> Result<Node, BoundError> {
        match self.peek() {
            Some('(') => {
                self.at += 1;
                let inner = self.nested(Self::expr)?;
                self.expect(')')?;
                Ok(inner)
            }
            Some(c) if c.is_ascii_digit() => {
                let start = self.at;
                while self.chars.get(self.at).is_some_and(char::is_ascii_digit) {
                    self.at += 1;
                }
                let digits: String = self.chars[start..self.at].iter().collect();
                digits
                    .parse()
                    .map(Node::Number)
                    .map_err(|_| BoundError::Syntax {
                        column: start + 1,
                        message: format!("{digits} is past 64 bits"),
                    })
            }
            Some(c) if c.is_ascii_alphabetic() || c == '_' => {
                let start = self.at;
                while self
                    .chars
                    .get(self.at)
                    .is_some_and(|c| c.is_ascii_alphanumeric() || *c == '_')
                {
                    self.at += 1;
                }
                let word: String = self.chars[start..self.at].iter().collect();
                let unknown = |what: &str, expected: &str| BoundError::Syntax {
                    column: start + 1,
                    message: format!("unknown {what} `{word}` (expected {expected})"),
                };
                if self.peek() == Some('(') {
                    let min = match word.as_str() {
                        "min" => true,
                        "max" => false,
                        _ => return Err(unknown("function", "min or max")),
                    };
                    self.at += 1;
                    let args = self.nested(|p| {
                        let mut args = vec![p.expr()?];
                        while p.peek() == Some(',') {
                            p.at += 1;
                            args.push(p.expr()?);
                        }
                        Ok(args)
                    })?;
                    self.expect(')')?;
                    return Ok(if min {
                        Node::Min(args)
                    } else {
                        Node::Max(args)
                    });
                }
                let name = match word.as_str() {
                    "stages" => Name::Stages,
                    "chunks" => Name::Chunks,
                    "devices" => Name::Devices,
                    "v" => Name::StagesPerDevice,
                    "device" | "stage" => Name::Device,
                    _ => {
                        return Err(unknown(
                            "name",
                            "stages, chunks, devices, v, device or stage",
                        ))
                    }
                };
                Ok(Node::Name(name))
            }
            _ => {
                let found = self.found();
                Err(self.error(format!("expected a number, a name or `(`, found {found}")))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AT: BoundVars = BoundVars {
        stages: 8,
        chunks: 12,
        devices: 4,
        stages_per_device: 2,
        device: 1,
    };

    fn value(text: &str) -> i64 {
        Bound::parse(text).unwrap().eval(AT).unwrap()
    }

    fn syntax(text: &str) -> String {
        Bound::parse(text).unwrap_err().to_string()
    }

    #[test]
    fn precedence_names_and_functions() {
        assert_eq!(value("1 + 2 * 3"), 7);
        assert_eq!(value("(1 + 2) * 3"), 9);
        assert_eq!(value("10 - 4 - 3"), 3);
        assert_eq!(value("chunks / devices / 2"), 1);
        assert_eq!(value("-chunks + 1"), -11);
        assert_eq!(value("min(devices - device, chunks)"), 3);
        assert_eq!(value("max(stages, chunks, 3)"), 12);
        assert_eq!(
            value("min(v * chunks, (v - 1) * 4 + 2 * (devices - 1 - stage) + 1)"),
            9
        );
        assert_eq!(value(" min( 7 ) "), 7);
        // Division rounds down.
        assert_eq!(value("-7 / 2"), -4);
        assert_eq!(value("7 / -2"), -4);
        assert_eq!(value("7 / 2"), 3);
    }

    #[test]
    fn bad_text_names_the_column_and_the_problem() {
        assert_eq!(
            syntax("min(stages,"),
            "column 12: expected a number, a name or `(`, found the end"
        );
        assert_eq!(
            syntax("stgaes + 1"),
            "column 1: unknown name `stgaes` (expected stages, chunks, devices, v, device or stage)"
        );
        assert_eq!(
            syntax("avg(1, 2)"),
            "column 1: unknown function `avg` (expected min or max)"
        );
        assert_eq!(syntax("(1 + 2"), "column 7: expected `)`, found the end");
        assert_eq!(
            syntax("1 2"),
            "column 3: unexpected `2` after a complete expression"
        );
        assert_eq!(
            syntax(""),
            "column 1: expected a number, a name or `(`, found the end"
        );
        assert_eq!(
            syntax("2 ^ 3"),
            "column 3: unexpected `^` after a complete expression"
        );
        assert_eq!(
            syntax("99999999999999999999"),
            "column 1: 99999999999999999999 is past 64 bits"
        );
        assert!(syntax(&"(".repeat(100)).contains("nested deeper than 64 levels"));
        assert!(syntax(&"-".repeat(100)).contains("nested deeper than 64 levels"));
        assert!(syntax(&"1+".repeat(600)).contains("longer than 1024 bytes"));
    }

    #[test]
    fn values_past_64_bits_and_division_by_zero_are_errors() {
        let at = |text: &str| {
            Bound::parse(text)
                .unwrap()
                .eval(AT)
                .unwrap_err()
                .to_string()
        };
        assert_eq!(at("chunks / (devices - 4)"), "12 / 0 divides by zero");
        assert_eq!(at("9223372036854775807 + 1"), "a value is past 64 bits");
        assert_eq!(at("-9223372036854775807 - 2"), "a value is past 64 bits");
    }
}
