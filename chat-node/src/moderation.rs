//! Abusive-word filtering in one pass.
//!
//! Text is normalized (Unicode compatibility decomposition, combining marks dropped, case
//! folded, common look-alikes such as `0→o`, `$→s` replaced) while remembering which
//! original character each normalized byte came from. One Aho-Corasick automaton over the
//! normalized word list then scans the normalized text once; a match counts when it is a
//! whole word there. Policy `mask` replaces the original characters of each match with `*`;
//! policy `reject` refuses the text.
//!
//! ```text
//!   "Y0u  $H1T!"  --normalize-->  "you  shit!"  --automaton-->  [5..9)  --mask--> "Y0u  ****!"
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
use arc_swap::ArcSwap;
use unicode_normalization::UnicodeNormalization as _;
use unicode_normalization::char::is_combining_mark;

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

/// Normalized text plus, for each normalized byte, the index of the original character.
struct Normalized {
    text: String,
    origin: Vec<u32>,
}

fn normalize_with_origin(input: &str) -> Normalized {
    let mut text = String::with_capacity(input.len());
    let mut origin = Vec::with_capacity(input.len());
    for (index, c) in input.chars().enumerate() {
        for d in std::iter::once(c).nfkd() {
            if is_combining_mark(d) {
                continue;
            }
            for l in d.to_lowercase() {
                let l = lookalike(l);
                let before = text.len();
                text.push(l);
                origin.extend(std::iter::repeat_n(index as u32, text.len() - before));
            }
        }
    }
    Normalized { text, origin }
}

/// The normalized form of `input` (what the automaton sees).
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
            .map(normalize)
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

    /// Original character ranges `[start, end)` of whole-word matches, merged.
    fn matches(&self, input: &str) -> (Vec<(u32, u32)>, Normalized) {
        let normalized = normalize_with_origin(input);
        let Some(automaton) = &self.automaton else {
            return (Vec::new(), normalized);
        };
        let text = normalized.text.as_str();
        let mut ranges: Vec<(u32, u32)> = Vec::new();
        for m in automaton.find_overlapping_iter(text) {
            let before = text[..m.start()].chars().next_back();
            let after = text[m.end()..].chars().next();
            if is_word_char(before) || is_word_char(after) {
                continue;
            }
            let start = normalized.origin[m.start()];
            let end = normalized.origin[m.end() - 1] + 1;
            ranges.push((start, end));
        }
        ranges.sort_unstable();
        let mut merged: Vec<(u32, u32)> = Vec::with_capacity(ranges.len());
        for (s, e) in ranges {
            match merged.last_mut() {
                Some(last) if s <= last.1 => last.1 = last.1.max(e),
                _ => merged.push((s, e)),
            }
        }
        (merged, normalized)
    }

    /// Applies `policy` to `input`.
    pub fn check(&self, input: &str, policy: Policy) -> Verdict {
        let (ranges, _) = self.matches(input);
        if ranges.is_empty() {
            return Verdict::Clean;
        }
        match policy {
            Policy::Reject => Verdict::Rejected,
            Policy::Mask => {
                let mut out = String::with_capacity(input.len());
                let mut next = ranges.iter().peekable();
                for (i, c) in input.chars().enumerate() {
                    let i = i as u32;
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
    stamp: std::sync::Mutex<Option<Stamp>>,
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
            stamp: std::sync::Mutex::new(stamp),
        })
    }

    /// A moderator over an in-memory list (tests).
    pub fn from_list(policy: Policy, list: &str) -> Self {
        Self {
            policy,
            filter: ArcSwap::from_pointee(WordFilter::from_list(list)),
            file: None,
            stamp: std::sync::Mutex::new(None),
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
        *self.stamp.lock().unwrap_or_else(|e| e.into_inner()) = stamp;
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
            let last = *self.stamp.lock().unwrap_or_else(|e| e.into_inner());
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
        assert_eq!(
            f.check("BAD  WORD", Policy::Mask),
            Verdict::Clean,
            "two spaces is not the phrase"
        );
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
