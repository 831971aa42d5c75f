//! `wasmesh nodes`: the nodes of the caller's account (every node for admins), and
//! trust: making a node an auditor, and a node's audits.

use super::client::{Connection, ago, print_json, size};
use wasmesh_api::wire::format_micros;

/// `wasmesh nodes`.
#[derive(clap::Subcommand, Debug)]
pub enum NodesCommand {
    /// List nodes, their status, hardware, load and reputation.
    Ls(Connection),
    /// Make a host an auditor (admin): it then serves audits only, replaying a share of
    /// other nodes' requests to check their answers.
    Trust {
        /// The node's id (`wasmesh nodes ls`).
        node: String,
        /// Stop trusting it: it serves callers again.
        #[arg(long)]
        off: bool,
        #[command(flatten)]
        conn: Connection,
    },
    /// A node's audits: passed, failed, inconclusive, its reputation, and what was
    /// refunded from its escrow if it was caught.
    Audits {
        /// The node's id.
        node: String,
        #[command(flatten)]
        conn: Connection,
    },
}

/// Runs `wasmesh nodes ...`.
pub async fn nodes(cmd: NodesCommand) -> anyhow::Result<()> {
    match cmd {
        NodesCommand::Ls(conn) => list(conn).await,
        NodesCommand::Trust { node, off, conn } => {
            let done = conn.client()?.trust_node(&node, !off).await?;
            if conn.json {
                return print_json(&done);
            }
            if done.trusted {
                println!(
                    "node {node} is an auditor: routers send it audits only (undo: wasmesh nodes trust {node} --off)"
                );
            } else {
                println!("node {node} is no longer an auditor: it serves callers again");
            }
            Ok(())
        }
        NodesCommand::Audits { node, conn } => {
            let audits = conn.client()?.node_audits(&node).await?;
            if conn.json {
                return print_json(&audits);
            }
            let t = &audits.trust;
            let state = if t.evicted {
                "EVICTED (caught: its answers differed from two auditors' replays)"
            } else if t.trusted {
                "auditor"
            } else if t.flagged {
                "flagged (another node of its provider was caught): audited more"
            } else {
                "in good standing"
            };
            println!("node {}: {state}", audits.node);
            println!(
                "reputation {} of 1000; audits passed {}, failed {}, inconclusive {}; refunded from its escrow: {} credits",
                t.score,
                t.passed,
                t.failed,
                t.inconclusive,
                format_micros(audits.refunded)
            );
            if audits.audits.is_empty() {
                println!("no audits yet (routers replay a share of metered requests once an auditor is connected)");
                return Ok(());
            }
            println!("{:<14} {:<12} {:<30} AUDITORS", "WHEN", "VERDICT", "REQUEST");
            for a in &audits.audits {
                println!(
                    "{:<14} {:<12} {:<30} {}",
                    ago(a.at_ms),
                    a.verdict,
                    a.request_id,
                    a.auditors.iter().map(|n| &n[..12.min(n.len())]).collect::<Vec<_>>().join(",")
                );
            }
            Ok(())
        }
    }
}

async fn list(conn: Connection) -> anyhow::Result<()> {
    let nodes = conn.client()?.nodes().await?;
    if conn.json {
        return print_json(&nodes);
    }
    println!(
        "{:<12} {:<16} {:<10} {:<10} {:>5} {:>9} {:>8} {:>6}  MODELS",
        "NODE", "NAME", "STATUS", "SEEN", "CORES", "MEMORY", "IN-FLIGHT", "TRUST"
    );
    for n in nodes {
        let status =
            serde_json::to_value(n.status).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default();
        let (cores, memory, in_flight, models) = match &n.heartbeat {
            Some(h) => (
                h.hardware.cpu_cores.to_string(),
                size(h.hardware.memory_bytes),
                h.in_flight.to_string(),
                h.models.iter().map(|m| m.name.as_str()).collect::<Vec<_>>().join(","),
            ),
            None => ("-".into(), "-".into(), "-".into(), String::new()),
        };
        let trust = if n.trust.evicted {
            "caught".to_string()
        } else if n.trust.trusted {
            "audits".to_string()
        } else {
            n.trust.score.to_string()
        };
        println!(
            "{:<12} {:<16} {:<10} {:<10} {:>5} {:>9} {:>8} {:>6}  {}",
            &n.node_id[..12.min(n.node_id.len())],
            n.name,
            status,
            ago(n.last_seen_ms),
            cores,
            memory,
            in_flight,
            trust,
            models
        );
    }
    Ok(())
}
