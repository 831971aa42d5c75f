//! The credits ledger against real databases (SQLite, and a PostgreSQL server of the
//! test's own): two-phase transfers, idempotency, overdraft refused under races, the
//! books check; and the registry's credits API through the CLI.

use std::sync::Arc;
use wasmesh_registry::db::Db;
use wasmesh_registry::ledger::{ESCROW, FEES, MINT, NO_OVERDRAFT, Outcome, Refusal, SqlLedger, Transfer};
use wasmesh_tests::{runtime, scratch, skip_or_fail};

fn postgres(tag: &str) -> Option<(wasmesh_tests::Postgres, std::path::PathBuf)> {
    let dir = scratch(tag);
    match wasmesh_tests::Postgres::start(&dir.join("pg")) {
        Ok(pg) => Some((pg, dir)),
        Err(e) => {
            skip_or_fail(&format!("cannot start PostgreSQL: {e}"));
            None
        }
    }
}

fn created(outcomes: &[Outcome]) -> usize {
    outcomes.iter().filter(|o| **o == Outcome::Created).count()
}

async fn semantics(db: Db) {
    let ledger = SqlLedger::new(db);
    ledger.ensure_account("alice", NO_OVERDRAFT).await.unwrap();
    ledger.ensure_account("bob", NO_OVERDRAFT).await.unwrap();

    // A grant, and the same grant again: it moves once.
    let grant = Transfer::posted("g1", MINT, "alice", 1_000, "grant");
    assert_eq!(ledger.transfer(&[grant.clone(), grant.clone()]).await.unwrap(), [Outcome::Created, Outcome::Exists]);
    assert_eq!(ledger.transfer(std::slice::from_ref(&grant)).await.unwrap(), [Outcome::Exists]);
    let alice = ledger.balance("alice").await.unwrap().unwrap();
    assert_eq!((alice.credits_posted, alice.available()), (1_000, 1_000));

    // Overdraft refused; nothing moves; the refused id stays free.
    let too_much = Transfer::posted("s1", "alice", "bob", 1_001, "spend");
    assert_eq!(
        ledger.transfer(std::slice::from_ref(&too_much)).await.unwrap(),
        [Outcome::Refused(Refusal::InsufficientFunds { account: "alice".into(), available: 1_000, needed: 1_001 })]
    );
    assert_eq!(ledger.balance("alice").await.unwrap().unwrap().available(), 1_000);
    for (bad, why) in [
        (Transfer::posted("z0", "alice", "bob", 0, "spend"), Refusal::InvalidAmount(0)),
        (Transfer::posted("z1", "alice", "alice", 1, "spend"), Refusal::SameAccount),
        (Transfer::posted("z2", "alice", "nobody", 1, "spend"), Refusal::NoAccount("nobody".into())),
        (Transfer::post("z3", "no-such", 1, "spend"), Refusal::NoPending("no-such".into())),
    ] {
        assert_eq!(ledger.transfer(&[bad]).await.unwrap(), [Outcome::Refused(why)]);
    }

    // Two phases: hold 600, post 100 then 150, release the rest.
    let hold = Transfer::pending("h1", "alice", ESCROW, 600, 0, "reserve");
    assert_eq!(created(&ledger.transfer(&[hold]).await.unwrap()), 1);
    let alice = ledger.balance("alice").await.unwrap().unwrap();
    assert_eq!((alice.debits_pending, alice.available()), (600, 400));
    // A second hold larger than what is left is refused.
    assert!(matches!(
        ledger.transfer(&[Transfer::pending("h2", "alice", ESCROW, 401, 0, "reserve")]).await.unwrap()[0],
        Outcome::Refused(Refusal::InsufficientFunds { available: 400, .. })
    ));
    let posts = [
        Transfer::post("p1", "h1", 100, "spend"),
        Transfer::post("p2", "h1", 150, "spend"),
        Transfer::post("p3", "h1", 351, "spend"),
    ];
    let done = ledger.transfer(&posts).await.unwrap();
    assert_eq!(done[..2], [Outcome::Created, Outcome::Created]);
    assert_eq!(
        done[2],
        Outcome::Refused(Refusal::ExceedsPending { pending: "h1".into(), remaining: 350, amount: 351 })
    );
    // Money moves out of escrow as fee and earnings in the same batch as a post.
    let split = [
        Transfer::post("p4", "h1", 50, "spend"),
        Transfer::posted("f4", ESCROW, FEES, 5, "fee"),
        Transfer::pending("e4", ESCROW, "bob", 45, 0, "earning"),
    ];
    assert_eq!(created(&ledger.transfer(&split).await.unwrap()), 3);
    let void = Transfer::void("v1", "h1", "release");
    assert_eq!(ledger.transfer(std::slice::from_ref(&void)).await.unwrap(), [Outcome::Created]);
    assert_eq!(
        ledger.transfer(&[Transfer::void("v2", "h1", "release")]).await.unwrap(),
        [Outcome::Refused(Refusal::PendingClosed("h1".into()))]
    );
    let alice = ledger.balance("alice").await.unwrap().unwrap();
    assert_eq!((alice.debits_posted, alice.debits_pending, alice.available()), (300, 0, 700));
    let bob = ledger.balance("bob").await.unwrap().unwrap();
    assert_eq!((bob.credits_pending, bob.credits_posted), (45, 0));
    // The earning settles.
    assert_eq!(created(&ledger.transfer(&[Transfer::post("s4", "e4", 45, "settle")]).await.unwrap()), 1);
    let bob = ledger.balance("bob").await.unwrap().unwrap();
    assert_eq!((bob.credits_pending, bob.credits_posted, bob.available()), (0, 45, 45));

    // Expiry releases a hold whose timeout passed, once.
    let now = wasmesh_registry::db::now_ms();
    let expiring = Transfer::pending("h3", "alice", ESCROW, 200, now - 1, "reserve");
    let lasting = Transfer::pending("h4", "alice", ESCROW, 100, now + 3_600_000, "reserve");
    assert_eq!(created(&ledger.transfer(&[expiring, lasting]).await.unwrap()), 2);
    assert_eq!(ledger.expire(now).await.unwrap(), 1);
    assert_eq!(ledger.expire(now).await.unwrap(), 0);
    assert_eq!(ledger.balance("alice").await.unwrap().unwrap().debits_pending, 100);
    let history = ledger.history("alice", 100, i64::MAX).await.unwrap();
    assert!(history.iter().any(|e| e.phase == "expire" && e.pending_id.as_deref() == Some("h3") && e.amount == 200));

    let check = ledger.check().await.unwrap();
    assert!(check.ok, "{check:?}");
    assert_eq!(check.debits_posted, check.credits_posted);
    assert_eq!(check.accounts, 5, "{check:?}");
}

#[test]
fn ledger_semantics_on_sqlite() {
    let dir = scratch("ledger-sqlite");
    runtime().block_on(async { semantics(Db::open(&Db::sqlite_url(&dir)).await.unwrap()).await });
}

#[test]
fn ledger_semantics_on_postgres() {
    let Some((pg, _dir)) = postgres("ledger-pg") else { return };
    runtime().block_on(async { semantics(Db::open(&pg.url).await.unwrap()).await });
}

/// Several writers (two separate connection pools on PostgreSQL, like two registry
/// replicas, each with tasks in parallel) race to spend one account's last credits:
/// exactly what it holds is spent, never more, and the books check.
async fn race(a: Db, b: Db) {
    let (a, b) = (Arc::new(SqlLedger::new(a)), Arc::new(SqlLedger::new(b)));
    a.ensure_account("carol", NO_OVERDRAFT).await.unwrap();
    a.transfer(&[Transfer::posted("g", MINT, "carol", 1_000, "grant")]).await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..40 {
        let ledger = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move {
            let mut won = 0;
            for j in 0..5 {
                // 200 holds of 7 on 1,000: at most 142 can pass.
                let hold = Transfer::pending(format!("r{i}-{j}"), "carol", ESCROW, 7, 0, "reserve");
                won += created(&ledger.transfer(&[hold]).await.unwrap());
            }
            won
        }));
    }
    let mut won = 0;
    for t in tasks {
        won += t.await.unwrap();
    }
    assert_eq!(won, 1_000 / 7, "every hold that fits passes, no more");
    let carol = a.balance("carol").await.unwrap().unwrap();
    assert_eq!((carol.debits_pending, carol.available()), (7 * 142, 1_000 - 7 * 142));
    let check = b.check().await.unwrap();
    assert!(check.ok, "{check:?}");
}

#[test]
fn racing_writers_never_overdraw_on_postgres() {
    let Some((pg, _dir)) = postgres("ledger-race-pg") else { return };
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(4).enable_all().build().unwrap();
    rt.block_on(async { race(Db::open(&pg.url).await.unwrap(), Db::open(&pg.url).await.unwrap()).await });
}

#[test]
fn racing_writers_never_overdraw_on_sqlite() {
    let dir = scratch("ledger-race-sqlite");
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(4).enable_all().build().unwrap();
    rt.block_on(async {
        let url = Db::sqlite_url(&dir);
        race(Db::open(&url).await.unwrap(), Db::open(&url).await.unwrap()).await
    });
}

/// `ledger check` names a tampered balance.
#[test]
fn the_check_names_a_tampered_balance() {
    let dir = scratch("ledger-tamper");
    runtime().block_on(async {
        let db = Db::open(&Db::sqlite_url(&dir)).await.unwrap();
        let ledger = SqlLedger::new(db.clone());
        ledger.ensure_account("dave", NO_OVERDRAFT).await.unwrap();
        ledger.transfer(&[Transfer::posted("g", MINT, "dave", 500, "grant")]).await.unwrap();
        assert!(ledger.check().await.unwrap().ok);
        sqlx::query("UPDATE ledger_accounts SET credits_posted = 900 WHERE id = 'dave'")
            .execute(&db.pool)
            .await
            .unwrap();
        let check = ledger.check().await.unwrap();
        assert!(!check.ok);
        let problem = check.problem.unwrap();
        assert!(problem.contains("'dave'"), "{problem}");
    });
}

use wasmesh_tests::cli_json as cli;

/// The registry's credits API through the CLI: grants (admin only, idempotent by id),
/// balances and history (the account's own keys), prices, and `ledger check`.
#[test]
fn credits_commands_end_to_end() {
    if !wasmesh_tests::prerequisites() {
        return;
    }
    use wasmesh_api::wire::Scope;
    let dir = scratch("credits-cli");
    let (registry, admin) = wasmesh_tests::start_registry(&dir, &[]);
    let url = format!("http://{}", registry.addr);
    let admin_client = wasmesh_client::Client::new(&url, Some(admin.clone())).unwrap();
    runtime().block_on(admin_client.create_account("acme")).unwrap();
    let key = |account: &str, scope: Scope| wasmesh_tests::account_key(&url, &admin, account, &[scope], None);
    let acme = key("acme", Scope::Invoke);
    let other = key("default", Scope::Deploy);

    let granted = cli(&url, &admin, &["credits", "grant", "acme", "2.5", "--memo", "trial", "--id", "t1"]).unwrap();
    assert_eq!(granted["available"], 2_500_000, "{granted}");
    // The same id again moves nothing.
    let again = cli(&url, &admin, &["credits", "grant", "acme", "2.5", "--id", "t1"]).unwrap();
    assert_eq!(again["available"], 2_500_000, "{again}");
    // Only an admin grants; an amount with seven decimals is refused before sending.
    let (_, err) = cli(&url, &acme, &["credits", "grant", "acme", "1"]).unwrap_err();
    assert!(err.contains("admin"), "{err}");
    let (_, err) = cli(&url, &admin, &["credits", "grant", "acme", "0.0000001"]).unwrap_err();
    assert!(err.contains("at most 6 decimals"), "{err}");
    let (_, err) = cli(&url, &admin, &["credits", "grant", "nobody", "1"]).unwrap_err();
    assert!(err.contains("wasmesh accounts create nobody"), "{err}");

    // The account's own key reads its balance and history (no account named: its own).
    let balance = cli(&url, &acme, &["credits", "balance"]).unwrap();
    assert_eq!((balance["account"].as_str(), balance["available"].as_i64()), (Some("acme"), Some(2_500_000)));
    let history = cli(&url, &acme, &["credits", "history"]).unwrap();
    let entries = history.as_array().unwrap();
    assert_eq!(entries.len(), 1, "{history}");
    assert_eq!((entries[0]["code"].as_str(), entries[0]["amount"].as_i64()), (Some("grant"), Some(2_500_000)));
    assert!(entries[0]["reference"].as_str().unwrap().starts_with("trial"), "{history}");
    // Another account's key does not see it.
    let (_, err) = cli(&url, &other, &["credits", "balance", "acme"]).unwrap_err();
    assert!(err.contains("no account named 'acme'"), "{err}");

    // Prices: set by an admin, read by any key.
    let set = cli(&url, &admin, &["prices", "set", "-", "--per-call", "0.0001"]).unwrap();
    assert_eq!(set["per_call"], 100, "{set}");
    let (_, err) = cli(&url, &acme, &["prices", "set", "-", "--per-call", "0"]).unwrap_err();
    assert!(err.contains("admin"), "{err}");
    let prices = cli(&url, &acme, &["prices", "ls"]).unwrap();
    assert_eq!(prices[0]["model"], "-", "{prices}");

    let check = cli(&url, &admin, &["ledger", "check"]).unwrap();
    assert_eq!(check["ok"], true, "{check}");
    assert_eq!(check["debits_posted"], 2_500_000, "{check}");
}
