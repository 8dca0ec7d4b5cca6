#!/usr/bin/env bash
# Install the Debian packages squeeze's data loaders use, when this machine allows it.
set -u
PACKAGES="dataset-fashion-mnist mate-backgrounds"
missing=""
for p in $PACKAGES; do
  dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = "0" ]; then
  apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $missing >/dev/null \
    || echo "warning: could not install$missing; tests needing them will say how to get them" >&2
else
  echo "note: install$missing with apt-get (as root) for the Fashion-MNIST data" >&2
fi
exit 0
