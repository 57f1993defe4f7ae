//! Human rendering of the `cloud` section (`agentctl imds`, `guestward-agent scan`).

use crate::report::{CloudReport, Tags};
use std::io::{self, Write};

/// One line: the value escaped whole (`TerminalSafe` keeps newlines, and a newline in an
/// IMDS value such as the spot action's time once forged lines of the table).
fn row(out: &mut dyn Write, key: &str, value: impl std::fmt::Display) -> io::Result<()> {
    writeln!(out, "  {key:<22} {}", guestward_core::text::escape_control(&value.to_string()))
}

fn opt(v: &Option<String>) -> &str {
    v.as_deref().unwrap_or("-")
}

/// Writes the report as an aligned two-column table.
///
/// Values come from the metadata service and from tags anyone allowed to tag the instance
/// can set: written through [`guestward_core::text::TerminalSafe`], tags escaped.
pub fn render_table(report: &CloudReport, out: &mut dyn Write) -> io::Result<()> {
    let out = &mut guestward_core::text::TerminalSafe::new(out);
    writeln!(out, "Cloud (IMDS)")?;
    row(out, "state", report.state.as_str())?;
    if let Some(r) = &report.reason {
        row(out, "reason", r)?;
    }
    if let Some(imds) = &report.imds {
        row(out, "endpoint", &imds.endpoint)?;
        let mode = match imds.access_mode {
            Some(crate::report::AccessMode::V2) => "IMDSv2 (session tokens)",
            Some(crate::report::AccessMode::V1Fallback) => "IMDSv1 fallback (token refused)",
            None => "-",
        };
        row(out, "access", mode)?;
        let v1 = match imds.imdsv1_answers {
            Some(true) => "yes (IMDSv1 enabled)",
            Some(false) => "no (tokens required)",
            None => "not probed",
        };
        row(out, "token-less GET answers", v1)?;
        if let Some(ttl) = imds.token_ttl_secs {
            row(out, "token ttl", format!("{ttl} s"))?;
        }
    }
    if let Some(i) = &report.instance {
        row(out, "instance id", opt(&i.instance_id))?;
        row(out, "instance type", opt(&i.instance_type))?;
        row(out, "ami", opt(&i.ami_id))?;
        row(out, "account", opt(&i.account_id))?;
        row(out, "region", opt(&i.region))?;
        let zone = match (&i.availability_zone, &i.availability_zone_id) {
            (Some(z), Some(id)) => format!("{z} ({id})"),
            (Some(z), None) => z.clone(),
            _ => "-".to_string(),
        };
        row(out, "zone", zone)?;
        row(out, "architecture", opt(&i.architecture))?;
        row(out, "market", opt(&i.lifecycle))?;
        row(out, "private ipv4", opt(&i.private_ipv4))?;
        row(out, "public ipv4", opt(&i.public_ipv4))?;
        if !i.ipv6.is_empty() {
            row(out, "ipv6", i.ipv6.join(", "))?;
        }
    }
    if let Some(iam) = &report.iam {
        row(out, "instance profile", &iam.instance_profile_arn)?;
    }
    match &report.tags {
        Some(Tags::Enabled { values }) => {
            row(out, "tags", format!("{} tag(s)", values.len()))?;
            for (k, v) in values {
                use guestward_core::text::escape_control;
                row(out, "", format!("{} = {}", escape_control(k), escape_control(v)))?;
            }
        }
        Some(Tags::NotEnabled) => row(out, "tags", "not enabled in instance metadata")?,
        Some(Tags::NotCollected) => row(out, "tags", "not collected (imds.collect_tags = false)")?,
        None => {}
    }
    if let Some(l) = &report.lifecycle {
        if let Some(s) = &l.spot_instance_action {
            row(out, "SPOT INTERRUPTION", format!("{} at {}", s.action, s.time))?;
        }
        if let Some(t) = &l.rebalance_notice_time {
            row(out, "rebalance recommended", t)?;
        }
        if let Some(a) = &l.autoscaling_target_state {
            row(out, "autoscaling state", a)?;
        }
        for m in &l.maintenance_events {
            row(
                out,
                "maintenance",
                format!("{} {} .. {} ({})", m.code, opt(&m.not_before), opt(&m.not_after), opt(&m.state)),
            )?;
        }
    }
    if let Some(id) = &report.identity {
        let signed = match (&id.rsa2048, &id.signature) {
            (Some(_), Some(_)) => "document, rsa2048 and signature kept",
            (Some(_), None) => "document and rsa2048 kept",
            (None, Some(_)) => "document and signature kept",
            (None, None) => "document kept (unsigned)",
        };
        row(out, "identity", signed)?;
    }
    if !report.interfaces.is_empty() {
        writeln!(out)?;
        writeln!(
            out,
            "  {:<4} {:<18} {:<22} {:<25} {:<22} security groups",
            "dev", "mac", "eni", "subnet", "vpc"
        )?;
        for n in &report.interfaces {
            writeln!(
                out,
                "  {:<4} {:<18} {:<22} {:<25} {:<22} {}",
                n.device_number.map(|d| d.to_string()).unwrap_or_else(|| "-".into()),
                n.mac,
                opt(&n.interface_id),
                opt(&n.subnet_id),
                opt(&n.vpc_id),
                if n.security_group_ids.is_empty() {
                    "-".to_string()
                } else {
                    n.security_group_ids.join(",")
                }
            )?;
        }
    }
    Ok(())
}
