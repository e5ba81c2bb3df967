//! What each reply of a job's pipeline means, and what is left of the job.
//!
//! A ZADD's reply is either a number (members added: stored) or an error.
//! An error is *transient* when Redis refuses for a while and will take
//! the same command later (`OOM` at `maxmemory`, `MISCONF` when it cannot
//! write its snapshot, `READONLY` on a replica after a failover, `LOADING`,
//! `BUSY`, `TRYAGAIN`, or anything we do not know): the command stays
//! queued and is sent again. It is *rejected* when Redis would refuse the
//! same bytes forever (`WRONGTYPE`: the key holds another type; `ERR`: the
//! command itself is refused): those entries are dropped, counted in
//! `redis_entries_rejected` and named in a warning, so that one bad key
//! cannot block everything behind it.

use std::sync::atomic::Ordering::Relaxed;

use super::connection::error_text;
use super::redis::{Job, RedisStats, Route};

/// The kinds of error reply counted one by one in `stats()`
/// (`redis_error_replies_<kind>`); others count as `other`.
pub const ERROR_KINDS: [&str; 8] = [
    "OOM",
    "MISCONF",
    "READONLY",
    "LOADING",
    "BUSY",
    "TRYAGAIN",
    "WRONGTYPE",
    "other",
];

/// `stats()` names of `ERROR_KINDS`, in the same order.
pub const ERROR_STAT_NAMES: [&str; 8] = [
    "redis_error_replies_oom",
    "redis_error_replies_misconf",
    "redis_error_replies_readonly",
    "redis_error_replies_loading",
    "redis_error_replies_busy",
    "redis_error_replies_tryagain",
    "redis_error_replies_wrongtype",
    "redis_error_replies_other",
];

/// One command's fate in one attempt.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Outcome {
    /// Not answered yet (Redis Cluster: redirected, still to send).
    Pending,
    /// Stored; members it added (the rest were there already).
    Stored(u64),
    /// Refused for now: send again later.
    Transient(String),
    /// Refused for good: drop its entries, counted.
    Rejected(String),
}

/// The error code of an error reply's text (`OOM`, `WRONGTYPE`, ...).
fn code(text: &str) -> &str {
    text.split(' ').next().unwrap_or("")
}

/// Counts an error reply by kind.
pub(super) fn count_error(stats: &RedisStats, text: &str) {
    stats.error_replies.fetch_add(1, Relaxed);
    let c = code(text);
    let i = ERROR_KINDS
        .iter()
        .position(|k| *k == c)
        .unwrap_or(ERROR_KINDS.len() - 1);
    stats.error_kinds[i].fetch_add(1, Relaxed);
}

/// What an error reply means for its command.
pub(super) fn classify_error(text: String) -> Outcome {
    match code(&text) {
        "WRONGTYPE" | "ERR" => Outcome::Rejected(text),
        _ => Outcome::Transient(text),
    }
}

/// A ZADD's reply as an outcome (error replies counted by kind).
pub(super) fn outcome(reply: redis::Value, stats: &RedisStats) -> Outcome {
    match reply {
        redis::Value::Int(n) => Outcome::Stored(n.max(0) as u64),
        redis::Value::ServerError(e) => {
            let text = error_text(&e);
            count_error(stats, &text);
            classify_error(text)
        }
        // Not sent by ZADD; a success all the same.
        _ => Outcome::Stored(0),
    }
}

/// Where each command of `payload` (concatenated RESP arrays of bulk
/// strings, as `render` writes them) starts and ends. Only read on the
/// slow path, after an error reply.
pub(super) fn command_spans(payload: &[u8]) -> Vec<(usize, usize)> {
    fn number(p: &[u8], at: &mut usize) -> Option<usize> {
        let end = *at + p.get(*at..)?.iter().position(|&b| b == b'\r')?;
        let n = std::str::from_utf8(p.get(*at + 1..end)?)
            .ok()?
            .parse()
            .ok()?;
        *at = end + 2;
        Some(n)
    }
    let mut spans = Vec::new();
    let mut at = 0;
    while at < payload.len() {
        let start = at;
        let Some(args) = number(payload, &mut at) else {
            break;
        };
        for _ in 0..args {
            let Some(len) = number(payload, &mut at) else {
                return spans;
            };
            at += len + 2;
        }
        spans.push((start, at.min(payload.len())));
    }
    spans
}

/// A ZADD's key and number of members, from its bytes.
pub(super) fn key_and_members(command: &[u8]) -> (String, u64) {
    let spans = |p: &[u8]| -> Option<(String, u64)> {
        let line = |from: usize| -> Option<(usize, usize)> {
            let end = from + p.get(from..)?.iter().position(|&b| b == b'\r')?;
            let n = std::str::from_utf8(p.get(from + 1..end)?)
                .ok()?
                .parse()
                .ok()?;
            Some((n, end + 2))
        };
        let (args, at) = line(0)?;
        let (len, at) = line(at)?;
        let (key_len, at) = line(at + len + 2)?;
        let key = String::from_utf8_lossy(p.get(at..at + key_len)?).into_owned();
        Some((key, (args.saturating_sub(2) / 2) as u64))
    };
    spans(command).unwrap_or_default()
}

/// What settling one attempt's outcomes did to a job.
pub(super) struct Settled {
    /// Every command is stored or rejected: the job is done.
    pub done: bool,
    /// The first transient error (why the rest stays queued).
    pub transient: Option<String>,
    /// (key, error) of each rejected command.
    pub rejected: Vec<(String, String)>,
    /// Payload bytes the job no longer holds.
    pub freed: usize,
}

/// Counts what `outcomes` stored and rejected, and cuts `job` down to the
/// commands still to send (transient or pending), so a retry resends only
/// those (and `members_existing` counts no resent member).
pub(super) fn settle(job: &mut Job, outcomes: Vec<Outcome>, stats: &RedisStats) -> Settled {
    let mut out = Settled {
        done: true,
        transient: None,
        rejected: Vec::new(),
        freed: 0,
    };
    // The fast path: all stored.
    if outcomes.iter().all(|o| matches!(o, Outcome::Stored(_))) {
        let added: u64 = outcomes
            .iter()
            .map(|o| match o {
                Outcome::Stored(n) => *n,
                _ => 0,
            })
            .sum();
        stats.members_added.fetch_add(added, Relaxed);
        stats
            .members_existing
            .fetch_add(job.members.saturating_sub(added), Relaxed);
        return out;
    }
    let spans: Vec<(usize, usize)> = if job.routes.is_empty() {
        command_spans(&job.payload)
    } else {
        job.routes.iter().map(|r| (r.start, r.end)).collect()
    };
    if spans.len() != outcomes.len() {
        // Cannot happen with rendered jobs; if it did, resend the job whole
        // rather than guess which bytes are which command.
        out.done = false;
        out.transient = Some("redis: could not split a pipeline into its commands".into());
        return out;
    }
    let mut payload = Vec::new();
    let mut routes = Vec::new();
    let mut members_left = 0u64;
    let mut commands_left = 0;
    for (outcome, (i, &(start, end))) in outcomes.into_iter().zip(spans.iter().enumerate()) {
        let bytes = &job.payload[start..end];
        let (key, members) = key_and_members(bytes);
        match outcome {
            Outcome::Stored(n) => {
                stats.members_added.fetch_add(n, Relaxed);
                stats
                    .members_existing
                    .fetch_add(members.saturating_sub(n), Relaxed);
            }
            Outcome::Rejected(why) => {
                // A resent batch (samples 0) was counted the first time.
                let counted = members.min(job.samples);
                job.samples -= counted;
                stats.entries_rejected.fetch_add(counted, Relaxed);
                out.rejected.push((key, why));
            }
            Outcome::Transient(why) => {
                out.transient.get_or_insert(why);
                out.done = false;
                keep(&mut payload, &mut routes, job, i, bytes);
                members_left += members;
                commands_left += 1;
            }
            Outcome::Pending => {
                out.done = false;
                keep(&mut payload, &mut routes, job, i, bytes);
                members_left += members;
                commands_left += 1;
            }
        }
    }
    out.freed = job.payload.len() - payload.len();
    job.payload = payload;
    job.routes = routes;
    job.commands = commands_left;
    job.members = members_left;
    out
}

fn keep(payload: &mut Vec<u8>, routes: &mut Vec<Route>, job: &Job, i: usize, bytes: &[u8]) {
    let start = payload.len();
    payload.extend_from_slice(bytes);
    if let Some(r) = job.routes.get(i) {
        routes.push(Route {
            slot: r.slot,
            start,
            end: payload.len(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collector::format::Resp;

    #[test]
    fn stat_names_follow_the_kinds() {
        for (kind, name) in ERROR_KINDS.iter().zip(ERROR_STAT_NAMES) {
            assert_eq!(
                name,
                format!("redis_error_replies_{}", kind.to_ascii_lowercase())
            );
        }
    }

    fn zadd(buf: &mut Vec<u8>, key: &str, members: usize) {
        let mut r = Resp { buf };
        r.array(2 + 2 * members);
        r.bulk(&[b"ZADD"]);
        r.bulk(&[key.as_bytes()]);
        for m in 0..members {
            r.bulk(&[m.to_string().as_bytes()]);
            r.bulk(&[format!("{m}:x\r\n").as_bytes()]);
        }
    }

    #[test]
    fn spans_keys_and_members() {
        let mut p = Vec::new();
        zadd(&mut p, "a", 3);
        let first = p.len();
        zadd(&mut p, "performance:b", 1);
        assert_eq!(command_spans(&p), vec![(0, first), (first, p.len())]);
        assert_eq!(key_and_members(&p[..first]), ("a".into(), 3));
        assert_eq!(key_and_members(&p[first..]), ("performance:b".into(), 1));
    }

    #[test]
    fn a_job_keeps_only_what_is_still_refused() {
        let mut p = Vec::new();
        for k in ["a", "b", "c", "d"] {
            zadd(&mut p, k, 2);
        }
        let total = p.len();
        let mut job = Job {
            payload: p,
            commands: 4,
            members: 8,
            samples: 8,
            routes: Vec::new(),
            id: 1,
        };
        let stats = RedisStats::default();
        let s = settle(
            &mut job,
            vec![
                Outcome::Stored(2),
                Outcome::Transient("OOM no".into()),
                Outcome::Rejected("WRONGTYPE no".into()),
                Outcome::Stored(1),
            ],
            &stats,
        );
        assert!(!s.done);
        assert_eq!(s.transient.as_deref(), Some("OOM no"));
        assert_eq!(s.rejected, vec![("c".into(), "WRONGTYPE no".into())]);
        assert_eq!((job.commands, job.members, job.samples), (1, 2, 6));
        assert_eq!(key_and_members(&job.payload), ("b".into(), 2));
        assert_eq!(s.freed + job.payload.len(), total);
        assert_eq!(stats.members_added.load(Relaxed), 3);
        assert_eq!(stats.members_existing.load(Relaxed), 1);
        assert_eq!(stats.entries_rejected.load(Relaxed), 2);
        let s = settle(&mut job, vec![Outcome::Stored(2)], &stats);
        assert!(s.done && s.transient.is_none());
        assert_eq!(stats.members_added.load(Relaxed), 5);
    }

    #[test]
    fn malformed_bytes_do_not_panic() {
        assert_eq!(
            key_and_members(b"*4\r\n$4\r\nZADD\r\n$99\r\nab"),
            (String::new(), 0)
        );
        assert_eq!(key_and_members(b""), (String::new(), 0));
        assert!(command_spans(b"*2\r\n$9\r\nZA").is_empty());
        assert!(command_spans(b"*x\r\n").is_empty());
    }

    #[test]
    fn errors_are_told_apart() {
        assert!(matches!(
            classify_error("WRONGTYPE Operation against a key".into()),
            Outcome::Rejected(_)
        ));
        for t in [
            "OOM x",
            "MISCONF x",
            "READONLY x",
            "LOADING x",
            "BUSY x",
            "TRYAGAIN x",
            "NOPERM x",
        ] {
            assert!(matches!(classify_error(t.into()), Outcome::Transient(_)));
        }
    }
}
