//! A memoising backtracker for the subset of JavaScript `RegExp` syntax that Bowser's rules use.
//!
//! Supported: literals, `.`, `^`, `$`, `\b`, `\B`, `\d \D \s \S \w \W`, identity escapes (`\/`, `\.`, ...),
//! `\t \n \r \f \v`, character classes with ranges, capturing and `(?:...)` groups, alternation, and the `*`, `+`,
//! `?` quantifiers with their lazy forms; the only flag is `i`. Anything else fails to compile (`None`), and so
//! does a quantified group that could match the empty string (`(a*)+`; Bowser has none, see below).
//!
//! Semantics follow ECMAScript without the `u` flag: the input is UTF-16 code units; `i` folds ASCII letters only
//! (JavaScript never folds a non-ASCII unit onto an ASCII one); `.` excludes `\n \r U+2028 U+2029`; `\s` is
//! JavaScript's white-space set; search is leftmost, alternatives and quantifiers are tried in JavaScript's order;
//! captures inside a repeated group are reset on each iteration.
//!
//! # How, and why it is linear
//!
//! A pattern compiles to a small program (`Inst`: match a literal or a unit, assert, save a capture position,
//! `Split` into a preferred and a fallback branch, `Jmp`, `Match`). The matcher walks it depth first with an
//! explicit stack, taking the preferred branch of every `Split` first, which is exactly the order in which
//! JavaScript's backtracking tries alternatives and greedy/lazy iterations; the first path that reaches `Match` is
//! JavaScript's match, captures included.
//!
//! Memoisation makes it linear (the idea of RE2's BitState and regex-automata's `BoundedBacktracker`): whether the
//! rest of the program can match from instruction `pc` at position `pos` depends on `(pc, pos)` only, never on the
//! path that got there, because these patterns have no back-references and no look-arounds, and captures never
//! decide success. So the first visit of a `(pc, pos)` pair that fails proves every later visit fails too, and the
//! matcher records visited pairs in a bitset and never enters one twice, across all start positions of a search.
//! One search therefore executes at most `program length x (input length + 1)` instructions
//! (`Regex::max_steps`), whatever the input; there is no step budget that could cut a search short and change
//! its result, and no recursion, so no stack depth to run out of.
//!
//! The one JavaScript rule that does depend on the path is that an iteration beyond a quantifier's minimum may not
//! match the empty string (ECMAScript's RepeatMatcher compares the position with the iteration's start). It only
//! matters for a quantified group that *can* match empty; compiling rejects those, so the rule never applies and
//! the memo stays exact. No Bowser pattern has one (`every_pattern_compiles` checks them all).
//!
//! The visited set holds `program length x (input length + 1)` bits (about 8 KiB for a 60-instruction pattern on
//! a 1000-unit agent, the longest the message limit allows); it lives in [`Text`] and is reused by every search
//! over that text. It is never cleared between searches: each word carries the number of the search that wrote
//! it, and a word from an earlier search reads as unvisited, so a search pays for the states it visits, not for
//! the size of the set.
//!
//! # What else keeps a search cheap
//!
//! Linear is not enough: a parse runs up to about 180 searches over up to 1000 units, against a budget of
//! 100 µs. So before the matcher runs:
//!
//! * **Required literals.** The literals every match contains, in order (a top-level literal, or one of a few
//!   alternatives: `(?:firefox|iceweasel|fxios)`), are looked for with `memmem` in [`Text::folded`]; most
//!   searches end there, without a single attempt.
//! * **Where matches start.** The literals every match starts with (through alternations, optional prefixes,
//!   classes of a few units, a leading `\b` kept as a condition on the position) give the only start positions
//!   worth trying: their occurrences. A start position is not free: an attempt that fails at once still costs
//!   some 20 to 50 ns, so trying every position that begins with `i` on a run of `i`s cost as much as the rest
//!   of the parse.
//! * **The lead.** The units every match begins with, position by position as far as the pattern fixes them
//!   (`(web|hpw)[o0]s`: `w|h`, `e|p`, `b|w`, `o|0`, `s`), are checked at each start on the folded text before an
//!   attempt is set up, so dense near-misses (`webwebweb...`) cost a few comparisons each.
//!
//! And in the matcher, a loop over a single unit (`.*`, `\d+`, `[\d.]+`, `\S+`, lazy or greedy) is one instruction
//! (`Inst::Star`) instead of three per unit: it scans its run, marks the loop's states visited as the three
//! instructions would, and tries what follows at each end of the run in the loop's order, skipping the ends where
//! the next unit cannot start what follows. The generic fallback `^(.*)\/(.*)[ \t]\((.*)` thus tries its
//! continuation only before a `/`, a blank or a `(`, not at every unit.
//!
//! None of this changes a result: the tests compare every pattern with the plain program (no prefilter, a start
//! at every position, three-instruction loops) on random, structured and exhaustively enumerated short subjects.
//! What a search costs is counted by kind in [`Work`], which the hostile-agent test holds to the budget.

use std::ops::Range;

/// Visited states per word of [`Scratch::visited`] (the other half of the word is the search's stamp).
const STATES_PER_WORD: usize = 32;

/// Capture slots (group 0 plus up to 7 groups); Bowser's patterns use at most 3 groups.
const SLOTS: usize = 8;

type Caps = [Option<(usize, usize)>; SLOTS];

/// The subject of a search: the user agent as UTF-16 code units (what JavaScript matches on), plus one byte
/// per unit for a fast literal prefilter (ASCII lower-cased; anything else `0xFF`, which no pattern
/// literal contains and which case folding never turns into ASCII), plus the matcher's reusable scratch space.
pub(super) struct Text {
    units: Vec<u16>,
    folded: Vec<u8>,
    scratch: Scratch,
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
        let mut scratch = Scratch::default();
        // Converting and folding the text is a walk over it too.
        scratch.work.walked = units.len() as u64;
        Text { units, folded, scratch }
    }

    pub(super) fn units(&self) -> &[u16] {
        &self.units
    }

    /// Instructions executed by every search over this text so far (what the linear bound is about).
    #[cfg(test)]
    pub(super) fn steps(&self) -> u64 {
        self.scratch.work.steps
    }

    /// Everything the searches over this text have done so far (see [`Work`]).
    pub(super) fn work(&self) -> Work {
        self.scratch.work
    }
}

/// What searches cost, counted by kind: the matcher's instructions are not the only work a search does.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Work {
    /// Matcher instructions executed.
    pub(crate) steps: u64,
    /// Start positions handed to the matcher (each sets up a fresh attempt, whatever it then executes).
    pub(crate) attempts: u64,
    /// Words of the visited set zeroed (only where it grows: see [`Scratch::reset`]).
    pub(crate) cleared_words: u64,
    /// Literal searches started (`memmem` calls): each has a fixed cost, however short the stretch it scans.
    pub(crate) finds: u64,
    /// Units of the text those literal searches looked at (vectorised: a small fraction of a nanosecond each).
    pub(crate) scanned: u64,
    /// Units looked at one at a time outside instructions: the runs of single-unit loops and the ends they skip,
    /// the lead checked at a start, the first-unit filter of a pattern without start literals.
    pub(crate) walked: u64,
}

impl Work {
    /// The counts weighted by what each costs: roughly nanoseconds of CPU in a release build on the machine the
    /// benchmarks ran on (BENCHMARKS.md). The weights are a least-squares fit of CPU time per parse against
    /// these counts, over 170 agents (`benches/user_agent.rs`' agents and more of the hostile shapes, including
    /// the costliest a random search over Bowser's tokens found): an instruction about 6.5 ns, setting up an
    /// attempt about 3 ns more, a literal search about 10 ns plus 0.05 ns per unit it scans, a unit walked one at
    /// a time about 2 ns, a visited-set word zeroed a fraction of a nanosecond. The sum is within about 30 % of
    /// the measured time for every one of them (closer for the costly ones).
    #[cfg(test)]
    pub(crate) fn cost(&self) -> u64 {
        6 * self.steps
            + 3 * self.attempts
            + 10 * self.finds
            + self.scanned / 20
            + 2 * self.walked
            + self.cleared_words / 4
    }
}

/// The capture groups of one match.
pub(super) struct Captures(Caps);

impl Captures {
    /// The span of group `n` (`None`: the group did not participate).
    pub(super) fn group(&self, n: usize) -> Option<Range<usize>> {
        let (s, e) = (*self.0.get(n)?)?;
        Some(s..e)
    }
}

/// The matcher's working memory, reused by every search over one [`Text`].
#[derive(Default)]
struct Scratch {
    /// One bit per `(pc, pos)`, set once the matcher has entered that state in the current search: state `i` is
    /// bit `i % 32` of word `i / 32`, whose high 32 bits hold the number of the search that wrote it (see
    /// [`Scratch::reset`]).
    visited: Vec<u64>,
    /// The number of the current search over this text (0: none yet).
    search: u32,
    /// Pending work: states to try next, and capture values to restore when backtracking past a save.
    stack: Vec<Frame>,
    /// Capture positions of the path being explored: slot `2n` is where group `n` starts, `2n + 1` where it ends.
    slots: [Option<usize>; 2 * SLOTS],
    /// What all searches over the text have cost so far.
    work: Work,
}

#[derive(Clone, Copy)]
enum Frame {
    /// Try instruction `pc` at `pos` (the fallback branch of a `Split`, or a start position).
    Step { pc: u32, pos: u32 },
    /// Backtracking past a `Save`/`Clear`: put the slot's previous value back.
    Restore { slot: u8, old: Option<usize> },
    /// The pending iterations of the greedy [`Inst::Star`] at `pc`: try what follows it at `hi`, `hi - 1`, ...,
    /// `lo`, in that order.
    Greedy { pc: u32, lo: u32, hi: u32 },
    /// The lazy [`Inst::Star`] at `pc` after trying what follows it at `pos`: take one more unit and try again.
    Lazy { pc: u32, pos: u32 },
}

/// One instruction of a compiled pattern.
#[derive(Debug)]
enum Inst {
    /// These units, in order (with ASCII case folding under `i`).
    Lit(Vec<u16>),
    /// Any unit but a line terminator.
    Any,
    Class(Class),
    /// `^`: position 0.
    Start,
    /// `$`: the end of the input.
    End,
    /// `\b` (false) or `\B` (true).
    WordBoundary(bool),
    /// Record the position in capture slot `n`.
    Save(u8),
    /// A new iteration of a quantified group: forget the captures of the groups inside it (these slots).
    Clear(Range<u8>),
    /// `x*` or `x*?` for a single-unit `x` (`.`, a class): the loop `Split`, `x`, `Jmp` of three instructions per
    /// unit as one instruction that scans its run, then tries what follows it (at `pc + 1`) at each end of the
    /// run in the order the loop would: longest first when greedy, shortest first when lazy. `follow` is the
    /// set of ASCII units what follows must start with, when known: ends where the next unit is not in it fail
    /// at once, so the scan skips them instead of trying them.
    Star {
        unit: Unit,
        greedy: bool,
        follow: Option<u128>,
    },
    /// Continue at the first target; if that fails, at the second.
    Split(u32, u32),
    Jmp(u32),
    Match,
}

/// What one iteration of an [`Inst::Star`] matches.
#[derive(Debug)]
enum Unit {
    /// `.`: any unit but a line terminator.
    Any,
    /// A class, with the ASCII units it matches (case folding included) as a bitmap: a run is scanned unit by
    /// unit, so the common case is one bit test.
    Class(Class, u128),
}

impl Unit {
    fn class(cls: &Class, ci: bool) -> Unit {
        let ascii = (0..128u16)
            .filter(|&c| cls.matches(c, ci))
            .fold(0u128, |set, c| set | 1u128 << c);
        Unit::Class(cls.clone(), ascii)
    }

    fn matches(&self, c: u16, ci: bool) -> bool {
        match self {
            Unit::Any => !is_line_terminator(c),
            Unit::Class(_, ascii) if c < 128 => ascii & (1u128 << c) != 0,
            Unit::Class(cls, _) => cls.matches(c, ci),
        }
    }
}

/// A compiled pattern.
#[derive(Debug)]
pub(super) struct Regex {
    prog: Vec<Inst>,
    ci: bool,
    anchored: bool,
    /// Literals every match starts with (one of them), when the pattern has such a set: the only positions the
    /// matcher is started at are their occurrences in [`Text::folded`].
    starts: Option<LitSet>,
    /// Otherwise, bitmap of the ASCII units a match can start with (case variants included), when that set is known.
    first: Option<u128>,
    /// What every match's first units are (as they read in [`Text::folded`]), as far as the pattern fixes them:
    /// `(web|hpw)[o0]s` gives `w|h`, `e|p`, `b|w`, `o|0`, `s`. A start where the text does not fit is not
    /// attempted.
    lead: Vec<ByteSet>,
    /// Sets of literals such that every match contains one literal of each set, in this order and without overlap,
    /// looked for in [`Text::folded`] before anything else: when they are not there in order, the search is over
    /// without a single attempt.
    required: Vec<LitSet>,
}

/// Literals, lower-cased ASCII as in [`Text::folded`] (so a case-sensitive pattern's literals find a superset of
/// its occurrences), each with the word-boundary assertion that a match must also satisfy just before it, if any.
#[derive(Debug)]
struct LitSet {
    finders: Vec<memchr::memmem::Finder<'static>>,
    /// Per finder: `Some(false)` for `\b`, `Some(true)` for `\B`.
    boundary: Vec<Option<bool>>,
}

impl LitSet {
    /// The set of `prefixes`' literals, less those that another one begins (where the longer literal occurs, the
    /// shorter does too, so it finds nothing more).
    fn new(prefixes: &[Prefix]) -> LitSet {
        let covered = |p: &Prefix| {
            prefixes.iter().any(|q| {
                q.bytes.len() < p.bytes.len()
                    && p.bytes.starts_with(&q.bytes)
                    && (q.boundary.is_none() || q.boundary == p.boundary)
            })
        };
        let prefixes: Vec<&Prefix> = prefixes.iter().filter(|p| !covered(p)).collect();
        LitSet {
            finders: prefixes
                .iter()
                .map(|p| memchr::memmem::Finder::new(&p.bytes).into_owned())
                .collect(),
            boundary: prefixes.iter().map(|p| p.boundary).collect(),
        }
    }

    /// Where literal `k` next occurs at or after `from` (counting the units its search looks at).
    fn find(&self, k: usize, folded: &[u8], from: usize, work: &mut Work) -> Option<usize> {
        let haystack = folded.get(from..)?;
        let finder = &self.finders[k];
        work.finds += 1;
        match finder.find(haystack) {
            Some(at) => {
                work.scanned += (at + finder.needle().len()) as u64;
                Some(from + at)
            }
            None => {
                work.scanned += haystack.len() as u64;
                None
            }
        }
    }

    /// The end of the occurrence of one of the literals, at or after `from`, that ends first.
    fn first_end(&self, folded: &[u8], from: usize, work: &mut Work) -> Option<usize> {
        (0..self.finders.len())
            .filter_map(|k| Some(self.find(k, folded, from, work)? + self.finders[k].needle().len()))
            .min()
    }

    /// Calls `attempt` at each occurrence of one of the literals whose boundary assertion holds, in increasing
    /// order of position, until one returns `Some`.
    fn each_start<T>(
        &self,
        folded: &[u8],
        scratch: &mut Scratch,
        mut attempt: impl FnMut(&mut Scratch, usize) -> Option<T>,
    ) -> Option<T> {
        let n = self.finders.len();
        let mut next = [None; MAX_LITERALS];
        for (k, at) in next.iter_mut().enumerate().take(n) {
            *at = self.find(k, folded, 0, &mut scratch.work);
        }
        loop {
            let start = next[..n].iter().flatten().min().copied()?;
            let boundary = boundary_at(folded, start);
            let holds = |k: usize| self.boundary[k].is_none_or(|negated| boundary != negated);
            if (0..n).any(|k| next[k] == Some(start) && holds(k)) {
                if let Some(found) = attempt(scratch, start) {
                    return Some(found);
                }
            }
            for (k, at) in next.iter_mut().enumerate().take(n) {
                if *at != Some(start) {
                    continue;
                }
                let mut from = start + 1;
                if !holds(k)
                    && self.boundary[k] == Some(false)
                    && self.finders[k].needle().first().is_some_and(is_word_byte)
                {
                    // `\b` before a word unit failed, so a word unit precedes `start`, and so it does every later
                    // occurrence up to the end of this run of word units: look again after the run's end.
                    let run = folded[start..]
                        .iter()
                        .position(|b| !is_word_byte(b))
                        .unwrap_or(folded.len() - start);
                    scratch.work.walked += run as u64;
                    from = start + run + 1;
                }
                *at = self.find(k, folded, from, &mut scratch.work);
            }
        }
    }
}

/// Whether position `pos` of [`Text::folded`] is a word boundary (`\b`): the folded text keeps ASCII word
/// characters word characters, and turns every other unit, none of which is one, into `0xFF`.
fn boundary_at(folded: &[u8], pos: usize) -> bool {
    let before = pos > 0 && folded.get(pos - 1).is_some_and(is_word_byte);
    let after = folded.get(pos).is_some_and(is_word_byte);
    before != after
}

/// Whether a unit of [`Text::folded`] is a word unit (`\w`).
fn is_word_byte(b: &u8) -> bool {
    b.is_ascii_alphanumeric() || *b == b'_'
}

/// The most literals a [`LitSet`] holds: more would cost more scans than the attempts they save.
const MAX_LITERALS: usize = 8;

/// A set of units of [`Text::folded`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ByteSet([u64; 4]);

impl ByteSet {
    const EMPTY: ByteSet = ByteSet([0; 4]);
    const ALL: ByteSet = ByteSet([u64::MAX; 4]);

    fn of(bytes: impl IntoIterator<Item = u8>) -> ByteSet {
        let mut set = ByteSet::EMPTY;
        for b in bytes {
            set.0[usize::from(b / 64)] |= 1 << (b % 64);
        }
        set
    }

    fn contains(&self, b: u8) -> bool {
        self.0[usize::from(b / 64)] & (1 << (b % 64)) != 0
    }

    fn union(self, other: ByteSet) -> ByteSet {
        ByteSet(std::array::from_fn(|i| self.0[i] | other.0[i]))
    }
}

/// The most units [`lead_sets`] describes: enough to tell a near-miss from a start worth attempting.
const MAX_LEAD: usize = 16;

/// Appends to `lead` the sets of units (as in [`Text::folded`]) that the first units of every match of `node`
/// belong to, in order; true when `node` has a fixed width and all of it was described, so that what follows
/// it can be appended too.
fn lead_sets(node: &Node, ci: bool, lead: &mut Vec<ByteSet>) -> bool {
    if lead.len() >= MAX_LEAD {
        return false;
    }
    match node {
        Node::Empty | Node::Start | Node::End | Node::WordBoundary(_) => true,
        Node::Lit(l) => {
            lead.extend(l.iter().map(|&u| ByteSet::of([fold_unit(u)])));
            true
        }
        Node::Any => {
            lead.push(ByteSet::ALL);
            true
        }
        Node::Class(cls) => {
            let mut bytes: Vec<u8> = (0..128u16).filter(|&c| cls.matches(c, ci)).map(fold_unit).collect();
            if class_matches_non_ascii(cls) {
                bytes.push(0xFF);
            }
            lead.push(ByteSet::of(bytes));
            true
        }
        Node::Group(inner, _) => lead_sets(inner, ci, lead),
        Node::Concat(items) => items.iter().all(|item| lead_sets(item, ci, lead)),
        Node::Alt(alts) => {
            // Position by position, the union of the alternatives, as far as all of them describe; the whole
            // only when all have the same fixed width.
            let each: Vec<(Vec<ByteSet>, bool)> = alts
                .iter()
                .map(|alt| {
                    let mut sets = Vec::new();
                    let whole = lead_sets(alt, ci, &mut sets);
                    (sets, whole)
                })
                .collect();
            let len = each.iter().map(|(sets, _)| sets.len()).min().unwrap_or(0);
            lead.extend((0..len).map(|i| each.iter().fold(ByteSet::EMPTY, |set, (sets, _)| set.union(sets[i]))));
            each.iter().all(|(sets, whole)| *whole && sets.len() == len)
        }
        Node::Repeat(rep) => {
            if rep.min >= 1 {
                lead_sets(&rep.node, ci, lead);
            }
            false
        }
    }
}

/// A unit as it reads in [`Text::folded`].
fn fold_unit(u: u16) -> u8 {
    u8::try_from(u)
        .ok()
        .filter(u8::is_ascii)
        .map_or(0xFF, |b| b.to_ascii_lowercase())
}

/// Whether `cls` can match a non-ASCII unit: a negated class, a negated escape or `\s` can.
fn class_matches_non_ascii(cls: &Class) -> bool {
    cls.negated
        || cls.items.iter().any(|item| match *item {
            Item::Range(_, hi) => hi >= 128,
            Item::Space(_) => true,
            Item::Digit(negated) | Item::Word(negated) => negated,
        })
}

/// One literal that a match of some node starts with (see [`prefixes`]).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Prefix {
    /// Lower-cased ASCII; `0xFF` for any non-ASCII unit.
    bytes: Vec<u8>,
    /// Every match that starts with `bytes` is `bytes` itself, so what follows the node can extend it.
    complete: bool,
    /// The word-boundary assertion (`Some(false)`: `\b`, `Some(true)`: `\B`) a match makes before `bytes`.
    boundary: Option<bool>,
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

#[derive(Debug, Clone)]
struct Class {
    negated: bool,
    items: Vec<Item>,
}

#[derive(Debug, Clone)]
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
        Regex::compile(literal, true)
    }

    /// [`Regex::new`] without any of the shortcuts (no prefilter: the matcher is tried at every position), the
    /// reference the shortcuts are tested against.
    #[cfg(test)]
    pub(super) fn plain(literal: &str) -> Option<Regex> {
        Regex::compile(literal, false)
    }

    fn compile(literal: &str, shortcuts: bool) -> Option<Regex> {
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
        let items: &[Node] = match &node {
            Node::Concat(items) => items,
            other => std::slice::from_ref(other),
        };
        let starts = prefixes(&node, ci)
            .filter(|set| set.iter().all(|p| !p.bytes.is_empty()))
            .map(|set| LitSet::new(&set));
        let first = first_units(&node, ci);
        let mut lead = Vec::new();
        lead_sets(&node, ci, &mut lead);
        lead.truncate(MAX_LEAD);
        // The top-level items with a literal set, as required sets: a single literal of any length (the old
        // rule), or a few literals of at least two units each (a set of single units would filter little and
        // cost a scan for each). The first item is left out when its literals are also where matches start: the
        // search for starts finds them anyway.
        let required = items
            .iter()
            .enumerate()
            .filter(|&(i, _)| i > 0 || starts.is_none())
            .filter_map(|(_, item)| prefixes(item, ci))
            .filter(|set| set.iter().all(|p| !p.bytes.is_empty()))
            .filter(|set| set.len() == 1 || (set.len() <= 4 && set.iter().all(|p| p.bytes.len() >= 2)))
            .map(|set| LitSet::new(&set))
            .collect();
        let mut prog = Vec::new();
        compile(&node, &mut prog, shortcuts, ci)?;
        prog.push(Inst::Match);
        u32::try_from(prog.len()).ok()?;
        for pc in 0..prog.len() {
            if let Inst::Star { .. } = prog[pc] {
                let set = follow_units(&prog, pc + 1, ci);
                if let Inst::Star { follow, .. } = &mut prog[pc] {
                    *follow = set;
                }
            }
        }
        if !shortcuts {
            return Some(Regex {
                prog,
                ci,
                anchored,
                starts: None,
                first: None,
                lead: Vec::new(),
                required: Vec::new(),
            });
        }
        Some(Regex {
            prog,
            ci,
            anchored,
            starts,
            first,
            lead,
            required,
        })
    }

    /// `re.test(input)`.
    pub(super) fn is_match(&self, input: &mut Text) -> bool {
        self.search(input).is_some()
    }

    /// The span of capture group `n` of the leftmost match (`None`: no match, or the group did not
    /// participate).
    pub(super) fn group(&self, input: &mut Text, n: usize) -> Option<Range<usize>> {
        self.captures(input)?.group(n)
    }

    /// Every capture group of the leftmost match (`None`: no match), from one search.
    pub(super) fn captures(&self, input: &mut Text) -> Option<Captures> {
        self.search(input).map(Captures)
    }

    /// The most instructions one search over `input_len` units can execute: every `(pc, pos)` state at most once.
    #[cfg(test)]
    pub(super) fn max_steps(&self, input_len: usize) -> u64 {
        self.prog.len() as u64 * (input_len as u64 + 1)
    }

    fn search(&self, text: &mut Text) -> Option<Caps> {
        let Text { units, folded, scratch } = text;
        let input = units.as_slice();
        let mut from = 0;
        for required in &self.required {
            from = required.first_end(folded, from, &mut scratch.work)?;
        }
        // The visited set is reset once per search (not per start: a state that failed from one start fails from
        // every start), and only when some start gets past the prefilter.
        let mut fresh = true;
        let mut attempt = |scratch: &mut Scratch, start: usize| {
            // The units a match must begin with, checked on the folded text before the matcher is set up.
            let lead = folded.get(start..).unwrap_or_default();
            let fits = lead.len() >= self.lead.len() && self.lead.iter().zip(lead).all(|(set, &b)| set.contains(b));
            scratch.work.walked += self.lead.len() as u64;
            if !fits {
                return None;
            }
            if std::mem::take(&mut fresh) {
                scratch.reset(self.prog.len() * (input.len() + 1));
            }
            scratch.work.attempts += 1;
            self.attempt(scratch, input, start)
        };
        if self.anchored {
            return attempt(scratch, 0);
        }
        if let Some(starts) = &self.starts {
            return starts.each_start(folded, scratch, attempt);
        }
        let mut found = None;
        for start in 0..=input.len() {
            scratch.work.walked += 1;
            let candidate = match self.first {
                Some(first) => input.get(start).is_some_and(|&c| c < 128 && first & (1u128 << c) != 0),
                None => true,
            };
            if candidate {
                found = attempt(scratch, start);
                if found.is_some() {
                    break;
                }
            }
        }
        found
    }

    /// One match attempt at `start` (sharing the search's visited states); the captures on success.
    ///
    /// Needs all capture slots empty, which [`Scratch::reset`] ensures for the first attempt and a failed attempt
    /// leaves behind (backtracking restores every slot it changed).
    fn attempt(&self, s: &mut Scratch, input: &[u16], start: usize) -> Option<Caps> {
        s.stack.clear();
        s.stack.push(Frame::Step {
            pc: 0,
            pos: start as u32,
        });
        while let Some(frame) = s.stack.pop() {
            match frame {
                Frame::Restore { slot, old } => s.slots[usize::from(slot)] = old,
                Frame::Step { .. } | Frame::Greedy { .. } | Frame::Lazy { .. } => {
                    let next = match frame {
                        Frame::Greedy { pc, lo, hi } => {
                            self.greedy_next(s, input, pc as usize, lo as usize, hi as usize)
                        }
                        Frame::Lazy { pc, pos } => self.lazy_next(s, input, pc as usize, pos as usize),
                        _ => None,
                    };
                    let (pc, pos) = match (frame, next) {
                        (Frame::Step { pc, pos }, _) => (pc as usize, pos as usize),
                        (Frame::Greedy { pc, .. } | Frame::Lazy { pc, .. }, Some(pos)) => (pc as usize + 1, pos),
                        _ => continue,
                    };
                    if let Some(end) = self.run(s, input, pc, pos) {
                        let mut caps: Caps = [None; SLOTS];
                        caps[0] = Some((start, end));
                        for (n, cap) in caps.iter_mut().enumerate().skip(1) {
                            if let (Some(a), Some(b)) = (s.slots[2 * n], s.slots[2 * n + 1]) {
                                *cap = Some((a, b));
                            }
                        }
                        return Some(caps);
                    }
                }
            }
        }
        None
    }

    /// Follows the program from `(pc, pos)` along preferred branches (pushing the fallbacks), until `Match` (the
    /// end position), a failed instruction or a state visited before (`None`).
    fn run(&self, s: &mut Scratch, input: &[u16], mut pc: usize, mut pos: usize) -> Option<usize> {
        let width = input.len() + 1;
        loop {
            if !s.visit(pc * width + pos) {
                return None;
            }
            s.work.steps += 1;
            match &self.prog[pc] {
                Inst::Match => return Some(pos),
                Inst::Lit(lit) => {
                    let seg = input.get(pos..pos + lit.len())?;
                    if !seg.iter().zip(lit).all(|(&c, &p)| unit_eq(self.ci, p, c)) {
                        return None;
                    }
                    pos += lit.len();
                }
                Inst::Any => match input.get(pos) {
                    Some(&c) if !is_line_terminator(c) => pos += 1,
                    _ => return None,
                },
                Inst::Class(cls) => match input.get(pos) {
                    Some(&c) if cls.matches(c, self.ci) => pos += 1,
                    _ => return None,
                },
                Inst::Start if pos == 0 => {}
                Inst::End if pos == input.len() => {}
                Inst::Start | Inst::End => return None,
                Inst::WordBoundary(negated) => {
                    let before = pos > 0 && is_word(input[pos - 1]);
                    let after = input.get(pos).is_some_and(|&c| is_word(c));
                    if (before != after) == *negated {
                        return None;
                    }
                }
                Inst::Save(slot) => {
                    let slot = *slot;
                    let old = s.slots[usize::from(slot)].replace(pos);
                    s.stack.push(Frame::Restore { slot, old });
                }
                Inst::Clear(slots) => {
                    for slot in slots.clone() {
                        let old = s.slots[usize::from(slot)].take();
                        s.stack.push(Frame::Restore { slot, old });
                    }
                }
                Inst::Star { unit, greedy: true, .. } => {
                    // Take units as long as the loop would: until one does not match, or the loop was here before.
                    let mut end = pos;
                    while input.get(end).is_some_and(|&c| unit.matches(c, self.ci)) && s.visit(pc * width + end + 1) {
                        end += 1;
                    }
                    s.work.walked += (end - pos) as u64;
                    pos = self.greedy_next(s, input, pc, pos, end)?;
                }
                Inst::Star { greedy: false, .. } => {
                    pos = self.lazy_from(s, input, pc, pos)?;
                }
                Inst::Split(preferred, fallback) => {
                    s.stack.push(Frame::Step {
                        pc: *fallback,
                        pos: pos as u32,
                    });
                    pc = *preferred as usize;
                    continue;
                }
                Inst::Jmp(target) => {
                    pc = *target as usize;
                    continue;
                }
            }
            pc += 1;
        }
    }
}

impl Regex {
    /// Whether what follows the [`Inst::Star`] at `pc` can start at `pos` (as far as its `follow` set tells).
    fn may_follow(&self, pc: usize, input: &[u16], pos: usize) -> bool {
        match &self.prog[pc] {
            Inst::Star {
                follow: Some(follow), ..
            } => input.get(pos).is_some_and(|&c| c < 128 && follow & (1u128 << c) != 0),
            _ => true,
        }
    }

    /// The greedy [`Inst::Star`] at `pc` has ends `lo..=hi` left to try, longest first: the longest end where what
    /// follows may start, leaving the shorter ones pending.
    fn greedy_next(&self, s: &mut Scratch, input: &[u16], pc: usize, lo: usize, hi: usize) -> Option<usize> {
        let end = (lo..=hi).rev().find(|&end| self.may_follow(pc, input, end));
        s.work.walked += (hi - end.unwrap_or(lo)) as u64;
        let end = end?;
        if end > lo {
            s.stack.push(Frame::Greedy {
                pc: pc as u32,
                lo: lo as u32,
                hi: end as u32 - 1,
            });
        }
        Some(end)
    }

    /// The lazy [`Inst::Star`] at `pc` has tried what follows it at `pos`: take one more unit, as the loop would
    /// (unless it does not match or the loop was there before), and go on from there.
    fn lazy_next(&self, s: &mut Scratch, input: &[u16], pc: usize, pos: usize) -> Option<usize> {
        let width = input.len() + 1;
        if input.get(pos).is_some_and(|&c| self.star_unit_matches(pc, c)) && s.visit(pc * width + pos + 1) {
            self.lazy_from(s, input, pc, pos + 1)
        } else {
            None
        }
    }

    /// The lazy [`Inst::Star`] at `pc`, entered at `pos`: the first end from `pos` on where what follows may
    /// start, leaving the longer ones pending.
    fn lazy_from(&self, s: &mut Scratch, input: &[u16], pc: usize, mut pos: usize) -> Option<usize> {
        let width = input.len() + 1;
        while !self.may_follow(pc, input, pos) {
            if !(input.get(pos).is_some_and(|&c| self.star_unit_matches(pc, c)) && s.visit(pc * width + pos + 1)) {
                return None;
            }
            s.work.walked += 1;
            pos += 1;
        }
        s.stack.push(Frame::Lazy {
            pc: pc as u32,
            pos: pos as u32,
        });
        Some(pos)
    }

    fn star_unit_matches(&self, pc: usize, c: u16) -> bool {
        match &self.prog[pc] {
            Inst::Star { unit, .. } => unit.matches(c, self.ci),
            _ => false,
        }
    }
}

impl Scratch {
    /// Starts a new search over `states` states, all unvisited.
    ///
    /// Nothing is cleared here: each word of the visited set carries the number of the search that last wrote it,
    /// and a word stamped by an earlier search reads as all unvisited. So a search pays for the states it visits,
    /// not for the size of the set, and the set is only zeroed where it grows.
    fn reset(&mut self, states: usize) {
        self.search = match self.search.checked_add(1) {
            Some(search) => search,
            None => {
                // After 2^32 searches over one text the stamps would repeat: start over from a zeroed set.
                self.work.cleared_words += self.visited.len() as u64;
                self.visited.iter_mut().for_each(|w| *w = 0);
                1
            }
        };
        let words = states.div_ceil(STATES_PER_WORD);
        if self.visited.len() < words {
            self.work.cleared_words += (words - self.visited.len()) as u64;
            self.visited.resize(words, 0);
        }
        self.slots = [None; 2 * SLOTS];
    }

    /// The visited bits of word `w` in the current search.
    fn bits(&self, w: usize) -> u32 {
        let word = self.visited[w];
        if (word >> 32) as u32 == self.search {
            word as u32
        } else {
            0
        }
    }

    /// Marks state `i` visited; false when it already was.
    fn visit(&mut self, i: usize) -> bool {
        let (w, bit) = (i / STATES_PER_WORD, 1u32 << (i % STATES_PER_WORD));
        let bits = self.bits(w);
        if bits & bit != 0 {
            return false;
        }
        self.visited[w] = (u64::from(self.search) << 32) | u64::from(bits | bit);
        true
    }
}

fn unit_eq(ci: bool, pattern: u16, c: u16) -> bool {
    pattern == c || (ci && pattern < 128 && c < 128 && (pattern as u8).eq_ignore_ascii_case(&(c as u8)))
}

/// True when `node` can match without consuming input.
fn can_be_empty(node: &Node) -> bool {
    match node {
        Node::Empty | Node::Start | Node::End | Node::WordBoundary(_) => true,
        Node::Lit(l) => l.is_empty(),
        Node::Any | Node::Class(_) => false,
        Node::Group(inner, _) => can_be_empty(inner),
        Node::Concat(items) => items.iter().all(can_be_empty),
        Node::Alt(alts) => alts.iter().any(can_be_empty),
        Node::Repeat(rep) => rep.min == 0 || can_be_empty(&rep.node),
    }
}

/// Literals that every match of `node` starts with one of (lower-cased ASCII; `0xFF` for any non-ASCII unit, as
/// in [`Text::folded`]), at most [`MAX_LITERALS`] of them; `None` when unknown or too many. An empty literal in
/// the set means some match may start with anything, which makes the set useless as a filter (callers check).
///
/// Each literal is as long as the set's size allows: `(?:firefox|iceweasel|fxios)` gives its three branches,
/// `\sedg\/` gives `edg/` after each unit `\s` can be (ASCII white space, and `0xFF`), `(?:tizen\s?)?browser\/`
/// gives `browser/` and `tizen`, and a leading `\b` is kept as a condition on the literal's position.
fn prefixes(node: &Node, ci: bool) -> Option<Vec<Prefix>> {
    let one = |bytes: Vec<u8>, boundary: Option<bool>| {
        Some(vec![Prefix {
            bytes,
            complete: true,
            boundary,
        }])
    };
    let set = match node {
        // Zero-width: they start every match with nothing (`^` and `$` are conditions the filter can ignore).
        Node::Empty | Node::Start | Node::End => one(Vec::new(), None)?,
        Node::WordBoundary(negated) => one(Vec::new(), Some(*negated))?,
        Node::Lit(l) => one(
            l.iter()
                .map(|&u| {
                    u8::try_from(u)
                        .ok()
                        .filter(u8::is_ascii)
                        .map(|b| b.to_ascii_lowercase())
                })
                .collect::<Option<Vec<u8>>>()?,
            None,
        )?,
        Node::Any => return None,
        Node::Class(cls) => class_bytes(cls, ci)?
            .into_iter()
            .map(|b| Prefix {
                bytes: vec![b],
                complete: true,
                boundary: None,
            })
            .collect(),
        Node::Group(inner, _) => prefixes(inner, ci)?,
        Node::Concat(items) => sequence_prefixes(items, ci)?,
        Node::Alt(alts) => {
            let mut set = Vec::new();
            for alt in alts {
                set.extend(prefixes(alt, ci)?);
            }
            set
        }
        Node::Repeat(rep) => {
            let mut set = prefixes(&rep.node, ci)?;
            // Only `x?` matches exactly one `x` or nothing; after `x*` or `x+` another `x` may follow.
            if rep.max != Some(1) {
                set.iter_mut().for_each(|p| p.complete = false);
            }
            if rep.min == 0 {
                set.push(Prefix {
                    bytes: Vec::new(),
                    complete: true,
                    boundary: None,
                });
            }
            set
        }
    };
    let set = dedup_prefixes(set);
    (set.len() <= MAX_LITERALS).then_some(set)
}

/// [`prefixes`] of the sequence `items`: each complete literal of the first item extended by the literals of
/// the rest, as far as the set's size allows (a literal left unextended is marked incomplete).
fn sequence_prefixes(items: &[Node], ci: bool) -> Option<Vec<Prefix>> {
    let Some((head, rest)) = items.split_first() else {
        return Some(vec![Prefix {
            bytes: Vec::new(),
            complete: true,
            boundary: None,
        }]);
    };
    let head = prefixes(head, ci)?;
    let mut tail: Option<Option<Vec<Prefix>>> = None;
    let mut set = Vec::new();
    for (i, h) in head.iter().enumerate() {
        let tail = match h.complete {
            true => tail.get_or_insert_with(|| sequence_prefixes(rest, ci)).as_ref(),
            false => None,
        };
        // Room for this literal's extensions, leaving one place for each literal after it. A literal of three or
        // more units is selective enough already: it is only extended when that costs no more literals (each
        // literal is one more scan of the text).
        let room = MAX_LITERALS.saturating_sub(set.len() + head.len() - i - 1);
        match tail {
            Some(tail) if tail.len() <= room && (tail.len() == 1 || h.bytes.len() < 3) => {
                set.extend(tail.iter().map(|t| Prefix {
                    bytes: [h.bytes.as_slice(), t.bytes.as_slice()].concat(),
                    complete: t.complete,
                    boundary: if h.bytes.is_empty() {
                        h.boundary.or(t.boundary)
                    } else {
                        h.boundary
                    },
                }))
            }
            _ => set.push(Prefix {
                complete: false,
                ..h.clone()
            }),
        }
    }
    Some(set)
}

/// Merges literals with the same bytes (complete only if both are, a boundary condition only if both have it).
fn dedup_prefixes(set: Vec<Prefix>) -> Vec<Prefix> {
    let mut out: Vec<Prefix> = Vec::with_capacity(set.len());
    for p in set {
        match out.iter_mut().find(|q| q.bytes == p.bytes) {
            Some(q) => {
                q.complete &= p.complete;
                if q.boundary != p.boundary {
                    q.boundary = None;
                }
            }
            None => out.push(p),
        }
    }
    out
}

/// The units (lower-cased ASCII, and `0xFF` for any non-ASCII unit) `cls` can match, when at most
/// [`MAX_LITERALS`].
fn class_bytes(cls: &Class, ci: bool) -> Option<Vec<u8>> {
    let mut bytes: Vec<u8> = (0..128u16)
        .filter(|&c| cls.matches(c, ci))
        .map(|c| (c as u8).to_ascii_lowercase())
        .collect();
    bytes.sort_unstable();
    bytes.dedup();
    if class_matches_non_ascii(cls) {
        bytes.push(0xFF);
    }
    (bytes.len() <= MAX_LITERALS).then_some(bytes)
}

/// The current end of `prog` as a jump target.
fn here(prog: &[Inst]) -> u32 {
    prog.len() as u32
}

/// Appends the program for `node`. `None` for a quantified group that can match empty (see the module docs) or a
/// quantifier other than `*`, `+`, `?`.
fn compile(node: &Node, prog: &mut Vec<Inst>, shortcuts: bool, ci: bool) -> Option<()> {
    match node {
        Node::Empty => {}
        Node::Lit(l) => prog.push(Inst::Lit(l.clone())),
        Node::Any => prog.push(Inst::Any),
        Node::Class(cls) => prog.push(Inst::Class(cls.clone())),
        Node::Start => prog.push(Inst::Start),
        Node::End => prog.push(Inst::End),
        Node::WordBoundary(negated) => prog.push(Inst::WordBoundary(*negated)),
        Node::Group(inner, None) => compile(inner, prog, shortcuts, ci)?,
        Node::Group(inner, Some(n)) => {
            let n = u8::try_from(*n).ok()?;
            prog.push(Inst::Save(2 * n));
            compile(inner, prog, shortcuts, ci)?;
            prog.push(Inst::Save(2 * n + 1));
        }
        Node::Concat(items) => {
            for item in items {
                compile(item, prog, shortcuts, ci)?;
            }
        }
        Node::Alt(alts) => {
            // Split(a1, next); a1; Jmp end; next: Split(a2, next'); a2; Jmp end; ... an
            let mut jumps = Vec::new();
            let (last, init) = alts.split_last()?;
            for alt in init {
                let split = prog.len();
                prog.push(Inst::Split(0, 0));
                compile(alt, prog, shortcuts, ci)?;
                jumps.push(prog.len());
                prog.push(Inst::Jmp(0));
                prog[split] = Inst::Split(split as u32 + 1, here(prog));
            }
            compile(last, prog, shortcuts, ci)?;
            let end = here(prog);
            for j in jumps {
                prog[j] = Inst::Jmp(end);
            }
        }
        Node::Repeat(rep) => {
            if can_be_empty(&rep.node) {
                return None;
            }
            let unit = match &rep.node {
                Node::Any => Some(Unit::Any),
                Node::Class(cls) => Some(Unit::class(cls, ci)),
                _ => None,
            };
            if let (true, Some(unit), None) = (shortcuts, unit, rep.max) {
                // `x+` is `x` then `x*`, in the same order.
                if rep.min == 1 {
                    compile(&rep.node, prog, shortcuts, ci)?;
                }
                prog.push(Inst::Star {
                    unit,
                    greedy: rep.greedy,
                    follow: None,
                });
                return Some(());
            }
            let order = |body: u32, exit: u32| {
                if rep.greedy {
                    Inst::Split(body, exit)
                } else {
                    Inst::Split(exit, body)
                }
            };
            let clear = |prog: &mut Vec<Inst>| -> Option<()> {
                if !rep.slots.is_empty() {
                    let lo = u8::try_from(2 * rep.slots.start).ok()?;
                    let hi = u8::try_from(2 * rep.slots.end).ok()?;
                    prog.push(Inst::Clear(lo..hi));
                }
                Some(())
            };
            match (rep.min, rep.max) {
                // x?   Split(body, end); body: [Clear] x; end:
                (0, Some(1)) => {
                    let split = prog.len();
                    prog.push(Inst::Split(0, 0));
                    clear(prog)?;
                    compile(&rep.node, prog, shortcuts, ci)?;
                    prog[split] = order(split as u32 + 1, here(prog));
                }
                // x*   loop: Split(body, end); body: [Clear] x; Jmp loop; end:
                (0, None) => {
                    let split = prog.len();
                    prog.push(Inst::Split(0, 0));
                    clear(prog)?;
                    compile(&rep.node, prog, shortcuts, ci)?;
                    prog.push(Inst::Jmp(split as u32));
                    prog[split] = order(split as u32 + 1, here(prog));
                }
                // x+   body: [Clear] x; Split(body, end); end:
                (1, None) => {
                    let body = here(prog);
                    clear(prog)?;
                    compile(&rep.node, prog, shortcuts, ci)?;
                    let split = here(prog);
                    prog.push(order(body, split + 1));
                }
                _ => return None,
            }
        }
    }
    Some(())
}

/// Bitmap of the ASCII units that every way through `prog` from `pc` to `Match` consumes first, or `None` when
/// some way consumes nothing or its first unit may be outside the set (not ASCII, `.`, a large class).
fn follow_units(prog: &[Inst], pc: usize, ci: bool) -> Option<u128> {
    let mut set = 0u128;
    let mut seen = vec![false; prog.len()];
    let mut todo = vec![pc];
    let class_set = |cls: &Class| {
        let non_ascii = cls.negated
            || cls
                .items
                .iter()
                .any(|item| !matches!(item, Item::Range(..) | Item::Digit(false) | Item::Word(false)));
        (!non_ascii).then(|| {
            (0..128u16)
                .filter(|&c| cls.matches(c, ci))
                .fold(0u128, |set, c| set | 1u128 << c)
        })
    };
    while let Some(pc) = todo.pop() {
        if std::mem::replace(&mut seen[pc], true) {
            continue;
        }
        match &prog[pc] {
            Inst::Lit(lit) => {
                let c = *lit.first()?;
                if c >= 128 {
                    return None;
                }
                set |= 1u128 << c;
                if ci {
                    set |= 1u128 << (c as u8).to_ascii_lowercase();
                    set |= 1u128 << (c as u8).to_ascii_uppercase();
                }
            }
            Inst::Any | Inst::End | Inst::Match => return None,
            Inst::Class(cls) => set |= class_set(cls)?,
            Inst::Star { unit, .. } => {
                set |= match unit {
                    Unit::Any => return None,
                    Unit::Class(cls, _) => class_set(cls)?,
                };
                todo.push(pc + 1);
            }
            Inst::Start | Inst::WordBoundary(_) | Inst::Save(_) | Inst::Clear(_) => todo.push(pc + 1),
            Inst::Split(a, b) => todo.extend([*a as usize, *b as usize]),
            Inst::Jmp(target) => todo.push(*target as usize),
        }
    }
    Some(set)
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
        // `\b` and `\B` consume nothing: the first unit is the next item's.
        Node::Concat(items) => {
            let first = items.iter().find(|n| !matches!(n, Node::WordBoundary(_)))?;
            return first_units(first, ci);
        }
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
