//! Builders for test trees and archives.

use guestward_core::HostRoot;
use guestward_core::{AbsolutePath, Problem};
use guestward_lang::{Config, LangReport};
use std::io::Write;
use std::path::Path;
use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, ZipWriter};

/// A scratch root with a HostRoot on it.
pub struct Tree {
    pub dir: tempfile::TempDir,
    pub root: HostRoot,
}

impl Tree {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = HostRoot::new(dir.path()).unwrap();
        Self { dir, root }
    }

    /// Writes `bytes` at host path `rel` (relative to the root), creating parents.
    pub fn write(&self, rel: &str, bytes: impl AsRef<[u8]>) {
        let path = self.dir.path().join(rel.trim_start_matches('/'));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }

    pub fn mkdir(&self, rel: &str) {
        std::fs::create_dir_all(self.dir.path().join(rel.trim_start_matches('/'))).unwrap();
    }

    pub fn symlink(&self, target: impl AsRef<Path>, rel: &str) {
        let link = self.dir.path().join(rel.trim_start_matches('/'));
        std::fs::create_dir_all(link.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(target, link).unwrap();
    }

    pub fn scan(&self, config: &Config) -> (LangReport, Vec<Problem>) {
        guestward_lang::scan(&self.root, config)
    }
}

pub fn paths(list: &[&str]) -> Vec<AbsolutePath> {
    list.iter().map(|p| AbsolutePath::new(*p).unwrap()).collect()
}

/// A config walking only the given roots (Python, Java, Node.js).
pub fn config(python: &[&str], java: &[&str], node: &[&str]) -> Config {
    Config {
        python_roots: paths(python),
        java_roots: paths(java),
        node_roots: paths(node),
        ..Config::without_roots()
    }
}

/// A zip archive from (name, bytes) entries, all stored or all deflated.
pub fn zip_of(entries: &[(&str, Vec<u8>)], method: CompressionMethod) -> Vec<u8> {
    let mut writer = ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = SimpleFileOptions::default().compression_method(method);
    for (name, bytes) in entries {
        writer.start_file(*name, options).unwrap();
        writer.write_all(bytes).unwrap();
    }
    writer.finish().unwrap().into_inner()
}

pub const JNDI: &str = "org/apache/logging/log4j/core/lookup/JndiLookup.class";

/// A log4j-core jar as Maven builds it, with or without the JndiLookup class.
pub fn log4j_core_jar(version: &str, with_jndi: bool) -> Vec<u8> {
    let mut entries = vec![
        ("META-INF/MANIFEST.MF", format!("Manifest-Version: 1.0\r\nImplementation-Title: Apache Log4j Core\r\nImplementation-Version: {version}\r\n\r\n").into_bytes()),
        (
            "META-INF/maven/org.apache.logging.log4j/log4j-core/pom.properties",
            format!("#Created by Apache Maven\ngroupId=org.apache.logging.log4j\nartifactId=log4j-core\nversion={version}\n").into_bytes(),
        ),
        ("org/apache/logging/log4j/core/Logger.class", vec![0xca, 0xfe, 0xba, 0xbe, 0, 0, 0, 52]),
    ];
    if with_jndi {
        entries.push((JNDI, vec![0xca, 0xfe, 0xba, 0xbe, 1, 2, 3, 4]));
    }
    zip_of(&entries, CompressionMethod::Deflated)
}

/// A plain library jar identified by pom.properties.
pub fn maven_jar(group: &str, artifact: &str, version: &str) -> Vec<u8> {
    let name = format!("META-INF/maven/{group}/{artifact}/pom.properties");
    let props = format!("groupId={group}\nartifactId={artifact}\nversion={version}\n");
    zip_of(&[(name.as_str(), props.into_bytes())], CompressionMethod::Deflated)
}
