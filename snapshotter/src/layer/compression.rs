//! Layer compression: detection by magic bytes, and the one-pass reader that hashes the raw
//! input (the layer digest), decompresses it and hashes the tar stream (the diffID).
//!
//! ```text
//! input -> InputTap (sha256, count) -> [BufReader 1 MiB -> gzip/zstd] -> DecodedTap (sha256,
//!       count) -> BufReader 1 MiB -> LayerReader (metadata budget) -> tar
//! ```
//!
//! Failures below the tar parser are recorded in a shared [`Stats`] as they happen, so that
//! an error surfacing from the tar crate (which wraps or rewords io errors) can be
//! classified: the caller's reader failing is an I/O error, a decoder failing is a bad layer.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::io::{self, BufReader, Chain, Cursor, Read};
use std::path::Path;
use std::rc::Rc;

use strata_store::digest::Hasher;
use strata_store::{Algorithm, Digest};

use crate::{Error, Result};

/// Read buffer size on both sides of the decompressor.
pub(crate) const BUF_SIZE: usize = 1 << 20;

/// The compression of a layer blob, as detected from its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Compression {
    /// gzip (`1f 8b`), possibly several concatenated members.
    Gzip,
    /// zstd (`28 b5 2f fd`), possibly several frames.
    Zstd,
    /// No recognised compression: read as a plain tar.
    None,
}

impl Compression {
    /// Detects the compression from the first bytes of a blob (4 are enough; fewer are fine
    /// for short blobs and give [`Compression::None`] unless they match).
    pub fn detect(prefix: &[u8]) -> Compression {
        if prefix.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if prefix.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }

    /// `gzip`, `zstd` or `none`.
    pub fn name(self) -> &'static str {
        match self {
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
            Compression::None => "none",
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Formats we recognise but do not support, named in the error when the tar parse fails.
fn unsupported_magic(prefix: &[u8]) -> Option<&'static str> {
    if prefix.starts_with(&[0xfd, b'7', b'z', b'X']) {
        Some("xz")
    } else if prefix.starts_with(b"BZh") {
        Some("bzip2")
    } else {
        None
    }
}

/// The first failure seen below the tar parser.
#[derive(Debug)]
enum Fault {
    /// The caller's reader failed.
    Input(io::Error),
    /// The decompressor rejected the stream.
    Decode(String),
    /// The tar parser read more than [`METADATA_BUDGET`] for one header.
    Budget,
}

/// Most bytes the tar crate may read to produce one entry (its header, GNU long name and
/// link, PAX records, sparse maps and the previous entry's padding). The tar crate buffers
/// those in memory whatever their size, so without a cap a small compressed layer could
/// expand into gigabytes of "long name"; real ones are a few KiB.
const METADATA_BUDGET: u64 = 16 << 20;

/// Counters, hashers and the first fault, shared by the readers of one layer.
#[derive(Debug)]
struct Stats {
    compressed: RefCell<Hasher>,
    compressed_size: Cell<u64>,
    uncompressed: RefCell<Hasher>,
    uncompressed_size: Cell<u64>,
    /// The decompressed stream has ended (so a parse error now means truncation).
    eof: Cell<bool>,
    /// The raw input has ended (so a decoder error now most likely means truncation).
    input_eof: Cell<bool>,
    fault: RefCell<Option<Fault>>,
    /// Bytes the tar parser may still read, while it reads metadata; `None` for data.
    budget: Cell<Option<u64>>,
}

impl Stats {
    fn record(&self, fault: Fault) {
        let mut f = self.fault.borrow_mut();
        if f.is_none() {
            *f = Some(fault);
        }
    }
}

/// Hashes and counts the raw input; records its failures.
#[derive(Debug)]
struct InputTap<R> {
    inner: R,
    stats: Rc<Stats>,
}

impl<R: Read> Read for InputTap<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.inner.read(buf) {
            Ok(0) if !buf.is_empty() => {
                self.stats.input_eof.set(true);
                Ok(0)
            }
            Ok(n) => {
                let data = buf.get(..n).unwrap_or_default();
                self.stats.compressed.borrow_mut().update(data);
                self.stats
                    .compressed_size
                    .set(self.stats.compressed_size.get() + n as u64);
                Ok(n)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Err(e),
            Err(e) => {
                let copy = io::Error::new(e.kind(), e.to_string());
                self.stats.record(Fault::Input(e));
                Err(copy)
            }
        }
    }
}

type Raw<R> = Chain<Cursor<Vec<u8>>, InputTap<R>>;

/// The decompressor chosen by [`Compression::detect`].
enum Decoder<R: Read> {
    Plain(Raw<R>),
    Gzip(Box<flate2::bufread::MultiGzDecoder<BufReader<Raw<R>>>>),
    Zstd(Box<zstd::stream::read::Decoder<'static, BufReader<Raw<R>>>>),
}

impl<R: Read> fmt::Debug for Decoder<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Decoder::Plain(_) => "Decoder::Plain",
            Decoder::Gzip(_) => "Decoder::Gzip",
            Decoder::Zstd(_) => "Decoder::Zstd",
        })
    }
}

impl<R: Read> Read for Decoder<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Decoder::Plain(r) => r.read(buf),
            Decoder::Gzip(r) => r.read(buf),
            Decoder::Zstd(r) => r.read(buf),
        }
    }
}

impl<R: Read> Decoder<R> {
    /// Gives back the raw input (buffered bytes were already hashed by the tap).
    fn into_input(self) -> InputTap<R> {
        let raw = match self {
            Decoder::Plain(r) => r,
            Decoder::Gzip(r) => r.into_inner().into_inner(),
            Decoder::Zstd(r) => r.finish().into_inner(),
        };
        raw.into_inner().1
    }
}

/// Hashes and counts the decompressed stream; records decoder failures and the end.
#[derive(Debug)]
struct DecodedTap<R: Read> {
    inner: Decoder<R>,
    compression: Compression,
    stats: Rc<Stats>,
}

impl<R: Read> Read for DecodedTap<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.inner.read(buf) {
            Ok(0) if !buf.is_empty() => {
                self.stats.eof.set(true);
                Ok(0)
            }
            Ok(n) => {
                let data = buf.get(..n).unwrap_or_default();
                self.stats.uncompressed.borrow_mut().update(data);
                self.stats
                    .uncompressed_size
                    .set(self.stats.uncompressed_size.get() + n as u64);
                Ok(n)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Err(e),
            Err(e) => {
                // An input failure was recorded by the input tap already (record keeps the
                // first); anything else is the decompressor's verdict on the bytes.
                self.stats.record(Fault::Decode(format!(
                    "bad {} stream: {e}",
                    self.compression
                )));
                Err(e)
            }
        }
    }
}

/// The decompressed tar stream of one layer, hashing both sides as it is read.
#[derive(Debug)]
pub(crate) struct LayerReader<R: Read> {
    inner: BufReader<DecodedTap<R>>,
    stats: Rc<Stats>,
    compression: Compression,
    prefix: [u8; 4],
}

/// What [`LayerReader::finish`] measured.
#[derive(Debug)]
pub(crate) struct Measured {
    pub(crate) compression: Compression,
    pub(crate) compressed_digest: Digest,
    pub(crate) compressed_size: u64,
    pub(crate) diff_id: Digest,
    pub(crate) uncompressed_size: u64,
}

impl<R: Read> LayerReader<R> {
    /// Reads the first bytes of `input` to detect its compression and sets up the chain.
    ///
    /// `target` only names the extraction directory in I/O errors.
    ///
    /// # Errors
    /// [`Error::Io`] when `input` fails or the zstd context cannot be created.
    pub(crate) fn new(input: R, target: &Path) -> Result<LayerReader<R>> {
        let stats = Rc::new(Stats {
            compressed: RefCell::new(Algorithm::Sha256.hasher()),
            compressed_size: Cell::new(0),
            uncompressed: RefCell::new(Algorithm::Sha256.hasher()),
            uncompressed_size: Cell::new(0),
            eof: Cell::new(false),
            input_eof: Cell::new(false),
            fault: RefCell::new(None),
            budget: Cell::new(None),
        });
        let mut tap = InputTap {
            inner: input,
            stats: Rc::clone(&stats),
        };
        // A single read may return fewer bytes than the magic; loop until 4 or EOF.
        let mut prefix = [0u8; 4];
        let mut got = 0;
        while got < prefix.len() {
            match tap.read(&mut prefix[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::io("read layer", target, e)),
            }
        }
        let head = prefix.get(..got).unwrap_or_default();
        let compression = Compression::detect(head);
        let raw = Cursor::new(head.to_vec()).chain(tap);
        let decoder = match compression {
            Compression::None => Decoder::Plain(raw),
            Compression::Gzip => Decoder::Gzip(Box::new(flate2::bufread::MultiGzDecoder::new(
                BufReader::with_capacity(BUF_SIZE, raw),
            ))),
            Compression::Zstd => Decoder::Zstd(Box::new(
                zstd::stream::read::Decoder::with_buffer(BufReader::with_capacity(BUF_SIZE, raw))
                    .map_err(|e| Error::io("create zstd decoder", target, e))?,
            )),
        };
        let tap = DecodedTap {
            inner: decoder,
            compression,
            stats: Rc::clone(&stats),
        };
        Ok(LayerReader {
            inner: BufReader::with_capacity(BUF_SIZE, tap),
            stats,
            compression,
            prefix,
        })
    }

    /// A handle that limits reads to the metadata budget while it is alive (see
    /// [`METADATA_BUDGET`]); the applier holds one around each step of the tar iterator.
    pub(crate) fn budget(&self) -> BudgetHandle {
        BudgetHandle {
            stats: Rc::clone(&self.stats),
        }
    }

    /// A classifier for errors surfacing while this reader is owned by the tar parser.
    pub(crate) fn classifier(&self) -> Classifier {
        Classifier {
            stats: Rc::clone(&self.stats),
            compression: self.compression,
            unsupported: unsupported_magic(&self.prefix),
        }
    }

    /// Drains the rest of the decompressed stream (tar padding, end blocks, trailing bytes
    /// all count toward the diffID) and of the raw input, and returns both digests.
    ///
    /// # Errors
    /// As [`Classifier::classify`]: a bad or truncated compressed stream is
    /// [`Error::InvalidLayer`], a failing input [`Error::Io`].
    pub(crate) fn finish(mut self, target: &Path) -> Result<Measured> {
        let classifier = self.classifier();
        self.stats.budget.set(None);
        io::copy(&mut self, &mut io::sink())
            .map_err(|e| classifier.classify(e, "draining the layer", target))?;
        let mut input = self.inner.into_inner().inner.into_input();
        io::copy(&mut input, &mut io::sink())
            .map_err(|e| classifier.classify(e, "draining the layer", target))?;
        let stats = &self.stats;
        Ok(Measured {
            compression: self.compression,
            compressed_digest: stats.compressed.borrow().current(),
            compressed_size: stats.compressed_size.get(),
            diff_id: stats.uncompressed.borrow().current(),
            uncompressed_size: stats.uncompressed_size.get(),
        })
    }
}

impl<R: Read> Read for LayerReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Some(left) = self.stats.budget.get() else {
            return self.inner.read(buf);
        };
        if left == 0 && !buf.is_empty() {
            self.stats.record(Fault::Budget);
            return Err(io::Error::other("tar metadata larger than 16 MiB"));
        }
        let max = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
        let n = self.inner.read(buf.get_mut(..max).unwrap_or_default())?;
        self.stats.budget.set(Some(left - n as u64));
        Ok(n)
    }
}

/// Limits the tar parser's reads to [`METADATA_BUDGET`] until dropped.
#[derive(Debug)]
pub(crate) struct BudgetHandle {
    stats: Rc<Stats>,
}

impl BudgetHandle {
    /// Starts a metadata step; the limit is lifted when the guard drops.
    pub(crate) fn limit(&self) -> BudgetGuard<'_> {
        self.stats.budget.set(Some(METADATA_BUDGET));
        BudgetGuard { stats: &self.stats }
    }
}

/// See [`BudgetHandle::limit`].
#[derive(Debug)]
pub(crate) struct BudgetGuard<'a> {
    stats: &'a Stats,
}

impl Drop for BudgetGuard<'_> {
    fn drop(&mut self) {
        self.stats.budget.set(None);
    }
}

/// Turns an io error from the tar side into the crate error it really is.
#[derive(Debug)]
pub(crate) struct Classifier {
    stats: Rc<Stats>,
    compression: Compression,
    unsupported: Option<&'static str>,
}

impl Classifier {
    /// `what` says what was being done (e.g. "reading entry x").
    ///
    /// - the caller's reader failed: [`Error::Io`];
    /// - the decompressor failed: [`Error::InvalidLayer`] "bad gzip stream ...";
    /// - the stream ended early: [`Error::InvalidLayer`] "unexpected end of layer ...";
    /// - anything else the tar parser said: [`Error::InvalidLayer`] "malformed tar ...".
    pub(crate) fn classify(&self, e: io::Error, what: &str, target: &Path) -> Error {
        match self.stats.fault.borrow_mut().take() {
            Some(Fault::Input(source)) => return Error::io("read layer", target, source),
            Some(Fault::Decode(msg)) => {
                // The decoder failing once its input is exhausted is a truncated blob.
                return Error::invalid_layer(if self.stats.input_eof.get() {
                    format!("{what}: unexpected end of layer ({msg})")
                } else {
                    format!("{what}: {msg}")
                });
            }
            Some(Fault::Budget) => {
                return Error::invalid_layer(format!(
                    "{what}: tar metadata (long names, PAX records) larger than 16 MiB"
                ));
            }
            None => {}
        }
        if self.stats.eof.get() {
            return Error::invalid_layer(format!("{what}: unexpected end of layer ({e})"));
        }
        match self.unsupported {
            Some(fmt) if self.compression == Compression::None => Error::invalid_layer(format!(
                "{what}: {fmt}-compressed layers are not supported (gzip, zstd or plain tar)"
            )),
            _ => Error::invalid_layer(format!("{what}: malformed tar: {e}")),
        }
    }

    /// Whether the decompressed stream has ended (a short entry read then means truncation).
    pub(crate) fn at_eof(&self) -> bool {
        self.stats.eof.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn detect_by_magic() {
        assert_eq!(Compression::detect(&[0x1f, 0x8b, 8, 0]), Compression::Gzip);
        assert_eq!(
            Compression::detect(&[0x28, 0xb5, 0x2f, 0xfd]),
            Compression::Zstd
        );
        assert_eq!(Compression::detect(b"ustar"), Compression::None);
        assert_eq!(Compression::detect(&[0x28, 0xb5]), Compression::None);
        assert_eq!(Compression::detect(&[]), Compression::None);
    }

    fn read_all(data: &[u8]) -> (Vec<u8>, Measured) {
        let mut r = LayerReader::new(data, Path::new("/t")).unwrap();
        let mut out = Vec::new();
        r.read_to_end(&mut out).unwrap();
        let m = r.finish(Path::new("/t")).unwrap();
        (out, m)
    }

    #[test]
    fn multi_member_gzip_is_read_whole_and_hashed() {
        let mut blob = Vec::new();
        for part in [&b"hello "[..], b"world"] {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(part).unwrap();
            blob.extend(e.finish().unwrap());
        }
        let (out, m) = read_all(&blob);
        assert_eq!(out, b"hello world");
        assert_eq!(m.compression, Compression::Gzip);
        assert_eq!(m.diff_id, Digest::of(Algorithm::Sha256, b"hello world"));
        assert_eq!(m.compressed_digest, Digest::of(Algorithm::Sha256, &blob));
        assert_eq!(m.compressed_size, blob.len() as u64);
        assert_eq!(m.uncompressed_size, 11);
    }

    #[test]
    fn zstd_and_plain_round_trip() {
        let z = zstd::encode_all(&b"zzz"[..], 3).unwrap();
        let (out, m) = read_all(&z);
        assert_eq!(
            (out.as_slice(), m.compression),
            (&b"zzz"[..], Compression::Zstd)
        );
        let (out, m) = read_all(b"ab");
        assert_eq!(
            (out.as_slice(), m.compression),
            (&b"ab"[..], Compression::None)
        );
        assert_eq!(m.compressed_digest, m.diff_id);
    }

    #[test]
    fn budget_stops_runaway_metadata() {
        let data = [7u8; 100];
        let mut r = LayerReader::new(&data[..], Path::new("/t")).unwrap();
        r.stats.budget.set(Some(10));
        let mut out = Vec::new();
        let err = r.read_to_end(&mut out).unwrap_err();
        assert_eq!(out.len(), 10);
        let e = r.classifier().classify(err, "x", Path::new("/t"));
        assert!(e.to_string().contains("larger than 16 MiB"), "{e}");
    }
}
