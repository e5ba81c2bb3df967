//! Redis Cluster for the Redis sink: the same ready-made ZADD pipelines,
//! split by key slot over one connection per master.
//!
//! The slot map comes from `CLUSTER SLOTS` (asked of any known node or
//! seed). A job's commands are grouped by the master owning their slot,
//! each group written in one go and its replies read in order. Redirections
//! are followed: `MOVED` updates that slot, marks the map stale and the map
//! is read again before the next round; `ASK` sends that one command again
//! to the named node behind `ASKING`; `TRYAGAIN` retries after a pause.
//! Every other reply is the command's outcome, as with a single Redis
//! (`replies.rs`); a lost connection resends the whole job. A command sent
//! twice stores nothing twice (ZADD of the same member and score).
//! Connections and reply parsing come from the `redis` crate; its own
//! cluster pipeline is not used because it reports one error for a whole
//! pipeline and does not follow redirections inside one.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use super::connection::{error_text, Connection};
use super::redis::{Failure, Job, RedisConfig, RedisStats};
use super::replies::{classify_error, count_error, Outcome};
use redis::Value;
use std::sync::atomic::Ordering::Relaxed;

pub const SLOTS: usize = 16384;
const UNKNOWN: u16 = u16::MAX;
const ASKING: &[u8] = b"*1\r\n$6\r\nASKING\r\n";
/// Redirection rounds per job before giving up (and retrying the job).
const MAX_ROUNDS: usize = 8;

/// CRC16/XMODEM, the checksum Redis Cluster hashes keys with.
fn crc16(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &b in data {
        crc ^= (b as u16) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// The cluster slot of `key`, honouring a `{hash tag}` as Redis does.
pub fn key_slot(key: &[u8]) -> u16 {
    let mut hashed = key;
    if let Some(open) = key.iter().position(|&b| b == b'{') {
        if let Some(len) = key[open + 1..].iter().position(|&b| b == b'}') {
            if len > 0 {
                hashed = &key[open + 1..open + 1 + len];
            }
        }
    }
    crc16(hashed) % SLOTS as u16
}

enum Redirect {
    Moved(u16, String, u16),
    Ask(String, u16),
}

/// `MOVED <slot> <host>:<port>` / `ASK <slot> <host>:<port>`; an empty host
/// means the node that answered.
fn redirect(error: &str, answering_host: &str) -> Option<Redirect> {
    let mut parts = error.split(' ');
    let kind = parts.next()?;
    let slot: u16 = parts.next()?.parse().ok()?;
    let (host, port) = parts.next()?.rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    let host = if host.is_empty() {
        answering_host
    } else {
        host
    };
    let host = host.trim_matches(['[', ']']).to_owned();
    match kind {
        "MOVED" if (slot as usize) < SLOTS => Some(Redirect::Moved(slot, host, port)),
        "ASK" => Some(Redirect::Ask(host, port)),
        _ => None,
    }
}

pub(super) struct Cluster {
    /// Slot -> index in `nodes` (`UNKNOWN` until the map is read).
    slots: Vec<u16>,
    nodes: Vec<(String, u16)>,
    conns: HashMap<usize, Connection>,
    stale: bool,
}

impl Default for Cluster {
    fn default() -> Self {
        Self::new()
    }
}

impl Cluster {
    pub fn new() -> Self {
        Self {
            slots: vec![UNKNOWN; SLOTS],
            nodes: Vec::new(),
            conns: HashMap::new(),
            stale: true,
        }
    }

    /// Forgets connections (after a failure); the map is read again.
    pub fn reset(&mut self) {
        self.conns.clear();
        self.stale = true;
    }

    fn node_index(&mut self, host: &str, port: u16) -> usize {
        match self.nodes.iter().position(|(h, p)| h == host && *p == port) {
            Some(i) => i,
            None => {
                self.nodes.push((host.to_owned(), port));
                self.nodes.len() - 1
            }
        }
    }

    /// Reads the slot map from the first known node or seed that answers.
    fn refresh(&mut self, config: &RedisConfig, stats: &RedisStats) -> Result<(), Failure> {
        stats.map_reads.fetch_add(1, Relaxed);
        let mut candidates = self.nodes.clone();
        candidates.extend(config.seeds.iter().cloned());
        let mut last = String::from("no seed nodes");
        for (host, port) in candidates {
            match Self::read_slots(config, &host, port) {
                Ok(ranges) => {
                    let mut slots = vec![UNKNOWN; SLOTS];
                    for (start, end, h, p) in ranges {
                        let h = if h.is_empty() { host.clone() } else { h };
                        let node = self.node_index(&h, p) as u16;
                        if start < SLOTS {
                            slots[start..=end.min(SLOTS - 1)].fill(node);
                        }
                    }
                    self.slots = slots;
                    self.stale = false;
                    return Ok(());
                }
                Err(Failure::Connection(why)) => last = why,
            }
        }
        Err(Failure::Connection(format!(
            "no Redis Cluster node gave its slot map: {last}"
        )))
    }

    /// `CLUSTER SLOTS` of one node: (first slot, last slot, master host, port).
    fn read_slots(
        config: &RedisConfig,
        host: &str,
        port: u16,
    ) -> Result<Vec<(usize, usize, String, u16)>, Failure> {
        let bad = || Failure::Connection(format!("bad CLUSTER SLOTS reply from {host}:{port}"));
        let mut conn = Connection::open(config, host, port)?;
        let ranges = match conn.query(redis::cmd("CLUSTER").arg("SLOTS"))? {
            Value::Array(ranges) => ranges,
            Value::ServerError(e) => {
                return Err(Failure::Connection(format!(
                    "{host}:{port} is not a cluster node: {}",
                    error_text(&e)
                )))
            }
            _ => return Err(bad()),
        };
        let mut out = Vec::with_capacity(ranges.len());
        for range in ranges {
            let Value::Array(fields) = range else {
                return Err(bad());
            };
            let (Some(Value::Int(start)), Some(Value::Int(end)), Some(Value::Array(master))) =
                (fields.first(), fields.get(1), fields.get(2))
            else {
                return Err(bad());
            };
            let (Some(Value::BulkString(h)), Some(Value::Int(p))) = (master.first(), master.get(1))
            else {
                return Err(bad());
            };
            let port = u16::try_from(*p).map_err(|_| bad())?;
            let host = String::from_utf8_lossy(h).into_owned();
            out.push((*start as usize, *end as usize, host, port));
        }
        Ok(out)
    }

    fn conn(
        &mut self,
        node: usize,
        config: &RedisConfig,
        stats: &RedisStats,
    ) -> Result<&mut Connection, Failure> {
        if !self.conns.contains_key(&node) {
            let (host, port) = &self.nodes[node];
            let c = Connection::open(config, host, *port)?;
            stats.connects.fetch_add(1, Relaxed);
            self.conns.insert(node, c);
        }
        Ok(self.conns.get_mut(&node).expect("just inserted"))
    }

    /// Writes one job over the masters owning its slots, following
    /// redirections; returns each command's outcome (a command still
    /// redirected after `MAX_ROUNDS` counts as refused for now).
    pub fn send(
        &mut self,
        job: &Job,
        config: &RedisConfig,
        stats: &RedisStats,
    ) -> Result<Vec<Outcome>, Failure> {
        let mut outcomes = vec![Outcome::Pending; job.routes.len()];
        // (route index, node to ASK instead of the slot's owner)
        let mut todo: Vec<(usize, Option<usize>)> =
            (0..job.routes.len()).map(|i| (i, None)).collect();
        let mut buf = Vec::new();
        for _ in 0..MAX_ROUNDS {
            if todo.is_empty() {
                break;
            }
            if self.stale {
                self.refresh(config, stats)?;
            }
            let mut groups: BTreeMap<usize, Vec<(usize, bool)>> = BTreeMap::new();
            for (i, ask) in todo.drain(..) {
                let node = match ask {
                    Some(n) => n,
                    None => match self.slots[job.routes[i].slot as usize] {
                        UNKNOWN => {
                            self.stale = true;
                            return Err(Failure::Connection(format!(
                                "Redis Cluster slot {} has no master",
                                job.routes[i].slot
                            )));
                        }
                        n => n as usize,
                    },
                };
                groups.entry(node).or_default().push((i, ask.is_some()));
            }
            for (&node, cmds) in &groups {
                buf.clear();
                for &(i, ask) in cmds {
                    if ask {
                        buf.extend_from_slice(ASKING);
                    }
                    let r = job.routes[i];
                    buf.extend_from_slice(&job.payload[r.start..r.end]);
                }
                self.conn(node, config, stats)?.write(&buf)?;
            }
            stats.connected.store(true, Relaxed);
            let mut pause = false;
            for (node, cmds) in groups {
                let host = self.nodes[node].0.clone();
                for (i, ask) in cmds {
                    let conn = self.conns.get_mut(&node).expect("written above");
                    if ask {
                        if let Value::ServerError(e) = conn.reply()? {
                            return Err(Failure::Connection(format!(
                                "ASKING refused: {}",
                                error_text(&e)
                            )));
                        }
                    }
                    let e = match conn.reply()? {
                        Value::ServerError(e) => error_text(&e),
                        Value::Int(n) => {
                            outcomes[i] = Outcome::Stored(n.max(0) as u64);
                            continue;
                        }
                        _ => {
                            outcomes[i] = Outcome::Stored(0);
                            continue;
                        }
                    };
                    match redirect(&e, &host) {
                        Some(Redirect::Moved(slot, h, p)) => {
                            self.slots[slot as usize] = self.node_index(&h, p) as u16;
                            self.stale = true;
                            stats.moved.fetch_add(1, Relaxed);
                            todo.push((i, None));
                        }
                        Some(Redirect::Ask(h, p)) => {
                            stats.asked.fetch_add(1, Relaxed);
                            todo.push((i, Some(self.node_index(&h, p))));
                        }
                        None => {
                            count_error(stats, &e);
                            if e.starts_with("TRYAGAIN") {
                                pause = true;
                                todo.push((i, None));
                                outcomes[i] = Outcome::Transient(e);
                                continue;
                            }
                            // The map may be out of date (a failover).
                            if ["CLUSTERDOWN", "MASTERDOWN", "READONLY"]
                                .iter()
                                .any(|p| e.starts_with(p))
                            {
                                self.stale = true;
                            }
                            outcomes[i] = classify_error(e);
                        }
                    }
                }
            }
            if pause {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Ok(outcomes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_match_redis() {
        // CRC16/XMODEM check value, and CLUSTER KEYSLOT answers of Redis.
        assert_eq!(crc16(b"123456789"), 0x31C3);
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"bar"), 5061);
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
        assert_eq!(key_slot(b"foo{}{bar}"), crc16(b"foo{}{bar}") % 16384);
        assert_eq!(key_slot(b"foo{{bar}}zap"), key_slot(b"{bar"));
    }

    #[test]
    fn redirects() {
        match redirect("MOVED 3999 127.0.0.1:6381", "x") {
            Some(Redirect::Moved(3999, h, 6381)) => assert_eq!(h, "127.0.0.1"),
            _ => panic!("MOVED not parsed"),
        }
        match redirect("ASK 1 :7000", "10.0.0.1") {
            Some(Redirect::Ask(h, 7000)) => assert_eq!(h, "10.0.0.1"),
            _ => panic!("ASK not parsed"),
        }
        assert!(redirect("WRONGTYPE Operation against a key", "x").is_none());
    }
}
