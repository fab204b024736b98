#!/bin/sh
# PID 1 of the lab guest (busybox-static in the initramfs that temper.lab.provision builds).
#
# It mounts the host root, shared read-only over virtio-9p (tag "hostroot"), at /mnt, runs the
# job chrooted into it as root with cwd /, writes the job's stdout+stderr to the virtio serial
# port named "lab.result", then a trailer line "__LAB_RC__=<exit status>", and powers off.
# When the lab itself fails (a module, a mount, the job file) it writes "__LAB_FATAL__=<why>"
# instead, so the host never mistakes a lab failure for the job's exit status.
#
# Settings come from the kernel command line (the kernel hands unknown key=value pairs to init as
# environment variables):
#   lab_script=<host path>   the job, read through the host root before /tmp is hidden
#   lab_shares=<tag>:<path>[:ro|:rw],...
#                            extra 9p shares mounted at the same path in the guest (default ro),
#                            after the tmpfs mounts over /tmp, /run and /var/tmp, so a directory
#                            under /tmp on the host is still visible; the host lists parents first
#   lab_trace=1              print boot milestones with their uptime to the console
export PATH=/bin
/bin/busybox mkdir -p /proc /sys /dev /mnt
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sys /sys
/bin/busybox mount -t devtmpfs dev /dev
/bin/busybox --install -s /bin

say() { echo "lab: $*" > /dev/console; }
uptime_s() { cut -d' ' -f1 /proc/uptime; }
stamp() { [ -n "$lab_trace" ] && say "$1 $(uptime_s)"; }

# The result channel: the virtio serial port QEMU names "lab.result".
PORT=/dev/null
for p in /sys/class/virtio-ports/*; do
  [ "$(cat "$p/name" 2>/dev/null)" = lab.result ] && PORT=/dev/${p##*/}
done
die() {
  say "FATAL: $*"
  printf '\n__LAB_FATAL__=%s\n' "$*" > "$PORT"
  sync
  poweroff -f
  exit 1
}
[ "$PORT" = /dev/null ] && die "no virtio serial port named lab.result"
stamp ports

for m in netfs 9pnet 9pnet_virtio 9p; do insmod /lib/modules/$m.ko || die "insmod $m"; done
stamp insmod
# Loopback for the agent's HTTP endpoints (temper.lab.observe); the guest has no other network.
ip link set lo up || say "loopback up failed"

R=/mnt
NINEP=trans=virtio,version=9p2000.L,msize=524288
mount -t 9p -o $NINEP,ro,cache=loose hostroot $R || die "mount hostroot"
stamp hostroot
mount -t proc proc $R/proc
mount -t sysfs sys $R/sys
mount -t devtmpfs dev $R/dev
mkdir -p $R/dev/pts $R/dev/shm
mount -t devpts devpts $R/dev/pts
mount -t tmpfs tmpfs $R/dev/shm
mount -t cgroup2 none $R/sys/fs/cgroup || say "cgroup2 mount failed"
mount -t bpf bpf $R/sys/fs/bpf 2>/dev/null
mount -t debugfs debugfs $R/sys/kernel/debug 2>/dev/null
mount -t tracefs tracefs $R/sys/kernel/tracing 2>/dev/null

[ -n "$lab_script" ] || die "no lab_script on the kernel command line"
# Copy the job before the tmpfs mounts below can hide it.
cp "$R$lab_script" /job.sh || die "job script $lab_script not readable"
for d in tmp run var/tmp; do mount -t tmpfs tmpfs $R/$d || die "tmpfs on /$d"; done
# libbpf resolves CONFIG_* externs from /boot/config-$(uname -r) (Debian has no /proc/config.gz):
# hide the host's /boot behind a tmpfs holding the guest kernel's config.
mount -t tmpfs tmpfs $R/boot && cp /kconfig "$R/boot/config-$(uname -r)" || say "no /boot/config"

mount_share() {  # tag path mode
  mkdir -p "$R$2" 2>/dev/null  # needed when the path lies under a guest tmpfs (/tmp, /run)
  if [ "$3" = rw ]; then opts=$NINEP,rw; else opts=$NINEP,ro,cache=loose; fi
  mount -t 9p -o "$opts" "$1" "$R$2" || die "mount share $1 at $2"
}
if [ -n "$lab_shares" ]; then
  saved_ifs=$IFS
  IFS=,
  for share in $lab_shares; do
    IFS=$saved_ifs
    tag=${share%%:*}
    rest=${share#*:}
    case $rest in
      *:rw) mount_share "$tag" "${rest%:rw}" rw ;;
      *:ro) mount_share "$tag" "${rest%:ro}" ro ;;
      *) mount_share "$tag" "$rest" ro ;;
    esac
  done
  IFS=$saved_ifs
fi
stamp shares

cp /job.sh $R/run/lab-job.sh || die "cannot copy the job into the guest's /run"
t_ready=$(uptime_s)
say "ready uptime=$t_ready"
# The port is opened once: a virtio serial port opens exclusively, and a process the job left
# running in the background would otherwise hold it and swallow the exit status.
exec 3> "$PORT"
chroot $R /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  HOME=/root TERM=dumb /bin/sh /run/lab-job.sh >&3 2>&3 < /dev/null
rc=$?
kill -9 -1 2>/dev/null  # from PID 1: every process the job left behind, never init itself
printf '\n__LAB_RC__=%d\n' "$rc" >&3
say "done rc=$rc uptime=$(uptime_s) (ready at $t_ready)"
sync
poweroff -f
