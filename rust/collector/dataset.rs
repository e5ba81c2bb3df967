//! The optional CSV dataset: `<prefix>performance_samples.csv` and
//! `<prefix>application_logs.csv`, as the EDGELESS orchestrator writes them.
//!
//! `append=false` truncates and writes the header; `append=true` appends and
//! writes the header only to an empty (or new) file. The user's
//! `additional_header` / `additional_fields` (already comma-separated
//! columns, written as given) come first; when empty, no column is added
//! (upstream leaves an empty first column instead).
//!
//! Beside them, `<prefix>collector_state.tsv` (ours) journals which batches
//! the files hold, one line per batch, so a collector restarted with
//! `append=true` still refuses a batch it stored before (a node resending
//! after a lost reply). It is compacted at each start.

use super::dedup::Dedup;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

pub const SAMPLES_FILE: &str = "performance_samples.csv";
pub const LOGS_FILE: &str = "application_logs.csv";
pub const SAMPLES_HEADER: &str = "identifier,metric,timestamp,value";
pub const LOGS_HEADER: &str = "identifier,target,timestamp,value";
pub const STATE_FILE: &str = "collector_state.tsv";

pub struct Dataset {
    pub samples: File,
    pub logs: File,
    /// `additional_fields` plus its separating comma, or empty.
    pub row_prefix: String,
    journal: File,
}

impl Dataset {
    /// Opens (or creates) the files; with `append`, loads into `dedup` the
    /// batches the files already hold.
    pub fn open(
        prefix: &str,
        append: bool,
        additional_header: &str,
        additional_fields: &str,
        dedup: &mut Dedup,
    ) -> io::Result<Self> {
        let samples_path = format!("{prefix}{SAMPLES_FILE}");
        if let Some(dir) = Path::new(&samples_path).parent() {
            if !dir.as_os_str().is_empty() {
                std::fs::create_dir_all(dir)?;
            }
        }
        let lead = |s: &str| {
            if s.is_empty() {
                String::new()
            } else {
                format!("{s},")
            }
        };
        let header_lead = lead(additional_header);
        let state_path = format!("{prefix}{STATE_FILE}");
        if append {
            load_state(&state_path, dedup)?;
        }
        let journal = write_state(&state_path, dedup)?;
        Ok(Self {
            samples: open_file(
                &samples_path,
                append,
                &format!("{header_lead}{SAMPLES_HEADER}"),
            )?,
            logs: open_file(
                &format!("{prefix}{LOGS_FILE}"),
                append,
                &format!("{header_lead}{LOGS_HEADER}"),
            )?,
            row_prefix: lead(additional_fields),
            journal,
        })
    }

    /// Notes a stored batch in the journal.
    pub fn record(&mut self, node: &str, nonce: u64, seq: u64) -> io::Result<()> {
        writeln!(self.journal, "S\t{nonce}\t{seq}\t{node}")
    }
}

fn load_state(path: &str, dedup: &mut Dedup) -> io::Result<()> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io::Error::new(e.kind(), format!("{path}: {e}"))),
    };
    for line in text.lines() {
        // A torn last line (the collector died mid-write) is skipped.
        let mut parts = line.splitn(4, '\t');
        let (Some(kind), Some(nonce), Some(n), Some(node)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let (Ok(nonce), Ok(n)) = (nonce.parse::<u64>(), n.parse::<u64>()) else {
            continue;
        };
        match kind {
            "F" => dedup.mark_floor(node, nonce, n),
            "S" => dedup.mark(node, nonce, n),
            _ => {}
        }
    }
    Ok(())
}

/// Rewrites the journal with just what `dedup` holds; returns it opened
/// for appending.
fn write_state(path: &str, dedup: &Dedup) -> io::Result<File> {
    let tmp = format!("{path}.tmp");
    {
        let mut f = io::BufWriter::new(File::create(&tmp)?);
        for (node, nonce, floor, above) in dedup.export() {
            if floor > 0 {
                writeln!(f, "F\t{nonce}\t{floor}\t{node}")?;
            }
            for seq in above {
                writeln!(f, "S\t{nonce}\t{seq}\t{node}")?;
            }
        }
        f.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    OpenOptions::new().append(true).open(path)
}

fn open_file(path: &str, append: bool, header: &str) -> io::Result<File> {
    let mut file = OpenOptions::new()
        .create(true)
        .write(true)
        .append(append)
        .truncate(!append)
        .open(path)
        .map_err(|e| io::Error::new(e.kind(), format!("{path}: {e}")))?;
    if !append || file.metadata()?.len() == 0 {
        writeln!(file, "{header}")?;
    }
    Ok(file)
}
