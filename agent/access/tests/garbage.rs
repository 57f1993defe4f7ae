//! Every file the collector reads may be written by an attacker: pseudo-random bytes (and
//! near-valid lines cut at random points) in each of them never panic the scan, and nothing
//! of a planted secret comes out.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use guestward_access::Config;
use guestward_core::HostRoot;

/// xorshift64*: deterministic, so a failure reproduces with the printed seed.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> usize {
        usize::try_from(self.next() % n).unwrap()
    }
}

const SEEDS: &[&str] = &[
    "root:x:0:0:root:/root:/bin/bash\n",
    "alice:$6$Fx7qZ2mN$fBan08iLKDc80Ws5:20000::::::\n",
    "Include /etc/ssh/sshd_config.d/*.conf\nPermitRootLogin \"yes\nMatch User a\n",
    "from=\"a,b\",command=\"x ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl c\n",
    "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQ\n",
    "deploy ALL=(ALL) NOPASSWD:ALL, (root \\\n@includedir /etc/sudoers.d\n#include ../../../../etc/shadow\n",
    "[default]\naws_access_key_id = AKIAIOSFODNN7EXAMPLE\naws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\n",
    "export AWS_SECRET_ACCESS_KEY='wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\nAWS_ACCESS_KEY_ID=\"AKIA\n",
];

/// Secrets live in shadow and credential files; configuration files (sudoers, sshd_config,
/// units) are reported as written, so they get the seeds without secrets.
fn garbage(rng: &mut Rng, secrets: bool) -> Vec<u8> {
    let seeds: Vec<&str> = SEEDS
        .iter()
        .copied()
        .filter(|s| {
            secrets || !(s.contains("wJalr") || s.contains("$6$") || s.contains("AKIAIOSFODNN7EXAMPLE"))
        })
        .collect();
    let mut out = Vec::new();
    for _ in 0..rng.below(12) {
        let seed = seeds[rng.below(seeds.len() as u64)].as_bytes();
        let cut = rng.below(seed.len() as u64 + 1);
        out.extend_from_slice(&seed[..cut]);
        for _ in 0..rng.below(4) {
            out.push(u8::try_from(rng.next() & 0xff).unwrap());
        }
    }
    out
}

#[test]
fn random_files_never_panic_the_scan_or_leak_a_secret() {
    let files = [
        "etc/passwd",
        "etc/shadow",
        "etc/ssh/sshd_config",
        "etc/ssh/sshd_config.d/a.conf",
        "etc/sudoers",
        "etc/sudoers.d/x",
        "root/.aws/credentials",
        "root/.ssh/authorized_keys",
        "srv/app/.env",
        "etc/systemd/system/a.service",
    ];
    for seed in 1..=150u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        let dir = tempfile::tempdir().unwrap();
        for f in files {
            let path = dir.path().join(f);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            let secrets =
                ["etc/shadow", "root/.aws/credentials", "srv/app/.env", "root/.ssh/authorized_keys"]
                    .contains(&f);
            std::fs::write(&path, garbage(&mut rng, secrets)).unwrap();
        }
        let root = HostRoot::new(dir.path()).unwrap();
        let (report, problems) = guestward_access::scan(&Config::default(), &root);
        let text = format!("{}{problems:?}", serde_json::to_string(&report).unwrap());
        for secret in ["wJalrXUtnFEMI", "fBan08iLKDc80Ws5", "AKIAIOSFODNN7EXAMPLE"] {
            assert!(!text.contains(secret), "seed {seed}: {secret} in {text}");
        }
        let _ = guestward_access::findings(&report);
    }
}
