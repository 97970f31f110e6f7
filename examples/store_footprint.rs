//! What one worker's store costs for N rides, without any service: loads
//! users and rides through the `Store` API the way the RideShare service
//! writes them (a ride is a batch of "its creator exists" and an insert
//! with an assigned key; the master applies waiting writes in groups),
//! then prints one `key=value` per line: the disk the store takes, per
//! ride too, the time of a count, of the upcoming-rides list for one
//! source/destination pair and of a ride's details (medians of many), and
//! the process's RSS.
//!
//! `cargo run --release --example store_footprint -- [--rides N] [--dir PATH] [--install [--early]]`
//!
//! `--rides` defaults to 100000; `--dir` to a new directory under the
//! system's temporary one, removed at the end (a given one is kept).
//! `--install` also installs a snapshot of the store into a new one and
//! prints its disk and time (a new store installs in parts of a few
//! thousand entries, its memory bounded).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dbaas::model::{CmpOp, Cond, Order, ReadOp, Row, Schema, Value, WriteOp};
use dbaas::store::{wall_clock_ms, Store};

/// Writes the master applies as one group (one sled batch).
const GROUP: u64 = 32;
/// Areas are numbered 1..=198 (`dbaas::rideshare::areas`).
const AREAS: i64 = 198;
/// How many times each timed read runs (the median is printed).
const SAMPLES: usize = 201;

struct Args {
    rides: u64,
    dir: Option<PathBuf>,
    /// Also install a snapshot of the store into a new one.
    install: bool,
    /// That install early (`Store::install_early`): serving from memory
    /// while it is written.
    early: bool,
}

fn args() -> Result<Args, String> {
    let mut out = Args {
        rides: 100_000,
        dir: None,
        install: false,
        early: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{a} needs a value"));
        match a.as_str() {
            "--rides" => {
                out.rides = value()?.parse().map_err(|e| format!("--rides: {e}"))?;
            }
            "--dir" => out.dir = Some(PathBuf::from(value()?)),
            "--install" => out.install = true,
            "--early" => out.early = true,
            "-h" | "--help" => {
                return Err(
                    "usage: store_footprint [--rides N] [--dir PATH] [--install [--early]]".into(),
                );
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(out)
}

fn main() {
    let args = match args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = run(&args) {
        eprintln!("store_footprint: {e}");
        std::process::exit(1);
    }
}

fn run(args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    let (dir, remove) = match &args.dir {
        Some(d) => (d.clone(), false),
        None => (
            std::env::temp_dir().join(format!("store-footprint-{}", std::process::id())),
            true,
        ),
    };
    if dir.exists() && std::fs::read_dir(&dir)?.next().is_some() {
        return Err(format!("{} is not empty", dir.display()).into());
    }
    let schema = Arc::new(Schema::rideshare());
    let users = (args.rides / 100).max(10);
    let mut rng = fastrand::Rng::with_seed(13);
    let now_s = i64::try_from(wall_clock_ms() / 1000)?;

    let started = Instant::now();
    {
        let store = Store::open(&dir.join("store"), schema.clone())?;
        let mut seq = store.applied_seq();
        let mut ride_rng = fastrand::Rng::with_seed(31);
        let mut writes = (0..users)
            .map(insert_user)
            .chain((0..args.rides).map(|_| create_ride(&mut ride_rng, users, now_s)));
        let mut more = true;
        while more {
            let mut group = store.group_at(wall_clock_ms());
            for _ in 0..GROUP {
                let Some(op) = writes.next() else {
                    more = false;
                    break;
                };
                seq += 1;
                group.apply(seq, rng.u128(..), &op)?;
            }
            group.commit()?;
        }
        store.flush()?;
    }
    let load = started.elapsed();

    // Measured as a worker finds its store after a restart.
    let opened = Instant::now();
    let store = Store::open(&dir.join("store"), schema.clone())?;
    let open = opened.elapsed();
    let disk = dir_bytes(&dir.join("store"))?;

    // A count no index covers reads every row: what counting took before
    // the counts were kept. It also brings the rows into the caches, so
    // that the reads timed below find them as a busy worker would.
    let scan = ReadOp::Count {
        table: "rides".into(),
        filter: vec![Cond::new("users", CmpOp::Contains, "nobody")],
    };
    let scanned_in = Instant::now();
    store.read(&scan)?;
    let t_scan = scanned_in.elapsed();

    let count = ReadOp::Count {
        table: "rides".into(),
        filter: Vec::new(),
    };
    let counted = store.read(&count)?.count();
    if counted != args.rides {
        return Err(format!("counted {counted} rides, loaded {}", args.rides).into());
    }
    let t_count = median(|| store.read(&count).map(drop))?;
    let (src, dst) = pair_of_a_ride(&store)?;
    let list = upcoming(src, dst, now_s);
    let listed = store.read(&list)?.count();
    let t_list = median(|| store.read(&list).map(drop))?;
    let mut ids = rng.clone();
    let t_details = median(|| {
        let id = ids.i64(1..=i64::try_from(args.rides.max(1)).unwrap_or(i64::MAX));
        store.read(&details(id)).map(drop)
    })?;

    let rss = rss_bytes().unwrap_or(0);

    // What a snapshot installed into a new store takes (sled writes a
    // fresh store without the garbage of many small batches).
    let installed = if args.install {
        let snap = store.snapshot()?;
        let copy_dir = dir.join("copy");
        let installed_in = Instant::now();
        let copy = Store::open(&copy_dir, schema)?;
        if args.early {
            copy.install_early(snap)?;
            println!("early_serving_ms={:.1}", ms(installed_in.elapsed()));
            println!("early_serving_rss_bytes={}", rss_bytes().unwrap_or(0));
            copy.flush()?;
        } else {
            copy.install(&snap)?;
            drop(snap);
        }
        let took = installed_in.elapsed();
        drop(copy);
        Some((dir_bytes(&copy_dir)?, took))
    } else {
        None
    };

    let rides = args.rides.max(1) as f64;
    println!("rides={}", args.rides);
    println!("users={users}");
    println!("load_s={:.2}", load.as_secs_f64());
    println!("open_ms={:.1}", ms(open));
    println!("disk_bytes={disk}");
    println!("disk_bytes_per_ride={:.0}", disk as f64 / rides);
    if let Some((copy_disk, install)) = installed {
        println!("installed_copy_disk_bytes={copy_disk}");
        println!(
            "installed_copy_bytes_per_ride={:.0}",
            copy_disk as f64 / rides
        );
        println!("install_ms={:.1}", ms(install));
    }
    println!("scan_count_ms={:.2}", ms(t_scan));
    println!("count_ms={:.4}", ms(t_count));
    println!("list_rows={listed}");
    println!("list_ms={:.4}", ms(t_list));
    println!("details_ms={:.4}", ms(t_details));
    println!("rss_bytes={rss}");
    drop(store);
    if remove {
        // The store may still be held for a moment by sled's flusher.
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::fs::remove_dir_all(&dir).is_err() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    Ok(())
}

fn insert_user(n: u64) -> WriteOp {
    WriteOp::Insert {
        table: "users".into(),
        row: Row::from([
            ("username".to_owned(), Value::from(format!("user{n}"))),
            (
                "password".to_owned(),
                Value::from("0123456789abcdef".repeat(3)[..40].to_owned()),
            ),
        ]),
    }
}

/// A new ride as the rides service writes it: its creator must exist.
fn create_ride(rng: &mut fastrand::Rng, users: u64, now_s: i64) -> WriteOp {
    let creator = format!("user{}", rng.u64(0..users));
    WriteOp::Batch {
        ops: vec![
            WriteOp::Require {
                table: "users".into(),
                key: Value::from(creator.as_str()),
                exists: true,
            },
            WriteOp::InsertAuto {
                table: "rides".into(),
                row: Row::from([
                    ("created_by".to_owned(), Value::from(creator)),
                    // Within the next 30 days, so every ride is upcoming.
                    (
                        "timestamp".to_owned(),
                        Value::Int(now_s + rng.i64(60..30 * 86_400)),
                    ),
                    ("source".to_owned(), Value::Int(rng.i64(1..=AREAS))),
                    ("destination".to_owned(), Value::Int(rng.i64(1..=AREAS))),
                    ("users".to_owned(), Value::List(Vec::new())),
                ]),
            },
        ],
    }
}

/// The areas of the first ride (rides are spread evenly over all pairs).
fn pair_of_a_ride(store: &Store) -> Result<(i64, i64), Box<dyn std::error::Error>> {
    let rows = store.read(&details(1))?.into_rows();
    let area = |col: &str| rows.first().and_then(|r| r.get(col)?.as_int()).unwrap_or(1);
    Ok((area("source"), area("destination")))
}

/// The upcoming-rides list exactly as the rides service asks for it.
fn upcoming(source: i64, destination: i64, now_s: i64) -> ReadOp {
    ReadOp::Select {
        table: "rides".into(),
        filter: vec![
            Cond::new("source", CmpOp::Eq, source),
            Cond::new("destination", CmpOp::Eq, destination),
            Cond::new("timestamp", CmpOp::Gt, now_s),
        ],
        columns: Some(vec![
            "ride_id".into(),
            "created_by".into(),
            "timestamp".into(),
        ]),
        order_by: Some(Order {
            column: "timestamp".into(),
            desc: false,
        }),
        limit: None,
    }
}

/// A ride's details as the rides service reads them.
fn details(id: i64) -> ReadOp {
    ReadOp::Get {
        table: "rides".into(),
        key: Value::Int(id),
        columns: None,
    }
}

/// The median time of `SAMPLES` runs of `f`.
fn median<E>(mut f: impl FnMut() -> Result<(), E>) -> Result<Duration, E> {
    let mut times = Vec::with_capacity(SAMPLES);
    for _ in 0..SAMPLES {
        let t = Instant::now();
        f()?;
        times.push(t.elapsed());
    }
    times.sort();
    Ok(times[SAMPLES / 2])
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The bytes of every file under `dir`.
fn dir_bytes(dir: &Path) -> std::io::Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        total += if meta.is_dir() {
            dir_bytes(&entry.path())?
        } else {
            meta.len()
        };
    }
    Ok(total)
}

/// The resident set of this process (Linux), in bytes.
fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}
