//! rpmvercmp against rpm itself (Debian's `rpm` package, rpm.vercmp in its Lua).

use guestward_rpmdb::vercmp::rpmvercmp;
use std::process::Command;

#[test]
fn agrees_with_the_installed_rpm() {
    let parts = ["", "0", "1", "01", "10", "a", "b", "~", "^", ".", "_", "rc", "~rc", "^git", "Z", "9"];
    // Pairs of short generated strings plus the classics.
    let mut versions: Vec<String> = Vec::new();
    for a in parts {
        for b in ["1", "a", "~", "^", ".1", "0"] {
            versions.push(format!("1.{a}{b}"));
        }
    }
    versions
        .extend(["1.0~rc1^git1", "2.0.1a", "5.5p10", "10.0001", "1_0", "1.0^", "6.0.rc1"].map(String::from));
    let mut script = String::from("%{lua:");
    let mut pairs = Vec::new();
    for (i, a) in versions.iter().enumerate() {
        for b in versions.iter().skip(i % 7).step_by(7) {
            script.push_str(&format!("print(rpm.vercmp(\"{a}\", \"{b}\")..\"|\") "));
            pairs.push((a.clone(), b.clone()));
        }
    }
    script.push('}');
    let out = match Command::new("rpm").arg("--eval").arg(&script).output() {
        Ok(o) if o.status.success() => o,
        Ok(o) => panic!("rpm --eval failed: {}", String::from_utf8_lossy(&o.stderr)),
        Err(e) => {
            guestward_core::testing::skip_or_fail(
                "rpmvercmp_matches_rpm",
                &format!("rpm cannot be run ({e}); apt-get install rpm to compare with rpm itself"),
            );
            return;
        }
    };
    let text = String::from_utf8(out.stdout).unwrap();
    let results: Vec<&str> = text.trim().trim_end_matches('|').split('|').collect();
    assert_eq!(results.len(), pairs.len(), "rpm printed {text:?}");
    for ((a, b), r) in pairs.iter().zip(results) {
        let want: i32 = r.trim().parse().unwrap();
        assert_eq!(rpmvercmp(a, b) as i32, want, "rpmvercmp({a:?}, {b:?})");
    }
    assert!(pairs.len() > 500, "{}", pairs.len());
}
