//! A process killed while it feeds sled loses nothing acknowledged.
//!
//! sled gets the map's changes off the write path: after each periodic
//! checkpoint, at close, and when pages of a map past its budget are sent
//! out (design.md §3, §8). None of that is behind the backend, so the crash
//! tests' fault-injecting backend cannot stop it half-way. Here a real child
//! process (this test binary, running this test in child mode) writes, flushes, writes
//! checkpoints and closes and reopens in a loop, on a small map budget and a
//! small checkpoint interval, so that sled is written most of the time; the
//! parent kills it with SIGKILL at a random moment, then reopens the volume
//! and checks every block against what the child had acknowledged.

use hlfs::{OpenOptions, Volume};
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BS: u64 = 4096;
const SIZE: u64 = 256 << 20;
const WRITES_PER_ROUND: u64 = 48;
const ROUNDS_PER_OPEN: u64 = 6;

fn opts() -> OpenOptions {
    OpenOptions {
        segment_size: 1 << 20,
        checkpoint_every: 512 << 10,
        // About 160 extents: pages go out to sled all the time.
        map_memory: 16 << 10,
        ..OpenOptions::default()
    }
}

/// The blocks round `r` writes, and what it writes there.
fn round(r: u64) -> Vec<(u64, u8)> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(r);
    (0..WRITES_PER_ROUND)
        .map(|_| {
            // Scattered over 4 pages, so that several pages are in play.
            let b = rng.gen_range(0..SIZE / BS);
            (b, (r % 251) as u8 + 1)
        })
        .collect()
}

/// The child process (this test binary, running the same test with
/// `HLFS_FEED_CHILD_URI` set): writes rounds until killed, printing
/// "acked R" once round R is flushed.
fn feed_child(uri: &str) -> ! {
    let uri = uri.to_string();
    let start: u64 = std::env::var("HLFS_FEED_CHILD_START").unwrap().parse().unwrap();
    let mut r = start;
    loop {
        let v = Volume::open(&uri, &opts()).unwrap();
        for _ in 0..ROUNDS_PER_OPEN {
            for (b, fill) in round(r) {
                v.write(b * BS, &vec![fill; BS as usize]).unwrap();
            }
            v.flush().unwrap();
            println!("acked {r}");
            r += 1;
        }
        // Close feeds sled with everything changed since the last feed.
        v.close().unwrap();
    }
}

#[test]
fn a_kill_while_sled_is_fed_loses_nothing() {
    if let Ok(uri) = std::env::var("HLFS_FEED_CHILD_URI") {
        feed_child(&uri);
    }
    let dir = tempfile::tempdir().unwrap();
    let uri = format!("local://{}/v", dir.path().display());
    Volume::create(&uri, SIZE).unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(2026);
    let mut model: BTreeMap<u64, u8> = BTreeMap::new();
    let mut next = 0u64;
    let kills = std::env::var("HLFS_FEED_KILLS").ok().and_then(|v| v.parse().ok()).unwrap_or(12);
    let mut rounds_total = 0;
    for kill in 0..kills {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "a_kill_while_sled_is_fed_loses_nothing", "--nocapture", "--test-threads=1"])
            .env("HLFS_FEED_CHILD_URI", &uri)
            .env("HLFS_FEED_CHILD_START", next.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        // Kill after a random number of acknowledged rounds, plus a random
        // part of a round.
        let want = rng.gen_range(2..3 * ROUNDS_PER_OPEN);
        let (tx, rx) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if let Some(r) = line.strip_prefix("acked ") {
                    let _ = tx.send(r.parse::<u64>().unwrap());
                }
            }
        });
        let mut acked: Option<u64> = None;
        let deadline = Instant::now() + Duration::from_secs(120);
        while acked.map_or(0, |a| a + 1 - next) < want {
            match rx.recv_timeout(Duration::from_secs(1)) {
                Ok(r) => acked = Some(r),
                Err(_) => assert!(Instant::now() < deadline, "kill {kill}: the child stopped acknowledging"),
            }
        }
        std::thread::sleep(Duration::from_micros(rng.gen_range(0..20_000)));
        child.kill().unwrap();
        child.wait().unwrap();
        reader.join().unwrap();
        // Rounds acknowledged after `want` (between the last read and the kill).
        while let Ok(r) = rx.try_recv() {
            acked = Some(r);
        }
        let acked = acked.unwrap();
        // Blocks of acknowledged rounds must hold them; a block the round
        // in flight wrote may hold either.
        let mut maybe: BTreeMap<u64, u8> = BTreeMap::new();
        for r in next..=acked {
            for (b, fill) in round(r) {
                model.insert(b, fill);
            }
        }
        for (b, fill) in round(acked + 1) {
            maybe.insert(b, fill);
        }
        let v = Volume::open(&uri, &opts()).unwrap();
        let mut buf = vec![0u8; BS as usize];
        // Every block any round touched, plus some never written.
        let mut probes: Vec<u64> = model.keys().chain(maybe.keys()).copied().collect();
        probes.extend((0..64).map(|_| rng.gen_range(0..SIZE / BS)));
        for b in probes {
            v.read(b * BS, &mut buf).unwrap();
            let want = model.get(&b).copied().unwrap_or(0);
            let ok = buf.iter().all(|&x| x == want)
                || maybe.get(&b).is_some_and(|&m| buf.iter().all(|&x| x == m));
            assert!(ok, "kill {kill} (after round {acked}): block {b} reads {}, want {want}", buf[0]);
        }
        // The round in flight, where it landed, is now part of the volume.
        for (b, _) in round(acked + 1) {
            v.read(b * BS, &mut buf).unwrap();
            model.insert(b, buf[0]);
        }
        v.close().unwrap();
        rounds_total += acked + 1 - next;
        next = acked + 2;
    }
    assert!(hlfs::fsck(&uri, false).unwrap().errors.is_empty());
    eprintln!("{kills} kills, {rounds_total} acknowledged rounds, every block as acknowledged");
}
