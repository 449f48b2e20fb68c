//! [`FilterCriteria`]: Lambda's event-source filter patterns, so that a
//! Lambda configuration moves over unchanged. A record that matches none
//! of the patterns is settled as ignored before any attempt: no processor
//! call, no attempt counted, no extra checkpoint write (it is ignored in
//! the batch's first write), counted in
//! `unistream_consumer_records_filtered_total`.
//!
//! A pattern is matched against the record as Lambda shows a Kinesis
//! record: `data` (the record's bytes parsed as JSON; a pattern on `data`
//! never matches bytes that are not JSON), `partitionKey`,
//! `sequenceNumber` (the record's pointer) and
//! `approximateArrivalTimestamp` (seconds since the epoch, when the source
//! knows it).
//!
//! Supported, as in Lambda's and EventBridge's syntax: exact values
//! (strings, numbers, booleans, `null`, `""`), `prefix`, `suffix`,
//! `equals-ignore-case`, `numeric` ranges, `exists`, `anything-but` (a
//! value, a list, or a `prefix`/`suffix`), nested objects, arrays in the
//! data (any element may match), and `$or`. A pattern with anything else
//! (`cidr`, `wildcard`) is refused when it is parsed, never silently
//! ignored.
//!
//! ```
//! use unistream_core::filter::FilterCriteria;
//! use unistream_core::source::{Pointer, SourceRecord};
//!
//! // As in a Lambda `FilterCriteria` (`aws lambda create-event-source-mapping --filter-criteria`).
//! let criteria = FilterCriteria::from_json(r#"{"Filters": [
//!     {"Pattern": "{\"data\": {\"kind\": [\"order\"], \"amount\": [{\"numeric\": [\">\", 100]}]}}"}
//! ]}"#)?;
//! let record = |data: &str| SourceRecord::new(Pointer::from("1"), data.as_bytes().to_vec());
//! assert!(criteria.matches(&record(r#"{"kind": "order", "amount": 250}"#)));
//! assert!(!criteria.matches(&record(r#"{"kind": "order", "amount": 50}"#)));
//! assert!(!criteria.matches(&record("not json")));
//! # Ok::<(), unistream_core::filter::FilterError>(())
//! ```

use serde_json::{Map, Value};

use crate::source::SourceRecord;

/// A pattern that cannot be used, with what is wrong and where.
#[derive(Debug, thiserror::Error)]
#[error("filter pattern: {0}")]
pub struct FilterError(String);

fn bad<T>(msg: impl Into<String>) -> Result<T, FilterError> {
    Err(FilterError(msg.into()))
}

/// One or more patterns; a record is kept when any of them matches
/// (Lambda's `FilterCriteria`).
#[derive(Debug, Clone, PartialEq)]
pub struct FilterCriteria {
    patterns: Vec<Pattern>,
}

impl FilterCriteria {
    /// Parses Lambda's `FilterCriteria` JSON (`{"Filters": [{"Pattern":
    /// "<pattern as a JSON string>"}]}`), a single pattern object, or a
    /// list of pattern objects.
    ///
    /// # Errors
    ///
    /// [`FilterError`] naming the first thing that is not a valid pattern.
    pub fn from_json(json: &str) -> Result<Self, FilterError> {
        let value: Value = serde_json::from_str(json).or_else(|e| bad(format!("not JSON: {e}")))?;
        let patterns = match value {
            Value::Object(mut o) if o.contains_key("Filters") => {
                let Some(Value::Array(filters)) = o.remove("Filters") else {
                    return bad("`Filters` must be a list");
                };
                let mut patterns = Vec::with_capacity(filters.len());
                for (n, f) in filters.into_iter().enumerate() {
                    let text = match f.get("Pattern") {
                        Some(Value::String(s)) => s.clone(),
                        Some(v @ Value::Object(_)) => v.to_string(),
                        _ => return bad(format!("filter {n}: no `Pattern` string")),
                    };
                    let p: Value = serde_json::from_str(&text)
                        .or_else(|e| bad(format!("filter {n}: pattern is not JSON: {e}")))?;
                    patterns.push(Pattern::parse(&p, &format!("filter {n}"))?);
                }
                patterns
            }
            Value::Array(list) => list
                .iter()
                .enumerate()
                .map(|(n, p)| Pattern::parse(p, &format!("pattern {n}")))
                .collect::<Result<_, _>>()?,
            p @ Value::Object(_) => vec![Pattern::parse(&p, "pattern")?],
            _ => return bad("expected `{\"Filters\": [...]}`, a pattern object or a list of them"),
        };
        if patterns.is_empty() {
            return bad("no pattern: a criteria without patterns would drop every record");
        }
        Ok(FilterCriteria { patterns })
    }

    /// Whether the record is kept: one of the patterns matches the record
    /// as Lambda shows it (see the module docs).
    pub fn matches(&self, record: &SourceRecord) -> bool {
        let event = lambda_view(record);
        self.matches_value(&event)
    }

    /// Whether one of the patterns matches `event` (any JSON document).
    pub fn matches_value(&self, event: &Value) -> bool {
        self.patterns.iter().any(|p| p.matches(event))
    }
}

impl std::str::FromStr for FilterCriteria {
    type Err = FilterError;
    fn from_str(s: &str) -> Result<Self, FilterError> {
        FilterCriteria::from_json(s)
    }
}

/// The record as a Lambda Kinesis event record shows it to a filter.
fn lambda_view(record: &SourceRecord) -> Value {
    let mut o = Map::new();
    if let Ok(data) = serde_json::from_slice::<Value>(&record.data) {
        o.insert("data".into(), data);
    }
    if let Some(k) = &record.partition_key {
        o.insert("partitionKey".into(), Value::String(k.clone()));
    }
    o.insert(
        "sequenceNumber".into(),
        Value::String(record.pointer.as_str().to_owned()),
    );
    if let Some(t) = record.arrival_time {
        let secs = t.timestamp_millis() as f64 / 1000.0;
        if let Some(n) = serde_json::Number::from_f64(secs) {
            o.insert("approximateArrivalTimestamp".into(), Value::Number(n));
        }
    }
    Value::Object(o)
}

/// Fields (all must match) and `$or` alternatives (one must match, each).
#[derive(Debug, Clone, PartialEq)]
struct Pattern {
    fields: Vec<(String, Field)>,
    or: Vec<Vec<Pattern>>,
}

#[derive(Debug, Clone, PartialEq)]
enum Field {
    Nested(Pattern),
    /// Any of these matches.
    Any(Vec<Matcher>),
}

#[derive(Debug, Clone, PartialEq)]
enum Matcher {
    Exact(Value),
    Prefix(String),
    Suffix(String),
    IgnoreCase(String),
    Numeric(Vec<(Op, f64)>),
    Exists(bool),
    AnythingBut(Vec<Value>),
    AnythingButPrefix(String),
    AnythingButSuffix(String),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Op {
    Lt,
    Le,
    Eq,
    Ge,
    Gt,
}

impl Pattern {
    fn parse(v: &Value, at: &str) -> Result<Pattern, FilterError> {
        let Value::Object(o) = v else {
            return bad(format!("{at}: a pattern must be a JSON object"));
        };
        let mut p = Pattern {
            fields: Vec::new(),
            or: Vec::new(),
        };
        for (k, v) in o {
            let here = format!("{at}.{k}");
            if k == "$or" {
                let Value::Array(alts) = v else {
                    return bad(format!("{here}: `$or` takes a list of patterns"));
                };
                if alts.len() < 2 {
                    return bad(format!("{here}: `$or` needs at least two patterns"));
                }
                let alts = alts
                    .iter()
                    .enumerate()
                    .map(|(n, a)| Pattern::parse(a, &format!("{here}[{n}]")))
                    .collect::<Result<_, _>>()?;
                p.or.push(alts);
                continue;
            }
            let field = match v {
                Value::Object(_) => Field::Nested(Pattern::parse(v, &here)?),
                Value::Array(ms) if !ms.is_empty() => Field::Any(
                    ms.iter()
                        .map(|m| Matcher::parse(m, &here))
                        .collect::<Result<_, _>>()?,
                ),
                Value::Array(_) => return bad(format!("{here}: an empty list matches nothing")),
                _ => {
                    return bad(format!(
                        "{here}: values must be in a list (`[{v}]`) or be a nested pattern"
                    ));
                }
            };
            p.fields.push((k.clone(), field));
        }
        Ok(p)
    }

    fn matches(&self, event: &Value) -> bool {
        self.fields.iter().all(|(k, f)| {
            let value = event.get(k.as_str());
            match f {
                Field::Nested(p) => value.is_some_and(|v| p.matches(v)),
                Field::Any(ms) => ms.iter().any(|m| m.matches(value)),
            }
        }) && self
            .or
            .iter()
            .all(|alts| alts.iter().any(|p| p.matches(event)))
    }
}

fn string_of(v: &Value, what: &str, at: &str) -> Result<String, FilterError> {
    match v {
        Value::String(s) => Ok(s.clone()),
        _ => bad(format!("{at}: `{what}` takes a string")),
    }
}

impl Matcher {
    fn parse(m: &Value, at: &str) -> Result<Matcher, FilterError> {
        let Value::Object(o) = m else {
            return Ok(Matcher::Exact(m.clone()));
        };
        let mut it = o.iter();
        let (Some((op, arg)), None) = (it.next(), it.next()) else {
            return bad(format!(
                "{at}: a matcher object holds exactly one operator, not {m}"
            ));
        };
        Ok(match op.as_str() {
            "prefix" => Matcher::Prefix(string_of(arg, op, at)?),
            "suffix" => Matcher::Suffix(string_of(arg, op, at)?),
            "equals-ignore-case" => Matcher::IgnoreCase(string_of(arg, op, at)?),
            "exists" => match arg {
                Value::Bool(b) => Matcher::Exists(*b),
                _ => return bad(format!("{at}: `exists` takes true or false")),
            },
            "numeric" => Matcher::Numeric(Self::parse_numeric(arg, at)?),
            "anything-but" => match arg {
                Value::Array(vs) => {
                    if vs.iter().any(|v| !(v.is_string() || v.is_number())) {
                        return bad(format!(
                            "{at}: `anything-but` lists hold strings or numbers"
                        ));
                    }
                    Matcher::AnythingBut(vs.clone())
                }
                Value::String(_) | Value::Number(_) => Matcher::AnythingBut(vec![arg.clone()]),
                Value::Object(inner) => match inner.iter().next() {
                    Some((k, v)) if inner.len() == 1 && k == "prefix" => {
                        Matcher::AnythingButPrefix(string_of(v, "anything-but.prefix", at)?)
                    }
                    Some((k, v)) if inner.len() == 1 && k == "suffix" => {
                        Matcher::AnythingButSuffix(string_of(v, "anything-but.suffix", at)?)
                    }
                    _ => {
                        return bad(format!(
                            "{at}: `anything-but` takes a value, a list, `prefix` or `suffix`"
                        ));
                    }
                },
                _ => return bad(format!("{at}: `anything-but` takes a string or a number")),
            },
            other => {
                return bad(format!(
                    "{at}: operator `{other}` is not supported (prefix, suffix, equals-ignore-case, numeric, exists, anything-but)"
                ));
            }
        })
    }

    fn parse_numeric(arg: &Value, at: &str) -> Result<Vec<(Op, f64)>, FilterError> {
        let Value::Array(parts) = arg else {
            return bad(format!(
                "{at}: `numeric` takes a list like [\">\", 0, \"<=\", 5]"
            ));
        };
        if parts.is_empty() || parts.len() % 2 != 0 || parts.len() > 4 {
            return bad(format!(
                "{at}: `numeric` takes one or two (operator, number) pairs"
            ));
        }
        parts
            .chunks(2)
            .map(|pair| {
                let op = match pair[0].as_str() {
                    Some("<") => Op::Lt,
                    Some("<=") => Op::Le,
                    Some("=") => Op::Eq,
                    Some(">=") => Op::Ge,
                    Some(">") => Op::Gt,
                    _ => {
                        return bad(format!(
                            "{at}: `numeric` operator {} is not one of < <= = >= >",
                            pair[0]
                        ));
                    }
                };
                match pair[1].as_f64() {
                    Some(n) => Ok((op, n)),
                    None => bad(format!("{at}: `numeric` bound {} is not a number", pair[1])),
                }
            })
            .collect()
    }

    /// Whether the event's value (`None`: the field is absent) matches.
    /// A list in the event matches when one of its elements does.
    fn matches(&self, value: Option<&Value>) -> bool {
        match (self, value) {
            (Matcher::Exists(want), v) => *want == v.is_some_and(|v| !v.is_object()),
            (_, None) => false,
            (Matcher::AnythingBut(_), Some(Value::Array(vs))) => {
                vs.iter().all(|v| self.matches_one(v))
            }
            (_, Some(Value::Array(vs))) => vs.iter().any(|v| self.matches_one(v)),
            (_, Some(v)) => self.matches_one(v),
        }
    }

    fn matches_one(&self, v: &Value) -> bool {
        match self {
            Matcher::Exact(want) => match (want, v) {
                (Value::Number(a), Value::Number(b)) => a.as_f64() == b.as_f64(),
                _ => want == v,
            },
            Matcher::Prefix(p) => v.as_str().is_some_and(|s| s.starts_with(p.as_str())),
            Matcher::Suffix(p) => v.as_str().is_some_and(|s| s.ends_with(p.as_str())),
            Matcher::IgnoreCase(p) => v.as_str().is_some_and(|s| s.eq_ignore_ascii_case(p)),
            Matcher::Numeric(bounds) => v.as_f64().is_some_and(|n| {
                bounds.iter().all(|&(op, b)| match op {
                    Op::Lt => n < b,
                    Op::Le => n <= b,
                    Op::Eq => n == b,
                    Op::Ge => n >= b,
                    Op::Gt => n > b,
                })
            }),
            Matcher::AnythingBut(not) => {
                (v.is_string() || v.is_number())
                    && !not.iter().any(|n| match (n, v) {
                        (Value::Number(a), Value::Number(b)) => a.as_f64() == b.as_f64(),
                        _ => n == v,
                    })
            }
            Matcher::AnythingButPrefix(p) => v.as_str().is_some_and(|s| !s.starts_with(p.as_str())),
            Matcher::AnythingButSuffix(p) => v.as_str().is_some_and(|s| !s.ends_with(p.as_str())),
            Matcher::Exists(_) => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn m(pattern: Value, event: Value) -> bool {
        FilterCriteria::from_json(&pattern.to_string())
            .unwrap()
            .matches_value(&event)
    }

    #[test]
    fn exact_values_and_lists_are_or() {
        let p = json!({"data": {"kind": ["order", "refund"], "n": [5]}});
        assert!(m(p.clone(), json!({"data": {"kind": "refund", "n": 5.0}})));
        assert!(!m(p.clone(), json!({"data": {"kind": "other", "n": 5}})));
        assert!(
            !m(p.clone(), json!({"data": {"kind": "order"}})),
            "all fields must match"
        );
        // A list in the event: one element is enough.
        assert!(m(p, json!({"data": {"kind": ["x", "order"], "n": 5}})));
        assert!(m(json!({"a": [null]}), json!({"a": null})));
        assert!(m(json!({"a": [""]}), json!({"a": ""})));
        assert!(!m(json!({"a": [""]}), json!({"a": "x"})));
        assert!(m(json!({"a": [true]}), json!({"a": true})));
    }

    #[test]
    fn string_operators() {
        assert!(m(
            json!({"r": [{"prefix": "us-"}]}),
            json!({"r": "us-east-1"})
        ));
        assert!(!m(
            json!({"r": [{"prefix": "us-"}]}),
            json!({"r": "eu-west-1"})
        ));
        assert!(
            !m(json!({"r": [{"prefix": "1"}]}), json!({"r": 12})),
            "prefix is for strings"
        );
        assert!(m(json!({"f": [{"suffix": ".png"}]}), json!({"f": "a.png"})));
        assert!(m(
            json!({"s": [{"equals-ignore-case": "EventB"}]}),
            json!({"s": "eventb"})
        ));
    }

    #[test]
    fn numeric_ranges() {
        let p = json!({"n": [{"numeric": [">", 0, "<=", 5]}]});
        assert!(m(p.clone(), json!({"n": 5})));
        assert!(m(p.clone(), json!({"n": 0.5})));
        assert!(!m(p.clone(), json!({"n": 0})));
        assert!(!m(p.clone(), json!({"n": 5.01})));
        assert!(!m(p, json!({"n": "3"})), "a string is not a number");
        assert!(m(json!({"n": [{"numeric": ["=", 3]}]}), json!({"n": 3.0})));
    }

    #[test]
    fn exists_and_anything_but() {
        assert!(m(json!({"a": [{"exists": true}]}), json!({"a": 1})));
        assert!(!m(json!({"a": [{"exists": true}]}), json!({"b": 1})));
        assert!(m(json!({"a": [{"exists": false}]}), json!({"b": 1})));
        assert!(!m(json!({"a": [{"exists": false}]}), json!({"a": "x"})));
        let p = json!({"s": [{"anything-but": ["stopped", "overloaded"]}]});
        assert!(m(p.clone(), json!({"s": "running"})));
        assert!(!m(p.clone(), json!({"s": "stopped"})));
        assert!(
            !m(p, json!({"t": "running"})),
            "anything-but needs the field"
        );
        assert!(!m(
            json!({"n": [{"anything-but": 123}]}),
            json!({"n": 123.0})
        ));
        assert!(m(
            json!({"r": [{"anything-but": {"prefix": "us-"}}]}),
            json!({"r": "eu-1"})
        ));
        assert!(!m(
            json!({"r": [{"anything-but": {"prefix": "us-"}}]}),
            json!({"r": "us-1"})
        ));
        assert!(m(
            json!({"f": [{"anything-but": {"suffix": ".png"}}]}),
            json!({"f": "a.jpg"})
        ));
    }

    #[test]
    fn or_of_patterns_and_criteria_lists() {
        let p = json!({"data": {"$or": [{"a": [1]}, {"b": [{"exists": true}]}]}});
        assert!(m(p.clone(), json!({"data": {"a": 1}})));
        assert!(m(p.clone(), json!({"data": {"b": "x"}})));
        assert!(!m(p, json!({"data": {"a": 2}})));
        let lambda = json!({"Filters": [
            {"Pattern": json!({"partitionKey": ["k1"]}).to_string()},
            {"Pattern": json!({"data": {"x": [1]}}).to_string()},
        ]});
        assert!(m(lambda.clone(), json!({"partitionKey": "k1"})));
        assert!(m(
            lambda.clone(),
            json!({"partitionKey": "k2", "data": {"x": 1}})
        ));
        assert!(!m(lambda, json!({"partitionKey": "k2", "data": {"x": 2}})));
    }

    #[test]
    fn bad_patterns_are_refused_with_where() {
        for (p, want) in [
            (json!({"a": "x"}), "in a list"),
            (
                json!({"a": [{"cidr": "10.0.0.0/24"}]}),
                "`cidr` is not supported",
            ),
            (json!({"a": [{"numeric": [">"]}]}), "pairs"),
            (json!({"a": [{"numeric": ["~", 1]}]}), "operator"),
            (json!({"$or": [{"a": [1]}]}), "at least two"),
            (json!({"a": []}), "matches nothing"),
            (json!([]), "no pattern"),
        ] {
            let e = FilterCriteria::from_json(&p.to_string())
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{p}: {e}");
        }
    }

    #[test]
    fn records_are_seen_as_lambda_shows_them() {
        let c = FilterCriteria::from_json(
            &json!({"partitionKey": [{"prefix": "eu"}], "data": {"v": [{"numeric": [">=", 2]}]}})
                .to_string(),
        )
        .unwrap();
        let r = |data: &str, key: &str| {
            SourceRecord::new(crate::source::Pointer::from("7"), data.as_bytes().to_vec())
                .with_keys(Some(key.to_owned()), None)
        };
        assert!(c.matches(&r(r#"{"v": 2}"#, "eu-1")));
        assert!(!c.matches(&r(r#"{"v": 2}"#, "us-1")));
        assert!(!c.matches(&r("{not json", "eu-1")));
        let seq = FilterCriteria::from_json(r#"{"sequenceNumber": ["7"]}"#).unwrap();
        assert!(
            seq.matches(&r("x", "k")),
            "metadata filters need no JSON data"
        );
    }
}
