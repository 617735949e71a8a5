//! How a reaper reads its subagent's pipe: in batches. After a read that
//! brought something, it sleeps [`GATHER`] before the next one. A write to
//! a pipe that no reader waits on wakes no one, so under load the
//! subagent's lines (four per task) cost it no wake-up of another process,
//! and the reaper wakes at most once per [`GATHER`] instead of once per
//! line. Idle, the reaper waits in `read` as before: the first line wakes
//! it at once.
//!
//! End-of-file (the subagent is gone) is read at once when the reaper
//! waits in `read`, and at most [`GATHER`] late when it sleeps: the time
//! from a subagent's kill -9 to its death certificate grows by that much
//! at most.

use std::io::{BufRead, BufReader, Read};
use std::time::Duration;

/// How long lines gather in the pipe after a read that brought some.
pub const GATHER: Duration = Duration::from_millis(5);

/// A reader that sleeps `pause` before each read that follows one that
/// brought something.
pub struct Batched<R> {
    inner: R,
    pause: Duration,
    brought: bool,
}

impl<R: Read> Batched<R> {
    pub fn new(inner: R, pause: Duration) -> Batched<R> {
        Batched {
            inner,
            pause,
            brought: false,
        }
    }
}

impl<R: Read> Read for Batched<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.brought {
            std::thread::sleep(self.pause);
        }
        let n = self.inner.read(buf)?;
        self.brought = n > 0;
        Ok(n)
    }
}

/// The lines of this process's standard input, read in batches.
pub fn stdin_lines() -> std::io::Lines<BufReader<Batched<std::io::Stdin>>> {
    BufReader::new(Batched::new(std::io::stdin(), GATHER)).lines()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::time::Instant;

    /// Counts the reads that reach the pipe.
    struct Counting<R> {
        inner: R,
        reads: usize,
    }

    impl<R: Read> Read for Counting<R> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            self.reads += 1;
            self.inner.read(buf)
        }
    }

    /// 60 lines written one per millisecond: read one by one they take
    /// about 60 reads; gathered for 30 ms after each read, a handful.
    #[test]
    fn lines_written_one_by_one_are_read_in_a_few_batches_all_in_order() {
        let (reader, mut writer) = std::io::pipe().unwrap();
        let writing = std::thread::spawn(move || {
            for i in 0..60 {
                writeln!(writer, "line {i}").unwrap();
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        let mut batched = Batched::new(
            Counting {
                inner: reader,
                reads: 0,
            },
            Duration::from_millis(30),
        );
        let mut text = String::new();
        let began = Instant::now();
        batched.read_to_string(&mut text).unwrap();
        writing.join().unwrap();
        let expected: String = (0..60).map(|i| format!("line {i}\n")).collect();
        assert_eq!(text, expected);
        // one read per batch, plus the one that finds end-of-file
        let reads = batched.inner.reads;
        let most = 2 + began.elapsed().as_millis() as usize / 30;
        assert!(reads <= most, "{reads} reads, at most {most} expected");
        assert!(reads < 30, "{reads} reads: the lines were not gathered");
    }

    #[test]
    fn end_of_file_when_idle_is_read_without_a_pause() {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(writer);
        let mut batched = Batched::new(reader, Duration::from_secs(3600));
        let mut buf = [0u8; 8];
        assert_eq!(batched.read(&mut buf).unwrap(), 0);
    }
}
