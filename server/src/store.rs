//! The directory on disk: the users in `directory.json`, rewritten by atomic replace (write a
//! temporary file, flush, rename) when a user record changes, so a crash leaves the old or the
//! new file, never half of one; and the server's votes in `votes.log`, one JSON line appended
//! per change, replayed at start (a torn last line from a crash is skipped) and compacted by
//! atomic replace when it grows. The shell saves before it sends anything a step produced.

use crate::directory::Directory;
use crate::votes::{Vote, VoteLog};
use common::crypto::{self, Key};
use common::protocol::RequestId;
use std::fs;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

/// What a server keeps on disk: the directory and its votes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Saved {
    /// The replicated directory (`directory.json`).
    pub directory: Directory,
    /// This server's votes (`votes.log`).
    pub votes: VoteLog,
}

/// Lines the vote log may hold beyond the live votes before it is compacted.
pub const COMPACT_SLACK: usize = 20_000;

/// Largest directory file accepted at start (a bound on what a corrupt file can make us read).
pub const MAX_FILE: u64 = 256 * 1024 * 1024;

/// Where one server keeps its data.
#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
    log: Option<fs::File>,
    log_lines: usize,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct LogLine {
    rid: RequestId,
    vote: Option<Vote>,
}

impl Store {
    /// The store under `data_dir/server-ID`, created if missing.
    pub fn open(data_dir: &Path, id: u32) -> Result<Store, String> {
        let dir = data_dir.join(format!("server-{id}"));
        fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        // The directory holds users' secrets: only this account may read it.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))
                .map_err(|e| format!("cannot restrict {}: {e}", dir.display()))?;
        }
        Ok(Store { dir, log: None, log_lines: 0 })
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("votes.log")
    }

    /// The directory file's path.
    pub fn path(&self) -> PathBuf {
        self.dir.join("directory.json")
    }

    /// Loads the saved directory. A missing file is an empty directory; an unreadable or
    /// corrupt one is moved aside (`.corrupt`) with a message, and the server starts empty and
    /// is refilled by the others' full push.
    pub fn load(&mut self) -> (Saved, Option<String>) {
        let (directory, mut warning) = self.load_users();
        let (votes, lines, skipped) = self.read_votes();
        self.log_lines = lines;
        let votes = VoteLog::restored(votes);
        if skipped > 0 {
            let note = format!("skipped {skipped} unreadable line(s) of {}", self.log_path().display());
            warning = Some(match warning {
                Some(w) => format!("{w}; {note}"),
                None => note,
            });
        }
        (Saved { directory, votes }, warning)
    }

    fn load_users(&self) -> (Directory, Option<String>) {
        let path = self.path();
        let meta = match fs::metadata(&path) {
            Ok(m) => m,
            Err(_) => return (Directory::default(), None),
        };
        let parsed = if meta.len() > MAX_FILE {
            Err(format!("file is {} bytes, more than {MAX_FILE}", meta.len()))
        } else {
            fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|bytes| serde_json::from_slice::<Directory>(&bytes).map_err(|e| e.to_string()))
        };
        match parsed {
            Ok(d) => (d, None),
            Err(e) => {
                let aside = path.with_extension("json.corrupt");
                let _ = fs::rename(&path, &aside);
                let msg =
                    format!("{} is unreadable ({e}); moved to {} and starting empty", path.display(), aside.display());
                (Directory::default(), Some(msg))
            }
        }
    }

    /// Replays the vote log: the last line for a request wins. Returns (votes, lines, skipped).
    fn read_votes(&self) -> (Vec<(RequestId, Vote)>, usize, usize) {
        let mut votes = std::collections::BTreeMap::new();
        let (mut lines, mut skipped) = (0, 0);
        if let Ok(f) = fs::File::open(self.log_path()) {
            for line in std::io::BufReader::new(f).lines() {
                let Ok(line) = line else {
                    skipped += 1;
                    break;
                };
                lines += 1;
                match serde_json::from_str::<LogLine>(&line) {
                    Ok(LogLine { rid, vote: Some(v) }) => {
                        votes.insert(rid, v);
                    }
                    Ok(LogLine { rid, vote: None }) => {
                        votes.remove(&rid);
                    }
                    Err(_) => skipped += 1,
                }
            }
        }
        (votes.into_iter().collect(), lines, skipped)
    }

    /// Saves what changed: the users snapshot if a record changed, the vote changes appended.
    pub fn save(&mut self, d: &mut Directory, votes: &mut VoteLog) -> Result<(), String> {
        if d.take_users_changed() {
            self.save_users(d)?;
        }
        let journal = votes.take_journal();
        if journal.is_empty() {
            return Ok(());
        }
        if self.log_lines > COMPACT_SLACK + 4 * votes.len() {
            return self.compact(votes);
        }
        let mut buf = Vec::new();
        for (rid, vote) in journal {
            serde_json::to_writer(&mut buf, &LogLine { rid, vote }).map_err(|e| e.to_string())?;
            buf.push(b'\n');
            self.log_lines += 1;
        }
        if self.log.is_none() {
            let f = fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.log_path())
                .map_err(|e| format!("cannot open {}: {e}", self.log_path().display()))?;
            self.log = Some(f);
        }
        match self.log.as_mut() {
            Some(f) => f.write_all(&buf).map_err(|e| format!("cannot append to the vote log: {e}")),
            None => Err("no vote log".into()),
        }
    }

    /// Rewrites the vote log with only the live votes.
    fn compact(&mut self, votes: &VoteLog) -> Result<(), String> {
        let mut buf = Vec::new();
        let mut n = 0;
        for (rid, vote) in votes.iter() {
            serde_json::to_writer(&mut buf, &LogLine { rid: *rid, vote: Some(vote.clone()) })
                .map_err(|e| e.to_string())?;
            buf.push(b'\n');
            n += 1;
        }
        let tmp = self.dir.join("votes.log.tmp");
        fs::write(&tmp, &buf).map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
        self.log = None;
        fs::rename(&tmp, self.log_path()).map_err(|e| format!("cannot replace the vote log: {e}"))?;
        self.log_lines = n;
        Ok(())
    }

    /// Rewrites the users snapshot atomically.
    fn save_users(&self, d: &Directory) -> Result<(), String> {
        let path = self.path();
        let tmp = self.dir.join("directory.json.tmp");
        let bytes = serde_json::to_vec(d).map_err(|e| e.to_string())?;
        let mut f = fs::File::create(&tmp).map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
        f.write_all(&bytes).map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
        f.flush().map_err(|e| e.to_string())?;
        drop(f);
        fs::rename(&tmp, &path).map_err(|e| format!("cannot replace {}: {e}", path.display()))
    }
}

/// The key that authenticates messages between servers, from `path` (64 hex digits). If the
/// file is missing, a fresh random key is written to a private temporary file and linked into
/// place: when several servers start at once, exactly one link wins and all read its key.
pub fn cluster_key(path: &Path) -> Result<Key, String> {
    let read = || -> Result<Option<Key>, String> {
        match fs::read_to_string(path) {
            Ok(text) => crypto::key_from_hex(text.trim())
                .map(Some)
                .ok_or_else(|| format!("{} must hold 64 hex digits", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("cannot read {}: {e}", path.display())),
        }
    };
    if let Some(k) = read()? {
        return Ok(k);
    }
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent).map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(&tmp).map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    f.write_all(crypto::to_hex(&crypto::random_key()).as_bytes())
        .and_then(|_| f.sync_all())
        .map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    drop(f);
    let linked = fs::hard_link(&tmp, path);
    let _ = fs::remove_file(&tmp);
    match linked {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(format!("cannot create {}: {e}", path.display())),
    }
    read()?.ok_or_else(|| format!("{} vanished", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tempdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("imgcloud-store-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn save_then_load_round_trips_and_corrupt_files_are_moved_aside() {
        let root = tempdir("rt");
        let mut s = Store::open(&root, 1).unwrap();
        assert_eq!(s.load().0, Saved::default());
        let mut d = Directory::default();
        d.next_version(1);
        s.save(&mut d, &mut VoteLog::default()).unwrap();
        assert_eq!(s.load().0.directory, d);
        fs::write(s.path(), b"{not json").unwrap();
        let (loaded, msg) = s.load();
        assert_eq!(loaded.directory, Directory::default());
        assert!(msg.unwrap().contains("unreadable"));
        assert!(s.path().with_extension("json.corrupt").exists());
        let _ = fs::remove_dir_all(root);
    }

    #[test]
    fn votes_survive_through_the_log_even_with_a_torn_line_and_compaction() {
        let root = tempdir("votes");
        let mut s = Store::open(&root, 2).unwrap();
        let mut d = Directory::default();
        let mut v = VoteLog::default();
        let vote = |round| Vote { round, holder: 1, accepted: None, decided: false };
        for seq in 0..50u64 {
            v.set(RequestId { client: 1, seq }, &vote(1));
        }
        v.set(RequestId { client: 1, seq: 0 }, &vote(5));
        v.set(RequestId { client: 1, seq: 1 }, &Vote::default());
        s.save(&mut d, &mut v).unwrap();
        let mut f = fs::OpenOptions::new().append(true).open(s.log_path()).unwrap();
        f.write_all(b"{\"rid\":{\"client\":1,\"se").unwrap(); // a crash mid-append
        drop(f);
        let mut s2 = Store::open(&root, 2).unwrap();
        let (loaded, warning) = s2.load();
        assert!(warning.unwrap().contains("skipped 1"));
        assert_eq!(loaded.votes.len(), 49);
        assert_eq!(loaded.votes.get(&RequestId { client: 1, seq: 0 }), Some(&vote(5)));
        assert_eq!(loaded.votes.get(&RequestId { client: 1, seq: 1 }), None);
        let mut v = loaded.votes;
        s2.compact(&v).unwrap();
        let (again, warning) = Store::open(&root, 2).unwrap().load();
        assert!(warning.is_none());
        assert_eq!(again.votes.len(), 49);
        v.set(RequestId { client: 2, seq: 0 }, &vote(1));
        s2.save(&mut d, &mut v).unwrap();
        assert_eq!(Store::open(&root, 2).unwrap().load().0.votes.len(), 50, "appends after compaction");
        let _ = fs::remove_dir_all(root);
    }
}
