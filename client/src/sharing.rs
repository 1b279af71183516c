//! What a user shares and holds: requests waiting for the owner's answer, the views the owner
//! last granted to each viewer (with the cloud's grant number and the share key per share), and
//! the copies received from others, each a stego PNG with its rights embedded (for display) and
//! the image hidden in it sealed under the share's image key, which the cloud hands out once per
//! view (`views.rs` in common). What the viewer keeps per copy — the rights key that checks the
//! owner's messages and the digest of the sealed image — lives apart, in a private
//! `shares.json`; views leased for offline use in `leases.json`. Saved in the data folder,
//! atomically.

use crate::store::{write_atomic, Store};
use crate::usage::plural;
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

impl Request {
    /// What is asked, as the owner reads it: `bob asks for Storm with 2 views`, or for a viewer
    /// who holds a copy already `bob asks for 2 more views of Storm`.
    pub fn describe(&self) -> String {
        match self.more {
            true => format!("{} asks for {} of {}", self.from, plural(self.views, "more view"), self.image_id),
            false => format!("{} asks for {} with {}", self.from, self.image_id, plural(self.views, "view")),
        }
    }
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

    /// Records what the cloud answered a grant: the views left and the grant's number.
    pub fn record_grant(&mut self, viewer: &str, image_id: &str, views: u32, grant: u64) {
        let s = self.shares.entry(share_key(viewer, image_id)).or_insert(Share {
            views,
            version: 0,
            key: String::new(),
            ticket: String::new(),
        });
        s.views = views;
        s.version = grant;
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

/// What the viewer keeps for one received copy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Held {
    /// The share's rights key (hex): checks the owner's rights messages.
    pub rights: String,
    /// SHA-256 of the sealed image hidden in the copy (hex), as the owner's tagged delivery said.
    pub digest: String,
}

/// The viewer's keys per copy, `owner/image` → [`Held`], saved as the private `shares.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ViewerKeys {
    keys: BTreeMap<String, Held>,
}

/// Loads a JSON file of the data folder (missing: the default).
fn load_json<T: Default + for<'de> Deserialize<'de>>(path: &std::path::Path) -> Result<T, String> {
    match fs::read(path) {
        Err(_) => Ok(T::default()),
        Ok(b) => serde_json::from_slice(&b).map_err(|e| format!("{} is corrupt: {e}", path.display())),
    }
}

/// Saves a JSON file of the data folder atomically, owner-only.
fn save_json<T: Serialize>(path: &std::path::Path, value: &T) -> Result<(), String> {
    let bytes = serde_json::to_vec_pretty(value).map_err(|e| e.to_string())?;
    write_atomic(path, &bytes, true)
}

impl ViewerKeys {
    fn path(store: &Store) -> PathBuf {
        store.root().join("shares.json")
    }

    /// Loads `shares.json` (missing: empty).
    pub fn load(store: &Store) -> Result<ViewerKeys, String> {
        load_json(&Self::path(store))
    }

    /// What is kept for `owner`'s `image_id`.
    pub fn get(&self, owner: &str, image_id: &str) -> Option<&Held> {
        self.keys.get(&share_key(owner, image_id))
    }
}

/// The rights key of `owner`'s `image_id`, from `shares.json`.
pub fn viewer_key(store: &Store, owner: &str, image_id: &str) -> Result<Key, String> {
    ViewerKeys::load(store)?
        .get(owner, image_id)
        .and_then(|h| crypto::key_from_hex(&h.rights))
        .ok_or(format!("no key for {owner}/{image_id}"))
}

fn set_viewer_key(store: &Store, owner: &str, image_id: &str, held: Option<Held>) -> Result<(), String> {
    let mut keys = ViewerKeys::load(store)?;
    let k = share_key(owner, image_id);
    match held {
        Some(h) => keys.keys.insert(k, h),
        None => keys.keys.remove(&k),
    };
    save_json(&ViewerKeys::path(store), &keys)
}

/// Views taken from the cloud for offline use: the image key, how many are left, until when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// The share's image key (hex).
    pub key: String,
    /// Views left in the lease.
    pub views: u32,
    /// When it ends (ms since the Unix epoch, this machine's clock).
    pub until_ms: u64,
}

/// The leases, `owner/image` → [`Lease`], saved as the private `leases.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Leases {
    leases: BTreeMap<String, Lease>,
}

impl Leases {
    fn path(store: &Store) -> PathBuf {
        store.root().join("leases.json")
    }

    /// Loads `leases.json` (missing: empty), dropping the leases that ended.
    pub fn load(store: &Store, now_ms: u64) -> Result<Leases, String> {
        let mut l: Leases = load_json(&Self::path(store))?;
        l.leases.retain(|_, x| x.until_ms > now_ms && x.views > 0);
        Ok(l)
    }

    /// Saves `leases.json`.
    pub fn save(&self, store: &Store) -> Result<(), String> {
        save_json(&Self::path(store), self)
    }

    /// The lease on `owner`'s `image_id`, if any.
    pub fn get(&self, owner: &str, image_id: &str) -> Option<&Lease> {
        self.leases.get(&share_key(owner, image_id))
    }

    /// Adds one leased view (the image key of the share, valid until `until_ms`).
    pub fn add(&mut self, owner: &str, image_id: &str, key: &Key, until_ms: u64) {
        let l = self.leases.entry(share_key(owner, image_id)).or_insert(Lease {
            key: crypto::to_hex(key),
            views: 0,
            until_ms,
        });
        l.key = crypto::to_hex(key);
        l.views += 1;
        l.until_ms = l.until_ms.min(until_ms);
    }

    /// Takes one leased view of `owner`'s `image_id`: its image key and the views left in the lease.
    pub fn take(&mut self, owner: &str, image_id: &str) -> Option<(Key, u32)> {
        let k = share_key(owner, image_id);
        let l = self.leases.get_mut(&k)?;
        let key = crypto::key_from_hex(&l.key)?;
        l.views = l.views.saturating_sub(1);
        let left = l.views;
        if left == 0 {
            self.leases.remove(&k);
        }
        Some((key, left))
    }

    /// Forgets the lease on `owner`'s `image_id` (a revoke).
    pub fn remove(&mut self, owner: &str, image_id: &str) {
        self.leases.remove(&share_key(owner, image_id));
    }
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
    /// The share's rights key (from the cloud's ticket).
    pub key: Key,
    /// SHA-256 of the sealed image (hex), as the owner's tagged message said.
    pub digest: String,
}

/// Stores a delivered copy after checking that the sealed image hidden in it is the one the
/// owner's authenticated message announced (its digest); the rights written into the copy are
/// the ones that message announced. (The viewer cannot open the image: the cloud hands out its
/// key once per view.)
pub fn store_delivery(store: &Store, me: &str, d: &Delivery, png: &[u8]) -> Result<Rights, String> {
    let from = &d.owner;
    check_user(from)?;
    check_image_id(&d.image_id)?;
    let hidden =
        common::stego::reveal(png).map_err(|e| format!("the image from {from} hides nothing readable: {e}"))?;
    if crypto::sha256_hex(&hidden) != d.digest {
        return Err(format!("the image from {from} is not the one {from} announced (modified on the way?)"));
    }
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
    let held = Held { rights: crypto::to_hex(&d.key), digest: d.digest.clone() };
    set_viewer_key(store, from, &d.image_id, Some(held))?;
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
        let mut leases = Leases::load(store, 0)?;
        leases.remove(owner, image_id);
        leases.save(store)?;
        return Ok(Some(format!("{owner} revoked {image_id}: the copy is deleted")));
    }
    r.views = views;
    r.version = version;
    let updated = rights::embed(&png, &r).map_err(|e| e.to_string())?;
    write_atomic(&path, &updated, true)?;
    Ok(Some(format!("{owner} set {image_id} to {}", plural(views, "view"))))
}

/// The sealed image hidden in a copy, checked against the digest its owner announced, so a
/// damaged or modified copy is refused before a view is spent on it.
pub fn sealed_image(store: &Store, copy: &Received) -> Result<Vec<u8>, String> {
    let r = &copy.rights;
    let png = fs::read(&copy.path).map_err(|e| format!("cannot read {}: {e}", copy.path.display()))?;
    let hidden =
        common::stego::reveal(&png).map_err(|e| format!("{} is damaged ({e}): refusing to show it", r.image_id))?;
    let keys = ViewerKeys::load(store)?;
    let held = keys.get(&r.owner, &r.image_id).ok_or(format!("no key for {}/{}", r.owner, r.image_id))?;
    if crypto::sha256_hex(&hidden) != held.digest {
        return Err(format!("{} was modified: refusing to show it", r.image_id));
    }
    Ok(hidden)
}

/// Opens the sealed image of a copy with the share's image key (from the cloud or a lease).
pub fn open_image(copy: &Received, image_key: &Key, sealed: &[u8]) -> Result<Vec<u8>, String> {
    let r = &copy.rights;
    crypto::open(image_key, &shared_image_aad(&r.owner, &r.viewer, &r.image_id), sealed)
        .map_err(|_| format!("{} does not open with the key the cloud sent: refusing to show it", r.image_id))
}

/// Writes the views left (as the cloud counted them) into the copy's rights, for display.
pub fn show_views_left(copy: &Received, left: u32) -> Result<(), String> {
    let png = fs::read(&copy.path).map_err(|e| format!("cannot read {}: {e}", copy.path.display()))?;
    let mut r = rights::read(&png).map_err(|e| e.to_string())?;
    if r.views == left {
        return Ok(());
    }
    r.views = left;
    let updated = rights::embed(&png, &r).map_err(|e| e.to_string())?;
    write_atomic(&copy.path, &updated, true)
}
