#!/usr/bin/env bash
# tests/cli_errors.sh BIN_DIR — bad input to the apps ends with exactly one error line on stderr,
# "<app>: error: ..." (progress lines before it are fine), exit code 2, and never touches an existing checkpoint. Registered with ctest (tests/CMakeLists.txt).
set -u
bin=$1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail=0
# expect NAME PATTERN COMMAND...: exit code 2; stderr's last line is the only error line and matches PATTERN.
expect() {
  local name=$1 pattern=$2
  shift 2
  "$@" >"$tmp/out" 2>"$tmp/err"
  local rc=$? errors last
  errors=$(grep -c "error" "$tmp/err")
  last=$(tail -n 1 "$tmp/err")
  if [[ $rc -ne 2 || $errors -ne 1 || "$last" != *": error: "* ]] || ! grep -q -- "$pattern" <<<"$last"; then
    echo "FAIL $name: exit $rc, stderr:"; cat "$tmp/err"; fail=1
  else
    echo "ok   $name: $last"
  fi
}
: >"$tmp/empty.txt"
echo "hello world." >"$tmp/short.txt"
echo '{"d_modle": 64}' >"$tmp/typo.json"
echo '{"lr": ' >"$tmp/broken.json"
for i in $(seq 1 40); do echo "The state of the union is strong and the people of the nation build it. $i"; done >"$tmp/ok.txt"
expect "missing corpus" "corpus not found" "$bin/gdn-train" --data "$tmp/nope.txt" --out "$tmp/o"
expect "empty corpus" "corpus is empty" "$bin/gdn-train" --data "$tmp/empty.txt" --out "$tmp/o"
expect "corpus shorter than a window" "corpus too short" "$bin/gdn-train" --data "$tmp/short.txt" --out "$tmp/o"
expect "unknown key in a file" "unknown config key 'd_modle'" "$bin/gdn-train" --config "$tmp/typo.json" --out "$tmp/o"
expect "unknown key on the command line" "unknown config key" "$bin/gdn-train" --set nope=1 --out "$tmp/o"
expect "negative learning rate" "learning rate must be positive" "$bin/gdn-train" --set lr=-0.001 --out "$tmp/o"
expect "broken config file" "not valid JSON" "$bin/gdn-train" --config "$tmp/broken.json" --out "$tmp/o"
expect "unknown flag" "not expected: --bogus" "$bin/gdn-train" --bogus
expect "flag value that is not a number" "Could not convert" "$bin/gdn-train" --steps abc
expect "unknown preset" "unknown preset" "$bin/gdn-train" --preset huge --out "$tmp/o"
expect "no checkpoint to resume" "no checkpoint" "$bin/gdn-train" --data "$tmp/ok.txt" --out "$tmp/o" --resume
expect "generate without a run" "no checkpoint" "$bin/gdn-generate" --out "$tmp/nothing"
# A real (tiny) run, then damage: another config, a truncated checkpoint, a rerun without --overwrite.
tiny=(--data "$tmp/ok.txt" --out "$tmp/run" --set d_model=16 --set n_layers=1 --set n_k_heads=1 --set n_v_heads=1
      --set head_k_dim=8 --set head_v_dim=8 --set ffn_dim=16 --set vocab_size=300 --set seq_len=16 --steps 2
      --set warmup_steps=0 --set eval_batches=1 --set eval_every=1 --set sample_tokens=2)
if ! "$bin/gdn-train" "${tiny[@]}" >"$tmp/train.log" 2>&1; then echo "FAIL tiny run:"; tail -3 "$tmp/train.log"; exit 1; fi
ckpt=$(cat "$tmp/run/checkpoints/LAST")
sum_before=$(sha256sum "$tmp/run/checkpoints/$ckpt/model.safetensors")
expect "rerun into a used folder" "--overwrite" "$bin/gdn-train" "${tiny[@]}"
expect "checkpoint of another config" "another model config" "$bin/gdn-train" "${tiny[@]}" --resume --set d_model=32
[[ "$(sha256sum "$tmp/run/checkpoints/$ckpt/model.safetensors")" == "$sum_before" ]] || { echo "FAIL checkpoint changed"; fail=1; }
truncate -s 1000 "$tmp/run/checkpoints/$ckpt/model.safetensors"
expect "truncated checkpoint" "truncated or corrupt" "$bin/gdn-train" "${tiny[@]}" --resume --set steps=4
expect "truncated checkpoint in gdn-generate" "truncated or corrupt" "$bin/gdn-generate" --out "$tmp/run"
exit $fail
