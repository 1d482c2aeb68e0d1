"""What runs inside the tiny VM: busybox init's inittab and the shell scripts it starts.

Kernel command line the guest reads (all optional):

    kumo.ip=10.0.0.4/24     static address for eth0 (else DHCP with udhcpc)
    kumo.gw=10.0.0.1        default gateway with a static address
    kumo.dns=168.63.129.16  nameserver(s), comma-separated (DHCP's own otherwise)
    kumo.host=vm1           hostname (default kumo-tiny)
    kumo.ssh=<base64>       authorized_keys for root (base64 of the file's text; the cmdline is at most 2048 bytes)

Authorized keys are also read from the QEMU fw_cfg file `opt/kumo/authorized_keys` (any size), which is what
the driver's `VmSpec.fw_cfg` passes. The readiness marker `KUMO-VM-READY host=… ip=… uptime=…` goes to the
serial console once eth0 is configured and dropbear (port 22) and qemu-ga (virtio-serial port
`org.qemu.guest_agent.0`) are running; the line before it, `KUMO-VM-HOSTKEY <public key>`, is the SSH host key
generated at this boot. An ACPI power button press (QMP `system_powerdown`) powers the guest off.
"""

from __future__ import annotations

READY_MARKER = "KUMO-VM-READY"
HOSTKEY_MARKER = "KUMO-VM-HOSTKEY"
QGA_PORT = "org.qemu.guest_agent.0"
FW_CFG_KEYS = "opt/kumo/authorized_keys"

INITTAB = """\
::sysinit:/etc/kumo/rc
::shutdown:/etc/kumo/stop
::ctrlaltdel:/sbin/poweroff
"""

RC = r"""#!/bin/sh
# kumo tiny VM: boot script (busybox init's sysinit). Output goes to the serial console.
export PATH=/sbin:/usr/sbin:/bin:/usr/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mkdir -p /dev/pts /dev/shm /run /tmp /var/log /var/lib
mount -t devpts devpts /dev/pts -o gid=5,mode=620,ptmxmode=666
mount -t tmpfs -o mode=755 tmpfs /run
mount -t tmpfs -o mode=1777 tmpfs /dev/shm
ln -sf /proc/self/fd /dev/fd

while read -r m; do insmod "/lib/modules/$m" 2>/dev/null; done < /etc/kumo/modules

IP= GW= DNS= HOST=kumo-tiny SSHKEYS=
for arg in $(cat /proc/cmdline); do
  case "$arg" in
    kumo.ip=*) IP=${arg#kumo.ip=} ;;
    kumo.gw=*) GW=${arg#kumo.gw=} ;;
    kumo.dns=*) DNS=${arg#kumo.dns=} ;;
    kumo.host=*) HOST=${arg#kumo.host=} ;;
    kumo.ssh=*) SSHKEYS=${arg#kumo.ssh=} ;;
  esac
done

hostname "$HOST"
echo "$HOST" > /etc/hostname
printf '127.0.0.1 localhost\n127.0.1.1 %s\n' "$HOST" > /etc/hosts
ip link set lo up

# eth0 takes a few ms to appear after virtio_net is loaded
i=0
while [ ! -e /sys/class/net/eth0 ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done
if [ -e /sys/class/net/eth0 ]; then
  ip link set eth0 up
  if [ -n "$IP" ]; then
    ip addr add "$IP" dev eth0
    [ -n "$GW" ] && ip route add default via "$GW"
    # announce the (maybe reused) address: a neighbour cache holding an older MAC would stall ~45 s
    arping -q -U -c 2 -w 1 -I eth0 "${IP%/*}" >/dev/null 2>&1 &
  else
    udhcpc -i eth0 -s /etc/kumo/udhcpc -t 10 -T 1 -A 3 -b -S -x "hostname:$HOST" >/dev/null 2>&1
  fi
fi
if [ -n "$DNS" ]; then
  : > /etc/resolv.conf
  for ns in $(echo "$DNS" | tr , ' '); do echo "nameserver $ns" >> /etc/resolv.conf; done
fi

# SSH: dropbear with a host key made at this boot, keys for root from fw_cfg and/or the cmdline
mkdir -p /etc/dropbear /root/.ssh
chmod 700 /root /root/.ssh
: > /root/.ssh/authorized_keys
FWKEYS=/sys/firmware/qemu_fw_cfg/by_name/opt/kumo/authorized_keys/raw
[ -r "$FWKEYS" ] && { cat "$FWKEYS"; echo; } >> /root/.ssh/authorized_keys
[ -n "$SSHKEYS" ] && { echo "$SSHKEYS" | base64 -d; echo; } >> /root/.ssh/authorized_keys 2>/dev/null
chmod 600 /root/.ssh/authorized_keys
dropbearkey -t ed25519 -f /etc/dropbear/dropbear_ed25519_host_key >/dev/null 2>&1
dropbear -s -r /etc/dropbear/dropbear_ed25519_host_key -p 22 -P /run/dropbear.pid 2>>/var/log/dropbear.log

# Guest agent on its virtio-serial port (udev would make /dev/virtio-ports/NAME; we do it ourselves)
mkdir -p /dev/virtio-ports
for p in /sys/class/virtio-ports/*; do
  [ -r "$p/name" ] || continue
  ln -sf "../${p##*/}" "/dev/virtio-ports/$(cat "$p/name")"
done
if [ -e /dev/virtio-ports/org.qemu.guest_agent.0 ]; then
  qemu-ga -d -m virtio-serial -p /dev/virtio-ports/org.qemu.guest_agent.0 -f /run/qemu-ga.pid \
    -t /var/lib -l /var/log/qemu-ga.log
fi

# ACPI power button (QMP system_powerdown) -> poweroff
acpid -c /etc/acpi -a /etc/acpid.conf -l /var/log/acpid.log 2>/dev/null

ADDR=$(ip -4 -o addr show dev eth0 2>/dev/null | awk '{print $4}' | head -n1)
echo "KUMO-VM-HOSTKEY $(dropbearkey -y -f /etc/dropbear/dropbear_ed25519_host_key 2>/dev/null | grep '^ssh-')"
echo "KUMO-VM-READY host=$HOST ip=${ADDR:-none} uptime=$(cut -d' ' -f1 /proc/uptime)"
"""

STOP = r"""#!/bin/sh
# kumo tiny VM: run by busybox init before it powers off or reboots
echo "kumo: shutting down"
for f in /run/qemu-ga.pid /run/dropbear.pid; do [ -r "$f" ] && kill "$(cat "$f")" 2>/dev/null; done
sync
"""

POWER_BUTTON = """#!/bin/sh
poweroff
"""

ACPID_CONF = "PWRF PWRF/00000080\n"

UDHCPC = r"""#!/bin/sh
# udhcpc's event script: apply the lease to the interface
case "$1" in
  deconfig)
    ip addr flush dev "$interface"
    ip link set "$interface" up
    ;;
  bound|renew)
    ip addr flush dev "$interface"
    ip addr add "$ip/${mask:-24}" dev "$interface"
    if [ -n "$router" ]; then
      while ip route del default 2>/dev/null; do :; done
      for r in $router; do ip route add default via "$r" dev "$interface"; break; done
    fi
    if [ -n "$dns" ]; then
      : > /etc/resolv.conf
      for ns in $dns; do echo "nameserver $ns" >> /etc/resolv.conf; done
    fi
    ;;
esac
exit 0
"""

PASSWD = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
GROUP = "root:x:0:\ntty:x:5:\nnobody:x:65534:\n"
SHADOW = "root:*:19000:0:99999:7:::\n"
SHELLS = "/bin/sh\n/bin/ash\n"
PROFILE = "export PATH=/sbin:/usr/sbin:/bin:/usr/bin\nexport PS1='\\h:\\w\\$ '\n"
