#!/usr/bin/env python3
"""On the GPU machine: olla serving an EXL2 model against a plain script that drives
ExLlamaV2DynamicGenerator directly, same model, prompts, streams and generator settings.

The model is a random llama of SmolLM2-135M's shape converted to 4.0 bpw with exllamav2's own
converter (exl2_probe.py's steps; kept in /tmp/exl2 while the machine stays lent). For each
stream count, in alternating order: N clients (olla: streaming /api/generate, raw, greedy) or N
jobs enqueued at once (the script), each of 128 new tokens; aggregate tokens/s over the wall
time. Also olla's memory estimate against what its runner measured after load. Run by
scripts/device/exl2_bench.sh.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).parent))
from exl2_probe import TOKENIZER, WORK, make_hf_model  # noqa: E402

PROMPTS = [
    "The history of the lighthouse at {i} begins",
    "Write a short story about robot number {i} who",
    "Lecture notes {i}: the water cycle explained. First,",
    "Recipe {i}: how to bake bread at home. Start by",
]


def prompt(i: int) -> str:
    return PROMPTS[i % len(PROMPTS)].format(i=i)


def convert(exl2: Path) -> None:
    """A 4.0 bpw EXL2 of a random SmolLM2-135M-shape llama, once per lease."""
    if (exl2 / "config.json").exists():
        return
    hf, work = WORK / "hf", WORK / "work"
    shutil.rmtree(WORK, ignore_errors=True)
    started = time.perf_counter()
    make_hf_model(hf)
    work.mkdir(parents=True)
    command = [sys.executable, "-m", "exllamav2.conversion.convert_exl2", "-i", str(hf),
               "-o", str(work), "-cf", str(exl2), "-b", "4.0", "-r", "8", "-mr", "4",
               "-l", "256", "-ml", "256"]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=480)
    if done.returncode != 0:
        print(done.stdout[-2000:], done.stderr[-2000:])
        raise SystemExit("conversion failed")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(TOKENIZER / name, exl2 / name)
    print(f"converted in {time.perf_counter() - started:.0f} s")


class Plain:
    """The plain script: the generator as olla's runner makes it, jobs enqueued directly."""

    def __init__(self, model_dir: Path, num_ctx: int, streams: int) -> None:
        import exllamav2.attn
        import torch
        from exllamav2 import ExLlamaV2, ExLlamaV2Cache, ExLlamaV2Config, ExLlamaV2Tokenizer
        from exllamav2.generator import ExLlamaV2DynamicGenerator

        paged = bool(exllamav2.attn.has_flash_attn)
        streams = streams if paged else 1
        config = ExLlamaV2Config(str(model_dir))
        config.max_seq_len = num_ctx
        self.model = ExLlamaV2(config)
        tokens = -(-num_ctx * streams // 256) * 256
        self.cache = ExLlamaV2Cache(self.model, max_seq_len=tokens, lazy=True)
        self.model.load_autosplit(self.cache)
        self.tokenizer = ExLlamaV2Tokenizer(config)
        self.generator = ExLlamaV2DynamicGenerator(
            model=self.model, cache=self.cache, tokenizer=self.tokenizer,
            max_batch_size=streams, paged=paged,
        )  # fmt: skip
        self.generator.warmup()
        self.torch = torch

    def run(self, n: int, max_new: int, tag: str) -> float:
        from exllamav2.generator import ExLlamaV2DynamicJob, ExLlamaV2Sampler

        settings = ExLlamaV2Sampler.Settings.greedy()
        jobs = [
            ExLlamaV2DynamicJob(
                input_ids=self.tokenizer.encode(tag + prompt(i), add_bos=True),
                max_new_tokens=max_new,
                gen_settings=settings,
                stop_conditions=[],
            )  # fmt: skip
            for i in range(n)
        ]
        started = time.perf_counter()
        for job in jobs:
            self.generator.enqueue(job)
        tokens = 0
        while self.generator.num_remaining_jobs():
            for result in self.generator.iterate():
                if result.get("eos"):
                    tokens += int(result.get("new_tokens", 0))
        return tokens / (time.perf_counter() - started)

    def close(self) -> None:
        self.model.unload()
        del self.generator, self.cache, self.model
        self.torch.cuda.empty_cache()


class Olla:
    """`olla serve` with the EXL2 model created from its directory."""

    def __init__(self, model_dir: Path, num_ctx: int, streams: int) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.work = Path(tempfile.mkdtemp())
        self.url = f"http://127.0.0.1:{port}"
        self.env = {**os.environ, "OLLA_HOST": f"127.0.0.1:{port}",
                    "OLLA_MODELS": str(self.work / "models"), "OLLA_NUM_PARALLEL": str(streams),
                    "OLLA_CONTEXT_LENGTH": str(num_ctx), "OLLA_KEEP_ALIVE": "-1",
                    "XDG_CONFIG_HOME": str(self.work / "config")}  # fmt: skip
        self.log = open(self.work / "serve.log", "wb")  # noqa: SIM115 - closed in close()
        self.process = subprocess.Popen([sys.executable, "-m", "olla", "serve"], env=self.env,
                                        stdout=self.log, stderr=subprocess.STDOUT)  # fmt: skip
        for _ in range(300):
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                time.sleep(0.1)
        (self.work / "Modelfile").write_text(f"FROM {model_dir}\n")
        done = subprocess.run([sys.executable, "-m", "olla", "create", "exl2", "-f",
                               str(self.work / "Modelfile")], env=self.env, capture_output=True,
                              text=True)  # fmt: skip
        if done.returncode != 0:
            raise SystemExit(f"olla create failed: {done.stdout[-800:]} {done.stderr[-800:]}")

    async def one(self, session: aiohttp.ClientSession, text: str, max_new: int) -> int:
        body = {"model": "exl2", "prompt": text, "raw": True, "stream": True,
                "options": {"temperature": 0, "num_predict": max_new,
                            "repeat_penalty": 1}}  # fmt: skip  # plain greedy, as the script's
        async with session.post(self.url + "/api/generate", json=body) as r:
            if r.status != 200:
                raise SystemExit(f"olla answered {r.status}: {await r.text()}")
            count = 0
            async for line in r.content:
                data = json.loads(line)
                if "error" in data:
                    raise SystemExit(f"olla: {data['error']}")
                if data.get("done"):
                    count = int(data["eval_count"])
            return count

    async def run_async(self, n: int, max_new: int, tag: str) -> float:
        timeout = aiohttp.ClientTimeout(total=900)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            await self.one(session, "warm up", 4)  # loads the model
            started = time.perf_counter()
            counts = await asyncio.gather(
                *(self.one(session, tag + prompt(i), max_new) for i in range(n))
            )
            return sum(counts) / (time.perf_counter() - started)

    def run(self, n: int, max_new: int, tag: str) -> float:
        return asyncio.run(self.run_async(n, max_new, tag))

    def memory(self) -> dict[str, object]:
        async def ps() -> dict[str, object]:
            async with aiohttp.ClientSession() as s, s.get(self.url + "/api/ps") as r:
                return dict(await r.json())

        return asyncio.run(ps())

    def close(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=30)
        self.log.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--streams", default="1,8,32")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--num-ctx", type=int, default=1024)
    parser.add_argument("--convert-only", action="store_true")
    args = parser.parse_args()
    exl2 = WORK.parent / "exl2-model"
    convert(exl2)
    if args.convert_only:
        return 0
    streams = [int(s) for s in args.streams.split(",")]
    parallel = max(streams)
    figures: dict[tuple[str, int], list[float]] = {}
    for rep in range(args.repeat):
        order = ("olla", "plain") if rep % 2 == 0 else ("plain", "olla")
        for who in order:
            server = (Olla if who == "olla" else Plain)(exl2, args.num_ctx, parallel)
            try:
                # untimed, as long as the timed ones: exllamav2 tunes its kernels for each new
                # shape on first use (a first 1-stream run measured 25-30 against 200 tok/s)
                server.run(1, args.max_tokens, f"[{who} warm-up {rep}] ")
                server.run(min(8, parallel), args.max_tokens, f"[{who} warm-up {rep}] ")
                for n in streams:
                    rate = server.run(n, args.max_tokens, f"[{who} {n} {rep}] ")
                    figures.setdefault((who, n), []).append(rate)
                    print(f"{who} streams={n} run {rep + 1}: {rate:.1f} tok/s", flush=True)
                if isinstance(server, Olla) and rep == 0:
                    (model,) = server.memory()["models"]  # type: ignore[misc]
                    print("olla memory:", json.dumps(model["memory"]), flush=True)
            finally:
                server.close()
    print("\n| streams | olla tok/s | plain script tok/s | olla / plain |")
    print("|---:|---:|---:|---:|")
    for n in streams:
        olla, plain = (statistics.median(figures[(w, n)]) for w in ("olla", "plain"))
        print(f"| {n} | {olla:.1f} | {plain:.1f} | {olla / plain:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
