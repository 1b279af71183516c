//! The user's page (`client --web`) in a real browser, against real servers and clients: bob's
//! page shows alice's preview blurred; a request from the page's endpoint reaches alice; after
//! her approval bob's page shows the image with its views; each view from the page returns the
//! very image and spends one, and after the last only the cover shows; alice's revoke removes
//! it from bob's page; a request without the token gets 403. Then 1,000 more users sign in
//! (raw cloud links, in-process) and both the prompt's `peers` and the page list everyone,
//! page after page of the cloud's list. Without chromium the browser checks fail, unless
//! IMGCLOUD_SKIP_BROWSER=1 (then they are skipped, saying so).

mod support;

use client::cloud::Cloud;
use common::protocol::{Answer, Auth, Op};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;
use support::web::{dump_dom, http};
use support::{cluster, register, test_dir, wait_until, ClientProc};

const IMAGE: &str = "sample-10k";

/// Waits for a notice (the prompt idles on `stats` meanwhile, so its lines are read).
fn notice(c: &mut ClientProc, what: &str) {
    let seen = wait_until(Duration::from_secs(30), || {
        c.send("stats");
        let _ = c.result(Duration::from_secs(5));
        c.seen.iter().any(|l| l.contains(what))
    });
    assert!(seen, "no notice {what:?}; saw {:?}", c.seen);
}

fn state(addr: SocketAddr, token: &str) -> serde_json::Value {
    let (status, body) = http(addr, "GET", &format!("/api/state?t={token}"), "");
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).expect("state JSON")
}

/// One view from the page's endpoint: the status, the views left it reports, and the body.
fn view(addr: SocketAddr, token: &str) -> (u16, Option<u32>, Vec<u8>) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(60))).expect("timeout");
    let body = format!(r#"{{"owner":"alice","image":"{IMAGE}"}}"#);
    let req = format!("POST /api/view?t={token} HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n{body}", body.len());
    s.write_all(req.as_bytes()).expect("send");
    let mut out = Vec::new();
    s.read_to_end(&mut out).expect("read");
    let split = out.windows(4).position(|w| w == b"\r\n\r\n").expect("a head");
    let head = String::from_utf8_lossy(&out[..split]).to_string();
    assert!(head.contains("Cache-Control: no-store"), "{head}");
    let status = head.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    let left = head.lines().find_map(|l| l.strip_prefix("X-Views-Left: ")).and_then(|v| v.trim().parse().ok());
    (status, left, out[split + 4..].to_vec())
}

/// The opening tag of the element with `attr` in `dom`, if any.
fn tag_with<'a>(dom: &'a str, attr: &str) -> Option<&'a str> {
    let at = dom.find(attr)?;
    let start = dom[..at].rfind('<')?;
    Some(&dom[start..at + dom[at..].find('>')?])
}

/// The element that starts with the tag carrying `attr`, up to its first `</div>`.
fn block<'a>(dom: &'a str, attr: &str) -> &'a str {
    let Some(at) = dom.find(attr) else { return "" };
    let end = dom[at..].find("</div></div>").map_or(dom.len(), |e| at + e);
    &dom[at..end]
}

/// Loads the page until `check` holds on its DOM (or the browser is absent and skipped).
fn page_shows(url: &str, dir: &std::path::Path, what: &str, check: impl Fn(&str) -> bool) {
    let mut dom = String::new();
    let shown = wait_until(Duration::from_secs(90), || match dump_dom(url, dir) {
        Some(d) => {
            dom = d;
            check(&dom)
        }
        None => true,
    });
    assert!(shown, "bob's page should show {what}:\n{dom}");
}

// Long on purpose: one story in order (share, request, approve, view to 0, revoke, 1,000 more).
#[test]
fn bobs_page_requests_views_and_loses_alices_image_and_lists_everyone() {
    let c = cluster("userpage", 3);
    let dir = test_dir("userpage");
    let mut alice = ClientProc::start(&c, "alice");
    assert!(alice.result(Duration::from_secs(30)).unwrap_or_default().starts_with("ok: signed in"));
    alice.ok("encrypt images/sample-10k.jpg");
    let mut bob = ClientProc::start_with(&c, "bob", &["--web", "127.0.0.1:0"]);
    let url = bob.wait_for("web: http://", Duration::from_secs(30)).expect("bob's page URL");
    let url = url.strip_prefix("web: ").expect("one line web: URL").to_string();
    assert!(bob.seen.iter().any(|l| l.starts_with("ok: signed in as bob")), "{:?}", bob.seen);
    assert_eq!(bob.ok("web"), format!("ok: web: {url}"), "the prompt prints it again");
    let (addr, token) = url.strip_prefix("http://").and_then(|r| r.split_once("/?t=")).expect("URL with a token");
    let addr: SocketAddr = addr.parse().expect("address");
    assert!(addr.ip().is_loopback());

    // The token guards everything: 403 and nothing else; malformed: 400.
    for target in ["/", "/api/state", "/api/state?t=", "/api/preview?user=alice&image=sample-10k"] {
        assert_eq!(http(addr, "GET", target, ""), (403, String::new()), "{target}");
    }
    let no_token = format!(r#"{{"owner":"alice","image":"{IMAGE}"}}"#);
    assert_eq!(http(addr, "POST", "/api/view", &no_token), (403, String::new()));
    assert_eq!(http(addr, "POST", &format!("/api/request?t={token}"), "{not json").0, 400);
    assert_eq!(
        http(addr, "POST", &format!("/api/request?t={token}"), r#"{"user":"a b","image":"x","views":1}"#).0,
        400
    );
    assert_eq!(http(addr, "GET", &format!("/api/state?t={token}&after=x"), "").0, 400);

    // alice's preview, blurred: bob holds nothing of hers.
    let has_preview = || {
        state(addr, token)["online"].as_array().is_some_and(|o| {
            o.iter().any(|p| p["name"] == "alice" && p["images"][0]["id"] == IMAGE && p["images"][0]["preview"] == true)
        })
    };
    assert!(wait_until(Duration::from_secs(60), has_preview), "alice's preview fetched: {}", state(addr, token));
    let (status, _) = http(addr, "GET", &format!("/api/preview?t={token}&user=alice&image={IMAGE}"), "");
    assert_eq!(status, 200);
    let tile = format!("data-user=\"alice\" data-image=\"{IMAGE}\"");
    page_shows(&url, &dir, "alice's blurred preview", |dom| {
        block(dom, &tile).contains("class=\"preview blurred\"") && dom.contains("data-polls=\"")
    });

    // A request from the page reaches alice; she approves at her prompt.
    let body = format!(r#"{{"user":"alice","image":"{IMAGE}","views":2}}"#);
    let (status, answer) = http(addr, "POST", &format!("/api/request?t={token}"), &body);
    assert_eq!(status, 200, "{answer}");
    notice(&mut alice, &format!("bob asks for {IMAGE}"));
    alice.ok("approve 1");
    notice(&mut bob, &format!("received {IMAGE} from alice"));
    let held = format!("data-owner=\"alice\" data-image=\"{IMAGE}\"");
    page_shows(&url, &dir, "the image with 2 views, sharp", |dom| {
        tag_with(dom, &held).is_some_and(|t| t.contains("data-views=\"2\""))
            && block(dom, &tile).contains("class=\"preview sharp\"")
    });
    assert!(state(addr, token)["notices"]
        .as_array()
        .is_some_and(|n| n.iter().any(|n| n["text"].as_str().is_some_and(|t| t.contains("received")))));

    // Each view from the page is the image itself and spends one; then only the cover.
    let original = std::fs::read("images/sample-10k.jpg").expect("the sample");
    for left in [1, 0] {
        let (status, views_left, bytes) = view(addr, token);
        assert_eq!((status, views_left), (200, Some(left)));
        assert!(bytes == original, "the revealed image is the original");
        page_shows(&url, &dir, &format!("{left} views left"), |dom| {
            tag_with(dom, &held).is_some_and(|t| t.contains(&format!("data-views=\"{left}\"")))
        });
    }
    let (status, _, bytes) = view(addr, token);
    assert_eq!(status, 409, "{}", String::from_utf8_lossy(&bytes));
    assert!(String::from_utf8_lossy(&bytes).contains("no views left"));
    page_shows(&url, &dir, "only the cover", |dom| {
        block(dom, &held).contains("class=\"cover\"") && !block(dom, &held).contains(">view<")
    });
    bob.ok("received");
    assert!(bob.seen.iter().any(|l| l.contains(&format!("alice/{IMAGE}  0 views left"))), "{:?}", bob.seen);

    // alice grants 3 more, then revokes: gone from bob's page.
    alice.ok(&format!("grant bob {IMAGE} 3"));
    assert!(wait_until(Duration::from_secs(30), || state(addr, token)["held"][0]["views"] == 3));
    alice.ok(&format!("grant bob {IMAGE} 0"));
    assert!(wait_until(Duration::from_secs(30), || state(addr, token)["held"]
        .as_array()
        .is_some_and(|h| h.is_empty())));
    page_shows(&url, &dir, "nothing of alice's held", |dom| {
        !dom.contains(&held) && dom.contains("data-held=\"false\"")
    });

    // 1,000 more online: the prompt and the page page through the whole list.
    let signers: Vec<_> = (0..8)
        .map(|t| {
            let cfg = c.cfg.clone();
            std::thread::spawn(move || {
                let mut cloud = Cloud::connect(&cfg, None).expect("cloud");
                for i in (t..1_000).step_by(8) {
                    let name = format!("user{i:04}");
                    register(&mut cloud, &name);
                    let r = cloud.call(Op::SignIn { name, auth: Auth::default() }, None).expect("sign-in answered");
                    assert!(matches!(r.reply.result, Ok(Answer::SignedIn { .. })), "{:?}", r.reply.result);
                }
                cloud
            })
        })
        .collect();
    let _clouds: Vec<Cloud> = signers.into_iter().map(|t| t.join().expect("signer")).collect();
    assert_eq!(bob.ok("peers"), "ok: 1002 online");
    for i in [0, 499, 999] {
        assert!(bob.seen.iter().any(|l| l.trim_start().starts_with(&format!("user{i:04} "))), "user{i:04} listed");
    }
    let online = state(addr, token)["online"].as_array().map(|o| o.len());
    assert_eq!(online, Some(1002));
    page_shows(&url, &dir, "1,000 others sharing nothing", |dom| dom.contains("data-count=\"1000\""));
    alice.finish();
    bob.finish();
    let _ = std::fs::remove_dir_all(&dir);
}
