//! The classroom demo end to end: `demo` starts its own cluster on free ports, plays every
//! step with real client processes and must report each one as behaving (exit code 0). Its
//! output, piped, is plain text (no escape codes); with `--step` it waits for Enter after each
//! step's story, and plays through when the Enters come one by one on its stdin.

mod support;

use client::launch::sibling_binary;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use support::{ensure_built, test_dir};

/// One demo at a time: each runs a cluster of three servers (a busy machine stays fair).
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// The checks every complete run passes: 15 steps behaved, nothing failed, plain text.
fn assert_played(text: &str) {
    assert!(text.contains("✔ all 15 steps behaved as they should"), "{text}");
    assert_eq!(text.lines().filter(|l| l.trim_start().starts_with("✔ ")).count(), 16, "{text}");
    assert!(!text.contains('✘'), "{text}");
    assert!(!text.contains('\x1b'), "piped output has no escape codes:\n{text}");
}

#[test]
fn the_demo_plays_every_step() {
    ensure_built();
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = test_dir("demo");
    let out =
        Command::new(sibling_binary("demo").expect("demo binary")).arg("--dir").arg(&dir).output().expect("demo runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "demo failed ({:?}):\n{text}", out.status);
    assert_played(&text);
    assert!(!text.contains("⏎ Enter"), "no --step, no waiting:\n{text}");
    assert!(!dir.exists(), "the demo removes its folder");
}

#[test]
fn with_step_the_demo_waits_for_enter_before_each_step() {
    ensure_built();
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = test_dir("demo-step");
    let mut child = Command::new(sibling_binary("demo").expect("demo binary"))
        .arg("--step")
        .arg("--dir")
        .arg(&dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("demo starts");
    let mut stdin = child.stdin.take().expect("stdin");
    let stdout = child.stdout.take().expect("stdout");
    // One Enter after each prompt, as a teacher would press it.
    let mut text = String::new();
    let mut prompts = Vec::new();
    for line in BufReader::new(stdout).lines().map_while(Result::ok) {
        if let Some(next) = line.trim_start().strip_prefix("⏎ Enter: ") {
            prompts.push(next.to_string());
            let _ = writeln!(stdin).and_then(|_| stdin.flush());
        }
        text.push_str(&line);
        text.push('\n');
    }
    let status = child.wait().expect("demo exits");
    assert!(status.success(), "demo failed ({status:?}):\n{text}");
    assert_played(&text);
    let expected: Vec<String> = (1..=15).map(|n| format!("step {n} happens")).collect();
    assert_eq!(prompts, expected, "{text}");
    // Each prompt comes after its step's story, before anything of the step happens.
    let lines: Vec<&str> = text.lines().collect();
    for (i, l) in lines.iter().enumerate().filter(|(_, l)| l.contains("⏎ Enter: step ")) {
        let head = lines[..i].iter().rev().find(|l| l.starts_with('[')).copied().unwrap_or_default();
        let between = lines[..i]
            .iter()
            .rev()
            .take_while(|l| !l.starts_with('['))
            .all(|l| l.starts_with("    ") && !l.starts_with("      "));
        assert!(between, "only the story between {head:?} and its prompt {l:?}:\n{text}");
    }
    assert!(!dir.exists(), "the demo removes its folder");
}
