//! A small filter language for selecting objects by their fields, compatible
//! with the syntax of containerd's `filters` package.
//!
//! A filter string is a comma-separated list of selectors that must *all*
//! match (comma means AND). Each selector names a field path and optionally
//! compares it against a value:
//!
//! ```text
//! name==docker.io/library/alpine:3.20        equality
//! labels.env!=prod                           inequality (also true when absent)
//! name~=^docker\.io/                         regular expression, unanchored
//! labels."containerd.io/gc.root"             presence: the field exists
//! labels.env==prod,target.digest~=/^sha256:/ both must hold
//! ```
//!
//! Grammar (whitespace between tokens is ignored):
//!
//! ```text
//! selectors := selector ("," selector)*
//! selector  := fieldpath [op value]
//! fieldpath := field ("." field)*
//! field     := [A-Za-z0-9_]+ | quoted
//! op        := "==" | "!=" | "~="
//! value     := quoted | run of printable characters other than space and ","
//! quoted    := '"' chars with escapes '"'
//! ```
//!
//! Double-quoted strings accept the usual escapes: `\"`, `\\`, `\'`, `\n`,
//! `\t`, `\r`, `\0`, `\a`, `\b`, `\f`, `\v`, `\xNN` (ASCII only), `\uNNNN`,
//! `\u{N..}` and `\UNNNNNNNN`.
//!
//! For `~=` the value may also be delimited by `/.../` or `|...|`, which saves
//! escaping backslashes: inside, `\/` (or `\|`) stands for the delimiter and
//! every other backslash sequence reaches the regex untouched, so
//! `name~=/^docker\.io\/library\//` is the regex `^docker\.io/library/`.
//! A value that *starts* with `/` or `|` is always read as such a literal,
//! so with `==` or `!=` it must be double-quoted (`name=="/tmp/x"`).
//!
//! A regex that fails to compile is not an error: the selector simply never
//! matches, which keeps filters from clients forgiving while staying safe.
//!
//! Several filter strings can be combined with [`Filter::parse_all`]; an
//! object matches if *any* of them matches (OR). An empty (or all-whitespace)
//! filter string and an empty list both match everything.
//!
//! Field lookup is delegated to an [`Adaptor`] implemented by each filterable
//! type. Paths are handed over split exactly as written, so `labels.a.b`
//! arrives as `["labels", "a", "b"]`; [`label_lookup`] rejoins the tail so that
//! label keys containing dots work without quoting.

use std::borrow::Cow;
use std::collections::BTreeMap;

use regex::Regex;

use crate::error::{Error, Result};

/// Something that can be filtered: returns the value of a field path, or
/// `None` if the field is absent.
///
/// Paths look like `["name"]`, `["labels", "containerd.io/gc.root"]` or
/// `["target", "digest"]`.
pub trait Adaptor {
    /// The value of the field at `path`, or `None` when it does not exist.
    fn field(&self, path: &[&str]) -> Option<Cow<'_, str>>;
}

/// Looks up a label for an [`Adaptor`]: `rest` is the field path after
/// `labels`, rejoined with `.` so `labels.a.b` finds the key `a.b`.
///
/// An empty `rest` (the bare `labels` path) has no string value and yields
/// `None`.
pub fn label_lookup<'a>(
    labels: &'a BTreeMap<String, String>,
    rest: &[&str],
) -> Option<Cow<'a, str>> {
    let value = match rest {
        [] => None,
        // The common case needs no allocation for the joined key.
        [key] => labels.get(*key),
        _ => labels.get(&rest.join(".")),
    };
    value.map(|v| Cow::Borrowed(v.as_str()))
}

/// A parsed filter set (OR of AND-lists). Cheap to evaluate many times.
#[derive(Debug, Clone)]
pub struct Filter {
    /// The object matches if any inner list matches entirely. An empty inner
    /// list is vacuously true, which is how "match everything" is encoded.
    any_of: Vec<Vec<Selector>>,
}

impl Filter {
    /// Parses one filter string (selectors joined by `,`, all of which must
    /// match). An empty or all-whitespace string matches everything.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] if the string does not follow the grammar
    /// (missing field or value, unterminated or misplaced quote, bad escape,
    /// stray character, ...). The message contains the whole filter string
    /// and the byte position of the problem. An invalid regular expression is
    /// *not* an error; that selector just never matches.
    pub fn parse(s: &str) -> Result<Filter> {
        Ok(Filter {
            any_of: vec![Parser::new(s).parse()?],
        })
    }

    /// Parses several filter strings; the result matches an object if any of
    /// them does. An empty list matches everything.
    ///
    /// # Errors
    ///
    /// The first error from [`Filter::parse`] on any of the strings.
    pub fn parse_all<S: AsRef<str>>(filters: &[S]) -> Result<Filter> {
        if filters.is_empty() {
            return Ok(Filter::match_all());
        }
        let any_of = filters
            .iter()
            .map(|s| Parser::new(s.as_ref()).parse())
            .collect::<Result<Vec<_>>>()?;
        Ok(Filter { any_of })
    }

    /// A filter that matches every object.
    #[must_use]
    pub fn match_all() -> Filter {
        Filter {
            any_of: vec![Vec::new()],
        }
    }

    /// Whether `item` satisfies the filter.
    #[must_use]
    pub fn matches(&self, item: &dyn Adaptor) -> bool {
        self.any_of
            .iter()
            .any(|all_of| all_of.iter().all(|sel| sel.matches(item)))
    }
}

/// One `fieldpath [op value]` term.
#[derive(Debug, Clone)]
struct Selector {
    path: Vec<String>,
    condition: Condition,
}

#[derive(Debug, Clone)]
enum Condition {
    Present,
    Equal(String),
    NotEqual(String),
    /// A pattern that failed to compile is kept as its error (which quotes
    /// the pattern, useful in `Debug` output) and never matches, so one bad
    /// regex from a client does not reject the whole request.
    Regex(std::result::Result<Regex, regex::Error>),
}

impl Selector {
    fn matches(&self, item: &dyn Adaptor) -> bool {
        let value = with_path(&self.path, |path| item.field(path));
        match (&self.condition, value) {
            (Condition::Present, value) => value.is_some(),
            (Condition::Equal(want), Some(got)) => *got == **want,
            (Condition::NotEqual(want), Some(got)) => *got != **want,
            (Condition::NotEqual(_), None) => true,
            (Condition::Regex(compiled), Some(got)) => {
                compiled.as_ref().is_ok_and(|re| re.is_match(&got))
            }
            (Condition::Equal(_) | Condition::Regex(_), None) => false,
        }
    }
}

/// Calls `f` with `path` as `&[&str]`. Paths are nearly always short, so a
/// stack buffer avoids allocating on every evaluation.
fn with_path<R>(path: &[String], f: impl FnOnce(&[&str]) -> R) -> R {
    const INLINE: usize = 8;
    if path.len() <= INLINE {
        let mut buf = [""; INLINE];
        for (slot, segment) in buf.iter_mut().zip(path) {
            *slot = segment;
        }
        f(buf.get(..path.len()).unwrap_or_default())
    } else {
        let segments: Vec<&str> = path.iter().map(String::as_str).collect();
        f(&segments)
    }
}

fn parse_error(input: &str, pos: usize, msg: impl std::fmt::Display) -> Error {
    Error::InvalidArgument(format!("invalid filter `{input}`: {msg} at byte {pos}"))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Equal,
    NotEqual,
    Regex,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TokenKind<'a> {
    Eof,
    /// A bare field name.
    Field(&'a str),
    /// A bare value (only produced when scanning a value).
    Value(&'a str),
    /// A quoted literal; `body` excludes the delimiters and is still escaped.
    Quoted {
        quote: char,
        body: &'a str,
    },
    Dot,
    Comma,
    Op(Op),
}

#[derive(Debug, Clone, Copy)]
struct Token<'a> {
    /// Byte offset of the token's first character in the filter string.
    pos: usize,
    kind: TokenKind<'a>,
}

/// Whether the scanner is reading field paths and punctuation, or the value
/// after an operator. The two need different rules: `.` separates fields but
/// is an ordinary character inside values such as `docker.io/x`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Field,
    Value,
}

#[derive(Debug)]
struct Scanner<'a> {
    input: &'a str,
    pos: usize,
}

fn is_field_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

fn is_value_char(c: char) -> bool {
    !c.is_whitespace() && !c.is_control() && c != ','
}

fn is_quote(c: char) -> bool {
    matches!(c, '"' | '/' | '|')
}

impl<'a> Scanner<'a> {
    fn new(input: &'a str) -> Self {
        Scanner { input, pos: 0 }
    }

    fn rest(&self) -> &'a str {
        self.input.get(self.pos..).unwrap_or_default()
    }

    fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }

    /// Advances while `pred` holds and returns the consumed text.
    fn take_while(&mut self, pred: impl Fn(char) -> bool) -> &'a str {
        let start = self.pos;
        let rest = self.rest();
        let len = rest.find(|c: char| !pred(c)).unwrap_or(rest.len());
        self.pos += len;
        self.input.get(start..self.pos).unwrap_or_default()
    }

    fn next(&mut self, mode: Mode) -> Result<Token<'a>> {
        self.take_while(char::is_whitespace);
        let pos = self.pos;
        let Some(c) = self.peek() else {
            return Ok(Token {
                pos,
                kind: TokenKind::Eof,
            });
        };
        let kind = if is_quote(c) {
            self.quoted(c)?
        } else if c == ',' {
            self.pos += 1;
            TokenKind::Comma
        } else if mode == Mode::Value {
            if !is_value_char(c) {
                return Err(parse_error(
                    self.input,
                    pos,
                    format_args!("unexpected character {c:?}"),
                ));
            }
            TokenKind::Value(self.take_while(is_value_char))
        } else if c == '.' {
            self.pos += 1;
            TokenKind::Dot
        } else if is_field_char(c) {
            TokenKind::Field(self.take_while(is_field_char))
        } else {
            self.operator(c)?
        };
        Ok(Token { pos, kind })
    }

    fn operator(&mut self, first: char) -> Result<TokenKind<'a>> {
        let op = match (first, self.rest().chars().nth(1)) {
            ('=', Some('=')) => Some(Op::Equal),
            ('!', Some('=')) => Some(Op::NotEqual),
            ('~', Some('=')) => Some(Op::Regex),
            _ => None,
        };
        match op {
            Some(op) => {
                self.pos += 2;
                Ok(TokenKind::Op(op))
            }
            None => {
                // A lone `=` is the most likely typo, so say what is valid.
                let hint = if matches!(first, '=' | '!' | '~') {
                    " (operators are ==, != and ~=)"
                } else {
                    ""
                };
                Err(parse_error(
                    self.input,
                    self.pos,
                    format_args!("unexpected character {first:?}{hint}"),
                ))
            }
        }
    }

    /// Scans a literal delimited by `quote`. A backslash always takes the
    /// following character with it, so an escaped delimiter does not end the
    /// literal; decoding the escapes is left to the parser, which knows
    /// whether the literal is a field, a value or a regex.
    fn quoted(&mut self, quote: char) -> Result<TokenKind<'a>> {
        let start = self.pos;
        let body_start = start + quote.len_utf8();
        let mut chars = self
            .input
            .get(body_start..)
            .unwrap_or_default()
            .char_indices();
        while let Some((i, c)) = chars.next() {
            if c == '\\' {
                chars.next();
            } else if c == quote {
                self.pos = body_start + i + c.len_utf8();
                let body = self
                    .input
                    .get(body_start..body_start + i)
                    .unwrap_or_default();
                return Ok(TokenKind::Quoted { quote, body });
            }
        }
        Err(parse_error(
            self.input,
            start,
            "quoted literal not terminated",
        ))
    }
}

#[derive(Debug)]
struct Parser<'a> {
    scanner: Scanner<'a>,
}

impl<'a> Parser<'a> {
    fn new(input: &'a str) -> Self {
        Parser {
            scanner: Scanner::new(input),
        }
    }

    fn error(&self, pos: usize, msg: impl std::fmt::Display) -> Error {
        parse_error(self.scanner.input, pos, msg)
    }

    /// Parses the whole string into an AND-list of selectors.
    fn parse(mut self) -> Result<Vec<Selector>> {
        if self.scanner.input.trim().is_empty() {
            return Ok(Vec::new());
        }
        let mut selectors = Vec::new();
        loop {
            let (selector, next) = self.selector()?;
            let had_op = !matches!(selector.condition, Condition::Present);
            selectors.push(selector);
            match next.kind {
                TokenKind::Comma => {}
                TokenKind::Eof => return Ok(selectors),
                _ if had_op => return Err(self.error(next.pos, "expected ',' or end of filter")),
                _ => {
                    return Err(self.error(next.pos, "expected operator, ',' or end of filter"));
                }
            }
        }
    }

    /// Parses one selector and returns it with the token that follows it,
    /// which the caller needs to decide whether another selector comes.
    fn selector(&mut self) -> Result<(Selector, Token<'a>)> {
        let (path, next) = self.fieldpath()?;
        let TokenKind::Op(op) = next.kind else {
            let condition = Condition::Present;
            return Ok((Selector { path, condition }, next));
        };
        let value = self.value(op)?;
        let condition = match op {
            Op::Equal => Condition::Equal(value),
            Op::NotEqual => Condition::NotEqual(value),
            Op::Regex => Condition::Regex(Regex::new(&value)),
        };
        let next = self.scanner.next(Mode::Field)?;
        Ok((Selector { path, condition }, next))
    }

    /// Parses `field ("." field)*`, returning the path and the first token
    /// after it.
    fn fieldpath(&mut self) -> Result<(Vec<String>, Token<'a>)> {
        let mut path = Vec::new();
        loop {
            let token = self.scanner.next(Mode::Field)?;
            let segment = match token.kind {
                TokenKind::Field(name) => name.to_owned(),
                TokenKind::Quoted { quote: '"', body } => {
                    unescape(self.scanner.input, token.pos + 1, body)?
                }
                TokenKind::Quoted { .. } => {
                    return Err(self.error(token.pos, "invalid quote encountered"));
                }
                _ => return Err(self.error(token.pos, "expected field or quoted")),
            };
            path.push(segment);
            let next = self.scanner.next(Mode::Field)?;
            if next.kind != TokenKind::Dot {
                return Ok((path, next));
            }
        }
    }

    fn value(&mut self, op: Op) -> Result<String> {
        let token = self.scanner.next(Mode::Value)?;
        match token.kind {
            TokenKind::Value(value) => Ok(value.to_owned()),
            TokenKind::Quoted { quote: '"', body } => {
                unescape(self.scanner.input, token.pos + 1, body)
            }
            TokenKind::Quoted { quote, body } if op == Op::Regex => {
                Ok(unescape_delimiter(body, quote))
            }
            TokenKind::Quoted { .. } => Err(self.error(token.pos, "invalid quote encountered")),
            _ => Err(self.error(token.pos, "expected value or quoted")),
        }
    }
}

/// Decodes the escapes of a double-quoted literal. `offset` is the byte
/// position of `body` in `input`, so errors point at the bad escape.
fn unescape(input: &str, offset: usize, body: &str) -> Result<String> {
    let mut out = String::with_capacity(body.len());
    let mut chars = body.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        let bad = |what: &str| {
            parse_error(
                input,
                offset + i,
                format_args!("invalid escape sequence: {what}"),
            )
        };
        let Some((_, kind)) = chars.next() else {
            // The scanner never ends a literal on a lone backslash.
            return Err(bad("trailing backslash"));
        };
        let decoded = match kind {
            'a' => '\u{07}',
            'b' => '\u{08}',
            'f' => '\u{0c}',
            'n' => '\n',
            'r' => '\r',
            't' => '\t',
            'v' => '\u{0b}',
            '0' => '\0',
            '\\' | '"' | '\'' => kind,
            'x' => {
                // Filter strings are UTF-8 text, so a raw non-ASCII byte
                // could never match anything; reject it rather than guess.
                let code =
                    hex_digits(&mut chars, 2).ok_or_else(|| bad("\\x needs 2 hex digits"))?;
                if code > 0x7f {
                    return Err(bad(
                        "\\x must be ASCII (at most \\x7f); use \\u for other characters",
                    ));
                }
                char::from_u32(code).ok_or_else(|| bad("\\x"))?
            }
            'u' if chars.peek().is_some_and(|&(_, c)| c == '{') => {
                chars.next();
                let code = braced_hex(&mut chars)
                    .ok_or_else(|| bad("\\u{...} needs 1 to 6 hex digits and a closing brace"))?;
                char::from_u32(code).ok_or_else(|| bad("not a Unicode scalar value"))?
            }
            'u' | 'U' => {
                let width = if kind == 'u' { 4 } else { 8 };
                let code = hex_digits(&mut chars, width).ok_or_else(|| {
                    bad(if kind == 'u' {
                        "\\u needs 4 hex digits"
                    } else {
                        "\\U needs 8 hex digits"
                    })
                })?;
                char::from_u32(code).ok_or_else(|| bad("not a Unicode scalar value"))?
            }
            other => return Err(bad(&format!("unknown escape \\{other}"))),
        };
        out.push(decoded);
    }
    Ok(out)
}

type CharIter<'s> = std::iter::Peekable<std::str::CharIndices<'s>>;

/// Reads exactly `n` hex digits.
fn hex_digits(chars: &mut CharIter<'_>, n: usize) -> Option<u32> {
    let mut code = 0u32;
    for _ in 0..n {
        let (_, c) = chars.next()?;
        code = code.checked_mul(16)?.checked_add(c.to_digit(16)?)?;
    }
    Some(code)
}

/// Reads 1 to 6 hex digits followed by `}` (the `{` is already consumed).
fn braced_hex(chars: &mut CharIter<'_>) -> Option<u32> {
    let mut code = 0u32;
    let mut digits = 0;
    loop {
        let (_, c) = chars.next()?;
        if c == '}' {
            return (1..=6).contains(&digits).then_some(code);
        }
        code = code.checked_mul(16)?.checked_add(c.to_digit(16)?)?;
        digits += 1;
    }
}

/// Decodes a `/.../` or `|...|` regex literal: `\` + delimiter becomes the
/// delimiter; every other backslash pair is kept verbatim for the regex
/// engine (so `\\` stays a literal backslash and `\d` a digit class).
fn unescape_delimiter(body: &str, quote: char) -> String {
    let mut out = String::with_capacity(body.len());
    let mut chars = body.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some(next) if next == quote => out.push(next),
            Some(next) => {
                out.push('\\');
                out.push(next);
            }
            None => out.push('\\'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stand-in for the store's records: a name, labels and an optional
    /// target descriptor.
    #[derive(Debug, Default)]
    struct Obj {
        name: String,
        labels: BTreeMap<String, String>,
        digest: Option<String>,
        media_type: Option<String>,
    }

    impl Adaptor for Obj {
        fn field(&self, path: &[&str]) -> Option<Cow<'_, str>> {
            match path {
                ["name"] => Some(Cow::Borrowed(&self.name)),
                ["labels", rest @ ..] => label_lookup(&self.labels, rest),
                ["target", "digest"] => self.digest.as_deref().map(Cow::Borrowed),
                ["target", "mediatype"] => self.media_type.as_deref().map(Cow::Borrowed),
                _ => None,
            }
        }
    }

    fn obj(name: &str, labels: &[(&str, &str)], digest: Option<&str>) -> Obj {
        Obj {
            name: name.to_owned(),
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            digest: digest.map(str::to_owned),
            media_type: digest.map(|_| "application/vnd.oci.image.index.v1+json".to_owned()),
        }
    }

    fn parse(s: &str) -> Filter {
        match Filter::parse(s) {
            Ok(f) => f,
            Err(e) => panic!("parse {s:?} failed: {e:?}"),
        }
    }

    fn parse_err(s: &str) -> String {
        match Filter::parse(s) {
            Ok(f) => panic!("parse {s:?} should fail, got {f:?}"),
            Err(Error::InvalidArgument(msg)) => msg,
            Err(other) => panic!("parse {s:?}: wrong error kind {other:?}"),
        }
    }

    /// Asserts a parse error mentions `phrase`, the whole input and `pos`.
    fn assert_err(s: &str, phrase: &str, pos: usize) {
        let msg = parse_err(s);
        assert!(msg.contains(phrase), "{s:?}: {msg:?} lacks {phrase:?}");
        assert!(msg.contains(s), "{s:?}: {msg:?} lacks the filter string");
        let at = format!("at byte {pos}");
        assert!(msg.contains(&at), "{s:?}: {msg:?} lacks {at:?}");
    }

    fn named(name: &str) -> Obj {
        obj(name, &[], None)
    }

    fn labelled(labels: &[(&str, &str)]) -> Obj {
        obj("x", labels, None)
    }

    #[test]
    fn equal_operator() {
        let f = parse("name==alpine");
        assert!(f.matches(&named("alpine")));
        assert!(!f.matches(&named("alpine2")));
        assert!(!f.matches(&named("Alpine")));
    }

    #[test]
    fn equal_on_absent_field_does_not_match() {
        assert!(!parse("labels.env==prod").matches(&labelled(&[])));
    }

    #[test]
    fn not_equal_operator() {
        let f = parse("name!=alpine");
        assert!(!f.matches(&named("alpine")));
        assert!(f.matches(&named("busybox")));
    }

    #[test]
    fn not_equal_matches_absent_field() {
        let f = parse("labels.env!=prod");
        assert!(f.matches(&labelled(&[])));
        assert!(f.matches(&labelled(&[("env", "dev")])));
        assert!(!f.matches(&labelled(&[("env", "prod")])));
    }

    #[test]
    fn regex_operator_is_unanchored() {
        let f = parse("name~=pine");
        assert!(f.matches(&named("alpine:3.20")));
        assert!(!f.matches(&named("busybox")));
        let anchored = parse("name~=^alp.*0$");
        assert!(anchored.matches(&named("alpine:3.20")));
        assert!(!anchored.matches(&named("my-alpine:3.20")));
    }

    #[test]
    fn regex_on_absent_field_does_not_match() {
        assert!(!parse("labels.env~=.*").matches(&labelled(&[])));
    }

    #[test]
    fn regex_slash_quoted() {
        let f = parse(r"name~=/^docker\.io\/library\//");
        assert!(f.matches(&named("docker.io/library/alpine")));
        assert!(!f.matches(&named("dockerXio/library/alpine")));
        assert!(!f.matches(&named("quay.io/library/alpine")));
        // Commas and spaces are fine inside the delimiters.
        let g = parse("name~=/a, b/");
        assert!(g.matches(&named("xa, by")));
    }

    #[test]
    fn regex_pipe_quoted_with_escaped_delimiter() {
        // `\|` yields a bare `|`, which the regex reads as alternation.
        let f = parse(r"name~=|^(foo\|bar)$|");
        assert!(f.matches(&named("foo")));
        assert!(f.matches(&named("bar")));
        assert!(!f.matches(&named("foo|bar")));
        // Other escapes reach the regex verbatim: `\d` is a digit class,
        // and `\/` inside pipes stays an (escaped) slash.
        let g = parse(r"name~=|^v\d+\/x$|");
        assert!(g.matches(&named("v12/x")));
        assert!(!g.matches(&named("vX/x")));
    }

    #[test]
    fn regex_delimited_keeps_escaped_backslash() {
        // `\\` is a backslash pair, so the following `/` closes the literal.
        let f = parse(r"name~=/a\\/");
        assert!(f.matches(&named(r"xa\y")));
        assert!(!f.matches(&named("xay")));
    }

    #[test]
    fn regex_double_quoted_uses_string_escapes() {
        let f = parse(r#"name~="^a\\d$""#);
        assert!(f.matches(&named("a7")));
        assert!(!f.matches(&named("ad")));
    }

    #[test]
    fn invalid_regex_never_matches() {
        for s in ["name~=[", "name~=/(unclosed/", "name~=/a{2,1}/"] {
            let f = parse(s);
            assert!(!f.matches(&named("[")), "{s}");
            assert!(!f.matches(&named("(unclosed")), "{s}");
            assert!(!f.matches(&named("aa")), "{s}");
        }
        // Combined with a matching alternative, the valid branch still wins.
        let either = Filter::parse_all(&["name~=(", "name==("]);
        assert!(matches!(either, Ok(ref f) if f.matches(&named("("))));
    }

    #[test]
    fn presence_test() {
        let f = parse("labels.env");
        assert!(f.matches(&labelled(&[("env", "")])));
        assert!(f.matches(&labelled(&[("env", "prod")])));
        assert!(!f.matches(&labelled(&[("other", "x")])));
        let digest = parse("target.digest");
        assert!(digest.matches(&obj("x", &[], Some("sha256:abc"))));
        assert!(!digest.matches(&obj("x", &[], None)));
    }

    #[test]
    fn dotted_path_is_joined_for_labels() {
        let f = parse("labels.containerd.io.gc==yes");
        assert!(f.matches(&labelled(&[("containerd.io.gc", "yes")])));
        assert!(!f.matches(&labelled(&[("containerd", "yes")])));
        let g = parse("target.digest==sha256:abc");
        assert!(g.matches(&obj("x", &[], Some("sha256:abc"))));
    }

    #[test]
    fn quoted_path_with_slash() {
        let f = parse(r#"labels."containerd.io/gc.root""#);
        assert!(f.matches(&labelled(&[("containerd.io/gc.root", "2024")])));
        assert!(!f.matches(&labelled(&[("containerd.io", "x")])));
        let g = parse(r#"labels."containerd.io/gc.ref.content.l"==sha256:1"#);
        assert!(g.matches(&labelled(&[("containerd.io/gc.ref.content.l", "sha256:1")])));
    }

    #[test]
    fn quoted_path_and_value_escapes() {
        let f = parse(r#"labels."a\"b\\c\x41\u00e9\u{1F600}\td"=="v\nw""#);
        let key = "a\"b\\cA\u{e9}\u{1F600}\td";
        assert!(f.matches(&labelled(&[(key, "v\nw")])));
        assert!(!f.matches(&labelled(&[(key, "v\\nw")])));
        let g = parse(r#"labels."\U0001F600"=="""#);
        assert!(g.matches(&labelled(&[("\u{1F600}", "")])));
    }

    #[test]
    fn quoted_value_may_contain_comma_space_and_slash_start() {
        let f = parse(r#"name=="/a, b",labels.x"#);
        assert!(f.matches(&obj("/a, b", &[("x", "")], None)));
        assert!(!f.matches(&obj("/a, b", &[], None)));
    }

    #[test]
    fn bare_value_runs_to_comma_or_space() {
        let f = parse("name==docker.io/library/alpine:3.20@sha256:x=y!");
        assert!(f.matches(&named("docker.io/library/alpine:3.20@sha256:x=y!")));
    }

    #[test]
    fn comma_means_and() {
        let f = parse("labels.env==prod,name~=^ghcr");
        assert!(f.matches(&obj("ghcr.io/a", &[("env", "prod")], None)));
        assert!(!f.matches(&obj("docker.io/a", &[("env", "prod")], None)));
        assert!(!f.matches(&obj("ghcr.io/a", &[("env", "dev")], None)));
    }

    #[test]
    fn parse_all_means_or() {
        let f = match Filter::parse_all(&["name==a", "labels.env==prod,name==b"]) {
            Ok(f) => f,
            Err(e) => panic!("{e:?}"),
        };
        assert!(f.matches(&named("a")));
        assert!(f.matches(&obj("b", &[("env", "prod")], None)));
        assert!(!f.matches(&named("b")));
        assert!(!f.matches(&named("c")));
        // Owned strings work too.
        let owned = vec!["name==a".to_owned()];
        assert!(matches!(Filter::parse_all(&owned), Ok(ref f) if f.matches(&named("a"))));
    }

    #[test]
    fn parse_all_reports_the_bad_filter() {
        match Filter::parse_all(&["name==a", "name==a,"]) {
            Err(Error::InvalidArgument(msg)) => {
                assert!(msg.contains("`name==a,`"), "{msg}");
                assert!(msg.contains("expected field or quoted"), "{msg}");
            }
            other => panic!("expected InvalidArgument, got {other:?}"),
        }
    }

    #[test]
    fn empty_filter_matches_all() {
        let empty_list: &[&str] = &[];
        let filters = [
            parse(""),
            parse("  \t "),
            Filter::match_all(),
            match Filter::parse_all(empty_list) {
                Ok(f) => f,
                Err(e) => panic!("{e:?}"),
            },
            match Filter::parse_all(&["", "name==nope"]) {
                Ok(f) => f,
                Err(e) => panic!("{e:?}"),
            },
        ];
        for f in &filters {
            assert!(f.matches(&named("anything")), "{f:?}");
            assert!(f.matches(&Obj::default()), "{f:?}");
        }
    }

    #[test]
    fn whitespace_between_tokens_is_ignored() {
        let f = parse("  labels . env  ==  prod  ,\tname ~= /^a/ , labels.\"k\"  ");
        assert!(f.matches(&obj("ab", &[("env", "prod"), ("k", "")], None)));
        assert!(!f.matches(&obj("ba", &[("env", "prod"), ("k", "")], None)));
        // Whitespace ends a bare value; it is not part of it.
        assert!(parse("name==a ").matches(&named("a")));
    }

    #[test]
    fn error_trailing_comma() {
        assert_err("name==foo,", "expected field or quoted", 10);
    }

    #[test]
    fn error_trailing_dot() {
        assert_err("labels.", "expected field or quoted", 7);
    }

    #[test]
    fn error_missing_value() {
        assert_err("image~=,x", "expected value or quoted", 7);
        assert_err("image==", "expected value or quoted", 7);
    }

    #[test]
    fn error_unquoted_slash_in_field() {
        assert_err("labels.ns/key==v", "quoted literal not terminated", 9);
    }

    #[test]
    fn error_alternative_quote_in_field() {
        assert_err("labels.|foo|==x", "invalid quote encountered", 7);
    }

    #[test]
    fn error_alternative_quote_for_equality() {
        assert_err("name==/foo/", "invalid quote encountered", 6);
        assert_err("name!=|foo|", "invalid quote encountered", 6);
    }

    #[test]
    fn error_unterminated_quotes() {
        assert_err(r#"labels."abc"#, "quoted literal not terminated", 7);
        assert_err(r#"name=="abc\""#, "quoted literal not terminated", 6);
        assert_err("name~=/abc", "quoted literal not terminated", 6);
    }

    #[test]
    fn error_bad_escapes() {
        assert_err(r#"labels."a\qb""#, "invalid escape sequence", 9);
        assert_err(r#"name=="\x8f""#, "invalid escape sequence", 7);
        assert_err(r#"name=="\u12""#, "invalid escape sequence", 7);
        assert_err(r#"name=="\ud800""#, "invalid escape sequence", 7);
        assert_err(r#"name=="\u{110000}""#, "invalid escape sequence", 7);
    }

    #[test]
    fn error_unexpected_characters() {
        assert_err("name=foo", "unexpected character '='", 4);
        assert_err("na-me==x", "unexpected character '-'", 2);
        assert_err("name==\u{7}", "unexpected character", 6);
        assert_err("name foo", "expected operator, ',' or end of filter", 5);
        assert_err(r#"name=="a"b"#, "expected ',' or end of filter", 9);
        assert_err(",name", "expected field or quoted", 0);
        assert_err("name,,x", "expected field or quoted", 5);
        assert_err("==x", "expected field or quoted", 0);
    }

    #[test]
    fn errors_report_positions_in_bytes() {
        // `é` is two bytes, so the stray `-` sits at byte 9, not char 8.
        assert_err(r#""é"==x,a-"#, "unexpected character '-'", 9);
    }

    /// Every outcome is either a filter or an `InvalidArgument` naming the
    /// input; nothing panics, including on multi-byte and control characters.
    fn assert_parses_or_explains(s: &str) {
        match Filter::parse(s) {
            Ok(f) => {
                // Evaluating must be panic-free too.
                let _ = f.matches(&labelled(&[("a", "b")]));
            }
            Err(Error::InvalidArgument(msg)) => {
                assert!(msg.contains(s), "{s:?}: {msg:?}");
                assert!(msg.contains("at byte "), "{s:?}: {msg:?}");
            }
            Err(other) => panic!("{s:?}: wrong error kind {other:?}"),
        }
    }

    #[test]
    fn no_panic_on_awkward_input() {
        for s in [
            "\"",
            "/",
            "|",
            "\\",
            "\"\\",
            "a.\"\\u{",
            "a==\"\\x",
            "a==\"\\u{12",
            "a~=/\\",
            "é",
            "a==é,b==ü",
            "...",
            "=",
            "~",
            "!",
            "a!",
            "a~",
            "\u{0}",
            "a==\"\\u{FFFFFFFFF}\"",
        ] {
            assert_parses_or_explains(s);
        }
        // Exhaustively try every string of up to 4 characters drawn from the
        // characters that drive the grammar.
        let alphabet = [
            'a', '.', ',', '=', '!', '~', '"', '/', '|', '\\', ' ', 'é', 'x', 'u', '{',
        ];
        let mut current = vec![String::new()];
        for _ in 0..4 {
            let mut longer = Vec::with_capacity(current.len() * alphabet.len());
            for prefix in &current {
                for c in alphabet {
                    let mut s = prefix.clone();
                    s.push(c);
                    assert_parses_or_explains(&s);
                    longer.push(s);
                }
            }
            current = longer;
        }
        // Long paths go through the heap fallback in `with_path`.
        let long = parse("labels.a.b.c.d.e.f.g.h.i.j==x");
        assert!(long.matches(&labelled(&[("a.b.c.d.e.f.g.h.i.j", "x")])));
        assert!(!long.matches(&labelled(&[("a.b.c.d.e.f.g.h.i", "x")])));
    }

    #[test]
    fn label_lookup_joins_rest() {
        let labels: BTreeMap<String, String> = [
            ("a.b".to_owned(), "1".to_owned()),
            ("c".to_owned(), "2".to_owned()),
        ]
        .into();
        assert_eq!(label_lookup(&labels, &["a", "b"]).as_deref(), Some("1"));
        assert_eq!(label_lookup(&labels, &["c"]).as_deref(), Some("2"));
        assert_eq!(label_lookup(&labels, &["a"]), None);
        assert_eq!(label_lookup(&labels, &[]), None);
    }

    /// Table test over a fixed set of objects, in the style of containerd's
    /// filter tests: each filter lists exactly which objects it selects.
    #[test]
    fn table() {
        let objects = [
            obj(
                "docker.io/library/alpine:3.20",
                &[("containerd.io/gc.root", "2024-01-01"), ("env", "prod")],
                Some("sha256:aaa"),
            ),
            obj(
                "docker.io/library/busybox:latest",
                &[("env", "dev"), ("team.owner", "infra")],
                Some("sha256:bbb"),
            ),
            obj(
                "ghcr.io/acme/app:v1",
                &[("env", "prod"), ("empty", "")],
                Some("sha256:ccc"),
            ),
            obj("localhost/unlabelled", &[], None),
            obj("example.com/a/b", &[("foo", "bar|baz")], Some("sha256:ddd")),
        ];
        let cases: &[(&[&str], &[usize])] = &[
            (&[""], &[0, 1, 2, 3, 4]),
            (&[], &[0, 1, 2, 3, 4]),
            (&["name"], &[0, 1, 2, 3, 4]),
            (&["labels.env"], &[0, 1, 2]),
            (&["labels.env==prod"], &[0, 2]),
            (&["labels.env!=prod"], &[1, 3, 4]),
            (&[r#"labels."containerd.io/gc.root""#], &[0]),
            (&["labels.team.owner==infra"], &[1]),
            (&[r"name~=^docker\.io/"], &[0, 1]),
            (&[r"name~=/library\/(alpine|busybox):/"], &[0, 1]),
            (&[r"labels.foo~=|^(bar\|baz)$|"], &[]),
            (&[r"labels.foo~=/^bar\|baz$/"], &[4]),
            (&["labels.env==prod,name~=ghcr"], &[2]),
            (&[r#"labels.empty=="""#], &[2]),
            (&["target.digest"], &[0, 1, 2, 4]),
            (&["target.digest==sha256:bbb"], &[1]),
            (&["target.mediatype~=index"], &[0, 1, 2, 4]),
            (
                &[r#" labels.env == prod , labels."containerd.io/gc.root" "#],
                &[0],
            ),
            (&["name~=["], &[]),
            (&["labels.env==dev", "name~=acme"], &[1, 2]),
            (&["labels.env!=prod,labels.env!=dev"], &[3, 4]),
            (&["nosuchfield!=x", "nosuchfield"], &[0, 1, 2, 3, 4]),
        ];
        for (filters, want) in cases {
            let f = match Filter::parse_all(filters) {
                Ok(f) => f,
                Err(e) => panic!("{filters:?}: {e:?}"),
            };
            let got: Vec<usize> = objects
                .iter()
                .enumerate()
                .filter(|(_, o)| f.matches(*o))
                .map(|(i, _)| i)
                .collect();
            assert_eq!(&got, want, "filters {filters:?}");
        }
    }
}
