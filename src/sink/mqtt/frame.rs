//! The MQTT sink's item framing: one item per event, holding that event's messages, so a batch (and a spool
//! record) can be split between any two items and replayed without re-encoding.
//!
//! ```text
//! item    = version u8 (= 1) | topics u8 (1 or 2) | topic × topics | payload_len u32 LE | payload
//! topic   = topic_len u16 LE (≥ 1) | topic bytes (UTF-8, no `+`, `#` or NUL)
//! ```
//!
//! An item stands for `topics` MQTT messages that share one payload, published in the item's topic order (Butler
//! SOS's order: the everything topic, then the command's own topic). The topics are stored in the item, not looked
//! up at send time, so spooled events go where the configuration of the run that received them said.
//!
//! `Items` reads items back from the concatenation the worker hands to the transport. Items come from our own
//! encoder (and, from disk, behind the spool's CRC), so a malformed item means a bug or a damaged disk: the reader
//! stops there and says so; it never panics and never reads past the buffer.

/// The framing version this build writes and reads.
pub(crate) const VERSION: u8 = 1;
/// The most topics one item may hold.
pub(crate) const MAX_TOPICS: usize = 2;

/// One decoded item: the topics (in publish order) and the payload they share.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Item<'a> {
    topics: [&'a str; MAX_TOPICS],
    count: usize,
    /// The JSON payload, exactly as it is published.
    pub(crate) payload: &'a [u8],
}

impl<'a> Item<'a> {
    /// The topics, in publish order (one or two).
    pub(crate) fn topics(&self) -> &[&'a str] {
        &self.topics[..self.count]
    }
}

/// Why an item could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum FrameError {
    /// The bytes end inside an item.
    #[error("item truncated")]
    Truncated,
    /// The first byte is not [`VERSION`].
    #[error("unknown item version {0}")]
    Version(u8),
    /// Zero or more than [`MAX_TOPICS`] topics.
    #[error("item holds {0} topics")]
    TopicCount(u8),
    /// An empty topic, one that is not UTF-8, or one with `+`, `#` or NUL.
    #[error("invalid topic")]
    Topic,
}

/// The fixed start of an item for one set of topics: everything before `payload_len`. Built once per command.
///
/// Returns `None` when `topics` is empty, longer than [`MAX_TOPICS`], or a topic is empty, longer than 65535
/// bytes or not publishable (`+`, `#`, NUL; config validation rejects those already).
pub(crate) fn header(topics: &[&str]) -> Option<Vec<u8>> {
    if topics.is_empty() || topics.len() > MAX_TOPICS {
        return None;
    }
    let mut out = vec![VERSION, topics.len() as u8];
    for topic in topics {
        if !valid_topic(topic.as_bytes()) {
            return None;
        }
        let len = u16::try_from(topic.len()).ok()?;
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(topic.as_bytes());
    }
    Some(out)
}

/// Appends one item: `header` (from [`header`]) and the event's payload written by `write_payload`.
pub(crate) fn write_item(out: &mut Vec<u8>, header: &[u8], write_payload: impl FnOnce(&mut Vec<u8>)) {
    out.extend_from_slice(header);
    let len_at = out.len();
    out.extend_from_slice(&[0; 4]);
    write_payload(out);
    // A payload is a few KiB (bounded by the parser's field limits); should one ever exceed u32, the length
    // saturates and the reader reports the item as truncated rather than misreading it.
    let len = u32::try_from(out.len() - len_at - 4).unwrap_or(u32::MAX);
    out[len_at..len_at + 4].copy_from_slice(&len.to_le_bytes());
}

/// One item for `topics` and `payload` (tests).
#[cfg(test)]
pub(crate) fn item_bytes(topics: &[&str], payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    write_item(&mut out, &header(topics).expect("valid topics"), |o| {
        o.extend_from_slice(payload)
    });
    out
}

/// Iterates over the items of a concatenation. After the first error it yields nothing more.
#[derive(Debug)]
pub(crate) struct Items<'a> {
    rest: &'a [u8],
    failed: bool,
}

impl<'a> Items<'a> {
    /// Reads items from `bytes` (whole items, back to back).
    pub(crate) fn new(bytes: &'a [u8]) -> Items<'a> {
        Items {
            rest: bytes,
            failed: false,
        }
    }
}

impl<'a> Iterator for Items<'a> {
    type Item = Result<Item<'a>, FrameError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.rest.is_empty() {
            return None;
        }
        match split_item(self.rest) {
            Ok((item, rest)) => {
                self.rest = rest;
                Some(Ok(item))
            }
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}

/// Reads the item at the front of `bytes`; returns it and the bytes after it.
fn split_item(bytes: &[u8]) -> Result<(Item<'_>, &[u8]), FrameError> {
    let (&version, rest) = bytes.split_first().ok_or(FrameError::Truncated)?;
    if version != VERSION {
        return Err(FrameError::Version(version));
    }
    let (&count, mut rest) = rest.split_first().ok_or(FrameError::Truncated)?;
    if count == 0 || usize::from(count) > MAX_TOPICS {
        return Err(FrameError::TopicCount(count));
    }
    let mut topics = [""; MAX_TOPICS];
    for slot in topics.iter_mut().take(usize::from(count)) {
        let (len, after) = take::<2>(rest)?;
        let len = usize::from(u16::from_le_bytes(len));
        if after.len() < len {
            return Err(FrameError::Truncated);
        }
        let (topic, after) = after.split_at(len);
        if !valid_topic(topic) {
            return Err(FrameError::Topic);
        }
        *slot = std::str::from_utf8(topic).map_err(|_| FrameError::Topic)?;
        rest = after;
    }
    let (len, rest) = take::<4>(rest)?;
    let len = usize::try_from(u32::from_le_bytes(len)).map_err(|_| FrameError::Truncated)?;
    if rest.len() < len {
        return Err(FrameError::Truncated);
    }
    let (payload, rest) = rest.split_at(len);
    Ok((
        Item {
            topics,
            count: usize::from(count),
            payload,
        },
        rest,
    ))
}

fn take<const N: usize>(bytes: &[u8]) -> Result<([u8; N], &[u8]), FrameError> {
    if bytes.len() < N {
        return Err(FrameError::Truncated);
    }
    let (head, rest) = bytes.split_at(N);
    let mut out = [0; N];
    out.copy_from_slice(head);
    Ok((out, rest))
}

/// What rumqttc (and MQTT) accept as a topic to publish to: non-empty, no wildcards, no NUL.
fn valid_topic(topic: &[u8]) -> bool {
    !topic.is_empty() && !topic.iter().any(|b| matches!(b, b'+' | b'#' | 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_read_back_as_written_in_order() {
        let mut batch = item_bytes(&["all", "all/start"], br#"{"a":1}"#);
        batch.extend(item_bytes(&["all"], b""));
        batch.extend(item_bytes(&["x/\u{e9}"], &[b'z'; 70_000]));
        let items: Vec<Item<'_>> = Items::new(&batch).collect::<Result<_, _>>().unwrap();
        assert_eq!(items.len(), 3);
        assert_eq!(items[0].topics(), ["all", "all/start"]);
        assert_eq!(items[0].payload, br#"{"a":1}"#);
        assert_eq!(items[1].topics(), ["all"]);
        assert_eq!(items[1].payload, b"");
        assert_eq!(items[2].topics(), ["x/\u{e9}"]);
        assert_eq!(items[2].payload.len(), 70_000);
    }

    #[test]
    fn headers_refuse_what_cannot_be_published() {
        assert_eq!(header(&[]), None);
        assert_eq!(header(&["a", "b", "c"]), None);
        assert_eq!(header(&[""]), None);
        assert_eq!(header(&["a/+"]), None);
        assert_eq!(header(&["a/#"]), None);
        assert_eq!(header(&["a\0"]), None);
        assert_eq!(header(&[&"t".repeat(65_536)]), None);
        assert_eq!(header(&["ab"]), Some(vec![1, 1, 2, 0, b'a', b'b']));
    }

    #[test]
    fn damaged_items_end_the_batch_with_a_reason_and_never_panic() {
        let good = item_bytes(&["all", "s"], b"{}");
        let mut two = good.clone();
        two.extend(&good);
        let cases: Vec<(Vec<u8>, FrameError)> = vec![
            (vec![2, 1], FrameError::Version(2)),
            (vec![1, 0], FrameError::TopicCount(0)),
            (vec![1, 3], FrameError::TopicCount(3)),
            (vec![1], FrameError::Truncated),
            (vec![1, 1, 5, 0, b'a'], FrameError::Truncated),
            (vec![1, 1, 0, 0, 0, 0, 0, 0], FrameError::Topic),
            (vec![1, 1, 1, 0, b'#', 0, 0, 0, 0], FrameError::Topic),
            (vec![1, 1, 1, 0, 0xff, 0, 0, 0, 0], FrameError::Topic),
            (vec![1, 1, 1, 0, b'a', 9, 0, 0, 0, b'x'], FrameError::Truncated),
            (two[..two.len() - 1].to_vec(), FrameError::Truncated),
        ];
        for (bytes, want) in cases {
            let got: Vec<Result<Item<'_>, FrameError>> = Items::new(&bytes).collect();
            assert_eq!(got.last(), Some(&Err(want)), "{bytes:?}");
            assert!(got[..got.len() - 1].iter().all(Result::is_ok), "{bytes:?}");
        }
        // Every prefix of a valid batch, and arbitrary bytes, read without panicking.
        for cut in 0..two.len() {
            let _ = Items::new(&two[..cut]).count();
        }
        let noise: Vec<u8> = (0..4096u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        for start in 0..64 {
            let _ = Items::new(&noise[start..]).count();
        }
    }
}
