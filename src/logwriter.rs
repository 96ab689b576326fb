//! The log's writer: lines are appended to a shared buffer by the thread that logs and
//! written out by one writer thread every [`FLUSH_EVERY`] (or as soon as [`HIGH_WATER`]
//! bytes are waiting), so a request never waits on the log's I/O and never wakes another
//! thread: under load, thousands of lines cost one `write` and no context switch each.
//!
//! `tracing-appender`'s non-blocking writer hands every line to its worker through a
//! channel, which wakes the worker for every line once it has caught up; on a 2-core
//! machine the wake-ups cost more than the formatting (benches/load.sh). The interval is
//! what IDM's own audit handlers do (`buffering.writeInterval`).
//!
//! Nothing is dropped: when [`MAX_PENDING`] bytes are waiting (the output is stuck or
//! slower than the logging), the logging thread writes the buffer itself, so logging
//! slows down instead of losing lines or growing without bound. [`LogGuard`] writes what
//! is left when the process ends normally.

use std::io::Write;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;

/// Longest a line waits in the buffer.
pub const FLUSH_EVERY: Duration = Duration::from_millis(50);
/// Waiting bytes that wake the writer before its interval.
pub const HIGH_WATER: usize = 64 * 1024;
/// Waiting bytes beyond which the logging thread writes itself.
pub const MAX_PENDING: usize = 4 * 1024 * 1024;

struct Shared {
    pending: Mutex<Pending>,
    wake: Condvar,
    /// The output; locked while writing, so lines never interleave.
    out: Mutex<Box<dyn Write + Send>>,
}

#[derive(Default)]
struct Pending {
    buf: Vec<u8>,
    /// The buffer written last time, handed back empty: the two are swapped, so neither
    /// grows (reallocates and copies) again once they reached the size of a burst.
    spare: Vec<u8>,
    closed: bool,
}

impl Shared {
    /// Writes and flushes what is waiting (the buffer is swapped out, so loggers are not
    /// held up by the write).
    fn write_out(&self) {
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        let mut buf = {
            let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            if p.buf.is_empty() {
                return;
            }
            let spare = std::mem::take(&mut p.spare);
            std::mem::replace(&mut p.buf, spare)
        };
        // A log that cannot be written has nowhere to report it.
        let _ = out.write_all(&buf);
        let _ = out.flush();
        buf.clear();
        if buf.capacity() <= MAX_PENDING {
            self.pending.lock().unwrap_or_else(|e| e.into_inner()).spare = buf;
        }
    }
}

/// The [`MakeWriter`] given to `tracing-subscriber`.
#[derive(Clone)]
pub struct BatchedWriter {
    shared: Arc<Shared>,
}

/// Stops the writer thread after writing what is waiting.
pub struct LogGuard {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl BatchedWriter {
    /// Starts the writer thread for `out`.
    pub fn new(out: impl Write + Send + 'static) -> std::io::Result<(Self, LogGuard)> {
        let shared = Arc::new(Shared {
            pending: Mutex::new(Pending::default()),
            wake: Condvar::new(),
            out: Mutex::new(Box::new(out)),
        });
        let worker = shared.clone();
        let thread = std::thread::Builder::new()
            .name("log-writer".into())
            .spawn(move || loop {
                let closed = {
                    let p = worker.pending.lock().unwrap_or_else(|e| e.into_inner());
                    let (p, _) = worker
                        .wake
                        .wait_timeout_while(p, FLUSH_EVERY, |p| {
                            p.buf.len() < HIGH_WATER && !p.closed
                        })
                        .unwrap_or_else(|e| e.into_inner());
                    p.closed
                };
                worker.write_out();
                if closed {
                    return;
                }
            })?;
        Ok((
            Self {
                shared: shared.clone(),
            },
            LogGuard {
                shared,
                thread: Some(thread),
            },
        ))
    }
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        self.shared
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .closed = true;
        self.shared.wake.notify_one();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.shared.write_out();
    }
}

/// One event's writer: `tracing-subscriber` formats the line, then writes it whole.
pub struct LineWriter<'a> {
    shared: &'a Shared,
}

impl Write for LineWriter<'_> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let len = {
            let mut p = self
                .shared
                .pending
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            p.buf.extend_from_slice(data);
            p.buf.len()
        };
        if len >= MAX_PENDING {
            self.shared.write_out();
        } else if len >= HIGH_WATER && len - data.len() < HIGH_WATER {
            // Crossed the mark with this line: wake the writer once.
            self.shared.wake.notify_one();
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for BatchedWriter {
    type Writer = LineWriter<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        LineWriter {
            shared: &self.shared,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An output the test can read, and make slow.
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl Write for Sink {
        fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(data);
            Ok(data.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn line(w: &BatchedWriter, text: &str) {
        w.make_writer().write_all(text.as_bytes()).unwrap();
    }

    #[test]
    fn lines_reach_the_output_within_the_interval_and_in_order() {
        let sink = Sink::default();
        let (w, guard) = BatchedWriter::new(sink.clone()).unwrap();
        for i in 0..100 {
            line(&w, &format!("line {i}\n"));
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while sink.0.lock().unwrap().len() < 100 * 7 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        let text = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        let expected: String = (0..100).map(|i| format!("line {i}\n")).collect();
        assert_eq!(text, expected);
        drop(guard);
    }

    #[test]
    fn nothing_is_lost_across_threads_and_at_the_end() {
        let sink = Sink::default();
        let (w, guard) = BatchedWriter::new(sink.clone()).unwrap();
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let w = w.clone();
                std::thread::spawn(move || {
                    // Long lines: crosses HIGH_WATER and MAX_PENDING on the way.
                    let pad = "x".repeat(1000);
                    for i in 0..5000 {
                        line(&w, &format!("{t} {i} {pad}\n"));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        drop(guard);
        let text = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4 * 5000);
        // Each thread's lines in its order, none torn.
        for t in 0..4 {
            let mine: Vec<usize> = lines
                .iter()
                .filter(|l| l.starts_with(&format!("{t} ")))
                .map(|l| l.split(' ').nth(1).unwrap().parse().unwrap())
                .collect();
            assert_eq!(mine, (0..5000).collect::<Vec<_>>());
        }
    }
}
