//! Butler SOS's user-id scrambling for New Relic: SHAKE256 with an 8-byte output, as 16 lower-case hex characters.
//!
//! Matches Node's `crypto.createHash('shake256', { outputLength: 8 }).update(s).digest('hex')` over the UTF-8 bytes
//! of the *sanitised* value (reference/PROTOCOLS.md f.2). The hash state lives on the stack and the hex is written
//! straight into the caller's buffer.
//!
//! One Keccak permutation costs about 1.5-2 µs on the project machine, and an event needs three (`userFull`,
//! `userDirectory`, `userId`), which alone would cap a core near 0.2 M events/s. Users repeat, so [`UserCache`]
//! keeps the three hex strings per (directory, id): a hit costs one hash-map lookup and allocates nothing; a user
//! seen for the first time (since the cache was last emptied) costs the three hashes and one allocation for the key.
//! The cache holds at most [`UserCache::MAX_USERS`] users and is emptied when full, so memory stays bounded.

use std::collections::HashMap;

use sha3::digest::{ExtendableOutput, Update};
use sha3::Shake256;

/// Bytes of SHAKE256 output Butler SOS keeps.
pub const DIGEST_BYTES: usize = 8;

/// Characters of the hex form ([`DIGEST_BYTES`] × 2).
pub const HEX_CHARS: usize = DIGEST_BYTES * 2;

/// The 8-byte SHAKE256 digest of `s`'s UTF-8 bytes.
pub fn digest(s: &str) -> [u8; DIGEST_BYTES] {
    let mut hasher = Shake256::default();
    hasher.update(s.as_bytes());
    let mut out = [0u8; DIGEST_BYTES];
    hasher.finalize_xof_into(&mut out);
    out
}

/// The scrambled form of `s`: 16 lower-case hex characters.
pub fn hex(s: &str) -> [u8; HEX_CHARS] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let d = digest(s);
    let mut hex = [0u8; HEX_CHARS];
    for (i, b) in d.iter().enumerate() {
        hex[2 * i] = HEX[(b >> 4) as usize];
        hex[2 * i + 1] = HEX[(b & 0xf) as usize];
    }
    hex
}

/// Appends the scrambled form of `s` (16 lower-case hex characters, no quotes) to `out`.
pub fn write_hex(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&hex(s));
}

/// The scrambled `userFull`, `userDirectory` and `userId` of one user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScrambledUser {
    /// Hex of `<directory>\<id>`.
    pub full: [u8; HEX_CHARS],
    /// Hex of the directory.
    pub directory: [u8; HEX_CHARS],
    /// Hex of the id.
    pub id: [u8; HEX_CHARS],
}

/// Scrambled users by (directory, id), bounded; see the module docs.
#[derive(Debug, Default, Clone)]
pub struct UserCache {
    map: HashMap<Box<[u8]>, ScrambledUser>,
    /// Reused lookup key: directory, NUL, id (sanitised fields never contain NUL, so the key is unambiguous).
    key: Vec<u8>,
}

impl UserCache {
    /// Most users kept before the cache is emptied (a few MB at most).
    pub const MAX_USERS: usize = 16_384;

    /// An empty cache.
    pub fn new() -> UserCache {
        UserCache::default()
    }

    /// The scrambled forms for a user; `full` is `<directory>\<id>` as the event carries it.
    pub fn get(&mut self, directory: &str, id: &str, full: &str) -> ScrambledUser {
        self.key.clear();
        self.key.extend_from_slice(directory.as_bytes());
        self.key.push(0);
        self.key.extend_from_slice(id.as_bytes());
        if let Some(user) = self.map.get(self.key.as_slice()) {
            return *user;
        }
        let user = ScrambledUser {
            full: hex(full),
            directory: hex(directory),
            id: hex(id),
        };
        if self.map.len() >= Self::MAX_USERS {
            self.map.clear();
        }
        self.map.insert(self.key.as_slice().into(), user);
        user
    }

    /// Users currently cached.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True when no user is cached.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> String {
        let mut out = Vec::new();
        write_hex(&mut out, s);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn matches_node_shake256_with_8_byte_output() {
        // reference/PROTOCOLS.md f.2, confirmed against Node 20 and Python's hashlib.shake_256.
        assert_eq!(hex("LAB\\goran"), "ab4d299d22eb1b8e");
        assert_eq!(hex("LAB"), "e917621682605938");
        assert_eq!(hex("goran"), "76b784e6533bb670");
        assert_eq!(hex(""), "46b9dd2b0ba88d13");
    }

    #[test]
    fn the_cache_gives_the_same_hashes_and_stays_bounded() {
        let mut cache = UserCache::new();
        let u = cache.get("LAB", "goran", "LAB\\goran");
        assert_eq!(&u.full, b"ab4d299d22eb1b8e");
        assert_eq!(&u.directory, b"e917621682605938");
        assert_eq!(&u.id, b"76b784e6533bb670");
        assert_eq!(cache.get("LAB", "goran", "LAB\\goran"), u);
        assert_eq!(cache.len(), 1);
        // (dir "a\\b", id "c") and (dir "a", id "b\\c") share a userFull but are different users.
        let x = cache.get("a\\b", "c", "a\\b\\c");
        let y = cache.get("a", "b\\c", "a\\b\\c");
        assert_eq!(x.full, y.full);
        assert_ne!(x.directory, y.directory);
        assert_eq!(&cache.get("", "", "\\").id, b"46b9dd2b0ba88d13");
        for i in 0..UserCache::MAX_USERS + 10 {
            cache.get("D", &i.to_string(), &format!("D\\{i}"));
        }
        assert!(cache.len() <= UserCache::MAX_USERS);
        assert_eq!(&cache.get("LAB", "goran", "LAB\\goran").id, b"76b784e6533bb670");
    }

    #[test]
    fn hashes_utf8_bytes_and_appends_without_touching_what_is_there() {
        let mut out = b"x".to_vec();
        write_hex(&mut out, "é");
        assert_eq!(out.len(), 1 + HEX_CHARS);
        assert_eq!(&out[..1], b"x");
        assert!(out[1..]
            .iter()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        assert_ne!(hex("é"), hex("e"));
    }
}
