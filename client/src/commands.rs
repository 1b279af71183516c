//! The prompt: a signed-in session and its commands. Every command prints its output and ends
//! with exactly one line starting `ok:` or `error:`, so scripts can pipe commands in.

use crate::cloud::Cloud;
use crate::store::{Identity, Store};
use common::config::ClusterConfig;
use common::protocol::{Answer, Op};
use std::path::{Path, PathBuf};

/// Times a transport failure of `encrypt` is retried as a whole new request.
pub const ENCRYPT_TRIES: u32 = 3;

/// The prompt's help text.
pub const HELP: &str = "commands:
  whoami            who you are, as the directory knows you
  peers             online users, their address and shared images
  encrypt PATH      hide an image in a cover (done by the cloud) and share it
  images            your own images
  stats             request counters of this client
  help              this text
  quit              sign out and leave";

/// A signed-in client.
pub struct Session {
    /// The cloud link.
    pub cloud: Cloud,
    /// The data folder.
    pub store: Store,
    /// Who we are.
    pub me: Identity,
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

impl Session {
    /// Connects, registers on first run (saving the token), and signs in.
    pub fn start(cfg: &ClusterConfig, name: &str, data: PathBuf) -> Result<Session, String> {
        common::names::check_user(name)?;
        let store = Store::open(data)?;
        let mut cloud = Cloud::connect(cfg, None)?;
        let me = match store.identity()? {
            Some(id) if id.name == name => id,
            Some(id) => return Err(format!("the data folder belongs to {}, not {name}", id.name)),
            None => match answer(Op::Register { name: name.into() }, &mut cloud)? {
                Answer::Registered { user_id, name, token } => {
                    let id = Identity { name, user_id, token };
                    store.save_identity(&id)?;
                    id
                }
                other => return Err(format!("unexpected answer to register: {other:?}")),
            },
        };
        match answer(Op::SignIn { name: me.name.clone(), token: me.token.clone() }, &mut cloud)? {
            Answer::SignedIn { .. } => {}
            other => return Err(format!("unexpected answer to sign-in: {other:?}")),
        }
        Ok(Session { cloud, store, me })
    }

    /// Runs one prompt line.
    pub fn run(&mut self, line: &str) -> Outcome {
        let words: Vec<&str> = line.split_whitespace().collect();
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
                Ok(format!("{} images", imgs.len()))
            }
            ["encrypt", path] => self.encrypt(Path::new(path)),
            ["stats"] => {
                let s = self.cloud.stats();
                Ok(format!(
                    "requests={} answered={} timed_out={} resends={} duplicate_replies={} handled_twice={}",
                    s.started, s.answered, s.timed_out, s.resends, s.duplicate_replies, s.handled_twice
                ))
            }
            ["quit"] | ["exit"] => {
                self.sign_out();
                lines.push("ok: signed out, bye".into());
                return Outcome { lines, quit: true };
            }
            _ => Err(format!("unknown command {line:?} (try help)")),
        };
        lines.push(match result {
            Ok(s) => format!("ok: {s}"),
            Err(e) => format!("error: {e}"),
        });
        Outcome { lines, quit: false }
    }

    /// Signs out (best effort: used on quit, end of input and Ctrl-C).
    pub fn sign_out(&mut self) {
        let _ = answer(Op::SignOut { name: self.me.name.clone(), token: self.me.token.clone() }, &mut self.cloud);
    }

    fn whoami(&mut self) -> Result<String, String> {
        match answer(Op::Lookup { name: self.me.name.clone() }, &mut self.cloud)? {
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
        match answer(Op::ListOnline, &mut self.cloud)? {
            Answer::Online(list) => {
                for u in &list {
                    let addr = u.addr.map(|a| a.to_string()).unwrap_or_else(|| "-".into());
                    let imgs = if u.images.is_empty() { "-".to_string() } else { u.images.join(", ") };
                    lines.push(format!("  {:<16} {:<22} images: {imgs}", u.name, addr));
                }
                Ok(format!("{} online", list.len()))
            }
            other => Err(format!("unexpected answer {other:?}")),
        }
    }

    fn encrypt(&mut self, path: &Path) -> Result<String, String> {
        let meta = std::fs::metadata(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let image = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        if meta.len() != image.len() as u64 {
            return Err(format!("{} changed while reading", path.display()));
        }
        let preview = common::preview::preview_from_bytes(&image)
            .map_err(|e| format!("{} is not an image this client can read: {e}", path.display()))?;
        let mut last = String::new();
        for _ in 0..ENCRYPT_TRIES {
            match self.cloud.call(Op::Encrypt { len: image.len() as u64 }, Some(&image)) {
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
                    if back != image {
                        return Err("the result does not hide the image exactly".into());
                    }
                    let id = self.store.new_image_id(path);
                    self.store.save_image(&id, &stego, &preview)?;
                    self.publish_images()?;
                    return Ok(format!("encrypted as {id} by server {server} ({len} bytes)"));
                }
                Err(e) => last = e,
            }
        }
        Err(format!("encryption failed after {ENCRYPT_TRIES} tries: {last}"))
    }

    /// Tells the directory which images this client shares.
    pub fn publish_images(&mut self) -> Result<(), String> {
        let op =
            Op::SetImages { name: self.me.name.clone(), token: self.me.token.clone(), images: self.store.images() };
        answer(op, &mut self.cloud).map(|_| ())
    }
}
