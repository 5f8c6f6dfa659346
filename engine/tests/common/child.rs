//! A volume driven from another process: the test binary runs itself again
//! with only the calling test selected and `HLFS_TEST_CHILD` set, and that
//! test, seeing the variable, serves one read-write `Volume` over a line
//! protocol on stdin/stdout instead of testing (`serve_if_child`). The
//! parent sends commands and reads the replies (`RemoteVolume`), and can
//! SIGKILL the child at any moment, e.g. with a command under way: a real
//! crash of a real writer, its HDFS client and leases included.
//!
//! Commands (one a line): `write OFF SEED LEN` (`pattern(SEED, LEN)` at
//! OFF), `zero OFF LEN`, `flush`, `snap NAME`, `drop` (drop the Volume, which
//! closes it), `exit`. Replies: `ok` or `err MESSAGE`. The child says
//! `open` (or `err ...`) once the volume is open.

use super::pattern;
use hlfs::{OpenOptions, Volume};
use std::io::{BufRead, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const ROLE: &str = "HLFS_TEST_CHILD";
/// Protocol lines start with this (the test harness prints its own lines).
const TAG: &str = "hlfs-child: ";

/// How the child opens its volume: the parts of `OpenOptions` tests set.
#[derive(Debug, Clone)]
pub struct ChildOpts {
    pub index_root: std::path::PathBuf,
    pub segment_size: u64,
    pub checkpoint_every: u64,
    pub rewrite_attempts: u32,
    pub rewrite_wait: Duration,
}

impl ChildOpts {
    pub fn from(o: &OpenOptions) -> ChildOpts {
        ChildOpts {
            index_root: o.index_root.clone().expect("the child needs an index root"),
            segment_size: o.segment_size,
            checkpoint_every: o.checkpoint_every,
            rewrite_attempts: o.rewrite_attempts,
            rewrite_wait: o.rewrite_wait,
        }
    }

    fn env(&self, uri: &str) -> Vec<(&'static str, String)> {
        vec![
            (ROLE, uri.to_string()),
            ("HLFS_TEST_CHILD_INDEX", self.index_root.display().to_string()),
            ("HLFS_TEST_CHILD_SEGMENT", self.segment_size.to_string()),
            ("HLFS_TEST_CHILD_CHECKPOINT", self.checkpoint_every.to_string()),
            ("HLFS_TEST_CHILD_ATTEMPTS", self.rewrite_attempts.to_string()),
            ("HLFS_TEST_CHILD_WAIT_MS", self.rewrite_wait.as_millis().to_string()),
        ]
    }

    fn from_env() -> OpenOptions {
        let get = |k: &str| std::env::var(k).unwrap_or_else(|_| panic!("child: {k} is not set"));
        let num = |k: &str| get(k).parse::<u64>().unwrap_or_else(|e| panic!("child: {k}: {e}"));
        OpenOptions {
            index_root: Some(get("HLFS_TEST_CHILD_INDEX").into()),
            segment_size: num("HLFS_TEST_CHILD_SEGMENT"),
            checkpoint_every: num("HLFS_TEST_CHILD_CHECKPOINT"),
            rewrite_attempts: num("HLFS_TEST_CHILD_ATTEMPTS") as u32,
            rewrite_wait: Duration::from_millis(num("HLFS_TEST_CHILD_WAIT_MS")),
            ..Default::default()
        }
    }
}

fn say(line: &str) {
    let mut o = std::io::stdout().lock();
    writeln!(o, "{TAG}{line}").unwrap();
    o.flush().unwrap();
}

fn reply(r: hlfs::Result<()>) {
    match r {
        Ok(()) => say("ok"),
        // One line: the parent reads line by line.
        Err(e) => say(&format!("err {}", e.to_string().replace('\n', " "))),
    }
}

/// In a child started by `RemoteVolume::spawn`: serves its volume until
/// `exit` or the end of stdin, and returns true (the test function returns
/// at once). In the parent: returns false.
pub fn serve_if_child() -> bool {
    let Ok(uri) = std::env::var(ROLE) else {
        return false;
    };
    let mut vol = match Volume::open(&uri, &ChildOpts::from_env()) {
        Ok(v) => {
            say("open");
            Some(v)
        }
        Err(e) => {
            reply(Err(e));
            return true;
        }
    };
    for line in std::io::stdin().lock().lines() {
        let line = line.unwrap();
        let w: Vec<&str> = line.split_whitespace().collect();
        let n = |i: usize| w[i].parse::<u64>().unwrap();
        let v = || vol.as_ref().expect("child: the volume was dropped");
        match w.as_slice() {
            ["write", _, _, _] => reply(v().write(n(1), &pattern(n(2), n(3) as usize))),
            ["zero", _, _] => reply(v().write_zeroes(n(1), n(2))),
            ["flush"] => reply(v().flush()),
            ["snap", name] => reply(v().snapshot_create(name)),
            ["drop"] => {
                drop(vol.take());
                say("ok");
            }
            ["exit"] => break,
            _ => panic!("child: unknown command {line:?}"),
        }
    }
    true
}

/// The parent's end: a child process holding `uri` open read-write.
pub struct RemoteVolume {
    proc: std::process::Child,
    stdin: Option<std::process::ChildStdin>,
    lines: mpsc::Receiver<String>,
    what: String,
}

/// How long a reply may take (a fenced writer's flush retries for a while).
const REPLY_WITHIN: Duration = Duration::from_secs(120);

impl RemoteVolume {
    /// Starts test `test` (the caller, which must call `serve_if_child`
    /// first) in a child process that opens `uri` read-write with `opts`,
    /// and waits until it has. Panics if the open fails.
    pub fn spawn(test: &str, uri: &str, opts: &ChildOpts) -> RemoteVolume {
        let mut r = Self::start(test, uri, opts);
        let first = r.recv().unwrap_or_else(|| panic!("{}: exited before opening", r.what));
        assert_eq!(first, "open", "{}: opening {uri}", r.what);
        r
    }

    fn start(test: &str, uri: &str, opts: &ChildOpts) -> RemoteVolume {
        let exe = std::env::current_exe().expect("test binary path");
        let mut proc = Command::new(&exe)
            .args([test, "--exact", "--ignored", "--nocapture", "--test-threads", "1"])
            .envs(opts.env(uri))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", exe.display()));
        let what = format!("child writer (pid {}) of {test}", proc.id());
        let stdout = proc.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for l in std::io::BufReader::new(stdout).lines() {
                let Ok(l) = l else { break };
                // The harness's "test NAME ... " has no newline of its own.
                if let Some(i) = l.find(TAG) {
                    if tx.send(l[i + TAG.len()..].to_string()).is_err() {
                        break;
                    }
                }
            }
        });
        let stdin = proc.stdin.take();
        RemoteVolume { proc, stdin, lines, what }
    }

    /// Process id of the child.
    pub fn pid(&self) -> u32 {
        self.proc.id()
    }

    /// The next protocol line, None once the child's stdout closed.
    fn recv(&mut self) -> Option<String> {
        match self.lines.recv_timeout(REPLY_WITHIN) {
            Ok(l) => Some(l),
            Err(mpsc::RecvTimeoutError::Disconnected) => None,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let _ = self.proc.kill();
                panic!("{}: no reply within {REPLY_WITHIN:?}", self.what)
            }
        }
    }

    /// Sends a command without waiting for its reply.
    pub fn send(&mut self, cmd: &str) {
        let s = self.stdin.as_mut().expect("stdin");
        writeln!(s, "{cmd}")
            .and_then(|()| s.flush())
            .unwrap_or_else(|e| panic!("{}: sending {cmd:?}: {e}", self.what));
    }

    /// The reply to the command sent last: Ok, or Err with the child's message.
    pub fn reply(&mut self) -> Result<(), String> {
        match self.recv() {
            Some(l) if l == "ok" => Ok(()),
            Some(l) => match l.strip_prefix("err ") {
                Some(m) => Err(m.to_string()),
                None => panic!("{}: unexpected line {l:?}", self.what),
            },
            None => panic!("{}: exited without replying", self.what),
        }
    }

    /// Sends a command and waits for its reply.
    pub fn call(&mut self, cmd: &str) -> Result<(), String> {
        self.send(cmd);
        self.reply()
    }

    /// SIGKILL, and reaps the child (a zombie would still look alive to the
    /// lock's holder check). Returns the replies it had written before
    /// dying that were not read yet.
    pub fn kill(mut self) -> Vec<Result<(), String>> {
        self.proc.kill().unwrap_or_else(|e| panic!("{}: kill: {e}", self.what));
        self.proc.wait().unwrap();
        drop(self.stdin.take());
        let mut out = Vec::new();
        // The reader thread ends at the closed pipe: everything is in the channel.
        while let Ok(l) = self.lines.recv_timeout(Duration::from_secs(10)) {
            out.push(if l == "ok" {
                Ok(())
            } else {
                Err(l.strip_prefix("err ").unwrap_or(&l).to_string())
            });
        }
        out
    }

    /// Asks the child to exit and checks that it did so cleanly.
    pub fn exit(mut self) {
        self.send("exit");
        drop(self.stdin.take());
        let st = self.proc.wait().unwrap();
        assert!(st.success(), "{}: exited with {st}", self.what);
    }
}
