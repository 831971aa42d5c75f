//! Swarms of model and LoRA files: the private BitTorrent tracker hosts announce to,
//! the shares of the origin (object store) handed to hosts that fetch together, and
//! reports of peers that served bad pieces.
//!
//! * **Tracker.** `GET /v1/tracker/{node}/{token}/announce` answers BitTorrent's HTTP
//!   announce with compact peers. The token is a keyed hash of the node id, handed
//!   out only to that node (signed [`SwarmJoin`]), so only registered nodes join and
//!   the tracker knows which node an address is. Info hashes the registry did not
//!   record are refused.
//! * **Origin shares.** When no peer holds the whole file, each fetching node gets a
//!   different batch of pieces to take from the object store and trades the rest
//!   with the others, so the origin serves each piece about once however many nodes
//!   start together (BitTorrent clients that download in order would otherwise all
//!   ask for the same pieces at the same time).
//! * **Reports.** A node reports a peer whose pieces failed verification; the peer is
//!   no longer given to that node, and to nobody once two nodes reported it.

use crate::catalog::BlobRow;
use crate::db::{Db, now_ms};
use crate::error::{ApiError, ApiResult};
use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use wasmesh_api::wire::{PeerReport, ReportOutcome, SwarmGrant, SwarmJoin};

/// Seconds between a peer's announces (sent to clients as `interval`).
pub const ANNOUNCE_INTERVAL_SECS: u64 = 5;
/// A peer not heard from in this long (three announces) is dropped from answers.
const PEER_TTL: Duration = Duration::from_secs(3 * ANNOUNCE_INTERVAL_SECS);
/// A share of the origin not renewed in this long goes to the next node that asks.
const SHARE_TTL: Duration = Duration::from_secs(600);
/// Distinct reporters that take a peer out of every answer.
const REPORTS_TO_EXCLUDE: usize = 2;

/// The swarms the registry tracks (in memory: peers re-announce within seconds after
/// a restart, and shares are only a hint).
pub struct Swarms {
    token_key: [u8; 32],
    inner: Mutex<HashMap<String, Swarm>>,
}

#[derive(Default)]
struct Swarm {
    /// By node id.
    peers: HashMap<String, Peer>,
    /// Per piece: which node takes it from the origin, and since when.
    shares: Vec<Option<(String, Instant)>>,
}

struct Peer {
    addr: SocketAddr,
    left: u64,
    seen: Instant,
}

impl Swarm {
    fn live(&self) -> impl Iterator<Item = (&String, &Peer)> {
        self.peers.iter().filter(|(_, p)| p.seen.elapsed() < PEER_TTL)
    }
}

impl Swarms {
    /// Swarms whose tracker tokens are keyed by `token_key`.
    pub fn new(token_key: [u8; 32]) -> Self {
        Self { token_key, inner: Mutex::new(HashMap::new()) }
    }

    /// The tracker token of `node`, first registered at `registered_at` (ms), for the
    /// swarm `info_hash`: a node deleted and registered anew gets new tokens, and a
    /// token opens only the swarm the node joined through the API (which checks that
    /// its key may read the file). The tracker also refuses a token once the key that
    /// registered the node is revoked.
    pub fn token(&self, node: &str, registered_at: i64, info_hash: &str) -> String {
        let input = format!("{node}\n{registered_at}\n{info_hash}");
        blake3::keyed_hash(&self.token_key, input.as_bytes()).to_hex()[..32].to_string()
    }

    /// Whether `token` is `node`'s for swarm `info_hash`, compared in constant time
    /// (both sides are hashed and the digests compared with blake3's constant-time
    /// equality, so neither the length nor a matching prefix shows in the timing).
    pub fn token_matches(&self, node: &str, registered_at: i64, info_hash: &str, token: &str) -> bool {
        blake3::hash(token.as_bytes()) == blake3::hash(self.token(node, registered_at, info_hash).as_bytes())
    }

    /// Node `node` joins the swarm of blob `join.blob` (`pieces` pieces, info hash
    /// `info_hash`): its announce path, and when it is fetching, its next share of
    /// the origin.
    pub fn join(&self, node: &str, registered_at: i64, join: &SwarmJoin, info_hash: &str, pieces: usize) -> SwarmGrant {
        let mut swarms = self.inner.lock().expect("swarm lock");
        let swarm = swarms.entry(info_hash.to_string()).or_default();
        let others = || swarm.live().filter(|(id, _)| id.as_str() != node);
        let seeders = others().filter(|(_, p)| p.left == 0).count() as u32;
        let leechers = others().filter(|(_, p)| p.left > 0).count() as u32;
        let mut origin_pieces = Vec::new();
        if join.fetching && seeders == 0 {
            if swarm.shares.len() != pieces {
                swarm.shares = vec![None; pieces];
            }
            // Batches of 1/16 of the file: nodes that start together each take a
            // different part, and one alone takes it all, batch after batch.
            let batch = pieces.div_ceil(16).max(1);
            let now = Instant::now();
            for (i, share) in swarm.shares.iter_mut().enumerate() {
                let free = match share {
                    None => true,
                    Some((holder, since)) => holder != node && since.elapsed() > SHARE_TTL,
                };
                if free {
                    *share = Some((node.to_string(), now));
                    origin_pieces.push(i as u32);
                    if origin_pieces.len() == batch {
                        break;
                    }
                }
            }
        }
        SwarmGrant {
            announce: format!("/v1/tracker/{node}/{}/announce", self.token(node, registered_at, info_hash)),
            origin_pieces,
            seeders,
            leechers,
        }
    }

    /// Records an announce and answers with the other live peers, leaving out
    /// `excluded` nodes.
    pub fn announce(
        &self,
        node: &str,
        info_hash: &str,
        addr: SocketAddr,
        left: u64,
        stopped: bool,
        excluded: &HashSet<String>,
    ) -> (Vec<SocketAddr>, u32, u32) {
        let mut swarms = self.inner.lock().expect("swarm lock");
        let swarm = swarms.entry(info_hash.to_string()).or_default();
        if stopped {
            swarm.peers.remove(node);
        } else {
            swarm.peers.insert(node.to_string(), Peer { addr, left, seen: Instant::now() });
        }
        swarm.peers.retain(|_, p| p.seen.elapsed() < PEER_TTL);
        let others: Vec<_> = swarm.live().filter(|(id, _)| id.as_str() != node && !excluded.contains(*id)).collect();
        let complete = others.iter().filter(|(_, p)| p.left == 0).count() as u32;
        let incomplete = others.len() as u32 - complete;
        (others.iter().map(|(_, p)| p.addr).collect(), complete, incomplete)
    }

    /// The node that announced from `addr` in any swarm.
    pub fn node_at(&self, addr: SocketAddr) -> Option<String> {
        let swarms = self.inner.lock().expect("swarm lock");
        swarms.values().flat_map(|s| s.peers.iter()).find(|(_, p)| p.addr == addr).map(|(id, _)| id.clone())
    }
}

/// The swarm of the stored blob `hash`: its torrent's info hash and its number of
/// pieces. Only weights (models, LoRAs) have one, and only those stored since the
/// registry records torrents; hosts fetch the others from the object store alone.
pub fn swarm_of(hash: &str, blob: &BlobRow) -> ApiResult<(String, usize)> {
    let pieces = blob.pieces.as_ref().ok_or_else(|| {
        ApiError::bad_request("invalid_request", format!("{hash} is a component, not weights: it has no swarm"))
    })?;
    let Some(info_hash) = pieces.info_hash.clone() else {
        return Err(ApiError::conflict(format!(
            "{hash} was stored before the registry recorded torrents: it has no swarm, hosts fetch it from the object store alone"
        )));
    };
    Ok((info_hash, pieces.hashes.len()))
}

/// Nodes that `reporter` should not be given as peers: those it reported, and those
/// reported by [`REPORTS_TO_EXCLUDE`] distinct nodes.
pub async fn excluded_for(db: &Db, reporter: &str) -> ApiResult<HashSet<String>> {
    let rows: Vec<(String, String)> =
        sqlx::query_as("SELECT DISTINCT subject, reporter FROM peer_reports").fetch_all(&db.pool).await?;
    let mut by_subject: HashMap<String, HashSet<String>> = HashMap::new();
    for (subject, by) in rows {
        by_subject.entry(subject).or_default().insert(by);
    }
    Ok(by_subject
        .into_iter()
        .filter(|(_, by)| by.contains(reporter) || by.len() >= REPORTS_TO_EXCLUDE)
        .map(|(subject, _)| subject)
        .collect())
}

/// Records `report` by `reporter`, about whichever node announced from its address.
pub async fn report(db: &Db, swarms: &Swarms, reporter: &str, report: &PeerReport) -> ApiResult<ReportOutcome> {
    if !wasmesh_api::wire::is_blake3_hex(&report.blob) {
        return Err(ApiError::bad_request("invalid_request", "blob must be a blake3 hash (64 hex digits)"));
    }
    let addr: SocketAddr = report.peer.parse().map_err(|_| {
        ApiError::bad_request("invalid_request", format!("'{}' is not an IP:PORT address", report.peer))
    })?;
    let subject = swarms.node_at(addr);
    let reason: String = report.reason.chars().take(500).collect();
    let key = subject.clone().unwrap_or_else(|| format!("addr:{addr}"));
    if subject.as_deref() == Some(reporter) {
        return Err(ApiError::bad_request("invalid_request", "a node cannot report itself"));
    }
    sqlx::query("INSERT INTO peer_reports (subject, reporter, blob, reason, created_at) VALUES ($1, $2, $3, $4, $5)")
        .bind(&key)
        .bind(reporter)
        .bind(&report.blob)
        .bind(&reason)
        .bind(now_ms())
        .execute(&db.pool)
        .await?;
    let (reports,): (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM peer_reports WHERE subject = $1").bind(&key).fetch_one(&db.pool).await?;
    tracing::warn!(reporter, subject = %key, blob = %report.blob, reason = %reason, "peer reported");
    Ok(ReportOutcome { node_id: subject, reports: reports as u64 })
}

/// Reports against each node.
pub async fn report_counts(db: &Db) -> ApiResult<HashMap<String, u64>> {
    let rows: Vec<(String, i64)> =
        sqlx::query_as("SELECT subject, COUNT(*) FROM peer_reports GROUP BY subject").fetch_all(&db.pool).await?;
    Ok(rows.into_iter().map(|(s, n)| (s, n as u64)).collect())
}

/// A bencoded announce answer with compact peers.
pub fn announce_response(peers: &[SocketAddr], complete: u32, incomplete: u32) -> Vec<u8> {
    let mut v4 = Vec::new();
    let mut v6 = Vec::new();
    for peer in peers {
        match peer.ip() {
            IpAddr::V4(ip) => {
                v4.extend_from_slice(&ip.octets());
                v4.extend_from_slice(&peer.port().to_be_bytes());
            }
            IpAddr::V6(ip) => {
                v6.extend_from_slice(&ip.octets());
                v6.extend_from_slice(&peer.port().to_be_bytes());
            }
        }
    }
    let mut out = format!(
        "d8:completei{complete}e10:incompletei{incomplete}e8:intervali{ANNOUNCE_INTERVAL_SECS}e12:min intervali{ANNOUNCE_INTERVAL_SECS}e5:peers{}:",
        v4.len()
    )
    .into_bytes();
    out.extend_from_slice(&v4);
    if !v6.is_empty() {
        out.extend_from_slice(format!("6:peers6{}:", v6.len()).as_bytes());
        out.extend_from_slice(&v6);
    }
    out.push(b'e');
    out
}

/// A bencoded tracker failure.
pub fn announce_failure(reason: &str) -> Vec<u8> {
    format!("d14:failure reason{}:{reason}e", reason.len()).into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn join(fetching: bool) -> SwarmJoin {
        SwarmJoin { blob: "b".into(), fetching }
    }

    #[test]
    fn nodes_fetching_together_get_disjoint_shares_covering_the_file() {
        let swarms = Swarms::new([7; 32]);
        let mut seen = HashSet::new();
        let mut per_node: HashMap<&str, usize> = HashMap::new();
        // Four nodes ask in turn until nothing is left.
        'outer: loop {
            for node in ["a", "b", "c", "d"] {
                let grant = swarms.join(node, 1, &join(true), "ih", 100);
                if grant.origin_pieces.is_empty() {
                    break 'outer;
                }
                for p in grant.origin_pieces {
                    assert!(seen.insert(p), "piece {p} handed out twice");
                    *per_node.entry(node).or_default() += 1;
                }
            }
        }
        assert_eq!(seen.len(), 100);
        assert!(per_node.values().all(|n| (21..=28).contains(n)), "{per_node:?}");
        // A seeder in the swarm: a newcomer takes nothing from the origin.
        let excluded = HashSet::new();
        swarms.announce("s", "ih2", "127.0.0.1:1000".parse().unwrap(), 0, false, &excluded);
        let grant = swarms.join("e", 1, &join(true), "ih2", 100);
        assert!(grant.origin_pieces.is_empty());
        assert_eq!(grant.seeders, 1);
        assert!(grant.announce.starts_with("/v1/tracker/e/") && grant.announce.contains(&swarms.token("e", 1, "ih2")));
        let token = swarms.token("e", 1, "ih2");
        assert!(swarms.token_matches("e", 1, "ih2", &token));
        assert!(!swarms.token_matches("e", 2, "ih2", &token), "another registration time makes another token");
        assert!(!swarms.token_matches("f", 1, "ih2", &token));
        assert!(!swarms.token_matches("e", 1, "ih", &token), "a token opens only the swarm it was granted for");
        assert!(!swarms.token_matches("e", 1, "ih2", &token[..31]));
    }

    #[test]
    fn announces_list_the_other_live_peers_and_stopped_ones_leave() {
        let swarms = Swarms::new([1; 32]);
        let none = HashSet::new();
        let a: SocketAddr = "127.0.0.1:1001".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:1002".parse().unwrap();
        swarms.announce("a", "ih", a, 10, false, &none);
        let (peers, complete, incomplete) = swarms.announce("b", "ih", b, 0, false, &none);
        assert_eq!((peers, complete, incomplete), (vec![a], 0, 1));
        let excluded: HashSet<String> = ["a".to_string()].into();
        assert!(swarms.announce("b", "ih", b, 0, false, &excluded).0.is_empty());
        assert_eq!(swarms.node_at(a).as_deref(), Some("a"));
        swarms.announce("a", "ih", a, 10, true, &none);
        assert!(swarms.announce("b", "ih", b, 0, false, &none).0.is_empty());
    }

    #[test]
    fn announce_answers_are_compact_bencode() {
        let body = announce_response(&["127.0.0.1:4242".parse().unwrap()], 1, 0);
        assert!(body.ends_with(b"5:peers6:\x7f\x00\x00\x01\x10\x92e"), "{}", String::from_utf8_lossy(&body));
        assert!(body.starts_with(b"d8:completei1e10:incompletei0e8:intervali5e"));
    }
}
