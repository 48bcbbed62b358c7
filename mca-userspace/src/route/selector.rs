//! Kubernetes label selectors, as `labels.Parse` in k8s.io/apimachinery reads them:
//! `key=value`, `key==value`, `key!=value`, `key in (a,b)`, `key notin (a,b)`, `key`, `!key`,
//! joined by commas, all of which must hold. `key!=value` and `notin` also hold for objects
//! without the key, as in Kubernetes.
//!
//! Routing needs two questions answered: does a set of labels (a created object's) satisfy a
//! route's selector, and does a request's selector (a LIST's `labelSelector`) *imply* the
//! route's — is every object the request can return one the route's selector accepts?

use std::collections::BTreeSet;

/// A parsed selector: every requirement must hold. Empty selects everything.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Selector {
    requirements: Vec<Requirement>,
}

/// One condition on one label.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Requirement {
    key: String,
    op: Op,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Op {
    In(BTreeSet<String>),
    NotIn(BTreeSet<String>),
    Exists,
    DoesNotExist,
}

/// Why a selector could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} (at character {position} of the label selector)")]
pub struct ParseError {
    /// 0-based character offset.
    pub position: usize,
    /// What was wrong.
    pub message: String,
}

impl Selector {
    /// Parses `text`; an empty or blank text selects everything.
    pub fn parse(text: &str) -> Result<Self, ParseError> {
        Parser {
            text,
            chars: text.char_indices().collect(),
            at: 0,
        }
        .selector()
    }

    /// Whether this selector accepts everything.
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// Whether the labels (`label(key)` gives a label's value) satisfy every requirement.
    pub fn matches<'a>(&self, label: impl Fn(&str) -> Option<&'a str>) -> bool {
        self.requirements.iter().all(|r| {
            let value = label(&r.key);
            match &r.op {
                Op::In(values) => value.is_some_and(|v| values.contains(v)),
                Op::NotIn(values) => !value.is_some_and(|v| values.contains(v)),
                Op::Exists => value.is_some(),
                Op::DoesNotExist => value.is_none(),
            }
        })
    }

    /// Whether every label set this selector accepts, `other` accepts too. (A selector no
    /// label set satisfies implies anything.) Allocates nothing: routing asks this per
    /// request.
    pub fn implies(&self, other: &Selector) -> bool {
        let unsatisfiable = self.requirements.iter().any(|r| self.on(&r.key).is_empty());
        unsatisfiable
            || other
                .requirements
                .iter()
                .all(|wanted| self.on(&wanted.key).satisfies(&wanted.op))
    }

    fn on<'a>(&'a self, key: &'a str) -> Domain<'a> {
        Domain {
            requirements: &self.requirements,
            key,
        }
    }
}

/// What a selector allows one label to be: absent, and/or present with some values, worked
/// out from its requirements on that key without building any set.
struct Domain<'a> {
    requirements: &'a [Requirement],
    key: &'a str,
}

impl<'a> Domain<'a> {
    fn ops(&self) -> impl Iterator<Item = &'a Op> + '_ {
        self.requirements
            .iter()
            .filter(|r| r.key == self.key)
            .map(|r| &r.op)
    }

    /// Whether the label may be absent: nothing requires it.
    fn may_be_absent(&self) -> bool {
        !self.ops().any(|op| matches!(op, Op::In(_) | Op::Exists))
    }

    /// Whether the values are unbounded: no `in` or `!key` limits them (a `notin` may still
    /// exclude some).
    fn unbounded(&self) -> bool {
        !self
            .ops()
            .any(|op| matches!(op, Op::In(_) | Op::DoesNotExist))
    }

    /// The values the label may have, when an `in` bounds them (else nothing).
    fn values(&self) -> impl Iterator<Item = &'a str> + '_ {
        let bound = self.ops().find_map(|op| match op {
            Op::In(values) => Some(values),
            _ => None,
        });
        let forbidden = self.ops().any(|op| matches!(op, Op::DoesNotExist));
        bound
            .into_iter()
            .flatten()
            .filter(move |value| {
                !forbidden
                    && self.ops().all(|op| match op {
                        Op::In(values) => values.contains(*value),
                        Op::NotIn(values) => !values.contains(*value),
                        Op::Exists | Op::DoesNotExist => true,
                    })
            })
            .map(String::as_str)
    }

    /// No label set satisfies the selector on this key.
    fn is_empty(&self) -> bool {
        !self.may_be_absent() && !self.unbounded() && self.values().next().is_none()
    }

    /// Whether every possibility satisfies `op`.
    fn satisfies(&self, op: &Op) -> bool {
        match op {
            Op::In(wanted) => {
                !self.may_be_absent()
                    && !self.unbounded()
                    && self.values().all(|value| wanted.contains(value))
            }
            Op::NotIn(unwanted) => {
                if self.unbounded() {
                    // All values but those some `notin` excludes: each unwanted one must be.
                    unwanted.iter().all(|value| {
                        self.ops()
                            .any(|op| matches!(op, Op::NotIn(excluded) if excluded.contains(value)))
                    })
                } else {
                    self.values().all(|value| !unwanted.contains(value))
                }
            }
            Op::Exists => !self.may_be_absent(),
            Op::DoesNotExist => !self.unbounded() && self.values().next().is_none(),
        }
    }
}

/// Characters that end an identifier, as in the Kubernetes lexer.
fn is_special(c: char) -> bool {
    c.is_whitespace() || matches!(c, '!' | '=' | ',' | '(' | ')' | '<' | '>')
}

struct Parser<'a> {
    text: &'a str,
    chars: Vec<(usize, char)>,
    at: usize,
}

impl Parser<'_> {
    fn selector(mut self) -> Result<Selector, ParseError> {
        let mut requirements = Vec::new();
        self.skip_space();
        if self.peek().is_none() {
            return Ok(Selector::default());
        }
        loop {
            requirements.push(self.requirement()?);
            self.skip_space();
            match self.next() {
                None => break,
                Some(',') => self.skip_space(),
                Some(c) => return Err(self.error_before(format!("expected ',' but found {c:?}"))),
            }
        }
        requirements.sort_by(|a: &Requirement, b| a.key.cmp(&b.key));
        Ok(Selector { requirements })
    }

    fn requirement(&mut self) -> Result<Requirement, ParseError> {
        if self.peek() == Some('!') {
            self.at += 1;
            self.skip_space();
            let key = self.key()?;
            return Ok(Requirement {
                key,
                op: Op::DoesNotExist,
            });
        }
        let key = self.key()?;
        self.skip_space();
        let op = match self.peek() {
            None | Some(',') => Op::Exists,
            Some('=') => {
                self.at += 1;
                if self.peek() == Some('=') {
                    self.at += 1;
                }
                Op::In(BTreeSet::from([self.value()?]))
            }
            Some('!') if self.peek_at(1) == Some('=') => {
                self.at += 2;
                Op::NotIn(BTreeSet::from([self.value()?]))
            }
            Some('<' | '>') => {
                return Err(self.error("the < and > operators are not supported here"));
            }
            Some(_) => {
                let start = self.at;
                let word = self.identifier();
                let op = match word.as_str() {
                    "in" => Op::In(self.values()?),
                    "notin" => Op::NotIn(self.values()?),
                    _ => {
                        self.at = start;
                        return Err(self.error(format!(
                            "expected an operator (=, ==, !=, in, notin) after {key:?}"
                        )));
                    }
                };
                return Ok(Requirement { key, op });
            }
        };
        Ok(Requirement { key, op })
    }

    fn key(&mut self) -> Result<String, ParseError> {
        let start = self.at;
        let key = self.identifier();
        if let Err(message) = validate_key(&key) {
            self.at = start;
            return Err(self.error(message));
        }
        Ok(key)
    }

    fn value(&mut self) -> Result<String, ParseError> {
        self.skip_space();
        let start = self.at;
        let value = self.identifier();
        if let Err(message) = validate_value(&value) {
            self.at = start;
            return Err(self.error(message));
        }
        Ok(value)
    }

    fn values(&mut self) -> Result<BTreeSet<String>, ParseError> {
        self.skip_space();
        if self.next() != Some('(') {
            return Err(self.error_before("expected '(' after in/notin"));
        }
        self.skip_space();
        if self.peek() == Some(')') {
            return Err(self.error("the value list of in/notin can't be empty"));
        }
        let mut values = BTreeSet::new();
        loop {
            values.insert(self.value()?);
            self.skip_space();
            match self.next() {
                Some(',') => {}
                Some(')') => break,
                _ => return Err(self.error_before("expected ',' or ')' in a value list")),
            }
        }
        Ok(values)
    }

    fn identifier(&mut self) -> String {
        let start = self.offset();
        while self.peek().is_some_and(|c| !is_special(c)) {
            self.at += 1;
        }
        self.text[start..self.offset()].to_owned()
    }

    fn skip_space(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.at += 1;
        }
    }

    fn peek(&self) -> Option<char> {
        self.peek_at(0)
    }

    fn peek_at(&self, ahead: usize) -> Option<char> {
        self.chars.get(self.at + ahead).map(|(_, c)| *c)
    }

    fn next(&mut self) -> Option<char> {
        let c = self.peek();
        self.at += usize::from(c.is_some());
        c
    }

    fn offset(&self) -> usize {
        self.chars.get(self.at).map_or(self.text.len(), |(i, _)| *i)
    }

    fn error(&self, message: impl Into<String>) -> ParseError {
        ParseError {
            position: self.at,
            message: message.into(),
        }
    }

    /// An error about the character just consumed.
    fn error_before(&self, message: impl Into<String>) -> ParseError {
        ParseError {
            position: self.at.saturating_sub(1),
            message: message.into(),
        }
    }
}

/// A label key: `[prefix/]name`, the prefix a DNS subdomain, the name a label name.
fn validate_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    if let Some(prefix) = prefix {
        let subdomain = !prefix.is_empty()
            && prefix.len() <= 253
            && prefix.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                    && !label.starts_with('-')
                    && !label.ends_with('-')
            });
        if !subdomain {
            return Err(format!(
                "{key:?} has an invalid prefix: it must be a lowercase DNS subdomain"
            ));
        }
    }
    if name.is_empty() {
        return Err("expected a label key".to_owned());
    }
    validate_name(name).map_err(|why| format!("invalid label key {key:?}: {why}"))
}

/// A label value: empty, or like a label name.
fn validate_value(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Ok(());
    }
    validate_name(value).map_err(|why| format!("invalid label value {value:?}: {why}"))
}

fn validate_name(name: &str) -> Result<(), &'static str> {
    let alphanumeric = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    if name.len() > 63 {
        Err("it must be 63 characters or fewer")
    } else if !alphanumeric(name.chars().next()) || !alphanumeric(name.chars().last()) {
        Err("it must begin and end with a letter or digit")
    } else if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        Err("it may contain only letters, digits, '-', '_' and '.'")
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<&'a str> {
        move |key| pairs.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
    }

    #[test]
    fn parses_every_operator() {
        for text in [
            "",
            "  ",
            "tier=web",
            "tier==web",
            "tier!=web",
            "tier in (web, db)",
            "tier notin (web,db)",
            "tier",
            "!tier",
            " ! tier ",
            "app.kubernetes.io/name=mca,tier!=db, env in (prod)",
            "tier=",
            "tier!=",
            "a in (x),b notin (y),c,!d",
        ] {
            assert!(Selector::parse(text).is_ok(), "{text:?}");
        }
    }

    #[test]
    fn rejects_what_kubernetes_rejects() {
        for (text, position) in [
            ("tier=web,", 9),
            ("=web", 0),
            ("tier in web", 8),
            ("tier in (web", 11),
            ("tier in ()", 9),
            ("tier == web db", 12),
            ("tier foo bar", 5),
            ("-tier=web", 0),
            ("tier=-web", 5),
            ("Example.com/tier=web", 0),
            ("/tier=web", 0),
            ("tier>1", 4),
            ("tier=web)", 8),
            (&format!("tier={}", "v".repeat(64)), 5),
        ] {
            let error = Selector::parse(text).expect_err(text);
            assert_eq!(error.position, position, "{text:?}: {error}");
        }
    }

    #[test]
    fn matches_with_kubernetes_semantics() {
        let web = [("tier", "web"), ("env", "prod")];
        let none: [(&str, &str); 0] = [];
        let cases = [
            ("tier=web", true, false),
            ("tier!=web", false, true),
            ("tier!=db", true, true),
            ("tier in (db, web)", true, false),
            ("tier notin (db, web)", false, true),
            ("tier notin (db)", true, true),
            ("tier", true, false),
            ("!tier", false, true),
            ("tier=web,env=prod", true, false),
            ("tier=web,env=dev", false, false),
            ("", true, true),
        ];
        for (text, on_web, on_none) in cases {
            let selector = Selector::parse(text).unwrap();
            assert_eq!(selector.matches(labels(&web)), on_web, "{text:?} on web");
            assert_eq!(selector.matches(labels(&none)), on_none, "{text:?} on none");
        }
    }

    #[test]
    fn implication_between_selectors() {
        let implies = |request: &str, route: &str| {
            Selector::parse(request)
                .unwrap()
                .implies(&Selector::parse(route).unwrap())
        };
        // (request's selector, route's selector, implied)
        let cases = [
            ("tier=web", "tier=web", true),
            ("tier=web,app=x", "tier=web", true),
            ("tier in (web)", "tier=web", true),
            ("tier in (web,db)", "tier=web", false),
            ("tier in (web,db)", "tier in (db,web,cache)", true),
            ("", "tier=web", false),
            ("app=x", "tier=web", false),
            ("tier=web", "tier!=db", true),
            ("", "tier!=db", false),
            ("tier notin (db,cache)", "tier!=db", true),
            ("tier!=cache", "tier!=db", false),
            ("!tier", "tier!=db", true),
            ("!tier", "!tier", true),
            ("tier!=db", "!tier", false),
            ("tier=web", "tier", true),
            ("tier notin (db)", "tier", false),
            ("tier", "tier", true),
            ("tier=web", "!tier", false),
            ("tier in (web,db),tier notin (db)", "tier=web", true),
            // Nothing satisfies the request's selector: it returns nothing, which any
            // route accepts.
            ("tier=web,tier=db", "env=prod", true),
            ("tier=web", "", true),
        ];
        for (request, route, implied) in cases {
            assert_eq!(implies(request, route), implied, "{request:?} ⇒ {route:?}");
        }
    }
}
