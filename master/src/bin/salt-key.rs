//! `salt-key`: load the master config, run [`brine_master::cli::key::run`]
//! against its `pki_dir`, and tell a running master about keys that were
//! rejected or deleted, or syndic grants revoked, so it ends their sessions
//! and rotates its publish key at once (and of any change, for its
//! `salt/key` events).

brine_common::global_allocator!();

use brine_common::client::LocalClient;
use brine_common::{cli, config};
use brine_master::cli::key::{run, KeyArgs, KeyChange};
use std::io::IsTerminal;

fn main() {
    let mut args: KeyArgs = cli::parse_args();
    args.stdout_is_tty = std::io::stdout().is_terminal();
    let cfg = cli::client_config("salt-key", &args.client, config::load_master);
    let pki_dir = args.pki_dir.clone().unwrap_or_else(|| cfg.pki_dir.clone());
    let mut revoked: Vec<String> = Vec::new();
    // Any change at all is told to the master (it fires `salt/key`).
    let mut changed = false;
    let code = {
        let stdin = std::io::stdin();
        let mut stdin = stdin.lock();
        let stdout = std::io::stdout();
        let mut stdout = stdout.lock();
        run(
            &args,
            &pki_dir,
            cfg.auto_accept,
            &mut stdin,
            &mut stdout,
            &mut |change| {
                changed = true;
                match change {
                    // A revoked syndic loses its session like a deleted
                    // key: it must sign in again, and is refused the role.
                    KeyChange::Rejected(ids)
                    | KeyChange::Deleted(ids)
                    | KeyChange::SyndicRevoked(ids) => revoked.extend(ids),
                    KeyChange::Accepted(_) | KeyChange::SyndicGranted(_) => {}
                }
            },
        )
    };
    if changed {
        notify_master(&cfg, revoked);
    }
    std::process::exit(code);
}

/// Best effort: a master that is not running rotates its key at start.
fn notify_master(cfg: &config::MasterConfig, revoked: Vec<String>) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("salt-key: cannot tell the master to rotate its key: {e}");
            return;
        }
    };
    rt.block_on(async {
        match LocalClient::connect(&cfg.sock_dir, &cfg.cachedir).await {
            Ok(mut c) => {
                if let Err(e) = c.keys_changed(revoked).await {
                    eprintln!("salt-key: the master did not confirm the key rotation: {e}");
                }
            }
            Err(e) => tracing::info!(error = %e, "master not reachable; it will use a fresh publish key when it starts"),
        }
    });
}
