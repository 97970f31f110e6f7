//! The backup file: a consistent copy of the database taken at one seq,
//! self-describing and checked whole before anything of it is installed.
//!
//! # Layout (format 1)
//!
//! ```text
//! magic      8 bytes   "DBAASBK\0"
//! format     u16 BE    1
//! header     u32 BE length, then bincode(BackupHeader): cluster, epoch,
//!                      seq, when it was made, rows per table, entries, parts
//! parts      each a u32 BE length, then bincode(Vec<(key, value)>):
//!                      the store's row and auto-key counter entries
//! trailer    8 bytes   "DBAASEND"
//!            u32 BE    CRC-32 (IEEE) of every byte before it
//! ```
//!
//! The checksum covers everything, so a file cut short, damaged or
//! appended to is refused before any of it is decoded; the counts of the
//! header are checked against the parts after that. The entries are the
//! store's own encoding of rows and counters: the format version names
//! that encoding too.

use bincode::{Decode, Encode};
use serde::Serialize;

use crate::error::{Error, Result};

/// What a backup file starts with.
pub const MAGIC: &[u8; 8] = b"DBAASBK\0";
/// What its trailer starts with.
pub const TRAILER: &[u8; 8] = b"DBAASEND";
/// The format written, and the only one read.
pub const FORMAT: u16 = 1;
/// Bytes of the magic, the format and the header's length.
const PREAMBLE: usize = 8 + 2 + 4;
/// Bytes of the trailer.
const TRAILER_LEN: usize = 8 + 4;

/// Key-value entries of the store, as a part holds them.
pub type Entries = Vec<(Vec<u8>, Vec<u8>)>;

/// What a backup says of itself.
#[derive(Clone, Debug, Default, PartialEq, Eq, Encode, Decode, Serialize)]
pub struct BackupHeader {
    /// The cluster it was taken from.
    pub cluster: u64,
    /// The epoch of the master that took it.
    pub epoch: u64,
    /// It holds exactly the writes up to this seq.
    pub seq: u64,
    /// When it was taken (wall-clock ms).
    pub made_ms: u64,
    /// Rows per table, tables in name order.
    pub tables: Vec<(String, u64)>,
    /// Entries in all parts (rows and auto-key counters).
    pub entries: u64,
    pub parts: u32,
}

impl BackupHeader {
    /// Rows in all tables.
    pub fn rows(&self) -> u64 {
        self.tables.iter().map(|(_, n)| n).sum()
    }
}

/// The most memory a decode may claim: a length read off a crafted file
/// (its checksum right) would otherwise ask for any amount, and a `Vec`
/// past what memory holds panics or aborts the process.
pub const DECODE_LIMIT: usize = 1 << 30;

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<DECODE_LIMIT>()
}

/// Writes a backup piece by piece (for a streamed body), keeping the
/// checksum as it goes: the header, each part, then the trailer.
#[derive(Default)]
pub struct Writer {
    crc: crc32fast::Hasher,
}

impl Writer {
    /// The magic, the format and the header.
    pub fn header(&mut self, header: &BackupHeader) -> Vec<u8> {
        let body = encode(header);
        let mut out = Vec::with_capacity(PREAMBLE + body.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&FORMAT.to_be_bytes());
        out.extend_from_slice(&len_u32(body.len()).to_be_bytes());
        out.extend_from_slice(&body);
        self.crc.update(&out);
        out
    }

    /// One part.
    pub fn part(&mut self, entries: &Entries) -> Vec<u8> {
        let body = encode(entries);
        let mut out = Vec::with_capacity(4 + body.len());
        out.extend_from_slice(&len_u32(body.len()).to_be_bytes());
        out.extend_from_slice(&body);
        self.crc.update(&out);
        out
    }

    /// The trailer, with the checksum of everything before it.
    pub fn trailer(mut self) -> Vec<u8> {
        self.crc.update(TRAILER);
        let mut out = TRAILER.to_vec();
        out.extend_from_slice(&self.crc.finalize().to_be_bytes());
        out
    }
}

/// A whole backup in memory (tests, and small tools).
pub fn encode_whole(header: &BackupHeader, parts: &[Entries]) -> Vec<u8> {
    let mut w = Writer::default();
    let mut out = w.header(header);
    for p in parts {
        out.extend(w.part(p));
    }
    out.extend(w.trailer());
    out
}

fn encode<T: Encode>(v: &T) -> Vec<u8> {
    // Encoding into a Vec cannot fail for these types.
    bincode::encode_to_vec(v, config()).unwrap_or_default()
}

/// A part of 4 GiB or more cannot be written; parts are bounded far below.
fn len_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Checks a whole backup file and opens it: refused (400, saying why)
/// unless the magic, the format, the checksum, every part and every count
/// of the header agree.
pub fn decode(bytes: &[u8]) -> Result<(BackupHeader, Vec<Entries>)> {
    if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
        return Err(bad("not a dbaas backup (no backup magic at its start)"));
    }
    if bytes.len() < PREAMBLE + TRAILER_LEN {
        return Err(bad("the backup is cut short"));
    }
    let format = u16::from_be_bytes([bytes[8], bytes[9]]);
    if format != FORMAT {
        return Err(bad(format!(
            "backup format {format} is not one this version reads ({FORMAT})"
        )));
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    let crc = u32::from_be_bytes([crc[0], crc[1], crc[2], crc[3]]);
    if crc32fast::hash(body) != crc || !body.ends_with(TRAILER) {
        return Err(bad(
            "the backup's checksum does not match: it is damaged or cut short",
        ));
    }
    let mut r = Reader {
        bytes: &body[MAGIC.len() + 2..body.len() - TRAILER.len()],
    };
    let header: BackupHeader = r.framed("header")?;
    let mut parts = Vec::new();
    for i in 0..header.parts {
        parts.push(r.framed::<Entries>(&format!("part {i}"))?);
    }
    if !r.bytes.is_empty() {
        return Err(bad(format!(
            "{} bytes after the backup's last part",
            r.bytes.len()
        )));
    }
    let entries: usize = parts.iter().map(Vec::len).sum();
    if entries as u64 != header.entries {
        return Err(bad(format!(
            "the backup's header counts {} entries, its parts hold {entries}",
            header.entries
        )));
    }
    Ok((header, parts))
}

/// The header at the start of a backup file (its magic, format and
/// header, whatever follows): for a reader that checks the rest as it
/// streams in.
pub fn read_header(bytes: &[u8]) -> Result<BackupHeader> {
    if bytes.get(..MAGIC.len()) != Some(MAGIC) {
        return Err(bad("not a dbaas backup (no backup magic at its start)"));
    }
    let mut r = Reader {
        bytes: bytes.get(MAGIC.len() + 2..).unwrap_or_default(),
    };
    r.framed("header")
}

/// Reads length-framed bincode values off a slice.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl Reader<'_> {
    fn framed<T: Decode<()>>(&mut self, what: &str) -> Result<T> {
        let cut = || bad(format!("the backup's {what} is cut short"));
        let len = self.bytes.get(..4).ok_or_else(cut)?;
        let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
        let body = self.bytes.get(4..4 + len).ok_or_else(cut)?;
        let (v, used) = bincode::decode_from_slice(body, config())
            .map_err(|e| bad(format!("the backup's {what} does not decode: {e}")))?;
        if used != body.len() {
            return Err(bad(format!("the backup's {what} has trailing bytes")));
        }
        self.bytes = &self.bytes[4 + len..];
        Ok(v)
    }
}

fn bad(msg: impl Into<String>) -> Error {
    Error::bad(msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> (BackupHeader, Vec<Entries>) {
        let parts = vec![
            vec![
                (b"dusers\0ta".to_vec(), vec![1, 2]),
                (b"mcrides".to_vec(), vec![0; 8]),
            ],
            vec![(b"dusers\0tb".to_vec(), vec![3])],
        ];
        let header = BackupHeader {
            cluster: 7,
            epoch: 2,
            seq: 41,
            made_ms: 1,
            tables: vec![("users".into(), 2)],
            entries: 3,
            parts: 2,
        };
        (header, parts)
    }

    #[test]
    fn the_header_reads_off_any_start_and_a_short_one_is_refused() {
        let (header, parts) = sample();
        let bytes = encode_whole(&header, &parts);
        assert_eq!(read_header(&bytes).unwrap(), header);
        for cut in 0..PREAMBLE + 4 {
            assert!(read_header(&bytes[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn a_backup_comes_back_as_written() {
        let (header, parts) = sample();
        let bytes = encode_whole(&header, &parts);
        assert_eq!(decode(&bytes).unwrap(), (header, parts));
    }

    #[test]
    fn every_cut_and_every_flipped_byte_is_refused() {
        let (header, parts) = sample();
        let bytes = encode_whole(&header, &parts);
        for n in 0..bytes.len() {
            assert!(decode(&bytes[..n]).is_err(), "cut at {n}");
            let mut bad = bytes.clone();
            bad[n] ^= 0x40;
            assert!(decode(&bad).is_err(), "byte {n} flipped");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode(&longer).is_err());
    }

    #[test]
    fn other_formats_and_garbage_say_what_they_are() {
        let (header, parts) = sample();
        let mut bytes = encode_whole(&header, &parts);
        let e = decode(b"{\"rows\":[]}").unwrap_err().to_string();
        assert!(e.contains("not a dbaas backup"), "{e}");
        bytes[9] = 9;
        let e = decode(&bytes).unwrap_err().to_string();
        assert!(e.contains("format 9"), "{e}");
        assert_eq!(decode(&[]).unwrap_err().status(), 400);
    }

    /// A file whose checksum is right but whose part claims more entries
    /// (or bytes) than any memory holds: refused, not a panic or an abort.
    #[test]
    fn huge_lengths_under_a_right_checksum_are_refused() {
        let (header, _) = sample();
        for claim in [1u64 << 58, 1 << 33, 1 << 40] {
            let mut w = Writer::default();
            let mut bytes = w.header(&header);
            let mut part = vec![253];
            part.extend_from_slice(&claim.to_le_bytes());
            bytes.extend_from_slice(&(part.len() as u32).to_be_bytes());
            bytes.extend_from_slice(&part);
            bytes.extend_from_slice(TRAILER);
            let crc = crc32fast::hash(&bytes);
            bytes.extend_from_slice(&crc.to_be_bytes());
            let e = decode(&bytes).unwrap_err();
            assert_eq!(e.status(), 400, "{claim}: {e}");
        }
    }

    #[test]
    fn counts_that_disagree_with_the_parts_are_refused() {
        let (mut header, parts) = sample();
        header.entries = 4;
        let e = decode(&encode_whole(&header, &parts))
            .unwrap_err()
            .to_string();
        assert!(e.contains("counts 4 entries"), "{e}");
        header.entries = 3;
        header.parts = 3;
        assert!(decode(&encode_whole(&header, &parts)).is_err());
    }
}
