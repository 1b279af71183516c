//! What a user shares and holds: requests waiting for the owner's answer, the views the owner
//! last granted to each viewer (with a version number and the share key per share), and the
//! copies received from others, each a stego PNG with its rights embedded and the image hidden
//! in it sealed under the share key. The viewer's share keys live apart from the copies, in a
//! private `keys.json`, so a copied stego file alone reveals nothing. Saved in the data
//! folder, atomically.

use crate::store::{write_atomic, Store};
use common::auth::{shared_image_aad, RightsFields};
use common::crypto::{self, Key};
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
    /// The share key the cloud issued when the image was delivered (hex; empty: none yet).
    #[serde(default)]
    pub key: String,
    /// The cloud's ticket for that key (the key sealed for the viewer; hex; empty: none yet).
    #[serde(default)]
    pub ticket: String,
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
        let s = self.shares.entry(share_key(viewer, image_id)).or_insert(Share {
            views,
            version: 0,
            key: String::new(),
            ticket: String::new(),
        });
        s.views = views;
        s.version += 1;
        s.version
    }

    /// Records the share key of a delivered image and the viewer's ticket for it.
    pub fn set_key(&mut self, viewer: &str, image_id: &str, key: &Key, ticket: &str) {
        if let Some(s) = self.shares.get_mut(&share_key(viewer, image_id)) {
            s.key = crypto::to_hex(key);
            s.ticket = ticket.into();
        }
    }

    /// The share key of `viewer`'s copy of `image_id` and its ticket, if both are kept.
    pub fn key_and_ticket(&self, viewer: &str, image_id: &str) -> Option<(Key, String)> {
        let s = self.shares.get(&share_key(viewer, image_id))?;
        let key = crypto::key_from_hex(&s.key)?;
        (!s.ticket.is_empty()).then(|| (key, s.ticket.clone()))
    }

    /// The share key of `viewer`'s copy of `image_id`, if it was delivered.
    pub fn key(&self, viewer: &str, image_id: &str) -> Option<Key> {
        self.shares.get(&share_key(viewer, image_id)).and_then(|s| crypto::key_from_hex(&s.key))
    }

    /// Who holds which image: (viewer, image, share).
    pub fn holders(&self) -> Vec<(String, String, Share)> {
        self.shares
            .iter()
            .filter_map(|(k, s)| k.split_once('/').map(|(v, i)| (v.to_string(), i.to_string(), s.clone())))
            .collect()
    }
}

/// The viewer's share keys, `owner/image` → key (hex), saved as the private `keys.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ViewerKeys {
    keys: BTreeMap<String, String>,
}

impl ViewerKeys {
    fn path(store: &Store) -> PathBuf {
        store.root().join("keys.json")
    }

    /// Loads `keys.json` (missing: empty).
    pub fn load(store: &Store) -> Result<ViewerKeys, String> {
        let path = Self::path(store);
        match fs::read(&path) {
            Err(_) => Ok(ViewerKeys::default()),
            Ok(b) => serde_json::from_slice(&b).map_err(|e| format!("{} is corrupt: {e}", path.display())),
        }
    }

    fn save(&self, store: &Store) -> Result<(), String> {
        let bytes = serde_json::to_vec_pretty(self).map_err(|e| e.to_string())?;
        write_atomic(&Self::path(store), &bytes, true)
    }

    /// The key of `owner`'s `image_id`.
    pub fn get(&self, owner: &str, image_id: &str) -> Option<Key> {
        self.keys.get(&share_key(owner, image_id)).and_then(|k| crypto::key_from_hex(k))
    }
}

/// The key of `owner`'s `image_id`, from `keys.json`.
pub fn viewer_key(store: &Store, owner: &str, image_id: &str) -> Result<Key, String> {
    ViewerKeys::load(store)?.get(owner, image_id).ok_or(format!("no key for {owner}/{image_id}"))
}

fn set_viewer_key(store: &Store, owner: &str, image_id: &str, key: Option<&Key>) -> Result<(), String> {
    let mut keys = ViewerKeys::load(store)?;
    let k = share_key(owner, image_id);
    match key {
        Some(key) => keys.keys.insert(k, crypto::to_hex(key)),
        None => keys.keys.remove(&k),
    };
    keys.save(store)
}

/// The received-copies folder.
fn received_dir(store: &Store) -> PathBuf {
    store.root().join("received")
}

/// Where the copy of `owner`'s `image_id` is kept (one folder per owner: names cannot collide).
pub fn received_path(store: &Store, owner: &str, image_id: &str) -> PathBuf {
    received_dir(store).join(owner).join(format!("{image_id}.png"))
}

/// Every received copy with its rights (unreadable files are skipped).
pub fn received(store: &Store) -> Vec<Received> {
    let files = fs::read_dir(received_dir(store))
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .flat_map(|d| fs::read_dir(d.path()).into_iter().flatten().filter_map(|e| e.ok()));
    let mut out: Vec<Received> = files
        .filter_map(|e| {
            let path = e.path();
            let bytes = fs::read(&path).ok()?;
            let rights = rights::read(&bytes).ok()?;
            Some(Received { rights, path })
        })
        .collect();
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

/// What the owner's authenticated `Deliver` message said about the image that follows.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The owner.
    pub owner: String,
    /// The image.
    pub image_id: String,
    /// The views granted.
    pub views: u32,
    /// The version of the grant.
    pub version: u64,
    /// The share key (from the cloud's ticket).
    pub key: Key,
}

/// Stores a delivered copy after checking that the hidden image opens under the share key;
/// the rights written into the copy are the ones the owner's authenticated message announced.
pub fn store_delivery(store: &Store, me: &str, d: &Delivery, png: &[u8]) -> Result<Rights, String> {
    let from = &d.owner;
    check_user(from)?;
    check_image_id(&d.image_id)?;
    let hidden =
        common::stego::reveal(png).map_err(|e| format!("the image from {from} hides nothing readable: {e}"))?;
    crypto::open(&d.key, &shared_image_aad(from, me, &d.image_id), &hidden)
        .map_err(|e| format!("the image from {from} was modified or sealed for someone else: {e}"))?;
    let r = Rights {
        owner: from.clone(),
        viewer: me.into(),
        image_id: d.image_id.clone(),
        views: d.views,
        version: d.version,
    };
    let copy = rights::embed(png, &r).map_err(|e| format!("the image from {from} is not a PNG: {e}"))?;
    let path = received_path(store, from, &d.image_id);
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(|e| e.to_string())?;
    }
    if let Ok(old) =
        fs::read(&path).map_err(|e| e.to_string()).and_then(|b| rights::read(&b).map_err(|e| e.to_string()))
    {
        if old.version >= r.version {
            return Ok(old); // an older or repeated delivery: keep what we have
        }
    }
    set_viewer_key(store, from, &d.image_id, Some(&d.key))?;
    write_atomic(&path, &copy, true)?;
    Ok(r)
}

/// Applies the owner's new views (`0`: delete the copy) if `mac` proves the owner sent them.
/// Returns what happened, or None if the update is not newer than what the copy carries (or
/// there is no copy).
pub fn apply_rights(
    store: &Store,
    me: &str,
    owner: &str,
    image_id: &str,
    views: u32,
    version: u64,
    mac: &str,
) -> Result<Option<String>, String> {
    check_user(owner)?;
    check_image_id(image_id)?;
    let path = received_path(store, owner, image_id);
    let Ok(png) = fs::read(&path) else { return Ok(None) };
    let key = viewer_key(store, owner, image_id)?;
    RightsFields { kind: "grant", owner, viewer: me, image_id, views, version }.check(&key, mac)?;
    let mut r = rights::read(&png).map_err(|e| e.to_string())?;
    if version <= r.version {
        return Ok(None);
    }
    if views == 0 {
        fs::remove_file(&path).map_err(|e| format!("cannot delete {}: {e}", path.display()))?;
        set_viewer_key(store, owner, image_id, None)?;
        return Ok(Some(format!("{owner} revoked {image_id}: the copy is deleted")));
    }
    r.views = views;
    r.version = version;
    let updated = rights::embed(&png, &r).map_err(|e| e.to_string())?;
    write_atomic(&path, &updated, true)?;
    Ok(Some(format!("{owner} set {image_id} to {views} views")))
}

/// One view: if views remain and the hidden image opens under the share key, returns it and
/// the views left after this one (the decrement is on disk before the image is returned); at
/// 0, returns None. A modified copy is an error and costs no view.
pub fn view(store: &Store, copy: &Received) -> Result<Option<(Vec<u8>, u32)>, String> {
    let png = fs::read(&copy.path).map_err(|e| format!("cannot read {}: {e}", copy.path.display()))?;
    let mut r = rights::read(&png).map_err(|e| e.to_string())?;
    if r.views == 0 {
        return Ok(None);
    }
    let key = viewer_key(store, &r.owner, &r.image_id)?;
    let hidden =
        common::stego::reveal(&png).map_err(|e| format!("{} is damaged ({e}): refusing to show it", r.image_id))?;
    let image = crypto::open(&key, &shared_image_aad(&r.owner, &r.viewer, &r.image_id), &hidden)
        .map_err(|_| format!("{} was modified: refusing to show it", r.image_id))?;
    r.views -= 1;
    let updated = rights::embed(&png, &r).map_err(|e| e.to_string())?;
    write_atomic(&copy.path, &updated, true)?;
    Ok(Some((image, r.views)))
}
