//! How a reaper reads its subagent's pipe: in batches. After a read that
//! brought something, when the pipe has nothing more to read at once, it
//! sleeps [`GATHER`] before the next read. A write to a pipe that no reader
//! waits on wakes no one, so under load the subagent's lines (four per
//! task) cost it no wake-up of another process, and the reaper wakes at
//! most once per [`GATHER`] instead of once per line. Idle, the reaper
//! waits in `read` as before: the first line wakes it at once. What is
//! already there (a burst, a hand-over from the lean reaper, end-of-file)
//! is read without a pause.
//!
//! End-of-file (the subagent is gone) is read at once when the reaper
//! waits in `read`, and at most [`GATHER`] late when it sleeps: the time
//! from a subagent's kill -9 to its death certificate grows by that much
//! at most.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::os::fd::AsFd;
use std::time::Duration;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

/// How long lines gather in the pipe after a read that brought some.
pub const GATHER: Duration = Duration::from_millis(5);

/// A reader that sleeps `pause` before a read that follows one that
/// brought something, unless there is something to read at once.
pub struct Batched<R> {
    inner: R,
    pause: Duration,
    brought: bool,
    /// How many times it slept.
    #[cfg(test)]
    paused: usize,
}

impl<R: Read + AsFd> Batched<R> {
    pub fn new(inner: R, pause: Duration) -> Batched<R> {
        Batched {
            inner,
            pause,
            brought: false,
            #[cfg(test)]
            paused: 0,
        }
    }

    /// Whether a read would return at once: data, or end-of-file.
    fn ready(&self) -> bool {
        let mut fds = [PollFd::new(self.inner.as_fd(), PollFlags::POLLIN)];
        matches!(poll(&mut fds, PollTimeout::ZERO), Ok(n) if n > 0)
    }
}

impl<R: Read + AsFd> Read for Batched<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.brought && !self.ready() {
            #[cfg(test)]
            {
                self.paused += 1;
            }
            std::thread::sleep(self.pause);
        }
        let n = self.inner.read(buf)?;
        self.brought = n > 0;
        Ok(n)
    }
}

/// The lines of this process's standard input, read in batches (through a
/// copy of its descriptor: std's own buffer would hide what waits in it).
pub fn stdin_lines() -> Box<dyn Iterator<Item = std::io::Result<String>>> {
    match std::io::stdin().as_fd().try_clone_to_owned() {
        Ok(fd) => Box::new(BufReader::new(Batched::new(File::from(fd), GATHER)).lines()),
        // no descriptor to spare: read each line as it comes
        Err(_) => Box::new(std::io::stdin().lock().lines()),
    }
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

    impl<R: AsFd> AsFd for Counting<R> {
        fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
            self.inner.as_fd()
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
        // a read per batch and one more if a line came meanwhile, plus the
        // read that finds end-of-file
        let reads = batched.inner.reads;
        let most = 2 * (2 + began.elapsed().as_millis() as usize / 30);
        assert!(reads <= most, "{reads} reads, at most {most} expected");
        // one by one, each line takes a read of its own (112 were seen)
        assert!(reads < 60, "{reads} reads: the lines were not gathered");
    }

    /// A burst already in the pipe (the lean reaper's hand-over to the
    /// full one) is read to its end without a pause, in many reads.
    #[test]
    fn what_is_already_there_is_read_without_a_pause() {
        let (reader, mut writer) = std::io::pipe().unwrap();
        let lines: String = (0..2000).map(|i| format!("={i:026}\n")).collect();
        writer.write_all(lines.as_bytes()).unwrap();
        drop(writer);
        let mut read = BufReader::new(Batched::new(reader, Duration::from_millis(50)));
        let mut text = String::new();
        while read.read_line(&mut text).unwrap() > 0 {}
        assert_eq!(text, lines);
        assert_eq!(read.get_ref().paused, 0);
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
