//! Credits: balances, grants, prices and the ledger's history as the registry
//! answers them. Amounts are integers in the smallest unit of a credit (a "micro":
//! one credit is 1,000,000); nothing here is ever a float.

use serde::{Deserialize, Serialize};

/// Micros in one credit.
pub const MICROS_PER_CREDIT: u64 = 1_000_000;

/// Reads an amount of credits as a person writes it (`12`, `0.5`, `1.000001`) into
/// micros, exactly: no float is involved, and more than six decimals is an error.
pub fn parse_credits(text: &str) -> Result<u64, String> {
    let bad = || format!("'{text}' is not an amount of credits (e.g. 10 or 0.25, at most 6 decimals)");
    let (whole, fraction) = text.trim().split_once('.').unwrap_or((text.trim(), ""));
    if (whole.is_empty() && fraction.is_empty())
        || fraction.len() > 6
        || !whole.bytes().chain(fraction.bytes()).all(|b| b.is_ascii_digit())
    {
        return Err(bad());
    }
    let whole: u64 = if whole.is_empty() { 0 } else { whole.parse().map_err(|_| bad())? };
    let fraction: u64 = if fraction.is_empty() { 0 } else { format!("{fraction:0<6}").parse().map_err(|_| bad())? };
    whole.checked_mul(MICROS_PER_CREDIT).and_then(|w| w.checked_add(fraction)).ok_or_else(bad)
}

/// Micros as credits, for people: `12.5`, `-0.000001`, `3`.
pub fn format_micros(micros: i64) -> String {
    let sign = if micros < 0 { "-" } else { "" };
    let abs = micros.unsigned_abs();
    let (whole, fraction) = (abs / MICROS_PER_CREDIT, abs % MICROS_PER_CREDIT);
    if fraction == 0 {
        return format!("{sign}{whole}");
    }
    let fraction = format!("{fraction:06}");
    format!("{sign}{whole}.{}", fraction.trim_end_matches('0'))
}

/// `POST /v1/credits/grants` (admin): credits enter an account. Until payments exist
/// this is the only way in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    /// The account credited.
    pub account: String,
    /// Micros.
    pub amount: u64,
    /// Why, for the history.
    #[serde(default)]
    pub memo: String,
    /// An id that makes a retried grant a no-op (one is made when absent).
    #[serde(default)]
    pub id: Option<String>,
}

/// An account's balance, in micros.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Balance {
    /// The account.
    pub account: String,
    /// What it may spend now: credited, less spent, less reserved.
    pub available: i64,
    /// Everything ever credited (grants, earnings that settled).
    pub credits_posted: i64,
    /// Everything ever spent.
    pub debits_posted: i64,
    /// Held for requests in flight (routers' reservations).
    pub reserved: i64,
    /// Earnings still in escrow, waiting for their settlement window.
    pub pending_earnings: i64,
}

/// One transfer of the ledger as an account's history shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LedgerEntry {
    /// The transfer's id.
    pub id: String,
    /// When it was made.
    pub at_ms: u64,
    /// What it is for: `grant`, `reserve`, `spend`, `fee`, `earning`, `settle`, `release`, `refund`.
    pub code: String,
    /// The account debited.
    pub debit: String,
    /// The account credited.
    pub credit: String,
    /// Micros.
    pub amount: i64,
    /// `posted`, `pending` (held), `post` (of a pending), `void` or `expire` (a pending released).
    pub phase: String,
    /// The pending transfer a `post`, `void` or `expire` acts on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_id: Option<String>,
    /// What it pays for: a request id, a lease id, a grant's memo.
    #[serde(default)]
    pub reference: String,
}

/// `PUT /v1/prices/{model}` (admin): what a model's tokens cost, in micros per
/// million tokens; `-` as the model names components that use none (per call).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    /// The model (`-` for calls that use none).
    #[serde(default)]
    pub model: String,
    /// Micros per million input (prompt) tokens.
    #[serde(default)]
    pub input_per_mtok: u64,
    /// Micros per million output (generated) tokens.
    #[serde(default)]
    pub output_per_mtok: u64,
    /// Micros per request, on top of tokens.
    #[serde(default)]
    pub per_call: u64,
}

impl Price {
    /// What `input` and `output` tokens cost, rounded up to a whole micro.
    pub fn cost(&self, input: u64, output: u64) -> u64 {
        // Each product fits in a u128; their sum may not.
        let tokens = (u128::from(input) * u128::from(self.input_per_mtok))
            .saturating_add(u128::from(output) * u128::from(self.output_per_mtok));
        let per_tokens = tokens.div_ceil(1_000_000);
        u64::try_from(per_tokens).unwrap_or(u64::MAX).saturating_add(self.per_call)
    }
}

/// `wasmesh ledger check`: every balance recomputed from the transfers.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LedgerCheck {
    /// Whether everything agrees.
    pub ok: bool,
    /// Accounts checked.
    pub accounts: u64,
    /// Transfers replayed.
    pub transfers: u64,
    /// Sum of every account's posted debits (equals the credits when `ok`).
    pub debits_posted: i64,
    /// Sum of every account's posted credits.
    pub credits_posted: i64,
    /// What the platform's fee account has received.
    #[serde(default)]
    pub fees: i64,
    /// What the escrow holds (providers' earnings not yet settled).
    #[serde(default)]
    pub escrow: i64,
    /// The first inconsistency found, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

/// What a host served for one request, signed with its node key. The signature
/// covers the exact JSON text the host wrote (`SignedReceipt::receipt`), so nobody
/// re-encodes it on the way.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Receipt {
    /// The router's id for the request (unique: a second receipt with it is a replay).
    pub request_id: String,
    /// The node that served it.
    pub node: String,
    /// The app, and the version that ran.
    pub app: String,
    /// The app's version.
    #[serde(default)]
    pub app_version: u64,
    /// The models (`MODEL` or `MODEL:ADAPTER`) the request used, in order of first use.
    #[serde(default)]
    pub models: Vec<String>,
    /// Prompt tokens.
    #[serde(default)]
    pub input_tokens: u64,
    /// Generated tokens.
    #[serde(default)]
    pub output_tokens: u64,
    /// Texts embedded.
    #[serde(default)]
    pub embeddings: u64,
    /// From the request's arrival to its last byte, on the host.
    #[serde(default)]
    pub wall_ms: u64,
    /// The HTTP status the host answered.
    #[serde(default)]
    pub status: u16,
    /// Whether the guest failed (trap, deadline, memory).
    #[serde(default)]
    pub failed: bool,
    /// When it ended (Unix ms, the host's clock).
    #[serde(default)]
    pub at_ms: u64,
    /// Why its last generation ended: `stop` (end of text or a stop string), `length`
    /// (`max_tokens`), `error` (the guest failed); none when nothing was generated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finish_reason: Option<String>,
    /// What its generations asked for (model, prompt, options with the seed) and
    /// produced (token ids, ending), hashed: an auditor replaying the request on the same
    /// engine build and CPU class gets the same hash (hex blake3; none when nothing was
    /// generated).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commitment: Option<String>,
    /// The engine build that served it (`InferenceEngine::build_id`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub engine: String,
    /// The node's CPU feature class (`wasmesh_probe::cpu_class`): replays compare only
    /// within one.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cpu_class: String,
    /// An audit's scored replay (an auditor of another engine build or CPU class): how
    /// likely the audited node's claimed tokens are under the model
    /// ([`ClaimScore`](super::ClaimScore)).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<super::ClaimScore>,
}

/// A receipt as the host signed it: its JSON text, authenticated by the node in one of
/// two ways. A host the registry gave a receipt key ([`NodeCertificate::receipt_key`](super::NodeCertificate))
/// sends a keyed BLAKE3 MAC of those bytes ([`receipt_mac`]), which costs well under a
/// microsecond to make and to check; one without signs them with its Ed25519 key (tens
/// of microseconds each). Either way only that node (and the registry) could have made it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SignedReceipt {
    /// The [`Receipt`] as JSON text.
    pub receipt: String,
    /// Hex Ed25519 signature of `receipt`'s bytes by the node's key (empty with a `mac`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub signature: String,
    /// Hex keyed BLAKE3 of `receipt`'s bytes under the node's receipt key.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mac: String,
}

/// The receipt key of node `node_id`: a keyed BLAKE3 of its id under the registry's
/// secret `master`. Only the registry (which derives it again to check) and the node
/// (which got it when it registered) know it.
pub fn receipt_key(master: &[u8; 32], node_id: &str) -> [u8; 32] {
    *blake3::keyed_hash(master, node_id.as_bytes()).as_bytes()
}

/// The MAC of a receipt's JSON text under a node's receipt key (hex).
pub fn receipt_mac(key: &[u8; 32], receipt: &str) -> String {
    super::to_hex(blake3::keyed_hash(key, receipt.as_bytes()).as_bytes())
}

/// Whether `mac` (hex) is the MAC of `receipt` under `key`, compared in constant time.
pub fn receipt_mac_valid(key: &[u8; 32], receipt: &str, mac: &str) -> bool {
    let Some(given) = super::from_hex(mac).and_then(|b| <[u8; 32]>::try_from(b.as_slice()).ok()) else {
        return false;
    };
    blake3::keyed_hash(key, receipt.as_bytes()) == blake3::Hash::from_bytes(given)
}

/// A receipt as a router sends it to the registry: the host's signed receipt and
/// what the router adds (who called, which reservation pays, what it cost).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MeteredReceipt {
    /// The host's signed receipt.
    pub signed: SignedReceipt,
    /// The calling account.
    pub account: String,
    /// The caller's key id.
    pub key_id: String,
    /// The reservation (lease) that pays, if the request cost anything.
    #[serde(default)]
    pub lease: Option<String>,
    /// What it cost in micros (never more than its reservation).
    pub cost: u64,
    /// What the router held for it.
    #[serde(default)]
    pub reserved: u64,
    /// Router-side wall time, first byte in to last byte out.
    #[serde(default)]
    pub router_ms: u64,
}

/// `POST /v1/receipts` (router): a batch of receipts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ReceiptBatch {
    /// The receipts.
    pub receipts: Vec<MeteredReceipt>,
}

/// What became of one receipt of a batch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "outcome")]
pub enum ReceiptOutcome {
    /// Recorded and charged now.
    Posted,
    /// This request id was recorded before: nothing was charged again.
    Duplicate,
    /// Refused (bad signature, unknown node, ...); nothing was charged.
    Refused {
        /// Why.
        reason: String,
    },
}

/// `POST /v1/leases` (router): hold up to `amount` micros of `account`'s credits for
/// the requests this router will serve (at least `min_amount`, else 402).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeaseRequest {
    /// The paying account.
    pub account: String,
    /// What to hold, if available.
    pub amount: u64,
    /// The least that is useful (one request's most cost).
    pub min_amount: u64,
    /// Seconds until the registry releases what is left (the router closes it sooner).
    pub ttl_s: u64,
}

/// A lease: credits held for a router.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Lease {
    /// The pending transfer's id.
    pub id: String,
    /// The account.
    pub account: String,
    /// Micros held.
    pub amount: u64,
    /// When the registry releases what is left (Unix ms).
    pub expires_at_ms: u64,
}

/// One request's record, as `GET /v1/generation?id=...` answers it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Generation {
    /// The request id.
    pub id: String,
    /// The calling account.
    pub account: String,
    /// The app and its version.
    pub app: String,
    /// The app's version.
    pub app_version: u64,
    /// The models used.
    pub models: Vec<String>,
    /// The node that served it.
    pub node: String,
    /// Prompt tokens.
    pub input_tokens: u64,
    /// Generated tokens.
    pub output_tokens: u64,
    /// Texts embedded.
    pub embeddings: u64,
    /// Micros charged.
    pub cost: u64,
    /// Host wall time.
    pub wall_ms: u64,
    /// Router wall time.
    pub router_ms: u64,
    /// The host's status code.
    pub status: u16,
    /// When (Unix ms).
    pub at_ms: u64,
    /// Why its last generation ended: `stop`, `length` or `error` (none when nothing was
    /// generated).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finish_reason: Option<String>,
    /// The receipt's commitment to what was generated (see [`Receipt::commitment`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commitment: Option<String>,
    /// The engine build and CPU class that produced it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub engine: String,
    /// The serving node's CPU feature class.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cpu_class: String,
}

/// One row of `GET /v1/usage`: requests, tokens and cost of one group.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UsageRow {
    /// The group: an app, a model, or a day (`YYYY-MM-DD`, UTC).
    pub key: String,
    /// Requests.
    pub requests: u64,
    /// Prompt tokens.
    pub input_tokens: u64,
    /// Generated tokens.
    pub output_tokens: u64,
    /// Micros charged.
    pub cost: u64,
}

#[cfg(test)]
mod tests {
    use super::{Price, format_micros, parse_credits};

    #[test]
    fn credits_read_and_print_exactly() {
        assert_eq!(parse_credits("12"), Ok(12_000_000));
        assert_eq!(parse_credits("0.5"), Ok(500_000));
        assert_eq!(parse_credits(".000001"), Ok(1));
        assert_eq!(parse_credits("1.000001"), Ok(1_000_001));
        for bad in ["", ".", "1.0000001", "-1", "1e3", "abc", "99999999999999999999"] {
            assert!(parse_credits(bad).is_err(), "{bad}");
        }
        assert_eq!(format_micros(12_500_000), "12.5");
        assert_eq!(format_micros(-1), "-0.000001");
        assert_eq!(format_micros(3_000_000), "3");
    }

    #[test]
    fn costs_round_up_and_never_overflow() {
        let p = Price { model: "m".into(), input_per_mtok: 100_000, output_per_mtok: 300_000, per_call: 5 };
        // 10 in × 0.1 + 3 out × 0.3 = 1.9 micros → 2, plus 5 per call.
        assert_eq!(p.cost(10, 3), 7);
        assert_eq!(p.cost(0, 0), 5);
        let max = Price { input_per_mtok: u64::MAX, output_per_mtok: u64::MAX, per_call: u64::MAX, ..p };
        assert_eq!(max.cost(u64::MAX, u64::MAX), u64::MAX);
    }
}
