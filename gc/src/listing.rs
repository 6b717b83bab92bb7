//! The disk side of cleanup: the entries of the blob, ingest and snapshot directories, read
//! with `getdents64` into one reused buffer and kept compactly. This is the only place
//! cleanup lists a directory.
//!
//! A store at 100 000 sets holds 700 000 snapshot directories, so nothing here allocates per
//! entry: a name that is an id's canonical spelling (`12`, never `012`) is kept as the id, a
//! blob file named by a digest's lowercase hex as the decoded bytes; only the rare other names
//! (`new-5`, `rm-5`, `012`, stray files) are kept as they are. Paths are built later, for the
//! few entries cleanup reports or removes.

use std::ffi::{OsStr, OsString};
use std::mem::MaybeUninit;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags, RawDir};
use rustix::io::Errno;
use strata_store::Algorithm;

use crate::error::Result;

/// `getdents64` buffer: a few hundred entries per call.
const BUFFER: usize = 64 * 1024;

/// The most the buffer grows to for one long name before EINVAL is taken for an error.
const MAX_BUFFER: usize = 1024 * 1024;

/// Calls `f` with the name of every entry of `dir` except `.` and `..`, in directory order.
/// A missing directory has no entries.
///
/// # Errors
/// The directory cannot be opened or read.
pub(crate) fn each_entry(dir: &Path, mut f: impl FnMut(&[u8])) -> Result<()> {
    let io_err = |e: Errno| strata_store::Error::io("read directory", dir, e.into());
    let fd = match rustix::fs::open(
        dir,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(Errno::NOENT) => return Ok(()),
        Err(e) => return Err(io_err(e).into()),
    };
    let mut buf = vec![MaybeUninit::<u8>::uninit(); BUFFER];
    loop {
        // `getdents64` says EINVAL when the next entry does not fit the buffer; reading
        // resumes at that entry with a larger one. (Names are at most 255 bytes on Linux, so
        // this is for file systems that allow longer ones.)
        let can_grow = buf.len() < MAX_BUFFER;
        let mut entries = RawDir::new(&fd, &mut buf);
        let mut grow = false;
        while let Some(entry) = entries.next() {
            match entry {
                Ok(e) => {
                    let name = e.file_name().to_bytes();
                    if name != b"." && name != b".." {
                        f(name);
                    }
                }
                Err(Errno::INVAL) if can_grow => {
                    grow = true;
                    break;
                }
                Err(e) => return Err(io_err(e).into()),
            }
        }
        if !grow {
            return Ok(());
        }
        let larger = buf.len() * 2;
        buf.resize(larger, MaybeUninit::uninit());
    }
}

/// The id `name` spells canonically (`12`; not `012`, `+12` or `new-12`): the only spelling
/// of a record's directory.
pub(crate) fn canonical_id(name: &[u8]) -> Option<u64> {
    match name {
        [] => None,
        [b'0'] => Some(0),
        [b'0', ..] => None,
        _ => name.iter().try_fold(0u64, |acc, &b| {
            if b.is_ascii_digit() {
                acc.checked_mul(10)?.checked_add(u64::from(b - b'0'))
            } else {
                None
            }
        }),
    }
}

/// The id in a snapshot directory name, canonical or not: `<id>`, `new-<id>` (being built) or
/// `rm-<id>` (being removed). An entry whose id is in flight is never removed.
pub(crate) fn dir_id(name: &OsStr) -> Option<u64> {
    let name = name.to_str()?;
    let digits = name
        .strip_prefix("new-")
        .or_else(|| name.strip_prefix("rm-"))
        .unwrap_or(name);
    digits.parse().ok()
}

/// A directory whose entries are named by ids: `snapshots/<snapshotter>/` or `content/ingest/`.
#[derive(Debug)]
pub(crate) struct IdDir {
    /// The directory.
    pub(crate) path: PathBuf,
    /// Entries named by an id's canonical spelling, ascending.
    pub(crate) ids: Vec<u64>,
    /// Every other entry, by name.
    pub(crate) other: Vec<OsString>,
    /// [`IdDir::ids`] as a bitmap, when they are dense enough.
    dense: Option<Dense>,
}

impl IdDir {
    /// Lists `path` (missing: empty).
    ///
    /// # Errors
    /// The directory cannot be read.
    pub(crate) fn list(path: PathBuf) -> Result<IdDir> {
        let mut ids = Vec::new();
        let mut other = Vec::new();
        each_entry(&path, |name| match canonical_id(name) {
            Some(id) => ids.push(id),
            None => other.push(OsString::from_vec(name.to_vec())),
        })?;
        Ok(IdDir::new(path, ids, other))
    }

    fn new(path: PathBuf, mut ids: Vec<u64>, mut other: Vec<OsString>) -> IdDir {
        ids.sort_unstable();
        other.sort_unstable();
        let dense = Dense::new(&ids);
        IdDir {
            path,
            ids,
            other,
            dense,
        }
    }

    /// The index in [`IdDir::ids`] of the entry named `id`: a word and a popcount for the
    /// dense ids a store allocates (they come from one sequence), a binary search otherwise.
    pub(crate) fn position(&self, id: u64) -> Option<usize> {
        match &self.dense {
            Some(d) => d.position(id),
            None => self.ids.binary_search(&id).ok(),
        }
    }
}

/// Sorted, distinct ids as a rank bitmap: one bit per id from `base` on, and for each 64-bit
/// word how many ids lie before it, so an id's index costs one word and a popcount. Used when
/// it is no larger than the ids themselves (at least one id per 64 in their range).
#[derive(Debug)]
struct Dense {
    base: u64,
    words: Vec<u64>,
    before: Vec<u32>,
}

impl Dense {
    fn new(ids: &[u64]) -> Option<Dense> {
        let (&base, &last) = (ids.first()?, ids.last()?);
        let len = usize::try_from((last - base) / 64).ok()?.checked_add(1)?;
        if len > ids.len() || u32::try_from(ids.len()).is_err() {
            return None;
        }
        let mut words = vec![0u64; len];
        for id in ids {
            let off = id - base;
            if let Some(w) = usize::try_from(off / 64)
                .ok()
                .and_then(|w| words.get_mut(w))
            {
                *w |= 1 << (off % 64);
            }
        }
        let mut before = Vec::with_capacity(len);
        let mut n = 0u32;
        for w in &words {
            before.push(n);
            n += w.count_ones();
        }
        Some(Dense {
            base,
            words,
            before,
        })
    }

    fn position(&self, id: u64) -> Option<usize> {
        let off = id.checked_sub(self.base)?;
        let w = usize::try_from(off / 64).ok()?;
        let word = *self.words.get(w)?;
        let bit = 1u64 << (off % 64);
        if word & bit == 0 {
            return None;
        }
        let rank = self.before.get(w)? + (word & (bit - 1)).count_ones();
        usize::try_from(rank).ok()
    }
}

/// `snapshots/<snapshotter>/` of every snapshotter: each directory under `top` (following
/// a symlink, as a snapshotter's root may be one), with its name when that is UTF-8 (no
/// record names any other). Other entries of `top` are no snapshotter's and are left alone.
///
/// # Errors
/// A directory cannot be read.
pub(crate) fn snapshotters(top: &Path) -> Result<Vec<(Option<String>, IdDir)>> {
    let mut names = Vec::new();
    each_entry(top, |name| names.push(OsString::from_vec(name.to_vec())))?;
    names.sort_unstable();
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        let root = top.join(&name);
        if root.is_dir() {
            out.push((name.into_string().ok(), IdDir::list(root)?));
        }
    }
    Ok(out)
}

/// The index of `key` in `sorted`, searching forward from `hint` (doubling the step) when
/// `key` lies at or after it, else from the start.
fn search_from<T: Ord>(sorted: &[T], hint: usize, key: &T) -> Option<usize> {
    match sorted.get(hint) {
        Some(at) if at <= key => {
            let (mut lo, mut step) = (hint, 1);
            let hi = loop {
                let next = lo.saturating_add(step);
                match sorted.get(next) {
                    Some(x) if x <= key => {
                        lo = next;
                        step = step.saturating_mul(2);
                    }
                    _ => break next.min(sorted.len()),
                }
            };
            let i = sorted.get(lo..hi)?.binary_search(key).ok()?;
            Some(lo + i)
        }
        _ => sorted.binary_search(key).ok(),
    }
}

/// Hex characters of a digest of `alg` (its file name's length).
fn hex_len(alg: Algorithm) -> usize {
    match alg {
        Algorithm::Sha256 => 64,
        Algorithm::Sha512 => 128,
    }
}

/// A digest's bytes, decoded from its hex (the first `hex_len / 2` bytes are used).
pub(crate) type DigestBytes = [u8; 64];

/// Decodes `hex` when it is exactly `len` lowercase hex characters, as a digest's file name
/// is; anything else is not the name of any digest of that length.
fn decode_hex(hex: &[u8], len: usize) -> Option<DigestBytes> {
    /// The value of each lowercase hex digit; 0xff for every other byte.
    const NIBBLE: [u8; 256] = {
        let mut t = [0xffu8; 256];
        let mut c = 0;
        while c < 16 {
            t[b"0123456789abcdef"[c] as usize] = c as u8;
            c += 1;
        }
        t
    };
    if hex.len() != len || len > 2 * std::mem::size_of::<DigestBytes>() {
        return None;
    }
    let mut out = [0u8; 64];
    let mut bad = 0u8;
    for (o, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
        if let [hi, lo] = *pair {
            let (hi, lo) = (NIBBLE[usize::from(hi)], NIBBLE[usize::from(lo)]);
            bad |= hi | lo;
            *o = (hi << 4) | (lo & 15);
        }
    }
    // A valid nibble has its high bits clear; 0xff does not.
    (bad & 0xf0 == 0).then_some(out)
}

/// The lowercase hex of the first `len / 2` bytes of `bytes`.
fn encode_hex(bytes: &DigestBytes, len: usize) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(len);
    for b in bytes.iter().take(len / 2) {
        s.push(char::from(HEX[usize::from(b >> 4)]));
        s.push(char::from(HEX[usize::from(b & 15)]));
    }
    s
}

/// One blob directory, `content/blobs/<alg>/`. Its entries are numbered: first the digests,
/// then the other names, so a caller can keep one flag per entry.
#[derive(Debug)]
pub(crate) struct BlobDir {
    /// The algorithm it holds.
    pub(crate) alg: Algorithm,
    /// The directory.
    pub(crate) path: PathBuf,
    /// Entries named by a digest's lowercase hex, decoded, ascending.
    digests: Vec<DigestBytes>,
    /// Every other entry, by name, ascending.
    other: Vec<OsString>,
}

impl BlobDir {
    /// Lists `path`, the blob directory of `alg` (missing: empty).
    ///
    /// # Errors
    /// The directory cannot be read.
    pub(crate) fn list(alg: Algorithm, path: PathBuf) -> Result<BlobDir> {
        let len = hex_len(alg);
        let mut digests = Vec::new();
        let mut other = Vec::new();
        each_entry(&path, |name| match decode_hex(name, len) {
            Some(d) => digests.push(d),
            None => other.push(OsString::from_vec(name.to_vec())),
        })?;
        digests.sort_unstable();
        other.sort_unstable();
        Ok(BlobDir {
            alg,
            path,
            digests,
            other,
        })
    }

    /// How many entries it has.
    pub(crate) fn len(&self) -> usize {
        self.digests.len() + self.other.len()
    }

    /// The number of the entry named `name` (a digest's part after the colon). `hint` is the
    /// number of the entry found last: looking up names in ascending order, as the blob
    /// records of a namespace come, costs a comparison or two each.
    pub(crate) fn position(&self, name: &str, hint: usize) -> Option<usize> {
        match decode_hex(name.as_bytes(), hex_len(self.alg)) {
            Some(d) => search_from(&self.digests, hint, &d),
            None => self
                .other
                .binary_search_by(|o| o.as_bytes().cmp(name.as_bytes()))
                .ok()
                .map(|j| self.digests.len() + j),
        }
    }

    /// The file name of entry `i`.
    pub(crate) fn name(&self, i: usize) -> Option<OsString> {
        match self.digests.get(i) {
            Some(d) => Some(encode_hex(d, hex_len(self.alg)).into()),
            None => self.other.get(i - self.digests.len()).cloned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_canonical_spelling_is_an_id() {
        assert_eq!(canonical_id(b"0"), Some(0));
        assert_eq!(canonical_id(b"12"), Some(12));
        assert_eq!(canonical_id(b"18446744073709551615"), Some(u64::MAX));
        for name in [
            &b""[..],
            b"012",
            b"00",
            b"+12",
            b"-1",
            b"new-12",
            b"rm-12",
            b"12 ",
            b"1x",
            b"18446744073709551616",
        ] {
            assert_eq!(
                canonical_id(name),
                None,
                "{:?}",
                String::from_utf8_lossy(name)
            );
        }
    }

    #[test]
    fn dir_id_reads_building_and_removing_names() {
        assert_eq!(dir_id(OsStr::new("12")), Some(12));
        assert_eq!(dir_id(OsStr::new("012")), Some(12));
        assert_eq!(dir_id(OsStr::new("new-5")), Some(5));
        assert_eq!(dir_id(OsStr::new("rm-5")), Some(5));
        assert_eq!(dir_id(OsStr::new("new-")), None);
        assert_eq!(dir_id(OsStr::new("old-5")), None);
        assert_eq!(dir_id(OsStr::from_bytes(b"\xff5")), None);
    }

    #[test]
    fn hex_round_trips_and_rejects_what_no_digest_is_named() {
        let hex = "00ff".repeat(16);
        let d = decode_hex(hex.as_bytes(), 64);
        assert!(d.is_some());
        assert_eq!(d.map(|d| encode_hex(&d, 64)), Some(hex.clone()));
        assert!(decode_hex(hex.to_uppercase().as_bytes(), 64).is_none());
        assert!(decode_hex(&hex.as_bytes()[1..], 64).is_none());
        assert!(decode_hex(format!("{hex}0").as_bytes(), 64).is_none());
        let long = "ab".repeat(64);
        assert_eq!(
            decode_hex(long.as_bytes(), 128).map(|d| encode_hex(&d, 128)),
            Some(long)
        );
    }

    #[test]
    fn listings_keep_ids_digests_and_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["3", "10", "012", "new-7", "rm-8", "x"] {
            std::fs::create_dir(dir.path().join(name)).unwrap();
        }
        let l = IdDir::list(dir.path().to_owned()).unwrap();
        assert_eq!(l.ids, vec![3, 10]);
        assert_eq!(l.other, vec!["012", "new-7", "rm-8", "x"]);
        assert_eq!(l.position(10), Some(1));
        assert_eq!(l.position(12), None);

        let missing = IdDir::list(dir.path().join("none")).unwrap();
        assert!(missing.ids.is_empty() && missing.other.is_empty());

        let blobs = tempfile::tempdir().unwrap();
        let a = "ab".repeat(32);
        let b = "01".repeat(32);
        for name in [a.as_str(), b.as_str(), "junk", &a.to_uppercase()] {
            std::fs::write(blobs.path().join(name), b"").unwrap();
        }
        let l = BlobDir::list(Algorithm::Sha256, blobs.path().to_owned()).unwrap();
        assert_eq!(l.len(), 4);
        let names: Vec<_> = (0..l.len()).filter_map(|i| l.name(i)).collect();
        let want: Vec<OsString> = [b.clone(), a.clone(), a.to_uppercase(), "junk".into()]
            .into_iter()
            .map(OsString::from)
            .collect();
        assert_eq!(names, want);
        for (i, n) in names.iter().enumerate() {
            for hint in 0..6 {
                assert_eq!(l.position(n.to_str().unwrap(), hint), Some(i));
            }
        }
        assert_eq!(l.position(&"cd".repeat(32), 0), None);
        assert_eq!(l.position(&"00".repeat(32), 1), None);
        assert_eq!(l.name(4), None);
    }

    #[test]
    fn dense_and_sparse_ids_find_the_same_positions() {
        // (ids, whether they are dense enough for the bitmap)
        let sets: Vec<(Vec<u64>, bool)> = vec![
            (vec![], false),
            (vec![0], true),
            (vec![7], true),
            (vec![u64::MAX], true),
            (vec![0, 63, 64, 127, 128, 129, 1000], false),
            ((0..300).filter(|i| i % 5 != 0).collect(), true),
            ((100..400).filter(|i| i % 3 != 0).collect(), true),
            ((0..200).map(|i| i * 64).collect(), true),
            ((0..200).map(|i| i * 65).collect(), false),
            ((0..10).map(|i| i * 1000).collect(), false),
            (vec![1, u64::MAX], false),
            (vec![u64::MAX - 1, u64::MAX], true),
        ];
        for (ids, dense) in sets {
            let dir = IdDir::new(PathBuf::new(), ids.clone(), Vec::new());
            assert_eq!(dir.dense.is_some(), dense, "{ids:?}");
            let mut probes: Vec<u64> = ids.iter().flat_map(|&i| [i, i.wrapping_add(1)]).collect();
            probes.extend([0, 1, 62, 63, 64, 65, u64::MAX]);
            for p in probes {
                assert_eq!(
                    dir.position(p),
                    ids.binary_search(&p).ok(),
                    "{p} in {ids:?}"
                );
            }
        }
    }

    #[test]
    fn searching_from_a_hint_finds_what_a_binary_search_finds() {
        let sorted: Vec<u32> = (0..100).map(|i| i * 2).collect();
        for key in 0..205 {
            for hint in [0, 1, 5, 50, 98, 99, 100, 500] {
                assert_eq!(
                    search_from(&sorted, hint, &key),
                    sorted.binary_search(&key).ok(),
                    "{key} from {hint}"
                );
            }
        }
    }

    #[test]
    fn large_directories_list_completely() {
        let dir = tempfile::tempdir().unwrap();
        for id in 0..5000u64 {
            std::fs::create_dir(dir.path().join(id.to_string())).unwrap();
        }
        let l = IdDir::list(dir.path().to_owned()).unwrap();
        assert_eq!(l.ids, (0..5000).collect::<Vec<_>>());
    }
}
