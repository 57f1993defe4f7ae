# guestward-agent %postun ($1: 0 erase, 1 upgrade): %systemd_postun_with_restart's equivalent.
# rpm has no purge: /var/lib/guestward (state) and /etc/guestward/tls stay after an erase, and
# an edited agent.toml is kept as agent.toml.rpmsave (docs/install.md says how to remove them).
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
    if [ "$1" -ge 1 ]; then
        systemctl try-restart guestward-agent.service >/dev/null 2>&1 || :
    fi
fi
exit 0
