//! Container logs in the CRI format upstream runtimes write
//! (`<RFC 3339 nano time> <stdout|stderr> <F|P> <text>`), rotated by size,
//! and read back for `kubectl logs`.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

/// Longest line kept whole; longer output is split into `P` (partial)
/// records, as CRI runtimes do.
const MAX_LINE: usize = 16 * 1024;

/// Files kept per container log, the current one included (upstream's
/// `containerLogMaxFiles` default).
pub const MAX_FILES: usize = 5;

/// Appends CRI log records to a file, rotating it when it grows past the
/// limit: `<file>.1` is the newest rotated generation, up to
/// `<file>.{MAX_FILES - 1}`; older ones are dropped.
pub struct LogWriter {
    path: PathBuf,
    file: Option<File>,
    size: u64,
    max: u64,
}

fn timestamp() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%S%.9fZ")
        .to_string()
}

impl LogWriter {
    /// Opens (appending) the log at `path`.
    pub fn open(path: &Path, max: u64) -> LogWriter {
        let file = File::options().create(true).append(true).open(path).ok();
        let size = file
            .as_ref()
            .and_then(|f| f.metadata().ok())
            .map(|m| m.len())
            .unwrap_or(0);
        LogWriter {
            path: path.to_path_buf(),
            file,
            size,
            max: max.max(4096),
        }
    }

    fn record(&mut self, stream: &str, tag: char, text: &[u8]) {
        if self.size >= self.max {
            let generation = |n: usize| self.path.with_extension(format!("log.{n}"));
            for n in (1..MAX_FILES - 1).rev() {
                let _ = std::fs::rename(generation(n), generation(n + 1));
            }
            let _ = std::fs::rename(&self.path, generation(1));
            self.file = File::options()
                .create(true)
                .append(true)
                .open(&self.path)
                .ok();
            self.size = 0;
        }
        let mut line = format!("{} {stream} {tag} ", timestamp()).into_bytes();
        line.extend_from_slice(text);
        line.push(b'\n');
        if let Some(f) = self.file.as_mut()
            && f.write_all(&line).is_ok()
        {
            self.size += line.len() as u64;
        }
    }

    /// Writes every complete line in `pending` and leaves the rest there;
    /// an over-long unfinished line is written as partial records.
    pub fn write_complete_lines(&mut self, stream: &str, pending: &mut Vec<u8>) {
        let mut start = 0;
        while let Some(nl) = pending[start..].iter().position(|&b| b == b'\n') {
            let end = start + nl;
            let mut s = start;
            while end - s > MAX_LINE {
                let chunk = pending[s..s + MAX_LINE].to_vec();
                self.record(stream, 'P', &chunk);
                s += MAX_LINE;
            }
            let line = pending[s..end].to_vec();
            self.record(stream, 'F', &line);
            start = end + 1;
        }
        pending.drain(..start);
        while pending.len() > MAX_LINE {
            let chunk: Vec<u8> = pending.drain(..MAX_LINE).collect();
            self.record(stream, 'P', &chunk);
        }
    }

    /// Writes an unterminated tail (the stream ended without a newline).
    pub fn write_partial(&mut self, stream: &str, text: &[u8]) {
        self.record(stream, 'F', text);
    }
}

/// One parsed log record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// RFC 3339 time with nanoseconds.
    pub time: String,
    /// `stdout` or `stderr`.
    pub stream: String,
    /// Whether the record ends a line (`F`).
    pub full: bool,
    /// The text, without the newline.
    pub text: String,
}

/// Parses one CRI log line.
pub fn parse(line: &str) -> Option<Record> {
    let mut it = line.splitn(4, ' ');
    let time = it.next()?.to_string();
    let stream = it.next()?.to_string();
    let tag = it.next()?;
    let text = it.next().unwrap_or("").to_string();
    Some(Record {
        time,
        stream,
        full: tag != "P",
        text,
    })
}

/// What `kubectl logs` asks for.
#[derive(Debug, Clone, Default)]
pub struct LogQuery {
    /// Only the last N lines.
    pub tail_lines: Option<usize>,
    /// Prefix each line with its time.
    pub timestamps: bool,
    /// Only lines at or after this RFC 3339 time.
    pub since_time: Option<String>,
    /// At most this many bytes.
    pub limit_bytes: Option<usize>,
}

/// Renders one record as `kubectl logs` prints it.
pub fn render(r: &Record, timestamps: bool) -> String {
    let mut s = String::new();
    if timestamps {
        s.push_str(&r.time);
        s.push(' ');
    }
    s.push_str(&r.text);
    if r.full {
        s.push('\n');
    }
    s
}

/// Reads a whole log (the rotated generations oldest first, then the
/// current file) per the query.
pub fn read(path: &Path, q: &LogQuery) -> std::io::Result<String> {
    let mut records = Vec::new();
    let files = (1..MAX_FILES)
        .rev()
        .map(|n| path.with_extension(format!("log.{n}")))
        .chain([path.to_path_buf()]);
    for p in files {
        let Ok(f) = File::open(&p) else { continue };
        for line in BufReader::new(f).lines() {
            if let Some(r) = parse(&line?) {
                records.push(r);
            }
        }
    }
    if let Some(since) = &q.since_time {
        records.retain(|r| r.time.as_str() >= since.as_str());
    }
    if let Some(n) = q.tail_lines {
        // Count whole lines: a run of partials plus its final record.
        let mut lines = 0;
        let mut cut = records.len();
        for (i, r) in records.iter().enumerate().rev() {
            if r.full {
                lines += 1;
                if lines > n {
                    break;
                }
            }
            cut = i;
        }
        if n == 0 {
            cut = records.len();
        }
        records.drain(..cut);
    }
    let mut out = String::new();
    for r in &records {
        out.push_str(&render(r, q.timestamps));
    }
    if let Some(limit) = q.limit_bytes
        && out.len() > limit
    {
        let mut end = limit;
        while !out.is_char_boundary(end) {
            end -= 1;
        }
        out.truncate(end);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_cri_records_and_reads_them_back_with_tail_and_partials() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.log");
        let mut w = LogWriter::open(&path, 1 << 20);
        let mut pending = b"one\ntwo\nthr".to_vec();
        w.write_complete_lines("stdout", &mut pending);
        assert_eq!(pending, b"thr");
        pending.extend_from_slice(b"ee\n");
        w.write_complete_lines("stdout", &mut pending);
        let mut e = b"oops".to_vec();
        w.write_complete_lines("stderr", &mut e);
        w.write_partial("stderr", &e);
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4);
        assert!(lines[0].ends_with(" stdout F one"), "{}", lines[0]);
        assert!(lines[3].ends_with(" stderr F oops"), "{}", lines[3]);
        let all = read(&path, &LogQuery::default()).unwrap();
        assert_eq!(all, "one\ntwo\nthree\noops\n");
        let tail = read(
            &path,
            &LogQuery {
                tail_lines: Some(2),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(tail, "three\noops\n");
        let ts = read(
            &path,
            &LogQuery {
                timestamps: true,
                tail_lines: Some(1),
                ..Default::default()
            },
        )
        .unwrap();
        assert!(ts.ends_with("Z oops\n") && ts.starts_with("20"), "{ts}");
    }

    #[test]
    fn rotation_keeps_max_files_generations_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.log");
        let mut w = LogWriter::open(&path, 4096);
        for i in 0..2000 {
            let mut line = format!("line {i:05} {}\n", "y".repeat(40)).into_bytes();
            w.write_complete_lines("stdout", &mut line);
        }
        let files = std::fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(files, MAX_FILES, "current plus MAX_FILES - 1 generations");
        let all = read(&path, &LogQuery::default()).unwrap();
        let nums: Vec<u32> = all.lines().map(|l| l[5..10].parse().unwrap()).collect();
        assert!(
            nums.windows(2).all(|w| w[1] == w[0] + 1),
            "in order, no gaps"
        );
        assert_eq!(*nums.last().unwrap(), 1999);
        assert!(nums[0] > 0, "the oldest generations were dropped");
    }

    #[test]
    fn long_lines_become_partial_records_across_a_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.log");
        let mut w = LogWriter::open(&path, 8192);
        let mut long = vec![b'x'; MAX_LINE + 10];
        long.push(b'\n');
        w.write_complete_lines("stdout", &mut long);
        let got = read(&path.with_extension("log.1"), &LogQuery::default());
        // The first record filled the file past the limit: it rotated on
        // the second write.
        assert!(got.is_ok());
        let all = read(&path, &LogQuery::default()).unwrap();
        assert_eq!(
            all.len(),
            MAX_LINE + 11,
            "partials joined back into one line"
        );
    }
}
