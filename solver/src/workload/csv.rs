//! Streaming line and field access for the Azure Functions trace files.
//!
//! The real 2019 day files are about 50 MB each (≈ 46 k rows × 1444 fields), so rows are read one
//! at a time into a reused buffer as raw bytes (no UTF-8 validation of the count columns), and
//! fields are located by their comma offsets without allocating per field.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use crate::error::{Result, SolverError};

/// A trace file read line by line.
pub(crate) struct LineReader {
    path: PathBuf,
    reader: BufReader<File>,
    buf: Vec<u8>,
    /// Offsets of the commas of the current line.
    commas: Vec<usize>,
    /// 1-based number of the current line.
    pub line_no: usize,
}

impl LineReader {
    /// Opens `path`; `instance`/`json_path` name the instance field that referenced it, so that a
    /// missing file is reported where the user can fix it.
    pub fn open(path: &Path, instance: &Path, json_path: &str) -> Result<LineReader> {
        let file = File::open(path).map_err(|e| {
            SolverError::invalid(
                instance,
                json_path,
                format!("cannot open trace file {}: {e}", path.display()),
            )
        })?;
        Ok(LineReader {
            path: path.to_path_buf(),
            reader: BufReader::with_capacity(1 << 20, file),
            buf: Vec::with_capacity(16 << 10),
            commas: Vec::with_capacity(1500),
            line_no: 0,
        })
    }

    /// Advances to the next non-empty line; `false` at the end of the file.
    pub fn next_line(&mut self) -> Result<bool> {
        loop {
            self.buf.clear();
            let n = self
                .reader
                .read_until(b'\n', &mut self.buf)
                .map_err(|source| SolverError::Io {
                    path: self.path.clone(),
                    source,
                })?;
            if n == 0 {
                return Ok(false);
            }
            self.line_no += 1;
            while matches!(self.buf.last(), Some(b'\n' | b'\r')) {
                self.buf.pop();
            }
            if self.line_no == 1 && self.buf.starts_with(&[0xEF, 0xBB, 0xBF]) {
                self.buf.drain(..3);
            }
            if self.buf.iter().all(|b| b.is_ascii_whitespace()) {
                continue;
            }
            self.commas.clear();
            self.commas.extend(
                self.buf
                    .iter()
                    .enumerate()
                    .filter(|(_, &b)| b == b',')
                    .map(|(i, _)| i),
            );
            return Ok(true);
        }
    }

    /// Number of fields of the current line.
    pub fn n_fields(&self) -> usize {
        self.commas.len() + 1
    }

    /// Field `i` of the current line (empty when out of range).
    pub fn field(&self, i: usize) -> &[u8] {
        if i > self.commas.len() {
            return &[];
        }
        let lo = if i == 0 { 0 } else { self.commas[i - 1] + 1 };
        let hi = self.commas.get(i).copied().unwrap_or(self.buf.len());
        &self.buf[lo..hi]
    }

    /// Field `i` as text, trimmed; an error naming the line when it is not UTF-8.
    pub fn text(&self, i: usize, what: &str) -> Result<&str> {
        std::str::from_utf8(self.field(i))
            .map(str::trim)
            .map_err(|_| self.error(format!("field {} ({what}) is not valid UTF-8", i + 1)))
    }

    /// An error at the current line of this file.
    pub fn error(&self, message: impl Into<String>) -> SolverError {
        // An empty file has no line yet; its missing header is on line 1.
        SolverError::invalid(&self.path, format!("line {}", self.line_no.max(1)), message)
    }

    /// Field `i` as a non-negative integer count (`"3"`, also `"3.0"`).
    pub fn count(&self, i: usize, what: &str) -> Result<u64> {
        let f = self.field(i);
        let f = trim_ascii(f);
        if !f.is_empty() && f.len() <= 18 && f.iter().all(u8::is_ascii_digit) {
            return Ok(f
                .iter()
                .fold(0u64, |acc, &d| acc * 10 + u64::from(d - b'0')));
        }
        let text = std::str::from_utf8(f).unwrap_or("");
        match text.parse::<f64>() {
            Ok(v) if v.is_finite() && v >= 0.0 && (v - v.round()).abs() < 1e-9 && v < 1e18 => {
                Ok(v.round() as u64)
            }
            _ => Err(self.error(format!(
                "field {} ({what}): expected a non-negative integer count, found \"{}\"",
                i + 1,
                String::from_utf8_lossy(f)
            ))),
        }
    }

    /// Field `i` as a finite number.
    pub fn number(&self, i: usize, what: &str) -> Result<f64> {
        let f = trim_ascii(self.field(i));
        let text = std::str::from_utf8(f).unwrap_or("");
        match text.parse::<f64>() {
            Ok(v) if v.is_finite() => Ok(v),
            _ => Err(self.error(format!(
                "field {} ({what}): expected a finite number, found \"{}\"",
                i + 1,
                String::from_utf8_lossy(f)
            ))),
        }
    }
}

fn trim_ascii(mut f: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = f {
        if first.is_ascii_whitespace() {
            f = rest;
        } else {
            break;
        }
    }
    while let [rest @ .., last] = f {
        if last.is_ascii_whitespace() {
            f = rest;
        } else {
            break;
        }
    }
    f
}
