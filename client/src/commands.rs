//! The prompt: a signed-in session and its commands. Every command prints its output and ends
//! with exactly one line starting `ok:` or `error:`, so scripts can pipe commands in.

use crate::cloud::Cloud;
use crate::engine::{Command, Engine, EngineCtx};
use crate::sharing::{self, Sharing};
use crate::store::{Identity, Store};
use crate::usage::plural;
use common::auth::{own_image_aad, share_aad, shared_image_aad, RightsFields};
use common::config::ClusterConfig;
use common::crypto::{self, Key, Purpose};
use common::protocol::{Answer, Auth, Op, PeerBody, UserInfo};
use common::views::{self, LeasePolicy};
use parking_lot::Mutex;
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// How long the prompt waits for a peer operation.
pub const PEER_WAIT: Duration = Duration::from_secs(30);

/// Most pages of online users `peers` asks for.
pub const MAX_PAGES: usize = 1_000;

/// Times a transport failure of `encrypt` is retried as a whole new request.
pub const ENCRYPT_TRIES: u32 = 3;

/// The prompt's help text.
pub const HELP: &str = "commands:
  whoami            who you are, as the directory knows you
  peers             online users, their address and shared images
  encrypt PATH      hide an image in a cover (done by the cloud) and share it
  images            your own images
  gallery USER      previews of USER's shared images (asked peer to peer)
  request USER IMAGE VIEWS   ask USER for IMAGE with VIEWS views
  requests          requests waiting for your answer
  approve N [VIEWS] send the image of request N (optionally with another number of views)
  reject N          refuse request N
  received          images others shared with you, with views left
  view IMAGE        reveal IMAGE (IMAGE or OWNER/IMAGE) once: the cloud counts one view
  lease IMAGE N     take N views of IMAGE for offline use (if its owner allows it)
  grant USER IMAGE VIEWS     set USER's views on your IMAGE in the cloud (0 revokes: their copy is deleted)
  offline USER IMAGE N MINUTES   let USER take up to N views of IMAGE offline, each lease for MINUTES
  more USER IMAGE VIEWS      ask USER for VIEWS more views of IMAGE
  shared            who holds which of your images, with the views last granted
  stats             request counters of this client
  web               the address of your page (with --web ADDR)
  help              this text
  quit              sign out and leave";

/// A signed-in client.
pub struct Session {
    /// The cloud link (shared with the peer engine).
    pub cloud: Arc<Mutex<Cloud>>,
    /// The data folder.
    pub store: Store,
    /// Who we are.
    pub me: Identity,
    /// The peer engine.
    pub engine: Engine,
    /// Owner-side sharing state (shared with the engine).
    pub sharing: Arc<Mutex<Sharing>>,
    /// What the prompt remembers between views.
    pub(crate) views: crate::viewing::ViewState,
    /// True when this run registered the name (its first run).
    pub registered: bool,
}

/// What a command printed and whether the prompt should end.
pub struct Outcome {
    /// Lines to print; the last starts with `ok:` or `error:`.
    pub lines: Vec<String>,
    /// True after `quit`.
    pub quit: bool,
}

fn answer(op: Op, cloud: &mut Cloud) -> Result<Answer, String> {
    let r = cloud.call(op, None)?;
    r.reply.result
}

/// Most views one command sets or asks for.
pub const MAX_VIEWS: u32 = 1_000_000;

fn parse_views(s: &str) -> Result<u32, String> {
    s.parse::<u32>().ok().filter(|v| *v <= MAX_VIEWS).ok_or(format!("{s:?} is not a number of views"))
}

/// Views asked for or approved: at least one (`grant USER IMAGE 0` is how views are taken away).
fn parse_asked(s: &str) -> Result<u32, String> {
    parse_views(s)
        .ok()
        .filter(|v| *v > 0)
        .ok_or(format!("{s:?} is not a number of views to ask for or approve (1 to {MAX_VIEWS})"))
}

impl Session {
    /// Connects, registers on first run (saving the secret), and signs in.
    pub fn start(cfg: &ClusterConfig, name: &str, data: PathBuf) -> Result<Session, String> {
        common::names::check_user(name)?;
        let store = Store::open(data)?;
        let mut cloud = Cloud::connect(cfg, None)?;
        let mut meter = crate::progress::Meter::default();
        cloud.progress = Some(Box::new(move |what, done, total| meter.update(what, done, total)));
        let mut registered = false;
        let me = match store.identity()? {
            Some(id) if id.name == name => id,
            Some(id) => return Err(format!("the data folder belongs to {}, not {name}", id.name)),
            None => match answer(Op::Register { name: name.into() }, &mut cloud)? {
                Answer::Registered { user_id, name, secret } => {
                    let id = Identity { name, user_id, secret };
                    store.save_identity(&id)?;
                    registered = true;
                    id
                }
                other => return Err(format!("unexpected answer to register: {other:?}")),
            },
        };
        cloud.set_secret(me.secret_bytes());
        if let Err(e) = cloud.keep_partials(store.root().join("partial").join("cloud")) {
            eprintln!("partials: {e}; interrupted downloads will start again from zero");
        }
        match answer(Op::SignIn { name: me.name.clone(), auth: Auth::default() }, &mut cloud)? {
            Answer::SignedIn { .. } => {}
            other => return Err(format!("unexpected answer to sign-in: {other:?}")),
        }
        let incoming = cloud.take_peer_rx().ok_or("peer traffic already taken")?;
        let sock = cloud.socket()?;
        let transfer = cfg.transfer();
        let cloud = Arc::new(Mutex::new(cloud));
        let sharing = Arc::new(Mutex::new(Sharing::load(&store)?));
        let ctx = EngineCtx {
            me: me.clone(),
            store: store.clone(),
            cloud: cloud.clone(),
            sharing: sharing.clone(),
            sock,
            incoming,
            transfer,
        };
        let engine = Engine::start(ctx)?;
        crate::watch::spawn(cloud.clone(), me.clone())?;
        let mut session = Session { cloud, store, me, engine, sharing, views: Default::default(), registered };
        session.pull_inbox()?;
        Ok(session)
    }

    /// The first line of the prompt: signed in, and on the first run that the name was registered.
    pub fn greeting(&self) -> String {
        let (name, id) = (&self.me.name, self.me.user_id);
        match self.registered {
            true => format!("ok: signed in as {name} (user {id}), registered just now (first run)"),
            false => format!("ok: signed in as {name} (user {id})"),
        }
    }

    /// Fetches what the cloud buffered for us while we were offline, applies it in order, and
    /// acknowledges it so every server drops it (the engine also does this every few seconds).
    pub fn pull_inbox(&mut self) -> Result<usize, String> {
        self.engine.ask(PEER_WAIT, |reply| Command::PullInbox { reply })
    }

    /// Runs one prompt line (its command in any case; the arguments keep theirs).
    // Long on purpose: the table of prompt commands, one arm each.
    pub fn run(&mut self, line: &str) -> Outcome {
        let command = line.split_whitespace().next().unwrap_or_default().to_lowercase();
        let mut words: Vec<&str> = line.split_whitespace().collect();
        if let Some(first) = words.first_mut() {
            *first = &command;
        }
        let mut lines = Vec::new();
        let result = match words.as_slice() {
            [] => return Outcome { lines, quit: false },
            ["help"] => {
                lines.push(HELP.to_string());
                Ok("help shown".to_string())
            }
            ["whoami"] => self.whoami(),
            ["peers"] => self.peers(&mut lines),
            ["images"] => {
                let imgs = self.store.images();
                for i in &imgs {
                    lines.push(format!("  {i}"));
                }
                Ok(plural(imgs.len(), "image"))
            }
            ["encrypt", path] => self.encrypt(Path::new(path)),
            ["gallery", user] => self.gallery(user, &mut lines),
            ["request", user, image, views] => parse_asked(views).and_then(|v| self.ask(user, image, v, false)),
            ["more", user, image, views] => parse_asked(views).and_then(|v| self.ask(user, image, v, true)),
            ["requests"] => {
                let reqs = self.sharing.lock().requests.clone();
                for r in &reqs {
                    lines.push(format!("  #{} {}", r.n, r.describe()));
                }
                Ok(plural(reqs.len(), "request"))
            }
            ["approve", n] => self.approve(n, None),
            ["approve", n, views] => parse_asked(views).and_then(|v| self.approve(n, Some(v))),
            ["reject", n] => self.reject(n),
            ["received"] => {
                let all = sharing::received(&self.store);
                for r in &all {
                    let left = plural(r.rights.views, "view");
                    lines.push(format!("  {}/{}  {left} left", r.rights.owner, r.rights.image_id));
                }
                Ok(plural(all.len(), "received image"))
            }
            ["view", image] => self.view(image, &mut lines),
            ["lease", image, n] => parse_views(n).and_then(|n| self.lease(image, n)),
            ["grant", user, image, views] => parse_views(views).and_then(|v| self.set_views(user, image, v, false)),
            ["offline", user, image, n, minutes] => parse_views(n)
                .and_then(|n| parse_views(minutes).map(|m| (n, m)))
                .and_then(|(n, m)| self.allow_offline(user, image, n, m)),
            ["shared"] => {
                let holders = self.sharing.lock().holders();
                for (viewer, image, s) in &holders {
                    lines.push(format!("  {image} → {viewer}: {} (version {})", plural(s.views, "view"), s.version));
                }
                Ok(plural(holders.len(), "share"))
            }
            ["stats"] => {
                let s = self.cloud.lock().stats().clone();
                Ok(format!(
                    "requests={} answered={} timed_out={} resends={} duplicate_replies={} handled_twice={}",
                    s.started, s.answered, s.timed_out, s.resends, s.duplicate_replies, s.handled_twice
                ))
            }
            ["web"] => crate::web::user::url()
                .map(|u| format!("web: {u}"))
                .ok_or_else(|| "no page: start the client with --web ADDR".to_string()),
            ["quit"] | ["exit"] => {
                self.sign_out();
                lines.push("ok: signed out, bye".into());
                return Outcome { lines, quit: true };
            }
            _ => Err(crate::usage::explain(HELP, &words)),
        };
        lines.push(match result {
            Ok(s) => format!("ok: {s}"),
            Err(e) => format!("error: {e}"),
        });
        Outcome { lines, quit: false }
    }

    /// Signs out (best effort: used on quit, end of input and Ctrl-C).
    pub fn sign_out(&mut self) {
        let op = Op::SignOut { name: self.me.name.clone(), auth: Auth::default() };
        let _ = answer(op, &mut self.cloud.lock());
    }

    fn lookup(&mut self, user: &str) -> Result<UserInfo, String> {
        common::names::check_user(user)?;
        match answer(Op::Lookup { name: user.into() }, &mut self.cloud.lock())? {
            Answer::User(u) => Ok(u),
            other => Err(format!("unexpected answer {other:?}")),
        }
    }

    fn online_addr(&mut self, user: &str) -> Result<Option<SocketAddr>, String> {
        let u = self.lookup(user)?;
        Ok(if u.online { u.addr } else { None })
    }

    fn gallery(&mut self, user: &str, lines: &mut Vec<String>) -> Result<String, String> {
        let addr = self.online_addr(user)?.ok_or(format!("{user} is offline"))?;
        let user_s = user.to_string();
        let items = self.engine.ask(PEER_WAIT, |reply| Command::Gallery { user: user_s, addr, reply })?;
        // Sharp once granted: the viewer holds a copy of the image.
        let granted: Vec<String> = sharing::received(&self.store)
            .into_iter()
            .filter(|r| r.rights.owner == user)
            .map(|r| r.rights.image_id)
            .collect();
        let tiles: Vec<common::preview::Tile> = items
            .iter()
            .map(|it| {
                let sharp = granted.contains(&it.image_id);
                let size = common::preview::original(&it.preview_png).map(|o| o.to_string());
                let image = common::stego::decode_image(&it.preview_png).ok();
                common::preview::Tile {
                    image: image.map(|i| if sharp { i } else { common::preview::blur(&i) }),
                    caption: vec![it.image_id.clone(), size.unwrap_or_else(|| "size not sent".into())],
                }
            })
            .collect();
        if std::io::stdout().is_terminal() {
            let (cols, _) = crate::notice::size();
            lines.push(common::preview::grid(&tiles, u32::from(cols)).trim_end().to_string());
        } else {
            lines.extend(tiles.iter().map(|t| format!("  {}", t.caption.join("  "))));
        }
        Ok(format!("{} in {user}'s gallery", crate::usage::plural(items.len(), "image")))
    }

    fn send_peer(&mut self, user: &str, body: PeerBody) -> Result<String, String> {
        let addr = self.online_addr(user)?;
        let user_s = user.to_string();
        self.engine.ask(PEER_WAIT, |reply| Command::Send { user: user_s, addr, body, reply })
    }

    fn ask(&mut self, user: &str, image: &str, views: u32, more: bool) -> Result<String, String> {
        common::names::check_image_id(image)?;
        if user == self.me.name {
            return Err("that is your own image".into());
        }
        let r = self.send_peer(user, PeerBody::ImageRequest { image_id: image.into(), views, more })?;
        Ok(format!("request sent: {r}"))
    }

    fn take_request(&mut self, n: &str) -> Result<sharing::Request, String> {
        let n: u32 = n.trim_start_matches('#').parse().map_err(|_| format!("{n:?} is not a request number"))?;
        let mut sh = self.sharing.lock();
        let r = sh.take_request(n).ok_or(format!("no request #{n} (see `requests`)"))?;
        sh.save(&self.store)?;
        Ok(r)
    }

    fn put_back(&mut self, r: sharing::Request) {
        let mut sh = self.sharing.lock();
        sh.requests.push(r);
        sh.requests.sort_by_key(|r| r.n);
        let _ = sh.save(&self.store);
    }

    fn approve(&mut self, n: &str, views: Option<u32>) -> Result<String, String> {
        let req = self.take_request(n)?;
        let views = views.unwrap_or(req.views);
        if req.more {
            return self.set_views(&req.from.clone(), &req.image_id.clone(), views, true);
        }
        let result = (|| {
            let addr = self.online_addr(&req.from)?.ok_or(format!(
                "{v} is offline: the photo goes peer to peer, so approve again when {v} is online (the request stays as #{n})",
                v = req.from,
                n = req.n
            ))?;
            let (viewer, image_id) = (req.from.clone(), req.image_id.clone());
            // The cloud keeps the share key: a re-approval (after a delivery that broke off)
            // gets the same key, so the copy is the same bytes and the delivery resumes.
            let (key, ticket) = self.share_key(&viewer, &image_id)?;
            let (png, digest) = self.sealed_copy(&viewer, &image_id, &key)?;
            let (left, grant) = self.cloud_grant(&viewer, &image_id, views, false, None)?;
            {
                let mut sh = self.sharing.lock();
                sh.record_grant(&viewer, &image_id, left, grant);
                sh.set_key(&viewer, &image_id, &key, &ticket);
                sh.save(&self.store)?;
            }
            // The rights travel in the tagged `Deliver` message; the viewer writes them into
            // its copy (so the image bytes stay the same from one grant to the next).
            let me = self.me.name.clone();
            let fields = RightsFields {
                kind: "deliver",
                owner: &me,
                viewer: &viewer,
                image_id: &image_id,
                views: left,
                version: grant,
            };
            let mac = fields.tag_with(&views::rights_key(&key), &digest);
            let body =
                PeerBody::Deliver { image_id, views: left, version: grant, transfer: 0, len: 0, ticket, digest, mac };
            self.engine.ask(PEER_WAIT, |reply| Command::Deliver { user: viewer, addr, body, png, reply })
        })();
        match result {
            Ok(r) => Ok(format!("{} sent to {} with {}: {r}", req.image_id, req.from, plural(views, "view"))),
            Err(e) => {
                self.put_back(req);
                Err(e)
            }
        }
    }

    /// Asks the cloud (the key distribution centre) for the key of sharing `image_id` with
    /// `viewer` (made at the first approval, kept by the cloud): returns the key (opened from the
    /// owner's copy) and the viewer's ticket (the share's rights key sealed for the viewer).
    fn share_key(&mut self, viewer: &str, image_id: &str) -> Result<(Key, String), String> {
        let op = Op::ShareKey {
            owner: self.me.name.clone(),
            auth: Auth::default(),
            viewer: viewer.into(),
            image_id: image_id.into(),
        };
        let Answer::ShareKey { for_owner, for_viewer } = answer(op, &mut self.cloud.lock())? else {
            return Err("unexpected answer to the share-key request".into());
        };
        let sealed = crypto::from_hex(&for_owner).ok_or("malformed share key")?;
        let key = crypto::open(&self.me.key(Purpose::Wrap), &share_aad(&self.me.name, viewer, image_id), &sealed)
            .map_err(|_| "the share key did not come from the cloud".to_string())?
            .try_into()
            .map_err(|_| "the share key has the wrong length".to_string())?;
        Ok((key, for_viewer))
    }

    /// Sets (or, with `add`, adds to) the views `viewer` has left in the cloud, and the offline
    /// leases allowed: returns the views left and the grant's number.
    fn cloud_grant(
        &mut self,
        viewer: &str,
        image_id: &str,
        views: u32,
        add: bool,
        lease: Option<LeasePolicy>,
    ) -> Result<(u32, u64), String> {
        let op = Op::Grant {
            owner: self.me.name.clone(),
            auth: Auth::default(),
            viewer: viewer.into(),
            image_id: image_id.into(),
            views,
            add,
            lease,
        };
        match answer(op, &mut self.cloud.lock())? {
            Answer::Granted { left, grant } => Ok((left, grant)),
            other => Err(format!("unexpected answer to a grant: {other:?}")),
        }
    }

    /// The owner's stego image of `image_id` with its hidden image re-sealed for `viewer`
    /// under the share's image key (same cover, same size: the sealed lengths are equal), and
    /// the digest of the sealed image.
    fn sealed_copy(&self, viewer: &str, image_id: &str, key: &Key) -> Result<(Vec<u8>, String), String> {
        let own =
            std::fs::read(self.store.image_path(image_id)).map_err(|_| format!("you have no image {image_id}"))?;
        let hidden = common::stego::reveal(&own).map_err(|e| format!("your copy of {image_id} is damaged: {e}"))?;
        let image = crypto::open(&self.me.key(Purpose::Own), &own_image_aad(&self.me.name), &hidden)
            .map_err(|_| format!("your copy of {image_id} was modified"))?;
        // Deterministic: a re-approval sends the same bytes, so an interrupted delivery resumes.
        let aad = shared_image_aad(&self.me.name, viewer, image_id);
        let sealed = crypto::seal_deterministic(&views::image_key(key), &aad, &image);
        let mut pixels = common::stego::decode_image(&own).map_err(|e| e.to_string())?.to_rgba8();
        common::stego::embed_in_place(&mut pixels, &sealed).map_err(|e| e.to_string())?;
        let png = common::stego::encode_png(&pixels).map_err(|e| e.to_string())?;
        Ok((png, crypto::sha256_hex(&sealed)))
    }

    fn reject(&mut self, n: &str) -> Result<String, String> {
        let req = self.take_request(n)?;
        let body = PeerBody::Rejected { image_id: req.image_id.clone(), reason: "the owner said no".into() };
        let r = self.send_peer(&req.from, body)?;
        Ok(format!("rejected: {r}"))
    }

    /// Sets (or adds to) `user`'s views of `image` in the cloud — where they are counted, so it
    /// holds at once, even against a viewer who is offline or keeps old files — then tells
    /// `user`'s client (directly, or queued for when it signs in) so its display follows.
    fn set_views(&mut self, user: &str, image: &str, views: u32, add: bool) -> Result<String, String> {
        common::names::check_user(user)?;
        common::names::check_image_id(image)?;
        if !self.store.images().iter().any(|i| i == image) {
            return Err(format!("you have no image {image}"));
        }
        let held = self.sharing.lock().key(user, image);
        let key = match held {
            Some(k) => k,
            None => self.share_key(user, image).map(|(k, _)| k)?,
        };
        let (left, grant) = self.cloud_grant(user, image, views, add, None)?;
        {
            let mut sh = self.sharing.lock();
            sh.record_grant(user, image, left, grant);
            sh.save(&self.store)?;
        }
        let cloud = match (left, add) {
            (0, _) => format!("revoked: the cloud refuses {user} any view of {image} from now on"),
            (n, true) => format!(
                "{} of {image} for {user}: {user} has {} left (counted by the cloud)",
                plural(views, "more view"),
                plural(n, "view")
            ),
            (n, false) => format!("the cloud counts {} of {image} left for {user}", plural(n, "view")),
        };
        let mac = RightsFields {
            kind: "grant",
            owner: &self.me.name,
            viewer: user,
            image_id: image,
            views: left,
            version: grant,
        }
        .tag(&views::rights_key(&key));
        let told = self.send_peer(user, PeerBody::Rights { image_id: image.into(), views: left, version: grant, mac });
        Ok(match (left, told) {
            (0, Ok(r)) => format!("{cloud}; {user}'s copy is deleted when {user}'s client hears of it: {r}"),
            (0, Err(e)) => format!("{cloud}; {user}'s copy will be deleted when {user}'s client hears of it ({e})"),
            (_, Ok(r)) => format!("{cloud}; {user}'s copy: {r}"),
            (_, Err(e)) => format!("{cloud}; {user}'s copy will show it later ({e})"),
        })
    }

    /// Lets `user` keep up to `n` views of `image` for offline use, for `minutes` (0 views: no
    /// more leases).
    fn allow_offline(&mut self, user: &str, image: &str, n: u32, minutes: u32) -> Result<String, String> {
        common::names::check_user(user)?;
        common::names::check_image_id(image)?;
        if n > views::MAX_LEASE_VIEWS || minutes.saturating_mul(60) > views::MAX_LEASE_SECS {
            return Err(format!(
                "at most {} views for at most {} minutes",
                views::MAX_LEASE_VIEWS,
                views::MAX_LEASE_SECS / 60
            ));
        }
        let lease = LeasePolicy { views: n, secs: minutes * 60 };
        let (left, _) = self.cloud_grant(user, image, 0, true, Some(lease))?;
        Ok(match n {
            0 => format!("{user} can no longer take views of {image} offline ({} left)", plural(left, "view")),
            n => format!(
                "{user} may take up to {n} of {} of {image} offline, each lease for {minutes} minutes",
                plural(left, "view")
            ),
        })
    }

    fn whoami(&mut self) -> Result<String, String> {
        match answer(Op::Lookup { name: self.me.name.clone() }, &mut self.cloud.lock())? {
            Answer::User(u) => Ok(format!(
                "{} (user {}) at {}, {}",
                u.name,
                u.user_id,
                u.addr.map(|a| a.to_string()).unwrap_or_else(|| "-".into()),
                if u.online { "online" } else { "offline" }
            )),
            other => Err(format!("unexpected answer {other:?}")),
        }
    }

    fn peers(&mut self, lines: &mut Vec<String>) -> Result<String, String> {
        let list = self.online_users()?;
        for u in &list {
            let addr = u.addr.map(|a| a.to_string()).unwrap_or_else(|| "-".into());
            let imgs = if u.images.is_empty() { "-".to_string() } else { u.images.join(", ") };
            lines.push(format!("  {:<16} {:<22} images: {imgs}", u.name, addr));
        }
        Ok(format!("{} online", list.len()))
    }

    /// Everyone online, by name: the cloud's pages one after the other (each starts after the
    /// last name of the one before), until it says no more follow.
    pub fn online_users(&mut self) -> Result<Vec<UserInfo>, String> {
        let mut all: Vec<UserInfo> = Vec::new();
        for _ in 0..MAX_PAGES {
            let after = all.last().map(|u| u.name.clone()).unwrap_or_default();
            let (users, more) = match answer(Op::ListOnline { after: Some(after.clone()) }, &mut self.cloud.lock())? {
                Answer::OnlinePage { users, more } => (users, more),
                other => return Err(format!("unexpected answer {other:?}")),
            };
            if users.first().is_some_and(|u| u.name <= after) || users.windows(2).any(|w| w[0].name >= w[1].name) {
                return Err("the cloud's pages of online users are out of order".into());
            }
            let stop = !more || users.is_empty();
            all.extend(users);
            if stop {
                return Ok(all);
            }
        }
        Err(format!("more than {MAX_PAGES} pages of online users"))
    }

    fn encrypt(&mut self, path: &Path) -> Result<String, String> {
        let meta = std::fs::metadata(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let image = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        if meta.len() != image.len() as u64 {
            return Err(format!("{} changed while reading", path.display()));
        }
        let preview = common::preview::preview_from_bytes(&image)
            .map_err(|e| format!("{} is not an image this client can read: {e}", path.display()))?;
        // Only the sealed image leaves this machine, and only the sealed image is hidden.
        // Deterministic (as the server's hiding is): a retry uploads and downloads the same bytes,
        // so an interrupted transfer resumes.
        let sealed = crypto::seal_deterministic(&self.me.key(Purpose::Own), &own_image_aad(&self.me.name), &image);
        let mut last = String::new();
        for _ in 0..ENCRYPT_TRIES {
            let op = Op::Encrypt { owner: self.me.name.clone(), auth: Auth::default(), len: sealed.len() as u64 };
            let attempt = self.cloud.lock().call(op, Some(&sealed));
            match attempt {
                Ok(r) => {
                    let server = r.reply.server;
                    let len = match r.reply.result? {
                        Answer::Encrypted { len, .. } => len,
                        other => return Err(format!("unexpected answer {other:?}")),
                    };
                    let stego = r.blob.ok_or("the result did not arrive")?;
                    if stego.len() as u64 != len {
                        return Err("the result arrived with the wrong length".into());
                    }
                    let back = common::stego::reveal(&stego).map_err(|e| format!("the result is unusable: {e}"))?;
                    if back != sealed {
                        return Err("the result does not hide the image exactly".into());
                    }
                    let id = self.store.new_image_id(path);
                    self.store.save_image(&id, &stego, &preview)?;
                    self.publish_images()?;
                    let resumed = match r.resumed {
                        0 => String::new(),
                        held => format!("; resumed with {} already here", crate::progress::mb(held)),
                    };
                    return Ok(format!("encrypted as {id} by server {server} ({len} bytes{resumed})"));
                }
                Err(e) if e.starts_with(crate::cloud::UNREACHABLE) => return Err(e),
                Err(e) => last = e,
            }
        }
        Err(format!("encryption failed after {ENCRYPT_TRIES} tries: {last}"))
    }

    /// Tells the directory which images this client shares.
    pub fn publish_images(&mut self) -> Result<(), String> {
        let op = Op::SetImages { name: self.me.name.clone(), auth: Auth::default(), images: self.store.images() };
        answer(op, &mut self.cloud.lock()).map(|_| ())
    }
}
