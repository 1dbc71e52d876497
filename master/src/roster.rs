//! The roster: every minion this master can reach, with its grains, its
//! presence and the path to it (direct, or through which syndics).
//!
//! Direct minions are present while their heartbeats keep arriving (a
//! minion is "connected" if it was heard from within `3 × heartbeat`);
//! minions behind a syndic are present when that syndic says so and the
//! syndic itself is connected. The roster answers two questions exactly:
//! which minions a target expects (so `salt` can wait for precisely those
//! and name the ones that did not return) and which syndics need a job at
//! all (targeted fan-out). Every change bumps a version, so a syndic can
//! report its subtree upward as deltas.
//!
//! Beside the entries it keeps the pillars this master compiled (for
//! pillar targeting, `-I`/`I@`): in memory only (never in the snapshot, never
//! reported upward), dropped with the minion. A minion whose pillar is not
//! known here (not compiled yet, or behind a syndic, which never sees its
//! minions' pillars) *may* match a pillar term, so it is expected; its own
//! match decides whether it answers.

use crate::keys::KeyStore;
use brine_common::proto::{RosterDelta, RosterEntry};
use brine_common::sync::lock;
use brine_common::target::Target;
use serde::Serialize;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tracing::warn;

#[derive(Debug, Clone)]
struct Entry {
    grains: Value,
    /// Last time a direct minion was heard from.
    last_seen: Option<Instant>,
    /// Presence as reported by the syndic in front of it.
    reported_connected: bool,
    /// Syndics between us and the minion, nearest first; empty = direct.
    via: Vec<String>,
    /// Version at which this entry last changed (for deltas).
    version: u64,
    /// Version at which this id entered the roster: a report upward that
    /// covers this version has named it.
    added: u64,
    /// Presence as of the last sweep (to detect transitions).
    was_connected: bool,
}

#[derive(Debug, Clone, Default)]
struct SyndicInfo {
    last_seen: Option<Instant>,
    /// Whether the syndic has reported its subtree at least once; until
    /// then every job is sent to it (its subtree is unknown).
    roster_known: bool,
    minions: usize,
    /// Ids this syndic claims that belong to someone else: the owner and
    /// the entry as reported, at most [`MAX_CONFLICTS`]. Retried every
    /// second ([`Roster::retry_claims`]: the owner may go away, or the
    /// operator may delete a direct key) and gone once the syndic stops
    /// claiming the id (a syndic reports only changes, so it would not
    /// claim it again by itself).
    conflicts: BTreeMap<String, (String, RosterEntry)>,
    /// Claims refused since it was first seen.
    claims_refused: u64,
}

/// Conflicting claims remembered per syndic (the count goes on).
const MAX_CONFLICTS: usize = 1000;

/// Pillars kept for ids without a roster entry (yet), at most: a pillar
/// may be compiled before the minion's grains arrive. Beyond that a new
/// one is not kept (counted, logged); its minion then may match any
/// pillar term, which is safe.
pub const MAX_PENDING_PILLARS: usize = 10_000;

/// A pillar whose minion has no roster entry this long after it was set
/// is forgotten ([`Roster::sweep`]).
pub const PENDING_PILLAR_AGE: Duration = Duration::from_secs(600);

/// Why a syndic's roster report may not name an id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimRefused {
    /// Not a valid id (the key store's rules), or a syndic id on its path.
    InvalidId,
    /// The id of a syndic of this master.
    Syndic,
    /// A direct minion of this master (its key is accepted here).
    Direct,
    /// Behind another syndic that is connected.
    OtherSyndic(String),
}

impl ClaimRefused {
    /// Who holds the id, as `manage.list_syndics` shows it.
    fn owner(&self) -> String {
        match self {
            ClaimRefused::InvalidId => "invalid id".to_string(),
            ClaimRefused::Syndic => "syndic".to_string(),
            ClaimRefused::Direct => "direct".to_string(),
            ClaimRefused::OtherSyndic(o) => o.clone(),
        }
    }
}

/// What a roster report did.
#[derive(Debug, Default, PartialEq)]
pub struct ReportOutcome {
    /// Ids refused, with why.
    pub refused: Vec<(String, ClaimRefused)>,
    /// Ids taken over from a syndic that is gone (failover).
    pub moved: Vec<(String, String)>,
}

/// One expected minion of a job (on the client channel too).
pub use brine_common::proto::client::Expected;

/// A syndic as `manage.list_syndics` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct SyndicStatus {
    pub id: String,
    pub connected: bool,
    pub roster_known: bool,
    pub minions: usize,
    pub connected_minions: usize,
    /// Ids it claims that belong to someone else: id → owner (`direct`,
    /// `syndic`, another syndic's id, or `invalid id`).
    pub conflicts: BTreeMap<String, String>,
    pub claims_refused: u64,
}

/// A compiled pillar and when it was set (to forget one whose minion
/// never gets a roster entry).
#[derive(Debug, Clone)]
struct PillarSlot {
    pillar: Arc<Value>,
    set: Instant,
}

#[derive(Default)]
struct Inner {
    minions: HashMap<String, Entry>,
    syndics: BTreeMap<String, SyndicInfo>,
    /// Removed ids and the version of their removal.
    tombstones: Vec<(String, u64)>,
    version: u64,
    /// Compiled pillars by id. Beside `minions`, not in the entries: a
    /// pillar may arrive before its minion's entry, and a syndic's full
    /// report replaces entries without touching what was compiled here.
    pillars: HashMap<String, PillarSlot>,
    /// Pillars not kept because [`MAX_PENDING_PILLARS`] was reached.
    pillars_not_kept: u64,
}

impl Inner {
    /// Take `id` out of the roster at version `v` (its pillar goes too).
    fn drop_minion(&mut self, id: &str, v: u64) {
        if self.minions.remove(id).is_some() {
            self.tombstones.push((id.to_string(), v));
        }
        self.pillars.remove(id);
    }
}

pub struct Roster {
    inner: Mutex<Inner>,
    /// A direct peer is connected while heard from within this window.
    alive_window: Duration,
}

impl Roster {
    pub fn new(heartbeat_interval: Duration) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            alive_window: (heartbeat_interval * 3).max(Duration::from_secs(3)),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        lock(&self.inner)
    }

    fn alive(&self, seen: Option<Instant>) -> bool {
        seen.is_some_and(|t| t.elapsed() < self.alive_window)
    }

    fn entry_connected(&self, inner: &Inner, e: &Entry) -> bool {
        match e.via.first() {
            None => self.alive(e.last_seen),
            Some(s) => {
                e.reported_connected
                    && inner
                        .syndics
                        .get(s)
                        .is_some_and(|si| self.alive(si.last_seen))
            }
        }
    }

    fn expected_entry(&self, inner: &Inner, id: &str, e: &Entry) -> Expected {
        Expected {
            id: id.to_string(),
            connected: self.entry_connected(inner, e),
            via: e.via.clone(),
            syndic_connected: e
                .via
                .first()
                .and_then(|s| inner.syndics.get(s))
                .is_some_and(|si| self.alive(si.last_seen)),
        }
    }

    /// A direct minion signed in or sent grains.
    pub fn upsert_direct(&self, id: &str, grains: Value) {
        let mut g = self.lock();
        g.version += 1;
        let v = g.version;
        g.tombstones.retain(|(t, _)| t != id);
        let e = g.minions.entry(id.to_string()).or_insert(Entry {
            grains: Value::Null,
            last_seen: None,
            reported_connected: false,
            via: vec![],
            version: v,
            added: v,
            was_connected: false,
        });
        e.grains = grains;
        e.via.clear();
        e.last_seen = Some(Instant::now());
        e.version = v;
        e.was_connected = true;
    }

    /// Any sign of life from a direct peer (heartbeat, return).
    pub fn touch(&self, id: &str) -> bool {
        let mut g = self.lock();
        if let Some(s) = g.syndics.get_mut(id) {
            s.last_seen = Some(Instant::now());
            return true;
        }
        match g.minions.get_mut(id) {
            Some(e) if e.via.is_empty() => {
                e.last_seen = Some(Instant::now());
                true
            }
            _ => false,
        }
    }

    /// A syndic signed in.
    pub fn syndic_seen(&self, id: &str) {
        let mut g = self.lock();
        let s = g.syndics.entry(id.to_string()).or_default();
        s.last_seen = Some(Instant::now());
    }

    pub fn is_syndic(&self, id: &str) -> bool {
        self.lock().syndics.contains_key(id)
    }

    /// Apply a syndic's report of its subtree. An id moves to this syndic
    /// only when nobody else holds it: not when it is a direct minion of
    /// this master (`is_direct`: its key is accepted here), a syndic, or
    /// behind another syndic that is connected. Those claims are refused
    /// and kept as conflicts for `manage.list_syndics`; an id behind a
    /// syndic that is gone moves (failover) and is reported as moved.
    pub fn apply_syndic_delta(
        &self,
        syndic: &str,
        delta: &RosterDelta,
        is_direct: impl Fn(&str) -> bool,
    ) -> ReportOutcome {
        let mut out = ReportOutcome::default();
        let mut g = self.lock();
        g.version += 1;
        let v = g.version;
        if delta.full {
            let stale: Vec<String> = g
                .minions
                .iter()
                .filter(|(_, e)| e.via.first().map(String::as_str) == Some(syndic))
                .map(|(k, _)| k.clone())
                .collect();
            for k in stale {
                if !delta.upsert.iter().any(|u| u.id == k) {
                    g.drop_minion(&k, v);
                }
            }
        }
        for id in &delta.remove {
            let owned = g
                .minions
                .get(id)
                .is_some_and(|e| e.via.first().map(String::as_str) == Some(syndic));
            if owned {
                g.drop_minion(id, v);
            }
        }
        let mut refused_entries = Vec::new();
        for u in &delta.upsert {
            if let Err(why) = self.may_claim(&g, syndic, u, &is_direct) {
                out.refused.push((u.id.clone(), why));
                refused_entries.push(u.clone());
                continue;
            }
            if let Some(moved) = Self::insert_claim(&mut g, syndic, u, v) {
                out.moved.push((u.id.clone(), moved));
            }
        }
        Self::count_subtree(&mut g, syndic);
        let s = g.syndics.entry(syndic.to_string()).or_default();
        s.roster_known = true;
        s.last_seen = Some(Instant::now());
        // Conflicts last while the syndic keeps claiming the id.
        if delta.full {
            s.conflicts.clear();
        }
        for id in delta
            .remove
            .iter()
            .chain(delta.upsert.iter().map(|u| &u.id))
        {
            s.conflicts.remove(id);
        }
        s.claims_refused += out.refused.len() as u64;
        for ((id, why), entry) in out.refused.iter().zip(refused_entries) {
            if s.conflicts.len() < MAX_CONFLICTS {
                s.conflicts.insert(id.clone(), (why.owner(), entry));
            }
        }
        // Keep the tombstone list bounded.
        if g.tombstones.len() > 100_000 {
            g.tombstones.drain(..50_000);
        }
        out
    }

    /// Puts `u` in `syndic`'s subtree at version `v`; returns the syndic
    /// it was behind before, if another.
    fn insert_claim(g: &mut Inner, syndic: &str, u: &RosterEntry, v: u64) -> Option<String> {
        let moved = g
            .minions
            .get(&u.id)
            .and_then(|e| e.via.first())
            .filter(|old| *old != syndic)
            .cloned();
        let mut via = vec![syndic.to_string()];
        via.extend(u.via.iter().cloned());
        g.tombstones.retain(|(t, _)| t != &u.id);
        let added = g.minions.get(&u.id).map_or(v, |e| e.added);
        g.minions.insert(
            u.id.clone(),
            Entry {
                grains: u.grains.clone(),
                last_seen: None,
                reported_connected: u.connected,
                via,
                version: v,
                added,
                was_connected: u.connected,
            },
        );
        moved
    }

    fn count_subtree(g: &mut Inner, syndic: &str) {
        let count = g
            .minions
            .values()
            .filter(|e| e.via.first().map(String::as_str) == Some(syndic))
            .count();
        g.syndics.entry(syndic.to_string()).or_default().minions = count;
    }

    /// Claims refused earlier whose owner has gone meanwhile (its syndic
    /// is down, its direct key deleted) move to the connected syndic that
    /// claims them. Returns (id, new syndic, old syndic if any).
    pub fn retry_claims(
        &self,
        is_direct: impl Fn(&str) -> bool,
    ) -> Vec<(String, String, Option<String>)> {
        let mut g = self.lock();
        let pending: Vec<(String, RosterEntry)> = g
            .syndics
            .iter()
            .filter(|(_, si)| !si.conflicts.is_empty() && self.alive(si.last_seen))
            .flat_map(|(s, si)| si.conflicts.values().map(|(_, e)| (s.clone(), e.clone())))
            .collect();
        let mut granted = Vec::new();
        for (syndic, entry) in pending {
            if self.may_claim(&g, &syndic, &entry, &is_direct).is_err() {
                continue;
            }
            g.version += 1;
            let v = g.version;
            let before = Self::insert_claim(&mut g, &syndic, &entry, v);
            if let Some(old) = &before {
                Self::count_subtree(&mut g, old);
            }
            Self::count_subtree(&mut g, &syndic);
            if let Some(si) = g.syndics.get_mut(&syndic) {
                si.conflicts.remove(&entry.id);
            }
            granted.push((entry.id.clone(), syndic, before));
        }
        granted
    }

    /// Whether `syndic` may name `u` in its subtree (see
    /// [`Roster::apply_syndic_delta`]).
    fn may_claim(
        &self,
        g: &Inner,
        syndic: &str,
        u: &RosterEntry,
        is_direct: &impl Fn(&str) -> bool,
    ) -> Result<(), ClaimRefused> {
        if !KeyStore::valid_id(&u.id) || !u.via.iter().all(|s| KeyStore::valid_id(s)) {
            return Err(ClaimRefused::InvalidId);
        }
        if u.id == syndic || g.syndics.contains_key(&u.id) {
            return Err(ClaimRefused::Syndic);
        }
        match g.minions.get(&u.id).map(|e| e.via.first()) {
            // Already ours: nothing to decide.
            Some(Some(s)) if s == syndic => Ok(()),
            Some(None) => Err(ClaimRefused::Direct),
            Some(Some(other)) => {
                let alive = g
                    .syndics
                    .get(other)
                    .is_some_and(|si| self.alive(si.last_seen));
                if alive {
                    Err(ClaimRefused::OtherSyndic(other.clone()))
                } else if is_direct(&u.id) {
                    Err(ClaimRefused::Direct)
                } else {
                    Ok(())
                }
            }
            None if is_direct(&u.id) => Err(ClaimRefused::Direct),
            None => Ok(()),
        }
    }

    /// Forget a minion or a syndic (its key was deleted), with its pillar.
    /// A syndic's whole subtree goes with it: nothing can reach those
    /// minions any more, so no job may expect them.
    pub fn remove(&self, id: &str) {
        let mut g = self.lock();
        g.version += 1;
        let v = g.version;
        g.drop_minion(id, v);
        if g.syndics.remove(id).is_some() {
            let subtree: Vec<String> = g
                .minions
                .iter()
                .filter(|(_, e)| e.via.first().map(String::as_str) == Some(id))
                .map(|(k, _)| k.clone())
                .collect();
            for k in subtree {
                g.drop_minion(&k, v);
            }
        }
    }

    /// Keep the pillar this master compiled for minion `id` (replacing the
    /// one before), for pillar targeting. `id` need not have an entry yet;
    /// such pending pillars are bounded ([`MAX_PENDING_PILLARS`]) and
    /// forgotten after [`PENDING_PILLAR_AGE`] if the entry never comes.
    pub fn set_pillar(&self, id: &str, pillar: Arc<Value>) {
        let mut g = self.lock();
        let pending = !g.minions.contains_key(id) && !g.pillars.contains_key(id);
        if pending && g.pillars.len() >= g.minions.len() + MAX_PENDING_PILLARS {
            g.pillars_not_kept += 1;
            let n = g.pillars_not_kept;
            drop(g);
            if n.is_power_of_two() {
                warn!(minion = %id.escape_debug(), count = n, max = MAX_PENDING_PILLARS, "pillar not kept for targeting: too many pillars of minions not in the roster (it may match any pillar target)");
            }
            return;
        }
        g.pillars.insert(
            id.to_string(),
            PillarSlot {
                pillar,
                set: Instant::now(),
            },
        );
    }

    /// Up to `max` minions without a compiled pillar here, with their
    /// grains (for [`crate::pillar::fill_missing`]).
    pub fn without_pillar(&self, max: usize) -> Vec<(String, Value)> {
        let g = self.lock();
        g.minions
            .iter()
            .filter(|(id, _)| !g.pillars.contains_key(*id))
            .take(max)
            .map(|(id, e)| (id.clone(), e.grains.clone()))
            .collect()
    }

    /// The pillar this master compiled for `id`, if it has one.
    pub fn pillar(&self, id: &str) -> Option<Arc<Value>> {
        self.lock().pillars.get(id).map(|p| p.pillar.clone())
    }

    /// Pillars not kept because too many were pending (see
    /// [`Roster::set_pillar`]).
    pub fn pillars_not_kept(&self) -> u64 {
        self.lock().pillars_not_kept
    }

    /// Forget the pillars set before `now - PENDING_PILLAR_AGE` whose
    /// minion has no roster entry.
    fn prune_pending_pillars(g: &mut Inner, now: Instant) {
        let Inner {
            pillars, minions, ..
        } = g;
        pillars.retain(|id, slot| {
            minions.contains_key(id) || now.saturating_duration_since(slot.set) < PENDING_PILLAR_AGE
        });
    }

    /// Is `id` a minion behind `syndic` (so the syndic may return for it)?
    pub fn behind(&self, id: &str, syndic: &str) -> bool {
        self.lock()
            .minions
            .get(id)
            .is_some_and(|e| e.via.first().map(String::as_str) == Some(syndic))
    }

    /// The exact expected set of a target, sorted by id. Pillar terms are
    /// matched against the pillar compiled here; a minion whose pillar is
    /// not known here (not compiled yet, or behind a syndic, which never
    /// sees its minions' pillars) is expected when it *may* match (the
    /// rest of the target does not rule it out, see
    /// [`Target::matches_with`]): only the minion can tell, and a job it
    /// does not match it does not answer. Salt's greedy matching keeps
    /// minions without cached data in the same way.
    pub fn expected(&self, target: &Target, delimiter: &str) -> Vec<Expected> {
        let g = self.lock();
        let use_pillar = target.uses_pillar();
        let mut out: Vec<Expected> = g
            .minions
            .iter()
            .filter(|(id, e)| {
                let pillar = if use_pillar {
                    g.pillars.get(id.as_str()).map(|p| &*p.pillar)
                } else {
                    None
                };
                target.matches_with(id, &e.grains, pillar, delimiter)
            })
            .map(|(id, e)| self.expected_entry(&g, id, e))
            .collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }

    /// Syndics whose roster is not known yet (they get every job).
    pub fn unknown_syndics(&self) -> Vec<String> {
        self.lock()
            .syndics
            .iter()
            .filter(|(_, s)| !s.roster_known)
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Presence of every minion: (id, connected, via).
    pub fn presence(&self) -> Vec<Expected> {
        let g = self.lock();
        let mut out: Vec<Expected> = g
            .minions
            .iter()
            .map(|(id, e)| self.expected_entry(&g, id, e))
            .collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }

    /// Whether a job's target reaches `id` as the roster knows it (its
    /// grains; an id it does not know is matched on the id alone), and,
    /// for a job that came up from a syndic, whether `id` is behind it.
    /// Pillar terms are never held against a return, not even with the
    /// pillar compiled here: the minion matched with the pillar it holds,
    /// which may be older than this master's (a pillar compiled for
    /// `pillar.items` or a refresh racing the publish), and its match is
    /// authoritative; so they count as may-match ([`JobScope::reaches`]).
    /// One lock, no copy of the grains (it runs for every return).
    ///
    /// [`JobScope::reaches`]: crate::published::JobScope::reaches
    pub fn reached_by(&self, id: &str, scope: &crate::published::JobScope) -> bool {
        let g = self.lock();
        let entry = g.minions.get(id);
        let in_subtree = scope
            .origin()
            .is_none_or(|s| entry.is_some_and(|e| e.via.first().map(String::as_str) == Some(s)));
        in_subtree && scope.reaches(id, entry.map_or(&Value::Null, |e| &e.grains))
    }

    pub fn grains(&self, id: &str) -> Option<Value> {
        self.lock().minions.get(id).map(|e| e.grains.clone())
    }

    pub fn syndics(&self) -> Vec<SyndicStatus> {
        let g = self.lock();
        g.syndics
            .iter()
            .map(|(id, s)| SyndicStatus {
                id: id.clone(),
                connected: self.alive(s.last_seen),
                roster_known: s.roster_known,
                minions: s.minions,
                connected_minions: g
                    .minions
                    .values()
                    .filter(|e| e.via.first() == Some(id) && self.entry_connected(&g, e))
                    .count(),
                conflicts: s
                    .conflicts
                    .iter()
                    .map(|(id, (owner, _))| (id.clone(), owner.clone()))
                    .collect(),
                claims_refused: s.claims_refused,
            })
            .collect()
    }

    /// Record presence transitions (call every second or so) so that
    /// deltas carry them, and forget pending pillars whose minion never
    /// got an entry.
    pub fn sweep(&self) {
        self.sweep_at(Instant::now());
    }

    fn sweep_at(&self, now: Instant) {
        let mut g = self.lock();
        Self::prune_pending_pillars(&mut g, now);
        let mut changed = Vec::new();
        for (id, e) in g.minions.iter() {
            let now = self.entry_connected(&g, e);
            if now != e.was_connected {
                changed.push((id.clone(), now));
            }
        }
        if changed.is_empty() {
            return;
        }
        g.version += 1;
        let v = g.version;
        for (id, now) in changed {
            if let Some(e) = g.minions.get_mut(&id) {
                e.was_connected = now;
                e.version = v;
            }
        }
    }

    pub fn version(&self) -> u64 {
        self.lock().version
    }

    /// Everything that changed after `since` (all of it when `since` is 0),
    /// as seen from above: each entry carries its own presence.
    pub fn delta_since(&self, since: u64) -> (RosterDelta, u64) {
        let g = self.lock();
        let upsert = g
            .minions
            .iter()
            .filter(|(_, e)| e.version > since)
            .map(|(id, e)| RosterEntry {
                id: id.clone(),
                grains: e.grains.clone(),
                connected: self.entry_connected(&g, e),
                via: e.via.clone(),
            })
            .collect();
        let remove = if since == 0 {
            vec![]
        } else {
            g.tombstones
                .iter()
                .filter(|(_, v)| *v > since)
                .map(|(id, _)| id.clone())
                .collect()
        };
        (
            RosterDelta {
                full: since == 0,
                upsert,
                remove,
            },
            g.version,
        )
    }

    /// Snapshot for persistence: id → (grains, via). Pillars are not in
    /// it: they are secrets, and compiled again when minions come back.
    pub fn snapshot(&self) -> BTreeMap<String, (Value, Vec<String>)> {
        self.lock()
            .minions
            .iter()
            .map(|(k, e)| (k.clone(), (e.grains.clone(), e.via.clone())))
            .collect()
    }

    /// Restore a snapshot at start: everyone is known but not connected.
    pub fn restore(&self, snap: BTreeMap<String, (Value, Vec<String>)>) {
        let mut g = self.lock();
        g.version += 1;
        let v = g.version;
        for (id, (grains, via)) in snap {
            if let Some(s) = via.first() {
                g.syndics.entry(s.clone()).or_default();
            }
            g.minions.insert(
                id,
                Entry {
                    grains,
                    last_seen: None,
                    reported_connected: false,
                    via,
                    version: v,
                    added: v,
                    was_connected: false,
                },
            );
        }
    }

    /// How many of `ids` no roster report covering `version` has named
    /// (they entered the roster after it). An id not in the roster at all
    /// counts as named: no report will name it, so waiting would not help.
    pub fn unreported<'a>(&self, ids: impl IntoIterator<Item = &'a str>, version: u64) -> usize {
        let g = self.lock();
        ids.into_iter()
            .filter(|id| g.minions.get(*id).is_some_and(|e| e.added > version))
            .count()
    }

    /// How many of `ids` are not in the roster at all.
    pub fn unknown<'a>(&self, ids: impl IntoIterator<Item = &'a str>) -> usize {
        let g = self.lock();
        ids.into_iter()
            .filter(|id| !g.minions.contains_key(*id))
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::published::JobScope;
    use brine_common::proto::{JobLoad, TargetType};
    use brine_common::target;
    use serde_json::json;

    fn entry(id: &str, grains: Value, connected: bool, via: &[&str]) -> RosterEntry {
        RosterEntry {
            id: id.into(),
            grains,
            connected,
            via: via.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn full(upsert: Vec<RosterEntry>) -> RosterDelta {
        RosterDelta {
            full: true,
            upsert,
            remove: vec![],
        }
    }

    fn ids(v: &[Expected]) -> Vec<&str> {
        v.iter().map(|e| e.id.as_str()).collect()
    }

    fn expect(r: &Roster, tgt: &str, tt: TargetType) -> Vec<Expected> {
        let t = target::parse(tgt, tt, &BTreeMap::new()).expect("target");
        r.expected(&t, ":")
    }

    /// top ← s1 (a, b behind s1; c behind s1 → s1b) and one direct minion.
    fn sample() -> Roster {
        let r = Roster::new(Duration::from_secs(60));
        r.upsert_direct("d1", json!({"role": "db"}));
        r.syndic_seen("s1");
        r.apply_syndic_delta(
            "s1",
            &full(vec![
                entry("a", json!({"role": "web"}), true, &[]),
                entry("b", json!({"role": "db"}), false, &[]),
                entry("c", json!({"role": "web"}), true, &["s1b"]),
            ]),
            |_| false,
        );
        r
    }

    fn pil(v: Value) -> Arc<Value> {
        Arc::new(v)
    }

    fn expect_delim(r: &Roster, tgt: &str, tt: TargetType, delim: &str) -> Vec<Expected> {
        let t = target::parse_with_delimiter(tgt, tt, &BTreeMap::new(), delim).expect("target");
        r.expected(&t, delim)
    }

    #[test]
    fn pillars_are_kept_beside_entries_even_before_them() {
        let r = Roster::new(Duration::from_secs(60));
        assert!(r.pillar("w1").is_none());
        // Compiled before the minion's grains arrived.
        r.set_pillar("w1", pil(json!({"role": "web"})));
        assert_eq!(r.pillar("w1").as_deref(), Some(&json!({"role": "web"})));
        r.upsert_direct("w1", json!({"os": "Debian"}));
        assert_eq!(r.pillar("w1").as_deref(), Some(&json!({"role": "web"})));
        // A refresh replaces it; grains changes do not touch it.
        r.set_pillar("w1", pil(json!({"role": "db"})));
        r.upsert_direct("w1", json!({"os": "Arch"}));
        assert_eq!(r.pillar("w1").as_deref(), Some(&json!({"role": "db"})));
        // Not a roster change: nothing to report upward.
        let v = r.version();
        r.set_pillar("w1", pil(json!({"role": "web"})));
        assert_eq!(r.version(), v);
    }

    #[test]
    fn pillar_targets_are_exact_where_the_pillar_is_known() {
        let r = Roster::new(Duration::from_secs(60));
        for (id, os) in [
            ("w1", "Debian"),
            ("w2", "Debian"),
            ("d1", "Arch"),
            ("new", "Arch"),
        ] {
            r.upsert_direct(id, json!({ "os": os }));
        }
        r.set_pillar("w1", pil(json!({"role": "web", "env": "prod"})));
        r.set_pillar("w2", pil(json!({"role": "web", "env": "dev"})));
        r.set_pillar("d1", pil(json!({"role": "db", "env": "prod"})));
        // "new" has no pillar compiled yet: it may match, so it is expected.
        assert_eq!(
            ids(&expect(&r, "role:web", TargetType::Pillar)),
            ["new", "w1", "w2"]
        );
        assert_eq!(
            ids(&expect(&r, "env:pr.*", TargetType::PillarPcre)),
            ["d1", "new", "w1"]
        );
        assert_eq!(
            ids(&expect(
                &r,
                "I@role:web and not J@env:pr.*",
                TargetType::Compound
            )),
            ["new", "w2"]
        );
        // The rest of the target rules out even a minion of unknown pillar.
        assert_eq!(
            ids(&expect(
                &r,
                "G@os:Debian and I@role:web",
                TargetType::Compound
            )),
            ["w1", "w2"]
        );
        assert_eq!(
            ids(&expect(
                &r,
                "G@os:Arch and I@role:web",
                TargetType::Compound
            )),
            ["new"]
        );
        assert!(expect(&r, "role:cache", TargetType::Pillar)
            .iter()
            .all(|e| e.id == "new"));
        // The job's delimiter applies to the pillar too.
        assert_eq!(
            ids(&expect_delim(&r, "env.dev", TargetType::Pillar, ".")),
            ["new", "w2"]
        );
        // A grain target never looks at the pillar.
        assert!(expect(&r, "role:web", TargetType::Grain).is_empty());
        r.set_pillar("new", pil(json!({"role": "db"})));
        assert_eq!(
            ids(&expect(&r, "role:web", TargetType::Pillar)),
            ["w1", "w2"]
        );
    }

    #[test]
    fn pillars_go_with_their_minion() {
        let r = sample();
        for id in ["d1", "a", "b", "c", "pending"] {
            r.set_pillar(id, pil(json!({"role": "web"})));
        }
        // Key deleted (direct minion, or one not in the roster yet).
        r.remove("d1");
        r.remove("pending");
        assert!(r.pillar("d1").is_none() && r.pillar("pending").is_none());
        // Removed by its syndic's delta.
        r.apply_syndic_delta(
            "s1",
            &RosterDelta {
                full: false,
                upsert: vec![],
                remove: vec!["a".into()],
            },
            |_| false,
        );
        assert!(r.pillar("a").is_none());
        // Left out of a full report; kept while still reported.
        r.apply_syndic_delta("s1", &full(vec![entry("c", json!({}), true, &[])]), |_| {
            false
        });
        assert!(r.pillar("b").is_none());
        assert_eq!(r.pillar("c").as_deref(), Some(&json!({"role": "web"})));
        // Another syndic cannot drop s1's minion's pillar.
        r.syndic_seen("s2");
        r.apply_syndic_delta(
            "s2",
            &RosterDelta {
                full: false,
                upsert: vec![],
                remove: vec!["c".into()],
            },
            |_| false,
        );
        assert!(r.pillar("c").is_some());
        // The syndic goes: its whole subtree's pillars go.
        r.remove("s1");
        assert!(r.pillar("c").is_none());
    }

    #[test]
    fn pillars_are_not_in_the_snapshot() {
        let r = sample();
        r.set_pillar("a", pil(json!({"secret": "s3cr3t"})));
        let snap = r.snapshot();
        let text = serde_json::to_string(&snap).expect("json");
        assert!(!text.contains("s3cr3t"), "{text}");
        let fresh = Roster::new(Duration::from_secs(60));
        fresh.restore(snap);
        assert!(fresh.pillar("a").is_none());
        // Until compiled again, "a" may match any pillar target.
        assert_eq!(
            ids(&expect(&fresh, "secret:nope", TargetType::Pillar)),
            ["a", "b", "c", "d1"]
        );
    }

    #[test]
    fn pending_pillars_are_forgotten_once_old_and_bounded() {
        let r = Roster::new(Duration::from_secs(60));
        r.upsert_direct("known", json!({}));
        r.set_pillar("known", pil(json!({"k": 1})));
        r.set_pillar("pending", pil(json!({"k": 2})));
        let now = Instant::now();
        r.sweep_at(now);
        assert!(r.pillar("pending").is_some(), "young: kept");
        r.sweep_at(now + PENDING_PILLAR_AGE + Duration::from_secs(1));
        assert!(r.pillar("pending").is_none(), "old and never in the roster");
        assert!(r.pillar("known").is_some(), "its minion is in the roster");
        // At most MAX_PENDING_PILLARS pillars of ids without an entry.
        for i in 0..MAX_PENDING_PILLARS {
            r.set_pillar(&format!("p{i}"), pil(Value::Null));
        }
        assert_eq!(r.pillars_not_kept(), 0);
        r.set_pillar("one-too-many", pil(Value::Null));
        assert!(r.pillar("one-too-many").is_none());
        assert_eq!(r.pillars_not_kept(), 1);
        // Replacing a kept one, or a minion with an entry, still works.
        r.set_pillar("p0", pil(json!({"k": 3})));
        assert_eq!(r.pillar("p0").as_deref(), Some(&json!({"k": 3})));
        r.upsert_direct("late", json!({}));
        r.set_pillar("late", pil(json!({"k": 4})));
        assert!(r.pillar("late").is_some());
        assert_eq!(r.pillars_not_kept(), 1);
    }

    #[test]
    fn a_known_pillar_never_refuses_a_return() {
        let r = sample();
        r.set_pillar("a", pil(json!({"role": "db"})));
        let load = JobLoad {
            jid: brine_common::jid::Jid::parse("20261202000000000001").expect("jid"),
            tgt: "I@role:web and G@role:web".into(),
            tgt_type: TargetType::Compound,
            fun: "test.ping".into(),
            arg: vec![],
            kwarg: Default::default(),
            user: "root".into(),
            timeout: 5,
            delimiter: ":".into(),
            path: vec![],
            trace: None,
        };
        let scope = JobScope::of(&load, &BTreeMap::new()).expect("scope");
        // The master's pillar for "a" says no, but "a" matched with its own.
        assert!(r.reached_by("a", &scope));
        // Grains still decide: b and d1 are role db.
        assert!(!r.reached_by("b", &scope) && !r.reached_by("d1", &scope));
        assert!(r.reached_by("c", &scope));
    }

    #[test]
    fn a_syndic_without_pillars_expects_every_possible_match() {
        // The top compiled the pillars of the minions behind s1; s1 has
        // none of them, as a syndic never sees its minions' pillars.
        let top = sample();
        top.set_pillar("a", pil(json!({"role": "web"})));
        top.set_pillar("b", pil(json!({"role": "db"})));
        top.set_pillar("c", pil(json!({"role": "db"})));
        top.set_pillar("d1", pil(json!({"role": "db"})));
        let t =
            target::parse("I@role:web", TargetType::Compound, &BTreeMap::new()).expect("target");
        assert_eq!(ids(&top.expected(&t, ":")), ["a"], "exact at the top");
        let s1 = Roster::new(Duration::from_secs(60));
        s1.upsert_direct("a", json!({"role": "web"}));
        s1.upsert_direct("b", json!({"role": "db"}));
        s1.syndic_seen("s1b");
        s1.apply_syndic_delta(
            "s1b",
            &full(vec![entry("c", json!({"role": "web"}), true, &[])]),
            |_| false,
        );
        assert_eq!(
            ids(&s1.expected(&t, ":")),
            ["a", "b", "c"],
            "may match below"
        );
        let g = target::parse(
            "G@role:web and I@x:y",
            TargetType::Compound,
            &BTreeMap::new(),
        )
        .expect("target");
        assert_eq!(ids(&s1.expected(&g, ":")), ["a", "c"]);
    }

    #[test]
    fn a_roster_report_cannot_take_over_an_id() {
        let r = Roster::new(Duration::from_secs(5));
        r.upsert_direct("d1", json!({}));
        r.syndic_seen("s1");
        r.syndic_seen("s2");
        let none = |_: &str| false;
        let out = r.apply_syndic_delta(
            "s1",
            &full(vec![
                entry("a", json!({}), true, &[]),
                entry("b", json!({}), true, &[]),
            ]),
            none,
        );
        assert!(out.refused.is_empty());
        // s2 claims a direct minion, s1's minion, a syndic, an id with a
        // zero-width space, one the key store accepted here, and a new one.
        let out = r.apply_syndic_delta(
            "s2",
            &full(vec![
                entry("d1", json!({}), true, &[]),
                entry("a", json!({}), true, &[]),
                entry("s1", json!({}), true, &[]),
                entry("x\u{200b}", json!({}), true, &[]),
                entry("keyed", json!({}), true, &[]),
                entry("c", json!({}), true, &[]),
            ]),
            |id| id == "keyed",
        );
        let refused: Vec<(&str, ClaimRefused)> = out
            .refused
            .iter()
            .map(|(i, w)| (i.as_str(), w.clone()))
            .collect();
        assert_eq!(
            refused,
            vec![
                ("d1", ClaimRefused::Direct),
                ("a", ClaimRefused::OtherSyndic("s1".into())),
                ("s1", ClaimRefused::Syndic),
                ("x\u{200b}", ClaimRefused::InvalidId),
                ("keyed", ClaimRefused::Direct),
            ]
        );
        assert!(r.behind("a", "s1") && r.behind("c", "s2"));
        assert!(!r.behind("d1", "s2"));
        let s2 = r.syndics().into_iter().find(|s| s.id == "s2").expect("s2");
        assert_eq!(s2.claims_refused, 5);
        assert_eq!(s2.conflicts.get("a").map(String::as_str), Some("s1"));
        assert_eq!(s2.conflicts.get("d1").map(String::as_str), Some("direct"));
        // It stops claiming them: the conflicts go, the count stays.
        r.apply_syndic_delta("s2", &full(vec![entry("c", json!({}), true, &[])]), none);
        let s2 = r.syndics().into_iter().find(|s| s.id == "s2").expect("s2");
        assert!(s2.conflicts.is_empty());
        assert_eq!(s2.claims_refused, 5);
    }

    #[test]
    fn minions_of_a_syndic_that_is_gone_may_move() {
        let r = Roster::new(Duration::from_millis(1));
        r.syndic_seen("s1");
        r.apply_syndic_delta("s1", &full(vec![entry("a", json!({}), true, &[])]), |_| {
            false
        });
        // s1 stops being heard from (alive window 3 s at least): simulate by
        // a roster whose window has passed.
        {
            let mut g = r.lock();
            if let Some(s) = g.syndics.get_mut("s1") {
                s.last_seen = Instant::now().checked_sub(Duration::from_secs(60));
            }
        }
        r.syndic_seen("s2");
        let out = r.apply_syndic_delta("s2", &full(vec![entry("a", json!({}), true, &[])]), |_| {
            false
        });
        assert!(out.refused.is_empty());
        assert_eq!(out.moved, vec![("a".to_string(), "s1".to_string())]);
        assert!(r.behind("a", "s2"));
    }

    #[test]
    fn a_refused_claim_is_granted_once_its_owner_is_gone() {
        let r = Roster::new(Duration::from_millis(1));
        r.syndic_seen("s1");
        r.apply_syndic_delta("s1", &full(vec![entry("a", json!({}), true, &[])]), |_| {
            false
        });
        r.syndic_seen("s2");
        // s1 is connected: s2's claim is refused, and s2 will not send it
        // again (it reports only changes).
        let out = r.apply_syndic_delta("s2", &full(vec![entry("a", json!({}), true, &[])]), |_| {
            false
        });
        assert_eq!(out.refused.len(), 1);
        assert!(r.retry_claims(|_| false).is_empty(), "s1 still holds it");
        {
            let mut g = r.lock();
            if let Some(s) = g.syndics.get_mut("s1") {
                s.last_seen = Instant::now().checked_sub(Duration::from_secs(60));
            }
        }
        r.syndic_seen("s2");
        assert_eq!(
            r.retry_claims(|_| false),
            vec![("a".to_string(), "s2".to_string(), Some("s1".to_string()))]
        );
        assert!(r.behind("a", "s2"));
        let s2 = r.syndics().into_iter().find(|s| s.id == "s2").expect("s2");
        assert!(s2.conflicts.is_empty());
        assert_eq!(s2.minions, 1);
    }

    #[test]
    fn unreported_tells_which_minions_no_report_has_named() {
        let r = Roster::new(Duration::from_secs(5));
        r.upsert_direct("old", json!({}));
        let (_, v1) = r.delta_since(0);
        r.upsert_direct("new", json!({}));
        assert_eq!(r.unreported(["old"], v1), 0);
        assert_eq!(r.unreported(["new"], v1), 1, "joined after the report");
        // Grains or presence changes later do not make it new again.
        r.upsert_direct("old", json!({"role": "web"}));
        assert_eq!(r.unreported(["old"], v1), 0);
        let (_, v2) = r.delta_since(v1);
        assert_eq!(r.unreported(["new"], v2), 0);
        // Same for minions reported by a syndic below.
        r.apply_syndic_delta(
            "s1",
            &RosterDelta {
                full: false,
                upsert: vec![entry("deep", json!({}), true, &[])],
                remove: vec![],
            },
            |_| false,
        );
        let v3 = r.version();
        r.apply_syndic_delta(
            "s1",
            &RosterDelta {
                full: false,
                upsert: vec![entry("deep", json!({"x": 1}), true, &[])],
                remove: vec![],
            },
            |_| false,
        );
        assert_eq!(r.unreported(["deep"], v3), 0);
        assert_eq!(r.unreported(["deep"], v2), 1);
        // An id nobody reported: waiting would not help.
        assert_eq!(r.unreported(["stranger"], 0), 0);
        assert_eq!(r.unreported(["old", "new", "deep", "stranger"], v2), 1);
    }

    #[test]
    fn expected_sets_carry_presence_and_path() {
        let r = sample();
        let all = expect(&r, "*", TargetType::Glob);
        assert_eq!(ids(&all), ["a", "b", "c", "d1"]);
        let c = &all[2];
        assert_eq!(c.via, ["s1", "s1b"], "nearest syndic first");
        assert!(c.connected);
        assert!(!all[1].connected, "b is reported down by s1");
        assert!(all[1].syndic_connected, "while s1 itself is up");
        assert!(all[3].connected && all[3].via.is_empty());
        let web = expect(&r, "role:web", TargetType::Grain);
        assert_eq!(ids(&web), ["a", "c"]);
        assert!(r.behind("c", "s1") && r.behind("a", "s1"));
        assert!(!r.behind("d1", "s1") && !r.behind("c", "s1b"));
        let st = r.syndics();
        assert_eq!(st.len(), 1);
        assert_eq!(
            (st[0].minions, st[0].connected_minions, st[0].roster_known),
            (3, 2, true)
        );
    }

    #[test]
    fn deltas_replace_remove_and_stay_scoped_to_their_syndic() {
        let r = sample();
        r.syndic_seen("s2");
        assert_eq!(r.unknown_syndics(), ["s2"], "s2 has not reported yet");
        // s2 may not remove s1's minion; s1 may.
        r.apply_syndic_delta(
            "s2",
            &RosterDelta {
                full: false,
                upsert: vec![entry("z", json!({}), true, &[])],
                remove: vec!["a".into()],
            },
            |_| false,
        );
        assert!(r.behind("a", "s1") && r.behind("z", "s2"));
        assert!(r.unknown_syndics().is_empty());
        r.apply_syndic_delta(
            "s1",
            &RosterDelta {
                full: false,
                upsert: vec![],
                remove: vec!["a".into()],
            },
            |_| false,
        );
        assert!(!r.behind("a", "s1"));
        // A full report replaces everything s1 had, and only that.
        r.apply_syndic_delta("s1", &full(vec![entry("n", json!({}), true, &[])]), |_| {
            false
        });
        assert_eq!(ids(&expect(&r, "*", TargetType::Glob)), ["d1", "n", "z"]);
    }

    #[test]
    fn delta_since_reports_changes_and_removals_only() {
        let r = Roster::new(Duration::from_secs(60));
        r.upsert_direct("m1", json!({}));
        r.upsert_direct("m2", json!({}));
        let (d, v1) = r.delta_since(0);
        assert!(d.full && d.remove.is_empty());
        assert_eq!(d.upsert.len(), 2);
        assert!(d.upsert.iter().all(|e| e.connected && e.via.is_empty()));
        r.upsert_direct("m2", json!({"changed": true}));
        r.remove("m1");
        let (d, v2) = r.delta_since(v1);
        assert!(!d.full && v2 > v1);
        assert_eq!(d.upsert.len(), 1);
        assert_eq!(d.upsert[0].id, "m2");
        assert_eq!(d.remove, ["m1"]);
        let (d, v3) = r.delta_since(v2);
        assert!(d.upsert.is_empty() && d.remove.is_empty() && v3 == v2);
    }

    #[test]
    fn nested_subtrees_are_reported_with_their_path() {
        // A mid-tier syndic reports what its own syndic reported to it.
        let mid = Roster::new(Duration::from_secs(60));
        mid.syndic_seen("leaf");
        mid.apply_syndic_delta(
            "leaf",
            &full(vec![entry("x", json!({}), true, &[])]),
            |_| false,
        );
        let (d, _) = mid.delta_since(0);
        assert_eq!(d.upsert.len(), 1);
        assert_eq!(d.upsert[0].via, ["leaf"]);
        assert!(d.upsert[0].connected);
        let top = Roster::new(Duration::from_secs(60));
        top.syndic_seen("mid");
        top.apply_syndic_delta("mid", &d, |_| false);
        let all = expect(&top, "x", TargetType::Glob);
        assert_eq!(all[0].via, ["mid", "leaf"]);
        assert!(top.behind("x", "mid"));
    }

    #[test]
    fn removing_a_syndic_forgets_its_subtree() {
        let r = sample();
        let (_, v) = r.delta_since(0);
        r.remove("s1");
        assert_eq!(ids(&expect(&r, "*", TargetType::Glob)), ["d1"]);
        assert!(!r.behind("a", "s1"));
        assert!(r.syndics().is_empty());
        let (d, _) = r.delta_since(v);
        let mut gone = d.remove.clone();
        gone.sort();
        assert_eq!(gone, ["a", "b", "c"], "the removal goes up as a delta");
    }

    #[test]
    fn restored_snapshot_is_known_but_down() {
        let r = sample();
        let snap = r.snapshot();
        let fresh = Roster::new(Duration::from_secs(60));
        fresh.restore(snap);
        let all = expect(&fresh, "*", TargetType::Glob);
        assert_eq!(ids(&all), ["a", "b", "c", "d1"]);
        assert!(all.iter().all(|e| !e.connected && !e.syndic_connected));
        assert!(fresh.behind("a", "s1"));
        assert_eq!(fresh.unknown_syndics(), ["s1"]);
    }
}
