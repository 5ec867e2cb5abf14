//! Abusive-word filtering in one pass.
//!
//! Text is normalized character by character while remembering which original character
//! each normalized byte came from ([`normalize_with_origin`]):
//! - default-ignorable code points (zero-width space, soft hyphen, word joiner, BOM, ZWJ,
//!   variation selectors...) are dropped, so they cannot split a word;
//! - every run of White_Space becomes one space, so doubled spaces, tabs or newlines inside
//!   a listed phrase still match it;
//! - compatibility forms are decomposed (NFKD: `ＳＨＩＴ` → `SHIT`, `ﬁ` → `fi`), combining
//!   marks dropped (`â` → `a`), case fully folded;
//! - ASCII look-alikes `0→o 1→i 3→e 4→a 5→s 7→t @→a $→s` are replaced;
//! - a letter outside ASCII is replaced by its UTS #39 confusable prototype (Cyrillic `а`,
//!   `с`, `ѕ`, `і` → Latin `a`, `c`, `s`, `i`; Greek `ο` → `o`), folded again. ASCII letters
//!   keep their own identity (`m` is not made `rn`, `l` not `I`), so English words are not
//!   confused with each other.
//!
//! One Aho-Corasick automaton over the word list, normalized the same way, then scans the
//! normalized text once; a match counts when it is a whole word there. Policy `mask`
//! replaces every original character from the match's first to its last (invisible ones
//! inside included) with `*`; policy `reject` refuses the text. Text without a match is
//! kept exactly as sent.
//!
//! ```text
//!   "Y0u  $H\u{200b}1T!"  --normalize-->  "you shit!"  --automaton-->  [4..8)
//!                                          --mask-->  "Y0u  *****!"
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
use arc_swap::ArcSwap;
use icu_casemap::CaseMapper;
use unicode_normalization::UnicodeNormalization as _;
use unicode_normalization::char::is_combining_mark;

use crate::text::is_default_ignorable;

/// What happens to a text that contains a listed word.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Policy {
    /// Replace each match with `*` and mark the message `moderated`.
    Mask,
    /// Refuse the message with `content_rejected`.
    Reject,
}

/// The verdict on one text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Clean,
    Masked(String),
    Rejected,
}

/// ASCII look-alike substitutions (leetspeak), applied after case folding.
fn lookalike(c: char) -> char {
    match c {
        '0' => 'o',
        '1' => 'i',
        '3' => 'e',
        '4' => 'a',
        '5' => 's',
        '7' => 't',
        '@' => 'a',
        '$' => 's',
        c => c,
    }
}

/// Normalized text and, for each of its bytes, where in the input it came from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Normalized {
    /// The normalized text (what the automaton scans).
    pub text: String,
    /// `origin[i]` is the byte offset in the input of the character that produced byte `i`
    /// of `text`: `origin.len() == text.len()`, never decreasing, each a char boundary of
    /// the input.
    pub origin: Vec<usize>,
}

impl Normalized {
    fn push(&mut self, c: char, at: usize) {
        if c.is_whitespace() {
            return self.space(at);
        }
        self.text.push(c);
        self.origin.resize(self.text.len(), at);
    }

    /// One space for a run of White_Space.
    fn space(&mut self, at: usize) {
        if !self.text.ends_with(' ') {
            self.text.push(' ');
            self.origin.push(at);
        }
    }
}

/// Normalizes `input` for matching, in one pass over its characters, remembering where
/// every normalized byte came from (the module docs list the steps).
///
/// Properties (for tests and fuzzing): `origin.len() == text.len()`; `origin` never
/// decreases and each entry is a char boundary of `input`; `text` holds no
/// Default_Ignorable_Code_Point, no uppercase ASCII, no ASCII look-alike digit or sign
/// (`0 1 3 4 5 7 @ $`), no White_Space other than U+0020 and never two spaces in a row;
/// ASCII input gives ASCII text no longer than the input; normalizing the text again gives
/// it unchanged (checked for every single code point once).
pub fn normalize_with_origin(input: &str) -> Normalized {
    let folder = CaseMapper::new();
    let mut out = Normalized {
        text: String::with_capacity(input.len()),
        origin: Vec::with_capacity(input.len()),
    };
    for (at, c) in input.char_indices() {
        normalize_char(&mut out, folder, c, at, 0);
    }
    out
}

/// How many times a prototype is normalized again (a prototype's own decomposition or
/// folding can have a prototype: `Ϛ` → `ϛ` → `σ` → `o`); four is more than Unicode needs.
const MAX_PROTOTYPE_DEPTH: u8 = 4;

/// Appends the normalized form of `c`, which starts at byte `at` of the input.
fn normalize_char(
    out: &mut Normalized,
    folder: icu_casemap::CaseMapperBorrowed<'static>,
    c: char,
    at: usize,
    depth: u8,
) {
    if c.is_ascii() {
        // ASCII is never default-ignorable, NFKD leaves it alone, and its letters keep
        // their identity (no `m` → `rn`).
        return out.push(lookalike(c.to_ascii_lowercase()), at);
    }
    if c.is_whitespace() {
        return out.space(at);
    }
    let mut b1 = [0u8; 4];
    let mut b2 = [0u8; 4];
    for d in std::iter::once(c).nfkd() {
        if is_combining_mark(d) || is_default_ignorable(d) {
            continue;
        }
        for f in folder.fold_string(d.encode_utf8(&mut b1)).chars() {
            if f.is_ascii() || f.is_whitespace() {
                out.push(lookalike(f), at);
                continue;
            }
            // A letter of another script that looks like a Latin one: its UTS #39
            // prototype, itself normalized (it may be uppercase, decomposable or mapped).
            let f_str: &str = f.encode_utf8(&mut b2);
            let mut prototype = unicode_security::skeleton(f_str);
            let same = prototype.next() == Some(f) && prototype.next().is_none();
            if same || depth >= MAX_PROTOTYPE_DEPTH {
                out.push(f, at);
                continue;
            }
            for p in unicode_security::skeleton(f_str) {
                normalize_char(out, folder, p, at, depth + 1);
            }
        }
    }
}

/// The normalized form of `input` (what the automaton sees); see [`normalize_with_origin`].
pub fn normalize(input: &str) -> String {
    normalize_with_origin(input).text
}

fn is_word_char(c: Option<char>) -> bool {
    c.is_some_and(char::is_alphanumeric)
}

/// A compiled word list.
#[derive(Debug)]
pub struct WordFilter {
    automaton: Option<AhoCorasick>,
    words: usize,
}

impl WordFilter {
    /// A filter that matches nothing.
    pub fn empty() -> Self {
        Self {
            automaton: None,
            words: 0,
        }
    }

    /// Compiles a word list: one word or phrase per line; blank lines and lines starting
    /// with `#` are ignored.
    pub fn from_list(list: &str) -> Self {
        let mut words: Vec<String> = list
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(|w| normalize(w).trim_matches(' ').to_owned())
            .filter(|w| !w.is_empty())
            .collect();
        words.sort();
        words.dedup();
        if words.is_empty() {
            return Self::empty();
        }
        let automaton = AhoCorasickBuilder::new()
            .match_kind(MatchKind::Standard)
            .build(&words)
            .ok();
        Self {
            automaton,
            words: words.len(),
        }
    }

    pub fn len(&self) -> usize {
        self.words
    }

    pub fn is_empty(&self) -> bool {
        self.words == 0
    }

    /// Byte ranges `[start, end)` of the input covered by whole-word matches, merged.
    fn matches(&self, input: &str) -> Vec<(usize, usize)> {
        let Some(automaton) = &self.automaton else {
            return Vec::new();
        };
        let normalized = normalize_with_origin(input);
        let text = normalized.text.as_str();
        let mut ranges: Vec<(usize, usize)> = Vec::new();
        for m in automaton.find_overlapping_iter(text) {
            let before = text[..m.start()].chars().next_back();
            let after = text[m.end()..].chars().next();
            if is_word_char(before) || is_word_char(after) {
                continue;
            }
            let start = normalized.origin[m.start()];
            let last = normalized.origin[m.end() - 1];
            let end = last + input[last..].chars().next().map_or(0, char::len_utf8);
            ranges.push((start, end));
        }
        ranges.sort_unstable();
        let mut merged: Vec<(usize, usize)> = Vec::with_capacity(ranges.len());
        for (s, e) in ranges {
            match merged.last_mut() {
                Some(last) if s <= last.1 => last.1 = last.1.max(e),
                _ => merged.push((s, e)),
            }
        }
        merged
    }

    /// Applies `policy` to `input`.
    pub fn check(&self, input: &str, policy: Policy) -> Verdict {
        let ranges = self.matches(input);
        if ranges.is_empty() {
            return Verdict::Clean;
        }
        match policy {
            Policy::Reject => Verdict::Rejected,
            Policy::Mask => {
                let mut out = String::with_capacity(input.len());
                let mut next = ranges.iter().peekable();
                for (i, c) in input.char_indices() {
                    while next.peek().is_some_and(|r| r.1 <= i) {
                        next.next();
                    }
                    if next.peek().is_some_and(|r| r.0 <= i && i < r.1) {
                        out.push('*');
                    } else {
                        out.push(c);
                    }
                }
                Verdict::Masked(out)
            }
        }
    }
}

/// The node's moderation: a policy and a word list that is reloaded when its file changes.
#[derive(Debug)]
pub struct Moderator {
    policy: Policy,
    filter: ArcSwap<WordFilter>,
    file: Option<PathBuf>,
    /// Modification time and size of the file when it was last read.
    stamp: parking_lot::Mutex<Option<Stamp>>,
}

type Stamp = (SystemTime, u64);

fn stamp_of(path: &Path) -> Option<Stamp> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// The word list file could not be read.
#[derive(Debug, thiserror::Error)]
#[error("cannot read the moderation word list {path}: {source}")]
pub struct WordListError {
    path: PathBuf,
    source: std::io::Error,
}

impl Moderator {
    /// Loads the word list from `file` (none: nothing is filtered).
    pub fn load(policy: Policy, file: Option<&Path>) -> Result<Self, WordListError> {
        let stamp = file.and_then(stamp_of);
        let filter = match file {
            Some(path) => WordFilter::from_list(&read_list(path)?),
            None => WordFilter::empty(),
        };
        Ok(Self {
            policy,
            filter: ArcSwap::from_pointee(filter),
            file: file.map(Path::to_owned),
            stamp: parking_lot::Mutex::new(stamp),
        })
    }

    /// A moderator over an in-memory list (tests).
    pub fn from_list(policy: Policy, list: &str) -> Self {
        Self {
            policy,
            filter: ArcSwap::from_pointee(WordFilter::from_list(list)),
            file: None,
            stamp: parking_lot::Mutex::new(None),
        }
    }

    pub fn policy(&self) -> Policy {
        self.policy
    }

    pub fn check(&self, text: &str) -> Verdict {
        self.filter.load().check(text, self.policy)
    }

    /// Re-reads the word list now.
    pub fn reload(&self) -> Result<usize, WordListError> {
        let Some(path) = &self.file else { return Ok(0) };
        let stamp = stamp_of(path);
        let filter = WordFilter::from_list(&read_list(path)?);
        *self.stamp.lock() = stamp;
        let n = filter.len();
        self.filter.store(Arc::new(filter));
        Ok(n)
    }

    /// Polls the word list file every `every` and reloads it when its modification time or
    /// size changes. Ends when `shutdown` fires.
    pub async fn watch(
        self: Arc<Self>,
        every: Duration,
        shutdown: tokio_util::sync::CancellationToken,
    ) {
        let Some(path) = self.file.clone() else {
            return;
        };
        let mut tick = tokio::time::interval(every);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = shutdown.cancelled() => return,
            }
            let now = stamp_of(&path);
            let last = *self.stamp.lock();
            if now.is_some() && now != last {
                match self.reload() {
                    Ok(n) => {
                        tracing::info!(path = %path.display(), words = n, "moderation word list reloaded")
                    }
                    Err(e) => tracing::warn!("{e}; keeping the previous list"),
                }
            }
        }
    }
}

fn read_list(path: &Path) -> Result<String, WordListError> {
    std::fs::read_to_string(path).map_err(|source| WordListError {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter() -> WordFilter {
        WordFilter::from_list("# test list\nshit\nbad word\n\nfrack\n")
    }

    #[test]
    fn normalizes_case_compatibility_forms_marks_and_lookalikes() {
        assert_eq!(normalize("ＳＨＩＴ"), "shit");
        assert_eq!(normalize("$h1t"), "shit");
        assert_eq!(normalize("Frâck"), "frack");
        assert_eq!(normalize("ﬁ"), "fi");
        assert_eq!(normalize("4@5"), "aas");
    }

    #[test]
    fn masks_whole_words_only_with_equal_length() {
        let f = filter();
        assert_eq!(
            f.check("you shit!", Policy::Mask),
            Verdict::Masked("you ****!".into())
        );
        assert_eq!(
            f.check("Y0u $H1T", Policy::Mask),
            Verdict::Masked("Y0u ****".into())
        );
        assert_eq!(
            f.check("ＳＨＩＴ happens", Policy::Mask),
            Verdict::Masked("**** happens".into())
        );
        assert_eq!(
            f.check("Frâck it", Policy::Mask),
            Verdict::Masked("***** it".into())
        );
        // Not whole words: left alone.
        assert_eq!(f.check("shitake mushrooms", Policy::Mask), Verdict::Clean);
        assert_eq!(f.check("bullshit", Policy::Mask), Verdict::Clean);
        assert_eq!(
            f.check("a perfectly fine sentence", Policy::Mask),
            Verdict::Clean
        );
    }

    #[test]
    fn phrases_and_several_matches() {
        let f = filter();
        assert_eq!(
            f.check("bad word, shit, frack", Policy::Mask),
            Verdict::Masked("********, ****, *****".into())
        );
    }

    #[test]
    fn origin_maps_each_normalized_byte_to_its_character() {
        let n = normalize_with_origin("A\u{200b}  ｂ\u{430}ß");
        assert_eq!(n.text, "a bass");
        assert_eq!(n.origin, [0, 4, 6, 9, 11, 11]);
        assert_eq!(normalize_with_origin(""), Normalized::default());
    }

    #[test]
    fn normalizing_twice_changes_nothing() {
        // Prototypes that have prototypes, or decompose to look-alike digits.
        for text in [
            "\u{3da}",
            "\u{2030}",
            "\u{15ef}",
            "\u{16a6}",
            "a \u{200b} b\u{3000} ",
            "Ϛ‰ᗯ ǅ",
        ] {
            let once = normalize(text);
            assert_eq!(normalize(&once), once, "{text:?}");
        }
    }

    #[test]
    fn ascii_letters_are_not_confused_with_each_other() {
        let f = WordFilter::from_list("darn\nill\n");
        for text in ["dam it", "I'll go", "i11"] {
            assert_eq!(f.check(text, Policy::Mask), Verdict::Clean, "{text}");
        }
    }

    #[test]
    fn whitespace_runs_inside_a_phrase_still_match() {
        let f = filter();
        for (text, masked) in [
            ("BAD  WORD", "*********"),
            ("a bad \t\n word!", "a ***********!"),
            ("bad\u{a0}\u{3000}word", "*********"),
        ] {
            assert_eq!(
                f.check(text, Policy::Mask),
                Verdict::Masked(masked.into()),
                "{text:?}"
            );
        }
    }

    #[test]
    fn invisible_characters_inside_a_word_are_masked_with_it() {
        let f = filter();
        for (text, masked) in [
            ("sh\u{200b}it", "*****"),
            ("s\u{ad}hit happens", "***** happens"),
            (
                "oh \u{2060}s\u{feff}h\u{200d}i\u{34f}t",
                "oh \u{2060}*******",
            ),
            ("bad\u{200b} \u{200c}word", "**********"),
        ] {
            assert_eq!(
                f.check(text, Policy::Mask),
                Verdict::Masked(masked.into()),
                "{text:?}"
            );
        }
        assert_eq!(f.check("sh\u{200b}it", Policy::Reject), Verdict::Rejected);
        // Joined into another word by an invisible character: not the word.
        assert_eq!(f.check("bull\u{200b}shit", Policy::Mask), Verdict::Clean);
    }

    #[test]
    fn letters_of_other_scripts_that_look_latin_match() {
        let f = filter();
        for (text, masked) in [
            // Cyrillic ѕ (U+0455) and і (U+0456)
            ("\u{455}h\u{456}t", "****"),
            // Cyrillic а and с, then their capitals
            ("fr\u{430}\u{441}k", "*****"),
            ("FR\u{410}\u{421}K!", "*****!"),
            // Cyrillic а and о in a phrase
            ("b\u{430}d w\u{43e}rd", "********"),
        ] {
            assert_eq!(
                f.check(text, Policy::Mask),
                Verdict::Masked(masked.into()),
                "{text:?}"
            );
        }
    }

    #[test]
    fn reject_policy_refuses() {
        let f = filter();
        assert_eq!(f.check("oh shit", Policy::Reject), Verdict::Rejected);
        assert_eq!(f.check("oh ship", Policy::Reject), Verdict::Clean);
    }

    #[test]
    fn empty_list_matches_nothing() {
        assert_eq!(
            WordFilter::from_list("# nothing\n").check("shit", Policy::Mask),
            Verdict::Clean
        );
    }

    #[tokio::test]
    async fn reloads_the_file_when_it_changes() {
        let dir = std::env::temp_dir().join(format!("parley-mod-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("words.txt");
        std::fs::write(&path, "alpha\n").unwrap();
        let m = Arc::new(Moderator::load(Policy::Reject, Some(&path)).unwrap());
        assert_eq!(m.check("alpha"), Verdict::Rejected);
        assert_eq!(m.check("beta"), Verdict::Clean);

        let stop = tokio_util::sync::CancellationToken::new();
        let watcher = tokio::spawn(m.clone().watch(Duration::from_millis(20), stop.clone()));
        std::fs::write(&path, "alpha\nbeta gamma\n").unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while m.check("beta gamma") == Verdict::Clean {
            assert!(tokio::time::Instant::now() < deadline, "not reloaded");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        stop.cancel();
        watcher.await.unwrap();
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn missing_file_is_an_error_naming_it() {
        let err =
            Moderator::load(Policy::Mask, Some(Path::new("/nonexistent/words.txt"))).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/words.txt"));
    }
}
