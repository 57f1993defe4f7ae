//! Java archives: identification, nesting, Log4j rules.

use crate::common::*;
use guestward_core::Severity;
use guestward_lang::{Ecosystem, Evidence};
use zip::CompressionMethod;

fn ids(findings: &[guestward_core::Finding]) -> Vec<(&str, Severity, String)> {
    findings
        .iter()
        .map(|f| {
            (f.id.as_str(), f.severity, f.evidence["path_in_archive"].as_str().unwrap_or("").to_string())
        })
        .collect()
}

#[test]
fn fat_jar_with_stored_nested_log4j_is_flagged_with_the_path_inside() {
    let t = Tree::new();
    // Spring Boot stores nested jars uncompressed: they are read in place, not copied.
    let fat = zip_of(
        &[
            ("META-INF/MANIFEST.MF", b"Manifest-Version: 1.0\r\nStart-Class: demo.App\r\n\r\n".to_vec()),
            ("BOOT-INF/classes/demo/App.class", vec![0xca, 0xfe]),
            ("BOOT-INF/lib/log4j-core-2.14.1.jar", log4j_core_jar("2.14.1", true)),
            (
                "BOOT-INF/lib/log4j-api-2.14.1.jar",
                maven_jar("org.apache.logging.log4j", "log4j-api", "2.14.1"),
            ),
        ],
        CompressionMethod::Stored,
    );
    t.write("/opt/demo/demo-app-1.0.jar", fat);
    let (report, problems) = t.scan(&config(&[], &["/opt"], &[]));
    assert!(problems.is_empty(), "{problems:?}");
    let log4j = report.packages.iter().find(|p| p.name == "log4j-core").unwrap();
    assert_eq!(log4j.ecosystem, Ecosystem::Maven);
    assert_eq!(log4j.namespace.as_deref(), Some("org.apache.logging.log4j"));
    assert_eq!(log4j.version, "2.14.1");
    assert_eq!(log4j.location, "/opt/demo/demo-app-1.0.jar");
    assert_eq!(log4j.path_in_archive.as_deref(), Some("BOOT-INF/lib/log4j-core-2.14.1.jar"));
    assert_eq!(log4j.evidence, Evidence::PomProperties);
    // The outer jar has no pom.properties and a manifest without a version: its file name names it.
    let outer = report.packages.iter().find(|p| p.path_in_archive.is_none()).unwrap();
    assert_eq!(
        (outer.name.as_str(), outer.version.as_str(), outer.evidence),
        ("demo-app", "1.0", Evidence::FileName)
    );
    assert_eq!(report.stats.nested_archives, 2);

    let findings = guestward_lang::findings(&report);
    assert_eq!(
        ids(&findings),
        vec![("GW-LANG-001", Severity::Critical, "BOOT-INF/lib/log4j-core-2.14.1.jar".to_string())]
    );
    let f = &findings[0];
    assert_eq!(f.evidence["path"], "/opt/demo/demo-app-1.0.jar");
    assert_eq!(f.evidence["version"], "2.14.1");
    assert_eq!(f.evidence["jndi_lookup_class"], JNDI);
    assert!(f.remediation.contains("2.17.1"), "{}", f.remediation);
    assert_eq!(f.source, "packages");
}

#[test]
fn war_with_compressed_nested_jars_patched_and_fixed_versions() {
    let t = Tree::new();
    // maven-war-plugin deflates WEB-INF/lib: these are inflated into a temporary file.
    let war = zip_of(
        &[
            ("WEB-INF/web.xml", b"<web-app/>".to_vec()),
            // 2.14.1 with JndiLookup.class removed (the interim mitigation).
            ("WEB-INF/lib/log4j-core-2.14.1.jar", log4j_core_jar("2.14.1", false)),
            // 2.12.2 is the Java 7 fix: never flagged, although JndiLookup.class is still there.
            ("WEB-INF/lib/log4j-core-2.12.2.jar", log4j_core_jar("2.12.2", true)),
            ("WEB-INF/lib/log4j-core-2.17.1.jar", log4j_core_jar("2.17.1", true)),
        ],
        CompressionMethod::Deflated,
    );
    t.write("/srv/tomcat/webapps/shop.war", war);
    let (report, problems) = t.scan(&config(&[], &["/srv"], &[]));
    assert!(problems.is_empty(), "{problems:?}");
    let versions: Vec<&str> =
        report.of(Ecosystem::Maven).filter(|p| p.name == "log4j-core").map(|p| p.version.as_str()).collect();
    assert_eq!(versions, vec!["2.12.2", "2.14.1", "2.17.1"]);
    assert_eq!(report.jndi_lookup.len(), 2, "{:?}", report.jndi_lookup);
    let findings = guestward_lang::findings(&report);
    assert_eq!(
        ids(&findings),
        vec![("GW-LANG-001", Severity::Medium, "WEB-INF/lib/log4j-core-2.14.1.jar".to_string())]
    );
    assert!(findings[0].evidence["jndi_lookup_class"].is_null());
}

#[test]
fn ear_war_jar_chain_is_recorded_outermost_first() {
    let t = Tree::new();
    let war = zip_of(
        &[("WEB-INF/lib/log4j-core-2.0-beta9.jar", log4j_core_jar("2.0-beta9", true))],
        CompressionMethod::Deflated,
    );
    let ear = zip_of(&[("shop.war", war)], CompressionMethod::Stored);
    t.write("/opt/jboss/deploy/shop.ear", ear);
    let (report, problems) = t.scan(&config(&[], &["/opt"], &[]));
    assert!(problems.is_empty(), "{problems:?}");
    let findings = guestward_lang::findings(&report);
    assert_eq!(
        ids(&findings),
        vec![(
            "GW-LANG-001",
            Severity::Critical,
            "shop.war!/WEB-INF/lib/log4j-core-2.0-beta9.jar".to_string()
        )]
    );
}

#[test]
fn shaded_jndi_lookup_without_a_version_is_its_own_finding() {
    let t = Tree::new();
    let shaded = zip_of(
        &[
            ("com/vendor/shaded/org/apache/logging/log4j/core/lookup/JndiLookup.class", vec![0xca, 0xfe]),
            ("META-INF/MANIFEST.MF", b"Manifest-Version: 1.0\r\n\r\n".to_vec()),
        ],
        CompressionMethod::Deflated,
    );
    t.write("/opt/vendor/agent.jar", shaded);
    let (report, _) = t.scan(&config(&[], &["/opt"], &[]));
    let findings = guestward_lang::findings(&report);
    assert_eq!(findings.len(), 1, "{findings:?}");
    assert_eq!(findings[0].id, "GW-LANG-002");
    assert_eq!(findings[0].severity, Severity::High);
    assert_eq!(findings[0].evidence["class_entry"], format!("com/vendor/shaded/{JNDI}"));
}

#[test]
fn manifest_then_file_name_identify_jars_without_pom_properties() {
    let t = Tree::new();
    let manifest = b"Manifest-Version: 1.0\r\nBundle-SymbolicName: org.example.widget;singleton:=true\r\nBundle-Version: 3.2.1\r\nImplementation-Vendor-Id: org.example\r\n\r\n";
    t.write(
        "/usr/share/java/widget.jar",
        zip_of(&[("META-INF/MANIFEST.MF", manifest.to_vec())], CompressionMethod::Deflated),
    );
    t.write(
        "/usr/share/java/commons-io-2.11.0.jar",
        zip_of(&[("a.class", vec![1])], CompressionMethod::Deflated),
    );
    // Debian's unversioned symlink to the same jar: listed once.
    t.symlink("commons-io-2.11.0.jar", "/usr/share/java/commons-io.jar");
    let (report, problems) = t.scan(&config(&[], &["/usr/share/java"], &[]));
    assert!(problems.is_empty(), "{problems:?}");
    let got: Vec<(Option<&str>, &str, &str, Evidence)> = report
        .packages
        .iter()
        .map(|p| (p.namespace.as_deref(), p.name.as_str(), p.version.as_str(), p.evidence))
        .collect();
    assert_eq!(
        got,
        vec![
            (None, "commons-io", "2.11.0", Evidence::FileName),
            (Some("org.example"), "org.example.widget", "3.2.1", Evidence::Manifest),
        ]
    );
}

#[test]
fn nesting_depth_and_nested_size_are_bounded() {
    let t = Tree::new();
    let inner = log4j_core_jar("2.14.1", true);
    let level2 = zip_of(&[("lib/log4j-core-2.14.1.jar", inner.clone())], CompressionMethod::Stored);
    let level1 = zip_of(&[("lib/middle.jar", level2)], CompressionMethod::Stored);
    t.write("/opt/deep.jar", level1);
    let mut cfg = config(&[], &["/opt"], &[]);
    cfg.max_nesting_depth = 1;
    let (report, problems) = t.scan(&cfg);
    assert!(report.packages.iter().all(|p| p.name != "log4j-core"), "{:?}", report.packages);
    assert!(
        problems.iter().any(|p| p.code == "limit_reached" && p.message.contains("max_nesting_depth")),
        "{problems:?}"
    );

    let t = Tree::new();
    t.write(
        "/opt/app.war",
        zip_of(&[("WEB-INF/lib/log4j-core-2.14.1.jar", inner)], CompressionMethod::Deflated),
    );
    let mut cfg = config(&[], &["/opt"], &[]);
    cfg.max_nested_archive_bytes = 64;
    let (report, problems) = t.scan(&cfg);
    assert!(report.packages.iter().all(|p| p.name != "log4j-core"));
    assert!(
        problems.iter().any(|p| p.code == "too_large" && p.message.contains("max_nested_archive_bytes")),
        "{problems:?}"
    );
}

#[test]
fn corrupt_archives_are_problems_and_hide_nothing_else() {
    let t = Tree::new();
    t.write("/opt/broken.jar", b"PK\x03\x04 this is not really a zip");
    let mut truncated = log4j_core_jar("2.14.1", true);
    truncated.truncate(truncated.len() / 2);
    t.write("/opt/truncated.jar", truncated);
    t.write("/opt/good/log4j-core-2.15.0.jar", log4j_core_jar("2.15.0", true));
    let (report, problems) = t.scan(&config(&[], &["/opt"], &[]));
    assert_eq!(problems.iter().filter(|p| p.code == "malformed").count(), 2, "{problems:?}");
    assert!(problems.iter().any(|p| p.path == Some(t.here("/opt/broken.jar"))), "{problems:?}");
    assert_eq!(report.packages.len(), 1);
    assert_eq!(report.packages[0].version, "2.15.0");
    assert_eq!(guestward_lang::findings(&report).len(), 1);
}

#[test]
fn oversized_top_level_archive_is_not_opened() {
    let t = Tree::new();
    t.write("/opt/big.jar", log4j_core_jar("2.14.1", true));
    let mut cfg = config(&[], &["/opt"], &[]);
    cfg.max_archive_bytes = 100;
    let (report, problems) = t.scan(&cfg);
    assert!(report.packages.is_empty());
    assert_eq!(problems[0].code, "too_large", "{problems:?}");
}

/// Patches the uncompressed-size fields (local header and central directory) of `entry` in a
/// zip to `size`: a "zip bomb" whose headers lie about how much it inflates to.
fn lie_about_size(zip: &mut [u8], entry: &str, size: u32) {
    let name = entry.as_bytes();
    let mut patched = 0;
    for i in 0..zip.len().saturating_sub(46 + name.len()) {
        // Local file header: signature, name length at 26, name at 30, size at 22.
        if zip[i..i + 4] == [0x50, 0x4b, 0x03, 0x04] && zip[i + 30..].starts_with(name) {
            zip[i + 22..i + 26].copy_from_slice(&size.to_le_bytes());
            patched += 1;
        }
        // Central directory header: name at 46, uncompressed size at 24.
        if zip[i..i + 4] == [0x50, 0x4b, 0x01, 0x02] && zip[i + 46..].starts_with(name) {
            zip[i + 24..i + 28].copy_from_slice(&size.to_le_bytes());
            patched += 1;
        }
    }
    assert_eq!(patched, 2, "both headers of {entry} patched");
}

#[test]
fn nested_archive_lying_about_its_size_is_cut_at_the_cap() {
    let t = Tree::new();
    // 4 MiB of zeros inflate from a few KiB; the headers claim 100 bytes.
    let bomb = zip_of(&[("big.bin", vec![0u8; 4 * 1024 * 1024])], CompressionMethod::Stored);
    let mut war = zip_of(
        &[
            ("WEB-INF/lib/bomb.jar", bomb),
            ("WEB-INF/lib/log4j-core-2.14.1.jar", log4j_core_jar("2.14.1", true)),
        ],
        CompressionMethod::Deflated,
    );
    lie_about_size(&mut war, "WEB-INF/lib/bomb.jar", 100);
    t.write("/opt/bomb.war", war);
    let mut cfg = config(&[], &["/opt"], &[]);
    cfg.max_nested_archive_bytes = 64 * 1024;
    let (report, problems) = t.scan(&cfg);
    assert!(
        // Either our cap or the zip crate's own declared-size check stops the inflation.
        problems.iter().any(|p| p.message.contains("bomb.jar")
            && (p.message.contains("inflates to more than")
                || p.message.contains("larger than its declared"))),
        "{problems:?}"
    );
    // The rest of the war is still examined.
    assert!(report.packages.iter().any(|p| p.name == "log4j-core"), "{:?}", report.packages);
}

#[test]
fn corrupted_archives_never_panic_or_hang() {
    // Deterministic byte corruption of a fat jar (stored nested jars, so offsets inside the
    // nested central directories get hit too): every variant must scan to completion.
    let fat = zip_of(
        &[
            ("BOOT-INF/lib/log4j-core-2.14.1.jar", log4j_core_jar("2.14.1", true)),
            ("BOOT-INF/lib/x-1.0.jar", maven_jar("g", "x", "1.0")),
        ],
        CompressionMethod::Stored,
    );
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let t = Tree::new();
    let cfg = config(&[], &["/opt"], &[]);
    let mut scanned = 0;
    for round in 0..300 {
        let mut bytes = fat.clone();
        for _ in 0..(1 + next() % 8) {
            let at = usize::try_from(next() % bytes.len() as u64).unwrap();
            bytes[at] = u8::try_from(next() & 0xff).unwrap();
        }
        if round % 50 == 0 {
            bytes.truncate(usize::try_from(next() % bytes.len() as u64).unwrap());
        }
        t.write("/opt/fuzz.jar", &bytes);
        let (report, _problems) = t.scan(&cfg);
        assert!(report.stats.archives >= 1);
        scanned += 1;
    }
    assert_eq!(scanned, 300);
}

/// 8 MiB of zeros in a stored jar: deflated, a few KiB; inflated, 8 MiB per entry pointing at it.
fn big_nested_jar() -> Vec<u8> {
    zip_of(&[("zeros.bin", vec![0u8; 8 * 1024 * 1024])], CompressionMethod::Stored)
}

#[test]
fn overlapping_entries_zip_bomb_is_refused_before_inflating_and_a_legit_jar_is_still_read() {
    // Issue 9, item 4: 2000 central-directory entries sharing one deflate stream. Before the
    // fix each was inflated in turn (2000 x 8 MiB here, 2000 x 256 MiB in the report).
    let t = Tree::new();
    let bomb = overlapping_bomb(2000, &big_nested_jar());
    assert!(bomb.len() < 300 * 1024, "{}", bomb.len());
    t.write("/opt/bomb.jar", bomb);
    t.write("/opt/lib/log4j-core-2.14.1.jar", log4j_core_jar("2.14.1", true));
    let started = std::time::Instant::now();
    let (report, problems) = t.scan_within(20, &config(&[], &["/opt"], &[]));
    assert!(started.elapsed() < std::time::Duration::from_secs(10), "{:?}", started.elapsed());
    let bomb_problem = problems.iter().find(|p| p.code == "overlapping_entries").expect("bomb reported");
    assert_eq!(bomb_problem.path, Some(t.here("/opt/bomb.jar")));
    assert!(bomb_problem.message.contains("lib/n0.jar"), "{}", bomb_problem.message);
    assert!(bomb_problem.message.contains("more"), "{}", bomb_problem.message);
    assert_eq!(report.stats.nested_archives, 0);
    assert!(report.stats.inflated_bytes < 64 * 1024, "{:?}", report.stats);
    // The jar next to it is read as usual.
    assert!(report.packages.iter().any(|p| p.name == "log4j-core" && p.version == "2.14.1"));
    assert_eq!(report.jndi_lookup.len(), 1);
}

#[test]
fn overlapping_entries_inside_a_nested_archive_are_refused_too() {
    let t = Tree::new();
    let war = zip_of(
        &[
            ("WEB-INF/lib/bomb.jar", overlapping_bomb(500, &big_nested_jar())),
            ("WEB-INF/lib/log4j-core-2.14.1.jar", log4j_core_jar("2.14.1", true)),
        ],
        CompressionMethod::Stored,
    );
    t.write("/srv/app.war", war);
    let (report, problems) = t.scan_within(20, &config(&[], &["/srv"], &[]));
    let p = problems.iter().find(|p| p.code == "overlapping_entries").expect("nested bomb reported");
    assert_eq!(p.path, Some(t.here("/srv/app.war!/WEB-INF/lib/bomb.jar")));
    assert!(report.packages.iter().any(|p| p.name == "log4j-core"), "{:?}", report.packages);
    assert!(report.stats.inflated_bytes < 64 * 1024, "{:?}", report.stats);
}

#[test]
fn local_header_reaching_into_the_next_entry_is_refused_when_read() {
    // The central directory looks fine; the local header's own extra-field length moves the
    // data start so the entry's data runs into the next entry.
    let pom = "META-INF/maven/g/a/pom.properties";
    let mut jar = zip_of(
        &[(pom, b"groupId=g\nartifactId=a\nversion=1\n".to_vec()), ("x.class", vec![0xca, 0xfe])],
        CompressionMethod::Stored,
    );
    assert_eq!(&jar[0..4], b"PK\x03\x04");
    assert_eq!(&jar[30..30 + pom.len()], pom.as_bytes());
    jar[28..30].copy_from_slice(&8u16.to_le_bytes());
    let t = Tree::new();
    t.write("/opt/a-1.0.jar", jar);
    let (report, problems) = t.scan_within(20, &config(&[], &["/opt"], &[]));
    let p = problems.iter().find(|p| p.code == "overlapping_entries").expect("reported");
    assert!(p.message.contains(pom), "{}", p.message);
    // Identified by its file name instead; nothing was read from the overlapping bytes.
    assert_eq!(report.packages.len(), 1);
    assert_eq!(report.packages[0].evidence, Evidence::FileName);
}

#[test]
fn scan_wide_inflate_budget_leaves_further_archives_unexamined() {
    let t = Tree::new();
    // Each war holds one deflated nested jar inflating to about 200 KiB.
    let padded = zip_of(
        &[
            ("META-INF/maven/g/x/pom.properties", b"groupId=g\nartifactId=x\nversion=1.0\n".to_vec()),
            ("pad.bin", vec![7u8; 200 * 1024]),
        ],
        CompressionMethod::Stored,
    );
    for i in 0..4 {
        t.write(
            &format!("/opt/app{i}-1.0.war"),
            zip_of(&[("WEB-INF/lib/x-1.0.jar", padded.clone())], CompressionMethod::Deflated),
        );
    }
    let mut cfg = config(&[], &["/opt"], &[]);
    cfg.max_inflated_bytes_per_scan = 300 * 1024;
    let (report, problems) = t.scan_within(20, &cfg);
    assert!(report.stats.truncated);
    assert!(report.stats.archives_unexamined >= 2, "{:?}", report.stats);
    assert!(report.stats.inflated_bytes <= 300 * 1024 + 1, "{:?}", report.stats);
    let nested: Vec<_> = report.packages.iter().filter(|p| p.name == "x").collect();
    assert_eq!(nested.len(), 1, "{:?}", report.packages);
    let p = problems
        .iter()
        .find(|p| p.message.contains("max_inflated_bytes_per_scan"))
        .unwrap_or_else(|| panic!("{problems:?}"));
    assert_eq!(p.code, "limit_reached");
    assert!(p.path.as_deref().is_some_and(|path| path.starts_with(&t.here("/opt/app"))), "{p:?}");
}

#[test]
fn fifo_or_device_in_place_of_a_jar_is_refused_not_read() {
    let t = Tree::new();
    t.fifo("/opt/lib/evil-1.0.jar");
    t.write("/opt/lib/log4j-core-2.14.1.jar", log4j_core_jar("2.14.1", true));
    let root_user = nix::unistd::geteuid().is_root();
    if root_user {
        // /dev/zero's numbers: read for ever if opened and read.
        let dev = t.dir.path().join("opt/lib/zero-1.0.jar");
        nix::sys::stat::mknod(
            &dev,
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::from_bits_truncate(0o644),
            nix::sys::stat::makedev(1, 5),
        )
        .unwrap();
    } else {
        // The FIFO part still runs.
        guestward_core::testing::skip_or_fail(
            "device-node part of the special-files test",
            "not root, cannot mknod",
        );
    }
    let (report, problems) = t.scan_within(20, &config(&[], &["/opt"], &[]));
    let refused: Vec<(&str, Option<&str>)> = problems
        .iter()
        .filter(|p| p.code == "not_regular_file")
        .map(|p| (p.message.as_str(), p.path.as_deref()))
        .collect();
    let evil = t.here("/opt/lib/evil-1.0.jar");
    assert!(refused.iter().any(|(m, p)| m.contains("fifo") && *p == Some(evil.as_str())), "{problems:?}");
    if root_user {
        assert!(
            refused.iter().any(|(m, p)| m.contains("character device")
                && *p == Some(t.here("/opt/lib/zero-1.0.jar").as_str())),
            "{problems:?}"
        );
    }
    assert_eq!(report.stats.archives, 1);
    assert!(report.packages.iter().any(|p| p.name == "log4j-core"));
}

#[test]
fn zip64_directory_claiming_too_many_entries_is_refused_before_it_is_loaded() {
    // The zip reader loads the whole central directory (a few hundred bytes per entry) before
    // its entries can be counted; the claim is checked from the end records first. The memory
    // side is measured in walk::egg_info_flood_is_capped_and_memory_stays_bounded.
    let t = Tree::new();
    t.write("/opt/many.jar", zip64_entries(3000));
    t.write("/opt/few.jar", zip64_entries(10));
    let mut cfg = config(&[], &["/opt"], &[]);
    cfg.max_archive_entries = 1000;
    let (_, problems) = t.scan_within(20, &cfg);
    let many = problems.iter().find(|p| p.path == Some(t.here("/opt/many.jar"))).unwrap();
    assert_eq!(many.code, "too_large");
    assert!(
        many.message.contains("may hold up to 3000 entries") && many.message.contains("not opened"),
        "{many:?}"
    );
    // A consistent zip64 archive under the bound is opened (and these entries all claim
    // offset 0, which the overlap check then refuses).
    let few = problems.iter().find(|p| p.path == Some(t.here("/opt/few.jar"))).unwrap();
    assert_eq!(few.code, "overlapping_entries", "{few:?}");
}

#[test]
fn nested_archives_share_the_entry_bound_with_their_parents() {
    let t = Tree::new();
    let inner = zip_of(
        &(0..60)
            .map(|i| (format!("c{i}.class"), vec![1u8]))
            .collect::<Vec<_>>()
            .iter()
            .map(|(n, b)| (n.as_str(), b.clone()))
            .collect::<Vec<_>>(),
        CompressionMethod::Stored,
    );
    let mut outer: Vec<(String, Vec<u8>)> = (0..50).map(|i| (format!("o{i}.class"), vec![1u8])).collect();
    outer.push(("lib/inner-1.0.jar".into(), inner));
    let outer: Vec<(&str, Vec<u8>)> = outer.iter().map(|(n, b)| (n.as_str(), b.clone())).collect();
    t.write("/opt/outer-1.0.jar", zip_of(&outer, CompressionMethod::Stored));
    let mut cfg = config(&[], &["/opt"], &[]);
    cfg.max_archive_entries = 100;
    let (report, problems) = t.scan_within(20, &cfg);
    assert_eq!(report.packages.len(), 1, "{:?}", report.packages);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].path, Some(t.here("/opt/outer-1.0.jar!/lib/inner-1.0.jar")));
    assert!(problems[0].message.contains("with the archives it is nested in"), "{}", problems[0].message);
}
