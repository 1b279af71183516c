//! The classroom demo end to end: `demo` starts its own cluster on free ports, plays every
//! step with real client processes and must report each one as behaving (exit code 0).

mod support;

use client::launch::sibling_binary;
use std::process::Command;
use support::{ensure_built, test_dir};

#[test]
fn the_demo_plays_every_step() {
    ensure_built();
    let dir = test_dir("demo");
    let out =
        Command::new(sibling_binary("demo").expect("demo binary")).arg("--dir").arg(&dir).output().expect("demo runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "demo failed ({:?}):\n{text}", out.status);
    assert!(text.contains("✔ all 15 steps behaved as they should"), "{text}");
    assert_eq!(text.lines().filter(|l| l.trim_start().starts_with("✔ ")).count(), 16, "{text}");
    assert!(!text.contains('✘'), "{text}");
    assert!(!dir.exists(), "the demo removes its folder");
}
