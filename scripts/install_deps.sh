#!/bin/sh
# install_deps.sh - install the Debian packages Citadel builds and tests with (make deps).
# As root it runs apt-get; otherwise it prints the command to run.
set -e
# The fleet (common/, services/) adds ZeroMQ, protobuf-c (library and protoc-c), OpenSSL,
# libevent (evhttp for the admin listener and the gateway), pkg-config to find them, curl;
# PCRE2 (with JIT) for the sanitizer's detectors (common/pii.c); OpenBLAS for training;
# hiredis and redis-server for the gateway's shared rate limits and the router's response
# cache (tests start their own); librdkafka for the audit and batch topics and
# citadel-kafka-dev's in-memory cluster;
# libjwt for the gateway's JWT bearer tokens; gRPC core (libgrpc-dev) for its gRPC endpoint.
PACKAGES="build-essential clang libcmocka-dev python3 python3-pip unzip libevent-dev libjansson-dev libssl-dev libzmq3-dev libprotobuf-c-dev protobuf-c-compiler pkg-config curl libpcre2-dev libopenblas-dev librdkafka-dev libhiredis-dev redis-server libjwt-dev libgrpc-dev"
missing=""
# The deployment checks (tests/integration/deploy_test.sh): docker-compose validates
# deploy/docker-compose.yml without a daemon, promtool (package prometheus) checks the
# Prometheus config and alert rules, python3-yaml and a venv for the Kubernetes schemas,
# openssl for the certificate and key the gateway is given there.
# CITADEL_DEPS=build (the image build, docker/) leaves them out.
[ "${CITADEL_DEPS:-all}" = build ] || PACKAGES="$PACKAGES docker-compose prometheus python3-yaml python3-venv openssl"
for p in $PACKAGES; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
done
if [ -z "$missing" ]; then
    echo "deps: all present ($PACKAGES)"
    exit 0
fi
if [ "$(id -u)" = 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends $missing
else
    echo "deps: missing:$missing"
    echo "run: sudo apt-get install -y$missing"
    exit 1
fi
