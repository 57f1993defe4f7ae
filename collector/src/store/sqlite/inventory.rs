//! The fleet's package index: what `GET /v1/packages` searches ("which hosts still run
//! xz-utils 5.6.0?") without reading any report back.
//!
//! Each host has one inventory, taken from its newest report that carried one: a report that
//! becomes the host's latest replaces it when it has a package inventory, and leaves it when it
//! has none (a partial report, a packages collector that failed), so a host keeps answering for
//! the packages last seen. A report stored out of order (older than the latest) never touches it.
//!
//! Writes follow what is new. A fleet runs few distinct package lists (an image's instances
//! run the same one), so each distinct list is stored once, as a set found by its digest, and a
//! host's inventory names its set: a host reporting the same packages scan after scan, or the
//! packages another host already runs, writes no package row; only a list nobody runs yet (an
//! upgrade, on the first host of its kind) is written. A set no host names is deleted, and each
//! package no other set lists with it: `packages` holds what the fleet runs now, not every
//! version a host (or a forged report) ever named.
//!
//! Cost: an inventory is counted against its host's `[retention] max_bytes_per_host` as if its
//! set's rows were its own, although hosts share them: what one host sends must not cost the
//! others. Like the latest report, it is never deleted by the cap; only forgetting a host
//! deletes it (`drop_rows`, in bounded steps).

use super::{GroupCounter, StoreError, db_err, glob_pattern, hosts_not_indexed, to_i64, to_u64, ts_parse};
use crate::store::{PackageInventory, PackageQuery, PackageSource};
use guestward_packages::delta::compare_versions;
use guestward_report::ingest::{
    FleetPackages, HostPackage, MAX_FLEET_PACKAGE_VERSIONS, MAX_FLEET_PACKAGES, PackageKey,
    PackageVersionCount,
};
use rusqlite::{Connection, OptionalExtension, params};
use std::cmp::Ordering;
use std::collections::{BTreeSet, HashMap};

/// The most packages of one inventory indexed; the rest are counted (`left_out`). The agent
/// reports at most 100,000 language packages a scan, besides a few thousand system ones.
#[cfg(not(test))]
pub(super) const MAX_INDEXED_PACKAGES: usize = 200_000;
/// Small in the unit tests, which fill it.
#[cfg(test)]
pub(super) const MAX_INDEXED_PACKAGES: usize = 20_000;

/// What one package of a set costs a host beyond its text: its `set_packages` entries in both
/// orders and its own row and index entry.
const PACKAGE_FIXED_BYTES: u64 = 64;

/// An inventory on its way to the writer: its digest, computed on the caller's thread, and the
/// inventory, read by the writer only when no set has that digest yet.
#[derive(Debug, Clone)]
pub(super) struct PreparedInventory {
    digest: [u8; 32],
    packages: PackageInventory,
}

impl PreparedInventory {
    pub(super) fn new(packages: PackageInventory) -> Self {
        Self { digest: packages.digest(), packages }
    }
}

/// What the inventory row itself costs: like a report's row, its keys and 32 bytes.
fn inventory_row_cost(batch_id: &str, host_id: &str) -> u64 {
    super::row_cost(32, batch_id, host_id)
}

/// Makes `inventory` the host's, from report `batch_id`, inside the caller's transaction.
/// Returns the change to the host's `stored_bytes` (the new cost less the old).
pub(super) fn replace(
    conn: &Connection,
    host_id: &str,
    batch_id: &str,
    sequence: i64,
    collected_at: &str,
    inventory: &PreparedInventory,
) -> Result<i64, StoreError> {
    let old: Option<(i64, i64)> = conn
        .prepare_cached("SELECT set_id, stored_bytes FROM inventories WHERE host_id = ?1")
        .map_err(db_err)?
        .query_row([host_id], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()
        .map_err(db_err)?;
    // A set this host alone names (and not being taken apart) is rewritten in place when its
    // list changes: an upgrade of one package on a host unlike any other is one row, not a
    // whole new list.
    let own = match old {
        Some((old_set, _)) => conn
            .prepare_cached(
                "SELECT 1 FROM package_sets WHERE set_id = ?1 AND hosts = 1 AND digest IS NOT NULL",
            )
            .map_err(db_err)?
            .exists([old_set])
            .map_err(db_err)?
            .then_some(old_set),
        None => None,
    };
    let (set_id, set_cost) = package_set(conn, inventory, own).map_err(db_err)?;
    let cost = set_cost.saturating_add(to_i64(inventory_row_cost(batch_id, host_id)));
    match old {
        Some((old_set, old_cost)) => {
            conn.prepare_cached(
                "UPDATE inventories SET set_id = ?2, batch_id = ?3, sequence = ?4, collected_at = ?5, stored_bytes = ?6
                 WHERE host_id = ?1",
            )
            .map_err(db_err)?
            .execute(params![host_id, set_id, batch_id, sequence, collected_at, cost])
            .map_err(db_err)?;
            if old_set != set_id {
                adopt(conn, set_id, 1).map_err(db_err)?;
                release(conn, old_set).map_err(db_err)?;
            }
            Ok(cost - old_cost)
        }
        None => {
            conn.prepare_cached(
                "INSERT INTO inventories (host_id, set_id, batch_id, sequence, collected_at, stored_bytes)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )
            .map_err(db_err)?
            .execute(params![host_id, set_id, batch_id, sequence, collected_at, cost])
            .map_err(db_err)?;
            adopt(conn, set_id, 1).map_err(db_err)?;
            Ok(cost)
        }
    }
}

/// The package set whose digest is `inventory`'s: one a host already runs, else `own` (a set
/// only the reporting host names) rewritten to it, else a new one. Its id and what a host
/// listing it is charged. A host of an autoscaling group usually finds the set its image's
/// first instance made.
fn package_set(
    conn: &Connection,
    inventory: &PreparedInventory,
    own: Option<i64>,
) -> Result<(i64, i64), rusqlite::Error> {
    let found: Option<(i64, i64)> = conn
        .prepare_cached("SELECT set_id, cost FROM package_sets WHERE digest = ?1")?
        .query_row([inventory.digest.as_slice()], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    if let Some(found) = found {
        return Ok(found);
    }
    // The rows the set has now, by their text, with their ids (none for a new set).
    let mut held: HashMap<[String; 5], i64> = HashMap::new();
    let set_id: i64 = match own {
        Some(set_id) => {
            conn.prepare_cached("UPDATE package_sets SET digest = ?2 WHERE set_id = ?1")?
                .execute(params![set_id, inventory.digest.as_slice()])?;
            let mut rows = conn.prepare_cached(
                "SELECT p.name, p.source, p.version, p.arch, p.location, p.package_id
                 FROM set_packages sp JOIN packages p ON p.package_id = sp.package_id WHERE sp.set_id = ?1",
            )?;
            for row in rows.query_map([set_id], |r| {
                Ok(([r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?], r.get(5)?))
            })? {
                let (text, id) = row?;
                held.insert(text, id);
            }
            set_id
        }
        None => conn
            .prepare_cached(
                "INSERT INTO package_sets (digest, packages, left_out, cost, hosts) VALUES (?1, 0, 0, 0, 0)
                 RETURNING set_id",
            )?
            .query_row([inventory.digest.as_slice()], |r| r.get(0))?,
    };
    let mut lookup = conn.prepare_cached(
        "SELECT package_id FROM packages
         WHERE name = ?1 AND source = ?2 AND version = ?3 AND arch = ?4 AND location = ?5",
    )?;
    let mut insert = conn.prepare_cached(
        "INSERT INTO packages (name, source, version, arch, location) VALUES (?1, ?2, ?3, ?4, ?5)
         RETURNING package_id",
    )?;
    let mut member =
        conn.prepare_cached("INSERT OR IGNORE INTO set_packages (package_id, set_id) VALUES (?1, ?2)")?;
    // Rows kept from `held`, by id: a package listed twice is one row.
    let mut kept = BTreeSet::new();
    let (mut packages, mut left_out, mut cost) = (0usize, 0usize, 0u64);
    for item in inventory.packages.iter() {
        if packages == MAX_INDEXED_PACKAGES {
            left_out += 1;
            continue;
        }
        let (arch, location) = (item.arch.unwrap_or(""), item.location.unwrap_or(""));
        let source = item.source.as_str();
        let counted = if held.is_empty() {
            None
        } else {
            let key = [item.name, source, item.version, arch, location].map(str::to_string);
            held.get(&key).map(|id| kept.insert(*id))
        };
        let new_row = match counted {
            Some(first) => first,
            None => {
                let fields = params![item.name, source, item.version, arch, location];
                let id: i64 = match lookup.query_row(fields, |r| r.get(0)).optional()? {
                    Some(id) => id,
                    None => insert.query_row(fields, |r| r.get(0))?,
                };
                member.execute(params![id, set_id])? == 1
            }
        };
        if new_row {
            packages += 1;
            let text = item.name.len() + source.len() + item.version.len() + arch.len() + location.len();
            cost = cost.saturating_add(text as u64).saturating_add(PACKAGE_FIXED_BYTES);
        }
    }
    // What the list no longer has.
    for (_, id) in held.into_iter().filter(|(_, id)| !kept.contains(id)) {
        conn.prepare_cached("DELETE FROM set_packages WHERE package_id = ?1 AND set_id = ?2")?
            .execute(params![id, set_id])?;
        conn.prepare_cached(
            "DELETE FROM packages WHERE package_id = ?1
               AND NOT EXISTS (SELECT 1 FROM set_packages WHERE package_id = ?1)",
        )?
        .execute([id])?;
    }
    conn.prepare_cached("UPDATE package_sets SET packages = ?2, left_out = ?3, cost = ?4 WHERE set_id = ?1")?
        .execute(params![set_id, to_i64(packages as u64), to_i64(left_out as u64), to_i64(cost)])?;
    Ok((set_id, to_i64(cost)))
}

/// `hosts` more inventories list set `set_id`.
fn adopt(conn: &Connection, set_id: i64, hosts: i64) -> Result<(), rusqlite::Error> {
    conn.prepare_cached("UPDATE package_sets SET hosts = hosts + ?2 WHERE set_id = ?1")?
        .execute(params![set_id, hosts])?;
    Ok(())
}

/// One inventory fewer lists set `set_id`; the last one takes the set with it, and the
/// packages no other set lists. Whole: at ingest, a set is at most [`MAX_INDEXED_PACKAGES`].
fn release(conn: &Connection, set_id: i64) -> Result<(), rusqlite::Error> {
    adopt(conn, set_id, -1)?;
    let hosts: i64 = conn
        .prepare_cached("SELECT hosts FROM package_sets WHERE set_id = ?1")?
        .query_row([set_id], |r| r.get(0))
        .optional()?
        .unwrap_or(0);
    if hosts > 0 {
        return Ok(());
    }
    while dismantle(conn, set_id, 4096)?.0 > 0 {}
    conn.prepare_cached("DELETE FROM package_sets WHERE set_id = ?1")?.execute([set_id])?;
    Ok(())
}

/// Deletes up to `limit` rows of set `set_id`, and each package no other set lists. Returns how
/// many rows went and what they cost a host listing the set (taken off the set's `cost`).
fn dismantle(conn: &Connection, set_id: i64, limit: usize) -> Result<(usize, u64), rusqlite::Error> {
    let rows: Vec<(i64, i64)> = conn
        .prepare_cached(
            "SELECT sp.package_id,
                    length(CAST(p.name AS BLOB)) + length(CAST(p.source AS BLOB)) + length(CAST(p.version AS BLOB))
                    + length(CAST(p.arch AS BLOB)) + length(CAST(p.location AS BLOB))
             FROM set_packages sp JOIN packages p ON p.package_id = sp.package_id
             WHERE sp.set_id = ?1 LIMIT ?2",
        )?
        .query_map(params![set_id, to_i64(limit as u64)], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    let mut unlisted =
        conn.prepare_cached("DELETE FROM set_packages WHERE package_id = ?1 AND set_id = ?2")?;
    let mut orphan = conn.prepare_cached(
        "DELETE FROM packages WHERE package_id = ?1
           AND NOT EXISTS (SELECT 1 FROM set_packages WHERE package_id = ?1)",
    )?;
    let mut cost = 0u64;
    for (package_id, text) in &rows {
        unlisted.execute(params![package_id, set_id])?;
        orphan.execute([package_id])?;
        cost = cost.saturating_add(to_u64(*text)).saturating_add(PACKAGE_FIXED_BYTES);
    }
    conn.prepare_cached("UPDATE package_sets SET cost = MAX(cost - ?2, 0) WHERE set_id = ?1")?
        .execute(params![set_id, to_i64(cost)])?;
    Ok((rows.len(), cost))
}

/// Forgets `host_id`'s inventory, at most `limit` rows a call: a set other hosts list is only
/// let go; the set of this host alone is taken apart first, its cost coming off the host's
/// `stored_bytes` as its rows go (a host being forgotten keeps exact counts between steps).
/// Returns how many rows went (0 once the inventory is gone, or there was none) and what they
/// cost the host.
pub(super) fn drop_rows(
    conn: &Connection,
    host_id: &str,
    limit: usize,
) -> Result<(usize, u64), rusqlite::Error> {
    let held: Option<(i64, i64)> = conn
        .prepare_cached(
            "SELECT i.set_id, s.hosts FROM inventories i JOIN package_sets s ON s.set_id = i.set_id
             WHERE i.host_id = ?1",
        )?
        .query_row([host_id], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let Some((set_id, hosts)) = held else { return Ok((0, 0)) };
    let charge = |bytes: u64| -> Result<(), rusqlite::Error> {
        for table in ["inventories", "hosts"] {
            conn.prepare_cached(&format!(
                "UPDATE {table} SET stored_bytes = MAX(stored_bytes - ?2, 0) WHERE host_id = ?1"
            ))?
            .execute(params![host_id, to_i64(bytes)])?;
        }
        Ok(())
    };
    if hosts <= 1 {
        // Half taken apart, the set no longer is the list its digest names: a host that reports
        // the same list meanwhile (this one, delivering again) makes a new set.
        conn.prepare_cached("UPDATE package_sets SET digest = NULL WHERE set_id = ?1")?.execute([set_id])?;
        let (rows, cost) = dismantle(conn, set_id, limit)?;
        if rows > 0 {
            charge(cost)?;
            return Ok((rows, cost));
        }
    }
    let cost: i64 = conn
        .prepare_cached("DELETE FROM inventories WHERE host_id = ?1 RETURNING stored_bytes")?
        .query_row([host_id], |r| r.get(0))?;
    conn.prepare_cached("UPDATE hosts SET stored_bytes = MAX(stored_bytes - ?2, 0) WHERE host_id = ?1")?
        .execute(params![host_id, cost])?;
    release(conn, set_id)?;
    Ok((0, to_u64(cost)))
}

/// The search, in the order answered. The packages' unique index gives the rows by name,
/// source, version and architecture, so SQLite sorts only the hosts (and places) of one version
/// at a time ("USE TEMP B-TREE FOR LAST 2 TERMS OF ORDER BY"): `*ssl*` over a large fleet never
/// sorts all its pairs at once. `CROSS JOIN` is SQLite's way to keep that join order: left to
/// itself, for a pattern with no literal prefix the planner starts from the inventories and
/// sorts every pair. `the_search_sorts_one_version_at_a_time` holds the plan to it.
const SEARCH: &str = "SELECT p.source, p.name, p.version, p.arch, p.location, i.rowid, i.host_id, i.sequence,
        i.collected_at
    FROM packages p
    CROSS JOIN set_packages sp ON sp.package_id = p.package_id
    CROSS JOIN inventories i ON i.set_id = sp.set_id
    WHERE p.name GLOB ?1 AND (?2 IS NULL OR p.source = ?2)
    ORDER BY p.name, p.source, p.version, p.arch, i.host_id, p.location";

/// `query`'s answer, from one read transaction. Rows are read in the order answered (by
/// name, source, version, architecture, then host), one at a time: the answer is bounded, and
/// so is the sort ([`SEARCH`]); the time is as long as the packages the name matches.
pub(super) fn search(conn: &Connection, query: &PackageQuery) -> Result<FleetPackages, StoreError> {
    let tx = conn.unchecked_transaction().map_err(db_err)?;
    let (hosts_searched, hosts_without_inventory) = hosts_not_indexed(&tx, "inventories")?;
    let mut answer = FleetPackages {
        hosts_searched,
        hosts_without_inventory,
        hosts_matching: 0,
        versions: Vec::new(),
        packages: Vec::new(),
        omitted: 0,
        versions_omitted: 0,
    };
    let mut stmt = tx.prepare_cached(SEARCH).map_err(db_err)?;
    let source = query.source.map(PackageSource::as_str);
    let mut rows = stmt.query(params![glob_pattern(&query.name), source]).map_err(db_err)?;
    let mut counter = GroupCounter::new(MAX_FLEET_PACKAGE_VERSIONS);
    while let Some(row) = rows.next().map_err(db_err)? {
        let source_text: String = row.get(0).map_err(db_err)?;
        let version: String = row.get(2).map_err(db_err)?;
        if !query.versions.is_empty() && !query.versions.contains(&version) {
            continue;
        }
        let mut order_unknown = false;
        if let Some(below) = &query.below {
            let Ok(source) = PackageSource::parse(&source_text) else { continue };
            match compare_versions(source, &version, below) {
                Some(Ordering::Less) => {}
                Some(_) => continue,
                None => order_unknown = true,
            }
        }
        let arch: String = row.get(3).map_err(db_err)?;
        let location: String = row.get(4).map_err(db_err)?;
        let host_id: String = row.get(6).map_err(db_err)?;
        let key = PackageKey {
            source: source_text,
            name: row.get(1).map_err(db_err)?,
            version,
            arch: (!arch.is_empty()).then_some(arch),
            order_unknown,
        };
        counter.count(
            &key,
            row.get::<_, i64>(5).map_err(db_err)?,
            &mut answer.versions,
            &mut answer.versions_omitted,
            |package| PackageVersionCount { package, hosts: 1 },
            |v| &mut v.hosts,
        );
        if answer.packages.len() >= MAX_FLEET_PACKAGES {
            answer.omitted += 1;
            continue;
        }
        let collected_at: String = row.get(8).map_err(db_err)?;
        answer.packages.push(HostPackage {
            package: key,
            location: (!location.is_empty()).then_some(location),
            sequence: to_u64(row.get(7).map_err(db_err)?),
            collected_at: ts_parse(&collected_at, &host_id)?,
            host_id,
        });
    }
    answer.hosts_matching = counter.hosts();
    Ok(answer)
}

#[cfg(test)]
mod tests {
    use super::super::SqliteStore;
    use super::super::prune::Pruner;
    use super::*;
    use crate::store::sqlite::tests::*;
    use crate::store::{NewReport, PackageItem, Retention, Store};
    use guestward_core::Timestamp;

    fn item(source: PackageSource, name: &str, version: &str, arch: Option<&str>) -> PackageItem {
        PackageItem {
            source,
            name: name.into(),
            arch: arch.map(Into::into),
            location: None,
            version: version.into(),
        }
    }

    fn deb(name: &str, version: &str) -> PackageItem {
        item(PackageSource::Dpkg, name, version, Some("amd64"))
    }

    fn with_packages(host: &str, batch: &str, sequence: u64, packages: Vec<PackageItem>) -> NewReport {
        let mut r = report_with(host, batch, sequence, "x");
        r.packages = Some(PackageInventory::from_items(&packages));
        r
    }

    fn ask(store: &SqliteStore, name: &str, versions: &[&str], below: Option<&str>) -> FleetPackages {
        let query = PackageQuery {
            name: name.into(),
            versions: versions.iter().map(|v| v.to_string()).collect(),
            below: below.map(Into::into),
            source: None,
        };
        store.packages(&query).unwrap()
    }

    /// (host, version) of each row.
    fn rows(found: &FleetPackages) -> Vec<(String, String)> {
        found.packages.iter().map(|p| (p.host_id.clone(), p.package.version.clone())).collect()
    }

    /// (name, version, hosts) of each version counted.
    fn counts(found: &FleetPackages) -> Vec<(String, String, u64)> {
        found.versions.iter().map(|v| (v.package.name.clone(), v.package.version.clone(), v.hosts)).collect()
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
    }

    /// "Which hosts have xz-utils 5.6.0?": exact names and patterns, exact versions, versions
    /// below a fixed one in each package manager's order, a source; hosts whose reports carry
    /// no inventory are counted, not guessed.
    #[test]
    fn the_fleets_packages_are_searched_by_name_version_order_and_source() {
        let Fixture { mut conn, store, _dir, .. } = fixture();
        let now = Timestamp::now();
        let a = vec![
            deb("xz-utils", "5.4.1-0.2"),
            deb("liblzma5", "5.4.1-0.2"),
            deb("openssl", "3.0.11-1~deb12u2"),
        ];
        store_at(&mut conn, "a", &[with_packages("a", "a1", 1, a)], now);
        let b = vec![
            deb("xz-utils", "5.6.0-0.2"),
            deb("liblzma5", "5.6.0-0.2"),
            deb("openssl", "3.0.11-1~deb12u2"),
        ];
        store_at(&mut conn, "b", &[with_packages("b", "b1", 4, b)], now);
        let c = vec![
            item(PackageSource::Rpm, "xz", "5.6.1-1.amzn2023", Some("x86_64")),
            item(PackageSource::Pypi, "xz-tools", "main", None),
            item(PackageSource::Pypi, "xz-tools", "0.9", None),
            deb("weird[x]", "1"),
            deb("weirdx", "1"),
        ];
        store_at(&mut conn, "c", &[with_packages("c", "c1", 2, c)], now);
        store_at(&mut conn, "d", &[report_with("d", "d1", 1, "x")], now);

        let xz = ask(&store, "xz-utils", &[], None);
        assert_eq!((xz.hosts_searched, xz.hosts_without_inventory, xz.hosts_matching), (4, 1, 2));
        assert_eq!(rows(&xz), pairs(&[("a", "5.4.1-0.2"), ("b", "5.6.0-0.2")]));
        assert_eq!(xz.packages[1].sequence, 4);
        assert_eq!(xz.packages[1].package.arch.as_deref(), Some("amd64"));
        assert_eq!(xz.packages[1].package.source, "dpkg");
        // A pattern: every name that starts so, of every source.
        let any = ask(&store, "xz*", &[], None);
        assert_eq!(
            rows(&any),
            pairs(&[
                ("c", "5.6.1-1.amzn2023"),
                ("c", "0.9"),
                ("c", "main"),
                ("a", "5.4.1-0.2"),
                ("b", "5.6.0-0.2")
            ])
        );
        assert_eq!(any.hosts_matching, 3);
        let query =
            PackageQuery { name: "xz*".into(), source: Some(PackageSource::Rpm), ..Default::default() };
        assert_eq!(rows(&store.packages(&query).unwrap()), pairs(&[("c", "5.6.1-1.amzn2023")]));
        // Exact versions.
        let backdoored = ask(&store, "*lzma*", &["5.6.0-0.2", "5.6.1-1"], None);
        assert_eq!(rows(&backdoored), pairs(&[("b", "5.6.0-0.2")]));
        // Below a version, in dpkg's order: 5.6.0-0.2 is above 5.6.0 (a revision), 5.4.1 below.
        assert_eq!(rows(&ask(&store, "xz-utils", &[], Some("5.6.0"))), pairs(&[("a", "5.4.1-0.2")]));
        // ~ sorts before anything: 3.0.11-1~deb12u2 is below 3.0.11-1.
        assert_eq!(ask(&store, "openssl", &[], Some("3.0.11-1")).hosts_matching, 2);
        assert_eq!(ask(&store, "openssl", &[], Some("3.0.11-1~deb12u1")).hosts_matching, 0);
        // A version the rule cannot order is listed and marked, never hidden.
        let tools = ask(&store, "xz-tools", &[], Some("1.0"));
        assert_eq!(rows(&tools), pairs(&[("c", "0.9"), ("c", "main")]));
        assert_eq!(tools.packages.iter().map(|p| p.package.order_unknown).collect::<Vec<_>>(), [false, true]);
        // `?` and `[` match themselves; only `*` is a wildcard.
        assert_eq!(counts(&ask(&store, "weird[x]", &[], None)), [("weird[x]".into(), "1".into(), 1)]);
        assert_eq!(ask(&store, "weird?", &[], None).packages.len(), 0);
        assert_eq!(ask(&store, "nothing-so-named", &[], None).hosts_matching, 0);
        // The versions' host counts.
        assert_eq!(
            counts(&ask(&store, "openssl", &[], None)),
            [("openssl".into(), "3.0.11-1~deb12u2".into(), 2)]
        );
        assert_accounting_exact(&conn, "after indexing");
    }

    /// An upgrade rewrites the rows that changed; a package no host lists any more is deleted;
    /// the same packages again only move the inventory to the new report; a report stored out
    /// of order, or one without an inventory, leaves it as it is.
    #[test]
    fn each_host_keeps_the_inventory_of_its_newest_report_that_carried_one() {
        let Fixture { mut conn, store, _dir, .. } = fixture();
        let now = Timestamp::now();
        let before = || vec![deb("xz-utils", "5.6.0-0.2"), deb("bash", "5.2.15-2+b2")];
        let after = || vec![deb("xz-utils", "5.6.1+really5.4.5-1"), deb("bash", "5.2.15-2+b2")];
        store_at(&mut conn, "a", &[with_packages("a", "a2", 2, before())], now);
        store_at(&mut conn, "b", &[with_packages("b", "b1", 1, before())], now);
        store_at(&mut conn, "a", &[with_packages("a", "a3", 3, after())], now);
        assert_eq!(
            rows(&ask(&store, "xz-utils", &[], None)),
            pairs(&[("b", "5.6.0-0.2"), ("a", "5.6.1+really5.4.5-1")])
        );
        store_at(&mut conn, "b", &[with_packages("b", "b2", 2, after())], now);
        let versions =
            |conn: &Connection| count(conn, "SELECT COUNT(*) FROM packages WHERE name = ?1", "xz-utils");
        assert_eq!(versions(&conn), 1, "5.6.0-0.2 went with the last host that had it");
        assert_accounting_exact(&conn, "after the upgrades");

        // The same packages: no row rewritten, the inventory now from a4.
        let rows_before = count(&conn, "SELECT COUNT(*) FROM set_packages WHERE ?1 = ?1", "");
        store_at(&mut conn, "a", &[with_packages("a", "a4", 4, after())], now);
        assert_eq!(count(&conn, "SELECT COUNT(*) FROM set_packages WHERE ?1 = ?1", ""), rows_before);
        assert_eq!(ask(&store, "bash", &[], None).packages[0].sequence, 4);
        // A late report (sequence 1, before the latest) does not replace it.
        let mut late = with_packages("a", "a1", 1, before());
        late.collected_at = days_ago(1);
        store_at(&mut conn, "a", &[late], now);
        // Nor does the latest report when it carries no inventory.
        store_at(&mut conn, "a", &[report_with("a", "a5", 5, "x")], now);
        let xz = ask(&store, "xz-utils", &[], None);
        assert_eq!(rows(&xz), pairs(&[("a", "5.6.1+really5.4.5-1"), ("b", "5.6.1+really5.4.5-1")]));
        assert_eq!((xz.packages[0].sequence, xz.hosts_without_inventory), (4, 0));
        assert_eq!(versions(&conn), 1);
        assert_accounting_exact(&conn, "after a late report and one without an inventory");
    }

    /// A host unlike any other that upgrades one package has its set rewritten in place: one
    /// row out, one in, the same set; a list that then matches another host's joins that set.
    #[test]
    fn a_set_only_one_host_names_is_rewritten_in_place() {
        let Fixture { mut conn, store, _dir, .. } = fixture();
        let now = Timestamp::now();
        let set_of = |conn: &Connection, host: &str| {
            count(conn, "SELECT set_id FROM inventories WHERE host_id = ?1", host)
        };
        store_at(
            &mut conn,
            "c",
            &[with_packages("c", "c1", 1, vec![deb("x", "1"), deb("y", "1"), deb("z", "1")])],
            now,
        );
        let first = set_of(&conn, "c");
        store_at(
            &mut conn,
            "c",
            &[with_packages("c", "c2", 2, vec![deb("x", "2"), deb("y", "1"), deb("z", "1"), deb("y", "1")])],
            now,
        );
        assert_eq!(set_of(&conn, "c"), first, "the same set");
        assert_eq!(count(&conn, "SELECT COUNT(*) FROM set_packages WHERE ?1 = ?1", ""), 3);
        assert_eq!(count(&conn, "SELECT COUNT(*) FROM packages WHERE name = ?1", "x"), 1, "x 1 is gone");
        assert_eq!(rows(&ask(&store, "x", &[], None)), pairs(&[("c", "2")]));
        assert_eq!(
            count(&conn, "SELECT packages FROM package_sets WHERE set_id = ?1", &first.to_string()),
            3
        );
        assert_accounting_exact(&conn, "after an upgrade in place");
        // d runs what c runs now; then c changes again: its set is d's too, so c gets a new one.
        store_at(
            &mut conn,
            "d",
            &[with_packages("d", "d1", 1, vec![deb("x", "2"), deb("y", "1"), deb("z", "1"), deb("y", "1")])],
            now,
        );
        assert_eq!(set_of(&conn, "d"), first, "d found c's list");
        store_at(
            &mut conn,
            "c",
            &[with_packages("c", "c3", 3, vec![deb("x", "3"), deb("y", "1"), deb("z", "1")])],
            now,
        );
        assert_ne!(set_of(&conn, "c"), first);
        assert_eq!(rows(&ask(&store, "x", &[], None)), pairs(&[("d", "2"), ("c", "3")]));
        assert_accounting_exact(&conn, "after the set was shared");
    }

    /// A forgotten host takes its inventory with it, in bounded steps with exact counts
    /// between them, and the packages only it listed; the others' answers stay whole.
    #[test]
    fn a_forgotten_host_takes_its_inventory_and_its_own_packages_with_it() {
        let Fixture { mut conn, store, _dir, .. } = fixture();
        let many: Vec<PackageItem> = (0..5_000).map(|i| deb(&format!("lib{i}"), "1")).collect();
        store_at(&mut conn, "gone", &[with_packages("gone", "g1", 1, many)], days_ago(100));
        store_at(
            &mut conn,
            "alive",
            &[with_packages("alive", "a1", 1, vec![deb("lib7", "1")])],
            Timestamp::now(),
        );
        assert_eq!(ask(&store, "lib*", &[], None).packages.len(), 5_001);
        let mut pruner = Pruner::new(
            Retention { max_age_days: 0, max_bytes_per_host: 0, forget_idle_hosts_after_days: 90 },
            true,
        );
        let mut steps = 0;
        while count(&conn, "SELECT COUNT(*) FROM hosts WHERE host_id = ?1", "gone") == 1 {
            pruner.step(&mut conn, Timestamp::now());
            assert_accounting_exact(&conn, "between steps");
            steps += 1;
            assert!(steps < 20, "forgetting did not end");
        }
        assert!(steps >= 3, "5,000 rows at 2,048 a step: {steps} steps");
        assert_eq!(count(&conn, "SELECT COUNT(*) FROM inventories WHERE host_id <> ?1", "alive"), 0);
        assert_eq!(count(&conn, "SELECT COUNT(*) FROM packages WHERE ?1 = ?1", ""), 1, "lib7 alone is left");
        let left = ask(&store, "lib*", &[], None);
        assert_eq!((rows(&left), left.hosts_searched), (pairs(&[("alive", "1")]), 1));
    }

    /// A host that delivers again while its inventory is being taken apart (a stopped
    /// instance started again) is kept, with its whole inventory: the half-deleted set is not
    /// reused for the same list.
    #[test]
    fn a_host_reporting_while_being_forgotten_keeps_its_whole_inventory() {
        let Fixture { mut conn, store, _dir, .. } = fixture();
        let many = || (0..5_000).map(|i| deb(&format!("lib{i}"), "1")).collect::<Vec<_>>();
        store_at(&mut conn, "back", &[with_packages("back", "k1", 1, many())], days_ago(100));
        let mut pruner = Pruner::new(
            Retention { max_age_days: 0, max_bytes_per_host: 0, forget_idle_hosts_after_days: 90 },
            true,
        );
        while count(&conn, "SELECT COUNT(*) FROM set_packages WHERE ?1 = ?1", "") == 5_000 {
            pruner.step(&mut conn, Timestamp::now());
        }
        assert!(ask(&store, "lib*", &[], None).packages.len() < 5_000, "taken apart in part");
        store_at(&mut conn, "back", &[with_packages("back", "k2", 2, many())], Timestamp::now());
        pruner.run_until_idle(&mut conn, Timestamp::now());
        let answer = ask(&store, "lib*", &[], None);
        assert_eq!((answer.packages.len(), answer.hosts_matching), (5_000, 1));
        assert_eq!(
            count(&conn, "SELECT COUNT(*) FROM package_sets WHERE ?1 = ?1", ""),
            1,
            "the old set is gone"
        );
        assert_accounting_exact(&conn, "after the host came back");
    }

    /// The answer is bounded in rows and in versions, the rest counted; a host with one
    /// version in several places counts once for it.
    #[test]
    fn the_answer_is_bounded_and_a_host_counts_once_per_version() {
        let Fixture { mut conn, store, _dir, .. } = fixture();
        let mut packages: Vec<PackageItem> = (0..MAX_FLEET_PACKAGE_VERSIONS + 5)
            .map(|i| item(PackageSource::Npm, "left-pad", &format!("1.{i:05}"), None))
            .collect();
        for place in ["/srv/a/node_modules/left-pad", "/srv/b/node_modules/left-pad"] {
            let mut p = item(PackageSource::Npm, "lodash", "4.17.20", None);
            p.location = Some(place.into());
            packages.push(p);
        }
        store_at(&mut conn, "a", &[with_packages("a", "a1", 1, packages)], Timestamp::now());
        store_at(
            &mut conn,
            "b",
            &[with_packages("b", "b1", 1, vec![item(PackageSource::Npm, "lodash", "4.17.20", None)])],
            Timestamp::now(),
        );

        let lodash = ask(&store, "lodash", &[], None);
        assert_eq!(counts(&lodash), [("lodash".into(), "4.17.20".into(), 2)]);
        assert_eq!(lodash.packages.len(), 3, "a's two places and b's");
        assert_eq!(lodash.packages[0].location.as_deref(), Some("/srv/a/node_modules/left-pad"));
        let pads = ask(&store, "left-pad", &[], None);
        assert_eq!((pads.packages.len(), pads.omitted), (MAX_FLEET_PACKAGES, 5));
        assert_eq!((pads.versions.len(), pads.versions_omitted), (MAX_FLEET_PACKAGE_VERSIONS, 5));
        assert_eq!(pads.hosts_matching, 1);
    }

    /// The search's sort holds one version's hosts at a time, never every pair a pattern
    /// matches: SQLite reads the packages in the answer's order from their unique index and
    /// sorts only the order's last two terms (host, place), for every kind of name, with and
    /// without a source, before and after `ANALYZE` has given it the tables' statistics.
    #[test]
    fn the_search_sorts_one_version_at_a_time() {
        let Fixture { mut conn, _dir, .. } = fixture();
        for (host, version) in [("a", "3.0.11-1"), ("b", "3.0.11-1"), ("c", "3.0.15-1")] {
            let list = vec![deb("openssl", version), deb("libssl3", version), deb("xz-utils", "5.4.1-1")];
            store_at(&mut conn, host, &[with_packages(host, &format!("{host}1"), 1, list)], Timestamp::now());
        }
        let plan = |conn: &Connection, name: &str, source: Option<&str>| -> Vec<String> {
            let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {SEARCH}")).unwrap();
            let rows =
                stmt.query_map(params![glob_pattern(name), source], |r| r.get::<_, String>(3)).unwrap();
            rows.collect::<Result<_, _>>().unwrap()
        };
        for analyzed in [false, true] {
            if analyzed {
                conn.execute_batch("ANALYZE").unwrap();
            }
            for name in ["openssl", "openssl*", "*ssl*", "*"] {
                for source in [None, Some("dpkg")] {
                    let steps = plan(&conn, name, source);
                    let sorts: Vec<&String> = steps.iter().filter(|s| s.contains("TEMP B-TREE")).collect();
                    assert_eq!(
                        sorts,
                        ["USE TEMP B-TREE FOR LAST 2 TERMS OF ORDER BY"],
                        "{name} {source:?} (analyzed: {analyzed}): {steps:?}"
                    );
                    assert!(
                        steps[0].contains("USING COVERING INDEX sqlite_autoindex_packages_1"),
                        "{name} {source:?} (analyzed: {analyzed}) starts from the packages: {steps:?}"
                    );
                }
            }
        }
    }

    /// An inventory over the cap is indexed up to it and the rest counted; duplicates (the
    /// same package twice in a report) are one row; what it costs is its text and 64 bytes a
    /// row; equal inventories have equal digests and any difference, a field boundary
    /// included, another.
    #[test]
    fn an_inventory_is_deduplicated_capped_costed_and_digested() {
        let Fixture { mut conn, store, _dir, .. } = fixture();
        let mut many: Vec<PackageItem> =
            (0..MAX_INDEXED_PACKAGES + 3).map(|i| deb(&format!("p{i:05}"), "1")).collect();
        many.insert(1, deb("p00000", "1"));
        store_at(&mut conn, "big", &[with_packages("big", "b1", 1, many)], Timestamp::now());
        let (packages, left_out): (i64, i64) = conn
            .query_row(
                "SELECT packages, left_out FROM package_sets s JOIN inventories i ON i.set_id = s.set_id
                 WHERE host_id = 'big'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!((packages as usize, left_out), (MAX_INDEXED_PACKAGES, 3));
        assert_eq!(ask(&store, "p*", &[], None).hosts_matching, 1);
        store_at(
            &mut conn,
            "small",
            &[with_packages("small", "s1", 1, vec![deb("b", "2"), deb("a", "1"), deb("b", "2")])],
            Timestamp::now(),
        );
        let small = ask(&store, "*", &[], None);
        let names: Vec<&str> =
            small.packages.iter().filter(|p| p.host_id == "small").map(|p| p.package.name.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        // "a" + "dpkg" + "1" + "amd64": 11 bytes of text each, and the inventory's own row.
        let cost: i64 = conn
            .query_row("SELECT stored_bytes FROM inventories WHERE host_id = 'small'", [], |r| r.get(0))
            .unwrap();
        assert_eq!(cost as u64, 2 * (PACKAGE_FIXED_BYTES + 11) + inventory_row_cost("s1", "small"));
        assert_accounting_exact(&conn, "after a capped inventory");
        let digest = |items: Vec<PackageItem>| PackageInventory::from_items(&items).digest();
        assert_eq!(digest(vec![deb("a", "1"), deb("b", "2")]), digest(vec![deb("a", "1"), deb("b", "2")]));
        assert_ne!(digest(vec![deb("a", "1"), deb("b", "2")]), digest(vec![deb("a", "1"), deb("b", "2.0")]));
        assert_ne!(digest(vec![deb("ab", "1")]), digest(vec![deb("a", "b1")]));
        assert_ne!(digest(vec![deb("a", "1")]), digest(vec![item(PackageSource::Dpkg, "a", "1", None)]));
        assert_eq!(glob_pattern("a?b[c]*"), "a[?]b[[]c]*");
    }

    /// A report's inventory, read from its packages section: the digest is equal for the same
    /// packages and differs when a version, an epoch or an architecture does; the rows are those
    /// the agent's change tracking flattens; any text comes back as it went in.
    #[test]
    fn a_reports_inventory_is_encoded_digested_and_read_back() {
        let rpm = |version: &str, epoch: Option<u32>, arch: Option<&str>| guestward_rpmdb::RpmPackage {
            record: 1,
            name: "openssl-libs".into(),
            epoch,
            version: version.into(),
            release: "1.amzn2023.0.4".into(),
            arch: arch.map(Into::into),
            source_rpm: None,
            size_bytes: None,
            vendor: None,
            license: None,
            install_time: None,
            digests: Default::default(),
        };
        let sent = |package: guestward_rpmdb::RpmPackage| {
            let rpm = guestward_rpmdb::RpmInventory {
                db_path: "/var/lib/rpm/rpmdb.sqlite".into(),
                backend: guestward_rpmdb::Backend::Sqlite,
                packages: vec![package],
                corrupt: Vec::new(),
                problems: Vec::new(),
            };
            let data = guestward_packages::PackagesReport { dpkg: None, rpm: Some(rpm), language: None };
            PackageInventory::from_report(&data)
        };
        let base = sent(rpm("3.0.8", Some(1), Some("x86_64")));
        assert_eq!(base.digest(), sent(rpm("3.0.8", Some(1), Some("x86_64"))).digest());
        for other in [
            rpm("3.0.7", Some(1), Some("x86_64")),
            rpm("3.0.8", None, Some("x86_64")),
            rpm("3.0.8", Some(1), None),
            rpm("3.0.8", Some(1), Some("aarch64")),
        ] {
            assert_ne!(base.digest(), sent(other.clone()).digest(), "{other:?}");
        }
        let flat = base.items().remove(0);
        assert_eq!(
            (flat.name.as_str(), flat.source, flat.version.as_str(), flat.arch.as_deref()),
            ("openssl-libs", PackageSource::Rpm, "1:3.0.8-1.amzn2023.0.4", Some("x86_64"))
        );
        // What a forged report may name: empty text, NUL and the encoding's own length bytes.
        let mut odd = item(PackageSource::Npm, "", "\u{0}\u{ff}\u{ffff}", None);
        odd.location = Some(String::new());
        let items = vec![deb("b", "2"), odd, item(PackageSource::Maven, "g:a", "1", None), deb("a", "1")];
        let mut sorted = items.clone();
        sorted.sort_unstable();
        assert_eq!(PackageInventory::from_items(&items).items(), sorted);
        assert_eq!(PackageInventory::from_items(&[]).items(), []);
    }
}
