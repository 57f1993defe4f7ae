//! The finding catalogue: every finding id the agent can raise, with its title, severity, the
//! collector that raises it, why it matters and what to do about it.
//!
//! A [`guestward_core::Finding`] in a report carries its own title, evidence and a remediation
//! filled in with the host's details (instance id, port, path). This catalogue is the reference
//! a security engineer reads before deciding how to route an id (page, ticket, ignore): it is
//! rendered to `docs/findings.md` by `scripts/gen-findings` ([`render_markdown`]), and tests
//! check that it names exactly the ids the collectors declare and the severities they raise.

use guestward_core::Severity;
use serde::Serialize;
use std::fmt::Write as _;

/// A severity a rule is raised at other than its usual one, and when.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SeverityCase {
    /// The severity.
    pub severity: Severity,
    /// The condition, e.g. "when the listener is reachable on a public address".
    pub when: &'static str,
}

/// One finding id and everything a reader needs to act on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct FindingRule {
    /// Stable id, `GW-<AREA>-NNN`, e.g. `GW-IMDS-001`.
    pub id: &'static str,
    /// What the finding says, without the host's details (the finding's own title has them).
    pub title: &'static str,
    /// The severity the rule is usually raised at.
    pub severity: Severity,
    /// Other severities the built-in rule raises, each with its condition.
    pub other_severities: &'static [SeverityCase],
    /// How configuration can change the severity, when it can (e.g. `network.risky_ports`).
    pub severity_from_config: Option<&'static str>,
    /// The collector that raises it: the finding's `source` (`cloud`, `network`, `packages`,
    /// `fim`).
    pub source: &'static str,
    /// Why it matters to whoever runs the fleet: the attack or failure it points at.
    pub rationale: &'static str,
    /// What to do, in words.
    pub remediation: &'static str,
    /// Commands that carry out or check the remediation (placeholders in `<...>`).
    pub commands: &'static [&'static str],
    /// Further reading: AWS documentation, CIS benchmark items, advisories (plain text).
    pub references: &'static [&'static str],
}

impl FindingRule {
    /// Whether the built-in rule raises this id at `severity` (its usual severity or one of
    /// [`FindingRule::other_severities`]). Configuration may set others, see
    /// [`FindingRule::severity_from_config`].
    pub fn raises_at(&self, severity: Severity) -> bool {
        self.severity == severity || self.other_severities.iter().any(|c| c.severity == severity)
    }
}

/// Every finding the agent can raise, sorted by id.
pub static CATALOGUE: &[FindingRule] = &[
    FindingRule {
        id: "GW-ACCESS-001",
        title: "An account other than root has UID 0",
        severity: Severity::High,
        other_severities: &[],
        severity_from_config: None,
        source: "access",
        rationale: "The kernel grants every privilege to UID 0, whatever the account's name. A second UID 0 \
            account is a classic backdoor: it survives a reset of root's password and keys, and it hides among \
            ordinary-looking names in `/etc/passwd`. Legitimate uses (a `toor` rescue account) are rare and better \
            served by sudo.",
        remediation: "Find out who created the account and why. If nobody needs it, remove it (`userdel`); \
            otherwise give it its own UID and grant what it needs through sudo. Treat an unexplained one as a \
            sign of compromise.",
        commands: &["awk -F: '$3 == 0' /etc/passwd", "userdel <user>", "usermod -u <new-uid> <user>"],
        references: &["CIS Linux benchmarks: Ensure root is the only UID 0 account"],
    },
    FindingRule {
        id: "GW-ACCESS-002",
        title: "An account that can log in has an empty password",
        severity: Severity::High,
        other_severities: &[SeverityCase {
            severity: Severity::Critical,
            when: "sshd also permits empty passwords with password or keyboard-interactive authentication: \
                anyone who can reach port 22 logs in",
        }],
        severity_from_config: None,
        source: "access",
        rationale: "An empty password field in `/etc/shadow` means no password at all: the console, `su` and \
            any service that accepts passwords let anyone in as this account. The hash is never reported, only \
            the state.",
        remediation: "Lock the password (`passwd -l`) for accounts that log in with keys, or set a strong one.",
        commands: &["passwd -l <user>", "passwd -S <user>"],
        references: &["CIS Linux benchmarks: Ensure password fields are not empty"],
    },
    FindingRule {
        id: "GW-ACCESS-003",
        title: "sshd lets root log in with a password",
        severity: Severity::High,
        other_severities: &[],
        severity_from_config: None,
        source: "access",
        rationale: "`PermitRootLogin yes` lets anyone who guesses or reuses root's password take the host over \
            from the network in one step, with no trace of which person logged in. Internet-facing sshd sees \
            password guessing against root around the clock.",
        remediation: "Set `PermitRootLogin prohibit-password` (keys only) or `no` in `/etc/ssh/sshd_config` \
            (before any `Include` that could set it first, or in the first included file), check the effective \
            value with `sshd -T`, and reload sshd.",
        commands: &["sshd -T | grep -i permitrootlogin", "systemctl reload ssh"],
        references: &[
            "sshd_config(5): PermitRootLogin",
            "CIS Linux benchmarks: Ensure SSH root login is disabled",
        ],
    },
    FindingRule {
        id: "GW-ACCESS-004",
        title: "sshd accepts passwords",
        severity: Severity::Medium,
        other_severities: &[],
        severity_from_config: None,
        source: "access",
        rationale: "With `PasswordAuthentication yes` or `KbdInteractiveAuthentication yes` (which asks for the \
            password through PAM), anyone who can reach port 22 can guess or replay passwords. EC2 images log in \
            with keys; password login on an instance is usually a leftover from debugging.",
        remediation: "Make sure every user who needs access has a key, then set `PasswordAuthentication no` and \
            `KbdInteractiveAuthentication no`, check with `sshd -T`, and reload sshd. A `Match` block can keep \
            passwords for one address range if that is truly needed.",
        commands: &[
            "sshd -T | grep -Ei 'passwordauthentication|kbdinteractiveauthentication'",
            "systemctl reload ssh",
        ],
        references: &["sshd_config(5): PasswordAuthentication, KbdInteractiveAuthentication"],
    },
    FindingRule {
        id: "GW-ACCESS-005",
        title: "sshd permits empty passwords",
        severity: Severity::High,
        other_severities: &[],
        severity_from_config: None,
        source: "access",
        rationale: "`PermitEmptyPasswords yes` lets an account whose password is empty log in over the network \
            with no credential at all. One such account (see GW-ACCESS-002) is then an open door.",
        remediation: "Set `PermitEmptyPasswords no` (the default), check with `sshd -T`, and reload sshd.",
        commands: &["sshd -T | grep -i permitemptypasswords"],
        references: &[
            "sshd_config(5): PermitEmptyPasswords",
            "CIS Linux benchmarks: Ensure SSH PermitEmptyPasswords is disabled",
        ],
    },
    FindingRule {
        id: "GW-ACCESS-006",
        title: "A weak SSH key is authorized",
        severity: Severity::Medium,
        other_severities: &[],
        severity_from_config: None,
        source: "access",
        rationale: "DSA keys are limited to 1024 bits and were disabled by default in OpenSSH 7.0; RSA keys below \
            2048 bits are within reach of well-funded factoring. A weak key in `authorized_keys` is a credential \
            that may be forged, and is often an old key nobody tracks any more.",
        remediation: "Ask the key's owner (the comment and fingerprint identify it) for an Ed25519 key, add it, \
            and delete the weak key's line from the file.",
        commands: &["ssh-keygen -lf <authorized_keys file>", "ssh-keygen -t ed25519"],
        references: &[
            "NIST SP 800-57 Part 1: key sizes",
            "OpenSSH 7.0 release notes: ssh-dss disabled by default",
        ],
    },
    FindingRule {
        id: "GW-ACCESS-007",
        title: "sudo without a password",
        severity: Severity::High,
        other_severities: &[SeverityCase {
            severity: Severity::Low,
            when: "the NOPASSWD rule lists specific commands rather than ALL",
        }],
        severity_from_config: None,
        source: "access",
        rationale: "A `NOPASSWD: ALL` rule (or `Defaults !authenticate`) makes whoever controls the account root \
            with no further step: a stolen SSH key or a compromised process of that user is a root compromise. \
            Cloud images grant it to the default user for convenience; it stays unless someone removes it. Rules \
            for specific commands are reported at low severity: check that none of them can run a shell.",
        remediation: "Remove NOPASSWD (edit the named file with `visudo -f`), or narrow it to the commands that \
            must run unattended, none of which should let the caller run arbitrary commands.",
        commands: &["sudo -l -U <user>", "visudo -f <file>"],
        references: &[
            "sudoers(5): NOPASSWD, authenticate",
            "CIS Linux benchmarks: Ensure re-authentication for privilege escalation is not disabled globally",
        ],
    },
    FindingRule {
        id: "GW-ACCESS-008",
        title: "A static AWS access key is stored on the instance",
        severity: Severity::High,
        other_severities: &[SeverityCase {
            severity: Severity::Medium,
            when: "the key id is a temporary one (`ASIA`: STS credentials that expire) or of an unknown kind",
        }],
        severity_from_config: None,
        source: "access",
        rationale: "On EC2 the instance's IAM role gives software credentials that rotate by themselves. A long-lived \
            access key (`AKIA`) in `~/.aws/credentials`, a `.env` file or a systemd unit works from anywhere until \
            someone deactivates it: anyone who reads the file, a backup or an AMI made from the instance can use \
            it. Only the key id's first and last four characters are reported, never the secret.",
        remediation: "Give the instance a role with the permissions the software needs (the SDKs and the CLI use it \
            without configuration), then deactivate and delete the key in IAM and remove it from the file. Check \
            CloudTrail for the key's use first if the instance may have been exposed.",
        commands: &[
            "aws iam list-access-keys --user-name <user>",
            "aws iam update-access-key --access-key-id <key-id> --status Inactive --user-name <user>",
            "aws ec2 associate-iam-instance-profile --instance-id <instance-id> --iam-instance-profile Name=<profile>",
        ],
        references: &[
            "AWS IAM User Guide: Use IAM roles for applications on EC2 instances",
            "AWS Security Hub control IAM.3: IAM users' access keys should be rotated every 90 days or less",
        ],
    },
    FindingRule {
        id: "GW-FIM-001",
        title: "File integrity coverage has open gaps",
        severity: Severity::Medium,
        other_severities: &[],
        severity_from_config: None,
        source: "fim",
        rationale: "A coverage gap is a time span in which changes to the named trees may have happened without \
            being reported: the kernel or the agent dropped events (a storm of writes, a full queue), the agent was \
            not running, or the baseline could not be read or written. An intruder who knows the monitor can try to \
            produce exactly this (flood a watched tree, fill the disk, stop the agent) to hide a change among the \
            ones that went unseen. Until a verification rescan closes the gap, \"no change reported\" does not mean \
            \"no change happened\" for those trees.",
        remediation: "Read the gap's cause and trees in the finding's evidence or in `agentctl fim status`. For \
            store causes (`store_write_failed`, `store_read_failed`, `scan_failed`) fix the state directory (free space, \
            writable filesystem); the agent retries on its own. For the other causes the verification rescan closes \
            the gap; a gap that stays open names trees that only periodic rescans check (see GW-FIM-002). When the \
            gap spans a period of suspected compromise, review the changes the closing rescan reports with care.",
        commands: &["agentctl fim status", "agentctl fim events --since 24h"],
        references: &[
            "PCI DSS v4.0 requirement 11.5.2: a change-detection mechanism alerts on unauthorized modification of critical files",
            "NIST SP 800-53 SI-7: Software, Firmware, and Information Integrity",
            "CIS Linux distribution benchmarks: Ensure filesystem integrity is regularly checked",
        ],
    },
    FindingRule {
        id: "GW-FIM-002",
        title: "Some monitored trees are not watched in realtime",
        severity: Severity::Low,
        other_severities: &[],
        severity_from_config: None,
        source: "fim",
        rationale: "The policy needs more inotify watches than the agent may place (its budget, or the kernel's \
            `fs.inotify.max_user_watches`), so some trees are checked by periodic rescans only \
            (`fim.unwatched_rescan_interval_secs`). A change there is still found, but up to one rescan interval late, \
            and a file changed and restored between two rescans is never seen: an attacker's window grows from \
            seconds to the rescan interval.",
        remediation: "Raise the kernel's watch limit (persistently, in `/etc/sysctl.d`) or the agent's cap \
            (`fim.max_watches`, `fim.watch_reserve_percent`), or narrow `fim.paths` with excludes so the policy fits. \
            The finding's evidence lists the rescan-only trees and the watches granted and wanted.",
        commands: &[
            "sysctl fs.inotify.max_user_watches",
            "echo 'fs.inotify.max_user_watches = 524288' > /etc/sysctl.d/60-guestward.conf && sysctl --system",
        ],
        references: &["Linux inotify(7): /proc/sys/fs/inotify/max_user_watches"],
    },
    FindingRule {
        id: "GW-FIM-003",
        title: "Writes to the FIM baseline failed",
        severity: Severity::Medium,
        other_severities: &[],
        severity_from_config: None,
        source: "fim",
        rationale: "The baseline is what every change is compared with. When a write to it fails (disk full, \
            filesystem remounted read-only, I/O errors), the stored state drifts from what was reported: later \
            changes may be reported against stale entries or missed. Each failure opens a coverage gap \
            (GW-FIM-001). Filling the disk that holds the state directory is a cheap way to blind a file \
            integrity monitor.",
        remediation: "Check the filesystem that holds the state directory (default `/var/lib/guestward`): free space, \
            read-only remount, I/O errors in the kernel log. Keep the state directory on a filesystem that \
            application logs cannot fill. The agent retries on its own; the next successful rescan closes the gap.",
        commands: &["df -h /var/lib/guestward", "findmnt -T /var/lib/guestward", "journalctl -k --since -1h"],
        references: &["NIST SP 800-53 SI-7: Software, Firmware, and Information Integrity"],
    },
    FindingRule {
        id: "GW-FIM-004",
        title: "The FIM baseline was rewritten outside the agent",
        severity: Severity::High,
        other_severities: &[],
        severity_from_config: None,
        source: "fim",
        rationale: "With `fim.baseline_key_file` set, the baseline's rows and row set are sealed (HMAC-SHA256). A \
            verification found rows rewritten, added or removed without the key: someone with write access to the \
            state directory edited the baseline, which is what an intruder does to make a planted or modified file \
            look like it was always there. Accidental corruption is possible but rare; treat it as tampering until \
            shown otherwise.",
        remediation: "Treat the host as compromised until explained: preserve the state directory for analysis, \
            compare the monitored files with a trusted source (package manager verification, a known-good image), \
            and find who could write the state directory. Accept the current state only once verified, then \
            re-seal it. Keep the key file outside the state directory, root-owned and 0600.",
        commands: &[
            "guestward-agent fim check --json",
            "dpkg --verify  # or: rpm -Va",
            "guestward-agent fim update  # only after the files were verified",
        ],
        references: &[
            "NIST SP 800-53 SI-7: Software, Firmware, and Information Integrity",
            "PCI DSS v4.0 requirement 11.5.2: a change-detection mechanism alerts on unauthorized modification of critical files",
        ],
    },
    FindingRule {
        id: "GW-FIM-005",
        title: "The last FIM verification scan failed",
        severity: Severity::Medium,
        other_severities: &[],
        severity_from_config: None,
        source: "fim",
        rationale: "Verification rescans are what close coverage gaps and check trees that are not watched in \
            realtime. A rescan that failed as a whole (state directory unreadable, baseline unusable) leaves its \
            trees unverified: changes since the last good scan are unknown until a retry succeeds.",
        remediation: "Read the error in the finding's evidence (or `agentctl fim status`) and fix its cause; the \
            agent retries on its own and the finding clears when a rescan succeeds. If it keeps failing, check \
            the agent's log.",
        commands: &["agentctl fim status", "journalctl -u guestward-agent --since -1h"],
        references: &["NIST SP 800-53 SI-7: Software, Firmware, and Information Integrity"],
    },
    FindingRule {
        id: "GW-FIM-006",
        title: "A package file changed outside the package manager",
        severity: Severity::High,
        other_severities: &[],
        severity_from_config: None,
        source: "fim",
        rationale: "A file that a dpkg or rpm package installed changed, and no package transaction explains it: \
            either no transaction was running (no dpkg/rpm lock holder, no apt/dnf/yum process, nothing new in \
            dpkg.log or the rpm database), or one was, but the new content does not match the digest the new \
            package version records for that file. Package upgrades are folded into one \
            `fim.package_transaction` event and raise nothing; a binary such as `/usr/sbin/sshd` replaced by \
            anything else is the signal that matters most. The evidence names the package, the digest the \
            package expects and the digest found.",
        remediation: "Find who changed the file (the change's time in `agentctl fim events`, logins and processes \
            at that time); compare it with the package (`debsums -c PACKAGE`, `rpm -V PACKAGE`); restore it by \
            reinstalling the package (`apt-get install --reinstall PACKAGE`, `dnf reinstall PACKAGE`), and treat \
            the host as compromised until the change is explained.",
        commands: &[
            "agentctl fim events --since 1d",
            "debsums -c",
            "rpm -Va",
            "guestward-agent fim verify-packages",
        ],
        references: &[
            "NIST SP 800-53 SI-7: Software, Firmware, and Information Integrity",
            "MITRE ATT&CK T1554: Compromise Host Software Binary",
        ],
    },
    FindingRule {
        id: "GW-FIM-007",
        title: "Package files in the FIM baseline do not match their package",
        severity: Severity::High,
        other_severities: &[],
        severity_from_config: None,
        source: "fim",
        rationale: "A baseline records what is on disk when it is taken: on a machine that was already \
            compromised it would accept a replaced binary as normal. So when the baseline is taken and at each \
            full verification, package-owned files in the FIM scope are compared with what their package says \
            (dpkg's md5sums and conffile digests, rpm's file digests), like `debsums` and `rpm -V`. A mismatch \
            is a file that differed from its package before any change was seen.",
        remediation: "Verify the files listed (`guestward-agent fim verify-packages`, `debsums -c`, `rpm -V`), \
            reinstall the packages concerned to restore them, then accept the restored state with \
            `guestward-agent fim update`.",
        commands: &["guestward-agent fim verify-packages", "debsums -c", "rpm -Va"],
        references: &[
            "NIST SP 800-53 SI-7: Software, Firmware, and Information Integrity",
            "CIS Controls v8 2.5: Allowlist Authorized Software",
        ],
    },
    FindingRule {
        id: "GW-FIM-008",
        title: "A package configuration file was edited outside the package manager",
        severity: Severity::Low,
        other_severities: &[],
        severity_from_config: None,
        source: "fim",
        rationale: "dpkg conffiles and rpm `%config` files are meant to be edited by administrators, so an edit \
            is not an intrusion by itself; but on a host managed by configuration management, a hand edit is \
            drift, and an unexpected edit of a security-relevant file (`/etc/ssh/sshd_config`, PAM, sudoers) \
            deserves a look. Reported with lower severity than other package files.",
        remediation: "Confirm the edit was intended (change ticket, configuration management run); otherwise \
            restore the file from the package (`apt-get install --reinstall -o Dpkg::Options::=--force-confask \
            PACKAGE`, `rpm -V PACKAGE`).",
        commands: &["agentctl fim events --since 1d", "debsums -ce"],
        references: &["NIST SP 800-53 CM-3: Configuration Change Control"],
    },
    FindingRule {
        id: "GW-IMDS-001",
        title: "IMDSv1 is enabled",
        severity: Severity::High,
        other_severities: &[],
        severity_from_config: None,
        source: "cloud",
        rationale: "The instance metadata service answers token-less GET requests. Then any server-side request \
            forgery (SSRF) bug, open proxy or misconfigured reverse proxy on the instance lets an attacker read \
            `http://169.254.169.254/latest/meta-data/iam/security-credentials/<role>` and leave with the instance \
            role's temporary credentials: the path of the 2019 Capital One breach. IMDSv2 needs a PUT with a \
            custom header first, which such bugs almost never allow.",
        remediation: "Require IMDSv2 session tokens on the instance, in the launch templates that start instances \
            like it, and as the account's default for new instances. Before enforcing on a fleet, check that \
            nothing still uses IMDSv1 (the instance's `MetadataNoToken` CloudWatch metric stays at 0; current versions of \
            the AWS SDKs and the AWS CLI use IMDSv2).",
        commands: &[
            "aws ec2 modify-instance-metadata-options --instance-id <instance-id> --http-tokens required --http-endpoint enabled",
            "aws ec2 modify-instance-metadata-defaults --region <region> --http-tokens required",
        ],
        references: &[
            "AWS EC2 User Guide: Use the Instance Metadata Service to access instance metadata (Configure the instance metadata options)",
            "AWS EC2 User Guide: Transition to using Instance Metadata Service Version 2",
            "CIS Amazon Web Services Foundations Benchmark: Ensure that EC2 Metadata Service only allows IMDSv2",
            "AWS Security Hub control EC2.8: EC2 instances should use Instance Metadata Service Version 2 (IMDSv2)",
        ],
    },
    FindingRule {
        id: "GW-IMDS-002",
        title: "IMDSv2 is unavailable: the agent fell back to IMDSv1",
        severity: Severity::Medium,
        other_severities: &[],
        severity_from_config: None,
        source: "cloud",
        rationale: "The token request (`PUT /latest/api/token`) was refused, so the agent read metadata with \
            token-less IMDSv1 requests. Either something between the instance and the metadata service (a proxy, \
            a firewall or iptables rule) blocks PUT, or the endpoint is not a genuine IMDS. IMDSv1 in use means \
            IMDSv1 cannot be turned off without breaking this host's software, and it stays open to SSRF \
            (see GW-IMDS-001).",
        remediation: "Find what refuses the PUT: proxy settings (`HTTP_PROXY` without `NO_PROXY=169.254.169.254`), \
            local firewall rules, a metadata proxy. Once the token request succeeds, require tokens on the \
            instance.",
        commands: &[
            "curl -s -o /dev/null -w '%{http_code}\\n' -X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: 60' http://169.254.169.254/latest/api/token",
            "iptables -S | grep 169.254.169.254",
            "aws ec2 modify-instance-metadata-options --instance-id <instance-id> --http-tokens required",
        ],
        references: &[
            "AWS EC2 User Guide: Use the Instance Metadata Service to access instance metadata (Configure the instance metadata options)",
            "AWS EC2 User Guide: Transition to using Instance Metadata Service Version 2",
        ],
    },
    FindingRule {
        id: "GW-IMDS-003",
        title: "IMDS PUT response hop limit above 1 with no container runtime on the host",
        severity: Severity::Info,
        other_severities: &[],
        severity_from_config: None,
        source: "cloud",
        rationale: "The hop limit (IP TTL) of the token response decides how far a token can travel. Above 1 it \
            survives being forwarded beyond the instance's own network stack: to containers on a bridge network, \
            but also to any host or namespace this instance forwards or routes for. With no container runtime on \
            the host nothing needs that, so the extra reach only helps a process behind the instance (a misused \
            forwarding setup, a rogue VM or namespace) obtain tokens and credentials.",
        remediation: "Set the hop limit to 1 on instances that run no containers; keep 2 where containers need \
            IMDS (and prefer giving them their own credentials, e.g. ECS task roles or EKS Pod Identity).",
        commands: &[
            "aws ec2 modify-instance-metadata-options --instance-id <instance-id> --http-put-response-hop-limit 1",
        ],
        references: &[
            "AWS EC2 User Guide: Instance metadata access considerations (response hop limit)",
            "AWS EC2 User Guide: Configure the instance metadata options",
        ],
    },
    FindingRule {
        id: "GW-IMDS-004",
        title: "An instance profile is attached; review its role's permissions",
        severity: Severity::Info,
        other_severities: &[],
        severity_from_config: None,
        source: "cloud",
        rationale: "Every process on the instance that can reach IMDS can obtain the role's credentials and act \
            with its permissions, so a compromise of any service on the host is a compromise of the role. Broad \
            roles (wildcards, s3:* on every bucket, iam:PassRole) turn one exploited web process into an \
            account-wide incident. The agent never reads the credentials; it reports the profile so its \
            permissions get reviewed.",
        remediation: "Review the role's policies and keep them to what the workload needs; use last-accessed \
            data to remove unused permissions. Where only some processes need AWS access, restrict IMDS to them \
            (a local firewall rule on `169.254.169.254` by owner uid).",
        commands: &[
            "aws iam get-instance-profile --instance-profile-name <instance-profile-name>",
            "aws iam list-attached-role-policies --role-name <role-name>",
            "aws iam generate-service-last-accessed-details --arn <role-arn>",
        ],
        references: &[
            "AWS EC2 User Guide: IAM roles for Amazon EC2",
            "AWS IAM User Guide: Security best practices in IAM (apply least-privilege permissions)",
            "AWS IAM User Guide: Refining permissions in AWS using last accessed information",
        ],
    },
    FindingRule {
        id: "GW-LANG-001",
        title: "log4j-core is a Log4Shell-affected version (CVE-2021-44228, CVE-2021-45046)",
        severity: Severity::Critical,
        other_severities: &[SeverityCase {
            severity: Severity::Medium,
            when: "`JndiLookup.class` was removed from the archive: the remote code execution path is mitigated, the \
                version is not fixed",
        }],
        severity_from_config: None,
        source: "packages",
        rationale: "log4j-core 2.0-beta9 to 2.15.0 (except the backported 2.12.2+ and 2.3.1+) performs JNDI \
            lookups in logged strings: any attacker-controlled text that reaches a log line (a User-Agent header, \
            a form field, a username) makes the JVM load and run remote code. It is exploited at scale since \
            December 2021 and is on CISA's Known Exploited Vulnerabilities list. Jars bundle their own copy, so \
            the OS package manager does not see or fix it; the agent finds it in jars, wars, ears and nested \
            archives.",
        remediation: "Upgrade log4j-core to 2.17.1 or later (2.12.4 on Java 7, 2.3.2 on Java 6) in the \
            application that ships the archive named in the evidence, and redeploy it. Until then remove the \
            `JndiLookup` class from the archive and restart the JVM; the finding then drops to medium.",
        commands: &["zip -q -d <jar> org/apache/logging/log4j/core/lookup/JndiLookup.class"],
        references: &[
            "CVE-2021-44228, CVE-2021-45046",
            "Apache Logging Services: Apache Log4j Security Vulnerabilities",
            "CISA: Apache Log4j Vulnerability Guidance",
        ],
    },
    FindingRule {
        id: "GW-LANG-002",
        title: "An archive contains Log4j's JndiLookup class and no recognizable log4j-core version",
        severity: Severity::High,
        other_severities: &[],
        severity_from_config: None,
        source: "packages",
        rationale: "The class that makes Log4Shell possible is present, but no log4j-core version could be read \
            for it: Log4j was shaded (relocated under another package), renamed, or repackaged without \
            `pom.properties`. Such hidden copies are the ones version-based scanners and SBOMs miss, and they were \
            exploited just like the visible ones.",
        remediation: "Identify the Log4j copy bundled in the archive (the evidence names the class entry); if it \
            is older than 2.17.1 (2.12.4 on Java 7, 2.3.2 on Java 6), upgrade the application, or remove the \
            `JndiLookup` class from the archive and restart the JVM.",
        commands: &["unzip -l <jar> | grep -i jndilookup", "zip -q -d <jar> <class-entry>"],
        references: &[
            "CVE-2021-44228, CVE-2021-45046",
            "Apache Logging Services: Apache Log4j Security Vulnerabilities",
        ],
    },
    FindingRule {
        id: "GW-LANG-003",
        title: "A known malicious PyPI package is installed",
        severity: Severity::Critical,
        other_severities: &[],
        severity_from_config: None,
        source: "packages",
        rationale: "The package name is on the agent's list of malicious PyPI packages (typosquats of popular \
            packages and dependency-confusion packages such as `torchtriton`), each with a public advisory. These \
            packages run their payload at install or import time, typically stealing SSH keys, cloud credentials \
            and tokens, or installing a backdoor: the code has already run with the installing user's rights.",
        remediation: "Uninstall the package, then treat the host as compromised: rotate every credential the \
            installing user could read (SSH keys, AWS keys and the instance role's sessions, API tokens), look for \
            persistence, and rebuild the instance from a known-good image. Fix the requirement or index \
            configuration that pulled it in.",
        commands: &[
            "pip uninstall <package>",
            "pip show -f <package>  # before uninstalling: what it installed",
        ],
        references: &[
            "The list with a source for every entry: agent/lang/data/pypi-malicious.txt",
            "PyTorch: Compromised PyTorch-nightly dependency chain between December 25th and December 30th, 2022",
        ],
    },
    FindingRule {
        id: "GW-NET-001",
        title: "A risky service listens on all interfaces",
        severity: Severity::High,
        other_severities: &[SeverityCase {
            severity: Severity::Critical,
            when: "the listener is reachable on a public address of the instance, or the service is the plain-text \
                Docker API (2375/tcp)",
        }],
        severity_from_config: Some(
            "a `network.risky_ports` entry sets the severity of its port (default high) and overrides the built-in \
             entry for the same protocol and port; a public address still raises it to critical",
        ),
        source: "network",
        rationale: "A data store or control plane (MySQL, PostgreSQL, Redis, MongoDB, Elasticsearch, memcached, \
            etcd, the kubelet or Docker API) is bound to every interface instead of loopback or a private address. \
            The instance's security group is then the only thing between it and the network, and one permissive \
            rule or a peered VPC exposes it. These services are scanned for continuously on the internet: \
            unauthenticated Redis, Docker and kubelet APIs give code execution, open databases are copied and \
            ransomed, and UDP memcached is a DDoS amplifier.",
        remediation: "Bind the service to 127.0.0.1 or a private interface address in its configuration (the \
            finding names the process and its systemd unit), require authentication, and restrict the port in the \
            host firewall and the instance's security group to the clients that need it.",
        commands: &["ss -tulpn", "aws ec2 describe-security-groups --group-ids <security-group-id>"],
        references: &[
            "AWS VPC User Guide: Security group rules",
            "AWS Security Hub control EC2.19: Security groups should not allow unrestricted access to ports with high risk",
            "CIS Linux distribution benchmarks (e.g. Ubuntu Linux, Amazon Linux 2): Ensure nonessential services are removed or masked",
            "Docker documentation: Protect the Docker daemon socket",
        ],
    },
    FindingRule {
        id: "GW-TLS-001",
        title: "The agent's client certificate expires within 7 days",
        severity: Severity::High,
        other_severities: &[SeverityCase {
            severity: Severity::Critical,
            when: "the certificate has already expired: the collector refuses every report",
        }],
        severity_from_config: None,
        source: "transport",
        rationale: "The agent proves who it is to the collector with a client certificate (`[transport] cert_file`), \
            and the collector refuses a report whose certificate has expired. Once it expires this host goes silent: \
            its reports pile up in the spool until `transport.spool_max_bytes` forces drops, and a fleet view that \
            only shows hosts that report hides exactly the one that stopped. An attacker on the host gains the same \
            silence by waiting. The warning comes a week ahead so rotation can happen before any report is held back.",
        remediation: "Issue a new certificate for this host id from the collector's CA and replace the files named by \
            `transport.cert_file` and `transport.key_file` (key mode 0600): the agent reloads them when they change, \
            no restart needed, and the spooled reports then go out. Automate the rotation (a timer or your PKI's \
            agent) so it never depends on this finding.",
        commands: &[
            "agentctl status  # the transport block: certificate subject and days left",
            "openssl x509 -in /etc/guestward/tls/agent.pem -noout -subject -enddate",
            "guestward-collector pki issue-agent --dir <pki-dir> --host-id <host-id> --force  # development PKI",
        ],
        references: &["RFC 5280 section 4.1.2.5: certificate validity", "docs/ARCHITECTURE.md: transport"],
    },
    FindingRule {
        id: "GW-TLS-002",
        title: "The agent's client certificate does not name the host it reports as",
        severity: Severity::High,
        other_severities: &[],
        severity_from_config: None,
        source: "transport",
        rationale: "The collector takes a reporting host's identity from its client certificate (a SAN URI \
            `urn:guestward:host:<id>`, else the CN) and refuses every report whose `agent.host_id` is another \
            host's, so that one host's credentials can never speak for another. A certificate issued for another \
            instance (copied between hosts, or baked into an image), an operator's certificate, or one that names \
            nobody therefore silences this host as surely as an expired one: its reports pile up in the spool. The \
            agent reads its own certificate by the collector's rule and says so before the collector's 401 or 403, \
            naming both ids. The host id it reports as is `[agent] host_id`, else the EC2 instance id.",
        remediation: "Issue a certificate for the host id this agent reports as (shown in the finding and in \
            `agentctl status`) and replace the files named by `transport.cert_file` and `transport.key_file` (key \
            mode 0600): the agent reloads them when they change. If the certificate is right and the host id is \
            wrong, set `[agent] host_id` to the id the certificate names and restart the agent; reports made as the \
            old id are set aside in `spool/rejected/` once the collector refuses them.",
        commands: &[
            "agentctl status  # the transport block: the IDENTITY line names both ids",
            "openssl x509 -in /etc/guestward/tls/agent.pem -noout -subject -ext subjectAltName",
            "guestward-collector pki issue-agent --dir <pki-dir> --host-id <host-id> --force  # development PKI",
        ],
        references: &["RFC 5280 section 4.2.1.6: subject alternative name", "docs/collector.md: identities"],
    },
    FindingRule {
        id: "GW-UPD-001",
        title: "Security updates are pending",
        severity: Severity::High,
        other_severities: &[
            SeverityCase {
                severity: Severity::Critical,
                when: "an advisory covering a pending update is rated critical",
            },
            SeverityCase {
                severity: Severity::Medium,
                when: "every advisory covering the pending updates is rated moderate (medium)",
            },
            SeverityCase {
                severity: Severity::Low,
                when: "every advisory covering the pending updates is rated low",
            },
        ],
        severity_from_config: None,
        source: "updates",
        rationale: "Patching the guest OS is the customer's side of the shared responsibility line. A security update \
            that is published but not installed is a known, documented vulnerability on this instance, usually with a \
            public fix diff that tells an attacker where to look. The finding lists every package whose candidate \
            comes from a security suite (apt: `Label: Debian-Security` or a `*-security` suite) or is covered by a \
            security advisory (dnf/yum `updateinfo`: ALAS, RHSA, with severity and CVE ids), computed offline from the \
            package metadata cached on the host, so it is only as fresh as that metadata (see GW-UPD-003). Debian \
            and Ubuntu lists carry no severity: such updates are raised at high.",
        remediation: "Install the security updates, then reboot if a kernel or core library was among them (GW-UPD-002). \
            Keep instances patched automatically (unattended-upgrades, dnf-automatic, SSM Patch Manager) or replace \
            them from a patched image.",
        commands: &[
            "apt-get update && apt-get upgrade  # Debian, Ubuntu",
            "dnf upgrade --security  # Amazon Linux 2023, RHEL 8+",
            "yum update --security  # Amazon Linux 2",
            "agentctl updates  # every pending update with its advisories",
        ],
        references: &[
            "AWS Shared Responsibility Model: the customer patches the guest operating system",
            "CIS Distribution Independent Linux Benchmark 1.9: ensure updates, patches and additional security software are installed",
            "Amazon Linux Security Center (ALAS)",
        ],
    },
    FindingRule {
        id: "GW-UPD-002",
        title: "A reboot or service restarts are needed to run the installed updates",
        severity: Severity::Medium,
        other_severities: &[SeverityCase {
            severity: Severity::High,
            when: "the running kernel is older than the newest installed kernel package",
        }],
        severity_from_config: None,
        source: "updates",
        rationale: "Installing an update does not replace the code already running: the old kernel runs until a reboot, \
            and a process keeps the old copy of a shared library it mapped before the upgrade (shown by `/proc/<pid>/maps` \
            as ` (deleted)`) until it restarts. Until then the host is as vulnerable as before the update while the \
            package inventory says it is fixed. The finding names each reason: Debian's `/var/run/reboot-required` \
            (and the packages in `reboot-required.pkgs`), a running kernel older than the newest installed kernel \
            package, and every process mapping deleted libraries (what needrestart and needs-restarting report).",
        remediation: "Reboot the instance in a maintenance window (or replace it from an updated image); when only \
            processes are named, restart their services.",
        commands: &["systemctl restart <unit>", "needs-restarting -r  # RHEL family", "reboot"],
        references: &["needrestart(1)", "dnf needs-restarting(8)"],
    },
    FindingRule {
        id: "GW-UPD-003",
        title: "The package lists are stale or missing",
        severity: Severity::Medium,
        other_severities: &[],
        severity_from_config: Some(
            "`updates.stale_after_days` (default 7) sets the age at which the lists are stale",
        ),
        source: "updates",
        rationale: "Pending updates are computed from the package metadata the host has cached (apt lists, dnf/yum \
            repository caches): nothing is downloaded. Lists that were not refreshed for weeks miss every update \
            published since, so an absent GW-UPD-001 means nothing; a host that never refreshes its lists is also a \
            host whose patching is not automated.",
        remediation: "Refresh the metadata regularly (apt-get update, dnf makecache), e.g. through unattended-upgrades, \
            dnf-automatic or a scheduled job.",
        commands: &["apt-get update", "dnf makecache", "yum makecache"],
        references: &["apt-get(8)", "dnf(8): makecache"],
    },
];

/// The catalogue entry of a finding id.
pub fn rule(id: &str) -> Option<&'static FindingRule> {
    CATALOGUE.iter().find(|r| r.id == id)
}

/// `docs/findings.md`: a table of every finding, then one section per finding.
pub fn render_markdown() -> String {
    let mut out = String::new();
    // Writing to a String cannot fail: the results of write! are ignored below for that reason.
    out.push_str(
        "<!-- Generated from agent/report/src/catalogue.rs by scripts/gen-findings: do not edit by hand. -->\n\
         # Findings\n\n\
         Every finding the agent can raise. A finding in a report (`agentctl findings`, the `findings` of the\n\
         report JSON) carries its id, a severity, a title and remediation filled in with the host's details,\n\
         the evidence that triggered it, and the collector that raised it (`source`). This page says why each\n\
         one matters and what to do about it.\n\n\
         | id | severity | source | title |\n|---|---|---|---|\n",
    );
    for r in CATALOGUE {
        // The usual severity first; the others (see the finding's section for when) after it.
        let mut severity = r.severity.to_string();
        for c in r.other_severities {
            let _ = write!(severity, " or {}", c.severity);
        }
        let anchor = r.id.to_ascii_lowercase();
        let _ = writeln!(out, "| [{}](#{anchor}) | {severity} | {} | {} |", r.id, r.source, r.title);
    }
    for r in CATALOGUE {
        let _ = write!(out, "\n## {}\n\n**{}**\n\n", r.id, r.title);
        let _ = writeln!(out, "- Severity: {}", r.severity);
        for c in r.other_severities {
            let _ = writeln!(out, "  - {} when {}", c.severity, c.when);
        }
        if let Some(config) = r.severity_from_config {
            let _ = writeln!(out, "  - configurable: {config}");
        }
        let _ = writeln!(out, "- Source: `{}`", r.source);
        let _ = write!(out, "\n**Why it matters.** {}\n\n**What to do.** {}\n", r.rationale, r.remediation);
        if !r.commands.is_empty() {
            out.push_str("\n```sh\n");
            for c in r.commands {
                let _ = writeln!(out, "{c}");
            }
            out.push_str("```\n");
        }
        if !r.references.is_empty() {
            out.push_str("\nReferences:\n\n");
            for reference in r.references {
                let _ = writeln!(out, "- {reference}");
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use guestward_core::{Finding, Timestamp};
    use std::collections::BTreeSet;

    /// Every finding id the collectors declare.
    ///
    /// Every id the collector crates declare they can raise.
    fn declared_ids() -> Vec<&'static str> {
        let mut ids: Vec<&'static str> = guestward_fim::FINDING_IDS.to_vec();
        ids.extend(guestward_cloud::FINDING_IDS);
        ids.extend(guestward_network::FINDING_IDS);
        ids.extend(guestward_packages::FINDING_IDS);
        ids.extend(guestward_updates::FINDING_IDS);
        ids.extend(guestward_access::FINDING_IDS);
        // guestward-transport depends on this crate, so it cannot be named here: its ids
        // (`guestward_transport::shipper::CERT_EXPIRY_FINDING` and `CERT_IDENTITY_FINDING`,
        // raised by `Shipper::certificate_findings`) are listed by hand.
        ids.extend(["GW-TLS-001", "GW-TLS-002"]);
        ids
    }

    #[test]
    fn catalogue_names_exactly_the_ids_the_collectors_declare() {
        let declared: BTreeSet<&str> = declared_ids().into_iter().collect();
        let catalogued: BTreeSet<&str> = CATALOGUE.iter().map(|r| r.id).collect();
        let missing: Vec<_> = declared.difference(&catalogued).collect();
        let unknown: Vec<_> = catalogued.difference(&declared).collect();
        assert!(missing.is_empty(), "declared by a collector, missing from the catalogue: {missing:?}");
        assert!(unknown.is_empty(), "in the catalogue, declared by no collector: {unknown:?}");
    }

    #[test]
    fn ids_are_unique_sorted_and_well_formed() {
        let ids: Vec<&str> = CATALOGUE.iter().map(|r| r.id).collect();
        let mut sorted = ids.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(ids, sorted, "ids must be unique and sorted");
        for id in ids {
            let parts: Vec<&str> = id.split('-').collect();
            let well_formed = parts.len() == 3
                && parts[0] == "GW"
                && !parts[1].is_empty()
                && parts[1].bytes().all(|b| b.is_ascii_uppercase())
                && parts[2].len() == 3
                && parts[2].bytes().all(|b| b.is_ascii_digit());
            assert!(well_formed, "{id} is not GW-<AREA>-NNN");
        }
    }

    #[test]
    fn every_entry_is_filled_in_and_lookup_finds_it() {
        let sources = ["cloud", "network", "packages", "fim", "transport", "updates", "access"];
        for r in CATALOGUE {
            assert!(sources.contains(&r.source), "{}: unknown source {}", r.id, r.source);
            for (what, text) in
                [("title", r.title), ("rationale", r.rationale), ("remediation", r.remediation)]
            {
                assert!(!text.trim().is_empty(), "{}: empty {what}", r.id);
            }
            assert!(
                r.other_severities.iter().all(|c| c.severity != r.severity && !c.when.is_empty()),
                "{}: other severities repeat the usual one or lack a condition",
                r.id
            );
            assert_eq!(rule(r.id), Some(r));
            // Markdown would take `<placeholder>` in prose for an HTML tag and drop it.
            let prose = [r.title, r.rationale, r.remediation]
                .into_iter()
                .chain(r.other_severities.iter().map(|c| c.when));
            for text in prose.chain(r.severity_from_config).chain(r.references.iter().copied()) {
                let outside_code = text.split('`').step_by(2).collect::<String>();
                assert!(!outside_code.contains('<'), "{}: `<` outside backticks in {text:?}", r.id);
            }
        }
        assert_eq!(rule("GW-NOPE-001"), None);
    }

    /// Each finding has a catalogue entry with its source, and a severity the entry names.
    fn check(findings: &[Finding]) -> BTreeSet<String> {
        for f in findings {
            let r = rule(&f.id).unwrap_or_else(|| panic!("{} raised but not in the catalogue", f.id));
            assert_eq!(f.source, r.source, "{}: source", f.id);
            assert!(
                r.raises_at(f.severity),
                "{} raised at {}, the catalogue says {} (other: {:?})",
                f.id,
                f.severity,
                r.severity,
                r.other_severities
            );
        }
        findings.iter().map(|f| f.id.clone()).collect()
    }

    fn ids_of(prefix: &str) -> BTreeSet<String> {
        CATALOGUE.iter().filter(|r| r.id.starts_with(prefix)).map(|r| r.id.to_string()).collect()
    }

    #[test]
    fn cloud_findings_match_the_catalogue() {
        let mut report =
            guestward_cloud::CloudReport::without_facts(guestward_cloud::CloudState::Ec2, "fixture");
        // Every risk at once: IMDSv1 answers, the token PUT was refused, hop limit 2 without
        // containers, an instance profile attached.
        report.imds = Some(guestward_cloud::ImdsAccess {
            endpoint: "http://169.254.169.254".to_string(),
            endpoint_source: guestward_cloud::EndpointSource::Default,
            access_mode: Some(guestward_cloud::AccessMode::V1Fallback),
            token_refused_status: Some(403),
            imdsv1_answers: Some(true),
            token_ttl_secs: None,
            declared_hop_limit: Some(2),
            container_runtime_present: false,
        });
        report.iam = Some(guestward_cloud::IamInfo {
            instance_profile_arn: "arn:aws:iam::123456789012:instance-profile/web".to_string(),
            instance_profile_name: "web".to_string(),
            instance_profile_id: None,
            last_updated: None,
        });
        assert_eq!(check(&guestward_cloud::findings(&report)), ids_of("GW-IMDS-"));
    }

    fn listener(port: u16, protocol: &str, public: &[&str], pid: u32) -> serde_json::Value {
        serde_json::json!({
            "protocol": protocol, "family": "ipv4", "local_address": "0.0.0.0", "local_port": port,
            "remote_address": "0.0.0.0", "remote_port": 0, "state": "listen", "inode": 1000 + u64::from(port),
            "uid": 0, "listening": true,
            "exposure": { "scope": "all-interfaces", "public_addresses": public },
            "owners": [{ "pid": pid, "name": "svc" }],
        })
    }

    #[test]
    fn access_findings_match_the_catalogue_at_every_builtin_severity() {
        use guestward_access::{
            AccessReport, Account, AuthorizedKey, CloudCredential, CredentialSource, KeyKind, Location,
            PasswordState, SshdSettings, SshdValue, SudoGrant,
        };
        let at = |file: &str| Location { file: file.into(), line: 1 };
        let yes = || SshdValue { value: "yes".into(), set_at: Some(at("/etc/ssh/sshd_config")) };
        let account = |name: &str, uid, password| Account {
            name: name.into(),
            uid,
            gid: uid,
            home: format!("/home/{name}"),
            shell: "/bin/bash".into(),
            can_login: true,
            password,
        };
        let grant = |all: bool| SudoGrant {
            at: at("/etc/sudoers"),
            who: "deploy".into(),
            hosts: "ALL".into(),
            runas: None,
            commands: vec![if all { "ALL".into() } else { "/bin/ls".into() }],
            nopasswd: true,
            all_commands: all,
            defaults_no_authenticate: false,
        };
        let key = |kind| CloudCredential {
            source: CredentialSource::EnvFile,
            at: at("/srv/app/.env"),
            name: "AWS_ACCESS_KEY_ID".into(),
            key_id: "AKIA…MPLE".into(),
            kind,
            secret_present: true,
            unit: None,
        };
        let mut report = AccessReport {
            accounts: vec![
                account("toor", 0, PasswordState::Set),
                account("guest", 1001, PasswordState::Empty),
            ],
            sshd: Some(SshdSettings {
                files: vec!["/etc/ssh/sshd_config".into()],
                password_authentication: yes(),
                permit_root_login: yes(),
                permit_empty_passwords: yes(),
                kbd_interactive_authentication: yes(),
                pubkey_authentication: yes(),
                authorized_keys_file: vec![".ssh/authorized_keys".into()],
                match_blocks: vec![],
            }),
            authorized_keys: vec![AuthorizedKey {
                user: "guest".into(),
                at: at("/home/guest/.ssh/authorized_keys"),
                key_type: "DSA".into(),
                algorithm: "ssh-dss".into(),
                bits: 1024,
                fingerprint: "SHA256:x".into(),
                comment: "old".into(),
                options: vec![],
                weak: Some("DSA".into()),
            }],
            sudo_grants: vec![grant(true), grant(false)],
            cloud_credentials: vec![key(KeyKind::LongTerm), key(KeyKind::Temporary)],
            ..Default::default()
        };
        let findings = guestward_access::findings(&report);
        let severities: BTreeSet<Severity> = findings.iter().map(|f| f.severity).collect();
        assert_eq!(
            severities,
            BTreeSet::from([Severity::Low, Severity::Medium, Severity::High, Severity::Critical])
        );
        assert_eq!(check(&findings), ids_of("GW-ACCESS-"));
        // Without sshd's empty passwords, the empty password is high.
        report.sshd = None;
        let empty: Vec<_> = guestward_access::findings(&report)
            .into_iter()
            .filter(|f| f.id == guestward_access::EMPTY_PASSWORD)
            .collect();
        assert_eq!(empty[0].severity, Severity::High);
        check(&empty);
    }

    #[test]
    fn network_findings_match_the_catalogue_at_every_builtin_severity() {
        let report: guestward_network::NetworkReport = serde_json::from_value(serde_json::json!({
            "backend": "procfs",
            "listeners": [
                listener(6379, "tcp", &[], 10),                // high
                listener(2375, "tcp", &[], 11),                // critical: plain-text Docker API
                listener(5432, "tcp", &["203.0.113.7"], 12),   // critical: public address
                listener(11211, "udp", &[], 13),               // high
            ],
            "processes": [{ "pid": 10, "name": "redis-server" }],
            "owner_scan": { "processes_scanned": 4, "processes_denied": 0, "processes_vanished": 0, "socket_fds_seen": 4 },
        }))
        .unwrap();
        let findings = guestward_network::risky_listener_findings(&report, &[]);
        assert_eq!(findings.len(), 4, "{findings:#?}");
        let severities: BTreeSet<Severity> = findings.iter().map(|f| f.severity).collect();
        assert_eq!(severities, BTreeSet::from([Severity::High, Severity::Critical]));
        assert_eq!(check(&findings), ids_of("GW-NET-"));
    }

    fn fim_report() -> guestward_fim::FimReport {
        guestward_fim::FimReport {
            baseline: guestward_fim::BaselineState::Complete { completed_at: Timestamp::now() },
            entries: 10,
            monitor: Some(guestward_fim::MonitorState::Watching),
            watches_granted: 5,
            watches_wanted: 5,
            watch_budget: 100,
            rescan_only_trees: vec![],
            last_verification: None,
            open_gaps: vec![],
            store_write_failures_total: 0,
            store_read_failures_total: 0,
            event_store_failures_total: 0,
            watcher_errors_total: 0,
            attribution: None,
        }
    }

    #[test]
    fn fim_findings_match_the_catalogue() {
        let mut r = fim_report();
        // Every failure at once: an open gap, short watches, failed writes, and a failed
        // verification that also found the baseline tampered with.
        r.open_gaps.push(guestward_fim::CoverageGap {
            id: 1,
            cause: guestward_fim::GapCause::StoreWriteFailed,
            trees: vec!["/etc".into()],
            start: Timestamp::now(),
            end: None,
            detail: "database or disk is full".into(),
        });
        r.watches_wanted = 9;
        r.rescan_only_trees = vec!["/usr (watch budget)".into()];
        r.store_write_failures_total = 3;
        r.last_verification = Some(guestward_fim::Verification {
            purpose: guestward_fim::Purpose::Rescan,
            trees: vec!["/etc".into()],
            finished: Timestamp::now(),
            duration_ms: 12,
            outcome: guestward_fim::ScanOutcome::Failed,
            changes: 0,
            counts: None,
            error: Some("baseline unreadable".into()),
            baseline_integrity: Some(guestward_fim::model::Integrity::Tampered),
        });
        // Package attribution: a file changed outside the package manager, one that did not
        // match its package at the baseline, and a conffile edit.
        let a: guestward_fim::package::AttributionReport = serde_json::from_value(serde_json::json!({
            "counts": { "transactions": 1, "package_transaction": 12, "outside_package_manager": 1,
                        "conffile_edit": 1, "unverified": 0, "baseline_mismatches": 1 },
            "outside": [
                { "path": "/usr/sbin/sshd", "seen": "2026-12-02T10:00:00Z",
                  "package": { "owner": { "manager": "dpkg", "name": "openssh-server", "version": "1:9.2p1-2" },
                               "origin": "outside-package-manager",
                               "expected": { "algo": "md5", "hex": "00112233445566778899aabbccddeeff" },
                               "actual": { "algo": "md5", "hex": "ffeeddccbbaa99887766554433221100" } } },
                { "path": "/usr/bin/ls", "seen": "2026-12-02T10:00:00Z", "at_baseline": true,
                  "package": { "owner": { "manager": "dpkg", "name": "coreutils", "version": "9.1-1" },
                               "origin": "outside-package-manager" } }
            ],
            "conffile_edits": [
                { "path": "/etc/ssh/sshd_config", "seen": "2026-12-02T10:00:00Z",
                  "package": { "owner": { "manager": "dpkg", "name": "openssh-server", "version": "1:9.2p1-2" },
                               "origin": "conffile-edit", "conffile": true } }
            ]
        }))
        .unwrap();
        r.attribution = Some(a);
        assert_eq!(check(&guestward_fim::fim_findings(&r)), ids_of("GW-FIM-"));
        // Gaps with a non-store cause take the other remediation branch: same id, same severity.
        r.open_gaps[0].cause = guestward_fim::GapCause::QueueOverflow;
        check(&guestward_fim::fim_findings(&r));
    }

    #[test]
    fn lang_findings_match_the_catalogue_at_every_severity() {
        let report: guestward_lang::LangReport = serde_json::from_value(serde_json::json!({
            "packages": [
                // JndiLookup present: critical.
                { "ecosystem": "maven", "namespace": "org.apache.logging.log4j", "name": "log4j-core",
                  "version": "2.14.1", "location": "/opt/a.jar", "evidence": "file_name" },
                // JndiLookup removed: medium.
                { "ecosystem": "maven", "namespace": "org.apache.logging.log4j", "name": "log4j-core",
                  "version": "2.14.1", "location": "/opt/b.jar", "evidence": "file_name" },
                { "ecosystem": "pypi", "name": "torchtriton", "version": "2.0.0",
                  "location": "/usr/lib/python3/dist-packages/torchtriton-2.0.0.dist-info", "evidence": "dist_info_metadata" },
            ],
            "jndi_lookup": [
                { "location": "/opt/a.jar", "class_entry": "org/apache/logging/log4j/core/lookup/JndiLookup.class" },
                { "location": "/opt/shaded.jar", "class_entry": "shaded/log4j/core/lookup/JndiLookup.class" },
            ],
            "stats": { "roots_walked": 1, "entries": 3, "directories": 1, "archives": 3, "nested_archives": 0,
                       "symlinks_not_followed": 0, "directories_already_seen": 0, "mounts_skipped": 0, "truncated": false },
        }))
        .unwrap();
        let findings = guestward_lang::findings(&report);
        let log4shell: BTreeSet<Severity> =
            findings.iter().filter(|f| f.id == "GW-LANG-001").map(|f| f.severity).collect();
        assert_eq!(log4shell, BTreeSet::from([Severity::Medium, Severity::Critical]), "{findings:#?}");
        assert_eq!(check(&findings), ids_of("GW-LANG-"));
    }

    /// The checked-in `docs/findings.md` must match the catalogue. Regenerate with
    /// `scripts/gen-findings`.
    #[test]
    fn checked_in_findings_doc_is_current() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/findings.md");
        let checked_in = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            checked_in == render_markdown(),
            "docs/findings.md is stale: run scripts/gen-findings and commit the result"
        );
    }

    #[test]
    fn markdown_lists_every_finding_with_an_anchor_and_a_section() {
        let doc = render_markdown();
        for r in CATALOGUE {
            assert!(
                doc.contains(&format!("| [{}](#{}) | {}", r.id, r.id.to_ascii_lowercase(), r.severity)),
                "{}",
                r.id
            );
            assert!(doc.contains(&format!("\n## {}\n", r.id)), "{}", r.id);
        }
    }
}
