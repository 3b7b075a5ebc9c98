# Shared by scripts/image-base and scripts/test-image: building the Dockerfile without a Docker
# daemon. Debian's buildah builds it (chroot isolation, host network); the base it builds on
# is a local Debian bookworm with Python 3.11 made by debootstrap, standing in for
# python:3.11-slim-bookworm (no image registry is needed). Both live in a cache outside the
# checkout, built once per machine:
#
#   $RETENTION_IMAGE_CACHE (default ${XDG_CACHE_HOME:-$HOME/.cache}/retention-worker)
#     storage-DRIVER/       buildah's image store: the base, the image and its cached layers
#     storage-DRIVER.conf   its storage.conf (CONTAINERS_STORAGE_CONF points buildah at it)
#     *.log                 the last base and image builds' output
#
# To look at it by hand: CONTAINERS_STORAGE_CONF=<cache>/storage-overlay.conf buildah images
# To start afresh: rm -rf <cache> (buildah's mounts must be gone: buildah rm --all first).
# shellcheck shell=bash

IMAGE_CACHE="${RETENTION_IMAGE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/retention-worker}"
BASE_REPOSITORY="localhost/retention-worker-base"
IMAGE_REPOSITORY="localhost/retention-worker"

# Why the image cannot be built here, with what to do about it; nothing when it can.
image_tools_missing() {
  local missing=()
  command -v buildah >/dev/null 2>&1 || missing+=(buildah)
  command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
  if [ "$(id -u)" != 0 ]; then
    echo "it needs root (debootstrap, and buildah's chroot isolation)"
  elif [ "${#missing[@]}" -gt 0 ]; then
    echo "${missing[*]} not found (Debian/Ubuntu: apt-get install -y buildah debootstrap)"
  fi
}

# How buildah stores layers: the kernel's overlay where it lets us mount one on the cache's
# filesystem (a layer is a directory of changes, not a copy of the whole tree); else overlay
# through fuse-overlayfs (buildah's Debian package brings it), in a container whose own root is
# an overlay for one; else vfs, which copies every layer whole and is several times slower.
# RETENTION_BUILDAH_DRIVER (overlay, fuse-overlayfs or vfs) chooses.
storage_driver() {
  if [ -n "${RETENTION_BUILDAH_DRIVER:-}" ]; then
    echo "$RETENTION_BUILDAH_DRIVER"
    return 0
  fi
  local probe driver=vfs options
  probe="$(mktemp -d "$IMAGE_CACHE/overlay-probe.XXXXXX")"
  mkdir -p "$probe/lower" "$probe/upper" "$probe/work" "$probe/merged"
  options="lowerdir=$probe/lower,upperdir=$probe/upper,workdir=$probe/work"
  if mount -t overlay overlay -o "$options" "$probe/merged" 2>/dev/null; then
    umount "$probe/merged"
    driver=overlay
  elif command -v fuse-overlayfs >/dev/null 2>&1 &&
       fuse-overlayfs -o "$options" "$probe/merged" >/dev/null 2>&1; then
    umount "$probe/merged" 2>/dev/null || fusermount3 -u "$probe/merged" 2>/dev/null || true
    driver=fuse-overlayfs
  fi
  rm -rf "$probe"
  echo "$driver"
}

# Point every buildah call of this shell (and its children) at the cache's image store.
setup_image_store() {
  mkdir -p "$IMAGE_CACHE"
  local choice driver conf
  choice="$(storage_driver)"
  case "$choice" in
    overlay | vfs) driver="$choice" ;;
    fuse-overlayfs) driver=overlay ;;
    *) die "RETENTION_BUILDAH_DRIVER=$choice: use overlay, fuse-overlayfs or vfs" ;;
  esac
  conf="$IMAGE_CACHE/storage-$choice.conf"
  {
    echo "# Written by scripts/image.sh: the image store of scripts/test-image."
    echo "[storage]"
    echo "driver = \"$driver\""
    echo "graphroot = \"$IMAGE_CACHE/storage-$choice\""
    echo "runroot = \"$IMAGE_CACHE/run-$choice\""
    if [ "$choice" = fuse-overlayfs ]; then
      echo "[storage.options.overlay]"
      echo "mount_program = \"$(command -v fuse-overlayfs)\""
    fi
  } >"$conf.tmp"
  mv "$conf.tmp" "$conf"
  export CONTAINERS_STORAGE_CONF="$conf"
  BUILDAH_DRIVER="$choice"
}

# The base's recipe. Its text, with the CA bundle, names the base image: change either and the
# next run builds a new one. Two apt steps: debootstrap --include= leaves python3.11-venv
# unconfigured. The machine's CA bundle replaces the base's own, so that pip inside the build
# trusts whatever this machine trusts on its way to the package index.
base_recipe() {
  local rootfs="$1"
  debootstrap --variant=minbase bookworm "$rootfs" "${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
  chroot "$rootfs" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
    python3.11 python3.11-venv python-is-python3 ca-certificates
  chroot "$rootfs" apt-get clean
  rm -rf "$rootfs"/var/lib/apt/lists/*
  cp /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/ca-certificates.crt"
  # debootstrap copies the host's; buildah supplies its own when it runs anything.
  : >"$rootfs/etc/resolv.conf"
  : >"$rootfs/etc/hostname"
}

base_image_name() {
  local digest
  digest="$( { declare -f base_recipe; cat /etc/ssl/certs/ca-certificates.crt; } | sha256sum | cut -c1-12)"
  echo "$BASE_REPOSITORY:bookworm-$digest"
}

image_exists() { buildah inspect --type image "$1" >/dev/null 2>&1; }

# The base image's name, built first when the store does not have it (about a minute, once
# per machine and recipe). A lock keeps two test runs from building it at once.
ensure_base_image() {
  local name log
  name="$(base_image_name)"
  exec 9>"$IMAGE_CACHE/base.lock"
  flock 9
  if ! image_exists "$name"; then
    log="$IMAGE_CACHE/base.log"
    say "building the base image $name: Debian bookworm with python3.11 by debootstrap (about a minute, once per machine and recipe; log in $log)" >&2
    # In the background and waited for: run as `build_base_image || die`, errexit would be
    # off inside it, and a failed step would go unnoticed.
    build_base_image "$name" >"$log" 2>&1 &
    wait $! || die "could not build the base image $name (see $log): $(tail -n 3 "$log")"
  fi
  flock -u 9
  exec 9>&-
  echo "$name"
}

build_base_image() {
  local name="$1" rootfs container mountpoint
  rootfs="$(mktemp -d "$IMAGE_CACHE/rootfs.XXXXXX")"
  # shellcheck disable=SC2064 # the path is fixed now
  trap "rm -rf '$rootfs'" EXIT
  chmod 0755 "$rootfs"  # it becomes the image's /
  base_recipe "$rootfs"
  container="$(buildah from scratch)"
  # shellcheck disable=SC2064
  trap "buildah rm '$container' >/dev/null 2>&1 || true; rm -rf '$rootfs'" EXIT
  mountpoint="$(buildah mount "$container")"
  cp -a "$rootfs/." "$mountpoint/"
  buildah umount "$container"
  # What python:3.11-slim-bookworm sets too.
  buildah config \
    --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env LANG=C.UTF-8 \
    --cmd python3 \
    --label "org.opencontainers.image.description=Debian bookworm minbase with python3.11, for scripts/test-image" \
    "$container"
  buildah commit --quiet --rm --format docker "$container" "$name"
}
