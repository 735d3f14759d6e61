#!/bin/bash
# healthcheck.sh PORT [PATH] - the images' HEALTHCHECK: exits 0 when the service's admin
# listener on 127.0.0.1:PORT answers PATH (default /healthz) with HTTP 200. Written with
# bash's /dev/tcp so that the runtime image needs no HTTP client.
port=${1:?usage: citadel-healthcheck PORT [PATH]}
path=${2:-/healthz}
exec 3<>"/dev/tcp/127.0.0.1/$port" || exit 1
printf 'GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' "$path" >&3
read -r -t 3 version status _ <&3 || exit 1
[ "$status" = 200 ]
