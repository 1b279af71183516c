//! What a user shares and holds: requests waiting for the owner's answer, the views the owner
//! last granted to each viewer (with a version number per share), and the copies received from
//! others, each a stego PNG with its rights embedded. Saved in the data folder, atomically.

use crate::store::{write_atomic, Store};
use common::names::{check_image_id, check_user};
use common::rights::{self, Rights};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;

/// A request waiting for the owner's `approve` or `reject`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// Number the owner answers with.
    pub n: u32,
    /// Who asks.
    pub from: String,
    /// Which image.
    pub image_id: String,
    /// How many views they ask for.
    pub views: u32,
    /// True when they already hold a copy and ask for more views.
    pub more: bool,
}

/// What the owner last granted one viewer on one image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Share {
    /// Views granted (0 = revoked).
    pub views: u32,
    /// Version of that grant; the viewer applies only newer versions.
    pub version: u64,
}

/// The owner's side, saved as `sharing.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sharing {
    /// Next request number.
    pub next_n: u32,
    /// Requests waiting for an answer.
    pub requests: Vec<Request>,
    /// Grants, keyed `viewer/image`.
    pub shares: BTreeMap<String, Share>,
}

/// A copy received from another user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// Its rights (owner, image, views left, version).
    pub rights: Rights,
    /// The file.
    pub path: PathBuf,
}

fn share_key(viewer: &str, image: &str) -> String {
    format!("{viewer}/{image}")
}

impl Sharing {
    /// Loads `sharing.json` (missing: empty).
    pub fn load(store: &Store) -> Result<Sharing, String> {
        let path = store.root().join("sharing.json");
        match fs::read(&path) {
            Err(_) => Ok(Sharing::default()),
            Ok(b) => serde_json::from_slice(&b).map_err(|e| format!("{} is corrupt: {e}", path.display())),
        }
    }

    /// Saves `sharing.json` atomically.
    pub fn save(&self, store: &Store) -> Result<(), String> {
        let bytes = serde_json::to_vec_pretty(self).map_err(|e| e.to_string())?;
        write_atomic(&store.root().join("sharing.json"), &bytes, true)
    }

    /// Records an incoming request; returns its number. A repeat of a waiting request is merged.
    pub fn add_request(&mut self, from: &str, image_id: &str, views: u32, more: bool) -> u32 {
        if let Some(r) = self.requests.iter_mut().find(|r| r.from == from && r.image_id == image_id && r.more == more) {
            r.views = views;
            return r.n;
        }
        self.next_n += 1;
        let n = self.next_n;
        self.requests.push(Request { n, from: from.into(), image_id: image_id.into(), views, more });
        n
    }

    /// Removes and returns request `n`.
    pub fn take_request(&mut self, n: u32) -> Option<Request> {
        let i = self.requests.iter().position(|r| r.n == n)?;
        Some(self.requests.remove(i))
    }

    /// Records a grant and returns its new version.
    pub fn grant(&mut self, viewer: &str, image_id: &str, views: u32) -> u64 {
        let s = self.shares.entry(share_key(viewer, image_id)).or_insert(Share { views, version: 0 });
        s.views = views;
        s.version += 1;
        s.version
    }

    /// Who holds which image: (viewer, image, share).
    pub fn holders(&self) -> Vec<(String, String, Share)> {
        self.shares
            .iter()
            .filter_map(|(k, s)| k.split_once('/').map(|(v, i)| (v.to_string(), i.to_string(), s.clone())))
            .collect()
    }
}

/// The received-copies folder.
fn received_dir(store: &Store) -> PathBuf {
    store.root().join("received")
}

/// Where the copy of `owner`'s `image_id` is kept.
pub fn received_path(store: &Store, owner: &str, image_id: &str) -> PathBuf {
    received_dir(store).join(format!("{owner}--{image_id}.png"))
}

/// Every received copy with its rights (unreadable files are skipped).
pub fn received(store: &Store) -> Vec<Received> {
    let mut out: Vec<Received> = fs::read_dir(received_dir(store))
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter_map(|e| {
                    let path = e.path();
                    let bytes = fs::read(&path).ok()?;
                    let rights = rights::read(&bytes).ok()?;
                    Some(Received { rights, path })
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort_by(|a, b| (&a.rights.owner, &a.rights.image_id).cmp(&(&b.rights.owner, &b.rights.image_id)));
    out
}

/// Finds a received copy by `IMAGE` or `OWNER/IMAGE`.
pub fn find_received(store: &Store, what: &str) -> Result<Received, String> {
    let all = received(store);
    let hits: Vec<Received> = match what.split_once('/') {
        Some((owner, image)) => {
            all.into_iter().filter(|r| r.rights.owner == owner && r.rights.image_id == image).collect()
        }
        None => all.into_iter().filter(|r| r.rights.image_id == what).collect(),
    };
    match hits.len() {
        0 => Err(format!("no received image {what} (see `received`)")),
        1 => hits.into_iter().next().ok_or_else(|| "no such image".to_string()),
        _ => Err(format!("{what} is ambiguous: name it OWNER/{what}")),
    }
}

/// Stores a delivered copy after checking its rights name us, the sender and the image.
pub fn store_delivery(store: &Store, me: &str, from: &str, image_id: &str, png: &[u8]) -> Result<Rights, String> {
    check_user(from)?;
    check_image_id(image_id)?;
    let r = rights::read(png).map_err(|e| format!("the image from {from} has no valid rights: {e}"))?;
    if r.owner != from || r.viewer != me || r.image_id != image_id {
        return Err(format!("the image from {from} carries rights for someone else"));
    }
    common::stego::reveal(png).map_err(|e| format!("the image from {from} hides nothing readable: {e}"))?;
    fs::create_dir_all(received_dir(store)).map_err(|e| e.to_string())?;
    let path = received_path(store, from, image_id);
    if let Ok(old) =
        fs::read(&path).map_err(|e| e.to_string()).and_then(|b| rights::read(&b).map_err(|e| e.to_string()))
    {
        if old.version >= r.version {
            return Ok(old); // an older or repeated delivery: keep what we have
        }
    }
    write_atomic(&path, png, true)?;
    Ok(r)
}

/// Applies the owner's new views (`0`: delete the copy). Returns what happened, or None if
/// the update is not newer than what the copy carries (or there is no copy).
pub fn apply_rights(
    store: &Store,
    owner: &str,
    image_id: &str,
    views: u32,
    version: u64,
) -> Result<Option<String>, String> {
    check_user(owner)?;
    check_image_id(image_id)?;
    let path = received_path(store, owner, image_id);
    let Ok(png) = fs::read(&path) else { return Ok(None) };
    let mut r = rights::read(&png).map_err(|e| e.to_string())?;
    if version <= r.version {
        return Ok(None);
    }
    if views == 0 {
        fs::remove_file(&path).map_err(|e| format!("cannot delete {}: {e}", path.display()))?;
        return Ok(Some(format!("{owner} revoked {image_id}: the copy is deleted")));
    }
    r.views = views;
    r.version = version;
    let updated = rights::embed(&png, &r).map_err(|e| e.to_string())?;
    write_atomic(&path, &updated, true)?;
    Ok(Some(format!("{owner} set {image_id} to {views} views")))
}

/// One view: if views remain, returns the hidden image and the views left after this one
/// (the decrement is on disk before the image is returned); at 0, returns None.
pub fn view(copy: &Received) -> Result<Option<(Vec<u8>, u32)>, String> {
    let png = fs::read(&copy.path).map_err(|e| format!("cannot read {}: {e}", copy.path.display()))?;
    let mut r = rights::read(&png).map_err(|e| e.to_string())?;
    if r.views == 0 {
        return Ok(None);
    }
    let hidden = common::stego::reveal(&png).map_err(|e| e.to_string())?;
    r.views -= 1;
    let updated = rights::embed(&png, &r).map_err(|e| e.to_string())?;
    write_atomic(&copy.path, &updated, true)?;
    Ok(Some((hidden, r.views)))
}
