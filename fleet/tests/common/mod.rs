//! Shared by the fleet end-to-end tests.

/// `master_opts` and `minion_opts` lines (under a fleet file's
/// `defaults:`) that make a test topology settle in seconds: 1 s
/// heartbeats and acceptance waits, 20 ms syndic forwarding, short
/// reconnect back-offs.
pub const QUICK_OPTS: &str = concat!(
    "  master_opts: {log_level: info, heartbeat_interval: 1, syndic_forward_interval_ms: 20,\n",
    "                syndic_acceptance_wait_time: 1, syndic_recon_default: 200}\n",
    "  minion_opts: {log_level: info, acceptance_wait_time: 1, recon_default: 200,\n",
    "                recon_max: 2000, random_reauth_delay: 1}\n",
);
