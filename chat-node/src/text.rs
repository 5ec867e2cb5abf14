//! Unicode rules for text that users supply: when a text is blank, how two names are
//! compared, and when two usernames look alike.
//!
//! - **Blank**: every character is White_Space or Default_Ignorable_Code_Point (zero-width
//!   space, word joiner, BOM, soft hyphen, variation selectors, fillers...). A message, a
//!   display name or a group name that is blank is refused like an empty one.
//! - **Name key** ([`name_key`]): usernames and group names are compared by their key:
//!   default-ignorables dropped, trimmed, then Unicode canonical caseless matching (NFD, full
//!   case folding, NFC), so `Straße` = `STRASSE` = `strasse` and a composed `Café` = a
//!   decomposed one. The stores keep the key in a column with a UNIQUE index and look names
//!   up by it; the name itself is kept as given (NFC) for display.
//! - **Confusable skeleton** ([`confusable_skeleton`]): two usernames whose UTS #39
//!   skeletons are equal look alike (`mallory`/`rnallory`, `paypal`/`PAYPA1`, `bob`/`b0b`);
//!   the stores keep it in a UNIQUE column, so the second is refused with `conflict`.
//!
//! No table here is written by hand. Sources: Default_Ignorable_Code_Point from ICU4X
//! `icu_properties` (Unicode DerivedCoreProperties.txt); White_Space from Rust's
//! `char::is_whitespace` (PropList.txt); full case folding from ICU4X `icu_casemap`
//! (CaseFolding.txt, statuses C and F); NFC/NFD from `unicode-normalization`; skeletons from
//! `unicode-security` (UTS #39 confusables.txt).

use std::collections::HashMap;

use icu_casemap::CaseMapper;
use icu_properties::CodePointSetData;
use icu_properties::props::DefaultIgnorableCodePoint;
use unicode_normalization::UnicodeNormalization as _;

/// Whether `c` is a Default_Ignorable_Code_Point (Unicode DerivedCoreProperties.txt, via
/// ICU4X): characters with no visible glyph of their own, such as U+200B ZERO WIDTH SPACE,
/// U+2060 WORD JOINER, U+FEFF BOM, U+00AD SOFT HYPHEN, U+200D ZWJ and variation selectors.
pub fn is_default_ignorable(c: char) -> bool {
    CodePointSetData::new::<DefaultIgnorableCodePoint>().contains(c)
}

/// Whether `s` shows nothing: every character is White_Space or Default_Ignorable_Code_Point
/// (the empty string is blank).
pub fn is_blank(s: &str) -> bool {
    s.chars()
        .all(|c| c.is_whitespace() || is_default_ignorable(c))
}

/// `s` in Unicode Normalization Form C (the form names are stored and shown in).
pub fn nfc(s: &str) -> String {
    s.nfc().collect()
}

/// Full Unicode case folding of `s` (CaseFolding.txt statuses C and F, via ICU4X): `ß` and
/// `ẞ` fold to `ss`, `ﬁ` to `fi`, `Σ`/`σ`/`ς` to `σ`.
pub fn case_fold(s: &str) -> String {
    CaseMapper::new().fold_string(s).into_owned()
}

/// The key two usernames or group names are compared by: default-ignorable code points
/// dropped, surrounding White_Space trimmed, then canonical caseless matching (Unicode
/// §3.13 D145: NFD, full case folding, NFD) given in NFC. Two names are the same name when
/// their keys are equal.
pub fn name_key(name: &str) -> String {
    let visible: String = name.chars().filter(|c| !is_default_ignorable(*c)).collect();
    let decomposed: String = visible.trim().nfd().collect();
    case_fold(&decomposed).nfc().collect()
}

/// The UTS #39 confusable skeleton of a username, regardless of case: two usernames whose
/// skeletons are equal look alike (`l`, `I`, `1` and `|` share one; so do `O`, `o` and `0`;
/// `m` and `rn`). Computed as skeleton(case_fold(skeleton(name))): the first skeleton maps
/// look-alikes to their prototypes (`1` → `l`, `0` → `O`), folding makes the result
/// case-insensitive, and the second skeleton maps what folding produced (`m` → `rn`).
pub fn confusable_skeleton(name: &str) -> String {
    let first: String = unicode_security::skeleton(name).collect();
    unicode_security::skeleton(&case_fold(&first)).collect()
}

/// New keys for the rows of one table, computed when the key rules change (a migration).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rekeyed {
    /// The row's id.
    pub id: i64,
    /// [`name_key`] of its name.
    pub key: String,
    /// [`confusable_skeleton`] of its name (users only); `None` for a user whose skeleton
    /// an older user (smaller id) already holds: existing accounts keep working, and a new
    /// name that looks like theirs still conflicts with the older one.
    pub skeleton: Option<String>,
}

/// Existing names that become the same name under [`name_key`]: the migration refuses to
/// run, naming every such set, until an operator renames all but one of each.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{what} names that were distinct before Parley compared names by Unicode NFC + full case \
     folding are now the same name: {}; rename all but one of each set (for example \
     `UPDATE {table} SET {column} = '<new name>' WHERE id = <id>`) with the previous version \
     stopped, then start again",
    .sets.join("; ")
)]
pub struct NameCollision {
    what: &'static str,
    table: &'static str,
    column: &'static str,
    /// One entry per set of colliding rows: `key `k`: id 10 `Straße`, id 11 `STRASSE``.
    pub sets: Vec<String>,
}

fn rekey(
    rows: &[(i64, String)],
    what: &'static str,
    table: &'static str,
    column: &'static str,
    skeletons: bool,
) -> Result<Vec<Rekeyed>, NameCollision> {
    let mut sorted: Vec<&(i64, String)> = rows.iter().collect();
    sorted.sort_by_key(|(id, _)| *id);
    let mut by_key: HashMap<String, Vec<&(i64, String)>> = HashMap::new();
    let mut held: HashMap<String, i64> = HashMap::new();
    let mut out = Vec::with_capacity(rows.len());
    for row in sorted {
        let (id, name) = row;
        let key = name_key(name);
        by_key.entry(key.clone()).or_default().push(row);
        let skeleton = skeletons
            .then(|| confusable_skeleton(name))
            .filter(|s| held.insert(s.clone(), *id).is_none());
        out.push(Rekeyed {
            id: *id,
            key,
            skeleton,
        });
    }
    let mut sets: Vec<String> = by_key
        .into_iter()
        .filter(|(_, rows)| rows.len() > 1)
        .map(|(key, rows)| {
            let names: Vec<String> = rows
                .iter()
                .map(|(id, name)| format!("id {id} `{name}`"))
                .collect();
            format!("key `{key}`: {}", names.join(", "))
        })
        .collect();
    if sets.is_empty() {
        return Ok(out);
    }
    sets.sort();
    Err(NameCollision {
        what,
        table,
        column,
        sets,
    })
}

/// New `username_key` and `username_skeleton` of existing users `(id, username)`; an error
/// naming every set of users whose usernames now have the same key.
pub fn rekey_users(rows: &[(i64, String)]) -> Result<Vec<Rekeyed>, NameCollision> {
    rekey(rows, "user", "users", "username", true)
}

/// New `name_key` of existing groups `(id, name)`; an error naming every set of groups whose
/// names now have the same key.
pub fn rekey_groups(rows: &[(i64, String)]) -> Result<Vec<Rekeyed>, NameCollision> {
    rekey(rows, "group", "channels", "name", false)
}

/// Logs (warn) the existing users that a rekeying left without a skeleton: their usernames
/// look like an older user's. They keep their accounts; nothing else changes for them.
pub fn log_grandfathered(users: &[Rekeyed]) {
    let ids: Vec<i64> = users
        .iter()
        .filter(|u| u.skeleton.is_none())
        .map(|u| u.id)
        .collect();
    if !ids.is_empty() {
        tracing::warn!(
            count = ids.len(),
            first_ids = ?&ids[..ids.len().min(20)],
            "existing users whose usernames look like an older user's (UTS #39 skeleton) keep \
             their accounts; new usernames that look like theirs are refused"
        );
    }
}

/// The `conflict` message for a username that is taken (`looks_alike`: another username
/// has its confusable skeleton).
pub fn username_conflict_message(username: &str, looks_alike: bool) -> String {
    if looks_alike {
        format!("the username `{username}` looks like a taken one (UTS #39 confusables)")
    } else {
        format!("the username `{username}` is taken")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blank_is_whitespace_and_default_ignorables() {
        for blank in [
            "",
            " \t\n",
            "\u{200b}",
            "\u{2060}\u{feff}\u{ad}",
            "\u{180e}\u{3164}\u{115f}",
            "\u{200c}\u{200d}\u{fe0f}\u{e0001}",
            "\u{3000}\u{a0}",
        ] {
            assert!(is_blank(blank), "{blank:?}");
        }
        for shown in ["a", "\u{200b}a", "👍", "\u{301}x", "."] {
            assert!(!is_blank(shown), "{shown:?}");
        }
    }

    #[test]
    fn name_keys_are_nfc_full_case_folding() {
        let strasse = name_key("Straße");
        assert_eq!(strasse, "strasse");
        for same in ["STRASSE", "strasse", "STRAẞE", " Stra\u{200b}ße "] {
            assert_eq!(name_key(same), strasse, "{same}");
        }
        assert_eq!(name_key("Caf\u{e9}"), name_key("Cafe\u{301}"));
        assert_eq!(name_key("CAFE\u{301}"), "caf\u{e9}");
        assert_eq!(name_key("ΣΊΣΥΦΟΣ"), name_key("σίσυφος"));
        assert_eq!(name_key("ﬁle"), "file");
        assert_ne!(name_key("Strasse"), name_key("Strase"));
        assert_ne!(name_key("Café"), name_key("Cafe"), "accents count");
    }

    #[test]
    fn skeletons_of_ascii_lookalikes() {
        for (a, b) in [
            ("mallory", "rnallory"),
            ("paypal", "PAYPA1"),
            ("bob_01", "BOB_Ol"),
            ("oscar", "0scar"),
            ("will", "wiII"),
            ("Alice", "A1ice"),
            ("bob", "BOB"),
        ] {
            assert_eq!(confusable_skeleton(a), confusable_skeleton(b), "{a} {b}");
        }
        for (a, b) in [("bob_01", "bob_02"), ("alice", "alicia"), ("dan", "clan")] {
            assert_ne!(confusable_skeleton(a), confusable_skeleton(b), "{a} {b}");
        }
    }

    #[test]
    fn rekeying_names_every_collision_and_grandfathers_lookalikes() {
        let groups = [
            (11, "STRASSE".to_owned()),
            (10, "Straße".to_owned()),
            (12, "Caf\u{e9}".to_owned()),
            (13, "other".to_owned()),
            (14, "Cafe\u{301}".to_owned()),
        ];
        let err = rekey_groups(&groups).unwrap_err();
        assert_eq!(err.sets.len(), 2);
        let msg = err.to_string();
        for part in [
            "id 10 `Straße`, id 11 `STRASSE`",
            "id 12 `Caf\u{e9}`, id 14 `Cafe\u{301}`",
            "UPDATE channels SET name",
        ] {
            assert!(msg.contains(part), "{part}: {msg}");
        }

        let users = [
            (21, "b0b".to_owned()),
            (20, "bob".to_owned()),
            (22, "carol".to_owned()),
        ];
        let keyed = rekey_users(&users).unwrap();
        let of = |id| keyed.iter().find(|r| r.id == id).unwrap();
        assert_eq!(of(20).key, "bob");
        assert_eq!(
            of(20).skeleton.as_deref(),
            Some(confusable_skeleton("bob").as_str())
        );
        assert_eq!(of(21).skeleton, None, "the younger look-alike");
        assert!(of(22).skeleton.is_some());
    }
}
