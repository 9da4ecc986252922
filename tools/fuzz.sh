#!/usr/bin/env bash
# Fuzzes the WebSocket frame reader, the client control-message parser and
# every feed decoder with
# cargo-fuzz (libFuzzer + AddressSanitizer), each for SECONDS (default 30).
#
#   tools/fuzz.sh [SECONDS] [TARGET...]
#
# Targets (fuzz/fuzz_targets/): ws_frames, control_message, jsonl_line,
# capture_file, itch_stream; default all five. Fails on the first crash: libFuzzer prints
# the input and saves it under fuzz/artifacts/TARGET/. Keep every crash as a
# regression test next to the code it broke, with the bytes inline, then fix.
#
# Needs a nightly toolchain (`rustup toolchain install nightly`) and
# cargo-fuzz (installed here with `cargo install cargo-fuzz --locked` when
# missing). Builds go to target/fuzz; the growing corpus lives in
# target/fuzz/corpus/TARGET, seeded from fuzz/seeds/TARGET. The first build
# takes a few minutes, so CI does not run this script.
set -euo pipefail
cd "$(dirname "$0")/.."

secs="${1:-30}"
[ "$#" -gt 0 ] && shift
case "$secs" in
  '' | *[!0-9]*) echo "usage: $0 [SECONDS] [TARGET...]" >&2; exit 2 ;;
esac
targets=("$@")
[ "${#targets[@]}" -gt 0 ] || targets=(ws_frames control_message jsonl_line capture_file itch_stream)

if ! rustup toolchain list | grep -q '^nightly'; then
  echo "fuzz: needs a nightly toolchain: rustup toolchain install nightly" >&2
  exit 2
fi
if ! command -v cargo-fuzz >/dev/null; then
  echo "== installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi

target_dir="$PWD/target/fuzz"
echo "== cargo fuzz build (into $target_dir)"
cargo +nightly fuzz build --target-dir "$target_dir"

for t in "${targets[@]}"; do
  corpus="$target_dir/corpus/$t"
  mkdir -p "$corpus"
  echo "== fuzz $t for ${secs} s"
  # -timeout: an input that takes 10 s is a hang, reported like a crash.
  # -rss_limit_mb: a decoder that allocates without bound is a crash too.
  cargo +nightly fuzz run --target-dir "$target_dir" "$t" "$corpus" "fuzz/seeds/$t" -- \
    -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    2>"$target_dir/$t.log" || {
      tail -n 60 "$target_dir/$t.log" >&2
      echo "fuzz: $t crashed; the input is in fuzz/artifacts/$t/ (log: $target_dir/$t.log)" >&2
      exit 1
    }
  grep -E '^(stat::number_of_executed_units|stat::new_units_added|Done )' "$target_dir/$t.log" || true
  tail -n 1 "$target_dir/$t.log"
done
echo "fuzz: no crash in ${targets[*]} (${secs} s each)"
