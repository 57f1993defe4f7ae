use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize};
use std::borrow::Cow;
use std::path::{Path, PathBuf};

/// A path that must be absolute. Rejected at parse time, so a config file with a relative path
/// fails with the file, line and column of the offending value instead of surprising the daemon
/// later (a relative path would resolve against whatever directory systemd started us in).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct AbsolutePath(PathBuf);

impl AbsolutePath {
    /// Checks that `path` is absolute, has no `..` component and is free of NUL bytes.
    pub fn new(path: impl Into<PathBuf>) -> Result<Self, String> {
        let path = path.into();
        if !path.is_absolute() {
            return Err(format!("`{}` must be an absolute path (start with /)", path.display()));
        }
        // A `..` reads as the parent, but after a symlink it is the link target's parent, and
        // the agent resolves paths component by component without following links: a watched
        // `/etc/../etc/hostname` once matched nothing, silently. Say what is meant instead.
        if path.components().any(|c| c == std::path::Component::ParentDir) {
            return Err(format!("`{}` must not contain `..`: write the path it stands for", path.display()));
        }
        if path.as_os_str().as_encoded_bytes().contains(&0) {
            return Err("path contains a NUL byte".to_string());
        }
        Ok(Self(path))
    }

    /// A built-in default. Only for literals written in our own source: a relative literal is a
    /// programming error caught by every test that builds a default config.
    pub fn from_static(path: &'static str) -> Self {
        assert!(path.starts_with('/'), "built-in path {path:?} must be absolute");
        Self(PathBuf::from(path))
    }

    /// The path itself.
    pub fn as_path(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for AbsolutePath {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl<'de> Deserialize<'de> for AbsolutePath {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = PathBuf::deserialize(deserializer)?;
        Self::new(raw).map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for AbsolutePath {
    fn schema_name() -> Cow<'static, str> {
        "AbsolutePath".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({ "type": "string", "pattern": "^/" })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_are_rejected_with_the_path_named() {
        let err = AbsolutePath::new("var/lib").unwrap_err();
        assert!(err.contains("`var/lib`"), "{err}");
        assert_eq!(AbsolutePath::new("/var/lib").unwrap().as_path(), Path::new("/var/lib"));
    }

    #[test]
    fn parent_components_are_rejected_and_other_spellings_kept() {
        for bad in ["/etc/../etc/hostname", "/../etc", "/etc/.."] {
            let err = AbsolutePath::new(bad).unwrap_err();
            assert!(err.contains(&format!("`{bad}` must not contain `..`")), "{err}");
        }
        // `.`, doubled slashes and names that merely start with dots are fine.
        for ok in ["/etc/./group", "/etc//group", "/srv/..data", "/srv/x.."] {
            AbsolutePath::new(ok).unwrap();
        }
    }
}
