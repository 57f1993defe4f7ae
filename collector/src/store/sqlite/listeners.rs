//! The fleet's listener index: what `GET /v1/listeners` searches ("which hosts expose port
//! 6379 on every interface?") without reading any report back.
//!
//! Each host has one scan indexed, from its newest report that carried a network section, kept
//! as the package inventory is kept (inventory.rs): a report that becomes the host's latest
//! replaces it when it has one and leaves it when it has none; a report stored out of order
//! never touches it. A host's listeners are few (tens) and its own, so they are rows of the
//! host's, rewritten only when their digest changes: an unchanged host costs one lookup.
//!
//! Cost: the rows count against the host's `[retention] max_bytes_per_host`, their text and
//! 64 bytes each, with the scan's own row; never deleted by the cap, only when the host is
//! forgotten (`drop_rows`, in bounded steps).

use super::{GroupCounter, StoreError, db_err, glob_pattern, hosts_not_indexed, to_i64, to_u64, ts_parse};
use crate::store::{ListenerIndex, ListenerQuery, ListenerRow};
use guestward_network::{ExposureScope, Protocol};
use guestward_report::ingest::{
    FleetListeners, HostListener, MAX_FLEET_LISTENERS, MAX_FLEET_SERVICES, ServiceCount, ServiceKey,
};
use rusqlite::{Connection, OptionalExtension, params};
use std::collections::BTreeSet;
use std::net::IpAddr;

/// What one listener row costs beyond its text: its integers and its two index entries.
const LISTENER_FIXED_BYTES: u64 = 64;

/// A scan on its way to the writer, its digest computed on the caller's thread.
#[derive(Debug, Clone)]
pub(super) struct PreparedListeners {
    digest: [u8; 32],
    index: ListenerIndex,
}

impl PreparedListeners {
    pub(super) fn new(index: ListenerIndex) -> Self {
        Self { digest: index.digest(), index }
    }
}

/// The text of a row's columns, as stored: `''` for what is absent, public addresses
/// space-separated.
fn columns(row: &ListenerRow) -> [String; 9] {
    let text = |v: &Option<String>| v.clone().unwrap_or_default();
    let public: Vec<String> = row.public_addresses.iter().map(IpAddr::to_string).collect();
    [
        row.protocol.to_string(),
        row.scope.map(|s| s.to_string()).unwrap_or_default(),
        text(&row.process),
        row.address.to_string(),
        text(&row.interface),
        public.join(" "),
        text(&row.exe),
        text(&row.user),
        text(&row.systemd_unit),
    ]
}

/// The cost of one row as SQL computes it in `drop_rows` and the recount: the text of every
/// column and [`LISTENER_FIXED_BYTES`].
const ROW_COST_SQL: &str = "length(CAST(protocol AS BLOB)) + length(CAST(scope AS BLOB))
    + length(CAST(process AS BLOB)) + length(CAST(address AS BLOB)) + length(CAST(interface AS BLOB))
    + length(CAST(public AS BLOB)) + length(CAST(exe AS BLOB)) + length(CAST(user AS BLOB))
    + length(CAST(unit AS BLOB)) + 64";

/// What the scan's own row costs: like a report's row, its keys and 32 bytes.
fn scan_row_cost(batch_id: &str, host_id: &str) -> u64 {
    super::row_cost(32, batch_id, host_id)
}

/// Makes `scan` the host's, from report `batch_id`, inside the caller's transaction. Returns
/// the change to the host's `stored_bytes`.
pub(super) fn replace(
    conn: &Connection,
    host_id: &str,
    batch_id: &str,
    sequence: i64,
    collected_at: &str,
    scan: &PreparedListeners,
) -> Result<i64, StoreError> {
    let old: Option<(Vec<u8>, i64, i64)> = conn
        .prepare_cached("SELECT digest, rows_cost, stored_bytes FROM listener_scans WHERE host_id = ?1")
        .map_err(db_err)?
        .query_row([host_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()
        .map_err(db_err)?;
    let unchanged =
        old.as_ref().and_then(|(digest, rows_cost, _)| (digest[..] == scan.digest).then_some(*rows_cost));
    let rows_cost = match unchanged {
        Some(rows_cost) => rows_cost,
        None => write_rows(conn, host_id, &scan.index).map_err(db_err)?,
    };
    let cost = rows_cost.saturating_add(to_i64(scan_row_cost(batch_id, host_id)));
    conn.prepare_cached(
        "INSERT INTO listener_scans (host_id, digest, batch_id, sequence, collected_at, listeners, left_out,
                                     rows_cost, stored_bytes)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
         ON CONFLICT (host_id) DO UPDATE SET digest = ?2, batch_id = ?3, sequence = ?4, collected_at = ?5,
             listeners = ?6, left_out = ?7, rows_cost = ?8, stored_bytes = ?9",
    )
    .map_err(db_err)?
    .execute(params![
        host_id,
        scan.digest.as_slice(),
        batch_id,
        sequence,
        collected_at,
        to_i64(scan.index.rows().len() as u64),
        to_i64(scan.index.left_out()),
        rows_cost,
        cost
    ])
    .map_err(db_err)?;
    Ok(cost - old.map_or(0, |(_, _, stored)| stored))
}

/// Replaces the host's rows with `index`'s. Returns what they cost.
fn write_rows(conn: &Connection, host_id: &str, index: &ListenerIndex) -> Result<i64, rusqlite::Error> {
    conn.prepare_cached("DELETE FROM listeners WHERE host_id = ?1")?.execute([host_id])?;
    let mut insert = conn.prepare_cached(
        "INSERT INTO listeners (host_id, port, protocol, scope, process, address, interface, public, exe, user, unit)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
    )?;
    let mut cost = 0u64;
    for row in index.rows() {
        let [protocol, scope, process, address, interface, public, exe, user, unit] = columns(row);
        insert.execute(params![
            host_id, row.port, protocol, scope, process, address, interface, public, exe, user, unit
        ])?;
        let bytes = [protocol, scope, process, address, interface, public, exe, user, unit]
            .iter()
            .map(String::len)
            .sum::<usize>();
        cost = cost.saturating_add(bytes as u64).saturating_add(LISTENER_FIXED_BYTES);
    }
    Ok(to_i64(cost))
}

/// Forgets `host_id`'s scan, at most `limit` rows a call, each row's cost coming off the
/// host's `stored_bytes` as it goes (exact counts between steps). Returns how many rows went (0
/// once the scan is gone, or there was none) and what they cost the host.
pub(super) fn drop_rows(
    conn: &Connection,
    host_id: &str,
    limit: usize,
) -> Result<(usize, u64), rusqlite::Error> {
    let held = conn.prepare_cached("SELECT 1 FROM listener_scans WHERE host_id = ?1")?.exists([host_id])?;
    if !held {
        return Ok((0, 0));
    }
    // Half deleted, the rows no longer are the scan its digest names: a host delivering the
    // same listeners meanwhile writes them all again.
    conn.prepare_cached("UPDATE listener_scans SET digest = x'' WHERE host_id = ?1")?.execute([host_id])?;
    let costs: Vec<i64> = conn
        .prepare_cached(&format!(
            "DELETE FROM listeners WHERE rowid IN (SELECT rowid FROM listeners WHERE host_id = ?1 LIMIT ?2)
             RETURNING {ROW_COST_SQL}"
        ))?
        .query_map(params![host_id, to_i64(limit as u64)], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let (rows, cost) = if costs.is_empty() {
        let cost: i64 = conn
            .prepare_cached("DELETE FROM listener_scans WHERE host_id = ?1 RETURNING stored_bytes")?
            .query_row([host_id], |r| r.get(0))?;
        (0, to_u64(cost))
    } else {
        let cost = costs.iter().map(|c| to_u64(*c)).fold(0u64, u64::saturating_add);
        conn.prepare_cached(
            "UPDATE listener_scans SET rows_cost = MAX(rows_cost - ?2, 0), stored_bytes = MAX(stored_bytes - ?2, 0)
             WHERE host_id = ?1",
        )?
        .execute(params![host_id, to_i64(cost)])?;
        (costs.len(), cost)
    };
    conn.prepare_cached("UPDATE hosts SET stored_bytes = MAX(stored_bytes - ?2, 0) WHERE host_id = ?1")?
        .execute(params![host_id, to_i64(cost)])?;
    Ok((rows, cost))
}

/// The search, in the order answered (port, protocol, scope, process, host, address): the
/// order of the `listeners_in_order` index, so SQLite sorts nothing (`CROSS JOIN` keeps the
/// listeners the outer loop; `the_listener_search_sorts_nothing` holds the plan to it). With a
/// port, the index is searched for it; without, read whole.
macro_rules! search_sql {
    ($port:literal) => {
        concat!(
            "SELECT l.port, l.protocol, l.scope, l.process, l.address, l.interface, l.public, l.exe, l.user,
                    l.unit, s.rowid, l.host_id, s.sequence, s.collected_at
             FROM listeners l CROSS JOIN listener_scans s ON s.host_id = l.host_id
             WHERE ",
            $port,
            " AND (?2 IS NULL OR l.protocol = ?2) AND (?3 IS NULL OR l.process GLOB ?3)
             ORDER BY l.port, l.protocol, l.scope, l.process, l.host_id, l.address"
        )
    };
}
const SEARCH_PORT: &str = search_sql!("l.port = ?1");
const SEARCH_ALL: &str = search_sql!("?1 IS NULL");

/// `query`'s answer, from one read transaction, rows read one at a time: the answer is
/// bounded, the search as long as the listeners matched.
pub(super) fn search(conn: &Connection, query: &ListenerQuery) -> Result<FleetListeners, StoreError> {
    let tx = conn.unchecked_transaction().map_err(db_err)?;
    let (hosts_searched, hosts_without_scan) = hosts_not_indexed(&tx, "listener_scans")?;
    let mut answer = FleetListeners {
        hosts_searched,
        hosts_without_scan,
        hosts_matching: 0,
        services: Vec::new(),
        listeners: Vec::new(),
        omitted: 0,
        services_omitted: 0,
    };
    let protocol = query.protocol.map(|p| p.to_string());
    let process = query.process.as_deref().map(glob_pattern);
    // Each port's rows in turn, ports in order: the answer stays in the index's order.
    let ports: BTreeSet<u16> = query.ports.iter().copied().collect();
    let runs: Vec<Option<u16>> =
        if ports.is_empty() { vec![None] } else { ports.into_iter().map(Some).collect() };
    let mut counter = GroupCounter::new(MAX_FLEET_SERVICES);
    for port in runs {
        let mut stmt =
            tx.prepare_cached(if port.is_some() { SEARCH_PORT } else { SEARCH_ALL }).map_err(db_err)?;
        let mut rows = stmt.query(params![port, protocol, process]).map_err(db_err)?;
        while let Some(row) = rows.next().map_err(db_err)? {
            let host_id: String = row.get(11).map_err(db_err)?;
            let text = |i: usize| -> Result<Option<String>, StoreError> {
                let value: String = row.get(i).map_err(db_err)?;
                Ok((!value.is_empty()).then_some(value))
            };
            let scope = match text(2)? {
                Some(s) => Some(parse_scope(&s, &host_id)?),
                None => None,
            };
            if !query.scopes.is_empty() && !scope.is_some_and(|s| query.scopes.contains(&s)) {
                continue;
            }
            let public_addresses = parse_addresses(&text(6)?.unwrap_or_default(), &host_id)?;
            if query.public_only && public_addresses.is_empty() {
                continue;
            }
            let service = ServiceKey {
                port: u16::try_from(row.get::<_, i64>(0).map_err(db_err)?)
                    .map_err(|_| corrupt(&host_id, "a port out of range"))?,
                protocol: parse_protocol(&row.get::<_, String>(1).map_err(db_err)?, &host_id)?,
                scope,
                process: text(3)?,
            };
            counter.count(
                &service,
                row.get::<_, i64>(10).map_err(db_err)?,
                &mut answer.services,
                &mut answer.services_omitted,
                |service| ServiceCount { service, hosts: 1 },
                |s| &mut s.hosts,
            );
            if answer.listeners.len() >= MAX_FLEET_LISTENERS {
                answer.omitted += 1;
                continue;
            }
            let address: String = row.get(4).map_err(db_err)?;
            let collected_at: String = row.get(13).map_err(db_err)?;
            answer.listeners.push(HostListener {
                service,
                address: address.parse().map_err(|_| corrupt(&host_id, "an address"))?,
                interface: text(5)?,
                public_addresses,
                exe: text(7)?,
                user: text(8)?,
                systemd_unit: text(9)?,
                sequence: to_u64(row.get(12).map_err(db_err)?),
                collected_at: ts_parse(&collected_at, &host_id)?,
                host_id,
            });
        }
    }
    answer.hosts_matching = counter.hosts();
    Ok(answer)
}

fn corrupt(host_id: &str, what: &str) -> StoreError {
    StoreError::Corrupt {
        what: format!("the listeners of host {host_id}"),
        reason: format!("{what} unreadable"),
    }
}

fn parse_protocol(text: &str, host_id: &str) -> Result<Protocol, StoreError> {
    crate::store::parse_protocol(text).map_err(|_| corrupt(host_id, "a protocol"))
}

fn parse_scope(text: &str, host_id: &str) -> Result<ExposureScope, StoreError> {
    crate::store::parse_scope(text).map_err(|_| corrupt(host_id, "a scope"))
}

fn parse_addresses(text: &str, host_id: &str) -> Result<Vec<IpAddr>, StoreError> {
    text.split_ascii_whitespace()
        .map(|a| a.parse().map_err(|_| corrupt(host_id, "a public address")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::SqliteStore;
    use super::super::prune::Pruner;
    use super::*;
    use crate::store::sqlite::tests::*;
    use crate::store::{MAX_INDEXED_LISTENERS, NewReport, Retention, Store};
    use guestward_core::Timestamp;
    use guestward_network::{Exposure, NetworkReport, ProcessInfo, Socket, SocketOwner};

    fn row(port: u16, scope: ExposureScope, process: &str, address: &str) -> ListenerRow {
        ListenerRow {
            port,
            protocol: Protocol::Tcp,
            scope: Some(scope),
            process: (!process.is_empty()).then(|| process.to_string()),
            address: address.parse().unwrap(),
            interface: None,
            public_addresses: Vec::new(),
            exe: (!process.is_empty()).then(|| format!("/usr/sbin/{process}")),
            user: Some("root".into()),
            systemd_unit: None,
        }
    }

    fn with_listeners(host: &str, batch: &str, sequence: u64, rows: Vec<ListenerRow>) -> NewReport {
        let mut r = report_with(host, batch, sequence, "x");
        r.listeners = Some(ListenerIndex::from_rows(rows));
        r
    }

    fn ask(store: &SqliteStore, query: ListenerQuery) -> FleetListeners {
        store.listeners(&query).unwrap()
    }

    /// (host, port, address) of each row.
    fn rows(found: &FleetListeners) -> Vec<(String, u16, String)> {
        found.listeners.iter().map(|l| (l.host_id.clone(), l.service.port, l.address.to_string())).collect()
    }

    /// (port, process, hosts) of each service counted.
    fn services(found: &FleetListeners) -> Vec<(u16, Option<String>, u64)> {
        found.services.iter().map(|s| (s.service.port, s.service.process.clone(), s.hosts)).collect()
    }

    fn triples(list: &[(&str, u16, &str)]) -> Vec<(String, u16, String)> {
        list.iter().map(|(h, p, a)| (h.to_string(), *p, a.to_string())).collect()
    }

    const ALL: ExposureScope = ExposureScope::AllInterfaces;
    const LOOPBACK: ExposureScope = ExposureScope::Loopback;

    /// "Which hosts expose Redis?": by port (one or several), protocol, scope, process name
    /// (exact or a pattern) and public reachability; each service counted once per host; hosts
    /// whose reports carry no network scan counted, not guessed.
    #[test]
    fn the_fleets_listeners_are_searched_by_port_protocol_scope_process_and_reach() {
        let Fixture { mut conn, store, _dir, .. } = fixture();
        let now = Timestamp::now();
        let mut public = row(6379, ALL, "redis-server", "0.0.0.0");
        public.public_addresses = vec!["203.0.113.7".parse().unwrap()];
        let a = vec![
            row(22, ALL, "sshd", "0.0.0.0"),
            row(22, ALL, "sshd", "::"),
            public,
            ListenerRow { protocol: Protocol::Udp, ..row(53, LOOPBACK, "systemd-resolve", "127.0.0.53") },
        ];
        let b = vec![row(22, ALL, "sshd", "0.0.0.0"), row(6379, LOOPBACK, "redis-server", "127.0.0.1")];
        store_at(&mut conn, "a", &[with_listeners("a", "a1", 1, a)], now);
        store_at(&mut conn, "b", &[with_listeners("b", "b1", 1, b)], now);
        store_at(&mut conn, "c", &[report_with("c", "c1", 1, "x")], now);

        let everything = ask(&store, ListenerQuery::default());
        assert_eq!((everything.hosts_searched, everything.hosts_without_scan), (3, 1));
        assert_eq!(
            rows(&everything),
            triples(&[
                ("a", 22, "0.0.0.0"),
                ("a", 22, "::"),
                ("b", 22, "0.0.0.0"),
                ("a", 53, "127.0.0.53"),
                ("a", 6379, "0.0.0.0"),
                ("b", 6379, "127.0.0.1"),
            ]),
            "by port, protocol, scope (all-interfaces before loopback), process, host, address"
        );
        assert_eq!(
            services(&everything),
            [
                (22, Some("sshd".into()), 2),
                (53, Some("systemd-resolve".into()), 1),
                (6379, Some("redis-server".into()), 1),
                (6379, Some("redis-server".into()), 1),
            ],
            "a's two sshd addresses count once"
        );
        let redis = ask(&store, ListenerQuery { ports: vec![6379], ..Default::default() });
        assert_eq!(rows(&redis), triples(&[("a", 6379, "0.0.0.0"), ("b", 6379, "127.0.0.1")]));
        assert_eq!(redis.hosts_matching, 2);
        let exposed =
            ask(&store, ListenerQuery { ports: vec![6379], scopes: vec![ALL], ..Default::default() });
        assert_eq!(rows(&exposed), triples(&[("a", 6379, "0.0.0.0")]));
        assert_eq!(exposed.listeners[0].exe.as_deref(), Some("/usr/sbin/redis-server"));
        let reachable = ask(&store, ListenerQuery { public_only: true, ..Default::default() });
        assert_eq!(rows(&reachable), triples(&[("a", 6379, "0.0.0.0")]));
        assert_eq!(reachable.listeners[0].public_addresses, ["203.0.113.7".parse::<IpAddr>().unwrap()]);
        // Several ports, given in any order and twice, answered in port order.
        let two = ask(&store, ListenerQuery { ports: vec![6379, 53, 6379], ..Default::default() });
        assert_eq!(rows(&two).iter().map(|r| r.1).collect::<Vec<_>>(), [53, 6379, 6379]);
        let udp = ask(&store, ListenerQuery { protocol: Some(Protocol::Udp), ..Default::default() });
        assert_eq!(rows(&udp), triples(&[("a", 53, "127.0.0.53")]));
        let pattern = ask(&store, ListenerQuery { process: Some("redis*".into()), ..Default::default() });
        assert_eq!(pattern.hosts_matching, 2);
        let literal =
            ask(&store, ListenerQuery { process: Some("redis?server".into()), ..Default::default() });
        assert_eq!(literal.hosts_matching, 0, "? is not a wildcard");
        let none = ask(&store, ListenerQuery { ports: vec![3306], ..Default::default() });
        assert_eq!((none.listeners.len(), none.hosts_matching, none.hosts_searched), (0, 0, 3));
        assert_accounting_exact(&conn, "after the searches");
    }

    /// A host's scan comes from its newest report that carried one: a later report without a
    /// network section leaves it, a report stored out of order never touches it; an unchanged
    /// scan writes no row, a changed one replaces the host's rows.
    #[test]
    fn each_host_keeps_the_scan_of_its_newest_report_that_carried_one() {
        let Fixture { mut conn, store, _dir, .. } = fixture();
        let now = Timestamp::now();
        let ssh = || vec![row(22, ALL, "sshd", "0.0.0.0")];
        store_at(&mut conn, "h", &[with_listeners("h", "h2", 2, ssh())], now);
        let rowids = |conn: &Connection| -> Vec<i64> {
            conn.prepare("SELECT rowid FROM listeners ORDER BY rowid")
                .unwrap()
                .query_map([], |r| r.get(0))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap()
        };
        let first = rowids(&conn);
        store_at(&mut conn, "h", &[with_listeners("h", "h3", 3, ssh())], now);
        assert_eq!(rowids(&conn), first, "the same listeners: no row written");
        let found = ask(&store, ListenerQuery::default());
        assert_eq!(found.listeners[0].sequence, 3, "but the answer is as of the newest report");
        store_at(&mut conn, "h", &[report_with("h", "h4", 4, "x")], now);
        let mut late = with_listeners("h", "h1", 1, vec![row(80, ALL, "nginx", "0.0.0.0")]);
        late.collected_at = days_ago(1);
        store_at(&mut conn, "h", &[late], now);
        let found = ask(&store, ListenerQuery::default());
        assert_eq!((rows(&found), found.listeners[0].sequence), (triples(&[("h", 22, "0.0.0.0")]), 3));
        store_at(
            &mut conn,
            "h",
            &[with_listeners("h", "h5", 5, vec![row(80, ALL, "nginx", "0.0.0.0")])],
            now,
        );
        let found = ask(&store, ListenerQuery::default());
        assert_eq!((rows(&found), found.listeners[0].sequence), (triples(&[("h", 80, "0.0.0.0")]), 5));
        assert_eq!(count(&conn, "SELECT COUNT(*) FROM listeners WHERE host_id = ?1", "h"), 1);
        assert_accounting_exact(&conn, "after the replacements");
    }

    /// A forgotten host takes its listeners with it, in bounded steps with exact counts
    /// between them; a host delivering again meanwhile keeps its whole scan.
    #[test]
    fn a_forgotten_host_takes_its_listeners_with_it_in_bounded_steps() {
        let Fixture { mut conn, store, _dir, .. } = fixture();
        let many =
            || (0..MAX_INDEXED_LISTENERS as u16).map(|p| row(p + 1, ALL, "x", "0.0.0.0")).collect::<Vec<_>>();
        store_at(&mut conn, "gone", &[with_listeners("gone", "g1", 1, many())], days_ago(100));
        store_at(&mut conn, "back", &[with_listeners("back", "k1", 1, many())], days_ago(100));
        store_at(
            &mut conn,
            "alive",
            &[with_listeners("alive", "a1", 1, vec![row(22, ALL, "sshd", "::")])],
            Timestamp::now(),
        );
        let mut pruner = Pruner::new(
            Retention { max_age_days: 0, max_bytes_per_host: 0, forget_idle_hosts_after_days: 90 },
            true,
        );
        let held = |conn: &Connection, host: &str| {
            count(conn, "SELECT COUNT(*) FROM listeners WHERE host_id = ?1", host)
        };
        let mut steps = 0;
        while held(&conn, "back") == MAX_INDEXED_LISTENERS as i64 {
            pruner.step(&mut conn, Timestamp::now());
            assert_accounting_exact(&conn, "between steps");
            steps += 1;
            assert!(steps < 40, "forgetting did not reach back's listeners");
        }
        assert!(held(&conn, "back") > 0, "back's listeners are deleted in more than one step");
        store_at(&mut conn, "back", &[with_listeners("back", "k2", 2, many())], Timestamp::now());
        pruner.run_until_idle(&mut conn, Timestamp::now());
        assert_accounting_exact(&conn, "once idle");
        assert_eq!(count(&conn, "SELECT COUNT(*) FROM listener_scans WHERE host_id = ?1", "gone"), 0);
        assert_eq!(held(&conn, "gone"), 0);
        assert_eq!(held(&conn, "back"), MAX_INDEXED_LISTENERS as i64, "back delivered again: all of it");
        let found = ask(&store, ListenerQuery { ports: vec![22], ..Default::default() });
        assert_eq!(rows(&found), triples(&[("alive", 22, "::"), ("back", 22, "0.0.0.0")]));
        assert_eq!(found.hosts_searched, 2);
    }

    /// The answer is bounded in rows and services, the rest counted; the index of one host is
    /// bounded too, its repeats dropped.
    #[test]
    fn the_answer_and_each_hosts_index_are_bounded() {
        let Fixture { mut conn, store, _dir, .. } = fixture();
        let mut many: Vec<ListenerRow> =
            (0..MAX_INDEXED_LISTENERS as u16 + 10).map(|p| row(p, ALL, "x", "::")).collect();
        many.push(row(0, ALL, "x", "::"));
        let index = ListenerIndex::from_rows(many.clone());
        assert_eq!(
            (index.rows().len(), index.left_out()),
            (MAX_INDEXED_LISTENERS, 10),
            "a repeat is one row"
        );
        for host in ["a", "b", "c"] {
            let rows: Vec<ListenerRow> =
                many.iter().map(|r| ListenerRow { process: Some(host.into()), ..r.clone() }).collect();
            store_at(
                &mut conn,
                host,
                &[with_listeners(host, &format!("{host}1"), 1, rows)],
                Timestamp::now(),
            );
        }
        assert_eq!(count(&conn, "SELECT left_out FROM listener_scans WHERE host_id = ?1", "a"), 10);
        let found = ask(&store, ListenerQuery::default());
        let total = 3 * MAX_INDEXED_LISTENERS;
        assert_eq!(
            (found.listeners.len(), found.omitted as usize),
            (MAX_FLEET_LISTENERS, total - MAX_FLEET_LISTENERS)
        );
        assert_eq!(
            (found.services.len(), found.services_omitted as usize),
            (MAX_FLEET_SERVICES, total - MAX_FLEET_SERVICES)
        );
        assert_eq!(found.hosts_matching, 3);
        assert_accounting_exact(&conn, "with three full indexes");
    }

    /// A report's network section becomes rows: the owner is the lowest pid's process, with
    /// its executable, user and unit from the process table; a listener whose owner is unknown
    /// keeps its address and port; pids do not change the digest.
    #[test]
    fn a_network_scan_becomes_rows_with_the_owners_process() {
        let socket = |port: u16, address: &str, pids: &[u32]| Socket {
            protocol: Protocol::Tcp,
            family: guestward_network::Family::Ipv4,
            local_address: address.parse().unwrap(),
            local_port: port,
            remote_address: "0.0.0.0".parse().unwrap(),
            remote_port: 0,
            state: guestward_network::SocketState::Listen,
            inode: 1,
            uid: 0,
            bound_device: None,
            listening: true,
            exposure: Some(Exposure {
                scope: ALL,
                interface: None,
                dual_stack: None,
                public_addresses: vec!["198.51.100.1".parse().unwrap()],
            }),
            owners: pids.iter().map(|pid| SocketOwner { pid: *pid, name: format!("p{pid}") }).collect(),
            owner_unknown: None,
        };
        let process = |pid: u32, user: &str| ProcessInfo {
            pid,
            name: format!("p{pid}"),
            exe: Some(format!("/usr/bin/p{pid}")),
            cmdline: vec!["--secret-flag".into()],
            uid: Some(0),
            user: Some(user.into()),
            systemd_unit: Some("web.service".into()),
            start_time_ticks: Some(pid.into()),
        };
        let scan = |pids: [u32; 2]| {
            let report = NetworkReport {
                backend: guestward_network::Backend::Netlink,
                fallback_reason: None,
                listeners: vec![
                    socket(443, "0.0.0.0", &pids),
                    socket(443, "0.0.0.0", &pids),
                    socket(9, "10.0.0.5", &[]),
                ],
                connections: Vec::new(),
                unix_listeners: Vec::new(),
                processes: vec![process(pids[0], "root"), process(pids[1], "www-data")],
                interfaces: Vec::new(),
                owner_scan: Default::default(),
                truncated: false,
            };
            ListenerIndex::from_report(&report)
        };
        let index = scan([100, 200]);
        assert_eq!(index.rows().len(), 2, "two sockets of one service and address are one row");
        let web = &index.rows()[1];
        assert_eq!(
            (web.process.as_deref(), web.exe.as_deref(), web.user.as_deref(), web.systemd_unit.as_deref()),
            (Some("p100"), Some("/usr/bin/p100"), Some("root"), Some("web.service"))
        );
        assert_eq!(web.public_addresses, ["198.51.100.1".parse::<IpAddr>().unwrap()]);
        let unowned = &index.rows()[0];
        assert_eq!((unowned.port, unowned.process.as_deref(), unowned.exe.as_deref()), (9, None, None));
        assert!(!serde_json::to_string(&index).unwrap().contains("secret"), "no command line is indexed");
        let restarted = scan([300, 400]);
        assert_ne!(index.digest(), restarted.digest(), "another process name is another scan");
        let mut same = scan([100, 200]);
        assert_eq!(index.digest(), same.digest());
        same = ListenerIndex::from_rows(same.rows().iter().rev().cloned().collect());
        assert_eq!(index.digest(), same.digest(), "order does not matter");
    }

    /// The search sorts nothing: SQLite reads the listeners in the answer's order from their
    /// index, searched by port or read whole, before and after `ANALYZE`.
    #[test]
    fn the_listener_search_sorts_nothing() {
        let Fixture { mut conn, _dir, .. } = fixture();
        for host in ["a", "b", "c"] {
            let rows =
                vec![row(22, ALL, "sshd", "0.0.0.0"), row(6379, LOOPBACK, "redis-server", "127.0.0.1")];
            store_at(
                &mut conn,
                host,
                &[with_listeners(host, &format!("{host}1"), 1, rows)],
                Timestamp::now(),
            );
        }
        let plan = |conn: &Connection, sql: &str, port: Option<u16>, process: Option<&str>| -> Vec<String> {
            let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
            let rows = stmt
                .query_map(params![port, None::<String>, process.map(glob_pattern)], |r| {
                    r.get::<_, String>(3)
                })
                .unwrap();
            rows.collect::<Result<_, _>>().unwrap()
        };
        for analyzed in [false, true] {
            if analyzed {
                conn.execute_batch("ANALYZE").unwrap();
            }
            for (sql, port) in [(SEARCH_PORT, Some(22)), (SEARCH_ALL, None)] {
                for process in [None, Some("redis*")] {
                    let steps = plan(&conn, sql, port, process);
                    assert!(
                        !steps.iter().any(|s| s.contains("TEMP B-TREE")),
                        "{port:?} {process:?} (analyzed: {analyzed}): {steps:?}"
                    );
                    assert!(
                        steps[0].contains("USING INDEX listeners_in_order"),
                        "{port:?} {process:?} (analyzed: {analyzed}) starts from the listeners: {steps:?}"
                    );
                }
            }
        }
    }
}
