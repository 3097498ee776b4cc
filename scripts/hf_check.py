#!/usr/bin/env python3
# scripts/hf_check.py — gdn.cpp against Hugging Face transformers (Qwen3NextForCausalLM) and tokenizers.
#
# Needs python3 with torch, transformers (with Qwen3Next) and tokenizers; CPU is enough. Everything else is made by
# our binaries inside this call:
#   1. gdn-train trains two tiny models for a few steps on the corpus: dense (Hv = 2 Hk) and MoE (no shared expert,
#      exported as an all-zero one); both share one tokenizer.
#   2. gdn-export --format hf writes each as a transformers folder; from_pretrained (float32) loads it.
#   3. logits on fixed ids (the first validation tokens) match gdn-export --dump-logits within 1e-4 relative
#      (max |difference| / max |gdn.cpp logit|);
#   4. greedy generate of 50 tokens equals gdn-generate --temperature 0 (--ids-out);
#   5. the exported tokenizer.json, loaded by `tokenizers`, encodes every validation document to the ids gdn.cpp
#      produces (gdn-export --encode-val), and decodes them back to the text;
#   6. random Qwen3NextForCausalLM models (all layers linear attention; dense, and MoE with a shared expert), saved
#      with save_pretrained plus the exported tokenizer.json, imported with gdn-import: same logits within 1e-4;
#      then gdn-train --init-from runs a few training steps from the MoE one.
# One line "PASS name ..." or "FAIL name ..." per check; the exit code is the number of failures.
# Usage: python3 scripts/hf_check.py --gdn-bin build-gpu/bin --work /tmp/hf [--data data/sotu] [--device cpu]
import argparse
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import torch

failures = 0


def report(ok, name, detail=""):
    global failures
    failures += 0 if ok else 1
    print(f"{'PASS' if ok else 'FAIL'} {name} {detail}".rstrip(), flush=True)


def run(cmd, log):
    with open(log, "w") as f:
        r = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT)
    if r.returncode != 0:
        tail = open(log).read()[-2000:]
        raise RuntimeError(f"{' '.join(cmd)} exited {r.returncode}; log {log}:\n{tail}")


def rel_err(ours, theirs):
    return float(np.max(np.abs(ours - theirs)) / max(np.max(np.abs(ours)), 1e-30))


# transformers 5.17's cache cannot report a length when every layer is linear attention (get_seq_length raises), so
# the forward and generate run without a cache (generate then recomputes the prefix for every new token).
def hf_logits(model, ids, device):
    with torch.no_grad():
        return model(torch.tensor([ids], device=device), use_cache=False).logits[0].float().cpu().numpy()


def gdn_logits(a, run_dir, ids, tag):
    ids_path = os.path.join(a.work, f"{tag}_ids.json")
    out = os.path.join(a.work, f"{tag}_logits.bin")
    json.dump(ids, open(ids_path, "w"))
    run([f"{a.gdn_bin}/gdn-export", "--run", run_dir, "--which", "LAST", "--dump-logits", ids_path, out],
        os.path.join(a.work, f"{tag}_dump.log"))
    return np.fromfile(out, dtype=np.float32).reshape(len(ids), -1)


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--gdn-bin", default="build/bin")
    p.add_argument("--work", default="/tmp/hf")
    p.add_argument("--data", default="data/sotu")
    p.add_argument("--device", default="cpu", help="torch device for transformers")
    p.add_argument("--steps", type=int, default=30)
    a = p.parse_args()
    from transformers import AutoModelForCausalLM, Qwen3NextConfig, Qwen3NextForCausalLM
    from tokenizers import Tokenizer

    shutil.rmtree(a.work, ignore_errors=True)
    os.makedirs(a.work)
    train = [f"{a.gdn_bin}/gdn-train", "--data", a.data, "--steps", str(a.steps), "--set", "vocab_size=2048",
             "--set", "warmup_steps=5", "--set", "eval_every=10", "--set", "eval_batches=2", "--set", "checkpoint_every=10",
             "--set", "sample_tokens=0", "--set", "n_layers=2"]
    runs = {
        "dense": ["--set", "n_v_heads=8", "--set", "head_v_dim=32"],
        "moe": ["--set", "n_experts=4", "--set", "moe_top_k=2", "--set", "moe_ffn_dim=64"],
    }
    torch.manual_seed(0)
    val = None
    tok_file = None
    for name, extra in runs.items():
        run_dir = os.path.join(a.work, name)
        if tok_file:  # the MoE run reuses the dense run's tokenizer
            os.makedirs(run_dir)
            shutil.copy(os.path.join(a.work, "dense", "tokenizer.json"), run_dir)
        run(train + ["--out", run_dir] + extra, os.path.join(a.work, f"{name}_train.log"))
        hf_dir = os.path.join(a.work, f"{name}_hf")
        run([f"{a.gdn_bin}/gdn-export", "--run", run_dir, "--which", "LAST", "--format", "hf", "--out", hf_dir],
            os.path.join(a.work, f"{name}_export.log"))
        if val is None:
            val_path = os.path.join(a.work, "val.json")
            run([f"{a.gdn_bin}/gdn-export", "--run", run_dir, "--which", "LAST", "--encode-val", val_path,
                 "--data", a.data], os.path.join(a.work, "encode_val.log"))
            val = json.load(open(val_path))
            tok_file = os.path.join(hf_dir, "tokenizer.json")
            tok = Tokenizer.from_file(tok_file)
            bad = [i for i, d in enumerate(val) if tok.encode(d["text"], add_special_tokens=False).ids != d["ids"]]
            n_tokens = sum(len(d["ids"]) for d in val)
            report(not bad, "tokenizer-encode", f"{len(val)} validation documents, {n_tokens} tokens"
                   + (f", {len(bad)} differ (first: document {bad[0]})" if bad else ""))
            bad = [i for i, d in enumerate(val) if tok.decode(d["ids"], skip_special_tokens=False) != d["text"]]
            report(not bad, "tokenizer-decode", f"{len(bad)} documents differ" if bad else "")
        ids = [t for d in val for t in d["ids"]][:100]
        model = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32).to(a.device).eval()
        report(type(model).__name__ == "Qwen3NextForCausalLM", f"{name}-load", type(model).__name__)
        err = rel_err(gdn_logits(a, run_dir, ids, name), hf_logits(model, ids, a.device))
        report(err <= 1e-4, f"{name}-logits", f"rel err {err:.2e} on {len(ids)} ids")
        gen_path = os.path.join(a.work, f"{name}_gen.json")
        run([f"{a.gdn_bin}/gdn-generate", "--out", run_dir, "--which", "LAST", "--prompt", "Fellow citizens",
             "--max-tokens", "50", "--temperature", "0", "--ids-out", gen_path], os.path.join(a.work, f"{name}_gen.log"))
        g = json.load(open(gen_path))
        eot = model.config.eos_token_id
        with torch.no_grad():
            out = model.generate(torch.tensor([g["prompt_ids"]], device=a.device), max_new_tokens=50, do_sample=False, use_cache=False,
                                 eos_token_id=eot, pad_token_id=eot)[0, len(g["prompt_ids"]):].tolist()
        ours = g["generated_ids"]
        strip = lambda v: v[:-1] if v and v[-1] == eot else v
        report(strip(out) == strip(ours), f"{name}-generate", f"{len(ours)} tokens"
               + ("" if strip(out) == strip(ours) else f"; gdn {ours[:12]}... hf {out[:12]}..."))

    # Reverse: random transformers models into gdn.cpp.
    vocab = json.load(open(os.path.join(a.work, "dense_hf", "config.json")))["vocab_size"]
    for name, moe in (("random-dense", False), ("random-moe", True)):
        cfg = Qwen3NextConfig(
            vocab_size=vocab, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
            layer_types=["linear_attention"] * 2, linear_num_key_heads=2, linear_num_value_heads=4,
            linear_key_head_dim=16, linear_value_head_dim=16, linear_conv_kernel_dim=4,
            num_experts=4 if moe else 0, num_experts_per_tok=2, moe_intermediate_size=32,
            shared_expert_intermediate_size=32, decoder_sparse_step=1, mlp_only_layers=[], rms_norm_eps=1e-6,
            tie_word_embeddings=False, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
            bos_token_id=vocab - 1, eos_token_id=vocab - 1)
        model = Qwen3NextForCausalLM(cfg).float().eval()
        with torch.no_grad():  # norms away from their init, so the 1 + w conversion shows
            for n, t in model.named_parameters():
                if n.endswith("layernorm.weight") or n.endswith("norm.weight") or n.endswith("dt_bias"):
                    t.add_(0.1 * torch.randn_like(t))
        hf_dir = os.path.join(a.work, f"{name}_hf")
        model.save_pretrained(hf_dir)
        shutil.copy(tok_file, hf_dir)
        imported = os.path.join(a.work, f"{name}_imported")
        try:
            run([f"{a.gdn_bin}/gdn-import", "--from", hf_dir, "--out", imported], os.path.join(a.work, f"{name}_import.log"))
            err = rel_err(gdn_logits(a, imported, ids, name), hf_logits(model.to(a.device), ids, a.device))
            report(err <= 1e-4, f"{name}-import-logits", f"rel err {err:.2e} on {len(ids)} ids")
        except RuntimeError as e:
            report(False, f"{name}-import-logits", str(e).splitlines()[0])
        if moe:
            try:
                run([f"{a.gdn_bin}/gdn-train", "--init-from", hf_dir, "--data", a.data, "--out",
                     os.path.join(a.work, "from_hf"), "--steps", "5", "--set", "warmup_steps=1", "--set", "eval_every=5",
                     "--set", "eval_batches=2", "--set", "sample_tokens=0"], os.path.join(a.work, "init_from_train.log"))
                report(True, "init-from-train", "5 steps from the random MoE model")
            except RuntimeError as e:
                report(False, "init-from-train", str(e).splitlines()[0])
    print(f"{failures} failed", flush=True)
    return failures


if __name__ == "__main__":
    sys.exit(main())
