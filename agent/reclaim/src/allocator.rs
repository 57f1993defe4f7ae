//! glibc's malloc, set up for a small long-running agent in every process of the binary.
//!
//! The systemd unit used to be the only place these were set (`Environment=MALLOC_...`), so
//! the daemon had them and `guestward-agent fim init` run by hand did not: its peak RSS was
//! 1.2-1.4 MiB higher (docs/benchmarks.md, "glibc's settings in every process"). Setting them
//! here, first thing in `main`, gives every command the same memory behaviour; an operator who
//! sets one in the environment still has the last word on it.

use std::ffi::OsStr;

/// Most malloc arenas. glibc gives each thread that finds the arenas busy a new one (up to 8
/// per core), and memory freed in an arena stays in it for that arena's next allocations
/// only: with a FIM scan's hashing threads, writer and walker, each kept its own high-water
/// mark. Two arenas pool that memory while the threads rarely wait for each other.
pub const ARENA_MAX: i32 = 2;
/// Blocks of at least this many bytes get their own mapping, given back to the kernel the
/// moment they are freed instead of fragmenting an arena. Setting it also stops glibc from
/// raising the threshold to the size of each large block freed (up to 32 MiB), after which
/// a scan's large buffers would stay in the heap for good.
pub const MMAP_THRESHOLD_BYTES: i32 = 64 * 1024;
/// Free memory at the top of an arena beyond this is given back to the kernel (glibc's
/// default is 128 KiB, then raised along with the mmap threshold).
pub const TRIM_THRESHOLD_BYTES: i32 = 64 * 1024;

/// One malloc parameter: its `mallopt(3)` number, the environment variable that sets it, and
/// the agent's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setting {
    /// The environment variable glibc reads for it (`MALLOC_ARENA_MAX`).
    pub env: &'static str,
    /// Its `mallopt` parameter (`M_ARENA_MAX`).
    pub param: i32,
    /// The agent's value.
    pub value: i32,
}

/// Every setting the agent makes, in the order it makes them.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub const SETTINGS: [Setting; 3] = [
    Setting { env: "MALLOC_ARENA_MAX", param: nix::libc::M_ARENA_MAX, value: ARENA_MAX },
    Setting {
        env: "MALLOC_MMAP_THRESHOLD_",
        param: nix::libc::M_MMAP_THRESHOLD,
        value: MMAP_THRESHOLD_BYTES,
    },
    Setting {
        env: "MALLOC_TRIM_THRESHOLD_",
        param: nix::libc::M_TRIM_THRESHOLD,
        value: TRIM_THRESHOLD_BYTES,
    },
];

/// No glibc, nothing to set.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub const SETTINGS: [Setting; 0] = [];

/// What [`tune_allocator`] did with each setting.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tuning {
    /// Set to the agent's value.
    pub applied: Vec<Setting>,
    /// Left to the environment, which sets it (the variable, or `GLIBC_TUNABLES` naming any
    /// `glibc.malloc` tunable: then all are left alone).
    pub left_to_environment: Vec<Setting>,
    /// Refused by glibc (`mallopt` returned 0); glibc's default stays.
    pub refused: Vec<Setting>,
}

/// Applies [`SETTINGS`], except those the environment sets, as `env` reads it (the process
/// environment in `main`: `|name| std::env::var_os(name)`). Call it first thing in `main`,
/// before any thread starts: the arena limit applies to arenas made afterwards.
pub fn tune_allocator(env: impl Fn(&str) -> Option<std::ffi::OsString>) -> Tuning {
    let tunables = env("GLIBC_TUNABLES")
        .is_some_and(|t| t.as_encoded_bytes().windows(b"glibc.malloc.".len()).any(|w| w == b"glibc.malloc."));
    let mut tuning = Tuning::default();
    for setting in SETTINGS {
        let set_by_env = env(setting.env).is_some_and(|v| !OsStr::is_empty(&v));
        if tunables || set_by_env {
            tuning.left_to_environment.push(setting);
        } else if mallopt(setting.param, setting.value) {
            tuning.applied.push(setting);
        } else {
            tuning.refused.push(setting);
        }
    }
    tuning
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn mallopt(param: i32, value: i32) -> bool {
    // glibc takes the main arena's lock while it changes a parameter, so the call is safe
    // beside other threads that allocate; an unknown parameter or a value out of range is
    // refused (it returns 0), not undefined behaviour.
    #[allow(unsafe_code)]
    let accepted = unsafe { nix::libc::mallopt(param, value) }; // SAFETY: integers by value; see above
    accepted != 0
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn mallopt(_param: i32, _value: i32) -> bool {
    false
}

#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use std::ffi::OsString;

    /// Bytes glibc holds in blocks it mapped by themselves (`mallinfo2().hblkhd`). Each test
    /// runs in a process of its own (cargo-nextest), so no other test's blocks move it.
    fn bytes_in_mapped_blocks() -> usize {
        // mallinfo2 needs glibc 2.33, which only this test binary links to; the shipped
        // binary stays within 2.17.
        #[allow(unsafe_code)]
        let info = unsafe { nix::libc::mallinfo2() }; // SAFETY: no arguments, returns a plain struct
        info.hblkhd
    }

    /// Whether a block of `len` bytes, asked for right after a block of `freed` bytes was
    /// freed, is mapped by itself rather than carved out of a grown arena. glibc maps a block
    /// only when its arena has no room for it: `len` must be more than the arena has free.
    fn mapped_after_a_large_free(freed: usize, len: usize) -> bool {
        drop(std::hint::black_box(vec![1u8; freed]));
        let before = bytes_in_mapped_blocks();
        let block = std::hint::black_box(vec![1u8; len]);
        let during = bytes_in_mapped_blocks();
        drop(block);
        during >= before + len
    }

    #[test]
    fn the_settings_take_effect_unless_the_environment_sets_them() {
        // Before: freeing a 1 MiB block raises glibc's threshold to 1 MiB, so the next 512 KiB
        // block grows an arena for good (unless whoever runs the test set a threshold).
        let untouched = std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_none()
            && std::env::var_os("GLIBC_TUNABLES").is_none();
        assert!(
            !untouched || !mapped_after_a_large_free(1 << 20, 512 << 10),
            "glibc's threshold did not rise"
        );
        // An operator's own choice wins, setting by setting.
        let arena_set = |name: &str| (name == "MALLOC_ARENA_MAX").then(|| OsString::from("4"));
        let tuning = tune_allocator(arena_set);
        assert_eq!(
            tuning.left_to_environment.iter().map(|s| s.env).collect::<Vec<_>>(),
            ["MALLOC_ARENA_MAX"]
        );
        assert_eq!(
            tuning.applied.iter().map(|s| s.env).collect::<Vec<_>>(),
            ["MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"]
        );
        assert!(tuning.refused.is_empty());
        // After: freeing 4 MiB would raise glibc's own threshold to 4 MiB; it stays at 64 KiB,
        // so a 1.5 MiB block (more than the 512 KiB above left free in the arena) is mapped by
        // itself, given back to the kernel when freed.
        assert!(mapped_after_a_large_free(4 << 20, 3 << 19), "the threshold still moves");
        // No environment: all three. Any malloc tunable in GLIBC_TUNABLES: none.
        assert_eq!(tune_allocator(|_: &str| None::<OsString>).applied, SETTINGS.to_vec());
        let tunables =
            |name: &str| (name == "GLIBC_TUNABLES").then(|| OsString::from("glibc.malloc.arena_max=4"));
        let left = tune_allocator(tunables);
        assert!(left.applied.is_empty() && left.left_to_environment == SETTINGS.to_vec(), "{left:?}");
    }
}
