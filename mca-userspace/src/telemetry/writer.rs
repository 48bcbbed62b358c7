//! Log lines gathered in memory and written to stderr in batches: a line costs a copy into a
//! buffer, not a `write(2)` (nor waking another thread, which on a loaded sidecar costs as
//! much). A thread of its own writes the buffer every [`INTERVAL`]; a line that fills it past
//! [`HIGH_WATER`] writes it at once, so memory stays bounded and a burst is never dropped.
//! Lines are written in the order they were logged; what is buffered is written when the
//! [`Flush`] guard is dropped at exit (a crash loses at most [`INTERVAL`] of lines). The two
//! buffers, the one filling and the one being written, keep their capacity from batch to
//! batch, so a loaded sidecar does not regrow one from nothing (and copy it as it doubles)
//! every [`INTERVAL`].

use std::{
    io::Write,
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use tracing_subscriber::fmt::MakeWriter;

/// How long a line may wait in the buffer.
const INTERVAL: Duration = Duration::from_millis(50);
/// A buffer this full is written at once.
const HIGH_WATER: usize = 256 << 10;

struct Shared<W> {
    buffer: Mutex<Vec<u8>>,
    /// Held from taking a batch to writing it, so batches are written in order.
    out: Mutex<Out<W>>,
}

struct Out<W> {
    writer: W,
    /// The batch being written, then the buffer lines go to after the next swap.
    spare: Vec<u8>,
}

impl<W: Write> Shared<W> {
    /// Writes what is buffered.
    fn flush(&self) {
        let mut out = lock(&self.out);
        let Out { writer, spare } = &mut *out;
        std::mem::swap(&mut *lock(&self.buffer), spare);
        if !spare.is_empty() {
            // Nowhere to report a failed write of the log itself.
            let _ = writer.write_all(spare);
            let _ = writer.flush();
            spare.clear();
        }
        // What one batch needs is kept; a single huge line's excess is not.
        spare.shrink_to(2 * HIGH_WATER);
    }

    /// Lets go of the buffer after a line went into it, writing it if that filled it.
    fn release(&self, buffer: MutexGuard<'_, Vec<u8>>) {
        let full = buffer.len() >= HIGH_WATER;
        drop(buffer);
        if full {
            self.flush();
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// Makes a [`Line`] per event.
pub struct Batched<W>(Arc<Shared<W>>);

impl<W: Write> Batched<W> {
    /// Appends one line, which `fill` writes straight into the buffer.
    pub fn append(&self, fill: impl FnOnce(&mut Vec<u8>)) {
        let mut buffer = lock(&self.0.buffer);
        fill(&mut buffer);
        self.0.release(buffer);
    }
}

impl<W> Clone for Batched<W> {
    fn clone(&self) -> Self {
        Self(Arc::clone(&self.0))
    }
}

/// One event's line, written straight into the shared buffer.
pub struct Line<'a, W: Write> {
    shared: &'a Shared<W>,
    buffer: Option<MutexGuard<'a, Vec<u8>>>,
}

impl<W: Write> Write for Line<'_, W> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let shared = self.shared;
        self.buffer
            .get_or_insert_with(|| lock(&shared.buffer))
            .extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<W: Write> Drop for Line<'_, W> {
    fn drop(&mut self) {
        if let Some(buffer) = self.buffer.take() {
            self.shared.release(buffer);
        }
    }
}

impl<'a, W: Write + 'a> MakeWriter<'a> for Batched<W> {
    type Writer = Line<'a, W>;

    fn make_writer(&'a self) -> Line<'a, W> {
        Line {
            shared: &self.0,
            buffer: None,
        }
    }
}

/// Writes what is buffered when dropped.
pub struct Flush(Arc<dyn Fn() + Send + Sync>);

impl std::fmt::Debug for Flush {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Flush")
    }
}

impl Drop for Flush {
    fn drop(&mut self) {
        (self.0)();
    }
}

/// Starts batching lines to `out`, with the thread that writes them every [`INTERVAL`].
pub fn batched<W: Write + Send + 'static>(out: W) -> (Batched<W>, Flush) {
    let shared = Arc::new(Shared {
        buffer: Mutex::new(Vec::with_capacity(HIGH_WATER)),
        out: Mutex::new(Out {
            writer: out,
            spare: Vec::new(),
        }),
    });
    let periodic = Arc::downgrade(&shared);
    std::thread::Builder::new()
        .name("mca-log".into())
        .spawn(move || {
            loop {
                std::thread::sleep(INTERVAL);
                match periodic.upgrade() {
                    Some(shared) => shared.flush(),
                    None => return,
                }
            }
        })
        .expect("starting the log writer thread");
    let at_exit = Arc::clone(&shared);
    (Batched(shared), Flush(Arc::new(move || at_exit.flush())))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `Write` whose output the test can read.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_wait_in_memory_and_are_written_in_order() {
        let captured = Captured::default();
        let (writer, flush) = batched(captured.clone());
        for i in 0..1000 {
            writeln!(writer.make_writer(), "line {i}").unwrap();
        }
        drop(flush);
        let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        let expected: String = (0..1000).map(|i| format!("line {i}\n")).collect();
        assert_eq!(text, expected);
    }

    #[test]
    fn a_full_buffer_is_written_by_the_line_that_filled_it() {
        let captured = Captured::default();
        let (writer, _flush) = batched(captured.clone());
        let line = vec![b'x'; 1023];
        for _ in 0..(HIGH_WATER / 1024 + 1) {
            let mut out = writer.make_writer();
            out.write_all(&line).unwrap();
            out.write_all(b"\n").unwrap();
        }
        assert!(captured.0.lock().unwrap().len() >= HIGH_WATER);
    }

    #[test]
    fn the_periodic_write_empties_the_buffer() {
        let captured = Captured::default();
        let (writer, _flush) = batched(captured.clone());
        writeln!(writer.make_writer(), "soon").unwrap();
        let start = std::time::Instant::now();
        while captured.0.lock().unwrap().is_empty() {
            assert!(start.elapsed() < Duration::from_secs(5), "never written");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(&*captured.0.lock().unwrap(), b"soon\n");
    }
}
