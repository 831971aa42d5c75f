//! The router's durable queue of receipts on their way to the registry: one JSON line
//! per receipt, appended (one `write`, so a killed router keeps every receipt it
//! wrote) to the open segment file; every few hundred milliseconds the segment is
//! closed, posted in batches and deleted once the registry took it. The receipts of the
//! segment just closed are posted from memory (the file is the record, not read back);
//! a segment not posted at once is read from its file the next time. Segments left by
//! a router that died are posted at its next start. The registry ignores a request
//! id it has recorded, so a segment posted twice charges nothing twice.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use wasmesh_api::wire::MeteredReceipt;

struct Segment {
    seq: u64,
    file: std::fs::File,
    /// What the file holds, line for line.
    receipts: Vec<MeteredReceipt>,
}

/// The queue's folder and open segment.
pub(crate) struct ReceiptQueue {
    dir: PathBuf,
    open: Mutex<Segment>,
    /// The receipts of segments closed since the last [`ReceiptQueue::take_closed`].
    closed: Mutex<HashMap<PathBuf, Vec<MeteredReceipt>>>,
}

fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("receipts-{seq:016}.jsonl"))
}

fn seq_of(path: &Path) -> Option<u64> {
    path.file_name()?.to_str()?.strip_prefix("receipts-")?.strip_suffix(".jsonl")?.parse().ok()
}

fn open_segment(dir: &Path, seq: u64) -> std::io::Result<Segment> {
    let file = std::fs::OpenOptions::new().create(true).append(true).open(segment_path(dir, seq))?;
    Ok(Segment { seq, file, receipts: Vec::new() })
}

impl ReceiptQueue {
    /// The queue in `dir` (made if missing); segments already there wait to be posted.
    pub(crate) fn open(dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let last = Self::segments_in(dir)?.last().and_then(|p| seq_of(p)).unwrap_or(0);
        Ok(Self {
            dir: dir.to_path_buf(),
            open: Mutex::new(open_segment(dir, last + 1)?),
            closed: Mutex::new(HashMap::new()),
        })
    }

    fn segments_in(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
        let mut paths: Vec<PathBuf> =
            std::fs::read_dir(dir)?.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| seq_of(p).is_some()).collect();
        paths.sort();
        Ok(paths)
    }

    /// Appends a receipt (one `write` of one line).
    pub(crate) fn push(&self, receipt: MeteredReceipt) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(&receipt).map_err(std::io::Error::other)?;
        line.push(b'\n');
        let mut open = self.open.lock().expect("receipt queue lock");
        open.file.write_all(&line)?;
        open.receipts.push(receipt);
        Ok(())
    }

    /// The receipts of the segments closed since the last call, by segment path (those
    /// not posted from here are read from their files next time).
    pub(crate) fn take_closed(&self) -> HashMap<PathBuf, Vec<MeteredReceipt>> {
        std::mem::take(&mut *self.closed.lock().expect("receipt queue lock"))
    }

    /// Closes the open segment if it holds anything, and lists every closed segment,
    /// oldest first.
    pub(crate) fn rotate(&self) -> std::io::Result<Vec<PathBuf>> {
        {
            let mut open = self.open.lock().expect("receipt queue lock");
            if !open.receipts.is_empty() {
                let next = open_segment(&self.dir, open.seq + 1)?;
                let done = std::mem::replace(&mut *open, next);
                drop(open);
                self.closed
                    .lock()
                    .expect("receipt queue lock")
                    .insert(segment_path(&self.dir, done.seq), done.receipts);
            }
        }
        let current = self.open.lock().expect("receipt queue lock").seq;
        Ok(Self::segments_in(&self.dir)?.into_iter().filter(|p| seq_of(p).is_some_and(|s| s < current)).collect())
    }

    /// The receipts of a closed segment; a line cut short by a crash is skipped.
    pub(crate) fn read(path: &Path) -> std::io::Result<Vec<MeteredReceipt>> {
        let text = std::fs::read_to_string(path)?;
        Ok(text.lines().filter_map(|line| serde_json::from_str(line).ok()).collect())
    }

    /// How many receipts wait in closed and open segments (for `/health`).
    pub(crate) fn waiting_segments(&self) -> usize {
        let current = self.open.lock().expect("receipt queue lock").seq;
        Self::segments_in(&self.dir).map(|s| s.iter().filter(|p| seq_of(p) != Some(current)).count()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::ReceiptQueue;
    use wasmesh_api::wire::{MeteredReceipt, SignedReceipt};

    fn receipt(n: u64) -> MeteredReceipt {
        MeteredReceipt {
            signed: SignedReceipt {
                receipt: format!("{{\"request_id\":\"r{n}\"}}"),
                signature: "00".into(),
                mac: String::new(),
            },
            account: "a".into(),
            key_id: "k".into(),
            lease: None,
            cost: n,
            reserved: n,
            router_ms: 1,
        }
    }

    #[test]
    fn segments_survive_a_restart_and_a_torn_line_is_skipped() {
        let dir = std::env::temp_dir().join(format!("wasmesh-receipt-queue-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let queue = ReceiptQueue::open(&dir).unwrap();
        assert!(queue.rotate().unwrap().is_empty(), "nothing to post yet");
        queue.push(receipt(1)).unwrap();
        queue.push(receipt(2)).unwrap();
        let closed = queue.rotate().unwrap();
        assert_eq!(closed.len(), 1);
        assert_eq!(ReceiptQueue::read(&closed[0]).unwrap(), vec![receipt(1), receipt(2)]);
        // What was posted from memory is what the file holds.
        let mut cached = queue.take_closed();
        assert_eq!(cached.remove(&closed[0]), Some(vec![receipt(1), receipt(2)]));
        assert!(cached.is_empty() && queue.take_closed().is_empty(), "taken once");
        // A crash: one more receipt in the open segment, then half a line.
        queue.push(receipt(3)).unwrap();
        drop(queue);
        let open = std::fs::read_dir(&dir).unwrap().filter_map(|e| e.ok()).map(|e| e.path()).max().unwrap();
        std::fs::OpenOptions::new()
            .append(true)
            .open(&open)
            .and_then(|mut f| std::io::Write::write_all(&mut f, b"{\"signed\":"))
            .unwrap();
        let queue = ReceiptQueue::open(&dir).unwrap();
        let closed = queue.rotate().unwrap();
        assert_eq!(closed.len(), 2, "both earlier segments wait: {closed:?}");
        assert_eq!(ReceiptQueue::read(&closed[1]).unwrap(), vec![receipt(3)]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
