#!/usr/bin/env bash
# Runs every fuzz target from its committed seeds for a bounded time each (FUZZ_SECONDS, default 30), without a
# sanitizer, which works on the stable toolchain (safe Rust: what is hunted is panics, hangs and runaway memory).
# A crash exits non-zero and leaves the input under fuzz/artifacts/TARGET/.
set -euo pipefail
cd "$(dirname "$0")"
seconds="${FUZZ_SECONDS:-30}"
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
for target in infer_json binary_tensor package_reader; do
    mkdir -p "$work/$target"
    # The first corpus directory receives what the run discovers; the committed seeds stay as they are.
    cargo fuzz run --sanitizer none "$target" "$work/$target" "seeds/$target" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=1048576 -print_final_stats=1
done
