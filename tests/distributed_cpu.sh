#!/usr/bin/env bash
# tests/distributed_cpu.sh BIN_DIR — data-parallel training with two real CPU processes (TCP transport), no GPU:
#   * gdn-train --gpus 2 --device cpu with batch 2 per rank logs the losses of one process with batch 4 (1e-5);
#   * a run of one process resumed on two (and the reverse) continues the one-process losses: the global batch stays;
#   * a rank killed mid-run ends the job with one line (the launcher names it) and a non-zero exit code, and LAST
#     stays loadable;
#   * bad input under --gpus (a missing corpus, no visible GPU) is one line for the whole job and exit code 2;
#   * bad environment values are one line and exit code 2.
# Registered with ctest (tests/CMakeLists.txt).
set -u
bin=$1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail=0
check() { if eval "$2"; then echo "ok   $1"; else echo "FAIL $1"; fail=1; fi; }
for i in $(seq 1 400); do
  echo "The state of the union is strong, and the people of the nation build it day by day, year $i."
  echo "Congress shall consider the budget, the roads and the schools of district $((i % 17))."
done > "$tmp/corpus.txt"
common=(--data "$tmp/corpus.txt" --threads 1 --set vocab_size=300 --set d_model=64 --set n_layers=2 --set seq_len=32
        --set warmup_steps=2 --set log_every=1 --set eval_every=10 --set checkpoint_every=10 --set sample_tokens=0)
# same A B: the train histories of two training_results.json agree to 1e-5 relative and have the same length
same() {
  paste <(train_losses "$1") <(train_losses "$2") | awk '{ n++; d = $1 - $2; if (d < 0) d = -d;
    r = d / ($1 < 0 ? -$1 : $1); if (NF != 2 || r > 1e-5) bad = 1 } END { exit (bad || n == 0) }'
}
# The train_history losses of a training_results.json, in order (it is written with one key per line).
train_losses() { awk '/"train_history"/ { on = 1 } /"val_history"/ { on = 0 } on && /"loss":/ {
  gsub(/[",]/, ""); print $2 }' "$1"; }

"$bin/gdn-train" "${common[@]}" --steps 20 --set batch_size=4 --out "$tmp/one" > "$tmp/one.log" 2>&1
check "one process, batch 4, trains" "[[ -f $tmp/one/training_results.json ]]"
"$bin/gdn-train" "${common[@]}" --steps 20 --set batch_size=2 --gpus 2 --device cpu --out "$tmp/two" > "$tmp/two.log" 2>&1
check "two processes, batch 2 each, exit 0" "[[ $? -eq 0 && -f $tmp/two/training_results.json ]]"
check "two processes log the losses of one with twice the batch" "same $tmp/one/training_results.json $tmp/two/training_results.json"
check "only rank 0 reports" "[[ \$(grep -c 'data parallel: 2 ranks over tcp' $tmp/two.log) -eq 1 ]]"

# Resume on another number of processes: from the step-10 checkpoint of the one-process run.
cp -r "$tmp/one" "$tmp/r12" && echo "step-10" > "$tmp/r12/checkpoints/LAST"
"$bin/gdn-train" --data "$tmp/corpus.txt" --out "$tmp/r12" --resume --gpus 2 --device cpu > "$tmp/r12.log" 2>&1
check "a 1-process run resumed on 2 continues its losses" "same $tmp/one/training_results.json $tmp/r12/training_results.json"
cp -r "$tmp/two" "$tmp/r21" && echo "step-10" > "$tmp/r21/checkpoints/LAST"
"$bin/gdn-train" --data "$tmp/corpus.txt" --out "$tmp/r21" --resume --device cpu > "$tmp/r21.log" 2>&1
check "a 2-process run resumed on 1 continues its losses" "same $tmp/one/training_results.json $tmp/r21/training_results.json"

# A rank killed mid-run: the job ends with one line, non-zero exit; LAST is a whole checkpoint that resumes.
"$bin/gdn-train" "${common[@]}" --steps 100000 --set batch_size=2 --gpus 2 --device cpu --out "$tmp/kill" \
  > "$tmp/kill.log" 2>&1 &
launcher=$!
for _ in $(seq 1 200); do [[ -f $tmp/kill/checkpoints/LAST ]] && break; sleep 0.1; done
# Rank 1 is the launcher's newer child. Each /proc/PID/stat is read on its own: a process that ends while the list
# is read is skipped (one awk over all of them stops at the first vanished file), and the fields are taken after the
# command name's closing parenthesis (a name may hold spaces).
children() {
  local f line rest
  for f in /proc/[0-9]*/stat; do
    { line=$(< "$f"); } 2>/dev/null || continue
    rest=${line##*) }
    read -r _ ppid _ <<< "$rest"
    [[ $ppid == "$launcher" ]] && { f=${f#/proc/}; echo "${f%/stat}"; }
  done
}
rank1=$(children | sort -n | tail -1)
if [[ -n $rank1 ]]; then kill -9 "$rank1"; else kill -9 "$launcher"; fi
wait "$launcher"
rc=$?
check "rank 1 found among the launcher's processes" "[[ -n '$rank1' ]]"
check "a killed rank ends the job (exit $rc)" "[[ $rc -ne 0 ]]"
check "the job says so in one line (the launcher names the rank)" \
  "[[ \$(grep -c 'error:' $tmp/kill.log) -eq 1 ]] && grep -q 'error: rank 1 was killed by signal 9' $tmp/kill.log"
"$bin/gdn-train" --data "$tmp/corpus.txt" --out "$tmp/kill" --resume --steps 25 --device cpu > "$tmp/kill2.log" 2>&1
check "its last checkpoint resumes" "[[ $? -eq 0 ]]"

# Bad input under --gpus: one line for the job, exit 2 (rank 0 reports it; rank 1 only lost its peer).
"$bin/gdn-train" "${common[@]:2}" --data "$tmp/missing.txt" --gpus 2 --device cpu --out "$tmp/bad" > "$tmp/bad.log" 2>&1
check "a missing corpus under --gpus 2: exit 2, one line" \
  "[[ $? -eq 2 && \$(wc -l < $tmp/bad.log) -eq 1 ]] && grep -q 'corpus not found' $tmp/bad.log"
CUDA_VISIBLE_DEVICES= "$bin/gdn-train" "${common[@]}" --gpus 2 --out "$tmp/bad" > "$tmp/bad.log" 2>&1
check "--gpus 2 on the GPU without visible devices: exit 2, one line" \
  "[[ $? -eq 2 && \$(wc -l < $tmp/bad.log) -eq 1 ]] && grep -q 'no CUDA devices are visible' $tmp/bad.log"

# Bad environment: one line, exit 2.
WORLD_SIZE=2 RANK=0 LOCAL_RANK=0 "$bin/gdn-train" "${common[@]}" --out "$tmp/env" > "$tmp/env.log" 2>&1
check "WORLD_SIZE without MASTER_ADDR: exit 2, one line" \
  "[[ $? -eq 2 && \$(wc -l < $tmp/env.log) -eq 1 ]] && grep -q 'needs MASTER_ADDR and MASTER_PORT' $tmp/env.log"
WORLD_SIZE=2 RANK=1 LOCAL_RANK=1 MASTER_ADDR=127.0.0.1 MASTER_PORT=1 GDN_DIST_TIMEOUT=1 "$bin/gdn-train" \
  "${common[@]}" --out "$tmp/env" > "$tmp/env.log" 2>&1
check "an unreachable master: exit 2 after the timeout" \
  "[[ $? -eq 2 && \$(wc -l < $tmp/env.log) -eq 1 ]] && grep -q 'could not reach rank 0' $tmp/env.log"
for f in one two r12 r21 kill kill2 bad env; do [[ $fail -eq 0 ]] || { echo "--- $f.log"; tail -5 "$tmp/$f.log" 2>/dev/null; }; done
exit $fail
