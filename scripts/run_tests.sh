#!/bin/sh
# run_tests.sh TEST... - run every test binary, keep going past failures, and end with
# one summary line "N passed, N failed" (binaries, not cases; each binary prints its
# own CMocka report). Exit status is non-zero when any binary failed.
passed=0; failed=0; failed_names=""
for t in "$@"; do
    echo "=== $t"
    if "$t"; then passed=$((passed + 1)); else failed=$((failed + 1)); failed_names="$failed_names $(basename "$t")"; fi
done
[ -n "$failed_names" ] && echo "failed:$failed_names"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
