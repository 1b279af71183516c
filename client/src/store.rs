//! The client's data folder: its identity (name, user id, secret; file mode 0600) and
//! its own images (stego PNGs with their low-resolution previews). Every write is atomic. A
//! running client holds the folder's lock ([`lock_folder`]): one folder, one client at a time.

use common::names::check_image_id;
use serde::{Deserialize, Serialize};
use std::fs::{self, TryLockError};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// Who this client is, as the cloud registered it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Identity {
    /// User name.
    pub name: String,
    /// Numeric id.
    pub user_id: u64,
    /// The secret the cloud issued (64 hex digits; keep private).
    #[serde(alias = "token")]
    pub secret: String,
}

/// A client's data folder.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

/// Writes `bytes` to `path` atomically (temporary file + rename), with mode 0600 on Unix.
pub fn write_atomic(path: &Path, bytes: &[u8], private: bool) -> Result<(), String> {
    let tmp = path.with_extension(format!("{}.tmp", path.extension().and_then(|e| e.to_str()).unwrap_or("")));
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        if private {
            opts.mode(0o600);
        }
    }
    #[cfg(not(unix))]
    let _ = private;
    let mut f = opts.open(&tmp).map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    f.write_all(bytes).map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    drop(f);
    fs::rename(&tmp, path).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// The lock of a data folder, held while this value lives: `client.lock` in the folder, locked
/// by the OS (released when the process ends, however it ends: a client killed by SIGKILL
/// leaves no lock behind) and holding the holder's process id.
#[derive(Debug)]
pub struct FolderLock {
    _file: fs::File,
}

/// Locks the data folder `root` (created if missing) for this process, or says which process
/// holds it: two clients of one folder would share its identity, images and partial transfers,
/// and the first to quit would sign the other out.
pub fn lock_folder(root: &Path) -> Result<FolderLock, String> {
    fs::create_dir_all(root).map_err(|e| format!("cannot create {}: {e}", root.display()))?;
    let path = root.join("client.lock");
    let mut file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    match file.try_lock() {
        Ok(()) => {
            // Locked: the pid replaces whatever an earlier holder left.
            let pid = format!("{}\n", std::process::id());
            file.set_len(0)
                .and_then(|_| file.write_all(pid.as_bytes()))
                .map_err(|e| format!("{}: {e}", path.display()))?;
            Ok(FolderLock { _file: file })
        }
        Err(TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.take(32).read_to_string(&mut holder);
            let holder = holder.trim();
            let who =
                if holder.is_empty() { "another client".to_string() } else { format!("another client (pid {holder})") };
            Err(format!(
                "the data folder {} is in use by {who}: one folder serves one client at a time; \
                 quit that client first",
                root.display()
            ))
        }
        Err(TryLockError::Error(e)) => Err(format!("cannot lock {}: {e}", path.display())),
    }
}

impl Identity {
    /// The secret as key material.
    pub fn secret_bytes(&self) -> Vec<u8> {
        common::auth::secret_bytes(&self.secret)
    }

    /// The key `purpose` derived from the secret.
    pub fn key(&self, purpose: common::crypto::Purpose) -> common::crypto::Key {
        common::crypto::derive(&self.secret_bytes(), purpose)
    }
}

impl Store {
    /// The folder `root` (created, with `images/` and `previews/`).
    pub fn open(root: PathBuf) -> Result<Store, String> {
        for sub in ["images", "previews"] {
            fs::create_dir_all(root.join(sub)).map_err(|e| format!("cannot create {}: {e}", root.display()))?;
        }
        Ok(Store { root })
    }

    /// The folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The saved identity, if this client registered before.
    pub fn identity(&self) -> Result<Option<Identity>, String> {
        let path = self.root.join("identity.json");
        match fs::read(&path) {
            Err(_) => Ok(None),
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| format!("{} is corrupt ({e}); remove it to register again", path.display())),
        }
    }

    /// Saves the identity (private file).
    pub fn save_identity(&self, id: &Identity) -> Result<(), String> {
        let bytes = serde_json::to_vec_pretty(id).map_err(|e| e.to_string())?;
        write_atomic(&self.root.join("identity.json"), &bytes, true)
    }

    /// Ids of this client's own images, sorted.
    pub fn images(&self) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(self.root.join("images"))
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .filter_map(|e| e.file_name().to_str().and_then(|n| n.strip_suffix(".png")).map(String::from))
                    .filter(|id| check_image_id(id).is_ok())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    /// A free image id derived from a file name: safe characters only, numbered if taken.
    pub fn new_image_id(&self, file: &Path) -> String {
        let stem = file.file_stem().and_then(|s| s.to_str()).unwrap_or("image");
        let mut base: String = stem
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '-' })
            .take(40)
            .collect();
        if base.is_empty() || check_image_id(&base).is_err() {
            base = "image".into();
        }
        let taken = self.images();
        let mut id = base.clone();
        let mut n = 2;
        while taken.contains(&id) {
            id = format!("{base}-{n}");
            n += 1;
        }
        id
    }

    /// Stores an own stego image and its preview.
    pub fn save_image(&self, id: &str, stego_png: &[u8], preview_png: &[u8]) -> Result<(), String> {
        check_image_id(id)?;
        write_atomic(&self.root.join("previews").join(format!("{id}.png")), preview_png, false)?;
        write_atomic(&self.root.join("images").join(format!("{id}.png")), stego_png, false)
    }

    /// The stego image file of an own image.
    pub fn image_path(&self, id: &str) -> PathBuf {
        self.root.join("images").join(format!("{id}.png"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_round_trip_is_private_and_ids_are_safe() {
        let dir = std::env::temp_dir().join(format!("imgcloud-client-store-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let s = Store::open(dir.clone()).unwrap();
        assert_eq!(s.identity().unwrap(), None);
        let id = Identity { name: "alice".into(), user_id: 7, secret: "t".into() };
        s.save_identity(&id).unwrap();
        assert_eq!(s.identity().unwrap(), Some(id));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(dir.join("identity.json")).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert_eq!(s.new_image_id(Path::new("../../etc/pass wd.jpg")), "pass-wd");
        s.save_image("cat", b"x", b"y").unwrap();
        assert_eq!(s.new_image_id(Path::new("cat.png")), "cat-2");
        assert_eq!(s.images(), vec!["cat".to_string()]);
        let _ = fs::remove_dir_all(dir);
    }

    #[test]
    fn a_locked_folder_names_its_holder_until_released() {
        let dir = std::env::temp_dir().join(format!("imgcloud-client-lock-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let held = lock_folder(&dir).expect("a free folder locks");
        let err = lock_folder(&dir).expect_err("a held folder is refused");
        assert!(err.contains(&format!("in use by another client (pid {})", std::process::id())), "{err}");
        drop(held);
        let again = lock_folder(&dir).expect("free again once released");
        drop(again);
        let _ = fs::remove_dir_all(dir);
    }
}
