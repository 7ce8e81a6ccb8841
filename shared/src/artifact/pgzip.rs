//! A gzip writer that compresses on every core and still produces the same
//! bytes on any machine.
//!
//! The input is cut into fixed-size chunks by offset (never by timing); each
//! chunk is deflated on a worker with the previous 32 KiB as its dictionary
//! and ends on a byte boundary (a sync flush), so the chunks concatenate into
//! one deflate stream. The output depends only on the input bytes, whatever
//! the number of threads. Memory is bounded: a few chunks in flight.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use flate2::{Compress, Compression, FlushCompress, Status};

/// Input bytes per chunk.
pub const CHUNK: usize = 256 * 1024;
/// Deflate's window: the dictionary carried from one chunk to the next.
const WINDOW: usize = 32 * 1024;
/// Deflate level. Measured on four 48 MiB YAML files (zlib-rs, 2 cores):
/// level 6 (zlib's default) took 4.2 CPU seconds for 66.9 MB, level 5 took
/// 2.8 s for 67.5 MB (0.9% larger), level 4 no less CPU than 5 and larger,
/// level 1 1.3 s but 52% larger. A session re-packs its tree on every save,
/// so 5. Part of the format: changing it changes every digest.
pub const LEVEL: u32 = 5;

struct Job {
    dict: Arc<Vec<u8>>,
    data: Vec<u8>,
    last: bool,
    reply: SyncSender<io::Result<Done>>,
}

struct Done {
    compressed: Vec<u8>,
    crc: u32,
    len: u64,
}

/// Parallel, deterministic gzip writer. Call [`ParallelGz::finish`] to
/// write the trailer and get the inner writer back.
pub struct ParallelGz<W: Write> {
    inner: Option<W>,
    buf: Vec<u8>,
    dict: Arc<Vec<u8>>,
    pending: VecDeque<Receiver<io::Result<Done>>>,
    jobs: Option<SyncSender<Job>>,
    workers: Vec<JoinHandle<()>>,
    max_pending: usize,
    crc: crc32fast::Hasher,
    len: u64,
}

impl<W: Write> ParallelGz<W> {
    /// A writer using `threads` compression workers (at least one).
    pub fn new(mut inner: W, threads: usize) -> io::Result<Self> {
        let threads = threads.max(1);
        // Fixed header: no name, no mtime, OS "unknown", as Go's gzip writes it.
        inner.write_all(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff])?;
        let (tx, rx) = mpsc::sync_channel::<Job>(threads);
        let rx = Arc::new(Mutex::new(rx));
        let workers = (0..threads)
            .map(|_| {
                let rx = Arc::clone(&rx);
                std::thread::spawn(move || {
                    loop {
                        let job = match rx.lock() {
                            Ok(guard) => guard.recv(),
                            Err(_) => return,
                        };
                        let Ok(job) = job else { return };
                        let _ = job.reply.send(compress(&job.dict, &job.data, job.last));
                    }
                })
            })
            .collect();
        Ok(ParallelGz {
            inner: Some(inner),
            buf: Vec::with_capacity(CHUNK),
            dict: Arc::new(Vec::new()),
            pending: VecDeque::new(),
            jobs: Some(tx),
            workers,
            max_pending: threads * 2,
            crc: crc32fast::Hasher::new(),
            len: 0,
        })
    }

    fn submit(&mut self, last: bool) -> io::Result<()> {
        let data = std::mem::replace(
            &mut self.buf,
            Vec::with_capacity(if last { 0 } else { CHUNK }),
        );
        let next_dict = Arc::new(data[data.len().saturating_sub(WINDOW)..].to_vec());
        let (reply, result) = mpsc::sync_channel(1);
        let job = Job {
            dict: std::mem::replace(&mut self.dict, next_dict),
            data,
            last,
            reply,
        };
        let jobs = self.jobs.as_ref().ok_or_else(finished)?;
        jobs.send(job)
            .map_err(|_| io::Error::other("compression worker stopped"))?;
        self.pending.push_back(result);
        while self.pending.len() > self.max_pending || (last && !self.pending.is_empty()) {
            self.write_oldest()?;
        }
        Ok(())
    }

    fn write_oldest(&mut self) -> io::Result<()> {
        let Some(result) = self.pending.pop_front() else {
            return Ok(());
        };
        let done = result
            .recv()
            .map_err(|_| io::Error::other("compression worker stopped"))??;
        self.crc
            .combine(&crc32fast::Hasher::new_with_initial_len(done.crc, done.len));
        self.len += done.len;
        self.inner
            .as_mut()
            .ok_or_else(finished)?
            .write_all(&done.compressed)
    }

    /// Compresses what is left, writes the gzip trailer, and returns the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.submit(true)?;
        self.stop_workers();
        let crc = self.crc.clone().finalize();
        // ISIZE is the input length modulo 2^32.
        let isize = (self.len & 0xffff_ffff) as u32;
        let mut inner = self.inner.take().ok_or_else(finished)?;
        inner.write_all(&crc.to_le_bytes())?;
        inner.write_all(&isize.to_le_bytes())?;
        inner.flush()?;
        Ok(inner)
    }

    fn stop_workers(&mut self) {
        self.jobs = None;
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
    }
}

fn finished() -> io::Error {
    io::Error::other("gzip writer already finished")
}

impl<W: Write> Write for ParallelGz<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let room = CHUNK - self.buf.len();
        let n = room.min(data.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == CHUNK {
            self.submit(false)?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        // Chunk boundaries must not depend on when callers flush.
        Ok(())
    }
}

impl<W: Write> Drop for ParallelGz<W> {
    fn drop(&mut self) {
        self.stop_workers();
    }
}

/// Bytes judged at a time for whether deflate can shrink them.
const PROBE: usize = 64 * 1024;
/// Order-0 entropy (bits per byte) from which a probe is stored, not
/// deflated: random-looking data (already compressed, encrypted, binary
/// noise) costs deflate its full match search for no gain.
const STORED_ENTROPY: f64 = 7.9;
/// The largest stored block deflate allows.
const MAX_STORED: usize = 65_535;

/// Whether `data` looks incompressible: its byte histogram's entropy.
fn incompressible(data: &[u8]) -> bool {
    if data.len() < 4096 {
        return false;
    }
    // Only ASCII: at most 128 byte values occur, so the entropy is at most
    // 7 bits per byte, below STORED_ENTROPY. The histogram's answer without
    // counting (manifests are text: most probes end here).
    if data.is_ascii() {
        return false;
    }
    // Four tables, summed after: a byte that repeats does not wait on the
    // previous increment of its own counter (fast at any opt-level).
    let mut counts = [[0u32; 256]; 4];
    let mut quads = data.chunks_exact(4);
    for q in &mut quads {
        counts[0][usize::from(q[0])] += 1;
        counts[1][usize::from(q[1])] += 1;
        counts[2][usize::from(q[2])] += 1;
        counts[3][usize::from(q[3])] += 1;
    }
    for &b in quads.remainder() {
        counts[0][usize::from(b)] += 1;
    }
    let n = data.len() as f64;
    let bits: f64 = (0..256)
        .map(|i| counts[0][i] + counts[1][i] + counts[2][i] + counts[3][i])
        .filter(|&c| c > 0)
        .map(|c| {
            let p = f64::from(c) / n;
            -p * p.log2()
        })
        .sum();
    bits >= STORED_ENTROPY
}

/// Deflates one chunk: raw deflate, primed with `dict`, ending with a sync
/// flush (or the final block for the last chunk). Runs of 64 KiB probes that
/// look incompressible go out as stored blocks instead; the choice depends
/// only on the bytes, so the output stays reproducible.
fn compress(dict: &[u8], data: &[u8], last: bool) -> io::Result<Done> {
    let mut out = Vec::with_capacity(data.len() / 2 + 1024);
    // Runs of (start, end, stored) over the chunk.
    let mut runs: Vec<(usize, usize, bool)> = Vec::new();
    for start in (0..data.len()).step_by(PROBE) {
        let end = (start + PROBE).min(data.len());
        let stored = incompressible(&data[start..end]);
        match runs.last_mut() {
            Some(run) if run.2 == stored => run.1 = end,
            _ => runs.push((start, end, stored)),
        }
    }
    if runs.is_empty() {
        runs.push((0, 0, false));
    }
    let count = runs.len();
    for (i, &(start, end, stored)) in runs.iter().enumerate() {
        let final_run = last && i + 1 == count;
        if stored {
            write_stored(&mut out, &data[start..end], final_run);
        } else {
            // The window before this run: the chunk's own bytes, topped up
            // from the previous chunk's dictionary.
            let own = &data[start.saturating_sub(WINDOW)..start];
            let mut window = Vec::with_capacity(WINDOW);
            if own.len() < WINDOW {
                window.extend_from_slice(&dict[dict.len().saturating_sub(WINDOW - own.len())..]);
            }
            window.extend_from_slice(own);
            deflate(&mut out, &window, &data[start..end], final_run)?;
        }
    }
    let mut crc = crc32fast::Hasher::new();
    crc.update(data);
    Ok(Done {
        compressed: out,
        crc: crc.finalize(),
        len: data.len() as u64,
    })
}

/// Stored blocks for `data`, at a byte boundary (every run ends on one).
fn write_stored(out: &mut Vec<u8>, data: &[u8], last: bool) {
    let mut pieces = data.chunks(MAX_STORED).peekable();
    while let Some(piece) = pieces.next() {
        let final_block = last && pieces.peek().is_none();
        let len = piece.len() as u16;
        out.push(u8::from(final_block));
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(piece);
    }
}

/// Raw deflate of `data` primed with `window`, ending with a sync flush, or
/// with the final block when `last`.
fn deflate(out: &mut Vec<u8>, window: &[u8], data: &[u8], last: bool) -> io::Result<()> {
    let mut c = Compress::new(Compression::new(LEVEL), false);
    if !window.is_empty() {
        c.set_dictionary(window).map_err(io::Error::other)?;
    }
    let flush = if last {
        FlushCompress::Finish
    } else {
        FlushCompress::Sync
    };
    loop {
        let consumed = c.total_in() as usize;
        if out.capacity() - out.len() < 1024 {
            out.reserve(out.capacity().max(4096));
        }
        let status = c
            .compress_vec(&data[consumed..], out, flush)
            .map_err(io::Error::other)?;
        let all_in = c.total_in() as usize == data.len();
        let room_left = out.capacity() > out.len();
        match status {
            Status::StreamEnd => break,
            _ if !last && all_in && room_left => break,
            Status::Ok | Status::BufError => continue,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn gunzip(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(data)
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    fn sample(len: usize) -> Vec<u8> {
        // Compressible but not trivial: YAML-ish lines with varying numbers.
        let mut v = Vec::with_capacity(len);
        let mut i = 0u64;
        while v.len() < len {
            v.extend_from_slice(format!("  key-{i}: value-{}\n", i * 7919 % 1000).as_bytes());
            i += 1;
        }
        v.truncate(len);
        v
    }

    fn gzip(data: &[u8], threads: usize, write_size: usize) -> Vec<u8> {
        let mut gz = ParallelGz::new(Vec::new(), threads).unwrap();
        for piece in data.chunks(write_size.max(1)) {
            gz.write_all(piece).unwrap();
        }
        gz.finish().unwrap()
    }

    #[test]
    fn round_trips_through_a_standard_decoder() {
        for len in [0, 1, 1000, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 17] {
            let data = sample(len);
            assert_eq!(gunzip(&gzip(&data, 3, 4096)), data, "len {len}");
        }
    }

    #[test]
    fn output_does_not_depend_on_threads_or_write_sizes() {
        let data = sample(5 * CHUNK / 2);
        let reference = gzip(&data, 1, 1 << 20);
        for (threads, write_size) in [(2, 1), (4, 333), (8, 65536)] {
            assert_eq!(gzip(&data, threads, write_size), reference);
        }
    }

    #[test]
    fn dictionary_keeps_the_ratio_of_a_single_stream() {
        let data = sample(4 * CHUNK);
        let ours = gzip(&data, 2, 8192).len();
        let mut single = flate2::write::GzEncoder::new(Vec::new(), Compression::new(LEVEL));
        single.write_all(&data).unwrap();
        let single = single.finish().unwrap().len();
        assert!(
            ours * 100 <= single * 102,
            "ours {ours} vs single stream {single}"
        );
    }

    fn noise(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    }

    #[test]
    fn incompressible_runs_are_stored_and_still_round_trip() {
        // Text and noise interleaved in 64 KiB pieces, across chunk edges.
        let mut data = Vec::new();
        for k in 0..9u64 {
            if k % 2 == 0 {
                data.extend(sample(PROBE));
            } else {
                data.extend(noise(PROBE + 100, k));
            }
        }
        for threads in [1, 3] {
            let gz = gzip(&data, threads, 5000);
            assert_eq!(gunzip(&gz), data);
            // Stored noise costs 5 bytes per 64 KiB; deflated it would grow too.
            assert!(gz.len() < data.len(), "{} vs {}", gz.len(), data.len());
        }
        assert_eq!(gzip(&data, 1, 1 << 20), gzip(&data, 4, 77));
        assert!(incompressible(&noise(PROBE, 7)));
        assert!(!incompressible(&sample(PROBE)));
    }

    #[test]
    fn ascii_is_never_incompressible_as_the_histogram_says() {
        // The most even ASCII there is (noise over all 128 values) stays
        // under the threshold: the shortcut gives the histogram's answer.
        let even: Vec<u8> = noise(PROBE, 5).iter().map(|b| b & 0x7f).collect();
        let mut counts = [0u32; 256];
        even.iter().for_each(|&b| counts[usize::from(b)] += 1);
        let bits: f64 = counts
            .iter()
            .filter(|&&c| c > 0)
            .map(|&c| {
                let p = f64::from(c) / even.len() as f64;
                -p * p.log2()
            })
            .sum();
        assert!(bits > 6.9 && bits < STORED_ENTROPY, "{bits}");
        assert!(!incompressible(&even));
        // One byte over 0x7f is enough to count again.
        let mut noisy = noise(PROBE, 9);
        assert!(incompressible(&noisy));
        noisy.iter_mut().skip(1).for_each(|b| *b &= 0x7f);
        assert!(!incompressible(&noisy));
    }

    #[test]
    fn a_last_chunk_of_noise_ends_the_stream() {
        for len in [PROBE, CHUNK + MAX_STORED + 3, 2 * CHUNK] {
            let data = noise(len, 11);
            assert_eq!(gunzip(&gzip(&data, 2, 4096)), data, "len {len}");
        }
    }
}
