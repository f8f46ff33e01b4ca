//! The reader: source text to s-expressions in ordinary Rust memory (the
//! compiler turns the quoted parts into GC objects).

/// An s-expression with the line it started on.
#[derive(Debug, Clone, PartialEq)]
pub enum Sexp {
    Int(i64, u32),
    Sym(String, u32),
    Str(String, u32),
    Bool(bool, u32),
    /// A proper list, or a dotted one when the tail is `Some`.
    List(Vec<Sexp>, Option<Box<Sexp>>, u32),
}

impl Sexp {
    pub fn line(&self) -> u32 {
        match self {
            Sexp::Int(_, l) | Sexp::Sym(_, l) | Sexp::Str(_, l) | Sexp::Bool(_, l) | Sexp::List(_, _, l) => *l,
        }
    }
    pub fn as_sym(&self) -> Option<&str> {
        match self {
            Sexp::Sym(s, _) => Some(s),
            _ => None,
        }
    }
}

struct Reader<'a> {
    s: &'a [u8],
    i: usize,
    line: u32,
}

/// Parse a whole program. Errors name the line: "parse error at line N: ...".
pub fn read_all(src: &str) -> Result<Vec<Sexp>, String> {
    let mut r = Reader { s: src.as_bytes(), i: 0, line: 1 };
    let mut out = Vec::new();
    loop {
        r.skip_ws();
        if r.i >= r.s.len() {
            return Ok(out);
        }
        out.push(r.read()?);
    }
}

fn is_delim(c: u8) -> bool {
    c.is_ascii_whitespace() || matches!(c, b'(' | b')' | b'"' | b';' | b'\'')
}

impl Reader<'_> {
    fn fail<T>(&self, line: u32, msg: &str) -> Result<T, String> {
        Err(format!("parse error at line {line}: {msg}"))
    }

    fn skip_ws(&mut self) {
        while self.i < self.s.len() {
            match self.s[self.i] {
                b'\n' => {
                    self.line += 1;
                    self.i += 1;
                }
                c if c.is_ascii_whitespace() => self.i += 1,
                b';' => {
                    while self.i < self.s.len() && self.s[self.i] != b'\n' {
                        self.i += 1;
                    }
                }
                _ => break,
            }
        }
    }

    fn read(&mut self) -> Result<Sexp, String> {
        self.skip_ws();
        let line = self.line;
        let Some(&c) = self.s.get(self.i) else {
            return self.fail(line, "unexpected end of input");
        };
        match c {
            b'(' | b'[' => {
                let close = if c == b'(' { b')' } else { b']' };
                self.i += 1;
                let mut items = Vec::new();
                let mut tail = None;
                loop {
                    self.skip_ws();
                    match self.s.get(self.i) {
                        None => return self.fail(line, "unclosed parenthesis opened here"),
                        Some(&d) if d == close => {
                            self.i += 1;
                            break;
                        }
                        Some(b')') | Some(b']') => return self.fail(self.line, "mismatched closing bracket"),
                        Some(b'.')
                            if self.s.get(self.i + 1).map_or(true, |&n| is_delim(n)) =>
                        {
                            if items.is_empty() {
                                return self.fail(self.line, "`.` at the start of a list");
                            }
                            self.i += 1;
                            tail = Some(Box::new(self.read()?));
                            self.skip_ws();
                            if self.s.get(self.i) != Some(&close) {
                                return self.fail(self.line, "expected `)` after the tail of a dotted list");
                            }
                            self.i += 1;
                            break;
                        }
                        _ => items.push(self.read()?),
                    }
                }
                Ok(Sexp::List(items, tail, line))
            }
            b')' | b']' => self.fail(line, "unexpected `)`"),
            b'\'' => {
                self.i += 1;
                let q = self.read()?;
                Ok(Sexp::List(vec![Sexp::Sym("quote".into(), line), q], None, line))
            }
            b'"' => {
                self.i += 1;
                let mut s = Vec::new();
                loop {
                    let Some(&d) = self.s.get(self.i) else {
                        return self.fail(line, "unterminated string");
                    };
                    self.i += 1;
                    match d {
                        b'"' => break,
                        b'\\' => {
                            let Some(&e) = self.s.get(self.i) else {
                                return self.fail(line, "unterminated string");
                            };
                            self.i += 1;
                            s.push(match e {
                                b'n' => b'\n',
                                b't' => b'\t',
                                b'\\' => b'\\',
                                b'"' => b'"',
                                _ => return self.fail(self.line, "unknown escape in string"),
                            });
                        }
                        b'\n' => {
                            self.line += 1;
                            s.push(d);
                        }
                        _ => s.push(d),
                    }
                }
                match String::from_utf8(s) {
                    Ok(s) => Ok(Sexp::Str(s, line)),
                    Err(_) => self.fail(line, "string is not valid UTF-8"),
                }
            }
            _ => {
                let start = self.i;
                while self.i < self.s.len() && !is_delim(self.s[self.i]) {
                    self.i += 1;
                }
                let tok = std::str::from_utf8(&self.s[start..self.i]).map_err(|_| format!("parse error at line {line}: invalid UTF-8"))?;
                if tok == "#t" || tok == "#true" {
                    return Ok(Sexp::Bool(true, line));
                }
                if tok == "#f" || tok == "#false" {
                    return Ok(Sexp::Bool(false, line));
                }
                let digits = tok.strip_prefix(['-', '+']).unwrap_or(tok);
                if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
                    return match tok.parse::<i64>() {
                        Ok(n) if (super::value::FIX_MIN..=super::value::FIX_MAX).contains(&n) => Ok(Sexp::Int(n, line)),
                        _ => self.fail(line, &format!("integer {tok} does not fit in 62 bits")),
                    };
                }
                if tok.starts_with('#') {
                    return self.fail(line, &format!("unknown syntax {tok}"));
                }
                Ok(Sexp::Sym(tok.to_string(), line))
            }
        }
    }
}
