//! Child processes of the tests (relink, psql, kill(1)) and their output.
//! Every child's stdout and stderr are captured, never inherited: what a
//! child says reaches `cargo test`'s output only inside the message of a
//! failing test (the assertions here print both streams; a background
//! relink still running when its test fails prints them from its `Drop`).

use std::process::{Command, Output, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

/// The relink binary with `DATABASE_URL` = `url`, `RELINK_LOG` unset and
/// stdin closed (a command that would ask reads end-of-file, never the
/// terminal `cargo test` runs on).
pub fn relink_command(url: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_relink"));
    cmd.env("DATABASE_URL", url)
        .env_remove("RELINK_LOG")
        .stdin(Stdio::null());
    cmd
}

/// Removes every `PG*` variable of the test process from `cmd`'s
/// environment (and those named in `also`).
pub fn without_pg_env(cmd: &mut Command, also: &[&str]) {
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy().into_owned();
        if name.starts_with("PG") || also.contains(&name.as_str()) {
            cmd.env_remove(name);
        }
    }
}

/// Runs `cmd` with `args` to completion.
pub fn output(mut cmd: Command, args: &[&str]) -> Output {
    cmd.args(args).output().expect("run relink")
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Both streams of `out`, for a failure message.
pub fn streams(out: &Output) -> String {
    format!("stdout:\n{}\nstderr:\n{}", stdout(out), stderr(out))
}

#[track_caller]
pub fn assert_success(out: &Output) {
    assert!(
        out.status.success(),
        "relink failed with {:?}\n{}",
        out.status.code(),
        streams(out)
    );
}

#[track_caller]
pub fn assert_code(out: &Output, code: i32) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "unexpected exit code\n{}",
        streams(out)
    );
}

/// A run that succeeded resuming run `run` (its checkpoint kept).
#[track_caller]
pub fn assert_resumed(out: &Output, run: i64) {
    assert_success(out);
    assert!(
        stderr(out).contains(&format!("resuming run {run}")),
        "{}",
        stderr(out)
    );
}

/// `out`'s stderr holds `needle`.
#[track_caller]
pub fn assert_stderr_has(out: &Output, needle: &str) {
    assert!(stderr(out).contains(needle), "{}", stderr(out));
}

/// `out`'s stdout holds `needle`.
#[track_caller]
pub fn assert_stdout_has(out: &Output, needle: &str) {
    assert!(stdout(out).contains(needle), "{}", stdout(out));
}

/// Neither a panic nor a backtrace in a command's output.
#[track_caller]
pub fn assert_no_panic(out: &Output) {
    let all = format!("{}{}", stdout(out), stderr(out));
    for needle in ["panicked", "stack backtrace", "RUST_BACKTRACE"] {
        assert!(
            !all.contains(needle),
            "relink printed {needle:?}\n{}",
            streams(out)
        );
    }
}

/// A fatal error: exit `code`, nothing on stdout, and on stderr exactly one
/// line `relink: error: …` (returned) holding every one of `needles`.
#[track_caller]
pub fn assert_one_line_error(out: &Output, code: i32, needles: &[&str]) -> String {
    assert_code(out, code);
    assert_no_panic(out);
    let err = stderr(out);
    let lines: Vec<&str> = err.lines().collect();
    assert!(
        lines.len() == 1 && lines[0].starts_with("relink: error: "),
        "expected one line `relink: error: …` on stderr, got:\n{err}"
    );
    assert!(stdout(out).is_empty(), "stdout: {}", stdout(out));
    for needle in needles {
        assert!(err.contains(needle), "expected {needle:?} in:\n{err}");
    }
    err.trim_end().to_owned()
}

/// Every reason a rejected legacy value can carry (SPEC), as relink names
/// it in summaries, reports and metrics.
pub const REJECT_REASONS: [&str; 9] = [
    "not_a_string",
    "empty",
    "unparseable",
    "scheme",
    "no_host",
    "ip_host",
    "bad_host",
    "credentials",
    "too_long",
];

/// The summary of `relink run --format json` (last stdout line).
pub fn json_summary(out: &Output) -> serde_json::Value {
    let text = stdout(out);
    let line = text.lines().last().unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON summary ({e}): {text}"))
}

/// The check named `name` of a `verify --format json` report: (verdict, value).
#[track_caller]
pub fn verify_check(report: &serde_json::Value, name: &str) -> (String, u64) {
    let check = report["checks"]
        .as_array()
        .and_then(|checks| checks.iter().find(|c| c["name"] == name))
        .unwrap_or_else(|| panic!("verify reported no check {name:?}: {report}"));
    (
        check["verdict"].as_str().unwrap_or_default().to_owned(),
        check["value"]
            .as_u64()
            .unwrap_or_else(|| panic!("check {name:?} has no value: {check}")),
    )
}

/// The line of `verify`'s text output for check `name`: (verdict, value).
#[track_caller]
pub fn verify_line(text: &str, name: &str) -> (String, u64) {
    for line in text.lines() {
        let Some((verdict, rest)) = line.split_once(' ') else {
            continue;
        };
        if let Some(figures) = rest.trim_start().strip_prefix(name) {
            let value = figures
                .split_whitespace()
                .next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("no figure on the line {line:?}"));
            return (verdict.to_owned(), value);
        }
    }
    panic!("verify printed no line for {name:?}:\n{text}");
}

/// Sends a signal (`"KILL"`, `"INT"`, `"TERM"`) to a process with kill(1):
/// the crate forbids `unsafe`, so no `libc::kill`. kill's own complaint
/// goes into the failure message.
#[track_caller]
pub fn send_signal(pid: u32, signal: &str) {
    let out = kill(pid, signal);
    assert!(
        out.status.success(),
        "kill -{signal} {pid} failed: {}",
        stderr(&out).trim()
    );
}

/// kill(1), its output captured: for callers that may find the process
/// gone already (and so must not fail).
fn kill(pid: u32, signal: &str) -> Output {
    Command::new("kill")
        .args([format!("-{signal}"), pid.to_string()])
        .stdin(Stdio::null())
        .output()
        .expect("run kill")
}

/// Polls `check` every 20 ms until it holds; fails the test naming `what`
/// after `timeout`.
pub async fn eventually<F, Fut>(timeout: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while !check().await {
        assert!(
            started.elapsed() < timeout,
            "not within {timeout:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until process `pid` is stopped (SIGSTOP: state `T` in
/// `/proc/PID/stat`); fails the test after `timeout`.
pub async fn wait_stopped(pid: u32, timeout: Duration) {
    let started = Instant::now();
    loop {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // "pid (comm) S …": the state follows the last ')'.
        let state = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .unwrap_or_default()
            .to_owned();
        if state == "T" {
            return;
        }
        assert!(
            started.elapsed() < timeout,
            "process {pid} not stopped within {timeout:?} (state {state:?})"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A relink process running in the background (see [`spawn`]): its output
/// is collected by a thread, so it never blocks on a full pipe, and is
/// shown only if the test fails.
pub struct Spawned {
    pub pid: u32,
    receiver: Receiver<Output>,
    output: Option<Output>,
    exited: bool,
}

/// Starts `cmd` in the background (stdin closed, output captured; see
/// [`Spawned`]).
pub fn spawn(mut cmd: Command) -> Spawned {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn relink");
    let pid = child.id();
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        if let Ok(out) = child.wait_with_output() {
            let _ = sender.send(out);
        }
    });
    Spawned {
        pid,
        receiver,
        output: None,
        exited: false,
    }
}

impl Spawned {
    /// Whether the process has exited (its output is then kept for [`Spawned::wait`]).
    pub fn finished(&mut self) -> bool {
        if !self.exited {
            self.output = self.receiver.try_recv().ok();
            self.exited = self.output.is_some();
        }
        self.exited
    }

    /// Waits (without blocking the async runtime) for the process to exit;
    /// kills it and fails the test, with what it printed, if it takes
    /// longer than `timeout`.
    pub async fn wait(mut self, timeout: Duration) -> Output {
        let started = Instant::now();
        while !self.finished() {
            if started.elapsed() > timeout {
                send_signal(self.pid, "KILL");
                let printed = self.printed();
                panic!(
                    "relink (pid {}) still running after {timeout:?}; killed. {printed}",
                    self.pid
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.output.take().expect("finished")
    }

    /// Sends `signal` and expects relink to stop within `within`: exit 130,
    /// no panic. Returns its output.
    pub async fn stop_with(self, signal: &str, within: Duration) -> Output {
        send_signal(self.pid, signal);
        let signalled = Instant::now();
        let out = self.wait(within + Duration::from_secs(15)).await;
        assert!(
            signalled.elapsed() < within,
            "took {:?} to stop after SIG{signal}\n{}",
            signalled.elapsed(),
            streams(&out)
        );
        assert_code(&out, 130);
        assert_no_panic(&out);
        out
    }

    /// What the (killed or exited) process printed, once its collector has
    /// it (a few seconds at most).
    fn printed(&mut self) -> String {
        let out = match self.output.take() {
            Some(out) => Ok(out),
            None => self.receiver.recv_timeout(Duration::from_secs(5)),
        };
        self.exited = true;
        match out {
            Ok(out) => format!("It printed:\n{}", streams(&out)),
            Err(RecvTimeoutError::Timeout) => "Its output did not come in time.".to_owned(),
            Err(RecvTimeoutError::Disconnected) => "Its output was lost.".to_owned(),
        }
    }
}

/// A test that fails while relink runs in the background must not leave it
/// running: kill it, and show what it printed (the test failed; its output
/// is what the reader needs).
impl Drop for Spawned {
    fn drop(&mut self) {
        let running = !self.finished();
        if running {
            // Not `send_signal`: it may have exited meanwhile, and a panic
            // in a drop during a panic aborts.
            let _ = kill(self.pid, "KILL");
        }
        if std::thread::panicking() && (running || self.output.is_some()) {
            let printed = self.printed();
            eprintln!(
                "relink (pid {}){} when the test failed. {printed}",
                self.pid,
                if running { " killed" } else { " had exited" },
            );
        }
    }
}

/// `psql` (libpq, the reference client) runs `sql` on `conninfo` (a URL or
/// `key=value` string) with `PGPASSWORD` = `password`, none of the caller's
/// other PG* variables, no ~/.pgpass and no ~/.psqlrc; output unaligned,
/// tuples only.
pub fn psql(conninfo: &str, password: Option<&str>, sql: &str) -> Output {
    let mut cmd = Command::new("psql");
    without_pg_env(&mut cmd, &[]);
    cmd.env("PGPASSFILE", "/nonexistent/relink-test-no-pgpass")
        .env("PGCONNECT_TIMEOUT", "5");
    if let Some(password) = password {
        cmd.env("PGPASSWORD", password);
    }
    cmd.args([
        "-X",
        "-w",
        "-q",
        "-At",
        "-v",
        "ON_ERROR_STOP=1",
        "-d",
        conninfo,
        "-c",
        sql,
    ])
    .stdin(Stdio::null())
    .output()
    .unwrap_or_else(|e| panic!("cannot run psql ({e}); Debian: apt-get install postgresql-client"))
}
