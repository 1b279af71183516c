//! Pages in a real browser: one raw HTTP exchange with a page's server, and Debian's
//! `chromium --headless --dump-dom` loading a page (a virtual-time budget lets its polling script
//! run). Without chromium the browser checks fail, unless IMGCLOUD_SKIP_BROWSER=1.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// One HTTP exchange: the status and the body (lossily as text).
pub fn http(addr: SocketAddr, method: &str, target: &str, body: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("connect to the page");
    s.set_read_timeout(Some(Duration::from_secs(60))).expect("timeout");
    let req = format!("{method} {target} HTTP/1.1\r\nHost: test\r\nContent-Length: {}\r\n\r\n{body}", body.len());
    s.write_all(req.as_bytes()).expect("send");
    let mut bytes = Vec::new();
    s.read_to_end(&mut bytes).expect("read");
    let out = String::from_utf8_lossy(&bytes);
    let status = out.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

/// The page's DOM after its script ran, or `None` when the browser is absent and skipping
/// was asked for.
pub fn dump_dom(url: &str, dir: &Path) -> Option<String> {
    let chromium = ["chromium", "chromium-browser"]
        .into_iter()
        .find(|b| Command::new(b).arg("--version").output().is_ok_and(|o| o.status.success()));
    let Some(chromium) = chromium else {
        if std::env::var("IMGCLOUD_SKIP_BROWSER").as_deref() == Ok("1") {
            eprintln!("chromium is not installed: the browser checks are SKIPPED (IMGCLOUD_SKIP_BROWSER=1)");
            return None;
        }
        panic!("chromium is not installed (apt-get install chromium, as .ci/run does); IMGCLOUD_SKIP_BROWSER=1 skips");
    };
    let out_path = dir.join("dom.html");
    let out = std::fs::File::create(&out_path).expect("dom file");
    let mut child = Command::new(chromium)
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-crash-reporter"])
        .arg(format!("--user-data-dir={}", dir.join("chromium").display()))
        .args(["--virtual-time-budget=4000", "--dump-dom", url])
        .stdout(out)
        .stderr(Stdio::null())
        .spawn()
        .expect("chromium starts");
    let deadline = Instant::now() + Duration::from_secs(120);
    while matches!(child.try_wait(), Ok(None)) {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium did not finish within 120 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Some(std::fs::read_to_string(&out_path).unwrap_or_default())
}
