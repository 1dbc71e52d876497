//! Salt targeting: parse a target expression once, then match it against
//! many minions (an id, its grains and, where known, its compiled pillar).
//!
//! The master evaluates a [`Target`] against every roster entry to compute
//! the set of minions it expects to answer (exact wherever it knows what the
//! target looks at, see below); each minion evaluates the
//! same expression against itself, and the minion's answer is authoritative.
//! One matcher therefore serves both sides, and the invariant it keeps is
//! that parsing does all the fallible work (regexes are compiled, CIDRs and
//! nodegroups resolved, syntax checked) so that [`Target::matches_with`] is
//! a pure, total function: it never fails, never panics and never loops
//! unboundedly, whatever the grains or the pillar hold. Pillar terms (`-I`,
//! `-J`, `I@`, `J@`) match the pillar like grain terms match grains; where
//! the pillar is not known (a syndic never sees its minions' pillars, a
//! master has none before a minion's pillar was compiled) each pillar term
//! is *unknown* and the expression is evaluated in three-valued (Kleene)
//! logic: a minion is a possible match unless the rest of the expression
//! rules it out whatever its pillar holds. A minion matches with its own
//! pillar, so its answer is exact. Nodegroups are expanded into the tree
//! while parsing (bounded in depth and size, a cycle is an error), once, where
//! the target enters the master; [`Target::for_minions`] writes a target
//! that uses them out as the compound expression minions are sent, from
//! the tree, not by rewriting text. Semantics follow SaltStack's matchers
//! (`salt/matchers/*_match.py`, `salt.utils.data.subdict_match`,
//! `salt.utils.minions.nodegroup_comp`); deliberate differences are noted
//! where they occur.

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;

use ipnet::IpNet;
use regex::{Regex, RegexBuilder};
use serde_json::{Map, Value};

pub use crate::glob::fnmatch;
use crate::glob::Glob;
pub use crate::proto::TargetType;

/// The grain key path delimiter Salt uses when none is given.
pub const DEFAULT_DELIMITER: &str = ":";

/// Deepest nesting of parentheses, `not` and nodegroups accepted; keeps the
/// recursive parser and matcher far from the stack limit on hostile input.
const MAX_DEPTH: usize = 64;
/// Most matchers one expression may expand to (nodegroups can reference
/// each other several times, which would otherwise grow exponentially).
const MAX_ATOMS: usize = 4096;
/// Work units one grain matcher may spend on one minion's grains (each
/// key path tried costs one); ample for real grains, a wall for hostile ones.
const GRAIN_MATCH_BUDGET: usize = 20_000;
/// Compiled-size cap for every regex taken from a target (bytes).
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// Why a target expression could not be parsed. Positions are 1-based
/// character positions in the expression that was being parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error("empty target expression")]
    Empty,
    #[error("unknown prefix '{prefix}' at position {pos}")]
    UnknownPrefix { prefix: String, pos: usize },
    #[error("{what} targeting ('{prefix}') is not supported, at position {pos}")]
    Unsupported {
        prefix: String,
        what: &'static str,
        pos: usize,
    },
    #[error("empty pattern after '{prefix}' at position {pos}")]
    EmptyPattern { prefix: String, pos: usize },
    #[error("unbalanced parenthesis at position {pos}")]
    UnbalancedParenthesis { pos: usize },
    #[error("empty parentheses at position {pos}")]
    EmptyParentheses { pos: usize },
    #[error("expected a target after '{op}' at position {pos}")]
    DanglingOperator { op: String, pos: usize },
    #[error("unexpected '{token}' at position {pos}")]
    UnexpectedToken { token: String, pos: usize },
    #[error("missing 'and'/'or' before '{token}' at position {pos}")]
    MissingOperator { token: String, pos: usize },
    #[error("nodegroup '{0}' is not defined")]
    UnknownNodegroup(String),
    #[error("nodegroup '{name}' includes itself ({chain})")]
    RecursiveNodegroup { name: String, chain: String },
    #[error("in nodegroup '{name}': {source}")]
    InNodegroup {
        name: String,
        source: Box<TargetError>,
    },
    #[error("invalid regex '{pattern}': {reason}")]
    InvalidRegex { pattern: String, reason: String },
    #[error("invalid cidr '{text}': {reason}")]
    InvalidCidr { text: String, reason: String },
    /// A grain or pillar target (`what`) without a key/value separator.
    #[error("{what} target '{expr}' has no '{delimiter}' between key and value")]
    KeyWithoutValue {
        what: &'static str,
        expr: String,
        delimiter: String,
    },
    #[error("grain and pillar delimiter must not be empty")]
    EmptyDelimiter,
    #[error("list target names no minion")]
    EmptyList,
    #[error("target nested more than {0} levels deep")]
    TooDeep(usize),
    #[error("target expands to more than {0} matchers")]
    TooLarge(usize),
}

/// A parsed target, ready to be matched many times quickly.
#[derive(Debug, Clone)]
pub struct Target {
    /// The expression tree; leaves hold compiled matchers.
    root: Node,
}

#[derive(Debug, Clone)]
enum Node {
    /// A matcher, with the compound word it was parsed from (empty for a
    /// target that is not compound: that text is the caller's).
    Leaf {
        leaf: Leaf,
        word: Box<str>,
    },
    Not(Box<Node>),
    /// Flattened so long `a and b and c ...` chains stay shallow.
    And(Vec<Node>),
    Or(Vec<Node>),
    /// Parentheses the expression wrote (kept so that it can be written
    /// out again as it was).
    Paren(Box<Node>),
    /// A nodegroup, expanded: its definition's tree.
    Group(Box<Node>),
}

impl Node {
    /// A leaf of a target that is not compound.
    fn bare(leaf: Leaf) -> Self {
        Node::Leaf {
            leaf,
            word: Box::default(),
        }
    }

    /// This node without the parentheses and nodegroups around it.
    fn unwrapped(&self) -> &Node {
        let mut node = self;
        // Bounded by the parse depth.
        loop {
            match node {
                Node::Paren(inner) | Node::Group(inner) => node = inner,
                other => return other,
            }
        }
    }

    fn has_pillar(&self) -> bool {
        match self {
            Node::Leaf { leaf, .. } => matches!(leaf, Leaf::Pillar(_)),
            Node::Not(inner) | Node::Paren(inner) | Node::Group(inner) => inner.has_pillar(),
            Node::And(items) | Node::Or(items) => items.iter().any(Node::has_pillar),
        }
    }

    fn has_group(&self) -> bool {
        match self {
            Node::Leaf { .. } => false,
            Node::Group(_) => true,
            Node::Not(inner) | Node::Paren(inner) => inner.has_group(),
            Node::And(items) | Node::Or(items) => items.iter().any(Node::has_group),
        }
    }

    /// Write this node out as a compound expression, each nodegroup as its
    /// definition in `( … )`.
    fn render(&self, out: &mut String) {
        let join = |items: &[Node], op: &str, out: &mut String| {
            for (i, n) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(op);
                }
                n.render(out);
            }
        };
        match self {
            Node::Leaf { word, .. } => out.push_str(word),
            Node::Not(inner) => {
                out.push_str("not ");
                inner.render(out);
            }
            Node::And(items) => join(items, " and ", out),
            Node::Or(items) => join(items, " or ", out),
            Node::Paren(inner) => {
                out.push('(');
                inner.render(out);
                out.push(')');
            }
            Node::Group(inner) => {
                out.push_str("( ");
                inner.render(out);
                out.push_str(" )");
            }
        }
    }
}

#[derive(Debug, Clone)]
enum Leaf {
    Glob(Glob),
    /// Matched like Python `re.match`: anchored at the start only.
    Pcre(Regex),
    List(IdList),
    Grain(GrainMatcher),
    /// Matched against the pillar, with the grain rules (Salt's
    /// `pillar_match` is `subdict_match` on the pillar as `grain_match`
    /// is on the grains).
    Pillar(GrainMatcher),
    Ipcidr(Cidr),
}

/// Ids of a list target: the order given (for reporting) and a set (for
/// matching large lists in constant time).
#[derive(Debug, Clone)]
struct IdList {
    ordered: Vec<String>,
    set: HashSet<String>,
}

#[derive(Debug, Clone)]
enum Cidr {
    /// A single address: matches when the minion has exactly this address.
    Addr(IpAddr),
    Net(IpNet),
}

/// Parse `expr` as a target of type `tgt_type`, with the default grain
/// delimiter `:` used to validate grain expressions.
pub fn parse(
    expr: &str,
    tgt_type: TargetType,
    nodegroups: &BTreeMap<String, String>,
) -> Result<Target, TargetError> {
    parse_with_delimiter(expr, tgt_type, nodegroups, DEFAULT_DELIMITER)
}

/// Like [`parse`], but grain expressions are validated and pre-split with
/// `delimiter` (the job's `delimiter`, Salt's `--delimiter`). Matching with
/// another delimiter still works, it just re-splits on every call.
pub fn parse_with_delimiter(
    expr: &str,
    tgt_type: TargetType,
    nodegroups: &BTreeMap<String, String>,
    delimiter: &str,
) -> Result<Target, TargetError> {
    if delimiter.is_empty() {
        return Err(TargetError::EmptyDelimiter);
    }
    if expr.trim().is_empty() {
        return Err(TargetError::Empty);
    }
    let mut ctx = Ctx {
        nodegroups,
        delimiter,
        stack: Vec::new(),
        atoms: 0,
    };
    let root = match tgt_type {
        TargetType::Glob => Node::bare(Leaf::Glob(Glob::new(expr))),
        TargetType::Pcre => Node::bare(Leaf::Pcre(compile_regex(expr, false)?)),
        TargetType::List => Node::bare(Leaf::List(parse_list(expr)?)),
        TargetType::Grain => Node::bare(Leaf::Grain(GrainMatcher::new(
            expr,
            false,
            delimiter,
            Subject::Grains,
        )?)),
        TargetType::GrainPcre => Node::bare(Leaf::Grain(GrainMatcher::new(
            expr,
            true,
            delimiter,
            Subject::Grains,
        )?)),
        TargetType::Pillar => Node::bare(Leaf::Pillar(GrainMatcher::new(
            expr,
            false,
            delimiter,
            Subject::Pillar,
        )?)),
        TargetType::PillarPcre => Node::bare(Leaf::Pillar(GrainMatcher::new(
            expr,
            true,
            delimiter,
            Subject::Pillar,
        )?)),
        TargetType::Ipcidr => Node::bare(Leaf::Ipcidr(parse_cidr(expr.trim())?)),
        TargetType::Compound => parse_compound(expr, &mut ctx, 0)?,
        TargetType::Nodegroup => expand_nodegroup(expr.trim(), &mut ctx, 0)?,
    };
    Ok(Target { root })
}

impl Target {
    /// Whether the minion `id` with these `grains` (a JSON object) may be
    /// targeted when its pillar is not known here: the same as
    /// [`Target::matches_with`] with `pillar: None`, so exact for a target
    /// without pillar terms. `delimiter` is the grain and pillar key path
    /// delimiter (":" by default); an empty delimiter makes grain and
    /// pillar matchers never match.
    pub fn matches(&self, id: &str, grains: &Value, delimiter: &str) -> bool {
        self.matches_with(id, grains, None, delimiter)
    }

    /// Whether the minion `id` with these `grains` and this compiled
    /// `pillar` (a JSON object) is targeted. With `Some(pillar)` the answer
    /// is exact. With `None` (the pillar is not known here) every pillar
    /// term is unknown and the expression is evaluated three-valued
    /// (Kleene `and`/`or`/`not`); the answer is true for "yes" and for
    /// "unknown": the minion *may* match, and only it can tell. So
    /// `not I@role:web` may match a minion whose pillar is unknown, while
    /// `G@os:Debian and I@role:web` does not match a minion that is not
    /// Debian, whatever its pillar.
    pub fn matches_with(
        &self,
        id: &str,
        grains: &Value,
        pillar: Option<&Value>,
        delimiter: &str,
    ) -> bool {
        self.truth(id, grains, pillar, delimiter) != Truth::No
    }

    /// The three-valued answer behind [`Target::matches_with`].
    fn truth(&self, id: &str, grains: &Value, pillar: Option<&Value>, delimiter: &str) -> Truth {
        let minion = Minion {
            id,
            grains,
            pillar,
            delimiter,
        };
        eval(&self.root, &minion)
    }

    /// Whether the target has a pillar term (`-I`, `-J`, `I@`, `J@`, also
    /// inside a nodegroup): only then does the pillar change the answer.
    pub fn uses_pillar(&self) -> bool {
        self.root.has_pillar()
    }

    /// For a pure list target (`-L`, a compound that is a single `L@`, or a
    /// nodegroup that is a plain list): the ids it names, in the order
    /// given, so the master can report named-but-unknown ids.
    pub fn listed_ids(&self) -> Option<Vec<String>> {
        match self.root.unwrapped() {
            Node::Leaf {
                leaf: Leaf::List(list),
                ..
            } => Some(list.ordered.clone()),
            _ => None,
        }
    }

    /// What minions are sent instead of a target that uses nodegroups
    /// (they do not know them): a compound expression with every
    /// nodegroup written out, in `( … )` inside an expression (the
    /// target's own parentheses kept), bare when the whole target is one.
    /// None when the target uses no nodegroup: send it as it was given.
    pub fn for_minions(&self) -> Option<String> {
        if !self.root.has_group() {
            return None;
        }
        let mut out = String::new();
        match &self.root {
            Node::Group(inner) => inner.render(&mut out),
            root => root.render(&mut out),
        }
        Some(out)
    }
}

/// What one minion is matched on.
struct Minion<'a> {
    id: &'a str,
    grains: &'a Value,
    /// `None`: not known here (pillar terms are unknown).
    pillar: Option<&'a Value>,
    delimiter: &'a str,
}

/// A three-valued (Kleene) truth value: a pillar term whose pillar is not
/// known is `Unknown`, and so is an expression whose value depends on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Truth {
    No,
    Unknown,
    Yes,
}

impl Truth {
    fn of(b: bool) -> Truth {
        if b {
            Truth::Yes
        } else {
            Truth::No
        }
    }

    fn not(self) -> Truth {
        match self {
            Truth::No => Truth::Yes,
            Truth::Unknown => Truth::Unknown,
            Truth::Yes => Truth::No,
        }
    }
}

/// Kleene `and`: no if any is no, else unknown if any is unknown, else
/// yes. Stops at the first no.
fn eval_and(items: &[Node], minion: &Minion<'_>) -> Truth {
    let mut out = Truth::Yes;
    for n in items {
        match eval(n, minion) {
            Truth::No => return Truth::No,
            Truth::Unknown => out = Truth::Unknown,
            Truth::Yes => {}
        }
    }
    out
}

/// Kleene `or`: yes if any is yes, else unknown if any is unknown, else
/// no. Stops at the first yes.
fn eval_or(items: &[Node], minion: &Minion<'_>) -> Truth {
    let mut out = Truth::No;
    for n in items {
        match eval(n, minion) {
            Truth::Yes => return Truth::Yes,
            Truth::Unknown => out = Truth::Unknown,
            Truth::No => {}
        }
    }
    out
}

fn eval(node: &Node, minion: &Minion<'_>) -> Truth {
    match node {
        Node::Leaf { leaf, .. } => leaf.eval(minion),
        Node::Paren(inner) | Node::Group(inner) => eval(inner, minion),
        Node::Not(inner) => eval(inner, minion).not(),
        Node::And(items) => eval_and(items, minion),
        Node::Or(items) => eval_or(items, minion),
    }
}

impl Leaf {
    fn eval(&self, m: &Minion<'_>) -> Truth {
        match self {
            Leaf::Glob(glob) => Truth::of(glob.matches(m.id)),
            Leaf::Pcre(re) => Truth::of(match_at_start(re, m.id)),
            Leaf::List(list) => Truth::of(list.set.contains(m.id)),
            Leaf::Grain(matcher) => Truth::of(matcher.matches(m.grains, m.delimiter)),
            Leaf::Pillar(matcher) => match m.pillar {
                Some(pillar) => Truth::of(matcher.matches(pillar, m.delimiter)),
                None => Truth::Unknown,
            },
            Leaf::Ipcidr(cidr) => Truth::of(cidr.matches(m.grains)),
        }
    }
}

// ---------------------------------------------------------------------------
// pcre, list, ipcidr

fn compile_regex(pattern: &str, case_insensitive: bool) -> Result<Regex, TargetError> {
    RegexBuilder::new(pattern)
        .case_insensitive(case_insensitive)
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|e| TargetError::InvalidRegex {
            pattern: pattern.to_string(),
            reason: regex_reason(&e),
        })
}

/// The one-line cause out of the regex crate's multi-line error text.
fn regex_reason(err: &regex::Error) -> String {
    let text = err.to_string();
    text.lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix("error: ").map(str::to_string))
        .unwrap_or_else(|| text.split_whitespace().collect::<Vec<_>>().join(" "))
}

/// Python `re.match` semantics: a match must start at the beginning. The
/// leftmost match starts at 0 exactly when any match does.
fn match_at_start(re: &Regex, text: &str) -> bool {
    re.find(text).is_some_and(|m| m.start() == 0)
}

fn parse_list(expr: &str) -> Result<IdList, TargetError> {
    let mut ordered = Vec::new();
    let mut set = HashSet::new();
    for item in expr.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        if set.insert(item.to_string()) {
            ordered.push(item.to_string());
        }
    }
    if ordered.is_empty() {
        return Err(TargetError::EmptyList);
    }
    Ok(IdList { ordered, set })
}

/// An address or a network. Like Salt (Python `ip_network`, strict), a
/// network with host bits set is refused rather than silently truncated.
fn parse_cidr(text: &str) -> Result<Cidr, TargetError> {
    if let Ok(addr) = text.parse::<IpAddr>() {
        return Ok(Cidr::Addr(addr));
    }
    let net = text
        .parse::<IpNet>()
        .map_err(|e| TargetError::InvalidCidr {
            text: text.to_string(),
            reason: e.to_string(),
        })?;
    if net.trunc() != net {
        return Err(TargetError::InvalidCidr {
            text: text.to_string(),
            reason: format!("host bits set (network is {})", net.trunc()),
        });
    }
    Ok(Cidr::Net(net))
}

impl Cidr {
    /// True when any address in grains `ipv4` (or `ipv6`, by the target's
    /// family) is this address or inside this network.
    fn matches(&self, grains: &Value) -> bool {
        let v4 = match self {
            Cidr::Addr(a) => a.is_ipv4(),
            Cidr::Net(n) => matches!(n, IpNet::V4(_)),
        };
        let key = if v4 { "ipv4" } else { "ipv6" };
        let addrs: Vec<&str> = match grains.get(key) {
            Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).collect(),
            Some(Value::String(s)) => vec![s.as_str()],
            _ => return false,
        };
        addrs
            .iter()
            .filter_map(|s| s.trim().parse::<IpAddr>().ok())
            .any(|addr| match self {
                Cidr::Addr(a) => *a == addr,
                Cidr::Net(n) => n.contains(&addr),
            })
    }
}

// ---------------------------------------------------------------------------
// grains

/// What a key/value matcher looks into (named in its parse errors).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Subject {
    Grains,
    Pillar,
}

impl Subject {
    fn name(self) -> &'static str {
        match self {
            Subject::Grains => "grain",
            Subject::Pillar => "pillar",
        }
    }
}

/// `key:value` against nested grains (or pillar), as Salt's
/// `subdict_match`: every way of splitting the expression at a delimiter
/// is tried (so `ipv6:::1` and `kernelrelease:5.1:x` work); values compare
/// case-insensitively, by fnmatch (`-G`, `-I`) or by a regex anchored at
/// the start (`-P`, `-J`).
#[derive(Debug, Clone)]
struct GrainMatcher {
    expr: String,
    regex: bool,
    /// Set by the compound `G<d>@` form; wins over the caller's delimiter.
    own_delimiter: Option<String>,
    /// The delimiter `splits` was prepared with.
    split_with: String,
    splits: Vec<GrainSplit>,
}

#[derive(Debug, Clone)]
struct GrainSplit {
    path: Vec<String>,
    /// The value part as written, for descending into dict values.
    raw: String,
    value: ValuePattern,
}

#[derive(Debug, Clone)]
enum ValuePattern {
    /// Pattern already lowercased.
    Glob(Glob),
    /// `None` when this split's value is not a valid regex: it never matches
    /// (Salt logs and goes on with the other splits).
    Regex(Option<Regex>),
}

impl ValuePattern {
    fn new(raw: &str, regex: bool) -> ValuePattern {
        if regex {
            ValuePattern::Regex(compile_regex(raw, true).ok())
        } else {
            ValuePattern::Glob(Glob::new(&raw.to_lowercase()))
        }
    }

    fn matches_text(&self, text: &str) -> bool {
        match self {
            ValuePattern::Glob(glob) => glob.matches(&text.to_lowercase()),
            ValuePattern::Regex(Some(re)) => match_at_start(re, text),
            ValuePattern::Regex(None) => false,
        }
    }

    /// Scalars compare by their Python string form (`True`, `None`, `5`).
    fn matches_value(&self, value: &Value) -> bool {
        match value {
            Value::String(s) => self.matches_text(s),
            Value::Number(n) => self.matches_text(&n.to_string()),
            Value::Bool(true) => self.matches_text("True"),
            Value::Bool(false) => self.matches_text("False"),
            Value::Null => self.matches_text("None"),
            Value::Array(_) | Value::Object(_) => false,
        }
    }
}

fn build_splits(expr: &str, delimiter: &str, regex: bool) -> Vec<GrainSplit> {
    if delimiter.is_empty() {
        return Vec::new();
    }
    let parts: Vec<&str> = expr.split(delimiter).collect();
    (1..parts.len())
        .map(|idx| {
            let raw = parts[idx..].join(delimiter);
            GrainSplit {
                path: parts[..idx].iter().map(|s| s.to_string()).collect(),
                value: ValuePattern::new(&raw, regex),
                raw,
            }
        })
        .collect()
}

impl GrainMatcher {
    fn new(
        expr: &str,
        regex: bool,
        delimiter: &str,
        subject: Subject,
    ) -> Result<GrainMatcher, TargetError> {
        GrainMatcher::build(expr, regex, delimiter, None, subject)
    }

    fn build(
        expr: &str,
        regex: bool,
        delimiter: &str,
        own_delimiter: Option<String>,
        subject: Subject,
    ) -> Result<GrainMatcher, TargetError> {
        let split_with = own_delimiter
            .clone()
            .unwrap_or_else(|| delimiter.to_string());
        if !expr.contains(split_with.as_str()) {
            return Err(TargetError::KeyWithoutValue {
                what: subject.name(),
                expr: expr.to_string(),
                delimiter: split_with,
            });
        }
        let splits = build_splits(expr, &split_with, regex);
        if regex
            && !splits
                .iter()
                .any(|s| matches!(s.value, ValuePattern::Regex(Some(_))))
        {
            // No split yields a usable regex: report the simplest reading.
            let raw = splits.first().map(|s| s.raw.clone()).unwrap_or_default();
            return Err(match compile_regex(&raw, true) {
                Err(e) => e,
                Ok(_) => TargetError::InvalidRegex {
                    pattern: raw,
                    reason: "no usable key/value split".to_string(),
                },
            });
        }
        Ok(GrainMatcher {
            expr: expr.to_string(),
            regex,
            own_delimiter,
            split_with,
            splits,
        })
    }

    fn matches(&self, grains: &Value, delimiter: &str) -> bool {
        let delim = self.own_delimiter.as_deref().unwrap_or(delimiter);
        let mut budget = Budget(GRAIN_MATCH_BUDGET);
        if delim == self.split_with {
            subdict_match(grains, &self.splits, delim, self.regex, &mut budget)
        } else {
            let splits = build_splits(&self.expr, delim, self.regex);
            subdict_match(grains, &splits, delim, self.regex, &mut budget)
        }
    }
}

/// Walk `path` through nested objects; inside a list a segment is an index,
/// or else a key looked up in the list's embedded objects (Salt's
/// `traverse_dict_and_list`).
fn traverse<'a>(data: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut node = data;
    for seg in path {
        node = match node {
            Value::Object(map) => map.get(seg)?,
            Value::Array(items) => match seg.parse::<usize>() {
                Ok(idx) => items.get(idx)?,
                Err(_) => items
                    .iter()
                    .filter_map(Value::as_object)
                    .find_map(|m| m.get(seg))?,
            },
            _ => return None,
        };
    }
    Some(node)
}

/// Remaining work units for one grain match: trying every split of every
/// nested value is exponential in the pattern's length on hostile grains,
/// so the walk gives up (no match) when the budget runs out.
struct Budget(usize);

impl Budget {
    fn spend(&mut self) -> bool {
        match self.0.checked_sub(1) {
            Some(left) => {
                self.0 = left;
                true
            }
            None => false,
        }
    }
}

fn subdict_match(
    data: &Value,
    splits: &[GrainSplit],
    delimiter: &str,
    regex: bool,
    budget: &mut Budget,
) -> bool {
    for split in splits {
        if !budget.spend() {
            return false;
        }
        let Some(node) = traverse(data, &split.path) else {
            continue;
        };
        let hit = match node {
            // Salt treats an empty dict like a missing key.
            Value::Object(map) if map.is_empty() => false,
            Value::Object(map) => dict_match(node, map, &split.raw, delimiter, regex, budget),
            Value::Array(items) => items.iter().any(|member| {
                let in_dict = match member {
                    Value::Object(m) => dict_match(member, m, &split.raw, delimiter, regex, budget),
                    _ => false,
                };
                in_dict || split.value.matches_value(member)
            }),
            scalar => split.value.matches_value(scalar),
        };
        if hit {
            return true;
        }
    }
    false
}

/// The value part of a grain target met a dict (`node`, whose map is
/// `map`): it matches when it names a key of it (`*` for any), or matches
/// further down; a `*<delim>` prefix also matches any key or list member
/// one level down.
fn dict_match(
    node: &Value,
    map: &Map<String, Value>,
    pattern: &str,
    delimiter: &str,
    regex: bool,
    budget: &mut Budget,
) -> bool {
    if !budget.spend() {
        return false;
    }
    let wildcard_prefix = format!("*{delimiter}");
    let (wildcard, pattern) = match pattern.strip_prefix(wildcard_prefix.as_str()) {
        Some(rest) => (true, rest),
        None => (false, pattern),
    };
    if pattern == "*" || map.contains_key(pattern) {
        return true;
    }
    let splits = build_splits(pattern, delimiter, regex);
    if subdict_match(node, &splits, delimiter, regex, budget) {
        return true;
    }
    if wildcard {
        let value = ValuePattern::new(pattern, regex);
        for (key, val) in map {
            if !budget.spend() {
                return false;
            }
            if value.matches_text(key) {
                return true;
            }
            let hit = match val {
                Value::Object(inner) => dict_match(val, inner, pattern, delimiter, regex, budget),
                Value::Array(items) => items.iter().any(|i| value.matches_value(i)),
                _ => false,
            };
            if hit {
                return true;
            }
        }
    }
    false
}

// ---------------------------------------------------------------------------
// compound expressions and nodegroups

/// State shared while parsing one target (through its nodegroups).
struct Ctx<'a> {
    nodegroups: &'a BTreeMap<String, String>,
    delimiter: &'a str,
    /// Nodegroups being expanded, outermost first (recursion guard).
    stack: Vec<String>,
    /// Leaves built so far (expansion-size guard).
    atoms: usize,
}

impl Ctx<'_> {
    /// A leaf parsed from compound word `word`.
    fn leaf(&mut self, leaf: Leaf, word: &str) -> Result<Node, TargetError> {
        self.atoms += 1;
        if self.atoms > MAX_ATOMS {
            return Err(TargetError::TooLarge(MAX_ATOMS));
        }
        Ok(Node::Leaf {
            leaf,
            word: word.into(),
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TokKind<'a> {
    And,
    Or,
    Not,
    Open,
    Close,
    Word(&'a str),
}

#[derive(Debug, Clone, Copy)]
struct Tok<'a> {
    kind: TokKind<'a>,
    /// 1-based character position in the expression.
    pos: usize,
}

impl Tok<'_> {
    fn text(&self) -> &str {
        match self.kind {
            TokKind::And => "and",
            TokKind::Or => "or",
            TokKind::Not => "not",
            TokKind::Open => "(",
            TokKind::Close => ")",
            TokKind::Word(w) => w,
        }
    }
}

/// Split on whitespace; parentheses may touch words: leading `(`s are
/// always split off, trailing `)`s only while the word has more `)` than
/// `(` (so `E@web(1|2)` keeps its group).
fn tokenize(expr: &str) -> Vec<Tok<'_>> {
    let mut toks = Vec::new();
    let mut start: Option<(usize, usize)> = None; // (byte offset, char pos)
    let mut char_pos = 0usize;
    for (off, c) in expr.char_indices() {
        char_pos += 1;
        if c.is_whitespace() {
            if let Some((s, p)) = start.take() {
                split_word(&expr[s..off], p, &mut toks);
            }
        } else if start.is_none() {
            start = Some((off, char_pos));
        }
    }
    if let Some((s, p)) = start {
        split_word(&expr[s..], p, &mut toks);
    }
    toks
}

fn split_word<'a>(word: &'a str, pos: usize, toks: &mut Vec<Tok<'a>>) {
    let mut rest = word;
    let mut pos = pos;
    while let Some(r) = rest.strip_prefix('(') {
        toks.push(Tok {
            kind: TokKind::Open,
            pos,
        });
        rest = r;
        pos += 1;
    }
    let mut closes = 0usize;
    let opens_in = rest.matches('(').count();
    let mut closes_in = rest.matches(')').count();
    while closes_in > opens_in {
        match rest.strip_suffix(')') {
            Some(r) => rest = r,
            None => break,
        }
        closes += 1;
        closes_in -= 1;
    }
    if !rest.is_empty() {
        let kind = match rest {
            "and" => TokKind::And,
            "or" => TokKind::Or,
            "not" => TokKind::Not,
            w => TokKind::Word(w),
        };
        toks.push(Tok { kind, pos });
    }
    let close_start = pos + rest.chars().count();
    for k in 0..closes {
        toks.push(Tok {
            kind: TokKind::Close,
            pos: close_start + k,
        });
    }
}

fn parse_compound(expr: &str, ctx: &mut Ctx<'_>, depth: usize) -> Result<Node, TargetError> {
    let toks = tokenize(expr);
    if toks.is_empty() {
        return Err(TargetError::Empty);
    }
    let mut parser = Parser { toks, i: 0 };
    let node = parser.parse_or(ctx, depth)?;
    match parser.peek() {
        None => Ok(node),
        Some(t) if t.kind == TokKind::Close => {
            Err(TargetError::UnbalancedParenthesis { pos: t.pos })
        }
        Some(t) => Err(TargetError::UnexpectedToken {
            token: t.text().to_string(),
            pos: t.pos,
        }),
    }
}

/// Recursive descent with Python's precedence: `not` > `and` > `or`.
struct Parser<'a> {
    toks: Vec<Tok<'a>>,
    i: usize,
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<Tok<'a>> {
        self.toks.get(self.i).copied()
    }

    fn next(&mut self) -> Option<Tok<'a>> {
        let t = self.peek();
        if t.is_some() {
            self.i += 1;
        }
        t
    }

    /// After consuming operator `op`: an operand must follow.
    fn expect_operand(&self, op: Tok<'_>) -> Result<(), TargetError> {
        match self.peek() {
            None => Err(TargetError::DanglingOperator {
                op: op.text().to_string(),
                pos: op.pos,
            }),
            Some(t) if matches!(t.kind, TokKind::And | TokKind::Or | TokKind::Close) => {
                Err(TargetError::DanglingOperator {
                    op: op.text().to_string(),
                    pos: op.pos,
                })
            }
            Some(_) => Ok(()),
        }
    }

    fn parse_or(&mut self, ctx: &mut Ctx<'_>, depth: usize) -> Result<Node, TargetError> {
        let mut items = vec![self.parse_and(ctx, depth)?];
        while let Some(op) = self.peek().filter(|t| t.kind == TokKind::Or) {
            self.i += 1;
            self.expect_operand(op)?;
            items.push(self.parse_and(ctx, depth)?);
        }
        Ok(if items.len() == 1 {
            items.remove(0)
        } else {
            Node::Or(items)
        })
    }

    fn parse_and(&mut self, ctx: &mut Ctx<'_>, depth: usize) -> Result<Node, TargetError> {
        let mut items = vec![self.parse_not(ctx, depth)?];
        while let Some(t) = self.peek() {
            match t.kind {
                TokKind::And => {
                    self.i += 1;
                    self.expect_operand(t)?;
                    items.push(self.parse_not(ctx, depth)?);
                }
                // Salt inserts an implicit `and` before a `not` that
                // follows an operand: `web* not db*`.
                TokKind::Not => items.push(self.parse_not(ctx, depth)?),
                TokKind::Open | TokKind::Word(_) => {
                    return Err(TargetError::MissingOperator {
                        token: t.text().to_string(),
                        pos: t.pos,
                    })
                }
                TokKind::Or | TokKind::Close => break,
            }
        }
        Ok(if items.len() == 1 {
            items.remove(0)
        } else {
            Node::And(items)
        })
    }

    fn parse_not(&mut self, ctx: &mut Ctx<'_>, depth: usize) -> Result<Node, TargetError> {
        if depth > MAX_DEPTH {
            return Err(TargetError::TooDeep(MAX_DEPTH));
        }
        match self.peek() {
            Some(op) if op.kind == TokKind::Not => {
                self.i += 1;
                self.expect_operand(op)?;
                let inner = self.parse_not(ctx, depth + 1)?;
                Ok(Node::Not(Box::new(inner)))
            }
            _ => self.parse_primary(ctx, depth),
        }
    }

    fn parse_primary(&mut self, ctx: &mut Ctx<'_>, depth: usize) -> Result<Node, TargetError> {
        let Some(t) = self.next() else {
            return Err(TargetError::Empty);
        };
        match t.kind {
            TokKind::Open => {
                match self.peek() {
                    None => return Err(TargetError::UnbalancedParenthesis { pos: t.pos }),
                    Some(c) if c.kind == TokKind::Close => {
                        return Err(TargetError::EmptyParentheses { pos: t.pos })
                    }
                    Some(_) => {}
                }
                let inner = self.parse_or(ctx, depth + 1)?;
                match self.next() {
                    Some(c) if c.kind == TokKind::Close => Ok(Node::Paren(Box::new(inner))),
                    _ => Err(TargetError::UnbalancedParenthesis { pos: t.pos }),
                }
            }
            TokKind::Close => Err(TargetError::UnbalancedParenthesis { pos: t.pos }),
            TokKind::And | TokKind::Or | TokKind::Not => Err(TargetError::UnexpectedToken {
                token: t.text().to_string(),
                pos: t.pos,
            }),
            TokKind::Word(w) => parse_atom(w, t.pos, ctx, depth),
        }
    }
}

/// One compound word: `X@pattern`, `G<d>@key<d>value`, or a bare glob.
fn parse_atom(
    word: &str,
    pos: usize,
    ctx: &mut Ctx<'_>,
    depth: usize,
) -> Result<Node, TargetError> {
    let mut chars = word.chars();
    let first = chars.next();
    let second = chars.next();
    let third = chars.next();
    let (engine, own_delim, prefix_len) = match (first, second, third) {
        (Some(e), Some('@'), _) if e.is_ascii_alphabetic() => (e, None, 2),
        (Some(e @ ('G' | 'P' | 'I' | 'J')), Some(d), Some('@')) if d != '@' => {
            (e, Some(d.to_string()), 2 + d.len_utf8())
        }
        _ => return ctx.leaf(Leaf::Glob(Glob::new(word)), word),
    };
    let prefix = &word[..prefix_len];
    let pattern = &word[prefix_len..];
    let unsupported = |what: &'static str| TargetError::Unsupported {
        prefix: prefix.to_string(),
        what,
        pos,
    };
    match engine {
        'R' => return Err(unsupported("range")),
        'G' | 'P' | 'I' | 'J' | 'E' | 'L' | 'S' | 'N' => {}
        _ => {
            return Err(TargetError::UnknownPrefix {
                prefix: prefix.to_string(),
                pos,
            })
        }
    }
    if pattern.is_empty() {
        return Err(TargetError::EmptyPattern {
            prefix: prefix.to_string(),
            pos,
        });
    }
    let leaf = match engine {
        'G' | 'P' => Leaf::Grain(GrainMatcher::build(
            pattern,
            engine == 'P',
            ctx.delimiter,
            own_delim,
            Subject::Grains,
        )?),
        'I' | 'J' => Leaf::Pillar(GrainMatcher::build(
            pattern,
            engine == 'J',
            ctx.delimiter,
            own_delim,
            Subject::Pillar,
        )?),
        'E' => Leaf::Pcre(compile_regex(pattern, false)?),
        'L' => Leaf::List(parse_list(pattern)?),
        'S' => Leaf::Ipcidr(parse_cidr(pattern)?),
        _ => return expand_nodegroup(pattern, ctx, depth + 1),
    };
    ctx.leaf(leaf, word)
}

/// Words that make a nodegroup definition a compound expression rather than
/// a plain list of ids (Salt's `_nodegroup_regex` heuristic).
fn is_compound_word(word: &str) -> bool {
    let b = word.as_bytes();
    matches!(word, "and" | "or" | "not" | "(" | ")")
        || word.contains('*')
        || (b.len() >= 2 && b[0].is_ascii_uppercase() && b[1] == b'@')
}

fn expand_nodegroup(name: &str, ctx: &mut Ctx<'_>, depth: usize) -> Result<Node, TargetError> {
    if depth > MAX_DEPTH {
        return Err(TargetError::TooDeep(MAX_DEPTH));
    }
    if ctx.stack.iter().any(|n| n == name) {
        let mut chain: Vec<&str> = ctx.stack.iter().map(String::as_str).collect();
        chain.push(name);
        return Err(TargetError::RecursiveNodegroup {
            name: name.to_string(),
            chain: chain.join(" -> "),
        });
    }
    let Some(definition) = ctx.nodegroups.get(name) else {
        return Err(TargetError::UnknownNodegroup(name.to_string()));
    };
    let words: Vec<&str> = definition.split_whitespace().collect();
    let wrap = |e: TargetError| TargetError::InNodegroup {
        name: name.to_string(),
        source: Box::new(e),
    };
    if words.is_empty() {
        return Err(wrap(TargetError::Empty));
    }
    if !words.iter().any(|w| is_compound_word(w)) {
        // Plain words: ids, or a regex when any holds regex syntax (Salt).
        let joined = words.join(",");
        let regex_chars = ['(', '[', '{', '\\', '?', '}', ']', ')'];
        let (leaf, word) = if words.iter().any(|w| w.contains(regex_chars)) {
            let leaf = Leaf::Pcre(compile_regex(&joined, false).map_err(wrap)?);
            (leaf, format!("E@{joined}"))
        } else {
            (
                Leaf::List(parse_list(&joined).map_err(wrap)?),
                format!("L@{joined}"),
            )
        };
        let inner = ctx.leaf(leaf, &word)?;
        return Ok(Node::Group(Box::new(inner)));
    }
    ctx.stack.push(name.to_string());
    let result = parse_compound(definition, ctx, depth + 1);
    ctx.stack.pop();
    result
        .map(|inner| Node::Group(Box::new(inner)))
        .map_err(|e| match e {
            // Keep recursion and size errors flat: the chain already says where.
            TargetError::RecursiveNodegroup { .. }
            | TargetError::TooLarge(_)
            | TargetError::TooDeep(_) => e,
            other => wrap(other),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn ng(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn t(expr: &str, ty: TargetType) -> Target {
        parse(expr, ty, &BTreeMap::new()).expect("must parse")
    }

    fn m(expr: &str, ty: TargetType, id: &str, grains: &Value) -> bool {
        t(expr, ty).matches(id, grains, ":")
    }

    fn c(expr: &str, id: &str) -> bool {
        m(expr, TargetType::Compound, id, &grains())
    }

    fn err(expr: &str, ty: TargetType) -> TargetError {
        parse(expr, ty, &BTreeMap::new()).expect_err("must not parse")
    }

    fn grains() -> Value {
        json!({
            "os": "Debian",
            "os_family": "Debian",
            "osrelease": "12",
            "num_cpus": 4,
            "virtual": "kvm",
            "is_proxy": false,
            "roles": ["web", "Cache"],
            "kernelrelease": "5.1:x",
            "ipv4": ["127.0.0.1", "10.1.2.3"],
            "ipv6": ["::1", "fe80::1", "2001:db8::5"],
            "locale_info": {"defaultlanguage": "en_US", "timezone": "UTC"},
            "disks": [{"name": "sda", "size": 100}, {"name": "sdb"}],
            "nested": {"a": {"b": "deep"}},
            "empty": {},
            "nothing": null,
        })
    }

    #[test]
    fn fnmatch_basics() {
        assert!(fnmatch("*", ""));
        assert!(fnmatch("*", "anything"));
        assert!(fnmatch("web*", "web1"));
        assert!(!fnmatch("web*", "db1"));
        assert!(fnmatch("web?", "web1"));
        assert!(!fnmatch("web?", "web12"));
        assert!(fnmatch("web[12]", "web2"));
        assert!(!fnmatch("web[12]", "web3"));
        assert!(fnmatch("web[a-c]", "webb"));
        assert!(fnmatch("web[!a-c]", "webd"));
        assert!(!fnmatch("web[!a-c]", "weba"));
        assert!(fnmatch("[]]", "]"));
        assert!(fnmatch("[!]]", "a"));
        assert!(fnmatch("web[", "web["));
        assert!(fnmatch("[a-]", "-"));
        assert!(!fnmatch("[z-a]", "m"));
        assert!(fnmatch("*.example.com", "a.b.example.com"));
        assert!(fnmatch("a*b*c", "aXXbYYc"));
        assert!(!fnmatch("a*b*c", "aXXbYY"));
        assert!(fnmatch("**a", "bba"));
        assert!(!fnmatch("Web*", "web1"), "globs are case-sensitive");
        assert!(!fnmatch("web", "web1"), "whole string");
        assert!(fnmatch("ünï*", "ünïcode"));
    }

    #[test]
    fn glob_pcre_list() {
        let g = grains();
        assert!(m("web*", TargetType::Glob, "web1", &g));
        assert!(!m("web*", TargetType::Glob, "db1", &g));
        assert!(m("web\\d", TargetType::Pcre, "web1", &g));
        assert!(
            m("web", TargetType::Pcre, "web1-extra", &g),
            "anchored at start only"
        );
        assert!(!m("web", TargetType::Pcre, "my-web1", &g));
        assert!(m("b|w", TargetType::Pcre, "web", &g));
        assert!(m(" a , web1,,b ", TargetType::List, "web1", &g));
        assert!(!m("a,web1", TargetType::List, "web", &g));
        assert!(matches!(
            err("web(", TargetType::Pcre),
            TargetError::InvalidRegex { .. }
        ));
        assert_eq!(err(" , ,", TargetType::List), TargetError::EmptyList);
        assert_eq!(err("   ", TargetType::Glob), TargetError::Empty);
    }

    #[test]
    fn listed_ids_only_for_pure_lists() {
        let list = t("b, a ,b", TargetType::List);
        assert_eq!(
            list.listed_ids(),
            Some(vec!["b".to_string(), "a".to_string()])
        );
        assert_eq!(
            t("( L@x,y )", TargetType::Compound)
                .listed_ids()
                .map(|v| v.len()),
            Some(2)
        );
        assert_eq!(t("web*", TargetType::Glob).listed_ids(), None);
        assert_eq!(t("L@a or L@b", TargetType::Compound).listed_ids(), None);
        let groups = ng(&[("plain", "web1 web2,web3"), ("expr", "web* or L@db1")]);
        let plain = parse("plain", TargetType::Nodegroup, &groups).expect("must parse");
        assert_eq!(plain.listed_ids().map(|v| v.len()), Some(3));
        let expr = parse("expr", TargetType::Nodegroup, &groups).expect("must parse");
        assert_eq!(expr.listed_ids(), None);
    }

    #[test]
    fn grain_matching() {
        let g = grains();
        assert!(m("os:Debian", TargetType::Grain, "x", &g));
        assert!(
            m("os:debian", TargetType::Grain, "x", &g),
            "case-insensitive like Salt"
        );
        assert!(m("os:Deb*", TargetType::Grain, "x", &g));
        assert!(!m("os:RedHat", TargetType::Grain, "x", &g));
        assert!(m("num_cpus:4", TargetType::Grain, "x", &g));
        assert!(m("is_proxy:False", TargetType::Grain, "x", &g));
        assert!(m("is_proxy:false", TargetType::Grain, "x", &g));
        assert!(m("nothing:None", TargetType::Grain, "x", &g));
        assert!(
            m("roles:web", TargetType::Grain, "x", &g),
            "any list element"
        );
        assert!(m("roles:cache", TargetType::Grain, "x", &g));
        assert!(!m("roles:db", TargetType::Grain, "x", &g));
        assert!(
            m("locale_info:timezone:UTC", TargetType::Grain, "x", &g),
            "nested"
        );
        assert!(m("nested:a:b:deep", TargetType::Grain, "x", &g));
        assert!(m("nested:a:b", TargetType::Grain, "x", &g), "names a key");
        assert!(m("locale_info:*", TargetType::Grain, "x", &g), "key exists");
        assert!(
            !m("empty:*", TargetType::Grain, "x", &g),
            "empty dict is like missing"
        );
        assert!(
            m("disks:name:sdb", TargetType::Grain, "x", &g),
            "dicts embedded in lists"
        );
        assert!(
            m("disks:0:size:100", TargetType::Grain, "x", &g),
            "list index"
        );
        assert!(!m("missing:x", TargetType::Grain, "x", &g));
        assert!(!m("os:Debian", TargetType::Grain, "x", &json!(null)));
    }

    #[test]
    fn grain_values_containing_the_delimiter() {
        let g = grains();
        assert!(m("ipv6:::1", TargetType::Grain, "x", &g));
        assert!(m("ipv6:fe80::*", TargetType::Grain, "x", &g));
        assert!(m("kernelrelease:5.1:x", TargetType::Grain, "x", &g));
        assert!(m("kernelrelease:5.1:*", TargetType::Grain, "x", &g));
        assert!(!m("kernelrelease:5.1", TargetType::Grain, "x", &g));
    }

    #[test]
    fn grain_delimiters() {
        let g = grains();
        let dot = parse_with_delimiter(
            "locale_info.timezone.UTC",
            TargetType::Grain,
            &BTreeMap::new(),
            ".",
        )
        .expect("must parse");
        assert!(dot.matches("x", &g, "."));
        // A target parsed for ":" still matches when asked with another one.
        let colon = t("locale_info:timezone:UTC", TargetType::Grain);
        assert!(!colon.matches("x", &g, "."));
        let other = t("kernelrelease:5.1:x", TargetType::Grain);
        assert!(other.matches("x", &g, ":"));
        assert!(!other.matches("x", &g, ""), "empty delimiter never matches");
        // Compound per-atom delimiter override: G%@.
        assert!(c("G%@locale_info%timezone%UTC", "x"));
        assert!(c("P;@os;deb.*", "x"));
        assert_eq!(
            err("os", TargetType::Grain).to_string(),
            "grain target 'os' has no ':' between key and value"
        );
        assert!(matches!(
            parse_with_delimiter("a:b", TargetType::Grain, &BTreeMap::new(), ""),
            Err(TargetError::EmptyDelimiter)
        ));
    }

    #[test]
    fn grain_pcre() {
        let g = grains();
        assert!(m("os:deb.*", TargetType::GrainPcre, "x", &g));
        assert!(
            m("os:De", TargetType::GrainPcre, "x", &g),
            "anchored at start only"
        );
        assert!(!m("os:ebian", TargetType::GrainPcre, "x", &g));
        assert!(m("roles:(web|db)$", TargetType::GrainPcre, "x", &g));
        assert!(m("ipv6:::1$", TargetType::GrainPcre, "x", &g));
        assert!(matches!(
            err("os:(", TargetType::GrainPcre),
            TargetError::InvalidRegex { .. }
        ));
        // One split has an invalid regex, another works: accepted.
        assert!(m(
            "kernelrelease:5\\.1:(x|y)",
            TargetType::GrainPcre,
            "x",
            &g
        ));
    }

    #[test]
    fn ipcidr() {
        let g = grains();
        assert!(m("10.0.0.0/8", TargetType::Ipcidr, "x", &g));
        assert!(m("10.1.2.3", TargetType::Ipcidr, "x", &g));
        assert!(!m("10.1.2.4", TargetType::Ipcidr, "x", &g));
        assert!(!m("192.168.0.0/16", TargetType::Ipcidr, "x", &g));
        assert!(m("2001:db8::/32", TargetType::Ipcidr, "x", &g));
        assert!(m("::1", TargetType::Ipcidr, "x", &g));
        assert!(!m("2001:db9::/32", TargetType::Ipcidr, "x", &g));
        assert!(c("S@10.0.0.0/8 and S@fe80::/10", "x"));
        assert!(!m(
            "10.0.0.0/8",
            TargetType::Ipcidr,
            "x",
            &json!({"ipv6": ["::1"]})
        ));
        assert!(m(
            "10.0.0.0/8",
            TargetType::Ipcidr,
            "x",
            &json!({"ipv4": "10.9.9.9"})
        ));
        assert!(matches!(
            err("10.0.0.1/8", TargetType::Ipcidr),
            TargetError::InvalidCidr { .. }
        ));
        assert!(matches!(
            err("10.0.0.0/33", TargetType::Ipcidr),
            TargetError::InvalidCidr { .. }
        ));
        assert!(matches!(
            err("web1", TargetType::Ipcidr),
            TargetError::InvalidCidr { .. }
        ));
    }

    #[test]
    fn compound_precedence() {
        // `or` binds loosest: a or (b and c).
        assert!(c("web1 or db* and nope", "web1"));
        assert!(!c("web2 or db* and nope", "db1"));
        // `not` binds tightest: (not a) and b.
        assert!(c("not web* and db*", "db1"));
        assert!(!c("not db* and db*", "db1"));
        assert!(c("not db* or db*", "db1"));
        assert!(c("not not db1", "db1"));
        // Parentheses override.
        assert!(!c("web1 and ( nope or web1 ) and nope", "web1"));
        assert!(c("( web1 or db1 ) and not db*", "web1"));
        assert!(!c("( web1 or db1 ) and not db*", "db1"));
    }

    #[test]
    fn compound_not_at_start_and_implicit_and() {
        assert!(c("not web*", "db1"));
        assert!(!c("not web*", "web1"));
        assert!(c("* not web*", "db1"), "Salt inserts 'and' before 'not'");
        assert!(!c("* not web*", "web1"));
    }

    #[test]
    fn compound_parentheses_and_whitespace() {
        assert!(c("(web1 or db1)", "db1"));
        assert!(c("( web1 or db1 )", "db1"));
        assert!(c("((web1 or (db1)))", "db1"));
        assert!(c("  web1\tor\n db1  ", "db1"));
        assert!(c("(not web1) and (db1 or (x and y))", "db1"));
        assert!(
            c("E@(web|db)1 and E@db(1|2)", "db1"),
            "regex groups are kept"
        );
        assert!(c("(E@db(1|2))", "db1"));
    }

    #[test]
    fn compound_prefixes() {
        assert!(c("G@os:Debian and web*", "web1"));
        assert!(c("P@os:deb.* and L@a,web1", "web1"));
        assert!(c("E@^db\\d and S@127.0.0.1", "db1"));
        assert!(c("G@roles:web and not G@virtual:physical", "x"));
    }

    #[test]
    fn compound_errors() {
        let ty = TargetType::Compound;
        assert_eq!(
            err("web* or X@foo", ty),
            TargetError::UnknownPrefix {
                prefix: "X@".into(),
                pos: 9
            }
        );
        assert_eq!(
            err("web* or X@foo", ty).to_string(),
            "unknown prefix 'X@' at position 9"
        );
        assert!(matches!(
            err("R@%cluster", ty),
            TargetError::Unsupported { .. }
        ));
        assert!(matches!(err("G@", ty), TargetError::EmptyPattern { .. }));
        assert!(matches!(
            err("(web1 or db1", ty),
            TargetError::UnbalancedParenthesis { pos: 1 }
        ));
        assert!(matches!(
            err("web1 or db1)", ty),
            TargetError::UnbalancedParenthesis { .. }
        ));
        assert!(matches!(
            err(")", ty),
            TargetError::UnbalancedParenthesis { .. }
        ));
        assert!(matches!(
            err("()", ty),
            TargetError::EmptyParentheses { .. }
        ));
        assert!(matches!(
            err("web1 and", ty),
            TargetError::DanglingOperator { .. }
        ));
        assert!(matches!(
            err("web1 or or db1", ty),
            TargetError::DanglingOperator { .. }
        ));
        assert!(matches!(
            err("not", ty),
            TargetError::DanglingOperator { .. }
        ));
        assert!(matches!(
            err("and web1", ty),
            TargetError::UnexpectedToken { .. }
        ));
        assert!(matches!(
            err("( or web1 )", ty),
            TargetError::UnexpectedToken { .. }
        ));
        assert!(matches!(
            err("web1 db1", ty),
            TargetError::MissingOperator { .. }
        ));
        assert!(matches!(
            err("web1 (db1)", ty),
            TargetError::MissingOperator { .. }
        ));
        assert!(matches!(
            err("E@web(", ty),
            TargetError::InvalidRegex { .. }
        ));
        assert!(matches!(err("S@nope", ty), TargetError::InvalidCidr { .. }));
        let regex_msg = err("E@web(", ty).to_string();
        assert!(
            regex_msg.starts_with("invalid regex 'web(': "),
            "{regex_msg}"
        );
        assert!(!regex_msg.contains('\n'), "one line: {regex_msg}");
        assert!(matches!(err("N@web", ty), TargetError::UnknownNodegroup(_)));
        assert_eq!(err("", ty), TargetError::Empty);
        let deep = format!("{}a{}", "(".repeat(200), ")".repeat(200));
        assert_eq!(err(&deep, ty), TargetError::TooDeep(MAX_DEPTH));
        let nots = format!("{}a", "not ".repeat(200));
        assert_eq!(err(&nots, ty), TargetError::TooDeep(MAX_DEPTH));
    }

    #[test]
    fn nodegroups() {
        let groups = ng(&[
            ("web", "web* or L@special"),
            ("dbs", "db1 db2"),
            ("both", "N@web or N@dbs"),
            ("rx", "db[0-9]"),
            ("loop_a", "x* or N@loop_b"),
            ("loop_b", "N@loop_a and y*"),
            ("self", "N@self or a*"),
            ("bad", "web* or Q@x"),
        ]);
        let p = |e: &str, ty| parse(e, ty, &groups);
        let g = grains();
        let web = p("web", TargetType::Nodegroup).expect("must parse");
        assert!(web.matches("web3", &g, ":"));
        assert!(web.matches("special", &g, ":"));
        assert!(!web.matches("db1", &g, ":"));
        let both = p("N@both and not special", TargetType::Compound).expect("must parse");
        assert!(both.matches("db2", &g, ":"));
        assert!(both.matches("web1", &g, ":"));
        assert!(!both.matches("special", &g, ":"));
        assert!(!both.matches("db3", &g, ":"));
        let rx = p("rx", TargetType::Nodegroup).expect("must parse");
        assert!(
            rx.matches("db7", &g, ":"),
            "regex-looking plain nodegroup is a pcre"
        );
        assert!(matches!(
            p("loop_a", TargetType::Nodegroup).expect_err("must not parse"),
            TargetError::RecursiveNodegroup { .. }
        ));
        let selfish = p("self", TargetType::Nodegroup).expect_err("must not parse");
        assert_eq!(
            selfish.to_string(),
            "nodegroup 'self' includes itself (self -> self)"
        );
        assert_eq!(
            p("nope", TargetType::Nodegroup)
                .expect_err("must not parse")
                .to_string(),
            "nodegroup 'nope' is not defined"
        );
        assert_eq!(
            p("bad", TargetType::Nodegroup)
                .expect_err("must not parse")
                .to_string(),
            "in nodegroup 'bad': unknown prefix 'Q@' at position 9"
        );
    }

    /// The (text, type) minions are sent for a target (the master's view).
    fn published(tgt: &str, ty: TargetType, g: &BTreeMap<String, String>) -> (String, TargetType) {
        let target = parse(tgt, ty, g).expect("must parse");
        match target.for_minions() {
            Some(expr) => (expr, TargetType::Compound),
            None => (tgt.to_string(), ty),
        }
    }

    #[test]
    fn nodegroups_expand_for_minions() {
        let g: BTreeMap<String, String> = [
            ("web".to_string(), "L@web1,web2".to_string()),
            ("east".to_string(), "G@dc:east and N@web".to_string()),
        ]
        .into();
        assert_eq!(
            published("web", TargetType::Nodegroup, &g),
            ("L@web1,web2".to_string(), TargetType::Compound)
        );
        assert_eq!(
            published("east", TargetType::Nodegroup, &g).0,
            "G@dc:east and ( L@web1,web2 )"
        );
        assert_eq!(
            published("not N@web or (N@east)", TargetType::Compound, &g).0,
            "not ( L@web1,web2 ) or (( G@dc:east and ( L@web1,web2 ) ))"
        );
        assert_eq!(
            published("db*", TargetType::Glob, &g),
            ("db*".to_string(), TargetType::Glob)
        );
    }

    #[test]
    fn nodegroups_in_list_form_expand_to_list_targets() {
        // The config turns `db: [db1, db2]` into "L@db1,db2" and a list of
        // compound words into one expression; plain words are a list too.
        let g = ng(&[
            ("db", "L@db1,db2"),
            ("plain", "db3 db4,db5"),
            ("rx", "db[6-7]"),
            ("mixed", "G@os:Debian or N@plain"),
        ]);
        assert_eq!(
            published("plain", TargetType::Nodegroup, &g).0,
            "L@db3,db4,db5"
        );
        assert_eq!(
            published("web* or N@plain", TargetType::Compound, &g).0,
            "web* or ( L@db3,db4,db5 )",
            "a plain-list nodegroup inside an expression stays a list"
        );
        assert_eq!(
            published("N@rx and not N@db", TargetType::Compound, &g).0,
            "( E@db[6-7] ) and not ( L@db1,db2 )"
        );
        assert_eq!(
            published("mixed", TargetType::Nodegroup, &g).0,
            "G@os:Debian or ( L@db3,db4,db5 )"
        );
        let listed = parse("plain", TargetType::Nodegroup, &g).expect("must parse");
        assert_eq!(
            listed.listed_ids(),
            Some(vec!["db3".into(), "db4".into(), "db5".into()])
        );
        assert_eq!(
            published("L@a,b", TargetType::Compound, &g),
            ("L@a,b".to_string(), TargetType::Compound),
            "no nodegroup: sent as given"
        );
    }

    #[test]
    fn nested_nodegroups_expand_once_each_level() {
        let g = ng(&[
            ("a", "N@b or x*"),
            ("b", "(N@c and not y1) or y2"),
            ("c", "y*"),
        ]);
        assert_eq!(
            published("a", TargetType::Nodegroup, &g).0,
            "( (( y* ) and not y1) or y2 ) or x*"
        );
        assert_eq!(
            published("N@a and G@os:Debian", TargetType::Compound, &g).0,
            "( ( (( y* ) and not y1) or y2 ) or x* ) and G@os:Debian"
        );
    }

    #[test]
    fn nodegroup_cycles_are_errors_not_expansions() {
        let g = ng(&[("a", "N@b or x*"), ("b", "y* and (N@c)"), ("c", "not N@a")]);
        for (tgt, ty) in [
            ("a", TargetType::Nodegroup),
            ("web* or N@b", TargetType::Compound),
        ] {
            match parse(tgt, ty, &g) {
                Err(TargetError::RecursiveNodegroup { chain, .. }) => {
                    assert!(
                        chain.ends_with("-> a") || chain.ends_with("-> b"),
                        "{chain}"
                    )
                }
                other => panic!("{tgt}: expected a cycle error, got {other:?}"),
            }
        }
    }

    #[test]
    fn what_minions_get_matches_what_the_master_expects() {
        let g = ng(&[
            ("web", "web* or L@special"),
            ("dbs", "db1 db2"),
            ("rx", "db[5-6]"),
            ("both", "N@web or N@dbs"),
        ]);
        let ids = [
            "web1", "special", "db1", "db2", "db5", "db9", "x", "web-db1",
        ];
        let none = BTreeMap::new();
        let gr = grains();
        for (tgt, ty) in [
            ("both", TargetType::Nodegroup),
            ("N@both and not special", TargetType::Compound),
            ("not N@dbs and (N@rx or N@web)", TargetType::Compound),
            ("dbs", TargetType::Nodegroup),
        ] {
            let master = parse(tgt, ty, &g).expect("must parse");
            let (text, ty2) = published(tgt, ty, &g);
            // Minions parse it without knowing any nodegroup.
            let minion = parse(&text, ty2, &none).expect("minions parse it");
            for id in ids {
                assert_eq!(
                    master.matches(id, &gr, ":"),
                    minion.matches(id, &gr, ":"),
                    "{tgt} -> {text}: {id}"
                );
            }
        }
    }

    #[test]
    fn nodegroup_expansion_is_bounded() {
        // Each level references the next twice: 2^20 leaves if unbounded.
        let mut groups = BTreeMap::new();
        for i in 0..20 {
            groups.insert(format!("g{i}"), format!("N@g{} or N@g{}", i + 1, i + 1));
        }
        groups.insert("g20".to_string(), "a*".to_string());
        assert_eq!(
            parse("g0", TargetType::Nodegroup, &groups).expect_err("must not parse"),
            TargetError::TooLarge(MAX_ATOMS)
        );
    }

    #[test]
    fn hostile_grains_do_not_recurse_forever() {
        let mut deep = json!("leaf");
        for _ in 0..500 {
            deep = json!({ "k": deep });
        }
        let g = json!({ "top": deep });
        let path = format!("top:{}leaf", "k:".repeat(500));
        assert!(t(&path, TargetType::Grain).matches("x", &g, ":"));
        assert!(t("top:*:k", TargetType::Grain).matches("x", &g, ":"));
        // Every split of this pattern reaches a dict, which re-splits the
        // rest: exponential without the budget; here a quick `false`.
        let miss = format!("top:{}nomatch", "k:".repeat(60));
        assert!(!t(&miss, TargetType::Grain).matches("x", &g, ":"));
    }

    fn pillar() -> Value {
        json!({
            "role": "web",
            "env": "prod",
            "apps": ["nginx", "Redis"],
            "db": {"host": "db1.example.com", "port": 5432},
            "users": [{"name": "alice"}, {"name": "bob"}],
            "feature": {"beta": true},
        })
    }

    /// Match with a known pillar (exact).
    fn mp(expr: &str, ty: TargetType, id: &str, pillar: &Value) -> bool {
        t(expr, ty).matches_with(id, &grains(), Some(pillar), ":")
    }

    /// The three-valued answer with the pillar unknown.
    fn unknown(expr: &str, id: &str) -> Truth {
        t(expr, TargetType::Compound).truth(id, &grains(), None, ":")
    }

    #[test]
    fn pillar_glob_matches_like_grains() {
        let p = pillar();
        let ty = TargetType::Pillar;
        assert!(mp("role:web", ty, "x", &p));
        assert!(mp("role:WEB", ty, "x", &p), "case-insensitive like Salt");
        assert!(mp("role:w*", ty, "x", &p));
        assert!(!mp("role:db", ty, "x", &p));
        assert!(mp("apps:redis", ty, "x", &p), "any list element");
        assert!(!mp("apps:postgres", ty, "x", &p));
        assert!(mp("db:host:db1.*", ty, "x", &p), "nested");
        assert!(mp("db:port:5432", ty, "x", &p));
        assert!(mp("db:host", ty, "x", &p), "names a key");
        assert!(mp("feature:beta:True", ty, "x", &p));
        assert!(mp("users:name:bob", ty, "x", &p), "dicts in lists");
        assert!(!mp("missing:x", ty, "x", &p));
        // Grains are not pillar: `os` is a grain only.
        assert!(!mp("os:Debian", ty, "x", &p));
        assert!(!mp("role:web", ty, "x", &json!({})), "an empty pillar");
        assert!(!mp("role:web", ty, "x", &Value::Null));
        // And a grain target does not look into the pillar.
        assert!(!t("role:web", TargetType::Grain).matches_with("x", &grains(), Some(&p), ":"));
    }

    #[test]
    fn pillar_pcre_matches_like_grain_pcre() {
        let p = pillar();
        let ty = TargetType::PillarPcre;
        assert!(mp("env:pr.*", ty, "x", &p));
        assert!(mp("env:PROD$", ty, "x", &p), "case-insensitive");
        assert!(mp("env:pr", ty, "x", &p), "anchored at start only");
        assert!(!mp("env:rod", ty, "x", &p));
        assert!(mp("apps:(nginx|apache)$", ty, "x", &p));
        assert!(mp("db:host:db\\d\\.", ty, "x", &p));
        assert!(matches!(err("env:(", ty), TargetError::InvalidRegex { .. }));
    }

    #[test]
    fn pillar_parse_errors_name_the_pillar() {
        assert_eq!(
            err("role", TargetType::Pillar).to_string(),
            "pillar target 'role' has no ':' between key and value"
        );
        assert_eq!(
            err("role", TargetType::PillarPcre),
            TargetError::KeyWithoutValue {
                what: "pillar",
                expr: "role".into(),
                delimiter: ":".into()
            }
        );
        assert_eq!(
            err("web* and I@role", TargetType::Compound).to_string(),
            "pillar target 'role' has no ':' between key and value"
        );
        assert!(matches!(
            err("I@", TargetType::Compound),
            TargetError::EmptyPattern { .. }
        ));
        assert!(matches!(
            err("J@env:(", TargetType::Compound),
            TargetError::InvalidRegex { .. }
        ));
        assert!(matches!(
            parse_with_delimiter("role:web", TargetType::Pillar, &BTreeMap::new(), ""),
            Err(TargetError::EmptyDelimiter)
        ));
    }

    #[test]
    fn pillar_in_compound_expressions_and_delimiters() {
        let p = pillar();
        let ty = TargetType::Compound;
        assert!(mp("I@role:web and not J@env:dev.*", ty, "x", &p));
        assert!(!mp("I@role:web and not J@env:pr.*", ty, "x", &p));
        assert!(mp("G@os:Debian and I@apps:nginx", ty, "x", &p));
        assert!(!mp("G@os:RedHat and I@apps:nginx", ty, "x", &p));
        assert!(mp("db* or I@role:web", ty, "web1", &p));
        assert!(mp("I%@db%host%db1.example.com", ty, "x", &p), "I<d>@");
        assert!(mp("J;@db;port;54", ty, "x", &p), "J<d>@");
        let dot = parse_with_delimiter("db.port.5432", TargetType::Pillar, &BTreeMap::new(), ".")
            .expect("must parse");
        assert!(dot.matches_with("x", &grains(), Some(&p), "."));
        assert!(
            !dot.matches_with("x", &grains(), Some(&p), ""),
            "empty delimiter"
        );
    }

    #[test]
    fn uses_pillar_sees_every_pillar_term() {
        let groups = ng(&[("web", "I@role:web"), ("plain", "a b")]);
        let uses = |e: &str, ty| parse(e, ty, &groups).expect("must parse").uses_pillar();
        assert!(uses("role:web", TargetType::Pillar));
        assert!(uses("role:w.*", TargetType::PillarPcre));
        assert!(uses("web* and not (I@role:web)", TargetType::Compound));
        assert!(uses("G@os:Debian or J@x:y", TargetType::Compound));
        assert!(uses("web", TargetType::Nodegroup), "inside a nodegroup");
        assert!(uses("N@web or a", TargetType::Compound));
        assert!(!uses("plain", TargetType::Nodegroup));
        assert!(!uses("G@os:Debian and web*", TargetType::Compound));
        assert!(!uses("role:web", TargetType::Grain));
        assert!(!uses("*", TargetType::Glob));
    }

    #[test]
    fn unknown_pillar_is_three_valued() {
        use Truth::{No, Unknown, Yes};
        // A lone pillar term, and its negation: unknown, so may match.
        assert_eq!(unknown("I@role:web", "x"), Unknown);
        assert_eq!(unknown("not I@role:web", "x"), Unknown);
        assert!(t("not I@role:web", TargetType::Compound).matches("x", &grains(), ":"));
        // The rest of the expression decides where it can.
        assert_eq!(unknown("G@os:Debian and I@x:y", "x"), Unknown);
        assert_eq!(unknown("G@os:Arch and I@x:y", "x"), No);
        assert!(!t("G@os:Arch and I@x:y", TargetType::Compound).matches("x", &grains(), ":"));
        assert_eq!(unknown("G@os:Debian or I@x:y", "x"), Yes);
        assert_eq!(unknown("G@os:Arch or I@x:y", "x"), Unknown);
        assert_eq!(unknown("not (G@os:Debian or I@x:y)", "x"), No);
        assert_eq!(unknown("not (G@os:Arch and J@x:y)", "x"), Yes);
        assert_eq!(unknown("web* and not I@x:y", "db1"), No);
        assert_eq!(unknown("web* and not I@x:y", "web1"), Unknown);
        // Kleene: unknown or not unknown stays unknown (never a false no).
        assert_eq!(unknown("I@x:y or not I@x:y", "x"), Unknown);
        assert_eq!(unknown("I@x:y and not I@x:y", "x"), Unknown);
        // Without pillar terms nothing is unknown.
        assert_eq!(unknown("G@os:Debian and web*", "web1"), Yes);
        assert_eq!(unknown("G@os:Debian and web*", "db1"), No);
        // Bare -I / -J targets.
        let bare = t("role:web", TargetType::Pillar);
        assert_eq!(bare.truth("x", &grains(), None, ":"), Unknown);
        assert!(bare.matches("x", &grains(), ":"));
        assert!(!bare.matches_with("x", &grains(), Some(&json!({"role": "db"})), ":"));
    }

    #[test]
    fn pillar_terms_survive_nodegroup_expansion() {
        let g = ng(&[
            ("web", "I@role:web or L@special"),
            ("prod", "J@env:pr.* and N@web"),
        ]);
        let (text, ty) = published("prod", TargetType::Nodegroup, &g);
        assert_eq!(text, "J@env:pr.* and ( I@role:web or L@special )");
        let master = parse("prod", TargetType::Nodegroup, &g).expect("must parse");
        let minion = parse(&text, ty, &BTreeMap::new()).expect("minions parse it");
        let p = pillar();
        for id in ["x", "special"] {
            for pil in [Some(&p), Some(&json!({"env": "prod"})), None] {
                assert_eq!(
                    master.matches_with(id, &grains(), pil, ":"),
                    minion.matches_with(id, &grains(), pil, ":"),
                    "{id} {pil:?}"
                );
            }
        }
    }

    fn ids() -> impl Strategy<Value = String> {
        "[a-c]{1,3}[0-9]?"
    }

    fn glob_atoms() -> impl Strategy<Value = String> {
        "[a-c*?]{1,3}[0-9*]?"
    }

    /// A compound expression over id globs, grains and pillar terms, kept
    /// as a tree so the test can write it out with its own parentheses.
    #[derive(Debug, Clone)]
    enum Expr {
        Word(String),
        Not(Box<Expr>),
        And(Box<Expr>, Box<Expr>),
        Or(Box<Expr>, Box<Expr>),
    }

    impl Expr {
        fn text(&self) -> String {
            match self {
                Expr::Word(w) => w.clone(),
                Expr::Not(e) => format!("not ( {} )", e.text()),
                Expr::And(a, b) => format!("( {} ) and ( {} )", a.text(), b.text()),
                Expr::Or(a, b) => format!("( {} ) or ( {} )", a.text(), b.text()),
            }
        }
    }

    fn exprs() -> impl Strategy<Value = Expr> {
        let word = prop_oneof![
            glob_atoms(),
            "G@os:(Debian|Arch)",
            "I@(a|b):[12*]",
            "J@(a|b):[12]",
        ]
        .prop_map(Expr::Word);
        word.prop_recursive(4, 16, 2, |inner| {
            prop_oneof![
                inner.clone().prop_map(|e| Expr::Not(Box::new(e))),
                (inner.clone(), inner.clone())
                    .prop_map(|(a, b)| Expr::And(Box::new(a), Box::new(b))),
                (inner.clone(), inner).prop_map(|(a, b)| Expr::Or(Box::new(a), Box::new(b))),
            ]
        })
    }

    /// Every pillar the generated pillar terms can tell apart: keys `a`
    /// and `b` each missing, 1 or 2.
    fn all_pillars() -> Vec<Value> {
        let choices = [None, Some(1), Some(2)];
        let mut out = Vec::new();
        for a in choices {
            for b in choices {
                let mut map = Map::new();
                if let Some(v) = a {
                    map.insert("a".into(), json!(v));
                }
                if let Some(v) = b {
                    map.insert("b".into(), json!(v));
                }
                out.push(Value::Object(map));
            }
        }
        out
    }

    proptest! {
        #[test]
        fn parse_and_match_never_panic(expr in ".{0,60}", id in ".{0,10}") {
            let groups = ng(&[("g", "a* or N@g"), ("h", "L@a,b")]);
            let g = grains();
            for ty in [
                TargetType::Glob, TargetType::Pcre, TargetType::List,
                TargetType::Grain, TargetType::GrainPcre, TargetType::Ipcidr,
                TargetType::Compound, TargetType::Nodegroup,
                TargetType::Pillar, TargetType::PillarPcre,
            ] {
                if let Ok(target) = parse(&expr, ty, &groups) {
                    let _ = target.matches(&id, &g, ":");
                    let _ = target.matches(&id, &g, "");
                    let _ = target.matches_with(&id, &g, Some(&g), ":");
                    let _ = target.listed_ids();
                }
            }
        }


        #[test]
        fn unknown_pillar_is_sound_three_valued_logic(e in exprs(), id in ids()) {
            let target = t(&e.text(), TargetType::Compound);
            let g = grains();
            let known: Vec<bool> = all_pillars()
                .iter()
                .map(|p| target.matches_with(&id, &g, Some(p), ":"))
                .collect();
            let truth = target.truth(&id, &g, None, ":");
            // Never a false "no": a minion some pillar makes match may match.
            if known.iter().any(|k| *k) {
                prop_assert!(target.matches_with(&id, &g, None, ":"));
            }
            // "Yes" and "no" with the pillar unknown hold for every pillar.
            match truth {
                Truth::Yes => prop_assert!(known.iter().all(|k| *k)),
                Truth::No => prop_assert!(known.iter().all(|k| !*k)),
                Truth::Unknown => prop_assert!(target.uses_pillar()),
            }
            prop_assert_eq!(target.matches(&id, &g, ":"), truth != Truth::No);
        }

        #[test]
        fn kleene_connectives(a in exprs(), b in exprs(), id in ids()) {
            let g = grains();
            let truth = |e: &Expr| t(&e.text(), TargetType::Compound).truth(&id, &g, None, ":");
            let (ta, tb) = (truth(&a), truth(&b));
            let and = truth(&Expr::And(Box::new(a.clone()), Box::new(b.clone())));
            let or = truth(&Expr::Or(Box::new(a.clone()), Box::new(b)));
            let not = truth(&Expr::Not(Box::new(a)));
            // With No < Unknown < Yes, Kleene and/or are min/max.
            let rank = |t: Truth| t as u8;
            prop_assert_eq!(rank(and), rank(ta).min(rank(tb)));
            prop_assert_eq!(rank(or), rank(ta).max(rank(tb)));
            prop_assert_eq!(not, ta.not());
            prop_assert_eq!(rank(not), 2 - rank(ta));
        }

        #[test]
        fn compound_tokens_never_panic(
            words in proptest::collection::vec(
                prop_oneof![
                    Just("and".to_string()), Just("or".to_string()),
                    Just("not".to_string()), Just("(".to_string()),
                    Just(")".to_string()), "[A-Z]@[a-z:.*]{0,4}", "[a-c*]{1,3}",
                ],
                0..12,
            ),
            id in ids(),
        ) {
            let expr = words.join(" ");
            if let Ok(target) = parse(&expr, TargetType::Compound, &BTreeMap::new()) {
                let _ = target.matches(&id, &grains(), ":");
            }
        }

        #[test]
        fn compound_and_is_conjunction(a in glob_atoms(), b in glob_atoms(), id in ids()) {
            let both = t(&format!("{a} and {b}"), TargetType::Compound);
            let expected = fnmatch(&a, &id) && fnmatch(&b, &id);
            prop_assert_eq!(both.matches(&id, &Value::Null, ":"), expected);
            let either = t(&format!("({a}) or ({b})"), TargetType::Compound);
            let expected = fnmatch(&a, &id) || fnmatch(&b, &id);
            prop_assert_eq!(either.matches(&id, &Value::Null, ":"), expected);
            let neither = t(&format!("not {a} and not {b}"), TargetType::Compound);
            prop_assert_eq!(neither.matches(&id, &Value::Null, ":"), !expected);
        }
    }
}
