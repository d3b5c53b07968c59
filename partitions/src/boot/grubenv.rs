//! The GRUB environment block (`grubenv`) as bytes: parsing, variables, and the 1024-byte
//! block written back, Tandem's variables first with a filler line so a torn write of one
//! sector leaves the old or the new block (the `grub` backend's module doc says why). A leaf:
//! the backend and the slots' boot files (GRUB's `cmdline.env`) both encode through it.

/// Size of a GRUB environment block.
pub const ENVBLK_SIZE: usize = 1024;
const SECTOR: usize = 512;
/// First line of every environment block.
pub const HEADER: &[u8] = b"# GRUB Environment Block\n";

/// A parsed GRUB environment block. Values are stored escaped as GRUB writes them
/// (`\` before `\` and newline).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GrubEnv {
    comments: Vec<Vec<u8>>,
    vars: Vec<(String, Vec<u8>)>,
}

fn escape(value: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.len());
    for &b in value.as_bytes() {
        if b == b'\\' || b == b'\n' {
            out.push(b'\\');
        }
        out.push(b);
    }
    out
}

fn unescape(raw: &[u8]) -> String {
    let mut out = Vec::with_capacity(raw.len());
    let mut it = raw.iter();
    while let Some(&b) = it.next() {
        if b == b'\\' {
            if let Some(&n) = it.next() {
                out.push(n);
            }
        } else {
            out.push(b);
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl GrubEnv {
    /// Parse a block: the header line, then `#` comment lines and `name=value` lines in any
    /// order, then `#` padding.
    pub fn parse(data: &[u8]) -> std::result::Result<Self, String> {
        let mut rest = data
            .strip_prefix(HEADER)
            .ok_or("missing the `# GRUB Environment Block` header")?;
        let mut env = GrubEnv::default();
        loop {
            if rest.iter().all(|&b| b == b'#') {
                return Ok(env);
            }
            if rest.first() == Some(&b'#') {
                let nl = rest
                    .iter()
                    .position(|&b| b == b'\n')
                    .ok_or("bytes other than `#` in the padding")?;
                let (line, tail) = rest.split_at(nl);
                // A line of `#` only is our sector filler (see `to_block`), not a comment.
                if !line.iter().all(|&b| b == b'#') {
                    env.comments.push(line.to_vec());
                }
                rest = tail.get(1..).unwrap_or(&[]);
                continue;
            }
            let eq = rest
                .iter()
                .position(|&b| b == b'=')
                .ok_or("a line without `=`")?;
            let (name, tail) = rest.split_at(eq);
            if name.is_empty() || name.contains(&b'\n') {
                return Err("a variable line without a name".into());
            }
            let name = std::str::from_utf8(name)
                .map_err(|_| "a variable name that is not UTF-8")?
                .to_string();
            let tail = tail.get(1..).unwrap_or(&[]);
            let mut i = 0;
            let end = loop {
                match tail.get(i) {
                    None => return Err(format!("variable {name} is not terminated by a newline")),
                    Some(b'\\') => i += 2,
                    Some(b'\n') => break i,
                    Some(_) => i += 1,
                }
            };
            let value = tail.get(..end).unwrap_or(&[]).to_vec();
            env.vars.retain(|(n, _)| *n != name);
            env.vars.push((name, value));
            rest = tail.get(end + 1..).unwrap_or(&[]);
        }
    }

    /// A variable's (unescaped) value.
    pub fn get(&self, name: &str) -> Option<String> {
        self.vars
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| unescape(v))
    }

    /// Set a variable (kept in place if it exists, appended otherwise).
    pub fn set(&mut self, name: &str, value: &str) {
        match self.vars.iter_mut().find(|(n, _)| n == name) {
            Some((_, v)) => *v = escape(value),
            None => self.vars.push((name.to_string(), escape(value))),
        }
    }

    /// Remove a variable.
    pub fn unset(&mut self, name: &str) {
        self.vars.retain(|(n, _)| n != name);
    }

    /// Variable names in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.vars.iter().map(|(n, _)| n.as_str())
    }

    /// Serialize to exactly 1024 bytes: header, comment lines, `TANDEM_*` variables, the
    /// other variables, `#` padding. `Err(needed)` when it does not fit.
    pub fn to_block(&self) -> std::result::Result<Vec<u8>, usize> {
        let out = self
            .lines(true)
            .filter(|l| l.len() <= ENVBLK_SIZE)
            .unwrap_or_else(|| self.lines(false).unwrap_or_default());
        if out.len() > ENVBLK_SIZE {
            return Err(out.len());
        }
        Ok(pad(out, ENVBLK_SIZE))
    }

    /// Serialize like [`to_block`](Self::to_block), padded to the smallest multiple of 1024
    /// bytes that holds it: a block only read (`load_env`, `grub-editenv list`) may be larger
    /// than 1024 bytes, which `save_env` cannot grow.
    pub fn to_padded_block(&self) -> Vec<u8> {
        let out = self.lines(false).unwrap_or_default();
        let size = out.len().div_ceil(ENVBLK_SIZE).max(1) * ENVBLK_SIZE;
        pad(out, size)
    }

    /// The header and the lines, unpadded. With `filler`, `None` when there is nothing to
    /// fill (no other variables, or no room in the first sector).
    fn lines(&self, filler: bool) -> Option<Vec<u8>> {
        let mut out = HEADER.to_vec();
        for c in &self.comments {
            out.extend_from_slice(c);
            out.push(b'\n');
        }
        let (ours, others): (Vec<_>, Vec<_>) = self
            .vars
            .iter()
            .partition(|(n, _)| n.starts_with("TANDEM_"));
        let line = |out: &mut Vec<u8>, (n, v): &(String, Vec<u8>)| {
            out.extend_from_slice(n.as_bytes());
            out.push(b'=');
            out.extend_from_slice(v);
            out.push(b'\n');
        };
        for v in &ours {
            line(&mut out, v);
        }
        // Fill the first sector with a `#` line so the other variables start at byte 512 and
        // never move when a Tandem value changes length: a torn two-sector write then yields
        // the old or the new block, never a mix (GRUB skips `#` lines).
        if filler {
            if others.is_empty() || out.len() + 2 > SECTOR {
                return None;
            }
            out.resize(SECTOR - 1, b'#');
            out.push(b'\n');
        }
        for v in &others {
            line(&mut out, v);
        }
        Some(out)
    }
}

/// `out` followed by `#` up to `size` bytes.
fn pad(mut out: Vec<u8>, size: usize) -> Vec<u8> {
    out.resize(size, b'#');
    out
}
