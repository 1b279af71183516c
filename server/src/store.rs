//! The directory on disk: load at start, save after every change by atomic replace
//! (write a temporary file, flush it, rename it over the old one), so a crash at any moment
//! leaves either the old or the new directory, never half of one.

use crate::directory::Directory;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Largest directory file accepted at start (a bound on what a corrupt file can make us read).
pub const MAX_FILE: u64 = 256 * 1024 * 1024;

/// Where one server keeps its data.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

impl Store {
    /// The store under `data_dir/server-ID`, created if missing.
    pub fn open(data_dir: &Path, id: u32) -> Result<Store, String> {
        let dir = data_dir.join(format!("server-{id}"));
        fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        Ok(Store { dir })
    }

    /// The directory file's path.
    pub fn path(&self) -> PathBuf {
        self.dir.join("directory.json")
    }

    /// Loads the saved directory. A missing file is an empty directory; an unreadable or
    /// corrupt one is moved aside (`.corrupt`) with a message, and the server starts empty and
    /// is refilled by the others' full push.
    pub fn load(&self) -> (Directory, Option<String>) {
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

    /// Saves the directory atomically.
    pub fn save(&self, d: &Directory) -> Result<(), String> {
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
        let s = Store::open(&root, 1).unwrap();
        assert_eq!(s.load().0, Directory::default());
        let mut d = Directory::default();
        d.next_version(1);
        s.save(&d).unwrap();
        assert_eq!(s.load().0, d);
        fs::write(s.path(), b"{not json").unwrap();
        let (loaded, msg) = s.load();
        assert_eq!(loaded, Directory::default());
        assert!(msg.unwrap().contains("unreadable"));
        assert!(s.path().with_extension("json.corrupt").exists());
        let _ = fs::remove_dir_all(root);
    }
}
