//! Metering at the router: before a request runs, the most it can cost is held from
//! the caller's credits; at its end the host's signed receipt says what it used, and
//! the receipt goes to the registry, which charges it.
//!
//! Holding is local and cheap: the router holds a **lease** per calling account (a
//! pending transfer in the registry's ledger, `POST /v1/leases`, at least one
//! request's most cost and up to `lease_micros`) and takes each request's hold from
//! it under a lock. Only when a lease runs short does a request wait for the registry;
//! an account that cannot cover the request gets **402** and nothing runs. A lease idle
//! for a few seconds, or older than a minute, is retired: once its requests ended and
//! their receipts reached the registry, the router closes it (the rest is released); a
//! router that dies leaves its leases to expire in the registry (`lease_ttl`).
//!
//! Receipts wait in a durable queue ([`crate::receipt_queue`]) until the registry took
//! them.

use crate::receipt_queue::ReceiptQueue;
use crate::{Body, error};
use arc_swap::ArcSwap;
use http::{Response, StatusCode};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use wasmesh_api::wire::{LeaseRequest, MeteredReceipt, Price, Receipt, ReceiptBatch, ReceiptOutcome, SignedReceipt};
use wasmesh_client::{Client, ClientError};
use wasmesh_policy::ModelRef;

/// A lease idle this long is retired.
const IDLE: Duration = Duration::from_secs(5);
/// A lease this old is retired (new requests take a fresh one).
const RETIRE_AFTER: Duration = Duration::from_secs(60);
/// Output tokens assumed when a request names no `max_tokens`.
const DEFAULT_MAX_TOKENS: u64 = 256;
/// Receipts per batch sent to the registry.
const BATCH: usize = 1000;

/// Who is calling: the key's account and public id.
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    pub(crate) account: String,
    pub(crate) key_id: String,
}

struct LeaseState {
    id: String,
    left: u64,
    held: u32,
    unflushed: u32,
    created: Instant,
    last_used: Instant,
}

#[derive(Default)]
struct Leases {
    current: Option<LeaseState>,
    retiring: Vec<LeaseState>,
}

impl Leases {
    fn find(&mut self, id: &str) -> Option<&mut LeaseState> {
        self.current.iter_mut().chain(self.retiring.iter_mut()).find(|l| l.id == id)
    }
}

/// Metering's settings.
#[derive(Debug, Clone)]
pub struct MeterConfig {
    /// Whether requests are metered (held, receipted and charged).
    pub enabled: bool,
    /// What one lease holds at most (micros).
    pub lease_micros: u64,
    /// How long the registry keeps a lease the router never closes.
    pub lease_ttl: Duration,
}

impl Default for MeterConfig {
    fn default() -> Self {
        Self { enabled: true, lease_micros: 1_000_000, lease_ttl: Duration::from_secs(600) }
    }
}

/// The router's meter.
pub(crate) struct Meter {
    config: MeterConfig,
    client: Client,
    prices: ArcSwap<HashMap<String, Price>>,
    accounts: Mutex<HashMap<String, Leases>>,
    gates: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    queue: ReceiptQueue,
    prefix: String,
    next: AtomicU64,
    pub(crate) credits: prometheus::IntCounterVec,
    /// Where finished requests go to be drawn for audit.
    audits: Arc<crate::audit::Audits>,
}

/// The most bytes of token ids kept for a request's audit (64k tokens); a larger claim
/// is dropped and its audit generates instead of checking.
const MAX_KEPT_TOKEN_BYTES: usize = 256 << 10;

/// One request's hold: released (nothing charged) if dropped before [`Hold::finish`].
pub(crate) struct Hold {
    meter: Arc<Meter>,
    caller: Caller,
    pub(crate) request_id: String,
    lease: Option<String>,
    reserved: u64,
    started: Instant,
    done: bool,
    /// What an audit would replay: the head (with its seed), the body and the model.
    kept: Option<(wasmesh_tunnel::RequestHead, bytes::Bytes, Option<String>)>,
}

/// What a request may cost at most: `max_tokens` (or `max_completion_tokens`) out, as
/// many tokens in as the body has bytes (and some for the chat template).
fn bounds(body: &[u8], embeddings: bool) -> (u64, u64) {
    #[derive(serde::Deserialize)]
    struct Asked {
        max_tokens: Option<u64>,
        max_completion_tokens: Option<u64>,
    }
    let output = if embeddings {
        0
    } else {
        serde_json::from_slice::<Asked>(body)
            .ok()
            .and_then(|a| a.max_completion_tokens.or(a.max_tokens))
            .unwrap_or(DEFAULT_MAX_TOKENS)
            .min(32_768)
    };
    (body.len() as u64 + 64, output)
}

impl Meter {
    pub(crate) fn new(
        config: MeterConfig,
        client: Client,
        queue_dir: &std::path::Path,
        audits: Arc<crate::audit::Audits>,
    ) -> anyhow::Result<Self> {
        let mut prefix = [0u8; 6];
        getrandom::fill(&mut prefix).map_err(|e| anyhow::anyhow!("no random source: {e}"))?;
        let credits = prometheus::IntCounterVec::new(
            prometheus::Opts::new(
                "wasmesh_router_credits_micros_total",
                "Credits (micros) held for requests, charged by receipts, and released",
            ),
            &["what"],
        )?;
        Ok(Self {
            config,
            client,
            prices: ArcSwap::from_pointee(HashMap::new()),
            accounts: Mutex::new(HashMap::new()),
            gates: Mutex::new(HashMap::new()),
            queue: ReceiptQueue::open(queue_dir)
                .map_err(|e| anyhow::anyhow!("cannot open the receipt queue in {}: {e}", queue_dir.display()))?,
            prefix: wasmesh_api::wire::to_hex(&prefix),
            next: AtomicU64::new(0),
            credits,
            audits,
        })
    }

    pub(crate) fn enabled(&self) -> bool {
        self.config.enabled
    }

    fn price_of(&self, model: Option<&str>) -> Price {
        let prices = self.prices.load();
        let key = model.map(|m| m.split(':').next().unwrap_or(m)).unwrap_or("-");
        prices.get(key).cloned().unwrap_or_default()
    }

    /// Holds what the request may cost from `caller`'s credits: a [`Hold`], or the
    /// answer to give instead (402 when the account cannot cover it).
    pub(crate) async fn reserve(
        self: &Arc<Self>,
        caller: Caller,
        model: Option<&ModelRef>,
        body: &[u8],
        embeddings: bool,
    ) -> Result<Hold, Response<Body>> {
        let request_id = format!("{}-{}", self.prefix, self.next.fetch_add(1, Ordering::Relaxed));
        let (input, output) = bounds(body, embeddings);
        let most = self.price_of(model.map(|m| m.as_str())).cost(input, output);
        let mut hold = Hold {
            meter: self.clone(),
            caller,
            request_id,
            lease: None,
            reserved: 0,
            started: Instant::now(),
            done: false,
            kept: None,
        };
        if most == 0 {
            return Ok(hold);
        }
        if let Some(lease) = self.take(&hold.caller.account, most) {
            (hold.lease, hold.reserved) = (Some(lease), most);
            return Ok(hold);
        }
        // One lease request per account at a time; the others wait and take from it.
        let gate = self.gates.lock().expect("gates lock").entry(hold.caller.account.clone()).or_default().clone();
        let _turn = gate.lock().await;
        if let Some(lease) = self.take(&hold.caller.account, most) {
            (hold.lease, hold.reserved) = (Some(lease), most);
            return Ok(hold);
        }
        let asked = LeaseRequest {
            account: hold.caller.account.clone(),
            amount: most.max(self.config.lease_micros),
            min_amount: most,
            ttl_s: self.config.lease_ttl.as_secs().max(1),
        };
        match self.client.lease(&asked).await {
            Ok(lease) => {
                self.credits.with_label_values(&["leased"]).inc_by(lease.amount);
                let now = Instant::now();
                let mut accounts = self.accounts.lock().expect("meter lock");
                let leases = accounts.entry(hold.caller.account.clone()).or_default();
                if let Some(old) = leases.current.take() {
                    leases.retiring.push(old);
                }
                leases.current = Some(LeaseState {
                    id: lease.id.clone(),
                    left: lease.amount - most,
                    held: 1,
                    unflushed: 0,
                    created: now,
                    last_used: now,
                });
                self.credits.with_label_values(&["held"]).inc_by(most);
                (hold.lease, hold.reserved) = (Some(lease.id), most);
                Ok(hold)
            }
            Err(ClientError::Api { status: 402, message, .. }) => {
                hold.done = true;
                Err(error(StatusCode::PAYMENT_REQUIRED, message))
            }
            Err(e) => {
                hold.done = true;
                let mut response = error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("cannot hold credits for this request (the registry did not answer): {e}"),
                );
                response.headers_mut().insert(http::header::RETRY_AFTER, http::HeaderValue::from_static("2"));
                Err(response)
            }
        }
    }

    /// Takes `amount` from the account's current lease, if it has that much left.
    fn take(&self, account: &str, amount: u64) -> Option<String> {
        let mut accounts = self.accounts.lock().expect("meter lock");
        let lease = accounts.get_mut(account)?.current.as_mut()?;
        if lease.left < amount || lease.created.elapsed() > RETIRE_AFTER {
            return None;
        }
        lease.left -= amount;
        lease.held += 1;
        lease.last_used = Instant::now();
        let id = lease.id.clone();
        drop(accounts);
        self.credits.with_label_values(&["held"]).inc_by(amount);
        Some(id)
    }

    /// Ends a hold: `spent` of it was used (the rest goes back to its lease).
    fn end(&self, account: &str, lease: &str, reserved: u64, spent: u64, queued: bool) {
        let mut accounts = self.accounts.lock().expect("meter lock");
        if let Some(l) = accounts.get_mut(account).and_then(|l| l.find(lease)) {
            l.left += reserved - spent.min(reserved);
            l.held = l.held.saturating_sub(1);
            if queued {
                l.unflushed += 1;
            }
            l.last_used = Instant::now();
        }
    }

    /// Sends every closed segment of the queue to the registry, oldest first; a
    /// segment the registry did not take stays for the next round.
    pub(crate) async fn flush(&self) {
        let segments = match self.queue.rotate() {
            Ok(s) => s,
            Err(e) => {
                tracing::error!("cannot rotate the receipt queue: {e}");
                return;
            }
        };
        let mut cached = self.queue.take_closed();
        for segment in segments {
            let receipts = match cached.remove(&segment).map_or_else(|| ReceiptQueue::read(&segment), Ok) {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(segment = %segment.display(), "cannot read a receipt segment: {e}");
                    return;
                }
            };
            for chunk in receipts.chunks(BATCH) {
                let batch = ReceiptBatch { receipts: chunk.to_vec() };
                match self.client.post_receipts(&batch).await {
                    Ok(outcomes) => {
                        for (receipt, outcome) in chunk.iter().zip(&outcomes) {
                            if let ReceiptOutcome::Refused { reason } = outcome {
                                tracing::warn!(account = %receipt.account, "the registry refused a receipt: {reason}");
                            }
                        }
                        let mut accounts = self.accounts.lock().expect("meter lock");
                        for receipt in chunk {
                            if let Some(l) = receipt
                                .lease
                                .as_deref()
                                .and_then(|id| accounts.get_mut(&receipt.account).and_then(|l| l.find(id)))
                            {
                                l.unflushed = l.unflushed.saturating_sub(1);
                            }
                        }
                    }
                    Err(e) => {
                        tracing::warn!(receipts = chunk.len(), "cannot send receipts to the registry, will retry: {e}");
                        return;
                    }
                }
            }
            if let Err(e) = std::fs::remove_file(&segment) {
                tracing::error!(segment = %segment.display(), "cannot remove a posted receipt segment: {e}");
                return;
            }
        }
    }

    /// Retires idle and old leases, and closes retired ones whose requests ended and
    /// whose receipts reached the registry.
    pub(crate) async fn close_leases(&self) {
        let mut closable = Vec::new();
        {
            let mut accounts = self.accounts.lock().expect("meter lock");
            for leases in accounts.values_mut() {
                if let Some(l) = &leases.current
                    && (l.created.elapsed() > RETIRE_AFTER || (l.held == 0 && l.last_used.elapsed() > IDLE))
                {
                    leases.retiring.extend(leases.current.take());
                }
                leases.retiring.retain(|l| {
                    if l.held == 0 && l.unflushed == 0 {
                        closable.push((l.id.clone(), l.left));
                        false
                    } else {
                        true
                    }
                });
            }
            accounts.retain(|_, l| l.current.is_some() || !l.retiring.is_empty());
        }
        for (id, left) in closable {
            match self.client.close_lease(&id).await {
                Ok(_) => self.credits.with_label_values(&["returned"]).inc_by(left),
                // The registry's expiry releases it in the end.
                Err(e) => tracing::warn!(lease = %id, "cannot close a lease (it will expire): {e}"),
            }
        }
    }

    /// Follows the registry's prices.
    pub(crate) fn set_prices(&self, prices: Vec<Price>) {
        let map: HashMap<String, Price> = prices.into_iter().map(|p| (p.model.clone(), p)).collect();
        if **self.prices.load() != map {
            self.prices.store(Arc::new(map));
        }
    }

    /// Closed segments waiting for the registry.
    pub(crate) fn waiting(&self) -> usize {
        self.queue.waiting_segments()
    }
}

impl Hold {
    /// Keeps what an audit of the request would replay, until its answer ends.
    pub(crate) fn keep_for_audit(
        &mut self,
        head: wasmesh_tunnel::RequestHead,
        body: bytes::Bytes,
        model: Option<String>,
    ) {
        if body.len() <= 64 << 10 {
            self.kept = Some((head, body, model));
        }
    }

    /// Ends the request with the host's receipt (JSON of a [`SignedReceipt`]), or
    /// without one (the host failed, or sent none): nothing is charged then. What it
    /// cost (micros). `tokens`: its generations' token ids, for an audit's replay.
    pub(crate) fn finish(mut self, receipt: Option<&[u8]>, tokens: Option<bytes::Bytes>) -> u64 {
        self.done = true;
        let signed = receipt.and_then(|bytes| serde_json::from_slice::<SignedReceipt>(bytes).ok());
        let parsed = signed.as_ref().and_then(|s| serde_json::from_str::<Receipt>(&s.receipt).ok());
        let (signed, receipt) = match (signed, parsed) {
            (Some(s), Some(r)) if r.request_id == self.request_id => (s, r),
            _ => {
                if receipt.is_some() {
                    tracing::warn!(request = %self.request_id, "a host sent a receipt that does not parse or names another request");
                }
                self.release(0, false);
                return 0;
            }
        };
        // A request that generated, and answered without failing, may be drawn for audit.
        // Its token ids are kept only as long as the receipt's count allows (a host
        // cannot make the router hold more than what it says it generated).
        let tokens = tokens.filter(|t| t.len() <= MAX_KEPT_TOKEN_BYTES.min(1024 + 4 * receipt.output_tokens as usize));
        if let Some((head, body, model)) = self.kept.take()
            && receipt.commitment.is_some()
            && receipt.status < 400
            && !receipt.failed
        {
            self.meter.audits.offer(crate::audit::Job {
                head,
                body,
                model,
                signed: signed.clone(),
                receipt: receipt.clone(),
                tokens,
            });
        }
        // A request that failed before any output costs nothing.
        let useless = receipt.status >= 500 && receipt.output_tokens == 0 && receipt.embeddings == 0;
        let cost = if useless {
            0
        } else {
            self.meter
                .price_of(receipt.models.first().map(String::as_str))
                .cost(receipt.input_tokens, receipt.output_tokens)
        };
        let metered = MeteredReceipt {
            signed,
            account: self.caller.account.clone(),
            key_id: self.caller.key_id.clone(),
            lease: self.lease.clone(),
            cost,
            reserved: self.reserved,
            router_ms: self.started.elapsed().as_millis() as u64,
        };
        let queued = match self.meter.queue.push(metered) {
            Ok(()) => true,
            Err(e) => {
                tracing::error!(request = %self.request_id, "cannot queue a receipt; the request is not charged: {e}");
                false
            }
        };
        let charged = if queued { cost } else { 0 };
        self.meter.credits.with_label_values(&["charged"]).inc_by(charged);
        self.release(charged, queued);
        charged
    }

    fn release(&mut self, spent: u64, queued: bool) {
        if let Some(lease) = &self.lease {
            self.meter.end(&self.caller.account, lease, self.reserved, spent, queued);
            self.meter.credits.with_label_values(&["released"]).inc_by(self.reserved - spent.min(self.reserved));
        }
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        if !self.done {
            self.done = true;
            self.release(0, false);
        }
    }
}
