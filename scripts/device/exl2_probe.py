#!/usr/bin/env python3
"""On the GPU machine: does exllamav2 (PyPI's py3-none-any wheel, its extension compiled on first
import) run there, with or without flash-attn, and how fast does its dynamic generator go?

Makes a random llama of SmolLM2-135M's shape in Hugging Face format (transformers, fp16,
SmolLM2's tokenizer as tokenizer.json), converts it to EXL2 with exllamav2's own converter,
loads it and generates with ExLlamaV2DynamicGenerator, paged (needs flash-attn) and unpaged.
Run by scripts/device/exl2_probe.sh.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

WORK = Path("/tmp/exl2")
TOKENIZER = Path(".exl2/tokenizer")


def make_hf_model(out: Path) -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        hidden_size=576,
        intermediate_size=1536,
        num_hidden_layers=30,
        num_attention_heads=9,
        num_key_value_heads=3,
        vocab_size=49152,
        max_position_embeddings=8192,
        rope_theta=100000.0,
        tie_word_embeddings=True,
        bos_token_id=1,
        eos_token_id=2,
        torch_dtype="float16",
    )
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = LlamaForCausalLM(config).half()
    model.save_pretrained(out, safe_serialization=True)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(TOKENIZER / name, out / name)


def generate(model_dir: Path, paged: bool, streams: list[int], max_new: int) -> None:
    from exllamav2 import ExLlamaV2, ExLlamaV2Cache, ExLlamaV2Config, ExLlamaV2Tokenizer
    from exllamav2.generator import (
        ExLlamaV2DynamicGenerator,
        ExLlamaV2DynamicJob,
        ExLlamaV2Sampler,
    )

    config = ExLlamaV2Config(str(model_dir))
    config.max_seq_len = 2048
    model = ExLlamaV2(config)
    cache = ExLlamaV2Cache(model, max_seq_len=32 * 1024, lazy=True)
    before = torch.cuda.memory_allocated()
    model.load_autosplit(cache)
    print(
        f"loaded: {(torch.cuda.memory_allocated() - before) / 2**20:.1f} MiB allocated "
        f"(weights + cache of {cache.max_seq_len} tokens)"
    )
    tokenizer = ExLlamaV2Tokenizer(config)
    try:
        generator = ExLlamaV2DynamicGenerator(
            model=model, cache=cache, tokenizer=tokenizer, paged=paged, max_batch_size=max(streams)
        )
    except Exception as exc:  # noqa: BLE001 - the probe reports whatever it is
        print(f"paged={paged}: the generator refused: {type(exc).__name__}: {exc}")
        return
    print(f"paged={paged}: generator made, max_batch_size {generator.max_batch_size}")
    settings = ExLlamaV2Sampler.Settings.greedy()
    for n in streams:
        for _ in range(2):  # the first round warms up
            jobs = [
                ExLlamaV2DynamicJob(
                    input_ids=tokenizer.encode(f"Story number {i}: once"),
                    max_new_tokens=max_new,
                    gen_settings=settings,
                    stop_conditions=[],
                )
                for i in range(n)
            ]
            for job in jobs:
                generator.enqueue(job)
            started, tokens, finals = time.perf_counter(), 0, 0
            while generator.num_remaining_jobs():
                for result in generator.iterate():
                    if result.get("stage") == "streaming":
                        ids = result.get("token_ids")
                        tokens += 0 if ids is None else int(ids.numel())
                        if result.get("eos"):
                            finals += int(result.get("new_tokens", 0))
            seconds = time.perf_counter() - started
            tokens = max(tokens, finals)
        print(
            f"paged={paged} streams={n}: {tokens} tokens in {seconds:.2f} s = "
            f"{tokens / seconds:.1f} tok/s"
        )
        sys.stdout.flush()


def main() -> int:
    import exllamav2.attn as attn

    print(
        "flash-attn:",
        attn.has_flash_attn,
        "paged:",
        attn.has_flash_attn_with_paged,
        "xformers:",
        attn.has_xformers,
        "sdpa:",
        attn.has_lower_right_sdpa,
    )
    hf, work, exl2 = WORK / "hf", WORK / "work", WORK / "exl2"
    shutil.rmtree(WORK, ignore_errors=True)
    started = time.perf_counter()
    make_hf_model(hf)
    print(f"HF model written in {time.perf_counter() - started:.1f} s")
    started = time.perf_counter()
    work.mkdir(parents=True)
    convert = [
        sys.executable,
        "-m",
        "exllamav2.conversion.convert_exl2",
        "-i",
        str(hf),
        "-o",
        str(work),
        "-cf",
        str(exl2),
        "-b",
        "4.0",
        "-r",
        "8",
        "-mr",
        "4",
        "-l",
        "256",
        "-ml",
        "256",
    ]
    done = subprocess.run(convert, capture_output=True, text=True, timeout=400)
    print(f"convert: exit {done.returncode} in {time.perf_counter() - started:.1f} s")
    if done.returncode != 0 or not (exl2 / "config.json").exists():
        print(done.stdout[-3000:], done.stderr[-3000:])
        return 1
    size = sum(f.stat().st_size for f in exl2.glob("*.safetensors"))
    print(
        f"EXL2 4.0 bpw: {size / 2**20:.1f} MiB of safetensors;",
        sorted(f.name for f in exl2.iterdir()),
    )
    generate(exl2, paged=True, streams=[1, 8, 32], max_new=128)
    generate(exl2, paged=False, streams=[1], max_new=128)
    return 0


if __name__ == "__main__":
    sys.exit(main())
