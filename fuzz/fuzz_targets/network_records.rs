//! Any bytes as what the network collector reads from the kernel: one received batch of a
//! `sock_diag` dump (its netlink messages walked, each record read as a TCP socket and as a
//! Unix listener), and the `/proc` and `/etc` text of the owner walk (a descriptor link, a
//! cgroup file, `/etc/passwd`). A user names cgroups below their own service manager, so that
//! text is theirs.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = guestward_network::fuzzing::netlink_batch(data);
    guestward_network::fuzzing::proc_text(data);
});
