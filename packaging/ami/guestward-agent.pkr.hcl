# Packer template: an AMI with the guestward agent installed and no instance state baked in
# (docs/ami.md). Build the packages first (scripts/package), then:
#
#   packer init packaging/ami/guestward-agent.pkr.hcl
#   packer build -var package=target/packages/guestward-agent_0.1.0-1_amd64.deb \
#     -var source_ami_owner=136693071363 -var source_ami_name='debian-12-amd64-*' \
#     packaging/ami/guestward-agent.pkr.hcl
#
# For Amazon Linux or RHEL use the .rpm and their AMI owner and name.

packer {
  required_plugins {
    amazon = {
      version = ">= 1.3.0"
      source  = "github.com/hashicorp/amazon"
    }
  }
}

variable "package" {
  type        = string
  description = "Path of the guestward-agent .deb or .rpm to install."
}

variable "region" {
  type    = string
  default = "eu-west-1"
}

variable "instance_type" {
  type    = string
  default = "t3.small"
}

variable "source_ami_owner" {
  type        = string
  description = "Owner of the base AMI (136693071363: Debian; 137112412989: Amazon Linux)."
}

variable "source_ami_name" {
  type        = string
  description = "Name filter of the base AMI, e.g. debian-12-amd64-* or al2023-ami-2023.*-x86_64."
}

variable "ssh_username" {
  type    = string
  default = "admin"
}

variable "keep_fim_baseline" {
  type        = bool
  default     = false
  description = "Keep the FIM baseline built here, marked golden (re-verified at each instance's first boot)."
}

source "amazon-ebs" "guestward" {
  region        = var.region
  instance_type = var.instance_type
  ssh_username  = var.ssh_username
  ami_name      = "guestward-agent-{{timestamp}}"
  source_ami_filter {
    owners      = [var.source_ami_owner]
    most_recent = true
    filters = {
      name                = var.source_ami_name
      virtualization-type = "hvm"
      root-device-type    = "ebs"
    }
  }
  # IMDSv2 only on the build instance and on the instances launched from the image.
  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
  }
  imds_support = "v2.0"
}

build {
  sources = ["source.amazon-ebs.guestward"]

  provisioner "file" {
    source      = var.package
    destination = "/tmp/${basename(var.package)}"
  }

  provisioner "shell" {
    execute_command = "sudo -E sh -eu '{{.Path}}'"
    environment_vars = [
      "PKG=/tmp/${basename(var.package)}",
      "KEEP_BASELINE=${var.keep_fim_baseline}",
    ]
    inline = [
      "case \"$PKG\" in *.deb) apt-get update && apt-get install -y \"$PKG\" ;; *.rpm) dnf install -y \"$PKG\" || yum install -y \"$PKG\" ;; *) echo \"package must be a .deb or .rpm: $PKG\" >&2; exit 1 ;; esac",
      "rm -f \"$PKG\"",
      "agentctl check-config /etc/guestward/agent.toml",
      # Stops the agent, removes identity, spool, history, certificate and key (and the FIM
      # baseline unless kept golden).
      "if [ \"$KEEP_BASELINE\" = true ]; then agentctl prepare-image --keep-baseline; else agentctl prepare-image; fi",
      # Each instance must get its own machine-id (systemd writes one at first boot).
      "truncate -s 0 /etc/machine-id",
      "rm -f /var/lib/dbus/machine-id",
      # First-boot configuration runs again on every instance (cloud-init.yaml).
      "cloud-init clean --logs --seed || true",
      # The build instance's journal is not the instances'.
      "journalctl --rotate && journalctl --vacuum-time=1s || true",
    ]
  }
}
