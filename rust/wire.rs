//! The node -> orchestrator wire format: EDGELESS's `UpdateNodeRequest`
//! protobuf with its `performance_samples`, plus one field of our own.
//!
//! The messages are derived by hand with the EDGELESS field numbers (see
//! `proto/edgeless_telemetry.proto`), so building the wheel never needs
//! `protoc`. Only the fields the telemetry path uses are declared; a decoder
//! skips the others, as protobuf decoders do.
//!
//! `batch_sequence` (field 1000, unused upstream) numbers the batches a node
//! instance (`nonce`) sends, starting at 1: the collector de-duplicates on
//! (node_id, nonce, batch_sequence), so a batch retried after a lost reply
//! is stored once. Being the highest field number it is encoded last, so a
//! body cut short anywhere decodes either as an error or without it, and
//! the collector rejects both.

pub mod scan;

use crate::clock::split_ns;
use crate::events::FunctionTime;
use crate::performance::{Drained, LogEntry, Sample as RawSample};
use uuid::Uuid;

/// Longest node id accepted (EDGELESS uses UUIDs).
pub const MAX_NODE_ID_BYTES: usize = 256;

/// Our field outside the EDGELESS numbering (upstream decoders ignore it).
pub const BATCH_SEQUENCE_FIELD: u32 = 1000;

#[derive(Clone, PartialEq, prost::Message)]
pub struct UpdateNodeRequest {
    #[prost(string, tag = "2")]
    pub node_id: String,
    #[prost(uint64, tag = "10")]
    pub refresh_deadline: u64,
    #[prost(uint64, tag = "11")]
    pub nonce: u64,
    #[prost(message, optional, tag = "30")]
    pub performance_samples: Option<NodePerformanceSamples>,
    #[prost(uint64, tag = "1000")]
    pub batch_sequence: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct NodePerformanceSamples {
    #[prost(message, repeated, tag = "90")]
    pub function_instantiate_times: Vec<Samples>,
    #[prost(message, repeated, tag = "95")]
    pub function_init_times: Vec<Samples>,
    #[prost(message, repeated, tag = "100")]
    pub function_execution_times: Vec<Samples>,
    #[prost(message, repeated, tag = "105")]
    pub function_stop_times: Vec<Samples>,
    #[prost(message, repeated, tag = "110")]
    pub function_transfer_times: Vec<Samples>,
    #[prost(message, repeated, tag = "200")]
    pub function_log_entries: Vec<FunctionLogEntries>,
}

impl NodePerformanceSamples {
    /// The series of one `FunctionTime`, in the order of `FunctionTime::ALL`.
    pub fn times(&self) -> [(FunctionTime, &Vec<Samples>); 5] {
        [
            (FunctionTime::Instantiate, &self.function_instantiate_times),
            (FunctionTime::Init, &self.function_init_times),
            (FunctionTime::Execution, &self.function_execution_times),
            (FunctionTime::Stop, &self.function_stop_times),
            (FunctionTime::Transfer, &self.function_transfer_times),
        ]
    }

    pub fn sample_count(&self) -> usize {
        self.times()
            .iter()
            .flat_map(|(_, series)| series.iter())
            .map(|s| s.samples.len())
            .sum()
    }

    pub fn log_count(&self) -> usize {
        self.function_log_entries
            .iter()
            .map(|l| l.entries.len())
            .sum()
    }

    fn times_mut(&mut self, kind: FunctionTime) -> &mut Vec<Samples> {
        match kind {
            FunctionTime::Instantiate => &mut self.function_instantiate_times,
            FunctionTime::Init => &mut self.function_init_times,
            FunctionTime::Execution => &mut self.function_execution_times,
            FunctionTime::Stop => &mut self.function_stop_times,
            FunctionTime::Transfer => &mut self.function_transfer_times,
        }
    }
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Samples {
    #[prost(string, tag = "1")]
    pub id: String,
    #[prost(message, repeated, tag = "10")]
    pub samples: Vec<Sample>,
}

#[derive(Clone, Copy, PartialEq, prost::Message)]
pub struct Sample {
    #[prost(int64, tag = "1")]
    pub timestamp_sec: i64,
    #[prost(uint32, tag = "2")]
    pub timestamp_ns: u32,
    #[prost(double, tag = "3")]
    pub sample: f64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct FunctionLogEntries {
    #[prost(string, tag = "1")]
    pub id: String,
    #[prost(message, repeated, tag = "10")]
    pub entries: Vec<FunctionLogEntry>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct FunctionLogEntry {
    #[prost(int64, tag = "1")]
    pub timestamp_sec: i64,
    #[prost(uint32, tag = "2")]
    pub timestamp_ns: u32,
    #[prost(string, tag = "3")]
    pub target: String,
    #[prost(string, tag = "4")]
    pub msg: String,
}

/// Upper bound of a sample's encoded size (tags, lengths, varints), used to
/// cut drains into bodies of bounded size before encoding.
const SAMPLE_BYTES: usize = 32;
/// Per-series/per-entry overhead besides the strings.
const ENTRY_OVERHEAD: usize = 64;

/// One encoded body, ready to POST.
pub struct Batch {
    pub sequence: u64,
    pub samples: usize,
    pub log_entries: usize,
    pub body: Vec<u8>,
}

/// Who sends, shared by all batches of one drain.
pub struct Sender<'a> {
    pub node_id: &'a str,
    pub nonce: u64,
    pub refresh_deadline: u64,
}

/// Encodes everything drained into bodies of at most about `max_bytes`
/// each (a single log entry larger than that still gets its own body),
/// numbered from `first_sequence`. An empty drain gives no batch.
pub fn encode_drained(
    drained: &Drained,
    sender: &Sender<'_>,
    first_sequence: u64,
    max_bytes: usize,
) -> Vec<Batch> {
    let mut out = Vec::new();
    let mut cur = Builder::new(sender, first_sequence);
    for kind in FunctionTime::ALL {
        for (id, samples) in &drained.times[kind as usize] {
            let id = id.to_string();
            let mut rest: &[RawSample] = samples;
            while !rest.is_empty() {
                let room = max_bytes.saturating_sub(cur.bytes + ENTRY_OVERHEAD) / SAMPLE_BYTES;
                if room == 0 && cur.items() > 0 {
                    out.push(cur.finish());
                    cur = Builder::new(sender, first_sequence + out.len() as u64);
                    continue;
                }
                let n = room.max(1).min(rest.len());
                let (now, later) = rest.split_at(n);
                cur.push_samples(kind, &id, now);
                rest = later;
            }
        }
    }
    for (id, entries) in &drained.logs {
        let id = id.to_string();
        for entry in entries {
            let size = ENTRY_OVERHEAD + entry.target.len() + entry.message.len();
            if cur.bytes + size > max_bytes && cur.items() > 0 {
                out.push(cur.finish());
                cur = Builder::new(sender, first_sequence + out.len() as u64);
            }
            cur.push_log(&id, entry, size);
        }
    }
    if cur.items() > 0 {
        out.push(cur.finish());
    }
    out
}

struct Builder {
    msg: UpdateNodeRequest,
    samples: usize,
    log_entries: usize,
    bytes: usize,
}

impl Builder {
    fn new(sender: &Sender<'_>, sequence: u64) -> Self {
        Self {
            msg: UpdateNodeRequest {
                node_id: sender.node_id.to_owned(),
                refresh_deadline: sender.refresh_deadline,
                nonce: sender.nonce,
                performance_samples: Some(NodePerformanceSamples::default()),
                batch_sequence: sequence,
            },
            samples: 0,
            log_entries: 0,
            bytes: 64 + sender.node_id.len(),
        }
    }

    fn items(&self) -> usize {
        self.samples + self.log_entries
    }

    fn perf(&mut self) -> &mut NodePerformanceSamples {
        self.msg
            .performance_samples
            .as_mut()
            .expect("builder always has samples")
    }

    fn push_samples(&mut self, kind: FunctionTime, id: &str, samples: &[RawSample]) {
        let series = self.perf().times_mut(kind);
        // Consecutive pieces of one function's samples share one entry.
        let entry = match series.last_mut() {
            Some(last) if last.id == id => last,
            _ => {
                series.push(Samples {
                    id: id.to_owned(),
                    samples: Vec::with_capacity(samples.len()),
                });
                series.last_mut().expect("just pushed")
            }
        };
        entry.samples.extend(samples.iter().map(|s| {
            let (timestamp_sec, timestamp_ns) = split_ns(s.timestamp_ns);
            Sample {
                timestamp_sec,
                timestamp_ns,
                sample: s.value,
            }
        }));
        self.samples += samples.len();
        self.bytes += ENTRY_OVERHEAD + samples.len() * SAMPLE_BYTES;
    }

    fn push_log(&mut self, id: &str, entry: &LogEntry, size: usize) {
        let logs = &mut self.perf().function_log_entries;
        let group = match logs.last_mut() {
            Some(last) if last.id == id => last,
            _ => {
                logs.push(FunctionLogEntries {
                    id: id.to_owned(),
                    entries: Vec::new(),
                });
                logs.last_mut().expect("just pushed")
            }
        };
        let (timestamp_sec, timestamp_ns) = split_ns(entry.timestamp_ns);
        group.entries.push(FunctionLogEntry {
            timestamp_sec,
            timestamp_ns,
            target: entry.target.clone(),
            msg: entry.message.clone(),
        });
        self.log_entries += 1;
        self.bytes += size;
    }

    fn finish(self) -> Batch {
        Batch {
            sequence: self.msg.batch_sequence,
            samples: self.samples,
            log_entries: self.log_entries,
            body: prost::Message::encode_to_vec(&self.msg),
        }
    }
}

/// Why a received body is refused (the collector answers 400).
#[derive(Debug)]
pub struct Malformed(pub String);

/// Decodes and checks a received body: it must carry a node id, a nonce and
/// a batch sequence (so truncation is caught), UUID function ids and
/// nanoseconds below one second.
pub fn decode_checked(body: &[u8]) -> Result<UpdateNodeRequest, Malformed> {
    let msg = <UpdateNodeRequest as prost::Message>::decode(body)
        .map_err(|e| Malformed(format!("not an UpdateNodeRequest protobuf: {e}")))?;
    if msg.node_id.is_empty()
        || msg.node_id.len() > MAX_NODE_ID_BYTES
        || msg.node_id.chars().any(char::is_control)
    {
        return Err(Malformed(format!(
            "node_id must be 1..={MAX_NODE_ID_BYTES} bytes without control characters"
        )));
    }
    if msg.nonce == 0 {
        return Err(Malformed("nonce is missing".into()));
    }
    if msg.batch_sequence == 0 {
        return Err(Malformed(format!(
            "batch_sequence (field {BATCH_SEQUENCE_FIELD}) is missing: truncated body or not sent by edgeless-telemetry"
        )));
    }
    if let Some(perf) = &msg.performance_samples {
        for (_, series) in perf.times() {
            for s in series {
                check_id(&s.id)?;
                if s.samples.iter().any(|x| x.timestamp_ns >= 1_000_000_000) {
                    return Err(Malformed(format!("timestamp_ns out of range in {}", s.id)));
                }
            }
        }
        for l in &perf.function_log_entries {
            check_id(&l.id)?;
            if l.entries.iter().any(|x| x.timestamp_ns >= 1_000_000_000) {
                return Err(Malformed(format!("timestamp_ns out of range in {}", l.id)));
            }
        }
    }
    Ok(msg)
}

fn check_id(id: &str) -> Result<(), Malformed> {
    Uuid::parse_str(id)
        .map(|_| ())
        .map_err(|_| Malformed(format!("function id {id:?} is not a UUID")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drained(n: usize) -> Drained {
        let mut d = Drained::default();
        let id = Uuid::from_u128(7);
        d.times[FunctionTime::Execution as usize].push((
            id,
            (0..n)
                .map(|i| RawSample {
                    timestamp_ns: 1_700_000_000_000_000_000 + i as i64,
                    value: i as f64,
                })
                .collect(),
        ));
        d.logs.push((
            id,
            vec![LogEntry {
                timestamp_ns: -1,
                target: "t".into(),
                message: "m".into(),
            }],
        ));
        d
    }

    const SENDER: Sender<'static> = Sender {
        node_id: "n",
        nonce: 5,
        refresh_deadline: 9,
    };

    #[test]
    fn round_trip_keeps_everything() {
        let batches = encode_drained(&drained(10), &SENDER, 3, 1 << 20);
        assert_eq!(batches.len(), 1);
        let msg = decode_checked(&batches[0].body).unwrap();
        assert_eq!(msg.batch_sequence, 3);
        let perf = msg.performance_samples.unwrap();
        let s = &perf.function_execution_times[0];
        assert_eq!(s.samples.len(), 10);
        assert_eq!(s.samples[9].timestamp_ns, 9);
        assert_eq!(perf.function_log_entries[0].entries[0].timestamp_sec, -1);
        assert_eq!(
            perf.function_log_entries[0].entries[0].timestamp_ns,
            999_999_999
        );
    }

    #[test]
    fn splits_by_size_and_numbers_batches() {
        let batches = encode_drained(&drained(1000), &SENDER, 1, 4096);
        assert!(batches.len() > 5);
        let total: usize = batches.iter().map(|b| b.samples).sum();
        assert_eq!(total, 1000);
        for (i, b) in batches.iter().enumerate() {
            assert_eq!(b.sequence, 1 + i as u64);
            assert!(b.body.len() <= 4096, "{}", b.body.len());
        }
    }

    #[test]
    fn truncation_is_refused() {
        let body = &encode_drained(&drained(10), &SENDER, 1, 1 << 20)[0].body;
        for cut in 0..body.len() {
            assert!(decode_checked(&body[..cut]).is_err(), "cut at {cut}");
        }
    }
}
