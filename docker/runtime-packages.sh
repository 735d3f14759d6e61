#!/bin/sh
# runtime-packages.sh BINARY... - the Debian packages that own the shared libraries the
# binaries load, one a line: what the runtime image installs. Run in the build stage,
# it follows whatever libraries the services link today, so a new dependency needs no
# edit here.
set -e
for bin in "$@"; do
    ldd "$bin" | awk '/=> \// { print $3 }'
done | sort -u | while read -r lib; do
    # dpkg knows the path as installed, which may differ from ldd's by a /usr prefix.
    real=$(readlink -f "$lib")
    dpkg -S "$real" 2>/dev/null || dpkg -S "${real#/usr}" 2>/dev/null || dpkg -S "$lib"
done | cut -d: -f1 | sort -u
