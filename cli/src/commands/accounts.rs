//! Tenancy commands: accounts, their members, and API keys.

use super::client::{Connection, ago, print_json};
use wasmesh_api::wire::{CreateKey, Scope};

/// `wasmesh accounts`.
#[derive(clap::Subcommand, Debug)]
pub enum AccountsCommand {
    /// Create an account (admin). It owns the keys, apps, models, adapters and nodes made under it.
    #[command(
        after_help = "Example:\n  wasmesh accounts create acme\n  wasmesh keys create --account acme --name acme-ci --scope deploy"
    )]
    Create {
        /// Its name, kebab-case.
        name: String,
        #[command(flatten)]
        conn: Connection,
    },
    /// List accounts (an admin sees every one; others their own).
    Ls(Connection),
    /// Add a member who signs in to the dashboard with an email and password. The
    /// password is read from WASMESH_PASSWORD, else from the first line of stdin.
    #[command(after_help = "Example:\n  echo 'a long passphrase' | wasmesh accounts add-member acme ana@example.com")]
    AddMember {
        /// The account.
        account: String,
        /// Their email address.
        email: String,
        #[command(flatten)]
        conn: Connection,
    },
    /// List an account's members.
    Members {
        /// The account.
        account: String,
        #[command(flatten)]
        conn: Connection,
    },
}

/// Runs `wasmesh accounts ...`.
pub async fn accounts(cmd: AccountsCommand) -> anyhow::Result<()> {
    match cmd {
        AccountsCommand::Create { name, conn } => {
            let account = conn.client()?.create_account(&name).await?;
            if conn.json {
                return print_json(&account);
            }
            println!("account {name} created; give it keys with `wasmesh keys create --account {name} --scope deploy`");
        }
        AccountsCommand::Ls(conn) => {
            let accounts = conn.client()?.accounts().await?;
            if conn.json {
                return print_json(&accounts);
            }
            println!("{:<24} CREATED", "ACCOUNT");
            for a in accounts {
                println!("{:<24} {}", a.name, ago(a.created_at_ms));
            }
        }
        AccountsCommand::AddMember { account, email, conn } => {
            let password = match std::env::var("WASMESH_PASSWORD") {
                Ok(p) => p,
                Err(_) => {
                    let mut line = String::new();
                    std::io::stdin().read_line(&mut line)?;
                    line.trim_end_matches(['\r', '\n']).to_string()
                }
            };
            let member = conn.client()?.add_member(&account, &email, &password).await?;
            if conn.json {
                return print_json(&member);
            }
            println!("{} may now sign in to account {}", member.email, member.account);
        }
        AccountsCommand::Members { account, conn } => {
            let members = conn.client()?.members(&account).await?;
            if conn.json {
                return print_json(&members);
            }
            println!("{:<40} ADDED", "EMAIL");
            for m in members {
                println!("{:<40} {}", m.email, ago(m.created_at_ms));
            }
        }
    }
    Ok(())
}

/// `wasmesh keys`.
#[derive(clap::Subcommand, Debug)]
pub enum KeysCommand {
    /// Create a key of your account (an admin may name another). Its secret is printed once.
    #[command(
        after_help = "Examples:\n  wasmesh keys create --name ci --scope deploy\n  wasmesh keys create --name home-gpu --scope provider\n  wasmesh keys create --name edge-1 --scope router   (admin)"
    )]
    Create {
        /// A label.
        #[arg(long)]
        name: String,
        /// admin, deploy, provider, invoke or router (repeatable); admin and router keys
        /// come only from an admin.
        #[arg(long = "scope", required = true)]
        scopes: Vec<Scope>,
        /// Nodes registered with this (provider) key join this private network; apps
        /// with `network = "NAME"` run only on them.
        #[arg(long)]
        network: Option<String>,
        /// The account the key belongs to (admin only; default: your key's account).
        #[arg(long)]
        account: Option<String>,
        #[command(flatten)]
        conn: Connection,
    },
    /// List your account's keys (an admin sees every key).
    Ls(Connection),
    /// Revoke a key of your account (an admin: any key). Its nodes go offline at once.
    Revoke {
        /// The key's id.
        id: String,
        #[command(flatten)]
        conn: Connection,
    },
}

/// Runs `wasmesh keys ...`.
pub async fn keys(cmd: KeysCommand) -> anyhow::Result<()> {
    match cmd {
        KeysCommand::Create { name, scopes, network, account, conn } => {
            let key = conn.client()?.create_key_with(&CreateKey { name, scopes, network, account }).await?;
            if conn.json {
                return print_json(&key);
            }
            println!("{}", key.key);
            eprintln!("key {} created; the line above is shown only once", key.info.id);
        }
        KeysCommand::Ls(conn) => {
            let keys = conn.client()?.keys().await?;
            if conn.json {
                return print_json(&keys);
            }
            println!("{:<14} {:<20} {:<28} {:<10} {:<16} CREATED", "ID", "NAME", "SCOPES", "STATE", "ACCOUNT");
            for k in keys {
                let scopes = k.scopes.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(",");
                println!(
                    "{:<14} {:<20} {:<28} {:<10} {:<16} {}",
                    k.id,
                    k.name,
                    scopes,
                    if k.revoked { "revoked" } else { "active" },
                    k.account,
                    ago(k.created_at_ms)
                );
            }
        }
        KeysCommand::Revoke { id, conn } => {
            conn.client()?.revoke_key(&id).await?;
            if !conn.json {
                println!("key {id} revoked");
            }
        }
    }
    Ok(())
}
