#!/usr/bin/env bash
# Fuzzes every parser of user input for a bounded time: each target in fuzz/fuzz_targets runs
# SECONDS (default 60) under libFuzzer with AddressSanitizer, growing fuzz/corpus/TARGET (then
# minimised). A crash stops nothing: its input is copied to fuzz/regressions/TARGET/, which
# `cargo test` replays (cli/tests/fuzz_corpus.rs) once it is committed with its fix.
# Prints executions and crashes per target, and writes them to fuzz/last-run.md.
#
#   fuzz/run.sh [SECONDS] [TARGET...]
#
# Needs a nightly toolchain and cargo-fuzz, installed here if missing (minutes, once).
set -euo pipefail
cd "$(dirname "$0")"
seconds=${1:-60}
shift || true

rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
command -v cargo-fuzz >/dev/null || cargo +nightly install cargo-fuzz --locked

targets=("$@")
[ ${#targets[@]} -gt 0 ] || mapfile -t targets < <(cargo +nightly fuzz list)
cargo +nightly fuzz build

summary="| target | seconds | executions | exec/s | corpus files | crashes |"$'\n'"| --- | ---: | ---: | ---: | ---: | ---: |"
for target in "${targets[@]}"; do
  mkdir -p "corpus/$target" "regressions/$target" "artifacts/$target"
  log="artifacts/$target/run.log"
  # -rss_limit_mb / -malloc_limit_mb: an input that makes a parser allocate 2 GB is a crash too.
  # -fork / -ignore_crashes: keep fuzzing after a crash, so one run finds them all.
  set +e
  cargo +nightly fuzz run "$target" "corpus/$target" -- \
    -max_total_time="$seconds" -rss_limit_mb=2048 -malloc_limit_mb=2048 -max_len=65536 \
    -timeout=20 -fork=1 -ignore_crashes=1 -ignore_timeouts=1 -ignore_ooms=1 -print_final_stats=1 >"$log" 2>&1
  set -e
  # Fork mode reports the executions of all jobs in its status lines ("#N: cov: …").
  execs=$( (grep -oE '^#[0-9]+' "$log" || true) | tail -1 | tr -d '#')
  execs=${execs:-0}
  crashes=0
  for found in artifacts/"$target"/{crash,oom,timeout,leak}-*; do
    [ -e "$found" ] || continue
    cp "$found" "regressions/$target/"
    crashes=$((crashes + 1))
  done
  before=$(ls "corpus/$target" | wc -l)
  # Keep the committed corpus small: only inputs that add coverage.
  cargo +nightly fuzz cmin "$target" "corpus/$target" >/dev/null 2>&1 || true
  after=$(ls "corpus/$target" | wc -l)
  rate=$(( execs / (seconds > 0 ? seconds : 1) ))
  line="| $target | $seconds | $execs | $rate | $after (was $before before cmin) | $crashes |"
  echo "$line"
  summary+=$'\n'"$line"
done
printf '# Last fuzz run (%s, %s)\n\n%s\n' "$(date -u +%Y-%m-%d)" "$(rustc +nightly --version)" "$summary" >last-run.md
echo "Wrote fuzz/last-run.md; inputs that crashed are in fuzz/regressions/ (commit them with the fix)."
