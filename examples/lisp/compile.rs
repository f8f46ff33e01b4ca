//! The compiler: s-expressions to a tree of [`Node`]s with lexical addresses.
//!
//! Variables are resolved at compile time: a local is `(depth, index)` into
//! the chain of environment frames, a global is a symbol id indexing the
//! interpreter's globals table. Derived forms (`let`, `let*`, `letrec`,
//! `cond`, `when`, `unless`) are rewritten into core forms.
//!
//! Compiled code lives in ordinary Rust memory and is leaked (`&'static`):
//! closures refer to their `Lambda` by address, and a program defines a
//! bounded amount of code. Quoted heap constants (lists, string literals)
//! are GC objects referenced from that Rust memory, so each is held by a
//! precise [`Root`].

use super::reader::Sexp;
use super::value::*;
use super::Interp;
use usurp::gc::Root;

/// A compiled expression.
pub enum Node {
    /// An immediate constant.
    Const(Value),
    /// A heap constant, rooted for the life of the program.
    Quoted(Root),
    /// A local variable: `depth` frames up, slot `index`.
    Local(usize, usize),
    /// A global variable (symbol id), with the source line for errors.
    Global(u32, u32),
    SetLocal(usize, usize, Box<Node>),
    SetGlobal(u32, Box<Node>, u32),
    DefGlobal(u32, Box<Node>),
    If(Box<Node>, Box<Node>, Box<Node>),
    /// Non-empty.
    Begin(Vec<Node>),
    And(Vec<Node>),
    Or(Vec<Node>),
    Lambda(&'static Lambda),
    /// Callee, arguments, source line.
    Call(Box<Node>, Vec<Node>, u32),
    /// `(let name ((v init) ...) body)`: a frame holding `name` bound to a
    /// closure of the lambda, then a call of it with the inits.
    NamedLet(&'static Lambda, Vec<Node>, u32),
}

/// A compiled procedure.
pub struct Lambda {
    pub name: String,
    pub nparams: usize,
    /// Extra arguments are collected into a list in slot `nparams`.
    pub rest: bool,
    /// Frame slots: parameters, the rest list, then internal defines.
    pub nslots: usize,
    pub body: Node,
}

pub struct Compiler<'a> {
    interp: &'a Interp,
    scopes: Vec<Vec<String>>,
}

type C<T> = Result<T, String>;

fn fail<T>(line: u32, msg: impl std::fmt::Display) -> C<T> {
    Err(format!("line {line}: {msg}"))
}

fn sym(s: &str, line: u32) -> Sexp {
    Sexp::Sym(s.to_string(), line)
}

fn list(v: Vec<Sexp>, line: u32) -> Sexp {
    Sexp::List(v, None, line)
}

impl<'a> Compiler<'a> {
    pub fn new(interp: &'a Interp) -> Compiler<'a> {
        Compiler { interp, scopes: Vec::new() }
    }

    /// Compile a top-level form; the result is leaked (see the module docs).
    pub fn compile_toplevel(&mut self, s: &Sexp) -> C<&'static Node> {
        let n = self.compile(s)?;
        Ok(Box::leak(Box::new(n)))
    }

    fn intern(&self, name: &str, line: u32) -> C<u32> {
        self.interp.intern(name).map_err(|e| format!("line {line}: {e}"))
    }

    fn resolve(&self, name: &str) -> Option<(usize, usize)> {
        for (depth, scope) in self.scopes.iter().rev().enumerate() {
            if let Some(i) = scope.iter().rposition(|v| v == name) {
                return Some((depth, i));
            }
        }
        None
    }

    fn compile(&mut self, s: &Sexp) -> C<Node> {
        match s {
            Sexp::Int(n, _) => Ok(Node::Const(Value::fix(*n))),
            Sexp::Bool(b, _) => Ok(Node::Const(Value::bool(*b))),
            Sexp::Str(..) => self.quote(s),
            Sexp::Sym(name, line) => match self.resolve(name) {
                Some((d, i)) => Ok(Node::Local(d, i)),
                None => Ok(Node::Global(self.intern(name, *line)?, *line)),
            },
            Sexp::List(_, Some(_), line) => fail(*line, "dotted list in code"),
            Sexp::List(items, None, line) => {
                let line = *line;
                let Some(head) = items.first() else {
                    return fail(line, "empty combination ()");
                };
                if let Some(h) = head.as_sym() {
                    if self.resolve(h).is_none() {
                        if let Some(n) = self.special(h, items, line)? {
                            return Ok(n);
                        }
                    }
                }
                let f = self.compile(head)?;
                let args = items[1..].iter().map(|a| self.compile(a)).collect::<C<Vec<_>>>()?;
                Ok(Node::Call(Box::new(f), args, line))
            }
        }
    }

    fn body(&mut self, forms: &[Sexp], line: u32) -> C<Node> {
        if forms.is_empty() {
            return fail(line, "empty body");
        }
        let mut v = forms.iter().map(|f| self.compile(f)).collect::<C<Vec<_>>>()?;
        Ok(if v.len() == 1 { v.pop().unwrap() } else { Node::Begin(v) })
    }

    /// Special forms; `None` if `h` is not one.
    fn special(&mut self, h: &str, items: &[Sexp], line: u32) -> C<Option<Node>> {
        let args = &items[1..];
        let n = match h {
            "quote" => {
                if args.len() != 1 {
                    return fail(line, "quote takes one datum");
                }
                self.quote(&args[0])?
            }
            "if" => {
                if args.len() != 2 && args.len() != 3 {
                    return fail(line, "if takes 2 or 3 forms");
                }
                let c = self.compile(&args[0])?;
                let t = self.compile(&args[1])?;
                let e = match args.get(2) {
                    Some(e) => self.compile(e)?,
                    None => Node::Const(VOID),
                };
                Node::If(Box::new(c), Box::new(t), Box::new(e))
            }
            "begin" => {
                if args.is_empty() {
                    Node::Const(VOID)
                } else {
                    self.body(args, line)?
                }
            }
            "and" | "or" => {
                let v = args.iter().map(|a| self.compile(a)).collect::<C<Vec<_>>>()?;
                if h == "and" {
                    Node::And(v)
                } else {
                    Node::Or(v)
                }
            }
            "define" => return self.define(args, line).map(Some),
            "set!" => {
                let (Some(Sexp::Sym(name, _)), Some(e), 2) = (args.first(), args.get(1), args.len()) else {
                    return fail(line, "set! takes a variable and a value");
                };
                let e = Box::new(self.compile(e)?);
                match self.resolve(name) {
                    Some((d, i)) => Node::SetLocal(d, i, e),
                    None => Node::SetGlobal(self.intern(name, line)?, e, line),
                }
            }
            "lambda" => {
                if args.len() < 2 {
                    return fail(line, "lambda takes parameters and a body");
                }
                Node::Lambda(self.lambda("lambda", &args[0], &args[1..], line)?)
            }
            "let" => {
                if let Some(Sexp::Sym(name, _)) = args.first() {
                    // Named let.
                    if args.len() < 3 {
                        return fail(line, "named let takes a name, bindings and a body");
                    }
                    let (vars, inits) = self.bindings(&args[1], line)?;
                    let inits = inits.iter().map(|e| self.compile(e)).collect::<C<Vec<_>>>()?;
                    self.scopes.push(vec![name.clone()]);
                    let lam = self.lambda(name, &list(vars, line), &args[2..], line);
                    self.scopes.pop();
                    Node::NamedLet(lam?, inits, line)
                } else {
                    if args.len() < 2 {
                        return fail(line, "let takes bindings and a body");
                    }
                    let (vars, inits) = self.bindings(&args[0], line)?;
                    let inits = inits.iter().map(|e| self.compile(e)).collect::<C<Vec<_>>>()?;
                    let lam = self.lambda("let", &list(vars, line), &args[1..], line)?;
                    Node::Call(Box::new(Node::Lambda(lam)), inits, line)
                }
            }
            "let*" => {
                if args.len() < 2 {
                    return fail(line, "let* takes bindings and a body");
                }
                let Sexp::List(bs, None, _) = &args[0] else {
                    return fail(line, "let* bindings must be a list");
                };
                // (let* (b1 b2 ...) body) => (let (b1) (let* (b2 ...) body))
                let rewritten = if bs.len() <= 1 {
                    let mut v = vec![sym("let", line), args[0].clone()];
                    v.extend_from_slice(&args[1..]);
                    list(v, line)
                } else {
                    let mut inner = vec![sym("let*", line), list(bs[1..].to_vec(), line)];
                    inner.extend_from_slice(&args[1..]);
                    list(vec![sym("let", line), list(vec![bs[0].clone()], line), list(inner, line)], line)
                };
                self.compile(&rewritten)?
            }
            "letrec" | "letrec*" => {
                if args.len() < 2 {
                    return fail(line, "letrec takes bindings and a body");
                }
                let (vars, inits) = self.bindings(&args[0], line)?;
                // (letrec ((v e) ...) body) => (let () (define v e) ... body)
                let mut v = vec![sym("let", line), list(vec![], line)];
                for (var, init) in vars.into_iter().zip(inits) {
                    v.push(list(vec![sym("define", line), var, init], line));
                }
                v.extend_from_slice(&args[1..]);
                self.compile(&list(v, line))?
            }
            "cond" => {
                // (cond (c e ...) ... (else e ...)) => nested ifs
                let mut out: Option<Node> = None;
                for clause in args.iter().rev() {
                    let Sexp::List(parts, None, cl) = clause else {
                        return fail(clause.line(), "cond clause must be a list");
                    };
                    if parts.is_empty() {
                        return fail(*cl, "empty cond clause");
                    }
                    let is_else = parts[0].as_sym() == Some("else");
                    if is_else && out.is_some() {
                        return fail(*cl, "else must be the last cond clause");
                    }
                    let body = if parts.len() == 1 { None } else { Some(self.body(&parts[1..], *cl)?) };
                    let rest = out.take().unwrap_or(Node::Const(VOID));
                    out = Some(if is_else {
                        body.unwrap_or(Node::Const(VOID))
                    } else {
                        let c = self.compile(&parts[0])?;
                        match body {
                            Some(b) => Node::If(Box::new(c), Box::new(b), Box::new(rest)),
                            // (cond (x) ...) yields x when true.
                            None => Node::Or(vec![c, rest]),
                        }
                    });
                }
                out.unwrap_or(Node::Const(VOID))
            }
            "when" | "unless" => {
                if args.len() < 2 {
                    return fail(line, format!("{h} takes a test and a body"));
                }
                let c = self.compile(&args[0])?;
                let b = self.body(&args[1..], line)?;
                let (t, e) = if h == "when" { (b, Node::Const(VOID)) } else { (Node::Const(VOID), b) };
                Node::If(Box::new(c), Box::new(t), Box::new(e))
            }
            _ => return Ok(None),
        };
        Ok(Some(n))
    }

    fn bindings(&self, s: &Sexp, line: u32) -> C<(Vec<Sexp>, Vec<Sexp>)> {
        let Sexp::List(bs, None, _) = s else {
            return fail(line, "bindings must be a list of (name value)");
        };
        let mut vars = Vec::new();
        let mut inits = Vec::new();
        for b in bs {
            match b {
                Sexp::List(p, None, _) if p.len() == 2 && p[0].as_sym().is_some() => {
                    vars.push(p[0].clone());
                    inits.push(p[1].clone());
                }
                _ => return fail(b.line(), "a binding must be (name value)"),
            }
        }
        Ok((vars, inits))
    }

    fn define(&mut self, args: &[Sexp], line: u32) -> C<Node> {
        let (name, value) = match args.first() {
            Some(Sexp::Sym(name, _)) if args.len() == 2 => (name.clone(), self.compile(&args[1])?),
            Some(Sexp::List(sig, tail, _)) if !sig.is_empty() && args.len() >= 2 => {
                let Some(name) = sig[0].as_sym() else {
                    return fail(line, "define: the procedure name must be a symbol");
                };
                let params = Sexp::List(sig[1..].to_vec(), tail.clone(), line);
                (name.to_string(), Node::Lambda(self.lambda(name, &params, &args[1..], line)?))
            }
            _ => return fail(line, "define takes a name and a value, or (name params...) and a body"),
        };
        match self.scopes.last() {
            None => Ok(Node::DefGlobal(self.intern(&name, line)?, Box::new(value))),
            Some(scope) => match scope.iter().rposition(|v| *v == name) {
                Some(i) => Ok(Node::SetLocal(0, i, Box::new(value))),
                None => fail(line, "define is only allowed at the top level or at the start of a body"),
            },
        }
    }

    fn lambda(&mut self, name: &str, params: &Sexp, body: &[Sexp], line: u32) -> C<&'static Lambda> {
        let (fixed, rest): (&[Sexp], Option<&Sexp>) = match params {
            Sexp::List(v, t, _) => (v, t.as_deref()),
            Sexp::Sym(..) => (&[], Some(params)),
            _ => return fail(line, "parameters must be a list or a symbol"),
        };
        let mut scope = Vec::new();
        for p in fixed.iter().chain(rest) {
            match p.as_sym() {
                Some(s) => scope.push(s.to_string()),
                None => return fail(p.line(), "a parameter must be a symbol"),
            }
        }
        // Internal defines become frame slots.
        for f in body {
            if let Sexp::List(items, None, _) = f {
                if items.first().and_then(Sexp::as_sym) == Some("define") {
                    match items.get(1) {
                        Some(Sexp::Sym(n, _)) => scope.push(n.clone()),
                        Some(Sexp::List(sig, _, _)) if !sig.is_empty() => {
                            if let Some(n) = sig[0].as_sym() {
                                scope.push(n.to_string())
                            }
                        }
                        _ => {}
                    }
                }
            }
        }
        let nslots = scope.len();
        self.scopes.push(scope);
        let b = self.body(body, line);
        self.scopes.pop();
        Ok(Box::leak(Box::new(Lambda { name: name.to_string(), nparams: fixed.len(), rest: rest.is_some(), nslots, body: b? })))
    }

    /// A quoted datum: immediates inline, heap data built now and rooted.
    fn quote(&self, s: &Sexp) -> C<Node> {
        let v = self.datum(s)?;
        Ok(match v.as_ref() {
            Some(r) => Node::Quoted(self.interp.heap.add_root(Some(r))),
            None => Node::Const(v),
        })
    }

    fn datum(&self, s: &Sexp) -> C<Value> {
        let oom = |e: LispError| format!("line {}: {e}", s.line());
        Ok(match s {
            Sexp::Int(n, _) => Value::fix(*n),
            Sexp::Bool(b, _) => Value::bool(*b),
            Sexp::Sym(n, l) => Value::sym(self.intern(n, *l)?),
            Sexp::Str(t, _) => make_string(t).map_err(oom)?,
            Sexp::List(items, tail, _) => {
                // Built back to front; the partial list lives in a local
                // (scanned conservatively), never in a Rust collection.
                let mut acc = match tail {
                    Some(t) => self.datum(t)?,
                    None => NIL,
                };
                for it in items.iter().rev() {
                    let x = self.datum(it)?;
                    acc = cons(x, acc).map_err(oom)?;
                }
                acc
            }
        })
    }
}
