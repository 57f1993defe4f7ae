//! "Are we on EC2?" from local firmware data, before any packet goes to 169.254.169.254.
//!
//! Off EC2, asking IMDS costs a connect timeout per attempt and may reach whatever else
//! answers on that link-local address (another cloud's metadata service, a hostile container).
//! DMI data is local, instant and good enough: Nitro instances put the instance id in
//! `board_asset_tag` and `Amazon EC2` in `sys_vendor`; Xen instances have a UUID starting with
//! `ec2` in `/sys/hypervisor/uuid` and `product_uuid` (sometimes byte-swapped).
//!
//! The file reads are part of the `collect` feature; the verdict's type and the instance-id
//! shape check are pure.

#[cfg(feature = "collect")]
use guestward_core::HostRoot;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[cfg(feature = "collect")]
const DMI_DIR: &str = "/sys/class/dmi/id";
#[cfg(feature = "collect")]
const SMALL_FILE: u64 = 4096;

/// Container runtime sockets: their presence means containers may need IMDS through an extra
/// hop, which makes a hop limit above 1 legitimate.
#[cfg(feature = "collect")]
const CONTAINER_RUNTIME_SOCKETS: &[&str] = &[
    "/run/containerd/containerd.sock",
    "/var/run/docker.sock",
    "/run/docker.sock",
    "/run/crio/crio.sock",
    "/run/podman/podman.sock",
];

/// Whether a container runtime's socket exists under `root`.
#[cfg(feature = "collect")]
pub fn container_runtime_present(root: &HostRoot) -> bool {
    CONTAINER_RUNTIME_SOCKETS.iter().any(|p| root.exists(p))
}

/// The verdict of the local pre-check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Ec2Hint {
    /// Whether local data says this is an EC2 instance.
    pub is_ec2: bool,
    /// Which file and value decided it, in words.
    pub reason: String,
    /// The instance id from `board_asset_tag`, when the firmware carries it (Nitro).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_id: Option<String>,
}

#[cfg(feature = "collect")]
fn read_trimmed(root: &HostRoot, name: &str) -> Option<String> {
    root.read_string_capped(format!("{DMI_DIR}/{name}"), SMALL_FILE).ok().map(|s| s.trim().to_string())
}

/// Whether `s` looks like an EC2 instance id (`i-` and 8 or 17 hex digits).
pub fn looks_like_instance_id(s: &str) -> bool {
    s.strip_prefix("i-").is_some_and(|hex| {
        (hex.len() == 8 || hex.len() == 17)
            && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

#[cfg(feature = "collect")]
fn uuid_says_ec2(uuid: &str) -> bool {
    let u = uuid.trim().to_ascii_lowercase();
    if u.starts_with("ec2") {
        return true;
    }
    // SMBIOS 2.6+ stores the first three UUID fields little-endian; some kernels show them
    // byte-swapped, so `ec2e1916-...` appears as `16192eec-...`.
    let first = u.get(0..8).unwrap_or("");
    if first.len() == 8 && first.bytes().all(|b| b.is_ascii_hexdigit()) {
        let swapped: String = (0..4).rev().filter_map(|i| first.get(i * 2..i * 2 + 2)).collect();
        return swapped.starts_with("ec2");
    }
    false
}

/// The instance id written by the firmware (Nitro `board_asset_tag`), without any network
/// request: the cheap host identity the daemon can prefer over `/etc/machine-id`.
#[cfg(feature = "collect")]
pub fn instance_id_from_firmware(root: &HostRoot) -> Option<String> {
    read_trimmed(root, "board_asset_tag").filter(|t| looks_like_instance_id(t))
}

/// Decides from local files only whether this looks like EC2. Never touches the network and
/// reads at most five small files.
#[cfg(feature = "collect")]
pub fn ec2_hint(root: &HostRoot) -> Ec2Hint {
    if let Some(id) = instance_id_from_firmware(root) {
        return Ec2Hint {
            is_ec2: true,
            reason: format!("{DMI_DIR}/board_asset_tag is the instance id {id}"),
            instance_id: Some(id),
        };
    }
    let vendor = read_trimmed(root, "sys_vendor");
    if let Some(v) = &vendor
        && v == "Amazon EC2"
    {
        return Ec2Hint {
            is_ec2: true,
            reason: format!("{DMI_DIR}/sys_vendor is `Amazon EC2`"),
            instance_id: None,
        };
    }
    if let Some(u) =
        root.read_string_capped("/sys/hypervisor/uuid", SMALL_FILE).ok().filter(|u| uuid_says_ec2(u))
    {
        return Ec2Hint {
            is_ec2: true,
            reason: format!("/sys/hypervisor/uuid starts with ec2 ({})", u.trim()),
            instance_id: None,
        };
    }
    let product_uuid = read_trimmed(root, "product_uuid");
    if let Some(u) = product_uuid.as_deref().filter(|u| uuid_says_ec2(u)) {
        return Ec2Hint {
            is_ec2: true,
            reason: format!("{DMI_DIR}/product_uuid starts with ec2 ({u})"),
            instance_id: None,
        };
    }
    let bios_version = read_trimmed(root, "bios_version");
    if let Some(b) = bios_version.as_deref().filter(|b| b.to_ascii_lowercase().contains("amazon")) {
        return Ec2Hint {
            is_ec2: true,
            reason: format!("{DMI_DIR}/bios_version is `{b}`"),
            instance_id: None,
        };
    }
    let reason = match (&vendor, &product_uuid) {
        (None, None) if !root.exists(DMI_DIR) && !root.exists("/sys/hypervisor/uuid") => {
            format!("no DMI data ({DMI_DIR} absent) and no /sys/hypervisor/uuid: not an EC2 instance")
        }
        (Some(v), _) => {
            format!("{DMI_DIR}/sys_vendor is `{v}`, not `Amazon EC2`, and no EC2 UUID or asset tag")
        }
        _ => "no EC2 asset tag, vendor or UUID in DMI or /sys/hypervisor".to_string(),
    };
    Ec2Hint { is_ec2: false, reason, instance_id: None }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[cfg(feature = "collect")]
    fn root_with(files: &[(&str, &str)]) -> (tempfile::TempDir, HostRoot) {
        let dir = tempfile::tempdir().unwrap();
        for (p, c) in files {
            let full = dir.path().join(p.trim_start_matches('/'));
            std::fs::create_dir_all(full.parent().unwrap()).unwrap();
            std::fs::write(full, c).unwrap();
        }
        let root = HostRoot::new(dir.path()).unwrap();
        (dir, root)
    }

    #[test]
    #[cfg(feature = "collect")]
    fn nitro_asset_tag_gives_the_instance_id() {
        let (_d, root) = root_with(&[("/sys/class/dmi/id/board_asset_tag", "i-0123456789abcdef0\n")]);
        let h = ec2_hint(&root);
        assert!(h.is_ec2);
        assert_eq!(h.instance_id.as_deref(), Some("i-0123456789abcdef0"));
        assert_eq!(instance_id_from_firmware(&root).as_deref(), Some("i-0123456789abcdef0"));
    }

    #[test]
    #[cfg(feature = "collect")]
    fn xen_uuid_in_either_byte_order() {
        let (_d, root) = root_with(&[("/sys/hypervisor/uuid", "ec2e1916-9099-7caf-fd21-012345abcdef\n")]);
        assert!(ec2_hint(&root).is_ec2);
        let (_d, root) =
            root_with(&[("/sys/class/dmi/id/product_uuid", "16192EEC-9990-AF7C-FD21-012345ABCDEF\n")]);
        assert!(ec2_hint(&root).is_ec2);
    }

    #[test]
    #[cfg(feature = "collect")]
    fn other_clouds_and_laptops_are_not_ec2() {
        let (_d, root) = root_with(&[
            ("/sys/class/dmi/id/sys_vendor", "QEMU\n"),
            ("/sys/class/dmi/id/product_uuid", "4c4c4544-0042-3510-8052-b4c04f4e3732\n"),
            ("/sys/class/dmi/id/board_asset_tag", "Not Specified\n"),
        ]);
        let h = ec2_hint(&root);
        assert!(!h.is_ec2);
        assert!(h.reason.contains("QEMU"), "{}", h.reason);
        let (_d, root) = root_with(&[]);
        assert!(ec2_hint(&root).reason.contains("no DMI data"));
    }

    #[test]
    fn instance_id_shape() {
        assert!(looks_like_instance_id("i-0123456789abcdef0"));
        assert!(looks_like_instance_id("i-12345678"));
        assert!(!looks_like_instance_id("i-0123456789ABCDEF0"));
        assert!(!looks_like_instance_id("i-"));
        assert!(!looks_like_instance_id("Not Specified"));
    }
}
