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
//!
//! A batch goes in whole or not at all: its sample rows, its log rows and its
//! journal line are appended straight to the files (no user-space buffer
//! that could fail later, on drop), and if any write fails (disk full, quota,
//! file size limit, I/O error) all three files are cut back (`ftruncate`) to
//! where the batch began. The node is then refused and sends the batch
//! again, which lands once when space returns. Without the cut, every retry
//! would leave another partial copy of the batch behind.

use super::dedup::Dedup;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

pub const SAMPLES_FILE: &str = "performance_samples.csv";
pub const LOGS_FILE: &str = "application_logs.csv";
pub const SAMPLES_HEADER: &str = "identifier,metric,timestamp,value";
pub const LOGS_HEADER: &str = "identifier,target,timestamp,value";
pub const STATE_FILE: &str = "collector_state.tsv";

/// One of the dataset's files, opened for appending, and the length up to
/// which it holds whole batches.
struct Part {
    file: File,
    committed: u64,
    name: &'static str,
}

impl Part {
    fn new(file: File, name: &'static str) -> io::Result<Self> {
        let committed = file.metadata()?.len();
        Ok(Self {
            file,
            committed,
            name,
        })
    }

    fn append(&mut self, bytes: &[u8]) -> Result<(), WriteError> {
        self.file.write_all(bytes).map_err(|error| WriteError {
            file: self.name,
            error,
        })
    }

    /// Cuts off whatever a failed batch left past the last whole batch.
    fn cut_back(&mut self) -> Result<(), WriteError> {
        let len = self.file.metadata().map(|m| m.len());
        if len.is_ok_and(|len| len == self.committed) {
            return Ok(());
        }
        self.file
            .set_len(self.committed)
            .map_err(|error| WriteError {
                file: self.name,
                error,
            })
    }
}

/// A batch the dataset could not take (nothing of it was kept).
#[derive(Debug)]
pub struct WriteError {
    pub file: &'static str,
    pub error: io::Error,
}

impl WriteError {
    /// The HTTP status: 507 (Insufficient Storage) when the storage is full
    /// for us (no space, quota, file size limit), which clears when space
    /// is freed; 500 for any other error. Either way the node keeps the
    /// batch and sends it again.
    pub fn status(&self) -> u16 {
        match self.error.raw_os_error() {
            Some(libc::ENOSPC | libc::EDQUOT | libc::EFBIG) => 507,
            _ => 500,
        }
    }
}

impl std::fmt::Display for WriteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.file, self.error)
    }
}

pub struct Dataset {
    samples: Part,
    logs: Part,
    journal: Part,
    /// `additional_fields` plus its separating comma, or empty.
    pub row_prefix: String,
    /// A failed batch could not be cut off (ftruncate failed): the next
    /// batch first tries again, and is refused while that fails.
    dirty: bool,
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
            samples: Part::new(
                open_file(
                    &samples_path,
                    append,
                    &format!("{header_lead}{SAMPLES_HEADER}"),
                )?,
                SAMPLES_FILE,
            )?,
            logs: Part::new(
                open_file(
                    &format!("{prefix}{LOGS_FILE}"),
                    append,
                    &format!("{header_lead}{LOGS_HEADER}"),
                )?,
                LOGS_FILE,
            )?,
            row_prefix: lead(additional_fields),
            journal: Part::new(journal, STATE_FILE)?,
            dirty: false,
        })
    }

    /// Appends one batch: its sample rows, its log rows and its journal
    /// line, all or nothing. On error the files are cut back to where the
    /// batch began.
    pub fn write_batch(
        &mut self,
        samples: &[u8],
        logs: &[u8],
        node: &str,
        nonce: u64,
        seq: u64,
    ) -> Result<(), WriteError> {
        if self.dirty {
            self.cut_back()?;
        }
        let line = format!("S\t{nonce}\t{seq}\t{node}\n");
        let written = self
            .samples
            .append(samples)
            .and_then(|_| self.logs.append(logs))
            .and_then(|_| self.journal.append(line.as_bytes()));
        match written {
            Ok(()) => {
                self.samples.committed += samples.len() as u64;
                self.logs.committed += logs.len() as u64;
                self.journal.committed += line.len() as u64;
                Ok(())
            }
            Err(e) => {
                // Still refused if the cut fails: the next batch retries it.
                let _ = self.cut_back();
                Err(e)
            }
        }
    }

    fn cut_back(&mut self) -> Result<(), WriteError> {
        let result = self
            .samples
            .cut_back()
            .and(self.logs.cut_back())
            .and(self.journal.cut_back());
        self.dirty = result.is_err();
        result
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

/// Opens `path` for appending (so a cut-back file is written at its new
/// end), emptied unless `append`.
fn open_file(path: &str, append: bool, header: &str) -> io::Result<File> {
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| io::Error::new(e.kind(), format!("{path}: {e}")))?;
    if !append {
        file.set_len(0)?;
    }
    if file.metadata()?.len() == 0 {
        writeln!(file, "{header}")?;
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lens(prefix: &str) -> Vec<u64> {
        [SAMPLES_FILE, LOGS_FILE, STATE_FILE]
            .iter()
            .map(|f| std::fs::metadata(format!("{prefix}{f}")).unwrap().len())
            .collect()
    }

    /// A write error other than "storage full" (here EBADF: the journal
    /// opened read-only) is a 500, and the rows already written for the
    /// batch are cut back off both CSV files.
    #[test]
    fn failed_journal_line_takes_the_rows_back_out() {
        let dir = std::env::temp_dir().join(format!(
            "edgeless-dataset-{}-{}",
            std::process::id(),
            crate::clock::now_ns()
        ));
        let prefix = format!("{}/run_", dir.display());
        let mut ds = Dataset::open(&prefix, false, "", "", &mut Dedup::default()).unwrap();
        ds.write_batch(b"a,m,1,2\n", b"a,t,1,x\n", "n", 1, 1)
            .unwrap();
        let before = lens(&prefix);
        let writable = std::mem::replace(
            &mut ds.journal.file,
            File::open(format!("{prefix}{STATE_FILE}")).unwrap(),
        );
        let err = ds
            .write_batch(b"b,m,1,2\n", b"b,t,1,y\n", "n", 1, 2)
            .unwrap_err();
        assert_eq!((err.file, err.status()), (STATE_FILE, 500));
        assert_eq!(lens(&prefix), before);
        ds.journal.file = writable;
        ds.write_batch(b"b,m,1,2\n", b"b,t,1,y\n", "n", 1, 2)
            .unwrap();
        let samples = std::fs::read_to_string(format!("{prefix}{SAMPLES_FILE}")).unwrap();
        assert_eq!(samples, format!("{SAMPLES_HEADER}\na,m,1,2\nb,m,1,2\n"));
        let journal = std::fs::read_to_string(format!("{prefix}{STATE_FILE}")).unwrap();
        assert_eq!(journal, "S\t1\t1\tn\nS\t1\t2\tn\n");
        let _ = std::fs::remove_dir_all(dir);
    }
}
