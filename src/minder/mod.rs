//! The Galera minder (seed 004): `ccr-syncer minder ROLE`. An arbitrator
//! that picks the Primary component of a Galera cluster split between data
//! centres from the nodes' state reports alone (`rule` argues why two
//! Primaries never exist), a dbserver beside each node, Galera's notify
//! command, a person's commands and the site's configuration kept in the
//! cluster. See `doc/minder.md`. A CCR job follows a minded cluster
//! through [`status_summary`] (`sync::incremental::minded`).

pub mod arbitrator;
pub mod dbclient;
pub mod dbserver;
pub mod message;
pub mod net;
pub mod reports;
pub mod rule;
pub mod site;
pub mod store;

use message::{next_id, Kind, Message, Party, Verb};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// `ccr-syncer minder ROLE`.
#[derive(Debug, clap::Args)]
pub struct MinderArgs {
    #[command(subcommand)]
    pub role: Role,
}

/// What every long-running party starts with.
#[derive(Clone, Debug, clap::Args)]
pub struct Common {
    /// Where the site's configuration is: DSN[,DSN...], each
    /// mysql://USER[:PASSWORD]@HOST:PORT/DATABASE, tried in order.
    #[arg(long)]
    pub config_db: String,
    /// This party's own files: the local copy of the configuration, and the
    /// arbitrator's decisions.
    #[arg(long)]
    pub state_dir: PathBuf,
}

#[derive(Debug, clap::Subcommand)]
pub enum Role {
    /// Beside one Galera node: reports its state, runs set_primary.
    Dbserver {
        #[arg(long)]
        serial: u32,
        /// The account it reads its node with (password from
        /// MINDER_MYSQL_PASSWORD).
        #[arg(long)]
        mysql_user: String,
        #[command(flatten)]
        common: Common,
    },
    /// The only party that promotes.
    Arbitrator {
        #[arg(long)]
        serial: u32,
        #[command(flatten)]
        common: Common,
    },
    /// Minds one HAProxy through its runtime API.
    Dbclient {
        #[arg(long)]
        serial: u32,
        #[command(flatten)]
        common: Common,
    },
    /// Galera's wsrep_notify_cmd: hands Galera's arguments to the local
    /// dbserver at once, and returns fast whatever happens.
    Notify {
        /// The local dbserver's address (host:port).
        #[arg(long)]
        dbserver: String,
        #[arg(long)]
        status: Option<String>,
        #[arg(long)]
        uuid: Option<String>,
        #[arg(long)]
        primary: Option<String>,
        #[arg(long)]
        members: Option<String>,
        #[arg(long)]
        index: Option<String>,
    },
    /// A person's command to the arbitrator: status_summary, drain NODE,
    /// undrain NODE, set_writer NODE, force_primary NODE.
    Command {
        verb: String,
        node: Option<String>,
        /// The arbitrator's address (host:port).
        #[arg(long)]
        arbitrator: String,
    },
    /// Stores or shows the site's configuration.
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum ConfigAction {
    /// Checks FILE and stores it in the cluster.
    Load {
        file: PathBuf,
        #[arg(long)]
        config_db: String,
    },
    /// Prints the stored configuration.
    Show {
        #[arg(long)]
        config_db: String,
    },
}

impl Common {
    /// The site now (from the cluster, else the local copy).
    pub async fn site(&self) -> Result<site::Site, String> {
        let dsns = store::Dsn::parse_list(&self.config_db)?;
        store::current(&dsns, &self.state_dir).await
    }

    /// The socket address to listen on for a configured `host:port`.
    pub async fn listen_address(&self, address: &str) -> Result<SocketAddr, String> {
        tokio::net::lookup_host(address)
            .await
            .map_err(|e| format!("{address}: {e}"))?
            .next()
            .ok_or_else(|| format!("{address} names no address"))
    }
}

/// The configuration digests a party knows: the one it runs from (as its
/// watcher last read it) and the newest one a dbserver's report named.
#[derive(Debug, Default)]
pub struct ConfigHint {
    pub holds: parking_lot::Mutex<Option<String>>,
    pub heard: parking_lot::Mutex<Option<String>>,
}

impl ConfigHint {
    /// A report named `digest`.
    pub fn heard(&self, digest: Option<&str>) {
        if let Some(d) = digest {
            let mut heard = self.heard.lock();
            if heard.as_deref() != Some(d) {
                *heard = Some(d.to_string());
            }
        }
    }
}

/// How often a party reads the stored configuration's digest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Poll {
    /// Every report interval: a dbserver, beside the node it reads.
    EveryInterval,
    /// When a dbserver's report names another digest than the one in use,
    /// at most once an interval, and every ten intervals regardless: a
    /// party across the WAN from the cluster (the arbitrator, a dbclient).
    WhenHinted,
}

/// Keeps `site` current: fetched again beside the party's own work (a
/// database out of reach delays none of it) as `poll` says, taken only when
/// `keep` says it still has this party. `hint.holds` follows the digest read.
pub fn refresh_site(
    common: Common,
    site: std::sync::Arc<parking_lot::Mutex<site::Site>>,
    hint: std::sync::Arc<ConfigHint>,
    poll: Poll,
    keep: impl Fn(&site::Site) -> bool + Send + 'static,
) {
    let Ok(dsns) = store::Dsn::parse_list(&common.config_db) else {
        return;
    };
    tokio::spawn(async move {
        let mut watcher = store::Watcher::new(dsns);
        let mut last_read: Option<std::time::Instant> = None;
        loop {
            let interval = Duration::from_secs(site.lock().report_interval_s);
            tokio::time::sleep(interval).await;
            let due = poll == Poll::EveryInterval
                || last_read.is_none_or(|t| t.elapsed() >= interval * 10)
                || hint
                    .heard
                    .lock()
                    .as_ref()
                    .is_some_and(|h| watcher.digest() != Some(h));
            if !due {
                continue;
            }
            last_read = Some(std::time::Instant::now());
            let read = watcher.poll().await;
            *hint.holds.lock() = watcher.digest().cloned();
            let Some(text) = read else {
                continue;
            };
            match site::Site::parse(&text) {
                Ok(next) => {
                    if let Err(e) = store::keep_copy(&common.state_dir, &text) {
                        tracing::warn!(error = %e, "cannot keep the configuration's local copy");
                    }
                    if keep(&next) {
                        *site.lock() = next;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "the stored configuration does not parse; keeping the one in use")
                }
            }
        }
    });
}

/// Waits one report interval, or less when `wake` is notified; `false` once
/// the party is to stop.
pub async fn pause(site: &parking_lot::Mutex<site::Site>, wake: &tokio::sync::Notify) -> bool {
    let interval = Duration::from_secs(site.lock().report_interval_s);
    tokio::select! {
        () = tokio::time::sleep(interval) => true,
        () = wake.notified() => true,
        () = shutdown() => false,
    }
}

static SHUTDOWN: std::sync::OnceLock<tokio::sync::watch::Sender<bool>> = std::sync::OnceLock::new();

/// Resolves once SIGTERM or SIGINT has arrived.
pub async fn shutdown() {
    let tx = SHUTDOWN.get_or_init(|| {
        let (tx, _) = tokio::sync::watch::channel(false);
        let signals = tx.clone();
        tokio::spawn(async move {
            use tokio::signal::unix::{signal, SignalKind};
            let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            let _ = signals.send(true);
        });
        tx
    });
    let mut rx = tx.subscribe();
    let _ = rx.wait_for(|s| *s).await;
}

/// Runs a role; the exit status: 0 done, 1 failed, 2 refused.
pub fn main(args: MinderArgs) -> std::process::ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("minder: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("minder: {e}");
            std::process::ExitCode::from(1)
        }
    }
}

async fn run(args: MinderArgs) -> Result<(), String> {
    match args.role {
        Role::Dbserver {
            serial,
            mysql_user,
            common,
        } => {
            prepare(&common)?;
            dbserver::run(serial, mysql_user, common).await
        }
        Role::Arbitrator { serial, common } => {
            prepare(&common)?;
            arbitrator::run(serial, common).await
        }
        Role::Dbclient { serial, common } => {
            prepare(&common)?;
            dbclient::run(serial, common).await
        }
        Role::Notify {
            dbserver,
            status,
            uuid,
            primary,
            members,
            index,
        } => {
            notify(&dbserver, json_args(status, uuid, primary, members, index)).await;
            Ok(())
        }
        Role::Command {
            verb,
            node,
            arbitrator,
        } => command(&verb, node, &arbitrator).await,
        Role::Config { action } => config(action).await,
    }
}

fn prepare(common: &Common) -> Result<(), String> {
    std::fs::create_dir_all(&common.state_dir)
        .map_err(|e| format!("--state-dir {}: {e}", common.state_dir.display()))?;
    Ok(())
}

fn json_args(
    status: Option<String>,
    uuid: Option<String>,
    primary: Option<String>,
    members: Option<String>,
    index: Option<String>,
) -> serde_json::Value {
    serde_json::json!({"status": status, "uuid": uuid, "primary": primary,
                       "members": members, "index": index})
}

/// Hands Galera's notification to the local dbserver: one attempt, at most
/// a second; never fails (Galera must not wait on it).
async fn notify(dbserver: &str, params: serde_json::Value) {
    let m = Message {
        sender: Party {
            kind: Kind::Notify,
            serial: 0,
        },
        receiver: Party {
            kind: Kind::Dbserver,
            serial: 0,
        },
        verb: Verb::Notify,
        params,
        msg_id: next_id(),
    };
    let _ = tokio::time::timeout(
        Duration::from_secs(1),
        net::send(dbserver, &m, Duration::from_secs(1)),
    )
    .await;
}

/// A person's command: prints the summary, or `ok` once acknowledged.
async fn command(verb: &str, node: Option<String>, arbitrator: &str) -> Result<(), String> {
    let verb = match verb {
        "status_summary" => Verb::StatusSummary,
        "drain" => Verb::Drain,
        "undrain" => Verb::Undrain,
        "set_writer" => Verb::SetWriter,
        "force_primary" => Verb::ForcePrimary,
        other => {
            return Err(format!(
                "unknown command {other:?}: status_summary, drain NODE, undrain NODE, set_writer NODE, force_primary NODE"
            ))
        }
    };
    let params = match (verb, node) {
        (Verb::StatusSummary, None) => serde_json::json!({}),
        (Verb::StatusSummary, Some(n)) => {
            return Err(format!("status_summary takes no node ({n})"))
        }
        (_, Some(n)) => serde_json::json!({"node": n}),
        (v, None) => return Err(format!("{} needs a NODE", v.as_str())),
    };
    let answer = ask(arbitrator, verb, params, 3).await?;
    match answer.verb {
        Verb::StatusSummary => {
            println!(
                "{}",
                serde_json::to_string_pretty(&answer.params).expect("json")
            );
        }
        _ => println!("ok: {} acknowledged by {}", verb.as_str(), answer.sender),
    }
    Ok(())
}

/// Sends `verb` to the arbitrator as `command:0` (what a person's command
/// and a CCR job following a minded source are), up to `tries` times.
async fn ask(
    arbitrator: &str,
    verb: Verb,
    params: serde_json::Value,
    tries: u32,
) -> Result<Message, String> {
    let m = Message {
        sender: Party {
            kind: Kind::Command,
            serial: 0,
        },
        receiver: Party {
            kind: Kind::Arbitrator,
            serial: 0,
        },
        verb,
        params,
        msg_id: next_id(),
    };
    net::send_until_answered(arbitrator, &m, Duration::from_secs(3), tries)
        .await
        .map_err(|e| e.to_string())
}

/// The arbitrator's `status_summary` (one try): what a CCR job whose source
/// is a minded cluster follows.
pub async fn status_summary(arbitrator: &str) -> Result<serde_json::Value, String> {
    let answer = ask(arbitrator, Verb::StatusSummary, serde_json::json!({}), 1).await?;
    match answer.verb {
        Verb::StatusSummary => Ok(answer.params),
        other => Err(format!(
            "the arbitrator at {arbitrator} answered {} to status_summary",
            other.as_str()
        )),
    }
}

async fn config(action: ConfigAction) -> Result<(), String> {
    match action {
        ConfigAction::Load { file, config_db } => {
            let text =
                std::fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))?;
            let site = site::Site::parse(&text).map_err(|e| format!("{}: {e}", file.display()))?;
            let dsns = store::Dsn::parse_list(&config_db)?;
            let at = store::load(&dsns, &site).await?;
            println!(
                "stored the configuration of {} dbservers, {} arbitrators and {} dbclients in {at}",
                site.dbservers.len(),
                site.arbitrators.len(),
                site.dbclients.len()
            );
            Ok(())
        }
        ConfigAction::Show { config_db } => {
            let dsns = store::Dsn::parse_list(&config_db)?;
            print!("{}", store::fetch(&dsns).await?);
            Ok(())
        }
    }
}
