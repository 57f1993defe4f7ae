//! The trust anchor's verdict kept with the baseline, so that a full check which found every
//! file as the baseline records it does not judge every package file again (100k on a Debian
//! host: a tenth of the check's time).
//!
//! Why reusing it is sound: the anchor's verdict is a function of two inputs only, the recorded
//! content of the package files in scope and what their packages expect of them. The first is
//! the baseline's rows when a full check staged nothing and met every row (the check then read
//! every file and found each one as recorded). The kept verdict names both inputs:
//!
//! - the rows: the baseline's generation ([`Store::generation`], raised in the same
//!   transaction as every write of rows), the scope (trees and policy) it judged, and with a
//!   key the row-set seal (which commits to every row's keyed MAC);
//! - the expectations: [`PackageOracle::databases_stamp`], a digest of the inode, size, mtime
//!   and ctime of every file they are read from. A `ctime` cannot be set from user space (only
//!   by changing the clock, which the databases' other stamps and the next change reveal), so
//!   an edited `.md5sums` or a new package changes it.
//!
//! Same rows, same expectations: same verdict. Anything else, and the anchor runs as before.
//! With a key, the kept verdict is tagged with it over the exact stored text: one written or
//! replayed outside the agent does not verify and is not used (it is only a cache: the anchor
//! runs, nothing else changes). Without a key no row of the baseline is verified either, which
//! every report says.

use crate::integrity::BaselineKey;
use crate::package::OutsideChange;
use crate::store::{Store, StoreError};
use guestward_core::Timestamp;
use serde::{Deserialize, Serialize};

/// What the anchor found, as reported: the first mismatches in path order, and how many.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Verdict {
    /// All package files in scope that do not match their package.
    pub count: u64,
    /// The first of them in path order (at most [`crate::package::MAX_REPORTED_OUTSIDE`]).
    pub listed: Vec<OutsideChange>,
    /// When the anchor ran.
    pub judged: Timestamp,
}

/// What a verdict was judged on.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Inputs<'a> {
    /// The baseline's generation the verdict is about.
    pub generation: u64,
    /// The trees and policy judged (the scan's key without its purpose).
    pub scope: &'a str,
    /// [`crate::package::PackageOracle::databases_stamp`].
    pub databases: &'a [u8; 32],
}

#[derive(Serialize, Deserialize)]
struct Body {
    generation: u64,
    scope: String,
    databases: String,
    /// The row-set seal when a key is configured (`None` without one).
    seal: Option<String>,
    verdict: Verdict,
}

/// As stored: `body` is the JSON text of a [`Body`], tagged as it is (no re-serialization
/// between tagging and verifying).
#[derive(Serialize, Deserialize)]
struct Stored {
    body: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tag: Option<String>,
}

/// Keeps `verdict` about `inputs`, unless the baseline moved past `inputs.generation` since
/// (another writer). Returns whether it was kept.
pub(crate) fn keep(
    store: &Store,
    key: Option<&BaselineKey>,
    inputs: Inputs<'_>,
    verdict: &Verdict,
) -> Result<bool, StoreError> {
    let body = Body {
        generation: inputs.generation,
        scope: inputs.scope.to_string(),
        databases: crate::record::hex(inputs.databases),
        seal: seal_of(store, key)?,
        verdict: verdict.clone(),
    };
    let Ok(body) = serde_json::to_string(&body) else { return Ok(false) };
    let tag = key.map(|k| crate::record::hex(&k.verdict_tag(body.as_bytes())));
    let Ok(text) = serde_json::to_string(&Stored { body, tag }) else { return Ok(false) };
    store.keep_verdict(inputs.generation, &text)
}

/// The kept verdict, if it was judged on exactly these inputs: the baseline at its current
/// generation (and, with a key, its current seal, the verdict tagged with that key).
pub(crate) fn kept(
    store: &Store,
    key: Option<&BaselineKey>,
    scope: &str,
    databases: &[u8; 32],
) -> Result<Option<Verdict>, StoreError> {
    let Some(text) = store.kept_verdict()? else { return Ok(None) };
    let Ok(stored) = serde_json::from_str::<Stored>(&text) else { return Ok(None) };
    if let Some(key) = key {
        let authentic = stored
            .tag
            .as_deref()
            .and_then(crate::store::unhex)
            .is_some_and(|tag| key.verify_verdict(stored.body.as_bytes(), &tag));
        if !authentic {
            return Ok(None);
        }
    }
    let Ok(body) = serde_json::from_str::<Body>(&stored.body) else { return Ok(None) };
    let seal = seal_of(store, key)?;
    let same = body.generation == store.generation()?
        && body.scope == scope
        && body.databases == crate::record::hex(databases)
        && (key.is_none() || (seal.is_some() && body.seal == seal));
    Ok(same.then_some(body.verdict))
}

/// The row-set seal a verdict is bound to: with a key, the one stored; without, none.
fn seal_of(store: &Store, key: Option<&BaselineKey>) -> Result<Option<String>, StoreError> {
    match key {
        Some(_) => store.seal_text(),
        None => Ok(None),
    }
}
