//! Any bytes as the text files the scan parses whole, each a file a local user or a package
//! may have written: dpkg's `status` (the inventory's reading), `os-release`, a jar's
//! `pom.properties` and `MANIFEST.MF`, a `package.json`, a Python `METADATA`/`PKG-INFO`, and
//! each line as an `authorized_keys` line.
#![no_main]

use guestward_access::Location;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = guestward_packages::dpkg::parse_status(data, "/fuzz");
    let _ = guestward_lang::node::parse_package_json(data);
    let _ = guestward_lang::python::parse_metadata_headers(data);
    let text = String::from_utf8_lossy(data);
    let _ = guestward_host::parse_os_release(&text);
    let _ = guestward_lang::java::parse_properties(&text);
    let _ = guestward_lang::java::parse_manifest(&text);
    for (i, line) in text.lines().enumerate() {
        let at = Location { file: "/fuzz".into(), line: u32::try_from(i + 1).unwrap_or(u32::MAX) };
        let _ = guestward_access::keys::parse_line("fuzz", at, line);
    }
});
