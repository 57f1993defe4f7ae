//! Helpers shared by the FIM integration tests.

use guestward_core::{AbsolutePath, Event, HostRoot};
use guestward_fim::config::{PathEntry, PathRule};
use guestward_fim::{Config, Fim, FimChange, Monitor};
use sha2::Digest;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Held while an inotify instance is created: the overflow test lowers the kernel's queue
/// size for the instant its own instance is created, and no other test's instance may pick up
/// that value.
static INOTIFY_INIT: Mutex<()> = Mutex::new(());

pub fn inotify_init_lock() -> MutexGuard<'static, ()> {
    INOTIFY_INIT.lock().unwrap_or_else(|e| e.into_inner())
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// A config watching `dir` (absolute) with the given rule tweaks.
pub fn config_for(dir: &Path, exclude: Vec<String>) -> Config {
    Config {
        paths: vec![PathEntry::Rule(PathRule {
            path: AbsolutePath::new(dir).unwrap(),
            recursive: true,
            exclude,
            attributes: None,
            max_file_size_bytes: None,
        })],
        ..Config::default()
    }
}

pub type Events = Arc<Mutex<Vec<Event>>>;

/// Starts a monitor on the live root and waits until it watches.
pub fn start(config: Config, state: &Path) -> (Monitor, Events) {
    let fim = Fim::new(config, HostRoot::live(), state).unwrap();
    let events: Events = Arc::default();
    let sink = Arc::clone(&events);
    let monitor = {
        let _g = inotify_init_lock();
        Monitor::start(fim, Box::new(move |e| sink.lock().unwrap().push(e.clone()))).unwrap()
    };
    assert!(monitor.wait_watching(Duration::from_secs(60)), "monitor did not start: {:?}", monitor.status());
    (monitor, events)
}

pub fn changes(events: &Events) -> Vec<FimChange> {
    events
        .lock()
        .unwrap()
        .iter()
        .filter(|e| e.kind == "fim.change")
        .map(|e| serde_json::from_value(e.data.clone()).unwrap())
        .collect()
}

/// Waits until `pred` holds for some change, returning it.
pub fn wait_change(events: &Events, timeout: Duration, pred: impl Fn(&FimChange) -> bool) -> FimChange {
    let end = Instant::now() + timeout;
    loop {
        if let Some(c) = changes(events).into_iter().find(|c| pred(c)) {
            return c;
        }
        if Instant::now() > end {
            panic!("no matching change within {timeout:?}; got:\n{:#?}", changes(events));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn p(path: &Path) -> String {
    path.display().to_string()
}

pub fn tree(files: &[(&str, &str)]) -> (tempfile::TempDir, PathBuf) {
    let dir = scratch();
    let root = dir.path().join("tree");
    std::fs::create_dir_all(&root).unwrap();
    for (name, content) in files {
        let f = root.join(name);
        std::fs::create_dir_all(f.parent().unwrap()).unwrap();
        std::fs::write(f, content).unwrap();
    }
    (dir, root)
}

/// A scratch directory, on tmpfs when there is one: creating 50k files on this machine's
/// loaded ext4 takes tens of seconds, on tmpfs a fraction of one. inotify works the same.
pub fn scratch() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir()
        && let Ok(d) = tempfile::Builder::new().prefix("guestward-fim-").tempdir_in(shm)
    {
        return d;
    }
    tempfile::tempdir().unwrap()
}
