//! The master's minion key store: Salt's four key states kept on disk under
//! `pki_dir`, one file per minion id holding its public key PEM, in
//! `minions/` (accepted), `minions_pre/` (pending), `minions_rejected/` and
//! `minions_denied/`, next to the master's own `master.pem`/`master.pub`;
//! and the operator's syndic grants in `syndics/`, one file per id holding
//! the fingerprint of the accepted key the role was granted to (so a key
//! that later replaces it under the same id is not a syndic).
//!
//! Invariants: a sign-in never scans a directory (it stats and reads at most
//! a few files named by the id), never overwrites an accepted or pending key
//! (a different key under a known id goes to `minions_denied/` and is
//! refused), and an id that fails [`KeyStore::valid_id`] never becomes a
//! path. A file already on disk under a name `valid_id` refuses (written by
//! an older version) is still listed and can be rejected or deleted, so no
//! key is ever invisible to the operator. Every file lands by an atomic rename from a private staging
//! directory, so a reader (the master or `salt-key`) never sees half a key.

use brine_common::crypto::{KeyPair, PublicKey};
use brine_common::glob::fnmatch;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use tracing::{debug, info, warn};

/// Longest minion id accepted (a file name limit on common file systems).
const MAX_ID_LEN: usize = 255;
/// Longest autosign file read; a bigger one is a mistake, not a config.
const MAX_AUTOSIGN_BYTES: u64 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("invalid minion id {0:?}")]
    InvalidId(String),
    #[error("bad public key for {id}: {reason}")]
    BadKey { id: String, reason: String },
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("master key: {0}")]
    MasterKey(#[from] brine_common::crypto::CryptoError),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> KeyError + '_ {
    move |source| KeyError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// The state of a minion's key on the master.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub enum KeyState {
    Accepted,
    Pending,
    Rejected,
    Denied,
}

impl KeyState {
    /// Every state, in Salt's directory order.
    pub const ALL: [KeyState; 4] = [
        KeyState::Accepted,
        KeyState::Pending,
        KeyState::Rejected,
        KeyState::Denied,
    ];

    /// The directory under `pki_dir` (also the key in json/yaml output).
    pub fn dir_name(self) -> &'static str {
        match self {
            KeyState::Accepted => "minions",
            KeyState::Pending => "minions_pre",
            KeyState::Rejected => "minions_rejected",
            KeyState::Denied => "minions_denied",
        }
    }
}

/// The answer to one sign-in attempt.
#[derive(Debug, Clone)]
pub enum SignIn {
    /// The key is accepted; carries the stored (equal) public key.
    Accepted(PublicKey),
    /// Waiting for an operator (or was just written to `minions_pre/`).
    Pending,
    /// An operator rejected this id.
    Rejected,
    /// A different key was presented for a known id; it was put in
    /// `minions_denied/` for the operator to inspect.
    Denied,
}

/// All managed keys by state, each list sorted (case-insensitively, as
/// Salt sorts them).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct KeyListing {
    pub minions: Vec<String>,
    pub minions_pre: Vec<String>,
    pub minions_rejected: Vec<String>,
    pub minions_denied: Vec<String>,
}

impl KeyListing {
    pub fn get(&self, state: KeyState) -> &[String] {
        match state {
            KeyState::Accepted => &self.minions,
            KeyState::Pending => &self.minions_pre,
            KeyState::Rejected => &self.minions_rejected,
            KeyState::Denied => &self.minions_denied,
        }
    }
}

/// Salt's `sorted_ignorecase` order, made total by the exact bytes.
pub fn sort_ignorecase(ids: &mut [String]) {
    ids.sort_by(|a, b| a.to_lowercase().cmp(&b.to_lowercase()).then(a.cmp(b)));
}

/// The key store of one master.
#[derive(Debug)]
pub struct KeyStore {
    pki_dir: PathBuf,
    /// Accept every new key at once (Salt's `auto_accept`).
    auto_accept: bool,
    /// Globs of ids accepted at once; re-read on each decision so an
    /// operator can edit it without restarting the master.
    autosign_file: Option<PathBuf>,
    /// Makes staging file names unique within this process.
    seq: AtomicU64,
}

const STAGING: &str = ".staging";
/// Directory under `pki_dir` of the syndic grants (`salt-key --grant-syndic`).
pub const SYNDICS: &str = "syndics";

/// Format characters (Unicode general category Cf: zero-width space and
/// joiners, bidi marks, embeddings, overrides and isolates, soft hyphen,
/// BOM, tags, ...) as of Unicode 15, plus the Hangul fillers, which are
/// letters that render as nothing. An explicit table rather than a crate:
/// the category changes rarely and this is the only place that needs it.
const INVISIBLE: &[(char, char)] = &[
    ('\u{00AD}', '\u{00AD}'),
    ('\u{0600}', '\u{0605}'),
    ('\u{061C}', '\u{061C}'),
    ('\u{06DD}', '\u{06DD}'),
    ('\u{070F}', '\u{070F}'),
    ('\u{0890}', '\u{0891}'),
    ('\u{08E2}', '\u{08E2}'),
    ('\u{115F}', '\u{1160}'),
    ('\u{180E}', '\u{180E}'),
    ('\u{200B}', '\u{200F}'),
    ('\u{202A}', '\u{202E}'),
    ('\u{2060}', '\u{2064}'),
    ('\u{2066}', '\u{206F}'),
    ('\u{3164}', '\u{3164}'),
    ('\u{FEFF}', '\u{FEFF}'),
    ('\u{FFA0}', '\u{FFA0}'),
    ('\u{FFF9}', '\u{FFFB}'),
    ('\u{110BD}', '\u{110BD}'),
    ('\u{110CD}', '\u{110CD}'),
    ('\u{13430}', '\u{1343F}'),
    ('\u{1BCA0}', '\u{1BCA3}'),
    ('\u{1D173}', '\u{1D17A}'),
    ('\u{E0001}', '\u{E0001}'),
    ('\u{E0020}', '\u{E007F}'),
];

/// Whether `c` is a control, format or invisible character, or whitespace
/// (which covers the line and paragraph separators U+2028/U+2029).
fn hidden_char(c: char) -> bool {
    c.is_control() || c.is_whitespace() || INVISIBLE.iter().any(|&(lo, hi)| lo <= c && c <= hi)
}

impl KeyStore {
    /// Opens (creating, mode 0700) `pki_dir` and its key directories.
    pub fn open(
        pki_dir: &Path,
        auto_accept: bool,
        autosign_file: Option<&Path>,
    ) -> Result<Self, KeyError> {
        let mut builder = fs::DirBuilder::new();
        builder.recursive(true).mode(0o700);
        builder.create(pki_dir).map_err(io_err(pki_dir))?;
        for state in KeyState::ALL {
            let dir = pki_dir.join(state.dir_name());
            builder.create(&dir).map_err(io_err(&dir))?;
        }
        for sub in [STAGING, SYNDICS] {
            let dir = pki_dir.join(sub);
            builder.create(&dir).map_err(io_err(&dir))?;
        }
        Ok(Self {
            pki_dir: pki_dir.to_path_buf(),
            auto_accept,
            autosign_file: autosign_file.map(Path::to_path_buf),
            seq: AtomicU64::new(0),
        })
    }

    pub fn pki_dir(&self) -> &Path {
        &self.pki_dir
    }

    /// Loads `master.pem`/`master.pub`, generating them on first use.
    pub fn master_keypair(&self) -> Result<KeyPair, KeyError> {
        Ok(KeyPair::load_or_generate(&self.pki_dir, "master")?.0)
    }

    /// Whether `id` may name a minion: non-empty, at most 255 bytes, no path
    /// separator; nothing `salt-key -L` would hide or show misleadingly: no
    /// leading `.` (Salt's listing skips dotfiles), no control, format
    /// (zero-width, bidi) or other invisible character, no whitespace.
    pub fn valid_id(id: &str) -> bool {
        !id.is_empty()
            && id.len() <= MAX_ID_LEN
            && !id.starts_with('.')
            && !id.chars().any(|c| c == '/' || c == '\\' || hidden_char(c))
    }

    /// Whether a file name found in a key directory is one this store may
    /// list, reject or delete: looser than [`KeyStore::valid_id`], so keys
    /// stored under a name that is refused today stay visible and removable.
    fn listable(name: &str) -> bool {
        !name.is_empty()
            && name != "."
            && name != ".."
            && !name.chars().any(|c| c == '/' || c == '\0')
    }

    fn path(&self, state: KeyState, id: &str) -> PathBuf {
        self.pki_dir.join(state.dir_name()).join(id)
    }

    /// Reads one key file; `None` when it does not exist.
    fn read(&self, state: KeyState, id: &str) -> Result<Option<String>, KeyError> {
        let path = self.path(state, id);
        match fs::read_to_string(&path) {
            Ok(text) => Ok(Some(text)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err(&path)(e)),
        }
    }

    /// Writes `text` as `state/id` through a staging file: replacing any
    /// file there (rename), or only if none exists (hard link). Returns
    /// whether it was written.
    fn write(
        &self,
        state: KeyState,
        id: &str,
        text: &str,
        replace: bool,
    ) -> Result<bool, KeyError> {
        self.write_file(&self.path(state, id), text, replace, 0o644)
    }

    /// [`Self::write`] to any path under `pki_dir`, with a file mode.
    fn write_file(
        &self,
        dest: &Path,
        text: &str,
        replace: bool,
        mode: u32,
    ) -> Result<bool, KeyError> {
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        let tmp = self
            .pki_dir
            .join(STAGING)
            .join(format!("{}.{n}", std::process::id()));
        let result = (|| {
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(mode)
                .open(&tmp)?;
            f.write_all(text.as_bytes())?;
            f.sync_all()?;
            if replace {
                return fs::rename(&tmp, dest).map(|()| true);
            }
            let linked = match fs::hard_link(&tmp, dest) {
                Ok(()) => true,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => false,
                Err(e) => return Err(e),
            };
            fs::remove_file(&tmp).map(|()| linked)
        })();
        if result.is_err() {
            // Best effort: a leftover staging file is harmless but untidy.
            let _ = fs::remove_file(&tmp);
        }
        result.map_err(io_err(dest))
    }

    /// Whether `state/id` exists.
    fn exists(&self, state: KeyState, id: &str) -> Result<bool, KeyError> {
        let path = self.path(state, id);
        match fs::symlink_metadata(&path) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io_err(&path)(e)),
        }
    }

    /// Salt's `_auth` decision for a minion presenting `pub_pem` as `id`.
    pub fn sign_in(&self, id: &str, pub_pem: &str) -> Result<SignIn, KeyError> {
        if !Self::valid_id(id) {
            warn!(id = %id.escape_debug(), "sign-in with invalid id refused");
            return Err(KeyError::InvalidId(id.to_string()));
        }
        let presented = PublicKey::from_pem(pub_pem).map_err(|e| KeyError::BadKey {
            id: id.to_string(),
            reason: e.to_string(),
        })?;
        // A new id is created without replacing; if a concurrent sign-in
        // created it first, decide again against what it wrote.
        for _ in 0..3 {
            if let Some(answer) = self.decide(id, &presented)? {
                return Ok(answer);
            }
        }
        Ok(SignIn::Pending)
    }

    /// One pass of the sign-in decision; `None` when a new key could not
    /// be created because another sign-in created that id meanwhile.
    fn decide(&self, id: &str, presented: &PublicKey) -> Result<Option<SignIn>, KeyError> {
        if self.exists(KeyState::Rejected, id)? {
            info!(id = %id, "public key rejected");
            return Ok(Some(SignIn::Rejected));
        }
        if let Some(stored) = self.read(KeyState::Accepted, id)? {
            if same_key(&stored, presented) {
                return match PublicKey::from_pem(&stored) {
                    Ok(k) => Ok(Some(SignIn::Accepted(k))),
                    Err(e) => Err(KeyError::BadKey {
                        id: id.to_string(),
                        reason: e.to_string(),
                    }),
                };
            }
            warn!(id = %id, "key denied: accepted key differs from the one presented");
            self.write(KeyState::Denied, id, presented.pem(), true)?;
            return Ok(Some(SignIn::Denied));
        }
        if let Some(stored) = self.read(KeyState::Pending, id)? {
            if !same_key(&stored, presented) {
                warn!(id = %id, "key denied: pending key differs from the one presented");
                self.write(KeyState::Denied, id, presented.pem(), true)?;
                return Ok(Some(SignIn::Denied));
            }
            if self.autosign(id) {
                let src = self.path(KeyState::Pending, id);
                return match fs::rename(&src, self.path(KeyState::Accepted, id)) {
                    Ok(()) => {
                        info!(id = %id, "pending key auto-accepted");
                        Ok(Some(SignIn::Accepted(presented.clone())))
                    }
                    // Moved by someone else meanwhile (salt-key): decide again.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                    Err(e) => Err(io_err(&src)(e)),
                };
            }
            debug!(id = %id, "key still pending");
            return Ok(Some(SignIn::Pending));
        }
        if self.autosign(id) {
            info!(id = %id, "new key auto-accepted");
            let written = self.write(KeyState::Accepted, id, presented.pem(), false)?;
            return Ok(written.then(|| SignIn::Accepted(presented.clone())));
        }
        info!(id = %id, "new key pending");
        let written = self.write(KeyState::Pending, id, presented.pem(), false)?;
        Ok(written.then_some(SignIn::Pending))
    }

    /// `auto_accept`, or `id` matches a glob line of the autosign file.
    fn autosign(&self, id: &str) -> bool {
        if self.auto_accept {
            return true;
        }
        let Some(path) = &self.autosign_file else {
            return false;
        };
        let meta = match fs::metadata(path) {
            Ok(m) => m,
            Err(e) => {
                debug!(path = %path.display(), error = %e, "autosign file unreadable");
                return false;
            }
        };
        if meta.permissions().mode() & 0o022 != 0 {
            warn!(path = %path.display(), "autosign file is group or world writable; ignored");
            return false;
        }
        if meta.len() > MAX_AUTOSIGN_BYTES {
            warn!(path = %path.display(), "autosign file too large; ignored");
            return false;
        }
        match fs::read_to_string(path) {
            Ok(text) => text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .any(|glob| fnmatch(glob, id)),
            Err(e) => {
                warn!(path = %path.display(), error = %e, "autosign file unreadable");
                false
            }
        }
    }

    /// The first state holding `id` (accepted, pending, rejected, denied).
    pub fn state(&self, id: &str) -> Option<KeyState> {
        if !Self::valid_id(id) {
            return None;
        }
        KeyState::ALL
            .into_iter()
            .find(|s| self.exists(*s, id).unwrap_or(false))
    }

    /// Whether an accepted key is stored for `id` (one `stat`).
    pub fn is_accepted(&self, id: &str) -> bool {
        Self::valid_id(id) && self.exists(KeyState::Accepted, id).unwrap_or(false)
    }

    /// The accepted public key of `id`, if any and if it parses.
    pub fn accepted_key(&self, id: &str) -> Option<PublicKey> {
        if !Self::valid_id(id) {
            return None;
        }
        let text = self.read(KeyState::Accepted, id).ok()??;
        PublicKey::from_pem(&text).ok()
    }

    fn list_dir(&self, state: KeyState) -> Result<Vec<String>, KeyError> {
        let dir = self.pki_dir.join(state.dir_name());
        let mut ids = Vec::new();
        for entry in fs::read_dir(&dir).map_err(io_err(&dir))? {
            let entry = entry.map_err(io_err(&dir))?;
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            // Salt skips dotfiles; here every name a key could have been
            // stored under is shown (such ids are refused at sign-in), so
            // no key is hidden from the operator.
            if !Self::listable(&name) {
                continue;
            }
            ids.push(name);
        }
        sort_ignorecase(&mut ids);
        Ok(ids)
    }

    /// Every managed key by state.
    pub fn list(&self) -> Result<KeyListing, KeyError> {
        Ok(KeyListing {
            minions: self.list_dir(KeyState::Accepted)?,
            minions_pre: self.list_dir(KeyState::Pending)?,
            minions_rejected: self.list_dir(KeyState::Rejected)?,
            minions_denied: self.list_dir(KeyState::Denied)?,
        })
    }

    fn grant_path(&self, id: &str) -> PathBuf {
        self.pki_dir.join(SYNDICS).join(id)
    }

    /// Whether the operator granted the syndic role to `id` holding `key`:
    /// a grant record exists and names this key's fingerprint.
    pub fn syndic_granted(&self, id: &str, key: &PublicKey) -> bool {
        if !Self::valid_id(id) {
            return false;
        }
        match fs::read_to_string(self.grant_path(id)) {
            Ok(text) => text.trim() == key.fingerprint(),
            Err(_) => false,
        }
    }

    /// Ids holding the syndic role now: a grant record naming the key
    /// currently accepted under that id. Sorted like the key lists.
    pub fn syndics(&self) -> Result<Vec<String>, KeyError> {
        let dir = self.pki_dir.join(SYNDICS);
        let mut ids = Vec::new();
        for entry in fs::read_dir(&dir).map_err(io_err(&dir))? {
            let entry = entry.map_err(io_err(&dir))?;
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            if self
                .accepted_key(&name)
                .is_some_and(|k| self.syndic_granted(&name, &k))
            {
                ids.push(name);
            }
        }
        sort_ignorecase(&mut ids);
        Ok(ids)
    }

    /// Grants the syndic role to each listed id whose key is accepted (and
    /// parses), bound to that key's fingerprint. Returns the ids granted.
    /// `auto_accept` and the autosign file never call this.
    pub fn grant_syndic_planned(&self, ids: &[String]) -> Result<Vec<String>, KeyError> {
        let mut granted = Vec::new();
        for id in ids {
            let Some(key) = self.accepted_key(id) else {
                warn!(id = %id.escape_debug(), "no valid accepted key: syndic role not granted");
                continue;
            };
            self.write_file(&self.grant_path(id), &key.fingerprint(), true, 0o600)?;
            info!(id = %id, fingerprint = %key.fingerprint(), "syndic role granted");
            if !granted.contains(id) {
                granted.push(id.clone());
            }
        }
        Ok(granted)
    }

    /// Removes the syndic grant of each listed id; returns those removed.
    pub fn revoke_syndic_planned(&self, ids: &[String]) -> Result<Vec<String>, KeyError> {
        let mut revoked = Vec::new();
        for id in ids {
            if self.drop_grant(id)? && !revoked.contains(id) {
                info!(id = %id.escape_debug(), "syndic role revoked");
                revoked.push(id.clone());
            }
        }
        Ok(revoked)
    }

    /// Removes `syndics/id` if present; returns whether it was there.
    fn drop_grant(&self, id: &str) -> Result<bool, KeyError> {
        if !Self::listable(id) {
            return Ok(false);
        }
        let path = self.grant_path(id);
        match fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io_err(&path)(e)),
        }
    }

    /// Ids with a grant record (effective or not) matching `glob`.
    pub fn grants_matching(&self, glob: &str) -> Result<Vec<String>, KeyError> {
        let dir = self.pki_dir.join(SYNDICS);
        let mut ids = Vec::new();
        for entry in fs::read_dir(&dir).map_err(io_err(&dir))? {
            let entry = entry.map_err(io_err(&dir))?;
            if let Ok(name) = entry.file_name().into_string() {
                if Self::listable(&name) && glob_matches(glob, &name) {
                    ids.push(name);
                }
            }
        }
        sort_ignorecase(&mut ids);
        Ok(ids)
    }

    /// Ids in `states` matching `glob` (Salt's fnmatch; a comma separates
    /// alternatives), in the order of `states`, each state's ids sorted.
    pub fn matching(
        &self,
        glob: &str,
        states: &[KeyState],
    ) -> Result<Vec<(KeyState, String)>, KeyError> {
        let mut out = Vec::new();
        for &state in states {
            for id in self.list_dir(state)? {
                if glob_matches(glob, &id) {
                    out.push((state, id));
                }
            }
        }
        Ok(out)
    }

    fn rename(&self, from: KeyState, to: KeyState, id: &str) -> Result<(), KeyError> {
        let src = self.path(from, id);
        fs::rename(&src, self.path(to, id)).map_err(io_err(&src))
    }

    /// Moves each planned `(state, id)` still in that state to `to`;
    /// returns the ids moved (each once). Keys that do not parse are left
    /// where they are when moving to accepted.
    fn move_planned(
        &self,
        planned: &[(KeyState, String)],
        to: KeyState,
    ) -> Result<Vec<String>, KeyError> {
        let mut moved: Vec<String> = Vec::new();
        for (from, id) in planned {
            // A name refused today may still be rejected, never accepted.
            let allowed = if to == KeyState::Accepted {
                Self::valid_id(id)
            } else {
                Self::listable(id)
            };
            if *from == to || !allowed {
                continue;
            }
            let Some(text) = self.read(*from, id)? else {
                continue;
            };
            if to == KeyState::Accepted && PublicKey::from_pem(&text).is_err() {
                warn!(id = %id, "invalid public key not accepted");
                continue;
            }
            self.rename(*from, to, id)?;
            info!(id = %id.escape_debug(), from = from.dir_name(), to = to.dir_name(), "key moved");
            if *from == KeyState::Accepted && self.drop_grant(id)? {
                info!(id = %id.escape_debug(), "syndic role dropped with the accepted key");
            }
            if !moved.contains(id) {
                moved.push(id.clone());
            }
        }
        Ok(moved)
    }

    /// Accepts exactly the listed keys (what an operator was shown).
    pub fn accept_planned(&self, planned: &[(KeyState, String)]) -> Result<Vec<String>, KeyError> {
        self.move_planned(planned, KeyState::Accepted)
    }

    /// Rejects exactly the listed keys (what an operator was shown).
    pub fn reject_planned(&self, planned: &[(KeyState, String)]) -> Result<Vec<String>, KeyError> {
        self.move_planned(planned, KeyState::Rejected)
    }

    /// Deletes exactly the listed keys; returns those removed.
    pub fn delete_planned(
        &self,
        planned: &[(KeyState, String)],
    ) -> Result<Vec<(String, KeyState)>, KeyError> {
        let mut out = Vec::new();
        for (state, id) in planned {
            if !Self::listable(id) {
                continue;
            }
            let path = self.path(*state, id);
            match fs::remove_file(&path) {
                Ok(()) => {
                    info!(id = %id.escape_debug(), state = state.dir_name(), "key deleted");
                    out.push((id.clone(), *state));
                    if *state == KeyState::Accepted && self.drop_grant(id)? {
                        info!(id = %id.escape_debug(), "syndic role dropped with the accepted key");
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err(&path)(e)),
            }
        }
        Ok(out)
    }

    /// Glob (Salt fnmatch: * ? [..]) over ids in the given states; returns the ids changed.
    pub fn accept(
        &self,
        glob: &str,
        include_rejected: bool,
        include_denied: bool,
    ) -> Result<Vec<String>, KeyError> {
        let mut states = vec![KeyState::Pending];
        if include_rejected {
            states.push(KeyState::Rejected);
        }
        if include_denied {
            states.push(KeyState::Denied);
        }
        self.accept_planned(&self.matching(glob, &states)?)
    }

    /// Moves matching pending (and, if asked, accepted/denied) keys to rejected.
    pub fn reject(
        &self,
        glob: &str,
        include_accepted: bool,
        include_denied: bool,
    ) -> Result<Vec<String>, KeyError> {
        let mut states = vec![KeyState::Pending];
        if include_accepted {
            states.push(KeyState::Accepted);
        }
        if include_denied {
            states.push(KeyState::Denied);
        }
        self.reject_planned(&self.matching(glob, &states)?)
    }

    /// Deletes matching keys in every state.
    pub fn delete(&self, glob: &str) -> Result<Vec<(String, KeyState)>, KeyError> {
        self.delete_planned(&self.matching(glob, &KeyState::ALL)?)
    }

    /// `(state, id, fingerprint)` of matching keys in every state; a file
    /// that does not hold a valid key shows `invalid key` as fingerprint.
    pub fn fingerprints(&self, glob: &str) -> Result<Vec<(KeyState, String, String)>, KeyError> {
        let mut out = Vec::new();
        for (state, id) in self.matching(glob, &KeyState::ALL)? {
            let Some(text) = self.read(state, &id)? else {
                continue;
            };
            let finger = PublicKey::from_pem(&text)
                .map(|k| k.fingerprint())
                .unwrap_or_else(|_| "invalid key".to_string());
            out.push((state, id, finger));
        }
        Ok(out)
    }

    /// `(file name, fingerprint)` of the master's own `*.pem`/`*.pub` files
    /// in `pki_dir` (Salt's "Local Keys"); a private key shows the
    /// fingerprint of its public half.
    pub fn local_fingerprints(&self) -> Result<Vec<(String, String)>, KeyError> {
        let mut names = Vec::new();
        for entry in fs::read_dir(&self.pki_dir).map_err(io_err(&self.pki_dir))? {
            let entry = entry.map_err(io_err(&self.pki_dir))?;
            if let Ok(name) = entry.file_name().into_string() {
                if name.ends_with(".pem") || name.ends_with(".pub") {
                    names.push(name);
                }
            }
        }
        sort_ignorecase(&mut names);
        let mut out = Vec::new();
        for name in names {
            let path = self.pki_dir.join(&name);
            let text = fs::read_to_string(&path).map_err(io_err(&path))?;
            let finger = if name.ends_with(".pem") {
                KeyPair::from_pem(&text).map(|k| k.public().fingerprint())
            } else {
                PublicKey::from_pem(&text).map(|k| k.fingerprint())
            }
            .unwrap_or_else(|_| "invalid key".to_string());
            out.push((name, finger));
        }
        Ok(out)
    }
}

/// Two PEMs hold the same key when their normalised text is equal.
fn same_key(stored_pem: &str, presented: &PublicKey) -> bool {
    stored_pem.trim() == presented.pem().trim()
}

/// `glob` matches `name`, where `glob` may list alternatives split by `,`
/// (as `salt-key -a 'a,b'` does).
pub fn glob_matches(glob: &str, name: &str) -> bool {
    glob.split(',').any(|g| fnmatch(g, name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::OnceLock;

    /// Key generation costs tens of ms; share a few pairs across tests.
    fn keys() -> &'static [KeyPair] {
        static KEYS: OnceLock<Vec<KeyPair>> = OnceLock::new();
        KEYS.get_or_init(|| (0..2).map(|_| KeyPair::generate().expect("gen")).collect())
    }

    fn pem(i: usize) -> &'static str {
        keys()[i].public().pem()
    }

    fn store(auto: bool, autosign: Option<&Path>) -> (tempfile::TempDir, KeyStore) {
        let dir = tempfile::tempdir().expect("tmp");
        let s = KeyStore::open(&dir.path().join("pki"), auto, autosign).expect("open");
        (dir, s)
    }

    #[test]
    fn open_creates_private_dirs() {
        let (_d, s) = store(false, None);
        for st in KeyState::ALL {
            let m = fs::metadata(s.pki_dir().join(st.dir_name())).expect("dir");
            assert_eq!(m.permissions().mode() & 0o777, 0o700);
        }
        assert_eq!(
            fs::metadata(s.pki_dir()).expect("pki").permissions().mode() & 0o777,
            0o700
        );
    }

    #[test]
    fn valid_ids() {
        for ok in [
            "web1",
            "a.b-c_d",
            "web1.",
            "héllo-wörld",
            "日本",
            "x".repeat(255).as_str(),
        ] {
            assert!(KeyStore::valid_id(ok), "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            ".hidden",
            "a/b",
            "a\\b",
            "a\0b",
            "a\nb",
            "a\tb",
            "a b",
            "a\u{a0}b",
            "\x7f",
            "a\u{85}b",
            "web\u{200b}1",
            "web\u{200d}1",
            "web\u{feff}",
            "\u{202e}1bew",
            "web\u{2066}1\u{2069}",
            "web\u{200e}1",
            "web\u{61c}1",
            "web\u{ad}1",
            "web\u{2028}1",
            "web\u{2029}1",
            "web\u{3164}",
            "web\u{e0041}",
            &"x".repeat(256),
        ] {
            assert!(!KeyStore::valid_id(bad), "{bad:?}");
        }
    }

    #[test]
    fn hidden_ids_are_refused_and_leave_no_file() {
        let (_d, s) = store(true, None);
        for id in [".hidden", "web\u{200b}1", "\u{202e}1bew"] {
            assert!(matches!(s.sign_in(id, pem(0)), Err(KeyError::InvalidId(_))));
        }
        assert_eq!(
            fs::read_dir(s.pki_dir().join("minions"))
                .expect("dir")
                .count(),
            0
        );
    }

    #[test]
    fn keys_stored_under_refused_names_stay_visible_and_removable() {
        let (_d, s) = store(false, None);
        for (dir, id) in [("minions", ".hidden"), ("minions_pre", "web\u{200b}1")] {
            fs::write(s.pki_dir().join(dir).join(id), pem(0)).expect("write");
        }
        let l = s.list().expect("list");
        assert_eq!(l.minions, vec![".hidden"]);
        assert_eq!(l.minions_pre, vec!["web\u{200b}1"]);
        // Such a key can be rejected or deleted, never accepted.
        assert!(s.accept("*", false, false).expect("acc").is_empty());
        assert_eq!(
            s.reject("web*", false, false).expect("rej"),
            vec!["web\u{200b}1"]
        );
        let gone = s.delete("*").expect("del");
        assert_eq!(gone.len(), 2, "{gone:?}");
        let l = s.list().expect("list");
        assert!(l.minions.is_empty() && l.minions_rejected.is_empty());
    }

    #[test]
    fn syndic_grants_follow_the_accepted_key() {
        let (_d, s) = store(true, None);
        let ids = |v: &[&str]| v.iter().map(|i| i.to_string()).collect::<Vec<_>>();
        assert!(matches!(s.sign_in("syn1", pem(0)), Ok(SignIn::Accepted(_))));
        // auto_accept accepts the key but grants nothing.
        assert!(!s.syndic_granted("syn1", keys()[0].public()));
        assert!(s.syndics().expect("list").is_empty());
        // Only an accepted key can be granted.
        s.sign_in("other", pem(0)).expect("sign");
        s.reject("other", true, false).expect("rej");
        assert_eq!(
            s.grant_syndic_planned(&ids(&["syn1", "other", "nobody"]))
                .expect("grant"),
            vec!["syn1"]
        );
        assert!(s.syndic_granted("syn1", keys()[0].public()));
        assert!(!s.syndic_granted("syn1", keys()[1].public()));
        assert_eq!(s.syndics().expect("list"), vec!["syn1"]);
        let meta = fs::metadata(s.pki_dir().join(SYNDICS).join("syn1")).expect("grant");
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        // Revoke, then grant again.
        assert_eq!(
            s.revoke_syndic_planned(&ids(&["syn1"])).expect("rev"),
            vec!["syn1"]
        );
        assert!(s
            .revoke_syndic_planned(&ids(&["syn1"]))
            .expect("rev")
            .is_empty());
        assert!(!s.syndic_granted("syn1", keys()[0].public()));
        s.grant_syndic_planned(&ids(&["syn1"])).expect("grant");
        // A different key accepted under the id (from denied) is not granted.
        assert!(matches!(s.sign_in("syn1", pem(1)), Ok(SignIn::Denied)));
        s.accept("syn1", false, true).expect("acc denied");
        assert!(!s.syndic_granted("syn1", keys()[1].public()));
        assert!(s.syndics().expect("list").is_empty());
        assert_eq!(s.grants_matching("syn*").expect("m"), vec!["syn1"]);
        // Deleting or rejecting the accepted key drops the grant.
        s.grant_syndic_planned(&ids(&["syn1"])).expect("grant");
        s.delete("syn1").expect("del");
        assert!(s.grants_matching("*").expect("m").is_empty());
        assert!(matches!(s.sign_in("syn2", pem(0)), Ok(SignIn::Accepted(_))));
        s.grant_syndic_planned(&ids(&["syn2"])).expect("grant");
        s.reject("syn2", true, false).expect("rej");
        assert!(s.grants_matching("*").expect("m").is_empty());
    }

    #[test]
    fn sign_in_state_machine() {
        let (_d, s) = store(false, None);
        assert!(matches!(
            s.sign_in("../x", pem(0)),
            Err(KeyError::InvalidId(_))
        ));
        assert!(matches!(
            s.sign_in("web1", "garbage"),
            Err(KeyError::BadKey { .. })
        ));
        assert_eq!(s.state("web1"), None);

        // Unknown → pending, and pending again.
        assert!(matches!(s.sign_in("web1", pem(0)), Ok(SignIn::Pending)));
        assert!(matches!(s.sign_in("web1", pem(0)), Ok(SignIn::Pending)));
        assert_eq!(s.state("web1"), Some(KeyState::Pending));
        assert!(s.accepted_key("web1").is_none());

        // Pending with another key → denied; pending key untouched.
        assert!(matches!(s.sign_in("web1", pem(1)), Ok(SignIn::Denied)));
        let l = s.list().expect("list");
        assert_eq!(l.minions_pre, vec!["web1"]);
        assert_eq!(l.minions_denied, vec!["web1"]);
        let denied = fs::read_to_string(s.pki_dir().join("minions_denied/web1")).expect("read");
        assert_eq!(denied, pem(1));

        // Accept → signs in with the same key, denied with another.
        assert_eq!(s.accept("web1", false, false).expect("acc"), vec!["web1"]);
        match s.sign_in("web1", pem(0)).expect("sign") {
            SignIn::Accepted(k) => assert_eq!(k.pem(), pem(0)),
            other => panic!("{other:?}"),
        }
        assert!(matches!(s.sign_in("web1", pem(1)), Ok(SignIn::Denied)));
        assert_eq!(
            s.accepted_key("web1").expect("key").fingerprint(),
            keys()[0].public().fingerprint()
        );

        // Rejected wins over everything.
        assert_eq!(s.reject("web1", true, false).expect("rej"), vec!["web1"]);
        assert!(matches!(s.sign_in("web1", pem(0)), Ok(SignIn::Rejected)));
        assert!(matches!(s.sign_in("web1", pem(1)), Ok(SignIn::Rejected)));
        assert_eq!(s.state("web1"), Some(KeyState::Rejected));
    }

    #[test]
    fn concurrent_first_sign_ins_store_one_key() {
        let (_d, s) = store(false, None);
        let results: Vec<(usize, SignIn)> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..8)
                .map(|i| {
                    let s = &s;
                    scope.spawn(move || (i % 2, s.sign_in("race", pem(i % 2)).expect("sign")))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("join"))
                .collect()
        });
        let stored = fs::read_to_string(s.pki_dir().join("minions_pre/race")).expect("pending");
        for (k, answer) in results {
            if stored == pem(k) {
                assert!(matches!(answer, SignIn::Pending), "{answer:?}");
            } else {
                assert!(matches!(answer, SignIn::Denied), "{answer:?}");
            }
        }
        assert!(fs::read_dir(s.pki_dir().join(STAGING))
            .expect("staging")
            .next()
            .is_none());
    }

    #[test]
    fn auto_accept_accepts_new_and_pending() {
        let (_d, s) = store(true, None);
        assert!(matches!(s.sign_in("m1", pem(0)), Ok(SignIn::Accepted(_))));
        assert_eq!(s.state("m1"), Some(KeyState::Accepted));
        // Even with auto_accept, a different key for a known id is denied.
        assert!(matches!(s.sign_in("m1", pem(1)), Ok(SignIn::Denied)));
    }

    #[test]
    fn autosign_file_globs() {
        let dir = tempfile::tempdir().expect("tmp");
        let file = dir.path().join("autosign.conf");
        fs::write(&file, "# comment\n\n  web*  \ndb[0-9]\n").expect("write");
        fs::set_permissions(&file, fs::Permissions::from_mode(0o600)).expect("chmod");
        let s = KeyStore::open(&dir.path().join("pki"), false, Some(&file)).expect("open");
        assert!(matches!(s.sign_in("web7", pem(0)), Ok(SignIn::Accepted(_))));
        assert!(matches!(s.sign_in("db3", pem(0)), Ok(SignIn::Accepted(_))));
        assert!(matches!(s.sign_in("dbx", pem(0)), Ok(SignIn::Pending)));
        assert!(matches!(s.sign_in("#comment", pem(0)), Ok(SignIn::Pending)));
        // A pending id added to the file later is accepted on its next sign-in.
        fs::write(&file, "dbx\n").expect("write");
        assert!(matches!(s.sign_in("dbx", pem(0)), Ok(SignIn::Accepted(_))));
        // A world-writable autosign file is ignored.
        fs::set_permissions(&file, fs::Permissions::from_mode(0o666)).expect("chmod");
        fs::write(&file, "*\n").expect("write");
        assert!(matches!(s.sign_in("other", pem(0)), Ok(SignIn::Pending)));
    }

    #[test]
    fn accept_reject_delete_and_fingerprints() {
        let (_d, s) = store(false, None);
        for id in ["b", "a", "C", "d"] {
            s.sign_in(id, pem(0)).expect("sign");
        }
        assert_eq!(s.list().expect("l").minions_pre, vec!["a", "b", "C", "d"]);
        assert_eq!(s.reject("d", false, false).expect("r"), vec!["d"]);
        // accept without include_rejected leaves d alone.
        assert_eq!(s.accept("*", false, false).expect("a"), vec!["a", "b", "C"]);
        assert_eq!(s.accept("d", true, false).expect("a"), vec!["d"]);
        assert!(s.accept("zzz", true, true).expect("a").is_empty());
        s.sign_in("a", pem(1)).expect("denied");
        assert_eq!(
            s.matching("a", &KeyState::ALL).expect("m"),
            vec![
                (KeyState::Accepted, "a".to_string()),
                (KeyState::Denied, "a".to_string())
            ]
        );
        let f = s.fingerprints("a").expect("f");
        assert_eq!(f.len(), 2);
        assert_eq!(f[0].2, keys()[0].public().fingerprint());
        assert_eq!(f[1].2, keys()[1].public().fingerprint());
        assert_eq!(
            s.delete("a,b").expect("d"),
            vec![
                ("a".to_string(), KeyState::Accepted),
                ("b".to_string(), KeyState::Accepted),
                ("a".to_string(), KeyState::Denied)
            ]
        );
        let l = s.list().expect("l");
        assert_eq!(l.minions, vec!["C", "d"]);
        assert!(l.minions_denied.is_empty());
    }

    #[test]
    fn invalid_stored_key_is_not_accepted() {
        let (_d, s) = store(false, None);
        fs::write(s.pki_dir().join("minions_pre/bad"), "junk").expect("write");
        assert!(s.accept("bad", false, false).expect("acc").is_empty());
        assert_eq!(s.state("bad"), Some(KeyState::Pending));
        assert_eq!(s.fingerprints("bad").expect("f")[0].2, "invalid key");
    }

    #[test]
    fn fnmatch_like_python() {
        let yes = [
            ("*", ""),
            ("*", "abc"),
            ("a*c", "abbbc"),
            ("a?c", "abc"),
            ("[ab]x", "bx"),
            ("[a-c]x", "cx"),
            ("[!a]x", "bx"),
            ("[]]", "]"),
            ("[!]]", "a"),
            ("a[", "a["),
            ("web*.example.*", "web1.example.com"),
            ("*a*a*b", "aaaaaaab"),
        ];
        for (p, n) in yes {
            assert!(fnmatch(p, n), "{p} ~ {n}");
        }
        let no = [
            ("a", "A"),
            ("a?c", "ac"),
            ("[!a]x", "ax"),
            ("[a-c]x", "dx"),
            ("abc", "abcd"),
            ("*a*a*b", "aaaaaaaa"),
            ("", "a"),
        ];
        for (p, n) in no {
            assert!(!fnmatch(p, n), "{p} !~ {n}");
        }
        assert!(glob_matches("x,web*", "web2"));
        assert!(!glob_matches("x,y", "web2"));
        let long = "a".repeat(3000);
        assert!(!fnmatch(&format!("{}b", "*a".repeat(50)), &long));
    }
}
