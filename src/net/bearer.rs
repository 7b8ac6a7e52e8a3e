//! Bearer tokens, read and compared the same way on every port: the scheme matched
//! without regard to case (RFC 9110 §11.1), the token compared in constant time against
//! every accepted one, so that neither which token matched nor how much of one did shows
//! in the time taken; and a token under [`MIN_TOKEN_BYTES`] refused where it would guard
//! a port reachable from other hosts.

use subtle::{ConditionallySelectable, ConstantTimeEq};

/// The shortest token a listener beyond loopback takes: 16 bytes (128 bits when random).
pub const MIN_TOKEN_BYTES: usize = 16;

/// The token of an `Authorization: Bearer <token>` value: the scheme in any case, one or
/// more spaces, then the token (surrounding blanks dropped); `None` for any other value
/// or an empty token.
pub fn bearer(value: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = value.split_at_checked(6)?;
    if !scheme.eq_ignore_ascii_case(b"bearer") || rest.first().is_none_or(|b| *b != b' ') {
        return None;
    }
    let token = rest.trim_ascii();
    (!token.is_empty()).then_some(token)
}

/// Whether `token` is too short to guard a port reachable from other hosts.
pub fn is_weak(token: &[u8]) -> bool {
    token.len() < MIN_TOKEN_BYTES
}

/// Accepted tokens, each speaking for a `T` (a worker's id, or nothing).
#[derive(Clone)]
pub struct TokenSet<T> {
    entries: Vec<(Box<[u8]>, T)>,
}

impl<T> Default for TokenSet<T> {
    fn default() -> Self {
        TokenSet {
            entries: Vec::new(),
        }
    }
}

impl<T> std::fmt::Debug for TokenSet<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the tokens themselves.
        write!(f, "TokenSet({})", self.entries.len())
    }
}

impl<T> TokenSet<T> {
    /// The set of `(token, owner)` pairs.
    pub fn new(entries: impl IntoIterator<Item = (String, T)>) -> TokenSet<T> {
        TokenSet {
            entries: entries
                .into_iter()
                .map(|(t, owner)| (t.into_bytes().into_boxed_slice(), owner))
                .collect(),
        }
    }

    /// Whether no token is accepted (the listener takes none).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The owner of `given`, when it is one of the tokens. Every token is compared, each in
    /// time that depends only on the lengths.
    pub fn find(&self, given: &[u8]) -> Option<&T> {
        let mut found = subtle::Choice::from(0);
        let mut index = 0u64;
        for (i, (token, _)) in self.entries.iter().enumerate() {
            let same = token.as_ref().ct_eq(given);
            index.conditional_assign(&(i as u64), same);
            found |= same;
        }
        let found: bool = found.into();
        found
            .then(|| usize::try_from(index).ok())
            .flatten()
            .and_then(|i| self.entries.get(i))
            .map(|(_, owner)| owner)
    }

    /// Every token, with its owner (to check them at start).
    pub fn tokens(&self) -> impl Iterator<Item = (&[u8], &T)> {
        self.entries.iter().map(|(t, o)| (t.as_ref(), o))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scheme_is_matched_in_any_case_and_the_token_trimmed() {
        assert_eq!(bearer(b"Bearer abc"), Some(&b"abc"[..]));
        assert_eq!(bearer(b"bearer  abc "), Some(&b"abc"[..]));
        assert_eq!(bearer(b"BEARER abc"), Some(&b"abc"[..]));
        assert_eq!(bearer(b"Bearerabc"), None);
        assert_eq!(bearer(b"Basic abc"), None);
        assert_eq!(bearer(b"Bearer "), None);
        assert_eq!(bearer(b"Bear"), None);
    }

    #[test]
    fn only_a_whole_token_finds_its_owner() {
        let set = TokenSet::new([("alpha-token".to_owned(), 1), ("beta".to_owned(), 2)]);
        assert_eq!(set.find(b"alpha-token"), Some(&1));
        assert_eq!(set.find(b"beta"), Some(&2));
        assert_eq!(set.find(b"alpha"), None);
        assert_eq!(set.find(b"alpha-token2"), None);
        assert_eq!(set.find(b""), None);
        assert_eq!(TokenSet::<()>::default().find(b"x"), None);
    }

    #[test]
    fn tokens_under_sixteen_bytes_are_weak() {
        assert!(is_weak(b"short"));
        assert!(is_weak(b"fifteen-bytes!!"));
        assert!(!is_weak(b"sixteen-bytes!!!"));
    }
}
