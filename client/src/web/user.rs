//! The signed-in user's page (`client --name NAME --web ADDR`): everyone online (page after
//! page of the cloud's list) with the previews of the images they share — blurred unless you
//! hold views of them — and a request button; the requests waiting for your answer (approve,
//! optionally with another number of views, or reject); the images shared with you with their
//! views left (*view* reveals one full size and spends a view, as the prompt's `view` does; at
//! 0 only the cover shows); your own images, who holds them with how many views, grant and
//! revoke; the client's notices as toasts. The page polls `GET /api/state` (JSON); its buttons
//! post to `/api/...` and run the prompt's own commands on the same [`Session`] (behind the
//! prompt's mutex), so the prompt and the page act on one state. A revealed image is the
//! answer to `POST /api/view` itself — `no-store`, never kept: seeing it again is another view.
//! Served by [`super::server`] (token, bounds, loopback by default); previews of other users'
//! images come peer to peer once (a fetcher thread) and are kept in memory.

use super::http::{Limits, Request, Response};
use super::server::{html_page, parse_addr, WebServer};
use crate::commands::Session;
use crate::engine::Command;
use crate::sharing;
use crate::viewing::{no_views_left, Reveal};
use common::names::{check_image_id, check_user};
use common::protocol::UserInfo;
use crossbeam_channel::{unbounded, Receiver, Sender};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// The page: HTML with inline CSS and JavaScript, nothing fetched from elsewhere.
const PAGE: &str = include_str!("user.html");

/// How long the page's state waits for the prompt to let go of the session before it answers
/// with the last state it had.
const STATE_WAIT: Duration = Duration::from_millis(700);

/// How long a gallery fetch may take.
const GALLERY_WAIT: Duration = Duration::from_secs(10);

/// How soon a gallery that failed, or lacks an image the directory lists, is asked for again.
const GALLERY_RETRY: Duration = Duration::from_secs(15);

/// Most users whose previews are kept in memory.
const MAX_GALLERIES: usize = 256;

/// The page's URL, once started (the prompt's `web` prints it again).
static URL: OnceLock<String> = OnceLock::new();

/// The URL of the page, if this client serves one.
pub fn url() -> Option<&'static str> {
    URL.get().map(|s| s.as_str())
}

/// One image another user shares, as the page shows it.
#[derive(Debug, Clone, Serialize)]
pub struct PeerImage {
    /// The image's id.
    pub id: String,
    /// Its preview arrived (`/api/preview`).
    pub preview: bool,
    /// Views left of the copy you hold, if you hold one.
    pub views: Option<u32>,
}

/// One online user.
#[derive(Debug, Clone, Serialize)]
pub struct Peer {
    /// User name.
    pub name: String,
    /// That is you.
    pub me: bool,
    /// The images they share.
    pub images: Vec<PeerImage>,
}

/// A request waiting for your answer.
#[derive(Debug, Clone, Serialize)]
pub struct WaitingRequest {
    /// Its number (for approve and reject).
    pub n: u32,
    /// Who asks.
    pub from: String,
    /// For which of your images.
    pub image: String,
    /// How many views.
    pub views: u32,
    /// Asks for more views of an image they hold.
    pub more: bool,
}

/// An image shared with you.
#[derive(Debug, Clone, Serialize)]
pub struct HeldImage {
    /// Its owner.
    pub owner: String,
    /// Its id.
    pub image: String,
    /// Views left.
    pub views: u32,
}

/// Someone who holds one of your images.
#[derive(Debug, Clone, Serialize)]
pub struct Holder {
    /// The viewer.
    pub viewer: String,
    /// Views last granted (0: revoked).
    pub views: u32,
}

/// One of your images and its holders.
#[derive(Debug, Clone, Serialize)]
pub struct Mine {
    /// Its id.
    pub image: String,
    /// Who holds it.
    pub holders: Vec<Holder>,
}

/// A notice, numbered.
#[derive(Debug, Clone, Serialize)]
pub struct Notice {
    /// Its number.
    pub n: u64,
    /// Its text.
    pub text: String,
}

/// The page's state.
#[derive(Debug, Clone, Default, Serialize)]
pub struct State {
    /// Your name.
    pub me: String,
    /// When it was taken (local time).
    pub at: String,
    /// The prompt held the session: this is the last state taken.
    pub busy: bool,
    /// Why the online list is missing, if it is.
    pub error: Option<String>,
    /// Everyone online, by name.
    pub online: Vec<Peer>,
    /// Requests waiting for your answer.
    pub requests: Vec<WaitingRequest>,
    /// Images shared with you.
    pub held: Vec<HeldImage>,
    /// Your images.
    pub shared: Vec<Mine>,
    /// Notices after the one the page asked from.
    pub notices: Vec<Notice>,
}

/// The previews of one user's images, as last fetched.
struct Gallery {
    previews: HashMap<String, Vec<u8>>,
    asked: Instant,
}

/// The page: the session it acts on, the previews fetched and the last state.
pub struct UserPage {
    session: Arc<Mutex<crate::commands::Session>>,
    me: String,
    galleries: Mutex<HashMap<String, Gallery>>,
    fetching: Mutex<HashSet<String>>,
    fetch: Sender<(String, SocketAddr)>,
    last: Mutex<State>,
}

/// The body of `POST /api/request` and `/api/grant`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UserImage {
    user: String,
    image: String,
    views: u32,
}

/// The body of `POST /api/approve` and `/api/reject`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Answering {
    n: u32,
    #[serde(default)]
    views: Option<u32>,
}

/// The body of `POST /api/view`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Viewing {
    owner: String,
    image: String,
}

/// Starts the page on `addr` (a bare port is on 127.0.0.1) for the signed-in `session`: its
/// URL with the token.
pub fn start(session: Arc<Mutex<Session>>, addr: &str) -> Result<String, String> {
    let addr = parse_addr(addr)?;
    let server = WebServer::bind(addr, Limits::default())?;
    if !addr.ip().is_loopback() {
        eprintln!("client: your page listens on {addr}, beyond this machine: whoever has its URL can act as you");
    }
    let url = server.url("/");
    let me = session.lock().me.name.clone();
    let (fetch, fetches) = unbounded();
    let page = Arc::new(UserPage {
        session,
        me: me.clone(),
        galleries: Mutex::new(HashMap::new()),
        fetching: Mutex::new(HashSet::new()),
        fetch,
        last: Mutex::new(State { me, ..Default::default() }),
    });
    let fetcher = page.clone();
    std::thread::Builder::new()
        .name("web-galleries".into())
        .spawn(move || fetcher.fetch_galleries(fetches))
        .map_err(|e| e.to_string())?;
    let handler = page.clone();
    std::thread::Builder::new()
        .name("web".into())
        .spawn(move || server.serve(Arc::new(move |req: &Request| handler.handle(req))))
        .map_err(|e| e.to_string())?;
    let _ = URL.set(url.clone());
    Ok(url)
}

fn error(status: u16, e: impl Into<String>) -> Response {
    Response::json(status, &serde_json::json!({ "ok": false, "error": e.into() }))
}

fn content_type(image: &[u8]) -> &'static str {
    match image::guess_format(image) {
        Ok(image::ImageFormat::Png) => "image/png",
        Ok(image::ImageFormat::Jpeg) => "image/jpeg",
        Ok(image::ImageFormat::Gif) => "image/gif",
        Ok(image::ImageFormat::WebP) => "image/webp",
        Ok(image::ImageFormat::Bmp) => "image/bmp",
        _ => "application/octet-stream",
    }
}

fn parse_body<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, Response> {
    serde_json::from_slice(body).map_err(|e| error(400, format!("bad JSON: {e}")))
}

fn names(user: &str, image: &str) -> Result<(), Response> {
    check_user(user).and_then(|_| check_image_id(image)).map_err(|e| error(400, e))
}

impl UserPage {
    /// Answers a request that carried the token.
    pub fn handle(&self, req: &Request) -> Response {
        let routes = ["/", "/api/state", "/api/preview", "/api/cover"];
        let actions = ["/api/request", "/api/approve", "/api/reject", "/api/grant", "/api/view"];
        match (req.method.as_str(), req.path.as_str()) {
            ("GET", "/") => html_page(PAGE, &self.state(0), "'self' blob:"),
            ("GET", "/api/state") => match req.param("after").filter(|a| !a.is_empty()).map(str::parse::<u64>) {
                Some(Err(_)) => error(400, "after: not a number"),
                after => Response::json(200, &self.state(after.and_then(Result::ok).unwrap_or(0))),
            },
            ("GET", "/api/preview") => self.preview(req.param("user").unwrap_or(""), req.param("image").unwrap_or("")),
            ("GET", "/api/cover") => self.cover(req.param("owner").unwrap_or(""), req.param("image").unwrap_or("")),
            ("POST", "/api/view") => self.view(&req.body),
            ("POST", path) if actions.contains(&path) => self.act(path, &req.body),
            (_, path) if routes.contains(&path) || actions.contains(&path) => error(405, "method not allowed"),
            _ => error(404, "not found"),
        }
    }

    /// The page's state now (notices numbered after `after`), or the last one with `busy` if
    /// the prompt holds the session.
    pub fn state(&self, after: u64) -> State {
        let mut state = match self.session.try_lock_for(STATE_WAIT) {
            Some(mut s) => {
                let st = self.take_state(&mut s);
                *self.last.lock() = st.clone();
                st
            }
            None => State { busy: true, ..self.last.lock().clone() },
        };
        state.notices = crate::notice::recent(after).into_iter().map(|(n, text)| Notice { n, text }).collect();
        state
    }

    fn take_state(&self, s: &mut Session) -> State {
        let (online, error) = match s.online_users() {
            Ok(list) => (list, None),
            Err(e) => (Vec::new(), Some(format!("the online list is missing: {e}"))),
        };
        let held: Vec<HeldImage> = sharing::received(&s.store)
            .into_iter()
            .map(|r| HeldImage { owner: r.rights.owner, image: r.rights.image_id, views: r.rights.views })
            .collect();
        let (requests, holders) = {
            let sh = s.sharing.lock();
            (sh.requests.clone(), sh.holders())
        };
        let shared = s
            .store
            .images()
            .into_iter()
            .map(|image| Mine {
                holders: holders
                    .iter()
                    .filter(|(_, i, _)| *i == image)
                    .map(|(viewer, _, sh)| Holder { viewer: viewer.clone(), views: sh.views })
                    .collect(),
                image,
            })
            .collect();
        State {
            me: self.me.clone(),
            at: chrono::Local::now().format("%H:%M:%S").to_string(),
            busy: false,
            error,
            online: online.into_iter().map(|u| self.peer(u, &held)).collect(),
            requests: requests
                .into_iter()
                .map(|r| WaitingRequest { n: r.n, from: r.from, image: r.image_id, views: r.views, more: r.more })
                .collect(),
            held,
            shared,
            notices: Vec::new(),
        }
    }

    /// One online user as the page shows it; asks for their previews if some are missing.
    fn peer(&self, u: UserInfo, held: &[HeldImage]) -> Peer {
        let me = u.name == self.me;
        let galleries = self.galleries.lock();
        let gallery = galleries.get(&u.name);
        let has = |id: &str| gallery.is_some_and(|g| g.previews.contains_key(id));
        let missing = u.images.iter().any(|i| !has(i));
        let due = gallery.is_none_or(|g| g.asked.elapsed() >= GALLERY_RETRY);
        if !me && missing && due {
            if let Some(addr) = u.addr {
                if self.fetching.lock().insert(u.name.clone()) {
                    let _ = self.fetch.send((u.name.clone(), addr));
                }
            }
        }
        let images = u
            .images
            .iter()
            .map(|id| PeerImage {
                id: id.clone(),
                preview: me || has(id),
                views: held.iter().find(|h| h.owner == u.name && h.image == *id).map(|h| h.views),
            })
            .collect();
        Peer { name: u.name, me, images }
    }

    /// Fetches the galleries asked for, one at a time, for ever.
    fn fetch_galleries(&self, asks: Receiver<(String, SocketAddr)>) {
        for (user, addr) in asks {
            let items = {
                let s = self.session.lock();
                let u = user.clone();
                s.engine.ask(GALLERY_WAIT, |reply| Command::Gallery { user: u, addr, reply })
            };
            let previews: HashMap<String, Vec<u8>> =
                items.unwrap_or_default().into_iter().map(|it| (it.image_id, it.preview_png)).collect();
            let mut galleries = self.galleries.lock();
            if galleries.len() >= MAX_GALLERIES && !galleries.contains_key(&user) {
                galleries.clear();
            }
            galleries.insert(user.clone(), Gallery { previews, asked: Instant::now() });
            self.fetching.lock().remove(&user);
        }
    }

    /// The preview of `user`'s `image` (yours from your folder, others' as fetched).
    fn preview(&self, user: &str, image: &str) -> Response {
        if let Err(r) = names(user, image) {
            return r;
        }
        let png = if user == self.me {
            let root = self.session.lock().store.root().to_path_buf();
            std::fs::read(root.join("previews").join(format!("{image}.png"))).ok()
        } else {
            self.galleries.lock().get(user).and_then(|g| g.previews.get(image).cloned())
        };
        match png {
            Some(png) => Response::new(200, content_type(&png), png),
            None => error(404, "no such preview"),
        }
    }

    /// The cover of a copy shared with you (what shows once no views are left).
    fn cover(&self, owner: &str, image: &str) -> Response {
        if let Err(r) = names(owner, image) {
            return r;
        }
        let path = sharing::received_path(&self.session.lock().store, owner, image);
        match std::fs::read(path) {
            Ok(png) => Response::new(200, content_type(&png), png),
            Err(_) => error(404, "no such copy"),
        }
    }

    /// One view, as the prompt's `view`: the revealed image is the answer (`no-store`).
    fn view(&self, body: &[u8]) -> Response {
        let v: Viewing = match parse_body(body) {
            Ok(v) => v,
            Err(r) => return r,
        };
        if let Err(r) = names(&v.owner, &v.image) {
            return r;
        }
        let revealed = self.session.lock().reveal(&format!("{}/{}", v.owner, v.image));
        match revealed {
            Ok(Reveal::Image(shown)) => Response::new(200, content_type(&shown.image), shown.image)
                .with("X-Views-Left", shown.left.to_string())
                .with("Content-Disposition", "inline"),
            Ok(Reveal::Cover(copy)) => error(409, no_views_left(&copy.rights.image_id)),
            Err(e) => error(409, e),
        }
    }

    /// A button: the prompt's own command, on the same session; its last line as the answer.
    fn act(&self, path: &str, body: &[u8]) -> Response {
        let line = match command(path, body) {
            Ok(l) => l,
            Err(r) => return r,
        };
        let out = self.session.lock().run(&line);
        let last = out.lines.last().cloned().unwrap_or_default();
        let (ok, text) = match (last.strip_prefix("ok: "), last.strip_prefix("error: ")) {
            (Some(t), _) => (true, t),
            (None, Some(t)) => (false, t),
            _ => (false, last.as_str()),
        };
        Response::json(if ok { 200 } else { 409 }, &serde_json::json!({ "ok": ok, "text": text }))
    }
}

/// The prompt line a button stands for (names checked, so no word can slip in).
fn command(path: &str, body: &[u8]) -> Result<String, Response> {
    match path {
        "/api/request" | "/api/grant" => {
            let r: UserImage = parse_body(body)?;
            names(&r.user, &r.image)?;
            let verb = if path == "/api/grant" { "grant" } else { "request" };
            Ok(format!("{verb} {} {} {}", r.user, r.image, r.views))
        }
        "/api/approve" => {
            let a: Answering = parse_body(body)?;
            Ok(match a.views {
                Some(v) => format!("approve {} {v}", a.n),
                None => format!("approve {}", a.n),
            })
        }
        _ => {
            let a: Answering = parse_body(body)?;
            Ok(format!("reject {}", a.n))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lines_the_buttons_run_are_built_from_checked_names_only() {
        let line = |path: &str, body: &str| command(path, body.as_bytes()).map_err(|r| r.status);
        assert_eq!(
            line("/api/request", r#"{"user":"alice","image":"cat-1","views":3}"#),
            Ok("request alice cat-1 3".into())
        );
        assert_eq!(line("/api/grant", r#"{"user":"bob","image":"cat-1","views":0}"#), Ok("grant bob cat-1 0".into()));
        for bad in [
            r#"{"user":"alice quit","image":"cat-1","views":3}"#,
            r#"{"user":"alice","image":"cat 1","views":3}"#,
            r#"{"user":"alice","image":"cat-1\nquit","views":3}"#,
            r#"{"user":"alice","image":"cat-1","views":-1}"#,
            r#"{"user":"alice","image":"cat-1","views":3,"x":1}"#,
            r#"{"user":"alice","image":"cat-1"}"#,
            "{",
            "",
            "\u{0}",
        ] {
            assert_eq!(line("/api/grant", bad), Err(400), "{bad}");
        }
        assert_eq!(line("/api/approve", r#"{"n":2,"views":5}"#), Ok("approve 2 5".into()));
        assert_eq!(line("/api/approve", r#"{"n":2}"#), Ok("approve 2".into()));
        assert_eq!(line("/api/reject", r#"{"n":2}"#), Ok("reject 2".into()));
        assert_eq!(line("/api/reject", r#"{"n":"2"}"#), Err(400));
    }
}
