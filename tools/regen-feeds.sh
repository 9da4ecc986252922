#!/bin/sh
# Regenerates every sample in feeds/ deterministically: the same bytes on
# every run and every machine (see feeds/README.md for what each file is).
set -eu
cd "$(dirname "$0")/.."
cargo build --release --bin tickwire --bin tickwire-feedgen
bin=target/release
"$bin/tickwire-feedgen" --out feeds/sample.jsonl
"$bin/tickwire-feedgen" --format itch --messages 8000 --seed 1 --out feeds/sample.itch
# The capture holds the ITCH session's ticks, dated 2025-11-26 (09:30 in New
# York is 14:30 UTC, as in sample.jsonl); SOURCE_DATE_EPOCH pins the
# creation time in its header.
SOURCE_DATE_EPOCH=0 "$bin/tickwire" convert --date 2025-11-26 feeds/sample.itch feeds/sample.twc
ls -l feeds/
