//! DynamoDB expressions, evaluated the way DynamoDB evaluates them, for the
//! fake table: update expressions (`SET` with `+`, `-`, `if_not_exists`,
//! `list_append`; `REMOVE`; `ADD`; `DELETE`) and condition expressions
//! (comparisons, `AND`/`OR`/`NOT`, parentheses, `BETWEEN`, `IN`,
//! `attribute_exists`, `attribute_not_exists`, `attribute_type`,
//! `begins_with`, `contains`, `size`). DynamoDB's validation is kept where a
//! store could get it wrong: undefined or unused placeholders, reserved words
//! used as bare names, overlapping paths, a nested `SET` whose parent does
//! not exist, changing the key. Anything else is an error naming what is not
//! supported, so that a test fails loudly instead of checking less.

use std::collections::{HashMap, HashSet};

use aws_sdk_dynamodb::types::AttributeValue;

/// An item: attribute name → value.
pub(crate) type Item = HashMap<String, AttributeValue>;

/// DynamoDB's reserved words, which an expression cannot use as bare names.
const RESERVED: &str = include_str!("reserved_words.txt");

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    /// `#name`, resolved.
    Name(String),
    /// `:value`.
    Value(String),
    /// A bare word: a name, a keyword or a function.
    Word(String),
    Num(usize),
    Sym(&'static str),
}

fn tokens(text: &str) -> Result<Vec<Tok>, String> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let word = |i: &mut usize| {
        let start = *i;
        while *i < chars.len() && (chars[*i].is_ascii_alphanumeric() || chars[*i] == '_') {
            *i += 1;
        }
        chars[start..*i].iter().collect::<String>()
    };
    while i < chars.len() {
        let c = chars[i];
        match c {
            c if c.is_whitespace() => i += 1,
            '#' | ':' => {
                i += 1;
                let w = word(&mut i);
                if w.is_empty() {
                    return Err(format!("a lone {c:?} in {text:?}"));
                }
                out.push(if c == '#' {
                    Tok::Name(format!("#{w}"))
                } else {
                    Tok::Value(format!(":{w}"))
                });
            }
            c if c.is_ascii_digit() => {
                let w = word(&mut i);
                out.push(Tok::Num(
                    w.parse()
                        .map_err(|_| format!("bad index {w:?} in {text:?}"))?,
                ));
            }
            c if c.is_ascii_alphabetic() || c == '_' => out.push(Tok::Word(word(&mut i))),
            _ => {
                let two: String = chars[i..(i + 2).min(chars.len())].iter().collect();
                let sym = ["<>", "<=", ">="]
                    .into_iter()
                    .find(|s| *s == two)
                    .or_else(|| {
                        ["=", "<", ">", "+", "-", ".", ",", "(", ")", "[", "]"]
                            .into_iter()
                            .find(|s| s.starts_with(c))
                    })
                    .ok_or_else(|| format!("unexpected {c:?} in {text:?}"))?;
                i += sym.len();
                out.push(Tok::Sym(sym));
            }
        }
    }
    Ok(out)
}

/// One step of a document path.
#[derive(Debug, Clone, PartialEq)]
enum Step {
    Attr(String),
    Index(usize),
}

type Path = Vec<Step>;

#[derive(Debug, Clone)]
enum Operand {
    Path(Path),
    Value(AttributeValue),
    IfNotExists(Path, Box<Operand>),
    ListAppend(Box<Operand>, Box<Operand>),
    Size(Path),
    Plus(Box<Operand>, Box<Operand>),
    Minus(Box<Operand>, Box<Operand>),
}

#[derive(Debug)]
enum Cond {
    And(Box<Cond>, Box<Cond>),
    Or(Box<Cond>, Box<Cond>),
    Not(Box<Cond>),
    Cmp(Operand, &'static str, Operand),
    Between(Operand, Operand, Operand),
    In(Operand, Vec<Operand>),
    Exists(Path),
    NotExists(Path),
    Type(Path, Operand),
    BeginsWith(Operand, Operand),
    Contains(Operand, Operand),
}

#[derive(Debug)]
enum Action {
    Set(Path, Operand),
    Remove(Path),
    Add(Path, Operand),
    Delete(Path, Operand),
}

/// The placeholders of one request, and which of them its expressions used.
#[derive(Debug)]
pub(crate) struct Placeholders<'a> {
    names: &'a HashMap<String, String>,
    values: &'a HashMap<String, AttributeValue>,
    used_names: HashSet<String>,
    used_values: HashSet<String>,
}

impl<'a> Placeholders<'a> {
    /// The request's `ExpressionAttributeNames` and `...Values`.
    pub(crate) fn new(
        names: Option<&'a HashMap<String, String>>,
        values: Option<&'a HashMap<String, AttributeValue>>,
    ) -> Self {
        static EMPTY_NAMES: std::sync::OnceLock<HashMap<String, String>> =
            std::sync::OnceLock::new();
        static EMPTY_VALUES: std::sync::OnceLock<HashMap<String, AttributeValue>> =
            std::sync::OnceLock::new();
        Placeholders {
            names: names.unwrap_or_else(|| EMPTY_NAMES.get_or_init(HashMap::new)),
            values: values.unwrap_or_else(|| EMPTY_VALUES.get_or_init(HashMap::new)),
            used_names: HashSet::new(),
            used_values: HashSet::new(),
        }
    }

    /// DynamoDB refuses a request with a placeholder no expression uses.
    pub(crate) fn check_all_used(&self) -> Result<(), String> {
        for n in self.names.keys() {
            if !self.used_names.contains(n) {
                return Err(format!(
                    "Value provided in ExpressionAttributeNames unused in expressions: keys: {{{n}}}"
                ));
            }
        }
        for v in self.values.keys() {
            if !self.used_values.contains(v) {
                return Err(format!(
                    "Value provided in ExpressionAttributeValues unused in expressions: keys: {{{v}}}"
                ));
            }
        }
        Ok(())
    }
}

struct Parser<'p, 'a> {
    toks: Vec<Tok>,
    pos: usize,
    ph: &'p mut Placeholders<'a>,
}

fn keyword(t: Option<&Tok>, k: &str) -> bool {
    matches!(t, Some(Tok::Word(w)) if w.eq_ignore_ascii_case(k))
}

impl<'p, 'a> Parser<'p, 'a> {
    fn new(text: &str, ph: &'p mut Placeholders<'a>) -> Result<Self, String> {
        Ok(Parser {
            toks: tokens(text)?,
            pos: 0,
            ph,
        })
    }

    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }

    fn peek_at(&self, n: usize) -> Option<&Tok> {
        self.toks.get(self.pos + n)
    }

    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.pos).cloned();
        self.pos += 1;
        t
    }

    fn eat(&mut self, sym: &str) -> bool {
        if matches!(self.peek(), Some(Tok::Sym(s)) if *s == sym) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, sym: &str) -> Result<(), String> {
        if self.eat(sym) {
            Ok(())
        } else {
            Err(format!("expected {sym:?}, found {:?}", self.peek()))
        }
    }

    fn at_end(&self) -> bool {
        self.pos >= self.toks.len()
    }

    fn name(&mut self) -> Result<String, String> {
        match self.next() {
            Some(Tok::Name(n)) => {
                let resolved = self
                    .ph
                    .names
                    .get(&n)
                    .ok_or_else(|| {
                        format!("An expression attribute name used in the document path is not defined; attribute name: {n}")
                    })?
                    .clone();
                self.ph.used_names.insert(n);
                Ok(resolved)
            }
            Some(Tok::Word(w)) => {
                if RESERVED.lines().any(|r| r.trim().eq_ignore_ascii_case(&w)) {
                    return Err(format!(
                        "Attribute name is a reserved keyword; reserved keyword: {w}"
                    ));
                }
                Ok(w)
            }
            t => Err(format!("expected an attribute name, found {t:?}")),
        }
    }

    fn path(&mut self) -> Result<Path, String> {
        let mut path = vec![Step::Attr(self.name()?)];
        loop {
            if self.eat(".") {
                path.push(Step::Attr(self.name()?));
            } else if self.eat("[") {
                match self.next() {
                    Some(Tok::Num(n)) => path.push(Step::Index(n)),
                    t => return Err(format!("expected a list index, found {t:?}")),
                }
                self.expect("]")?;
            } else {
                return Ok(path);
            }
        }
    }

    fn value(&mut self, v: &str) -> Result<AttributeValue, String> {
        let value = self
            .ph
            .values
            .get(v)
            .ok_or_else(|| {
                format!("An expression attribute value used in expression is not defined; attribute value: {v}")
            })?
            .clone();
        self.ph.used_values.insert(v.to_owned());
        Ok(value)
    }

    fn function_call(&self) -> Option<String> {
        match (self.peek(), self.peek_at(1)) {
            (Some(Tok::Word(w)), Some(Tok::Sym("("))) => Some(w.to_ascii_lowercase()),
            _ => None,
        }
    }

    fn operand(&mut self) -> Result<Operand, String> {
        if let Some(f) = self.function_call() {
            self.pos += 2;
            let op = match f.as_str() {
                "if_not_exists" => {
                    let p = self.path()?;
                    self.expect(",")?;
                    Operand::IfNotExists(p, Box::new(self.set_value()?))
                }
                "list_append" => {
                    let a = self.set_value()?;
                    self.expect(",")?;
                    Operand::ListAppend(Box::new(a), Box::new(self.set_value()?))
                }
                "size" => Operand::Size(self.path()?),
                _ => return Err(format!("function {f} is not supported here")),
            };
            self.expect(")")?;
            return Ok(op);
        }
        match self.peek().cloned() {
            Some(Tok::Value(v)) => {
                self.pos += 1;
                Ok(Operand::Value(self.value(&v)?))
            }
            _ => Ok(Operand::Path(self.path()?)),
        }
    }

    /// The right-hand side of a `SET` action.
    fn set_value(&mut self) -> Result<Operand, String> {
        let a = self.operand()?;
        if self.eat("+") {
            Ok(Operand::Plus(Box::new(a), Box::new(self.operand()?)))
        } else if self.eat("-") {
            Ok(Operand::Minus(Box::new(a), Box::new(self.operand()?)))
        } else {
            Ok(a)
        }
    }

    fn update(&mut self) -> Result<Vec<Action>, String> {
        let mut actions = Vec::new();
        while !self.at_end() {
            let clause = match self.next() {
                Some(Tok::Word(w)) => w.to_ascii_uppercase(),
                t => return Err(format!("expected SET, REMOVE, ADD or DELETE, found {t:?}")),
            };
            loop {
                let p = self.path()?;
                actions.push(match clause.as_str() {
                    "SET" => {
                        self.expect("=")?;
                        Action::Set(p, self.set_value()?)
                    }
                    "REMOVE" => Action::Remove(p),
                    "ADD" => Action::Add(p, self.operand()?),
                    "DELETE" => Action::Delete(p, self.operand()?),
                    c => return Err(format!("unknown update clause {c}")),
                });
                if !self.eat(",") {
                    break;
                }
            }
        }
        Ok(actions)
    }

    fn condition(&mut self) -> Result<Cond, String> {
        let mut c = self.conjunction()?;
        while keyword(self.peek(), "OR") {
            self.pos += 1;
            c = Cond::Or(Box::new(c), Box::new(self.conjunction()?));
        }
        Ok(c)
    }

    fn conjunction(&mut self) -> Result<Cond, String> {
        let mut c = self.negation()?;
        while keyword(self.peek(), "AND") {
            self.pos += 1;
            c = Cond::And(Box::new(c), Box::new(self.negation()?));
        }
        Ok(c)
    }

    fn negation(&mut self) -> Result<Cond, String> {
        if keyword(self.peek(), "NOT") {
            self.pos += 1;
            return Ok(Cond::Not(Box::new(self.negation()?)));
        }
        if self.eat("(") {
            let c = self.condition()?;
            self.expect(")")?;
            return Ok(c);
        }
        if let Some(f) = self.function_call()
            && f != "size"
        {
            self.pos += 2;
            let c = match f.as_str() {
                "attribute_exists" => Cond::Exists(self.path()?),
                "attribute_not_exists" => Cond::NotExists(self.path()?),
                "attribute_type" => {
                    let p = self.path()?;
                    self.expect(",")?;
                    Cond::Type(p, self.operand()?)
                }
                "begins_with" | "contains" => {
                    let a = self.operand()?;
                    self.expect(",")?;
                    let b = self.operand()?;
                    if f == "contains" {
                        Cond::Contains(a, b)
                    } else {
                        Cond::BeginsWith(a, b)
                    }
                }
                _ => return Err(format!("function {f} is not supported in a condition")),
            };
            self.expect(")")?;
            return Ok(c);
        }
        let a = self.operand()?;
        if keyword(self.peek(), "BETWEEN") {
            self.pos += 1;
            let low = self.operand()?;
            if !keyword(self.next().as_ref(), "AND") {
                return Err("BETWEEN without AND".into());
            }
            return Ok(Cond::Between(a, low, self.operand()?));
        }
        if keyword(self.peek(), "IN") {
            self.pos += 1;
            self.expect("(")?;
            let mut list = vec![self.operand()?];
            while self.eat(",") {
                list.push(self.operand()?);
            }
            self.expect(")")?;
            return Ok(Cond::In(a, list));
        }
        let op = match self.next() {
            Some(Tok::Sym(s)) if ["=", "<>", "<", "<=", ">", ">="].contains(&s) => s,
            t => return Err(format!("expected a comparison, found {t:?}")),
        };
        Ok(Cond::Cmp(a, op, self.operand()?))
    }
}

fn get<'i>(item: &'i Item, path: &Path) -> Option<&'i AttributeValue> {
    let mut steps = path.iter();
    let mut v = match steps.next() {
        Some(Step::Attr(a)) => item.get(a)?,
        _ => return None,
    };
    for s in steps {
        v = match (s, v) {
            (Step::Attr(a), AttributeValue::M(m)) => m.get(a)?,
            (Step::Index(i), AttributeValue::L(l)) => l.get(*i)?,
            _ => return None,
        };
    }
    Some(v)
}

/// The value of `path`'s parent as a container, for a write into it.
fn parent_mut<'i>(item: &'i mut Item, path: &Path) -> Result<Container<'i>, String> {
    let invalid =
        || "The document path provided in the update expression is invalid for update".to_owned();
    let (first, rest) = match path.split_first() {
        Some((Step::Attr(a), rest)) => (a, rest),
        _ => return Err(invalid()),
    };
    if rest.is_empty() {
        return Ok(Container::Item(item));
    }
    let mut v = item.get_mut(first).ok_or_else(invalid)?;
    for s in &rest[..rest.len() - 1] {
        v = match (s, v) {
            (Step::Attr(a), AttributeValue::M(m)) => m.get_mut(a).ok_or_else(invalid)?,
            (Step::Index(i), AttributeValue::L(l)) => l.get_mut(*i).ok_or_else(invalid)?,
            _ => return Err(invalid()),
        };
    }
    match v {
        AttributeValue::M(m) => Ok(Container::Map(m)),
        AttributeValue::L(l) => Ok(Container::List(l)),
        _ => Err(invalid()),
    }
}

enum Container<'i> {
    Item(&'i mut Item),
    Map(&'i mut HashMap<String, AttributeValue>),
    List(&'i mut Vec<AttributeValue>),
}

fn set(item: &mut Item, path: &Path, value: AttributeValue) -> Result<(), String> {
    let last = path.last().cloned();
    match (parent_mut(item, path)?, last) {
        (Container::Item(m) | Container::Map(m), Some(Step::Attr(a))) => {
            m.insert(a, value);
        }
        (Container::List(l), Some(Step::Index(i))) => {
            if i < l.len() {
                l[i] = value;
            } else {
                l.push(value);
            }
        }
        _ => {
            return Err(
                "The document path provided in the update expression is invalid for update".into(),
            );
        }
    }
    Ok(())
}

fn remove(item: &mut Item, path: &Path) -> Result<(), String> {
    let last = path.last().cloned();
    match (parent_mut(item, path), last) {
        (Ok(Container::Item(m) | Container::Map(m)), Some(Step::Attr(a))) => {
            m.remove(&a);
        }
        (Ok(Container::List(l)), Some(Step::Index(i))) if i < l.len() => {
            l.remove(i);
        }
        // Removing what is not there is not an error.
        _ => {}
    }
    Ok(())
}

fn number(v: &AttributeValue) -> Option<f64> {
    v.as_n().ok().and_then(|n| n.parse().ok())
}

fn arithmetic(
    a: &AttributeValue,
    b: &AttributeValue,
    minus: bool,
) -> Result<AttributeValue, String> {
    let (Ok(x), Ok(y)) = (a.as_n(), b.as_n()) else {
        return Err("An operand in the update expression has an incorrect data type".into());
    };
    if let (Ok(x), Ok(y)) = (x.parse::<i128>(), y.parse::<i128>()) {
        return Ok(AttributeValue::N(
            if minus { x - y } else { x + y }.to_string(),
        ));
    }
    let (Some(x), Some(y)) = (number(a), number(b)) else {
        return Err("not a number".into());
    };
    Ok(AttributeValue::N(
        if minus { x - y } else { x + y }.to_string(),
    ))
}

fn eval(item: &Item, op: &Operand) -> Result<Option<AttributeValue>, String> {
    Ok(match op {
        Operand::Path(p) => get(item, p).cloned(),
        Operand::Value(v) => Some(v.clone()),
        Operand::IfNotExists(p, default) => match get(item, p) {
            Some(v) => Some(v.clone()),
            None => eval(item, default)?,
        },
        Operand::ListAppend(a, b) => match (eval(item, a)?, eval(item, b)?) {
            (Some(AttributeValue::L(mut a)), Some(AttributeValue::L(b))) => {
                a.extend(b);
                Some(AttributeValue::L(a))
            }
            _ => return Err("list_append needs two lists".into()),
        },
        Operand::Size(p) => get(item, p).and_then(|v| {
            let n = match v {
                AttributeValue::S(s) => s.len(),
                AttributeValue::B(b) => b.as_ref().len(),
                AttributeValue::L(l) => l.len(),
                AttributeValue::M(m) => m.len(),
                AttributeValue::Ss(s) => s.len(),
                AttributeValue::Ns(s) => s.len(),
                AttributeValue::Bs(s) => s.len(),
                _ => return None,
            };
            Some(AttributeValue::N(n.to_string()))
        }),
        Operand::Plus(a, b) | Operand::Minus(a, b) => match (eval(item, a)?, eval(item, b)?) {
            (Some(x), Some(y)) => Some(arithmetic(&x, &y, matches!(op, Operand::Minus(..)))?),
            _ => {
                return Err(
                    "The provided expression refers to an attribute that does not exist in the item"
                        .into(),
                );
            }
        },
    })
}

fn equal(a: &AttributeValue, b: &AttributeValue) -> bool {
    match (number(a), number(b)) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

fn order(a: &AttributeValue, b: &AttributeValue) -> Option<std::cmp::Ordering> {
    match (a, b) {
        (AttributeValue::N(_), AttributeValue::N(_)) => number(a)?.partial_cmp(&number(b)?),
        (AttributeValue::S(x), AttributeValue::S(y)) => Some(x.cmp(y)),
        (AttributeValue::B(x), AttributeValue::B(y)) => Some(x.as_ref().cmp(y.as_ref())),
        _ => None,
    }
}

fn type_code(v: &AttributeValue) -> &'static str {
    match v {
        AttributeValue::S(_) => "S",
        AttributeValue::N(_) => "N",
        AttributeValue::B(_) => "B",
        AttributeValue::Bool(_) => "BOOL",
        AttributeValue::Null(_) => "NULL",
        AttributeValue::M(_) => "M",
        AttributeValue::L(_) => "L",
        AttributeValue::Ss(_) => "SS",
        AttributeValue::Ns(_) => "NS",
        AttributeValue::Bs(_) => "BS",
        _ => "?",
    }
}

fn holds(item: &Item, c: &Cond) -> Result<bool, String> {
    use std::cmp::Ordering::{Equal, Greater, Less};
    Ok(match c {
        Cond::And(a, b) => holds(item, a)? && holds(item, b)?,
        Cond::Or(a, b) => holds(item, a)? || holds(item, b)?,
        Cond::Not(a) => !holds(item, a)?,
        Cond::Exists(p) => get(item, p).is_some(),
        Cond::NotExists(p) => get(item, p).is_none(),
        Cond::Cmp(a, op, b) => match (eval(item, a)?, eval(item, b)?) {
            (Some(x), Some(y)) => match *op {
                "=" => equal(&x, &y),
                "<>" => !equal(&x, &y),
                _ => {
                    let o = order(&x, &y);
                    match *op {
                        "<" => o == Some(Less),
                        "<=" => matches!(o, Some(Less | Equal)),
                        ">" => o == Some(Greater),
                        _ => matches!(o, Some(Greater | Equal)),
                    }
                }
            },
            // A missing attribute is unequal to anything, and in no order.
            _ => *op == "<>",
        },
        Cond::Between(a, low, high) => {
            match (eval(item, a)?, eval(item, low)?, eval(item, high)?) {
                (Some(x), Some(l), Some(h)) => {
                    matches!(order(&x, &l), Some(Greater | Equal))
                        && matches!(order(&x, &h), Some(Less | Equal))
                }
                _ => false,
            }
        }
        Cond::In(a, list) => match eval(item, a)? {
            Some(x) => {
                let mut found = false;
                for o in list {
                    found |= eval(item, o)?.is_some_and(|y| equal(&x, &y));
                }
                found
            }
            None => false,
        },
        Cond::Type(p, t) => match (get(item, p), eval(item, t)?) {
            (Some(v), Some(AttributeValue::S(t))) => type_code(v) == t,
            _ => false,
        },
        Cond::BeginsWith(a, b) => match (eval(item, a)?, eval(item, b)?) {
            (Some(AttributeValue::S(x)), Some(AttributeValue::S(y))) => x.starts_with(&y),
            (Some(AttributeValue::B(x)), Some(AttributeValue::B(y))) => {
                x.as_ref().starts_with(y.as_ref())
            }
            _ => false,
        },
        Cond::Contains(a, b) => match (eval(item, a)?, eval(item, b)?) {
            (Some(AttributeValue::S(x)), Some(AttributeValue::S(y))) => x.contains(&y),
            (Some(AttributeValue::Ss(x)), Some(AttributeValue::S(y))) => x.contains(&y),
            (Some(AttributeValue::Ns(x)), Some(AttributeValue::N(y))) => x.contains(&y),
            (Some(AttributeValue::L(x)), Some(y)) => x.iter().any(|v| equal(v, &y)),
            _ => false,
        },
    })
}

/// Whether `item` (an empty one if the item does not exist) satisfies the
/// condition expression `text`.
pub(crate) fn condition_holds(
    text: &str,
    item: &Item,
    ph: &mut Placeholders<'_>,
) -> Result<bool, String> {
    let mut p = Parser::new(text, ph)?;
    let c = p.condition()?;
    if !p.at_end() {
        return Err(format!("unexpected {:?} in condition {text:?}", p.peek()));
    }
    holds(item, &c)
}

/// Applies the update expression `text` to `item` (every operand evaluated
/// against the item as it was before the update, as DynamoDB does); `key`
/// names the key attribute, which an update may not touch. Returns the
/// top-level attributes it changed.
pub(crate) fn apply_update(
    text: &str,
    item: &mut Item,
    key: &str,
    ph: &mut Placeholders<'_>,
) -> Result<Vec<String>, String> {
    let mut p = Parser::new(text, ph)?;
    let actions = p.update()?;
    if !p.at_end() {
        return Err(format!("unexpected {:?} in update {text:?}", p.peek()));
    }
    let path_of = |a: &Action| match a {
        Action::Set(p, _) | Action::Remove(p) | Action::Add(p, _) | Action::Delete(p, _) => {
            p.clone()
        }
    };
    let paths: Vec<Path> = actions.iter().map(path_of).collect();
    for (i, a) in paths.iter().enumerate() {
        if a.first() == Some(&Step::Attr(key.to_owned())) {
            return Err(format!(
                "Cannot update attribute {key}. This attribute is part of the key"
            ));
        }
        for b in &paths[i + 1..] {
            let n = a.len().min(b.len());
            if a[..n] == b[..n] {
                return Err(format!(
                    "Two document paths overlap with each other; must remove or rewrite one of these paths; path one: {a:?}, path two: {b:?}"
                ));
            }
        }
    }
    let before = item.clone();
    let mut values = Vec::new();
    for a in &actions {
        values.push(match a {
            Action::Set(_, v) | Action::Add(_, v) | Action::Delete(_, v) => Some(
                eval(&before, v)?
                    .ok_or("The provided expression refers to an attribute that does not exist in the item")?,
            ),
            Action::Remove(_) => None,
        });
    }
    let mut changed = Vec::new();
    for (a, v) in actions.iter().zip(values) {
        let path = path_of(a);
        if let Some(Step::Attr(top)) = path.first() {
            changed.push(top.clone());
        }
        match (a, v) {
            (Action::Set(..), Some(v)) => set(item, &path, v)?,
            (Action::Remove(_), _) => remove(item, &path)?,
            (Action::Add(..), Some(v)) => {
                let new = match (get(item, &path), &v) {
                    (None, _) => v,
                    (Some(old @ AttributeValue::N(_)), AttributeValue::N(_)) => {
                        arithmetic(old, &v, false)?
                    }
                    (Some(AttributeValue::Ss(old)), AttributeValue::Ss(add)) => {
                        let mut s = old.clone();
                        s.extend(add.iter().filter(|x| !old.contains(x)).cloned());
                        AttributeValue::Ss(s)
                    }
                    (Some(AttributeValue::Ns(old)), AttributeValue::Ns(add)) => {
                        let mut s = old.clone();
                        s.extend(add.iter().filter(|x| !old.contains(x)).cloned());
                        AttributeValue::Ns(s)
                    }
                    _ => {
                        return Err(
                            "An operand in the update expression has an incorrect data type".into(),
                        );
                    }
                };
                set(item, &path, new)?;
            }
            (Action::Delete(..), Some(v)) => match (get(item, &path).cloned(), v) {
                (Some(AttributeValue::Ss(old)), AttributeValue::Ss(del)) => {
                    let left: Vec<String> = old.into_iter().filter(|x| !del.contains(x)).collect();
                    if left.is_empty() {
                        remove(item, &path)?;
                    } else {
                        set(item, &path, AttributeValue::Ss(left))?;
                    }
                }
                (None, _) => {}
                _ => return Err("DELETE is supported on string sets only".into()),
            },
            _ => return Err("an action without its value".into()),
        }
    }
    Ok(changed)
}

/// The size DynamoDB bills and limits (400 KB): names and values.
pub(crate) fn item_size(item: &Item) -> usize {
    fn value_size(v: &AttributeValue) -> usize {
        match v {
            AttributeValue::S(s) | AttributeValue::N(s) => s.len(),
            AttributeValue::B(b) => b.as_ref().len(),
            AttributeValue::M(m) => {
                3 + m
                    .iter()
                    .map(|(k, v)| k.len() + value_size(v) + 1)
                    .sum::<usize>()
            }
            AttributeValue::L(l) => 3 + l.iter().map(|v| value_size(v) + 1).sum::<usize>(),
            AttributeValue::Ss(s) | AttributeValue::Ns(s) => s.iter().map(String::len).sum(),
            AttributeValue::Bs(s) => s.iter().map(|b| b.as_ref().len()).sum(),
            _ => 1,
        }
    }
    item.iter().map(|(k, v)| k.len() + value_size(v)).sum()
}
