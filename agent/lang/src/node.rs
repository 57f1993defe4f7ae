//! Node.js packages: `node_modules/<name>/package.json` and
//! `node_modules/@scope/<name>/package.json`, at any depth (nested dependencies included).
//! A project's own package.json (not under `node_modules`) describes the application, not an
//! installed dependency, and is not listed.

use crate::model::{Ecosystem, Evidence, LangPackage};
use crate::walk::Walker;
use serde::Deserialize;
use std::path::Path;

#[derive(Deserialize)]
struct PackageJson {
    name: Option<String>,
    version: Option<String>,
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

/// Reads one package.json (size-capped).
pub(crate) fn read_package_json(walker: &mut Walker<'_>, real: &Path, out: &mut Vec<LangPackage>) {
    let host = walker.host_of(real);
    let bytes = match walker.root.read_capped(&host, walker.config.max_metadata_bytes) {
        Ok(b) => b,
        Err(e) => {
            let mut p = e.to_problem();
            p.path = Some(walker.shown(real));
            walker.problems.push(p);
            return;
        }
    };
    let parsed: PackageJson = match serde_json::from_slice(&bytes) {
        Ok(p) => p,
        Err(e) => {
            let msg = format!("{}: not valid package.json ({e})", walker.shown(real));
            let line = u64::try_from(e.line()).unwrap_or(0);
            walker.problems.push(
                guestward_core::Problem::new("malformed", msg).with_path(walker.shown(real)).with_line(line),
            );
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
    out.push(LangPackage {
        ecosystem: Ecosystem::Npm,
        namespace,
        name,
        version: parsed.version.unwrap_or_default(),
        location: walker.shown(dir),
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
    fn scopes_split() {
        assert_eq!(split_scope("@types/node"), (Some("types".into()), "node".into()));
        assert_eq!(split_scope("lodash"), (None, "lodash".into()));
    }
}
