//! Turning stored profile bytes into a queryable [`Prepared`] profile: decode, symbolize
//! (symbol store first, then binaries and debug files under the `--debug-dir`
//! directories, when build ids match; nothing else on the server's disk is read), analyze,
//! index.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Instant;

use prof_analysis::tree::{ProfileIndex, TIERS};
use prof_analysis::{Summary, Symbolizer, Tier};
use prof_format::Profile;

use crate::error::ApiError;
use crate::store::{ProfileRecord, StoreError, TierTotals};
use crate::AppState;

/// A profile ready for queries; cached per profile id.
pub struct Prepared {
    /// The decoded profile and its analysis, for exports (downloads with `?format=`).
    pub profile: Profile,
    pub analysis: prof_analysis::Analysis,
    pub index: ProfileIndex,
    /// The same summary as `prof report --format json`.
    pub summary: Summary,
    pub tiers: TierTotals,
    /// Build ids (hex) of the profile's modules.
    pub build_ids: Vec<String>,
    /// The symbol sequence number of the build ids when preparation started (see
    /// [`crate::cache`]).
    pub symbol_seq: i64,
    /// Build ids whose symbol file came from the symbol store.
    pub uploaded_symbols: Vec<String>,
    /// How long preparation took.
    pub seconds: f64,
    /// Random, per preparation: ETags of query answers start with it.
    pub nonce: u64,
    /// Recent serialized answers to queries on this profile.
    pub answers: Answers,
}

/// The most recent serialized answers (tree, timeline, functions) of one prepared
/// profile, by a hash of the request's path and query: the same view asked again (a
/// shared link opened by several people, back/forward, a reload) costs a lookup.
#[derive(Default)]
pub struct Answers {
    entries: std::sync::Mutex<std::collections::VecDeque<(u64, actix_web::web::Bytes)>>,
}

impl Answers {
    const MAX_ENTRIES: usize = 32;
    const MAX_BYTES: usize = 32 << 20;

    pub fn get(&self, key: u64) -> Option<actix_web::web::Bytes> {
        let mut e = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let i = e.iter().position(|(k, _)| *k == key)?;
        let hit = e.remove(i)?;
        let body = hit.1.clone();
        e.push_front(hit);
        Some(body)
    }

    pub fn put(&self, key: u64, body: actix_web::web::Bytes) {
        if body.len() > Self::MAX_BYTES / 4 {
            return;
        }
        let mut e = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        e.retain(|(k, _)| *k != key);
        e.push_front((key, body));
        let mut total = 0usize;
        let keep = e
            .iter()
            .take(Self::MAX_ENTRIES)
            .take_while(|(_, b)| {
                total += b.len();
                total <= Self::MAX_BYTES
            })
            .count();
        e.truncate(keep.max(1));
    }
}

/// Weight per tier name.
pub fn tier_totals(t: &[u64; TIERS]) -> TierTotals {
    Tier::ALL
        .iter()
        .zip(t)
        .map(|(tier, &w)| (tier.name().to_string(), w))
        .collect()
}

/// Distinct build ids (hex) of a profile's modules.
pub fn build_ids(profile: &Profile) -> Vec<String> {
    let set: BTreeSet<String> = profile
        .processes
        .iter()
        .flat_map(|p| &p.modules)
        .filter(|m| !m.build_id.is_empty())
        .map(|m| prof_analysis::hex(&m.build_id))
        .collect();
    set.into_iter().collect()
}

/// Decodes, symbolizes, analyzes and indexes a stored profile. Runs on a blocking thread.
/// Reads only: recording the tier totals in the database is best effort (a full or
/// read-only database does not fail the read that prepared the profile).
pub fn prepare(st: &AppState, rec: &ProfileRecord, symbol_seq: i64) -> Result<Prepared, ApiError> {
    let start = Instant::now();
    let storage = &st.storage;
    let bytes = storage.profile_bytes(rec).map_err(|e| match e {
        StoreError::BlobMissing(_) => ApiError::Gone(format!(
            "the bytes of profile {} are gone from the blob store (a delete failed midway?); delete it again",
            rec.id
        )),
        e => e.into(),
    })?;
    let profile = prof_format::read_profile(&bytes).map_err(|e| {
        ApiError::Internal(format!("stored profile {} no longer decodes: {e}", rec.id))
    })?;
    drop(bytes);
    let ids = build_ids(&profile);

    let mut sym = Symbolizer::without_debug_dirs();
    sym.set_file_access(st.files.clone());
    for d in st.config.debug_dirs.iter().rev() {
        sym.add_debug_dir(d);
    }
    let mut uploaded = Vec::new();
    let mut warnings = Vec::new();
    for id in &ids {
        match storage.symbol_path(id) {
            Ok(None) => {}
            Ok(Some(path)) => match sym.add_file(&path) {
                Ok(_) => uploaded.push(id.clone()),
                Err(e) => warnings.push(format!("uploaded symbols for build id {id}: {e}")),
            },
            Err(e) => warnings.push(format!("uploaded symbols for build id {id}: {e}")),
        }
    }
    let analysis = prof_analysis::analyze(&profile, &mut sym);
    drop(sym);
    let mut summary = analysis.summary();
    summary.symbol_warnings.extend(warnings);
    let index = ProfileIndex::new(&profile, &analysis);
    let tiers = tier_totals(&index.tier_totals());
    if rec.tiers.as_ref() != Some(&tiers) {
        if let Err(e) = storage.meta.set_tiers(&rec.id, &tiers) {
            tracing::warn!(profile = %rec.id, error = %e, "could not record tier totals");
        }
    }
    Ok(Prepared {
        profile,
        analysis,
        index,
        summary,
        tiers,
        build_ids: ids,
        symbol_seq,
        uploaded_symbols: uploaded,
        seconds: start.elapsed().as_secs_f64(),
        answers: Answers::default(),
        nonce: {
            let mut b = [0u8; 8];
            getrandom::fill(&mut b)
                .map_err(|e| ApiError::Internal(format!("no randomness: {e}")))?;
            u64::from_le_bytes(b)
        },
    })
}

pub type Shared = Arc<Prepared>;
