# guestward-agent %post ($1: 1 install, 2 upgrade). The shell equivalent of %systemd_post
# (no rpm macros when cargo-generate-rpm builds), except that a first install enables and
# starts the agent: installing it is the decision to run it. `systemctl enable` only writes
# symlinks and works without a running systemd (image builds, containers); starting needs one.
install -d -m 0700 -o guestward -g guestward /var/lib/guestward
install -d -m 0750 -o root -g guestward /etc/guestward/tls
if [ "$1" -eq 1 ] && command -v systemctl >/dev/null 2>&1; then
    systemctl enable guestward-agent.service >/dev/null 2>&1 || :
    if [ -d /run/systemd/system ]; then
        systemctl daemon-reload >/dev/null 2>&1 || :
        systemctl start guestward-agent.service >/dev/null 2>&1 || :
    fi
fi
exit 0
