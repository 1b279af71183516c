//! Views as the cloud counts them (see `common::views`): `view` spends one slot of the share
//! in the cloud and receives the image key sealed for this attempt's nonce, opens the hidden
//! image in memory and shows it — drawn in the terminal, or handed to `$IMAGE_VIEWER` through
//! an owner-only file removed as soon as the viewer program has opened it. `lease` takes views
//! for offline use, counted by the cloud when taken. Nothing here writes the plaintext to a
//! file that outlives the view.

use crate::commands::Session;
use crate::sharing::{self, Leases, Received};
use common::auth::wall_ms;
use common::crypto::{self, Key, Purpose};
use common::protocol::{Answer, Auth, Op, RequestId, ViewAnswer};
use common::views::{self, LeasePolicy};
use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Most view requests one `view` makes while looking for the next free slot.
const MAX_SLOT_TRIES: usize = 32;

/// Longest wait for `$IMAGE_VIEWER` to open the file before it is removed anyway.
const VIEWER_OPEN_WAIT: Duration = Duration::from_secs(10);

/// What the prompt remembers between views (in memory only).
#[derive(Debug, Default)]
pub struct ViewState {
    /// The next slot to try, per share (`owner/image`): a hint; a wrong one costs a round trip.
    next: HashMap<String, u32>,
    /// The nonce of each slot asked for in this session: asking again for a slot whose answer was
    /// lost reuses it, so the answer the cloud kept still opens.
    nonces: HashMap<RequestId, String>,
}

/// The error when the cloud cannot be asked for a view.
pub const NEEDS_CLOUD: &str = "views are counted by the cloud, which is unreachable; try again when it is back";

/// What one view produced: the revealed image, in memory only.
pub struct Shown {
    /// The image's id.
    pub image_id: String,
    /// The hidden image's bytes.
    pub image: Vec<u8>,
    /// Views left.
    pub left: u32,
    /// How it was counted ("" by the cloud, or in an offline lease).
    pub how: &'static str,
}

/// What a view attempt gave.
pub enum Reveal {
    /// The image, one view spent.
    Image(Shown),
    /// No views left: the copy, whose cover is all there is to show.
    Cover(Received),
}

/// The error of a view with no views left.
pub fn no_views_left(image_id: &str) -> String {
    format!("no views left on {image_id}: only the cover is shown")
}

impl Session {
    /// One view of a received copy (the prompt's `view`).
    pub(crate) fn view(&mut self, what: &str, lines: &mut Vec<String>) -> Result<String, String> {
        let shown = match self.reveal(what)? {
            Reveal::Image(shown) => shown,
            Reveal::Cover(copy) => {
                self.draw_cover(&copy, lines);
                return Err(no_views_left(&copy.rights.image_id));
            }
        };
        self.show(&shown.image_id, &shown.image, lines)?;
        let digest = crypto::sha256_hex(&shown.image);
        let left = crate::usage::plural(shown.left, "view");
        Ok(format!("{} revealed ({left} left{}); sha256 {digest}", shown.image_id, shown.how))
    }

    /// Spends one view of a received copy (from an offline lease, or a slot in the cloud) and
    /// opens the hidden image in memory; with no views left, the copy (whose cover is all that
    /// may be shown). Used by `view` and by the user's page.
    pub fn reveal(&mut self, what: &str) -> Result<Reveal, String> {
        let copy = sharing::find_received(&self.store, what)?;
        // A damaged or modified copy is refused before a view is spent on it.
        let sealed = sharing::sealed_image(&self.store, &copy)?;
        let (owner, image_id) = (copy.rights.owner.clone(), copy.rights.image_id.clone());
        let mut leases = Leases::load(&self.store, wall_ms())?;
        let (image, left, how) = match leases.take(&owner, &image_id) {
            Some((key, left)) => {
                // The lease is spent on disk before the image is shown.
                leases.save(&self.store)?;
                (sharing::open_image(&copy, &key, &sealed)?, left, " in your offline lease")
            }
            None => match self.cloud_view(&owner, &image_id, false)? {
                (a, Some(key)) => {
                    let _ = sharing::show_views_left(&copy, a.left);
                    (sharing::open_image(&copy, &key, &sealed)?, a.left, "")
                }
                (a, None) => {
                    let _ = sharing::show_views_left(&copy, a.left);
                    return Ok(Reveal::Cover(copy));
                }
            },
        };
        Ok(Reveal::Image(Shown { image_id, image, left, how }))
    }

    /// Takes `n` views of a received copy for offline use (the prompt's `lease`).
    pub(crate) fn lease(&mut self, what: &str, n: u32) -> Result<String, String> {
        let copy = sharing::find_received(&self.store, what)?;
        sharing::sealed_image(&self.store, &copy)?;
        let (owner, image_id) = (copy.rights.owner.clone(), copy.rights.image_id.clone());
        let (policy, mut left) = self.cloud_views(&owner, &image_id)?;
        if policy.views == 0 {
            return Err(format!("{owner} allows no offline views of {image_id}"));
        }
        let mut until = u64::MAX;
        let mut taken = 0;
        while taken < n.min(policy.views) && left > 0 {
            let (a, key) = self.cloud_view(&owner, &image_id, true)?;
            left = a.left;
            let Some(key) = key.filter(|_| a.lease_secs > 0) else { break };
            until = until.min(wall_ms() + a.lease_secs as u64 * 1000);
            let mut leases = Leases::load(&self.store, wall_ms())?;
            leases.add(&owner, &image_id, &key, until);
            leases.save(&self.store)?;
            taken += 1;
        }
        let _ = sharing::show_views_left(&copy, left);
        if taken == 0 {
            return Err(format!("no views left on {image_id}"));
        }
        let secs = until.saturating_sub(wall_ms()) / 1000;
        let taken = crate::usage::plural(taken, "view");
        Ok(format!("{taken} of {image_id} leased for offline use for {secs} s ({left} more in the cloud)"))
    }

    /// The share as the cloud counts it: the leases allowed and the views left (and the next
    /// slot, remembered as this share's hint).
    fn cloud_views(&mut self, owner: &str, image_id: &str) -> Result<(LeasePolicy, u32), String> {
        let op = Op::Views {
            viewer: self.me.name.clone(),
            auth: Auth::default(),
            owner: owner.into(),
            image_id: image_id.into(),
        };
        let reply = self.cloud.lock().call(op, None).map_err(needs_cloud)?;
        let Answer::Views { left, next, lease, .. } = reply.reply.result? else {
            return Err("unexpected answer to a views request".into());
        };
        self.views.next.insert(format!("{owner}/{image_id}"), next);
        Ok((lease, left))
    }

    /// Spends one slot of `owner`'s `image_id` in the cloud: the answer, and the image key if a
    /// view was granted. Looks for the next free slot as the answers say.
    fn cloud_view(&mut self, owner: &str, image_id: &str, lease: bool) -> Result<(ViewAnswer, Option<Key>), String> {
        let me = self.me.name.clone();
        let share = format!("{owner}/{image_id}");
        let mut slot = self.views.next.get(&share).copied().unwrap_or(1);
        for _ in 0..MAX_SLOT_TRIES {
            let rid = views::slot_rid(owner, &me, image_id, slot);
            let nonce = self.views.nonces.entry(rid).or_insert_with(views::new_nonce).clone();
            let op = Op::View {
                viewer: me.clone(),
                auth: Auth::default(),
                owner: owner.into(),
                image_id: image_id.into(),
                slot,
                nonce: nonce.clone(),
                lease,
            };
            let reply = self.cloud.lock().call_as(rid, op).map_err(needs_cloud)?;
            let Answer::Viewed(a) = reply.reply.result? else {
                return Err("unexpected answer to a view".into());
            };
            if a.nonce != nonce {
                // The cloud's answer to an earlier attempt at this slot (whose nonce is gone):
                // that slot is used, whatever the answer holds.
                slot = (slot + 1).max(a.next);
                continue;
            }
            self.views.next.insert(share.clone(), a.next);
            match &a.key {
                Some(sealed) => {
                    let wrap = views::view_wrap_key(&self.me.key(Purpose::Wrap), &nonce);
                    let sealed = crypto::from_hex(sealed).ok_or("malformed key in the view's answer")?;
                    let key: Key = crypto::open(&wrap, &views::view_aad(owner, &me, image_id, slot), &sealed)
                        .map_err(|_| "the view's key did not come from the cloud".to_string())?
                        .try_into()
                        .map_err(|_| "the view's key has the wrong length".to_string())?;
                    self.views.nonces.remove(&rid);
                    return Ok((a, Some(key)));
                }
                // The slot was used before (not by this attempt): the next one.
                None if !lease && a.left > 0 && a.next > slot => slot = a.next,
                None => return Ok((a, None)),
            }
        }
        Err(format!("the cloud kept pointing past slot {slot} of {owner}/{image_id}; try again"))
    }

    /// Shows a revealed image from memory: drawn in colour on a terminal, and handed to
    /// `$IMAGE_VIEWER` if set.
    fn show(&self, image_id: &str, image: &[u8], lines: &mut Vec<String>) -> Result<(), String> {
        if std::io::stdout().is_terminal() {
            if let Ok(img) = common::stego::decode_image(image) {
                lines.push(draw(&img));
            }
        }
        if let Some(viewer) = std::env::var_os("IMAGE_VIEWER") {
            let path = self.store.root().join("tmp").join(format!("view-{image_id}.{}", extension(image)));
            hand_to_viewer(viewer, path, image)?;
        }
        Ok(())
    }

    fn draw_cover(&self, copy: &Received, lines: &mut Vec<String>) {
        if !std::io::stdout().is_terminal() {
            return;
        }
        let cover = std::fs::read(&copy.path).ok().and_then(|b| common::stego::decode_image(&b).ok());
        if let Some(img) = cover {
            lines.push(draw(&img));
        }
    }
}

/// `img` drawn as large as the terminal shows it whole, with room for the command's line and
/// the prompt below.
fn draw(img: &image::DynamicImage) -> String {
    let (cols, rows) = crate::notice::size();
    let lines = u32::from(rows).saturating_sub(3).max(4);
    let cols = common::preview::fit_columns(img.width(), img.height(), u32::from(cols), lines);
    common::preview::render_ansi(img, cols)
}

/// The SHA-256 (hex) a `view`'s `ok:` line reports for the revealed image, so scripts and
/// tests can check it byte for byte without the image ever being written to a file.
pub fn revealed_sha256(line: &str) -> Option<&str> {
    line.rsplit_once("; sha256 ").map(|(_, d)| d.trim()).filter(|d| d.len() == 64)
}

/// True if a `view`'s `ok:` line reports exactly `image`.
pub fn revealed_is(line: &str, image: &[u8]) -> bool {
    revealed_sha256(line) == Some(crypto::sha256_hex(image).as_str())
}

fn needs_cloud(e: String) -> String {
    if e.starts_with(crate::cloud::UNREACHABLE) {
        NEEDS_CLOUD.to_string()
    } else {
        e
    }
}

fn extension(image: &[u8]) -> &'static str {
    image::guess_format(image).ok().and_then(|f| f.extensions_str().first().copied()).unwrap_or("img")
}

/// Writes the image to an owner-only file, starts `viewer` on it and removes the file as soon as
/// the viewer has it open (or has exited, or after [`VIEWER_OPEN_WAIT`]). A viewer program can
/// still keep what it read: that is the screen-capture limit every viewer has.
fn hand_to_viewer(viewer: std::ffi::OsString, path: PathBuf, image: &[u8]) -> Result<(), String> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    }
    crate::store::write_atomic(&path, image, true)?;
    let path = path.canonicalize().map_err(|e| e.to_string())?;
    let child = std::process::Command::new(&viewer).arg(&path).spawn();
    let Ok(mut child) = child else {
        let _ = std::fs::remove_file(&path);
        return Err(format!("cannot start {}", viewer.to_string_lossy()));
    };
    std::thread::spawn(move || {
        let started = Instant::now();
        while started.elapsed() < VIEWER_OPEN_WAIT {
            if has_open(child.id(), &path) || !matches!(child.try_wait(), Ok(None)) {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = std::fs::remove_file(&path);
        let _ = child.wait();
    });
    Ok(())
}

/// True if process `pid` holds `path` open (Linux: its `/proc/PID/fd` links).
fn has_open(pid: u32, path: &std::path::Path) -> bool {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else { return false };
    fds.filter_map(|e| e.ok()).any(|e| std::fs::read_link(e.path()).is_ok_and(|p| p == path))
}
