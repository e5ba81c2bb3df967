//! Side by side: our Redis writer against the `redis` crate (redis-rs) on
//! the same rendered multi-member ZADDs, into real `redis-server`s started
//! here (one server, and a three-master Redis Cluster), in the same run.
//!
//! It decided how the collector writes through redis-rs: its connections
//! and reply parser carry our pipelines at our rate (so the hand-written
//! RESP client went), while its pipeline types would build every command
//! again and its cluster pipeline does not follow `MOVED` (the probe
//! below), so our slot routing stays. Run it with
//! `scripts/bench_redis_client.sh` (a release `cargo test -- --ignored`);
//! it prints samples/s per contender, the median of interleaved rounds.

use std::io::Write as _;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::cluster::key_slot;
use super::format::{push_f64, score, Resp};
use super::redis::{parse_url, Job, RedisSink, Route};

const FUNCTIONS: usize = 20;
const SAMPLES: usize = 200_000;
const PER_COMMAND: usize = 1000;
const ROUNDS: usize = 7;

struct Server {
    child: Child,
    port: u16,
    _dir: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start_server(extra: &[&str]) -> Server {
    let port = free_port();
    let dir = std::env::temp_dir().join(format!("edgeless-client-bench-{port}"));
    std::fs::create_dir_all(&dir).unwrap();
    let child = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
        ])
        .args(["--appendonly", "no", "--daemonize", "no", "--dir"])
        .arg(&dir)
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server is installed");
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while client.get_connection().is_err() {
        assert!(Instant::now() < deadline, "redis-server did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    Server {
        child,
        port,
        _dir: dir,
    }
}

fn conn(port: u16) -> redis::Connection {
    redis::Client::open(format!("redis://127.0.0.1:{port}/"))
        .unwrap()
        .get_connection()
        .unwrap()
}

/// Three masters, slots in thirds, joined and settled.
fn start_cluster() -> Vec<Server> {
    let servers: Vec<Server> = (0..3)
        .map(|_| start_server(&["--cluster-enabled", "yes"]))
        .collect();
    for (i, s) in servers.iter().enumerate() {
        let (lo, hi) = (i * 16384 / 3, (i + 1) * 16384 / 3 - 1);
        redis::cmd("CLUSTER")
            .arg("ADDSLOTSRANGE")
            .arg(lo)
            .arg(hi)
            .exec(&mut conn(s.port))
            .unwrap();
    }
    let mut first = conn(servers[0].port);
    for s in &servers[1..] {
        redis::cmd("CLUSTER")
            .arg("MEET")
            .arg("127.0.0.1")
            .arg(s.port)
            .exec(&mut first)
            .unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ok = servers.iter().all(|s| {
            let mut c = conn(s.port);
            let info: String = redis::cmd("CLUSTER").arg("INFO").query(&mut c).unwrap();
            let slots: Vec<redis::Value> =
                redis::cmd("CLUSTER").arg("SLOTS").query(&mut c).unwrap();
            info.contains("cluster_state:ok") && slots.len() == 3
        });
        if ok {
            return servers;
        }
        assert!(Instant::now() < deadline, "cluster did not form");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// (score text, member text) of one sample.
type Member = (Vec<u8>, Vec<u8>);

/// One body's worth of ZADDs: (key, [(score, member)]) and the RESP bytes
/// our renderer makes of them, with each command's slot.
struct Batch {
    keys: Vec<(Vec<u8>, Vec<Member>)>,
    payload: Vec<u8>,
    commands: usize,
    routes: Vec<Route>,
}

fn batch(round: usize) -> Batch {
    let mut keys = Vec::new();
    let per_fn = SAMPLES / FUNCTIONS;
    for f in 0..FUNCTIONS {
        let key = format!("performance:{:032x}:function_execution_time", f + 1).into_bytes();
        let members: Vec<Member> = (0..per_fn)
            .map(|i| {
                let mut s = Vec::new();
                push_f64(
                    &mut s,
                    score(1_760_000_000 + round as i64 * 1000, (i * 1000) as u32),
                );
                let mut m = s.clone();
                m.push(b':');
                push_f64(&mut m, 0.001 + (i % 997) as f64 * 1e-6);
                (s, m)
            })
            .collect();
        keys.push((key, members));
    }
    let (mut payload, mut commands, mut routes) = (Vec::new(), 0, Vec::new());
    for (key, members) in &keys {
        for chunk in members.chunks(PER_COMMAND) {
            let start = payload.len();
            let mut resp = Resp { buf: &mut payload };
            resp.array(2 + 2 * chunk.len());
            resp.bulk(&[b"ZADD"]);
            resp.bulk(&[key]);
            for (s, m) in chunk {
                resp.bulk(&[s]);
                resp.bulk(&[m]);
            }
            commands += 1;
            let end = payload.len();
            routes.push(Route {
                slot: key_slot(key),
                start,
                end,
            });
        }
    }
    Batch {
        keys,
        payload,
        commands,
        routes,
    }
}

/// redis-rs's own way: one `Cmd` per multi-member ZADD, built from the
/// texts (what switching would build per batch instead of our bytes).
fn commands(b: &Batch) -> Vec<redis::Cmd> {
    let mut out = Vec::with_capacity(b.commands);
    for (key, members) in &b.keys {
        for chunk in members.chunks(PER_COMMAND) {
            let mut c = redis::cmd("ZADD");
            c.arg(key);
            for (s, m) in chunk {
                c.arg(s).arg(m);
            }
            out.push(c);
        }
    }
    out
}

fn added(values: &[redis::Value]) -> i64 {
    values
        .iter()
        .map(|v| match v {
            redis::Value::Int(n) => *n,
            other => panic!("unexpected reply {other:?}"),
        })
        .sum()
}

fn ours(url: &str, b: &Batch) -> f64 {
    let sink = RedisSink::start(parse_url(url).unwrap(), 1 << 30).unwrap();
    let job = Job {
        payload: b.payload.clone(),
        commands: b.commands,
        members: SAMPLES as u64,
        samples: SAMPLES as u64,
        routes: if url.starts_with("redis+cluster") {
            b.routes.clone()
        } else {
            Vec::new()
        },
        id: 0,
    };
    // Connect (and read the slot map) outside the timing, as a running
    // collector has done long before.
    sink.push(Job {
        payload: b"*1\r\n$4\r\nPING\r\n".to_vec(),
        commands: 1,
        members: 0,
        samples: 0,
        routes: vec![Route {
            slot: 0,
            start: 0,
            end: 14,
        }],
        id: 0,
    });
    assert!(sink.flush(Duration::from_secs(30)));
    let t = Instant::now();
    sink.push(job);
    assert!(sink.flush(Duration::from_secs(60)));
    let dt = t.elapsed().as_secs_f64();
    assert_eq!(
        sink.stats()
            .members_added
            .load(std::sync::atomic::Ordering::Relaxed),
        SAMPLES as u64
    );
    sink.close(Duration::ZERO);
    SAMPLES as f64 / dt
}

fn redis_rs_packed(port: u16, b: &Batch) -> f64 {
    use redis::ConnectionLike;
    let mut c = conn(port);
    let t = Instant::now();
    let replies = c.req_packed_commands(&b.payload, 0, b.commands).unwrap();
    let dt = t.elapsed().as_secs_f64();
    assert_eq!(added(&replies), SAMPLES as i64);
    SAMPLES as f64 / dt
}

fn redis_rs_pipeline(port: u16, b: &Batch) -> f64 {
    let mut c = conn(port);
    let t = Instant::now();
    let mut pipe = redis::pipe();
    for cmd in commands(b) {
        pipe.add_command(cmd);
    }
    let replies: Vec<redis::Value> = pipe.query(&mut c).unwrap();
    let dt = t.elapsed().as_secs_f64();
    assert_eq!(added(&replies), SAMPLES as i64);
    SAMPLES as f64 / dt
}

/// redis-rs's cluster client, seeded with every master.
fn cluster_connection(ports: &[u16]) -> redis::cluster::ClusterConnection {
    let nodes: Vec<String> = ports
        .iter()
        .map(|p| format!("redis://127.0.0.1:{p}/"))
        .collect();
    redis::cluster::ClusterClient::new(nodes)
        .unwrap()
        .get_connection()
        .unwrap()
}

fn redis_rs_cluster(ports: &[u16], b: &Batch) -> f64 {
    let mut c = cluster_connection(ports);
    let t = Instant::now();
    let mut pipe = redis::cluster::cluster_pipe();
    for cmd in commands(b) {
        pipe.add_command(cmd);
    }
    let replies: Vec<redis::Value> = pipe.query(&mut c).unwrap();
    let dt = t.elapsed().as_secs_f64();
    assert_eq!(added(&replies), SAMPLES as i64);
    SAMPLES as f64 / dt
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(|a, b| a.partial_cmp(b).unwrap());
    xs[xs.len() / 2]
}

fn report(name: &str, xs: Vec<f64>) {
    let (lo, hi) = xs
        .iter()
        .fold((f64::MAX, 0f64), |(l, h), x| (l.min(*x), h.max(*x)));
    let line = format!(
        "{name:<58} {:>6.0}k samples/s (min {:.0}k, max {:.0}k)",
        median(xs) / 1e3,
        lo / 1e3,
        hi / 1e3
    );
    println!("{line}");
    let _ = std::io::stdout().flush();
}

#[test]
#[ignore = "a benchmark: scripts/bench_redis_client.sh"]
fn redis_clients_side_by_side() {
    let server = start_server(&[]);
    let url = format!("redis://127.0.0.1:{}/0", server.port);
    let mut flush = conn(server.port);
    let mut by = [Vec::new(), Vec::new(), Vec::new()];
    for round in 0..ROUNDS {
        let batch = batch(round);
        // Rotate the order each round so no contender always goes first.
        for i in 0..3 {
            let who = (i + round) % 3;
            redis::cmd("FLUSHALL").exec(&mut flush).unwrap();
            by[who].push(match who {
                0 => ours(&url, &batch),
                1 => redis_rs_packed(server.port, &batch),
                _ => redis_rs_pipeline(server.port, &batch),
            });
        }
    }
    let [ours_single, packed, pipeline] = by;
    println!("{SAMPLES} samples of {FUNCTIONS} functions per round, {PER_COMMAND} members per ZADD, {ROUNDS} rounds");
    report(
        "one Redis: ours (writer thread, each reply checked, until acked)",
        ours_single,
    );
    report(
        "one Redis: redis-rs req_packed_commands, same bytes",
        packed,
    );
    report(
        "one Redis: redis-rs pipe() of Cmds built per batch",
        pipeline,
    );
    drop(server);

    let cluster = start_cluster();
    let ports: Vec<u16> = cluster.iter().map(|s| s.port).collect();
    let url = format!("redis+cluster://127.0.0.1:{}", ports[0]);
    let mut flushers: Vec<redis::Connection> = ports.iter().map(|p| conn(*p)).collect();
    let mut by = [Vec::new(), Vec::new()];
    for round in 0..ROUNDS {
        let batch = batch(round);
        for i in 0..2 {
            let who = (i + round) % 2;
            for f in &mut flushers {
                redis::cmd("FLUSHALL").exec(f).unwrap();
            }
            by[who].push(match who {
                0 => ours(&url, &batch),
                _ => redis_rs_cluster(&ports, &batch),
            });
        }
    }
    let [a, b] = by;
    report("Redis Cluster, 3 masters: ours", a);
    report(
        "Redis Cluster, 3 masters: redis-rs cluster_pipe() of Cmds",
        b,
    );
}

/// Why the collector does not use redis-rs's cluster pipeline: an empty
/// slot is moved to another master after the client read the slot map,
/// then a pipeline writes to it. Prints what redis-rs answers.
#[test]
#[ignore = "a probe of redis-rs: scripts/bench_redis_client.sh"]
fn redis_rs_cluster_pipeline_meets_moved() {
    let cluster = start_cluster();
    let ports: Vec<u16> = cluster.iter().map(|s| s.port).collect();
    let mut c = cluster_connection(&ports);
    let key = b"performance:moved:function_execution_time";
    let slot = key_slot(key) as usize;
    let owner = (0..3)
        .find(|i| (i * 16384 / 3..(i + 1) * 16384 / 3).contains(&slot))
        .unwrap();
    let target = (owner + 1) % 3;
    let id: String = redis::cmd("CLUSTER")
        .arg("MYID")
        .query(&mut conn(ports[target]))
        .unwrap();
    for i in [target, owner, (owner + 2) % 3] {
        redis::cmd("CLUSTER")
            .arg("SETSLOT")
            .arg(slot)
            .arg("NODE")
            .arg(&id)
            .exec(&mut conn(ports[i]))
            .unwrap();
    }
    let mut pipe = redis::cluster::cluster_pipe();
    pipe.cmd("ZADD").arg(&key[..]).arg(1).arg("a");
    let result: redis::RedisResult<Vec<redis::Value>> = pipe.query(&mut c);
    println!("redis-rs cluster_pipe() after a slot moved: {result:?}");
    let single: redis::RedisResult<redis::Value> = redis::cmd("ZADD")
        .arg(&key[..])
        .arg(2)
        .arg("b")
        .query(&mut c);
    println!("redis-rs single command after a slot moved: {single:?}");
}
