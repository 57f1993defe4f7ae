# guestward-collector %pre: the `guestward-collector` system user and group exist before any file is laid
# down (rpm's convention; the same user as /usr/lib/sysusers.d/guestward-collector.conf, created
# with shadow-utils because systemd-sysusers is old or absent on Amazon Linux 2 and in
# containers). Both stay on erase: files they own elsewhere must not pass to a later user.
getent group guestward-collector >/dev/null || groupadd --system guestward-collector
getent passwd guestward-collector >/dev/null || useradd --system --gid guestward-collector \
    --home-dir /var/lib/guestward-collector --no-create-home --shell /sbin/nologin \
    --comment "guestward reference collector" guestward-collector
exit 0
