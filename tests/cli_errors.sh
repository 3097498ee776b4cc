#!/usr/bin/env bash
# tests/cli_errors.sh BIN_DIR — bad input to the apps ends with exactly one error line on stderr,
# "<app>: error: ..." (progress lines before it are fine), exit code 2, and never touches an existing checkpoint; a
# stop signal (SIGTERM) saves a checkpoint, and a second run on a locked output folder names the holder's pid.
# Registered with ctest (tests/CMakeLists.txt).
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
printf 'text\0\0binary' >"$tmp/binary.txt"
expect "binary corpus" "binary.txt (byte 0x00 at offset 4)" "$bin/gdn-train" --data "$tmp/binary.txt" --out "$tmp/o"
printf '{"lr": 0.1, "lr": 0.2}' >"$tmp/dup.json"
expect "duplicate key in a config file" "gives the key 'lr' twice" "$bin/gdn-train" --config "$tmp/dup.json" --out "$tmp/o"
expect "vocab_size beyond int32" "'vocab_size': must be between 257" "$bin/gdn-train" --set vocab_size=4294967596 --out "$tmp/o"
expect "negative --threads" "'threads'" "$bin/gdn-train" --threads -1 --out "$tmp/o"
expect "--steps 0" "'steps': must be positive" "$bin/gdn-train" --steps 0 --out "$tmp/o"
expect "--set preset" "use --preset" "$bin/gdn-train" --data "$tmp/ok.txt" --set preset=medium --out "$tmp/o"
expect "device index overflow" "unknown device 'cuda:99999999999'" "$bin/gdn-train" --set device=cuda:99999999999 --out "$tmp/o"
expect "--resume with --overwrite" "contradict" "$bin/gdn-train" --data "$tmp/ok.txt" --out "$tmp/o" --resume --overwrite
expect "negative --top-k" "--top-k must be >= 0" "$bin/gdn-generate" --out "$tmp/nothing" --top-k -1
expect "negative generate --threads" "--threads must be between" "$bin/gdn-generate" --out "$tmp/nothing" --threads -2
# A real (tiny) run, then damage: another config, a truncated checkpoint, a rerun without --overwrite.
small=(--set d_model=16 --set n_layers=1 --set n_k_heads=1 --set n_v_heads=1 --set head_k_dim=8 --set head_v_dim=8
       --set ffn_dim=16 --set vocab_size=300 --set seq_len=16 --set warmup_steps=0 --set eval_batches=1
       --set eval_every=1 --set sample_tokens=2)
tiny=(--data "$tmp/ok.txt" --out "$tmp/run" "${small[@]}" --steps 2)
if ! "$bin/gdn-train" "${tiny[@]}" >"$tmp/train.log" 2>&1; then echo "FAIL tiny run:"; tail -3 "$tmp/train.log"; exit 1; fi
ckpt=$(cat "$tmp/run/checkpoints/LAST")
sum_before=$(sha256sum "$tmp/run/checkpoints/$ckpt/model.safetensors")
expect "rerun into a used folder" "--overwrite" "$bin/gdn-train" "${tiny[@]}"
expect "model change on resume" "'d_model' cannot change when resuming" "$bin/gdn-train" "${tiny[@]}" --resume --set d_model=32
expect "nothing left to resume" "nothing left to do" "$bin/gdn-train" --out "$tmp/run" --resume
expect "--overwrite with a typo in --data" "corpus not found" "$bin/gdn-train" --data "$tmp/okk.txt" --out "$tmp/run" "${small[@]}" --overwrite
expect "--out inside --data" "inside the corpus folder" "$bin/gdn-train" --data "$tmp" --out "$tmp/run"
[[ "$(sha256sum "$tmp/run/checkpoints/$ckpt/model.safetensors")" == "$sum_before" ]] || { echo "FAIL checkpoint changed"; fail=1; }
cp "$tmp/run/tokenizer.json" "$tmp/tokenizer.orig"
sed -E 's/"merges":\[\[[0-9]+,[0-9]+\]/"merges":[[0,0]/' "$tmp/tokenizer.orig" >"$tmp/run/tokenizer.json"
expect "generate with another tokenizer" "not the one checkpoint" "$bin/gdn-generate" --out "$tmp/run" --max-tokens 2
cp "$tmp/tokenizer.orig" "$tmp/run/tokenizer.json"
"$bin/gdn-generate" --out "$tmp/run" --max-tokens 2 >/dev/null 2>&1 || { echo "FAIL generate with its own tokenizer"; fail=1; }
# Hugging Face export -> import: the imported run gives bit-identical logits; gdn-train --init-from runs from it.
echo "[1, 2, 3, 40, 50, 200]" >"$tmp/ids.json"
if "$bin/gdn-export" --run "$tmp/run" --which LAST --format hf --out "$tmp/hf" --dump-logits "$tmp/ids.json" \
     "$tmp/a.bin" >/dev/null 2>&1 && "$bin/gdn-import" --from "$tmp/hf" --out "$tmp/imp" >/dev/null 2>&1 &&
   "$bin/gdn-export" --run "$tmp/imp" --which LAST --dump-logits "$tmp/ids.json" "$tmp/b.bin" >/dev/null 2>&1 &&
   cmp -s "$tmp/a.bin" "$tmp/b.bin"; then echo "ok   export -> import: bit-identical logits"
else echo "FAIL export -> import"; fail=1; fi
if "$bin/gdn-train" --init-from "$tmp/hf" --data "$tmp/ok.txt" --out "$tmp/ft" --steps 2 --set seq_len=16 --set warmup_steps=0 \
     --set eval_batches=1 --set eval_every=1 --set sample_tokens=0 >"$tmp/ft.log" 2>&1; then echo "ok   --init-from"
else echo "FAIL --init-from:"; tail -3 "$tmp/ft.log"; fail=1; fi
expect "export with nothing to do" "nothing to do" "$bin/gdn-export" --run "$tmp/run"
expect "import into a used folder" "already holds a run" "$bin/gdn-import" --from "$tmp/hf" --out "$tmp/imp"
expect "bench-gdn-ops shape not four or five numbers" "--shape wants B,T,H,K" "$bin/bench-gdn-ops" --shape 4,256,4
expect "bench-gdn-ops shape with a zero" "--shape wants B,T,H,K" "$bin/bench-gdn-ops" --shape 4,256,0,64
expect "bench-gdn-ops unknown device" "unknown device 'gpu'" "$bin/bench-gdn-ops" --device gpu --shape 1,8,1,8
expect "bench-gdn-ops bf16 products on the CPU" "needs --device cuda" "$bin/bench-gdn-ops" --precision bfloat16
expect "import without a folder" "is not a folder" "$bin/gdn-import" --from "$tmp/nohf" --out "$tmp/imp2"
sed 's/"linear_attention"/"full_attention"/' "$tmp/hf/config.json" >"$tmp/cfg.json" && cp "$tmp/cfg.json" "$tmp/hf/config.json"
expect "import of a full-attention layer" "'layer_types'" "$bin/gdn-import" --from "$tmp/hf" --out "$tmp/imp2"
[[ ! -e "$tmp/imp2" ]] || { echo "FAIL a refused import wrote $tmp/imp2"; fail=1; }
# The README's resume: no preset or model flags, the config comes from the checkpoint.
if "$bin/gdn-train" --out "$tmp/run" --resume --steps 3 >"$tmp/resume.log" 2>&1; then echo "ok   plain --resume --steps 3"
else echo "FAIL plain resume:"; tail -3 "$tmp/resume.log"; fail=1; fi
ckpt=$(cat "$tmp/run/checkpoints/LAST")
truncate -s 1000 "$tmp/run/checkpoints/$ckpt/model.safetensors"
expect "truncated checkpoint" "truncated or corrupt" "$bin/gdn-train" "${tiny[@]}" --resume --set steps=4
expect "truncated checkpoint in gdn-generate" "truncated or corrupt" "$bin/gdn-generate" --out "$tmp/run" --which LAST
# SIGTERM (what `timeout` and schedulers send) saves a checkpoint like Ctrl-C; meanwhile the folder is locked.
"$bin/gdn-train" --data "$tmp/ok.txt" --out "$tmp/long" "${small[@]}" --steps 1000000 --set checkpoint_every=1000000 \
  --set eval_every=1000000 >"$tmp/long.log" 2>&1 &
long_pid=$!
for _ in $(seq 1 600); do [[ -s "$tmp/long/.lock" && -s "$tmp/long/tokenizer.json" ]] && break; sleep 0.1; done
expect "second run on a locked folder" "in use by another run (pid $long_pid)" \
  "$bin/gdn-train" --data "$tmp/ok.txt" --out "$tmp/long" "${small[@]}"
sleep 1
kill -TERM $long_pid
wait $long_pid
rc=$?
if [[ $rc -ne 143 || ! -s "$tmp/long/checkpoints/LAST" ]]; then
  echo "FAIL SIGTERM: exit $rc, LAST $(cat "$tmp/long/checkpoints/LAST" 2>&1)"; tail -3 "$tmp/long.log"; fail=1
else
  echo "ok   SIGTERM: exit 143, checkpoint $(cat "$tmp/long/checkpoints/LAST")"
fi
exit $fail
