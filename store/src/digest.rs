//! Content digests (`sha256:<hex>`, `sha512:<hex>`) and the streaming hasher behind them.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use crate::error::{Error, Result};

/// A digest algorithm the content store accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Algorithm {
    /// SHA-256, the default and what OCI images use.
    Sha256,
    /// SHA-512.
    Sha512,
}

impl Algorithm {
    /// Every algorithm, in the order their blob directories are created.
    pub const ALL: [Algorithm; 2] = [Algorithm::Sha256, Algorithm::Sha512];

    /// Name as written before the colon and used as the blob directory name.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        }
    }

    fn hex_len(self) -> usize {
        match self {
            Algorithm::Sha256 => 64,
            Algorithm::Sha512 => 128,
        }
    }

    /// A fresh hasher for this algorithm.
    pub fn hasher(self) -> Hasher {
        match self {
            Algorithm::Sha256 => Hasher::Sha256(sha2::Sha256::new()),
            Algorithm::Sha512 => Hasher::Sha512(sha2::Sha512::new()),
        }
    }
}

/// A validated digest: a known algorithm and its lowercase hex encoding.
///
/// Invariant: `hex` has exactly the algorithm's length and only `[0-9a-f]`, so it is safe to
/// use as a file name.
///
/// Serializes as its string form, `sha256:<hex>`, in records and JSON alike; deserializing
/// validates it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Digest {
    algorithm: Algorithm,
    hex: String,
}

impl Digest {
    /// The algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The hex part, also the blob's file name.
    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// The digest of `data` with `algorithm`.
    pub fn of(algorithm: Algorithm, data: &[u8]) -> Digest {
        let mut h = algorithm.hasher();
        h.update(data);
        h.finish()
    }
}

impl FromStr for Digest {
    type Err = Error;

    /// Parses `alg:hex`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming the input for an unknown algorithm, a wrong length or
    /// a character outside lowercase hex.
    fn from_str(s: &str) -> Result<Digest> {
        let (algorithm, hex) = Digest::check(s)?;
        Ok(Digest {
            algorithm,
            hex: hex.to_owned(),
        })
    }
}

impl Digest {
    /// Checks that `s` is a digest as [`FromStr`] parses it, without allocating; returns its
    /// algorithm and hex part.
    ///
    /// # Errors
    /// As [`FromStr`].
    pub fn check(s: &str) -> Result<(Algorithm, &str)> {
        let invalid = |why: &str| Error::InvalidArgument(format!("invalid digest {s:?}: {why}"));
        let (alg, hex) = s
            .split_once(':')
            .ok_or_else(|| invalid("expected <algorithm>:<hex>"))?;
        let algorithm = match alg {
            "sha256" => Algorithm::Sha256,
            "sha512" => Algorithm::Sha512,
            _ => return Err(invalid("unsupported algorithm (sha256 and sha512 are)")),
        };
        if hex.len() != algorithm.hex_len() {
            return Err(invalid(&format!(
                "{alg} needs {} hex characters, got {}",
                algorithm.hex_len(),
                hex.len()
            )));
        }
        if !hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(invalid("not lowercase hex"));
        }
        Ok((algorithm, hex))
    }
}

impl TryFrom<String> for Digest {
    type Error = Error;

    fn try_from(s: String) -> Result<Digest> {
        s.parse()
    }
}

impl From<Digest> for String {
    fn from(d: Digest) -> String {
        d.to_string()
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algorithm.name(), self.hex)
    }
}

/// An incremental hasher; `Clone` so the digest so far can be read mid-stream.
#[derive(Clone)]
pub enum Hasher {
    /// SHA-256 state.
    Sha256(sha2::Sha256),
    /// SHA-512 state.
    Sha512(sha2::Sha512),
}

impl fmt::Debug for Hasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Hasher").field(&self.algorithm()).finish()
    }
}

impl Hasher {
    /// The algorithm being computed.
    pub fn algorithm(&self) -> Algorithm {
        match self {
            Hasher::Sha256(_) => Algorithm::Sha256,
            Hasher::Sha512(_) => Algorithm::Sha512,
        }
    }

    /// Feeds bytes.
    pub fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(data),
            Hasher::Sha512(h) => h.update(data),
        }
    }

    /// The digest of everything fed so far; the hasher stays usable.
    pub fn current(&self) -> Digest {
        self.clone().finish()
    }

    /// The digest of everything fed.
    pub fn finish(self) -> Digest {
        let (algorithm, bytes) = match self {
            Hasher::Sha256(h) => (Algorithm::Sha256, h.finalize().to_vec()),
            Hasher::Sha512(h) => (Algorithm::Sha512, h.finalize().to_vec()),
        };
        let mut hex = String::with_capacity(bytes.len() * 2);
        for b in bytes {
            hex.push(char::from(HEX[usize::from(b >> 4)]));
            hex.push(char::from(HEX[usize::from(b & 0xf)]));
        }
        Digest { algorithm, hex }
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY256: &str =
        "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn known_vectors() {
        assert_eq!(Digest::of(Algorithm::Sha256, b"").to_string(), EMPTY256);
        let a512 = Digest::of(Algorithm::Sha512, b"abc").to_string();
        assert!(a512.starts_with("sha512:ddaf35a193617aba"), "{a512}");
    }

    #[test]
    fn parse_accepts_valid_and_round_trips() {
        let d: Result<Digest> = EMPTY256.parse();
        assert_eq!(d.ok().map(|d| d.to_string()).as_deref(), Some(EMPTY256));
    }

    #[test]
    fn parse_rejects_bad_input_naming_it() {
        for bad in [
            "",
            "sha256",
            "md5:d41d8cd98f00b204e9800998ecf8427e",
            "sha256:abc",
            "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
            "sha256:../../../../etc/passwd0000000000000000000000000000000000000000",
        ] {
            let err = bad
                .parse::<Digest>()
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(err.contains("invalid digest"), "{bad}: {err}");
        }
    }

    #[test]
    fn serde_uses_the_string_form_and_validates() {
        let d = Digest::of(Algorithm::Sha256, b"");
        let bytes = postcard::to_stdvec(&d).unwrap_or_default();
        assert_eq!(postcard::from_bytes::<Digest>(&bytes).ok(), Some(d));
        let bad = postcard::to_stdvec("sha256:nothex").unwrap_or_default();
        assert!(postcard::from_bytes::<Digest>(&bad).is_err());
    }

    #[test]
    fn current_does_not_consume() {
        let mut h = Algorithm::Sha256.hasher();
        h.update(b"a");
        let mid = h.current();
        h.update(b"b");
        assert_eq!(mid, Digest::of(Algorithm::Sha256, b"a"));
        assert_eq!(h.finish(), Digest::of(Algorithm::Sha256, b"ab"));
    }
}
