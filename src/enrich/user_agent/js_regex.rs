//! A backtracking matcher for the subset of JavaScript `RegExp` syntax that Bowser's rules use.
//!
//! Supported: literals, `.`, `^`, `$`, `\b`, `\B`, `\d \D \s \S \w \W`, identity escapes (`\/`, `\.`, ...),
//! `\t \n \r \f \v`, character classes with ranges, capturing and `(?:...)` groups, alternation, and the `*`, `+`,
//! `?` quantifiers with their lazy forms; the only flag is `i`. Anything else fails to compile (`None`).
//!
//! Semantics follow ECMAScript without the `u` flag: the input is UTF-16 code units; `i` folds ASCII letters only
//! (JavaScript never folds a non-ASCII unit onto an ASCII one); `.` excludes `\n \r U+2028 U+2029`; `\s` is
//! JavaScript's white-space set; search is leftmost, alternatives and quantifiers are tried in JavaScript's order;
//! an iteration beyond a quantifier's minimum may not match empty; captures inside a repeated group are reset on
//! each iteration.
//!
//! Every search is bounded by [`STEP_BUDGET`] matcher steps and [`MAX_DEPTH`] nested matcher calls; a search that
//! exceeds either reports "no match" instead of running on (or overflowing the stack).

use std::ops::Range;

/// Matcher steps one search may take before it gives up (reports no match).
pub(super) const STEP_BUDGET: u32 = 1_000_000;
/// Nested matcher calls one search may reach before it gives up: about 200 KiB of stack in release builds
/// (under 1 MiB unoptimised). Only repeated groups (`(\.\d+)*` etc.) nest per iteration, about five calls
/// each, so version numbers of up to about a hundred components still match.
pub(super) const MAX_DEPTH: u32 = 600;
/// Capture slots (group 0 plus up to 7 groups); Bowser's patterns use at most 3 groups.
const SLOTS: usize = 8;

type Caps = [Option<(usize, usize)>; SLOTS];

/// The subject of a search: the user agent as UTF-16 code units (what JavaScript matches on), plus one byte
/// per unit for a fast literal prefilter (ASCII lower-cased; anything else `0xFF`, which no pattern
/// literal contains and which case folding never turns into ASCII).
pub(super) struct Text {
    units: Vec<u16>,
    folded: Vec<u8>,
}

impl Text {
    pub(super) fn new(s: &str) -> Text {
        let units: Vec<u16> = s.encode_utf16().collect();
        let folded = units
            .iter()
            .map(|&u| {
                u8::try_from(u)
                    .ok()
                    .filter(u8::is_ascii)
                    .map_or(0xFF, |b| b.to_ascii_lowercase())
            })
            .collect();
        Text { units, folded }
    }

    pub(super) fn units(&self) -> &[u16] {
        &self.units
    }
}

/// A compiled pattern.
#[derive(Debug)]
pub(super) struct Regex {
    node: Node,
    ci: bool,
    anchored: bool,
    /// The pattern's leading literal, lower-cased, searched in [`Text::folded`] to find candidate starts.
    prefix: Option<memchr::memmem::Finder<'static>>,
    /// Bitmap of the ASCII units a match can start with (case variants included), when that set is known.
    first: Option<u128>,
}

#[derive(Debug)]
enum Node {
    Empty,
    Lit(Vec<u16>),
    Any,
    Class(Class),
    Start,
    End,
    /// `\b` (false) or `\B` (true).
    WordBoundary(bool),
    Group(Box<Node>, Option<usize>),
    Concat(Vec<Node>),
    Alt(Vec<Node>),
    Repeat(Box<Repeat>),
}

#[derive(Debug)]
struct Repeat {
    node: Node,
    min: usize,
    max: Option<usize>,
    greedy: bool,
    /// Capture slots of the groups inside `node` (reset per iteration).
    slots: Range<usize>,
}

#[derive(Debug)]
struct Class {
    negated: bool,
    items: Vec<Item>,
}

#[derive(Debug)]
enum Item {
    Range(u16, u16),
    /// `\d` / `\D` (negated = true)
    Digit(bool),
    Space(bool),
    Word(bool),
}

impl Item {
    fn matches(&self, c: u16) -> bool {
        match *self {
            Item::Range(lo, hi) => lo <= c && c <= hi,
            Item::Digit(neg) => is_digit(c) != neg,
            Item::Space(neg) => is_js_space(c) != neg,
            Item::Word(neg) => is_word(c) != neg,
        }
    }
}

impl Class {
    fn matches(&self, c: u16, ci: bool) -> bool {
        let mut hit = self.items.iter().any(|it| it.matches(c));
        if !hit && ci && c < 128 {
            let b = c as u8;
            let other = if b.is_ascii_lowercase() {
                b.to_ascii_uppercase()
            } else {
                b.to_ascii_lowercase()
            };
            if other != b {
                hit = self.items.iter().any(|it| it.matches(u16::from(other)));
            }
        }
        hit != self.negated
    }
}

fn is_digit(c: u16) -> bool {
    (u16::from(b'0')..=u16::from(b'9')).contains(&c)
}

fn is_word(c: u16) -> bool {
    c < 128 && ((c as u8).is_ascii_alphanumeric() || c == u16::from(b'_'))
}

fn is_line_terminator(c: u16) -> bool {
    matches!(c, 0x0A | 0x0D | 0x2028 | 0x2029)
}

/// JavaScript's `\s`: WhiteSpace and LineTerminator code points.
pub(super) fn is_js_space(c: u16) -> bool {
    matches!(
        c,
        0x09..=0x0D
            | 0x20
            | 0xA0
            | 0x1680
            | 0x2000..=0x200A
            | 0x2028
            | 0x2029
            | 0x202F
            | 0x205F
            | 0x3000
            | 0xFEFF
    )
}

/// [`is_js_space`] for a `char` (all of JavaScript's white space is in the BMP).
pub(super) fn is_js_space_char(c: char) -> bool {
    u16::try_from(u32::from(c)).is_ok_and(is_js_space)
}

impl Regex {
    /// Compiles a JavaScript regex literal such as `/version\/(\d+)/i`. `None` for unsupported syntax.
    pub(super) fn new(literal: &str) -> Option<Regex> {
        let body = literal.strip_prefix('/')?;
        let end = body.rfind('/')?;
        let (source, flags) = (&body[..end], &body[end + 1..]);
        let ci = match flags {
            "" => false,
            "i" => true,
            _ => return None,
        };
        let mut parser = Parser {
            s: source.as_bytes(),
            i: 0,
            groups: 0,
        };
        let node = parser.alternation()?;
        if parser.i != parser.s.len() || parser.groups >= SLOTS {
            return None;
        }
        let anchored = match &node {
            Node::Concat(items) => matches!(items.first(), Some(Node::Start)),
            other => matches!(other, Node::Start),
        };
        let first = first_units(&node, ci);
        let leading_lit = match &node {
            Node::Lit(l) => Some(l),
            Node::Concat(items) => match items.first() {
                Some(Node::Lit(l)) => Some(l),
                _ => None,
            },
            _ => None,
        };
        let prefix = leading_lit
            .and_then(|l| {
                l.iter()
                    .map(|&u| u8::try_from(u).ok().filter(u8::is_ascii))
                    .collect::<Option<Vec<u8>>>()
            })
            .map(|bytes| memchr::memmem::Finder::new(&bytes.to_ascii_lowercase()).into_owned());
        Some(Regex {
            node,
            ci,
            anchored,
            prefix,
            first,
        })
    }

    /// `re.test(input)`.
    pub(super) fn is_match(&self, input: &Text) -> bool {
        self.search(input).is_some()
    }

    /// The span of capture group `n` of the leftmost match (`None`: no match, or the group did not
    /// participate).
    pub(super) fn group(&self, input: &Text, n: usize) -> Option<Range<usize>> {
        let caps = self.search(input)?;
        let (s, e) = (*caps.get(n)?)?;
        Some(s..e)
    }

    fn search(&self, text: &Text) -> Option<Caps> {
        let input = text.units.as_slice();
        let mut m = Matcher {
            input,
            ci: self.ci,
            caps: [None; SLOTS],
            steps: STEP_BUDGET,
            depth: 0,
            aborted: false,
        };
        if self.anchored {
            return self.attempt(&mut m, 0);
        }
        if let Some(prefix) = &self.prefix {
            for start in prefix.find_iter(&text.folded) {
                if let Some(caps) = self.attempt(&mut m, start) {
                    return Some(caps);
                }
                if m.aborted {
                    return None;
                }
            }
            return None;
        }
        for start in 0..=input.len() {
            if let Some(first) = self.first {
                match input.get(start) {
                    Some(&c) if c < 128 && first & (1u128 << c) != 0 => {}
                    _ => continue,
                }
            }
            if let Some(caps) = self.attempt(&mut m, start) {
                return Some(caps);
            }
            if m.aborted {
                return None;
            }
        }
        None
    }

    /// One match attempt at `start`; the captures on success.
    fn attempt<'a>(&'a self, m: &mut Matcher<'a>, start: usize) -> Option<Caps> {
        m.caps = [None; SLOTS];
        let mut end = None;
        let found = m.run(&self.node, start, &mut |_, p| {
            end = Some(p);
            true
        });
        if !found {
            return None;
        }
        let mut caps = m.caps;
        caps[0] = Some((start, end?));
        Some(caps)
    }
}

/// Bitmap of the ASCII units a match of `node` can start with, or `None` when unknown, not all ASCII, or when
/// `node` can match without consuming anything. `Some` implies `node` always consumes at least one unit.
fn first_units(node: &Node, ci: bool) -> Option<u128> {
    let mut set = 0u128;
    let mut ok = true;
    let mut add = |c: u16| {
        if c < 128 {
            set |= 1u128 << c;
            if ci {
                set |= 1u128 << (c as u8).to_ascii_lowercase();
                set |= 1u128 << (c as u8).to_ascii_uppercase();
            }
        } else {
            ok = false;
        }
    };
    match node {
        Node::Lit(l) => add(*l.first()?),
        Node::Class(cls) if !cls.negated => {
            for item in &cls.items {
                let (lo, hi) = match *item {
                    Item::Range(lo, hi) if hi - lo < 16 => (lo, hi),
                    Item::Digit(false) => (u16::from(b'0'), u16::from(b'9')),
                    _ => return None,
                };
                for c in lo..=hi {
                    add(c);
                }
            }
        }
        Node::Group(inner, _) => return first_units(inner, ci),
        Node::Concat(items) => return first_units(items.first()?, ci),
        Node::Repeat(rep) if rep.min >= 1 => return first_units(&rep.node, ci),
        Node::Alt(alts) => {
            for alt in alts {
                let alt_set = first_units(alt, ci)?;
                (0..128u16).filter(|&c| alt_set & (1u128 << c) != 0).for_each(&mut add);
            }
        }
        _ => return None,
    }
    (ok && set != 0).then_some(set)
}

struct Parser<'s> {
    s: &'s [u8],
    i: usize,
    groups: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn bump(&mut self) -> Option<u8> {
        let c = self.peek()?;
        self.i += 1;
        Some(c)
    }

    fn alternation(&mut self) -> Option<Node> {
        let mut alts = vec![self.concat()?];
        while self.peek() == Some(b'|') {
            self.i += 1;
            alts.push(self.concat()?);
        }
        if alts.len() == 1 {
            alts.pop()
        } else {
            Some(Node::Alt(alts))
        }
    }

    fn concat(&mut self) -> Option<Node> {
        let mut items: Vec<Node> = Vec::new();
        while let Some(c) = self.peek() {
            if c == b'|' || c == b')' {
                break;
            }
            let groups_before = self.groups;
            let atom = self.atom()?;
            let slots = groups_before + 1..self.groups + 1;
            if let Some((min, max, greedy)) = self.quantifier()? {
                if matches!(atom, Node::Start | Node::End | Node::WordBoundary(_)) {
                    return None;
                }
                items.push(Node::Repeat(Box::new(Repeat {
                    node: atom,
                    min,
                    max,
                    greedy,
                    slots,
                })));
            } else if let (Node::Lit(new), Some(Node::Lit(prev))) = (&atom, items.last_mut()) {
                prev.extend_from_slice(new);
            } else {
                items.push(atom);
            }
        }
        match items.len() {
            0 => Some(Node::Empty),
            1 => items.pop(),
            _ => Some(Node::Concat(items)),
        }
    }

    /// `Some(None)`: no quantifier; `None`: syntax error.
    #[allow(clippy::type_complexity)]
    fn quantifier(&mut self) -> Option<Option<(usize, Option<usize>, bool)>> {
        let (min, max) = match self.peek() {
            Some(b'*') => (0, None),
            Some(b'+') => (1, None),
            Some(b'?') => (0, Some(1)),
            Some(b'{') => return None,
            _ => return Some(None),
        };
        self.i += 1;
        let greedy = if self.peek() == Some(b'?') {
            self.i += 1;
            false
        } else {
            true
        };
        Some(Some((min, max, greedy)))
    }

    fn atom(&mut self) -> Option<Node> {
        let c = self.bump()?;
        Some(match c {
            b'(' => {
                let slot = if self.s.get(self.i..self.i + 2) == Some(b"?:".as_slice()) {
                    self.i += 2;
                    None
                } else if self.peek() == Some(b'?') {
                    return None; // look-arounds are not supported
                } else {
                    self.groups += 1;
                    Some(self.groups)
                };
                let inner = self.alternation()?;
                if self.bump()? != b')' {
                    return None;
                }
                Node::Group(Box::new(inner), slot)
            }
            b'[' => Node::Class(self.class()?),
            b'.' => Node::Any,
            b'^' => Node::Start,
            b'$' => Node::End,
            b'\\' => {
                let e = self.bump()?;
                match e {
                    b'b' => Node::WordBoundary(false),
                    b'B' => Node::WordBoundary(true),
                    _ => match class_escape(e) {
                        Some(item) => Node::Class(Class {
                            negated: false,
                            items: vec![item],
                        }),
                        None => Node::Lit(vec![u16::from(char_escape(e)?)]),
                    },
                }
            }
            b'*' | b'+' | b'?' | b')' | b'{' | b'}' | b']' | b'|' => return None,
            c if c.is_ascii() => Node::Lit(vec![u16::from(c)]),
            _ => return None,
        })
    }

    fn class(&mut self) -> Option<Class> {
        let negated = if self.peek() == Some(b'^') {
            self.i += 1;
            true
        } else {
            false
        };
        let mut items = Vec::new();
        loop {
            let c = self.bump()?;
            if c == b']' {
                break;
            }
            let lo = if c == b'\\' {
                let e = self.bump()?;
                if let Some(item) = class_escape(e) {
                    items.push(item);
                    continue;
                }
                if e == b'b' {
                    0x08
                } else {
                    char_escape(e)?
                }
            } else if c.is_ascii() {
                c
            } else {
                return None;
            };
            let is_range = self.peek() == Some(b'-') && self.s.get(self.i + 1).is_some_and(|&n| n != b']');
            if is_range {
                self.i += 1;
                let h = self.bump()?;
                let hi = if h == b'\\' {
                    let e = self.bump()?;
                    if class_escape(e).is_some() {
                        return None;
                    }
                    char_escape(e)?
                } else if h.is_ascii() {
                    h
                } else {
                    return None;
                };
                if hi < lo {
                    return None;
                }
                items.push(Item::Range(u16::from(lo), u16::from(hi)));
            } else {
                items.push(Item::Range(u16::from(lo), u16::from(lo)));
            }
        }
        Some(Class { negated, items })
    }
}

fn class_escape(e: u8) -> Option<Item> {
    Some(match e {
        b'd' => Item::Digit(false),
        b'D' => Item::Digit(true),
        b's' => Item::Space(false),
        b'S' => Item::Space(true),
        b'w' => Item::Word(false),
        b'W' => Item::Word(true),
        _ => return None,
    })
}

/// The unit an escape stands for: control escapes and identity escapes of ASCII punctuation.
fn char_escape(e: u8) -> Option<u8> {
    Some(match e {
        b't' => b'\t',
        b'n' => b'\n',
        b'r' => b'\r',
        b'f' => 0x0C,
        b'v' => 0x0B,
        e if e.is_ascii_punctuation() || e == b' ' => e,
        _ => return None,
    })
}

/// What the rest of the match does once a node has matched up to a position.
type Cont<'c, 'a> = &'c mut dyn FnMut(&mut Matcher<'a>, usize) -> bool;

struct Matcher<'a> {
    input: &'a [u16],
    ci: bool,
    caps: Caps,
    steps: u32,
    depth: u32,
    aborted: bool,
}

impl<'a> Matcher<'a> {
    fn unit_eq(&self, pattern: u16, c: u16) -> bool {
        pattern == c || (self.ci && pattern < 128 && c < 128 && (pattern as u8).eq_ignore_ascii_case(&(c as u8)))
    }

    /// Spends one step; true when the budget is gone (the search is then aborted).
    fn out_of_steps(&mut self) -> bool {
        if self.aborted {
            return true;
        }
        if self.steps == 0 {
            self.aborted = true;
            return true;
        }
        self.steps -= 1;
        false
    }

    fn single(&self, node: &Node, c: u16) -> bool {
        match node {
            Node::Lit(l) => l.len() == 1 && self.unit_eq(l[0], c),
            Node::Any => !is_line_terminator(c),
            Node::Class(cls) => cls.matches(c, self.ci),
            _ => false,
        }
    }

    fn run(&mut self, node: &'a Node, pos: usize, k: Cont<'_, 'a>) -> bool {
        if self.out_of_steps() {
            return false;
        }
        if self.depth >= MAX_DEPTH {
            self.aborted = true;
            return false;
        }
        self.depth += 1;
        let ok = self.run_node(node, pos, k);
        self.depth -= 1;
        ok
    }

    fn run_node(&mut self, node: &'a Node, pos: usize, k: Cont<'_, 'a>) -> bool {
        match node {
            Node::Empty => k(self, pos),
            Node::Lit(lit) => {
                let end = pos + lit.len();
                let ok = match self.input.get(pos..end) {
                    Some(seg) => seg.iter().zip(lit).all(|(&c, &p)| self.unit_eq(p, c)),
                    None => false,
                };
                ok && k(self, end)
            }
            Node::Any | Node::Class(_) => match self.input.get(pos) {
                Some(&c) if self.single(node, c) => k(self, pos + 1),
                _ => false,
            },
            Node::Start => pos == 0 && k(self, pos),
            Node::End => pos == self.input.len() && k(self, pos),
            Node::WordBoundary(negated) => {
                let before = pos > 0 && self.input.get(pos - 1).is_some_and(|&c| is_word(c));
                let after = self.input.get(pos).is_some_and(|&c| is_word(c));
                ((before != after) != *negated) && k(self, pos)
            }
            Node::Group(inner, None) => self.run(inner, pos, k),
            Node::Group(inner, Some(slot)) => {
                let slot = *slot;
                self.run(inner, pos, &mut |m: &mut Matcher<'a>, end: usize| {
                    let saved = m.caps.get(slot).copied().flatten();
                    if let Some(c) = m.caps.get_mut(slot) {
                        *c = Some((pos, end));
                    }
                    if k(m, end) {
                        return true;
                    }
                    if let Some(c) = m.caps.get_mut(slot) {
                        *c = saved;
                    }
                    false
                })
            }
            Node::Concat(items) => self.seq(items, pos, k),
            Node::Alt(alts) => {
                for alt in alts {
                    if self.run(alt, pos, &mut *k) {
                        return true;
                    }
                    if self.aborted {
                        return false;
                    }
                }
                false
            }
            Node::Repeat(rep) => {
                if matches!(&rep.node, Node::Any | Node::Class(_)) || matches!(&rep.node, Node::Lit(l) if l.len() == 1)
                {
                    self.repeat_single(rep, pos, k)
                } else {
                    self.repeat(rep, 0, pos, k)
                }
            }
        }
    }

    fn seq(&mut self, items: &'a [Node], pos: usize, k: Cont<'_, 'a>) -> bool {
        match items.split_first() {
            None => k(self, pos),
            Some((first, rest)) => self.run(first, pos, &mut |m: &mut Matcher<'a>, p: usize| m.seq(rest, p, &mut *k)),
        }
    }

    /// A quantified single-unit matcher: count the run once, then try continuations without recursing per
    /// unit (keeps `.*` over a long agent flat on the stack).
    fn repeat_single(&mut self, rep: &'a Repeat, pos: usize, k: Cont<'_, 'a>) -> bool {
        let max = rep.max.unwrap_or(usize::MAX);
        let mut n = 0;
        while n < max {
            match self.input.get(pos + n) {
                Some(&c) if self.single(&rep.node, c) => n += 1,
                _ => break,
            }
        }
        if n < rep.min {
            return false;
        }
        if rep.greedy {
            let mut count = n;
            loop {
                if self.out_of_steps() {
                    return false;
                }
                if k(self, pos + count) {
                    return true;
                }
                if count == rep.min {
                    return false;
                }
                count -= 1;
            }
        } else {
            for count in rep.min..=n {
                if self.out_of_steps() {
                    return false;
                }
                if k(self, pos + count) {
                    return true;
                }
            }
            false
        }
    }

    /// A quantified group, after `count` iterations (ECMAScript's RepeatMatcher).
    fn repeat(&mut self, rep: &'a Repeat, count: usize, pos: usize, k: Cont<'_, 'a>) -> bool {
        if count < rep.min {
            return self.iteration(rep, count, pos, false, k);
        }
        let more = rep.max.is_none_or(|max| count < max);
        if rep.greedy {
            if more && self.iteration(rep, count, pos, true, &mut *k) {
                return true;
            }
            !self.aborted && k(self, pos)
        } else {
            if k(self, pos) {
                return true;
            }
            !self.aborted && more && self.iteration(rep, count, pos, true, k)
        }
    }

    fn iteration(&mut self, rep: &'a Repeat, count: usize, pos: usize, forbid_empty: bool, k: Cont<'_, 'a>) -> bool {
        // Unbounded repeats past their minimum need no exact count (keeps it from growing).
        let next = if rep.max.is_none() && count >= rep.min {
            count
        } else {
            count + 1
        };
        let saved = self.caps;
        if let Some(s) = self.caps.get_mut(rep.slots.clone()) {
            s.iter_mut().for_each(|c| *c = None);
        }
        let ok = self.run(&rep.node, pos, &mut |m: &mut Matcher<'a>, p: usize| {
            if forbid_empty && p == pos {
                return false;
            }
            m.repeat(rep, next, p, &mut *k)
        });
        if !ok {
            self.caps = saved;
        }
        ok
    }
}
