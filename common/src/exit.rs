//! Exit codes of every Brine command, in one place (documented in the README).

/// Everything worked.
pub const OK: i32 = 0;
/// At least one minion's job failed (non-zero retcode or `success: false`).
pub const JOB_FAILED: i32 = 1;
/// The target matched no minion.
pub const NO_MATCH: i32 = 2;
/// At least one expected minion did not return.
pub const DID_NOT_RETURN: i32 = 20;
/// The master's job cache could not store returns of the job (a full
/// disk): `salt` warned on stderr (sysexits `EX_IOERR`).
pub const JOB_CACHE_FAILING: i32 = 74;
/// Bad command line (sysexits `EX_USAGE`).
pub const USAGE: i32 = 64;
/// The master could not be reached or refused the client (`EX_UNAVAILABLE`).
pub const UNAVAILABLE: i32 = 69;
/// The input data was wrong (a fleet file that does not check out; sysexits' `EX_DATAERR`).
pub const DATA: i32 = 65;
/// An output file or directory could not be created (sysexits' `EX_CANTCREAT`).
pub const CANT_CREATE: i32 = 73;
/// Internal error (`EX_SOFTWARE`).
pub const SOFTWARE: i32 = 70;
/// Bad configuration (sysexits `EX_CONFIG`).
pub const CONFIG: i32 = 78;
