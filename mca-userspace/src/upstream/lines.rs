//! The events of a watch as an API server streams them: one JSON object per line, split
//! across body frames at arbitrary places. Each byte is scanned for the newline once (a
//! rescan of the pending bytes per frame would make a large event quadratic), and the
//! pending line is bounded per watch ([`Lines::new`]'s `max`) and per process (it is held
//! against [`memory::ANSWERS`]).

use bytes::{Bytes, BytesMut};

use crate::limits::memory::{self, Held, OverBudget};

/// The largest watch event read: an object etcd takes (1.5 MiB of protobuf) is a few MiB
/// of JSON at most.
pub const MAX_EVENT: usize = 16 << 20;

/// Why a watch stream cannot be read on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// One event is larger than the bound.
    #[error("a watch event larger than {0} bytes")]
    TooLong(usize),
    /// The process holds all it may.
    #[error(transparent)]
    OverBudget(#[from] OverBudget),
}

/// A watch stream's pending bytes.
#[derive(Debug)]
pub struct Lines {
    pending: BytesMut,
    /// How much of `pending` is known to hold no newline.
    scanned: usize,
    max: usize,
    held: Held,
}

impl Lines {
    /// Events of at most `max` bytes.
    pub fn new(max: usize) -> Self {
        Self {
            pending: BytesMut::new(),
            scanned: 0,
            max,
            held: memory::ANSWERS.hold(),
        }
    }

    /// Adds a frame's bytes.
    pub fn push(&mut self, data: &[u8]) -> Result<(), Error> {
        self.pending.extend_from_slice(data);
        self.held.resize(self.pending.len())?;
        Ok(())
    }

    /// The next complete line that is not blank, without its line ending; `None` until one
    /// is complete. An error once the line being assembled passes the bound.
    pub fn next_line(&mut self) -> Result<Option<Bytes>, Error> {
        loop {
            let Some(at) = self.pending[self.scanned..]
                .iter()
                .position(|&b| b == b'\n')
            else {
                self.scanned = self.pending.len();
                if self.pending.len() > self.max {
                    return Err(Error::TooLong(self.max));
                }
                return Ok(None);
            };
            let line = self.pending.split_to(self.scanned + at + 1).freeze();
            self.scanned = 0;
            // Never fails: it holds less than before.
            let _ = self.held.resize(self.pending.len());
            let trimmed = line.trim_ascii();
            if !trimmed.is_empty() {
                return Ok(Some(line.slice_ref(trimmed)));
            }
        }
    }

    /// The last line, once the stream ended without a newline after it.
    pub fn finish(self) -> Option<Bytes> {
        let rest = self.pending.freeze();
        let trimmed = rest.trim_ascii();
        (!trimmed.is_empty()).then(|| rest.slice_ref(trimmed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_split_anywhere_come_out_whole_and_blank_ones_not_at_all() {
        let mut lines = Lines::new(64);
        let mut out = Vec::new();
        for frame in ["{\"a\"", ":1}\n\n{\"b\":", "2}\r\n", "  \n{\"c\":3}"] {
            lines.push(frame.as_bytes()).unwrap();
            while let Some(line) = lines.next_line().unwrap() {
                out.push(line);
            }
        }
        out.extend(lines.finish());
        assert_eq!(out, ["{\"a\":1}", "{\"b\":2}", "{\"c\":3}"]);
    }

    #[test]
    fn an_event_past_the_bound_ends_the_stream() {
        let mut lines = Lines::new(8);
        lines.push(b"{\"a\":1}\n").unwrap();
        assert!(lines.next_line().unwrap().is_some());
        lines.push(b"0123456789").unwrap();
        assert_eq!(lines.next_line(), Err(Error::TooLong(8)));
    }

    #[test]
    fn a_large_event_in_small_frames_is_scanned_once() {
        let mut lines = Lines::new(1 << 20);
        for _ in 0..10_000 {
            lines.push(&[b'x'; 64]).unwrap();
            assert_eq!(lines.next_line(), Ok(None));
            assert_eq!(lines.scanned, lines.pending.len());
        }
        lines.push(b"\n").unwrap();
        assert_eq!(lines.next_line().unwrap().unwrap().len(), 640_000);
        assert_eq!(lines.held.units(), 0);
    }
}
