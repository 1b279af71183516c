//! The classroom demo (`./run.sh demo`): starts a three-server cluster on free local ports and
//! plays a narrated scenario with alice, bob and carol as real client processes, checking each
//! step against what the clients print and what the servers answer. Exits 0 when every step
//! behaved as it should, 1 at the first step that did not (saying what was expected and what
//! was seen), 130 on Ctrl-C; every child process is stopped either way. On a terminal it
//! speaks in colour, wrapped to the width, and draws the pictures; `--step` waits for Enter
//! before each step; `--web` serves the dashboard on the demo's cluster.

mod proc;
mod say;
mod scenario;
mod table;

use common::args::{usage, Args, Opt};
use common::config::EXIT_USAGE;
use say::{ColorMode, Say};
use scenario::{Demo, Settings, STEPS};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

const OPTS: &[Opt] = &[
    Opt { name: "slow-ms", value: Some("MS"), default: "3000", help: "extra work per image on every server" },
    Opt { name: "pace-ms", value: Some("MS"), default: "0", help: "pause after each step (time to talk)" },
    Opt { name: "image", value: Some("PATH"), default: "images/sample-10k.jpg", help: "the photo the users share" },
    Opt { name: "covers", value: Some("DIR"), default: "images", help: "cover images for the servers" },
    Opt { name: "dir", value: Some("DIR"), default: "<temp>/imgcloud-demo-PID", help: "folder for data and logs" },
    Opt { name: "keep", value: None, default: "", help: "keep the folder (it is also kept when a step fails)" },
    Opt { name: "step", value: None, default: "", help: "wait for Enter before each step happens (time to talk)" },
    Opt { name: "color", value: Some("WHEN"), default: "auto", help: "always, never, or auto (on a terminal)" },
    Opt { name: "web", value: None, default: "", help: "serve the dashboard on the demo's cluster; print its URL" },
    Opt { name: "web-addr", value: Some("ADDR"), default: "127.0.0.1:0", help: "where --web listens (0: a free port)" },
];

const ABOUT: &str = "The classroom demo: three servers and the clients alice, bob and carol, narrated and checked.";

/// How long Ctrl-C waits for the demo to clean up before killing the children itself.
const CTRL_C_GRACE: Duration = Duration::from_secs(3);

fn fail(msg: &str) -> ! {
    eprintln!("demo: {msg}");
    std::process::exit(EXIT_USAGE)
}

fn main() {
    let args = match Args::parse(std::env::args().skip(1), OPTS) {
        Ok(a) => a,
        Err(None) => {
            print!("{}", usage("demo", ABOUT, OPTS));
            return;
        }
        Err(Some(e)) => fail(&e),
    };
    let slow_ms = args.num::<u64>("slow-ms").unwrap_or_else(|e| fail(&e)).unwrap_or(3000);
    let pace = Duration::from_millis(args.num::<u64>("pace-ms").unwrap_or_else(|e| fail(&e)).unwrap_or(0));
    let image = PathBuf::from(args.get("image").unwrap_or("images/sample-10k.jpg"));
    if !image.is_file() {
        fail(&format!("--image: {} is not a file", image.display()));
    }
    let covers = std::fs::canonicalize(args.get("covers").unwrap_or("images")).ok();
    let dir = args
        .get("dir")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join(format!("imgcloud-demo-{}", std::process::id())));
    let keep = args.flag("keep");
    let color = ColorMode::parse(args.get("color").unwrap_or("auto")).unwrap_or_else(|e| fail(&e));
    let step = args.flag("step");
    let web = args.flag("web").then(|| args.get("web-addr").unwrap_or("127.0.0.1:0").to_string());
    let say = Say::new(color, false, false);

    let _ = ctrlc::set_handler(|| {
        proc::STOP.store(true, Ordering::Relaxed);
        // The demo stops at its next wait and cleans up; if it does not, kill the children here.
        std::thread::sleep(CTRL_C_GRACE);
        proc::kill_registered();
        println!("\ndemo: interrupted");
        std::process::exit(130);
    });

    let started = Instant::now();
    let settings = Settings { dir: dir.clone(), slow_ms, pace, image, covers, color, step, web };
    let outcome = play(&say, settings);
    let secs = started.elapsed().as_secs_f64();
    match outcome {
        Ok(n) => {
            say.verdict(true, &format!("✔ all {n} steps behaved as they should ({secs:.1} s)"));
            if keep {
                println!("data and server logs: {}", dir.display());
            } else {
                let _ = std::fs::remove_dir_all(&dir);
            }
        }
        Err(_) if proc::STOP.load(Ordering::Relaxed) => {
            if !keep {
                let _ = std::fs::remove_dir_all(&dir);
            }
            println!("\ndemo: interrupted; every process it started is stopped");
            std::process::exit(130);
        }
        Err((step, e)) => {
            say.fail(&e);
            say.verdict(false, &format!("✘ the demo failed at step {step}/{STEPS} after {secs:.1} s"));
            println!("data and server logs kept in {}", dir.display());
            std::process::exit(1);
        }
    }
}

/// Runs the scenario; the steps passed, or the failing step and what went wrong. Every child
/// process is stopped before this returns.
fn play(say: &Say, settings: Settings) -> Result<usize, (usize, String)> {
    let dir: PathBuf = settings.dir.clone();
    say.measure();
    say.story(&format!(
        "imgcloud demo — three servers and the clients alice, bob and carol, as real processes \
         (data and logs in {})",
        Path::new(&dir).display()
    ));
    let mut demo = Demo::new(settings).map_err(|e| (0, e))?;
    let result = demo.run();
    let step = demo.step();
    drop(demo);
    result.map_err(|e| (step, e))
}
