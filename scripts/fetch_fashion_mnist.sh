#!/usr/bin/env bash
# Make Fashion-MNIST available under <repo>/data/fashion-mnist/ (the four IDX .gz files).
#
# Usage: scripts/fetch_fashion_mnist.sh [REPO_ROOT]   (default: .)
#
# Tries, in order, stopping at the first that works:
#   1. the files are already in data/fashion-mnist            -> nothing to do
#   2. /usr/share/datasets/fashion-mnist has them              -> copy them
#   3. running as root: apt-get install dataset-fashion-mnist -> copy them
#   4. apt-get download dataset-fashion-mnist, dpkg -x it into data/deb -> copy them
# If all fail it warns and exits 0: mnist5k and digits still work without these files.
# Idempotent: running it again when the files are in place changes nothing.
set -euo pipefail

ROOT="${1:-.}"
DEST="$ROOT/data/fashion-mnist"
SYSTEM_DIR="${FASHION_MNIST_SYSTEM_DIR:-/usr/share/datasets/fashion-mnist}"  # override: tests
DEB_ROOT="$ROOT/data/deb"
DEB_DIR="$DEB_ROOT/usr/share/datasets/fashion-mnist"
PACKAGE="dataset-fashion-mnist"
FILES=(
    train-images-idx3-ubyte.gz
    train-labels-idx1-ubyte.gz
    t10k-images-idx3-ubyte.gz
    t10k-labels-idx1-ubyte.gz
)

log() { echo "fetch_fashion_mnist: $*" >&2; }

has_all() {  # has_all DIR: the four files are in DIR and not empty
    local f
    for f in "${FILES[@]}"; do
        [[ -s "$1/$f" ]] || return 1
    done
}

copy_from() {  # copy_from DIR: copy the four files into DEST, atomically per file
    local f
    mkdir -p "$DEST"
    for f in "${FILES[@]}"; do
        cp "$1/$f" "$DEST/$f.part"
        mv -f "$DEST/$f.part" "$DEST/$f"
    done
    log "Fashion-MNIST copied from $1 to $DEST"
}

if has_all "$DEST"; then
    log "Fashion-MNIST already in $DEST"
    exit 0
fi

if has_all "$SYSTEM_DIR"; then
    copy_from "$SYSTEM_DIR"
    exit 0
fi

if [[ "$(id -u)" -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
    log "installing $PACKAGE with apt-get"
    if apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$PACKAGE"; then
        if has_all "$SYSTEM_DIR"; then
            copy_from "$SYSTEM_DIR"
            exit 0
        fi
    fi
    log "apt-get install $PACKAGE did not provide the files; trying apt-get download"
fi

if has_all "$DEB_DIR"; then
    copy_from "$DEB_DIR"
    exit 0
fi

if command -v apt-get >/dev/null 2>&1 && command -v dpkg >/dev/null 2>&1; then
    TMP="$(mktemp -d)"
    trap 'rm -rf "$TMP"' EXIT
    log "downloading $PACKAGE with apt-get download"
    if (cd "$TMP" && apt-get download "$PACKAGE" >/dev/null 2>&1); then
        DEB="$(find "$TMP" -maxdepth 1 -name "${PACKAGE}_*.deb" | head -n 1)"
        if [[ -n "$DEB" ]] && mkdir -p "$DEB_ROOT" && dpkg -x "$DEB" "$DEB_ROOT" \
            && has_all "$DEB_DIR"; then
            copy_from "$DEB_DIR"
            exit 0
        fi
    fi
fi

log "WARNING: Fashion-MNIST is unavailable (not in $DEST or $SYSTEM_DIR, and $PACKAGE" \
    "could not be installed or downloaded). The datasets mnist5k and digits still work;" \
    "to use fashion_mnist later, run 'apt-get install $PACKAGE' or copy the four IDX .gz" \
    "files (${FILES[*]}) into $DEST."
exit 0
