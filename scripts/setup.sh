#!/usr/bin/env bash
# Installs whatever is missing for kumo on this machine, and nothing that is already there:
#   Debian packages (when root), a virtualenv in .venv with kumo and its test tools, and the real
#   az CLI in .venv-az (its pinned SDKs stay out of kumo's own environment).
# Idempotent and quick on a second run: each step is skipped when its stamp is current.
set -euo pipefail
cd "$(dirname "$0")/.."

AZ_VERSION=2.91.0
PYTHON=${PYTHON:-python3}
say() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }

# 1. Debian packages the server and its tests use.
DEB_PACKAGES=(ca-certificates curl iproute2 nftables procps python3 python3-venv python3-dev gcc make
  conntrack  # load balancers flush the flows of a backend that leaves its pool (conntrack -D)
  docker-registry skopeo apache2-utils  # the image-pull tests: a real registry, pushes, htpasswd
  busybox-static nginx-light python3.11 mmdebstrap gpg runc umoci  # `kumo catalog build` and its tests
  conmon git  # container groups: conmon supervises each container, git clones gitRepo volumes
  podman  # the container registry tests push and pull with podman too
  qemu-system-x86 kmod cpio dropbear-bin qemu-guest-agent openssh-client  # VMs and `kumo vm-images build`
  qemu-utils  # disks, snapshots and images: qemu-img (and qemu-io for their tests)
  e2fsprogs openssl  # the Debian VM image (mkfs.ext4 -d) and its seeds (openssl passwd -6 hashes passwords)
  postgresql)  # `make test`'s second pass: scripts/postgres.sh runs a server of its own (Debian's stays stopped)
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  missing=()
  for p in "${DEB_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    say "installing Debian packages: ${missing[*]}"
    # Packages must not start services on this host (nginx-light's postinst would start nginx on port 80):
    # a policy-rc.d that refuses, for this install only and only where there is none already.
    policy=/usr/sbin/policy-rc.d
    if [ ! -e "$policy" ]; then
      printf '#!/bin/sh\n# kumo setup.sh: no service starts during its apt-get install\nexit 101\n' > "$policy"
      chmod 755 "$policy"
      trap 'rm -f "$policy"' EXIT
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    if grep -q "kumo setup.sh" "$policy" 2>/dev/null; then rm -f "$policy"; trap - EXIT; fi
  fi
fi

if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "kumo needs Python 3.11 or newer; $("$PYTHON" --version 2>&1) found (set PYTHON=...)" >&2
  exit 1
fi

pip_quiet() { "$@" 2>&1 | grep -v -e '^WARNING: Location' -e '^\s*$' || true; }

# 2. kumo itself, editable, with its test tools.
stamp=.venv/.kumo-installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ ! -x .venv/bin/python ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  say "creating .venv with kumo and its test tools (first run takes a minute) …"
  [ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
  pip_quiet .venv/bin/pip install -q --upgrade pip
  pip_quiet .venv/bin/pip install -q -e '.[test]'
  .venv/bin/python -c 'import kumo, uvicorn, sqlalchemy, azure.mgmt.resource' 
  echo "$want" > "$stamp"
fi

# 3. The real az CLI, in its own environment.
if [ ! -x .venv-az/bin/az ] || [ "$(cat .venv-az/.kumo-installed 2>/dev/null)" != "$AZ_VERSION" ]; then
  say "installing the az CLI $AZ_VERSION in .venv-az (first run takes a minute) …"
  [ -x .venv-az/bin/python ] || "$PYTHON" -m venv .venv-az
  pip_quiet .venv-az/bin/pip install -q "azure-cli==$AZ_VERSION"
  .venv-az/bin/az version >/dev/null
  echo "$AZ_VERSION" > .venv-az/.kumo-installed
fi
# `kumo az` finds az beside its own interpreter.
ln -sf ../../.venv-az/bin/az .venv/bin/az

# 4. The offline image catalog (busybox, nginx, debian, python, Azure's aci-* samples as an OCI layout in
#    $KUMO_CATALOG_DIR or /var/cache/kumo/catalog): about a minute the first time, a second when up to date.
if [ "$(id -u)" = 0 ]; then
  .venv/bin/kumo catalog build || say "WARNING: the image catalog is incomplete (see above); retry: .venv/bin/kumo catalog build"
else
  say "skipping the image catalog (mmdebstrap needs root): run 'sudo .venv/bin/kumo catalog build'"
fi
# 5. The VM images (kumo tiny: Debian's cloud kernel + a busybox initramfs with dropbear and qemu-ga; Debian 12:
#    mmdebstrap + cloud-init on a qcow2 disk; in $KUMO_VM_IMAGES_DIR or /var/cache/kumo/vm-images): about a
#    minute the first time (Debian's mmdebstrap), ~2 s when up to date.
if [ "$(id -u)" = 0 ]; then
  .venv/bin/kumo vm-images build || say "WARNING: no VM images (see above); retry: .venv/bin/kumo vm-images build"
else
  say "skipping the VM images (apt-get download and the guest files want root): run 'sudo .venv/bin/kumo vm-images build'"
fi
say "ready: .venv/bin/kumo (az $AZ_VERSION at .venv-az/bin/az)"
