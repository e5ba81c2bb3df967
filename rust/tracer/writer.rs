//! The tracer's sink: a bounded byte queue in front of a background writer
//! thread.
//!
//! Callers (holding the GIL) format each row straight into `pending.buf`
//! under a short mutex; the writer thread swaps that buffer for an empty one
//! and writes the whole batch with one `write` call. A per-row channel would
//! cost a send and an allocation per row; a swapped buffer costs a memcpy.
//!
//! - Bounded: a row that would take `buf` plus the bytes in the writer's
//!   hands (being written, or held after a failed write) past
//!   `max_pending_bytes` is dropped and counted (`rows_dropped`); callers
//!   never wait for the disk or a blocked stdout pipe.
//! - Latency: the writer wakes every `WAKE_INTERVAL`, when the buffer passes
//!   `HIGH_WATER`, or when someone flushes, so rows reach the OS within
//!   tens of milliseconds even when nobody flushes.
//! - Whole rows only, counted exactly: a batch is written with plain
//!   `write(2)` calls, and when one fails (disk full, file size limit, I/O
//!   error) after part of the batch went out, the rows wholly written are
//!   counted `rows_written` and a row cut in the middle is cut off the file
//!   again (`ftruncate` to the last row boundary; on stdout, which cannot be
//!   cut, its tail is kept and finished first). The unwritten rows are held
//!   and tried again every `RETRY_INTERVAL` (or at once on a flush) within
//!   the same `max_pending_bytes`, so the writer resumes when space returns;
//!   rows still held when the sink closes are counted `rows_lost`. So
//!   `rows_queued == rows_written + rows_lost + rows_pending`, and the file
//!   holds exactly `rows_written` rows of this tracer.
//! - After interpreter exit has begun (`enter_exit_mode`, from atexit), every
//!   append also waits until it is written, so spans ended while Python tears
//!   down its modules still reach the file before the process exits.
//! - Fork: the writer thread does not exist in a forked child, so a tracer
//!   inherited through `fork()` drops its rows there (counted as
//!   `rows_after_fork`) instead of buffering them forever or hanging in
//!   `flush`; the child makes its own tracer.

use super::csv::HEADER;
use super::ids::IdGen;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const WAKE_INTERVAL: Duration = Duration::from_millis(20);
/// How often held rows are tried again while the output refuses them.
const RETRY_INTERVAL: Duration = Duration::from_millis(100);
const HIGH_WATER: usize = 64 << 10;
/// How long flushes and closes nobody asked for (a tracer or its last span
/// dropped, interpreter exit) wait for a writer that is stuck, e.g. on
/// stdout piped into a reader that stopped reading.
const IMPLICIT_WAIT: Duration = Duration::from_secs(5);

pub enum Output {
    Stdout,
    File(File),
}

impl Output {
    /// Opens the destination; writes the header unless appending to a file
    /// that already has rows. An existing file whose first line is not our
    /// header is refused rather than silently mixed with other data.
    pub fn open(path: Option<&Path>, append: bool) -> io::Result<Self> {
        let Some(path) = path else {
            let mut out = Output::Stdout;
            let mut header = HEADER.as_bytes();
            while !header.is_empty() {
                match out.write_some(header) {
                    Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                    Ok(n) => header = &header[n..],
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            return Ok(out);
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let mut file = if append {
            OpenOptions::new()
                .read(true)
                .append(true)
                .create(true)
                .open(path)?
        } else {
            File::create(path)?
        };
        let len = file.metadata()?.len();
        if len == 0 {
            file.write_all(HEADER.as_bytes())?;
        } else {
            let mut first = vec![0u8; HEADER.len()];
            let n = read_up_to(&mut file, &mut first)?;
            if &first[..n] != HEADER.as_bytes() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "{} is not a tracer CSV (its first line is not the tracer header); refusing to append",
                        path.display()
                    ),
                ));
            }
        }
        Ok(Output::File(file))
    }

    /// One `write(2)` of `buf`, unbuffered, so the count says what reached
    /// the file or pipe.
    fn write_some(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Output::Stdout => {
                // Straight to fd 1, not through Rust's `io::stdout()`: its
                // lock, held by a writer thread at the moment of a fork,
                // would never be released in the child (and nothing in the
                // extension prints through Rust's stdout buffer).
                // SAFETY: fd 1 stays open for the process's life; `buf` is
                // valid for `buf.len()` bytes.
                let n = unsafe { libc::write(1, buf.as_ptr().cast(), buf.len()) };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(n as usize)
                }
            }
            Output::File(file) => file.write(buf),
        }
    }

    /// Writes as much of `buf` as the output takes; the bytes written and
    /// the error that stopped it, if any.
    fn write_most(&mut self, buf: &[u8]) -> (usize, Option<io::Error>) {
        let mut off = 0;
        while off < buf.len() {
            match self.write_some(&buf[off..]) {
                Ok(0) => return (off, Some(io::ErrorKind::WriteZero.into())),
                Ok(n) => off += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return (off, Some(e)),
            }
        }
        (off, None)
    }

    /// Cuts the last `partial` bytes just written (part of a row) off the
    /// file again; false where that cannot be done (stdout; another writer
    /// appended to the file since; ftruncate failed): the partial row then
    /// stays, to be finished.
    fn cut_partial(&mut self, partial: usize) -> bool {
        use std::io::Seek;
        let Output::File(file) = self else {
            return false;
        };
        let mut cut = || -> io::Result<bool> {
            // Just past our last byte (with O_APPEND too).
            let end = file.stream_position()?;
            if file.metadata()?.len() != end {
                return Ok(false); // not ours to cut: someone wrote after it
            }
            let keep = end - partial as u64;
            file.set_len(keep)?;
            // Without O_APPEND (a new file) the next write must not leave a
            // hole where the cut bytes were.
            file.seek(io::SeekFrom::Start(keep))?;
            Ok(true)
        };
        cut().unwrap_or(false)
    }
}

/// Rows that end in `bytes` (a row ends at a newline outside quotes), the
/// offset just past the last of them, and whether `bytes` ends inside a
/// quoted field, for rows that all follow the one CSV quoting rule.
/// Called only after a failed write, never on the hot path.
fn row_ends(bytes: &[u8], mut in_quotes: bool) -> (u64, usize, bool) {
    let (mut rows, mut end) = (0, 0);
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'"' => in_quotes = !in_quotes,
            b'\n' if !in_quotes => {
                rows += 1;
                end = i + 1;
            }
            _ => {}
        }
    }
    (rows, end, in_quotes)
}

fn read_up_to(file: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    use std::io::Seek;
    file.seek(io::SeekFrom::Start(0))?;
    let mut n = 0;
    while n < buf.len() {
        match file.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// Everything behind the one mutex.
pub struct Pending {
    pub buf: Vec<u8>,
    pub ids: IdGen,
    /// Rows accepted so far (a sequence number for `flush`).
    seq: u64,
    /// Rows the writer has taken and finished (written or failed).
    done_seq: u64,
    /// The writer was asked to wake now (flush, high water, close).
    kick: bool,
    closing: bool,
    writer_alive: bool,
    rows_written: u64,
    bytes_written: u64,
    rows_dropped: u64,
    rows_after_close: u64,
    write_errors: u64,
    rows_lost: u64,
    /// Bytes in the writer's hands (being written, or held after a failed
    /// write to try again); they count against `max_pending_bytes` with
    /// `buf`, so that bounds all the tracer holds.
    held_bytes: usize,
}

/// State shared with the writer thread.
pub struct Shared {
    pending: Mutex<Pending>,
    /// The writer waits here for work.
    work: Condvar,
    /// Flushers wait here for the writer's progress.
    progress: Condvar,
    max_pending_bytes: usize,
    pub max_message_bytes: usize,
    exiting: AtomicBool,
    pub messages_truncated: AtomicU64,
    pub lossy_strings: AtomicU64,
    rows_after_fork: AtomicU64,
    fork_generation: u64,
    /// An implicit flush timed out: the writer is stuck; later implicit
    /// waits do not wait again.
    gave_up: AtomicBool,
}

/// What tracers and spans hold; the last one dropped closes the sink.
pub struct Sink {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
    pub path: Option<PathBuf>,
}

impl std::ops::Deref for Sink {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.shared
    }
}

/// Sinks alive in this process, flushed by the atexit hook.
static LIVE: Mutex<Vec<Weak<Sink>>> = Mutex::new(Vec::new());

fn lock(m: &Mutex<Pending>) -> MutexGuard<'_, Pending> {
    // A panic while holding the lock leaves plain counters and bytes behind;
    // carrying on is better than poisoning every later span.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Sink {
    pub fn open(
        path: Option<PathBuf>,
        append: bool,
        max_pending_bytes: usize,
        max_message_bytes: usize,
    ) -> io::Result<Arc<Self>> {
        let mut output = Output::open(path.as_deref(), append)?;
        let shared = Arc::new(Shared {
            pending: Mutex::new(Pending {
                buf: Vec::new(),
                ids: IdGen::seeded(),
                seq: 0,
                done_seq: 0,
                kick: false,
                closing: false,
                writer_alive: true,
                rows_written: 0,
                bytes_written: 0,
                rows_dropped: 0,
                rows_after_close: 0,
                write_errors: 0,
                rows_lost: 0,
                held_bytes: 0,
            }),
            work: Condvar::new(),
            progress: Condvar::new(),
            max_pending_bytes,
            max_message_bytes,
            exiting: AtomicBool::new(false),
            messages_truncated: AtomicU64::new(0),
            lossy_strings: AtomicU64::new(0),
            rows_after_fork: AtomicU64::new(0),
            fork_generation: crate::fork::generation(),
            gave_up: AtomicBool::new(false),
        });
        let for_writer = shared.clone();
        let handle = std::thread::Builder::new()
            .name("edgeless-tracer-writer".into())
            .spawn(move || writer_loop(&for_writer, &mut output))?;
        let sink = Arc::new(Sink {
            shared,
            thread: Mutex::new(Some(handle)),
            path,
        });
        let mut live = LIVE.lock().unwrap_or_else(|e| e.into_inner());
        live.retain(|w| w.strong_count() > 0);
        live.push(Arc::downgrade(&sink));
        Ok(sink)
    }

    /// Writes what is pending, stops the writer and closes the file. Later
    /// rows are dropped and counted (`rows_after_close`). Idempotent; a
    /// second caller waits for the first to finish.
    pub fn close(&self) {
        self.close_within(None);
    }

    /// `close`, but waiting at most `limit` for a stuck writer (then it is
    /// left to finish on its own, detached).
    pub fn close_within(&self, limit: Option<Duration>) {
        if self.forked() {
            return; // the writer thread (and its lock holder) is the parent's
        }
        let mut thread = self.thread.lock().unwrap_or_else(|e| e.into_inner());
        {
            let mut p = lock(&self.pending);
            p.closing = true;
            p.kick = true;
        }
        self.work.notify_one();
        let Some(handle) = thread.take() else { return };
        if let Some(mut limit) = limit {
            if self.gave_up.load(Ordering::Relaxed) {
                limit = Duration::ZERO; // an implicit wait already timed out
            }
            let deadline = Instant::now() + limit;
            let mut p = lock(&self.pending);
            while p.writer_alive {
                let now = Instant::now();
                if now >= deadline {
                    return; // dropping `handle` detaches the thread
                }
                p = self
                    .progress
                    .wait_timeout(p, deadline - now)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
        }
        let _ = handle.join();
    }
}

impl Shared {
    /// Appends one row written by `row` into the pending buffer; drops and
    /// counts it when the buffer is full or the sink is closed. Returns
    /// whether the row was kept.
    #[inline]
    pub fn append(&self, row: impl FnOnce(&mut Pending)) -> bool {
        if self.forked() {
            self.rows_after_fork.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        let mut p = lock(&self.pending);
        if p.closing {
            p.rows_after_close += 1;
            return false;
        }
        let start = p.buf.len();
        row(&mut p);
        if p.buf.len() + p.held_bytes > self.max_pending_bytes {
            p.buf.truncate(start);
            p.rows_dropped += 1;
            return false;
        }
        p.seq += 1;
        if p.buf.len() >= HIGH_WATER && !p.kick {
            p.kick = true;
            self.work.notify_one();
        }
        drop(p);
        if self.exiting.load(Ordering::Relaxed) {
            self.flush_implicitly();
        }
        true
    }

    /// Waits until every row accepted so far is written (or failed).
    /// Blocks: call it with the GIL released where possible.
    pub fn flush(&self) {
        self.flush_within(None);
    }

    /// A flush nobody asked for (tracer dropped, interpreter exit): bounded
    /// by `IMPLICIT_WAIT`, and a stuck writer turns write-through off so the
    /// exit is not delayed once per row.
    pub fn flush_implicitly(&self) {
        if self.gave_up.load(Ordering::Relaxed) {
            return;
        }
        if !self.flush_within(Some(IMPLICIT_WAIT)) {
            self.gave_up.store(true, Ordering::Relaxed);
            self.exiting.store(false, Ordering::Relaxed);
        }
    }

    /// `flush` waiting at most `limit`; false if it gave up.
    pub fn flush_within(&self, limit: Option<Duration>) -> bool {
        if self.forked() {
            return true;
        }
        let deadline = limit.map(|l| Instant::now() + l);
        let mut p = lock(&self.pending);
        let target = p.seq;
        if p.done_seq >= target {
            return true;
        }
        p.kick = true;
        self.work.notify_one();
        while p.done_seq < target && p.writer_alive {
            p = match deadline {
                None => self.progress.wait(p).unwrap_or_else(|e| e.into_inner()),
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        return false;
                    }
                    self.progress
                        .wait_timeout(p, d - now)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
            };
        }
        true
    }

    /// Whether this process is a fork of the one that opened the sink.
    #[inline]
    fn forked(&self) -> bool {
        crate::fork::inherited(self.fork_generation)
    }

    /// An id drawn outside `append` (for spans made after close). In a
    /// forked child the lock may have been held by the parent's writer
    /// thread at the fork, forever: ids come from a fresh generator there.
    pub fn next_id(&self) -> uuid::Uuid {
        if self.forked() {
            return crate::tracer::ids::IdGen::seeded().next_uuid();
        }
        lock(&self.pending).ids.next_uuid()
    }

    /// An inherited sink writes nothing in a child: closed there.
    pub fn is_closed(&self) -> bool {
        self.forked() || lock(&self.pending).closing
    }

    pub fn enter_exit_mode(&self) {
        self.exiting.store(true, Ordering::Relaxed);
    }

    pub fn stats(&self) -> Vec<(&'static str, u64)> {
        // In a forked child the parent's writer thread may have held the
        // lock at the fork, for good: the counts as inherited are not worth
        // a hang, so they read 0 there if the lock is not free.
        let guard = if self.forked() {
            self.pending.try_lock().ok()
        } else {
            Some(lock(&self.pending))
        };
        let of = |f: fn(&Pending) -> u64| guard.as_deref().map_or(0, f);
        vec![
            ("rows_queued", of(|p| p.seq)),
            ("rows_written", of(|p| p.rows_written)),
            ("rows_pending", of(|p| p.seq - p.rows_written - p.rows_lost)),
            ("bytes_written", of(|p| p.bytes_written)),
            ("pending_bytes", of(|p| (p.buf.len() + p.held_bytes) as u64)),
            ("rows_dropped", of(|p| p.rows_dropped)),
            ("rows_after_close", of(|p| p.rows_after_close)),
            ("write_errors", of(|p| p.write_errors)),
            ("rows_lost", of(|p| p.rows_lost)),
            (
                "messages_truncated",
                self.messages_truncated.load(Ordering::Relaxed),
            ),
            ("lossy_strings", self.lossy_strings.load(Ordering::Relaxed)),
            (
                "rows_after_fork",
                self.rows_after_fork.load(Ordering::Relaxed),
            ),
        ]
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.close_within(Some(IMPLICIT_WAIT));
    }
}

/// The atexit hook: every live sink writes what it has, then switches to
/// write-through for rows that come during interpreter teardown.
pub fn flush_all_at_exit() {
    let live: Vec<Arc<Sink>> = LIVE
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .filter_map(Weak::upgrade)
        .collect();
    for sink in &live {
        sink.enter_exit_mode();
        sink.flush_implicitly();
    }
}

/// What the writer thread holds between attempts: rows taken from the
/// pending buffer and not yet written.
struct Batch {
    bytes: Vec<u8>,
    /// Rows that end in `bytes` (the first may have begun in an earlier,
    /// partly written, piece on stdout).
    rows: u64,
    /// `bytes` begins inside a quoted field (that partly written row).
    in_quotes: bool,
    /// Where a new pending buffer lands when rows are held, to be appended.
    incoming: Vec<u8>,
}

impl Batch {
    /// Writes the batch; returns the rows and bytes that went out whole
    /// and whether it failed. What failed stays in `bytes` for next time.
    fn write(&mut self, output: &mut Output) -> (u64, u64, bool) {
        if self.bytes.is_empty() {
            return (0, 0, false);
        }
        let (sent, error) = output.write_most(&self.bytes);
        if error.is_none() {
            let rows = std::mem::take(&mut self.rows);
            self.bytes.clear();
            self.in_quotes = false;
            return (rows, sent as u64, false);
        }
        let (rows, end, in_quotes) = row_ends(&self.bytes[..sent], self.in_quotes);
        let keep_from = if end < sent && !output.cut_partial(sent - end) {
            self.in_quotes = in_quotes; // the partial row stays: finish it
            sent
        } else {
            self.in_quotes = false;
            end
        };
        self.bytes.drain(..keep_from);
        self.rows -= rows;
        (rows, keep_from as u64, true)
    }
}

fn writer_loop(s: &Shared, output: &mut Output) {
    let mut batch = Batch {
        bytes: Vec::new(),
        rows: 0,
        in_quotes: false,
        incoming: Vec::new(),
    };
    loop {
        let (upto, closing) = {
            let mut p = lock(&s.pending);
            if !p.kick && !p.closing {
                let wait = if batch.bytes.is_empty() {
                    WAKE_INTERVAL
                } else {
                    RETRY_INTERVAL
                };
                p = s
                    .work
                    .wait_timeout(p, wait)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
            p.kick = false;
            if batch.bytes.is_empty() {
                std::mem::swap(&mut p.buf, &mut batch.bytes);
            } else {
                std::mem::swap(&mut p.buf, &mut batch.incoming);
            }
            batch.rows += p.seq - p.done_seq;
            // In the writer's hands now, and still bounded with `buf`.
            p.held_bytes = batch.bytes.len() + batch.incoming.len();
            (p.seq, p.closing)
        };
        if !batch.incoming.is_empty() {
            batch.bytes.extend_from_slice(&batch.incoming);
            batch.incoming.clear();
        }
        let (rows, bytes, failed) = batch.write(output);
        for buf in [&mut batch.bytes, &mut batch.incoming] {
            if buf.is_empty() && buf.capacity() > 4 * HIGH_WATER {
                buf.shrink_to(HIGH_WATER); // give back memory after a burst
            }
        }
        let mut p = lock(&s.pending);
        p.rows_written += rows;
        p.bytes_written += bytes;
        if failed {
            p.write_errors += 1;
        }
        if closing {
            // No later attempt: what is still held is lost, and counted.
            p.rows_lost += batch.rows;
            batch.rows = 0;
            batch.bytes.clear();
        }
        p.held_bytes = batch.bytes.len();
        p.done_seq = upto;
        if closing {
            p.writer_alive = false;
        }
        drop(p);
        s.progress.notify_all();
        if closing {
            return; // `output` (the file) is closed by the caller's drop
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_path(tag: &str) -> PathBuf {
        std::env::temp_dir().join(format!(
            "edgeless-tracer-{tag}-{}-{}.csv",
            std::process::id(),
            crate::clock::now_ns()
        ))
    }

    fn push(sink: &Sink, text: &str) -> bool {
        sink.append(|p| p.buf.extend_from_slice(text.as_bytes()))
    }

    #[test]
    fn flush_close_and_rows_after_close() {
        let path = temp_path("flush");
        let sink = Sink::open(Some(path.clone()), false, 1 << 20, 1024).unwrap();
        assert!(push(&sink, "a\n"));
        sink.flush();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            format!("{HEADER}a\n")
        );
        assert!(push(&sink, "b\n"));
        sink.close();
        sink.close();
        assert!(!push(&sink, "c\n"));
        sink.flush(); // returns at once: no writer
        let stats: std::collections::HashMap<_, _> = sink.stats().into_iter().collect();
        assert_eq!(stats["rows_written"], 2);
        assert_eq!(stats["rows_after_close"], 1);
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            format!("{HEADER}a\nb\n")
        );
        let _ = std::fs::remove_file(path);
    }

    #[test]
    fn dropping_the_last_handle_writes_everything() {
        let path = temp_path("drop");
        let sink = Sink::open(Some(path.clone()), false, 1 << 20, 1024).unwrap();
        for i in 0..1000 {
            assert!(push(&sink, &format!("{i}\n")));
        }
        drop(sink);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 1001);
        assert_eq!(text.lines().last(), Some("999"));
        let _ = std::fs::remove_file(path);
    }

    #[test]
    fn row_ends_skip_newlines_inside_quotes() {
        let rows = b"1,a\n2,\"x\ny\"\n3,\"q\"\"\"\n";
        assert_eq!(row_ends(rows, false), (3, rows.len(), false));
        // cut inside the quoted newline of row 2: one whole row
        assert_eq!(row_ends(&rows[..9], false), (1, 4, true));
        // the rest, begun inside quotes, ends two rows
        assert_eq!(row_ends(&rows[9..], true), (2, rows.len() - 9, false));
        assert_eq!(row_ends(b"", false), (0, 0, false));
    }

    #[test]
    fn rows_past_the_bound_are_dropped_whole() {
        let path = temp_path("bound");
        let sink = Sink::open(Some(path.clone()), false, 10, 1024).unwrap();
        assert!(push(&sink, "12345\n"));
        assert!(!push(&sink, "1234567890\n")); // 11 bytes: over the bound alone
        sink.close();
        let stats: std::collections::HashMap<_, _> = sink.stats().into_iter().collect();
        assert_eq!(stats["rows_dropped"], 1);
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            format!("{HEADER}12345\n")
        );
        let _ = std::fs::remove_file(path);
    }
}
