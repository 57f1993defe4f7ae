# guestward-agent %preun ($1: 0 erase, 1 upgrade): %systemd_preun's equivalent. Stopped and
# disabled on erase only; an upgrade restarts it in %postun.
if [ "$1" -eq 0 ] && command -v systemctl >/dev/null 2>&1; then
    systemctl --no-reload disable guestward-agent.service >/dev/null 2>&1 || :
    if [ -d /run/systemd/system ]; then
        systemctl stop guestward-agent.service >/dev/null 2>&1 || :
    fi
fi
exit 0
