# guestward-agent %pre: the `guestward` system user and group exist before any file is laid
# down (rpm's convention; the same user as /usr/lib/sysusers.d/guestward-agent.conf, created
# with shadow-utils because systemd-sysusers is old or absent on Amazon Linux 2 and in
# containers). Both stay on erase: files they own elsewhere must not pass to a later user.
getent group guestward >/dev/null || groupadd --system guestward
getent passwd guestward >/dev/null || useradd --system --gid guestward \
    --home-dir /var/lib/guestward --no-create-home --shell /sbin/nologin \
    --comment "guestward security agent" guestward
exit 0
