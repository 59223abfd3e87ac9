//! The header dict of a `.npy` file, read as NumPy reads it: the text is a
//! Python literal (`ast.literal_eval`), which must be a dict with exactly
//! the keys `descr` (a str), `fortran_order` (a bool) and `shape` (a tuple
//! of ints).
//!
//! The literal itself is parsed by `py_literal`. A short pass before it
//! (`normalise`) covers what Python accepts and `py_literal` does not, and
//! refuses what `py_literal` accepts and Python does not, so that a header
//! is accepted exactly when `np.load` accepts it (apart from dtypes the
//! crate does not support):
//!
//! - accepted by Python, rewritten: `u''` and `r''` strings, parenthesised
//!   values (`(5)` is `5`, `((5),)` is `(5,)`), newlines, comments and line
//!   continuations between tokens;
//! - refused by Python, refused here: decimal integers with leading zeros
//!   (`00005`), arithmetic (`5+3`, `--5`: `literal_eval` takes one sign on a
//!   number and no operator other than `a+bj`, which no header field can
//!   hold), f-strings, null characters, and more nested brackets than
//!   Python's parser allows.

use py_literal::Value;

/// Python's tokenizer refuses more nested brackets than this (`MAXLEVEL`);
/// it also keeps the parser's recursion shallow.
const MAX_NESTING: usize = 200;

/// The checked fields of a header dict.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct HeaderDict {
    pub descr: String,
    pub fortran_order: bool,
    pub shape: Vec<u64>,
}

/// Parses and checks the header dict text (already decoded). Files of
/// format 1.0 and 2.0 may come from Python 2, whose longs end in `L`
/// (`(5L,)`): as NumPy does, those are read again without the `L` when the
/// text does not parse as it stands.
pub(super) fn parse_header_dict(text: &str, major: u8) -> Result<HeaderDict, String> {
    match parse_with(text, false) {
        Err(e) if major <= 2 => parse_with(text, true).map_err(|_| e),
        other => other,
    }
}

fn parse_with(text: &str, python2_longs: bool) -> Result<HeaderDict, String> {
    let source = normalise(text, python2_longs)?;
    let value: Value = source
        .parse()
        .map_err(|e| format!("not a Python literal ({})", first_line(&e)))?;
    let Value::Dict(pairs) = value else {
        return Err("the header is not a dict".into());
    };
    // Later keys replace earlier ones, as in a Python dict.
    let (mut descr, mut fortran, mut shape) = (None, None, None);
    for (key, value) in pairs {
        match key {
            Value::String(k) if k == "descr" => descr = Some(value),
            Value::String(k) if k == "fortran_order" => fortran = Some(value),
            Value::String(k) if k == "shape" => shape = Some(value),
            other => {
                return Err(format!(
                    "unexpected key {} in the header dict",
                    short(&other)
                ));
            }
        }
    }
    let (Some(descr), Some(fortran), Some(shape)) = (descr, fortran, shape) else {
        return Err("the header dict needs the keys 'descr', 'fortran_order' and 'shape'".into());
    };
    let descr = match descr {
        Value::String(s) => s,
        other => return Err(format!("unsupported dtype {} (descr)", short(&other))),
    };
    let Value::Boolean(fortran_order) = fortran else {
        return Err(format!(
            "fortran_order is not True or False: {}",
            short(&fortran)
        ));
    };
    let Value::Tuple(dims) = shape else {
        return Err(format!(
            "shape is not a tuple of integers: {}",
            short(&shape)
        ));
    };
    let shape = dims
        .iter()
        .map(|d| match d {
            // NumPy checks `isinstance(x, int)`, which bools pass.
            Value::Boolean(b) => Ok(u64::from(*b)),
            // NumPy sizes are signed 64-bit (intp).
            Value::Integer(i) => match i64::try_from(i) {
                Ok(v) if v >= 0 => Ok(v as u64),
                _ if i.to_string().starts_with('-') => {
                    Err(format!("negative dimension {i} in the shape"))
                }
                _ => Err(format!("dimension {i} in the shape is too large to exist")),
            },
            other => Err(format!(
                "shape is not a tuple of integers: {}",
                short(other)
            )),
        })
        .collect::<Result<Vec<u64>, String>>()?;
    Ok(HeaderDict {
        descr,
        fortran_order,
        shape,
    })
}

/// A value in a message, at most 40 characters.
fn short(v: &Value) -> String {
    let s = v.format_ascii().unwrap_or_else(|_| format!("{v:?}"));
    match s.char_indices().nth(40) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s,
    }
}

fn first_line(e: &impl std::fmt::Display) -> String {
    let s = e.to_string();
    s.lines().next().unwrap_or("").trim().to_string()
}

/// What came last, for telling unary from binary `+`/`-`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Last {
    /// Start, an opening bracket, `,` or `:`.
    Open,
    /// A number, string, name or closing bracket.
    Operand,
    /// A sign (unary `+` or `-`).
    Sign,
}

/// An open bracket: its kind, where it stands in the output, whether a
/// comma was seen directly inside it, and whether it holds anything.
struct Bracket {
    kind: char,
    at: usize,
    comma: bool,
    items: bool,
}

/// Rewrites the header text into the subset of Python that `py_literal`
/// reads, with the same meaning, or says why Python would refuse it.
fn normalise(text: &str, python2_longs: bool) -> Result<String, String> {
    if text.contains('\0') {
        return Err("the header holds a null character".into());
    }
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut stack: Vec<Bracket> = Vec::new();
    let mut last = Last::Open;
    // Adjacent string literals make one string (`'<' 'f4'`): the value so
    // far, written out when anything else comes.
    let mut pending: Option<Value> = None;
    let mut last_number = false;
    let mut i = 0;
    let operand = |stack: &mut Vec<Bracket>, last: &mut Last| {
        if let Some(b) = stack.last_mut() {
            b.items = true;
        }
        *last = Last::Operand;
    };
    while i < chars.len() {
        let c = chars[i];
        let string_start = matches!(c, '\'' | '"')
            || ((c.is_alphabetic() || c == '_') && string_prefix_at(&chars, i).is_some());
        let blank = matches!(c, ' ' | '\t' | '\x0c' | '\n' | '\r' | '#' | '\\');
        if !string_start && !blank {
            flush(&mut pending, &mut out)?;
        }
        // Whether the last token was a number (for a Python 2 `L` after it).
        let after_number = last_number;
        if !blank {
            last_number = false;
        }
        match c {
            ' ' | '\t' | '\x0c' | '\n' | '\r' => {
                // Newlines join lines inside brackets; around the dict they
                // are blank space.
                out.push(' ');
                i += 1;
            }
            '#' => {
                while i < chars.len() && chars[i] != '\n' && chars[i] != '\r' {
                    i += 1;
                }
            }
            '\\' => match chars.get(i + 1) {
                Some('\n') => i += 2,
                Some('\r') if chars.get(i + 2) == Some(&'\n') => i += 3,
                Some('\r') => i += 2,
                _ => return Err("a backslash outside a string".into()),
            },
            '(' | '[' | '{' => {
                if last == Last::Operand {
                    return Err(format!("'{c}' after a value (a call or subscript)"));
                }
                if stack.len() >= MAX_NESTING {
                    return Err(format!("more than {MAX_NESTING} nested brackets"));
                }
                if let Some(b) = stack.last_mut() {
                    b.items = true;
                }
                stack.push(Bracket {
                    kind: c,
                    at: out.len(),
                    comma: false,
                    items: false,
                });
                out.push(c);
                last = Last::Open;
                i += 1;
            }
            ')' | ']' | '}' => {
                let open = stack.pop().ok_or(format!("unbalanced '{c}'"))?;
                let want = match open.kind {
                    '(' => ')',
                    '[' => ']',
                    _ => '}',
                };
                if c != want {
                    return Err(format!("'{}' closed by '{c}'", open.kind));
                }
                if last == Last::Sign {
                    return Err("a sign with no number".into());
                }
                if open.kind == '(' && !open.comma && open.items {
                    // A parenthesised value, not a tuple: drop the brackets.
                    out.replace_range(open.at..open.at + 1, " ");
                    out.push(' ');
                } else {
                    out.push(c);
                }
                operand(&mut stack, &mut last);
                i += 1;
            }
            ',' | ':' => {
                if last == Last::Sign {
                    return Err("a sign with no number".into());
                }
                if c == ','
                    && let Some(b) = stack.last_mut()
                {
                    b.comma = true;
                }
                out.push(c);
                last = Last::Open;
                i += 1;
            }
            '+' | '-' => {
                match last {
                    Last::Operand => {
                        return Err("arithmetic in the header (only literals are allowed)".into());
                    }
                    Last::Sign => return Err("more than one sign on a number".into()),
                    Last::Open => {}
                }
                if let Some(b) = stack.last_mut() {
                    b.items = true;
                }
                out.push(c);
                last = Last::Sign;
                i += 1;
            }
            '0'..='9' | '.' => {
                if last == Last::Operand {
                    return Err("two values with nothing between them".into());
                }
                let start = i;
                i = scan_number(&chars, i);
                let mut token: String = chars[start..i].iter().collect();
                if python2_longs && token.len() > 1 && token.ends_with('L') {
                    token.pop();
                }
                check_leading_zeros(&token)?;
                out.push_str(&token);
                last_number = true;
                operand(&mut stack, &mut last);
            }
            _ if string_start => {
                let (prefix, quote_at) = match string_prefix_at(&chars, i) {
                    Some((name, at)) => (Prefix::parse(&name)?, at),
                    None => (Prefix::default(), i),
                };
                if last == Last::Sign {
                    return Err("a sign on a string".into());
                }
                let mut token = String::new();
                i = copy_string(&chars, quote_at, prefix, &mut token)?;
                let value: Value = token
                    .parse()
                    .map_err(|e| format!("a bad string literal ({})", first_line(&e)))?;
                pending = match (pending.take(), value) {
                    (None, v) if last != Last::Operand => Some(v),
                    (Some(Value::String(a)), Value::String(b)) => Some(Value::String(a + &b)),
                    (Some(Value::Bytes(mut a)), Value::Bytes(b)) => {
                        a.extend(b);
                        Some(Value::Bytes(a))
                    }
                    (Some(_), _) => return Err("bytes and str joined together".into()),
                    (None, _) => return Err("a string after a value".into()),
                };
                operand(&mut stack, &mut last);
            }
            c if c.is_alphabetic() || c == '_' => {
                let start = i;
                while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                    i += 1;
                }
                let name: String = chars[start..i].iter().collect();
                if python2_longs && after_number && name == "L" {
                    continue;
                }
                if last == Last::Operand {
                    return Err(format!("{name:?} after a value"));
                }
                if last == Last::Sign {
                    return Err(format!("a sign on {name:?}"));
                }
                // True, False, None; any other name is refused by the parser.
                out.push_str(&name);
                operand(&mut stack, &mut last);
            }
            other => return Err(format!("unexpected character {other:?}")),
        }
    }
    flush(&mut pending, &mut out)?;
    if let Some(open) = stack.last() {
        return Err(format!("'{}' never closed", open.kind));
    }
    Ok(out)
}

/// Writes the pending string value out as a literal `py_literal` reads.
fn flush(pending: &mut Option<Value>, out: &mut String) -> Result<(), String> {
    if let Some(v) = pending.take() {
        let text = v
            .format_ascii()
            .map_err(|e| format!("a string that cannot be written back ({e})"))?;
        out.push_str(&text);
    }
    Ok(())
}

/// A string prefix (letters right before a quote) at `i`: its text and
/// where its quote is.
fn string_prefix_at(chars: &[char], i: usize) -> Option<(String, usize)> {
    let mut j = i;
    while j < chars.len() && (chars[j].is_alphanumeric() || chars[j] == '_') {
        j += 1;
    }
    match chars.get(j) {
        Some('\'' | '"') if j > i => Some((chars[i..j].iter().collect(), j)),
        _ => None,
    }
}

/// Where a number token starting at `i` ends: digits, letters (`0x1f`,
/// `1e5`, `2j`), `_`, `.`, and a sign right after a decimal exponent.
fn scan_number(chars: &[char], mut i: usize) -> usize {
    let start = i;
    let hex = chars.get(start) == Some(&'0') && matches!(chars.get(start + 1), Some('x' | 'X'));
    while i < chars.len() {
        let c = chars[i];
        let sign_of_exponent =
            (c == '+' || c == '-') && !hex && i > start && matches!(chars[i - 1], 'e' | 'E');
        if c.is_ascii_alphanumeric() || c == '_' || c == '.' || sign_of_exponent {
            i += 1;
        } else {
            break;
        }
    }
    i
}

/// Python 3 refuses decimal integers with leading zeros (`007`), except
/// zero itself written with several zeros (`000`); floats may have them.
fn check_leading_zeros(token: &str) -> Result<(), String> {
    let b = token.as_bytes();
    let decimal_int = b.iter().all(|c| c.is_ascii_digit() || *c == b'_');
    if decimal_int && b.len() > 1 && b[0] == b'0' && b.iter().any(|c| (b'1'..=b'9').contains(c)) {
        return Err(format!(
            "leading zeros in the decimal integer {token} (Python refuses them)"
        ));
    }
    Ok(())
}

/// A string prefix: `u` (no effect in Python 3), `r` (raw), `b` (bytes).
#[derive(Clone, Copy, Default)]
struct Prefix {
    raw: bool,
    bytes: bool,
}

impl Prefix {
    fn parse(name: &str) -> Result<Prefix, String> {
        match name.to_ascii_lowercase().as_str() {
            "u" => Ok(Prefix::default()),
            "r" => Ok(Prefix {
                raw: true,
                bytes: false,
            }),
            "b" => Ok(Prefix {
                raw: false,
                bytes: true,
            }),
            "br" | "rb" => Ok(Prefix {
                raw: true,
                bytes: true,
            }),
            _ => Err(format!(
                "string prefix {name:?} (only u, r, b, br and rb make literals)"
            )),
        }
    }
}

/// Copies the string literal starting at the quote `chars[i]` into `out`
/// as a single-quoted plain literal with the same value (a raw string's
/// backslashes escaped; a triple-quoted string's quotes and line breaks
/// escaped), and returns the index past its closing quote.
fn copy_string(
    chars: &[char],
    mut i: usize,
    prefix: Prefix,
    out: &mut String,
) -> Result<usize, String> {
    let q = chars[i];
    let triple = chars.get(i + 1) == Some(&q) && chars.get(i + 2) == Some(&q);
    let delim = if triple { 3 } else { 1 };
    i += delim;
    if prefix.bytes {
        out.push('b');
    }
    out.push(q);
    loop {
        let Some(&c) = chars.get(i) else {
            return Err("a string is never closed".into());
        };
        if c == q && (!triple || (chars.get(i + 1) == Some(&q) && chars.get(i + 2) == Some(&q))) {
            out.push(q);
            return Ok(i + delim);
        }
        if !triple && (c == '\n' || c == '\r') {
            return Err("a line break inside a string".into());
        }
        if c == '\\' {
            let Some(&next) = chars.get(i + 1) else {
                return Err("a string is never closed".into());
            };
            if prefix.raw {
                // A raw string keeps the backslash and the character after
                // it (which then cannot close the string).
                out.push_str("\\\\");
                push_escaped(next, q, out);
            } else {
                out.push(c);
                out.push(next);
            }
            i += 2;
            continue;
        }
        push_escaped(c, q, out);
        i += 1;
    }
}

/// One character of a string's value, written so a plain single-quoted
/// string reads it back.
fn push_escaped(c: char, quote: char, out: &mut String) {
    match c {
        '\\' => out.push_str("\\\\"),
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        c if c == quote => {
            out.push('\\');
            out.push(c);
        }
        c => out.push(c),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dict(shape: &str, descr: &str) -> String {
        format!("{{'descr': {descr}, 'fortran_order': False, 'shape': {shape}}}")
    }

    #[test]
    fn nesting_limit_is_pythons() {
        // Python 3.11 reads 200 nested brackets and refuses 201 (the dict
        // and the shape tuple count).
        let nested = |n: usize| dict(&format!("({}5{},)", "(".repeat(n), ")".repeat(n)), "'<f4'");
        assert_eq!(parse_header_dict(&nested(198), 1).unwrap().shape, vec![5]);
        let err = parse_header_dict(&nested(199), 1).unwrap_err();
        assert!(err.contains("more than 200 nested brackets"), "{err}");
    }

    #[test]
    fn strings_keep_their_python_values() {
        for (descr, want) in [
            ("'''<f4'''", "<f4"),
            ("'''<'f4'''", "<'f4"),
            ("'''<\nf4'''", "<\nf4"),
            ("r'<\\'f4'", "<\\'f4"),
            ("r'\\x3c'", "\\x3c"),
            ("'\\x3cf4'", "<f4"),
            ("'<' \"f\" '''4'''", "<f4"),
            ("u'<f4'", "<f4"),
        ] {
            let got = parse_header_dict(&dict("(1,)", descr), 1).unwrap().descr;
            assert_eq!(got, want, "{descr}");
        }
        for (descr, needle) in [
            ("'<' b'f4'", "bytes and str"),
            ("f'<f4'", "string prefix"),
            ("'<f4", ""), // runs into the next key: refused, as by Python
            ("b'<f4'", "unsupported dtype b'<f4'"),
        ] {
            let err = parse_header_dict(&dict("(1,)", descr), 1).unwrap_err();
            assert!(err.contains(needle), "{descr}: {err}");
        }
    }

    #[test]
    fn numbers_follow_python_3() {
        for (shape, want) in [
            ("(000,)", vec![0]),
            ("(+5, -0)", vec![5, 0]),
            ("((5), 0x10, 0o7, 0b11, 1_0)", vec![5, 16, 7, 3, 10]),
            ("(True, False)", vec![1, 0]),
        ] {
            assert_eq!(
                parse_header_dict(&dict(shape, "'<f4'"), 3).unwrap().shape,
                want,
                "{shape}"
            );
        }
        for (shape, needle) in [
            ("(05,)", "leading zeros"),
            ("(0_5,)", "leading zeros"),
            ("(2+3,)", "arithmetic"),
            ("(--5,)", "more than one sign"),
            ("(-5,)", "negative dimension"),
            ("(9223372036854775808,)", "too large"),
            ("(5.0,)", "not a tuple of integers"),
            ("(5)", "not a tuple of integers"),
            ("(5L,)", "not a Python literal"),
        ] {
            let err = parse_header_dict(&dict(shape, "'<f4'"), 3).unwrap_err();
            assert!(err.contains(needle), "{shape}: {err}");
        }
        // Python 2 longs only in format 1.0 and 2.0 files.
        assert_eq!(
            parse_header_dict(&dict("(5L, 2 L)", "'<f4'"), 2)
                .unwrap()
                .shape,
            vec![5, 2]
        );
    }
}
