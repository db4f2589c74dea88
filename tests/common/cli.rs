//! Runs the `osprey` command line as a user would: arguments, optional stdin, and a time
//! limit after which the process is killed and the test fails.

use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One command's limit: far above what any of them needs on a loaded machine.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// What a finished command left.
#[derive(Debug)]
pub struct Run {
    pub ok: bool,
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// stdout parsed as one JSON document.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!("stdout is not JSON ({e}): {}\n{}", self.stdout, self.stderr)
        })
    }
}

/// Starts `osprey ARGS` with piped stdout/stderr (stdin closed unless `stdin` is given).
pub fn spawn(args: &[&str], stdin: Option<&[u8]>) -> Child {
    let mut child = Command::new(env!("CARGO_BIN_EXE_osprey"))
        .args(args)
        .env("RUST_LOG", "warn")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn osprey");
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("stdin");
        let input = input.to_vec();
        std::thread::spawn(move || {
            let _ = pipe.write_all(&input);
        });
    }
    child
}

/// Waits for a spawned command, killing it (and failing) after `timeout`.
pub fn wait(mut child: Child, timeout: Duration) -> Run {
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let out_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "osprey did not finish within {timeout:?}; stderr: {}",
                err_t.join().unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Run {
        ok: status.success(),
        code: status.code(),
        stdout: out_t.join().unwrap_or_default(),
        stderr: err_t.join().unwrap_or_default(),
    }
}

/// Runs `osprey ARGS` to completion (within `COMMAND_TIMEOUT`).
pub fn osprey(args: &[&str]) -> Run {
    wait(spawn(args, None), COMMAND_TIMEOUT)
}

/// Runs `osprey ARGS` with `input` on stdin.
pub fn osprey_with_input(args: &[&str], input: &[u8]) -> Run {
    wait(spawn(args, Some(input)), COMMAND_TIMEOUT)
}
