# guestward-collector %postun ($1: 0 erase, 1 upgrade): %systemd_postun_with_restart's
# equivalent. rpm has no purge: /var/lib/guestward-collector (the database) and
# /etc/guestward-collector/pki stay after an erase, and an edited collector.toml is kept as
# collector.toml.rpmsave (docs/install.md says how to remove them).
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
    if [ "$1" -ge 1 ]; then
        systemctl try-restart guestward-collector.service >/dev/null 2>&1 || :
    fi
fi
exit 0
