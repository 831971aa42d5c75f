//! Money commands: credits (balance, history, grant), prices and the ledger check.
//! Amounts are typed and shown in credits (up to six decimals) and sent in micros.

use super::client::{Connection, ago, print_json};
use wasmesh_api::wire::{Price, format_micros, parse_credits};

fn credits(text: &str) -> Result<u64, String> {
    parse_credits(text)
}

/// `wasmesh credits`.
#[derive(clap::Subcommand, Debug)]
pub enum CreditsCommand {
    /// An account's balance: available, spent, reserved by requests in flight, and
    /// earnings waiting in escrow.
    #[command(after_help = "Examples:\n  wasmesh credits balance\n  wasmesh credits balance acme   (admin)")]
    Balance {
        /// The account (default: your key's).
        account: Option<String>,
        #[command(flatten)]
        conn: Connection,
    },
    /// An account's transfers, newest first.
    History {
        /// The account (default: your key's).
        account: Option<String>,
        /// How many.
        #[arg(long, default_value_t = 50)]
        limit: u32,
        #[command(flatten)]
        conn: Connection,
    },
    /// Give an account credits (admin): the way credits enter until payments exist.
    #[command(after_help = "Example:\n  wasmesh credits grant acme 25 --memo 'trial'")]
    Grant {
        /// The account.
        account: String,
        /// Credits, e.g. 25 or 0.5.
        #[arg(value_parser = credits)]
        amount: u64,
        /// Why, for the history.
        #[arg(long, default_value = "")]
        memo: String,
        /// An id that makes a retried grant a no-op.
        #[arg(long)]
        id: Option<String>,
        #[command(flatten)]
        conn: Connection,
    },
}

/// `wasmesh earnings`: what a provider's nodes earned.
#[derive(clap::Args, Debug)]
pub struct EarningsArgs {
    /// The account (default: your key's).
    pub account: Option<String>,
    /// How many of the latest earning transfers to list.
    #[arg(long, default_value_t = 20)]
    pub limit: u32,
    #[command(flatten)]
    pub conn: Connection,
}

/// `wasmesh usage`: requests, tokens and cost.
#[derive(clap::Args, Debug)]
pub struct UsageArgs {
    /// Group by `app`, `model` or `day`.
    #[arg(long, default_value = "app")]
    pub by: String,
    /// The account (default: your key's).
    #[arg(long)]
    pub account: Option<String>,
    /// Show one request instead (its id, from the router's `x-wasmesh-request` header).
    #[arg(long, value_name = "ID")]
    pub request: Option<String>,
    #[command(flatten)]
    pub conn: Connection,
}

/// `wasmesh prices`.
#[derive(clap::Subcommand, Debug)]
pub enum PricesCommand {
    /// Set what a model's tokens cost, in credits per million tokens (admin); `-` as
    /// the model sets the price of requests that use no model.
    #[command(
        after_help = "Examples:\n  wasmesh prices set smollm2 --input 0.1 --output 0.3\n  wasmesh prices set - --per-call 0.0001"
    )]
    Set {
        /// The model, or `-`.
        model: String,
        /// Credits per million input tokens.
        #[arg(long, value_parser = credits, default_value = "0")]
        input: u64,
        /// Credits per million output tokens.
        #[arg(long, value_parser = credits, default_value = "0")]
        output: u64,
        /// Credits per request, on top of tokens.
        #[arg(long, value_parser = credits, default_value = "0")]
        per_call: u64,
        #[command(flatten)]
        conn: Connection,
    },
    /// The prices your key may see.
    Ls(Connection),
}

/// `wasmesh ledger`.
#[derive(clap::Subcommand, Debug)]
pub enum LedgerCommand {
    /// Recompute every balance from the transfers and check that debits equal credits
    /// (admin); exits 1 and names the first inconsistency otherwise.
    Check(Connection),
}

async fn own_account(conn: &Connection, account: Option<String>) -> anyhow::Result<String> {
    Ok(match account {
        Some(a) => a,
        None => conn.client()?.whoami().await?.account,
    })
}

/// Runs `wasmesh credits ...`.
pub async fn credits_command(cmd: CreditsCommand) -> anyhow::Result<()> {
    match cmd {
        CreditsCommand::Balance { account, conn } => {
            let account = own_account(&conn, account).await?;
            let b = conn.client()?.balance(&account).await?;
            if conn.json {
                return print_json(&b);
            }
            println!("account {}: {} credits available", b.account, format_micros(b.available));
            println!("  spent             {}", format_micros(b.debits_posted));
            println!("  received          {}", format_micros(b.credits_posted));
            println!("  reserved now      {}", format_micros(b.reserved));
            println!("  earnings pending  {}", format_micros(b.pending_earnings));
        }
        CreditsCommand::History { account, limit, conn } => {
            let account = own_account(&conn, account).await?;
            let entries = conn.client()?.credit_history(&account, limit).await?;
            if conn.json {
                return print_json(&entries);
            }
            println!("{:<12} {:<8} {:<8} {:>14}  {:<24} REFERENCE", "WHEN", "CODE", "PHASE", "CREDITS", "FROM/TO");
            for e in entries {
                let (sign, other) = if e.debit == account { ("-", e.credit) } else { ("+", e.debit) };
                println!(
                    "{:<12} {:<8} {:<8} {:>14}  {:<24} {}",
                    ago(e.at_ms),
                    e.code,
                    e.phase,
                    format!("{sign}{}", format_micros(e.amount)),
                    other,
                    e.reference
                );
            }
        }
        CreditsCommand::Grant { account, amount, memo, id, conn } => {
            let b = conn.client()?.grant(&account, amount, &memo, id.as_deref()).await?;
            if conn.json {
                return print_json(&b);
            }
            println!(
                "granted {} credits to {account}; it has {} available",
                format_micros(amount as i64),
                format_micros(b.available)
            );
        }
    }
    Ok(())
}

/// Runs `wasmesh earnings`.
pub async fn earnings(args: EarningsArgs) -> anyhow::Result<()> {
    let account = own_account(&args.conn, args.account).await?;
    let client = args.conn.client()?;
    let balance = client.balance(&account).await?;
    let entries: Vec<_> = client
        .credit_history(&account, 1000)
        .await?
        .into_iter()
        .filter(|e| e.credit == account && (e.code == "earning" || e.code == "settle"))
        .take(args.limit as usize)
        .collect();
    if args.conn.json {
        return print_json(&serde_json::json!({
            "account": account,
            "pending": balance.pending_earnings,
            "available": balance.available,
            "recent": entries,
        }));
    }
    println!(
        "account {account}: {} credits earned and waiting in escrow, {} available",
        format_micros(balance.pending_earnings),
        format_micros(balance.available)
    );
    for e in entries {
        let state = if e.code == "settle" { "settled" } else { "earned" };
        println!("  {:<12} {state:<8} {:>12}  request {}", ago(e.at_ms), format_micros(e.amount), e.reference);
    }
    Ok(())
}

/// Runs `wasmesh usage`.
pub async fn usage(args: UsageArgs) -> anyhow::Result<()> {
    let client = args.conn.client()?;
    if let Some(id) = &args.request {
        let g = client.generation(id).await?;
        if args.conn.json {
            return print_json(&g);
        }
        println!(
            "request {}: app {} v{} on node {}, models {:?}; {} tokens in, {} out, {} embedded; cost {} credits; host {} ms, router {} ms; status {}{}",
            g.id,
            g.app,
            g.app_version,
            g.node,
            g.models,
            g.input_tokens,
            g.output_tokens,
            g.embeddings,
            format_micros(g.cost as i64),
            g.wall_ms,
            g.router_ms,
            g.status,
            g.finish_reason.as_deref().map(|f| format!(", finished: {f}")).unwrap_or_default()
        );
        return Ok(());
    }
    let account = own_account(&args.conn, args.account).await?;
    let rows = client.usage(&account, &args.by).await?;
    if args.conn.json {
        return print_json(&rows);
    }
    println!(
        "{:<32} {:>10} {:>12} {:>12} {:>14}",
        args.by.to_uppercase(),
        "REQUESTS",
        "TOKENS IN",
        "TOKENS OUT",
        "CREDITS"
    );
    for r in rows {
        println!(
            "{:<32} {:>10} {:>12} {:>12} {:>14}",
            r.key,
            r.requests,
            r.input_tokens,
            r.output_tokens,
            format_micros(r.cost as i64)
        );
    }
    Ok(())
}

/// Runs `wasmesh prices ...`.
pub async fn prices(cmd: PricesCommand) -> anyhow::Result<()> {
    match cmd {
        PricesCommand::Set { model, input, output, per_call, conn } => {
            let price = Price { model, input_per_mtok: input, output_per_mtok: output, per_call };
            let set = conn.client()?.set_price(&price).await?;
            if conn.json {
                return print_json(&set);
            }
            println!(
                "{}: {} in / {} out credits per million tokens, {} per call",
                set.model,
                format_micros(set.input_per_mtok as i64),
                format_micros(set.output_per_mtok as i64),
                format_micros(set.per_call as i64)
            );
        }
        PricesCommand::Ls(conn) => {
            let prices = conn.client()?.prices().await?;
            if conn.json {
                return print_json(&prices);
            }
            println!("{:<32} {:>12} {:>12} {:>12}", "MODEL", "IN/MTOK", "OUT/MTOK", "PER CALL");
            for p in prices {
                println!(
                    "{:<32} {:>12} {:>12} {:>12}",
                    p.model,
                    format_micros(p.input_per_mtok as i64),
                    format_micros(p.output_per_mtok as i64),
                    format_micros(p.per_call as i64)
                );
            }
        }
    }
    Ok(())
}

/// Runs `wasmesh ledger ...`.
pub async fn ledger(cmd: LedgerCommand) -> anyhow::Result<()> {
    match cmd {
        LedgerCommand::Check(conn) => {
            let check = conn.client()?.ledger_check().await?;
            if conn.json {
                print_json(&check)?;
            } else if check.ok {
                println!(
                    "ledger ok: {} accounts, {} transfers, {} credits posted each side",
                    check.accounts,
                    check.transfers,
                    format_micros(check.debits_posted)
                );
            }
            if let Some(problem) = &check.problem {
                anyhow::bail!("the ledger is inconsistent: {problem}");
            }
        }
    }
    Ok(())
}
