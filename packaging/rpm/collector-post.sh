# guestward-collector %post ($1: 1 install, 2 upgrade): %systemd_post's shell equivalent, plus
# enable and start on a first install, as the agent's. The unit only starts once
# /etc/guestward-collector/pki/server-key.pem exists (ConditionPathExists; docs/install.md).
install -d -m 0700 -o guestward-collector -g guestward-collector /var/lib/guestward-collector
install -d -m 0750 -o root -g guestward-collector /etc/guestward-collector/pki
if [ "$1" -eq 1 ] && command -v systemctl >/dev/null 2>&1; then
    systemctl enable guestward-collector.service >/dev/null 2>&1 || :
    if [ -d /run/systemd/system ]; then
        systemctl daemon-reload >/dev/null 2>&1 || :
        systemctl start guestward-collector.service >/dev/null 2>&1 || :
    fi
fi
exit 0
