//! How `flood --record` writes datagrams to a file and `replay` reads them back (`--framing`):
//! - `lines` (default): one datagram per line, split on `\n`; the `\n` is not part of the
//!   datagram, and a final `\n` at the end of the file does not start another datagram. An
//!   empty line in the middle is sent as an empty datagram. A `\r` before the `\n` is kept
//!   (it is part of the datagram). Datagrams that contain `\n` need `len32`.
//! - `len32`: each datagram is a 4-byte big-endian length followed by that many bytes.

use std::io::{self, Write};

use serde::Serialize;

/// How datagrams are delimited in a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Framing {
    /// One datagram per `\n`-terminated line.
    Lines,
    /// u32 big-endian length, then the bytes.
    Len32,
}

/// Writes one datagram in `framing`.
pub fn write_frame(w: &mut impl Write, d: &[u8], framing: Framing) -> io::Result<()> {
    match framing {
        Framing::Lines => {
            if d.contains(&b'\n') {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "datagram contains a newline; use --framing len32",
                ));
            }
            w.write_all(d)?;
            w.write_all(b"\n")
        }
        Framing::Len32 => {
            let len =
                u32::try_from(d.len()).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "datagram too long"))?;
            w.write_all(&len.to_be_bytes())?;
            w.write_all(d)
        }
    }
}

/// Splits `data` into datagram `(start, end)` ranges per `framing`.
pub fn split_frames(data: &[u8], framing: Framing) -> Result<Vec<(usize, usize)>, String> {
    let mut spans = Vec::new();
    match framing {
        Framing::Lines => {
            let mut start = 0;
            while start < data.len() {
                let end = data[start..]
                    .iter()
                    .position(|&b| b == b'\n')
                    .map_or(data.len(), |i| start + i);
                spans.push((start, end));
                start = end + 1;
            }
        }
        Framing::Len32 => {
            let mut i = 0;
            while i < data.len() {
                let Some(hdr) = data.get(i..i + 4) else {
                    return Err(format!("truncated length prefix at byte {i}"));
                };
                let len = u32::from_be_bytes(hdr.try_into().expect("4 bytes")) as usize;
                let (s, e) = (i + 4, i + 4 + len);
                if e > data.len() {
                    return Err(format!(
                        "datagram {} at byte {i} claims {len} bytes but the file ends first",
                        spans.len()
                    ));
                }
                spans.push((s, e));
                i = e;
            }
        }
    }
    Ok(spans)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_framing_strips_lf_and_ignores_a_final_newline() {
        let d = b"a;b\n\nc\r\nlast";
        let spans = split_frames(d, Framing::Lines).unwrap();
        let got: Vec<&[u8]> = spans.iter().map(|&(s, e)| &d[s..e]).collect();
        assert_eq!(got, vec![&b"a;b"[..], b"", b"c\r", b"last"]);
        assert_eq!(split_frames(b"x\n", Framing::Lines).unwrap().len(), 1);
        assert!(split_frames(b"", Framing::Lines).unwrap().is_empty());
    }

    #[test]
    fn len32_round_trips_and_reports_truncation() {
        let mut buf = Vec::new();
        for d in [&b"one\nwith newline"[..], b"", b"three"] {
            write_frame(&mut buf, d, Framing::Len32).unwrap();
        }
        let spans = split_frames(&buf, Framing::Len32).unwrap();
        assert_eq!(spans.len(), 3);
        assert_eq!(&buf[spans[0].0..spans[0].1], b"one\nwith newline");
        assert!(split_frames(&buf[..buf.len() - 1], Framing::Len32)
            .unwrap_err()
            .contains("file ends first"));
        assert!(split_frames(&[0, 0], Framing::Len32)
            .unwrap_err()
            .contains("truncated length prefix"));
        assert!(write_frame(&mut Vec::new(), b"a\nb", Framing::Lines).is_err());
    }
}
