//! The one shell-style glob matcher of the workspace, with the rules of
//! Python's `fnmatch.fnmatchcase`, which Salt uses for minion ids, grain
//! values, key names, job-cache searches and `sys.*` filters: `*` any run,
//! `?` one character, `[seq]`/`[!seq]` one character of (not of) a set with
//! `a-z` ranges; a `[` without its `]` is a literal, a `]` right after `[`
//! or `[!` belongs to the set, a `-` first or last in a set is literal, a
//! reversed range (`z-a`) is empty. Case-sensitive; the whole text must match.
//!
//! A pattern is compiled once into a [`Glob`] and matched many times. The
//! invariant it keeps: [`Glob::matches`] is total and bounded. It backtracks
//! only to the last `*` (at most `len(pattern) * len(text)` rounds, never
//! exponential), and it gives up after [`MAX_STEPS`] rounds, counting and
//! logging the refusal, so a hostile pattern against a long text cannot burn
//! a core.

use std::sync::atomic::{AtomicU64, Ordering};

/// Rounds one match may take before it is refused (the strictest bound the
/// workspace had, from `salt-key`'s matcher): far above any real id or grain
/// value (`*a*b` against a 3,000-character text takes ~10^4), low enough that a
/// refused match costs about a millisecond.
pub const MAX_STEPS: usize = 1 << 20;

/// Matches refused because they ran over [`MAX_STEPS`], since the process
/// started.
static STEP_LIMIT_HITS: AtomicU64 = AtomicU64::new(0);

/// How many matches this process refused for running over [`MAX_STEPS`].
pub fn step_limit_hits() -> u64 {
    STEP_LIMIT_HITS.load(Ordering::Relaxed)
}

/// `fnmatch.fnmatchcase(text, pattern)`: compiles `pattern` and matches it
/// once. Callers that match one pattern against many texts keep a [`Glob`].
pub fn fnmatch(pattern: &str, text: &str) -> bool {
    Glob::new(pattern).matches(text)
}

/// A compiled glob pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob {
    tokens: Vec<Token>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Literal(char),
    /// `?`
    AnyOne,
    /// `*` (a run of stars compiles to one).
    Star,
    /// `[...]` / `[!...]`.
    Class {
        negated: bool,
        /// Inclusive ranges; a single character is `(c, c)`.
        ranges: Vec<(char, char)>,
    },
}

impl Token {
    /// Whether this one-character token takes `c` (a star never does: the
    /// matcher handles it).
    fn takes(&self, c: char) -> bool {
        match self {
            Token::Literal(l) => *l == c,
            Token::AnyOne => true,
            Token::Star => false,
            Token::Class { negated, ranges } => {
                ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi) != *negated
            }
        }
    }
}

impl Glob {
    /// Compiles `pattern`; every pattern is valid (as in Python).
    pub fn new(pattern: &str) -> Glob {
        let chars: Vec<char> = pattern.chars().collect();
        let mut tokens = Vec::with_capacity(chars.len());
        let mut i = 0;
        // Every round consumes at least one character.
        while i < chars.len() {
            let c = chars[i];
            i += 1;
            match c {
                '*' => {
                    if tokens.last() != Some(&Token::Star) {
                        tokens.push(Token::Star);
                    }
                }
                '?' => tokens.push(Token::AnyOne),
                '[' => match class_end(&chars, i) {
                    None => tokens.push(Token::Literal('[')),
                    Some(end) => {
                        let mut body = &chars[i..end];
                        i = end + 1;
                        let negated = body.first() == Some(&'!');
                        if negated {
                            body = &body[1..];
                        }
                        tokens.push(Token::Class {
                            negated,
                            ranges: class_ranges(body),
                        });
                    }
                },
                other => tokens.push(Token::Literal(other)),
            }
        }
        Glob { tokens }
    }

    /// Whether the whole of `text` matches. Greedy, backtracking to the last
    /// star only; refused (false, counted, logged) after [`MAX_STEPS`].
    pub fn matches(&self, text: &str) -> bool {
        let text: Vec<char> = text.chars().collect();
        let toks = &self.tokens;
        let (mut p, mut t) = (0usize, 0usize);
        // Where to resume after the last star: (its token index, text index).
        let mut resume: Option<(usize, usize)> = None;
        let mut steps = 0usize;
        while t < text.len() {
            steps += 1;
            if steps > MAX_STEPS {
                STEP_LIMIT_HITS.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    tokens = toks.len(),
                    text_chars = text.len(),
                    max_steps = MAX_STEPS,
                    "glob match refused: too many steps"
                );
                return false;
            }
            match toks.get(p) {
                Some(Token::Star) => {
                    resume = Some((p, t));
                    p += 1;
                }
                Some(tok) if tok.takes(text[t]) => {
                    p += 1;
                    t += 1;
                }
                _ => match resume {
                    Some((star_p, star_t)) => {
                        p = star_p + 1;
                        t = star_t + 1;
                        resume = Some((star_p, star_t + 1));
                    }
                    None => return false,
                },
            }
        }
        toks[p.min(toks.len())..].iter().all(|t| *t == Token::Star)
    }
}

/// The index of the `]` closing a class whose body starts at `start` (just
/// after the `[`), found as Python does: a `!` and then a `]` right at the
/// start belong to the body. `None` when the class is not closed.
fn class_end(chars: &[char], start: usize) -> Option<usize> {
    let mut j = start;
    if chars.get(j) == Some(&'!') {
        j += 1;
    }
    if chars.get(j) == Some(&']') {
        j += 1;
    }
    chars
        .get(j..)?
        .iter()
        .position(|&c| c == ']')
        .map(|off| j + off)
}

/// The members of a class body: `a-z` is a range (empty when reversed), a
/// `-` first or last is literal.
fn class_ranges(body: &[char]) -> Vec<(char, char)> {
    let mut out = Vec::new();
    let mut k = 0;
    while k < body.len() {
        if k + 2 < body.len() && body[k + 1] == '-' {
            if body[k] <= body[k + 2] {
                out.push((body[k], body[k + 2]));
            }
            k += 3;
        } else {
            out.push((body[k], body[k]));
            k += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The cases of the five matchers this one replaced (target, job cache,
    /// salt-key, the minion's `sys.*` filter, loadtest's raw baseline), each
    /// kept with its expected answer.
    #[test]
    fn union_of_former_cases() {
        let cases: &[(&str, &str, bool)] = &[
            // common::target
            ("*", "", true),
            ("*", "anything", true),
            ("web*", "web1", true),
            ("web*", "db1", false),
            ("web?", "web1", true),
            ("web?", "web12", false),
            ("web[12]", "web2", true),
            ("web[12]", "web3", false),
            ("web[a-c]", "webb", true),
            ("web[!a-c]", "webd", true),
            ("web[!a-c]", "weba", false),
            ("[]]", "]", true),
            ("[!]]", "a", true),
            ("web[", "web[", true),
            ("[a-]", "-", true),
            ("[z-a]", "m", false),
            ("*.example.com", "a.b.example.com", true),
            ("a*b*c", "aXXbYYc", true),
            ("a*b*c", "aXXbYY", false),
            ("**a", "bba", true),
            ("Web*", "web1", false),
            ("web", "web1", false),
            ("ünï*", "ünïcode", true),
            // master job cache
            ("test.*", "test.ping", true),
            ("test.*", "cmd.run", false),
            ("web?", "web10", false),
            ("web[0-9]*", "web10", true),
            ("web[!0-9]", "webx", true),
            ("web[!0-9]", "web1", false),
            ("a*b*c", "aXbYc", true),
            ("a*b*c", "aXbY", false),
            ("[", "[", true),
            ("x[", "x[", true),
            ("Test.*", "test.ping", false),
            ("*.*.*", "a.b.c", true),
            // master keys (salt-key)
            ("*", "abc", true),
            ("a*c", "abbbc", true),
            ("a?c", "abc", true),
            ("[ab]x", "bx", true),
            ("[a-c]x", "cx", true),
            ("[!a]x", "bx", true),
            ("a[", "a[", true),
            ("web*.example.*", "web1.example.com", true),
            ("*a*a*b", "aaaaaaab", true),
            ("a", "A", false),
            ("a?c", "ac", false),
            ("[!a]x", "ax", false),
            ("[a-c]x", "dx", false),
            ("abc", "abcd", false),
            ("*a*a*b", "aaaaaaaa", false),
            ("", "a", false),
            // minion exec (sys.* filters)
            ("*", "x", true),
            ("t?st.p*g", "test.ping", true),
            ("test", "test.ping", false),
            ("*.run*", "cmd.run_all", true),
            // loadtest raw baseline
            ("*", "lt-00001", true),
            ("lt-0000?", "lt-00001", true),
            ("lt-*1", "lt-00001", true),
            ("*-*0*", "lt-00001", true),
            ("lt-1*", "lt-00001", false),
            ("lt-0000", "lt-00001", false),
            ("", "", true),
            ("", "x", false),
        ];
        for &(p, s, want) in cases {
            assert_eq!(fnmatch(p, s), want, "{p:?} ~ {s:?}");
            assert_eq!(Glob::new(p).matches(s), want, "compiled {p:?} ~ {s:?}");
        }
    }

    /// Classes the minion's and loadtest's matchers did not know, now
    /// honoured everywhere as Python's fnmatch does.
    #[test]
    fn classes_everywhere() {
        assert!(fnmatch("sys.list_[fm]*", "sys.list_functions"));
        assert!(!fnmatch("sys.list_[!fm]*", "sys.list_modules"));
        assert!(fnmatch("lt-0000[0-9]", "lt-00007"));
        assert!(fnmatch("[a-c-e]", "-"), "the second dash is literal");
        assert!(fnmatch("[a-c-e]", "e"));
        assert!(!fnmatch("[a-c-e]", "d"));
        assert!(fnmatch("[]", "[]"), "an unclosed class is literal");
    }

    #[test]
    fn hostile_pattern_is_bounded() {
        let long = "a".repeat(3000);
        assert!(!fnmatch(&format!("{}b", "*a".repeat(50)), &long));
        let before = step_limit_hits();
        let huge = "a".repeat(4000);
        let pattern = format!("*{}b", "a".repeat(1000));
        assert!(!fnmatch(&pattern, &huge));
        assert!(step_limit_hits() > before, "the refusal is counted");
    }
}
