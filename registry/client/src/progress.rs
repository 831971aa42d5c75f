//! Progress of long transfers (hashing, uploading, downloading), for a caller to
//! show.

/// Progress of a long transfer, in bytes.
pub trait Progress: Send + Sync {
    /// A phase begins ("hashing", "uploading", "downloading") over `total` bytes, `done` already done.
    fn start(&self, phase: &str, total: u64, done: u64);
    /// `bytes` more are done.
    fn advance(&self, bytes: u64);
    /// The phase ended.
    fn finish(&self);
}

/// Progress that shows nothing.
pub struct NoProgress;

impl Progress for NoProgress {
    fn start(&self, _: &str, _: u64, _: u64) {}
    fn advance(&self, _: u64) {}
    fn finish(&self) {}
}
