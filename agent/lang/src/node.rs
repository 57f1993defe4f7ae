//! Node.js packages: `node_modules/<name>/package.json` and
//! `node_modules/@scope/<name>/package.json`, at any depth (nested dependencies included).
//! A project's own package.json (not under `node_modules`) describes the application, not an
//! installed dependency, and is not listed.

use crate::model::{Ecosystem, Evidence, LangPackage};
use crate::walk::Walker;
use serde::Deserialize;
use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
use std::fmt;
use std::path::Path;

/// The two fields we read from a package.json.
///
/// Node reads package.json with `JSON.parse`, where a key given twice takes its last value; a
/// derived `Deserialize` would instead refuse the whole file ("duplicate field"), and a package
/// could hide from the inventory with `{"name": "x", "name": "x"}` while Node and npm load it
/// fine (issue 9, item 19). So the object is read key by key and the last value wins; every
/// other key is skipped without being kept.
#[derive(Debug, Default, PartialEq)]
pub struct PackageJson {
    /// `name` (the last one given).
    pub name: Option<String>,
    /// `version` (the last one given).
    pub version: Option<String>,
}

impl<'de> Deserialize<'de> for PackageJson {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct LastWins;
        impl<'de> Visitor<'de> for LastWins {
            type Value = PackageJson;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a package.json object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<PackageJson, A::Error> {
                let mut out = PackageJson::default();
                while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                    match key.as_ref() {
                        "name" => out.name = map.next_value()?,
                        "version" => out.version = map.next_value()?,
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(out)
            }
        }
        deserializer.deserialize_map(LastWins)
    }
}

/// Parses package.json bytes as Node does: a leading UTF-8 byte-order mark is skipped (Node
/// strips it before `JSON.parse`; editors on Windows write one), and for a key given twice the
/// last value wins.
pub fn parse_package_json(bytes: &[u8]) -> Result<PackageJson, serde_json::Error> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    serde_json::from_slice(bytes)
}

/// Whether `package_json` (a real path) sits in an installed package directory.
pub(crate) fn is_installed_package_json(package_json: &Path) -> bool {
    let Some(pkg_dir) = package_json.parent() else {
        return false;
    };
    let Some(parent) = pkg_dir.parent() else {
        return false;
    };
    let is_node_modules = |p: &Path| p.file_name().is_some_and(|n| n == "node_modules");
    if is_node_modules(parent) {
        return true;
    }
    parent.file_name().is_some_and(|n| n.to_string_lossy().starts_with('@'))
        && parent.parent().is_some_and(is_node_modules)
}

/// Splits `@scope/name` into (`scope`, `name`).
pub fn split_scope(full: &str) -> (Option<String>, String) {
    match full.strip_prefix('@').and_then(|rest| rest.split_once('/')) {
        Some((scope, name)) => (Some(scope.to_string()), name.to_string()),
        None => (None, full.to_string()),
    }
}

/// Reads one package.json (size-capped, through the door: a FIFO or device is refused).
pub(crate) fn read_package_json(walker: &mut Walker<'_>, real: &Path) {
    let host = walker.host_of(real);
    let bytes = match walker.root.read_capped(&host, walker.config.max_metadata_bytes) {
        Ok(b) => b,
        Err(e) => return walker.fs_problem(&e, real),
    };
    let parsed = match parse_package_json(&bytes) {
        Ok(p) => p,
        Err(e) => {
            let msg = format!("{}: not valid package.json ({e})", walker.shown(real));
            let line = u64::try_from(e.line()).unwrap_or(0);
            let p =
                guestward_core::Problem::new("malformed", msg).with_path(walker.shown(real)).with_line(line);
            walker.out.problem(p);
            return;
        }
    };
    let dir = real.parent().unwrap_or(real);
    // npm writes package.json without a name for some bundled stubs; the directory names it.
    let full = parsed.name.filter(|n| !n.is_empty()).unwrap_or_else(|| {
        let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        match dir.parent().and_then(|p| p.file_name()).map(|s| s.to_string_lossy().into_owned()) {
            Some(scope) if scope.starts_with('@') => format!("{scope}/{name}"),
            _ => name,
        }
    });
    let (namespace, name) = split_scope(&full);
    let location = walker.shown(dir);
    walker.out.package(LangPackage {
        ecosystem: Ecosystem::Npm,
        namespace,
        name,
        version: parsed.version.unwrap_or_default(),
        location,
        path_in_archive: None,
        installer: None,
        evidence: Evidence::PackageJson,
    });
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn only_package_json_of_installed_packages() {
        assert!(is_installed_package_json(Path::new("/p/node_modules/left-pad/package.json")));
        assert!(is_installed_package_json(Path::new("/p/node_modules/@types/node/package.json")));
        assert!(!is_installed_package_json(Path::new("/p/app/package.json")));
        assert!(!is_installed_package_json(Path::new("/p/node_modules/x/lib/package.json")));
        assert!(!is_installed_package_json(Path::new("/p/@scope/x/package.json")));
    }

    #[test]
    fn byte_order_mark_and_duplicate_keys_are_read_as_node_does() {
        let parsed = parse_package_json(b"\xEF\xBB\xBF{\"name\":\"a\",\"version\":\"1.0.0\"}").unwrap();
        assert_eq!(parsed, PackageJson { name: Some("a".into()), version: Some("1.0.0".into()) });
        let parsed = parse_package_json(
            br#"{"name":"decoy","version":"1","deps":{"name":"x"},"name":"real","version":"2"}"#,
        )
        .unwrap();
        assert_eq!(parsed, PackageJson { name: Some("real".into()), version: Some("2".into()) });
        // Still strict where Node is: not an object, or a BOM in the middle, is an error.
        assert!(parse_package_json(b"[1]").is_err());
        assert!(parse_package_json(b" \xEF\xBB\xBF{}").is_err());
    }

    #[test]
    fn scopes_split() {
        assert_eq!(split_scope("@types/node"), (Some("types".into()), "node".into()));
        assert_eq!(split_scope("lodash"), (None, "lodash".into()));
    }
}
