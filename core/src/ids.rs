//! Identifiers: generation, validation and unique-prefix resolution.
//!
//! Ids are 12 characters of lowercase Crockford base32 (60 random bits). They start with random
//! characters rather than a timestamp so that short prefixes are unique, as with git hashes:
//! users type `wf job 3kq9` instead of a full id.

use std::fmt;

/// The alphabet of ids: Crockford base32 in lowercase (no i, l, o, u).
const ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";

/// Length of a generated id.
pub const ID_LEN: usize = 12;

/// The id made of 60 random bits (the low 60 bits of `random`). The random source is the
/// caller's (`wf_runner::random::new_id` uses the operating system's), so that this crate
/// stays free of I/O.
pub fn from_random(random: u64) -> String {
    let mut n = random;
    let mut out = String::with_capacity(ID_LEN);
    for _ in 0..ID_LEN {
        out.push(ALPHABET[(n & 31) as usize] as char);
        n >>= 5;
    }
    out
}

/// Why an id or id prefix given by a user was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// The text is empty.
    #[error("empty id")]
    Empty,
    /// The text has a character ids never contain.
    #[error("malformed id {0:?}: ids use only 0-9 and a-z (without i, l, o, u)")]
    Malformed(String),
    /// The text is longer than any id.
    #[error("malformed id {0:?}: ids are at most {ID_LEN} characters")]
    TooLong(String),
}

/// Checks that `text` could be an id or a prefix of one, and returns it lowercased.
pub fn parse_prefix(text: &str) -> Result<String, IdError> {
    if text.is_empty() {
        return Err(IdError::Empty);
    }
    if text.len() > ID_LEN {
        return Err(IdError::TooLong(shorten(text)));
    }
    let lower = text.to_ascii_lowercase();
    if !lower.bytes().all(|b| ALPHABET.contains(&b)) {
        return Err(IdError::Malformed(shorten(text)));
    }
    Ok(lower)
}

fn shorten(text: &str) -> String {
    text.chars().take(40).collect()
}

/// The result of looking a prefix up among a set of ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolved<T> {
    /// Exactly one id starts with the prefix (or equals it).
    One(T),
    /// No id starts with the prefix.
    None,
    /// Several ids start with the prefix; the first few are given.
    Ambiguous(Vec<String>),
}

/// Resolves `prefix` among `candidates` (id, value). An exact match always wins.
pub fn resolve<T, I>(prefix: &str, candidates: I) -> Resolved<T>
where
    I: IntoIterator<Item = (String, T)>,
{
    let mut found: Vec<(String, T)> = Vec::new();
    for (id, value) in candidates {
        if id == prefix {
            return Resolved::One(value);
        }
        if id.starts_with(prefix) {
            found.push((id, value));
        }
    }
    match found.len() {
        0 => Resolved::None,
        1 => Resolved::One(found.pop().map(|(_, v)| v).expect("one element")),
        _ => Resolved::Ambiguous(found.into_iter().take(5).map(|(id, _)| id).collect()),
    }
}

/// A namespace name, validated as `[a-z0-9][a-z0-9_-]{0,63}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Namespace(String);

impl Namespace {
    /// Validates a namespace name.
    pub fn new(name: &str) -> Result<Self, String> {
        let ok = !name.is_empty()
            && name.len() <= 64
            && name.bytes().enumerate().all(|(i, b)| {
                b.is_ascii_lowercase() || b.is_ascii_digit() || (i > 0 && (b == b'_' || b == b'-'))
            });
        if ok {
            Ok(Self(name.to_string()))
        } else {
            Err(format!(
                "invalid namespace {:?}: it must match [a-z0-9][a-z0-9_-]{{0,63}}",
                shorten(name)
            ))
        }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Namespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_parse_and_differ() {
        let a = from_random(0x0123_4567_89ab_cdef);
        let b = from_random(0x0123_4567_89ab_cdee);
        assert_eq!(a.len(), ID_LEN);
        assert_eq!(from_random(0), "000000000000");
        // Only the low 60 bits count.
        assert_eq!(from_random(u64::MAX), from_random(u64::MAX >> 4));
        assert_ne!(a, b);
        assert_eq!(parse_prefix(&a).unwrap(), a);
    }

    #[test]
    fn prefixes_are_checked() {
        assert_eq!(parse_prefix(""), Err(IdError::Empty));
        assert!(matches!(parse_prefix("ab!"), Err(IdError::Malformed(_))));
        assert!(matches!(
            parse_prefix("abcdefghjkmnp"),
            Err(IdError::TooLong(_))
        ));
        assert!(matches!(parse_prefix("oops"), Err(IdError::Malformed(_))));
        assert_eq!(parse_prefix("AB12").unwrap(), "ab12");
    }

    #[test]
    fn resolve_prefers_exact_then_unique() {
        let ids = || {
            vec![
                ("abc".to_string(), 1),
                ("abd".to_string(), 2),
                ("x".to_string(), 3),
            ]
        };
        assert_eq!(resolve("abc", ids()), Resolved::One(1));
        assert_eq!(resolve("x", ids()), Resolved::One(3));
        assert_eq!(resolve("q", ids()), Resolved::None);
        assert!(matches!(resolve("ab", ids()), Resolved::Ambiguous(v) if v.len() == 2));
    }

    #[test]
    fn namespaces() {
        assert!(Namespace::new("my-repo_1").is_ok());
        assert!(Namespace::new("-x").is_err());
        assert!(Namespace::new("Caps").is_err());
        assert!(Namespace::new("").is_err());
        assert!(Namespace::new(&"a".repeat(65)).is_err());
    }
}
