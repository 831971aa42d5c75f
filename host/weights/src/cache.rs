//! A host's disk cache of model weights, bounded by a provider-set size.
//!
//! Weights live in one folder as `{blake3}.gguf` (content-addressed, so a file's name
//! says what it must hash to); while they download they are `{blake3}.partial` beside
//! them, or `partial/{blake3}.gguf` (the name BitTorrent fetches use, since a
//! torrent's file name is part of what its info hash covers).
//! When a new model needs room, the least recently used files go first; a model
//! that is in use (the engine serves it, or it is being fetched) holds a [`Lease`]
//! and is never evicted. Recency is the file's modification time, refreshed on
//! every use, so it survives restarts without an index file that could disagree
//! with the folder. The RAM cache of loaded models is the engine's, separate.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// Why the cache could not make room.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CacheError {
    /// Everything that could go is gone, and the model still does not fit.
    #[error(
        "the weight cache ({} MiB, set by --cache-mb) cannot hold {what} ({} MiB) beside the models in use ({} MiB: {}); raise --cache-mb",
        bound >> 20, needed >> 20, in_use >> 20, if names.is_empty() { "none".to_string() } else { names.join(", ") }
    )]
    Full {
        /// What needed room.
        what: String,
        /// Its size.
        needed: u64,
        /// The bound.
        bound: u64,
        /// Bytes held by leased files.
        in_use: u64,
        /// The leased files' hashes.
        names: Vec<String>,
    },
    /// The folder could not be read or written.
    #[error("weight cache {}: {source}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

/// One file in the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedFile {
    /// The blake3 hash the file holds (or will, for a partial download).
    pub hash: String,
    /// Bytes on disk.
    pub size: u64,
    /// Whether it is a complete, verified file (`false`: a partial download).
    pub complete: bool,
    /// Whether a [`Lease`] holds it.
    pub in_use: bool,
    /// When it was last used.
    pub last_used: SystemTime,
    /// Where it is.
    pub path: PathBuf,
}

/// See the module docs.
#[derive(Debug, Clone)]
pub struct WeightCache {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    dir: PathBuf,
    /// Bytes the cache may hold (`set_bound` changes it while the host runs).
    bound: std::sync::atomic::AtomicU64,
    leases: Mutex<HashMap<String, usize>>,
}

/// Keeps a cached file from being evicted while it lives.
#[derive(Debug)]
pub struct Lease {
    inner: Arc<Inner>,
    hash: String,
}

impl Drop for Lease {
    fn drop(&mut self) {
        let mut leases = self.inner.leases.lock().expect("lease table");
        if let Some(n) = leases.get_mut(&self.hash) {
            *n -= 1;
            if *n == 0 {
                leases.remove(&self.hash);
            }
        }
    }
}

impl Lease {
    /// The hash this lease holds.
    pub fn hash(&self) -> &str {
        &self.hash
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CacheError + '_ {
    move |source| CacheError::Io { path: path.to_owned(), source }
}

impl WeightCache {
    /// The cache in `dir` (created if missing), holding at most `bound` bytes.
    pub fn open(dir: impl Into<PathBuf>, bound: u64) -> Result<Self, CacheError> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        Ok(Self { inner: Arc::new(Inner { dir, bound: bound.into(), leases: Mutex::new(HashMap::new()) }) })
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The size bound in bytes.
    pub fn bound(&self) -> u64 {
        self.inner.bound.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Changes the size bound while the host runs: a smaller one evicts unleased files,
    /// least recently used first, at once. Returns the hashes evicted.
    ///
    /// # Errors
    /// [`CacheError::Full`] when leased files alone pass the new bound (the bound is
    /// changed anyway; they are evicted once no longer in use and another fetch needs
    /// room).
    pub fn set_bound(&self, bytes: u64) -> Result<Vec<String>, CacheError> {
        self.inner.bound.store(bytes, std::sync::atomic::Ordering::Relaxed);
        tracing::info!(mib = bytes >> 20, "weight cache bound changed");
        self.make_room("", "the cache's files in use", 0)
    }

    /// Where the complete file for `hash` lives.
    pub fn path_for(&self, hash: &str) -> PathBuf {
        self.inner.dir.join(format!("{hash}.gguf"))
    }

    /// Where a BitTorrent fetch of `hash` writes until the whole file verifies.
    pub fn partial_path(&self, hash: &str) -> PathBuf {
        self.inner.dir.join("partial").join(format!("{hash}.gguf"))
    }

    /// Marks `hash` in use (never evicted while the lease lives) and most recently used.
    pub fn lease(&self, hash: &str) -> Lease {
        *self.inner.leases.lock().expect("lease table").entry(hash.to_string()).or_default() += 1;
        self.touch(hash);
        Lease { inner: self.inner.clone(), hash: hash.to_string() }
    }

    /// Marks `hash` most recently used.
    pub fn touch(&self, hash: &str) {
        for path in [self.path_for(hash), self.inner.dir.join(format!("{hash}.partial")), self.partial_path(hash)] {
            if let Ok(file) = std::fs::File::options().write(true).open(&path) {
                let _ = file.set_modified(SystemTime::now());
            }
        }
    }

    /// Every file in the cache, least recently used first.
    pub fn files(&self) -> Result<Vec<CachedFile>, CacheError> {
        let dir = &self.inner.dir;
        let leases = self.inner.leases.lock().expect("lease table").clone();
        let mut files = Vec::new();
        for (folder, partial) in [(dir.to_path_buf(), false), (dir.join("partial"), true)] {
            let entries = match std::fs::read_dir(&folder) {
                Ok(entries) => entries,
                Err(e) if partial && e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(CacheError::Io { path: folder, source: e }),
            };
            for entry in entries {
                let entry = entry.map_err(io(&folder))?;
                let name = entry.file_name();
                let Some(name) = name.to_str() else { continue };
                let (hash, complete) = match (name.strip_suffix(".gguf"), name.strip_suffix(".partial")) {
                    (Some(h), _) => (h, !partial),
                    (_, Some(h)) => (h, false),
                    _ => continue,
                };
                let meta = entry.metadata().map_err(io(&entry.path()))?;
                if !meta.is_file() {
                    continue;
                }
                files.push(CachedFile {
                    hash: hash.to_string(),
                    size: meta.len(),
                    complete,
                    in_use: leases.contains_key(hash),
                    last_used: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                    path: entry.path(),
                });
            }
        }
        files.sort_by_key(|f| f.last_used);
        Ok(files)
    }

    /// Bytes on disk now.
    pub fn used(&self) -> Result<u64, CacheError> {
        Ok(self.files()?.iter().map(|f| f.size).sum())
    }

    /// Makes room for `needed` more bytes of `hash` (`what` names it in errors):
    /// evicts unleased files, least recently used first, until everything fits.
    /// Returns the hashes evicted. Files of `hash` itself are never counted as
    /// evictable: they are what is being made room for.
    pub fn make_room(&self, hash: &str, what: &str, needed: u64) -> Result<Vec<String>, CacheError> {
        let files = self.files()?;
        let own: u64 = files.iter().filter(|f| f.hash == hash).map(|f| f.size).sum();
        let mut used: u64 = files.iter().filter(|f| f.hash != hash).map(|f| f.size).sum();
        let bound = self.bound();
        let held: Vec<&CachedFile> = files.iter().filter(|f| f.hash != hash && f.in_use).collect();
        let in_use: u64 = held.iter().map(|f| f.size).sum();
        if in_use + needed.max(own) > bound {
            // Evicting everything else would not be enough: keep it all.
            return Err(CacheError::Full {
                what: what.to_string(),
                needed,
                bound,
                in_use,
                names: held.iter().map(|f| f.hash.clone()).collect(),
            });
        }
        let mut evicted = Vec::new();
        for file in files.iter().filter(|f| f.hash != hash && !f.in_use) {
            if used + needed.max(own) <= bound {
                break;
            }
            let path = file.path.clone();
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(CacheError::Io { path, source: e }),
            }
            tracing::info!(hash = %file.hash, mib = file.size >> 20, "evicted from the weight cache (least recently used)");
            used -= file.size;
            evicted.push(file.hash.clone());
        }
        Ok(evicted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn put(cache: &WeightCache, hash: &str, size: usize, age_s: u64) {
        let path = cache.path_for(hash);
        std::fs::write(&path, vec![0u8; size]).unwrap();
        let file = std::fs::File::options().write(true).open(&path).unwrap();
        file.set_modified(SystemTime::now() - Duration::from_secs(age_s)).unwrap();
    }

    fn hashes(cache: &WeightCache) -> Vec<String> {
        cache.files().unwrap().into_iter().map(|f| f.hash).collect()
    }

    #[test]
    fn evicts_least_recently_used_first_and_never_a_leased_file() {
        let dir = std::env::temp_dir().join(format!("wasmesh-cache-unit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let cache = WeightCache::open(&dir, 1000).unwrap();
        put(&cache, "old", 300, 300);
        put(&cache, "older", 300, 400);
        put(&cache, "recent", 300, 100);
        assert_eq!(hashes(&cache), ["older", "old", "recent"]);

        // "older" is in use: "old" goes instead, then nothing more is needed.
        let lease = cache.lease("older");
        assert_eq!(cache.make_room("new", "model new", 300).unwrap(), ["old"]);
        assert_eq!(cache.used().unwrap(), 600);

        // Use refreshes recency: "older" was used when it was leased and "recent" is
        // touched now, so "new" (50 s ago) is the least recently used.
        put(&cache, "new", 300, 50);
        cache.touch("recent");
        drop(lease);
        assert_eq!(cache.make_room("next", "model next", 400).unwrap(), ["new"]);

        // Not enough room even after evicting everything unleased: an error that says so.
        let _held = cache.lease("recent");
        match cache.make_room("huge", "model huge", 800) {
            Err(CacheError::Full { in_use, names, .. }) => {
                assert_eq!(in_use, 300);
                assert_eq!(names, ["recent"]);
            }
            other => panic!("expected Full, got {other:?}"),
        }
        assert_eq!(hashes(&cache), ["older", "recent"], "a refused request evicts nothing");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_smaller_bound_set_at_run_time_evicts_unleased_files_at_once() {
        let dir = std::env::temp_dir().join(format!("wasmesh-cache-bound-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let cache = WeightCache::open(&dir, 1000).unwrap();
        put(&cache, "a", 300, 300);
        put(&cache, "b", 300, 200);
        put(&cache, "c", 300, 100);
        let held = cache.lease("a");
        assert_eq!(cache.set_bound(700).unwrap(), ["b"], "the oldest unleased file goes first");
        assert_eq!(cache.bound(), 700);
        // Leased files alone pass a bound of 200: said, and the bound holds anyway.
        assert!(matches!(cache.set_bound(200), Err(CacheError::Full { .. })));
        assert_eq!(cache.bound(), 200);
        // Released, "a" is the most recently used (leasing touched it): "c" goes.
        drop(held);
        assert_eq!(cache.set_bound(300).unwrap(), ["c"]);
        assert_eq!(hashes(&cache), ["a"]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
