//! Partial payloads on disk, so that a delivery or download cut off by a restart of this client
//! resumes when retried. The transfer multiplexer keeps partials in memory (bounded in bytes and
//! time); this folder mirrors them: per payload a data file `<crc>-<len>-<chunk>.part` (the
//! payload's bytes at their offsets, only held chunks meaningful) and a `.have` file (its shape
//! and the bitmap of the chunks held). Chunks are written to the data file and synced before the
//! `.have` file that claims them is replaced atomically, so a crash never claims bytes not on
//! disk. What is read back is checked (shape, bitmap, lengths, age) and whatever fails is
//! deleted; the payload's CRC-32 catches anything else when the transfer completes. The files
//! hold what travelled: stego PNGs of sealed images, never a plaintext photo.

use common::transfer::{Partial, PartialView, PathHint, Shape, Transfers};
use std::collections::HashMap;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::hash::Hash;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

const MAGIC: &[u8; 8] = b"IMGPART1";
/// Bytes of a `.have` file before its bitmap.
const HEAD: usize = 8 + 8 + 4 + 2 + 4 + 4;

/// The partials folder of one transfer multiplexer.
pub struct PartialStore {
    dir: PathBuf,
    /// Per payload, the chunks already on disk.
    written: HashMap<Shape, Vec<u64>>,
    max_age: Duration,
}

fn stem(s: &Shape) -> String {
    format!("{:08x}-{}-{}", s.checksum, s.total_len, s.chunk_size)
}

fn have_bytes(shape: &Shape, have: &[u64]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEAD + have.len() * 8);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&shape.total_len.to_le_bytes());
    out.extend_from_slice(&shape.total_chunks.to_le_bytes());
    out.extend_from_slice(&shape.chunk_size.to_le_bytes());
    out.extend_from_slice(&shape.checksum.to_le_bytes());
    out.extend_from_slice(&(have.len() as u32).to_le_bytes());
    for w in have {
        out.extend_from_slice(&w.to_le_bytes());
    }
    out
}

fn parse_have(b: &[u8]) -> Result<(Shape, Vec<u64>), &'static str> {
    let field = |at: usize, n: usize| b.get(at..at + n).ok_or("truncated");
    if field(0, 8)? != MAGIC {
        return Err("not a partial's bitmap");
    }
    let le8 = |at| field(at, 8).map(|x| u64::from_le_bytes(x.try_into().unwrap_or([0; 8])));
    let le4 = |at| field(at, 4).map(|x| u32::from_le_bytes(x.try_into().unwrap_or([0; 4])));
    let shape = Shape {
        total_len: le8(8)?,
        total_chunks: le4(16)?,
        chunk_size: field(20, 2).map(|x| u16::from_le_bytes([x[0], x[1]]))?,
        checksum: le4(22)?,
    };
    let words = le4(26)? as usize;
    if !shape.is_consistent() || words != shape.bitmap_words() || b.len() != HEAD + words * 8 {
        return Err("inconsistent shape or bitmap length");
    }
    let have = (0..words).map(|i| le8(HEAD + i * 8)).collect::<Result<Vec<u64>, _>>()?;
    Ok((shape, have))
}

fn open_private(path: &Path) -> std::io::Result<File> {
    let mut opts = OpenOptions::new();
    opts.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    opts.open(path)
}

#[cfg(unix)]
fn write_at(f: &File, bytes: &[u8], at: u64) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    f.write_all_at(bytes, at)
}

#[cfg(not(unix))]
fn write_at(mut f: &File, bytes: &[u8], at: u64) -> std::io::Result<()> {
    use std::io::{Seek, SeekFrom, Write};
    f.seek(SeekFrom::Start(at))?;
    f.write_all(bytes)
}

impl PartialStore {
    /// The folder `dir` (created if missing); partials older than `max_age` are not kept.
    pub fn open(dir: PathBuf, max_age: Duration) -> Result<PartialStore, String> {
        fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        Ok(PartialStore { dir, written: HashMap::new(), max_age })
    }

    fn paths(&self, s: &Shape) -> (PathBuf, PathBuf) {
        let stem = stem(s);
        (self.dir.join(format!("{stem}.part")), self.dir.join(format!("{stem}.have")))
    }

    /// Reads every partial kept (at most `max_bytes` of payload in all, newest first); deletes
    /// files that are malformed, expired or over the budget, with the reason in `skipped`.
    pub fn load(&mut self, max_bytes: u64, skipped: &mut Vec<String>) -> Vec<Partial> {
        let mut found: Vec<(SystemTime, PathBuf)> = fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "have"))
            .filter_map(|p| Some((fs::metadata(&p).ok()?.modified().ok()?, p)))
            .collect();
        found.sort_by_key(|f| std::cmp::Reverse(f.0));
        let mut out = Vec::new();
        let mut budget = max_bytes;
        for (mtime, have_path) in found {
            let data_path = have_path.with_extension("part");
            let age = SystemTime::now().duration_since(mtime).unwrap_or_default();
            let loaded =
                if age > self.max_age { Err("expired".to_string()) } else { Self::read(&have_path, &data_path) };
            let kept = match loaded {
                Ok(p) if p.shape.total_len <= budget => {
                    budget -= p.shape.total_len;
                    self.written.insert(p.shape, p.have.clone());
                    out.push(p);
                    true
                }
                Ok(_) => {
                    skipped.push(format!("{}: over the resume budget", have_path.display()));
                    false
                }
                Err(why) => {
                    skipped.push(format!("{}: {why}", have_path.display()));
                    false
                }
            };
            if !kept {
                let _ = fs::remove_file(&have_path);
                let _ = fs::remove_file(&data_path);
            }
        }
        // Data files without a bitmap are leftovers of a crash before the first checkpoint.
        for e in fs::read_dir(&self.dir).into_iter().flatten().filter_map(|e| e.ok()) {
            let p = e.path();
            let orphan = p.extension().is_some_and(|x| x == "part") && !p.with_extension("have").exists();
            if orphan || p.extension().is_some_and(|x| x == "tmp") {
                let _ = fs::remove_file(&p);
            }
        }
        out
    }

    fn read(have_path: &Path, data_path: &Path) -> Result<Partial, String> {
        let meta = fs::read(have_path).map_err(|e| e.to_string())?;
        let (shape, have) = parse_have(&meta).map_err(str::to_string)?;
        let buf = fs::read(data_path).map_err(|e| format!("no data file: {e}"))?;
        if buf.len() as u64 != shape.total_len {
            return Err(format!("data file holds {} bytes, not {}", buf.len(), shape.total_len));
        }
        if have_path.file_stem() != Some(std::ffi::OsStr::new(&stem(&shape))) {
            return Err("file name does not match its shape".into());
        }
        Ok(Partial { shape, have, buf })
    }

    /// Brings the folder in line with `held`: writes chunks held since the last checkpoint,
    /// then their bitmaps; deletes the files of payloads no longer held (completed, dropped).
    pub fn checkpoint(&mut self, held: &[PartialView<'_>]) -> Result<(), String> {
        for p in held {
            let unchanged = self.written.get(&p.shape).is_some_and(|w| w.as_slice() == p.have);
            if !unchanged {
                self.save(p).map_err(|e| format!("cannot save a partial in {}: {e}", self.dir.display()))?;
            }
        }
        let gone: Vec<Shape> = self.written.keys().filter(|s| !held.iter().any(|p| p.shape == **s)).copied().collect();
        for s in gone {
            self.written.remove(&s);
            let (data, have) = self.paths(&s);
            let _ = fs::remove_file(have);
            let _ = fs::remove_file(data);
        }
        Ok(())
    }

    fn save(&mut self, p: &PartialView<'_>) -> std::io::Result<()> {
        let (data_path, have_path) = self.paths(&p.shape);
        let f = open_private(&data_path)?;
        if f.metadata()?.len() != p.shape.total_len {
            f.set_len(p.shape.total_len)?;
            self.written.remove(&p.shape);
        }
        let old = self.written.get(&p.shape);
        let chunk = u64::from(p.shape.chunk_size);
        for (i, &word) in p.have.iter().enumerate() {
            let new = word & !old.and_then(|o| o.get(i)).copied().unwrap_or(0);
            if new == 0 {
                continue;
            }
            for bit in 0..64u64 {
                if new & (1 << bit) == 0 {
                    continue;
                }
                let start = (i as u64 * 64 + bit) * chunk;
                let end = (start + chunk).min(p.shape.total_len);
                let range = usize::try_from(start).unwrap_or(usize::MAX)..usize::try_from(end).unwrap_or(usize::MAX);
                if let Some(bytes) = p.buf.get(range) {
                    write_at(&f, bytes, start)?;
                }
            }
        }
        f.sync_data()?;
        crate::store::write_atomic(&have_path, &have_bytes(&p.shape, p.have), true).map_err(std::io::Error::other)?;
        self.written.insert(p.shape, p.have.to_vec());
        Ok(())
    }
}

/// A transfer multiplexer with its partials folder: restored at start, checkpointed at most
/// every [`CHECKPOINT_MS`] and whenever asked.
pub struct Mirror {
    store: PartialStore,
    next: u64,
    warned: bool,
}

/// How often held chunks are written out, ms.
pub const CHECKPOINT_MS: u64 = 1000;

impl Mirror {
    /// Opens `dir` and hands what it keeps to `transfers`; says in a notice what it dropped.
    pub fn attach<A: Copy + Eq + Hash + fmt::Debug + PathHint>(
        dir: PathBuf,
        transfers: &mut Transfers<A>,
        now: u64,
    ) -> Result<Mirror, String> {
        let cfg = transfers.config();
        let mut store = PartialStore::open(dir, Duration::from_millis(cfg.resume_ms))?;
        let mut skipped = Vec::new();
        for p in store.load(cfg.resume_bytes as u64, &mut skipped) {
            let shape = p.shape;
            if let Err(e) = transfers.restore(now, p) {
                skipped.push(format!("{}: {e}", stem(&shape)));
                store.written.remove(&shape);
            }
        }
        for s in skipped {
            crate::notice::notice(&format!("partials: dropped {s}"));
        }
        let mut m = Mirror { store, next: now, warned: false };
        m.checkpoint(transfers);
        Ok(m)
    }

    /// Checkpoints if the last one is [`CHECKPOINT_MS`] old.
    pub fn tick<A: Copy + Eq + Hash + fmt::Debug + PathHint>(&mut self, now: u64, transfers: &Transfers<A>) {
        if now >= self.next {
            self.next = now + CHECKPOINT_MS;
            self.checkpoint(transfers);
        }
    }

    /// Writes out what `transfers` holds now.
    pub fn checkpoint<A: Copy + Eq + Hash + fmt::Debug + PathHint>(&mut self, transfers: &Transfers<A>) {
        if let Err(e) = self.store.checkpoint(&transfers.partials()) {
            if !std::mem::replace(&mut self.warned, true) {
                crate::notice::notice(&format!("partials: {e} (an interrupted transfer may start again from zero)"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("imgcloud-partials-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    fn partial(len: u64, chunk: u16, have: u64) -> Partial {
        let total_chunks = len.div_ceil(u64::from(chunk)) as u32;
        let shape = Shape { total_len: len, total_chunks, chunk_size: chunk, checksum: 0xABCD };
        let buf: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
        Partial { shape, have: vec![have], buf }
    }

    fn view(p: &Partial) -> PartialView<'_> {
        PartialView { shape: p.shape, have: &p.have, buf: &p.buf, held: 0 }
    }

    #[test]
    fn held_chunks_survive_a_restart_and_finished_ones_are_deleted() {
        let d = dir("roundtrip");
        let mut full = partial(10_000, 1000, 0b1011);
        let mut s = PartialStore::open(d.clone(), Duration::from_secs(600)).unwrap();
        s.checkpoint(&[view(&full)]).unwrap();
        full.have[0] |= 0b1_0000_0000; // one more chunk arrives
        s.checkpoint(&[view(&full)]).unwrap();
        let mut again = PartialStore::open(d.clone(), Duration::from_secs(600)).unwrap();
        let mut skipped = Vec::new();
        let loaded = again.load(u64::MAX, &mut skipped);
        assert!(skipped.is_empty(), "{skipped:?}");
        assert_eq!(loaded.len(), 1);
        let p = &loaded[0];
        assert_eq!((p.shape, &p.have), (full.shape, &full.have));
        for seq in [0usize, 1, 3, 8] {
            assert_eq!(p.buf[seq * 1000..seq * 1000 + 1000], full.buf[seq * 1000..seq * 1000 + 1000]);
        }
        assert!(p.buf[2000..3000].iter().all(|&b| b == 0), "a chunk not held was written");
        again.checkpoint(&[]).unwrap();
        assert_eq!(fs::read_dir(&d).unwrap().count(), 0, "files of a finished payload are left");
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn damaged_and_over_budget_files_are_deleted_not_loaded() {
        let d = dir("damaged");
        let (a, b) = (partial(10_000, 1000, 0b1), partial(20_000, 1000, 0b11));
        let mut s = PartialStore::open(d.clone(), Duration::from_secs(600)).unwrap();
        s.checkpoint(&[view(&a), view(&b)]).unwrap();
        let (data_a, have_a) = s.paths(&a.shape);
        fs::write(&data_a, b"short").unwrap();
        let (_, have_b) = s.paths(&b.shape);
        let mut skipped = Vec::new();
        let loaded = PartialStore::open(d.clone(), Duration::from_secs(600)).unwrap().load(15_000, &mut skipped);
        assert!(loaded.is_empty(), "loaded {:?}", loaded.iter().map(|p| p.shape).collect::<Vec<_>>());
        assert_eq!(skipped.len(), 2, "{skipped:?}");
        assert!(!have_a.exists() && !have_b.exists() && !data_a.exists());
        // Garbage under a partial's name.
        fs::write(d.join("00000000-5-1.have"), b"IMGPART1 but nothing else").unwrap();
        let loaded = PartialStore::open(d.clone(), Duration::from_secs(600)).unwrap().load(u64::MAX, &mut skipped);
        assert!(loaded.is_empty() && fs::read_dir(&d).unwrap().count() == 0);
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn expired_partials_are_deleted() {
        let d = dir("expired");
        let a = partial(5000, 1000, 0b1);
        PartialStore::open(d.clone(), Duration::from_secs(600)).unwrap().checkpoint(&[view(&a)]).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        let mut skipped = Vec::new();
        let loaded = PartialStore::open(d.clone(), Duration::from_millis(10)).unwrap().load(u64::MAX, &mut skipped);
        assert!(loaded.is_empty() && skipped.iter().any(|s| s.contains("expired")));
        assert_eq!(fs::read_dir(&d).unwrap().count(), 0);
        let _ = fs::remove_dir_all(&d);
    }
}
