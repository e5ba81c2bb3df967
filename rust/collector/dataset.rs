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
//! after a lost reply). It is compacted at each start. Each line also
//! records the lengths of both CSV files once its batch is in them:
//!
//! ```text
//! B <nonce> <seq> <samples bytes> <logs bytes> <node>   a batch (tabs)
//! L <samples bytes> <logs bytes>                         lengths only
//! ```
//!
//! (`L` for an unsequenced batch, which cannot be recognised when resent,
//! and at the top of a compacted journal.) A line is one `write`, so after
//! a crash it is whole or torn (and then skipped); a restart with
//! `append=true` cuts both CSV files back to the lengths of the last whole
//! line, which removes the rows of a batch that was being written when the
//! collector or its machine died. That batch has no whole journal line, so
//! its node, never answered, sends it again and it lands once. Journals
//! of earlier versions (`S` lines, no lengths) are read; files shorter than
//! their recorded length (edited by someone else) are left alone.
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

/// How the leading columns look when `additional_header` and
/// `additional_fields` are empty.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// No leading column at all.
    Plain,
    /// EDGELESS's orchestrator writes `"{additional_header},identifier,..."`
    /// whatever the header is, so an empty one leaves a leading empty
    /// column (`,identifier,metric,timestamp,value`), which tools written
    /// for its files expect.
    Edgeless,
}

impl Layout {
    pub fn parse(name: &str) -> Result<Self, String> {
        match name {
            "plain" => Ok(Layout::Plain),
            "edgeless" => Ok(Layout::Edgeless),
            other => Err(format!(
                "layout must be \"plain\" or \"edgeless\", got {other:?}"
            )),
        }
    }
}

impl Dataset {
    /// Opens (or creates) the files; with `append`, loads into `dedup` the
    /// batches the files already hold.
    pub fn open(
        prefix: &str,
        append: bool,
        additional_header: &str,
        additional_fields: &str,
        layout: Layout,
        dedup: &mut Dedup,
    ) -> io::Result<Self> {
        let samples_path = format!("{prefix}{SAMPLES_FILE}");
        if let Some(dir) = Path::new(&samples_path).parent() {
            if !dir.as_os_str().is_empty() {
                std::fs::create_dir_all(dir)?;
            }
        }
        let lead = |s: &str| {
            if s.is_empty() && layout == Layout::Plain {
                String::new()
            } else {
                format!("{s},")
            }
        };
        let header_lead = lead(additional_header);
        let state_path = format!("{prefix}{STATE_FILE}");
        let logs_path = format!("{prefix}{LOGS_FILE}");
        if append {
            if let Some((samples_len, logs_len)) = load_state(&state_path, dedup)? {
                cut_to(&samples_path, samples_len)?;
                cut_to(&logs_path, logs_len)?;
            }
        }
        let samples = Part::new(
            open_file(
                &samples_path,
                append,
                &format!("{header_lead}{SAMPLES_HEADER}"),
            )?,
            SAMPLES_FILE,
        )?;
        let logs = Part::new(
            open_file(&logs_path, append, &format!("{header_lead}{LOGS_HEADER}"))?,
            LOGS_FILE,
        )?;
        let journal = write_state(&state_path, dedup, (samples.committed, logs.committed))?;
        Ok(Self {
            samples,
            logs,
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
        // An unsequenced body (seq 0, another producer's) cannot be
        // recognised when resent: its line has the lengths only.
        let (samples_len, logs_len) = (
            self.samples.committed + samples.len() as u64,
            self.logs.committed + logs.len() as u64,
        );
        let line = if seq == 0 {
            format!("L\t{samples_len}\t{logs_len}\n")
        } else {
            format!("B\t{nonce}\t{seq}\t{samples_len}\t{logs_len}\t{node}\n")
        };
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

/// Loads into `dedup` the batches the journal at `path` names; returns
/// the CSV lengths of its last whole line that has them.
fn load_state(path: &str, dedup: &mut Dedup) -> io::Result<Option<(u64, u64)>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io::Error::new(e.kind(), format!("{path}: {e}"))),
    };
    let mut lengths = None;
    // A torn last line (the collector died mid-write) has no newline, or
    // too few fields: skipped.
    let whole = match text.rfind('\n') {
        Some(end) => &text[..=end],
        None => "",
    };
    for line in whole.lines() {
        let fields: Vec<&str> = line.splitn(6, '\t').collect();
        let num = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
        match (fields[0], fields.len()) {
            ("B", 6) => {
                if let (Some(nonce), Some(seq), Some(s), Some(l)) = (num(1), num(2), num(3), num(4))
                {
                    dedup.mark(fields[5], nonce, seq);
                    lengths = Some((s, l));
                }
            }
            ("L", 3) => {
                if let (Some(s), Some(l)) = (num(1), num(2)) {
                    lengths = Some((s, l));
                }
            }
            // Earlier versions' lines, and the floors of a compacted journal.
            ("S" | "F", 4) => {
                let node = line.splitn(4, '\t').nth(3).unwrap_or_default();
                if let (Some(nonce), Some(n)) = (num(1), num(2)) {
                    if fields[0] == "F" {
                        dedup.mark_floor(node, nonce, n);
                    } else {
                        dedup.mark(node, nonce, n);
                    }
                }
            }
            _ => {}
        }
    }
    Ok(lengths)
}

/// Cuts `path` back to `len` if it is longer: the rows of a batch whose
/// journal line was never written.
fn cut_to(path: &str, len: u64) -> io::Result<()> {
    match OpenOptions::new().write(true).open(path) {
        Ok(f) if f.metadata()?.len() > len => f.set_len(len),
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io::Error::new(e.kind(), format!("{path}: {e}"))),
    }
}

/// Rewrites the journal with just what `dedup` holds, after the CSV
/// lengths; returns it opened for appending.
fn write_state(path: &str, dedup: &Dedup, lengths: (u64, u64)) -> io::Result<File> {
    let tmp = format!("{path}.tmp");
    {
        let mut f = io::BufWriter::new(File::create(&tmp)?);
        writeln!(f, "L\t{}\t{}", lengths.0, lengths.1)?;
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
        let mut ds =
            Dataset::open(&prefix, false, "", "", Layout::Plain, &mut Dedup::default()).unwrap();
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
        let (h, s1, s2) = (SAMPLES_HEADER.len() + 1, 8, 16);
        assert_eq!(
            journal,
            format!(
                "L\t{h}\t{h}\nB\t1\t1\t{}\t{}\tn\nB\t1\t2\t{}\t{}\tn\n",
                h + s1,
                h + s1,
                h + s2,
                h + s2
            )
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    fn temp_prefix(name: &str) -> (std::path::PathBuf, String) {
        let dir = std::env::temp_dir().join(format!(
            "edgeless-dataset-{name}-{}-{}",
            std::process::id(),
            crate::clock::now_ns()
        ));
        let prefix = format!("{}/run_", dir.display());
        (dir, prefix)
    }

    /// A crash between a batch's rows and its journal line (simulated: rows
    /// appended, no line): the restart cuts the rows off, and the batch,
    /// resent by its node, lands once. A torn journal line is the same.
    #[test]
    fn a_restart_cuts_off_the_rows_of_a_batch_without_its_journal_line() {
        let (dir, prefix) = temp_prefix("crash");
        let mut dedup = Dedup::default();
        let mut ds = Dataset::open(&prefix, false, "", "", Layout::Plain, &mut dedup).unwrap();
        ds.write_batch(b"a,m,1,2\n", b"a,t,1,x\n", "n", 1, 1)
            .unwrap();
        ds.write_batch(b"u,m,1,2\n", b"", "other", 0, 0).unwrap();
        drop(ds);
        let append = |name: &str, bytes: &[u8]| {
            let mut f = OpenOptions::new()
                .append(true)
                .open(format!("{prefix}{name}"))
                .unwrap();
            f.write_all(bytes).unwrap();
        };
        append(SAMPLES_FILE, b"b,m,1,2\nb,m,2,");
        append(LOGS_FILE, b"b,t,1,y\n");
        append(STATE_FILE, b"B\t1\t2\t99");
        let mut dedup = Dedup::default();
        let mut ds = Dataset::open(&prefix, true, "", "", Layout::Plain, &mut dedup).unwrap();
        let read = |name: &str| std::fs::read_to_string(format!("{prefix}{name}")).unwrap();
        assert_eq!(
            read(SAMPLES_FILE),
            format!("{SAMPLES_HEADER}\na,m,1,2\nu,m,1,2\n")
        );
        assert_eq!(read(LOGS_FILE), format!("{LOGS_HEADER}\na,t,1,x\n"));
        assert!(dedup.seen("n", 1, 1) && !dedup.seen("n", 1, 2));
        ds.write_batch(b"b,m,1,2\n", b"b,t,1,y\n", "n", 1, 2)
            .unwrap();
        assert_eq!(
            read(SAMPLES_FILE),
            format!("{SAMPLES_HEADER}\na,m,1,2\nu,m,1,2\nb,m,1,2\n")
        );
        // Files shorter than recorded (someone else trimmed them): left as
        // they are, never padded.
        drop(ds);
        std::fs::write(
            format!("{prefix}{SAMPLES_FILE}"),
            format!("{SAMPLES_HEADER}\n"),
        )
        .unwrap();
        Dataset::open(&prefix, true, "", "", Layout::Plain, &mut Dedup::default()).unwrap();
        assert_eq!(read(SAMPLES_FILE), format!("{SAMPLES_HEADER}\n"));
        let _ = std::fs::remove_dir_all(dir);
    }

    /// A journal of the earlier format (`S` lines, no lengths) still names
    /// the stored batches, and nothing is cut.
    #[test]
    fn an_earlier_journal_is_read_and_cuts_nothing() {
        let (dir, prefix) = temp_prefix("old");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            format!("{prefix}{SAMPLES_FILE}"),
            format!("{SAMPLES_HEADER}\na,m,1,2\nb,m"),
        )
        .unwrap();
        std::fs::write(format!("{prefix}{STATE_FILE}"), "F\t1\t3\tn\nS\t1\t5\tn\n").unwrap();
        let mut dedup = Dedup::default();
        Dataset::open(&prefix, true, "", "", Layout::Plain, &mut dedup).unwrap();
        assert!(dedup.seen("n", 1, 2) && dedup.seen("n", 1, 5) && !dedup.seen("n", 1, 4));
        let samples = std::fs::read_to_string(format!("{prefix}{SAMPLES_FILE}")).unwrap();
        assert!(samples.ends_with("b,m"));
        let _ = std::fs::remove_dir_all(dir);
    }
}
